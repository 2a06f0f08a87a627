//! The cancellation tree engine: creation, propagation, detach, callbacks.
//!
//! The public [`crate::Context`] is a thin handle over a [`Node`]; everything that touches shared
//! state lives here, as `pub(crate) fn`s (the split tokio-util's `tree_node.rs` uses).
//! Design note: `design/0001-cancellation-tree.md`.
//!
//! # Structure
//! - [`Core`] is one node, in one allocation: its state, cause, registered children, callbacks,
//!   lazily created done channel, its deadline, and a handle to its parent. It is shared (`Arc`)
//!   by its handles, by its parent's children slab while registered, by the timer driver while its
//!   deadline is pending or being fired, by callback handles, and briefly by `chain_root`'s walk
//!   up to its domain's root.
//! - [`Node`] is a *counted* handle: `Core::handles` counts them. Contexts hold one, and a child
//!   holds one of its parent (so an ancestor and its deadline live as long as any descendant).
//!   When the last handle goes, the node is released: detached from its parent, timer disarmed,
//!   callbacks discarded. Forgetting to cancel leaks nothing. A core that nothing else references
//!   then (no slab, timer entry, callback handle or canceller) is released by value, unlocked.
//! - The domain lock is the `propagation` mutex of the root of a node's chain of parent links, so
//!   all nodes below one root share it. Every propagation in a domain holds it, so concurrent
//!   cancels of overlapping subtrees serialise. Nodes do not store their root (that would be one
//!   more contended reference count per child of a busy parent); the slow path walks up to it.
//!
//! # Invariants
//! 1. `state` goes `OPEN -> CANCELLED | DEADLINE` at most once and never back. It is written only
//!    under the core's lock, after `cause` is set (so `state != OPEN` implies `cause.is_some()`).
//! 2. While `state == OPEN` and the node has handles, `children` holds exactly the cores of the
//!    registered children that have not been released, `callbacks` exactly the callbacks neither
//!    run nor stopped nor discarded.
//! 3. Once `state != OPEN`, `children`, `callbacks` and `done_tx` are empty, for ever: the cancel
//!    that set the state drained them, and registration on a cancelled core creates the child
//!    already cancelled instead of registering it.
//! 4. A core reaches its parent only through the parent handle in `inner.parent`, which its
//!    release takes out. A parent's slab holds a child's core only until that child is released
//!    (or the parent cancelled). So any `Arc` cycle between a parent and a child core is broken no
//!    later than the child's release, and releasing an ancestor chain is a loop, never a recursion.
//! 5. The domain of a node is the root of its chain of `inner.parent` links. A node with live
//!    descendants is not released (they hold handles to it), so the chain from any live node to its
//!    root is stable, and every live descendant of a node has the node's domain. When [`cancel`]
//!    returns (having held that lock for the whole propagation), every descendant is cancelled.
//!    A released node has no live descendants, and a node without children takes the fast path,
//!    so neither needs the domain.
//! 6. `handles` counts the live `Node`s of a core. It only increases from a live handle (never
//!    from zero), so the release runs exactly once, in the thread whose decrement reached zero.
//! 7. A child made below a parent that is already cancelled, with no deadline of its own earlier
//!    than the parent's, is a new handle of the parent's core, not a node of its own: everything
//!    it could report (error, cause, effective deadline, a disconnected done channel, callbacks
//!    that run at once, no children) is what such a node would report, since a cancelled core
//!    never changes (invariants 1 and 3). The values a context carries live in the handle
//!    (`Context`), not in the core, so they are the child's own. A child with an earlier deadline
//!    of its own gets its own core, to report that deadline (it is made cancelled, invariant 3).
//!
//! # Lock order
//! `domain -> core -> timer map`, and at most one core lock at a time: propagation locks the cores
//! of the subtree one after another; registration and detach lock only the parent's core (the
//! child's core is not yet, or no longer, shared). User code (callbacks, the destructors of
//! captured state, releases of `Node`s) never runs while any of these locks is held: callbacks run
//! after the domain lock is released, and drained entries are dropped outside the core lock.
//!
//! # Waiting threads
//! [`wait`] registers the calling thread as a listener and parks; the cancellation unparks the
//! threads it drained before anything else it does once the subtree is marked and unlocked
//! (`Fired::unpark`, called by [`cancel`]), before the done channels disconnect and the callbacks
//! run. Design note: "Callbacks", "Waiting threads".
//!
//! # Where callbacks run
//! On the thread whose call cancelled the node, after propagation has finished and every lock is
//! released; for deadlines, on a timer firer thread, never on the driver itself (see
//! `cancel::deadline`: a callback that blocks there holds its firer, and other deadlines are
//! fired by another). Running them in place (rather than on a new thread per callback, as Go
//! does) costs no thread and makes `cancel()` return only after every callback has run, so a
//! caller may rely on their effects. A callback may cancel nodes, register
//! callbacks and drop handles: no lock is held. A callback that panics does not stop the others;
//! [`Fired::run`] re-raises the panic on the cancelling thread after all callbacks ran.

