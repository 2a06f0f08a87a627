//! The client layer: every outgoing request made under a context carries the budget it has left,
//! less a margin, and the carried values ([`Outbound`]); a request with no budget left is refused
//! without being sent; a request in flight is abandoned when the context is cancelled.
//!
//! The context is the request's [`Context`] extension if it has one, else the ambient context
//! ([`crate::current`]) when `call` runs: inside a handler served by the server layer, the
//! request's.
//!
//! # Invariants
//! 1. A refused request never reaches the inner service: `call` is not called.
//! 2. A [`ClientFuture`] checks cancellation before every poll of the inner future and drops that
//!    future as soon as the context is cancelled (dropping a hyper or tonic response future
//!    resets the stream or closes the connection, which the next hop's server layer sees as its
//!    client going away).

use crate::cancel::{Canceller, Cause, Waiter};
use crate::context::Context;
use crate::http::{Outbound, Refused};
use crate::wire::Carry;
use ::http::Request;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] for clients: sends the context's remaining budget (less a margin) as
/// `grpc-timeout` and the carried values on every request, refuses to send without a budget,
/// and abandons a request in flight when the context is cancelled.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tether::tower::{ClientError, ClientLayer};
/// use tower::{Layer, ServiceExt};
///
/// let transport = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, Infallible>(req.headers().get("grpc-timeout").cloned())
/// });
/// let client = ClientLayer::new().margin(Duration::from_millis(5)).layer(transport);
///
/// let ctx = tether::Context::new().with_timeout(Duration::from_secs(1));
/// let sent = futures_executor::block_on(ctx.bind(client.clone().oneshot(http::Request::new(()))));
/// assert!(sent.unwrap().is_some());
///
/// let spent = tether::Context::new().with_timeout(Duration::ZERO);
/// let refused = futures_executor::block_on(spent.bind(client.oneshot(http::Request::new(()))));
/// assert!(matches!(refused, Err(ClientError::Refused(_))));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientLayer {
    outbound: Arc<Outbound>,
}

impl ClientLayer {
    /// No margin, nothing carried.
    ///
    /// # Examples
    ///
    /// See [`ClientLayer`].
    pub fn new() -> Self {
        ClientLayer::default()
    }

    /// Sends `margin` less than the budget left.
    ///
    /// # Examples
    ///
    /// See [`ClientLayer`].
    pub fn margin(self, margin: Duration) -> Self {
        ClientLayer { outbound: Arc::new(Arc::unwrap_or_clone(self.outbound).margin(margin)) }
    }

    /// Writes `carry`'s keys into the request's headers.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = tether::tower::ClientLayer::new().carry(tether::wire::Carry::trace_context());
    /// ```
    pub fn carry(self, carry: Carry) -> Self {
        ClientLayer { outbound: Arc::new(Arc::unwrap_or_clone(self.outbound).carry(carry)) }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService { inner, outbound: self.outbound.clone() }
    }
}

/// The service [`ClientLayer`] wraps around a transport.
///
/// # Examples
///
/// See [`ClientLayer`].
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    outbound: Arc<Outbound>,
}

/// Why a request through [`ClientLayer`] failed.
///
/// # Examples
///
/// See [`ClientLayer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError<E> {
    /// Not sent: the context was cancelled or its budget spent (invariant 1).
    #[error(transparent)]
    Refused(Refused),
    /// Sent, then abandoned because the context was cancelled, with this cause.
    #[error("request abandoned: {0}")]
    Cancelled(#[source] Cause),
    /// The inner service failed.
    #[error(transparent)]
    Service(E),
}

impl<E> ClientError<E> {
    /// The cause, for a request refused or abandoned for lack of time or cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::tower::ClientError::<std::io::Error>::Cancelled(tether::Cause::Cancelled);
    /// assert_eq!(err.cause(), Some(&tether::Cause::Cancelled));
    /// ```
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ClientError::Refused(refused) => refused.cause(),
            ClientError::Cancelled(cause) => Some(cause),
            ClientError::Service(_) => None,
        }
    }
}

impl<S, B> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = ClientError<S::Error>;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ClientError::Service)
    }

    fn call(&mut self, mut request: Request<B>) -> ClientFuture<S::Future> {
        let ctx = request.extensions().get::<Context>().cloned().unwrap_or_else(crate::current);
        match self.outbound.inject(&ctx, request.headers_mut()) {
            Ok(()) => {
                ClientFuture { ctx, waiter: Waiter::new(), state: Flight::Sent(self.inner.call(request)) }
            }
            Err(refused) => {
                ClientFuture { ctx, waiter: Waiter::new(), state: Flight::Refused(Some(refused)) }
            }
        }
    }
}

/// Where a [`ClientFuture`] is in its life.
enum Flight<F> {
    /// Handed to the inner service; its response future.
    Sent(F),
    /// Refused before sending; taken by the first poll.
    Refused(Option<Refused>),
    /// The response came, or the request was abandoned.
    Done,
}

/// The future of a request through [`ClientLayer`].
///
/// # Cancel safety
///
/// Dropping it drops the inner response future, as without the layer.
#[must_use = "futures do nothing unless polled"]
pub struct ClientFuture<F> {
    ctx: Context,
    waiter: Waiter,
    state: Flight<F>,
}

impl<F, T, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, ClientError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the inner future (in `Flight::Sent`) is structurally pinned: it is never moved
        // out while pinned, only dropped in place by assigning `state`; `ctx` and `waiter` are not
        // pinned (`waiter` is `Unpin`, used through `&mut`).
        let this = unsafe { self.get_unchecked_mut() };
        let future = match &mut this.state {
            Flight::Refused(refused) => {
                let refused = refused.take().expect("tether: ClientFuture polled after it completed");
                this.state = Flight::Done;
                return Poll::Ready(Err(ClientError::Refused(refused)));
            }
            Flight::Done => panic!("tether: ClientFuture polled after it completed"),
            Flight::Sent(future) => future,
        };
        // Invariant 2: cancellation first.
        if let Poll::Ready(cause) = this.ctx.poll_cancelled(cx, &mut this.waiter) {
            this.state = Flight::Done;
            return Poll::Ready(Err(ClientError::Cancelled(cause)));
        }
        // SAFETY: see above; the future lives inside the pinned `self` and is not moved.
        let poll = unsafe { Pin::new_unchecked(future) }.poll(cx);
        let Poll::Ready(result) = poll else { return Poll::Pending };
        this.state = Flight::Done;
        Poll::Ready(result.map_err(ClientError::Service))
    }
}

impl<F> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Flight::Sent(_) => "sent",
            Flight::Refused(_) => "refused",
            Flight::Done => "done",
        };
        f.debug_struct("ClientFuture").field("ctx", &self.ctx).field("state", &state).finish_non_exhaustive()
    }
}
