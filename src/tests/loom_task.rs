//! Models of the pool-task protocol, over the real state machine (`scope::task_state`) and the
//! real running count (`scope::count`): a claim racing an inline join and a stale copy; a handle
//! dropped while its task runs; late finishes and a sibling spawn racing the exit's close.
//!
//! A task's outcome lives in a loom cell, so loom also checks that no two threads ever touch it
//! at once (the `Sync` argument of `scope::task::Task`).

use super::model;
use crate::scope::count::{Refused, RunningCount};
use crate::scope::task_state::{LetGo, TaskState};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

/// A result whose drop is counted.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A task as `scope::task::Task` runs it, reduced to the state, the outcome and counters.
struct Task {
    state: TaskState,
    outcome: UnsafeCell<Option<Tracked>>,
    runs: AtomicUsize,
    drops: Arc<AtomicUsize>,
}

impl Task {
    fn new() -> Arc<Task> {
        Arc::new(Task {
            state: TaskState::new(),
            outcome: UnsafeCell::new(None),
            runs: AtomicUsize::new(0),
            drops: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A copy of the job taken from a queue: runs the task if it claims it, then counts it out.
    fn run_copy(&self, count: &RunningCount) {
        if self.state.claim() {
            self.execute();
            count.finish(1);
        }
    }

    /// Steps 2 to 4 of `Task::execute`: store the outcome; the last to let go drops it.
    fn execute(&self) {
        self.runs.fetch_add(1, SeqCst);
        let outcome = Tracked(self.drops.clone());
        // SAFETY: only the claimer writes, before `finish` (task invariant 2).
        self.outcome.with_mut(|o| unsafe { *o = Some(outcome) });
        if self.state.finish() == LetGo::Last {
            self.clear();
        }
    }

    /// What the second party to let go drops.
    fn clear(&self) {
        // SAFETY: the other party has let go (task invariant 3); loom checks it.
        drop(self.outcome.with_mut(|o| unsafe { (*o).take() }));
    }

    /// `TaskHandle::join`: inline if unclaimed, else wait for `DONE`; take the outcome.
    fn join(&self, count: &RunningCount) -> Option<Tracked> {
        if !self.state.is_done() && self.state.claim() {
            self.execute();
            count.finish(1);
        }
        while !self.state.is_done() {
            thread::yield_now();
        }
        // SAFETY: `is_done` (Acquire) saw the runner's write; the handle is the only reader.
        self.outcome.with_mut(|o| unsafe { (*o).take() })
    }

    /// `TaskHandle::drop`.
    fn release(&self) {
        if self.state.release() == LetGo::Last {
            self.clear();
        }
    }
}

/// Another thread takes a copy of the job from a queue (a worker, or a thread helping its scope).
fn run_copy_on_a_thread(task: &Arc<Task>, count: &Arc<RunningCount>) -> thread::JoinHandle<()> {
    let (task, count) = (task.clone(), count.clone());
    thread::spawn(move || task.run_copy(&count))
}

/// A running count with one task counted in it, as a spawn leaves them.
fn one_counted_task() -> (Arc<RunningCount>, Arc<Task>) {
    let count = Arc::new(RunningCount::new());
    count.start().unwrap();
    (count, Task::new())
}

/// The exit: wait until the count is zero and close it.
fn close(count: &RunningCount) {
    while !count.try_close() {
        thread::yield_now();
    }
}

#[test]
fn a_task_claimed_by_a_worker_a_stale_copy_or_an_inline_join_runs_once_and_its_result_drops_once() {
    model(|| {
        let (count, task) = one_counted_task();
        let worker = run_copy_on_a_thread(&task, &count);
        let helper = run_copy_on_a_thread(&task, &count);
        let result = task.join(&count);
        assert!(result.is_some(), "the handle took the outcome");
        drop(result);
        task.release();
        worker.join().unwrap();
        helper.join().unwrap();
        assert_eq!(task.runs.load(SeqCst), 1);
        assert_eq!(task.drops.load(SeqCst), 1);
        assert!(count.is_zero());
    });
}

#[test]
fn a_handle_dropped_while_its_task_runs_leaves_the_result_dropped_before_the_exit_closes() {
    model(|| {
        let (count, task) = one_counted_task();
        let worker = run_copy_on_a_thread(&task, &count);
        task.release();
        close(&count);
        // Whoever let go last dropped the result, and did so before the count dropped.
        assert_eq!(task.drops.load(SeqCst), 1);
        assert_eq!(count.start(), Err(Refused::Closed));
        worker.join().unwrap();
        assert_eq!(task.runs.load(SeqCst), 1);
    });
}

#[test]
fn late_finishes_and_a_sibling_spawn_let_the_exit_close_only_after_every_child() {
    model(|| {
        let count = Arc::new(RunningCount::new());
        let finished = Arc::new(AtomicUsize::new(0));
        // Two tasks run by one worker, which counts them out in one step (pool invariant 4).
        count.start().unwrap();
        count.start().unwrap();
        // A child that spawns a sibling before it finishes (scope invariant 4).
        count.start().unwrap();
        let worker = {
            let (count, finished) = (count.clone(), finished.clone());
            thread::spawn(move || {
                finished.fetch_add(2, SeqCst);
                count.finish(2);
            })
        };
        let child = {
            let (count, finished) = (count.clone(), finished.clone());
            thread::spawn(move || {
                count.start().expect("a counted child can always spawn");
                finished.fetch_add(1, SeqCst);
                count.finish(1); // the sibling
                finished.fetch_add(1, SeqCst);
                count.finish(1); // the child itself
            })
        };
        close(&count);
        assert_eq!(finished.load(SeqCst), 4);
        assert_eq!(count.start(), Err(Refused::Closed));
        worker.join().unwrap();
        child.join().unwrap();
    });
}
