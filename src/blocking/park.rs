//! Parking that a cancellation unparks: [`park`] and [`park_timeout`].
//!
//! The call arms an unpark of the current thread on the context ([`armed`](super::armed)) and
//! parks; the arming is removed before it returns. A cancellation that lands after the park ended
//! for another reason leaves an unpark token behind, so the thread's next `park` may return at
//! once: a spurious wake-up, which `std::thread::park` always allows.

use super::armed::Armed;
use crate::cancel::{Canceller, Cause};
use std::thread;
use std::time::Duration;

/// Parks the current thread until it is unparked ([`std::thread::Thread::unpark`]) or `ctx` is
/// cancelled. Like [`std::thread::park`], it may also return spuriously: call it in a loop that
/// checks your condition.
///
/// # Errors
///
/// The cause if `ctx` is cancelled, before or during the park (cancellation is checked first).
///
/// # Examples
///
/// ```
/// tether::scope(|s| {
///     let parked = s.spawn(|ctx| loop {
///         // A spurious wake-up loops; the cancellation returns its cause.
///         if let Err(cause) = tether::blocking::park(ctx) {
///             break cause;
///         }
///     });
///     s.cancel();
///     assert_eq!(parked.join().unwrap(), tether::Cause::Cancelled);
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn park<C: Canceller + ?Sized>(ctx: &C) -> Result<(), Cause> {
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    park_until(ctx, None)
}

/// As [`park`], returning after `timeout` at the latest. A zero `timeout` only checks for
/// cancellation.
///
/// # Errors
///
/// The cause if `ctx` is cancelled, before or during the park.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let ctx = tether::Context::new();
/// assert_eq!(tether::blocking::park_timeout(&ctx, Duration::from_millis(1)), Ok(()));
/// ctx.cancel();
/// assert!(tether::blocking::park_timeout(&ctx, Duration::from_secs(3600)).is_err());
/// ```
#[track_caller]
pub fn park_timeout<C: Canceller + ?Sized>(ctx: &C, timeout: Duration) -> Result<(), Cause> {
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    park_until(ctx, Some(timeout))
}

/// Parks with an unpark armed on `ctx`.
pub(super) fn park_until<C: Canceller + ?Sized>(ctx: &C, timeout: Option<Duration>) -> Result<(), Cause> {
    if ctx.is_cancelled() {
        return Err(super::cause_of(ctx));
    }
    if timeout.is_some_and(|timeout| timeout.is_zero()) {
        return Ok(()); // nothing to wait for (a zero-length park would last the kernel's slack)
    }
    let me = thread::current();
    let mut armed = Armed::arm(ctx, move || me.unpark())?;
    match timeout {
        None => thread::park(),
        Some(timeout) => thread::park_timeout(timeout),
    }
    if armed.disarm() || ctx.is_cancelled() {
        return Err(super::cause_of(ctx));
    }
    Ok(())
}