use super::Cause;
use super::cause::CancelError;
use super::deadline::{self, TimerKey};
use crate::live::{self, Counter};
use crate::loom::{
    Arc, AtomicBool, AtomicU8, AtomicU32, Mutex, Ordering, Thread, UnsafeCell, current_thread, fence, lock,
    park, park_timeout,
};
use crate::slab::Slab;
use crate::telemetry;
use crossbeam_channel::{Receiver, Sender};
use std::any::Any;
use std::convert::Infallible;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{OnceLock, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

/// `Core::state`: not cancelled.
const OPEN: u8 = 0;
/// `Core::state`: cancelled, `err()` is `Cancelled`.
const CANCELLED: u8 = 1;
/// `Core::state`: cancelled, `err()` is `DeadlineExceeded`.
const DEADLINE: u8 = 2;

/// `Core::timer` when the node has no pending deadline of its own.
const NO_TIMER: u32 = u32::MAX;

/// Index meaning "not registered in a parent's children slab".
const UNREGISTERED: u32 = u32::MAX;

/// A callback registered with [`on_cancel`].
pub(crate) type Callback = Box<dyn FnOnce(&Cause) + Send + 'static>;

/// What waits in a node for its cancellation: a callback, the waker of a pending future
/// ([`on_cancel_wake`]), or a thread blocked in [`wait`]. Callbacks and wakers are user code when
/// run or dropped: never under a lock. A thread is unparked before either (see [`cancel`]).
pub(crate) enum Listener {
    Callback(Callback),
    Waker(Waker),
    Thread(Thread),
}

impl Listener {
    /// Runs the callback, wakes the future, or unparks the thread.
    fn notify(self, cause: &Cause) {
        match self {
            Listener::Callback(callback) => callback(cause),
            Listener::Waker(waker) => waker.wake(),
            Listener::Thread(thread) => thread.unpark(),
        }
    }
}

/// One node of the tree: its cancellation cell, and the link that keeps its parent alive.
///
/// `repr(C)`, in this order: what a child's creation and release touch on its parent comes
/// first (`handles`, `state`, then the `inner` lock, 16 bytes after the count, and the children
/// slab in `inner`), so that it spans one cache line or two adjacent ones. In the order the compiler
/// chose, the lock came first and the handle count 92 bytes later, never on the same line, and
/// children of one busy parent made on two threads moved both lines between the cores for each
/// child (`common_parent_cancel`: about 12% faster with this order, benches/RESULTS.md).
#[repr(C)]
pub(crate) struct Core {
    /// Live [`Node`] handles (invariant 6); the node is released when it drops to zero.
    handles: AtomicU32,
    /// `OPEN`, `CANCELLED` or `DEADLINE` (invariant 1).
    state: AtomicU8,
    /// Set, under the core's lock, when the last handle is dropped while the node is still open:
    /// its callbacks were discarded unrun, and nothing can cancel it any more. An atomic only so
    /// that it can sit in the header word; every access holds the lock (Relaxed).
    released: AtomicBool,
    /// Index of this core in its parent's children slab, or `UNREGISTERED`; written once, before
    /// the first [`Node`] handle exists.
    slot: AtomicU32,
    /// This node's own pending deadline as a packed [`TimerKey`], or `NO_TIMER`: set by
    /// `arm_timer`, taken by the cancellation or release that disarms it; always under the core's
    /// lock (Relaxed). Kept here rather than in `Extras` so a deadline costs no extra allocation.
    timer: AtomicU32,
    inner: Mutex<Inner>,
    /// The domain lock, used when this node is the root of its chain (invariant 5).
    propagation: Mutex<()>,
    /// The effective deadline (the earlier of the node's own and its parent's), packed as
    /// nanoseconds from a process epoch ([`pack_deadline`]) to keep the core small; or
    /// `FAR_DEADLINE`, when it is too far from the epoch to pack and `Extras::far_deadline` holds
    /// it. Fixed at creation.
    deadline: i64,
    /// Why the node was cancelled: set once, under the core's lock, before `state` leaves `OPEN`
    /// (invariant 1), and never changed; read without the lock once `state` says cancelled.
    cause: CauseCell,
}

/// A core's cause: written at most once, read without a lock once the state says cancelled.
/// A plain cell rather than a `OnceLock`, whose set costs two locked read-modify-writes per
/// cancelled node: the state already publishes the write (invariant 1).
struct CauseCell(UnsafeCell<Option<Cause>>);

// SAFETY: the cell is only accessed as `set` and `get` require (invariant 1): the one write happens
// under the core's lock while the state is `OPEN` (or before the core is shared), and precedes the
// Release store of the state; every read holds the same lock or follows an Acquire load that saw
// the state leave `OPEN`. So no read races the write, and a `Cause` is `Send + Sync`.
unsafe impl Sync for CauseCell {}

impl CauseCell {
    fn empty() -> CauseCell {
        CauseCell(UnsafeCell::new(None))
    }

    /// Records the cause.
    ///
    /// # Safety
    /// The caller holds the core's lock and has seen its state `OPEN` under it, or the core is not
    /// shared yet; and it stores the new state only after this returns.
    unsafe fn set(&self, cause: Cause) {
        // SAFETY: by the caller's contract, no other thread reads or writes the cell now: readers
        // hold the lock we hold, or wait for a state that is only stored after this write.
        self.0.with_mut(|cell| unsafe { *cell = Some(cause) });
    }

    /// The cause, if one was recorded.
    ///
    /// # Safety
    /// The caller holds the core's lock, or has seen the state leave `OPEN` with an Acquire load
    /// (which the write happened before).
    unsafe fn get(&self) -> Option<Cause> {
        // SAFETY: the only write happened before this read (the lock, or the Release/Acquire
        // pair on the state, orders it), and nothing writes the cell again.
        self.0.with(|cell| unsafe { (*cell).clone() })
    }
}

struct Inner {
    /// Registered children (invariant 2); drained by cancellation (invariant 3).
    children: Slab<Arc<Core>>,
    /// Callbacks and the done channel, allocated on first use: most nodes never need them.
    extras: Option<Box<Extras>>,
    /// A handle to the parent, held until this node is released (invariant 4).
    parent: Option<Node>,
}

struct Extras {
    /// Registered callbacks and wakers with their ids; drained by cancellation or by release.
    callbacks: Slab<(u64, Listener)>,
    /// Set by the cancellation of this node once the callbacks it collected have run.
    settle: Option<std::sync::Arc<Settle>>,
    /// Source of callback ids, so a stale `stop()` can never remove another callback.
    next_callback_id: u64,
    /// The done channel, created by the first `done()`; the sender is dropped on cancellation.
    done_rx: Option<Receiver<Infallible>>,
    done_tx: Option<Sender<Infallible>>,
    /// The effective deadline when `Core::deadline` is `FAR_DEADLINE`; set before the core is
    /// shared, never changed.
    far_deadline: Option<Instant>,
}

/// A counted handle to a node: what a [`crate::Context`] holds and what a child holds of its
/// parent. While a node has handles it stays registered with its parent and its deadline stays
/// armed; when the last handle goes, the node is released (detached, timer disarmed, callbacks
/// discarded), whether or not its `Core` lives on (invariant 6).
pub(crate) struct Node {
    /// All the handles of a node together own one strong count of its `Arc` (invariant 6): each
    /// holds an alias of that count, never dropped except by the handle that lets go last. So
    /// taking or giving up a handle is one atomic read-modify-write (of `handles`), not two.
    core: ManuallyDrop<Arc<Core>>,
}

/// What a propagation collected, to be acted on after every lock is released.
#[must_use = "callbacks must run and timers must be disarmed"]
pub(crate) struct Fired {
    /// The listeners to notify, with the cause. The first is kept inline: a cancellation
    /// usually notifies zero or one (a waiting future, a scope's callback).
    callback: Option<(Listener, Cause)>,
    more_callbacks: Vec<(Listener, Cause)>,
    /// Threads blocked in [`wait`] on the cancelled nodes, unparked by `cancel` itself as soon as
    /// the subtree is marked and unlocked, before anything else it does: a wake-up is the one
    /// thing a blocked thread waits for. The first is kept inline, as for callbacks.
    thread: Option<Thread>,
    more_threads: Vec<Thread>,
    /// Set once the callbacks have run (or, if this is dropped unrun, on drop).
    settles: Settles,
    /// Deadlines to disarm, with the address of their core (an identity, never dereferenced).
    /// The first is kept inline: a cancellation usually disarms zero or one deadline.
    timer: Option<(TimerKey, usize)>,
    more_timers: Vec<(TimerKey, usize)>,
    /// The report to observers, if this cancellation started here (`telemetry`, invariant 2).
    observed: telemetry::Cancellation,
}

impl Fired {
    /// Nothing collected yet (allocates nothing).
    fn nothing() -> Fired {
        Fired {
            callback: None,
            more_callbacks: Vec::new(),
            thread: None,
            more_threads: Vec::new(),
            settles: Settles(Vec::new()),
            timer: None,
            more_timers: Vec::new(),
            observed: telemetry::Cancellation::default(),
        }
    }

    /// Takes `core`'s pending deadline, if any, to be disarmed by `run`. Caller holds the core's
    /// lock.
    fn disarm(&mut self, core: &Core) {
        // Relaxed: under the core's lock, like every access to `timer`.
        let packed = core.timer.swap(NO_TIMER, Ordering::Relaxed);
        if packed != NO_TIMER {
            let entry = (TimerKey::unpack(packed), core as *const Core as usize);
            match self.timer {
                None => self.timer = Some(entry),
                Some(_) => self.more_timers.push(entry),
            }
        }
    }
}

/// A core's address: its identity for the timer driver.
fn core_addr(core: &Arc<Core>) -> usize {
    Arc::as_ptr(core) as usize
}

/// The payload re-raised by `cancel` when several of the callbacks it ran panicked: every payload,
/// in the order the callbacks ran. (When exactly one panicked, its own payload is re-raised.)
///
/// # Examples
///
/// ```
/// use std::panic::{catch_unwind, AssertUnwindSafe};
/// use tether::{CallbackPanics, Context};
///
/// let ctx = Context::new();
/// let _a = ctx.on_cancel(|_| panic!("first"));
/// let _b = ctx.on_cancel(|_| panic!("second"));
/// let payload = catch_unwind(AssertUnwindSafe(|| ctx.cancel())).unwrap_err();
/// let all = payload.downcast::<CallbackPanics>().unwrap();
/// assert_eq!(all.payloads.len(), 2);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct CallbackPanics {
    /// The payload of each callback that panicked.
    pub payloads: Vec<Box<dyn Any + Send>>,
}

