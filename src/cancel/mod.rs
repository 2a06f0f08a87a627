//! Cancellation: the [`Canceller`] trait, typed causes, callbacks, and the engine behind them.
//!
//! - `tree`: the node engine (link, propagate, detach, callbacks), with its invariants.
//! - `deadline`: the one timer driver serving every deadline.
//! - `cause`: [`Cause`] and [`CancelError`].
//! - `awaited`: awaiting cancellation from async code ([`Cancelled`], [`Waiter`]).
//! - `done`: the borrowed done channel ([`Done`]).

mod awaited;
mod cause;
pub(crate) mod deadline;
mod done;
pub(crate) mod tree;

pub use awaited::{Cancelled, CancelledOwned, RunUntilCancelled, Waiter};
pub use cause::{CancelError, Cause, PanicSummary, SharedError};
pub use done::Done;
pub use tree::CallbackPanics;

use std::sync::atomic::AtomicBool;
use std::task::{self, Poll};
use std::time::{Duration, Instant};
use tree::{CallbackSlot, Core};

/// Observing cancellation, separate from values ([`crate::Valuer`]).
///
/// Code that only needs to know whether to stop asks for a `&dyn Canceller` (or
/// `impl Canceller`). The trait is object-safe and open: [`crate::Context`] implements it, and so
/// can foreign types (Go-style contexts in [`crate::go`], or a test double).
///
/// Cancelling is not part of this trait: whoever only observes cannot cancel. The owner of a
/// context cancels it with [`crate::Context::cancel`].
///
/// # Examples
///
/// ```
/// use tether::{Canceller, Context};
///
/// fn work(stop: &dyn Canceller) -> usize {
///     let mut steps = 0;
///     while !stop.is_cancelled() && steps < 1_000 {
///         steps += 1;
///     }
///     steps
/// }
///
/// let ctx = Context::new();
/// ctx.cancel();
/// assert_eq!(work(&ctx), 0);
/// ```
pub trait Canceller {
    /// True once cancelled; sticky. For [`crate::Context`] this is one atomic load.
    fn is_cancelled(&self) -> bool;

    /// The coarse error once cancelled (Go's `Err()`), `None` before.
    fn err(&self) -> Option<CancelError>;

    /// The typed cause once cancelled (Go's `context.Cause`), `None` before.
    fn cause(&self) -> Option<Cause>;

    /// The instant at which this context will be cancelled by a deadline, if it has one.
    fn deadline(&self) -> Option<Instant>;

    /// The budget left before the deadline: `None` without a deadline, [`Duration::ZERO`] once
    /// the deadline has passed (even before its cancellation has been delivered). What a hop
    /// sends on as its caller's remaining time (`grpc-timeout`, [`crate::wire`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tether::{Canceller, Context};
    ///
    /// assert_eq!(Context::new().remaining(), None);
    /// let call = Context::new().with_timeout(Duration::from_secs(5));
    /// assert!(call.remaining().unwrap() <= Duration::from_secs(5));
    /// assert_eq!(Context::new().with_timeout(Duration::ZERO).remaining(), Some(Duration::ZERO));
    /// ```
    fn remaining(&self) -> Option<Duration> {
        Some(self.deadline()?.saturating_duration_since(Instant::now()))
    }

    /// The done channel, borrowed: it becomes ready (disconnected) on cancellation, and derefs to
    /// a receiver for use in [`crossbeam_channel::select!`]. A context that can never be
    /// cancelled returns [`Done::never`], which is never ready: the analogue of Go's nil channel.
    /// For a [`crate::Context`], asking for it and [`Done::try_recv`] on it read one atomic each
    /// and write nothing shared; a foreign implementation returns `Done::from(&its_receiver)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let ctx = Context::new();
    /// assert!(ctx.done().try_recv().is_err() && !ctx.done().is_ready());
    /// ctx.cancel();
    /// assert!(ctx.done().recv().is_err(), "disconnected: a done channel carries no message");
    /// ```
    fn done(&self) -> Done<'_>;

    /// False when this context can never be cancelled (it has no node: a background or detached
    /// context); `done()` then never becomes ready.
    fn can_be_cancelled(&self) -> bool;

    /// Blocks until cancelled and returns the cause.
    ///
    /// The provided method blocks on [`done`](Self::done); [`crate::Context`] overrides it (and
    /// [`wait_timeout`](Self::wait_timeout)) to park on its node, which the cancellation unparks
    /// first, before it runs callbacks: the latency of std's park/unpark. A thread woken that way
    /// may leave a spurious wake-up for its next `thread::park` (as `park` allows) if a timed
    /// wait races a cancellation.
    ///
    /// # Panics
    ///
    /// If the context can never be cancelled: the wait could never end.
    #[track_caller]
    fn wait(&self) -> Cause {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        assert!(
            self.can_be_cancelled(),
            "tether: wait() on a context that can never be cancelled would block forever"
        );
        let _ = self.done().recv();
        self.cause().expect("tether: done() disconnected before the cause was set")
    }

