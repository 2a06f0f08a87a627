//! Pool tasks in scopes: the scope semantics of thread children, on the shared work-stealing pool
//! (design/0003-pool-tasks.md).

use crate::{ShardFailed, exclusive, shared};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use tether::{Canceller, Cause, Inheritance, Key, ScopeBuilder};

#[test]
fn a_task_borrows_the_stack_and_returns_its_result() {
    let _shared = shared();
    let words = ["tether", "pool", "task"];
    let mut out = Vec::new();
    tether::scope(|s| {
        let handles: Vec<_> = words.iter().map(|w| s.spawn_task(move |_| w.len())).collect();
        out = handles.into_iter().map(|h| h.join().unwrap()).collect();
    })
    .unwrap();
    assert_eq!(out, [6, 4, 4]);
}

#[test]
fn one_hundred_thousand_tasks_run_in_one_scope() {
    let _shared = shared();
    let count = AtomicUsize::new(0);
    tether::scope(|s| {
        for _ in 0..100_000 {
            s.spawn_task(|_| count.fetch_add(1, SeqCst));
        }
        s.wait_all();
    })
    .unwrap();
    assert_eq!(count.into_inner(), 100_000);
}

#[test]
fn tasks_spawn_tasks_through_the_captured_scope() {
    let _shared = shared();
    let count = AtomicUsize::new(0);
    tether::scope(|s| {
        for _ in 0..100 {
            s.spawn_task(|_| {
                count.fetch_add(1, SeqCst);
                for _ in 0..100 {
                    s.spawn_task(|_| count.fetch_add(1, SeqCst));
                }
            });
        }
        s.wait_all();
    })
    .unwrap();
    assert_eq!(count.into_inner(), 100 + 100 * 100);
}

#[test]
fn each_task_has_its_own_context_below_the_scope() {
    let _shared = shared();
    tether::scope(|s| {
        let a = s.spawn_task(|ctx| ctx.clone());
        let b = s.spawn_task(|ctx| ctx.clone());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        a.cancel();
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled(), "a sibling's context is its own");
        assert!(!s.context().is_cancelled(), "cancellation does not flow up");
        s.cancel();
        assert_eq!(b.cause(), Some(Cause::Cancelled), "the scope's cancellation flows down");
    })
    .unwrap();
}

#[test]
fn a_task_sees_its_context_as_the_ambient_one() {
    let _shared = shared();
    tether::scope(|s| {
        let same = s.spawn_task(|ctx| {
            let ambient = tether::current();
            ctx.cancel();
            ambient.is_cancelled()
        });
        assert!(same.join().unwrap());
    })
    .unwrap();
}

static INHERITED: Key<u32> = Key::new("inherited");
static LOCAL_ONLY: Key<u32> = Key::not_inherited("local_only");

#[test]
fn a_task_sees_inherited_values_only() {
    let _shared = shared();
    assert_eq!(INHERITED.inheritance(), Inheritance::Inherited);
    ScopeBuilder::new()
        .value(&INHERITED, 1)
        .value(&LOCAL_ONLY, 2)
        .run(|s| {
            let seen = s.spawn_task(|ctx| (ctx.value(&INHERITED).copied(), ctx.value(&LOCAL_ONLY).copied()));
            assert_eq!(seen.join().unwrap(), (Some(1), None));
        })
        .unwrap();
}

#[test]
fn the_scope_exit_cancels_running_tasks_and_joins_them() {
    let _shared = shared();
    let saw = Arc::new(std::sync::Mutex::new(None));
    let started = Barrier::new(2);
    tether::scope(|s| {
        let saw = saw.clone();
        let started = &started;
        s.spawn_task(move |ctx| {
            started.wait();
            *saw.lock().unwrap() = Some(ctx.wait());
        });
        started.wait(); // the task is running: the exit must cancel it, not skip it
    })
    .unwrap();
    assert_eq!(*saw.lock().unwrap(), Some(Cause::ScopeExited));
}

