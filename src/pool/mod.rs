//! The shared work-stealing pool that runs scope tasks ([`Scope::spawn_task`]): one per process,
//! started on first use, never shut down.
//!
//! # Configuration
//! The number of workers is, in order of precedence: the last [`configure`] call made before the
//! pool started; else the `TETHER_POOL_THREADS` environment variable (a positive integer), read
//! once when the pool starts; else [`std::thread::available_parallelism`]. [`threads`] says which
//! number applies (and does not start the pool).
//!
//! # The scheduler
//! rayon-core's, reduced to what scope tasks need (design/0003-pool-tasks.md, kept in sync):
//! - Each worker owns a LIFO [`crossbeam_deque::Worker`]; a task spawned on a worker thread goes
//!   there, one spawned elsewhere goes to the global [`Injector`].
//! - A worker looking for a job pops its own deque, then takes a batch from the injector, then
//!   steals (FIFO, the oldest job) from the other workers.
//! - A worker that finds nothing snoozes briefly ([`Backoff`]), yields and looks again a few
//!   dozen times (`IDLE_YIELDS`), and then sleeps on a condition variable; pushing a job wakes
//!   one sleeper (the sleep protocol below).
//! - **Help while waiting, isolated**: a thread waiting for a scope (its exit, `wait_all`, a
//!   spawn waiting for a slot) runs that scope's own pending tasks instead of blocking
//!   (`wait_until` with the scope's helper), whether it is a worker or not, and never another
//!   scope's (`scope/task.rs`, "Helping"). So a task that waits on a nested scope holds its worker
//!   only while the nested scope has tasks running elsewhere, and waits cannot deadlock for want
//!   of workers.
//! - **A job never unwinds** into the pool: `run_job`, which every thread runs jobs through,
//!   catches what a job lets escape (nothing, by construction: a task catches every panic of
//!   user code and of the drops of user data) and records it, so a worker never dies and a
//!   helping wait is never cut short.
//!
//! # Join
//! [`crate::join`] queues its second half as a `StackRef` (a pointer into its frame,
//! `stack_job.rs`) on the worker's second deque, `joins`, pops it back after the first half, or
//! waits for the thief (`wait_join`), running other join halves meanwhile (`help_join`) and
//! never a task: so a join's wait runs no scope's work (the isolation above), and the worker loop
//! steals join halves before tasks. A join from a thread that is not a worker is sent whole as a
//! job (`join.rs`). Design: design/0003-pool-tasks.md, "Join".
//!
//! # Invariants
//! 1. A job is run at most once: a copy of it is in a deque (or the injector) until a pop or a
//!    successful steal takes it out, and only that taker runs it; a scope task also has a copy in
//!    its scope's queue, and whichever copy is taken first claims the task (`scope/task.rs`,
//!    invariant 1), so the other one, taken later, runs nothing.
//! 2. No lost wake-up: a worker sleeps only after announcing itself in `idle` and then seeing
//!    every queue empty; a pusher announces its job (the push) and then reads `idle`. Both sides
//!    put a `SeqCst` fence between their write and their read, so at least one sees the other's
//!    write: either the worker sees the job, or the pusher sees the sleeper and wakes it.
//! 3. `idle` counts sleepers not yet claimed by a pusher; a pusher claims one (decrements `idle`)
//!    before adding a wake-up to `Sleep::wakes`, so one push wakes at most one worker and an idle
//!    pool costs a push one fence and one load.
//! 4. **Late finishes**: a worker may report the finish of the jobs it runs from its own loop
//!    late, in one step (`begin_job`, `finish_late`), so that a run of jobs of one scope
//!    costs that scope's shared count one write instead of one per job. It holds late finishes
//!    of one count at a time, and only while it is running a job of that same count (which is
//!    itself still counted, so the count cannot reach zero meanwhile) or choosing its next job:
//!    it reports them before a job of another count starts and before it snoozes or sleeps.
//!    Jobs run anywhere else (a thread helping while it waits, a joiner running a job inline,
//!    a job nested in another) report their finish at once.
//! 5. `LOCAL` is non-null only while the worker's `Local` is alive: `worker_main` clears it
//!    before its frame ends, also when unwinding, so a thread-local destructor on a worker thread
//!    that spawns a task pushes to the injector instead.
//! 6. No lost wake-up for a join's wait: a worker parks in `join_sleep` only after setting its
//!    `join_sleepers` flag (and counting it in `join_sleeping`), a `SeqCst` fence, and seeing
//!    every other `joins` deque empty and its latch unset; a pusher of a join half that woke no
//!    sleeper of the loop reads `join_sleeping` after its own fence and claims one flag with a
//!    `swap` before unparking that worker. Its latch's setter unparks it too (`stack_job.rs`).
//!    The park's 10 ms bound is a backstop only.
//!
//! [`Scope::spawn_task`]: crate::Scope::spawn_task
//! [`TaskHandle::join`]: crate::TaskHandle::join

