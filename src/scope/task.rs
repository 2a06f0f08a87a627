//! Pool-task children of a scope: closures run on the shared work-stealing pool
//! ([`crate::pool`]) with the scope semantics of thread children, at a fraction of a thread's
//! cost to start. What they share with thread children (the count, the outcome, the markers) is
//! in `child.rs`; the scope's queue of its tasks and their per-worker contexts in
//! `task_queue.rs`. This file holds what only tasks do: one allocation per task that is both the
//! pool's job and the handle's packet, claimed once, run or skipped. Design:
//! design/0003-pool-tasks.md.
//!
//! # A task's life (the steps of `child.rs`, for a task)
//! 1. On the spawning thread: take a slot of the limit (if any, helping while it waits), count
//!    the task as running, and queue it twice (one allocation holds the closure, the outcome and,
//!    once made, the task's context): on the pool, for the workers, and on the scope's own queue
//!    (`task_queue.rs`, "Helping"), for the threads that wait for the scope.
//! 2. On whichever thread claims it (a worker, a thread waiting for the scope, or the joiner
//!    running it inline): if its context (or, before it has one, the scope's) is already
//!    cancelled, **skip** it: drop the closure without calling it and record
//!    [`Outcome::Skipped`] (the handle reads the cause from that context). Otherwise make its
//!    context (`task_queue.rs`, "Task contexts") and run the closure with it ambient, under
//!    `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it; a fallible task's `Err` is recorded and
//!    cancels the scope with [`Cause::ChildFailed`](crate::Cause::ChildFailed).
//! 4. Store the outcome and mark the task `DONE`. If the handle is already gone, drop the
//!    outcome and the task's context here ("Who drops what"); else wake a joiner.
//! 5. Give the slot back and count the task out: the last thing it does with `'scope` data. A
//!    pool worker running tasks from its own loop counts a run of tasks of one scope out in one
//!    step (pool invariant 4: one write of the scope's shared count per run, not per task).
//!
//! # Who drops what
//! User data in a task (the closure, the result, the context with its callbacks and values) is
//! dropped by a thread the scope counts, or by the body, before the scope can end (scope
//! invariant 4). Whichever of the runner and the handle lets go second (the `DONE` and
//! `RELEASED` bits of `lifecycle` (`task_state.rs`), each set by one read-modify-write, so exactly
//! one of them sees the other's bit) drops the outcome, if nobody took it, and the context: the
//! runner before it counts itself out, the handle in its drop. Each such drop runs under
//! `catch_unwind`, and a panic there is a panic of the scope. After that the task is bare memory
//! (atomics and empty cells), which any thread may free at any time, even after the scope has
//! returned: the copy a queue still holds of a task that ran elsewhere (a stale copy, see
//! invariant 1), the scope's queue, and the handle's `Arc` run no user code when they are
//! dropped.
//!
//! # Invariants
//! 1. `f` and `running` are accessed only by the one thread that claimed the task (the
//!    `CLAIMED` bit, set by one `fetch_or`), before it sets `DONE`. The claimer is the thread
//!    that took the job from a queue, or a joiner that found it still pending and runs it inline
//!    (as rayon's `join` pops its own job back); any other copy of the job is stale: whoever
//!    takes it finds it claimed and only lets go of its `Arc`.
//! 2. `outcome` is written once, by the runner, before it sets `DONE` (Release); it is read only
//!    by the handle after a load that sees `DONE` (Acquire), or dropped by whichever of the two
//!    lets go second ("Who drops what").
//! 3. `ctx` is read through shared references by the runner (until `DONE`) and the handle (until
//!    `RELEASED`); it is emptied only by whichever of the two sets its bit second, when the other
//!    one no longer touches it.

