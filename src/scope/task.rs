//! Pool-task children of a scope: closures run on the shared work-stealing pool
//! ([`crate::pool`]) with the scope semantics of thread children, at a fraction of a thread's
//! cost to start. Design: design/0003-pool-tasks.md.
//!
//! The bookkeeping is the thread children's (`thread.rs`): the scope's running count covers
//! tasks too, and the scope's exit waits for it to reach zero, so forgetting a [`TaskHandle`]
//! is safe. What differs is who waits and how: every wait for tasks helps (`pool::wait_until`).
//!
//! # A task's life
//! 1. On the spawning thread: take a slot of the limit (if any, helping while it waits), count
//!    the task as running, and queue it twice (one allocation holds the closure, the outcome and,
//!    once made, the task's context): on the pool, for the workers, and on the scope's own queue
//!    ("Helping"), for the threads that wait for the scope.
//! 2. On whichever thread claims it (a worker, a thread waiting for the scope, or the joiner
//!    running it inline): if its context (or, before it has one, the scope's) is already
//!    cancelled, **skip** it: drop the closure without calling it and record
//!    [`Outcome::Skipped`] (the handle reads the cause from that context). Otherwise make its
//!    context ("Task contexts") and run the closure with it ambient, under `catch_unwind`.
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
//! `RELEASED` bits of `state` (`task_state.rs`), each set by one read-modify-write, so exactly one of them sees
//! the other's bit) drops the outcome, if nobody took it, and the context: the runner before it
//! counts itself out, the handle in its drop. Each such drop runs under `catch_unwind`, and a
//! panic there is a panic of the scope. After that the task is bare memory (atomics and empty
//! cells), which any thread may free at any time, even after the scope has returned: the copy a
//! queue still holds of a task that ran elsewhere (a stale copy, see invariant 1), the scope's
//! queue, and the handle's `Arc` run no user code when they are dropped.
//!
//! A task's memory is allocated by the thread that spawns it. The scope's queue keeps a
//! reference to each task until someone pops it, so the last reference to a finished task is
//! usually the queue's, dropped by the spawning thread: each spawn frees up to two claimed tasks
//! from the front of the queue (tasks are claimed about in the order they were spawned, and
//! freeing a few at a time, between the spawner's allocations, keeps the allocator's per-thread
//! cache warm), and all the claimed ones in a sweep each time the queue has doubled (amortized
//! O(1) per task).
//!
//! # Helping
//! A thread waiting for a scope (its exit, [`Scope::wait_all`], a spawn waiting for a slot of
//! the limit) runs the scope's own pending tasks, popped from the scope's queue, and nothing
//! else: it is isolated, as Intel TBB's `isolate` makes a wait. So a wait never runs a task that
//! it is not waiting for, which could block on something the waiter does only after the wait
//! (a deadlock), or hold the waiter for as long as an unrelated task runs; and since every
//! waiter can run every pending task it waits for, a wait cannot deadlock for want of workers.
//! [`TaskHandle::join`] runs its task inline if nobody has claimed it, and otherwise sleeps until
//! it is done: it waits for that task alone, and the thread running it makes progress on its
//! own (it is running user code, or waiting for a nested scope, which it helps).
//!
//! # Task contexts
//! A task's context is a child of the scope's, made as it starts. Made directly below the
//! scope's node, every task would register with (and later detach from) that one node, under
//! its lock, from every worker at once. So a task run by pool worker `i` hangs from a node of the
//! scope's made for that worker on first use (a child of the scope's node, carrying the same
//! inherited bindings, never cancelled but through the scope): registration is then local to the
//! worker. Cancellation, causes, deadlines and values reach the task exactly as before; only
//! [`Context::registered_children`] of the scope's context counts these per-worker nodes rather
//! than the tasks. A task's context made by [`TaskHandle::context`], or run by a thread that is
//! not a worker, hangs from the scope's node itself.
//!
//! A worker also keeps one spare task context per scope: when a task whose handle was gone
//! before it started finishes and its context is as new (`Context::is_pristine`: no clone kept,
//! never cancelled, no children, callbacks or done channel, ever), the next such task of the
//! scope on that worker gets it instead of a new node. Nothing can tell the difference: a
//! pristine child of the worker's node is indistinguishable from a new one, and nobody else can
//! reach it (the task's handle is gone, and the context was only lent to the closure). This
//! saves the allocation, registration and release of a node for tasks that only read their
//! context.
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