// ===== creation =====

impl Node {
    /// A new node below `parent` (a root if `None`), with its own deadline, if any: an instant
    /// and the cause its expiry cancels the node with. Below a parent already cancelled, and
    /// with no earlier deadline of its own, a new handle of the parent's node (invariant 7).
    pub(crate) fn new(parent: Option<&Node>, own_deadline: Option<(Instant, Cause)>) -> Node {
        let parent_deadline = parent.and_then(Node::deadline);
        // Go's rule: a deadline later than the parent's is served by the parent's timer.
        let arm = own_deadline.filter(|(own, _)| parent_deadline.is_none_or(|p| p >= *own));
        if let Some(p) = parent
            && arm.is_none()
            && p.core.is_cancelled()
        {
            // Invariant 7: the parent's cancelled core is everything this child would be.
            return p.clone();
        }
        let deadline = match (&arm, parent_deadline) {
            (Some((own, _)), _) => Some(*own),
            (None, p) => p,
        };
        let (packed, far) = pack_deadline(deadline);
        let mut inner = Inner::new(parent.cloned());
        if far.is_some() {
            inner.extras().far_deadline = far; // not shared yet: a plain write
        }
        let core = Arc::new(Core {
            state: AtomicU8::new(OPEN),
            slot: AtomicU32::new(UNREGISTERED),
            handles: AtomicU32::new(1),
            released: AtomicBool::new(false),
            timer: AtomicU32::new(NO_TIMER),
            propagation: Mutex::new(()),
            cause: CauseCell::empty(),
            deadline: packed,
            inner: Mutex::new(inner),
        });
        if let Some(p) = parent {
            // Relaxed: written before the handle below exists; read by `release`, which runs
            // after the last handle's Release decrement and an Acquire fence.
            core.slot.store(register(&p.core, &core), Ordering::Relaxed);
        }
        live::add(Counter::Nodes, 1);
        let node = Node { core: ManuallyDrop::new(core) };
        if let Some((at, cause)) = arm {
            if at <= Instant::now() {
                // "A deadline in the past cancels at once."
                cancel(&node.core, CancelError::DeadlineExceeded, cause).run();
            } else {
                arm_timer(&node.core, at, cause);
            }
        }
        node
    }

    /// The node's cancellation cell.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The effective deadline, exactly as it was set. One plain load, unless it lies beyond the
    /// packed range (then the core's lock is taken to read it).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.core.deadline {
            FAR_DEADLINE => lock(&self.core.inner).extras.as_ref().and_then(|e| e.far_deadline),
            packed => unpack_deadline(packed),
        }
    }
}

