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
//!    the task as running, and queue it (one allocation holds the closure, the outcome and, once
//!    made, the task's context).
//! 2. On whichever thread claims it (a worker, a thread helping while it waits, or the joiner
//!    running it inline): if its context (or, before it has one, the scope's) is already
//!    cancelled, **skip** it: drop the closure without calling it and record
//!    [`Outcome::Skipped`] (the handle reads the cause from that context). Otherwise make its
//!    context ("Task contexts") and run the closure with it ambient, under `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it; a fallible task's `Err` is recorded and
//!    cancels the scope with [`Cause::ChildFailed`](crate::Cause::ChildFailed).
//! 4. Store the outcome, mark the task [`DONE`], wake a joiner; let go of the task, dropping the
//!    outcome here if the handle is already gone (it may borrow from `'scope`).
//! 5. Give the slot back and count the task out: the last thing it does with `'scope` data. A
//!    pool worker running tasks from its own loop counts a run of tasks of one scope out in one
//!    step (pool invariant 4: one write of the scope's shared count per run, not per task).
//!
//! # Orphans
//! A task's memory is allocated by the thread that spawns it. If the last reference were the
//! runner's (the handle dropped first, as `for .. { s.spawn_task(..); }` does), every task would
//! be freed by another thread than the one that allocated it, and those frees contend for the
//! allocator's lock with the spawner's allocations. So dropping the handle of an unfinished task
//! *orphans* it: the handle's reference moves to the scope's orphan list, and the thread that
//! drops handles frees the finished ones: up to two from the front of the list at each drop
//! (tasks finish about in the order they were orphaned, and freeing a few at a time between the
//! spawner's allocations keeps the allocator's per-thread cache warm), all of them in a sweep
//! each time the list has doubled (amortized O(1) per task), and the scope's join frees the rest. A task whose handle is gone also
//! makes its context on the runner's stack, so it is made and freed on the runner's thread.
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
//! A worker also keeps one spare task context per scope: when a task whose handle is gone
//! finishes and its context is as new (`Context::is_pristine`: no clone kept, never cancelled,
//! no children, callbacks or done channel, ever), the next such task of the scope on that worker
//! gets it instead of a new node. Nothing can tell the difference: a pristine child of the
//! worker's node is indistinguishable from a new one, and nobody else can reach it (the task's
//! handle is gone, and the context was only lent to the closure). This saves the allocation,
//! registration and release of a node for tasks that only read their context.
//!
//! # Invariants
//! 1. `f` and `running` are accessed only by the one thread that claimed the task (the `PENDING`
//!    → `RUNNING` compare-exchange), before it stores [`DONE`]. The claimer is the thread that
//!    took the job from the pool, or a joiner that found it still pending and runs it inline
//!    (as rayon's `join` pops its own job back); the other one then finds it claimed and only
//!    lets go of its `Arc`.
//! 2. `outcome` is written once, by the runner, before the `DONE` store (Release); it is read only
//!    by the handle after a load that sees `DONE` (Acquire), or by the drop of the last `Arc`.
//! 3. `orphaned` is set only by the handle's drop, after which nothing asks for the task's context.
//!    An orphan is used only through [`Orphan`] and is freed by the scope before `'scope` ends.

use super::{Scope, Shared, TrySpawnError};
use crate::live::{self, Kind};
use crate::pool::{self, Job, JobRef};
use crate::{Canceller, Cause, Context, JoinError, ambient};
use std::cell::{Cell, UnsafeCell};
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicBool, AtomicU8, Ordering::Acquire, Ordering::Release, Ordering::SeqCst, fence,
};
use std::sync::{Arc, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

/// The task is queued and nobody has claimed it yet.
const PENDING: u8 = 0;
/// Claimed (by the thread that took it from the pool, or by a joiner running it inline) and
/// running, or being skipped.
const RUNNING: u8 = 1;
/// The outcome is stored (invariant 2).
const DONE: u8 = 2;

/// How long a joiner with nothing to help sleeps before looking for jobs again. Completion wakes
/// it at once; the timeout only bounds how late it notices jobs queued meanwhile.
const PARK: Duration = Duration::from_millis(1);

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
    /// [`PENDING`] → [`RUNNING`] → [`DONE`].
    state: AtomicU8,
    /// The closure; taken by the runner (invariant 1).
    f: UnsafeCell<Option<F>>,
    /// The task's count in its scope; taken by the runner, dropped last (invariant 1).
    running: UnsafeCell<Option<Running>>,
    /// Written by the runner before `DONE` (invariant 2).
    outcome: UnsafeCell<Option<Outcome<T>>>,
    /// The task's node below the scope's, made on first use: by the runner as the task starts,
    /// or earlier by [`TaskHandle::context`]. Made on the runner's thread (and, when the handle
    /// is gone, dropped there too) it costs the spawner nothing and the allocator no
    /// cross-thread free; a task skipped before anyone asked for its context never makes one.
    ctx: OnceLock<Context>,
    /// The thread blocked in [`TaskHandle::join`], set before it checks `state` the last time.
    joiner: OnceLock<Thread>,
    /// The handle was dropped before the task finished (invariant 3).
    orphaned: AtomicBool,
}