use super::task_state::{LetGo, TaskState};
use super::{Scope, Shared, TrySpawnError};
use crate::live::{self, Counter};
use crate::pool::{self, Job, JobRef};
use crate::{Canceller, Cause, Context, JoinError, ambient};
use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering::SeqCst, fence};
use std::sync::{Arc, OnceLock, PoisonError};
use std::thread::Thread;

/// What a task hands to its handle.
enum Outcome<T> {
    Returned(T),
    /// The task panicked; the payload is in the scope's failures under this id.
    Panicked(u64),
    /// The task's context was cancelled before it started; its closure was dropped uncalled.
    /// The cause is that context's (or, if the task never made one, the scope's): a cause never
    /// changes once set, so the handle reads it there (which keeps a task's allocation small).
    Skipped,
}

/// One spawned task: the job on the pool and the packet its handle reads, in one allocation.
struct Task<F, T> {
    /// Claimed, done, released (`task_state.rs`).
    state: TaskState,
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

/// A scope's own queue of its tasks ("Helping" and "Who drops what" in the module docs): a
/// reference to every task spawned and not yet popped, pending or stale.
#[derive(Default)]
pub(super) struct TaskQueue {
    /// In the order they were spawned, which is about the order they are claimed in.
    jobs: VecDeque<JobRef>,
    /// The length at which the next spawn sweeps out the claimed ones.
    sweep_at: usize,
}

/// What a scope keeps per pool worker ("Task contexts"): the node the contexts of the tasks the
/// worker runs hang from, and a spare task context.
#[derive(Default)]
pub(super) struct WorkerSlot {
    parent: OnceLock<Context>,
    /// Touched only by the worker whose slot this is (see the `Sync` impl).
    spare: UnsafeCell<Option<Context>>,
}

// SAFETY: `WorkerSlot` is `!Sync` only because of `spare`. `spare` is accessed only through
// `Shared::spare_task_context` and `Shared::keep_spare_task_context`, which reach slot `i` only
// on pool worker `i`'s own thread (`Shared::worker_slot`, by `pool::worker_index`), and by the
// slot's drop, with the scope's state, when no thread can reach it any more. Each access moves
// the whole value out or in and holds no reference across any other code (a context that is not
// kept is dropped after the reference has ended), so a nested access on the same thread (a
// worker running a task of this scope while it helps inside another) never overlaps an outer one.
unsafe impl Sync for WorkerSlot {}

/// The smallest queue that is swept.
const SWEEP_MIN: usize = 64;

/// What the handle needs of a task, with the closure's type erased.
trait Packet<T>: Send + Sync {
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
    /// context here ("Who drops what"); a panic from that is recorded in `shared`.
    fn release(&self, shared: &Shared);
}

/// Counts a task as running from its spawn until it is done (scope invariant 4).
///
/// Holds the scope's state by address, not by `Arc`: the count it stands for keeps the state
/// alive (the scope drops its `Arc` only after it has seen the count at zero), so a task costs
/// the state's reference count nothing. Counting out takes a reference first ([`Drop`]).
struct Running {
    /// From [`Arc::as_ptr`], so its provenance covers the `Arc`'s header too ([`Running::hold`]).
    shared: NonNull<Shared>,
    /// Whether the task holds a slot of the limit.
    slot: bool,
    /// Whether this task may count itself out late (`pool::begin_job`, pool invariant 4).
    late: bool,
}

// SAFETY: `Running` is `!Send` only because of the pointer; `Shared` is `Sync`, and the pointee
// lives for as long as the `Running` does (see the type's docs).
unsafe impl Send for Running {}

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
    task: Arc<dyn Packet<T> + 'scope>,
    shared: &'scope Shared,
}

