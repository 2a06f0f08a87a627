//! Tower layers that carry deadlines and cancellation across processes (feature `tower`): a
//! [`ServerLayer`] that gives every request a context and cancels it when the client goes away
//! or a deadline passes, and a [`ClientLayer`] that sends the budget left on every outgoing
//! request and refuses to send without one. Being tower layers, they serve hyper, axum and tonic
//! alike. The rules are [`crate::http`]'s; design/0007 explains them.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tether::tower::ServerLayer;
//! use tether::{Canceller, Context};
//! use tower::{Layer, ServiceExt};
//!
//! let handler = tower::service_fn(|_req: http::Request<()>| async {
//!     // The request's context is ambient while the handler runs (and in the extensions).
//!     Ok::<_, Infallible>(tether::current().remaining())
//! });
//! let service = ServerLayer::new().cap(Duration::from_secs(10)).layer(handler);
//! let request = http::Request::builder().header("grpc-timeout", "2S").body(()).unwrap();
//! let left = futures_executor::block_on(service.oneshot(request)).unwrap();
//! assert!(left.unwrap() <= Duration::from_secs(2));
//! ```

mod client;
mod server;

pub use client::{ClientError, ClientFuture, ClientLayer, ClientService};
pub use server::{ServerFuture, ServerLayer, ServerService};