#[test]
fn a_fallible_task_error_fails_the_scope_and_cancels_its_siblings() {
    let _shared = shared();
    let err = tether::scope(|s| {
        let sibling = s.spawn(|ctx| ctx.wait());
        let failed = s.spawn_task_fallible(|_| Err::<(), _>(ShardFailed(7)));
        assert_eq!(failed.join().unwrap().unwrap_err().0, 7);
        let cause = sibling.join().unwrap();
        assert_eq!(cause.downcast_ref::<ShardFailed>().unwrap().0, 7);
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "shard 7 failed");
}

#[test]
fn a_fallible_task_ok_result_is_returned_by_join() {
    let _shared = shared();
    tether::scope(|s| {
        let h = s.spawn_task_fallible(|_| Ok::<_, ShardFailed>(3));
        assert_eq!(h.join().unwrap().unwrap(), 3);
    })
    .unwrap();
}

#[test]
fn a_task_panic_among_ten_thousand_siblings_is_re_raised_with_its_payload() {
    let _exclusive = exclusive();
    let ran = AtomicUsize::new(0);
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tether::scope(|s| {
            let handles: Vec<_> = (0..10_000)
                .map(|i| {
                    let ran = &ran;
                    s.spawn_task(move |_| {
                        ran.fetch_add(1, SeqCst);
                        if i == 100 {
                            std::panic::panic_any(i);
                        }
                    })
                })
                .collect();
            s.wait_all();
            // Every sibling was cancelled by the panic (before the exit's own cancellation).
            for h in &handles {
                match h.context().cause() {
                    Some(Cause::Panicked(summary)) => {
                        assert_eq!(summary.message(), "Box<dyn Any> (a non-string panic payload)")
                    }
                    other => panic!("a sibling was not cancelled by the panic: {other:?}"),
                }
            }
            // The handles are dropped, not joined: the scope re-raises the panic.
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<i32>(), Some(&100), "the original payload");
    let others = tether::testing::take_unhandled_panics();
    assert!(others.is_empty(), "only one panic");
    assert!(ran.into_inner() >= 1, "the task that panicked ran");
}

#[test]
fn a_failing_task_cancels_its_sibling_tasks() {
    let _shared = shared();
    let err = tether::scope(|s| {
        let sibling = s.spawn_task(|ctx| ctx.wait());
        s.spawn_task_fallible(|_| Err::<(), _>(ShardFailed(9)));
        match sibling.join() {
            // It ran, and the failure cancelled it...
            Ok(cause) => assert_eq!(cause.downcast_ref::<ShardFailed>().unwrap().0, 9),
            // ...or the failure came first and it never started.
            Err(e) => assert_eq!(e.cancel_cause().unwrap().downcast_ref::<ShardFailed>().unwrap().0, 9),
        }
    })
    .unwrap_err();
    assert_eq!(err.downcast_ref::<ShardFailed>().unwrap().0, 9);
}

#[test]
fn forgotten_task_handles_still_let_the_scope_wait_for_tasks_borrowing_the_stack() {
    let _shared = shared();
    let counts: Vec<AtomicUsize> = (0..10).map(|_| AtomicUsize::new(0)).collect();
    tether::scope(|s| {
        for i in 0..1000 {
            let counts = &counts;
            std::mem::forget(s.spawn_task(move |_| counts[i % 10].fetch_add(1, SeqCst)));
        }
        s.wait_all();
    })
    .unwrap();
    assert!(counts.iter().all(|c| c.load(SeqCst) == 100));
}

/// A result that counts its drops in borrowed stack data, and may panic when dropped.
struct Tally<'a> {
    drops: &'a AtomicUsize,
    panics: bool,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        if self.panics {
            panic!("a task result's destructor panicked");
        }
    }
}

