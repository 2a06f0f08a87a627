//! One timer driver for every deadline in the process: a single lazily started thread over
//! sharded ordered maps of pending entries, which hands the entries that come due to a few firer
//! threads. No thread per timer, no timer per node without a deadline, and no process-wide lock
//! on the path that arms and disarms deadlines.
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
//! The driver only moves due entries out of the shards and onto the firers' queue. A firer
//! (`tether-timer-firer`) takes them in order and fires each: it cancels the node and drops the
//! entry. Usually one firer serves the whole process; more are started only while firers are
//! stuck in user code, and they exit when idle.
//!
//! # Invariants
//! 1. An entry exists for a node only while its own deadline is pending: it is removed when the
//!    deadline comes due (taken by the driver), when the node is cancelled (by
//!    [`crate::cancel::tree`]) and when the node is released. Hence `live().timers` counts
//!    exactly the pending deadlines.
//! 2. Disarming names the key and the node, so disarming a key whose deadline already fired (and
//!    whose slot was reused) disarms nothing.
//! 3. The driver runs no user code. It moves due entries out of a shard under its lock and onto
//!    the firers' queue under the queue lock (never both at once), and drops none of them: an
//!    entry holds the expiry cause and a reference to the node, either of which may be the last
//!    one. Firers cancel and drop entries with no driver lock held (lock order in `tree`:
//!    domain -> core -> shard; the queue and `wake` locks are leaves).
//! 4. No lost wake-up: before scanning the shards the driver sets `next_wake` to "unknown"
//!    (`u64::MAX`) and clears `dirty`; it publishes the earliest instant it found only under the
//!    `wake` lock and only if no insert marked `dirty` meanwhile. An insert that becomes the
//!    earliest of its shard compares with `next_wake` *after* inserting: either it reads a value
//!    from before the scan (its entry is then in the shard when the scan reads it), "unknown" (it
//!    marks `dirty` and notifies, so the driver rescans), or the published instant (it notifies
//!    if it is earlier). Removals never wake the driver: an early wake-up finds nothing due.
//! 5. No entry waits behind user code for long: while the queue is not empty, the driver wakes at
//!    least every [`STALL`], and starts a firer when none exists, or when none is waiting or
//!    starting and none has taken an entry for `STALL` (then each firer has been inside one
//!    entry's user code for that long). So the oldest queued entry is fired about `STALL`, plus a
//!    thread start, after the firers stopped taking entries, however long they stay stuck.
//! 6. Few firers: at most one waits for work. A firer that finds the queue empty while another
//!    waits exits, and the waiting one exits after [`SPARE_IDLE`] without work. So the firers
//!    alive are those inside an entry, those starting, and at most one spare.
//!
//! # Where deadline-fired code runs
//! When a deadline fires, everything that may run user code runs on a firer thread, never on the
//! driver: the cancellation of the node and its subtree ([`tree::expire`]), the on-cancel
//! callbacks that cancellation collected (including the Go adapter's `after_func`s), and the drop
//! of the entry, with its cause and possibly the last reference to the node (whose release drops
//! its values and discards unrun callbacks). Each runs under `catch_unwind`; a panic cannot be
//! re-raised to anyone, so its payload is recorded for [`crate::testing`] to report instead of
//! being lost, and the firer carries on.
//!
//! A callback that blocks holds its firer thread for as long as it blocks. The deadlines that come
//! due meanwhile are fired by another firer, about [`STALL`] late (plus a thread start), and on
//! time again once it runs; callbacks blocked at once hold one thread each, as Go runs each
//! `AfterFunc` on its own goroutine. Firers are not scope threads: `live().threads` does not
//! count them, so leak checks ([`crate::testing`]) never report them.

use super::Cause;
use super::tree::{self, Core};
use crate::live::{self, Counter};
use crate::loom::Arc;
use crossbeam_utils::CachePadded;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Number of shards; a power of two.
const SHARDS: usize = 8;

/// `next_wake` while the driver is scanning (or has nothing to wait for): every insert notifies.
const UNKNOWN: u64 = u64::MAX;

/// How long every firer may stay inside one entry (in user code) while entries are queued before
/// the driver starts another firer (invariant 5). Shorter costs the driver more wake-ups while
/// entries are queued, and threads for callbacks that are merely slow; longer delays the
/// deadlines queued behind a blocking callback.
const STALL: Duration = Duration::from_millis(1);

/// How long the one waiting firer waits for work before it exits too (invariant 6).
const SPARE_IDLE: Duration = Duration::from_secs(5);

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
    /// The threads that fire the entries the driver hands over.
    firers: Firers,
}

/// The firer threads and the queue of expired entries they take from (invariants 3, 5 and 6).
struct Firers {
    state: Mutex<FirerState>,
    /// Notified when entries are queued: wakes the spare firer, if one waits.
    work: Condvar,
}

/// Guarded by `Firers::state`.
///
/// # Invariants
/// 1. `threads` counts the firer threads that have been started and have not yet decided to exit;
///    `starting <= threads` of them have not yet looked at the queue, and `waiting <= 1` are
///    waiting for work (invariant 6 of the module).
/// 2. `threads - starting - waiting` firers are taking, firing or finished with an entry, each
///    having taken it at or before `last_take`.
struct FirerState {
    /// Expired entries, in the order the driver found them, waiting for a firer.
    queue: VecDeque<Entry>,
    threads: usize,
    starting: usize,
    waiting: usize,
    /// When a firer last took an entry from the queue.
    last_take: Instant,
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
            firers: Firers {
                state: Mutex::new(FirerState {
                    queue: VecDeque::new(),
                    threads: 0,
                    starting: 0,
                    waiting: 0,
                    last_take: Instant::now(),
                }),
                work: Condvar::new(),
            },
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
    live::add(Counter::Timers, 1);
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
        live::add(Counter::Timers, -1);
    }
    drop(removed); // outside the lock: may drop the last reference to a core
    was_pending
}