/// `Core::deadline` for "no deadline".
const NO_DEADLINE: i64 = i64::MIN;

/// `Core::deadline` for a deadline too far from [`epoch`] to pack: `Extras::far_deadline` holds it.
const FAR_DEADLINE: i64 = i64::MIN + 1;

/// The instant every packed deadline is measured from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Packs a deadline as signed nanoseconds from [`epoch`], exactly: within about ±292 years of it
/// the packed value alone; beyond, `FAR_DEADLINE` and the instant itself, for `Extras`. (Go's
/// `Deadline()` returns what was set, however far; the driver treats such a deadline as "never"
/// or "long past".)
fn pack_deadline(deadline: Option<Instant>) -> (i64, Option<Instant>) {
    let Some(at) = deadline else { return (NO_DEADLINE, None) };
    let base = epoch();
    let packed = match at.checked_duration_since(base) {
        Some(after) => i64::try_from(after.as_nanos()).ok(),
        None => i64::try_from(base.duration_since(at).as_nanos()).ok().map(|n| -n),
    };
    match packed {
        Some(n) if n > FAR_DEADLINE => (n, None),
        _ => (FAR_DEADLINE, Some(at)), // also the two values below, which the sentinels take
    }
}

/// The inverse of [`pack_deadline`] for a packed value other than `FAR_DEADLINE`.
fn unpack_deadline(packed: i64) -> Option<Instant> {
    if packed == NO_DEADLINE {
        return None;
    }
    let base = epoch();
    let offset = Duration::from_nanos(packed.unsigned_abs());
    if packed >= 0 { base.checked_add(offset) } else { base.checked_sub(offset) }
}

impl Clone for Node {
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from an existing one, which keeps the count above zero;
        // no data is published by taking a handle (as in `Arc::clone`).
        let before = self.core.handles.fetch_add(1, Ordering::Relaxed);
        assert!(before < u32::MAX / 2, "tether: more than 2^31 handles to one context");
        let ptr = Arc::as_ptr(&self.core);
        // SAFETY: `ptr` points to a live `Core` (this handle keeps the collective strong count,
        // which is only dropped by the last handle), and the new `Arc` is an alias of that same
        // count inside `ManuallyDrop`: it is dropped only by `let_go` when it is the last handle,
        // so the count is released exactly once (the pattern std's `Wake` uses for wakers).
        Node { core: ManuallyDrop::new(unsafe { Arc::from_raw(ptr) }) }
    }
}

impl Inner {
    fn new(parent: Option<Node>) -> Self {
        Inner { children: Slab::new(), extras: None, parent }
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(|| {
            Box::new(Extras {
                callbacks: Slab::new(),
                settle: None,
                next_callback_id: 0,
                done_rx: None,
                done_tx: None,
                far_deadline: None,
            })
        })
    }

    /// Takes every registered callback out.
    fn drain_callbacks(&mut self) -> Vec<(u64, Listener)> {
        match &mut self.extras {
            Some(extras) => extras.callbacks.drain().collect(),
            None => Vec::new(),
        }
    }
}

/// Registers `child` with `parent`, or, if `parent` is already cancelled, makes `child` cancelled
/// with the parent's error and cause (invariant 3). Returns the child's slot.
fn register(parent: &Arc<Core>, child: &Arc<Core>) -> u32 {
    let mut inner = lock(&parent.inner);
    // Relaxed: state is only written under this lock, which we hold (invariant 1).
    let state = parent.state.load(Ordering::Relaxed);
    if state == OPEN {
        live::add(Counter::Children, 1);
        return inner.children.insert(child.clone()) as u32;
    }
    // SAFETY: we hold the parent's lock.
    let cause = unsafe { parent.cause.get() };
    drop(inner);
    // The child is not shared yet: nobody else can observe these two writes in between.
    if let Some(cause) = cause {
        // SAFETY: the child is not shared yet, and its state is stored below.
        unsafe { child.cause.set(cause) };
    }
    // Release: pairs with the Acquire in `is_cancelled`, like every state store.
    child.state.store(state, Ordering::Release);
    UNREGISTERED
}

/// Hands the deadline to the timer driver and records its key, or takes it back if a concurrent
/// cancellation of the parent got to the core first: the key is stored and the state checked
/// under the core's lock, the same lock under which a cancellation takes the key to disarm it.
fn arm_timer(core: &Arc<Core>, at: Instant, cause: Cause) {
    let key = deadline::insert(at, core.clone(), cause);
    let inner = lock(&core.inner);
    // Relaxed (both): under the lock that guards state and timer writes (invariant 1).
    if core.state.load(Ordering::Relaxed) == OPEN {
        core.timer.store(key.pack(), Ordering::Relaxed);
        return;
    }
    drop(inner);
    deadline::remove(key, core_addr(core));
}

// ===== observation =====

impl Core {
    /// One atomic load: the hot path.
    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        // Acquire: pairs with the Release state stores; whatever the canceller wrote before
        // cancelling is visible to a thread that sees the cancellation.
        self.state.load(Ordering::Acquire) != OPEN
    }

    /// The coarse error, from the state alone: one atomic load.
    #[inline]
    pub(crate) fn err(&self) -> Option<CancelError> {
        // Acquire: as in `is_cancelled`.
        match self.state.load(Ordering::Acquire) {
            OPEN => None,
            CANCELLED => Some(CancelError::Cancelled),
            _ => Some(CancelError::DeadlineExceeded),
        }
    }

    /// The cause, once cancelled: an atomic load, no lock (the cause is set before the state
    /// that the Acquire load sees, and never changes).
    pub(crate) fn cause(&self) -> Option<Cause> {
        if !self.is_cancelled() {
            return None;
        }
        // SAFETY: the Acquire load in `is_cancelled` saw the state leave `OPEN`.
        unsafe { self.cause.get() }
    }

    /// The done channel: created on first use; disconnected once the core is cancelled.
    pub(crate) fn done(&self) -> Receiver<Infallible> {
        let mut inner = lock(&self.inner);
        if let Some(rx) = inner.extras.as_ref().and_then(|e| e.done_rx.as_ref()) {
            return rx.clone();
        }
        // Relaxed: under the lock that guards state writes (invariant 1).
        if self.state.load(Ordering::Relaxed) != OPEN {
            return closed_channel();
        }
        let (tx, rx) = crossbeam_channel::bounded(0);
        let extras = inner.extras();
        extras.done_tx = Some(tx);
        extras.done_rx = Some(rx.clone());
        rx
    }

    /// Number of registered children (invariant 2).
    pub(crate) fn registered_children(&self) -> usize {
        lock(&self.inner).children.len()
    }
}

