//! Jobs that live in their owner's stack frame: the half of a [`crate::join`] that another worker
//! may steal ([`StackJob`]), and the latch its owner waits on ([`Latch`]). rayon-core's
//! `StackJob` and `SpinLatch`, reduced to what `join` needs (design/0003-pool-tasks.md, "Join").
//!
//! # Invariants
//! 1. A [`StackRef`] to a job is queued at most once (on its owner's `joins` deque) and taken
//!    exactly once: by the owner's pop (it then runs or skips the job itself) or by one thief's
//!    steal (the deque hands an element to exactly one taker). So `f` and `result` are touched
//!    by one thread at a time: the taker, until it sets the latch, then the owner.
//! 2. The owner's frame, which holds the job, does not return (nor unwind) before the job is
//!    either taken back by the owner or its latch is set: `join` waits on the latch whenever its
//!    pop did not return the job. So the pointer a thief holds is live until it sets the latch.
//! 3. Setting the latch is the thief's last access to the job: what it needs afterwards to wake
//!    the owner (the owner's worker index, or a clone of its `Thread`) is read before the
//!    `swap`, and lives outside the job (the pool's static worker table, or the clone).

use crate::loom::Thread;
use crate::loom::{AtomicU8, Ordering};
use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A panic's payload.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// `Latch::state`: the job has not finished and its owner is awake.
const PENDING: u8 = 0;
/// `Latch::state`: the owner is parked (or about to park) and must be unparked by the setter.
const SLEEPING: u8 = 1;
/// `Latch::state`: the job has finished; its result may be read.
const DONE: u8 = 2;

/// Who waits on a latch, to be woken when it is set.
pub(crate) enum Owner {
    /// A pool worker, by index: its `Thread` is in the pool's static table (invariant 3).
    Worker(usize),
    /// Any other thread.
    Thread(Thread),
}

/// Set once, when a job finishes; its owner waits on it, helping or parked.
pub(crate) struct Latch {
    /// `PENDING`, `SLEEPING` or `DONE`.
    state: AtomicU8,
    owner: Owner,
}

impl Latch {
    pub(crate) fn new(owner: Owner) -> Latch {
        Latch { state: AtomicU8::new(PENDING), owner }
    }

