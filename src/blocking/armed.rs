//! An action armed to run once when a context is cancelled, and disarmed before the blocking call
//! that armed it returns: how every helper in [`crate::blocking`] that cannot `select` on
//! [`done()`](crate::Canceller::done) wakes the call it guards (an unpark, a shutdown, a notify).
//!
//! Arming registers a waker through [`Canceller::poll_cancelled`], the one on-cancel mechanism of
//! the crate: for a [`Context`](crate::Context) a waker in its node (run by the cancelling thread
//! after every tree lock is released), for a foreign canceller a watch on the shared watcher
//! thread. Disarming drops that registration, so nothing stays registered after the call.
//!
//! # Invariants
//! 1. The action runs at most once, and only between arming and the end of [`Armed::disarm`]:
//!    whichever of the waker and `disarm` takes it out of the slot first owns it.
//! 2. When `disarm` returns, the action is neither running nor able to run, and it has been
//!    dropped. So the action may borrow what the blocking call borrows (`'a`): it is never touched
//!    after the call ends. `Drop` disarms, so an unwinding call disarms too.
//! 3. `disarm` waits for an action that is running; [`Armed::try_disarm`] does not, for a caller
//!    that holds something the action may need (the mutex of a condition variable): it releases
//!    that first, then waits with [`Armed::disarm`]. An action is running until the [`Busy`]
//!    token it is given is dropped: an action that must finish elsewhere (on a thread that may
//!    block) moves the token there.
//!
//! The loom model `src/tests/loom_armed.rs` checks 1 and 2 against a racing cancel.

use crate::cancel::{Canceller, Cause, Waiter};
use crate::loom::{Arc, Condvar, Mutex, lock};
use std::marker::PhantomData;
use std::task::{self, Poll, Wake, Waker};

/// The armed action, its lifetime erased (invariant 2 is what makes that sound).
type Action = Box<dyn FnOnce(Busy) + Send + 'static>;

/// Held by a running action; dropping it ends the run and tells a waiting `disarm`
/// (invariant 3). Dropped on unwind too, so a panicking action does not hang the call.
pub(crate) struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.0.state).running = false;
        self.0.idle.notify_all();
    }
}

/// What the waker and the blocking call share.
struct Slot {
    state: Mutex<SlotState>,
    /// Signalled when a running action ends (invariant 3).
    idle: Condvar,
}

struct SlotState {
    /// `None` once taken, by the waker (to run it) or by `disarm` (to drop it).
    action: Option<Action>,
    /// True while the waker runs the action.
    running: bool,
}

/// An action armed on a canceller; see the module docs. Disarm it (or drop it) before the data it
/// borrows goes away.
pub(crate) struct Armed<'a> {
    slot: Arc<Slot>,
    /// Holds the registration; dropped by `disarm`.
    waiter: Option<Waiter>,
    _borrows: PhantomData<&'a ()>,
}

/// What [`Armed::try_disarm`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disarmed {
    /// The action never ran, and now never will.
    Idle,
    /// The action ran, and has finished.
    Fired,
    /// The action is running now: release what it may need, then call [`Armed::disarm`].
    Running,
}

impl<'a> Armed<'a> {
    /// Arms `action` to run once, on the cancelling thread, when `ctx` is cancelled.
    ///
    /// # Errors
    ///
    /// The cause if `ctx` is already cancelled; `action` is then dropped without running.
    pub(crate) fn arm<C, F>(ctx: &C, action: F) -> Result<Armed<'a>, Cause>
    where
        C: Canceller + ?Sized,
        F: FnOnce() + Send + 'a,
    {
        Armed::arm_busy(ctx, move |_busy: Busy| action())
    }

    /// As [`Armed::arm`], for an action that may finish after it returns: it is running until it
    /// drops the [`Busy`] token (invariant 3).
    pub(crate) fn arm_busy<C, F>(ctx: &C, action: F) -> Result<Armed<'a>, Cause>
    where
        C: Canceller + ?Sized,
        F: FnOnce(Busy) + Send + 'a,
    {
        let action: Box<dyn FnOnce(Busy) + Send + 'a> = Box::new(action);
        // SAFETY: only the lifetime changes (same layout). The action is run by the waker or
        // dropped by `disarm` and never after `disarm` returns (invariants 1 and 2); `Armed`
        // borrows `'a` and disarms in `Drop`, so that happens before `'a` ends. The `Slot` may
        // outlive `'a` (the waker holds it), but by then its `action` is `None`.
        let action: Action =
            unsafe { std::mem::transmute::<Box<dyn FnOnce(Busy) + Send + 'a>, Action>(action) };
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState { action: Some(action), running: false }),
            idle: Condvar::new(),
        });
        let waker = Waker::from(std::sync::Arc::new(Fire(slot.clone())));
        let mut waiter = Waiter::new();
        let mut armed = Armed { slot, waiter: None, _borrows: PhantomData };
        match ctx.poll_cancelled(&mut task::Context::from_waker(&waker), &mut waiter) {
            Poll::Ready(cause) => {
                drop(waiter);
                armed.disarm();
                Err(cause)
            }
            Poll::Pending => {
                armed.waiter = Some(waiter);
                Ok(armed)
            }
        }
    }

    /// Disarms without waiting for a running action (invariant 3).
    pub(crate) fn try_disarm(&mut self) -> Disarmed {
        let action = {
            let mut state = lock(&self.slot.state);
            if state.running {
                return Disarmed::Running;
            }
            state.action.take()
        };
        self.waiter = None; // the registration goes: nothing left in the node or the watcher
        match action {
            Some(action) => {
                drop(action); // captures only borrows and handles, but dropped here, unlocked
                Disarmed::Idle
            }
            None => Disarmed::Fired,
        }
    }

    /// Disarms, waiting for a running action to finish (invariant 2). True if the action ran.
    pub(crate) fn disarm(&mut self) -> bool {
        loop {
            match self.try_disarm() {
                Disarmed::Idle => return false,
                Disarmed::Fired => return true,
                Disarmed::Running => {
                    let mut state = lock(&self.slot.state);
                    while state.running {
                        state = self.slot.idle.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        }
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The waker registered on the canceller: runs the action.
struct Fire(Arc<Slot>);

impl Wake for Fire {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let slot = &self.0;
        let action = {
            let mut state = lock(&slot.state);
            let Some(action) = state.action.take() else { return };
            state.running = true;
            action
        };
        action(Busy(slot.clone()));
    }
}