thread_local! {
    /// The scope whose task this thread is running (innermost; null when none), as an address
    /// for comparison only, for [`Scope::wait_all`] to refuse to wait for itself.
    static TASK_OF: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// Whether this thread is running a task of the scope whose state is `shared`.
pub(super) fn is_task_of(shared: &Shared) -> bool {
    TASK_OF.try_with(|c| std::ptr::eq(c.get(), shared)).unwrap_or(false)
}

// ===== impl Scope (tasks) =====

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a pool task running `f` with its own [`Context`], and returns its handle.
    ///
    /// A task is a scope child like a [`spawn`](Self::spawn)ed thread (its context is a new
    /// child of the scope's, inheriting the bindings that are inherited across spawns; it may
    /// borrow `'scope` data, including the scope; the scope cancels and then joins it at exit; a
    /// panic cancels the siblings and is re-raised by the scope), but it runs on the shared
    /// work-stealing pool ([`crate::pool`]): starting one costs an allocation and a queue push
    /// instead of an OS thread.
    ///
    /// **A task whose context is cancelled before it starts does not run**: its closure is
    /// dropped uncalled and [`join`](TaskHandle::join) returns a [`JoinError`] for which
    /// [`is_skipped`](JoinError::is_skipped) holds. So the scope's exit (which cancels) skips
    /// the tasks still queued; call [`wait_all`](Self::wait_all) first to run them all.
    ///
    /// **Blocking in a task holds a pool worker** (there are about as many as cores) for as
    /// long as it blocks: fine for a short lock or a wait for a nested scope (which runs that
    /// scope's pending tasks while it waits), costly for I/O, sleeps or waits on things outside
    /// the pool. Spawn a thread ([`spawn`](Self::spawn)) for those.
    ///
    /// With a limit, `spawn_task` waits for a free slot as `spawn` does, running the scope's
    /// pending tasks meanwhile.
    ///
    /// As with threads, a task cannot borrow what the body owns (it would be dropped before the
    /// scope joins the task):
    ///
    /// ```compile_fail,E0373
    /// tether::scope(|s| {
    ///     let local = vec![1, 2, 3];
    ///     s.spawn_task(|_| local.len());
    /// });
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    ///
    /// let hits = AtomicUsize::new(0);
    /// tether::scope(|s| {
    ///     for _ in 0..1000 {
    ///         s.spawn_task(|_| hits.fetch_add(1, SeqCst));
    ///     }
    ///     s.wait_all(); // without it, the exit would skip the tasks not yet started
    /// })
    /// .unwrap();
    /// assert_eq!(hits.into_inner(), 1000);
    /// ```
    pub fn spawn_task<F, T>(&'scope self, f: F) -> TaskHandle<'scope, T>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let slot = self.shared.acquire_slot_helping();
        self.spawn_task_with(slot, f)
    }

    /// Spawns a pool task whose `Err` fails the scope, as [`spawn_fallible`](Self::spawn_fallible)
    /// does for threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     let h = s.spawn_task_fallible(|_| Err::<(), _>(std::fmt::Error));
    ///     assert!(h.join().unwrap().is_err());
    /// })
    /// .unwrap_err();
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn spawn_task_fallible<F, T, E>(&'scope self, f: F) -> TaskHandle<'scope, Result<T, Arc<E>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        let shared: &'scope Shared = self.shared;
        self.spawn_task(move |ctx| {
            f(ctx).map_err(|error| {
                let error = Arc::new(error);
                shared.failed(error.clone());
                error
            })
        })
    }

    /// Spawns a pool task only if a slot of the limit is free; otherwise hands `f` back. Without
    /// a limit it always spawns.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError`] when every slot is taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::ScopeBuilder::new().limit(1).run(|s| {
    ///     let busy = s.spawn(|ctx| ctx.wait());
    ///     assert!(s.try_spawn_task(|_| ()).is_err(), "the only slot is taken");
    ///     s.cancel();
    ///     busy.join().unwrap();
    /// })
    /// .unwrap();
    /// ```
    pub fn try_spawn_task<F, T>(&'scope self, f: F) -> Result<TaskHandle<'scope, T>, TrySpawnError<F>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        match self.shared.try_acquire_slot() {
            None => Err(TrySpawnError::new(f)),
            Some(slot) => Ok(self.spawn_task_with(slot, f)),
        }
    }

    /// Step 1 of the module docs.
    fn spawn_task_with<F, T>(&'scope self, slot: bool, f: F) -> TaskHandle<'scope, T>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let shared: &'scope Shared = self.shared;
        let task = Arc::new(Task {
            state: TaskState::new(),
            f: UnsafeCell::new(Some(f)),
            running: UnsafeCell::new(Some(Running::start(self.shared, slot))),
            outcome: UnsafeCell::new(None),
            ctx: UnsafeCell::new(OnceLock::new()),
            joiner: OnceLock::new(),
        });
        let job: Arc<dyn Job + 'scope> = task.clone();
        // SAFETY: erasing `'scope` lets the pool and the scope's queue hold the job, which
        // borrows `'scope` data (`F` and `T` are only `'scope`), past what the type system can
        // see. It is sound because every `'scope` value in the task is used and dropped while
        // `'scope` is live, and a copy of the job that outlives `'scope` is bare memory:
        // - What `'scope` covers (the caller's borrows and the `Scope` itself, a local of
        //   `super::run_scope`) stays alive until the scope's owner has seen the running count
        //   at zero and closed it (`Shared::close`, run by `super::end` after the body, whose
        //   panic is caught; nothing unwinds past it); closed, the count refuses any spawn. `Running::start` above counted this task before it was queued,
        //   and only the claimer drops that count (`Task::run`, step 5), after the closure is
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
        shared.enqueue(&job);
        pool::push(job);
        TaskHandle { task, shared }
    }
}

