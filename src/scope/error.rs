//! The scope's errors, one type per operation: [`ScopeError`] (the scope failed because fallible
//! children failed), [`JoinError`] (a child panicked, or a task was skipped) and [`TrySpawnError`]
//! (the limit is full).

use crate::cancel::{Cause, PanicSummary, SharedError};
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

    /// The first failure: the one the scope was cancelled with, if a failure cancelled it;
    /// otherwise (the scope was cancelled first by its exit, a deadline or an explicit cancel)
    /// the first one recorded. The others follow in the order they were recorded.
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

/// Why a join handle has no result: the child panicked
/// ([`ScopedJoinHandle::join`](crate::ScopedJoinHandle::join),
/// [`TaskHandle::join`](crate::TaskHandle::join), and the async handles), or a pool task was
/// skipped because its context was cancelled before it started
/// ([`TaskHandle::join`](crate::TaskHandle::join) only), or a tokio-scope child was aborted
/// because its scope's future was dropped (`TokioJoinHandle` only).
///
/// A panic's original payload is held here, and the scope then does not re-raise it.
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
    repr: Repr,
}

/// The ways a join fails.
enum Repr {
    Panicked {
        summary: PanicSummary,
        payload: Box<dyn Any + Send + 'static>,
    },
    /// A pool task that never ran: its context was cancelled (with this cause) first.
    Skipped(Cause),
    /// A tokio-scope child whose task was aborted (the scope's future was dropped) before it
    /// finished; the scope was cancelled with this cause.
    Aborted(Cause),
}

impl JoinError {
    pub(crate) fn new(who: Option<Arc<str>>, payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError { repr: Repr::Panicked { summary: PanicSummary::from_payload(who, &*payload), payload } }
    }

    pub(crate) fn skipped(cause: Cause) -> JoinError {
        JoinError { repr: Repr::Skipped(cause) }
    }

    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn aborted(cause: Cause) -> JoinError {
        JoinError { repr: Repr::Aborted(cause) }
    }

    /// Whether the child panicked (always, for a thread child).
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| assert!(s.spawn(|_| panic!("x")).join().unwrap_err().is_panic())).unwrap();
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked { .. })
    }

    /// Whether a pool task was skipped: its context was cancelled before it started, so its
    /// closure was dropped without being called.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     s.cancel();
    ///     let err = s.spawn_task(|_| ()).join().unwrap_err();
    ///     assert!(err.is_skipped());
    ///     assert_eq!(err.cancel_cause(), Some(&tether::Cause::Cancelled));
    /// })
    /// .unwrap();
    /// ```
    pub fn is_skipped(&self) -> bool {
        matches!(self.repr, Repr::Skipped(_))
    }

    /// Who panicked and the message, as siblings saw it in their
    /// [`Cause::Panicked`](crate::Cause::Panicked); `None` for a skipped task.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let err = s.spawn(|_| panic!("boom")).join().unwrap_err();
    ///     assert_eq!(err.summary().unwrap().message(), "boom");
    ///     assert_eq!(err.summary().unwrap().who(), None);
    /// })
    /// .unwrap();
    /// ```
    pub fn summary(&self) -> Option<&PanicSummary> {
        match &self.repr {
            Repr::Panicked { summary, .. } => Some(summary),
            Repr::Skipped(_) | Repr::Aborted(_) => None,
        }
    }

    /// Why a skipped task's context (or an aborted tokio-scope child's scope) was cancelled;
    /// `None` for a panic.
    ///
    /// # Examples
    ///
    /// See [`is_skipped`](Self::is_skipped).
    pub fn cancel_cause(&self) -> Option<&Cause> {
        match &self.repr {
            Repr::Skipped(cause) | Repr::Aborted(cause) => Some(cause),
            Repr::Panicked { .. } => None,
        }
    }

    /// The original panic payload, or the error itself when it is not a panic.
    ///
    /// # Errors
    ///
    /// `self`, when the task was skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let err = s.spawn_task(|_| std::panic::panic_any(7_u8)).join().unwrap_err();
    ///     assert_eq!(err.try_into_panic().unwrap().downcast_ref::<u8>(), Some(&7));
    /// })
    /// .unwrap();
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panicked { payload, .. } => Ok(payload),
            repr @ (Repr::Skipped(_) | Repr::Aborted(_)) => Err(JoinError { repr }),
        }
    }

    /// The original panic payload.
    ///
    /// # Panics
    ///
    /// If the error is not a panic (a skipped task): use [`try_into_panic`](Self::try_into_panic).
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
        self.try_into_panic()
            .unwrap_or_else(|e| panic!("tether: into_panic on a join error that is not a panic: {e}"))
    }

    /// Re-raises the original panic on this thread (for a skipped task, panics with this
    /// error's message).
    ///
    /// # Examples
    ///
    /// ```should_panic
    /// tether::scope(|s| s.spawn(|_| panic!("boom")).join().unwrap_or_else(|e| e.resume())).unwrap();
    /// ```
    pub fn resume(self) -> ! {
        match self.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("tether: {e}"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked { summary, .. } => fmt::Display::fmt(summary, f),
            Repr::Skipped(cause) => write!(f, "task skipped: cancelled before it started ({cause})"),
            Repr::Aborted(cause) => write!(f, "task aborted: its scope's future was dropped ({cause})"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked { summary, .. } => {
                f.debug_struct("JoinError").field("summary", summary).finish_non_exhaustive()
            }
            Repr::Skipped(cause) => f.debug_struct("JoinError").field("skipped", cause).finish(),
            Repr::Aborted(cause) => f.debug_struct("JoinError").field("aborted", cause).finish(),
        }
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
