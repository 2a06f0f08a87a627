//! Soundness under adversarial user code: destructors of results, values and callbacks that
//! panic or spawn, run by pool workers, child threads and scope exits. Each test pins a path
//! that once let a child outlive its scope, lost a panic, or killed a pool worker.
//!
//! The tests are serialised: they occupy every pool worker, and read process-wide counts.

#[path = "common/harness.rs"]
mod harness;

use crossbeam_channel::{bounded, unbounded};
use harness::{Fault, occupy_every_worker, quiet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;
use tether::testing::{LeakCheck, take_unhandled_panics};
use tether::{Context, Key, Scope, ScopeBuilder};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    quiet();
    let _ = take_unhandled_panics();
    guard
}

/// Panics with `Fault(.0)` when dropped.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        std::panic::panic_any(Fault(self.0));
    }
}

/// Long enough to mean "never" for a failure detector.
const NEVER: Duration = Duration::from_secs(10);

/// Rounds of a scenario whose outcome depends on which thread runs a task (Miri is slow).
const ROUNDS: usize = if cfg!(miri) { 3 } else { 64 };

/// Asserts that every pool worker is alive: each of `threads()` tasks reports from a distinct
/// worker thread before any of them is let go.
fn assert_every_worker_is_alive() {
    let workers = tether::pool::threads();
    let (arrived, arrivals) = unbounded();
    let (release_tx, release) = bounded::<()>(0);
    ScopeBuilder::new()
        .run(|s| {
            for _ in 0..workers {
                let (arrived, release) = (arrived.clone(), release.clone());
                s.spawn_task(move |_| {
                    arrived.send(std::thread::current().id()).unwrap();
                    let _ = release.recv();
                });
            }
            let mut seen: Vec<ThreadId> = (0..workers)
                .map(|_| arrivals.recv_timeout(NEVER).expect("a pool worker is dead or stuck"))
                .collect();
            seen.sort_by_key(|id| format!("{id:?}"));
            seen.dedup();
            assert_eq!(seen.len(), workers, "each task ran on its own worker");
            drop(release_tx);
            s.wait_all();
        })
        .unwrap();
}

// ===== no spawn after the last count =====

/// A result that spawns a task into its scope when dropped; the task's closure sets `done` when
/// it is run or dropped uncalled (skipped).
struct SpawnsOnDrop<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    done: &'env AtomicBool,
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

impl Drop for SpawnsOnDrop<'_, '_> {
    fn drop(&mut self) {
        let flag = SetOnDrop(self.done);
        self.scope.spawn_task(move |_| drop(flag));
    }
}

#[test]
fn a_task_spawned_by_a_dropped_result_at_the_exit_is_joined_before_the_scope_returns() {
    let _serial = serial();
    let done = AtomicBool::new(false);
    tether::scope(|outer| {
        // With every worker held, the inner scope's tasks run only where its exit runs them.
        let blockers = occupy_every_worker(outer);
        let (go_tx, go) = bounded::<()>(1);
        tether::scope(|s| {
            let done = &done;
            let h = s.spawn_task(move |_| {
                go.recv().unwrap();
                SpawnsOnDrop { scope: s, done }
            });
            drop(h); // the result is dropped by whoever lets go second: here, the runner
            go_tx.send(()).unwrap();
            s.wait_all(); // runs the task here (no worker is free); its result outlives the wait
        })
        .unwrap();
        assert!(
            done.load(SeqCst),
            "the task spawned from the result's destructor ran or was skipped in the scope"
        );
        outer.cancel();
        for b in blockers {
            b.join().unwrap();
        }
    })
    .unwrap();
}

#[test]
fn a_thread_spawned_by_a_result_its_child_drops_is_joined_before_the_scope_returns() {
    let _serial = serial();
    let done = AtomicBool::new(false);
    struct SpawnsThread<'scope, 'env>(&'scope Scope<'scope, 'env>, &'env AtomicBool);
    impl Drop for SpawnsThread<'_, '_> {
        fn drop(&mut self) {
            let flag = SetOnDrop(self.1);
            self.0.spawn(move |_| {
                std::thread::sleep(Duration::from_millis(20));
                drop(flag)
            });
        }
    }
    tether::scope(|s| {
        let done = &done;
        drop(s.spawn(move |_| SpawnsThread(s, done)));
    })
    .unwrap();
    assert!(done.load(SeqCst));
}

// ===== panics in drops of user data never escape a worker, a child or an exit =====

