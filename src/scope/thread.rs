//! OS-thread children of a scope: spawning on [`std::thread::Builder::spawn_unchecked`], the
//! child's life on its thread, join handles, and the builder for named children.
//!
//! The bookkeeping is `std::thread::scope`'s: a count of running children in the scope's
//! [`Shared`] state, decremented by each child as the very last thing it does with anything it may
//! have borrowed, and a scope owner that waits for the count to reach zero. Join handles are not
//! needed for that wait, so forgetting one is safe. The soundness argument is in the `SAFETY`
//! comment of [`ChildBuilder::spawn_with`] and in design/0002-scope.md.
//!
//! # A child's life
//! 1. On the spawning thread: take a slot of the limit (if any), make the child's node (a child
//!    of the scope's node, carrying the inherited bindings only), count it as running
//!    ([`Shared::start_one`]), then start the OS thread. If the OS refuses, everything the closure
//!    captured is dropped on the spawning thread, the count included.
//! 2. On the child's thread: make its context ambient, run the closure under `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it, naming the child (scope invariant 2); a
//!    fallible child's `Err` is recorded and cancels the scope with [`Cause::ChildFailed`].
//! 4. Store the outcome in the [`Packet`] shared with the join handle and let go of the packet;
//!    if the handle is already gone, drop the outcome here (it may borrow from `'scope`).
//! 5. Give the slot back and count the child as finished ([`Shared::finish_one`]): the last thing
//!    it does. Nothing after it touches `'scope` data.
//!
//! [`Cause::ChildFailed`]: crate::Cause::ChildFailed

use super::{Scope, Shared, TrySpawnError};
use crate::live::{self, Counter};
use crate::{Context, JoinError, ambient, testing};
use std::cell::{Cell, UnsafeCell};
use std::error::Error;
use std::fmt;
use std::io;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// What a child's thread hands to its join handle.
enum Outcome<T> {
    Returned(T),
    /// The child panicked; the payload is in the scope's failures under this id.
    Panicked(u64),
}

/// The child's outcome, shared by the child's thread and its join handle (std's `Packet`).
///
/// Written once, by the child, before it lets go of its `Arc`; read (or dropped) only by whoever
/// holds the last `Arc`: the handle after joining the thread, the handle's drop, or the child
/// itself when the handle was dropped first.
struct Packet<T> {
    result: UnsafeCell<Option<Outcome<T>>>,
}

// SAFETY: `Packet` is `!Sync` only because of the `UnsafeCell`. Every access to it is
// synchronized, as in std's `Packet`: the child writes the outcome once, before it drops its
// `Arc<Packet>`; every other access happens through the last `Arc` (`Arc::get_mut` after
// `JoinHandle::join`, `Arc::into_inner`, or the drop of the last `Arc`), and dropping an `Arc`
// (Release) then observing it was the last one (Acquire) orders the child's write before that
// access. So no two threads ever access the cell concurrently, and the outcome only moves to (or
// is dropped on) the joining thread, which needs `T: Send`, required here.
unsafe impl<T: Send> Sync for Packet<T> {}

/// A value that may dangle once the thread that owns it has counted itself out of its scope:
/// std's `MaybeDangling`, for the user's closure.
///
/// The child's closure is called by value; had it held the user's closure (and its `'scope`
/// borrows) as a plain field, those borrows would be asserted live for the whole call, including
/// the moment after [`Shared::finish_one`] when the scope may already have ended
/// (rust-lang/rust#101983). Inside `MaybeUninit` they are opaque until taken out, and they are
/// taken out, and consumed, before the count drops.
#[repr(transparent)]
struct MaybeDangling<T>(MaybeUninit<T>);

impl<T> MaybeDangling<T> {
    fn new(value: T) -> Self {
        MaybeDangling(MaybeUninit::new(value))
    }

    fn into_inner(self) -> T {
        let this = ManuallyDrop::new(self);
        // SAFETY: `self.0` was initialized by `new` and is never de-initialized except here and
        // in `drop`; `ManuallyDrop` keeps `drop` from running after this read, so the value is
        // moved out exactly once.
        unsafe { this.0.assume_init_read() }
    }
}

