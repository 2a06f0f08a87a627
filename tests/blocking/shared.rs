//! What both blocking test binaries share: the lock that serialises tests reading the live
//! counts, waiting (with a watchdog) until a helper has armed its wake-up, and the three ways a
//! scope cancels a blocked child.

#![allow(dead_code)] // each includer uses part of it

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tether::{Canceller, Cause, Context, ScopeBuilder};

static COUNTS: Mutex<()> = Mutex::new(());

/// Every test of these binaries holds it: they read the process-wide count of registered
/// callbacks and wakers, which no other test may change meanwhile.
pub fn counts() -> MutexGuard<'static, ()> {
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registered callbacks and wakers, process-wide.
pub fn registered() -> usize {
    tether::live().callbacks
}

/// Waits until `done()` holds; panics after a minute instead of hanging (the watchdog).
pub fn wait_for(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < give_up, "watchdog: still waiting for {what}");
        std::thread::yield_now();
    }
}

/// Waits until one more waker than `before` is registered: the blocked helper has armed its
/// wake-up, so the cancellation that follows reaches it through that wake-up.
pub fn wait_armed(before: usize) {
    wait_for("the helper to arm its wake-up", || registered() > before);
}

/// A sibling's failure.
#[derive(Debug, thiserror::Error)]
#[error("sibling failed")]
pub struct SiblingFailed;

/// Runs `blocked` (a call that blocks until its context is cancelled and returns the cause it
/// saw) as a scope child three times, ended by the scope's exit, by the scope's deadline, and by
/// a sibling's failure, and checks the cause each time, that the scope returned, and that the
/// call left nothing registered. `arms`: the helper registers a wake-up (so the test can wait
/// until the child is blocked before cancelling).
pub fn woken_three_ways(arms: bool, blocked: impl Fn(&Context) -> Cause + Sync) {
    let before = registered();
    let wait_blocked = || {
        if arms {
            wait_armed(before);
        }
    };

    let (tx, rx) = crossbeam_channel::bounded(1);
    tether::scope(|s| {
        s.spawn(|ctx| tx.send(blocked(ctx)).unwrap());
        wait_blocked();
        // The body ends here: the exit cancels the child, then waits for it.
    })
    .unwrap();
    assert_eq!(rx.recv().unwrap(), Cause::ScopeExited, "woken by the scope's exit");
    assert_eq!(registered(), before, "nothing left registered");

    let cause = ScopeBuilder::new()
        .timeout(Duration::from_millis(20))
        .run(|s| s.spawn(|ctx| blocked(ctx)).join().unwrap())
        .unwrap();
    assert_eq!(cause, Cause::DeadlineExceeded, "woken by the deadline");
    assert_eq!(registered(), before, "nothing left registered");

    let err = tether::scope(|s| {
        let child = s.spawn(|ctx| blocked(ctx));
        wait_blocked();
        s.spawn_fallible(|_| Err::<(), _>(SiblingFailed));
        let cause = child.join().unwrap();
        assert!(matches!(&cause, Cause::ChildFailed(e) if e.is::<SiblingFailed>()), "{cause:?}");
    })
    .unwrap_err();
    assert!(err.first().is::<SiblingFailed>(), "{err:?}");
    assert_eq!(registered(), before, "nothing left registered");
}

/// A context cancelled with `ScopeExited`, for the "cancellation wins over what is ready" tests.
pub fn cancelled() -> Context {
    let ctx = Context::new();
    ctx.cancel_with(Cause::ScopeExited);
    ctx
}

/// The cause of `ctx` (it must be cancelled).
pub fn cause(ctx: &Context) -> Cause {
    ctx.cause().expect("cancelled")
}

/// The payload of a panic a test injects on purpose.
#[derive(Debug)]
pub struct Injected;

/// Silences the panics whose payload is [`Injected`]; the others still print.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Injected>().is_none() {
                default(info);
            }
        }));
    });
}
