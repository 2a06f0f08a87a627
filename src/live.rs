//! Live counts: how many nodes, registered children, timer entries, callbacks, scoped threads and
//! pool tasks exist right now, process-wide.
//!
//! The counts are what the leak checker ([`crate::testing`]) and the leak-freedom suites read. They
//! must cost almost nothing on the hot paths that update them (every node creation and drop), so
//! each count is striped over [`STRIPES`] cache-padded cells and a thread only touches its own
//! stripe. Reading sums the stripes.
//!
//! # Invariants
//! 1. Every increment is matched by exactly one decrement of the same kind when the counted thing
//!    goes away; so when the process is quiescent, [`live()`] returns the exact number alive.
//! 2. While other threads are creating and dropping things, a reading is a sum of stripes read at
//!    slightly different moments: good for leak checks at quiescent points, not a linearizable
//!    snapshot.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

const STRIPES: usize = 8;
const KINDS: usize = 6;

/// What a counter counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Nodes = 0,
    Children = 1,
    Timers = 2,
    Callbacks = 3,
    Threads = 4,
    Tasks = 5,
}

#[allow(clippy::declare_interior_mutable_const)] // used only as an array initializer
const ZERO: AtomicIsize = AtomicIsize::new(0);
static COUNTS: [CachePadded<[AtomicIsize; KINDS]>; STRIPES] =
    [const { CachePadded::new([ZERO; KINDS]) }; STRIPES];

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // Relaxed: only uniqueness-ish spreading of threads over stripes matters, not ordering.
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

/// Adds `delta` to the count of `kind`.
#[inline]
pub(crate) fn add(kind: Kind, delta: isize) {
    // Relaxed: counts carry no data; readers only need eventual exactness (invariant 2).
    COUNTS[stripe()][kind as usize].fetch_add(delta, Relaxed);
}

fn read(kind: Kind) -> usize {
    // Relaxed: see invariant 2; a reading is only exact at a quiescent point.
    let sum: isize = COUNTS.iter().map(|s| s[kind as usize].load(Relaxed)).sum();
    sum.max(0) as usize
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
        nodes: read(Kind::Nodes),
        registered_children: read(Kind::Children),
        timers: read(Kind::Timers),
        callbacks: read(Kind::Callbacks),
        threads: read(Kind::Threads),
        tasks: read(Kind::Tasks),
    }
}