    /// Blocks until cancelled or until `timeout` has passed; returns the cause if cancelled.
    #[track_caller]
    fn wait_timeout(&self, timeout: Duration) -> Option<Cause> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        if !self.is_cancelled() {
            // Returns early, with `Disconnected`, as soon as the context is cancelled.
            let _ = self.done().recv_timeout(timeout);
        }
        self.cause()
    }

    /// Polls for cancellation, for futures: `Ready` with the cause once cancelled, otherwise
    /// `Pending` with `cx`'s waker registered in `waiter` (replacing the one registered by an
    /// earlier poll) to be woken by the cancellation. Dropping `waiter` removes the registration.
    ///
    /// The default watches [`done`](Self::done) on tether's shared watcher thread (one thread
    /// for the process, not one per waiter), so any implementation can be awaited, provided its
    /// `done()` receiver disconnects only once [`is_cancelled`](Self::is_cancelled) returns true
    /// (as every implementation in tether does): a wake-up that came earlier could be missed;
    /// [`Context`](crate::Context) overrides it to register the waker in its node. A canceller
    /// that can never be cancelled stays `Pending` and registers nothing.
    ///
    /// # Examples
    ///
    /// See [`Waiter`].
    fn poll_cancelled(&self, cx: &mut task::Context<'_>, waiter: &mut Waiter) -> Poll<Cause> {
        waiter.poll_watching(self, cx)
    }

    /// A future that completes with the cause once this is cancelled ([`Cancelled`]); for a
    /// `&dyn Canceller`, use [`Cancelled::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause, Context};
    /// let ctx = Context::new();
    /// ctx.cancel_with(Cause::ScopeExited);
    /// assert_eq!(futures_executor::block_on(ctx.cancelled()), Cause::ScopeExited);
    /// ```
    fn cancelled(&self) -> Cancelled<'_, Self>
    where
        Self: Sized,
    {
        Cancelled::new(self)
    }
}

/// The registration of an on-cancel callback ([`crate::Context::on_cancel`]), like the `stop`
/// function Go's `AfterFunc` returns.
///
/// Dropping the handle does not unregister the callback.
///
/// # Examples
///
/// ```
/// use tether::Context;
///
/// let ctx = Context::new();
/// let handle = ctx.on_cancel(|_| unreachable!("stopped before cancellation"));
/// assert!(handle.stop());
/// assert!(!handle.stop());
/// ctx.cancel();
/// ```
#[must_use = "dropping the handle keeps the callback registered; keep it to be able to stop it"]
pub struct CallbackHandle {
    registration: Registration,
    /// Set by the first `stop()`: later calls prevent nothing.
    stopped: AtomicBool,
}

/// Where the callback went when it was registered.
pub(crate) enum Registration {
    /// Registered on a node, at this slot.
    Registered(crate::loom::Arc<Core>, CallbackSlot),
    /// The node was already cancelled: the callback ran during registration.
    RanAtOnce,
    /// The context can never be cancelled: the callback was dropped unrun.
    NeverRuns,
}

impl CallbackHandle {
    pub(crate) fn new(registration: Registration) -> Self {
        CallbackHandle { registration, stopped: AtomicBool::new(false) }
    }

    /// Unregisters the callback. Returns `true` if this call prevented it from running, `false` if
    /// it has already run or is running, or was already stopped (Go's `AfterFunc` stop contract).
    ///
    /// A callback registered on a context that can never be cancelled, or on one whose every
    /// handle was then dropped without cancellation, never runs: the first `stop()` returns `true`
    /// for it, as Go's does for an `AfterFunc` on `Background()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = tether::Context::new();
    /// let handle = ctx.on_cancel(|_| {});
    /// ctx.cancel();
    /// assert!(!handle.stop(), "it already ran");
    /// ```
    pub fn stop(&self) -> bool {
        // SeqCst is not needed for exclusivity, but this is not a hot path: keep it simple.
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        match &self.registration {
            Registration::Registered(core, slot) => tree::stop(core, *slot),
            Registration::RanAtOnce => false,
            Registration::NeverRuns => true,
        }
    }
}

impl std::fmt::Debug for CallbackHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registered = matches!(self.registration, Registration::Registered(..));
        f.debug_struct("CallbackHandle").field("registered", &registered).finish_non_exhaustive()
    }
}