impl<T> Drop for MaybeDangling<T> {
    fn drop(&mut self) {
        // SAFETY: initialized by `new`; `into_inner` (the only other reader) consumes `self`
        // without running this, so the value is still there and is dropped exactly once.
        unsafe { self.0.assume_init_drop() }
    }
}

thread_local! {
    /// The scope this thread is a child of (its `Shared`, as an address for comparison only;
    /// null on other threads), for [`Scope::wait_all`] to refuse to wait for itself.
    static CHILD_OF: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// Whether this thread is a child of the scope whose state is `shared`.
pub(super) fn is_child_of(shared: &Shared) -> bool {
    CHILD_OF.try_with(|c| std::ptr::eq(c.get(), shared)).unwrap_or(false)
}

/// An owned permission to join a child of a scope, and the child's context.
///
/// Dropping the handle does not detach the child from the scope: the scope waits for it at exit
/// anyway (and cancels it first, unless [`Scope::wait_all`] was called). Forgetting it is safe
/// too: the scope counts its running children itself and never needs the handles to wait for
/// them (a forgotten handle leaks only its own memory and the child's result).
///
/// # Examples
///
/// ```
/// tether::scope(|s| {
///     let h = s.builder().name("adder").spawn(|_| 2 + 2).unwrap();
///     assert_eq!(h.name(), Some("adder"));
///     assert_eq!(h.join().unwrap(), 4);
/// })
/// .unwrap();
/// ```
// Not `#[must_use]`: fire-and-forget children are normal in a scope, which joins them anyway
// (std's scoped handles are not `must_use` either).
pub struct ScopedJoinHandle<'scope, T> {
    /// The OS thread; joined by [`join`](Self::join), detached when the handle is dropped.
    native: std::thread::JoinHandle<()>,
    packet: Arc<Packet<T>>,
    shared: &'scope Shared,
    ctx: Context,
    name: Option<Arc<str>>,
}

/// Configures one child before spawning it: its thread's name and stack size.
///
/// The name is the OS thread's name: it appears in panic messages, in [`JoinError`]s, in the
/// siblings' [`Cause::Panicked`](crate::Cause::Panicked), and in [`crate::testing`] leak reports.
///
/// # Examples
///
/// ```
/// tether::scope(|s| {
///     let h = s.builder().name("worker-1").stack_size(256 * 1024).spawn(|_| {
///         std::thread::current().name().map(str::to_owned)
///     });
///     assert_eq!(h.unwrap().join().unwrap().as_deref(), Some("worker-1"));
/// })
/// .unwrap();
/// ```
#[must_use = "a ChildBuilder does nothing until `spawn`"]
pub struct ChildBuilder<'a, 'scope, 'env> {
    scope: &'a Scope<'scope, 'env>,
    name: Option<String>,
    stack_size: Option<usize>,
}

/// Counts a child as running from before its thread starts until it is done (scope invariant 4):
/// dropping it is the child's last step.
struct Running {
    shared: Arc<Shared>,
    /// Its entry in the registry of live scope threads, for leak reports.
    registry_id: Option<u64>,
    /// Whether the child holds a slot of the limit.
    slot: bool,
}

/// Everything the child's thread takes with it. Field by field, what may borrow from `'scope` is
/// `f` (the user's closure) and `packet` (the result type `T`).
struct Child<F, T> {
    f: MaybeDangling<F>,
    packet: Arc<Packet<T>>,
    ctx: Context,
    name: Option<Arc<str>>,
    running: Running,
}

