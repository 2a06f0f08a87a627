//! [`Context`]: the public handle to a node of the cancellation tree and the values bound at it.
//!
//! A thin handle (the engine is `cancel::tree`): every method delegates in a line or two.
//!
//! # Invariants
//! 1. `node == None` exactly for contexts that can never be cancelled: [`Context::background`] and
//!    [`Context::detached`]. Such a context has no deadline.
//! 2. Every derivation (`child`, `with_deadline*`, `with_timeout*`, `with_value`) creates a new
//!    node registered under `self`'s node, so cancelling a derived context never affects its parent.
//!    Below a node that is already cancelled, a derivation with no earlier deadline of its own is
//!    a new handle of that node instead (`tree.rs` invariant 7): cancelling it changes nothing
//!    either, since nothing can change a cancelled node.

use crate::ambient::WithContext;
use crate::cancel::tree::{self, Core, Node, Settle};
use crate::cancel::{
    CallbackHandle, CancelError, CancelledOwned, Canceller, Cause, Done, Registration, RunUntilCancelled,
    Waiter,
};
use crate::live::{self, LiveCounts};
use crate::loom::Arc;
use crate::value::Key;
use crate::value::{KeyId, Valuer, Values};
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::task::{self, Poll};
use std::time::{Duration, Instant};

/// A node of the cancellation tree, with the typed values bound at it.
///
/// Cloning a `Context` is cheap (two reference counts) and every clone views the same node:
/// cancelling one cancels all. Deriving a context (`child`, `with_deadline`, `with_timeout`,
/// `with_value`) makes a new node below this one: it is cancelled when this one is, with this
/// one's cause, and its own cancellation stays below it.
///
/// Dropping every handle to a derived context that was never cancelled detaches it from its
/// parent and disarms its deadline: forgetting to cancel leaks nothing.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::{Cause, Canceller, Context};
///
/// let request = Context::new();
/// let call = request.with_timeout(Duration::from_secs(5));
/// assert!(call.deadline().is_some());
///
/// request.cancel_with(Cause::custom(std::io::Error::other("client went away")));
/// assert!(call.is_cancelled(), "cancellation reaches every descendant before cancel returns");
/// assert_eq!(call.cause().unwrap().to_string(), "client went away");
/// ```
#[derive(Clone)]
pub struct Context {
    node: Option<Node>,
    values: Values,
}

impl Context {
    /// The empty root: never cancelled, no deadline, no values (Go's `Background()`).
    ///
    /// Does not allocate.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let bg = Context::background();
    /// assert!(!bg.can_be_cancelled());
    /// assert_eq!(bg.deadline(), None);
    /// ```
    pub fn background() -> Context {
        Context { node: None, values: Values::default() }
    }

    /// A new cancellable root: a child of [`Context::background`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let root = Context::new();
    /// assert!(root.can_be_cancelled());
    /// root.cancel();
    /// assert!(root.is_cancelled());
    /// ```
    #[allow(clippy::new_without_default)] // `Default` would suggest `background()`, a different thing
    pub fn new() -> Context {
        Context::background().child()
    }

    /// A cancellable child (Go's `WithCancel`). It inherits this context's deadline and values.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context};
    /// let parent = Context::new();
    /// let child = parent.child();
    /// child.cancel();
    /// assert!(child.is_cancelled());
    /// assert!(!parent.is_cancelled());
    /// ```
    pub fn child(&self) -> Context {
        self.derive(None, self.values.clone())
    }

    /// A child that is cancelled with [`CancelError::DeadlineExceeded`] at `deadline` (or at this
    /// context's deadline, if that is earlier). A deadline already past cancels it at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tether::{CancelError, Canceller, Context};
    ///
    /// let past = Context::new().with_deadline(Instant::now() - Duration::from_secs(1));
    /// assert_eq!(past.err(), Some(CancelError::DeadlineExceeded));
    /// ```
    pub fn with_deadline(&self, deadline: Instant) -> Context {
        self.with_deadline_cause(deadline, Cause::DeadlineExceeded)
    }

