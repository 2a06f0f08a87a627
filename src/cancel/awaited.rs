//! Awaiting cancellation: the [`Cancelled`] futures and the [`Waiter`] that holds a pending
//! future's registration. Runtime-free: any executor can poll them.
//!
//! A [`Context`](crate::Context) registers the waker of a pending future in its node, next to
//! the on-cancel callbacks (`tree::on_cancel_wake`), and the cancellation wakes it after every
//! lock is released. A foreign [`Canceller`] is watched on the crate's shared watcher thread
//! (`src/watcher.rs`), through its [`done`](Canceller::done) channel: no thread per waiter.
//!
//! # Invariants
//! 1. A [`Waiter`] holds at most one registration, and dropping it (or the future that owns it)
//!    removes that registration: nothing is left in the node or the watcher. Polled with
//!    another canceller than the one it registered with, it removes the old registration first.
//! 2. Polling again with another waker replaces the registered one (under the node's lock, or
//!    the watch's), never adds a second registration.
//! 3. No lost wake-up: a registration happens under the node's lock, which the cancellation takes
//!    to drain it; so either the registration sees the node cancelled (and the poll returns
//!    `Ready`) or the cancellation sees the waker (and wakes it). A watched foreign canceller is
//!    checked again after its waker is stored.
//! 4. An already cancelled context is `Ready` on the first poll, with no allocation and no
//!    registration.
//!
//! The loom model `src/tests/loom_waker.rs` checks invariants 1 to 3 against a racing cancel.

use super::tree::{self, CallbackSlot, Core};
use super::{Canceller, Cause};
use crate::context::Context;
use crate::loom::Arc;
use crate::watcher::{self, Watch};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{self, Poll, Waker};

/// The registration of a pending wait for cancellation: what a future that awaits a
/// [`Canceller`] keeps between polls, for [`Canceller::poll_cancelled`]. Dropping it removes the
/// registration.
///
/// # Examples
///
/// A future of your own that awaits a canceller through the trait:
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use std::task::{Context as TaskContext, Poll};
/// use tether::{Canceller, Cause, Waiter};
///
/// struct Stop<'a> { canceller: &'a dyn Canceller, waiter: Waiter }
///
/// impl Future for Stop<'_> {
///     type Output = Cause;
///     fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Cause> {
///         let this = &mut *self;
///         this.canceller.poll_cancelled(cx, &mut this.waiter)
///     }
/// }
///
/// let ctx = tether::Context::new();
/// ctx.cancel();
/// let cause = futures_executor::block_on(Stop { canceller: &ctx, waiter: Waiter::new() });
/// assert_eq!(cause, Cause::Cancelled);
/// ```
#[derive(Default)]
pub struct Waiter {
    registration: Registration,
}

#[derive(Default)]
enum Registration {
    #[default]
    None,
    /// A waker in a node (invariant 1).
    Node(Arc<Core>, CallbackSlot),
    /// A watch of a foreign canceller's done channel, the waker its firing wakes, and the
    /// canceller's address (to tell a reuse with another canceller).
    Watched(std::sync::Arc<Watch>, std::sync::Arc<Mutex<Option<Waker>>>, usize),
}

impl Waiter {
    /// A waiter with nothing registered.
    pub const fn new() -> Waiter {
        Waiter { registration: Registration::None }
    }

    /// [`Canceller::poll_cancelled`] for a node: registers or replaces the waker in `core`.
    pub(crate) fn poll_node(&mut self, core: &Arc<Core>, cx: &mut task::Context<'_>) -> Poll<Cause> {
        if let Some(cause) = core.cause() {
            match &self.registration {
                // The cancellation drained every listener of this node, ours included, and the
                // node takes none any more (tree invariant 3): nothing to remove, no lock to take.
                Registration::Node(registered, _) if Arc::ptr_eq(registered, core) => {
                    self.registration = Registration::None;
                }
                _ => self.clear(),
            }
            return Poll::Ready(cause);
        }
        match &self.registration {
            Registration::Node(registered, slot) if Arc::ptr_eq(registered, core) => {
                if tree::rewake(core, *slot, cx.waker()) {
                    return Poll::Pending;
                }
                self.clear();
            }
            Registration::None => {}
            // Registered elsewhere (the waiter was used with another canceller): remove it.
            _ => self.clear(),
        }
        match tree::on_cancel_wake(core, cx.waker()) {
            Some(slot) => {
                self.registration = Registration::Node(core.clone(), slot);
                Poll::Pending
            }
            // Cancelled since the check above; or released, and then never cancelled.
            None => core.cause().map_or(Poll::Pending, Poll::Ready),
        }
    }

