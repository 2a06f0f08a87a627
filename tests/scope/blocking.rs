//! Cancellable blocking: sleep, recv and recv_timeout return early with the cause.

use crate::shared;
use crossbeam_channel::{bounded, unbounded};
use std::time::{Duration, Instant};
use tether::blocking::{RecvError, RecvTimeoutError, recv, recv_timeout, sleep};
use tether::{Canceller, Cause, Context};

/// A sleep or timeout that completes during a test.
const SHORT: Duration = Duration::from_millis(10);
/// A sleep or timeout that must be interrupted, never completed.
const AGES: Duration = Duration::from_secs(3600);

#[test]
fn sleep_returns_ok_after_its_duration_when_not_cancelled() {
    let _shared = shared();
    let start = Instant::now();
    assert_eq!(sleep(&Context::new(), SHORT), Ok(()));
    assert!(start.elapsed() >= SHORT);
}

#[test]
fn sleep_returns_the_cause_as_soon_as_another_thread_cancels() {
    let _shared = shared();
    let ctx = Context::new();
    let (asleep_tx, asleep) = bounded(0);
    std::thread::scope(|s| {
        let sleeper = s.spawn(|| {
            asleep_tx.send(()).unwrap();
            sleep(&ctx, AGES)
        });
        asleep.recv().unwrap();
        ctx.cancel_with(Cause::ScopeExited);
        assert_eq!(sleeper.join().unwrap(), Err(Cause::ScopeExited));
    });
}

#[test]
fn sleep_on_a_cancelled_context_returns_at_once_even_for_zero() {
    let _shared = shared();
    let ctx = Context::new();
    ctx.cancel();
    assert_eq!(sleep(&ctx, Duration::ZERO), Err(Cause::Cancelled));
}

#[test]
fn recv_delivers_messages_then_disconnected() {
    let _shared = shared();
    let (tx, rx) = unbounded();
    tx.send(1).unwrap();
    drop(tx);
    let ctx = Context::new();
    assert_eq!(recv(&ctx, &rx), Ok(1));
    assert_eq!(recv(&ctx, &rx), Err(RecvError::Disconnected));
    assert!(recv(&ctx, &rx).unwrap_err().is_disconnected());
}

#[test]
fn recv_blocked_on_an_empty_channel_returns_the_cause_when_the_scope_exits() {
    let _shared = shared();
    let (_tx, rx) = unbounded::<u32>();
    let mut seen = None;
    tether::scope(|s| {
        let seen = &mut seen;
        let rx = &rx;
        s.spawn(move |ctx| *seen = Some(recv(ctx, rx)));
    })
    .unwrap();
    assert_eq!(seen, Some(Err(RecvError::Cancelled(Cause::ScopeExited))));
}

#[test]
fn a_cancelled_context_wins_over_a_ready_message() {
    let _shared = shared();
    let (tx, rx) = unbounded();
    tx.send(1).unwrap();
    let ctx = Context::new();
    ctx.cancel();
    assert!(recv(&ctx, &rx).unwrap_err().is_cancelled());
    assert!(recv_timeout(&ctx, &rx, AGES).unwrap_err().is_cancelled());
    assert_eq!(rx.try_recv(), Ok(1), "the message was not consumed");
}

#[test]
fn recv_timeout_times_out_is_cancelled_or_delivers() {
    let _shared = shared();
    let (tx, rx) = unbounded();
    let ctx = Context::new();
    assert_eq!(recv_timeout(&ctx, &rx, SHORT), Err(RecvTimeoutError::Timeout));
    tx.send("x").unwrap();
    assert_eq!(recv_timeout(&ctx, &rx, AGES), Ok("x"));
    let deadline = ctx.with_timeout(SHORT);
    assert_eq!(recv_timeout(&deadline, &rx, AGES), Err(RecvTimeoutError::Cancelled(Cause::DeadlineExceeded)));
    drop(tx);
    assert_eq!(recv_timeout(&ctx, &rx, AGES), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn the_helpers_accept_a_dyn_canceller() {
    let _shared = shared();
    let ctx = Context::new();
    let dynamic: &dyn Canceller = &ctx;
    ctx.cancel();
    assert_eq!(sleep(dynamic, AGES), Err(Cause::Cancelled));
    let (_tx, rx) = unbounded::<()>();
    assert!(recv(dynamic, &rx).is_err());
}
