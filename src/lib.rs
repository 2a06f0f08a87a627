//! # tether: structured concurrency for threads
//!
//! tether is what Go's `context` package would look like if goroutine lifetimes were bound to
//! their scope: a **cancellation tree** with deadlines and **typed causes**, **typed scoped
//! values** ([`Key<T>`]) whose lookup does not grow with depth, separate [`Canceller`] and
//! [`Valuer`] traits, and a Go-compatible adapter.
//!
//! ```
//! use std::time::Duration;
//! use tether::{Canceller, Cause, Context, Key};
//!
//! static REQUEST_ID: Key<u64> = Key::new("request_id");
//!
//! let request = Context::new().with_value(&REQUEST_ID, 42);
//! let db_call = request.with_timeout(Duration::from_secs(2));
//!
//! // Somewhere else: the client disconnects.
//! request.cancel_with(Cause::custom(std::io::Error::other("client went away")));
//!
//! assert!(db_call.is_cancelled());
//! assert_eq!(db_call.cause().unwrap().to_string(), "client went away");
//! assert_eq!(db_call.value(&REQUEST_ID), Some(&42));
//! ```
//!
//! ## Rules of the tree
//! - Cancellation flows down, never up, and is synchronous: when `cancel` returns, every
//!   descendant is cancelled and reports the same [`Cause`]; the first cause wins.
//! - A context whose handles are all dropped uncancelled detaches from its parent and disarms its
//!   deadline: forgetting to cancel leaks nothing.
//! - Checking for cancellation ([`Canceller::is_cancelled`]) is a single atomic load.
//! - Deadlines are served by one shared timer thread, never a thread per deadline.
//!
//! Design notes live in the repository's `design/` directory.

#![deny(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

mod cancel;
mod context;
pub mod go;
mod live;
mod loom;
mod slab;
pub mod testing;
mod value;

#[cfg(all(test, loom))]
mod tests;

pub use cancel::{CallbackHandle, CallbackPanics, CancelError, Canceller, Cause, PanicSummary, SharedError};
pub use context::Context;
pub use live::{LiveCounts, live};
pub use value::{Inheritance, Key, KeyId, Valuer};

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
