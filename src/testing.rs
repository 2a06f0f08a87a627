//! Test support: panics that had no caller to be re-raised to.
//!
//! A callback that panics on the timer thread (its context's deadline fired) cannot be re-raised
//! to whoever registered it; rather than losing the payload, the crate records it here, and a test
//! can take and inspect it.

use std::any::Any;
use std::sync::{Mutex, PoisonError};

static UNHANDLED: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

/// Records a panic payload that could not be re-raised to any caller.
pub(crate) fn record_unhandled_panic(payload: Box<dyn Any + Send>) {
    UNHANDLED.lock().unwrap_or_else(PoisonError::into_inner).push(payload);
}

/// Takes every panic payload recorded since the last call: panics of on-cancel callbacks that ran
/// on the timer thread, where no caller could receive them.
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
///     panic!("callback failed on the timer thread")
/// });
/// rx.recv().unwrap();
/// # while tether::testing::take_unhandled_panics().is_empty() { std::thread::yield_now(); }
/// ```
pub fn take_unhandled_panics() -> Vec<Box<dyn Any + Send>> {
    std::mem::take(&mut *UNHANDLED.lock().unwrap_or_else(PoisonError::into_inner))
}