// ===== impl Scope (spawning) =====

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a child thread running `f` with its own [`Context`], and returns its join handle.
    ///
    /// The child's context is a new child of the scope's: it sees the scope's bindings that are
    /// inherited across spawns, and is ambient on the child's thread ([`crate::current`]). If
    /// the scope is already cancelled, the child still starts, already cancelled with the
    /// scope's cause. With a limit, `spawn` first waits for a free slot, and stops waiting when
    /// the scope is cancelled (see [`ScopeBuilder::limit`](crate::ScopeBuilder::limit)).
    ///
    /// `f` may borrow anything that outlives the scope (`'scope`), including the scope itself:
    /// a child can spawn siblings into its own scope, as with `std::thread::scope` (see
    /// [`Scope`]).
    ///
    /// A panic in `f` cancels the scope at once (siblings see [`Cause::Panicked`](crate::Cause)
    /// naming the child), and is re-raised by the scope unless taken by
    /// [`join`](ScopedJoinHandle::join).
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread (use [`builder`](Self::builder) to get the error).
    ///
    /// # Examples
    ///
    /// ```
    /// let input = [1, 2, 3];
    /// let doubled = tether::scope(|s| {
    ///     let h = s.spawn(|_| input.iter().map(|x| x * 2).collect::<Vec<_>>());
    ///     h.join().unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(doubled, [2, 4, 6]);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.builder().spawn(f).expect("tether: failed to spawn a thread")
    }

    /// Spawns a child whose `Err` fails the scope: the first error cancels the scope with
    /// [`Cause::ChildFailed`](crate::Cause::ChildFailed) (siblings recover it as `E` with
    /// [`Cause::downcast_ref`](crate::Cause::downcast_ref)), and [`crate::scope`] returns a
    /// [`ScopeError`](crate::ScopeError) holding it and every later error.
    ///
    /// The error is shared, so the handle yields it as `Arc<E>`: the very value the scope reports
    /// (joining it does not remove it from the scope's error).
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("not found: {0}")]
    /// struct NotFound(String);
    ///
    /// let err = tether::scope(|s| {
    ///     let sibling = s.spawn(|ctx| ctx.wait());
    ///     let failed = s.spawn_fallible(|_| Err::<(), _>(NotFound("cat".into())));
    ///     assert_eq!(failed.join().unwrap().unwrap_err().0, "cat");
    ///     let cause = sibling.join().unwrap();
    ///     assert_eq!(cause.downcast_ref::<NotFound>().unwrap().0, "cat");
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "not found: cat");
    /// ```
    pub fn spawn_fallible<F, T, E>(&'scope self, f: F) -> ScopedJoinHandle<'scope, Result<T, Arc<E>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        self.builder().spawn_fallible(f).expect("tether: failed to spawn a thread")
    }

    /// Spawns a child only if a slot of the limit is free (errgroup's `TryGo`); otherwise hands
    /// `f` back in the error. Without a limit it always spawns.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError`] when every slot is taken.
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::ScopeBuilder::new().limit(1).run(|s| {
    ///     let busy = s.spawn(|ctx| ctx.wait());
    ///     assert!(s.try_spawn(|_| ()).is_err(), "the only slot is taken");
    ///     s.cancel();
    ///     busy.join().unwrap();
    /// })
    /// .unwrap();
    /// ```
    pub fn try_spawn<F, T>(&'scope self, f: F) -> Result<ScopedJoinHandle<'scope, T>, TrySpawnError<F>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        match self.shared.try_acquire_slot() {
            None => Err(TrySpawnError::new(f)),
            Some(slot) => Ok(self.builder().spawn_with(slot, f).expect("tether: failed to spawn a thread")),
        }
    }

    /// A builder for a child with a name or a stack size.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let h = s.builder().name("indexer").spawn(|_| ()).unwrap();
    ///     assert_eq!(h.thread().name(), Some("indexer"));
    /// })
    /// .unwrap();
    /// ```
    pub fn builder(&'scope self) -> ChildBuilder<'scope, 'scope, 'env> {
        ChildBuilder { scope: self, name: None, stack_size: None }
    }
}

// ===== impl ChildBuilder =====

impl<'scope, 'env> ChildBuilder<'scope, 'scope, 'env> {
    /// Names the child's thread.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the child's stack size in bytes.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the child, as [`Scope::spawn`].
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be created; nothing is spawned then.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn spawn<F, T>(self, f: F) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let slot = self.scope.shared.acquire_slot();
        self.spawn_with(slot, f)
    }

    /// Spawns a fallible child, as [`Scope::spawn_fallible`].
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be created; nothing is spawned then.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     s.builder().name("loader").spawn_fallible(|_| Err::<(), _>(std::fmt::Error)).unwrap();
    /// })
    /// .unwrap_err();
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn spawn_fallible<F, T, E>(self, f: F) -> io::Result<ScopedJoinHandle<'scope, Result<T, Arc<E>>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        let shared: &'scope Shared = self.scope.shared;
        self.spawn(move |ctx| {
            f(ctx).map_err(|error| {
                let error = Arc::new(error);
                shared.failed(error.clone());
                error
            })
        })
    }

    /// Spawns the child holding a slot of the limit (`slot`) or not. Steps 1 to 5 of the module
    /// docs.
    fn spawn_with<F, T>(self, slot: bool, f: F) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let shared: &'scope Shared = self.scope.shared;
        let name: Option<Arc<str>> = self.name.as_deref().map(Arc::from);
        // 1. The child's node, and its count as running (given back by `Running::drop`, also when
        //    the OS refuses the thread and std drops the closure).
        let ctx = shared.ctx.child_for_spawn();
        let packet = Arc::new(Packet { result: UnsafeCell::new(None) });
        let child = Child {
            f: MaybeDangling::new(f),
            packet: packet.clone(),
            ctx: ctx.clone(),
            name: name.clone(),
            running: Running::start(self.scope.shared.clone(), name.clone(), slot),
        };
        let mut builder = std::thread::Builder::new();
        if let Some(name) = self.name {
            builder = builder.name(name);
        }
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        // SAFETY: `spawn_unchecked` requires that the thread not outlive anything its closure
        // (`F: 'scope`) or its result (`T: 'scope`, stored in the packet) borrows. Those borrows
        // live at least as long as `'scope`, and what `'scope` covers (the caller's borrows and
        // the `Scope` itself, a local of `super::run_scope`) stays alive until the scope's owner
        // has seen the running count at zero and closed it (`Shared::close`, which `super::end`
        // runs after the body, whose panic is caught; nothing unwinds past it), before `scope`
        // returns. Closed, the count refuses any later spawn (`count.rs`, invariant 2):
        // - `Running::start` above counted this child before its thread exists, and its count is
        //   given back only by `Running::drop`: on the child's thread as `run` ends, or here, if
        //   the OS refuses the thread, when std drops the closure.
        // - On the child's thread, `run` consumes `f` and drops or hands over the result (into
        //   the packet, which the handle owns then) before dropping `Running`, whose decrement
        //   (SeqCst, so Release) is the last access to anything borrowed; the owner's load that
        //   sees zero (SeqCst, so Acquire) synchronizes with every decrement.
        // - A result left in the packet is dropped by the handle, which is `'scope`-bound, on a
        //   thread that is itself counted or is the body; or never, if the handle is forgotten.
        //   So no user code that can reach the scope runs after the last count drops.
        // - The count cannot reach zero while a spawn is in progress: the spawner is the body
        //   (whose end the owner waits for first) or a child of this scope (counted until it
        //   finishes), so a child spawning a sibling keeps the count above zero throughout.
        // - 'scope cannot be shrunk to a shorter-lived borrow: `Scope` is invariant in it, as
        //   std's is (see `Scope`).
        let native = unsafe { builder.spawn_unchecked(move || run(child))? };
        Ok(ScopedJoinHandle { native, packet, shared, ctx, name })
    }
}

