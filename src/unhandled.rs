//! The sink for panics that have no caller to be re-raised to: a callback that panics on a timer
//! firer thread or the Go adapter's watcher, a panic escaping a pool job (a bug, caught by the
//! pool's backstop), and every panic of a scope after the first (the first is re-raised by the
//! scope). Nothing is lost: they wait here until [`take_unhandled_panics`] (re-exported by
//! [`crate::testing`]) takes them.

use std::any::Any;
use std::sync::{Mutex, PoisonError};

static UNHANDLED: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

/// Records a panic payload that could not be re-raised to any caller.
pub(crate) fn record(payload: Box<dyn Any + Send>) {
    UNHANDLED.lock().unwrap_or_else(PoisonError::into_inner).push(payload);
}

/// Takes every panic payload recorded since the last call: panics of on-cancel callbacks that ran
/// on a timer firer thread, and the panics of a scope after the first one (which the scope
/// re-raised), oldest first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::{Canceller, Context};
///
/// let ctx = Context::new().with_timeout(Duration::from_millis(1));
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// let _cb = ctx.on_cancel(move |_| {
///     let _ = tx.send(());
///     panic!("callback failed on a timer firer thread")
/// });
/// rx.recv().unwrap();
/// # while tether::testing::take_unhandled_panics().is_empty() { std::thread::yield_now(); }
/// ```
pub fn take_unhandled_panics() -> Vec<Box<dyn Any + Send>> {
    std::mem::take(&mut *UNHANDLED.lock().unwrap_or_else(PoisonError::into_inner))
}