// SAFETY: `Task` is `!Sync` only because of its `UnsafeCell`s, and every access to them is
// synchronized: `f` and `running` are touched by one thread only, the runner, which got the job
// from a deque (invariant 1; the spawner wrote them before the push, which the deque's take
// synchronizes with). `outcome` is written by the runner before its Release store of `DONE` and
// read by the handle only after an Acquire load of `DONE`, or dropped with the last `Arc`
// (invariant 2). So no cell is accessed by two threads at once. The closure runs on (and the
// outcome moves to) another thread, hence `F: Send` and `T: Send`.
unsafe impl<F: Send, T: Send> Sync for Task<F, T> {}

/// What the scope needs of an orphaned task (invariant 3), with its types erased.
pub(super) trait Orphan: Send + Sync {
    fn is_done(&self) -> bool;
}

/// The orphaned tasks of a scope, `'scope` erased (see [`TaskHandle`]'s `Drop`).
#[derive(Default)]
pub(super) struct Orphans {
    /// In the order they were orphaned, which is about the order they finish in.
    tasks: std::collections::VecDeque<Arc<dyn Orphan>>,
    /// The length at which the next sweep frees the finished ones.
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
// the whole value out or in and holds no reference across any other code, so a nested access on
// the same thread (a worker running a task of this scope while it helps inside another) never
// overlaps an outer one.
unsafe impl Sync for WorkerSlot {}

/// The smallest orphan list that is swept.
const SWEEP_MIN: usize = 64;

/// What the handle needs of a task, with the closure's type erased.
trait Packet<T>: Orphan {
    fn state(&self) -> &AtomicU8;
    fn joiner(&self) -> &OnceLock<Thread>;
    /// Marks the task orphaned (invariant 3).
    fn orphan(&self);
    /// The task's context, made now (below `parent`, the scope's) if it does not exist yet.
    fn ctx(&self, parent: &Context) -> &Context;
    /// Why a skipped task was skipped: the cause of its context, or of `scope` if it has none.
    fn skip_cause(&self, scope: &Context) -> Cause;
    /// Runs the task on this thread if nobody has claimed it yet; whether it did.
    fn run_inline(&self) -> bool;
    /// # Safety
    /// Only after a load of `state` (Acquire) has seen `DONE` (invariant 2), by the handle.
    unsafe fn take_outcome(&self) -> Option<Outcome<T>>;
}

/// Counts a task as running from its spawn until it is done (scope invariant 4).
///
/// Holds the scope's state by address, not by `Arc`: the count it stands for keeps the state
/// alive (the scope drops its `Arc` only after it has seen the count at zero), so a task costs
/// the state's reference count nothing. Counting out takes a reference first ([`Drop`]).
struct Running {
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
/// its handle is dropped, the scope keeps it until it has, and frees it on the thread that drops
/// handles (or at the scope's exit); a result the task returns is dropped there.
///
/// # Examples
///
/// ```
/// let input = [1, 2, 3];
/// let sum = tether::scope(|s| s.spawn_task(|_| input.iter().sum::<i32>()).join().unwrap()).unwrap();
/// assert_eq!(sum, 6);
/// ```
pub struct TaskHandle<'scope, T> {
    /// `None` only once `join` has taken it.
    task: Option<Arc<dyn Packet<T> + 'scope>>,
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
    /// long as it blocks: fine for a short lock or a wait on other tasks (which helps run
    /// them), costly for I/O, sleeps or waits on things outside the pool. Spawn a thread
    /// ([`spawn`](Self::spawn)) for those.
    ///
    /// With a limit, `spawn_task` waits for a free slot as `spawn` does, running pending tasks
    /// meanwhile.
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
        let shared: &'scope Shared = &self.shared;
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
        let shared: &'scope Shared = &self.shared;
        let task = Arc::new(Task {
            state: AtomicU8::new(PENDING),
            f: UnsafeCell::new(Some(f)),
            running: UnsafeCell::new(Some(Running::start(&self.shared, slot))),
            outcome: UnsafeCell::new(None),
            ctx: OnceLock::new(),
            joiner: OnceLock::new(),
            orphaned: AtomicBool::new(false),
        });
        let job: Arc<dyn Job + 'scope> = task.clone();
        // SAFETY: erasing `'scope` lets the pool hold the job, which borrows `'scope` data (`F`
        // and `T` are only `'scope`), past what the type system can see. It is sound because the
        // job is used only while `'scope` is live: `'scope` does not end before the scope's
        // owner has seen the running count at zero (`Shared::wait_idle`, run by `super::exit`
        // after the body, also when it unwinds), and
        // - `Running::start` above counted this task before it was queued, and only the runner
        //   drops that count, after the steps that use `F` and `T` (`Task::run`, steps 2 to 5):
        //   the closure is consumed or dropped, the outcome stored, and the runner's `Arc`
        //   released (dropping the outcome, if the handle is gone) before the count drops. The
        //   decrement (SeqCst) synchronizes with the owner's load that sees zero.
        // - A queued job always runs (workers never stop; every waiter helps), so the count does
        //   drop; a job is never dropped unrun (pool invariant 1 and `Task::run`).
        // - After the count drop the pool holds no reference to the job (`run` took it by
        //   value), except when a joiner claimed and ran the task inline: the queued `Arc` is
        //   then popped later, maybe after `'scope`, and `run` only sees the claim taken and
        //   drops it. That touches the atomics and empty cells: `f` and `running` were taken by
        //   the claimer and `outcome` by the joiner, so no `'scope` data is read or dropped.
        // - The handle's `Arc` (and the outcome in it) is `'scope`-bound, dropped on a counted
        //   thread or the body, or leaked if the handle is forgotten; never used after `'scope`.
        // - As for threads, the count cannot reach zero while a spawn is under way (scope
        //   invariant 4), and `Scope` is invariant in `'scope`.
        let job: JobRef = unsafe { std::mem::transmute::<Arc<dyn Job + 'scope>, JobRef>(job) };
        pool::push(job);
        TaskHandle { task: Some(task), shared }
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
        if !self.claim() {
            // A joiner ran it inline (and took the outcome). Dropping this `Arc` touches no
            // `'scope` data: `f`, `running` and `outcome` are all empty by now.
            return;
        }
        let running = self.execute();
        let shared = running.shared();
        // Let go of the task; if the handle is gone, this drops the outcome (user code).
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(self))) {
            shared.record_panic(payload);
        }
        // 5. Count the task out (`Running::drop`): the last access to `'scope` data.
        drop(running);
    }
}