// ===== impl Task =====

impl<F, T> Job for Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    /// Steps 2 to 5 of the module docs, if the task is still unclaimed.
    fn run(self: Arc<Self>) {
        if !self.state.claim() {
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
        self.state.is_claimed()
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
        running.begin();
        let shared = running.shared();
        // 2. Skip if already cancelled (the scope, or this task through its handle), else run
        //    with the context ambient. The task's node is made now unless the handle made it.
        let cell = self.ctx_cell();
        let outcome = if cell.get().unwrap_or(&shared.ctx).is_cancelled() {
            shared.drop_caught(f);
            Outcome::Skipped
        } else {
            // A context the handle made before it went is seen below (`is_released` is Acquire).
            let released = self.state.is_released();
            let mut local = None;
            let ctx = match cell.get() {
                Some(ctx) => ctx,
                // Nobody can ask for it any more: keep it on this thread ("Task contexts").
                None if released => {
                    let fresh = || shared.task_parent().child_for_spawn();
                    &*local.insert(shared.spare_task_context().unwrap_or_else(fresh))
                }
                None => cell.get_or_init(|| shared.task_parent().child_for_spawn()),
            };
            let outer = TASK_OF.with(|c| c.replace(shared));
            let result = {
                let _ambient = ambient::enter(ctx);
                catch_unwind(AssertUnwindSafe(|| f(ctx)))
            };
            TASK_OF.with(|c| c.set(outer));
            // 3. A panic is recorded and cancels the scope (so, as for a thread child, the
            //    callbacks on the task's context run rather than being discarded with it).
            let outcome = match result {
                Ok(value) => Outcome::Returned(value),
                Err(payload) => Outcome::Panicked(shared.panicked(None, payload)),
            };
            if let Some(ctx) = local {
                shared.keep_spare_task_context(ctx);
            }
            outcome
        };
        // 4. Hand the outcome over.
        // SAFETY: invariant 2: written once, here, before `DONE`; nobody reads it before `DONE`.
        unsafe { *self.outcome.get() = Some(outcome) };
        if self.state.finish() == LetGo::Last {
            // The handle is gone: nobody will take the outcome. Drop it, and the context, here.
            self.clear(shared);
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
    fn clear(&self, shared: &Shared) {
        // SAFETY: invariants 2 and 3: the other party has let go (the `fetch_or` that saw its
        // bit synchronized with its last access), so this thread is the only one left here.
        let (outcome, ctx) = unsafe { ((*self.outcome.get()).take(), (*self.ctx.get()).take()) };
        shared.drop_caught(outcome);
        shared.drop_caught(ctx);
    }
}

impl<F, T> Packet<T> for Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    fn is_done(&self) -> bool {
        self.state.is_done()
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
        if !self.state.claim() {
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

    fn release(&self, shared: &Shared) {
        if self.state.release() == LetGo::Last {
            self.clear(shared);
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
    pub fn join(self) -> Result<T, JoinError> {
        let task = &*self.task;
        // Still queued: run it here, as a sequential call would (this also keeps the stack of a
        // recursive divide-and-conquer as deep as its recursion, not deeper). Otherwise wait for
        // this task alone ("Helping"): the thread running it makes progress without us.
        if !task.is_done() && !task.run_inline() {
            let _ = task.joiner().set(std::thread::current());
            // Pairs with the fence in `Task::execute` (after `DONE`, before reading `joiner`).
            fence(SeqCst);
            while !task.is_done() {
                std::thread::park();
            }
        }
        // SAFETY: `is_done()` returned true above, and `release` runs only in `drop`, later.
        let outcome = unsafe { task.take_outcome() }.expect("tether: a finished task left no outcome");
        match outcome {
            Outcome::Returned(value) => Ok(value),
            Outcome::Panicked(id) => {
                let payload = self.shared.take_panic(id).expect("tether: a task's panic was taken twice");
                Err(JoinError::new(None, payload))
            }
            Outcome::Skipped => Err(JoinError::skipped(task.skip_cause(&self.shared.ctx))),
        }
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
    /// use tether::Canceller;
    /// tether::scope(|s| {
    ///     let h = s.spawn_task(|ctx| ctx.is_cancelled());
    ///     h.context().cancel();
    ///     // Either it had started and saw the cancellation, or it was skipped.
    ///     assert!(h.join().unwrap_or(true));
    ///     assert!(!s.context().is_cancelled(), "the scope goes on");
    /// })
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        self.task.ctx(&self.shared.ctx)
    }
}

impl<T> Drop for TaskHandle<'_, T> {
    /// Lets go of the task ("Who drops what" in the module docs).
    fn drop(&mut self) {
        self.task.release(self.shared);
    }
}

// ===== impl Shared (task contexts, the task queue) =====

impl Shared {
    /// This worker's slot of the scope, or `None` on a thread that is not a pool worker.
    fn worker_slot(&self) -> Option<&WorkerSlot> {
        let index = pool::worker_index()?;
        let slots =
            self.task_parents.get_or_init(|| (0..pool::threads()).map(|_| WorkerSlot::default()).collect());
        Some(&slots[index])
    }

    /// The node the contexts of tasks run on this thread hang from ("Task contexts").
    fn task_parent(&self) -> &Context {
        match self.worker_slot() {
            Some(slot) => slot.parent.get_or_init(|| self.ctx.child_for_spawn()),
            None => &self.ctx,
        }
    }

    /// This worker's spare task context, if it has one ("Task contexts").
    fn spare_task_context(&self) -> Option<Context> {
        let slot = self.worker_slot()?;
        // SAFETY: this is worker `i`'s slot, on worker `i` (see `WorkerSlot`'s `Sync` impl).
        unsafe { (*slot.spare.get()).take() }
    }

    /// Keeps `ctx`, the context of a task that has finished and whose handle is gone, as this
    /// worker's spare if it is as new; otherwise (or if there is a spare already) drops it,
    /// under `catch_unwind` (dropping a context may discard callbacks, which are user code).
    fn keep_spare_task_context(&self, ctx: Context) {
        let mut ctx = Some(ctx);
        if let Some(slot) = self.worker_slot().filter(|_| ctx.as_ref().is_some_and(Context::is_pristine)) {
            // SAFETY: as in `spare_task_context`; the reference ends within this block, and
            // nothing is dropped through it (the slot is written only when empty).
            unsafe {
                let spare = &mut *slot.spare.get();
                if spare.is_none() {
                    *spare = ctx.take();
                }
            }
        }
        self.drop_caught(ctx);
    }

    /// Queues a reference to a new task on the scope's own queue ("Helping"), and frees a few
    /// claimed tasks from its front, or all of them once the queue has doubled since the last
    /// sweep ("Who drops what": those frees run no user code).
    fn enqueue(&self, job: &JobRef) {
        const FRONT: usize = 2;
        let mut claimed: [Option<JobRef>; FRONT] = Default::default();
        let sweep = {
            let mut queue = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            queue.jobs.push_back(job.clone());
            for slot in &mut claimed {
                if !queue.jobs.front().is_some_and(|j| j.is_claimed()) {
                    break;
                }
                *slot = queue.jobs.pop_front();
            }
            queue.jobs.len() >= queue.sweep_at.max(SWEEP_MIN)
        };
        drop(claimed); // outside the lock
        if sweep {
            let claimed: VecDeque<JobRef> = {
                let mut queue = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
                let (claimed, pending) =
                    std::mem::take(&mut queue.jobs).into_iter().partition(|j| j.is_claimed());
                queue.jobs = pending;
                queue.sweep_at = 2 * queue.jobs.len();
                claimed
            };
            drop(claimed); // outside the lock
        }
    }

    /// Runs one task of this scope from its queue, newest first, if it holds any (a stale
    /// copy is only let go of); returns whether it did. The helping of the scope's waits.
    pub(super) fn help_own(&self) -> bool {
        let job = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).jobs.pop_back();
        match job {
            Some(job) => {
                pool::run_job(job);
                true
            }
            None => false,
        }
    }
}

impl<T> fmt::Debug for TaskHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .field("scope", &self.shared.ctx)
            .finish_non_exhaustive()
    }
}

impl pool::FinishCount for Shared {
    /// Late finishes of this scope's tasks (pool invariant 4), reported by the worker that ran them.
    fn finish(&self, n: usize) {
        self.finish_many(n);
    }
}

// ===== impl Running =====

impl Running {
    fn start(shared: &Arc<Shared>, slot: bool) -> Running {
        shared.start_one();
        live::add(Counter::Tasks, 1);
        // `Arc::as_ptr`, not a reference: `hold` uses the pointer to reach the `Arc`'s counts,
        // which a reference to the contents has no provenance over.
        let shared = NonNull::new(Arc::as_ptr(shared).cast_mut()).expect("an `Arc` is never null");
        Running { shared, slot, late: false }
    }

    /// The scope's state, alive while this count is (see the type's docs).
    fn shared(&self) -> &Shared {
        // SAFETY: the scope keeps its `Arc` until it has seen the count at zero, and this
        // `Running` is one of that count until it drops.
        unsafe { self.shared.as_ref() }
    }

    /// Called as the task starts running: whether its worker may count it out late, in one
    /// step with the next tasks of this scope it runs (pool invariant 4).
    fn begin(&mut self) {
        self.late = pool::begin_job(self.shared.as_ptr().cast());
    }

    /// A new reference to the scope's state, to use after the count has dropped.
    fn hold(&self) -> Arc<Shared> {
        let ptr = self.shared.as_ptr().cast_const();
        // SAFETY: `ptr` came from `Arc::as_ptr` on the scope's `Arc<Shared>` (`start`), whose
        // allocation is alive (see `shared`), so its strong count is at least one and may be
        // incremented, and `from_raw` then owns that new count.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.slot {
            self.shared().release_slot();
        }
        live::add(Counter::Tasks, -1);
        // Last: after this the scope may end (see `Scope::spawn_task_with`), so a reference is
        // taken first, for the decrement's wake-up (and, late, for the worker to report it).
        if self.late {
            pool::finish_late(self.shared.as_ptr().cast_const().cast(), || self.hold());
        } else {
            self.hold().finish_one();
        }
    }
}
