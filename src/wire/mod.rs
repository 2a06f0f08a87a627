//! What crosses the wire between processes, and why: the formats of the deadline and of the
//! values a request carries, with no dependency (the `http` and `tower` features put them on
//! `http::HeaderMap`s; design/0007).
//!
//! - **The deadline** crosses as a budget, never as an instant (clocks of two machines do not
//!   agree): `grpc-timeout` ([`grpc_timeout`]), written from [`Canceller::remaining`] by the
//!   client and turned back into a deadline by the server when the request arrives. The time in
//!   transit is thereby subtracted, never added, and what a hop sends is rounded down
//!   ([`grpc_timeout::encode_within`]), so a chain of hops never extends the first deadline.
//! - **Cancellation** does not cross as a message: a caller that gives up closes its stream or
//!   connection, and the server sees the request go away (the `tower` server layer).
//! - **Values** cross only for the keys registered in a [`Carry`], each with a codec. Nothing by
//!   default: a context's values are not meant for every server a request reaches. The W3C
//!   trace context ([`TraceParent`], [`Baggage`], [`trace_context`]) is the usual opt-in, under the
//!   keys [`TRACE_PARENT`] and [`BAGGAGE`].
//!
//! [`Canceller::remaining`]: crate::Canceller::remaining

mod carry;
pub mod grpc_timeout;
pub mod trace_context;

pub use carry::{Carry, CarryError};
pub use grpc_timeout::GrpcTimeoutError;
pub use trace_context::{Baggage, TraceContextError, TraceParent};

use crate::value::Key;

/// The header that carries the caller's remaining budget (gRPC over HTTP/2).
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// The W3C trace-parent header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C baggage header.
pub const BAGGAGE_HEADER: &str = "baggage";

/// The key of the incoming (or current) W3C trace parent, carried by [`Carry::trace_context`].
///
/// # Examples
///
/// ```
/// use tether::wire::{TraceParent, TRACE_PARENT};
/// let tp = TraceParent::new([1; 16], [2; 8], 1).unwrap();
/// let ctx = tether::Context::new().with_value(&TRACE_PARENT, tp);
/// assert_eq!(ctx.value(&TRACE_PARENT), Some(&tp));
/// ```
pub static TRACE_PARENT: Key<TraceParent> = Key::new("traceparent");

/// The key of the W3C baggage, carried by [`Carry::trace_context`].
///
/// # Examples
///
/// ```
/// use tether::wire::{Baggage, BAGGAGE};
/// let ctx = tether::Context::new().with_value(&BAGGAGE, Baggage::parse("k=v").unwrap());
/// assert_eq!(ctx.value(&BAGGAGE).unwrap().get("k"), Some("v"));
/// ```
pub static BAGGAGE: Key<Baggage> = Key::new("baggage");