use super::child::{ChildOf, Kind, Outcome, Running};
use super::error::JoinError;
use super::observe::{ChildRecord, RawChild};
use super::state::{ScopeState, Slot};
use super::task_state::{LetGo, TaskState};
use crate::ambient;
use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use crate::dump::registry::WorkingFor;
use crate::dump::site::TaskActivity;
use crate::dump::{BlockingSite, ChildKind};
use crate::pool::{self, Job, JobRef};
use crate::telemetry;
use std::cell::UnsafeCell;
use std::fmt;
use std::panic::Location;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{Ordering::SeqCst, fence};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// One spawned task: the job on the pool and the packet its handle reads, in one allocation.
struct Task<F, T> {
    /// Claimed, done, released (`task_state.rs`).
    lifecycle: TaskState,
    /// The closure; taken by the runner (invariant 1).
    f: UnsafeCell<Option<F>>,
    /// The task's count in its scope; taken by the runner, dropped last (invariant 1).
    running: UnsafeCell<Option<Running>>,
    /// Written by the runner before `DONE` (invariant 2).
    outcome: UnsafeCell<Option<Outcome<T>>>,
    /// The task's node below the scope's, made on first use: by the runner as the task starts,
    /// or earlier by [`TaskHandle::context`]; emptied by whoever lets go second (invariant 3).
    /// A task skipped before anyone asked for its context never makes one.
    ctx: UnsafeCell<OnceLock<Context>>,
    /// The thread blocked in [`TaskHandle::join`], set before it checks `state` the last time.
    joiner: OnceLock<Thread>,
    /// Its spawn site and time and the thread running it, for dumps (`observe.rs`).
    record: ChildRecord,
}

// SAFETY: `Task` is `!Sync` only because of its `UnsafeCell`s, and every access to them is
// synchronized: `f` and `running` are touched by one thread only, the claimer (invariant 1; the
// spawner wrote them before queueing the task, which the queues' push and pop synchronize, and
// the claim's Acquire `fetch_or` orders after). `outcome` is written by the runner before its
// Release `fetch_or` of `DONE` and read by the handle only after an Acquire load that sees
// `DONE`, or taken by whichever of the two sets its bit second with an AcqRel `fetch_or` that
// saw the other's bit (invariant 2). `ctx` is a `OnceLock` (itself `Sync`) while both sides may
// read it, and is emptied only by that same second party, when the first no longer touches it
// (invariant 3). So no cell is accessed by two threads at once. The closure runs on (and the
// outcome moves to) another thread, hence `F: Send` and `T: Send`.
unsafe impl<F: Send, T: Send> Sync for Task<F, T> {}

/// What the handle needs of a task, with the closure's type erased.
trait ErasedTask<T>: Send + Sync {
    /// Whether the outcome is stored (Acquire: it may be taken after this).
    fn is_done(&self) -> bool;
    fn joiner(&self) -> &OnceLock<Thread>;
    /// The task's context, made now (below `parent`, the scope's) if it does not exist yet.
    fn ctx(&self, parent: &Context) -> &Context;
    /// Why a skipped task was skipped: the cause of its context, or of `scope` if it has none.
    fn skip_cause(&self, scope: &Context) -> Cause;
    /// Runs the task on this thread if nobody has claimed it yet; whether it did.
    fn run_inline(&self) -> bool;
    /// # Safety
    /// Only after [`is_done`](Self::is_done) returned true, by the handle, before `release`.
    unsafe fn take_outcome(&self) -> Option<Outcome<T>>;
    /// The handle lets go: if the task is done, drops what is left of the outcome and the
    /// context here ("Who drops what"); a panic from that is recorded in `state`.
    fn release(&self, state: &ScopeState);
}

/// An owned permission to join a pool task of a scope, and the task's context.
///
/// As with [`ScopedJoinHandle`](crate::ScopedJoinHandle), dropping or forgetting it does not
/// detach the task: the scope waits for every task at exit. If the task has not finished when
/// its handle is dropped, the task drops its own result when it finishes, on the thread that ran
/// it; a panic from that destructor is a panic of the scope.
///
/// # Examples
///
/// ```
/// let input = [1, 2, 3];
/// let sum = tether::scope(|s| s.spawn_task(|_| input.iter().sum::<i32>()).join().unwrap()).unwrap();
/// assert_eq!(sum, 6);
/// ```
pub struct TaskHandle<'scope, T> {
    task: Arc<dyn ErasedTask<T> + 'scope>,
    state: &'scope ScopeState,
}

