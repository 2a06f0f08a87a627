//! A scope's hang watchdog ([`ScopeBuilder::watchdog`](super::ScopeBuilder::watchdog)): when the
//! scope has been cancelled for a while and still has running children, its dump goes to a
//! callback. Design: design/0008-dump.md, "Watchdog".
//!
//! No thread of its own: the scope's cancellation (whatever causes it, its exit included) runs a
//! callback that arms a timer on the shared timer driver (a context with a timeout, the driver's
//! one way in); the timer's own callback, on a firer thread, dumps the scope if it is still
//! registered and has running children. The timer context lives in the scope's state, so the
//! scope's release drops it, which disarms it: a scope that ends in time leaves nothing behind.
//!
//! # Invariants
//! 1. The firer reaches the scope only through the registry, by id (`dump::registry`), never by
//!    a reference of its own: once the scope has unregistered (before its release), the watchdog
//!    finds nothing and reports nothing.
//! 2. It reports at most once per scope: one cancellation, one timer.

use crate::cancel::Cause;
use crate::context::Context;
use crate::dump::{self, Dump};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Whom a watchdog tells, with the dump of the hung scope.
pub(crate) type OnHang = Arc<dyn Fn(&Dump) + Send + Sync>;

/// The armed timer of a scope's watchdog, if its scope has been cancelled; dropped with the
/// scope's state, which disarms it.
#[derive(Default)]
pub(crate) struct Armed(Arc<Mutex<Option<Context>>>);

/// Arms the watchdog of scope `id`, whose context is `ctx`: `after` its cancellation, if it still
/// has running children, `on_hang` gets its dump.
pub(crate) fn arm(ctx: &Context, id: u64, after: Duration, on_hang: OnHang) -> Armed {
    let armed = Armed::default();
    let slot = armed.0.clone();
    // Dropping the handle keeps the callback registered (it runs when the scope is cancelled).
    drop(ctx.on_cancel(move |_| {
        let timer = Context::background().with_timeout(after);
        drop(timer.on_cancel(move |cause| {
            if *cause == Cause::DeadlineExceeded {
                report(id, &*on_hang);
            }
        }));
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(timer);
    }));
    armed
}

/// On the timer's firer thread: the dump of scope `id` to `on_hang`, if it is still open and has
/// running children (invariant 1).
fn report(id: u64, on_hang: &(dyn Fn(&Dump) + Send + Sync)) {
    let Some(dump) = dump::dump_below(id) else { return };
    if dump.scopes().first().is_some_and(|scope| scope.running > 0) {
        on_hang(&dump);
    }
}

/// The default watchdog callback: the dump to stderr.
pub(crate) fn to_stderr(dump: &Dump) {
    eprintln!("tether: a scope is still waiting for its children after its cancellation\n{dump}");
}