    /// Like [`with_deadline`](Self::with_deadline), with the cause reported when the deadline
    /// expires (Go's `WithDeadlineCause`). `err()` is still `DeadlineExceeded`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use tether::{CancelError, Canceller, Cause, Context};
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("slow backend")]
    /// struct SlowBackend;
    ///
    /// let ctx = Context::new().with_deadline_cause(Instant::now(), Cause::custom(SlowBackend));
    /// assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
    /// assert!(ctx.cause().unwrap().downcast_ref::<SlowBackend>().is_some());
    /// ```
    pub fn with_deadline_cause(&self, deadline: Instant, cause: Cause) -> Context {
        self.derive(Some((deadline, cause)), self.values.clone())
    }

    /// A child cancelled after `timeout` (Go's `WithTimeout`). A timeout so large that the instant
    /// overflows means no deadline of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tether::{Canceller, Context};
    ///
    /// let forever = Context::new().with_timeout(Duration::MAX);
    /// assert_eq!(forever.deadline(), None);
    /// let soon = Context::new().with_timeout(Duration::from_millis(1));
    /// soon.wait();
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Context {
        self.with_timeout_cause(timeout, Cause::DeadlineExceeded)
    }

    /// Like [`with_timeout`](Self::with_timeout), with the cause reported on expiry.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tether::{Canceller, Cause, Context};
    /// let ctx = Context::new().with_timeout_cause(Duration::ZERO, Cause::custom(std::fmt::Error));
    /// assert!(ctx.cause().unwrap().downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn with_timeout_cause(&self, timeout: Duration, cause: Cause) -> Context {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline_cause(deadline, cause),
            None => self.child(),
        }
    }

    /// A child with `value` bound to `key`, shadowing any outer binding of `key` for this child
    /// and its descendants.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Context, Key};
    /// static LOCALE: Key<&'static str> = Key::new("locale");
    ///
    /// let outer = Context::new().with_value(&LOCALE, "en");
    /// let inner = outer.with_value(&LOCALE, "fr");
    /// assert_eq!(outer.value(&LOCALE), Some(&"en"));
    /// assert_eq!(inner.value(&LOCALE), Some(&"fr"));
    /// ```
    pub fn with_value<T: Send + Sync + 'static>(&self, key: &'static Key<T>, value: T) -> Context {
        let bound = crate::value::Bound::typed(key, std::sync::Arc::new(value));
        let values = self.values.with_bound(key.id(), bound);
        self.derive(None, values)
    }

    /// A context with this one's values and no cancellation and no deadline (Go's
    /// `WithoutCancel`, Trio's shield): for work that must finish even if this context is
    /// cancelled, such as writing an audit record.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Context, Key};
    /// static TRACE: Key<u32> = Key::new("trace");
    ///
    /// let request = Context::new().with_value(&TRACE, 7);
    /// let audit = request.detached();
    /// request.cancel();
    /// assert!(!audit.is_cancelled());
    /// assert_eq!(audit.value(&TRACE), Some(&7));
    /// ```
    pub fn detached(&self) -> Context {
        Context { node: None, values: self.values.clone() }
    }

    /// Cancels this context and everything derived from it, with [`Cause::Cancelled`].
    ///
    /// See [`cancel_with`](Self::cancel_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause, Context};
    /// let ctx = Context::new();
    /// ctx.cancel();
    /// assert_eq!(ctx.cause(), Some(Cause::Cancelled));
    /// ```
    pub fn cancel(&self) {
        self.cancel_with(Cause::Cancelled);
    }

    /// Cancels this context and everything derived from it, with `cause`.
    ///
    /// Idempotent: the first cancellation wins; later calls change nothing. Synchronous: when it
    /// returns, every descendant observes the cancellation (each reports the cause of whichever
    /// cancellation reached it first: this one, unless a concurrent cancel of an overlapping
    /// subtree got there before), every `done()` receiver of the subtree is ready, and the
    /// on-cancel callbacks of the nodes this call cancelled have run, on this thread (callbacks of
    /// nodes that a concurrent cancel reached first run on that canceller's thread). Does nothing
    /// on a context that can never be cancelled. `err()` becomes [`CancelError::Cancelled`].
    ///
    /// A thread that observes the cancellation *while* it is being propagated may see `err()`
    /// return `Some` a moment before `done()` becomes ready (the done channel is closed right
    /// after the node's state is set, outside its lock); once `cancel_with` has returned, both
    /// agree.
    ///
    /// # Panics
    ///
    /// Re-raises the panic of an on-cancel callback after every callback has run; when several
    /// panicked, the payload is a [`crate::CallbackPanics`] holding all of them.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause, Context};
    /// let ctx = Context::new();
    /// ctx.cancel_with(Cause::ScopeExited);
    /// ctx.cancel_with(Cause::Cancelled); // ignored: the first cause wins
    /// assert_eq!(ctx.cause(), Some(Cause::ScopeExited));
    /// ```
    pub fn cancel_with(&self, cause: Cause) {
        if let Some(node) = &self.node {
            tree::cancel(node.core(), CancelError::Cancelled, cause).run();
        }
    }

    /// Cancels this context as its deadline would: `err()` becomes
    /// [`CancelError::DeadlineExceeded`], with `cause`. For the server layer, when a request is
    /// dropped after its deadline passed but before the timer delivered it (`tower/server.rs`).
    #[cfg(feature = "tower")]
    pub(crate) fn expire_with(&self, cause: Cause) {
        if let Some(node) = &self.node {
            tree::cancel(node.core(), CancelError::DeadlineExceeded, cause).run();
        }
    }

    /// Registers `callback` to run once when this context is cancelled (Go's `AfterFunc`), with
    /// the cause. If the context is already cancelled it runs now, on this thread. Otherwise it
    /// runs on the thread that cancels, which waits for it: keep it short. For a deadline that
    /// thread is a timer firer thread, never the timer driver: a callback that blocks holds its
    /// firer for as long as it blocks, and other deadlines are fired meanwhile by another firer
    /// (about a millisecond late); a panic there is recorded for
    /// [`testing::take_unhandled_panics`](crate::testing::take_unhandled_panics).
    ///
    /// On a context that can never be cancelled the callback is dropped unrun (and the handle's
    /// first `stop()` returns `true`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use tether::Context;
    ///
    /// let closed = Arc::new(AtomicBool::new(false));
    /// let ctx = Context::new();
    /// let flag = closed.clone();
    /// let _registration = ctx.on_cancel(move |cause| {
    ///     println!("closing connection: {cause}");
    ///     flag.store(true, Ordering::SeqCst);
    /// });
    /// ctx.cancel();
    /// assert!(closed.load(Ordering::SeqCst));
    /// ```
    pub fn on_cancel<F: FnOnce(&Cause) + Send + 'static>(&self, callback: F) -> CallbackHandle {
        let Some(node) = &self.node else {
            return CallbackHandle::new(Registration::NeverRuns);
        };
        CallbackHandle::new(match tree::on_cancel(node.core(), Box::new(callback)) {
            Some(slot) => Registration::Registered(node.core().clone(), slot),
            None => Registration::RanAtOnce,
        })
    }

    /// A future that completes with the cause once this context is cancelled, holding its own
    /// handle of the context (so it is `'static`, for a spawned task); [`Canceller::cancelled`]
    /// borrows instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Cause, Context};
    /// let ctx = Context::new();
    /// let waiter = std::thread::spawn({
    ///     let cancelled = ctx.cancelled_owned();
    ///     move || futures_executor::block_on(cancelled)
    /// });
    /// ctx.cancel();
    /// assert_eq!(waiter.join().unwrap(), Cause::Cancelled);
    /// ```
    pub fn cancelled_owned(&self) -> CancelledOwned {
        CancelledOwned::new(self.clone())
    }

    /// Runs `future` until it completes (`Ok` with its output) or this context is cancelled
    /// (`Err` with the cause, and `future` is dropped). Cancellation is checked first at every
    /// poll, so a context cancelled before the future is ready always wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Cause, Context};
    /// let ctx = Context::new();
    /// assert_eq!(futures_executor::block_on(ctx.run_until_cancelled(async { 7 })), Ok(7));
    /// ctx.cancel();
    /// let never = std::future::pending::<()>();
    /// assert_eq!(futures_executor::block_on(ctx.run_until_cancelled(never)), Err(Cause::Cancelled));
    /// ```
    pub fn run_until_cancelled<F: Future>(&self, future: F) -> RunUntilCancelled<'_, F> {
        RunUntilCancelled::new(self, future)
    }

    /// Wraps `future` so that this context is ambient ([`crate::current`], [`Key::get`]) during
    /// every poll, on whatever thread polls it. To spawn a future with a child context, see
    /// [`crate::propagate`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let ctx = tether::Context::new();
    /// let inside = futures_executor::block_on(ctx.bind(async { tether::current().can_be_cancelled() }));
    /// assert!(inside);
    /// ```
    pub fn bind<F: Future>(&self, future: F) -> WithContext<F> {
        WithContext::new(self.clone(), future)
    }

    /// The value bound to `key` in this context, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Context, Key};
    /// static K: Key<Vec<u8>> = Key::new("bytes");
    /// assert!(Context::background().value(&K).is_none());
    /// let ctx = Context::background().with_value(&K, vec![1, 2]);
    /// assert_eq!(ctx.value(&K), Some(&vec![1, 2]));
    /// ```
    pub fn value<T: 'static>(&self, key: &'static Key<T>) -> Option<&T> {
        self.values.get_typed(key)
    }

    /// How many children are registered with this context's node right now: derived contexts
    /// that are still alive and were not cancelled through this node. A child cancelled on its own
    /// stays registered until its last handle is dropped; all of them are released when this
    /// context is cancelled. Returns to zero when they are all dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let parent = tether::Context::new();
    /// let child = parent.child();
    /// assert_eq!(parent.registered_children(), 1);
    /// drop(child);
    /// assert_eq!(parent.registered_children(), 0);
    /// ```
    pub fn registered_children(&self) -> usize {
        self.node.as_ref().map_or(0, |n| n.core().registered_children())
    }

    /// The process-wide live counts ([`crate::live`]), for convenience next to a context.
    ///
    /// # Examples
    ///
    /// ```
    /// let counts = tether::Context::live();
    /// let _ = counts.nodes;
    /// ```
    pub fn live() -> LiveCounts {
        live::live()
    }

    /// A handle to this context's node carrying `values` instead of its own: no new node.
    /// For the scope, which binds a builder's values on the node it already made.
    pub(crate) fn with_values(&self, values: Values) -> Context {
        Context { node: self.node.clone(), values }
    }

    /// The bindings this context carries.
    pub(crate) fn values(&self) -> &Values {
        &self.values
    }

    /// A new node below this one for a spawned child: it sees only the bindings that cross a
    /// spawn ([`crate::Inheritance::Inherited`]).
    pub(crate) fn child_for_spawn(&self) -> Context {
        self.derive(None, self.values.for_spawn())
    }

    /// Whether this context is as new (see `Node::is_pristine`): a pool worker may then hand
    /// it to the next task of the same scope instead of making another (scope `task.rs`).
    pub(crate) fn is_pristine(&self) -> bool {
        self.node.as_ref().is_some_and(|node| node.is_pristine())
    }

    /// A new node below this one, carrying `values`, with its own deadline (an instant and the
    /// cause its expiry cancels with) if any.
    fn derive(&self, own_deadline: Option<(Instant, Cause)>, values: Values) -> Context {
        let node = Node::new(self.node.as_ref(), own_deadline);
        Context { node: Some(node), values }
    }

    /// Hands `settle` to this context's node, to be set once the cancellation that reaches the
    /// node has run every callback it collected (scope invariant 5). `false` if the node was
    /// already cancelled, or there is no node: there is nothing to wait for then.
    pub(crate) fn attach_settle(&self, settle: &std::sync::Arc<Settle>) -> bool {
        self.node.as_ref().is_some_and(|node| tree::attach_settle(node.core(), settle.clone()))
    }

    /// A canceller of this context's node that does not count as a handle of it (the node is
    /// still released when its last context goes): what the Go adapter holds to cancel a node
    /// from a custom parent (`go/layered_ctx.rs`, `link`). `None` without a node.
    pub(crate) fn remote_canceller(&self) -> Option<RemoteCanceller> {
        self.node.as_ref().map(|node| RemoteCanceller(node.core().clone()))
    }
}