impl<F, T> Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    /// Claims the task for this thread (invariant 1).
    fn claim(&self) -> bool {
        // Acquire: the spawner's writes of `f` and `running` happen before (they are also
        // published by the deque, or by moving the handle to the joiner's thread).
        self.state.compare_exchange(PENDING, RUNNING, Acquire, Acquire).is_ok()
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
        let outcome = if self.ctx.get().unwrap_or(&shared.ctx).is_cancelled() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(f))) {
                shared.record_panic(payload);
            }
            Outcome::Skipped
        } else {
            // Acquire, before reading `ctx`: pairs with the handle's Release in `Drop`, so a
            // context the handle made before it went is seen below.
            let orphaned = self.orphaned.load(Acquire);
            let mut local = None;
            let ctx = match self.ctx.get() {
                Some(ctx) => ctx,
                // Nobody can ask for it any more (invariant 3): keep it on this thread ("Orphans").
                None if orphaned => {
                    let fresh = || shared.task_parent().child_for_spawn();
                    &*local.insert(shared.spare_task_context().unwrap_or_else(fresh))
                }
                None => self.ctx.get_or_init(|| shared.task_parent().child_for_spawn()),
            };
            let outer = TASK_OF.with(|c| c.replace(shared));
            let result = {
                let _ambient = ambient::enter(ctx);
                catch_unwind(AssertUnwindSafe(|| f(ctx)))
            };
            TASK_OF.with(|c| c.set(outer));
            if let Some(ctx) = local {
                shared.keep_spare_task_context(ctx);
            }
            // 3. A panic is recorded and cancels the scope.
            match result {
                Ok(value) => Outcome::Returned(value),
                Err(payload) => Outcome::Panicked(shared.panicked(None, payload)),
            }
        };
        // 4. Hand the outcome over.
        // SAFETY: invariant 2: written once, here, before `DONE`; nobody reads it before `DONE`.
        unsafe { *self.outcome.get() = Some(outcome) };
        // Release: publishes the outcome to the handle's Acquire load in `join`.
        self.state.store(DONE, Release);
        // Pairs with the fence in `TaskHandle::join`: either the joiner sees `DONE`, or this
        // thread sees the joiner and unparks it.
        fence(SeqCst);
        if let Some(joiner) = self.joiner.get() {
            joiner.unpark();
        }
        running
    }
}

