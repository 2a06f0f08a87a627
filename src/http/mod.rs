//! Deadlines and carried values on `http::HeaderMap` (feature `http`): what a server takes from a
//! request's headers ([`Inbound`]) and what a client puts on an outgoing request ([`Outbound`]).
//! The `tower` feature wraps both into layers; the formats are [`crate::wire`]'s. design/0007
//! gives the rules.
//!
//! # Invariants
//! 1. A request's deadline is the earliest of: the caller's `grpc-timeout` (counted from when the
//!    headers are read), the server's cap, and the parent context's deadline. No header, however
//!    malformed, absurd or repeated, makes it later than it would be without that header.
//! 2. A malformed `grpc-timeout` is ignored (the cap and the parent still apply) and reported in
//!    [`Incoming::errors`]; repeated ones count by their earliest valid value.
//! 3. [`Outbound::inject`] never sends more budget than the context has left, less the margin,
//!    nor more than a `grpc-timeout` the request already carries; with no budget left it refuses
//!    and sends nothing.

mod cause;

#[cfg(feature = "tower")]
pub(crate) use cause::client_disconnected;
pub use cause::{CallerDeadlineExceeded, ClientDisconnected, ServerCapExceeded};

use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use crate::wire::grpc_timeout::{self, GrpcTimeoutError};
use crate::wire::{Carry, CarryError};
use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, Instant};

/// The `grpc-timeout` header name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static(crate::wire::GRPC_TIMEOUT_HEADER);

/// What a server takes from a request's headers: the caller's deadline, capped by its own, and
/// the carried values.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tether::Canceller;
/// use tether::http::{Inbound, Limit};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("grpc-timeout", "100m".parse().unwrap());
/// let inbound = Inbound::new().cap(Duration::from_secs(30));
/// let incoming = inbound.extract(&tether::Context::background(), &headers);
/// assert_eq!(incoming.limit(), Some(Limit::Caller));
/// assert!(incoming.context().remaining().unwrap() <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    cap: Option<Duration>,
    carry: Carry,
}

/// Which deadline bounds a request: the one its caller sent or the server's cap.
///
/// # Examples
///
/// See [`Inbound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The caller's `grpc-timeout`; expiry cancels with [`CallerDeadlineExceeded`].
    Caller,
    /// The server's cap; expiry cancels with [`ServerCapExceeded`].
    ServerCap,
}