impl Node {
    /// Whether this node is as new: this is its only handle, and it is open, with no children,
    /// no callbacks and no done channel, ever (its `Extras` were never made), and no deadline
    /// of its own. Such a node can serve as a fresh child of its parent: nothing that used it
    /// can tell. (A node whose effective deadline is too far to pack keeps it in `Extras`, so it
    /// is never pristine: a fresh child is made instead, which is only slower.)
    pub(crate) fn is_pristine(&self) -> bool {
        let inner = lock(&self.core.inner);
        // Acquire: a handle given up on another thread (Release decrement in `let_go`) is
        // seen gone only with everything done through it. Relaxed (state, timer): under the
        // core's lock, which guards their writes (invariant 1).
        self.core.handles.load(Ordering::Acquire) == 1
            && self.core.state.load(Ordering::Relaxed) == OPEN
            && self.core.timer.load(Ordering::Relaxed) == NO_TIMER
            && inner.extras.is_none()
            && inner.children.len() == 0
    }
}

/// One disconnected channel, shared by every `done()` that first asks after cancellation.
fn closed_channel() -> Receiver<Infallible> {
    static CLOSED: OnceLock<Receiver<Infallible>> = OnceLock::new();
    CLOSED.get_or_init(|| crossbeam_channel::bounded(0).1).clone()
}

// ===== cancellation =====

/// Cancels `core` and its whole subtree with `err` and `cause`, unless it is already cancelled.
///
/// When this returns, every descendant of `core` is cancelled (invariant 5). The returned
/// [`Fired`] must be [`run`](Fired::run) once no lock is held.
pub(crate) fn cancel(core: &Arc<Core>, err: CancelError, cause: Cause) -> Fired {
    // Fast path: an open node without children is its whole subtree, so cancelling it under its
    // own lock completes the subtree; no other canceller can be inside it. (An ancestor's
    // propagation that reaches it afterwards finds it cancelled and skips it.)
    {
        let mut inner = lock(&core.inner);
        // Relaxed: under the lock that guards state writes (invariant 1).
        if core.state.load(Ordering::Relaxed) == OPEN && inner.children.len() == 0 {
            let mut fired = Fired::nothing();
            let done_tx = mark_cancelled(core, &mut inner, err, &cause, &mut fired);
            fired.observed.set_origin(err, &cause);
            drop(inner);
            fired.unpark(); // first: the latency of `wait()` is this path's length
            drop(done_tx);
            return fired;
        }
    }
    // Slow path: the subtree may be large, or another thread may be propagating through it; the
    // domain lock orders us after that thread, so we return only once the subtree is complete.
    let root = chain_root(core);
    let _domain = lock(&root.propagation);
    propagate(core, err, cause)
}

/// The root of `core`'s chain of parent links: its domain (invariant 5). Holds one core lock at a
/// time, and an `Arc` to each ancestor while reading its link, so a concurrent release cannot free
/// the chain under the walk. O(depth), on the slow path only: cancelling a node that has children
/// or is already cancelled.
fn chain_root(core: &Arc<Core>) -> Arc<Core> {
    let mut current = core.clone();
    loop {
        let parent = lock(&current.inner).parent.as_ref().map(|p| Arc::clone(&p.core));
        match parent {
            Some(parent) => current = parent,
            None => return current,
        }
    }
}

/// Cancels `core` because its deadline passed: what a timer firer thread runs for an expired
/// entry (never the driver itself, `cancel::deadline` invariant 3).
pub(crate) fn expire(core: &Arc<Core>, cause: Cause) {
    let fired = cancel(core, CancelError::DeadlineExceeded, cause);
    // Nobody called us: a callback panic has no caller to re-raise to, so it is recorded.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| fired.run())) {
        crate::unhandled::record(payload);
    }
}

/// The propagation loop: depth-first with an explicit stack, never recursive (the tree's depth is
/// the user's to choose). Caller holds the domain lock.
fn propagate(root: &Arc<Core>, err: CancelError, cause: Cause) -> Fired {
    let mut fired = Fired::nothing();
    let mut stack: Vec<Arc<Core>> = Vec::new();
    let mut closed: Vec<Sender<Infallible>> = Vec::new();
    let mut next = Some(root.clone());
    while let Some(core) = next.take().or_else(|| stack.pop()) {
        let mut inner = lock(&core.inner);
        // Relaxed: under the lock that guards state writes (invariant 1).
        if core.state.load(Ordering::Relaxed) != OPEN {
            continue; // already cancelled, and so is its subtree (invariants 3 and 5)
        }
        let drained = inner.children.drain_into(&mut stack);
        if drained > 0 {
            live::add(Counter::Children, -(drained as isize));
        }
        // Kept until the whole subtree is marked: a thread woken by a node's `done()` must find
        // every descendant of that node cancelled too.
        closed.extend(mark_cancelled(&core, &mut inner, err, &cause, &mut fired));
        if Arc::ptr_eq(&core, root) {
            fired.observed.set_origin(err, &cause); // only where it started (`telemetry`, invariant 2)
        }
    }
    fired.unpark(); // the subtree is complete (see above): waiting threads first
    drop(closed); // disconnects every `done()` receiver of the subtree, outside every core lock
    fired
}