#[test]
fn results_of_tasks_whose_handles_were_dropped_are_each_dropped_once_before_the_scope_returns() {
    let _shared = shared();
    // Dropping the handle of an unfinished task leaves its result to the runner, which drops it
    // before the task counts itself out (design/0003, "Who drops what"), while the scope's queue
    // frees the tasks' memory a few at a time and in sweeps; ten thousand of them go through
    // many sweeps while others are still queued or running.
    let drops = AtomicUsize::new(0);
    tether::scope(|s| {
        for _ in 0..10_000 {
            drop(s.spawn_task(|_| Tally { drops: &drops, panics: false }));
        }
        s.wait_all(); // else the exit skips the tasks not started yet
    })
    .unwrap();
    assert_eq!(drops.load(SeqCst), 10_000);
}

#[test]
fn a_panic_in_the_drop_of_an_orphaned_task_result_is_re_raised_by_the_scope() {
    let _shared = shared();
    let drops = AtomicUsize::new(0);
    let gate = Barrier::new(2);
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tether::scope(|s| {
            // The task cannot finish before its handle is gone, so it is orphaned for sure.
            drop(s.spawn_task(|_| {
                gate.wait();
                Tally { drops: &drops, panics: true }
            }));
            gate.wait();
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"a task result's destructor panicked"));
    assert_eq!(drops.load(SeqCst), 1);
}

#[derive(Debug, thiserror::Error)]
#[error("operator stopped the job")]
struct Stopped;

#[test]
fn tasks_on_every_worker_see_the_scope_deadline_and_the_cause_it_is_cancelled_with() {
    let _exclusive = exclusive();
    // Tasks run by pool workers hang from a per-worker node below the scope's (design/0003):
    // what they observe must be what a direct child of the scope observes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let blocked = tether::pool::threads();
    let started = Barrier::new(blocked + 1);
    let seen = std::sync::Mutex::new(Vec::new());
    ScopeBuilder::new()
        .deadline(deadline)
        .run(|s| {
            for _ in 0..blocked {
                s.spawn_task(|ctx| {
                    assert_eq!(ctx.deadline(), Some(deadline));
                    started.wait();
                    let cause = ctx.wait();
                    seen.lock().unwrap().push(cause.downcast_ref::<Stopped>().is_some());
                });
            }
            started.wait(); // all are running: on pool workers, or on threads helping them
            s.context().cancel_with(Cause::custom(Stopped));
        })
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![true; blocked]);
}

#[test]
fn every_task_starts_with_a_context_of_its_own_even_when_workers_reuse_them() {
    let _shared = shared();
    // Workers hand a finished task's context to the next task only if nothing can tell
    // (design/0003, "Where a task's context hangs"): here tasks cancel theirs, register
    // callbacks on them, derive children and keep clones, and every task must still start
    // with an open context that nothing else has touched.
    let callbacks_fired = Arc::new(AtomicUsize::new(0));
    let started_dirty = AtomicUsize::new(0);
    let kept = std::sync::Mutex::new(Vec::new());
    tether::scope(|s| {
        for i in 0..4_000 {
            let (fired, dirty, kept) = (callbacks_fired.clone(), &started_dirty, &kept);
            drop(s.spawn_task(move |ctx| {
                if ctx.is_cancelled() || ctx.registered_children() != 0 {
                    dirty.fetch_add(1, SeqCst);
                }
                match i % 5 {
                    0 => ctx.cancel(),
                    1 => drop(ctx.on_cancel(move |_| {
                        fired.fetch_add(1, SeqCst);
                    })),
                    2 => kept.lock().unwrap().push(ctx.clone()),
                    3 => drop(ctx.child()),
                    _ => {}
                }
            }));
        }
        s.wait_all();
        // A callback registered by one task would fire if its context went to a task that
        // cancels its own.
        assert_eq!(callbacks_fired.load(SeqCst), 0);
    })
    .unwrap();
    assert_eq!(started_dirty.load(SeqCst), 0);
    assert!(kept.lock().unwrap().iter().all(|ctx| ctx.is_cancelled()), "the exit cancelled the kept ones");
}
