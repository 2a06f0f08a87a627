//! [`ScopeTasks`]: a scope's own room for its pool tasks. The queue of the tasks it spawned
//! (which its waits run: "Helping") and, per pool worker, the node the tasks that worker runs
//! hang from and one spare task context ("Task contexts"). Design: design/0003-pool-tasks.md.
//!
//! # Helping
//! Every task is queued twice: on the pool, for the workers, and on its scope's queue here. A
//! thread waiting for a scope (its exit, [`Scope::wait_all`](super::Scope::wait_all), a spawn
//! waiting for a slot of the limit) runs the scope's own pending tasks, popped from this queue,
//! and nothing else: it is isolated, as Intel TBB's `isolate` makes a wait. So a wait never runs
//! a task that it is not waiting for, which could block on something the waiter does only after
//! the wait (a deadlock), or hold the waiter for as long as an unrelated task runs; and since
//! every waiter can run every pending task it waits for, a wait cannot deadlock for want of
//! workers. [`TaskHandle::join`](super::TaskHandle::join) runs its task inline if nobody has
//! claimed it, and otherwise sleeps until it is done: it waits for that task alone, and the
//! thread running it makes progress on its own (it is running user code, or waiting for a nested
//! scope, which it helps).
//!
//! # Freeing tasks
//! A task's memory is allocated by the thread that spawns it, and it is best freed there too: a
//! pool worker that frees memory of another thread's allocator arena does it under that arena's
//! lock, which the spawning thread takes to allocate the next task, so freeing on the workers
//! makes the spawner and the workers queue on one lock (measured: most of the futex calls of a
//! batch of small tasks). The queue keeps a reference to each task until the spawning thread
//! lets go of it, and lets go only of tasks it holds the last reference to (finished, their
//! runner and handle gone): each spawn frees up to two such tasks from the front of the queue
//! (tasks finish about in the order they were spawned, and freeing a few at a time, between the
//! spawner's allocations, keeps the allocator's per-thread cache warm), and all of them in a
//! sweep each time the queue has doubled (amortized O(1) per task). A task that a waiter runs
//! from this queue leaves a stale copy on the pool, so the waiter puts it back (at the front,
//! once) for the same reason. Such a task is bare memory (`task.rs`, "Who drops what"): freeing
//! it runs no user code. Which reference is the last is only a question of which thread frees the
//! memory: every copy may be dropped at any time.
//!
//! # Task contexts
//! A task's context is a child of the scope's, made as it starts. Made directly below the
//! scope's node, every task would register with (and later detach from) that one node, under
//! its lock, from every worker at once. So a task run by pool worker `i` hangs from a node of the
//! scope's made for that worker on first use (a child of the scope's node, carrying the same
//! inherited bindings, never cancelled but through the scope): registration is then local to the
//! worker. Cancellation, causes, deadlines and values reach the task exactly as before; only
//! [`Context::registered_children`] of the scope's context counts these per-worker nodes rather
//! than the tasks. A task's context made by `TaskHandle::context`, or run by a thread that is
//! not a worker, hangs from the scope's node itself.
//!
//! A worker also keeps one spare task context per scope: when a task whose handle was gone
//! before it started finishes and its context is as new (`Context::is_pristine`: no clone kept,
//! never cancelled, no children, callbacks or done channel, ever), the next such task of the
//! scope on that worker gets it instead of a new node. Nothing can tell the difference: a
//! pristine child of the worker's node is indistinguishable from a new one, and nobody else can
//! reach it (the task's handle is gone, and the context was only lent to the closure). This
//! saves the allocation, registration and release of a node for tasks that only read their
//! context. The threads that are not workers (a scope's owner helping in its wait) share one
//! more spare, under a lock they only ever try: a thread that finds it taken makes a node.

use super::observe::RawChild;
use crate::context::Context;
use crate::pool::{self, JobRef};
use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The smallest queue that is swept.
const SWEEP_MIN: usize = 64;

/// How many finished tasks each spawn frees from the front of the queue.
const FREE_PER_SPAWN: usize = 2;

/// Whether the queue holds the last reference to `job` ("Freeing tasks"): it was claimed and has
/// finished, its runner and its handle are gone, and nobody can copy it any more, so dropping
/// it here frees it on this thread.
fn only_queued(job: &JobRef) -> bool {
    std::sync::Arc::strong_count(job) == 1
}

/// A scope's own queue of its tasks and its per-worker task parents (module docs).
#[derive(Default)]
pub(crate) struct ScopeTasks {
    /// On a cache line of its own, away from the counters the workers write.
    queue: CachePadded<Mutex<TaskQueue>>,
    /// Per pool worker, made on first use ("Task contexts").
    workers: OnceLock<Box<[WorkerSlot]>>,
    /// The spare task context of the threads that are not workers ("Task contexts"); only ever
    /// `try_lock`ed, and nothing is dropped under it. On a cache line of its own: the thread that
    /// helps writes its lock word at every task it runs.
    outside_spare: CachePadded<Mutex<Option<Context>>>,
}

/// A reference to every task of the scope spawned and not yet popped, pending or claimed, and to
/// the tasks a waiter ran, put back to be freed on this side (`help_own`).
#[derive(Default)]
struct TaskQueue {
    /// In the order they were spawned, which is about the order they are claimed in; the tasks
    /// a waiter ran are put back at the front.
    jobs: VecDeque<JobRef>,
    /// The length at which the next spawn sweeps out the finished ones.
    sweep_at: usize,
}