/// Sets the cause and state of `core` (whose locked state is `inner`), moves its callbacks and
/// timer into `fired`, and returns its done sender for the caller to drop once unlocked.
fn mark_cancelled(
    core: &Core,
    inner: &mut Inner,
    err: CancelError,
    cause: &Cause,
    fired: &mut Fired,
) -> Option<Sender<Infallible>> {
    let state = match err {
        CancelError::Cancelled => CANCELLED,
        CancelError::DeadlineExceeded => DEADLINE,
    };
    // Set once: `state` is `OPEN` (the caller checked, under this lock), so no cause yet.
    // SAFETY: the caller holds the core's lock and saw it `OPEN`; the state is stored below.
    unsafe { core.cause.set(cause.clone()) };
    // Release: pairs with the Acquire loads in `is_cancelled`/`err`.
    core.state.store(state, Ordering::Release);
    fired.disarm(core);
    let extras = inner.extras.as_mut()?; // most nodes have no callbacks or done channel
    for (_, callback) in extras.callbacks.drain() {
        live::add(Counter::Callbacks, -1);
        if let Listener::Thread(thread) = callback {
            match fired.thread {
                None => fired.thread = Some(thread),
                Some(_) => fired.more_threads.push(thread),
            }
            continue;
        }
        let listener = (callback, cause.clone());
        match fired.callback {
            None => fired.callback = Some(listener),
            Some(_) => fired.more_callbacks.push(listener),
        }
    }
    fired.settles.0.extend(extras.settle.take());
    extras.done_tx.take()
}

impl Fired {
    /// Whether no callback, timer or settle latch was collected (threads are unparked apart).
    fn collected_nothing(&self) -> bool {
        self.callback.is_none()
            && self.more_callbacks.is_empty()
            && self.timer.is_none()
            && self.more_timers.is_empty()
            && self.settles.0.is_empty()
    }

    /// Unparks the threads blocked in [`wait`] on the cancelled nodes. Called with no lock held,
    /// once every node of the cancelled subtree is marked (a woken thread finds it complete).
    fn unpark(&mut self) {
        // Usually nothing to do: test before building any iterator (this runs twice per cancel).
        if let Some(thread) = self.thread.take() {
            thread.unpark();
        }
        if !self.more_threads.is_empty() {
            self.more_threads.drain(..).for_each(|t| t.unpark());
        }
    }

    /// Disarms the timers and runs the callbacks; re-raises callback panics after all have run:
    /// the payload itself when one panicked, a [`CallbackPanics`] when several did.
    pub(crate) fn run(mut self) {
        self.unpark(); // nothing left, normally: `cancel` has unparked them
        if self.collected_nothing() {
            // The usual cancel of a leaf: only the report to observers, whose panic (user code)
            // unwinds from here as the one panic of this run would below.
            return self.observed.emit();
        }
        let Fired {
            callback,
            more_callbacks,
            thread: _,
            more_threads: _,
            settles,
            timer,
            more_timers,
            observed,
        } = self;
        for (key, core) in timer.into_iter().chain(more_timers) {
            deadline::remove(key, core);
        }
        let mut panics = Vec::new();
        // A subscriber or recorder is user code: its panic is re-raised like a callback's.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| observed.emit())) {
            panics.push(payload);
        }
        for (callback, cause) in callback.into_iter().chain(more_callbacks) {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback.notify(&cause))) {
                panics.push(payload);
            }
        }
        drop(settles); // every callback of this cancellation has run
        match panics.len() {
            0 => {}
            1 => resume_unwind(panics.pop().expect("one panic")),
            _ => resume_unwind(Box::new(CallbackPanics { payloads: panics })),
        }
    }
}

// ===== settling =====

/// A latch set when the cancellation that reached a node has run every callback it collected:
/// what a scope waits for before it returns, when the canceller is a thread it does not join
/// (a timer firer thread, or whoever cancelled an ancestor).
/// `std`'s lock and condition variable, not the loom shim's: like the done channel, the latch is
/// outside the modelled races (it is set after every tree lock is released, and only waited on
/// by a scope's exit).
#[derive(Default)]
pub(crate) struct Settle {
    done: std::sync::Mutex<bool>,
    settled: std::sync::Condvar,
}

impl Settle {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.settled.notify_all();
    }

    /// Blocks until the latch is set.
    pub(crate) fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            done = self.settled.wait(done).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The latches of the nodes a cancellation reached; set when dropped, which `Fired::run` does
/// after the callbacks (and which also happens if a `Fired` is dropped unrun).
struct Settles(Vec<std::sync::Arc<Settle>>);

impl Drop for Settles {
    fn drop(&mut self) {
        self.0.iter().for_each(|settle| settle.set());
    }
}

/// Attaches `settle` to `core`, to be set by the cancellation that reaches it once that
/// cancellation's callbacks have run. Returns false (attaching nothing) if `core` is already
/// cancelled or released: no callback of it can be pending then on its account.
pub(crate) fn attach_settle(core: &Arc<Core>, settle: std::sync::Arc<Settle>) -> bool {
    let mut inner = lock(&core.inner);
    // Relaxed (both): under the lock that guards state and `released` writes (invariant 1).
    if core.state.load(Ordering::Relaxed) != OPEN || core.released.load(Ordering::Relaxed) {
        return false;
    }
    inner.extras().settle = Some(settle);
    true
}

// ===== callbacks =====

/// Where a registered callback lives: its slot in the core's callback slab and its unique id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallbackSlot {
    index: usize,
    id: u64,
}

/// Registers `callback` to run once when `core` is cancelled, or runs it now (on this thread) if
/// it already is. Returns where it was registered, or `None` if it ran now (or was dropped
/// because the node is already released, which cannot happen through a live handle).
pub(crate) fn on_cancel(core: &Arc<Core>, callback: Callback) -> Option<CallbackSlot> {
    match register_listener(core, Listener::Callback(callback)) {
        Ok(slot) => Some(slot),
        Err((Listener::Callback(callback), Some(cause))) => {
            callback(&cause);
            None
        }
        Err(_) => None,
    }
}

