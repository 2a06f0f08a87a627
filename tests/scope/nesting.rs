//! Nested scopes: a scope opened in a child (or body) is a child of the ambient context, so
//! cancellation reaches grandchildren three scopes down. Leak-checked (`exclusive()`), but
//! for the stack measurements.

use crate::{exclusive, shared};
use crossbeam_channel::bounded;
use tether::testing::assert_no_leaks;
use tether::{Canceller, Cause};

#[derive(Debug, thiserror::Error)]
#[error("operator pressed stop")]
struct Stop;

#[test]
fn cancelling_the_outer_scope_reaches_a_grandchild_three_scopes_deep() {
    let _exclusive = exclusive();
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
    let _exclusive = exclusive();
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
    let _exclusive = exclusive();
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
    let _exclusive = exclusive();
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

// ===== stack per nested scope =====

/// The address of a local in the innermost of `depth` nested scopes, each opened by the body of
/// the one above; `open` opens one scope around its argument.
#[inline(never)]
fn innermost_address(depth: usize, open: &dyn Fn(&dyn Fn() -> usize) -> usize) -> usize {
    if depth == 0 {
        let local = 0u8;
        return std::hint::black_box(&local) as *const u8 as usize;
    }
    open(&|| innermost_address(depth - 1, open))
}

/// Stack bytes per level of nesting through `open`, measured by the depth the stack reaches.
fn stack_per_level(open: &dyn Fn(&dyn Fn() -> usize) -> usize) -> usize {
    const LEVELS: usize = 200;
    let shallow = innermost_address(1, open);
    let deep = innermost_address(LEVELS + 1, open);
    shallow.abs_diff(deep) / LEVELS
}

#[test]
fn a_nested_scope_costs_at_most_512_bytes_of_stack() {
    let _shared = shared();
    if cfg!(miri) {
        return; // Miri's locals have no stack addresses to measure
    }
    let tether_scope = stack_per_level(&|inner| tether::scope(|_| inner()).unwrap());
    let std_scope = stack_per_level(&|inner| std::thread::scope(|_| inner()));
    let bare = stack_per_level(&|inner| inner());
    println!(
        "stack per level: tether::scope {tether_scope} B, std::thread::scope {std_scope} B, no scope {bare} B"
    );
    if cfg!(debug_assertions) {
        return; // the bound is for optimized builds (the README's test command is --release)
    }
    assert!(
        tether_scope <= 512,
        "tether::scope takes {tether_scope} bytes of stack per level (std: {std_scope})"
    );
}

#[test]
fn ten_thousand_nested_scopes_with_a_thread_at_the_bottom_fit_the_main_threads_stack() {
    let _shared = shared();
    if cfg!(debug_assertions) || cfg!(miri) {
        return; // unoptimized frames are several times larger
    }
    /// Opens `depth` nested scopes and spawns a thread child in the innermost.
    fn nest(depth: usize) -> usize {
        if depth == 0 {
            return tether::scope(|s| s.spawn(|_| 1).join().unwrap()).unwrap();
        }
        tether::scope(|_| nest(depth - 1)).unwrap() + 1
    }
    // The default stack of a process's main thread on Linux (the test harness's threads are
    // smaller).
    const MAIN_THREAD_STACK: usize = 8 << 20;
    let reached = std::thread::Builder::new()
        .stack_size(MAIN_THREAD_STACK)
        .spawn(|| nest(10_000))
        .unwrap()
        .join()
        .expect("10,000 nested scopes did not overflow an 8 MiB stack");
    assert_eq!(reached, 10_001);
}
