//! [`join`] and [`try_join`]: run two closures, potentially in parallel, with the semantics of a
//! scope of two pool tasks (a child context, the first failure or panic cancels the other, both
//! finish before the call returns, nothing is lost), at the cost of rayon's `join`: no
//! allocation for the halves, the second half queued as a pointer into this frame for a thief,
//! and taken back and run here when nobody stole it. The engine (the stack job, its latch, the
//! `joins` deques) is in `pool/stack_job.rs` and `pool/mod.rs`. Design: design/0003-pool-tasks.md,
//! "Join".
//!
//! # Where a join runs
//! - On a pool worker (a task, or a half of another join): here. `b` is queued on the worker's
//!   `joins` deque, `a` runs, then `b` is popped back and run here, or, if a thief took it, the
//!   worker waits for it, running other join halves meanwhile (never a scope's task).
//! - On any other thread, when the pool has fewer workers than the machine has cores
//!   (`pool::has_spare_core`): this thread takes part, as a worker would, on the core no worker
//!   occupies. `b` is sent to the pool as a job, `a` runs here, then `b` is claimed back and run
//!   here, or, if a worker took it, waited for, running other join halves meanwhile.
//! - On any other thread otherwise: the whole join is sent to the pool as one job and this
//!   thread sleeps until it is done (it does not compete with the workers for the cores). If no
//!   worker has taken the job within [`CLAIM_AFTER`] and none is idle (every worker busy or
//!   blocked), this thread takes it back and runs the halves itself, one after the other, so a
//!   join never waits for want of workers.
//!
//! # Invariants
//! 1. Both halves have returned or unwound (or `b` was dropped unrun) before the call returns or
//!    unwinds: the frame that holds `b`'s stack job and the context they borrow outlives them
//!    (`stack_job.rs`, invariant 2). Every user panic is caught inside the half.
//! 2. `b` is skipped (dropped without being called) only when `a` panicked or failed before
//!    `b` started; `a` always runs.
//! 3. Every panic is kept: `a`'s (else `b`'s) is resumed by the call, any other goes to
//!    [`crate::testing::take_unhandled_panics`]; a panic takes precedence over errors.

use crate::ambient;
use crate::cancel::{Canceller, Cause, PanicSummary, SharedError};
use crate::context::Context;
use crate::pool::{self, Job, JobRef, Owner, Payload, StackJob};
use crate::scope::ScopeError;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a thread outside the pool lets a join it sent wait for a worker before it runs the
/// join itself (module docs).
const CLAIM_AFTER: Duration = Duration::from_millis(1);
/// The longest park of such a thread while no worker has taken its join yet.
const UNCLAIMED_PARK_MAX: Duration = Duration::from_millis(1);
/// Its park once a worker has the join: a backstop only, as the latch's setter unparks it.
const CLAIMED_PARK: Duration = Duration::from_millis(100);

/// Runs `a` and `b`, potentially in parallel, and returns both results: Go's two goroutines and
/// a `WaitGroup`, or rayon's `join`, with the semantics of a scope of two tasks.
///
/// - Both halves get the join's context: one new child of the ambient context ([`current`]),
///   ambient while they run, so a `join` inside a half is a child of it. Cancelling the ambient
///   context (a scope's exit, a deadline) reaches both; cancelling the join's context from a
///   half stops the other half too.
/// - A panic in one half cancels the join's context with [`Cause::Panicked`], so the other half
///   sees it (if it has not started, it is skipped); once both are done, the panic is resumed
///   with its original payload (`a`'s, if both panicked; the other one goes to
///   [`take_unhandled_panics`](crate::testing::take_unhandled_panics)).
/// - Neither half outlives the call: when it returns (or unwinds), both have finished.
///
/// On a pool worker (inside a task or another join), `b` is offered to the other workers and
/// taken back if none took it, as `rayon::join` does; no allocation is made for the halves. On
/// any other thread, the join is sent to the pool and the calling thread sleeps until it is done,
/// unless the pool has fewer workers than the machine has cores: the calling thread then runs
/// `a` itself, on the spare core, and `b` too unless a worker took it first.
///
/// [`current`]: crate::current
///
/// # Panics
///
/// Resumes a half's panic, after both have finished.
///
/// # Examples
///
/// ```
/// fn fib(n: u64) -> u64 {
///     if n < 15 {
///         return if n < 2 { n } else { fib(n - 1) + fib(n - 2) };
///     }
///     let (a, b) = tether::join(|_| fib(n - 1), |_| fib(n - 2));
///     a + b
/// }
/// assert_eq!(fib(25), 75_025);
/// ```
///
/// The first panic cancels the other half:
///
/// ```
/// use tether::{Canceller, Cause};
///
/// let result = std::panic::catch_unwind(|| {
///     tether::join(|_| panic!("boom"), |ctx| ctx.is_cancelled())
/// });
/// assert_eq!(*result.unwrap_err().downcast::<&str>().unwrap(), "boom");
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce(&Context) -> RA + Send,
    B: FnOnce(&Context) -> RB + Send,
    RA: Send,
    RB: Send,
{
    let ctx = ambient::child_of_current();
    let (ra, rb) = run(&ctx, a, b, |_| false);
    let mut panics = Panics::default();
    let ra = panics.keep(ra);
    let rb = rb.and_then(|rb| panics.keep(rb));
    panics.drop_caught(ctx);
    panics.resume_first();
    match (ra, rb) {
        (Some(ra), Some(rb)) => (ra, rb),
        _ => unreachable!("tether: a join half neither returned nor panicked"),
    }
}

