//! [`ScopeState`]: what a scope's body and its children share, and the protocols on it that do
//! not depend on the kind of child: the running count (scope invariant 4; the atomic itself is
//! [`RunningCount`]), the wait until no child runs, the failures (invariants 2 and 3), the
//! concurrency limit's slots, and dropping user data without letting a panic escape.
//!
//! One `ScopeState` per scope, in an `Arc` that the scope's owner (`exit.rs`) drops last, after
//! it has closed the count. Thread children hold a pointer to it for their whole life, task
//! children from their spawn until they count out (`child.rs`, [`Running`](super::child::Running)).

use super::count::{Refused, RunningCount};
use super::failures::{FailureLog, Failures, Payload};
use super::observe::ScopeMeta;
use super::task_queue::ScopeTasks;
use crate::cancel::tree::Settle;
use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use crate::pool;
use crate::telemetry::{self, ScopeObs};
use crossbeam_channel::{Receiver, Sender, select};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long a helping wait sleeps when the scope's own queue has no pending task before it looks
/// there again (a child may queue one meanwhile); the last child's completion wakes it sooner.
const PARK: Duration = Duration::from_millis(1);

/// What the scope body and its children share: the context, the failures, the running count,
/// the limit's slots and the scope's own pool tasks.
pub(crate) struct ScopeState {
    pub(super) ctx: Context,
    failures: FailureLog,
    /// Children spawned and not yet finished (scope invariant 4; `count.rs`).
    running: RunningCount,
    /// Threads blocked in [`ScopeState::wait_idle`]: the last child out notifies `idle` only when
    /// there are some, so a scope nobody waits on yet costs no lock and no wake-up.
    waiters: AtomicUsize,
    /// Guards the waiters' check-then-sleep against the last child's notification.
    idle_lock: Mutex<()>,
    idle: Condvar,
    /// The concurrency limit's free slots, one message each; `None` without a limit.
    slots: Option<(Sender<()>, Receiver<()>)>,
    /// The scope's own queue of its pool tasks and its per-worker task parents
    /// (`task_queue.rs`).
    pub(super) tasks: ScopeTasks,
    /// Set once the cancellation that reached the scope's node has run the callbacks it collected
    /// (scope invariant 5); `None` if the node was cancelled already when the scope began.
    pub(super) settle: Option<Arc<Settle>>,
    /// What the scope records for dumps (`observe.rs`).
    pub(super) meta: ScopeMeta,
    /// The scope's span and gauge (`crate::telemetry`; nothing without its features).
    pub(super) obs: ScopeObs,
}

/// Whether a child holds one of the limit's slots, which it gives back when it finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// It took one: [`ScopeState::give_back`] returns it.
    Held,
    /// The scope has no limit, or the scope was cancelled while the spawn waited for a slot (the
    /// child then starts at once, already cancelled, outside the limit).
    NotHeld,
}

/// [`ScopeState::try_take_slot`] found every slot of the limit taken.
#[derive(Debug)]
pub(super) struct LimitFull;

impl ScopeState {
    pub(super) fn new(ctx: Context, limit: Option<usize>, meta: ScopeMeta, obs: ScopeObs) -> ScopeState {
        let settle = Arc::new(Settle::default());
        let settle = ctx.attach_settle(&settle).then_some(settle);
        let slots = limit.map(|n| {
            let (tx, rx) = crossbeam_channel::bounded(n);
            for _ in 0..n {
                tx.send(()).expect("the receiver is alive");
            }
            (tx, rx)
        });
        ScopeState {
            ctx,
            failures: FailureLog::default(),
            running: RunningCount::new(),
            waiters: AtomicUsize::new(0),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
            slots,
            tasks: ScopeTasks::default(),
            settle,
            meta,
            obs,
        }
    }

    // ----- The running count -----

    /// Counts a child as running (scope invariant 4), before its thread starts or its task is
    /// queued.
    ///
    /// # Panics
    ///
    /// If the count is closed (a bug: invariant 4 says nothing can spawn then), or absurdly high.
    pub(super) fn start_one(&self) {
        match self.running.start() {
            Ok(()) => {}
            Err(Refused::Closed) => panic!("tether: a child was spawned into a scope that has ended"),
            Err(Refused::TooMany) => panic!("tether: too many running children in a scope"),
        }
    }

    /// How many children are running now (for `Debug`).
    pub(super) fn running(&self) -> usize {
        self.running.running()
    }

    /// Waits until no child is running and closes the count (scope invariant 4): a spawn after
    /// this panics instead of starting a child that nothing would wait for. Never unwinds.
    pub(super) fn close(&self) {
        loop {
            self.wait_idle();
            // Fails if a child started after the wait saw zero (count invariant 2).
            if self.running.try_close() {
                return;
            }
        }
    }

