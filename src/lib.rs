//! # tether: structured concurrency for threads, pool tasks and futures
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
//! - Deadlines are served by one shared timer driver thread, never a thread per deadline; the
//!   cancellations they cause (and the callbacks those run) run on its firer threads, so a
//!   callback that blocks or panics never stops the other deadlines.
//!
//! ## Scopes
//! [`scope`] is `std::thread::scope` with cancellation: children borrow from the stack, get their
//! own [`Context`] (as an argument and ambiently, [`current`]), and leaving the scope cancels
//! what still runs, joins it, and reports the first failure without losing the others.
//!
//! ```
//! use std::time::Duration;
//! use tether::ScopeBuilder;
//!
//! let shards = [10, 20, 30];
//! let total: u32 = ScopeBuilder::new()
//!     .timeout(Duration::from_secs(5))
//!     .run(|s| {
//!         let handles: Vec<_> = shards.iter().map(|n| s.spawn(move |_ctx| n * 2)).collect();
//!         handles.into_iter().map(|h| h.join().unwrap()).sum()
//!     })
//!     .unwrap();
//! assert_eq!(total, 120);
//! ```
//!
//! Besides threads, a scope owns lightweight **pool tasks** ([`Scope::spawn_task`]): the same
//! semantics, on one shared work-stealing pool ([`pool`]), for the cost of an allocation instead
//! of an OS thread. A task cancelled before it starts is skipped, and a thread waiting for tasks
//! runs pending ones instead of blocking. Use tasks for computation, threads for blocking work.
//!
//! ```
//! fn sum(v: &[u64]) -> u64 {
//!     if v.len() <= 1024 {
//!         return v.iter().sum();
//!     }
//!     let (l, r) = v.split_at(v.len() / 2);
//!     tether::scope(|s| {
//!         let l = s.spawn_task(|_| sum(l));
//!         sum(r) + l.join().unwrap()
//!     })
//!     .unwrap()
//! }
//! let v: Vec<u64> = (0..100_000).collect();
//! assert_eq!(sum(&v), 99_999 * 100_000 / 2);
//! ```
//!
//! For a divide-and-conquer that forks at every level, [`join`] is the cheaper form: two
//! closures under one child context, the first panic (or [`try_join`]'s first `Err`) cancelling
//! the other, the second half offered to the other workers and taken back if none took it, with
//! no allocation for the halves (rayon's `join`, with a scope's semantics).
//!
//! ## Async
//! A context can be awaited ([`Canceller::cancelled`], [`Context::run_until_cancelled`]) under any
//! executor, made ambient inside a future ([`Context::bind`], [`propagate`]), and a scope can own
//! async children: borrowing ones polled by the scope's own future ([`async_scope`]), tokio tasks
//! (`tokio_scope`, feature `tokio`), or a future on a thread child ([`Scope::spawn_future`]).
//! tokio-util's `CancellationToken` bridges both ways (`token`, feature `tokio-util`).
//!
//! ```
//! use tether::{Canceller, Cause, Context};
//!
//! let request = Context::new();
//! let total = futures_executor::block_on(request.bind(tether::async_scope(|s| {
//!     Box::pin(async move {
//!         let slow = s.spawn(|ctx| async move { ctx.cancelled_owned().await });
//!         let fast = s.spawn(|_| async { 2 + 2 });
//!         let four = fast.await.unwrap();
//!         s.cancel(); // stop the slow one; it sees why
//!         assert_eq!(slow.await.unwrap(), Cause::Cancelled);
//!         four
//!     })
//! })))
//! .unwrap();
//! assert_eq!(total, 4);
//! ```
//!
//! ## Across processes
//! A request's deadline crosses to the next service as gRPC's `grpc-timeout` and its values only
//! for keys that opt in ([`wire`]); tower layers (feature `tower`) give each incoming request a
//! context bounded by its caller's deadline, cancel it with a typed cause when the client goes
//! away (stopping the threads and pool tasks the handler started under it), and send the budget
//! left on every outgoing call. `Canceller::remaining` is that budget.
//!
//! Design notes live in the repository's `design/` directory.
//!
//! ## Map of the modules
//! Each public type is a thin handle; the engine behind it is private and holds the invariants,
//! each in the `//!` docs of its file.
//!
//! | module | holds | |
//! | --- | --- | --- |
//! | `context` | [`Context`]: the handle to a node of the cancellation tree and its values | handle |
//! | `cancel` | [`Canceller`], [`Cause`], callbacks, awaiting ([`Cancelled`], [`Waiter`]); `tree` (the nodes, propagation, release), `deadline` (the timer driver and its firers) | handle / engine |
//! | `value` | [`Key`], [`Valuer`], the persistent map of bound values | handle / engine |
//! | `ambient` | [`current`], [`with_current`]: the context of the running thread; [`WithContext`] and [`propagate`] for futures | handle |
//! | `scope` | [`scope`], [`ScopeBuilder`], [`Scope`], join handles (`builder`, `handle`, `thread`, `task`); the exit, the scope's state, children's life, the task queue (`exit`, `state`, `child`, `task_queue`, `count`, `task_state`); what a scope records for dumps and its watchdog (`observe`, `watchdog`) | handle / engine |
//! | [`pool`] | the shared work-stealing pool that runs scope tasks | engine (configuration public) |
//! | `async_scope` | [`async_scope`]: borrowing async children polled by the scope's own future | handle / engine |
//! | `tokio_scope` | `tokio_scope` (feature `tokio`): children as tokio tasks | handle / engine |
//! | `token` | bridges to tokio-util's `CancellationToken` (feature `tokio-util`) | handle |
//! | [`blocking`] | cancellable sleep and channel receives | handle |
//! | [`dump`](mod@dump) | [`dump()`], [`Dump`]: a snapshot of live scopes and children, as text and JSON; `registry` (the live scopes), `site` (per-thread cells, the wait-site hook), `json` | handle / engine |
//! | [`go`] | Go's `context` API on the tree, checked against Go | handle over the tree |
//! | `telemetry` | the hooks for `tracing` spans and events and `metrics` gauges and counters (features `tracing`, `metrics`) | engine |
//! | `signal` | `signal::notify`: signals as typed causes (feature `signal`, Unix) | handle / engine |
//! | `live`, `unhandled` | the process-wide live counts and thread registry; the sink for panics with no caller | engine |
//! | `watcher`, `block_on` | one thread waiting on many done channels; a thread driving one future | engine |
//! | [`testing`] | the leak checker and [`testing::take_unhandled_panics`] | handle |
//! | `http` | inject and extract on `http::HeaderMap` (feature `http`): `Inbound`, `Outbound`, the request causes | handle |
//! | `tower` | the server and client layers (feature `tower`): a context per request, cancelled when the client goes away; the budget sent on | handle |
//! | [`wire`] | what crosses between processes: `grpc-timeout`, W3C `traceparent`/`baggage`, the opt-in [`wire::Carry`] of values | handle (formats) |
//! | `slab`, `loom` | the slab of registered children; the std/loom atomics switch | engine |