/// Step 1 of the module docs: what [`Scope::spawn_task`](super::Scope::spawn_task) and its
/// variants do once they hold a slot (or know they need none).
pub(super) fn spawn<'scope, F, T>(
    state: &'scope Arc<ScopeState>,
    slot: Slot,
    f: F,
    site: &'static Location<'static>,
) -> TaskHandle<'scope, T>
where
    F: FnOnce(&Context) -> T + Send + 'scope,
    T: Send + 'scope,
{
    let f = telemetry::instrument(&state.obs, ChildKind::Task, None, site, f);
    let task = Arc::new(Task {
        lifecycle: TaskState::new(),
        f: UnsafeCell::new(Some(f)),
        running: UnsafeCell::new(Some(Running::start(state, slot, Kind::Task { late: false }))),
        outcome: UnsafeCell::new(None),
        ctx: UnsafeCell::new(OnceLock::new()),
        joiner: OnceLock::new(),
        record: state.meta.child_record(site),
    });
    let job: Arc<dyn Job + 'scope> = task.clone();
    // SAFETY: erasing `'scope` lets the pool and the scope's queue hold the job, which
    // borrows `'scope` data (`F` and `T` are only `'scope`), past what the type system can
    // see. It is sound because every `'scope` value in the task is used and dropped while
    // `'scope` is live, and a copy of the job that outlives `'scope` is bare memory:
    // - What `'scope` covers (the caller's borrows and the `Scope` itself, a local of
    //   `exit::run_body_then_exit`) stays alive until the scope's owner has seen the running
    //   count at zero and closed it (`ScopeState::close`, step 2 of the exit, after the body,
    //   whose panic is caught; nothing unwinds past it); closed, the count refuses any spawn.
    //   `Running::start` above counted this task before it was queued, and only the claimer
    //   drops that count (`Task::run`, step 5), after the closure is
    //   consumed or dropped and the outcome is stored, and, if the handle is gone, after
    //   the outcome and the context are dropped ("Who drops what"). The decrement (SeqCst)
    //   synchronizes with the owner's load that sees zero.
    // - A queued job is always claimed: workers never stop (a panic never escapes a job:
    //   `pool::run_job`), and every thread that waits for the scope runs the scope's pending
    //   tasks from its queue; so the count does drop.
    // - The handle's `Arc` is `'scope`-bound; its drop (`TaskHandle::drop`) runs on a
    //   counted thread or the body and drops what the task still holds if the task is done,
    //   or leaves that to the runner. A forgotten handle leaks the task, never uses it.
    // - Every other copy (the pool's and the queue's, and the runner's after step 4) only
    //   reads `state` and then lets go of its `Arc`; once both `DONE` and `RELEASED` are set
    //   and the second party has emptied the cells, the last drop frees atomics and empty
    //   cells, which touches no `'scope` data whenever it happens.
    // - As for threads, the count cannot reach zero while a spawn is under way (scope
    //   invariant 4), and `Scope` is invariant in `'scope`.
    let job: JobRef = unsafe { std::mem::transmute::<Arc<dyn Job + 'scope>, JobRef>(job) };
    state.tasks.enqueue(&job);
    pool::push(job);
    TaskHandle { task, state }
}

impl<F, T> Job for Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    /// Steps 2 to 5 of the module docs, if the task is still unclaimed.
    fn run(self: Arc<Self>) {
        if !self.lifecycle.claim() {
            // A stale copy (invariant 1): dropping this `Arc` touches no `'scope` data.
            return;
        }
        let running = self.execute();
        // Bare memory, or still held by the handle ("Who drops what"): no user code runs here.
        drop(self);
        // 5. Count the task out (`Running::drop`): the last access to `'scope` data.
        drop(running);
    }

    fn is_claimed(&self) -> bool {
        self.lifecycle.is_claimed()
    }

    fn observe(&self) -> Option<RawChild> {
        // A claimed task is running (its thread's cell lists it) or done: not listed here.
        (!self.lifecycle.is_claimed()).then(|| self.record.queued_task())
    }
}