    /// Counts `n` children as finished at once, waking the waiters if they were the last ones.
    /// After this the scope may end: the caller must not touch anything borrowed from `'scope`
    /// any more (it keeps `self` alive with its own `Arc`).
    pub(super) fn finish(&self, n: usize) {
        // SeqCst (a Release decrement, in the order the waiters' `waiters` increment is in):
        // either a waiter's check of `running` sees zero, or this thread sees the waiter and
        // notifies it under `idle_lock`, after the waiter has started sleeping.
        if self.running.finish(n) && self.waiters.load(SeqCst) > 0 {
            drop(self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.idle.notify_all();
        }
    }

    /// Blocks until no child is running. Panic-free: the tasks it helps with never unwind
    /// (`pool::run_job`).
    pub(super) fn wait_idle(&self) {
        // SeqCst (so Acquire): seeing zero synchronizes with every child's decrement, which is
        // a release sequence of read-modify-writes, hence with everything each child did.
        if self.running.is_zero() {
            return;
        }
        if pool::started() {
            // This scope's tasks may be pending: run them (and only them) while waiting, so that
            // a wait never depends on a free worker (`task_queue.rs`, "Helping"; design/0003).
            pool::wait_until(|| self.running.is_zero(), || self.tasks.help_own(), || self.park_idle());
            return;
        }
        let mut guard = self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, SeqCst);
        while !self.running.is_zero() {
            guard = self.idle.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        self.waiters.fetch_sub(1, SeqCst);
    }

    /// Sleeps until the last child finishes or [`PARK`] passes (whichever is first): the park of
    /// a helping wait, bounded so that it looks for pool jobs again.
    fn park_idle(&self) {
        let guard = self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SeqCst: as in `wait_idle`'s slow path (the `waiters` handshake with `finish`).
        self.waiters.fetch_add(1, SeqCst);
        if !self.running.is_zero() {
            drop(self.idle.wait_timeout(guard, PARK).unwrap_or_else(PoisonError::into_inner));
        } else {
            drop(guard);
        }
        self.waiters.fetch_sub(1, SeqCst);
    }

    // ----- User data and failures (`failures.rs`) -----

    /// Drops `value`, which may hold user data, recording a panic from its destructor as a panic
    /// of the scope.
    pub(super) fn drop_caught<T>(&self, value: T) {
        self.failures.drop_caught(value);
    }

    /// Takes every failure recorded so far, the cancelling error first (for the exit).
    pub(super) fn take_failures(&self) -> Failures {
        self.failures.take(&self.ctx)
    }

    /// Cancels the scope with `cause` (a panicking callback is recorded: scope invariant 2).
    pub(super) fn cancel(&self, cause: Cause) {
        self.failures.cancel(&self.ctx, cause);
    }

    /// Records that `who` panicked and cancels the scope, naming it; returns the panic's id.
    pub(super) fn panicked(&self, who: Option<Arc<str>>, payload: Payload) -> u64 {
        self.failures.panicked(&self.ctx, who, payload)
    }

    /// Takes back the payload recorded as `id`, so the scope will not re-raise it.
    pub(super) fn take_panic(&self, id: u64) -> Option<Payload> {
        self.failures.take_panic(id)
    }

    /// Records a fallible child's error, cancels the scope with it, and hands it back shared.
    pub(super) fn fail_with<E: std::error::Error + Send + Sync + 'static>(&self, error: E) -> Arc<E> {
        telemetry::child_failed(&error);
        self.failures.fail_with(&self.ctx, error)
    }

    // ----- The limit's slots -----

    /// Waits for a slot of the limit; stops waiting when the scope is cancelled.
    pub(super) fn wait_for_slot(&self) -> Slot {
        let Some((_, free)) = &self.slots else { return Slot::NotHeld };
        if free.try_recv().is_ok() {
            return Slot::Held;
        }
        let done = self.ctx.done();
        select! {
            recv(free) -> slot => held(slot.is_ok()),
            recv(done) -> _ => Slot::NotHeld,
        }
    }

    /// [`wait_for_slot`](Self::wait_for_slot) for a task spawner: runs the scope's pending tasks
    /// while it waits (the slots may be held by queued tasks that only this thread is free to
    /// run).
    pub(super) fn wait_for_slot_helping(&self) -> Slot {
        let Some((_, free)) = &self.slots else { return Slot::NotHeld };
        let done = self.ctx.done();
        loop {
            if free.try_recv().is_ok() {
                return Slot::Held;
            }
            if self.ctx.is_cancelled() {
                return Slot::NotHeld;
            }
            if self.tasks.help_own() {
                continue;
            }
            select! {
                recv(free) -> slot => return held(slot.is_ok()),
                recv(done) -> _ => return Slot::NotHeld,
                default(PARK) => {}
            }
        }
    }

    /// Takes a slot if one is free, without waiting.
    pub(super) fn try_take_slot(&self) -> Result<Slot, LimitFull> {
        match &self.slots {
            None => Ok(Slot::NotHeld),
            Some((_, free)) => free.try_recv().map(|()| Slot::Held).map_err(|_| LimitFull),
        }
    }

    /// With a limit, how many of its slots are taken now (for dumps).
    pub(super) fn slots_in_use(&self) -> Option<usize> {
        self.slots.as_ref().map(|(tx, free)| tx.capacity().unwrap_or(0).saturating_sub(free.len()))
    }

    /// Gives back the slot a finished child held, if it held one.
    pub(super) fn give_back(&self, slot: Slot) {
        if let (Slot::Held, Some((give_back, _))) = (slot, &self.slots) {
            // Never full: at most `limit` slots are out, and each is given back once.
            let _ = give_back.try_send(());
        }
    }
}

fn held(taken: bool) -> Slot {
    if taken { Slot::Held } else { Slot::NotHeld }
}

impl pool::FinishCount for ScopeState {
    /// Late finishes of this scope's tasks (pool invariant 4), reported by the worker that ran them.
    fn finish(&self, n: usize) {
        ScopeState::finish(self, n);
    }
}
