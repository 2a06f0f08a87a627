//! The cancellation tree: idempotence, first cause wins, synchronous propagation, sticky state.

use std::sync::{Arc, Barrier};
use tether::{CancelError, Canceller, Cause, Context};

#[derive(Debug, thiserror::Error)]
#[error("quota exhausted")]
struct QuotaExhausted;

#[test]
fn the_first_cause_wins_and_later_cancels_change_nothing() {
    let ctx = Context::new();
    let first = Cause::custom(QuotaExhausted);
    ctx.cancel_with(first.clone());
    ctx.cancel_with(Cause::ScopeExited);
    ctx.cancel();
    assert_eq!(ctx.cause(), Some(first));
    assert_eq!(ctx.err(), Some(CancelError::Cancelled));
}

#[test]
fn every_descendant_is_cancelled_with_the_ancestors_cause_when_cancel_returns() {
    let root = Context::new();
    let child = root.child();
    let grandchild = child.child();
    let sibling = root.child();
    let cause = Cause::custom(QuotaExhausted);
    child.cancel_with(cause.clone());
    assert!(child.is_cancelled() && grandchild.is_cancelled());
    assert_eq!(grandchild.cause(), Some(cause.clone()));
    assert!(!root.is_cancelled() && !sibling.is_cancelled(), "cancellation never flows up or sideways");

    root.cancel();
    assert_eq!(sibling.cause(), Some(Cause::Cancelled));
    assert_eq!(grandchild.cause(), Some(cause), "a cancelled node keeps its own first cause");
}

#[test]
fn a_child_of_a_cancelled_parent_is_born_cancelled_with_the_parents_error_and_cause() {
    let parent = Context::new().with_timeout(std::time::Duration::ZERO);
    let child = parent.child();
    assert_eq!(child.err(), Some(CancelError::DeadlineExceeded));
    assert_eq!(child.cause(), Some(Cause::DeadlineExceeded));
    assert_eq!(parent.registered_children(), 0, "a born-cancelled child is not registered");
}

#[test]
fn children_of_a_cancelled_parent_report_everything_a_node_of_their_own_would() {
    static NAME: tether::Key<&str> = tether::Key::new("name");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let parent = Context::new().with_deadline(deadline).with_value(&NAME, "parent");
    let cause = Cause::custom(QuotaExhausted);
    parent.cancel_with(cause.clone());

    let child = parent.child().with_value(&NAME, "child");
    let grandchild = child.with_timeout(std::time::Duration::from_secs(7200)).child();
    for ctx in [&child, &grandchild] {
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
        assert_eq!(ctx.cause(), Some(cause.clone()));
        assert_eq!(ctx.deadline(), Some(deadline), "a later deadline of its own is the parent's");
        assert_eq!(ctx.done().try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected));
        assert_eq!(ctx.registered_children(), 0);
        assert_eq!(ctx.value(&NAME), Some(&"child"), "values are the handle's own");
        let (tx, rx) = std::sync::mpsc::channel();
        let _callback = ctx.on_cancel(move |c| tx.send(c.clone()).unwrap());
        assert_eq!(rx.try_recv().ok(), Some(cause.clone()), "a callback runs at once, with the cause");
        ctx.cancel_with(Cause::ScopeExited);
        assert_eq!(ctx.cause(), Some(cause.clone()), "the first cause stays");
    }
    assert_eq!(parent.value(&NAME), Some(&"parent"));
    assert_eq!(parent.registered_children(), 0);

    let earlier = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let own = parent.with_deadline(earlier);
    assert_eq!(own.deadline(), Some(earlier), "an earlier deadline of its own is reported");
    assert_eq!((own.err(), own.cause()), (Some(CancelError::Cancelled), Some(cause)));
    drop((parent, child));
    assert!(grandchild.is_cancelled(), "a child outlives the handles it was made from");
}

#[test]
fn cancellation_is_sticky() {
    let ctx = Context::new();
    ctx.cancel();
    for _ in 0..3 {
        assert!(ctx.is_cancelled());
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
    }
}

#[test]
fn the_coarse_error_is_separate_from_the_rich_cause() {
    let ctx = Context::new();
    assert_eq!((ctx.err(), ctx.cause()), (None, None));
    ctx.cancel_with(Cause::custom(QuotaExhausted));
    assert_eq!(ctx.err(), Some(CancelError::Cancelled));
    assert_eq!(ctx.cause().unwrap().to_string(), "quota exhausted");
    assert!(ctx.cause().unwrap().downcast_ref::<QuotaExhausted>().is_some());
}

#[test]
fn cloned_handles_view_the_same_node() {
    let ctx = Context::new();
    let clone = ctx.clone();
    clone.cancel();
    assert!(ctx.is_cancelled());
}

#[test]
fn contexts_that_can_never_be_cancelled_ignore_cancel() {
    let bg = Context::background();
    bg.cancel();
    assert!(!bg.is_cancelled() && !bg.can_be_cancelled());
    let detached = Context::new().detached();
    detached.cancel();
    assert!(!detached.is_cancelled());
}

#[test]
fn racing_cancels_with_different_causes_agree_on_one_winner_everywhere() {
    for _ in 0..200 {
        let root = Context::new();
        let mid = root.child();
        let leaves: Vec<Context> = (0..8).map(|_| mid.child()).collect();
        let barrier = Arc::new(Barrier::new(2));
        let a = Cause::custom(QuotaExhausted);
        let b = Cause::ScopeExited;
        std::thread::scope(|s| {
            for (ctx, cause) in [(&root, a.clone()), (&mid, b.clone())] {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    ctx.cancel_with(cause);
                    // Synchronous: when our cancel returns, our whole subtree is cancelled,
                    // whoever won it.
                    assert!(ctx.is_cancelled());
                });
            }
        });
        let winner = mid.cause().unwrap();
        assert!(winner == a || winner == b);
        for leaf in &leaves {
            assert_eq!(leaf.cause(), Some(winner.clone()), "all observers below agree");
        }
    }
}

#[test]
fn a_cancel_returns_only_after_a_concurrent_cancel_of_a_subtree_has_finished() {
    // Thread A cancels the root while thread B is cancelling a large subtree: when A's cancel
    // returns, every node below the root must be cancelled even though B owns that subtree.
    for _ in 0..20 {
        let root = Context::new();
        let sub = root.child();
        let leaves: Vec<Context> = (0..2_000).map(|_| sub.child()).collect();
        let barrier = Arc::new(Barrier::new(2));
        std::thread::scope(|s| {
            let b = barrier.clone();
            let sub = &sub;
            s.spawn(move || {
                b.wait();
                sub.cancel_with(Cause::ScopeExited);
            });
            barrier.wait();
            root.cancel();
            assert!(leaves.iter().all(Canceller::is_cancelled));
        });
    }
}
