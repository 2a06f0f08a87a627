//! OS-thread children of a scope: spawning, the child's life on its thread, join handles, and the
//! builder for named children.
//!
//! # A child's life
//! 1. On the spawning thread: take a slot of the limit (if any), make the child's node (a child
//!    of the scope's node, carrying the inherited bindings only), count it as running.
//! 2. On the child's thread: make its context ambient, run the closure under `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it, naming the child (scope invariant 2); a
//!    fallible child's `Err` is recorded and cancels the scope with [`Cause::ChildFailed`].
//! 4. Drop the child's context, give the slot back, and count the child as finished: the last
//!    thing it does with the scope's state (scope invariant 4).

use super::{Scope, Shared, TrySpawnError};
use crate::live::{self, Kind};
use crate::{Context, JoinError, ambient, testing};
use std::error::Error;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, PoisonError};

/// What a child's thread hands to its join handle.
enum Outcome<T> {
    Returned(T),
    /// The child panicked; the payload is in the scope's failures under this id.
    Panicked(u64),
}

/// An owned permission to join a child of a scope, and the child's context.
///
/// Dropping the handle does not detach the child: the scope joins it at exit anyway (and
/// cancels it first, unless [`Scope::wait_all`] was called). Forgetting it is safe too.
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
    inner: crossbeam::thread::ScopedJoinHandle<'scope, Outcome<T>>,
    shared: Arc<Shared>,
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

/// Counts a child as running from before its thread starts until it is done (scope invariant 4).
struct Running {
    shared: Arc<Shared>,
    /// Its entry in the registry of live scope threads, for leak reports.
    registry_id: u64,
    /// Whether the child holds a slot of the limit.
    slot: bool,
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
    pub fn spawn<F, T>(&self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce(&Context) -> T + Send + 'env,
        T: Send + 'env,
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
    pub fn spawn_fallible<F, T, E>(&self, f: F) -> ScopedJoinHandle<'scope, Result<T, Arc<E>>>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'env,
        T: Send + 'env,
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
    pub fn try_spawn<F, T>(&self, f: F) -> Result<ScopedJoinHandle<'scope, T>, TrySpawnError<F>>
    where
        F: FnOnce(&Context) -> T + Send + 'env,
        T: Send + 'env,
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
    pub fn builder(&self) -> ChildBuilder<'_, 'scope, 'env> {
        ChildBuilder { scope: self, name: None, stack_size: None }
    }
}

// ===== impl ChildBuilder =====

impl<'scope, 'env> ChildBuilder<'_, 'scope, 'env> {
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
        F: FnOnce(&Context) -> T + Send + 'env,
        T: Send + 'env,
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
        F: FnOnce(&Context) -> Result<T, E> + Send + 'env,
        T: Send + 'env,
        E: Error + Send + Sync + 'static,
    {
        let shared = self.scope.shared.clone();
        self.spawn(move |ctx| {
            f(ctx).map_err(|error| {
                let error = Arc::new(error);
                shared.failed(error.clone());
                error
            })
        })
    }

    /// Spawns the child holding a slot of the limit (`slot`) or not. Steps 1 to 4 of the module
    /// docs.
    fn spawn_with<F, T>(self, slot: bool, f: F) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce(&Context) -> T + Send + 'env,
        T: Send + 'env,
    {
        let shared = &self.scope.shared;
        let name: Option<Arc<str>> = self.name.as_deref().map(Arc::from);
        // 1. The child's node, and its count as running (given back by `Running::drop`, also when
        //    the OS refuses the thread and drops the closure).
        let ctx = shared.ctx.child_for_spawn();
        let running = Running::start(shared.clone(), name.clone(), slot);
        let mut builder = self.scope.threads.builder();
        if let Some(name) = self.name {
            builder = builder.name(name);
        }
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let (child_ctx, child_name) = (ctx.clone(), name.clone());
        let inner = builder.spawn(move |_| run_child(running, child_ctx, child_name, f))?;
        Ok(ScopedJoinHandle { inner, shared: shared.clone(), ctx, name })
    }
}

/// The child's thread: steps 2 to 4 of the module docs.
fn run_child<F, T>(running: Running, ctx: Context, name: Option<Arc<str>>, f: F) -> Outcome<T>
where
    F: FnOnce(&Context) -> T,
{
    // 2. Run, with the context ambient.
    let result = {
        let _ambient = ambient::enter(ctx.clone());
        catch_unwind(AssertUnwindSafe(|| f(&ctx)))
    };
    // 3. A panic is recorded and cancels the scope, naming the child.
    let outcome = match result {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(running.shared.panicked(name, payload)),
    };
    // 4. Done: drop the context, then count the child as finished (`Running::drop`).
    drop(ctx);
    drop(running);
    outcome
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
        match self.inner.join() {
            Ok(Outcome::Returned(value)) => Ok(value),
            Ok(Outcome::Panicked(id)) => {
                let payload = self.shared.take_panic(id).expect("tether: a child's panic was taken twice");
                Err(JoinError::new(self.name, payload))
            }
            // Unreachable: the child catches its own panics (scope invariant 2).
            Err(payload) => resume_unwind(payload),
        }
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
        self.inner.thread()
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
        *shared.running.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        live::add(Kind::Threads, 1);
        let registry_id = testing::thread_started(name);
        Running { shared, registry_id, slot }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.slot {
            self.shared.release_slot();
        }
        testing::thread_finished(self.registry_id);
        live::add(Kind::Threads, -1);
        let mut running = self.shared.running.lock().unwrap_or_else(PoisonError::into_inner);
        *running -= 1;
        if *running == 0 {
            self.shared.idle.notify_all();
        }
    }
}
