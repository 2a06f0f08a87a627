//! [`Scope`]: the handle a scope's body and children use, and its whole public surface: the
//! scope's context, cancelling it, waiting for the children, and spawning thread and task
//! children. Each method checks its arguments and hands over to the engine: `thread.rs` and
//! `task.rs` for the children, `state.rs` for the counts, failures and slots.

use super::child::{self, fail_scope_on_err};
use super::error::TrySpawnError;
use super::state::{LimitFull, ScopeState, Slot};
use super::task::{self, TaskHandle};
use super::thread::{ChildBuilder, ScopedJoinHandle};
use crate::block_on::block_on;
use crate::context::Context;
use crate::dump::{BlockingSite, ChildKind};
use crate::telemetry;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

/// The handle a scope body uses to spawn children, cancel them and wait for them.
///
/// # Lifetimes
///
/// As in std: `'scope` is the lifetime of the scope itself, from before the body starts until
/// every child has finished (but before [`scope`](crate::scope()) returns); spawned closures and their results
/// may borrow anything that lives that long (`F: 'scope`), and join handles cannot outlive it.
/// `'env` is the lifetime of what the scope borrows from its caller: anything that outlives the
/// call to [`scope`](crate::scope()), so `'env: 'scope`. A child cannot borrow what the body itself owns, since
/// that dies before the children are joined:
///
/// ```compile_fail,E0373
/// tether::scope(|s| {
///     let local = vec![1, 2, 3];
///     s.spawn(|_| local.len());
/// });
/// ```
///
/// (Move it in instead: `s.spawn(move |_| local.len())`.) A join handle cannot escape its scope:
///
/// ```compile_fail
/// let handle = tether::scope(|s| s.spawn(|_| 1)).unwrap();
/// handle.join();
/// ```
///
/// `'scope` is invariant, as in std, which is what makes the next rule sound: children may
/// capture the scope itself and spawn siblings into it. Such a sibling is a child of the scope
/// like any other (its context is a child of the scope's, the exit cancels and waits for it),
/// and it must not borrow what its spawner owns:
///
/// ```compile_fail,E0373
/// tether::scope(|s| {
///     s.spawn(|_| {
///         let a = String::from("abcd");
///         s.spawn(|_| println!("{a:?}")); // might run after `a` is dropped
///     });
/// });
/// ```
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
///
/// let visited = AtomicUsize::new(0);
/// tether::scope(|s| {
///     s.spawn(|_| {
///         visited.fetch_add(1, SeqCst);
///         // A child spawns a sibling: the scope waits for it too.
///         s.spawn(|_| visited.fetch_add(1, SeqCst));
///     });
///     s.wait_all();
/// })
/// .unwrap();
/// assert_eq!(visited.into_inner(), 2);
/// ```
///
/// A child can also open a nested scope, whose context is then a child of its own.
///
/// # Examples
///
/// ```
/// let mut data = vec![1, 2, 3];
/// tether::scope(|s| {
///     s.spawn(|_| println!("the children may borrow {data:?}"));
///     s.spawn(|_| assert_eq!(data.len(), 3));
/// })
/// .unwrap();
/// data.push(4); // the borrows ended with the scope
/// ```
pub struct Scope<'scope, 'env: 'scope> {
    /// The state, owned by `exit::run_body_then_exit` (which keeps it until the count is closed).
    pub(super) state: &'scope Arc<ScopeState>,
    /// Invariance over `'scope`, as in std, so that `'scope` cannot shrink: children get
    /// `F: 'scope`, and a child that captured `&'scope Scope` could otherwise spawn a sibling
    /// borrowing its own locals (the `compile_fail` example above), which the scope's wait would
    /// not protect.
    pub(super) scope: PhantomData<&'scope mut &'scope ()>,
    pub(super) env: PhantomData<&'env mut &'env ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// The scope's context: a child of the scope's parent, and the parent of every child's
    /// context. Cancelling it cancels every child.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::scope(|s| {
    ///     let child = s.spawn(|ctx| ctx.wait());
    ///     s.context().cancel();
    ///     assert_eq!(child.join().unwrap(), tether::Cause::Cancelled);
    /// })
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        &self.state.ctx
    }

    /// Cancels the scope (with [`Cause::Cancelled`](crate::Cause::Cancelled)) and so every child; does not wait for them.
    /// Children spawned afterwards start already cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::scope(|s| {
    ///     s.cancel();
    ///     assert!(s.spawn(|ctx| ctx.is_cancelled()).join().unwrap());
    /// })
    /// .unwrap();
    /// ```
    pub fn cancel(&self) {
        self.state.ctx.cancel();
    }

    /// Blocks until every child spawned so far has finished, **without cancelling** them: the
    /// exit of `std::thread::scope`, Trio's nursery and Kotlin's `coroutineScope`. Children that
    /// children spawn while it waits are waited for too. The scope stays usable afterwards.
    ///
    /// Call it last in the body to let the children run to completion instead of being
    /// cancelled by the exit. A child failure or panic still cancels the siblings (they then
    /// finish early), and is still reported when the scope ends.
    ///
    /// # Panics
    ///
    /// When called from a child (thread or task) of this same scope, which would wait for itself. (From deeper
    /// down, a grandchild in a nested scope, it deadlocks the same way and is not detected.)
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let finished = tether::scope(|s| {
    ///     let h = s.spawn(|ctx| {
    ///         std::thread::sleep(std::time::Duration::from_millis(5));
    ///         !ctx.is_cancelled()
    ///     });
    ///     s.wait_all();
    ///     h.join().unwrap()
    /// })
    /// .unwrap();
    /// assert!(finished, "wait_all does not cancel");
    /// ```
    #[track_caller]
    pub fn wait_all(&self) {
        assert!(
            !child::is_child_of(self.state),
            "tether: wait_all called from a child of the same scope would wait for itself"
        );
        let _blocked = BlockingSite::enter(Location::caller());
        self.state.wait_idle();
    }

    // ----- Thread children (`thread.rs`) -----

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
    #[track_caller]
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
    #[track_caller]
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
    #[track_caller]
    pub fn try_spawn<F, T>(&'scope self, f: F) -> Result<ScopedJoinHandle<'scope, T>, TrySpawnError<F>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let site = Location::caller();
        self.with_free_slot(ChildKind::Thread, f, |slot, f| {
            self.builder().spawn_holding(slot, f, site).expect("tether: failed to spawn a thread")
        })
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

    /// Spawns a thread child that drives the future `f` returns to completion, parking between
    /// polls (the thread is its executor; no runtime needed). The future may borrow `'scope` data,
    /// as a thread child's closure may, and runs with the child's context ambient: the way to
    /// run borrowing async code in parallel within a scope.
    ///
    /// As with [`spawn`](Self::spawn), the future cannot borrow what the body owns (it would be
    /// dropped before the scope joins the child):
    ///
    /// ```compile_fail,E0373
    /// tether::scope(|s| {
    ///     let local = vec![1, 2, 3];
    ///     s.spawn_future(|_| async { local.len() });
    /// });
    /// ```
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let words = ["a", "bb", "ccc"];
    /// let total = tether::scope(|s| {
    ///     let h = s.spawn_future(|ctx| async move {
    ///         assert!(!ctx.is_cancelled());
    ///         words.iter().map(|w| w.len()).sum::<usize>()
    ///     });
    ///     h.join().unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(total, 6);
    /// ```
    #[track_caller]
    pub fn spawn_future<F, Fut, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce(Context) -> Fut + Send + 'scope,
        Fut: Future<Output = T> + 'scope,
        T: Send + 'scope,
    {
        self.spawn(move |ctx| block_on(f(ctx.clone())))
    }

    // ----- Task children (`task.rs`) -----

    /// Spawns a pool task running `f` with its own [`Context`], and returns its handle.
    ///
    /// A task is a scope child like a [`spawn`](Self::spawn)ed thread (its context is a new
    /// child of the scope's, inheriting the bindings that are inherited across spawns; it may
    /// borrow `'scope` data, including the scope; the scope cancels and then joins it at exit; a
    /// panic cancels the siblings and is re-raised by the scope), but it runs on the shared
    /// work-stealing pool ([`crate::pool`]): starting one costs an allocation and a queue push
    /// instead of an OS thread.
    ///
    /// **A task whose context is cancelled before it starts does not run**: its closure is
    /// dropped uncalled and [`join`](TaskHandle::join) returns a [`JoinError`](crate::JoinError) for which
    /// [`is_skipped`](crate::JoinError::is_skipped) holds. So the scope's exit (which cancels) skips
    /// the tasks still queued; call [`wait_all`](Self::wait_all) first to run them all.
    ///
    /// **Blocking in a task holds a pool worker** (there are about as many as cores) for as
    /// long as it blocks: fine for a short lock or a wait for a nested scope (which runs that
    /// scope's pending tasks while it waits), costly for I/O, sleeps or waits on things outside
    /// the pool. Spawn a thread ([`spawn`](Self::spawn)) for those.
    ///
    /// With a limit, `spawn_task` waits for a free slot as `spawn` does, running the scope's
    /// pending tasks meanwhile.
    ///
    /// As with threads, a task cannot borrow what the body owns (it would be dropped before the
    /// scope joins the task):
    ///
    /// ```compile_fail,E0373
    /// tether::scope(|s| {
    ///     let local = vec![1, 2, 3];
    ///     s.spawn_task(|_| local.len());
    /// });
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    ///
    /// let hits = AtomicUsize::new(0);
    /// tether::scope(|s| {
    ///     for _ in 0..1000 {
    ///         s.spawn_task(|_| hits.fetch_add(1, SeqCst));
    ///     }
    ///     s.wait_all(); // without it, the exit would skip the tasks not yet started
    /// })
    /// .unwrap();
    /// assert_eq!(hits.into_inner(), 1000);
    /// ```
    #[track_caller]
    pub fn spawn_task<F, T>(&'scope self, f: F) -> TaskHandle<'scope, T>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let site = Location::caller();
        let slot = self.state.wait_for_slot_helping();
        task::spawn(self.state, slot, f, site)
    }

    /// Spawns a pool task whose `Err` fails the scope, as [`spawn_fallible`](Self::spawn_fallible)
    /// does for threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::scope(|s| {
    ///     let h = s.spawn_task_fallible(|_| Err::<(), _>(std::fmt::Error));
    ///     assert!(h.join().unwrap().is_err());
    /// })
    /// .unwrap_err();
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    #[track_caller]
    pub fn spawn_task_fallible<F, T, E>(&'scope self, f: F) -> TaskHandle<'scope, Result<T, Arc<E>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        let state: &'scope ScopeState = self.state;
        self.spawn_task(fail_scope_on_err(state, f))
    }

    /// Spawns a pool task only if a slot of the limit is free; otherwise hands `f` back. Without
    /// a limit it always spawns.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError`] when every slot is taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// tether::ScopeBuilder::new().limit(1).run(|s| {
    ///     let busy = s.spawn(|ctx| ctx.wait());
    ///     assert!(s.try_spawn_task(|_| ()).is_err(), "the only slot is taken");
    ///     s.cancel();
    ///     busy.join().unwrap();
    /// })
    /// .unwrap();
    /// ```
    #[track_caller]
    pub fn try_spawn_task<F, T>(&'scope self, f: F) -> Result<TaskHandle<'scope, T>, TrySpawnError<F>>
    where
        F: FnOnce(&Context) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let site = Location::caller();
        self.with_free_slot(ChildKind::Task, f, |slot, f| task::spawn(self.state, slot, f, site))
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns `f` with `spawn` if a slot of the limit is free (or there is no limit); otherwise
    /// hands `f` back: the `try_` spawns.
    fn with_free_slot<F, H>(
        &'scope self,
        kind: ChildKind,
        f: F,
        spawn: impl FnOnce(Slot, F) -> H,
    ) -> Result<H, TrySpawnError<F>> {
        match self.state.try_take_slot() {
            Err(LimitFull) => {
                telemetry::try_spawn_rejected(kind);
                Err(TrySpawnError::new(f))
            }
            Ok(slot) => Ok(spawn(slot, f)),
        }
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("context", &self.state.ctx)
            .field("running", &self.state.running())
            .finish_non_exhaustive()
    }
}
