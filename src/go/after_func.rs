//! Go's `AfterFunc`: run a function once, on its own thread, after a context is done.
//!
//! # Invariants
//! 1. `f` runs at most once, and never after a `stop()` that returned `true`.
//! 2. `stop()` answers for the registration once: its first call returns whether it prevented the
//!    run, every later call returns `false` (Go's `sync.Once` in `AfterFunc`).
//! 3. `f` never runs on the thread that cancelled: the callback that the cancellation runs only
//!    spawns `f`'s thread, so `cancel()` does not wait for `f` (Go's "in its own goroutine").

use super::go_context::GoContext;
use super::layered_ctx::{Ctx, Source};
use super::link::{Subscription, subscribe};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Set by the first `stop()` (invariant 2).
    called: AtomicBool,
}

impl AfterFuncStop {
    pub(crate) fn new(sub: Subscription) -> Self {
        AfterFuncStop { sub, called: AtomicBool::new(false) }
    }

    /// A stop handle around a custom context's own unregistration function, for implementations
    /// of [`GoContext::after_func`]: `stop` must return true iff it prevented the run.
    ///
    /// # Examples
    ///
    /// ```
    /// let stop = tether::go::AfterFuncStop::from_fn(|| true);
    /// assert!(stop.stop());
    /// assert!(!stop.stop(), "later calls return false");
    /// ```
    pub fn from_fn(stop: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        AfterFuncStop::new(Subscription::Custom(Box::new(stop)))
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

/// Arranges to call `f` on its own thread after `ctx` is done (Go's `AfterFunc`). If `ctx` is
/// already done, `f` is started at once. Several calls on one context are independent.
///
/// `f` runs on a new thread, never on the thread that cancels, so `cancel()` never waits for it.
/// On a context that can never be cancelled (`background()`, `without_cancel`), `f` never runs and
/// the first `stop()` returns true. Registering costs no thread: a thread is started only when
/// `f` is to run.
///
/// # Examples
///
/// ```
/// use tether::go;
///
/// let (ctx, cancel) = go::with_cancel(&go::background());
/// let (tx, rx) = std::sync::mpsc::channel();
/// let _stop = go::after_func(&ctx, move || tx.send("cleaned up").unwrap());
/// cancel.cancel();
/// assert_eq!(rx.recv().unwrap(), "cleaned up");
/// ```
pub fn after_func<C, F>(ctx: &C, f: F) -> AfterFuncStop
where
    C: GoContext + Clone,
    F: FnOnce() + Send + 'static,
{
    let ctx = Ctx::view(ctx);
    let run = move || spawn(f); // invariant 3
    let sub = match ctx.source() {
        Source::Node(native) => Subscription::Native(native.on_cancel(move |_| run())),
        Source::Custom(parent) => subscribe(parent, Box::new(run)),
        Source::Never => Subscription::Never,
    };
    AfterFuncStop::new(sub)
}

/// Starts `f` on its own thread.
fn spawn<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::Builder::new()
        .name("tether-go-afterfunc".into())
        .spawn(f)
        .expect("tether: cannot start a thread for an AfterFunc");
}
