//! One timer driver for every deadline in the process: a single lazily started thread over
//! sharded ordered maps of pending entries. No thread per timer, no timer per node without a
//! deadline, and no process-wide lock on the path that arms and disarms deadlines.
//!
//! # Structure
//! Entries live in [`SHARDS`] shards; a thread arms its deadlines in the shard of its own thread
//! number, so threads that create and cancel deadlines concurrently rarely share a lock (Go's
//! runtime keeps a timer heap per P for the same reason). A shard is a binary min-heap over a
//! slab: arming pushes (O(1) for the usual increasing deadlines), disarming empties the slab slot
//! in O(1) and leaves a tombstone in the heap, purged in bulk when tombstones outnumber live
//! entries. `next_wake` publishes the instant the driver will next wake at, so arming a deadline
//! only wakes the driver when it is earlier.
//!
//! # Invariants
//! 1. An entry exists for a node only while its own deadline is pending: it is removed when the
//!    deadline fires, when the node is cancelled (by [`crate::cancel::tree`]) and when the node is
//!    released. Hence `live().timers` counts exactly the pending deadlines.
//! 2. Disarming names the key and the node, so disarming a key whose deadline already fired (and
//!    whose slot was reused) disarms nothing.
//! 3. The driver never holds a shard lock while cancelling: it takes the due entries out, releases
//!    the lock, then cancels (lock order in `tree`: domain -> core -> shard).
//! 4. No lost wake-up: before scanning the shards the driver sets `next_wake` to "unknown"
//!    (`u64::MAX`) and clears `dirty`; it publishes the earliest instant it found only under the
//!    `wake` lock and only if no insert marked `dirty` meanwhile. An insert that becomes the
//!    earliest of its shard compares with `next_wake` *after* inserting: either it reads a value
//!    from before the scan (its entry is then in the shard when the scan reads it), "unknown" (it
//!    marks `dirty` and notifies, so the driver rescans), or the published instant (it notifies
//!    if it is earlier). Removals never wake the driver: an early wake-up finds nothing due.
//!
//! Callbacks registered on a node whose deadline fires run on the driver thread (see the
//! `cancel::tree` docs); a callback that panics there cannot be re-raised to anyone, so its payload
//! is recorded for [`crate::testing`] to report instead of being lost.

use super::Cause;
use super::tree::{self, Core};
use crate::live::{self, Kind};
use crate::loom::Arc;
use crossbeam_utils::CachePadded;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Number of shards; a power of two.
const SHARDS: usize = 8;

/// `next_wake` while the driver is scanning (or has nothing to wait for): every insert notifies.
const UNKNOWN: u64 = u64::MAX;

/// Heap entries that no longer point at a live slot are purged once they outnumber the live ones
/// by this much, so cancelled deadlines do not accumulate.
const TOMBSTONE_SLACK: usize = 1024;

/// Identifies one armed deadline by shard and slot; packs into a `u32` so a node can keep it in
/// its header. Disarming also names the node, so a stale key (whose slot now holds another node's
/// deadline) disarms nothing; a node arms at most one deadline, so its own slot cannot be stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    shard: u32,
    slot: u32,
}

/// Bits of a packed key that hold the slot (the shard takes the rest).
const SLOT_BITS: u32 = 29;

impl TimerKey {
    /// The key as one `u32`; never `u32::MAX`.
    pub(crate) fn pack(self) -> u32 {
        (self.shard << SLOT_BITS) | self.slot
    }

    /// The key that `pack` returned `packed` for.
    pub(crate) fn unpack(packed: u32) -> TimerKey {
        TimerKey { shard: packed >> SLOT_BITS, slot: packed & ((1 << SLOT_BITS) - 1) }
    }
}

struct Entry {
    core: Arc<Core>,
    cause: Cause,
}

/// One shard: a min-heap of `(deadline, slot, generation)` over a slab of entries.
///
/// # Invariants
/// 1. Every live slot (`entry.is_some()`) has exactly one heap element with its generation;
///    heap elements whose slot is empty or has moved on to a newer generation are tombstones.
/// 2. `live` is the number of live slots; `free` lists exactly the empty slots.
/// 3. `heap.len() <= 2 * live + TOMBSTONE_SLACK` after every removal (tombstones are purged).
#[derive(Default)]
struct Shard {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

impl Shard {
    fn is_live(&self, slot: u32, generation: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.generation == generation && s.entry.is_some()
    }