mod stack_job;

pub(crate) use stack_job::{Latch, Owner, Payload, StackJob, StackRef};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::Backoff;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::Thread;

/// A unit of work on the pool: a scope task, type-erased.
pub(crate) trait Job: Send + Sync {
    /// Runs the job, unless another copy of it was claimed already. Does not unwind: the task
    /// catches the panics of the user code it runs and drops (`run_job` is the backstop).
    fn run(self: Arc<Self>);
    /// Whether a thread has claimed the job: this copy is then stale, and dropping it runs no
    /// user code.
    fn is_claimed(&self) -> bool;
    /// What a dump reads of the job, if it is a scope's child (`scope/observe.rs`).
    fn observe(&self) -> Option<crate::scope::observe::RawChild>;
}

/// A queued job. `'static` only by erasure: see `task.rs`, `Scope::spawn_task_with`.
pub(crate) type JobRef = Arc<dyn Job>;

/// The pool: the injector, every worker's stealers and thread, and the sleep state.
struct Pool {
    injector: Injector<JobRef>,
    stealers: Box<[Stealer<JobRef>]>,
    /// The stealers of the workers' `joins` deques (join halves, see "Join" above).
    join_stealers: Box<[Stealer<StackRef>]>,
    /// Each worker's thread, set by the worker itself before it runs any job: what a thief
    /// unparks when it finishes a stolen join half of that worker (`stack_job.rs`, invariant 3).
    threads: Box<[OnceLock<Thread>]>,
    /// Per worker: parked while it waits for a stolen join half, and not yet claimed by a
    /// pusher to be woken for a new one (invariant 6).
    join_sleepers: Box<[AtomicBool]>,
    /// How many `join_sleepers` are set: a pusher's fast filter.
    join_sleeping: AtomicUsize,
    /// Sleeping workers not yet claimed by a pusher (invariant 3).
    idle: AtomicUsize,
    /// The machine's cores, as [`std::thread::available_parallelism`] said when the pool started.
    cores: usize,
    sleep: Mutex<Sleep>,
    wake: Condvar,
}

/// Guarded by `Pool::sleep`.
struct Sleep {
    /// Wake-ups sent by pushers and not yet consumed by a sleeper (invariant 3).
    wakes: usize,
}

/// The worker-thread side of a worker: its own deques and its index among the stealers.
struct Local {
    deque: Worker<JobRef>,
    /// The second halves of the joins this worker is in, innermost on top ("Join" above).
    joins: Worker<StackRef>,
    index: usize,
}