    /// The default [`Canceller::poll_cancelled`]: watches `canceller`'s done channel on the shared
    /// watcher thread.
    pub(crate) fn poll_watching<C: Canceller + ?Sized>(
        &mut self,
        canceller: &C,
        cx: &mut task::Context<'_>,
    ) -> Poll<Cause> {
        if canceller.is_cancelled() {
            self.clear();
            return Poll::Ready(canceller.cause().unwrap_or(Cause::Cancelled));
        }
        if !canceller.can_be_cancelled() {
            return Poll::Pending;
        }
        // The canceller's address, as a number: compared, never dereferenced.
        let key = (canceller as *const C).cast::<()>() as usize;
        match &self.registration {
            Registration::Watched(_, waker, watched) if *watched == key => {
                let mut slot = waker.lock().unwrap_or_else(PoisonError::into_inner);
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    let old = slot.replace(cx.waker().clone());
                    drop(slot);
                    drop(old);
                }
            }
            _ => {
                self.clear();
                let waker = std::sync::Arc::new(Mutex::new(Some(cx.waker().clone())));
                let to_wake = waker.clone();
                let entry = watcher::watch(
                    canceller.done().receiver().clone(),
                    Box::new(move || {
                        let waker = to_wake.lock().unwrap_or_else(PoisonError::into_inner).take();
                        if let Some(waker) = waker {
                            waker.wake();
                        }
                    }),
                );
                self.registration = Registration::Watched(entry, waker, key);
            }
        }
        // Invariant 3: a cancellation between the check above and the store of the waker fired
        // with the old waker, or none.
        if canceller.is_cancelled() {
            self.clear();
            return Poll::Ready(canceller.cause().unwrap_or(Cause::Cancelled));
        }
        Poll::Pending
    }

    /// Removes the registration, if any (invariant 1).
    fn clear(&mut self) {
        match std::mem::take(&mut self.registration) {
            Registration::None => {}
            Registration::Node(core, slot) => {
                tree::stop(&core, slot);
            }
            Registration::Watched(entry, ..) => {
                entry.stop();
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registered = !matches!(self.registration, Registration::None);
        f.debug_struct("Waiter").field("registered", &registered).finish()
    }
}

/// A future that completes with the [`Cause`] once a canceller is cancelled:
/// [`Canceller::cancelled`], or [`Cancelled::new`] for a `&dyn Canceller`.
///
/// `Send` (for a `Sync` canceller), `Unpin`, and tied to no runtime. Dropping it while it is
/// pending removes its waker from the context.
///
/// # Examples
///
/// ```
/// use tether::{Canceller, Cause, Context};
///
/// let ctx = Context::new();
/// let stop = ctx.clone();
/// let waiter = std::thread::spawn(move || futures_executor::block_on(stop.cancelled()));
/// ctx.cancel_with(Cause::ScopeExited);
/// assert_eq!(waiter.join().unwrap(), Cause::ScopeExited);
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Cancelled<'a, C: Canceller + ?Sized> {
    canceller: &'a C,
    waiter: Waiter,
}

impl<'a, C: Canceller + ?Sized> Cancelled<'a, C> {
    /// A future that completes when `canceller` is cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cancelled};
    /// let ctx = tether::Context::new();
    /// ctx.cancel();
    /// let observer: &dyn Canceller = &ctx;
    /// assert_eq!(futures_executor::block_on(Cancelled::new(observer)), tether::Cause::Cancelled);
    /// ```
    pub fn new(canceller: &'a C) -> Self {
        Cancelled { canceller, waiter: Waiter::new() }
    }
}

impl<C: Canceller + ?Sized> Future for Cancelled<'_, C> {
    type Output = Cause;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Cause> {
        let this = self.get_mut();
        this.canceller.poll_cancelled(cx, &mut this.waiter)
    }
}

impl<C: Canceller + ?Sized> fmt::Debug for Cancelled<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled").field("waiter", &self.waiter).finish_non_exhaustive()
    }
}

/// [`Cancelled`] holding its own handle of a [`Context`]: `'static`, for a spawned task
/// ([`Context::cancelled_owned`]).
///
/// # Examples
///
/// ```
/// let ctx = tether::Context::new();
/// let cancelled = ctx.cancelled_owned();
/// ctx.cancel();
/// assert_eq!(futures_executor::block_on(cancelled), tether::Cause::Cancelled);
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct CancelledOwned {
    ctx: Context,
    waiter: Waiter,
}

impl CancelledOwned {
    pub(crate) fn new(ctx: Context) -> Self {
        CancelledOwned { ctx, waiter: Waiter::new() }
    }
}

impl Future for CancelledOwned {
    type Output = Cause;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Cause> {
        let this = self.get_mut();
        this.ctx.poll_cancelled(cx, &mut this.waiter)
    }
}

/// A future that runs another until a context is cancelled: [`Context::run_until_cancelled`].
/// Cancellation is checked first at every poll, so it wins over a future that is ready at the
/// same time; the future is dropped when the context is cancelled.
#[must_use = "futures do nothing unless polled"]
pub struct RunUntilCancelled<'a, F> {
    ctx: &'a Context,
    waiter: Waiter,
    future: Option<F>,
}

impl<'a, F> RunUntilCancelled<'a, F> {
    pub(crate) fn new(ctx: &'a Context, future: F) -> Self {
        RunUntilCancelled { ctx, waiter: Waiter::new(), future: Some(future) }
    }
}

impl<F: Future> Future for RunUntilCancelled<'_, F> {
    type Output = Result<F::Output, Cause>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out while pinned (it is only
        // dropped in place, by `set(None)`, or polled through `Pin::new_unchecked`), and the
        // other fields are not pinned (`ctx` is a reference, `waiter` is `Unpin` and only used
        // through `&mut`).
        let this = unsafe { self.get_unchecked_mut() };
        if let Poll::Ready(cause) = this.ctx.poll_cancelled(cx, &mut this.waiter) {
            this.future = None;
            return Poll::Ready(Err(cause));
        }
        let Some(future) = this.future.as_mut() else {
            panic!("tether: RunUntilCancelled polled after it completed");
        };
        // SAFETY: see above; `future` lives inside the pinned `self` and is not moved.
        match unsafe { Pin::new_unchecked(future) }.poll(cx) {
            Poll::Ready(output) => {
                this.future = None;
                Poll::Ready(Ok(output))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for RunUntilCancelled<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunUntilCancelled")
            .field("running", &self.future.is_some())
            .field("waiter", &self.waiter)
            .finish_non_exhaustive()
    }
}