/// A header that was present but could not be used.
///
/// # Examples
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("grpc-timeout", "soon".parse().unwrap());
/// let incoming = tether::http::Inbound::new().extract(&tether::Context::background(), &headers);
/// assert_eq!(incoming.errors()[0].to_string(), "grpc-timeout has 's' where a digit belongs");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A `grpc-timeout` value that does not follow the protocol.
    #[error(transparent)]
    GrpcTimeout(#[from] GrpcTimeoutError),
    /// A carried value its codec rejected.
    #[error(transparent)]
    Carried(#[from] CarryError),
}

/// A request's context, which deadline bounds it, and the headers that could not be used: what
/// [`Inbound::extract`] returns and the server layer puts in the request's extensions.
///
/// # Examples
///
/// See [`Inbound`].
#[derive(Clone, Debug)]
pub struct Incoming {
    context: Context,
    limit: Option<Limit>,
    /// The deadline the headers or the cap set, and the cause its expiry cancels with (read by
    /// the server layer).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    own_deadline: Option<(Instant, Cause)>,
    errors: Vec<HeaderError>,
}

impl Incoming {
    /// The request's context.
    ///
    /// # Examples
    ///
    /// See [`Inbound`].
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Which deadline bounds the request, if any (a deadline inherited from the parent context
    /// is neither).
    ///
    /// # Examples
    ///
    /// See [`Inbound`].
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// The headers that were present but unusable (invariant 2). A gRPC server may answer
    /// `INTERNAL` for a malformed `grpc-timeout`, as grpc-go does; an HTTP server may ignore it.
    ///
    /// # Examples
    ///
    /// See [`HeaderError`].
    pub fn errors(&self) -> &[HeaderError] {
        &self.errors
    }

    /// The deadline the headers or the cap set and its cause, if any (not the parent's).
    #[cfg(feature = "tower")]
    pub(crate) fn own_deadline(&self) -> Option<&(Instant, Cause)> {
        self.own_deadline.as_ref()
    }
}

impl Inbound {
    /// No cap, nothing carried: the caller's `grpc-timeout` alone bounds a request.
    ///
    /// # Examples
    ///
    /// ```
    /// let incoming = tether::http::Inbound::new().extract(&tether::Context::background(), &http::HeaderMap::new());
    /// assert_eq!(incoming.limit(), None);
    /// ```
    pub fn new() -> Self {
        Inbound::default()
    }

    /// Bounds every request to `cap` from its arrival, whatever its caller sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tether::http::{Inbound, Limit};
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("grpc-timeout", "1H".parse().unwrap());
    /// let incoming = Inbound::new().cap(Duration::from_secs(1)).extract(&tether::Context::background(), &headers);
    /// assert_eq!(incoming.limit(), Some(Limit::ServerCap));
    /// ```
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Reads the values of `carry`'s keys from their headers into each request's context.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::wire::{Carry, TRACE_PARENT};
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    /// let inbound = tether::http::Inbound::new().carry(Carry::trace_context());
    /// let incoming = inbound.extract(&tether::Context::background(), &headers);
    /// assert!(incoming.context().value(&TRACE_PARENT).is_some());
    /// ```
    pub fn carry(mut self, carry: Carry) -> Self {
        self.carry = carry;
        self
    }

    /// A new context below `parent` for a request with `headers`, its deadline the earliest of the
    /// caller's, the cap and the parent's (invariant 1), with the carried values bound.
    ///
    /// # Examples
    ///
    /// See [`Inbound`].
    pub fn extract(&self, parent: &Context, headers: &HeaderMap) -> Incoming {
        let arrived = Instant::now();
        let mut errors = Vec::new();
        let caller = caller_budget(headers, &mut errors).and_then(|budget| arrived.checked_add(budget));
        let cap = self.cap.and_then(|cap| arrived.checked_add(cap));
        let own_deadline = match (caller, cap) {
            (Some(at), Some(cap_at)) if cap_at < at => Some((cap_at, cause::server_cap(), Limit::ServerCap)),
            (Some(at), _) => Some((at, cause::caller_deadline(), Limit::Caller)),
            (None, Some(cap_at)) => Some((cap_at, cause::server_cap(), Limit::ServerCap)),
            (None, None) => None,
        };
        let context = match &own_deadline {
            Some((at, cause, _)) => parent.with_deadline_cause(*at, cause.clone()),
            None => parent.child(),
        };
        let limit = own_deadline.as_ref().map(|(_, _, limit)| *limit);
        let own_deadline = own_deadline.map(|(at, cause, _)| (at, cause));
        let (context, carried) =
            self.carry.extract(&context, |name| headers.get(name).map(HeaderValue::as_bytes));
        errors.extend(carried.into_iter().map(HeaderError::Carried));
        Incoming { context, limit, own_deadline, errors }
    }
}

/// The earliest valid `grpc-timeout` in `headers`; the invalid ones go to `errors`.
fn caller_budget(headers: &HeaderMap, errors: &mut Vec<HeaderError>) -> Option<Duration> {
    let mut earliest: Option<Duration> = None;
    for value in headers.get_all(GRPC_TIMEOUT) {
        match grpc_timeout::decode(value.as_bytes()) {
            Ok(budget) => earliest = Some(earliest.map_or(budget, |e| e.min(budget))),
            Err(e) => errors.push(e.into()),
        }
    }
    earliest
}

/// What a client puts on an outgoing request: the budget its context has left, less a margin,
/// and the carried values.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::http::Outbound;
///
/// let ctx = tether::Context::new().with_timeout(Duration::from_secs(2));
/// let mut headers = http::HeaderMap::new();
/// Outbound::new().margin(Duration::from_millis(50)).inject(&ctx, &mut headers).unwrap();
/// let sent = tether::wire::grpc_timeout::decode(headers["grpc-timeout"].as_bytes()).unwrap();
/// assert!(sent <= Duration::from_millis(1950));
///
/// let spent = tether::Context::new().with_timeout(Duration::ZERO);
/// assert!(Outbound::new().inject(&spent, &mut headers).is_err(), "nothing is sent without a budget");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    margin: Duration,
    carry: Carry,
}

/// Why a request was not sent: [`Outbound::inject`] and the client layer.
///
/// # Examples
///
/// ```
/// use tether::http::{Outbound, Refused};
/// let ctx = tether::Context::new();
/// ctx.cancel();
/// let err = Outbound::new().inject(&ctx, &mut http::HeaderMap::new()).unwrap_err();
/// assert_eq!(err.cause(), Some(&tether::Cause::Cancelled));
/// assert_eq!(err.to_string(), "request not sent: context canceled");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The context is cancelled, with this cause; or its budget less the margin is spent
    /// ([`Cause::DeadlineExceeded`] until the deadline's own cause is delivered).
    #[error("request not sent: {0}")]
    Cancelled(#[source] Cause),
    /// A carried value's codec wrote bytes a header value cannot hold.
    #[error("request not sent: the value of header {0} is not a valid header value")]
    InvalidHeader(&'static str),
}

impl Refused {
    /// The cause, when the request was refused for lack of time or cancellation.
    ///
    /// # Examples
    ///
    /// See [`Refused`].
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Refused::Cancelled(cause) => Some(cause),
            Refused::InvalidHeader(_) => None,
        }
    }
}