/// A job a worker found: a task (or a `join` sent from outside the pool), or a join half.
enum Found {
    Job(JobRef),
    Join(StackRef),
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();
/// The thread count set by [`configure`]; 0 when not configured.
static CONFIGURED: AtomicUsize = AtomicUsize::new(0);

/// A count of running jobs (a scope's), to which a worker reports finishes late (invariant 4).
pub(crate) trait FinishCount: Send + Sync {
    /// Counts `n` finished jobs out.
    fn finish(&self, n: usize);
}

/// The finishes a worker has not reported yet (invariant 4): `n` jobs of `count`.
struct Late {
    count: Option<Arc<dyn FinishCount>>,
    n: usize,
}

thread_local! {
    /// This thread's worker state, if it is a pool worker (null otherwise). Points into the
    /// worker's own stack frame (`worker_main`), which outlives every use on that thread.
    static LOCAL: Cell<*const Local> = const { Cell::new(std::ptr::null()) };
    /// Set by a worker's loop just before it runs a job; taken by the first [`begin_job`] of
    /// that run, so that nested jobs cannot finish late (invariant 4).
    static MAY_FINISH_LATE: Cell<bool> = const { Cell::new(false) };
    /// This worker's late finishes (invariant 4); always empty on other threads.
    static LATE: RefCell<Late> = const { RefCell::new(Late { count: None, n: 0 }) };
}

/// [`configure`] was called after the pool had started: the worker count is fixed.
///
/// # Examples
///
/// ```
/// tether::scope(|s| s.spawn_task(|_| ()).join().unwrap()).unwrap(); // starts the pool
/// let err = tether::pool::configure(3).unwrap_err();
/// assert_eq!(err.to_string(), "the task pool has already started");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyStarted;

impl fmt::Display for AlreadyStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task pool has already started")
    }
}

impl std::error::Error for AlreadyStarted {}

/// Sets the number of pool workers. Must be called before the first task is spawned (typically
/// at the start of `main`); takes precedence over `TETHER_POOL_THREADS`.
///
/// # Errors
///
/// [`AlreadyStarted`] when the pool is already running; the call then changes nothing.
///
/// # Panics
///
/// If `threads` is zero.
///
/// # Examples
///
/// ```
/// // In a fresh process, before any task:
/// if tether::pool::configure(2).is_ok() {
///     assert_eq!(tether::pool::threads(), 2);
/// }
/// ```
pub fn configure(threads: usize) -> Result<(), AlreadyStarted> {
    assert!(threads > 0, "tether: the task pool needs at least one thread");
    if POOL.get().is_some() {
        return Err(AlreadyStarted);
    }
    // Relaxed: read by `start` through the `OnceLock` initialization, on whichever thread starts
    // the pool; a `configure` racing with the first spawn may or may not apply (documented).
    CONFIGURED.store(threads, Relaxed);
    Ok(())
}

/// The number of workers the pool has, or will have when it starts (see the module docs).
///
/// # Examples
///
/// ```
/// assert!(tether::pool::threads() >= 1);
/// ```
pub fn threads() -> usize {
    match POOL.get() {
        Some(pool) => pool.stealers.len(),
        None => wanted_threads(),
    }
}

