//! Models: cancel vs registration, cancel vs detach, stop vs run, two cancels with two causes,
//! nested cancels completing before `cancel` returns, a lock-free read of the cause vs its write.

use super::model;
use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

#[test]
fn cancel_racing_child_registration_leaves_the_child_cancelled_and_unregistered() {
    model(|| {
        let parent = Context::new();
        let p = parent.clone();
        let t = thread::spawn(move || p.child());
        parent.cancel_with(Cause::ScopeExited);
        let child = t.join().unwrap();
        assert!(child.is_cancelled());
        assert_eq!(child.cause(), Some(Cause::ScopeExited));
        assert_eq!(parent.registered_children(), 0);
    });
}

#[test]
fn a_cause_read_without_the_lock_is_ordered_after_its_write_by_the_state_alone() {
    // The cause sits in a plain cell, published by the Release store of the state: loom's cell
    // reports a read that is not ordered after the write (a Relaxed state store fails here).
    model(|| {
        let ctx = Context::new();
        let c = ctx.clone();
        let t = thread::spawn(move || c.cancel_with(Cause::ScopeExited));
        // Spin until the state says cancelled, then read the cause: this thread never takes the
        // core's lock, so only the state's Release/Acquire pair orders the write before the read.
        let seen = loop {
            match ctx.cause() {
                Some(cause) => break cause,
                None => thread::yield_now(),
            }
        };
        assert_eq!(seen, Cause::ScopeExited);
        t.join().unwrap();
    });
}

#[test]
fn cancel_racing_child_drop_neither_loses_nor_double_frees_the_registration() {
    model(|| {
        let parent = Context::new();
        let child = parent.child();
        let grandchild_probe = child.child();
        let t = thread::spawn(move || drop(child));
        parent.cancel();
        t.join().unwrap();
        assert!(grandchild_probe.is_cancelled());
        drop(grandchild_probe);
        assert_eq!(parent.registered_children(), 0);
    });
}

#[test]
fn stop_racing_the_run_gives_exactly_one_of_ran_or_stopped() {
    model(|| {
        let ctx = Context::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = ctx.on_cancel(move |_| {
            r.fetch_add(1, SeqCst);
        });
        let c = ctx.clone();
        let t = thread::spawn(move || c.cancel());
        let stopped = handle.stop();
        t.join().unwrap();
        assert_eq!(runs.load(SeqCst) + usize::from(stopped), 1);
    });
}

#[test]
fn two_cancels_with_different_causes_have_one_winner_that_every_observer_sees() {
    model(|| {
        let root = Context::new();
        let leaf = root.child();
        let r = root.clone();
        let l = leaf.clone();
        let a = thread::spawn(move || r.cancel_with(Cause::ScopeExited));
        let b = thread::spawn(move || l.cancel_with(Cause::Cancelled));
        a.join().unwrap();
        b.join().unwrap();
        let winner = leaf.cause().unwrap();
        assert!(winner == Cause::ScopeExited || winner == Cause::Cancelled);
        assert_eq!(root.cause(), Some(Cause::ScopeExited), "the root was only cancelled once");
    });
}

#[test]
fn a_cancel_returns_only_when_its_whole_subtree_is_cancelled_even_if_another_thread_started_it() {
    model(|| {
        let root = Context::new();
        let mid = root.child();
        let leaf = mid.child();
        let m = mid.clone();
        let t = thread::spawn(move || m.cancel());
        root.cancel();
        assert!(leaf.is_cancelled(), "checked right after our cancel returned");
        t.join().unwrap();
    });
}

#[test]
fn two_threads_dropping_the_last_handles_release_the_node_exactly_once() {
    model(|| {
        let parent = Context::new();
        let child = parent.child();
        let grandchild = child.child();
        let other = child.clone();
        let t = thread::spawn(move || drop(other));
        drop(child);
        drop(grandchild); // the grandchild's release lets go of the last handle to `child`
        t.join().unwrap();
        assert_eq!(parent.registered_children(), 0);
    });
}

#[test]
fn a_release_racing_a_callback_registration_runs_or_discards_it_exactly_once() {
    model(|| {
        let parent = Context::new();
        let child = parent.child();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = child.on_cancel(move |_| {
            r.fetch_add(1, SeqCst);
        });
        let p = parent.clone();
        let t = thread::spawn(move || p.cancel());
        drop(child);
        t.join().unwrap();
        // Either the cancel reached the child first (the callback ran, stop says so), or the
        // release discarded it (it never runs, and stop says it prevented the run).
        let stopped = handle.stop();
        assert_eq!(runs.load(SeqCst) + usize::from(stopped), 1);
    });
}
