//! A Go-compatible `context` package on tether's cancellation tree.
//!
//! Go's `context` API, call for call, in Rust naming: [`background`], [`todo()`], [`with_cancel`],
//! [`with_cancel_cause`], [`with_deadline`], [`with_deadline_cause`], [`with_timeout`],
//! [`with_timeout_cause`], [`with_value`] (and [`with_nil_value`] for Go's `nil` value),
//! [`without_cancel`], [`after_func`] and [`cause`]. A context prints as Go's `String()` does.
//! Design note: `design/0005-go-adapter.md`.
//!
//! ```
//! use std::time::Duration;
//! use tether::{go, CancelError};
//!
//! let ctx = go::with_value(&go::background(), "request_id", "r-42");
//! let (ctx, cancel) = go::with_timeout(&ctx, Duration::from_secs(5));
//! assert!(ctx.to_string().starts_with("context.Background.WithValue(request_id, r-42).WithDeadline("));
//!
//! cancel.cancel();
//! assert_eq!(ctx.err(), Some(CancelError::Cancelled));
//! assert_eq!(go::cause(&ctx), Some(tether::Cause::Cancelled));
//! ```
//!
//! # The mapping
//! - Go's `Context` interface is the [`GoContext`] trait; the contexts this module makes are
//!   [`Ctx`] values (cheap handles), and a native [`crate::Context`] is a Go context too.
//! - `CancelFunc` and `CancelCauseFunc` are [`CancelFunc`] and [`CancelCauseFunc`]: call
//!   `.cancel()`. Dropping every handle of a context that was never cancelled releases it, as the
//!   native tree does: Go's `lostcancel` leak cannot happen.
//! - `Done()` returns `Option<`[`Done`](crate::Done)`>`: `None` is Go's nil channel, and the
//!   borrowed channel, which derefs to a crossbeam receiver, disconnects when the context is done.
//! - `Err()` returns [`CancelError`]; `Cause` returns [`Cause`] (`Cause::Cancelled` and
//!   `Cause::DeadlineExceeded` are Go's sentinels; user errors are [`Cause::custom`], compared by
//!   identity as Go compares error values).
//! - Go's `any` keys are typed [`Key<T>`](crate::Key)s or strings ([`AnyKey`], [`ValueKey`]).
//!
//! # Invariants
//! 1. Every derivation is Go's: the same node kinds, the same deadline, value, cause and error
//!    rules, the same `String()` (checked against the Go runtime by the conformance corpus in
//!    `tests/conformance/`).
//! 2. Derivations from contexts of this module or native ones run entirely on the native tree;
//!    a derivation from a custom context spends no thread (see [`GoContext::after_func`] and the
//!    shared watcher in `link.rs`).
//! 3. Nothing recurses over the depth of a chain: printing, value lookup and dropping are loops
//!    (custom contexts in the chain excepted: they run their own code).

mod after_func;
mod any_key;
mod go_context;
mod layered_ctx;
mod link;
mod stop;
mod string;

pub use after_func::after_func;
pub use any_key::{AnyKey, NilKey, ValueKey};
pub use go_context::GoContext;
pub use layered_ctx::Ctx;
pub use stop::AfterFuncStop;

use crate::cancel::{CancelError, Cause};
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use string::Layer;

/// Go's `CancelFunc`: cancels its context with `Cancelled`. Idempotent; does not wait for the
/// work to stop.
///
/// Dropping it does not cancel; dropping it *and* every handle of the context releases the
/// context (nothing leaks).
///
/// # Examples
///
/// ```
/// use tether::go;
/// let (ctx, cancel) = go::with_cancel(&go::background());
/// cancel.cancel();
/// cancel.cancel(); // later calls do nothing
/// assert!(ctx.err().is_some());
/// ```
#[derive(Clone)]
#[must_use = "a context is cancelled only by its cancel function (or its parent)"]
pub struct CancelFunc {
    ctx: crate::context::Context,
}

impl CancelFunc {
    /// Cancels the context and everything derived from it, with `Cancelled`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = tether::go::with_cancel(&tether::go::background());
    /// cancel.cancel();
    /// assert_eq!(ctx.err(), Some(tether::CancelError::Cancelled));
    /// ```
    pub fn cancel(&self) {
        self.ctx.cancel();
    }
}

/// Go's `CancelCauseFunc`: cancels its context with a cause (`None` is Go's `nil`: the cause is
/// then `Cancelled`). If the context is already done, the cause is not changed.
///
/// # Examples
///
/// ```
/// use tether::{go, Cause};
/// let (ctx, cancel) = go::with_cancel_cause(&go::background());
/// cancel.cancel(None);
/// assert_eq!(go::cause(&ctx), Some(Cause::Cancelled));
/// ```
#[derive(Clone)]
#[must_use = "a context is cancelled only by its cancel function (or its parent)"]
pub struct CancelCauseFunc {
    ctx: crate::context::Context,
}

