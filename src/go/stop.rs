//! How a closure is tied to a context's cancellation ([`Subscription`]) and Go's `AfterFunc`
//! stop function ([`AfterFuncStop`]), which unties it. A leaf of the adapter: the ways of tying
//! (`link.rs`, `after_func.rs`) and Go's interface (`go_context.rs`) all use it, and it uses
//! none of them.
//!
//! # Invariants
//! 1. `stop()` answers for the registration once: its first call returns whether it prevented the
//!    run, every later call returns `false` (Go's `sync.Once` in `AfterFunc`).

use crate::cancel::CallbackHandle;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a closure is tied to a context's cancellation.
pub(crate) enum Subscription {
    /// The context can never be cancelled: the closure was dropped.
    Never,
    /// The context was already done: the closure has been called.
    Fired,
    /// An on-cancel callback on a native node.
    Native(CallbackHandle),
    /// The custom context's own `after_func` hook.
    Hook(Box<AfterFuncStop>),
    /// Any other way to untie it: an entry in the shared watcher (`link.rs`), or a custom
    /// context's unregistration function ([`AfterFuncStop::from_fn`]). True if the call
    /// prevented the run.
    Other(Box<dyn Fn() -> bool + Send + Sync>),
}

impl Subscription {
    /// Unties the closure; true if that prevented its call (the `AfterFunc` stop contract, without
    /// the once-only rule, which [`AfterFuncStop`] adds).
    pub(crate) fn stop(&self) -> bool {
        match self {
            Subscription::Never => true,
            Subscription::Fired => false,
            Subscription::Native(handle) => handle.stop(),
            Subscription::Hook(stop) => stop.stop(),
            Subscription::Other(stop) => stop(),
        }
    }
}

/// The stop function [`after_func`](super::after_func) returns.
///
/// # Examples
///
/// ```
/// use tether::go;
///
/// let (ctx, cancel) = go::with_cancel(&go::background());
/// let stop = go::after_func(&ctx, || unreachable!("stopped first"));
/// assert!(stop.stop(), "this call prevented the run");
/// assert!(!stop.stop(), "only the first call can");
/// cancel.cancel();
/// ```
pub struct AfterFuncStop {
    sub: Subscription,
    /// Set by the first `stop()` (invariant 1).
    called: AtomicBool,
}

impl AfterFuncStop {
    pub(crate) fn new(sub: Subscription) -> Self {
        AfterFuncStop { sub, called: AtomicBool::new(false) }
    }

    /// A stop handle around a custom context's own unregistration function, for implementations
    /// of [`GoContext::after_func`](super::GoContext::after_func): `stop` must return true iff it prevented the run.
    ///
    /// # Examples
    ///
    /// ```
    /// let stop = tether::go::AfterFuncStop::from_fn(|| true);
    /// assert!(stop.stop());
    /// assert!(!stop.stop(), "later calls return false");
    /// ```
    pub fn from_fn(stop: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        AfterFuncStop::new(Subscription::Other(Box::new(stop)))
    }

    /// Stops the association of the context with `f`. Returns true if this call stopped `f` from
    /// being run; false if the context was done and `f` has been started on its own thread, or if
    /// `f` was already stopped. Does not wait for `f` to complete.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::go;
    /// let (ctx, cancel) = go::with_cancel(&go::background());
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let stop = go::after_func(&ctx, move || tx.send(()).unwrap());
    /// cancel.cancel();
    /// rx.recv().unwrap();
    /// assert!(!stop.stop(), "it already ran");
    /// ```
    pub fn stop(&self) -> bool {
        // Relaxed: only the once-only rule rides on this flag; the subscription synchronizes the
        // race with the run itself.
        if self.called.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.sub.stop()
    }
}

impl fmt::Debug for AfterFuncStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterFuncStop").field("called", &self.called).finish_non_exhaustive()
    }
}