    fn insert(&mut self, at: u64, entry: Entry) -> u32 {
        let slot = self.free.pop().unwrap_or_else(|| {
            // `- 1`: a full key must never pack to `u32::MAX`, the nodes' "no timer" marker.
            assert!(
                self.slots.len() < (1 << SLOT_BITS) - 1,
                "tether: too many pending deadlines in one shard"
            );
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.entry = Some(entry);
        self.live += 1;
        // Deadlines mostly arrive in increasing order, so this sift-up usually stops at once.
        self.heap.push(Reverse((at, slot, s.generation)));
        slot
    }

    fn take(&mut self, slot: u32, generation: u32) -> Option<Entry> {
        if !self.is_live(slot, generation) {
            return None;
        }
        let entry = self.slots[slot as usize].entry.take();
        self.free.push(slot);
        self.live -= 1;
        entry
    }

    fn remove(&mut self, slot: u32, core: usize) -> Option<Entry> {
        let s = self.slots.get(slot as usize)?;
        let ours = s.entry.as_ref().is_some_and(|e| Arc::as_ptr(&e.core) as usize == core);
        if !ours {
            return None;
        }
        let entry = self.take(slot, s.generation)?;
        if self.heap.len() > 2 * self.live + TOMBSTONE_SLACK {
            // Invariant 3: purge tombstones (linear, amortised over as many removals).
            let slots = &self.slots;
            self.heap.retain(|Reverse((_, i, g))| {
                let s = &slots[*i as usize];
                s.generation == *g && s.entry.is_some()
            });
        }
        if self.live == 0 && self.slots.len() > TOMBSTONE_SLACK {
            *self = Shard::default(); // nothing armed: give the memory back
        }
        Some(entry)
    }

    /// Moves every entry due at `now` into `due`; returns the earliest live deadline left.
    fn collect_due(&mut self, now: u64, due: &mut Vec<Entry>) -> Option<u64> {
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            let live = self.is_live(slot, generation);
            if live && at > now {
                return Some(at);
            }
            self.heap.pop(); // due, or a tombstone (dropped whatever its time: no wake-up for it)
            if live {
                due.extend(self.take(slot, generation));
            }
        }
        None
    }
}

struct Driver {
    shards: [CachePadded<Mutex<Shard>>; SHARDS],
    /// Nanoseconds after `epoch` at which the driver will next wake, or `UNKNOWN` (invariant 4).
    next_wake: AtomicU64,
    /// Set by an insert that found `next_wake` unknown or later than its deadline.
    wake: Mutex<bool>,
    wakeup: Condvar,
    epoch: Instant,
}

fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        std::thread::Builder::new()
            .name("tether-timer".into())
            .spawn(run)
            .expect("tether: cannot start the timer driver thread");
        Driver {
            shards: std::array::from_fn(|_| CachePadded::new(Mutex::new(Shard::default()))),
            next_wake: AtomicU64::new(UNKNOWN),
            wake: Mutex::new(false),
            wakeup: Condvar::new(),
            epoch: Instant::now(),
        }
    })
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Driver {
    /// `at` as nanoseconds after the epoch, saturating: an instant before the epoch is 0 (due at
    /// once), and one 584 years after it is "never" in practice.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(UNKNOWN - 1)
    }
}

/// The shard of the calling thread: threads arming deadlines concurrently mostly use different
/// shards.
fn my_shard() -> u32 {
    static THREADS: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        // Relaxed: only the spreading of threads over shards matters.
        static SHARD: u32 = THREADS.fetch_add(1, Relaxed) % SHARDS as u32;
    }
    SHARD.try_with(|s| *s).unwrap_or(0)
}

/// Arms a deadline at `at` for `core`; when it fires, `core` is cancelled with `DeadlineExceeded`
/// and `cause`. Returns the key that disarms it.
pub(crate) fn insert(at: Instant, core: Arc<Core>, cause: Cause) -> TimerKey {
    let d = driver();
    let at = d.nanos(at);
    let shard = my_shard();
    let (slot, earliest_in_shard) = {
        let mut s = locked(&d.shards[shard as usize]);
        let slot = s.insert(at, Entry { core, cause });
        let earliest = s.heap.peek().is_some_and(|Reverse((first, ..))| *first == at);
        (slot, earliest)
    };
    live::add(Kind::Timers, 1);
    // SeqCst: invariant 4 needs this load to be ordered after our insert and against the
    // driver's store of `UNKNOWN` before its scan (a store-load pattern: Acquire/Release is not
    // enough).
    if earliest_in_shard && at < d.next_wake.load(SeqCst) {
        *locked(&d.wake) = true;
        d.wakeup.notify_one();
    }
    TimerKey { shard, slot }
}

/// Disarms `key`, the deadline of the core at address `core`, if it is still pending. Returns
/// whether it was.
pub(crate) fn remove(key: TimerKey, core: usize) -> bool {
    let d = driver();
    let removed = locked(&d.shards[key.shard as usize]).remove(key.slot, core);
    let was_pending = removed.is_some();
    if was_pending {
        live::add(Kind::Timers, -1);
    }
    drop(removed); // outside the lock: may drop the last reference to a core
    was_pending
}

fn run() {
    let d = driver();
    loop {
        // Invariant 4: announce the scan before reading any shard.
        d.next_wake.store(UNKNOWN, SeqCst); // SeqCst: pairs with the load in `insert`
        *locked(&d.wake) = false;
        let now = d.nanos(Instant::now());
        let (due, earliest) = collect_due(d, now);
        if !due.is_empty() {
            live::add(Kind::Timers, -(due.len() as isize));
            for entry in due {
                tree::expire(&entry.core, entry.cause); // invariant 3: no shard lock held
            }
            continue; // time passed while firing: scan again
        }
        let mut dirty = locked(&d.wake);
        if *dirty {
            continue; // an insert raced the scan
        }
        match earliest {
            Some(at) => {
                d.next_wake.store(at, SeqCst); // SeqCst: pairs with the load in `insert`
                let timeout = Duration::from_nanos(at.saturating_sub(now)).max(Duration::from_micros(1));
                dirty = d.wakeup.wait_timeout(dirty, timeout).unwrap_or_else(PoisonError::into_inner).0;
            }
            None => dirty = d.wakeup.wait(dirty).unwrap_or_else(PoisonError::into_inner),
        }
        drop(dirty);
    }
}

/// Takes every entry due at `now` out of the shards; returns them and the earliest deadline left.
fn collect_due(d: &Driver, now: u64) -> (Vec<Entry>, Option<u64>) {
    let mut due = Vec::new();
    let mut earliest: Option<u64> = None;
    for shard in &d.shards {
        if let Some(at) = locked(shard).collect_due(now, &mut due) {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    (due, earliest)
}