impl Outbound {
    /// No margin, nothing carried.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// tether::http::Outbound::new().inject(&tether::Context::new(), &mut headers).unwrap();
    /// assert!(headers.is_empty(), "no deadline, nothing carried: nothing written");
    /// ```
    pub fn new() -> Self {
        Outbound::default()
    }

    /// Sends `margin` less than the budget left: time kept for this hop to receive and handle the
    /// answer, and the network's transit.
    ///
    /// # Examples
    ///
    /// See [`Outbound`].
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Writes the values of `carry`'s keys into their headers on every request.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::wire::{Carry, TraceParent, TRACE_PARENT};
    /// let tp = TraceParent::new([1; 16], [2; 8], 1).unwrap();
    /// let ctx = tether::Context::new().with_value(&TRACE_PARENT, tp);
    /// let mut headers = http::HeaderMap::new();
    /// tether::http::Outbound::new().carry(Carry::trace_context()).inject(&ctx, &mut headers).unwrap();
    /// assert_eq!(headers["traceparent"], tp.to_string());
    /// ```
    pub fn carry(mut self, carry: Carry) -> Self {
        self.carry = carry;
        self
    }

    /// Writes the budget `ctx` has left less the margin as `grpc-timeout` (rounded down, and never
    /// more than a `grpc-timeout` already there), and the carried values.
    ///
    /// # Errors
    ///
    /// [`Refused::Cancelled`] when `ctx` is cancelled or its budget less the margin is spent;
    /// [`Refused::InvalidHeader`] when a carried value cannot be a header value. Nothing is
    /// written then.
    ///
    /// # Examples
    ///
    /// See [`Outbound`].
    pub fn inject(&self, ctx: &Context, headers: &mut HeaderMap) -> Result<(), Refused> {
        if let Some(cause) = ctx.cause() {
            return Err(Refused::Cancelled(cause));
        }
        let budget = match ctx.remaining() {
            Some(left) => match left.checked_sub(self.margin).filter(|b| !b.is_zero()) {
                Some(budget) => Some(budget),
                None => return Err(Refused::Cancelled(ctx.cause().unwrap_or(Cause::DeadlineExceeded))),
            },
            None => None,
        };
        let mut carried = Vec::new();
        let mut invalid = None;
        self.carry.inject(ctx, |name, value| match HeaderValue::try_from(value) {
            Ok(value) => carried.push((name, value)),
            Err(_) => invalid = invalid.or(Some(name)),
        });
        if let Some(name) = invalid {
            return Err(Refused::InvalidHeader(name));
        }
        if let Some(budget) = budget {
            let already = caller_budget(headers, &mut Vec::new());
            let budget = already.map_or(budget, |a| a.min(budget));
            let value = HeaderValue::try_from(grpc_timeout::encode_within(budget))
                .expect("tether: digits and a unit");
            headers.insert(GRPC_TIMEOUT, value);
        }
        for (name, value) in carried {
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(())
    }
}
