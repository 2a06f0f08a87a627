//! [`Done`]: what [`Canceller::done`](super::Canceller::done) returns, a borrowed view of a
//! canceller's done channel whose readiness check reads and writes nothing shared but one load.
//!
//! Go's `select { case <-ctx.Done(): default: }` costs an atomic load of the channel pointer and
//! a few plain loads of the channel; nothing is written. A crossbeam receiver cannot match that:
//! an empty `try_recv` takes the zero-capacity flavour's lock, and the array and list flavours
//! issue a `SeqCst` fence, and handing out an owned receiver writes its shared reference count.
//! So `done()` hands out a `Done` that borrows: for a [`Context`](crate::Context) it borrows the
//! node, and [`Done::try_recv`] is the node's state, one Acquire load. The receiver itself, for
//! `select!` or a blocking `recv`, is fetched from the node (its lock, a reference count) on the
//! first `Deref` of this `Done` and kept in it: the node has no room for a lock-free copy within
//! its 112 bytes (`tree`'s size test), and only blocking uses need it.
//!
//! # Invariants
//! 1. For a node, `try_recv()` is `Disconnected` exactly when the node's state is not `OPEN`, so
//!    it agrees with `err()` at every instant. The node's receiver disconnects after that state
//!    is stored and before the `cancel` that stored it returns (`tree` invariant 3), so a `recv`
//!    or `select!` on it may report readiness a moment later than `try_recv`, never earlier.
//! 2. The receiver a `Done` of a node derefs to is a handle of the node's own channel (made by the
//!    node's first request for it, kept for the node's life: `Core::done`), or, for a node
//!    cancelled before any was made, of one shared disconnected channel. Every `Done` of one
//!    node derefs to the same channel (`same_channel`), as Go's `Done()` returns the same value.

use super::tree::Core;
use crossbeam_channel::{Receiver, TryRecvError};
use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

/// A canceller's done channel, borrowed: ready (disconnected) once the canceller is cancelled,
/// never carrying a message. What [`Canceller::done`](super::Canceller::done) returns.
///
/// It derefs to a [`crossbeam_channel::Receiver`], so it goes straight into
/// [`crossbeam_channel::select!`] and offers `recv`, `recv_timeout` and the rest; its own
/// [`try_recv`](Done::try_recv) and [`is_ready`](Done::is_ready) are a single atomic load for a
/// [`Context`](crate::Context) (Go's non-blocking `select` on `ctx.Done()`), with no lock and no
/// shared write. A foreign [`Canceller`](super::Canceller) makes one from its own receiver with
/// [`Done::from`], or returns [`Done::never`] if it can never be cancelled (Go's nil channel).
///
/// `.clone()` on it clones the receiver (there is no `Clone` for `Done` itself), for code that
/// must keep the channel beyond the borrow.
///
/// # Examples
///
/// ```
/// use tether::{Canceller, Context};
///
/// let ctx = Context::new();
/// let (_jobs_tx, jobs) = crossbeam_channel::unbounded::<u32>();
/// assert!(ctx.done().try_recv().is_err() && !ctx.done().is_ready());
/// ctx.cancel();
/// crossbeam_channel::select! {
///     recv(jobs) -> _ => unreachable!(),
///     recv(ctx.done()) -> _ => assert!(ctx.done().is_ready()),
/// }
/// ```
pub struct Done<'a> {
    source: Source<'a>,
    /// A node's receiver, fetched by the first `receiver()` (invariant 2).
    fetched: OnceLock<Receiver<Infallible>>,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    /// A node of the tree: readiness is its state (invariant 1); the receiver is made on demand.
    Node(&'a Core),
    /// A foreign canceller's receiver.
    Receiver(&'a Receiver<Infallible>),
    /// Never ready: a canceller that can never be cancelled.
    Never,
}

impl<'a> Done<'a> {
    /// The done channel of a node.
    pub(crate) const fn node(core: &'a Core) -> Done<'a> {
        Done { source: Source::Node(core), fetched: OnceLock::new() }
    }

    /// A done channel that never becomes ready, for a canceller that can never be cancelled: it
    /// derefs to [`crossbeam_channel::never()`], Go's nil channel.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context, Done};
    /// assert!(!Done::never().is_ready());
    /// assert!(!Context::background().done().is_ready());
    /// ```
    pub const fn never() -> Done<'a> {
        Done { source: Source::Never, fetched: OnceLock::new() }
    }

    /// True once the canceller is cancelled: the channel is disconnected (or, for a
    /// [`Context`](crate::Context), its cancellation has been stored and the disconnection is
    /// under way in the `cancel` call that stored it).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let ctx = Context::new();
    /// assert!(!ctx.done().is_ready());
    /// ctx.cancel();
    /// assert!(ctx.done().is_ready());
    /// ```
    #[inline]
    pub fn is_ready(&self) -> bool {
        matches!(self.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Go's `select { case <-done: default: }`: `Err(Disconnected)` once cancelled,
    /// `Err(Empty)` before (a done channel never carries a message). For a
    /// [`Context`](crate::Context) this is one atomic load; it agrees with
    /// [`err`](super::Canceller::err) at every instant.
    ///
    /// # Examples
    ///
    /// ```
    /// use crossbeam_channel::TryRecvError;
    /// use tether::{Canceller, Context};
    /// let ctx = Context::new();
    /// assert_eq!(ctx.done().try_recv(), Err(TryRecvError::Empty));
    /// ctx.cancel();
    /// assert_eq!(ctx.done().try_recv(), Err(TryRecvError::Disconnected));
    /// ```
    #[inline]
    pub fn try_recv(&self) -> Result<Infallible, TryRecvError> {
        match self.source {
            Source::Node(core) if core.is_cancelled() => Err(TryRecvError::Disconnected),
            Source::Node(_) | Source::Never => Err(TryRecvError::Empty),
            Source::Receiver(receiver) => receiver.try_recv(),
        }
    }

    /// The receiver itself. For a [`Context`](crate::Context) the first call on this `Done`
    /// fetches the node's channel (under the node's lock, making it on the node's first request);
    /// later calls on it read it with one load.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let ctx = Context::new();
    /// let kept: crossbeam_channel::Receiver<_> = ctx.done().receiver().clone();
    /// ctx.cancel();
    /// assert!(kept.recv().is_err());
    /// ```
    pub fn receiver(&self) -> &Receiver<Infallible> {
        match self.source {
            Source::Node(core) => self.fetched.get_or_init(|| core.done()),
            Source::Receiver(receiver) => receiver,
            Source::Never => never(),
        }
    }
}

impl<'a> From<&'a Receiver<Infallible>> for Done<'a> {
    /// A foreign canceller's done channel.
    fn from(receiver: &'a Receiver<Infallible>) -> Done<'a> {
        Done { source: Source::Receiver(receiver), fetched: OnceLock::new() }
    }
}

impl Deref for Done<'_> {
    type Target = Receiver<Infallible>;

    fn deref(&self) -> &Receiver<Infallible> {
        self.receiver()
    }
}

impl fmt::Debug for Done<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done").field("ready", &self.is_ready()).finish_non_exhaustive()
    }
}

/// The receiver of [`Done::never`]: one for the process.
fn never() -> &'static Receiver<Infallible> {
    static NEVER: OnceLock<Receiver<Infallible>> = OnceLock::new();
    NEVER.get_or_init(crossbeam_channel::never)
}