/// Cancels a node from outside its handles: see [`Context::remote_canceller`].
pub(crate) struct RemoteCanceller(Arc<Core>);

impl RemoteCanceller {
    /// Cancels the node, and everything below it, with `err` and `cause` (the first cause wins),
    /// running the callbacks this cancellation collects on this thread.
    pub(crate) fn cancel(&self, err: CancelError, cause: Cause) {
        tree::cancel(&self.0, err, cause).run();
    }
}

impl Canceller for Context {
    #[inline]
    fn is_cancelled(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.core().is_cancelled())
    }

    #[inline]
    fn err(&self) -> Option<CancelError> {
        self.node.as_ref()?.core().err()
    }

    fn cause(&self) -> Option<Cause> {
        self.node.as_ref()?.core().cause()
    }

    fn deadline(&self) -> Option<Instant> {
        self.node.as_ref()?.deadline()
    }

    /// Borrows the node: no lock, no reference count (see [`Done`]).
    #[inline]
    fn done(&self) -> Done<'_> {
        match &self.node {
            Some(node) => Done::node(node.core()),
            None => Done::never(),
        }
    }

    fn can_be_cancelled(&self) -> bool {
        self.node.is_some()
    }

    /// Parks on the node (one `unpark` by the cancellation wakes it), rather than blocking on
    /// `done()`'s channel: see [`Canceller::wait`].
    #[track_caller]
    fn wait(&self) -> Cause {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        let Some(node) = &self.node else {
            panic!("tether: wait() on a context that can never be cancelled would block forever");
        };
        tree::wait(node.core(), None).expect("tether: a live handle's node is cancelled before wait returns")
    }

    /// Parks on the node until cancelled or until `timeout` has passed: see
    /// [`Canceller::wait_timeout`].
    #[track_caller]
    fn wait_timeout(&self, timeout: Duration) -> Option<Cause> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        let Some(node) = &self.node else {
            std::thread::sleep(timeout); // never cancelled: the whole timeout passes, as on `never()`
            return None;
        };
        match Instant::now().checked_add(timeout) {
            Some(deadline) => tree::wait(node.core(), Some(deadline)),
            None => tree::wait(node.core(), None),
        }
    }

    /// Registers the waker in this context's node (no thread, no allocation beyond the waker's
    /// clone): see [`Canceller::poll_cancelled`].
    fn poll_cancelled(&self, cx: &mut task::Context<'_>, waiter: &mut Waiter) -> Poll<Cause> {
        match &self.node {
            Some(node) => waiter.poll_node(node.core(), cx),
            None => Poll::Pending,
        }
    }
}

impl Valuer for Context {
    fn lookup(&self, key: KeyId) -> Option<&(dyn Any + Send + Sync)> {
        self.values.get(key)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline())
            .field("can_be_cancelled", &self.can_be_cancelled())
            .finish_non_exhaustive()
    }
}
