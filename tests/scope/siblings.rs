//! Children capture the scope and spawn siblings into it, as `std::thread::scope` allows: the
//! siblings are children of the scope like any other (same context parent, same exit, same
//! limit, same failure policy). Leak-checked (`exclusive()`).

use crate::exclusive;
use crossbeam_channel::bounded;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tether::testing::assert_no_leaks;
use tether::{Canceller, Cause, Scope, ScopeBuilder};

/// Visits a binary tree of `depth` levels, each node a child of the same scope.
fn visit<'scope>(s: &'scope Scope<'scope, '_>, depth: u32, visited: &'scope AtomicUsize) {
    visited.fetch_add(1, SeqCst);
    if depth > 0 {
        for _ in 0..2 {
            s.spawn(move |_| visit(s, depth - 1, visited));
        }
    }
}

#[test]
fn a_tree_of_children_spawned_by_children_is_waited_for_by_wait_all() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let visited = AtomicUsize::new(0);
        tether::scope(|s| {
            visit(s, 5, &visited);
            s.wait_all();
            assert_eq!(visited.load(SeqCst), 63, "2^6 - 1 nodes, all finished before wait_all returned");
        })
        .unwrap();
    });
}

#[test]
fn the_exit_cancels_and_waits_for_siblings_spawned_after_the_body_returned() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let mut late_saw = None;
        tether::scope(|s| {
            let late_saw = &mut late_saw;
            s.spawn(move |ctx| {
                ctx.wait(); // until the exit cancels the scope: the body has returned
                let sibling = s.spawn(|ctx| ctx.cause());
                *late_saw = sibling.join().unwrap();
            });
        })
        .unwrap();
        assert_eq!(late_saw, Some(Cause::ScopeExited), "a sibling spawned late starts already cancelled");
    });
}

#[test]
fn a_siblings_context_is_a_child_of_the_scope_not_of_its_spawner() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        tether::scope(|s| {
            let (ready_tx, ready) = bounded(0);
            let spawner = s.spawn(move |ctx| {
                let sibling = s.spawn(|ctx| ctx.wait());
                ready_tx.send(()).unwrap();
                ctx.wait(); // the spawner is cancelled on its own...
                sibling
            });
            ready.recv().unwrap();
            spawner.context().cancel();
            let sibling = spawner.join().unwrap();
            assert!(!sibling.context().is_cancelled(), "...which does not reach the sibling");
            s.cancel();
            assert_eq!(sibling.join().unwrap(), Cause::Cancelled, "cancelling the scope does");
        })
        .unwrap();
    });
}

#[test]
fn a_sibling_spawned_by_a_child_counts_against_the_limit() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        ScopeBuilder::new()
            .limit(1)
            .run(|s| {
                let outer = s.spawn(|_| {
                    // The only slot is this child's own.
                    s.try_spawn(|_| ()).is_err()
                });
                assert!(outer.join().unwrap(), "try_spawn from a child saw the limit full");
            })
            .unwrap();
    });
}

#[test]
fn a_siblings_error_fails_the_scope_like_any_childs() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let err = tether::scope(|s| {
            s.spawn(|_| {
                s.spawn_fallible(|_| Err::<(), _>(std::fmt::Error));
            });
        })
        .unwrap_err();
        assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    });
}

#[test]
#[should_panic(expected = "would wait for itself")]
fn wait_all_from_a_child_of_the_same_scope_panics_instead_of_deadlocking() {
    let _exclusive = exclusive();
    let payload = assert_no_leaks(|| {
        std::panic::catch_unwind(|| {
            tether::scope(|s| {
                s.spawn(|_| s.wait_all());
            })
        })
        .unwrap_err()
    });
    std::panic::resume_unwind(payload);
}