/// Registers a clone of `waker` to be woken once when `core` is cancelled. `None` if `core` is
/// cancelled already (nothing is registered or woken: the caller sees the cancellation), or
/// released.
pub(crate) fn on_cancel_wake(core: &Arc<Core>, waker: &Waker) -> Option<CallbackSlot> {
    register_listener(core, Listener::Waker(waker.clone())).ok()
}

/// Registers `listener` while `core` is open; otherwise hands it back with the cause, if any.
fn register_listener(
    core: &Arc<Core>,
    listener: Listener,
) -> Result<CallbackSlot, (Listener, Option<Cause>)> {
    let mut inner = lock(&core.inner);
    // Relaxed: under the lock that guards state writes (invariant 1).
    // Relaxed (`released`): written only under this lock.
    if core.state.load(Ordering::Relaxed) == OPEN && !core.released.load(Ordering::Relaxed) {
        let extras = inner.extras();
        let id = extras.next_callback_id;
        extras.next_callback_id += 1;
        let index = extras.callbacks.insert((id, listener));
        live::add(Counter::Callbacks, 1);
        return Ok(CallbackSlot { index, id });
    }
    // SAFETY: we hold the core's lock.
    let cause = unsafe { core.cause.get() };
    drop(inner);
    Err((listener, cause))
}

/// Blocks the calling thread until `core` is cancelled, or until `deadline` passes; returns the
/// cause if cancelled. Registers the thread in the node, under its lock, and parks: the
/// cancellation unparks it right after marking the subtree (`Fired::unpark`), so a wake-up costs
/// the canceller one `unpark` (std's park/unpark, the operating system's floor).
///
/// No lost wake-up: the registration and the cancellation's drain of the listeners take the same
/// lock, so either the registration finds the node cancelled, or the cancellation finds the
/// thread and unparks it after storing the state; `park` returns at once if that unpark came
/// first, and a spurious return re-checks the state. On timeout the registration is removed; if a
/// racing cancellation took it first, its unpark may reach this thread after it returned, which
/// a later `park` of the caller sees as a spurious wake-up (`park`'s contract allows those).
pub(crate) fn wait(core: &Arc<Core>, deadline: Option<Instant>) -> Option<Cause> {
    if let Some(cause) = core.cause() {
        return Some(cause);
    }
    let slot = match register_listener(core, Listener::Thread(current_thread())) {
        Ok(slot) => slot,
        // Cancelled since the check (or released, which a live handle rules out).
        Err((_, cause)) => return cause,
    };
    loop {
        // Acquire (in `cause`): pairs with the Release state store of the cancellation.
        if let Some(cause) = core.cause() {
            return Some(cause); // the cancellation drained our registration (invariant 3)
        }
        match deadline {
            None => park(),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => park_timeout(left),
                _ => {
                    stop(core, slot);
                    return core.cause();
                }
            },
        }
    }
}

/// Replaces the waker registered at `slot` with `waker`, unless it would wake the same task.
/// `false` if `slot` is no longer registered: the node was cancelled (and the old waker woken)
/// or released since.
pub(crate) fn rewake(core: &Arc<Core>, slot: CallbackSlot, waker: &Waker) -> bool {
    let mut inner = lock(&core.inner);
    let entry =
        inner.extras.as_mut().and_then(|e| e.callbacks.get_mut(slot.index)).filter(|(id, _)| *id == slot.id);
    let Some((_, Listener::Waker(registered))) = entry else { return false };
    if registered.will_wake(waker) {
        return true;
    }
    let old = std::mem::replace(registered, waker.clone());
    drop(inner);
    drop(old); // a waker's drop is user code: unlocked
    true
}

/// Unregisters the callback at `slot`. True if that prevented its run: it was still registered,
/// or it was discarded unrun because the node was dropped without being cancelled.
pub(crate) fn stop(core: &Arc<Core>, slot: CallbackSlot) -> bool {
    let mut inner = lock(&core.inner);
    let callbacks = inner.extras.as_mut().map(|e| &mut e.callbacks);
    let ours = callbacks.as_ref().and_then(|c| c.get(slot.index)).is_some_and(|(id, _)| *id == slot.id);
    if ours {
        let removed = callbacks.and_then(|c| c.remove(slot.index));
        live::add(Counter::Callbacks, -1);
        drop(inner);
        drop(removed); // the closure's captures are user code: drop them unlocked
        return true;
    }
    // `released` is only set on a node dropped while open (see `Node::release`): its callbacks
    // were discarded unrun, and now never run.
    drop(inner);
    // Relaxed: written only under the core's lock, which ordered it before our lock above.
    core.released.load(Ordering::Relaxed)
}

// ===== detach and drop =====

impl Drop for Node {
    fn drop(&mut self) {
        // Invariant 4: release the ancestor chain with a loop. Releasing a node hands back its
        // parent handle; dropping that handle could release the parent, and so on up, so each
        // handle is let go of here rather than by its own `Drop`.
        let mut next = self.let_go();
        while let Some(parent) = next {
            // Wrapped so that its own `Drop` does not run: it is let go of here, once.
            next = ManuallyDrop::new(parent).let_go();
        }
    }
}

impl Node {
    /// Gives up this handle's count; if it was the last, releases the node, drops the collective
    /// strong count, and returns the parent handle for the caller to let go of in turn. Called
    /// exactly once per handle: by its `Drop`, or on a handle wrapped in `ManuallyDrop`.
    fn let_go(&mut self) -> Option<Node> {
        // Release: pairs with the Acquire fence below in whichever thread lets go last, so all
        // uses of the node through other handles happen before its release (as in `Arc::drop`).
        if self.core.handles.fetch_sub(1, Ordering::Release) != 1 {
            return None; // our alias of the count is simply forgotten
        }
        fence(Ordering::Acquire);
        // SAFETY: this was the last handle, so no other alias of the collective count remains and
        // none can be made (handles are only made from live handles); this alias is taken once,
        // here, and never used again (the caller drops or forgets `self` without touching `core`).
        let core = unsafe { ManuallyDrop::take(&mut self.core) };
        // The count is only a hint (a plain load, so a shared core, such as a registered child,
        // pays no extra read-modify-write); `try_unwrap` decides.
        let unique = if Arc::strong_count(&core) == 1 { Arc::try_unwrap(core) } else { Err(core) };
        let (parent, discarded) = match unique {
            Ok(unshared) => release_unshared(unshared),
            Err(core) => {
                let released = release(&core);
                drop(core);
                released
            }
        };
        // User code, last: the node is detached, counted out and its count dropped whatever the
        // callbacks' captures do. If one panics, `parent` is dropped by the unwinding, which lets
        // go of the rest of the chain through its own `Drop`.
        drop(discarded);
        parent
    }
}