impl<F, T> Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    /// The context cell, for shared use (invariant 3).
    fn ctx_cell(&self) -> &OnceLock<Context> {
        // SAFETY: invariant 3: the cell is emptied only through `clear`, by the party that lets
        // go second, once no other thread reads it; every other access is a shared one.
        unsafe { &*self.ctx.get() }
    }

    /// Steps 2 to 4, by the claimer; returns the count for the caller to drop last.
    fn execute(&self) -> Running {
        // SAFETY: invariant 1: this thread claimed the task and is its only runner.
        let (f, running) = unsafe { ((*self.f.get()).take(), (*self.running.get()).take()) };
        let (f, mut running) =
            (f.expect("tether: a task ran twice"), running.expect("tether: a task ran twice"));
        running.begin_task();
        let state = running.state();
        // 2. Skip if already cancelled (the scope, or this task through its handle), else run
        //    with the context ambient. The task's node is made now unless the handle made it.
        let cell = self.ctx_cell();
        let outcome = if cell.get().unwrap_or(&state.ctx).is_cancelled() {
            state.drop_caught(f);
            Outcome::Skipped
        } else {
            // A context the handle made before it went is seen below (`is_released` is Acquire).
            let released = self.lifecycle.is_released();
            let mut local = None;
            let ctx = match cell.get() {
                Some(ctx) => ctx,
                // Nobody can ask for it any more: keep it on this thread ("Task contexts").
                None if released => {
                    let fresh = || state.tasks.task_parent(&state.ctx).child_for_spawn();
                    &*local.insert(state.tasks.take_spare().unwrap_or_else(fresh))
                }
                None => cell.get_or_init(|| state.tasks.task_parent(&state.ctx).child_for_spawn()),
            };
            let result = {
                let _child_of = ChildOf::task(state);
                let _working_for = WorkingFor::enter(state.meta.id);
                let r = &self.record;
                let _activity = TaskActivity::enter(state.meta.id, r.id, r.site, r.born);
                let _ambient = ambient::enter(ctx);
                catch_unwind(AssertUnwindSafe(|| f(ctx)))
            };
            // 3. A panic is recorded and cancels the scope (so, as for a thread child, the
            //    callbacks on the task's context run rather than being discarded with it).
            let outcome = match result {
                Ok(value) => Outcome::Returned(value),
                Err(payload) => Outcome::Panicked(state.panicked(None, payload)),
            };
            if let Some(ctx) = local {
                state.drop_caught(state.tasks.keep_spare(ctx));
            }
            outcome
        };
        // 4. Hand the outcome over.
        // SAFETY: invariant 2: written once, here, before `DONE`; nobody reads it before `DONE`.
        unsafe { *self.outcome.get() = Some(outcome) };
        if self.lifecycle.finish() == LetGo::Last {
            // The handle is gone: nobody will take the outcome. Drop it, and the context, here.
            self.clear(state);
        } else {
            // Pairs with the fence in `TaskHandle::join`: either the joiner sees `DONE`, or this
            // thread sees the joiner and unparks it.
            fence(SeqCst);
            if let Some(joiner) = self.joiner.get() {
                joiner.unpark();
            }
        }
        running
    }

    /// Drops what is left of the outcome and the context, each under `catch_unwind` (a panic is
    /// the scope's). Only by the party that set the second of `DONE` and `RELEASED` (invariant 3).
    fn clear(&self, state: &ScopeState) {
        // SAFETY: invariants 2 and 3: the other party has let go (the `fetch_or` that saw its
        // bit synchronized with its last access), so this thread is the only one left here.
        let (outcome, ctx) = unsafe { ((*self.outcome.get()).take(), (*self.ctx.get()).take()) };
        state.drop_caught(outcome);
        state.drop_caught(ctx);
    }
}

