//! The registry of live scopes: what [`dump()`](super::dump) walks. Each scope registers itself
//! as it opens and unregisters before its exit releases its state (`scope/exit.rs`), and tells
//! this module which scope the current thread works for, so a scope opened inside another's body
//! or child knows its parent.
//!
//! # Invariants
//! 1. `SCOPES` holds a strong reference to a scope's state only between `register` and
//!    `unregister`; a dump clones such references under the lock and drops them when it is done.
//!    So a dump never takes a reference to a scope that has unregistered, and the scope's owner,
//!    which waits until it holds the only reference before dropping its state (`exit.rs`,
//!    `sole_owner`), always drops it last: a dump delays an exit by at most its own length.
//! 2. No user code runs under `SCOPES`' lock (a dump formats shown values after releasing it), so
//!    a `Debug` impl that dumps, or opens a scope, cannot deadlock on it.
//!
//! # Lock order
//! `SCOPES`, then a scope's ledgers (its threads', then its task queue's), then a thread cell's
//! name. Spawning takes only one ledger; opening or closing a scope only `SCOPES`.

use super::ScopeDump;
use super::site::{self, RunningTask};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A live scope as the registry sees it: something that can describe itself.
pub(crate) trait Observed: Send + Sync {
    /// The scope's state now (weakly consistent: design/0008, "Consistency"). May run user code
    /// (the `Debug` of shown values); never called under `SCOPES`' lock (invariant 2).
    /// `running` are the pool tasks running now, of every scope (`site::running_tasks`).
    fn observe(&self, now: Instant, running: &[RunningTask]) -> ScopeDump;
}

/// Every live scope, by id (ids increase with creation, so a parent comes before its children).
static SCOPES: Mutex<BTreeMap<u64, Arc<dyn Observed>>> = Mutex::new(BTreeMap::new());
static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the scope whose body or child this thread is running; 0 when none.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// A new scope id (never 0).
pub(crate) fn next_scope_id() -> u64 {
    NEXT_SCOPE.fetch_add(1, Relaxed) // Relaxed: only uniqueness is needed
}

/// The id the next scope will get: scopes from it on opened after this call.
pub(crate) fn peek_next_scope_id() -> u64 {
    NEXT_SCOPE.load(Relaxed) // Relaxed: as in `next_scope_id`
}

/// The scope whose body or child this thread runs, if any: a new scope's parent.
pub(crate) fn current_scope() -> Option<u64> {
    CURRENT.try_with(Cell::get).ok().filter(|&id| id != 0)
}

/// Marks this thread as working for scope `id` until dropped (the body, or a child).
pub(crate) struct WorkingFor(u64);

impl WorkingFor {
    #[inline]
    pub(crate) fn enter(id: u64) -> WorkingFor {
        WorkingFor(CURRENT.try_with(|c| c.replace(id)).unwrap_or(0))
    }
}

impl Drop for WorkingFor {
    #[inline]
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.0));
    }
}

fn scopes() -> std::sync::MutexGuard<'static, BTreeMap<u64, Arc<dyn Observed>>> {
    // A poisoned lock only means a panic elsewhere: the map is always consistent.
    SCOPES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a live scope under `id`.
pub(crate) fn register(id: u64, scope: Arc<dyn Observed>) {
    scopes().insert(id, scope);
}

/// Unregisters scope `id`; drops the registry's reference outside the lock. Never unwinds.
pub(crate) fn unregister(id: u64) {
    let removed = scopes().remove(&id);
    drop(removed);
}

/// The live scopes, by id: clones taken under the lock, observed after it (invariant 2).
pub(crate) fn observe_all(now: Instant) -> Vec<ScopeDump> {
    let live: Vec<Arc<dyn Observed>> = scopes().values().cloned().collect();
    let running = site::running_tasks();
    live.iter().map(|scope| scope.observe(now, &running)).collect()
}

/// The live scopes opened since scope id `first`.
pub(crate) fn observe_since(first: u64, now: Instant) -> Vec<ScopeDump> {
    let live: Vec<Arc<dyn Observed>> = scopes().range(first..).map(|(_, s)| s.clone()).collect();
    let running = site::running_tasks();
    live.iter().map(|scope| scope.observe(now, &running)).collect()
}

/// Scope `id` and the scopes below it, if it is still registered.
pub(crate) fn observe_below(id: u64, now: Instant) -> Option<Vec<ScopeDump>> {
    let live: Vec<Arc<dyn Observed>> = {
        let scopes = scopes();
        scopes.get(&id)?;
        scopes.range(id..).map(|(_, s)| s.clone()).collect()
    };
    let running = site::running_tasks();
    let mut below = vec![id];
    let mut out = Vec::new();
    // Ids increase from parent to child, so one pass in id order finds every descendant.
    for scope in live {
        let seen = scope.observe(now, &running);
        if seen.id == id || seen.parent.is_some_and(|p| below.contains(&p)) {
            below.push(seen.id);
            out.push(seen);
        }
    }
    Some(out)
}
