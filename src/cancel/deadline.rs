//! One timer driver for every deadline in the process: a single lazily started thread over an
//! ordered map of pending entries. No thread per timer, no timer per node without a deadline.
//!
//! # Invariants
//! 1. An entry exists for a node only while its own deadline is pending: it is removed when the
//!    deadline fires, when the node is cancelled (by [`crate::cancel::tree`]) and when the node is
//!    dropped. Hence `live().timers` counts exactly the pending deadlines.
//! 2. The driver thread never holds the map lock while cancelling: it takes the due entries out,
//!    releases the lock, then cancels (lock order in `tree`: domain -> core -> timer map).
//! 3. The driver sleeps until the earliest entry; an insert that becomes the new earliest wakes it.
//!    Removals never wake it (an early wake-up finds nothing due and sleeps again).
//!
//! Callbacks registered on a node whose deadline fires run on the driver thread (see the
//! `cancel::tree` docs); a callback that panics there cannot be re-raised to anyone, so its payload
//! is recorded for [`crate::testing`] to report instead of being lost.

use super::Cause;
use super::tree::{self, Core};
use crate::live::{self, Kind};
use crate::loom::Arc;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Identifies one pending deadline: ordered by instant, ties broken by creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    at: Instant,
    seq: u64,
}

impl TimerKey {
    /// A fresh key for a deadline at `at`.
    pub(crate) fn new(at: Instant) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only uniqueness is needed; the map lock orders the entries themselves.
        TimerKey { at, seq: SEQ.fetch_add(1, Relaxed) }
    }
}

struct Entry {
    core: Arc<Core>,
    cause: Cause,
}

struct Driver {
    entries: Mutex<BTreeMap<TimerKey, Entry>>,
    wake: Condvar,
}

fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        std::thread::Builder::new()
            .name("tether-timer".into())
            .spawn(run)
            .expect("tether: cannot start the timer driver thread");
        Driver { entries: Mutex::new(BTreeMap::new()), wake: Condvar::new() }
    })
}

/// Arms the deadline `key` for `core`; when it fires, `core` is cancelled with
/// `DeadlineExceeded` and `cause`.
pub(crate) fn insert(key: TimerKey, core: Arc<Core>, cause: Cause) {
    let d = driver();
    let mut entries = d.entries.lock().unwrap_or_else(PoisonError::into_inner);
    let earliest = entries.first_key_value().is_none_or(|(first, _)| key < *first);
    entries.insert(key, Entry { core, cause });
    live::add(Kind::Timers, 1);
    drop(entries);
    if earliest {
        d.wake.notify_one(); // invariant 3
    }
}

/// Disarms `key` if it is still pending. Returns whether it was.
pub(crate) fn remove(key: TimerKey) -> bool {
    let d = driver();
    let removed = d.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    let was_pending = removed.is_some();
    if was_pending {
        live::add(Kind::Timers, -1);
    }
    drop(removed); // outside the lock: may drop the last reference to a core
    was_pending
}

fn run() {
    let d = driver();
    let mut entries = d.entries.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(first) = entries.first_entry() {
            if first.key().at > now {
                break;
            }
            due.push(first.remove());
        }
        if !due.is_empty() {
            live::add(Kind::Timers, -(due.len() as isize));
            drop(entries); // invariant 2
            for entry in due {
                tree::expire(&entry.core, entry.cause);
            }
            entries = d.entries.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        entries = match entries.first_key_value() {
            Some((first, _)) => {
                let timeout = first.at.saturating_duration_since(now);
                d.wake.wait_timeout(entries, timeout).unwrap_or_else(PoisonError::into_inner).0
            }
            None => d.wake.wait(entries).unwrap_or_else(PoisonError::into_inner),
        };
    }
}
