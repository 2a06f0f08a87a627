//! Fallible children: the first error cancels the siblings with a cause they can downcast, the
//! scope fails with it, and every later error is kept.

use crate::{ShardFailed, shared};
use crossbeam_channel::bounded;
use std::collections::BTreeSet;
use std::sync::Barrier;
use tether::{Canceller, Cause};

#[test]
fn the_first_error_cancels_siblings_with_a_child_failed_cause_downcastable_to_its_type() {
    let _shared = shared();
    let err = tether::scope(|s| {
        let sibling = s.spawn(|ctx| ctx.wait());
        s.spawn_fallible(|_| Err::<(), _>(ShardFailed(7)));
        let cause = sibling.join().unwrap();
        assert!(matches!(cause, Cause::ChildFailed(_)), "{cause:?}");
        assert_eq!(cause.downcast_ref::<ShardFailed>(), Some(&ShardFailed(7)));
        assert_eq!(cause.to_string(), "a sibling failed: shard 7 failed");
    })
    .unwrap_err();
    assert_eq!(err.downcast_ref::<ShardFailed>(), Some(&ShardFailed(7)));
    assert!(err.others().is_empty());
}

#[test]
fn every_later_error_is_kept_after_the_first() {
    let _shared = shared();
    const N: u32 = 4;
    let all_started = Barrier::new(N as usize);
    let err = tether::scope(|s| {
        for i in 0..N {
            let all_started = &all_started;
            s.spawn_fallible(move |_| {
                all_started.wait(); // no child fails before every child runs
                Err::<(), _>(ShardFailed(i))
            });
        }
    })
    .unwrap_err();
    let ids: BTreeSet<u32> = err.iter().map(|e| e.downcast_ref::<ShardFailed>().unwrap().0).collect();
    assert_eq!(ids, (0..N).collect());
    assert_eq!(err.others().len(), N as usize - 1);
    assert_eq!(err.to_string(), format!("{} (and 3 more errors)", err.first()));
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), err.first().to_string());
}

#[test]
fn the_first_error_in_time_is_the_first_reported_and_the_cause_siblings_saw() {
    let _shared = shared();
    let (first_done_tx, first_done) = bounded(0);
    let err = tether::scope(|s| {
        let one = s.spawn_fallible(move |_| {
            let r = Err::<(), _>(ShardFailed(1));
            first_done_tx.send(()).unwrap(); // shard 2 starts only now: shard 1 is running
            r
        });
        let two = s.spawn_fallible(move |ctx| {
            first_done.recv().unwrap();
            let cause = ctx.wait(); // cancelled by shard 1 (the body is still joining)
            assert_eq!(cause.downcast_ref::<ShardFailed>(), Some(&ShardFailed(1)));
            Err::<(), _>(ShardFailed(2))
        });
        let _ = one.join().unwrap();
        let _ = two.join().unwrap();
    })
    .unwrap_err();
    assert_eq!(err.downcast_ref::<ShardFailed>(), Some(&ShardFailed(1)));
    assert_eq!(err.others()[0].downcast_ref::<ShardFailed>(), Some(&ShardFailed(2)));
}

#[test]
fn successful_fallible_children_do_not_fail_the_scope() {
    let _shared = shared();
    let r = tether::scope(|s| {
        let a = s.spawn_fallible(|_| Ok::<_, ShardFailed>(1));
        let b = s.spawn_fallible(|_| Ok::<_, ShardFailed>(2));
        a.join().unwrap().unwrap() + b.join().unwrap().unwrap()
    });
    assert_eq!(r.unwrap(), 3);
}

#[test]
fn a_failed_scope_discards_the_bodys_result_and_cancels_with_child_failed_not_scope_exited() {
    let _shared = shared();
    let mut scope_ctx = None;
    let err = tether::scope(|s| {
        scope_ctx = Some(s.context().clone());
        s.spawn_fallible(|_| Err::<(), _>(ShardFailed(0))).join().unwrap().unwrap_err();
        "ignored"
    })
    .unwrap_err();
    assert!(err.downcast_ref::<ShardFailed>().is_some());
    let cause = scope_ctx.unwrap().cause().unwrap();
    assert!(matches!(cause, Cause::ChildFailed(_)), "the first cause wins over ScopeExited: {cause:?}");
}