impl<F: Send, T: Send> Orphan for Task<F, T> {
    fn is_done(&self) -> bool {
        self.state.load(Acquire) == DONE // Acquire: the outcome is dropped after this
    }
}

impl<F, T> Packet<T> for Task<F, T>
where
    F: FnOnce(&Context) -> T + Send,
    T: Send,
{
    fn state(&self) -> &AtomicU8 {
        &self.state
    }

    fn joiner(&self) -> &OnceLock<Thread> {
        &self.joiner
    }

    fn orphan(&self) {
        // Release: publishes a context this handle made (see `execute`).
        self.orphaned.store(true, Release);
    }

    fn ctx(&self, parent: &Context) -> &Context {
        self.ctx.get_or_init(|| parent.child_for_spawn())
    }

    fn skip_cause(&self, scope: &Context) -> Cause {
        self.ctx.get().unwrap_or(scope).cause().unwrap_or(Cause::Cancelled)
    }

    fn run_inline(&self) -> bool {
        if !self.claim() {
            return false;
        }
        // The caller (the handle) holds an `Arc`, so the outcome stays for it to take; the
        // count drops here, on a thread that is the body or itself counted.
        drop(self.execute());
        true
    }

    unsafe fn take_outcome(&self) -> Option<Outcome<T>> {
        // SAFETY: the caller saw `DONE` (Acquire), so the runner's write happened before and it
        // touches the cell no more (invariant 2); the handle is the only reader.
        unsafe { (*self.outcome.get()).take() }
    }
}

// ===== impl TaskHandle =====

impl<T> TaskHandle<'_, T> {
    /// Waits for the task to finish and returns its result. If the task has not started, it
    /// runs here, on the calling thread; if it is running elsewhere, this runs other pending
    /// tasks meanwhile (so joining from a task never deadlocks the pool). The task's completion
    /// synchronizes with this call returning.
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
    pub fn join(mut self) -> Result<T, JoinError> {
        let task = self.task.take().expect("tether: a task handle without its task");
        let shared = self.shared;
        // Acquire: pairs with the runner's Release store of `DONE` (invariant 2).
        let done = || task.state().load(Acquire) == DONE;
        // Still queued: run it here, as a sequential call would (this also keeps the stack of a
        // recursive divide-and-conquer as deep as its recursion, not deeper).
        if !done() && !task.run_inline() {
            let _ = task.joiner().set(std::thread::current());
            // Pairs with the fence in `Task::run` (after `DONE`, before reading `joiner`).
            fence(SeqCst);
            pool::wait_until(done, || std::thread::park_timeout(PARK));
        }
        // SAFETY: `done()` returned true above (Acquire).
        let outcome = unsafe { task.take_outcome() }.expect("tether: a finished task left no outcome");
        match outcome {
            Outcome::Returned(value) => Ok(value),
            Outcome::Panicked(id) => {
                let payload = shared.take_panic(id).expect("tether: a task's panic was taken twice");
                Err(JoinError::new(None, payload))
            }
            Outcome::Skipped => Err(JoinError::skipped(task.skip_cause(&shared.ctx))),
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
        self.task().state().load(Acquire) == DONE // Acquire: as in `join`
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
        self.task().ctx(&self.shared.ctx)
    }

    fn task(&self) -> &(dyn Packet<T> + '_) {
        self.task.as_deref().expect("tether: a task handle without its task")
    }
}

