//! Nested scopes: a scope opened in a child (or body) is a child of the ambient context, so
//! cancellation reaches grandchildren three scopes down. Leak-checked.

use crossbeam_channel::bounded;
use tether::testing::assert_no_leaks;
use tether::{Canceller, Cause};

#[derive(Debug, thiserror::Error)]
#[error("operator pressed stop")]
struct Stop;

#[test]
fn cancelling_the_outer_scope_reaches_a_grandchild_three_scopes_deep() {
    assert_no_leaks(|| {
        let (ready_tx, ready) = bounded(0);
        let mut deepest_saw = None;
        tether::scope(|s1| {
            let deepest_saw = &mut deepest_saw;
            s1.spawn(move |_| {
                tether::scope(|s2| {
                    s2.spawn(move |_| {
                        tether::scope(|s3| {
                            s3.spawn(move |ctx| {
                                ready_tx.send(()).unwrap();
                                *deepest_saw = Some(ctx.wait());
                            });
                            // Each inner body waits: its own exit would cancel with ScopeExited.
                            s3.context().wait()
                        })
                        .unwrap()
                    });
                    s2.context().wait()
                })
                .unwrap()
            });
            ready.recv().unwrap();
            s1.context().cancel_with(Cause::custom(Stop));
        })
        .unwrap();
        let cause = deepest_saw.expect("the grandchild ran");
        assert!(cause.downcast_ref::<Stop>().is_some(), "the outer cause, unchanged: {cause}");
    });
}

#[test]
fn cancelling_an_inner_scope_does_not_reach_the_outer_scope_or_its_other_children() {
    assert_no_leaks(|| {
        tether::scope(|outer| {
            let sibling = outer.spawn(|ctx| ctx.wait_timeout(std::time::Duration::ZERO));
            tether::scope(|inner| {
                inner.cancel();
                assert!(inner.spawn(|ctx| ctx.is_cancelled()).join().unwrap());
            })
            .unwrap();
            assert!(!outer.context().is_cancelled());
            assert_eq!(sibling.join().unwrap(), None);
        })
        .unwrap();
    });
}

#[test]
fn an_inner_scope_body_exit_cancels_only_the_inner_children() {
    assert_no_leaks(|| {
        tether::scope(|outer| {
            let mut inner_child_saw = None;
            tether::scope(|inner| {
                let saw = &mut inner_child_saw;
                inner.spawn(move |ctx| *saw = Some(ctx.wait()));
            })
            .unwrap();
            assert_eq!(inner_child_saw, Some(Cause::ScopeExited));
            assert!(!outer.context().is_cancelled());
        })
        .unwrap();
    });
}

#[test]
fn a_scope_nested_in_a_child_is_below_that_childs_context() {
    assert_no_leaks(|| {
        tether::scope(|s| {
            let (ready_tx, ready) = bounded(0);
            let child = s.spawn(move |_| {
                tether::scope(|nested| {
                    ready_tx.send(()).unwrap();
                    nested.context().wait()
                })
                .unwrap()
            });
            ready.recv().unwrap();
            child.context().cancel();
            assert_eq!(child.join().unwrap(), Cause::Cancelled);
        })
        .unwrap();
    });
}