fn wanted_threads() -> usize {
    let configured = CONFIGURED.load(Relaxed); // Relaxed: see `configure`
    if configured > 0 {
        return configured;
    }
    let from_env = std::env::var("TETHER_POOL_THREADS").ok().and_then(|v| v.trim().parse().ok());
    match from_env {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Whether a worker is asleep in its loop, not yet woken by a pusher: a job queued now will be
/// taken. A hint (it may change at once), for a join sent from outside the pool (`join.rs`).
pub(crate) fn has_idle_worker() -> bool {
    // Relaxed: a hint; the sender re-reads it on every round of its wait.
    pool().idle.load(Relaxed) > 0
}

/// Whether the machine has a core that no pool worker is meant to occupy: the pool has fewer
/// workers than [`std::thread::available_parallelism`] says there are cores. A thread that is not
/// a worker then takes part in a join it calls rather than sleeping through it (`join.rs`).
/// Starts the pool.
pub(crate) fn has_spare_core() -> bool {
    let pool = pool();
    pool.stealers.len() < pool.cores
}

/// Runs one join half of some worker's (its oldest) on this thread, which is not a worker and
/// waits for a join half of its own that a worker took; whether it ran one. As a worker's join
/// wait does ([`help_join`]), it runs join halves only, never a task.
pub(crate) fn help_join_outside() -> bool {
    let half = loop {
        match pool().steal_join(None) {
            Steal::Success(half) => break half,
            Steal::Empty => return false,
            Steal::Retry => {}
        }
    };
    half.execute();
    true
}

/// Whether the pool has started (some task was spawned).
pub(crate) fn started() -> bool {
    POOL.get().is_some()
}

/// Queues `job`: on this worker's own deque, or on the injector from any other thread. Starts
/// the pool on first use.
pub(crate) fn push(job: JobRef) {
    let pool = pool();
    let local = LOCAL.with(Cell::get);
    if local.is_null() {
        pool.injector.push(job);
    } else {
        // SAFETY: non-null only on a worker thread, pointing to its `Local` in `worker_main`'s
        // frame, which is live while it is non-null (invariant 5).
        unsafe { &*local }.deque.push(job);
    }
    let _ = pool.notify();
}

/// This thread's index among the pool's workers, or `None` if it is not a worker.
pub(crate) fn worker_index() -> Option<usize> {
    let local = LOCAL.with(Cell::get);
    // SAFETY: as in `push`.
    (!local.is_null()).then(|| unsafe { &*local }.index)
}

/// Calls `f` with this thread's worker state, if it is a pool worker.
fn with_local<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    let local = LOCAL.with(Cell::get);
    // SAFETY: as in `push`.
    (!local.is_null()).then(|| f(unsafe { &*local }))
}

/// Queues the second half of a join on this worker's `joins` deque, for a thief; `false` (and
/// nothing queued) if this thread is not a pool worker.
pub(crate) fn push_join(half: StackRef) -> bool {
    let pushed = with_local(|local| local.joins.push(half)).is_some();
    if pushed {
        let pool = pool();
        if !pool.notify() {
            pool.notify_join_sleeper();
        }
    }
    pushed
}

/// Takes back the most recently queued join half of this worker, if no thief took it: the
/// one its innermost join queued (see "Join" above).
pub(crate) fn pop_join() -> Option<StackRef> {
    with_local(|local| local.joins.pop()).flatten()
}

/// Runs one join half while this worker waits for its own stolen half: its own newest (queued
/// by the halves it ran meanwhile), else another worker's oldest. Whether it ran one. Runs no
/// task ("Join" above: a join wait runs join halves only).
pub(crate) fn help_join() -> bool {
    let Some(half) = with_local(|local| {
        local.joins.pop().or_else(|| {
            loop {
                match pool().steal_join(Some(local.index)) {
                    Steal::Success(half) => break Some(half),
                    Steal::Empty => break None,
                    Steal::Retry => {}
                }
            }
        })
    })
    .flatten() else {
        return false;
    };
    half.execute();
    true
}

/// The longest a worker waiting for a stolen join half parks before it looks for work again:
/// a backstop only, since both the half's latch and a new join half wake it (invariant 6).
const JOIN_PARK: std::time::Duration = std::time::Duration::from_millis(10);

/// Blocks this worker until `latch` is set (its stolen join half is done), running other join
/// halves meanwhile ([`help_join`]); with none to run it snoozes, then parks until the latch is
/// set or another worker queues a join half (invariant 6).
pub(crate) fn wait_join(latch: &Latch) {
    let pool = pool();
    let index = worker_index().expect("tether: wait_join runs on a worker");
    let mut idle = Idle::new();
    while !latch.probe() {
        if help_join() {
            idle.reset();
        } else if !idle.snooze() && latch.announce_sleep() {
            pool.join_sleep(index, latch);
            latch.end_sleep();
            idle.reset();
        }
    }
}

/// How many times a worker that has found nothing to run yields its core and looks again before
/// it sleeps (after [`Backoff`]'s spins): rayon's 32 rounds. A sleeping worker costs the thread
/// that next queues work a wake-up (a lock and a futex call, on that thread's critical path) and
/// itself the kernel's wake-up latency, and in a divide-and-conquer the idle spells between
/// steals are short: about 30 µs of yielding covers most of them. A yield with no other thread
/// waiting for the core returns at once, and with one waiting it hands the core over, so the
/// spinning takes no core from work.
const IDLE_YIELDS: u32 = 32;

/// The spinning of a worker that has found nothing to run, before it sleeps: [`Backoff`]'s, then
/// [`IDLE_YIELDS`] yields.
struct Idle {
    backoff: Backoff,
    yields: u32,
}

impl Idle {
    fn new() -> Self {
        Idle { backoff: Backoff::new(), yields: 0 }
    }

    /// After running something: spin from the start next time.
    fn reset(&mut self) {
        self.backoff.reset();
        self.yields = 0;
    }

    /// Waits one round; `false`, without waiting, once the rounds are spent: time to sleep.
    fn snooze(&mut self) -> bool {
        if !self.backoff.is_completed() {
            self.backoff.snooze();
        } else if self.yields < IDLE_YIELDS {
            self.yields += 1;
            std::thread::yield_now();
        } else {
            return false;
        }
        true
    }
}

/// Wakes worker `index`, parked while it waits for a stolen join half (`stack_job.rs`).
fn unpark_worker(index: usize) {
    if let Some(thread) = pool().threads[index].get() {
        thread.unpark();
    }
}

/// The index of this thread among the workers, as a latch's [`Owner`], if it is a worker.
pub(crate) fn worker_owner() -> Option<Owner> {
    worker_index().map(Owner::Worker)
}

/// Runs `job` on this thread. Nothing escapes: a panic that a job let through (none does, by
/// construction) is recorded as an unhandled panic rather than lost, and never unwinds into a
/// worker's loop or a helping wait.
pub(crate) fn run_job(job: JobRef) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || job.run())) {
        crate::unhandled::record(payload);
    }
}

