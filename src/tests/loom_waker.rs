//! Models of a future awaiting a context (`cancel/awaited.rs`): registration against a racing
//! cancel (no lost wake-up), dropping a pending waiter against a racing cancel (at most one wake,
//! nothing left registered), and replacing the waker against a racing cancel. And of a thread
//! blocked in `Context::wait` (`tree::wait`), which parks on the node: a racing cancel of it or of
//! its parent always unparks it (a lost wake-up would leave it parked: loom reports a deadlock).

use super::model;
use crate::cancel::{Canceller, Waiter};
use crate::context::Context;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let count = Arc::new(Counting(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

fn poll(ctx: &Context, waker: &Waker, waiter: &mut Waiter) -> Poll<crate::cancel::Cause> {
    ctx.poll_cancelled(&mut TaskContext::from_waker(waker), waiter)
}

#[test]
fn a_thread_waiting_racing_a_cancel_is_woken_never_lost() {
    model(|| {
        let ctx = Context::new();
        let canceller = ctx.clone();
        let t = thread::spawn(move || canceller.cancel_with(crate::cancel::Cause::ScopeExited));
        assert_eq!(ctx.wait(), crate::cancel::Cause::ScopeExited);
        t.join().unwrap();
    });
}

#[test]
fn a_thread_waiting_on_a_child_racing_the_parents_cancel_is_woken_never_lost() {
    model(|| {
        let parent = Context::new();
        let child = parent.child();
        let t = thread::spawn(move || parent.cancel());
        assert_eq!(child.wait(), crate::cancel::Cause::Cancelled);
        t.join().unwrap();
    });
}

#[test]
fn a_registration_racing_a_cancel_is_ready_or_woken_never_lost() {
    model(|| {
        let ctx = Context::new();
        let canceller = ctx.clone();
        let t = thread::spawn(move || canceller.cancel());
        let (count, waker) = counting();
        let mut waiter = Waiter::new();
        let first = poll(&ctx, &waker, &mut waiter);
        t.join().unwrap();
        let woken = count.0.load(SeqCst);
        assert!(first.is_ready() || woken == 1, "a pending poll must be woken by the cancel");
        assert!(woken <= 1);
        assert!(poll(&ctx, &waker, &mut waiter).is_ready());
    });
}

#[test]
fn dropping_a_pending_waiter_racing_a_cancel_wakes_at_most_once_and_leaves_nothing() {
    model(|| {
        let ctx = Context::new();
        let (count, waker) = counting();
        let mut waiter = Waiter::new();
        assert!(poll(&ctx, &waker, &mut waiter).is_pending());
        let canceller = ctx.clone();
        let t = thread::spawn(move || canceller.cancel());
        drop(waiter);
        t.join().unwrap();
        assert!(count.0.load(SeqCst) <= 1);
        // The node is cancelled and holds no listener: a new waiter is ready at once.
        let mut again = Waiter::new();
        assert!(poll(&ctx, &waker, &mut again).is_ready());
    });
}

#[test]
fn replacing_the_waker_racing_a_cancel_wakes_one_of_them_or_is_ready() {
    model(|| {
        let ctx = Context::new();
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        let mut waiter = Waiter::new();
        assert!(poll(&ctx, &first_waker, &mut waiter).is_pending());
        let canceller = ctx.clone();
        let t = thread::spawn(move || canceller.cancel());
        let replaced = poll(&ctx, &second_waker, &mut waiter);
        t.join().unwrap();
        let wakes = first.0.load(SeqCst) + second.0.load(SeqCst);
        assert!(wakes <= 1, "one registration, one wake");
        assert!(replaced.is_ready() || wakes == 1, "no lost wake-up");
        if replaced.is_pending() {
            assert_eq!(second.0.load(SeqCst), 1, "once replaced, only the latest waker is woken");
        }
    });
}

/// An async scope's child waker (`async_scope/ready.rs`): a child is woken while the scope, which
/// had its key queued by an earlier wake-up, takes the key and polls it. The wake-up may find the
/// key still queued and add nothing; then the scope's poll, which follows its take of the key,
/// must see what the wake-up announced. Otherwise the key is queued again and the scope's waker
/// woken. The announcement is a `Relaxed` store: only the queue's ordering can carry it.
#[test]
fn a_child_wake_up_racing_the_scopes_poll_of_it_is_seen_or_queued_never_lost() {
    use crate::async_scope::ready::Ready;
    use loom::sync::atomic::{AtomicBool, Ordering::Relaxed};
    model(|| {
        let mut ready = Ready::new();
        let (woken, scope_waker) = counting();
        ready.register(&scope_waker);
        ready.add_keys(1);
        // The child's first poll: pending, a clone of its waker kept by what it waits for; then
        // a first wake-up queues it.
        let child_waker = ready.poll_with(0, Waker::clone);
        child_waker.wake_by_ref();
        let announced = Arc::new(AtomicBool::new(false));
        let waker = thread::spawn({
            let announced = announced.clone();
            move || {
                announced.store(true, Relaxed);
                child_waker.wake();
            }
        });
        let mut keys = Vec::new();
        ready.take_woken(&mut keys);
        assert_eq!(keys, [0], "the first wake-up queued the key");
        let seen = announced.load(Relaxed);
        waker.join().unwrap();
        if !seen {
            let mut keys = Vec::new();
            ready.take_woken(&mut keys);
            assert_eq!(keys, [0], "a wake-up the poll did not see queued the key again");
            assert!(woken.0.load(SeqCst) >= 2, "and woke the scope's future");
        }
    });
}
