//! Structured scopes: [`scope`], [`ScopeBuilder`], the [`Scope`] handle, and the thread and
//! pool-task children a scope owns. Design: design/0002-scope.md (scopes, threads, the exit) and
//! design/0003-pool-tasks.md (tasks).
//!
//! A scope is `std::thread::scope` with cancellation added. The body runs on the calling thread
//! with a fresh node of the cancellation tree (a child of the ambient context, [`crate::current`]);
//! each spawned child (an OS thread or a pool task) has a node of its own below the scope's, so
//! cancelling the scope reaches every child, grandchild and nested scope. Leaving the scope
//! cancels what still runs, waits for it, and reports the first failure (`exit.rs`).
//!
//! # Map of the wing
//! Public handles, each with its docs:
//! - `builder.rs`: [`scope`] and [`ScopeBuilder`], opening a scope;
//! - `handle.rs`: the [`Scope`] handle, its whole surface (spawning included);
//! - `thread.rs`: [`ScopedJoinHandle`] and [`ChildBuilder`], and spawning an OS thread;
//! - `task.rs`: [`TaskHandle`], and claiming, running or skipping a pool job;
//! - `error.rs`: [`JoinError`], [`ScopeError`], [`TrySpawnError`].
//!
//! The engine:
//! - `exit.rs`: running the body, then the exit protocol, as one numbered story;
//! - `state.rs`: `ScopeState`, what the body and children share: the running count and the wait
//!   for it, the failures, the limit's slots, dropping user data under `catch_unwind`;
//! - `count.rs`: the running count's atomic and its closing (invariant 4);
//! - `failures.rs`: the panics and errors recorded in order (invariant 3), for the report;
//! - `child.rs`: what both kinds of child share: a child's life in five steps, its outcome, the
//!   guard that counts it, the marker of the scope it runs for;
//! - `task_state.rs`: a task's claimed / done / released bits (who drops a task's data);
//! - `task_queue.rs`: the scope's own queue of its tasks (helping, freeing) and the per-worker
//!   task contexts, and the ledger of its tasks for dumps;
//! - `observe.rs`: what a scope records for [`crate::dump()`] (its meta, each child's spawn site,
//!   time and thread, the ledgers) and how it describes itself (design/0008-dump.md);
//! - `watchdog.rs`: the hang watchdog, armed by the scope's cancellation on the timer driver.
//!
//! # Invariants
//! 1. No child outlives its scope: `scope` does not return (nor unwind: the body's panic is
//!    caught, and an unwinding anywhere else before the count is closed aborts the process)
//!    before the running count (invariant 4) is zero and closed, and a child counts itself out
//!    only after its last use of anything it borrowed. The [`Scope`] the children may borrow is a
//!    local of `exit::run_body_then_exit`, alive until then. The count, not the join handles, is what the exit waits for, so `mem::forget`
//!    of a handle cannot let a thread keep borrowing `'scope` data (std's scheme; see
//!    `thread.rs`, `ChildBuilder::spawn_holding`, and `tests/scope/forget.rs`).
//! 2. No child panic unwinds out of a child thread: the child catches it, records the payload in
//!    the scope's `ScopeState`, and cancels the scope. So the original payload is what step 3
//!    re-raises.
//! 3. Failures are recorded under one lock, in the order they happened: the first recorded panic
//!    or error is the first in time (as observed by that lock).
//! 4. `running` counts children spawned and not yet finished (`count.rs`): incremented on the
//!    spawning thread before the child can run, decremented as the last thing the child does.
//!    A spawner is the body or a counted child, so the count cannot reach zero while a spawn is
//!    under way. Once the body has returned and the count is zero, nothing is left that can
//!    spawn, by construction: the only code that can reach the [`Scope`] is the body, the
//!    children's closures and what they return, and a child's result (thread or task) is dropped
//!    either by its handle (on the body or a counted child) or, when the handle is gone, by the
//!    child itself before it counts out (`child.rs`, step 4; `task.rs`, "Who drops what"). The exit then closes the
//!    count (`0 -> CLOSED` in one compare-exchange), so a spawn that broke this rule would panic
//!    rather than start a child nothing waits for.
//! 5. When `scope` returns, every callback registered on the scope's context or a context below
//!    it has run or been stopped (or discarded with a context dropped uncancelled), if the
//!    cancellation that reached it is the one that reached the scope's node: the node carries a
//!    latch (`cancel::tree::Settle`) that this cancellation sets after running all the callbacks
//!    it collected, on whichever thread ran them. So a callback must not wait for its own scope
//!    to return: the scope waits for it.

mod builder;
mod child;
pub(crate) mod count;
mod error;
mod exit;
pub(crate) mod failures;
mod handle;
pub(crate) mod observe;
mod state;
mod task;
mod task_queue;
pub(crate) mod task_state;
mod thread;
mod watchdog;

pub use builder::{ScopeBuilder, scope};
pub use error::{JoinError, ScopeError, TrySpawnError};
pub use handle::Scope;
pub use task::TaskHandle;
pub use thread::{ChildBuilder, ScopedJoinHandle};
