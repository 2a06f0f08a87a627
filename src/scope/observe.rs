//! What a scope records for [`crate::dump()`], and how it describes itself: its [`ScopeMeta`]
//! (id, name, parent, site, owner, values, watchdog), each child's record (spawn site and time,
//! the thread that runs it), and the ledgers that list them. Design: design/0008-dump.md.
//!
//! # Where a dump finds each child
//! - **Thread children**: in the scope's ledger of thread records (`threads`). A spawn pushes one
//!   entry; nothing is removed when a child finishes (that would be a second lock per child):
//!   instead a push sweeps out the entries of children that are finished and released once the
//!   ledger has doubled since the last sweep (amortized O(1) per child), and a dump skips them.
//!   The cost is next to an OS thread's creation.
//! - **Queued tasks**: in the scope's own task queue (`task_queue.rs`), which holds every task
//!   not yet claimed anyway; the record is in the task's allocation.
//! - **Running tasks**: in the cell of the thread running them (`dump/site.rs`, `TaskActivity`),
//!   so that a task costs its scope nothing shared beyond what it cost before (no ledger entry,
//!   no reference kept alive). A finished task whose handle has not joined it is not listed.
//!
//! # Invariants
//! 1. A child's record is written by its spawner before the child is published (the ledger's
//!    lock, the queue's push, the thread's start), except a thread record's `runner` (the thread
//!    cell, set by the child's thread, Release; read by dumps, Acquire) and its `phase`.
//! 2. A listed thread child is one that was spawned and is not both finished and released (its
//!    handle joined or dropped); ledger entries of such children may linger until a sweep, and
//!    are skipped.

use super::state::ScopeState;
use super::watchdog::Armed;
use crate::cancel::Canceller;
use crate::dump::registry::{self, Observed};
use crate::dump::site::{self, RunningTask, ThreadCell};
use crate::dump::{ChildDump, ChildKind, ChildState, ScopeDump, ThreadRef, ValueDump};
use crate::value::{ShowFn, Value};
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The smallest ledger that is swept.
const SWEEP_MIN: usize = 64;

/// A value bound by `ScopeBuilder::value`, as a dump shows it.
pub(crate) struct BoundKey {
    pub(crate) name: &'static str,
    pub(crate) show: Option<(ShowFn, Value)>,
}

/// What a scope records about itself for dumps.
pub(crate) struct ScopeMeta {
    pub(crate) id: u64,
    name: Option<String>,
    parent: Option<u64>,
    pub(super) site: &'static Location<'static>,
    born: Instant,
    owner: Option<&'static ThreadCell>,
    limit: Option<usize>,
    values: Vec<BoundKey>,
    /// Child ids, in spawn order.
    next_child: AtomicU64,
    /// The thread children's records (module docs, "Where a dump finds each child").
    threads: Mutex<Ledger<Arc<ThreadRecord>>>,
    /// The watchdog's timer, once armed (`watchdog.rs`); dropped with the state, disarming it.
    pub(super) watchdog: Option<Armed>,
}

/// The configuration of [`ScopeMeta`], from the builder.
pub(crate) struct MetaConfig {
    pub(crate) name: Option<String>,
    pub(crate) site: &'static Location<'static>,
    pub(crate) limit: Option<usize>,
    pub(crate) values: Vec<BoundKey>,
}

/// A list swept of gone entries once it has doubled (module docs).
struct Ledger<T> {
    entries: Vec<T>,
    sweep_at: usize,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Ledger { entries: Vec::new(), sweep_at: SWEEP_MIN }
    }
}

impl<T> Ledger<T> {
    /// Pushes `entry`; returns the gone entries swept out, for the caller to drop outside its lock.
    fn push(&mut self, entry: T, is_gone: impl Fn(&T) -> bool) -> Vec<T> {
        self.entries.push(entry);
        if self.entries.len() < self.sweep_at {
            return Vec::new();
        }
        let (gone, kept) = std::mem::take(&mut self.entries).into_iter().partition(is_gone);
        self.entries = kept;
        self.sweep_at = (2 * self.entries.len()).max(SWEEP_MIN);
        gone
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter()
    }
}

/// What a dump reads of one child, copied under its ledger's lock and turned into a
/// [`ChildDump`] after.
pub(crate) struct RawChild {
    id: u64,
    name: Option<Arc<str>>,
    kind: ChildKind,
    site: &'static Location<'static>,
    born: Instant,
    runner: Option<&'static ThreadCell>,
    phase: Phase,
}