/// [`join`] for fallible halves: the first `Err` cancels the join's context with
/// [`Cause::ChildFailed`] (the other half sees it; if it has not started, it is skipped) and
/// the call returns a [`ScopeError`] holding it, and the other half's error too if it also
/// failed, in the order they happened. A panic takes precedence over errors and is resumed as
/// by [`join`].
///
/// # Errors
///
/// [`ScopeError`] when either half returned `Err`.
///
/// # Examples
///
/// ```
/// use tether::{Canceller, Cause};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("shard {0} unavailable")]
/// struct Unavailable(u32);
///
/// let err = tether::try_join(
///     |_| Err::<(), _>(Unavailable(1)),
///     |ctx| if ctx.is_cancelled() { Err(Unavailable(2)) } else { Ok(()) },
/// )
/// .unwrap_err();
/// assert_eq!(err.downcast_ref::<Unavailable>().unwrap().0, 1, "the first failure comes first");
///
/// assert_eq!(tether::try_join(|_| Ok::<_, Unavailable>(1), |_| Ok(2)).unwrap(), (1, 2));
/// ```
pub fn try_join<A, B, RA, RB, E>(a: A, b: B) -> Result<(RA, RB), ScopeError>
where
    A: FnOnce(&Context) -> Result<RA, E> + Send,
    B: FnOnce(&Context) -> Result<RB, E> + Send,
    RA: Send,
    RB: Send,
    E: std::error::Error + Send + Sync + 'static,
{
    let ctx = ambient::child_of_current();
    let (ra, rb) = run(&ctx, |c| fail_on_err(c, a(c)), |c| fail_on_err(c, b(c)), Result::is_err);
    let mut panics = Panics::default();
    let ra = panics.keep(ra);
    let rb = rb.and_then(|rb| panics.keep(rb));
    let cause = ctx.cause();
    panics.drop_caught(ctx);
    panics.resume_first();
    match (ra, rb) {
        (Some(Ok(ra)), Some(Ok(rb))) => Ok((ra, rb)),
        (ra, rb) => {
            let mut errors: Vec<SharedError> =
                [ra.and_then(Result::err), rb.and_then(Result::err)].into_iter().flatten().collect();
            // The one that cancelled the join first (its cause), then the other.
            if let Some(Cause::ChildFailed(first)) = cause {
                errors.sort_by_key(|e| !Arc::ptr_eq(e, &first));
            }
            Err(ScopeError::from_errors(errors).expect("tether: a failed join has an error"))
        }
    }
}

/// A half's `Err`, shared and cancelling the join's context with [`Cause::ChildFailed`].
fn fail_on_err<R, E>(ctx: &Context, result: Result<R, E>) -> Result<R, SharedError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.map_err(|e| {
        let shared: SharedError = Arc::new(e);
        cancel_caught(ctx, Cause::ChildFailed(shared.clone()));
        shared
    })
}

