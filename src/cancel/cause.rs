//! Why a context was cancelled: the coarse Go-style [`CancelError`] and the rich, typed [`Cause`].
//!
//! The two are kept apart on purpose, as in Go where `ctx.Err()` and `context.Cause(ctx)` differ:
//! control flow branches on the coarse error (cancelled, or ran out of time), while logs and
//! callers who want to know *what happened* read the cause, which may be any user error type and
//! is recovered by type with [`Cause::downcast_ref`].
//!
//! # Invariants
//! 1. A cancelled node has exactly one `(CancelError, Cause)` pair, fixed by the first cancellation
//!    that reached it; its descendants cancelled through it carry clones of the same pair.
//! 2. Cloning a `Cause` never clones a user error: user errors are shared behind an `Arc`, so
//!    every observer of one cancellation sees the identical error value ([`Cause::is_same`]).

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A user error shared by every observer of one cancellation.
pub type SharedError = Arc<dyn Error + Send + Sync + 'static>;

/// The coarse reason a context is done, equal to Go's `ctx.Err()`.
///
/// `DeadlineExceeded` when the context (or the ancestor it inherited its cancellation from) ran out
/// of time, `Cancelled` for every other reason. The rich reason is the [`Cause`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::{CancelError, Canceller, Context};
///
/// let ctx = Context::background().with_timeout(Duration::ZERO);
/// assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
/// assert!(ctx.err().unwrap().is_timeout());
/// assert_eq!(ctx.err().unwrap().to_string(), "context deadline exceeded");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CancelError {
    /// Cancelled for a reason other than a deadline (Go's `context.Canceled`).
    #[error("context canceled")]
    Cancelled,
    /// The deadline passed (Go's `context.DeadlineExceeded`).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
}

impl CancelError {
    /// True for [`CancelError::DeadlineExceeded`], as Go's `DeadlineExceeded.Timeout()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::CancelError::DeadlineExceeded.is_timeout());
    /// assert!(!tether::CancelError::Cancelled.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, CancelError::DeadlineExceeded)
    }

    /// True for [`CancelError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::CancelError::Cancelled.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, CancelError::Cancelled)
    }
}

/// The typed reason for a cancellation, equal to Go's `context.Cause(ctx)` and richer.
///
/// Built-in variants name what the crate itself cancels for; [`Cause::custom`] carries any user
/// error, recovered by type with [`Cause::downcast_ref`]. A context cancelled through an ancestor
/// reports the ancestor's cause unchanged.
///
/// Equality ([`PartialEq`]) compares unit variants by variant and errors by identity (the same
/// `Arc`), like Go's `==` on error values; two different errors with equal messages are not equal.
///
/// # Examples
///
/// ```
/// use tether::{Cause, Canceller, Context};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("user went away")]
/// struct UserLeft;
///
/// let ctx = Context::background().child();
/// ctx.cancel_with(Cause::custom(UserLeft));
/// let cause = ctx.cause().unwrap();
/// assert!(cause.downcast_ref::<UserLeft>().is_some());
/// assert_eq!(cause.to_string(), "user went away");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// Cancelled explicitly, with no further reason (Go's `Canceled` as a cause).
    #[error("context canceled")]
    Cancelled,
    /// The deadline passed (Go's `DeadlineExceeded` as a cause).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// The scope that owned this context ended normally and cancelled what was still running.
    #[error("scope exited")]
    ScopeExited,
    /// A sibling child of the scope failed with this error, so the scope cancelled the rest.
    #[error("a sibling failed: {0}")]
    ChildFailed(#[source] SharedError),
    /// A child of the scope, or its body, panicked, so the scope cancelled the rest.
    #[error("{0}")]
    Panicked(PanicSummary),
    /// A user-supplied error.
    #[error(transparent)]
    Custom(SharedError),
}

/// What a [`Cause::Panicked`] says about the panic: who panicked and the payload's message.
///
/// The payload itself is not here (a panic payload can be neither cloned nor shared between
/// threads); the scope re-raises the original payload on its owner thread.
///
/// # Examples
///
/// ```
/// let p = tether::PanicSummary::new(Some("worker-3".into()), "index out of bounds".into());
/// assert_eq!(p.to_string(), "worker-3 panicked: index out of bounds");
/// assert_eq!(p.who(), Some("worker-3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicSummary {
    /// One pointer, so a `Cause` stays small (it is stored in every cancelled node).
    inner: Arc<SummaryInner>,
}