/// The child's thread: steps 2 to 5 of the module docs.
fn run<F, T>(child: Child<F, T>)
where
    F: FnOnce(&Context) -> T,
{
    let Child { f, packet, ctx, name, running } = child;
    let shared = &*running.shared;
    let _ = CHILD_OF.try_with(|c| c.set(shared));
    // 2. Run, with the context ambient; `f` is consumed by this call.
    let result = {
        let _ambient = ambient::enter(&ctx);
        let f = f.into_inner();
        catch_unwind(AssertUnwindSafe(|| f(&ctx)))
    };
    // 3. A panic is recorded and cancels the scope, naming the child.
    let outcome = match result {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(shared.panicked(name, payload)),
    };
    // Dropping the context may discard callbacks (user code): a panic there is the child's.
    shared.drop_caught(ctx);
    // 4. Hand the outcome over.
    // SAFETY: the cell is written only here, once, while this thread holds an `Arc` to the
    // packet; the handle reads it only through the last `Arc`, after this thread dropped its own
    // (see `Packet`'s `Sync`), so nothing reads or writes it concurrently.
    unsafe { *packet.result.get() = Some(outcome) };
    // If the handle is gone, drop the outcome now, while it may still use what it borrowed from
    // `'scope` (std's "only after the result has been dropped"). Its destructor is user code; a
    // panic there is the child's, reported by the scope.
    shared.drop_caught(Arc::into_inner(packet));
    // 5. Done: count the child out (`Running::drop`), the last access to `'scope` data.
    drop(running);
}