#![deny(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

mod ambient;
mod async_scope;
mod block_on;
pub mod blocking;
mod cancel;
mod context;
pub mod dump;
pub mod go;
#[cfg(feature = "http")]
pub mod http;
mod join;
mod live;
mod loom;
pub mod pool;
mod scope;
#[cfg(all(feature = "signal", unix))]
pub mod signal;
mod slab;
mod telemetry;
pub mod testing;
#[cfg(feature = "tokio-util")]
pub mod token;
#[cfg(feature = "tokio")]
mod tokio_scope;
#[cfg(feature = "tower")]
pub mod tower;
mod unhandled;
mod value;
mod watcher;
pub mod wire;

#[cfg(all(test, loom))]
mod tests;

pub use ambient::{WithContext, current, propagate, with_current};
pub use async_scope::{AsyncJoinHandle, AsyncScope, AsyncScopeFuture, ScopeBody, async_scope};
pub use cancel::{
    CallbackHandle, CallbackPanics, CancelError, Cancelled, CancelledOwned, Canceller, Cause, Done,
    PanicSummary, RunUntilCancelled, SharedError, Waiter,
};
pub use context::Context;
pub use dump::{Dump, dump};
pub use join::{join, try_join};
pub use live::{LiveCounts, live};
pub use scope::{
    ChildBuilder, JoinError, Scope, ScopeBuilder, ScopeError, ScopedJoinHandle, TaskHandle, TrySpawnError,
    scope,
};
#[cfg(feature = "tokio")]
pub use tokio_scope::{TokioJoinHandle, TokioScope, tokio_scope};
pub use value::{Inheritance, Key, KeyId, Valuer};

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// design/0000's code blocks (its Surface pins every public signature), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0000-tether.md")]
pub struct Design0000Doctests;

/// design/0001's code blocks (its Surface pins the tree's signatures), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0001-cancellation-tree.md")]
pub struct Design0001Doctests;

/// design/0002's code blocks (its Surface pins the scope's signatures), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0002-scope.md")]
pub struct Design0002Doctests;

/// design/0003's code blocks (its Surface pins the task and pool signatures), compiled as doc
/// tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0003-pool-tasks.md")]
pub struct Design0003Doctests;

/// design/0004's code blocks, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0004-leak-freedom.md")]
pub struct Design0004Doctests;

/// design/0005's code blocks (its Surface pins the Go adapter's signatures), compiled as doc
/// tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0005-go-adapter.md")]
pub struct Design0005Doctests;

/// design/0008's code blocks (its Surface pins the dump's signatures), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0008-dump.md")]
pub struct Design0008Doctests;

/// design/0009's code blocks (its Surface pins `tether::signal`'s signatures; they are compiled
/// with the `signal` feature, on Unix), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0009-tracing-metrics-signals.md")]
pub struct Design0009Doctests;

/// design/0006's code blocks (its Surface pins the async signatures; the feature-gated ones are
/// pinned by the doc tests of `tokio_scope.rs` and `token.rs`), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0006-async.md")]
pub struct Design0006Doctests;

/// design/0007's code blocks (its Surface pins the wire formats' signatures; the feature-gated
/// ones are pinned by the doc tests of `http/` and `tower/`), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0007-deadlines-across-processes.md")]
pub struct Design0007Doctests;
/// design/0010's code blocks (its Surface pins the blocking helpers' signatures), compiled as doc
/// tests.
#[cfg(doctest)]
#[doc = include_str!("../design/0010-blocking.md")]
pub struct Design0010Doctests;