/// Called by a job that is not a scope's task (a join sent from outside the pool) as it starts:
/// it finishes in no count, so the worker reports its late finishes first, and a task nested in
/// it reports its own finish at once (invariant 4).
pub(crate) fn begin_untracked_job() {
    if MAY_FINISH_LATE.with(|m| m.replace(false)) {
        report_late_finishes();
    }
}

/// Called by a job as it starts, with the address of the count it will finish in. Returns
/// whether it may report that finish late ([`finish_late`]): only the job a worker's loop runs,
/// not one nested in it. If so, first reports the late finishes of any other count
/// (invariant 4).
pub(crate) fn begin_job(count: *const ()) -> bool {
    if !MAY_FINISH_LATE.with(|m| m.replace(false)) {
        return false;
    }
    if holds_other_count(count) {
        report_late_finishes();
    }
    true
}

/// Records the finish of a job that [`begin_job`] allowed to finish late, in `count` (whose
/// address it was given); `hold` makes the reference this worker keeps until it reports them.
pub(crate) fn finish_late(count: *const (), hold: impl FnOnce() -> Arc<dyn FinishCount>) {
    if holds_other_count(count) {
        // Unreachable while `begin_job` reports on a change of count; kept so that a slip could
        // never report one count's finishes to another.
        report_late_finishes();
    }
    LATE.with_borrow_mut(|late| {
        if late.count.is_none() {
            late.count = Some(hold());
        }
        late.n += 1;
    });
}

/// Whether this worker holds late finishes of a count other than the one at `count`.
fn holds_other_count(count: *const ()) -> bool {
    LATE.with_borrow(|late| {
        late.count.as_ref().is_some_and(|held| !std::ptr::eq(Arc::as_ptr(held).cast::<()>(), count))
    })
}

/// Reports this worker's late finishes, if any (invariant 4).
fn report_late_finishes() {
    let (count, n) = LATE.with_borrow_mut(|late| (late.count.take(), std::mem::take(&mut late.n)));
    if let Some(count) = count {
        // Outside the borrow: the report may wake a waiter, which runs no code of ours here.
        count.finish(n);
    }
}

