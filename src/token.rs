//! Bridges between a tether [`Context`] and tokio-util's [`CancellationToken`], both ways, with no
//! thread and no runtime (cargo feature `tokio-util`).
//!
//! - [`token_from`]: a token that a context's cancellation cancels (an on-cancel callback).
//! - [`context_from`]: a context that a token's cancellation cancels, with the typed cause
//!   [`TokenCancelled`]. It polls the token's own future once, with a waker of its own; the
//!   token's cancellation wakes that waker, whose wake polls the future again, sees it ready and
//!   cancels the context. Nothing waits on a thread.
//!
//! # Invariants
//! 1. Dropping either side leaks nothing. A bridge from a context is a callback in its node: the
//!    context's cancellation runs it, and dropping the context's last handle discards it (with
//!    the token clone it holds). A bridge to a context is the token's future, held by a waker
//!    the token holds; an on-cancel callback on the new context owns a guard that drops that
//!    future (and so the token's hold on the waker) when the context is cancelled or dropped.
//! 2. The bridge to a context holds no handle of it, only a canceller (`RemoteCanceller`):
//!    a token that lives on does not keep the context registered with its parent.
//! 3. Two bridges in opposite directions terminate: cancelling an already cancelled context or
//!    token does nothing.

use crate::cancel::{CancelError, Cause};
use crate::context::{Context, RemoteCanceller};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{self, Wake, Waker};
pub use tokio_util::sync::CancellationToken;
use tokio_util::sync::WaitForCancellationFutureOwned;

/// The cause a context made by [`context_from`] is cancelled with when its token is cancelled.
///
/// # Examples
///
/// ```
/// use tether::token::{context_from, CancellationToken, TokenCancelled};
/// use tether::{Canceller, Context};
///
/// let token = CancellationToken::new();
/// let ctx = context_from(&token, &Context::new());
/// token.cancel();
/// assert!(ctx.cause().unwrap().downcast_ref::<TokenCancelled>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled through a tokio-util CancellationToken")]
pub struct TokenCancelled;

/// A [`CancellationToken`] that is cancelled when `ctx` is (at once if it already is). Cancelling
/// the token does not cancel `ctx`: bridge back with [`context_from`] for that.
///
/// # Examples
///
/// ```
/// use tether::Context;
/// let ctx = Context::new();
/// let token = tether::token::token_from(&ctx);
/// assert!(!token.is_cancelled());
/// ctx.cancel();
/// assert!(token.is_cancelled());
/// ```
pub fn token_from(ctx: &Context) -> CancellationToken {
    let token = CancellationToken::new();
    let to_cancel = token.clone();
    // Kept registered on purpose: the callback is the bridge (invariant 1).
    let _registration = ctx.on_cancel(move |_| to_cancel.cancel());
    token
}

/// A child of `parent` that is also cancelled, with [`TokenCancelled`], when `token` is (at once
/// if it already is). No thread waits for the token: its own waker does the cancelling.
///
/// # Examples
///
/// ```
/// use tether::{Canceller, Context};
/// use tether::token::{context_from, CancellationToken};
///
/// let token = CancellationToken::new();
/// let parent = Context::new();
/// let ctx = context_from(&token, &parent);
/// token.cancel();
/// assert!(ctx.is_cancelled());
/// assert!(!parent.is_cancelled());
/// ```
pub fn context_from(token: &CancellationToken, parent: &Context) -> Context {
    let ctx = parent.child();
    let Some(canceller) = ctx.remote_canceller() else { return ctx };
    let bridge =
        Arc::new(Bridge { future: Mutex::new(Some(Box::pin(token.clone().cancelled_owned()))), canceller });
    // Invariant 1: the context's end (cancelled or dropped) drops the token's future.
    let guard = DropFuture(bridge.clone());
    let _registration = ctx.on_cancel(move |_| drop(guard));
    bridge.poll();
    ctx
}

/// The token's future and what to cancel when it completes; also the waker the token wakes.
struct Bridge {
    future: Mutex<Option<Pin<Box<WaitForCancellationFutureOwned>>>>,
    canceller: RemoteCanceller,
}

impl Bridge {
    /// Polls the token's future with this bridge as the waker; cancels the context if it is
    /// ready (the token was cancelled).
    fn poll(self: &Arc<Self>) {
        let waker = Waker::from(self.clone());
        let mut cx = task::Context::from_waker(&waker);
        let mut slot = self.future.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = match slot.as_mut() {
            Some(future) => future.as_mut().poll(&mut cx).is_ready(),
            None => false, // the context is gone or cancelled already
        };
        let done = if ready { slot.take() } else { None };
        drop(slot);
        if ready {
            drop(done);
            self.canceller.cancel(CancelError::Cancelled, Cause::custom(TokenCancelled));
        }
    }
}

impl Wake for Bridge {
    fn wake(self: Arc<Self>) {
        self.poll();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.poll();
    }
}

/// Drops the token's future of a bridge when dropped (invariant 1).
struct DropFuture(Arc<Bridge>);

impl Drop for DropFuture {
    fn drop(&mut self) {
        let future = self.0.future.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(future);
    }
}
