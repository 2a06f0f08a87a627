//! On-cancel callbacks: run once, stop() contract, immediate run when already cancelled, reentrancy.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tether::{CallbackPanics, Canceller, Cause, Context};

fn counter() -> (Arc<AtomicUsize>, impl Fn() -> usize) {
    let c = Arc::new(AtomicUsize::new(0));
    let read = c.clone();
    (c, move || read.load(SeqCst))
}

#[test]
fn a_callback_runs_once_with_the_cause_however_often_the_context_is_cancelled() {
    let ctx = Context::new();
    let (runs, count) = counter();
    let _h = ctx.on_cancel(move |cause| {
        assert_eq!(*cause, Cause::ScopeExited);
        runs.fetch_add(1, SeqCst);
    });
    ctx.cancel_with(Cause::ScopeExited);
    ctx.cancel();
    assert_eq!(count(), 1);
}

#[test]
fn callbacks_of_descendants_run_when_an_ancestor_is_cancelled() {
    let root = Context::new();
    let leaf = root.child().child();
    let (runs, count) = counter();
    let _h = leaf.on_cancel(move |_| {
        runs.fetch_add(1, SeqCst);
    });
    root.cancel();
    assert_eq!(count(), 1, "cancel returns after the subtree's callbacks ran");
}

#[test]
fn stop_returns_true_only_if_it_prevented_the_run() {
    let ctx = Context::new();
    let (runs, count) = counter();
    let r = runs.clone();
    let stopped = ctx.on_cancel(move |_| {
        r.fetch_add(1, SeqCst);
    });
    let ran = ctx.on_cancel(move |_| {
        runs.fetch_add(1, SeqCst);
    });
    assert!(stopped.stop());
    assert!(!stopped.stop(), "stopping twice: the second call prevents nothing");
    ctx.cancel();
    assert_eq!(count(), 1);
    assert!(!ran.stop(), "it already ran");
}

#[test]
fn registering_on_a_cancelled_context_runs_the_callback_at_once() {
    let ctx = Context::new();
    ctx.cancel_with(Cause::ScopeExited);
    let (runs, count) = counter();
    let h = ctx.on_cancel(move |cause| {
        assert_eq!(*cause, Cause::ScopeExited);
        runs.fetch_add(1, SeqCst);
    });
    assert_eq!(count(), 1);
    assert!(!h.stop());
}

#[test]
fn a_callback_may_cancel_other_nodes_register_callbacks_and_drop_handles() {
    let a = Context::new();
    let b = Context::new();
    let b_child = b.child();
    let (runs, count) = counter();
    let inner_runs = runs.clone();
    let b2 = b.clone();
    let a_child = a.child();
    let _h = a.on_cancel(move |_| {
        b2.cancel(); // cancels another tree
        let _inner = b2.on_cancel(move |_| {
            inner_runs.fetch_add(1, SeqCst); // registered on a cancelled node: runs at once
        });
        drop(a_child); // drops a handle into the tree being cancelled
        runs.fetch_add(1, SeqCst);
    });
    a.cancel();
    assert!(b_child.is_cancelled());
    assert_eq!(count(), 2);
}

#[test]
fn a_callback_that_cancels_its_own_node_does_not_deadlock() {
    let ctx = Context::new();
    let me = ctx.clone();
    let _h = ctx.on_cancel(move |_| me.cancel_with(Cause::ScopeExited));
    ctx.cancel();
    assert_eq!(ctx.cause(), Some(Cause::Cancelled));
}

#[test]
fn a_panicking_callback_does_not_stop_the_others_and_its_payload_is_re_raised() {
    let ctx = Context::new();
    let (runs, count) = counter();
    let _a = ctx.on_cancel(|_| panic!("callback exploded"));
    let _b = ctx.on_cancel(move |_| {
        runs.fetch_add(1, SeqCst);
    });
    let payload = catch_unwind(AssertUnwindSafe(|| ctx.cancel())).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"callback exploded"));
    assert_eq!(count(), 1);
    assert!(ctx.is_cancelled());
}

#[test]
fn several_panicking_callbacks_are_all_reported() {
    let ctx = Context::new();
    let _a = ctx.on_cancel(|_| panic!("one"));
    let _b = ctx.on_cancel(|_| panic!("two"));
    let payload = catch_unwind(AssertUnwindSafe(|| ctx.cancel())).unwrap_err();
    let all = payload.downcast::<CallbackPanics>().unwrap();
    let messages: Vec<&str> = all.payloads.iter().map(|p| *p.downcast_ref::<&str>().unwrap()).collect();
    assert_eq!(messages, ["one", "two"]);
}

#[test]
fn a_callback_on_a_context_dropped_uncancelled_is_discarded_and_stop_says_it_never_ran() {
    let (runs, count) = counter();
    let ctx = Context::new();
    let h = ctx.on_cancel(move |_| {
        runs.fetch_add(1, SeqCst);
    });
    drop(ctx);
    assert!(h.stop());
    assert!(!h.stop());
    assert_eq!(count(), 0);
}

#[test]
fn a_callback_on_a_context_that_can_never_be_cancelled_never_runs() {
    let (runs, count) = counter();
    let h = Context::background().on_cancel(move |_| {
        runs.fetch_add(1, SeqCst);
    });
    assert!(h.stop(), "like Go's AfterFunc on Background: stop prevents a run that never comes");
    assert!(!h.stop());
    assert_eq!(count(), 0);
}

#[test]
fn when_a_deadline_cancels_a_scope_its_callbacks_have_run_before_the_scope_returns() {
    // A timer firer thread cancels the scope: it wakes the waiters, then runs the callbacks it
    // collected, so the body (or a task it runs inline while it waits) can see the cancellation
    // and return before the callbacks have run. The scope's exit waits for them (scope invariant
    // 5). Repeated, since the window is a few microseconds wide: without the wait, this failed
    // in about 1% of the body-waits runs and 3% of the task runs.
    // Fewer under Miri, which runs this under Tree Borrows for the unsafe code, not the race.
    let rounds = if cfg!(miri) { 6 } else { 1_500 };
    for round in 0..rounds {
        let ran = Arc::new(AtomicUsize::new(0));
        let registered = AtomicUsize::new(0);
        let child = |ctx: &Context| {
            let ran = ran.clone();
            let _ = ctx.on_cancel(move |_| {
                ran.fetch_add(1, SeqCst);
            });
            registered.fetch_add(1, SeqCst);
            ctx.wait();
        };
        tether::ScopeBuilder::new()
            .timeout(std::time::Duration::from_millis(1))
            .run(|s| {
                if round % 2 == 0 {
                    child(s.context()); // the body waits itself
                } else {
                    s.spawn_task(child); // skipped, registering nothing, if the deadline comes first
                    s.wait_all();
                }
            })
            .unwrap();
        assert_eq!(ran.load(SeqCst), registered.load(SeqCst), "callbacks run when the scope returned");
    }
}