/// What a scope keeps per pool worker ("Task contexts"): the node the contexts of the tasks the
/// worker runs hang from, and a spare task context.
#[derive(Default)]
struct WorkerSlot {
    parent: OnceLock<Context>,
    /// Touched only by the worker whose slot this is (see the `Sync` impl).
    spare: UnsafeCell<Option<Context>>,
}

// SAFETY: `WorkerSlot` is `!Sync` only because of `spare`. `spare` is accessed only through
// `ScopeTasks::take_spare` and `ScopeTasks::keep_spare`, which reach slot `i` only on pool worker
// `i`'s own thread (`ScopeTasks::worker_slot`, by `pool::worker_index`), and by the slot's drop,
// with the scope's state, when no thread can reach it any more. Each access moves the whole value
// out or in and holds no reference across any other code (a context that is not kept is handed
// back to the caller, who drops it after the reference has ended), so a nested access on the
// same thread (a worker running a task of this scope while it helps inside another) never
// overlaps an outer one.
unsafe impl Sync for WorkerSlot {}

impl ScopeTasks {
    /// Queues a reference to a new task ("Helping"), and frees a few finished tasks from the
    /// front, or all of them once the queue has doubled since the last sweep ("Freeing tasks").
    pub(super) fn enqueue(&self, job: &JobRef) {
        let mut finished: [Option<JobRef>; FREE_PER_SPAWN] = Default::default();
        let sweep = {
            let mut queue = self.lock();
            queue.jobs.push_back(job.clone());
            for slot in &mut finished {
                if !queue.jobs.front().is_some_and(only_queued) {
                    break;
                }
                *slot = queue.jobs.pop_front();
            }
            queue.jobs.len() >= queue.sweep_at.max(SWEEP_MIN)
        };
        drop(finished); // outside the lock
        if sweep {
            let finished: VecDeque<JobRef> = {
                let mut queue = self.lock();
                let (finished, kept) = std::mem::take(&mut queue.jobs).into_iter().partition(only_queued);
                queue.jobs = kept;
                queue.sweep_at = 2 * queue.jobs.len();
                finished
            };
            drop(finished); // outside the lock
        }
    }

    /// Runs one task of this scope from its queue, newest first, if it holds any (a claimed
    /// one is only let go of); returns whether it did. The helping of the scope's waits.
    ///
    /// A task run here leaves a stale copy on the pool, which a worker pops later; if that copy
    /// were the last reference, the worker would free the task under this thread's arena lock
    /// ("Freeing tasks"). So the queue keeps a reference to it, at the front, for this thread
    /// to free once it is the last one. A task popped already claimed is only let go of, and
    /// never put back: each task is put back at most once, so the wait cannot cycle on it.
    pub(super) fn help_own(&self) -> bool {
        let Some(job) = self.lock().jobs.pop_back() else { return false };
        if job.is_claimed() {
            drop(job); // a stale copy: no user code (invariant of `task.rs`)
            return true;
        }
        pool::run_job(job.clone());
        if !only_queued(&job) {
            self.lock().jobs.push_front(job);
        }
        true
    }

    /// Appends what a dump reads of each queued task (`observe.rs`: running tasks are found in
    /// their threads' cells). The copy is the only work done under the lock.
    pub(super) fn observe_into(&self, out: &mut Vec<RawChild>) {
        let queue = self.lock();
        out.reserve(queue.jobs.len());
        out.extend(queue.jobs.iter().filter_map(|j| j.observe()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TaskQueue> {
        // A poisoned lock only means a panic elsewhere; the queue is always consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This worker's slot, or `None` on a thread that is not a pool worker.
    fn worker_slot(&self) -> Option<&WorkerSlot> {
        let index = pool::worker_index()?;
        let slots =
            self.workers.get_or_init(|| (0..pool::threads()).map(|_| WorkerSlot::default()).collect());
        Some(&slots[index])
    }

    /// The node the contexts of tasks run on this thread hang from ("Task contexts"): this
    /// worker's node below `scope`, the scope's context, or `scope` itself off the pool.
    pub(super) fn task_parent<'a>(&'a self, scope: &'a Context) -> &'a Context {
        match self.worker_slot() {
            Some(slot) => slot.parent.get_or_init(|| scope.child_for_spawn()),
            None => scope,
        }
    }

    /// Takes this worker's spare task context, if it has one ("Task contexts").
    pub(super) fn take_spare(&self) -> Option<Context> {
        let Some(slot) = self.worker_slot() else {
            return self.outside_spare.try_lock().ok()?.take();
        };
        // SAFETY: this is worker `i`'s slot, on worker `i` (see `WorkerSlot`'s `Sync` impl).
        unsafe { (*slot.spare.get()).take() }
    }

    /// Keeps `ctx`, the context of a task that has finished and whose handle is gone, as this
    /// worker's spare if it is as new and there is none yet; otherwise hands it back, for the
    /// caller to drop under `catch_unwind` (dropping a context may discard callbacks, which are
    /// user code).
    #[must_use = "a context not kept must be dropped under catch_unwind"]
    pub(super) fn keep_spare(&self, ctx: Context) -> Option<Context> {
        let mut ctx = Some(ctx);
        if !ctx.as_ref().is_some_and(Context::is_pristine) {
            return ctx;
        }
        let Some(slot) = self.worker_slot() else {
            if let Ok(mut spare) = self.outside_spare.try_lock()
                && spare.is_none()
            {
                *spare = ctx.take();
            }
            return ctx;
        };
        // SAFETY: as in `take_spare`; the reference ends within this block, and nothing is
        // dropped through it (the slot is written only when empty).
        unsafe {
            let spare = &mut *slot.spare.get();
            if spare.is_none() {
                *spare = ctx.take();
            }
        }
        ctx
    }
}