/// Blocks until `done()`, running jobs meanwhile with `help` (which runs one job the waiter
/// waits for, if there is one, and says whether it did). When there is none it snoozes, then
/// calls `park`, which must return after a bounded time (so that jobs queued meanwhile get
/// helped) or when `done()` may have become true.
pub(crate) fn wait_until(done: impl Fn() -> bool, help: impl Fn() -> bool, park: impl Fn()) {
    let backoff = Backoff::new();
    while !done() {
        if help() {
            backoff.reset();
        } else if backoff.is_completed() {
            park();
        } else {
            backoff.snooze();
        }
    }
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = wanted_threads();
        let deques: Vec<Worker<JobRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let joins: Vec<Worker<StackRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            injector: Injector::new(),
            stealers: deques.iter().map(Worker::stealer).collect(),
            join_stealers: joins.iter().map(Worker::stealer).collect(),
            threads: (0..n).map(|_| OnceLock::new()).collect(),
            join_sleepers: (0..n).map(|_| AtomicBool::new(false)).collect(),
            join_sleeping: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sleep: Mutex::new(Sleep { wakes: 0 }),
            wake: Condvar::new(),
        }));
        for (index, (deque, joins)) in deques.into_iter().zip(joins).enumerate() {
            std::thread::Builder::new()
                .name(format!("tether-pool-{index}"))
                .spawn(move || worker_main(pool, Local { deque, joins, index }))
                .expect("tether: failed to start a pool worker");
        }
        pool
    })
}

/// A worker's life: run jobs, sleep when there are none.
fn worker_main(pool: &'static Pool, local: Local) {
    let _ = pool.threads[local.index].set(std::thread::current());
    LOCAL.with(|l| l.set(&local));
    // Invariant 5: cleared before `local` goes, whatever way this frame ends.
    scopeguard::defer! {
        let _ = LOCAL.try_with(|l| l.set(std::ptr::null()));
    }
    let mut idle = Idle::new();
    loop {
        match pool.find_job(Some(&local)) {
            Some(Found::Job(job)) => {
                MAY_FINISH_LATE.with(|m| m.set(true));
                run_job(job);
                MAY_FINISH_LATE.with(|m| m.set(false));
                idle.reset();
                continue;
            }
            Some(Found::Join(half)) => {
                // Not a job of any scope's count (invariant 4): report before it runs.
                report_late_finishes();
                half.execute();
                idle.reset();
                continue;
            }
            None => report_late_finishes(),
        }
        if !idle.snooze() {
            pool.sleep();
            idle.reset();
        }
    }
}

// ===== impl Pool =====

