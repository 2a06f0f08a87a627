//! Waiting: wait(), wait_timeout(), and a lazily created done() receiver usable in select!.

use crossbeam_channel::{select, unbounded};
use std::time::Duration;
use tether::{Canceller, Cause, Context};

/// A bound for waits that must time out (the context is never cancelled).
const BRIEF: Duration = Duration::from_millis(10);

#[test]
fn wait_blocks_until_another_thread_cancels_and_returns_the_cause() {
    let ctx = Context::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ctx.wait());
        ctx.cancel_with(Cause::ScopeExited);
        assert_eq!(waiter.join().unwrap(), Cause::ScopeExited);
    });
}

#[test]
fn wait_timeout_returns_none_if_not_cancelled_in_time_and_the_cause_if_it_was() {
    let ctx = Context::new();
    assert_eq!(ctx.wait_timeout(BRIEF), None);
    ctx.cancel();
    assert_eq!(ctx.wait_timeout(Duration::from_secs(3600)), Some(Cause::Cancelled));
}

#[test]
fn every_thread_waiting_on_a_context_or_its_descendants_is_woken_by_one_cancel() {
    let root = Context::new();
    let child = root.child().with_timeout(Duration::from_secs(3600));
    std::thread::scope(|s| {
        let waiters = [
            s.spawn(|| Some(root.wait())),
            s.spawn(|| Some(root.wait())),
            s.spawn(|| root.wait_timeout(Duration::from_secs(3600))),
            s.spawn(|| Some(child.wait())),
            s.spawn(|| child.wait_timeout(Duration::from_secs(3600))),
        ];
        root.cancel_with(Cause::ScopeExited);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Some(Cause::ScopeExited));
        }
    });
}

#[test]
fn done_becomes_ready_on_cancellation_inside_select_next_to_other_channels() {
    let ctx = Context::new();
    let (tx, rx) = unbounded::<u32>();
    tx.send(1).unwrap();
    let mut got = Vec::new();
    let done = ctx.done();
    loop {
        select! {
            recv(rx) -> v => {
                got.push(v.unwrap());
                ctx.cancel(); // after the first message, stop
            }
            recv(done) -> r => {
                assert!(r.is_err(), "done never delivers a value, it disconnects");
                break;
            }
        }
    }
    assert_eq!(got, vec![1]);
}

#[test]
fn done_asked_after_cancellation_is_ready_at_once() {
    let ctx = Context::new();
    ctx.cancel();
    assert!(ctx.done().try_recv().is_err());
    assert!(ctx.done().recv_timeout(Duration::from_secs(3600)).is_err());
}

#[test]
fn successive_done_calls_return_the_same_channel() {
    let ctx = Context::new();
    let a = ctx.done();
    let b = ctx.done();
    assert!(a.same_channel(&b));
}

#[test]
fn a_context_that_can_never_be_cancelled_says_so_and_its_done_is_never_ready() {
    let bg = Context::background();
    assert!(!bg.can_be_cancelled());
    assert!(bg.done().recv_timeout(BRIEF).is_err());
    assert!(bg.done().try_recv().is_err());
    assert!(!Context::new().detached().can_be_cancelled());
    assert!(Context::new().can_be_cancelled());
}

#[test]
#[should_panic(expected = "can never be cancelled")]
fn waiting_on_a_context_that_can_never_be_cancelled_panics_instead_of_hanging() {
    Context::background().wait();
}