// ===== impl ScopedJoinHandle =====

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the child to finish and returns its result, or the [`JoinError`] holding its
    /// panic payload (which the scope then does not re-raise). The child's completion
    /// synchronizes with this call returning.
    ///
    /// # Errors
    ///
    /// [`JoinError`] when the child panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     assert_eq!(s.spawn(|_| "done").join().unwrap(), "done");
    ///     assert!(s.spawn(|_| panic!("boom")).join().is_err());
    /// })
    /// .unwrap(); // the panic was taken by `join`: the scope does not re-raise it
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        let ScopedJoinHandle { native, mut packet, shared, ctx, name } = self;
        drop(ctx);
        if let Err(payload) = native.join() {
            // Unreachable: `run` catches every panic of user code (scope invariant 2).
            resume_unwind(payload);
        }
        // The thread has ended, so it dropped its `Arc` and this one is the last.
        let outcome = Arc::get_mut(&mut packet)
            .and_then(|packet| packet.result.get_mut().take())
            .expect("tether: a joined child left its outcome in the packet");
        match outcome {
            Outcome::Returned(value) => Ok(value),
            Outcome::Panicked(id) => {
                let payload = shared.take_panic(id).expect("tether: a child's panic was taken twice");
                Err(JoinError::new(name, payload))
            }
        }
    }

    /// Whether the child has finished running its closure (its result is ready for
    /// [`join`](Self::join), which may still wait a moment for the thread to exit).
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let h = s.spawn(|_| ());
    ///     while !h.is_finished() {
    ///         std::thread::yield_now();
    ///     }
    ///     h.join().unwrap();
    /// })
    /// .unwrap();
    /// ```
    pub fn is_finished(&self) -> bool {
        Arc::strong_count(&self.packet) == 1
    }

    /// The child's context: cancel it to stop this child only.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::scope(|s| {
    ///     let h = s.spawn(|ctx| ctx.wait());
    ///     h.context().cancel();
    ///     assert_eq!(h.join().unwrap(), tether::Cause::Cancelled);
    ///     assert!(!s.context().is_cancelled(), "the scope goes on");
    /// })
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The child's name, if it was given one with [`ChildBuilder::name`].
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| assert_eq!(s.spawn(|_| ()).name(), None)).unwrap();
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The child's thread.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     let h = s.spawn(|_| std::thread::current().id());
    ///     let id = h.thread().id();
    ///     assert_eq!(h.join().unwrap(), id);
    /// })
    /// .unwrap();
    /// ```
    pub fn thread(&self) -> &std::thread::Thread {
        self.native.thread()
    }
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle").field("name", &self.name).field("context", &self.ctx).finish()
    }
}

impl fmt::Debug for ChildBuilder<'_, '_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildBuilder")
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .finish_non_exhaustive()
    }
}

// ===== impl Running =====

impl Running {
    fn start(shared: Arc<Shared>, name: Option<Arc<str>>, slot: bool) -> Running {
        shared.start_one();
        live::add(Counter::Threads, 1);
        let registry_id = testing::thread_started(name);
        Running { shared, registry_id, slot }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.slot {
            self.shared.release_slot();
        }
        if let Some(id) = self.registry_id {
            testing::thread_finished(id);
        }
        live::add(Counter::Threads, -1);
        // Last: after this the scope may end (see `ChildBuilder::spawn_with`).
        self.shared.finish_one();
    }
}