/// The panics of a join: `a`'s, then `b`'s, then the context's drop's (invariant 3).
#[derive(Default)]
struct Panics(Vec<Payload>);

impl Panics {
    /// The value, or `None` after keeping its panic.
    fn keep<R>(&mut self, result: std::thread::Result<R>) -> Option<R> {
        result.map_err(|payload| self.0.push(payload)).ok()
    }

    /// Drops `value`, keeping its panic.
    fn drop_caught<T>(&mut self, value: T) {
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(value)));
        self.keep(dropped);
    }

    /// Resumes the first panic, if any, after recording the others (invariant 3).
    fn resume_first(self) {
        let mut panics = self.0.into_iter();
        if let Some(first) = panics.next() {
            panics.for_each(crate::unhandled::record);
            resume_unwind(first);
        }
    }
}

/// Runs both halves under `ctx` (on this worker, or sent to the pool from another thread) and
/// returns what each left: a value, a panic, or (for `b`) nothing when it was skipped because
/// `a` panicked or `failed` (invariant 2).
fn run<A, B, RA, RB>(
    ctx: &Context,
    a: A,
    b: B,
    failed: fn(&RA) -> bool,
) -> (std::thread::Result<RA>, Option<std::thread::Result<RB>>)
where
    A: FnOnce(&Context) -> RA + Send,
    B: FnOnce(&Context) -> RB + Send,
    RA: Send,
    RB: Send,
{
    match pool::worker_owner() {
        Some(owner) => fork(ctx, a, b, failed, owner),
        None if pool::has_spare_core() => fork_outside(ctx, a, b, failed),
        None => send_to_pool(move || halves_here(ctx, a, b, failed)),
    }
}

type Halves<RA, RB> = (std::thread::Result<RA>, Option<std::thread::Result<RB>>);

/// On a worker: `b` queued for thieves, `a` here, `b` back here or waited for.
fn fork<A, B, RA, RB>(ctx: &Context, a: A, b: B, failed: fn(&RA) -> bool, owner: Owner) -> Halves<RA, RB>
where
    A: FnOnce(&Context) -> RA + Send,
    B: FnOnce(&Context) -> RB + Send,
    RA: Send,
    RB: Send,
{
    let job = StackJob::new(move || half(ctx, b), owner);
    // From the push until `b` is back or done, a thief may hold a pointer into this frame: it
    // must not unwind meanwhile (invariant 1). Nothing below unwinds (the halves are caught);
    // should a bug make it, abort rather than free the job under the thief.
    let abort = scopeguard::guard((), |()| {
        eprintln!("tether: a join unwound while its second half could still run elsewhere");
        std::process::abort();
    });
    let queued = pool::push_join(job.stack_ref());
    debug_assert!(queued, "fork runs on a worker");
    let ra = half(ctx, a);
    let skip_b = ra.as_ref().map_or(true, failed);
    match pool::pop_join() {
        Some(back) => {
            // After `a` returned, everything `a` queued was taken back or finished, so the top
            // of this deque is `b`, unless a thief took it (and with it everything older).
            if !back.is(&job) {
                // Not `b`: a broken invariant, and someone's half now lost; `abort` fires.
                panic!("tether: a join took back another join's half");
            }
            scopeguard::ScopeGuard::into_inner(abort);
            if skip_b {
                let dropped = catch_unwind(AssertUnwindSafe(|| drop(job.into_closure())));
                (ra, dropped.err().map(Err))
            } else {
                (ra, Some(job.run_inline().and_then(|rb| rb)))
            }
        }
        None => {
            // Stolen: the thief runs it to the end, skipped or not; wait, helping (invariant 1).
            pool::wait_join(&job.latch);
            scopeguard::ScopeGuard::into_inner(abort);
            (ra, Some(job.into_result().and_then(|rb| rb)))
        }
    }
}

/// Not on a worker (only after [`send_to_pool`] gave up waiting): `a`, then `b` here.
fn halves_here<A, B, RA, RB>(ctx: &Context, a: A, b: B, failed: fn(&RA) -> bool) -> Halves<RA, RB>
where
    A: FnOnce(&Context) -> RA + Send,
    B: FnOnce(&Context) -> RB + Send,
    RA: Send,
    RB: Send,
{
    if let Some(owner) = pool::worker_owner() {
        return fork(ctx, a, b, failed, owner);
    }
    let ra = half(ctx, a);
    if ra.as_ref().map_or(true, failed) {
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(b)));
        return (ra, dropped.err().map(Err));
    }
    (ra, Some(half(ctx, b)))
}

