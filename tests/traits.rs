//! Canceller and Valuer are separate, object-safe and open; handles are Send + Sync.

use std::time::Instant;
use tether::{CancelError, Canceller, Cause, Context, Key, Valuer};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn public_handles_are_send_and_sync() {
    assert_send_sync::<Context>();
    assert_send_sync::<tether::CallbackHandle>();
    assert_send_sync::<Cause>();
    assert_send_sync::<CancelError>();
    assert_send_sync::<Key<String>>();
}

#[test]
fn code_can_ask_for_cancellation_only_or_values_only() {
    static K: Key<u8> = Key::new("k");
    fn stop_requested(c: &dyn Canceller) -> bool {
        c.is_cancelled()
    }
    fn read(v: &dyn Valuer) -> Option<u8> {
        K.get_in(v).copied()
    }
    let ctx = Context::new().with_value(&K, 3);
    assert!(!stop_requested(&ctx));
    assert_eq!(read(&ctx), Some(3));
    ctx.cancel();
    assert!(stop_requested(&ctx));
}

/// A foreign Canceller, like Go's `otherContext` tests: a flag with no deadline.
struct Flag(std::sync::atomic::AtomicBool);

impl Canceller for Flag {
    fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn err(&self) -> Option<CancelError> {
        self.is_cancelled().then_some(CancelError::Cancelled)
    }
    fn cause(&self) -> Option<Cause> {
        self.is_cancelled().then_some(Cause::Cancelled)
    }
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn done(&self) -> tether::Done<'_> {
        tether::Done::never()
    }
    fn can_be_cancelled(&self) -> bool {
        true
    }
}

#[test]
fn a_foreign_type_can_implement_canceller_and_use_the_provided_waits() {
    let flag = Flag(std::sync::atomic::AtomicBool::new(true));
    let dynamic: &dyn Canceller = &flag;
    assert!(dynamic.is_cancelled());
    assert_eq!(dynamic.wait_timeout(std::time::Duration::ZERO), Some(Cause::Cancelled));
}
