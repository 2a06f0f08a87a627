//! Go's `AfterFunc`: run a function once, on its own thread, after a context is done.
//!
//! # Invariants
//! 1. `f` runs at most once, and never after a `stop()` that returned `true` (whose once-only
//!    rule is `stop.rs`'s).
//! 2. `f` never runs on the thread that cancelled: the callback that the cancellation runs only
//!    spawns `f`'s thread, so `cancel()` does not wait for `f` (Go's "in its own goroutine").

use super::go_context::GoContext;
use super::layered_ctx::{Ctx, Source};
use super::link::subscribe;
use super::stop::{AfterFuncStop, Subscription};

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
    let run = move || spawn(f); // invariant 2
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