/// Not on a worker, with a core no worker is meant to occupy (`pool::has_spare_core`): `b` is
/// sent to the pool, `a` runs here, then `b` is claimed back and run (or skipped) here, or, if a
/// worker took it, waited for, running other join halves meanwhile (never a task).
fn fork_outside<A, B, RA, RB>(ctx: &Context, a: A, b: B, failed: fn(&RA) -> bool) -> Halves<RA, RB>
where
    A: FnOnce(&Context) -> RA + Send,
    B: FnOnce(&Context) -> RB + Send,
    RA: Send,
    RB: Send,
{
    let job = SentJoin::new(move || half(ctx, b));
    push_sent(&job);
    let ra = half(ctx, a);
    if ra.as_ref().map_or(true, failed) {
        if let Some(b) = job.claim() {
            let dropped = catch_unwind(AssertUnwindSafe(|| drop(b)));
            return (ra, dropped.err().map(Err));
        }
    } else {
        // Runs `b` here (setting the latch) unless a worker has claimed it; that worker runs it
        // to the end, skipped or not, as a thief does in `fork`.
        job.claim_and_run();
    }
    wait_for_half(&job);
    (ra, Some(job.take_result().and_then(|rb| rb)))
}

/// Sleeps until the worker that took `job` (a join half, from [`fork_outside`]) has run it,
/// running other join halves meanwhile.
fn wait_for_half<F: FnOnce() -> R + Send, R: Send>(job: &SentJoin<F, R>) {
    let backoff = crossbeam_utils::Backoff::new();
    while !job.latch.probe() {
        if pool::help_join_outside() {
            backoff.reset();
        } else if !backoff.is_completed() {
            backoff.snooze();
        } else if job.latch.announce_sleep() {
            crate::loom::park_backstop(CLAIMED_PARK);
            job.latch.end_sleep();
        }
    }
}

/// Runs one half with `ctx` ambient; a panic cancels `ctx` with [`Cause::Panicked`] at once, on
/// this thread, so the other half sees it while it still runs.
fn half<R>(ctx: &Context, f: impl FnOnce(&Context) -> R) -> std::thread::Result<R> {
    let result = {
        let _ambient = ambient::enter(ctx);
        catch_unwind(AssertUnwindSafe(|| f(ctx)))
    };
    if let Err(payload) = &result {
        cancel_caught(ctx, Cause::Panicked(PanicSummary::from_payload(None, &**payload)));
    }
    result
}

/// Cancels `ctx`; a panic of a callback this runs is recorded, not lost (invariant 3).
fn cancel_caught(ctx: &Context, cause: Cause) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| ctx.cancel_with(cause))) {
        crate::unhandled::record(payload);
    }
}

/// A join (or, from [`fork_outside`], a join's second half) sent to the pool from a thread that
/// is not a worker, and what it returns.
struct SentJoin<F, R> {
    /// Set by the one thread that runs `f`: a worker, or the sender taking it back.
    claimed: AtomicBool,
    /// Taken by the claimer.
    f: UnsafeCell<Option<F>>,
    /// Written by the claimer before it sets `latch`; read by the sender after.
    result: UnsafeCell<Option<std::thread::Result<R>>>,
    latch: pool::Latch,
}

// SAFETY: the cells are accessed by one thread at a time: `f` only by the claimer (one
// `swap` of `claimed` returns false), `result` by the claimer before the latch's Release swap and
// by the sender after its Acquire probe saw it. `F` and `R` move to the claimer's thread, hence
// the `Send` bounds.
unsafe impl<F: Send, R: Send> Sync for SentJoin<F, R> {}

impl<F: FnOnce() -> R + Send, R: Send> SentJoin<F, R> {
    /// A job of `f`, whose latch wakes this thread.
    fn new(f: F) -> Arc<Self> {
        Arc::new(SentJoin {
            claimed: AtomicBool::new(false),
            f: UnsafeCell::new(Some(f)),
            result: UnsafeCell::new(None),
            latch: pool::Latch::new(Owner::Thread(crate::loom::current_thread())),
        })
    }