/// Where a child is in its life, as its record or its task state says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Queued,
    Running,
    Finished,
    /// Finished and released: not listed (invariant 2).
    Gone,
}

/// What every child records at its spawn (invariant 1).
pub(crate) struct ChildRecord {
    pub(super) id: u64,
    pub(super) site: &'static Location<'static>,
    pub(super) born: Instant,
}

/// A thread child's record: shared by the child, its handle and the ledger.
pub(crate) struct ThreadRecord {
    record: ChildRecord,
    name: Option<Arc<str>>,
    /// The cell of the child's thread; null until it starts.
    runner: AtomicPtr<ThreadCell>,
    /// `STARTED`, `FINISHED` (by the child) and `RELEASED` (by the handle) bits.
    phase: AtomicU8,
}

const STARTED: u8 = 1;
const FINISHED: u8 = 2;
const RELEASED: u8 = 4;

// ===== impl ScopeMeta =====

impl ScopeMeta {
    pub(crate) fn new(config: MetaConfig) -> ScopeMeta {
        ScopeMeta {
            id: registry::next_scope_id(),
            name: config.name,
            parent: registry::current_scope(),
            site: config.site,
            born: Instant::now(),
            owner: site::current(),
            limit: config.limit,
            values: config.values,
            next_child: AtomicU64::new(0),
            threads: Mutex::default(),
            watchdog: None,
        }
    }

    /// The scope's name, if the builder gave one (for its span, `crate::telemetry`).
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A new child's record (invariant 1).
    pub(super) fn child_record(&self, site: &'static Location<'static>) -> ChildRecord {
        // Relaxed: only uniqueness is needed.
        let id = self.next_child.fetch_add(1, Relaxed);
        ChildRecord { id, site, born: Instant::now() }
    }

    /// Records a new thread child in the ledger.
    pub(super) fn thread_spawned(
        &self,
        site: &'static Location<'static>,
        name: Option<Arc<str>>,
    ) -> ThreadHook {
        let record = Arc::new(ThreadRecord {
            record: self.child_record(site),
            name,
            runner: AtomicPtr::new(std::ptr::null_mut()),
            phase: AtomicU8::new(0),
        });
        let gone = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record.clone(), |r| r.phase() == Phase::Gone);
        drop(gone); // outside the lock
        ThreadHook(record)
    }
}

impl ChildRecord {
    /// A queued task, as a dump reads it from its scope's queue.
    pub(super) fn queued_task(&self) -> RawChild {
        RawChild {
            id: self.id,
            name: None,
            kind: ChildKind::Task,
            site: self.site,
            born: self.born,
            runner: None,
            phase: Phase::Queued,
        }
    }
}

impl ThreadRecord {
    fn phase(&self) -> Phase {
        let bits = self.phase.load(Acquire); // Acquire: pairs with the Release `fetch_or`s below
        match bits {
            b if b & FINISHED != 0 && b & RELEASED != 0 => Phase::Gone,
            b if b & FINISHED != 0 => Phase::Finished,
            b if b & STARTED != 0 => Phase::Running,
            _ => Phase::Queued,
        }
    }

    fn raw(&self) -> RawChild {
        // Acquire: pairs with the Release in `ThreadHook::started`.
        let runner = self.runner.load(Acquire);
        // SAFETY: a non-null `runner` came from a `&'static ThreadCell` (`ThreadHook::started`).
        let runner = unsafe { runner.as_ref() };
        let r = &self.record;
        RawChild {
            id: r.id,
            name: self.name.clone(),
            kind: ChildKind::Thread,
            site: r.site,
            born: r.born,
            runner,
            phase: self.phase(),
        }
    }
}

/// A thread child's hold on its record: the child marks itself started and finished through it,
/// and the handle marks it released when it drops (joined or not).
pub(super) struct ThreadHook(Arc<ThreadRecord>);

impl ThreadHook {
    /// The child's thread starts (step 2).
    pub(super) fn started(&self) {
        if let Some(cell) = site::current() {
            // Release: pairs with the Acquire in `ThreadRecord::raw`: a dump sees the cell whole.
            self.0.runner.store(std::ptr::from_ref(cell).cast_mut(), Release);
        }
        self.0.phase.fetch_or(STARTED, Release); // Release: pairs with the Acquire in `phase`
    }

