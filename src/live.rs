//! Live counts: how many nodes, registered children, timer entries, callbacks, scoped threads and
//! pool tasks exist right now, process-wide.
//!
//! The counts are what the leak checker ([`crate::testing`]) and the leak-freedom suites read. They
//! must cost almost nothing on the hot paths that update them (every node creation and drop), so
//! each thread counts in its own cells, with plain loads and stores (no locked read-modify-write):
//! a thread is the only writer of its cells. Reading sums every thread's cells plus those of the
//! threads that have exited.
//!
//! # Invariants
//! 1. Every increment is matched by exactly one decrement of the same kind when the counted thing
//!    goes away (possibly on another thread: only the sum is meaningful); so when the process is
//!    quiescent, [`live()`] returns the exact number alive.
//! 2. A thread's cells are written only by that thread. When it exits, its counts are folded into
//!    `RETIRED` and its cells unregistered, both under the `REGISTRY` lock that readers hold, so a
//!    reading counts each thread's contribution exactly once.
//! 3. While other threads are creating and dropping things, a reading is a sum of cells read at
//!    slightly different moments: good for leak checks at quiescent points, not a linearizable
//!    snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

const KINDS: usize = 6;

/// What a counter counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Nodes = 0,
    Children = 1,
    Timers = 2,
    Callbacks = 3,
    Threads = 4,
    Tasks = 5,
}

type Cells = [AtomicIsize; KINDS];

#[allow(clippy::declare_interior_mutable_const)] // used only as an array initializer
const ZERO: AtomicIsize = AtomicIsize::new(0);

/// Counts of threads that have exited (invariant 2), and of updates made during thread exit.
static RETIRED: Cells = [ZERO; KINDS];
/// The cells of every live thread that has counted something.
static REGISTRY: Mutex<Vec<Arc<Cells>>> = Mutex::new(Vec::new());

/// A thread's own cells; folded into `RETIRED` when the thread exits.
struct Local(Arc<Cells>);

impl Local {
    fn register() -> Local {
        let cells = Arc::new([ZERO; KINDS]);
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).push(cells.clone());
        Local(cells)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        for (retired, cell) in RETIRED.iter().zip(self.0.iter()) {
            // Relaxed: the registry lock orders this against readers (invariant 2).
            retired.fetch_add(cell.load(Relaxed), Relaxed);
        }
        registry.retain(|c| !Arc::ptr_eq(c, &self.0));
    }
}

thread_local! {
    static LOCAL: Local = Local::register();
}

/// Adds `delta` to the count of `kind`.
#[inline]
pub(crate) fn add(kind: Counter, delta: isize) {
    crate::telemetry::live_changed(kind, delta);
    let counted = LOCAL.try_with(|local| {
        let cell = &local.0[kind as usize];
        // Relaxed load and store, not a read-modify-write: this thread is the cell's only writer
        // (invariant 2); readers only need eventual exactness (invariant 3).
        cell.store(cell.load(Relaxed) + delta, Relaxed);
    });
    if counted.is_err() {
        // The thread is exiting and its cells are gone: count in the shared cells instead.
        RETIRED[kind as usize].fetch_add(delta, Relaxed); // Relaxed: as above
    }
}

fn read(kind: Counter) -> usize {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    // Relaxed: see invariant 3; the registry lock makes each thread count exactly once.
    let live: isize = registry.iter().map(|c| c[kind as usize].load(Relaxed)).sum();
    (live + RETIRED[kind as usize].load(Relaxed)).max(0) as usize
}

/// A reading of the process-wide live counts.
///
/// Exact when no other thread is creating or dropping contexts, callbacks, threads or tasks at the
/// moment of the reading; see [`live()`].
///
/// # Examples
///
/// ```
/// let before = tether::live();
/// let ctx = tether::Context::background().child();
/// assert!(tether::live().nodes >= 1);
/// drop(ctx);
/// # let _ = before;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveCounts {
    /// Cancellable nodes of the cancellation tree that have not been dropped.
    pub nodes: usize,
    /// Nodes registered as children of a cancellable parent (each costs the parent a slot).
    pub registered_children: usize,
    /// Pending deadline entries in the shared timer driver.
    pub timers: usize,
    /// Registered on-cancel callbacks that have neither run nor been stopped or discarded.
    pub callbacks: usize,
    /// Threads spawned by scopes that have not finished.
    pub threads: usize,
    /// Pool tasks spawned by scopes that have not finished.
    pub tasks: usize,
}

impl LiveCounts {
    /// True when every count is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::LiveCounts::default().is_zero());
    /// ```
    pub fn is_zero(&self) -> bool {
        *self == LiveCounts::default()
    }
}

/// Reads the process-wide live counts.
///
/// The reading is exact at a quiescent point (no thread is creating or dropping anything that is
/// counted); while work is in flight it is a sum of per-thread stripes read one after another.
///
/// # Examples
///
/// ```
/// let counts = tether::live();
/// println!("{} nodes alive", counts.nodes);
/// ```
pub fn live() -> LiveCounts {
    LiveCounts {
        nodes: read(Counter::Nodes),
        registered_children: read(Counter::Children),
        timers: read(Counter::Timers),
        callbacks: read(Counter::Callbacks),
        threads: read(Counter::Threads),
        tasks: read(Counter::Tasks),
    }
}

// ----- The registry of live scope threads, for leak reports -----

/// Live scope threads started while registration was on, by registry id (increasing with start
/// order), with their names. Only those can appear in a leak report, so threads started while no
/// leak check runs are not registered: spawning then costs no global lock.
static THREADS: Mutex<BTreeMap<u64, Option<Arc<str>>>> = Mutex::new(BTreeMap::new());
static NEXT_THREAD: AtomicU64 = AtomicU64::new(0);
/// Whether a leak check runs (checks exclude each other: `testing::LeakCheck`).
static REGISTERING: AtomicBool = AtomicBool::new(false);

/// Registers a live scope thread if a leak check runs; returns its registry id if registered.
pub(crate) fn thread_started(name: Option<Arc<str>>) -> Option<u64> {
    // SeqCst, with the same in `register_threads` (flag store, then id load): if this id is at
    // or after the check's first id, this increment comes after that load in the single total
    // order, hence after the flag store, so the flag load below sees the check and registers.
    let id = NEXT_THREAD.fetch_add(1, SeqCst);
    if !REGISTERING.load(SeqCst) {
        return None;
    }
    THREADS.lock().unwrap_or_else(PoisonError::into_inner).insert(id, name);
    Some(id)
}

/// Unregisters a scope thread that has finished.
pub(crate) fn thread_finished(id: u64) {
    THREADS.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
}

/// Turns registration on (a leak check starts); returns the id of the first thread it covers.
pub(crate) fn register_threads() -> u64 {
    REGISTERING.store(true, SeqCst);
    NEXT_THREAD.load(SeqCst)
}

/// Turns registration off (the leak check is over).
pub(crate) fn stop_registering_threads() {
    REGISTERING.store(false, SeqCst);
}

/// The names of the registered threads still alive whose id is `first` or later.
pub(crate) fn thread_names_since(first: u64) -> Vec<String> {
    let threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    threads.range(first..).map(|(_, name)| name.as_deref().unwrap_or("<unnamed>").to_owned()).collect()
}