/// The driver's loop: moves due entries to the firers and sleeps until the next deadline, or
/// until the firers need checking on (invariant 5). Runs no user code (invariant 3).
fn run() {
    let d = driver();
    loop {
        // Invariant 4: announce the scan before reading any shard.
        d.next_wake.store(UNKNOWN, SeqCst); // SeqCst: pairs with the load in `insert`
        *locked(&d.wake) = false;
        let now = Instant::now();
        let since_epoch = d.nanos(now);
        let (due, earliest) = collect_due(d, since_epoch);
        let fired = !due.is_empty();
        if fired {
            live::add(Counter::Timers, -(due.len() as isize));
        }
        // Invariant 3: no shard lock held; the entries are moved, not dropped.
        let recheck = d.firers.hand_over(due, now);
        if fired {
            continue; // time passed while handing over: scan again
        }
        let mut dirty = locked(&d.wake);
        if *dirty {
            continue; // an insert raced the scan
        }
        if let Some(at) = earliest {
            d.next_wake.store(at, SeqCst); // SeqCst: pairs with the load in `insert`
        }
        // Waking earlier than `next_wake` for the firers is harmless: an early scan finds nothing
        // due (invariant 4 only needs the driver never to sleep past it).
        let until_deadline = earliest.map(|at| Duration::from_nanos(at.saturating_sub(since_epoch)));
        let until_recheck = recheck.map(|at| at.saturating_duration_since(now));
        dirty = match until_deadline.into_iter().chain(until_recheck).min() {
            Some(timeout) => {
                let timeout = timeout.max(Duration::from_micros(1));
                d.wakeup.wait_timeout(dirty, timeout).unwrap_or_else(PoisonError::into_inner).0
            }
            None => d.wakeup.wait(dirty).unwrap_or_else(PoisonError::into_inner),
        };
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

// ===== firers =====

impl Firers {
    /// Queues `due` (moving the entries: the driver drops none) and starts a firer if the queue
    /// has no firer to serve it (invariant 5). Returns when the driver must check again, if
    /// entries remain queued. Called only by the driver.
    fn hand_over(&'static self, due: Vec<Entry>, now: Instant) -> Option<Instant> {
        let mut s = locked(&self.state);
        if !due.is_empty() {
            s.queue.extend(due);
            self.work.notify_one(); // the spare, if it waits (invariant 6: at most one does)
        }
        debug_assert!(s.starting <= s.threads && s.waiting <= 1, "FirerState invariant 1");
        if s.queue.is_empty() {
            return None;
        }
        let served = s.waiting > 0 || s.starting > 0; // either will take the oldest entry
        let busy_since = s.last_take; // every other firer took its entry by then (invariant 2)
        if served || (s.threads > 0 && now < busy_since + STALL) {
            return Some(if served { now + STALL } else { busy_since + STALL });
        }
        // No firer at all, or each has been in one entry's user code for `STALL`.
        s.threads += 1;
        s.starting += 1;
        drop(s);
        let started =
            std::thread::Builder::new().name("tether-timer-firer".into()).spawn(move || self.serve());
        if started.is_err() {
            // Out of threads: the queue waits for a busy firer, or for the next attempt.
            let mut s = locked(&self.state);
            s.threads -= 1;
            s.starting -= 1;
        }
        Some(now + STALL)
    }

    /// A firer thread's loop: fires queued entries in order, waits for work if no other firer
    /// does, and exits when another firer waits already or after `SPARE_IDLE` without work
    /// (invariant 6).
    fn serve(&self) {
        let mut s = locked(&self.state);
        s.starting -= 1;
        loop {
            if let Some(entry) = s.queue.pop_front() {
                s.last_take = Instant::now();
                drop(s);
                fire(entry); // no lock held
                s = locked(&self.state);
                continue;
            }
            if s.waiting > 0 {
                break; // one spare is enough
            }
            s.waiting += 1;
            debug_assert!(s.waiting + s.starting <= s.threads, "FirerState invariant 1");
            let (guard, wait) = self.work.wait_timeout(s, SPARE_IDLE).unwrap_or_else(PoisonError::into_inner);
            s = guard;
            s.waiting -= 1;
            if wait.timed_out() && s.queue.is_empty() {
                break;
            }
        }
        s.threads -= 1;
    }
}

/// Fires one expired entry on a firer thread: cancels its node, running the callbacks that
/// cancellation collected, then drops the entry, which may drop the last reference to the node
/// and its cause. Both run user code; nobody called us, so a panic in either is recorded rather
/// than re-raised, and the firer lives on.
fn fire(entry: Entry) {
    let Entry { core, cause } = entry;
    let expired = catch_unwind(AssertUnwindSafe(|| tree::expire(&core, cause)));
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(core)));
    for payload in [expired.err(), dropped.err()].into_iter().flatten() {
        crate::unhandled::record(payload);
    }
}