impl CancelCauseFunc {
    /// Cancels the context and everything derived from it, with `cause` (or `Cancelled`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{go, Cause, CancelError};
    /// let (ctx, cancel) = go::with_cancel_cause(&go::background());
    /// let why = Cause::custom(std::io::Error::other("disk full"));
    /// cancel.cancel(why.clone());
    /// assert_eq!(ctx.err(), Some(CancelError::Cancelled));
    /// assert!(go::cause(&ctx).unwrap().is_same(&why));
    /// ```
    pub fn cancel(&self, cause: impl Into<Option<Cause>>) {
        self.ctx.cancel_with(cause.into().unwrap_or(Cause::Cancelled));
    }
}

impl fmt::Debug for CancelFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelFunc").finish_non_exhaustive()
    }
}

impl fmt::Debug for CancelCauseFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelCauseFunc").finish_non_exhaustive()
    }
}

/// Go's `Background()`: never cancelled, no deadline, no values; prints `context.Background`.
/// Does not allocate.
///
/// # Examples
///
/// ```
/// let bg = tether::go::background();
/// assert!(bg.done().is_none() && bg.err().is_none() && bg.deadline().is_none());
/// assert_eq!(bg.to_string(), "context.Background");
/// ```
pub fn background() -> Ctx {
    Ctx::root(Layer::background())
}

/// Go's `TODO()`: like [`background`], for code not yet given a context; prints `context.TODO`.
///
/// # Examples
///
/// ```
/// assert_eq!(tether::go::todo().to_string(), "context.TODO");
/// ```
pub fn todo() -> Ctx {
    Ctx::root(Layer::todo())
}

/// Go's `WithCancel`: a child that is done when `cancel` is called or when `parent` is done.
///
/// # Examples
///
/// ```
/// use tether::go;
/// let (parent, cancel_parent) = go::with_cancel(&go::background());
/// let (child, _cancel_child) = go::with_cancel(&parent);
/// cancel_parent.cancel();
/// assert!(child.err().is_some(), "cancellation reaches children before cancel returns");
/// ```
#[must_use = "dropping the cancel function means only the parent can cancel this context"]
pub fn with_cancel<P: GoContext + Clone>(parent: &P) -> (Ctx, CancelFunc) {
    let ctx = Ctx::view(parent).derive_cancel(None);
    let cancel = CancelFunc { ctx: ctx.native().clone() };
    (ctx, cancel)
}

/// Go's `WithCancelCause`: like [`with_cancel`], with a cancel function that takes a cause.
///
/// # Examples
///
/// ```
/// use tether::{go, Cause};
/// let (ctx, cancel) = go::with_cancel_cause(&go::background());
/// let (child, _c) = go::with_cancel(&ctx);
/// let why = Cause::custom(std::io::Error::other("client left"));
/// cancel.cancel(why.clone());
/// assert!(go::cause(&child).unwrap().is_same(&why), "children report the parent's cause");
/// ```
#[must_use = "dropping the cancel function means only the parent can cancel this context"]
pub fn with_cancel_cause<P: GoContext + Clone>(parent: &P) -> (Ctx, CancelCauseFunc) {
    let ctx = Ctx::view(parent).derive_cancel(None);
    let cancel = CancelCauseFunc { ctx: ctx.native().clone() };
    (ctx, cancel)
}

/// Go's `WithDeadline`: a child that is done at `deadline` (with `DeadlineExceeded`), when
/// `cancel` is called, or when `parent` is done. If `parent`'s deadline is earlier, this is a plain
/// [`with_cancel`] (and prints `.WithCancel`), as in Go.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use tether::{go, CancelError};
/// let (ctx, _cancel) = go::with_deadline(&go::background(), Instant::now() - Duration::from_secs(1));
/// assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
/// assert!(ctx.err().unwrap().is_timeout());
/// ```
#[must_use = "dropping the cancel function means only the deadline or the parent can cancel this context"]
pub fn with_deadline<P: GoContext + Clone>(parent: &P, deadline: Instant) -> (Ctx, CancelFunc) {
    with_deadline_cause(parent, deadline, None)
}

/// Go's `WithDeadlineCause`: like [`with_deadline`], with the cause reported when the deadline
/// passes (`None`: `DeadlineExceeded`). The cancel function does not set it.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use tether::{go, Cause, CancelError};
/// let too_slow = Cause::custom(std::io::Error::other("too slow"));
/// let (ctx, _cancel) = go::with_deadline_cause(&go::background(), Instant::now(), too_slow.clone());
/// assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
/// assert!(go::cause(&ctx).unwrap().is_same(&too_slow));
/// ```
#[must_use = "dropping the cancel function means only the deadline or the parent can cancel this context"]
pub fn with_deadline_cause<P: GoContext + Clone>(
    parent: &P,
    deadline: Instant,
    cause: impl Into<Option<Cause>>,
) -> (Ctx, CancelFunc) {
    let cause = cause.into().unwrap_or(Cause::DeadlineExceeded);
    let ctx = Ctx::view(parent).derive_cancel(Some((deadline, cause)));
    let cancel = CancelFunc { ctx: ctx.native().clone() };
    (ctx, cancel)
}