    /// Claims `f` without running it, if nobody has claimed it: the sender skipping it.
    fn claim(&self) -> Option<F> {
        // Acquire: as in `claim_and_run`.
        if self.claimed.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: this thread won the claim: the only user of `f`.
        unsafe { (*self.f.get()).take() }
    }

    /// What `f` returned, or its panic. Only by the sender, once the latch is set.
    fn take_result(&self) -> std::thread::Result<R> {
        debug_assert!(self.latch.probe());
        // SAFETY: the latch is set: the claimer wrote the result before and touches it no more.
        unsafe { (*self.result.get()).take() }.expect("tether: a sent join left no result")
    }

    /// Runs `f` if nobody has claimed it; whether this call did.
    fn claim_and_run(&self) -> bool {
        // Acquire: the sender's write of `f` happens before (also published by the queue).
        if self.claimed.swap(true, Ordering::Acquire) {
            return false;
        }
        // SAFETY: this thread won the claim: the only user of `f`, and of `result` until `set`.
        let f = unsafe { (*self.f.get()).take() }.expect("tether: a sent join ran twice");
        let result = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: as above.
        unsafe { *self.result.get() = Some(result) };
        // SAFETY: `self` is kept alive by the caller's reference (an `Arc`) across the call.
        unsafe { pool::Latch::set(&self.latch) };
        true
    }
}

impl<F: FnOnce() -> R + Send, R: Send> Job for SentJoin<F, R> {
    fn run(self: Arc<Self>) {
        pool::begin_untracked_job();
        self.claim_and_run();
    }

    fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire) // Acquire: pairs with the claim's swap
    }

    fn observe(&self) -> Option<crate::scope::observe::RawChild> {
        None
    }
}

/// Sleeps until `job` is done: parks (a short while at first) until a worker has claimed it, or
/// runs it here if none has within [`CLAIM_AFTER`]; once a worker has it, parks until its latch
/// is set.
fn wait_for_worker<F: FnOnce() -> R + Send, R: Send>(job: &SentJoin<F, R>) {
    let give_up = Instant::now() + CLAIM_AFTER;
    let mut park = CLAIM_AFTER / 8;
    while !job.latch.probe() {
        let stuck = !job.is_claimed() && Instant::now() >= give_up && !pool::has_idle_worker();
        if stuck && job.claim_and_run() {
            break;
        }
        if job.latch.announce_sleep() {
            if job.is_claimed() {
                crate::loom::park_backstop(CLAIMED_PARK);
            } else {
                crate::loom::park_timeout(park);
                park = (park * 2).min(UNCLAIMED_PARK_MAX);
            }
            job.latch.end_sleep();
        }
    }
}

/// Queues `job` on the pool (the injector: this thread is not a worker). The caller must not
/// return, nor unwind, before it has claimed the job itself or seen its latch set.
fn push_sent<F: FnOnce() -> R + Send, R: Send>(job: &Arc<SentJoin<F, R>>) {
    let erased: Arc<dyn Job + '_> = job.clone();
    // SAFETY: erasing the lifetime lets the pool's injector hold the job, which borrows the
    // caller's frame (`f` captures a join's halves and its context). It is sound because the
    // caller returns (or unwinds: nothing in `send_to_pool` and `fork_outside` panics while the
    // job is out; the halves are caught) only after it has claimed the job itself, taking `f`
    // out, or seen the latch set, which a worker that claimed it does after `f` has been consumed
    // and its result stored; the result is taken then. What is left of the job is a flag, empty
    // cells and the latch's `Thread`: the copy the injector still holds (when the caller claimed
    // the job back) is dropped later by a worker that finds it claimed, touching no borrowed data.
    let erased: JobRef = unsafe { std::mem::transmute::<Arc<dyn Job + '_>, JobRef>(erased) };
    pool::push(erased);
}

/// Sends `f` to the pool as one job and sleeps until it is done; runs it here if no worker took
/// it within [`CLAIM_AFTER`] (module docs).
fn send_to_pool<F: FnOnce() -> R + Send, R: Send>(f: F) -> R {
    let job = SentJoin::new(f);
    push_sent(&job);
    wait_for_worker(&job);
    job.take_result().unwrap_or_else(|payload| resume_unwind(payload))
}