impl<F, T> ErasedTask<T> for Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    fn is_done(&self) -> bool {
        self.lifecycle.is_done()
    }

    fn joiner(&self) -> &OnceLock<Thread> {
        &self.joiner
    }

    fn ctx(&self, parent: &Context) -> &Context {
        self.ctx_cell().get_or_init(|| parent.child_for_spawn())
    }

    fn skip_cause(&self, scope: &Context) -> Cause {
        self.ctx_cell().get().unwrap_or(scope).cause().unwrap_or(Cause::Cancelled)
    }

    fn run_inline(&self) -> bool {
        if !self.lifecycle.claim() {
            return false;
        }
        // The caller (the handle) is alive, so the outcome stays for it to take; the count
        // drops here, on a thread that is the body or itself counted.
        drop(self.execute());
        true
    }

    unsafe fn take_outcome(&self) -> Option<Outcome<T>> {
        // SAFETY: the caller saw `DONE` (Acquire), so the runner's write happened before and it
        // touches the cell no more (invariant 2); the handle is the only reader.
        unsafe { (*self.outcome.get()).take() }
    }

    fn release(&self, state: &ScopeState) {
        if self.lifecycle.release() == LetGo::Last {
            self.clear(state);
        }
    }
}

// ===== impl TaskHandle =====

impl<T> TaskHandle<'_, T> {
    /// Waits for the task to finish and returns its result. If the task has not started, it
    /// runs here, on the calling thread; if it is running elsewhere, this sleeps until it is
    /// done, and runs nothing else meanwhile (a join waits for its task alone; the thread
    /// running it needs no help to finish it). The task's completion synchronizes with this call
    /// returning.
    ///
    /// # Errors
    ///
    /// [`JoinError`] when the task panicked (holding the payload, which the scope then does not
    /// re-raise), or when it was skipped because its context was cancelled before it started
    /// ([`JoinError::is_skipped`]).
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     assert_eq!(s.spawn_task(|_| "done").join().unwrap(), "done");
    ///     assert!(s.spawn_task(|_| panic!("boom")).join().unwrap_err().is_panic());
    ///     s.cancel();
    ///     assert!(s.spawn_task(|_| unreachable!()).join().unwrap_err().is_skipped());
    /// })
    /// .unwrap();
    /// ```
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        let task = &*self.task;
        // Still queued: run it here, as a sequential call would (this also keeps the stack of a
        // recursive divide-and-conquer as deep as its recursion, not deeper). Otherwise wait for
        // this task alone ("Helping"): the thread running it makes progress without us.
        if !task.is_done() && !task.run_inline() {
            let _blocked = BlockingSite::enter(Location::caller());
            let _ = task.joiner().set(std::thread::current());
            // Pairs with the fence in `Task::execute` (after `DONE`, before reading `joiner`).
            fence(SeqCst);
            while !task.is_done() {
                std::thread::park();
            }
        }
        // SAFETY: `is_done()` returned true above, and `release` runs only in `drop`, later.
        let outcome = unsafe { task.take_outcome() }.expect("tether: a finished task left no outcome");
        outcome.into_join_result(self.state, None, || task.skip_cause(&self.state.ctx))
    }

    /// Whether the task has finished (run, panicked or been skipped): [`join`](Self::join) then
    /// returns at once.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let h = s.spawn_task(|_| ());
    ///     s.wait_all();
    ///     assert!(h.is_finished());
    /// })
    /// .unwrap();
    /// ```
    pub fn is_finished(&self) -> bool {
        self.task.is_done()
    }

    /// The task's context: cancel it to stop (or, if it has not started, skip) this task only.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause};
    /// tether::scope(|s| {
    ///     let h = s.spawn_task(|ctx| ctx.wait());
    ///     h.context().cancel();
    ///     // Either it started and was woken by the cancellation, or it was skipped.
    ///     match h.join() {
    ///         Ok(cause) => assert_eq!(cause, Cause::Cancelled),
    ///         Err(e) => assert!(e.is_skipped()),
    ///     }
    ///     assert!(!s.context().is_cancelled(), "the scope goes on");
    /// })
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        self.task.ctx(&self.state.ctx)
    }
}

impl<T> Drop for TaskHandle<'_, T> {
    /// Lets go of the task ("Who drops what" in the module docs).
    fn drop(&mut self) {
        self.task.release(self.state);
    }
}

impl<T> fmt::Debug for TaskHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .field("scope", &self.state.ctx)
            .finish_non_exhaustive()
    }
}
