//! Scopes, black-box: one module per concept, all in one test binary.
//!
//! # Process-wide state
//! Some tests read state the whole process shares: the live counts the leak checker compares
//! (`tether::testing::LeakCheck`, `assert_no_leaks`, `tether::live()`), the list of unhandled
//! panics (`take_unhandled_panics`), and the pool's workers (a test that needs every worker at
//! once). Those tests hold [`exclusive`], and every other test holds [`shared`], so that nothing
//! runs next to them: the one lock per binary that `tether::testing` prescribes when leak-checked
//! tests share a binary with others. A new test holds one or the other.
//!
//! Tests that size the pool cannot share a process with any other: `tests/scope_tasks_pool.rs` and
//! `tests/pool_isolation.rs` stay binaries of their own.

#[path = "../common/harness.rs"]
mod harness;

mod blocking;
mod borrowing;
mod deadlines;
mod errors;
mod exit;
mod forget;
mod join;
mod leaks;
mod limit;
mod nesting;
mod panics;
mod siblings;
mod tasks;
mod tasks_cancel;
mod values;

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Read by every test that leaves process-wide state alone, written by every test that reads it.
static PROCESS: RwLock<()> = RwLock::new(());

/// Held by a test that leaves process-wide state alone: it runs next to other such tests only.
fn shared() -> RwLockReadGuard<'static, ()> {
    PROCESS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held by a test that reads process-wide state: it runs alone, and starts with no unhandled
/// panics left over from earlier tests.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    let guard = PROCESS.write().unwrap_or_else(PoisonError::into_inner);
    tether::testing::take_unhandled_panics();
    guard
}

/// A typed error for fallible children and tasks.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("shard {0} failed")]
struct ShardFailed(u32);