impl Pool {
    /// Finds a job: the own deque, then the injector, then the other workers' join halves and
    /// then their jobs (invariant 1). The own `joins` deque is empty here: a worker's loop runs
    /// only when no join of its own is under way.
    fn find_job(&self, local: Option<&Local>) -> Option<Found> {
        if let Some(job) = local.and_then(|l| l.deque.pop()) {
            return Some(Found::Job(job));
        }
        let start = local.map_or(0, |l| l.index + 1);
        loop {
            let mut retry = false;
            let from_injector = match local {
                Some(l) => self.injector.steal_batch_and_pop(&l.deque),
                None => self.injector.steal(),
            };
            match from_injector {
                Steal::Success(job) => {
                    if local.is_some_and(|l| !l.deque.is_empty()) {
                        // The batch now sits in this deque, which no push announced: wake a
                        // sleeper to steal from it, or it could wait behind this job.
                        let _ = self.notify();
                    }
                    return Some(Found::Job(job));
                }
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            match self.steal_join(local.map(|l| l.index)) {
                Steal::Success(half) => return Some(Found::Join(half)),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            let n = self.stealers.len();
            for i in (0..n).map(|k| (start + k) % n) {
                if local.is_some_and(|l| l.index == i) {
                    continue;
                }
                match self.stealers[i].steal() {
                    Steal::Success(job) => return Some(Found::Job(job)),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// Steals the oldest join half of another worker than `own` (the first worker after `own`
    /// that has one).
    fn steal_join(&self, own: Option<usize>) -> Steal<StackRef> {
        let n = self.join_stealers.len();
        let start = own.map_or(0, |i| i + 1);
        let mut retry = false;
        for i in (0..n).map(|k| (start + k) % n) {
            if own == Some(i) {
                continue;
            }
            match self.join_stealers[i].steal() {
                Steal::Success(half) => return Steal::Success(half),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
        }
        if retry { Steal::Retry } else { Steal::Empty }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty()
            || self.stealers.iter().any(|s| !s.is_empty())
            || self.join_stealers.iter().any(|s| !s.is_empty())
    }

    /// Wakes one sleeping worker, if any is sleeping unclaimed (invariants 2 and 3); whether
    /// it woke one.
    fn notify(&self) -> bool {
        // Pairs with the fence in `sleep` (and in `join_sleep`): the push before it, the `idle`
        // (and `join_sleeping`) read after it.
        fence(SeqCst);
        // Relaxed: a fast filter only; the claim below is the read that counts (it is ordered
        // after the fence, and a zero seen here was written before the sleeper's fence).
        if self.idle.load(Relaxed) == 0 {
            return false;
        }
        if self.idle.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            let mut sleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            sleep.wakes += 1;
            self.wake.notify_one();
            return true;
        }
        false
    }

    /// Parks worker `index`, which waits for `latch` (announced as sleeping on it), until the
    /// latch's setter or a pusher of a join half unparks it, unless a join half is already
    /// queued elsewhere (invariant 6); [`JOIN_PARK`] at most.
    fn join_sleep(&self, index: usize, latch: &Latch) {
        self.join_sleepers[index].store(true, SeqCst);
        self.join_sleeping.fetch_add(1, SeqCst);
        // Pairs with the fence in `notify`: the announcement before it, the deques' reads after.
        fence(SeqCst);
        let stealable = self.join_stealers.iter().enumerate().any(|(i, s)| i != index && !s.is_empty());
        if !stealable && !latch.probe() {
            crate::loom::park_backstop(JOIN_PARK);
        }
        // Take the announcement back, unless a pusher claimed it (and took its count) already.
        if self.join_sleepers[index].swap(false, SeqCst) {
            self.join_sleeping.fetch_sub(1, SeqCst);
        }
    }

    /// Wakes one worker parked in [`Pool::join_sleep`], if any (invariant 6): the pusher's side,
    /// after its fence.
    fn notify_join_sleeper(&self) {
        if self.join_sleeping.load(SeqCst) == 0 {
            return;
        }
        for (i, sleeper) in self.join_sleepers.iter().enumerate() {
            if sleeper.swap(false, SeqCst) {
                self.join_sleeping.fetch_sub(1, SeqCst);
                unpark_worker(i);
                return;
            }
        }
    }

    /// Sleeps until a pusher wakes this worker, unless a job is already queued (invariant 2).
    fn sleep(&self) {
        let mut sleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        self.idle.fetch_add(1, SeqCst);
        // Pairs with the fence in `notify`: the `idle` increment before it, the queue reads after.
        fence(SeqCst);
        if self.has_work() {
            // Take back the announcement, unless a pusher has claimed it already: its wake-up
            // then stays in `wakes` and costs some later sleeper one extra loop.
            let _ = self.idle.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
            return;
        }
        // The lock is held from the announcement until `wait` releases it, so a claiming pusher's
        // notification (sent under the lock) cannot come before this thread waits.
        while sleep.wakes == 0 {
            sleep = self.wake.wait(sleep).unwrap_or_else(PoisonError::into_inner);
        }
        sleep.wakes -= 1;
    }
}