/// Go's `WithTimeout`: [`with_deadline`] at now + `timeout`. (Go's negative timeouts are
/// deadlines in the past: call [`with_deadline`] with one.) A timeout too large to represent means
/// no deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::go;
/// let (ctx, cancel) = go::with_timeout(&go::background(), Duration::from_secs(60));
/// assert!(ctx.deadline().is_some());
/// cancel.cancel();
/// ```
#[must_use = "dropping the cancel function means only the deadline or the parent can cancel this context"]
pub fn with_timeout<P: GoContext + Clone>(parent: &P, timeout: Duration) -> (Ctx, CancelFunc) {
    with_timeout_cause(parent, timeout, None)
}

/// Go's `WithTimeoutCause`: [`with_deadline_cause`] at now + `timeout`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::{go, Cause};
/// let (ctx, _cancel) = go::with_timeout_cause(&go::background(), Duration::ZERO, Cause::Cancelled);
/// assert_eq!(go::cause(&ctx), Some(Cause::Cancelled));
/// assert!(ctx.err().unwrap().is_timeout());
/// ```
#[must_use = "dropping the cancel function means only the deadline or the parent can cancel this context"]
pub fn with_timeout_cause<P: GoContext + Clone>(
    parent: &P,
    timeout: Duration,
    cause: impl Into<Option<Cause>>,
) -> (Ctx, CancelFunc) {
    match Instant::now().checked_add(timeout) {
        Some(deadline) => with_deadline_cause(parent, deadline, cause),
        None => with_cancel(parent),
    }
}

/// Go's `WithValue`: `parent` with `value` bound to `key` (a `&'static Key<V>` or a string).
/// Shares `parent`'s cancellation: no new node.
///
/// Prints as `.WithValue(<key>, <value>)`: a typed key by its name, a string key as itself; a
/// string value (`String`, `&'static str`, `Arc<str>`) as itself, any other value by its type name.
///
/// # Examples
///
/// ```
/// use tether::go;
/// let ctx = go::with_value(&go::background(), "k1", "v1");
/// assert_eq!(ctx.to_string(), "context.Background.WithValue(k1, v1)");
/// ```
pub fn with_value<P, K, V>(parent: &P, key: K, value: V) -> Ctx
where
    P: GoContext + Clone,
    K: ValueKey<V>,
    V: Any + Send + Sync,
{
    let value: any_key::Value = Arc::new(value);
    let key = any_key::Sealed::into_owned(key).0;
    Ctx::view(parent).derive_value(key, Some((value, any_key::describe::<V>)))
}

/// Go's `WithValue(parent, key, nil)`: binds "no value" to `key`, hiding outer bindings of it.
/// Prints as `.WithValue(<key>, <nil>)`.
///
/// # Examples
///
/// ```
/// use tether::go;
/// let ctx = go::with_value(&go::background(), "k", "v");
/// let hidden = go::with_nil_value(&ctx, "k");
/// assert!(hidden.value("k").is_none());
/// assert_eq!(hidden.to_string(), "context.Background.WithValue(k, v).WithValue(k, <nil>)");
/// ```
pub fn with_nil_value<P, K>(parent: &P, key: K) -> Ctx
where
    P: GoContext + Clone,
    K: NilKey,
{
    Ctx::view(parent).derive_value(any_key::Sealed::into_owned(key).0, None)
}

/// Go's `WithoutCancel`: `parent`'s values, and no cancellation: no done channel, deadline, error
/// or cause.
///
/// # Examples
///
/// ```
/// use tether::go;
/// let (ctx, cancel) = go::with_cancel(&go::with_value(&go::background(), "k", "v"));
/// let audit = go::without_cancel(&ctx);
/// cancel.cancel();
/// assert!(audit.err().is_none() && audit.done().is_none());
/// assert!(audit.value("k").is_some());
/// assert_eq!(audit.to_string(), "context.Background.WithValue(k, v).WithCancel.WithoutCancel");
/// ```
pub fn without_cancel<P: GoContext + Clone>(parent: &P) -> Ctx {
    Ctx::view(parent).derive_without_cancel()
}

/// Go's `context.Cause(c)`: why `ctx` is done (`None` before). A context cancelled through its
/// parent reports the parent's cause; a deadline reports `DeadlineExceeded` unless a cause was
/// given; a context without cancellation reports `None`.
///
/// # Examples
///
/// ```
/// use tether::{go, Cause};
/// let (ctx, cancel) = go::with_cancel(&go::background());
/// assert_eq!(go::cause(&ctx), None);
/// cancel.cancel();
/// assert_eq!(go::cause(&ctx), Some(Cause::Cancelled));
/// ```
pub fn cause<C: GoContext + ?Sized>(ctx: &C) -> Option<Cause> {
    ctx.cause()
}

/// Whether `err` reports a timeout (Go's `Timeout()` method on `DeadlineExceeded`).
///
/// # Examples
///
/// ```
/// use tether::{go, CancelError};
/// assert!(go::is_timeout(CancelError::DeadlineExceeded));
/// assert!(!go::is_timeout(CancelError::Cancelled));
/// ```
pub fn is_timeout(err: CancelError) -> bool {
    err.is_timeout()
}