#[derive(Debug, PartialEq, Eq)]
struct SummaryInner {
    who: Option<Arc<str>>,
    message: Arc<str>,
}

impl PanicSummary {
    /// A summary for a panic of `who` with `message`.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = tether::PanicSummary::new(None, "boom".into());
    /// assert_eq!(p.to_string(), "a child panicked: boom");
    /// ```
    pub fn new(who: Option<Arc<str>>, message: Arc<str>) -> Self {
        PanicSummary { inner: Arc::new(SummaryInner { who, message }) }
    }

    /// Name of the thread or task that panicked (`None` when it had no name).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::PanicSummary::new(None, "x".into()).who(), None);
    /// ```
    pub fn who(&self) -> Option<&str> {
        self.inner.who.as_deref()
    }

    /// The panic message when the payload was a `&str` or `String`, otherwise a placeholder.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::PanicSummary::new(None, "boom".into()).message(), "boom");
    /// ```
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// A summary of a panic payload, reading its message when it is a `&str` or a `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
    /// let p = tether::PanicSummary::from_payload(None, &*payload);
    /// assert_eq!(p.message(), "boom 7");
    /// ```
    pub fn from_payload(who: Option<Arc<str>>, payload: &(dyn std::any::Any + Send)) -> Self {
        let message: Arc<str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).into()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str().into()
        } else {
            "Box<dyn Any> (a non-string panic payload)".into()
        };
        PanicSummary::new(who, message)
    }
}

impl fmt::Display for PanicSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.who() {
            Some(who) => write!(f, "{who} panicked: {}", self.message()),
            None => write!(f, "a child panicked: {}", self.message()),
        }
    }
}

impl Cause {
    /// Wraps a user error as a cause.
    ///
    /// # Examples
    ///
    /// ```
    /// let cause = tether::Cause::custom(std::io::Error::other("disk full"));
    /// assert!(cause.downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn custom<E: Error + Send + Sync + 'static>(error: E) -> Self {
        Cause::Custom(Arc::new(error))
    }

    /// Wraps an already shared user error as a cause, keeping its identity.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let e: tether::SharedError = Arc::new(std::io::Error::other("x"));
    /// assert!(tether::Cause::from_shared(e.clone()).is_same(&tether::Cause::from_shared(e)));
    /// ```
    pub fn from_shared(error: SharedError) -> Self {
        Cause::Custom(error)
    }

    /// The user error inside [`Cause::Custom`] or [`Cause::ChildFailed`], if it has type `E`.
    ///
    /// # Examples
    ///
    /// ```
    /// let cause = tether::Cause::custom(std::fmt::Error);
    /// assert!(cause.downcast_ref::<std::fmt::Error>().is_some());
    /// assert!(cause.downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.user_error()?.downcast_ref::<E>()
    }

    /// The shared user error inside [`Cause::Custom`] or [`Cause::ChildFailed`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::Cause::Cancelled.user_error().is_none());
    /// assert!(tether::Cause::custom(std::fmt::Error).user_error().is_some());
    /// ```
    pub fn user_error(&self) -> Option<&SharedError> {
        match self {
            Cause::Custom(e) | Cause::ChildFailed(e) => Some(e),
            _ => None,
        }
    }

    /// True when `self` and `other` are the same cause: the same built-in variant, or the very
    /// same shared error (pointer identity, as Go compares error values).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Cause;
    /// let a = Cause::custom(std::fmt::Error);
    /// assert!(a.is_same(&a.clone()));
    /// assert!(!a.is_same(&Cause::custom(std::fmt::Error)));
    /// assert!(Cause::Cancelled.is_same(&Cause::Cancelled));
    /// ```
    pub fn is_same(&self, other: &Cause) -> bool {
        match (self, other) {
            (Cause::Custom(a), Cause::Custom(b)) | (Cause::ChildFailed(a), Cause::ChildFailed(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
            }
            (Cause::Panicked(a), Cause::Panicked(b)) => a == b,
            (Cause::Cancelled, Cause::Cancelled)
            | (Cause::DeadlineExceeded, Cause::DeadlineExceeded)
            | (Cause::ScopeExited, Cause::ScopeExited) => true,
            _ => false,
        }
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.is_same(other)
    }
}

impl From<CancelError> for Cause {
    fn from(err: CancelError) -> Self {
        match err {
            CancelError::Cancelled => Cause::Cancelled,
            CancelError::DeadlineExceeded => Cause::DeadlineExceeded,
        }
    }
}
