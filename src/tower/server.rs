//! The server layer: per request, a context below the layer's parent whose deadline is the
//! earlier of the caller's `grpc-timeout` and the server's cap ([`Inbound`]); the handler finds it
//! in the request's extensions (as a [`Context`] and as the [`Incoming`] it came from) and as the
//! ambient context while its future is polled.
//!
//! # Invariants
//! 1. A [`ServerFuture`] dropped before its handler's future completed cancels the request's
//!    context before dropping that future: with [`Cause::Panicked`] when the handler's poll
//!    unwound; with the deadline's cause when the request's deadline had passed (a timeout layer
//!    outside this one, such as tonic's, dropped it at the same deadline, before the timer
//!    delivered it); else with [`ClientDisconnected`] (hyper drops it when the client goes away).
//!    Work the handler started under the context (scopes, threads, pool tasks) sees the
//!    cancellation; the handler's own drop code sees the cause.
//! 2. A completed request's context is not cancelled by the layer: it lives as long as its handles
//!    (a streaming body may hold one), then detaches; its deadline still fires.
//! 3. Dropping the future never unwinds twice: a panic of an on-cancel callback run by the
//!    cancellation is recorded for [`crate::testing::take_unhandled_panics`] when the thread is
//!    already unwinding, and re-raised otherwise.
//!
//! [`ClientDisconnected`]: crate::http::ClientDisconnected

use crate::ambient;
use crate::cancel::{Canceller, Cause, PanicSummary};
use crate::context::Context;
use crate::http::{Inbound, client_disconnected};
use crate::wire::Carry;
use ::http::Request;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::{Duration, Instant};
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] that gives every request a [`Context`]: its deadline is the earlier of the
/// caller's `grpc-timeout` and the server's cap, it is in the request's extensions and ambient
/// while the handler runs, and it is cancelled with a typed cause when the client goes away or a
/// deadline passes ([`crate::http::ClientDisconnected`], [`crate::http::CallerDeadlineExceeded`],
/// [`crate::http::ServerCapExceeded`]).
///
/// # Examples
///
/// See [the module](crate::tower).
#[derive(Clone, Debug)]
pub struct ServerLayer {
    config: Arc<Config>,
}

/// What every request of a layer shares.
#[derive(Clone, Debug)]
struct Config {
    inbound: Inbound,
    parent: Context,
}

impl Default for ServerLayer {
    fn default() -> Self {
        ServerLayer::new()
    }
}

impl ServerLayer {
    /// Requests get new root contexts, bounded by their caller's deadline alone.
    ///
    /// # Examples
    ///
    /// See [the module](crate::tower).
    pub fn new() -> Self {
        ServerLayer { config: Arc::new(Config { inbound: Inbound::new(), parent: Context::background() }) }
    }

    /// Bounds every request to `cap` from its arrival.
    ///
    /// # Examples
    ///
    /// See [the module](crate::tower).
    pub fn cap(self, cap: Duration) -> Self {
        self.map(|c| c.inbound = c.inbound.clone().cap(cap))
    }

    /// Reads `carry`'s keys from the request's headers into its context.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = tether::tower::ServerLayer::new().carry(tether::wire::Carry::trace_context());
    /// ```
    pub fn carry(self, carry: Carry) -> Self {
        self.map(|c| c.inbound = c.inbound.clone().carry(carry))
    }

    /// Makes request contexts children of `parent`: cancelling it (a server shutting down)
    /// cancels every request in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = tether::Context::new();
    /// let layer = tether::tower::ServerLayer::new().parent(&server);
    /// server.cancel(); // every request in flight sees `Cause::Cancelled`
    /// ```
    pub fn parent(self, parent: &Context) -> Self {
        self.map(|c| c.parent = parent.clone())
    }

    /// Changes the configuration (configuring happens before the layer is shared).
    fn map(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = Arc::unwrap_or_clone(self.config);
        change(&mut config);
        ServerLayer { config: Arc::new(config) }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService { inner, config: self.config.clone() }
    }
}

/// The service [`ServerLayer`] wraps around a handler. Each request gets its [`Context`] and its
/// [`crate::http::Incoming`] (which also lists the headers that could not be used) as extensions.
///
/// # Examples
///
/// See [the module](crate::tower).
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, B> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> ServerFuture<S::Future> {
        let incoming = self.config.inbound.extract(&self.config.parent, request.headers());
        let ctx = incoming.context().clone();
        let deadline = incoming.own_deadline().cloned();
        request.extensions_mut().insert(ctx.clone());
        request.extensions_mut().insert(incoming);
        // The handler's synchronous part runs under the context too.
        let future = {
            let _ambient = ambient::enter(&ctx);
            self.inner.call(request)
        };
        ServerFuture { ctx, deadline, state: State::Waiting, future }
    }
}

/// Where a [`ServerFuture`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between polls.
    Waiting,
    /// Inside the handler's poll: a drop in this state is an unwind out of it.
    Polling,
    /// The handler's future completed.
    Completed,
}

/// The future of a request served through [`ServerLayer`]: the handler's, with the request's
/// context ambient during each poll, cancelling the context if dropped unfinished.
///
/// # Cancel safety
///
/// Dropping it unfinished is how a server says the client went away: the request's context is
/// cancelled with [`crate::http::ClientDisconnected`] (invariant 1).
#[must_use = "futures do nothing unless polled"]
pub struct ServerFuture<F> {
    ctx: Context,
    /// The deadline the layer set and the cause its expiry cancels with (invariant 1).
    deadline: Option<(Instant, Cause)>,
    state: State,
    future: F,
}

impl<F: Future> Future for ServerFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: never moved out of the pinned `self` (Drop
        // only reads `ctx` and `state`); `ctx` and `state` are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        assert!(this.state != State::Completed, "tether: ServerFuture polled after it completed");
        let _ambient = ambient::enter(&this.ctx);
        this.state = State::Polling;
        // SAFETY: as above.
        let poll = unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx);
        this.state = if poll.is_ready() { State::Completed } else { State::Waiting };
        poll
    }
}

impl<F> Drop for ServerFuture<F> {
    fn drop(&mut self) {
        match self.state {
            State::Completed => {} // invariant 2
            State::Polling => {
                let summary = PanicSummary::new(None, "the request's handler panicked".into());
                self.cancel_in_drop(|ctx| ctx.cancel_with(Cause::Panicked(summary)));
            }
            State::Waiting => match self.deadline.take() {
                Some((at, cause)) if Instant::now() >= at => {
                    self.cancel_in_drop(|ctx| ctx.expire_with(cause))
                }
                _ if self.ctx.remaining() == Some(Duration::ZERO) => {
                    self.cancel_in_drop(|ctx| ctx.expire_with(Cause::DeadlineExceeded));
                }
                _ => self.cancel_in_drop(|ctx| ctx.cancel_with(client_disconnected())),
            },
        }
    }
}

impl<F> ServerFuture<F> {
    /// Runs `cancel` on the context; a panic of a callback it runs is re-raised, or recorded when
    /// this thread is already unwinding (invariant 3).
    fn cancel_in_drop(&self, cancel: impl FnOnce(&Context)) {
        let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancel(&self.ctx)));
        if let Err(payload) = cancelled {
            if std::thread::panicking() {
                crate::unhandled::record(payload);
            } else {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

impl<F> fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFuture")
            .field("ctx", &self.ctx)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