    /// The child has handed its outcome over (step 4). Dropping the hook says it too (a thread
    /// the OS refused never starts, and must not stay listed).
    pub(super) fn finished(&self) {
        self.0.phase.fetch_or(FINISHED, Release); // Release: as above
    }

    /// Another hold, for the handle.
    pub(super) fn for_handle(&self) -> HandleHook {
        HandleHook(self.0.clone())
    }
}

impl Drop for ThreadHook {
    fn drop(&mut self) {
        self.finished();
    }
}

/// The handle's hold on a thread child's record: marks it released on drop.
pub(super) struct HandleHook(Arc<ThreadRecord>);

impl Drop for HandleHook {
    fn drop(&mut self) {
        self.0.phase.fetch_or(RELEASED, Release); // Release: as above
    }
}

// ===== The scope describes itself =====

impl Observed for ScopeState {
    fn observe(&self, now: Instant, running: &[RunningTask]) -> ScopeDump {
        let meta = &self.meta;
        let mut raw: Vec<RawChild> = {
            let threads = meta.threads.lock().unwrap_or_else(PoisonError::into_inner);
            threads.iter().map(|r| r.raw()).filter(|r| r.phase != Phase::Gone).collect()
        };
        self.tasks.observe_into(&mut raw);
        let mut children: Vec<ChildDump> = raw.into_iter().map(|r| child_dump(r, now)).collect();
        children.extend(running.iter().filter(|t| t.scope == meta.id).map(|t| running_task(t, now)));
        children.sort_by_key(|c| c.id);
        // A task seen queued and then running (it started during the dump): keep the later view.
        children.dedup_by(|later, earlier| {
            later.id == earlier.id && {
                std::mem::swap(later, earlier);
                true
            }
        });
        let ctx = &self.ctx;
        ScopeDump {
            id: meta.id,
            name: meta.name.clone(),
            parent: meta.parent,
            site: meta.site,
            owner: meta.owner.map_or(ThreadRef { id: 0, name: None }, |c| c.seen().into()),
            age: now.saturating_duration_since(meta.born),
            deadline_remaining: ctx.deadline().map(|d| d.saturating_duration_since(now)),
            limit: meta.limit,
            slots_in_use: self.slots_in_use(),
            running: self.running(),
            cancelled: ctx.is_cancelled(),
            cause: ctx.cause().map(|cause| shown(|| cause.to_string())),
            values: meta.values.iter().map(value_dump).collect(),
            children,
        }
    }
}

fn running_task(task: &RunningTask, now: Instant) -> ChildDump {
    let state = match task.thread.blocked {
        Some((site, since)) => ChildState::Blocked { site, for_: now.saturating_duration_since(since) },
        None => ChildState::Running,
    };
    ChildDump {
        id: task.id,
        name: None,
        kind: ChildKind::Task,
        thread: Some(task.thread.clone().into()),
        site: task.site,
        age: now.saturating_duration_since(task.born),
        state,
    }
}

fn child_dump(raw: RawChild, now: Instant) -> ChildDump {
    let seen = raw.runner.map(ThreadCell::seen);
    let state = match (raw.phase, seen.as_ref().and_then(|s| s.blocked)) {
        (Phase::Queued, _) => ChildState::Queued,
        (Phase::Running, Some((site, since))) => {
            ChildState::Blocked { site, for_: now.saturating_duration_since(since) }
        }
        (Phase::Running, None) => ChildState::Running,
        (Phase::Finished | Phase::Gone, _) => ChildState::AwaitingJoin,
    };
    ChildDump {
        id: raw.id,
        name: raw.name.as_deref().map(str::to_owned),
        kind: raw.kind,
        thread: if raw.phase == Phase::Queued { None } else { seen.map(ThreadRef::from) },
        site: raw.site,
        age: now.saturating_duration_since(raw.born),
        state,
    }
}

/// A bound value by key name, and its `Debug` for a shown key (a panic there shows as such).
fn value_dump(bound: &BoundKey) -> ValueDump {
    let value = bound.show.as_ref().map(|(show, value)| shown(|| show(&**value)));
    ValueDump { key: bound.name, value }
}

/// The text of user data (a value's `Debug`, a cause's `Display`): a panic there shows as such
/// rather than unwinding out of the dump.
fn shown(text: impl FnOnce() -> String) -> String {
    catch_unwind(AssertUnwindSafe(text)).unwrap_or_else(|_| "<panicked while formatting>".to_owned())
}