    /// Whether the latch is set.
    pub(crate) fn probe(&self) -> bool {
        // Acquire: pairs with the Release half of the `swap` in `set`: the job's result, written
        // before, is read after this.
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Sets the latch and wakes the owner if it is parked. Invariant 3: after the `swap`, `self`
    /// may already be gone (the owner saw `DONE` and returned).
    ///
    /// # Safety
    /// `this` points to a live latch, which this call may be the last to touch.
    pub(crate) unsafe fn set(this: *const Latch) {
        // SAFETY: the caller's guarantee; the references end before the `swap` below.
        let wake = match unsafe { &(*this).owner } {
            Owner::Worker(index) => Wake::Worker(*index),
            Owner::Thread(thread) => Wake::Thread(thread.clone()),
        };
        // SAFETY: as above; this is the last access (AcqRel: Release publishes the result to
        // `probe`; Acquire pairs with the owner's `SLEEPING` store, before it parks).
        let previous = unsafe { (*this).state.swap(DONE, Ordering::AcqRel) };
        if previous == SLEEPING {
            wake.unpark();
        }
    }

    /// `PENDING -> SLEEPING`, before the owner parks: the setter will then unpark it. False if
    /// the latch was set meanwhile (the owner must not park).
    pub(crate) fn announce_sleep(&self) -> bool {
        // AcqRel: Release pairs with the setter's `swap`, which then sees `SLEEPING` and unparks
        // (an unpark before the park makes the park return at once); Acquire on failure is
        // `probe`'s, for the result.
        self.state.compare_exchange(PENDING, SLEEPING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// `SLEEPING -> PENDING`, once the owner is awake again (unless the setter came: `DONE`
    /// stays).
    pub(crate) fn end_sleep(&self) {
        // Relaxed: no data rides on `PENDING`; `probe` is the read that counts.
        let _ = self.state.compare_exchange(SLEEPING, PENDING, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// What the setter needs to wake the owner once the latch (and its job) may be gone.
enum Wake {
    Worker(usize),
    Thread(Thread),
}

impl Wake {
    fn unpark(self) {
        match self {
            Wake::Worker(index) => super::unpark_worker(index),
            Wake::Thread(thread) => thread.unpark(),
        }
    }
}

/// A type-erased pointer to a [`StackJob`] in its owner's frame, as queued.
pub(crate) struct StackRef {
    job: *const (),
    execute: unsafe fn(*const ()),
}

// SAFETY: a `StackRef` is a pointer to a `StackJob` whose closure and result are `Send`
// (`StackJob::stack_ref` requires it); the job is run by exactly one thread (invariant 1) while it
// is live (invariant 2).
unsafe impl Send for StackRef {}

impl StackRef {
    /// Whether this refers to `job`.
    pub(crate) fn is<F, R>(&self, job: &StackJob<F, R>) -> bool {
        std::ptr::eq(self.job, (job as *const StackJob<F, R>).cast())
    }

    /// Runs the job on this thread (a thief's), storing its result and setting its latch.
    pub(crate) fn execute(self) {
        // SAFETY: invariants 1 and 2: this thread took the only queued copy, and the job is live
        // until the latch is set, which `execute` does last.
        unsafe { (self.execute)(self.job) }
    }
}

/// A closure in its owner's frame that a thief may run: `join`'s second half.
pub(crate) struct StackJob<F, R> {
    /// Taken by the one thread that runs the job (invariant 1).
    f: UnsafeCell<Option<F>>,
    /// Written by a thief before it sets the latch; read by the owner after.
    result: UnsafeCell<Option<std::thread::Result<R>>>,
    pub(crate) latch: Latch,
}

impl<F, R> StackJob<F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    pub(crate) fn new(f: F, owner: Owner) -> Self {
        StackJob { f: UnsafeCell::new(Some(f)), result: UnsafeCell::new(None), latch: Latch::new(owner) }
    }

    /// The pointer to queue. The job must then not move, and its frame must follow invariant 2.
    pub(crate) fn stack_ref(&self) -> StackRef {
        StackRef { job: (self as *const Self).cast(), execute: Self::execute }
    }

    /// The thief's side: runs `f`, stores its result (or its panic), sets the latch.
    ///
    /// # Safety
    /// `this` points to a live `StackJob<F, R>`, taken from a queue by this thread (invariant 1).
    unsafe fn execute(this: *const ()) {
        let this: *const Self = this.cast();
        // SAFETY: the caller's guarantee: this thread is the job's only user until `set`.
        let f = unsafe { (*(*this).f.get()).take() }.expect("tether: a join half ran twice");
        let result = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: as above; the owner reads the result only after the latch is set.
        unsafe { *(*this).result.get() = Some(result) };
        // SAFETY: live until this call's `swap`, the last access (invariant 3).
        unsafe { Latch::set(&raw const (*this).latch) };
    }

    /// The owner took its job back from its deque (so no thief has it): runs it here.
    pub(crate) fn run_inline(self) -> std::thread::Result<R> {
        let f = self.f.into_inner().expect("tether: a join half ran twice");
        catch_unwind(AssertUnwindSafe(f))
    }

    /// The owner took its job back and will not run it: the closure, returned for the owner to
    /// drop as it sees fit.
    pub(crate) fn into_closure(self) -> Option<F> {
        self.f.into_inner()
    }

    /// The result a thief stored. Only after [`Latch::probe`] saw the latch set.
    pub(crate) fn into_result(self) -> std::thread::Result<R> {
        debug_assert!(self.latch.probe());
        self.result.into_inner().expect("tether: a stolen join half left no result")
    }
}