impl<T> Drop for TaskHandle<'_, T> {
    /// Orphans the task if it has not finished ("Orphans" in the module docs).
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        if task.state().load(Acquire) == DONE {
            return; // freed here, or by the runner's last step
        }
        task.orphan();
        let task: Arc<dyn Orphan + '_> = task;
        // SAFETY: erasing `'scope` lets the scope's state (which is not `'scope`-generic) hold
        // the task. It is used only while `'scope` lives: the list is read and dropped only by
        // `Shared::free_orphans`, on threads that hold a `&'scope` handle or `Scope` (so inside
        // `'scope`), and by the scope's join, which frees the whole list after every task is
        // done and before the scope returns (`WaitIdle`); dropping `Shared` itself (which would
        // drop what is left) happens on the owner thread before `scope` returns (`sole_owner`).
        let task: Arc<dyn Orphan> =
            unsafe { std::mem::transmute::<Arc<dyn Orphan + '_>, Arc<dyn Orphan>>(task) };
        self.shared.adopt(task);
    }
}

// ===== impl Shared (task contexts, orphans) =====

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
    /// worker's spare if it is as new; otherwise (or if there is a spare already) drops it.
    fn keep_spare_task_context(&self, ctx: Context) {
        let Some(slot) = self.worker_slot() else { return };
        if ctx.is_pristine() {
            // SAFETY: as in `spare_task_context`; the reference ends within this block, and
            // nothing is dropped through it (the slot is empty when written).
            unsafe {
                let spare = &mut *slot.spare.get();
                if spare.is_none() {
                    *spare = Some(ctx);
                }
            }
        }
    }

    /// Keeps an orphaned task until it is done, sweeping the finished ones once the list has
    /// doubled since the last sweep.
    fn adopt(&self, task: Arc<dyn Orphan>) {
        // Also frees up to FRONT finished ones from the front: tasks finish about in the order
        // they were orphaned, and freeing a few at a time, between the spawner's allocations,
        // keeps the allocator's per-thread cache warm where a big sweep would overflow it.
        const FRONT: usize = 2;
        let mut finished: [Option<Arc<dyn Orphan>>; FRONT] = Default::default();
        let sweep = {
            let mut orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
            orphans.tasks.push_back(task);
            for slot in &mut finished {
                if !orphans.tasks.front().is_some_and(|t| t.is_done()) {
                    break;
                }
                *slot = orphans.tasks.pop_front();
            }
            orphans.tasks.len() >= orphans.sweep_at.max(SWEEP_MIN)
        };
        for task in finished.into_iter().flatten() {
            self.free_orphan(task);
        }
        if sweep {
            self.free_orphans(false);
        }
    }

    /// Drops an orphan, with its result if it returned one; a panic from that is recorded.
    fn free_orphan(&self, task: Arc<dyn Orphan>) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(task))) {
            self.record_panic(payload);
        }
    }

    /// Frees the orphans that are done (all of them if `all`, once every task is done). Their
    /// results are dropped here, with no lock held; a panic from one is recorded in the scope.
    pub(super) fn free_orphans(&self, all: bool) {
        let done: Vec<Arc<dyn Orphan>> = {
            let mut orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
            let done = if all {
                std::mem::take(&mut orphans.tasks).into()
            } else {
                let (done, pending): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut orphans.tasks).into_iter().partition(|t| t.is_done());
                orphans.tasks = pending.into();
                done
            };
            orphans.sweep_at = 2 * orphans.tasks.len();
            done
        };
        for task in done {
            self.free_orphan(task);
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
        live::add(Kind::Tasks, 1);
        Running { shared: NonNull::from(&**shared), slot, late: false }
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
        // SAFETY: `ptr` is the address of the scope's `Arc<Shared>` contents (`start`), which is
        // alive (see `shared`), so its strong count is at least one and may be incremented.
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
        live::add(Kind::Tasks, -1);
        // Last: after this the scope may end (see `Scope::spawn_task_with`), so a reference is
        // taken first, for the decrement's wake-up (and, late, for the worker to report it).
        if self.late {
            pool::finish_late(self.shared.as_ptr().cast_const().cast(), || self.hold());
        } else {
            self.hold().finish_one();
        }
    }
}
