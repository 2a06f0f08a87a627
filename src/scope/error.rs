//! The scope's errors, one type per operation: [`ScopeError`] (the scope failed because fallible
//! children failed), [`JoinError`] (a child panicked) and [`TrySpawnError`] (the limit is full).

use crate::{PanicSummary, SharedError};
use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why [`crate::scope`] failed: one or more children spawned with
/// [`Scope::spawn_fallible`](crate::Scope::spawn_fallible) returned `Err`.
///
/// The first failure (in time) is the error proper: it is what cancelled the scope, what the
/// siblings saw as [`Cause::ChildFailed`](crate::Cause::ChildFailed), and what
/// [`Display`](fmt::Display), [`source`](Error::source) and [`downcast_ref`](Self::downcast_ref)
/// show. Every later failure is kept, in order, in [`others`](Self::others) (Go's errgroup drops
/// them). Each error is the very `Arc` the failing child's join handle returned.
///
/// # Examples
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("shard {0} unavailable")]
/// struct Unavailable(u32);
///
/// let err = tether::scope(|s| {
///     s.spawn_fallible(|_| Err::<(), _>(Unavailable(3)));
/// })
/// .unwrap_err();
/// assert_eq!(err.downcast_ref::<Unavailable>().unwrap().0, 3);
/// assert_eq!(err.to_string(), "shard 3 unavailable");
/// assert!(err.others().is_empty());
/// ```
#[derive(Clone)]
pub struct ScopeError {
    /// Never empty: the first failure, then every later one.
    errors: Vec<SharedError>,
}

impl ScopeError {
    /// An error for `errors`, in the order they happened; `None` when there are none.
    pub(crate) fn from_errors(errors: Vec<SharedError>) -> Option<ScopeError> {
        (!errors.is_empty()).then_some(ScopeError { errors })
    }

    /// The first failure: the one that cancelled the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     s.spawn_fallible(|_| Err::<(), _>(std::fmt::Error));
    /// })
    /// .unwrap_err();
    /// assert!(err.first().is::<std::fmt::Error>());
    /// ```
    pub fn first(&self) -> &SharedError {
        &self.errors[0]
    }

    /// Every failure after the first, in the order they happened.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Barrier;
    /// let both_ran = Barrier::new(2);
    /// let err = tether::scope(|s| {
    ///     for _ in 0..2 {
    ///         s.spawn_fallible(|_| {
    ///             both_ran.wait(); // neither fails before both have started
    ///             Err::<(), _>(std::fmt::Error)
    ///         });
    ///     }
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.others().len(), 1);
    /// ```
    pub fn others(&self) -> &[SharedError] {
        &self.errors[1..]
    }

    /// Every failure, the first one first.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     s.spawn_fallible(|_| Err::<(), _>(std::fmt::Error));
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.iter().count(), 1);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &SharedError> {
        self.errors.iter()
    }

    /// The first failure, if it has type `E`.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     s.spawn_fallible(|_| Err::<(), _>(std::io::Error::other("disk full")));
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.downcast_ref::<std::io::Error>().unwrap().to_string(), "disk full");
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_none());
    /// ```
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.first().downcast_ref::<E>()
    }
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.first(), f)?;
        match self.others().len() {
            0 => Ok(()),
            1 => write!(f, " (and 1 more error)"),
            n => write!(f, " (and {n} more errors)"),
        }
    }
}

impl fmt::Debug for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeError").field("first", self.first()).field("others", &self.others()).finish()
    }
}

impl Error for ScopeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.first())
    }
}

/// Why [`ScopedJoinHandle::join`](crate::ScopedJoinHandle::join) has no result: the child
/// panicked. Holds the original payload, which the scope then does not re-raise.
///
/// # Examples
///
/// ```
/// tether::scope(|s| {
///     let h = s.builder().name("parser").spawn(|_| panic!("bad input")).unwrap();
///     let err = h.join().unwrap_err();
///     assert_eq!(err.to_string(), "parser panicked: bad input");
///     assert_eq!(err.into_panic().downcast_ref::<&str>(), Some(&"bad input"));
/// })
/// .unwrap();
/// ```
pub struct JoinError {
    summary: PanicSummary,
    payload: Box<dyn Any + Send + 'static>,
}

impl JoinError {
    pub(crate) fn new(who: Option<Arc<str>>, payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError { summary: PanicSummary::from_payload(who, &*payload), payload }
    }

    /// True: a thread child fails to join only by panicking. (Kept as a predicate so that pool
    /// tasks, which may fail to join for other reasons, can share this type.)
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| assert!(s.spawn(|_| panic!("x")).join().unwrap_err().is_panic())).unwrap();
    /// ```
    pub fn is_panic(&self) -> bool {
        true
    }

    /// Who panicked and the message, as siblings saw it in their
    /// [`Cause::Panicked`](crate::Cause::Panicked).
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let err = s.spawn(|_| panic!("boom")).join().unwrap_err();
    ///     assert_eq!(err.summary().message(), "boom");
    ///     assert_eq!(err.summary().who(), None);
    /// })
    /// .unwrap();
    /// ```
    pub fn summary(&self) -> &PanicSummary {
        &self.summary
    }

    /// The original panic payload.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let err = s.spawn(|_| std::panic::panic_any(42_u8)).join().unwrap_err();
    ///     assert_eq!(err.into_panic().downcast_ref::<u8>(), Some(&42));
    /// })
    /// .unwrap();
    /// ```
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }

    /// Re-raises the original panic on this thread.
    ///
    /// # Examples
    ///
    /// ```should_panic
    /// tether::scope(|s| s.spawn(|_| panic!("boom")).join().unwrap_or_else(|e| e.resume())).unwrap();
    /// ```
    pub fn resume(self) -> ! {
        std::panic::resume_unwind(self.payload)
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.summary, f)
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinError").field("summary", &self.summary).finish_non_exhaustive()
    }
}

impl Error for JoinError {}

/// [`Scope::try_spawn`](crate::Scope::try_spawn) found every slot of the scope's concurrency
/// limit taken and did not spawn; the closure is handed back.
///
/// # Examples
///
/// ```
/// tether::ScopeBuilder::new().limit(1).run(|s| {
///     let (release, wait) = crossbeam_channel::bounded::<()>(0);
///     s.spawn(move |_| wait.recv());
///     let refused = s.try_spawn(|_| 1).unwrap_err();
///     assert_eq!(refused.to_string(), "scope is at its concurrency limit");
///     let closure = refused.into_inner();
///     release.send(()).unwrap();
///     assert_eq!(s.spawn(closure).join().unwrap(), 1, "spawn waits for the slot");
/// })
/// .unwrap();
/// ```
pub struct TrySpawnError<F> {
    closure: F,
}

impl<F> TrySpawnError<F> {
    pub(crate) fn new(closure: F) -> Self {
        TrySpawnError { closure }
    }

    /// The closure that was not spawned.
    ///
    /// # Examples
    ///
    /// See [`TrySpawnError`].
    pub fn into_inner(self) -> F {
        self.closure
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scope is at its concurrency limit")
    }
}

impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySpawnError").finish_non_exhaustive()
    }
}

impl<F> Error for TrySpawnError<F> {}