#[test]
fn a_panicking_discarded_callback_of_an_orphaned_task_is_the_scopes_panic_and_no_worker_dies() {
    let _serial = serial();
    for _ in 0..ROUNDS {
        let result = catch_unwind(AssertUnwindSafe(|| {
            tether::scope(|s| {
                // Spawned from a task, the inner task usually lands on that worker's own deque
                // and runs there, after its handle is gone.
                s.spawn_task(|_| {
                    drop(s.spawn_task(|ctx| {
                        let guard = PanicOnDrop("discarded callback");
                        // Never cancelled: the callback is discarded, and its capture dropped,
                        // when the task's context goes.
                        let _ = ctx.on_cancel(move |_| drop(guard));
                    }));
                });
                s.wait_all();
            })
        }));
        let payload = result.expect_err("the destructor's panic is re-raised by the scope");
        assert_eq!(payload.downcast_ref::<Fault>(), Some(&Fault("discarded callback")));
    }
    assert!(take_unhandled_panics().is_empty());
    assert_every_worker_is_alive();
}

#[test]
fn a_thread_childs_discarded_callback_that_panics_is_the_scopes_panic() {
    let _serial = serial();
    let (go_tx, go) = bounded::<()>(1);
    let result = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            // The handle (and its clone of the context) goes first, so the child's own drop of
            // its context is the last one, and discards the callback.
            drop(s.spawn(move |ctx| {
                let guard = PanicOnDrop("thread callback");
                let _ = ctx.on_cancel(move |_| drop(guard));
                go.recv().unwrap();
            }));
            go_tx.send(()).unwrap();
            s.wait_all();
        })
    }));
    let payload = result.expect_err("the destructor's panic is re-raised by the scope");
    assert_eq!(payload.downcast_ref::<Fault>(), Some(&Fault("thread callback")));
    assert!(take_unhandled_panics().is_empty(), "no panic escaped the child thread");
}

#[test]
fn a_panicking_result_of_an_orphaned_task_is_the_scopes_panic() {
    let _serial = serial();
    for _ in 0..ROUNDS {
        let result = catch_unwind(AssertUnwindSafe(|| {
            tether::scope(|s| {
                s.spawn_task(|_| PanicOnDrop("result"));
                s.wait_all();
            })
        }));
        let payload = result.expect_err("the result's panic is re-raised by the scope");
        assert_eq!(payload.downcast_ref::<Fault>(), Some(&Fault("result")));
    }
    assert_every_worker_is_alive();
}

// ===== a scope's values and nodes do not outlive it =====

static DROPPED_ON: Key<DropRecorder> = Key::new("dropped_on");

/// Records the thread its destructor ran on.
struct DropRecorder(Arc<Mutex<Option<ThreadId>>>);

impl Drop for DropRecorder {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(std::thread::current().id());
    }
}

#[test]
fn a_task_joined_inline_leaves_no_context_or_value_behind_after_its_scope() {
    let _serial = serial();
    tether::scope(|outer| {
        let blockers = occupy_every_worker(outer);
        let check = LeakCheck::start();
        let dropped_on = Arc::new(Mutex::new(None));
        ScopeBuilder::new()
            .value(&DROPPED_ON, DropRecorder(dropped_on.clone()))
            .run(|s| {
                // Every worker is busy: the task is still queued, so `join` runs it inline and
                // the pool keeps a stale copy of it.
                let h = s.spawn_task(|ctx| ctx.value(&DROPPED_ON).is_some());
                assert!(h.join().unwrap());
            })
            .unwrap();
        assert_eq!(
            *dropped_on.lock().unwrap(),
            Some(std::thread::current().id()),
            "the scope's value was dropped before the scope returned, on its thread"
        );
        check.finish().expect("no node of the scope outlives it");
        outer.cancel();
        for b in blockers {
            b.join().unwrap();
        }
    })
    .unwrap();
}

// ===== a panicking discarded callback leaks nothing =====

#[test]
fn a_context_whose_discarded_callback_panics_is_still_released_up_its_chain() {
    let _serial = serial();
    let check = LeakCheck::start();
    let root = Context::new();
    let middle = root.child();
    let leaf = middle.child();
    drop(middle); // the leaf's release is now what releases the middle node too
    let guard = PanicOnDrop("discarded on release");
    let _ = leaf.on_cancel(move |_| drop(guard));
    let payload = catch_unwind(AssertUnwindSafe(move || drop(leaf)))
        .expect_err("the capture's panic unwinds from the drop");
    assert_eq!(payload.downcast_ref::<Fault>(), Some(&Fault("discarded on release")));
    assert_eq!(root.registered_children(), 0, "the chain below the root was released");
    drop(root);
    check.finish().expect("no node, child or callback leaked");
}
