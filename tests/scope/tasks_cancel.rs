//! Pool tasks and cancellation: tasks not yet started when their context is cancelled are
//! skipped (their closure is dropped uncalled, their join says so), and the leak checker stays
//! balanced. Every test holds `exclusive()`: they occupy every pool worker, and count live tasks.

use crate::exclusive;
use crate::harness::occupy_every_worker;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tether::testing::LeakCheck;
use tether::{Canceller, Cause};

#[test]
fn tasks_spawned_into_a_cancelled_scope_never_run_their_body() {
    let _exclusive = exclusive();
    let check = LeakCheck::start();
    let ran = AtomicUsize::new(0);
    tether::scope(|s| {
        s.cancel();
        let tasks = if cfg!(miri) { 100 } else { 1000 };
        let handles: Vec<_> = (0..tasks).map(|_| s.spawn_task(|_| ran.fetch_add(1, SeqCst))).collect();
        for h in handles {
            let err = h.join().unwrap_err();
            assert!(err.is_skipped() && !err.is_panic());
            assert_eq!(err.cancel_cause(), Some(&Cause::Cancelled));
            assert_eq!(err.to_string(), "task skipped: cancelled before it started (context canceled)");
        }
    })
    .unwrap();
    assert_eq!(ran.into_inner(), 0);
    check.finish().unwrap();
}

#[test]
fn cancellation_reaches_queued_tasks_before_they_start() {
    let _exclusive = exclusive();
    let check = LeakCheck::start();
    let ran = AtomicUsize::new(0);
    let dropped = AtomicUsize::new(0);
    struct CountDrop<'a>(&'a AtomicUsize);
    impl Drop for CountDrop<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    tether::scope(|s| {
        // Occupy every worker until the scope is cancelled; the tasks below stay queued.
        let blockers = occupy_every_worker(s);
        let queued: Vec<_> = (0..100)
            .map(|_| {
                let guard = CountDrop(&dropped);
                s.spawn_task(|_| {
                    let _guard = guard;
                    ran.fetch_add(1, SeqCst)
                })
            })
            .collect();
        s.cancel();
        for h in queued {
            assert!(h.join().unwrap_err().is_skipped());
        }
        for b in blockers {
            assert_eq!(b.join().unwrap(), Cause::Cancelled, "running tasks see the cancellation");
        }
    })
    .unwrap();
    assert_eq!(ran.into_inner(), 0, "no queued body ran");
    assert_eq!(dropped.into_inner(), 100, "every skipped closure was dropped");
    check.finish().unwrap();
}

#[test]
fn cancelling_one_task_handle_skips_only_that_task() {
    let _exclusive = exclusive();
    tether::scope(|s| {
        let blockers = occupy_every_worker(s);
        let skipped = s.spawn_task(|_| 1);
        let kept = s.spawn_task(|_| 2);
        skipped.context().cancel();
        blockers.iter().for_each(|b| b.context().cancel());
        assert!(skipped.join().unwrap_err().is_skipped());
        assert_eq!(kept.join().unwrap(), 2);
    })
    .unwrap();
}

#[test]
fn the_leak_checker_balances_after_tasks_that_run_panic_fail_and_are_skipped() {
    let _exclusive = exclusive();
    let check = LeakCheck::start();
    let result = std::panic::catch_unwind(|| {
        tether::scope(|s| {
            // Fewer under Miri (slow), which runs this for the unsafe code, not the numbers.
            let (tasks, every) = if cfg!(miri) { (24, 8) } else { (10_000, 1000) };
            for i in 0..tasks {
                s.spawn_task(move |_| assert!(i != tasks / 2, "task {i} failed"));
                if i % every == 0 {
                    s.spawn_task_fallible(|_| Err::<(), _>(std::fmt::Error));
                }
            }
            // Not cancelling: the first failing task to start does fail.
            s.wait_all();
        })
    });
    // Which failure comes first depends on the schedule (the first one cancels the scope, and the
    // tasks not yet started, the panicking one perhaps, are skipped); some failure does.
    assert!(!matches!(result, Ok(Ok(()))));
    let _ = tether::testing::take_unhandled_panics();
    assert_eq!(tether::live().tasks, 0);
    check.finish().unwrap();
}

#[test]
fn wait_all_from_a_task_of_the_same_scope_panics_instead_of_waiting_for_itself() {
    let _exclusive = exclusive();
    tether::scope(|s| {
        let err = s.spawn_task(|_| s.wait_all()).join().unwrap_err();
        assert!(err.summary().unwrap().message().contains("wait for itself"));
    })
    .unwrap();
}

#[test]
fn a_limit_bounds_the_tasks_running_at_once() {
    let _exclusive = exclusive();
    let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    tether::ScopeBuilder::new()
        .limit(2)
        .run(|s| {
            for _ in 0..if cfg!(miri) { 20 } else { 200 } {
                s.spawn_task(|_| {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    std::hint::black_box((0..1000).sum::<u64>());
                    running.fetch_sub(1, SeqCst);
                });
            }
            s.wait_all();
        })
        .unwrap();
    assert!(peak.into_inner() <= 2);
}

#[test]
fn try_spawn_task_refuses_when_the_limit_is_full() {
    let _exclusive = exclusive();
    tether::ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            let busy = s.spawn(|ctx| ctx.wait());
            let refused = s.try_spawn_task(|_| 7).unwrap_err();
            s.cancel();
            busy.join().unwrap();
            let closure = refused.into_inner();
            assert_eq!(closure(&tether::Context::new()), 7);
        })
        .unwrap();
}

#[test]
fn a_skipped_task_reports_the_cause_its_context_or_its_scope_was_cancelled_with() {
    let _exclusive = exclusive();
    let cause = |text: &str| Cause::custom(std::io::Error::other(text.to_string()));
    tether::scope(|s| {
        let blockers = occupy_every_worker(s);
        // Its own context cancelled first (made by the handle before the task starts) ...
        let own = s.spawn_task(|_| ());
        own.context().cancel_with(cause("this task only"));
        // ... and one that never had a context: the scope's cause is the one it was skipped for.
        let bare = s.spawn_task(|_| ());
        s.context().cancel_with(cause("the whole scope"));
        let own = own.join().unwrap_err();
        assert!(own.is_skipped());
        assert_eq!(own.cancel_cause().map(|c| c.to_string()).as_deref(), Some("this task only"));
        let bare = bare.join().unwrap_err();
        assert!(bare.is_skipped());
        assert_eq!(bare.cancel_cause().map(|c| c.to_string()).as_deref(), Some("the whole scope"));
        for b in blockers {
            assert_eq!(b.join().unwrap().to_string(), "the whole scope");
        }
    })
    .unwrap();
}
