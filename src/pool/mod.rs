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
//! - A worker that finds nothing snoozes briefly ([`Backoff`]) and then sleeps on a condition
//!   variable; pushing a job wakes one sleeper (the sleep protocol below).
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
//!
//! [`Scope::spawn_task`]: crate::Scope::spawn_task
//! [`TaskHandle::join`]: crate::TaskHandle::join

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::Backoff;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

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

/// The pool: the injector, every worker's stealer, and the sleep state.
struct Pool {
    injector: Injector<JobRef>,
    stealers: Box<[Stealer<JobRef>]>,
    /// Sleeping workers not yet claimed by a pusher (invariant 3).
    idle: AtomicUsize,
    sleep: Mutex<Sleep>,
    wake: Condvar,
}

/// Guarded by `Pool::sleep`.
struct Sleep {
    /// Wake-ups sent by pushers and not yet consumed by a sleeper (invariant 3).
    wakes: usize,
}

/// The worker-thread side of a worker: its own deque and its index among the stealers.
struct Local {
    deque: Worker<JobRef>,
    index: usize,
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
    pool.notify();
}

/// This thread's index among the pool's workers, or `None` if it is not a worker.
pub(crate) fn worker_index() -> Option<usize> {
    let local = LOCAL.with(Cell::get);
    // SAFETY: as in `push`.
    (!local.is_null()).then(|| unsafe { &*local }.index)
}

/// Runs `job` on this thread. Nothing escapes: a panic that a job let through (none does, by
/// construction) is recorded as an unhandled panic rather than lost, and never unwinds into a
/// worker's loop or a helping wait.
pub(crate) fn run_job(job: JobRef) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || job.run())) {
        crate::unhandled::record(payload);
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
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            injector: Injector::new(),
            stealers: deques.iter().map(Worker::stealer).collect(),
            idle: AtomicUsize::new(0),
            sleep: Mutex::new(Sleep { wakes: 0 }),
            wake: Condvar::new(),
        }));
        for (index, deque) in deques.into_iter().enumerate() {
            std::thread::Builder::new()
                .name(format!("tether-pool-{index}"))
                .spawn(move || worker_main(pool, Local { deque, index }))
                .expect("tether: failed to start a pool worker");
        }
        pool
    })
}

/// A worker's life: run jobs, sleep when there are none.
fn worker_main(pool: &'static Pool, local: Local) {
    LOCAL.with(|l| l.set(&local));
    // Invariant 5: cleared before `local` goes, whatever way this frame ends.
    scopeguard::defer! {
        let _ = LOCAL.try_with(|l| l.set(std::ptr::null()));
    }
    let backoff = Backoff::new();
    loop {
        match pool.find_job(Some(&local)) {
            Some(job) => {
                MAY_FINISH_LATE.with(|m| m.set(true));
                run_job(job);
                MAY_FINISH_LATE.with(|m| m.set(false));
                backoff.reset();
                continue;
            }
            None => report_late_finishes(),
        }
        if backoff.is_completed() {
            pool.sleep();
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

// ===== impl Pool =====

impl Pool {
    /// Finds a job: the own deque, then the injector, then the other workers (invariant 1).
    fn find_job(&self, local: Option<&Local>) -> Option<JobRef> {
        if let Some(job) = local.and_then(|l| l.deque.pop()) {
            return Some(job);
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
                        self.notify();
                    }
                    return Some(job);
                }
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            let n = self.stealers.len();
            for i in (0..n).map(|k| (start + k) % n) {
                if local.is_some_and(|l| l.index == i) {
                    continue;
                }
                match self.stealers[i].steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Wakes one sleeping worker, if any is sleeping unclaimed (invariants 2 and 3).
    fn notify(&self) {
        // Pairs with the fence in `sleep`: the push before it, the `idle` read after it.
        fence(SeqCst);
        // Relaxed: a fast filter only; the claim below is the read that counts (it is ordered
        // after the fence, and a zero seen here was written before the sleeper's fence).
        if self.idle.load(Relaxed) == 0 {
            return;
        }
        if self.idle.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            let mut sleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            sleep.wakes += 1;
            self.wake.notify_one();
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