/// [`release`] for a core that nothing else references (its `Arc` was unique when the last handle
/// let go, so no parent slab, timer entry, callback handle or canceller can reach it): the same
/// steps without the lock, the atomics or the `Arc` count. What a root made and dropped uncancelled
/// pays, and a child whose parent was cancelled first (its slab no longer holds the child).
fn release_unshared(core: Core) -> (Option<Node>, Vec<(u64, Listener)>) {
    let Core { timer, inner, .. } = core;
    let mut inner = inner.into_inner().unwrap_or_else(PoisonError::into_inner);
    let callbacks = inner.drain_callbacks();
    if !callbacks.is_empty() {
        live::add(Counter::Callbacks, -(callbacks.len() as isize));
    }
    // A key is stored only while the driver's entry (which holds an `Arc`) exists, and taken by
    // the cancellation that removes or fires that entry: a unique core has none to disarm.
    debug_assert_eq!(timer.into_inner(), NO_TIMER, "a unique core has no pending deadline");
    // A parent handle here belongs to a parent whose slab does not hold this core (the child was
    // created on a cancelled parent, or the parent's cancellation drained it): nothing to detach.
    live::add(Counter::Nodes, -1);
    (inner.parent.take(), callbacks)
}

/// Detaches `core` from its parent, disarms its timer and takes out its unrun callbacks: after
/// the last handle is gone nothing can cancel this node any more except its parent, from which it
/// is now detached. Returns the parent handle, which the caller lets go of, and the discarded
/// callbacks, which it drops once it has let go of the node (they are user code: nothing of the
/// release may depend on their drop returning).
fn release(core: &Arc<Core>) -> (Option<Node>, Vec<(u64, Listener)>) {
    let (timer, discarded, parent) = {
        let mut inner = lock(&core.inner);
        // Relaxed: under the lock that guards state writes (invariant 1). `released` records
        // "dropped while open", decided under the same lock as cancellation, so `stop()` can
        // tell a discarded callback from one a racing cancel took to run.
        let open = core.state.load(Ordering::Relaxed) == OPEN;
        core.released.store(open, Ordering::Relaxed); // Relaxed: under the lock, as every access
        let callbacks = inner.drain_callbacks();
        live::add(Counter::Callbacks, -(callbacks.len() as isize));
        // A cancelled node's timer key was taken by its cancellation: nothing to disarm then.
        // Relaxed: under the core's lock, like every access to `timer`.
        let timer = core.timer.swap(NO_TIMER, Ordering::Relaxed);
        (timer, callbacks, inner.parent.take())
    };
    if timer != NO_TIMER {
        let key = TimerKey::unpack(timer);
        deadline::remove(key, core_addr(core));
    }
    if let Some(parent) = &parent {
        // Relaxed: see the store in `Node::new`; ordered before us by the handle count.
        let detached = detach(&parent.core, core.slot.load(Ordering::Relaxed), core);
        drop(detached);
    }
    live::add(Counter::Nodes, -1);
    (parent, discarded)
}

/// Removes `child` from `parent`'s children, unless the parent was cancelled (which drained them,
/// invariant 3). Returns the removed reference, to be dropped by the caller outside the lock.
fn detach(parent: &Arc<Core>, slot: u32, child: &Arc<Core>) -> Option<Arc<Core>> {
    if slot == UNREGISTERED {
        return None;
    }
    // A cancelled parent drained its children for ever (invariant 3): nothing to remove, and no
    // need to take its lock (a cancelled chain releases without touching its parents' locks).
    // Acquire: pairs with the Release state store; a stale OPEN just takes the locked path below.
    if parent.state.load(Ordering::Acquire) != OPEN {
        return None;
    }
    let slot = slot as usize;
    let mut inner = lock(&parent.inner);
    // Relaxed: under the lock that guards state writes (invariant 1).
    if parent.state.load(Ordering::Relaxed) != OPEN {
        return None;
    }
    let removed = inner.children.remove(slot);
    debug_assert!(
        removed.as_ref().is_some_and(|c| Arc::ptr_eq(c, child)),
        "an open parent's slot holds the child registered there (invariant 2)"
    );
    live::add(Counter::Children, -1);
    removed
}

#[cfg(all(test, not(loom)))]
#[test]
fn a_timed_out_wait_leaves_no_registration_and_a_woken_one_is_drained() {
    let registered = |core: &Core| lock(&core.inner).extras.as_ref().map_or(0, |e| e.callbacks.len());
    let node = Node::new(None, None);
    assert_eq!(wait(node.core(), Some(Instant::now() + Duration::from_millis(1))), None);
    assert_eq!(registered(node.core()), 0, "the timed-out wait removed its thread");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| wait(node.core(), None));
        while registered(node.core()) == 0 {
            std::thread::yield_now(); // until the waiter has registered (then it parks, or is about to)
        }
        cancel(node.core(), CancelError::Cancelled, Cause::ScopeExited).run();
        assert_eq!(waiter.join().unwrap(), Some(Cause::ScopeExited));
    });
    assert_eq!(registered(node.core()), 0, "the cancellation drained it (invariant 3)");
}

#[cfg(all(test, not(loom)))]
#[test]
fn a_core_fits_glibc_fast_bins_with_its_arc_header() {
    // 128 bytes of request is glibc's default fast-bin limit; nodes are allocated and freed in
    // bulk (chains, fans), where fast bins are much cheaper than the sorted bins.
    assert!(std::mem::size_of::<Core>() + 16 <= 128, "Core is {} bytes", std::mem::size_of::<Core>());
}
