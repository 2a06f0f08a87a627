//! OS-thread children of a scope: spawning on [`std::thread::Builder::spawn_unchecked`], the
//! child's life on its thread, join handles, and the builder for named children. What they share
//! with task children (the count, the outcome, the markers) is in `child.rs`.
//!
//! The bookkeeping is `std::thread::scope`'s: a count of running children in the scope's
//! [`ScopeState`], decremented by each child as the very last thing it does with anything it may
//! have borrowed, and a scope owner that waits for the count to reach zero. Join handles are not
//! needed for that wait, so forgetting one is safe. The soundness argument is in the `SAFETY`
//! comment of [`ChildBuilder::spawn_holding`] and in design/0002-scope.md.
//!
//! # A thread child's life (the steps of `child.rs`, for a thread)
//! 1. On the spawning thread: take a slot of the limit (if any), make the child's node (a child
//!    of the scope's node, carrying the inherited bindings only), count it as running
//!    ([`Running::start`]), then start the OS thread. If the OS refuses, everything the closure
//!    captured is dropped on the spawning thread, the count included.
//! 2. On the child's thread: make its context ambient, run the closure under `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it, naming the child (scope invariant 2); a
//!    fallible child's `Err` is recorded and cancels the scope with [`Cause::ChildFailed`].
//! 4. Store the outcome in the [`Packet`] shared with the join handle and let go of the packet;
//!    if the handle is already gone, drop the outcome here (it may borrow from `'scope`).
//! 5. Give the slot back and count the child as finished (dropping [`Running`]): the last thing
//!    it does. Nothing after it touches `'scope` data.
//!
//! [`Cause::ChildFailed`]: crate::Cause::ChildFailed

use super::child::{ChildOf, Kind, Outcome, Running, fail_scope_on_err};
use super::error::JoinError;
use super::handle::Scope;
use super::observe::{HandleHook, ThreadHook};
use super::state::{ScopeState, Slot};
use crate::ambient;
use crate::context::Context;
use crate::dump::BlockingSite;
use crate::dump::ChildKind;
use crate::dump::registry::WorkingFor;
use crate::live;
use crate::telemetry;
use std::cell::UnsafeCell;
use std::error::Error;
use std::fmt;
use std::io;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::sync::Arc;

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
/// the moment after the child counts out, when the scope may already have ended
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
    state: &'scope ScopeState,
    ctx: Context,
    name: Option<Arc<str>>,
    /// Marks the child released for dumps when the handle goes (`observe.rs`).
    _hook: HandleHook,
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
    pub(super) scope: &'a Scope<'scope, 'env>,
    pub(super) name: Option<String>,
    pub(super) stack_size: Option<usize>,
}

/// Everything the child's thread takes with it. Field by field, what may borrow from `'scope` is
/// `f` (the user's closure) and `packet` (the result type `T`).
struct Child<F, T> {
    f: MaybeDangling<F>,
    packet: Arc<Packet<T>>,
    ctx: Context,
    name: Option<Arc<str>>,
    hook: ThreadHook,
    running: Running,
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
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let site = Location::caller();
        let slot = self.scope.state.wait_for_slot();
        self.spawn_holding(slot, f, site)
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
    #[track_caller]
    pub fn spawn_fallible<F, T, E>(self, f: F) -> io::Result<ScopedJoinHandle<'scope, Result<T, Arc<E>>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        let state: &'scope ScopeState = self.scope.state;
        self.spawn(fail_scope_on_err(state, f))
    }

    /// Spawns the child holding a slot of the limit (`slot`) or not, as spawned at `site`. Steps
    /// 1 to 5 of the module docs.
    pub(super) fn spawn_holding<F, T>(
        self,
        slot: Slot,
        f: F,
        site: &'static Location<'static>,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let state: &'scope Arc<ScopeState> = self.scope.state;
        let name: Option<Arc<str>> = self.name.as_deref().map(Arc::from);
        let f = telemetry::instrument(&state.obs, ChildKind::Thread, name.as_deref(), site, f);
        // 1. The child's node, and its count as running (given back by `Running::drop`, also when
        //    the OS refuses the thread and std drops the closure).
        let ctx = state.ctx.child_for_spawn();
        let registry_id = live::thread_started(name.clone());
        let packet = Arc::new(Packet { result: UnsafeCell::new(None) });
        let hook = state.meta.thread_spawned(site, name.clone());
        let handle_hook = hook.for_handle();
        let child = Child {
            f: MaybeDangling::new(f),
            packet: packet.clone(),
            ctx: ctx.clone(),
            name: name.clone(),
            hook,
            running: Running::start(state, slot, Kind::Thread { registry_id }),
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
        // the `Scope` itself, a local of `exit::run_body_then_exit`) stays alive until the
        // scope's owner has seen the running count at zero and closed it (`ScopeState::close`,
        // step 2 of the exit, after the body, whose panic is caught; nothing unwinds past it),
        // before `scope` returns. Closed, the count refuses any later spawn (`count.rs`, invariant 2):
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
        Ok(ScopedJoinHandle { native, packet, state, ctx, name, _hook: handle_hook })
    }
}

/// The child's thread: steps 2 to 5 of the module docs.
fn run<F, T>(child: Child<F, T>)
where
    F: FnOnce(&Context) -> T,
{
    let Child { f, packet, ctx, name, hook, running } = child;
    let state = running.state();
    let _child_of = ChildOf::thread(state);
    let _working_for = WorkingFor::enter(state.meta.id);
    hook.started();
    // 2. Run, with the context ambient; `f` is consumed by this call.
    let result = {
        let _ambient = ambient::enter(&ctx);
        let f = f.into_inner();
        catch_unwind(AssertUnwindSafe(|| f(&ctx)))
    };
    // 3. A panic is recorded and cancels the scope, naming the child.
    let outcome = match result {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(state.panicked(name, payload)),
    };
    // Dropping the context may discard callbacks (user code): a panic there is the child's.
    state.drop_caught(ctx);
    // 4. Hand the outcome over.
    // SAFETY: the cell is written only here, once, while this thread holds an `Arc` to the
    // packet; the handle reads it only through the last `Arc`, after this thread dropped its own
    // (see `Packet`'s `Sync`), so nothing reads or writes it concurrently.
    unsafe { *packet.result.get() = Some(outcome) };
    hook.finished();
    // If the handle is gone, drop the outcome now, while it may still use what it borrowed from
    // `'scope` (std's "only after the result has been dropped"). Its destructor is user code; a
    // panic there is the child's, reported by the scope.
    state.drop_caught(Arc::into_inner(packet));
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
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        let ScopedJoinHandle { native, mut packet, state, ctx, name, _hook } = self;
        drop(ctx);
        let joined = {
            let _blocked = BlockingSite::enter(Location::caller());
            native.join()
        };
        if let Err(payload) = joined {
            // Unreachable: `run` catches every panic of user code (scope invariant 2).
            resume_unwind(payload);
        }
        // The thread has ended, so it dropped its `Arc` and this one is the last.
        let outcome = Arc::get_mut(&mut packet)
            .and_then(|packet| packet.result.get_mut().take())
            .expect("tether: a joined child left its outcome in the packet");
        outcome.into_join_result(state, name, || unreachable!("a thread child is never skipped"))
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
