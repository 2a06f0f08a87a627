//! [`async_scope`]: a scope of async children that may borrow from the enclosing stack frame,
//! all polled by the scope's own future (concurrent, not parallel), on any executor.
//!
//! The scope semantics are the thread scope's: each child has a child context (ambient during its
//! polls), the first failure or panic cancels the siblings with a typed cause, panics are
//! re-raised with their payload, every error is kept, values are inherited, children count as
//! live tasks for the leak checker, and the exit cancels then waits.
//!
//! # Soundness
//! No sound API gives borrowing, parallelism and a non-blocking scope at once (the scoped-task
//! trilemma). This is the corner without parallelism: the children are owned by the future
//! [`async_scope`] returns (those just spawned by the scope it owns, until its next poll takes
//! them in), and only that future ever polls them. So no
//! child can run after the scope's future is dropped (dropping it drops the children), and if the
//! future is leaked (`mem::forget`), the children are never polled again: they may hold dangling
//! borrows, but nothing can use them. `'scope` is invariant, as in std's scope, so a child cannot
//! borrow what the body (or another child) owns. The scope itself is on the heap, owned by that
//! future, and the reference the body gets to it is made with `unsafe` (the `SAFETY` comment in
//! [`async_scope`]): the same argument, written out.
//!
//! # Invariants
//! 1. The children are polled only by the scope's future, each with its context ambient, under
//!    `catch_unwind`, and with a waker of its own that queues it and wakes the scope's future
//!    (`ready.rs`): a poll of the scope's future polls the children woken since the last one, not
//!    every child, so a wake-up costs one child's poll however many are pending.
//! 2. A child spawned while the children are being polled (by the body or a sibling) goes to the
//!    scope's `spawned` list and is polled in the same poll of the scope's future: the children
//!    being polled are the future's own (`Running`), outside any lock, so a spawn never waits for
//!    them. A child woken during that poll (by itself or a sibling) is polled at the next one,
//!    which its wake-up asked for: a child that keeps waking itself cannot hold the executor.
//! 3. The exit cancels the scope's context and polls the children until none is left; only then
//!    does it report.
//! 4. A poll of the scope's future that finds the scope's context cancelled for the first time
//!    (the exit, a failure, a panic, a cancelled parent) polls every child once more, woken or
//!    not: a child that only checks `is_cancelled()` when polled, without arranging a wake-up,
//!    still learns of the cancellation (once, at a cost of one poll per child). Otherwise a child
//!    is polled only when its own waker asks for it, as in `FuturesUnordered`: a child that
//!    returns `Pending` with no wake-up arranged is not polled again because a sibling was woken.

use crate::ambient;
use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use crate::live::{self, Counter};
use crate::scope::failures::{self, FailureLog};
use crate::scope::{JoinError, ScopeError};
use crate::slab::Slab;
use ready::Ready;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{self, Poll, Waker};

pub(crate) mod ready;

/// A child's future, with its output already handed to its handle.
type ChildFuture<'scope> = Pin<Box<dyn Future<Output = ()> + Send + 'scope>>;

/// The body's future, as the closure given to [`async_scope`] returns it.
pub type ScopeBody<'scope, R> = Pin<Box<dyn Future<Output = R> + Send + 'scope>>;

/// Runs `body` in a new async scope and returns its result once every child has finished.
///
/// `body` receives the [`AsyncScope`] and returns its future, boxed (the scope's lifetime is
/// chosen by the callee, as with [`std::thread::scope`], which a plain `async` closure cannot
/// express): write `|s| Box::pin(async move { ... })`. The scope opens at the first poll: its
/// context is a child of the context ambient then ([`crate::current`]), and is ambient while
/// the body is polled.
///
/// When the body's future completes, the scope **cancels** the children still running (with
/// [`Cause::ScopeExited`]) and then polls them until they finish. Await their handles in the body
/// to let them finish first.
///
/// # Errors
///
/// [`ScopeError`] when a child spawned with [`AsyncScope::spawn_fallible`] returned `Err`.
///
/// # Panics
///
/// Re-raises the first panic of the body or of a child (a panic taken by awaiting the child's
/// handle is not re-raised), after every child has finished.
///
/// # Examples
///
/// ```
/// let names = vec!["ada".to_string(), "grace".to_string()];
/// let names = &names; // moved into the body as a reference: the children borrow the vector
/// let lengths = futures_executor::block_on(tether::async_scope(|s| {
///     Box::pin(async move {
///         // The children borrow `names` from the enclosing frame.
///         let handles: Vec<_> = names.iter().map(|n| s.spawn(move |_ctx| async move { n.len() })).collect();
///         let mut lengths = Vec::new();
///         for h in handles {
///             lengths.push(h.await.unwrap());
///         }
///         lengths
///     })
/// }))
/// .unwrap();
/// assert_eq!(lengths, [3, 5]);
/// ```
///
/// A child cannot borrow what the body owns (it may outlive it until the exit):
///
/// ```compile_fail,E0597
/// futures_executor::block_on(tether::async_scope(|s| {
///     Box::pin(async move {
///         let local = vec![1, 2, 3];
///         s.spawn(|_| async { local.len() });
///     })
/// }));
/// ```
pub fn async_scope<'env, F, R>(body: F) -> AsyncScopeFuture<'env, R>
where
    F: for<'scope> FnOnce(&'scope AsyncScope<'scope, 'env>) -> ScopeBody<'scope, R> + Send + 'env,
    R: Send + 'env,
{
    AsyncScopeFuture {
        start: Some(Box::new(body)),
        scope: None,
        body: None,
        running: Running::new(),
        output: None,
        finished: false,
    }
}

/// The body closure, kept until the first poll opens the scope.
type Start<'env, R> =
    Box<dyn for<'scope> FnOnce(&'scope AsyncScope<'scope, 'env>) -> ScopeBody<'scope, R> + Send + 'env>;

/// The future [`async_scope`] returns: polls the body and the children until the body is done,
/// then (the exit) cancels and polls the children until none is left (invariant 3), then
/// reports. Dropping it drops the body and every child (in that order) before the scope itself.
#[must_use = "futures do nothing unless polled"]
pub struct AsyncScopeFuture<'env, R> {
    /// The body closure, until the first poll.
    start: Option<Start<'env, R>>,
    /// Opened by the first poll; owned (from `Box::leak`), freed in `Drop`.
    scope: Option<NonNull<AsyncScope<'env, 'env>>>,
    body: Option<ScopeBody<'env, R>>,
    /// The children the scope's polls have taken in (invariant 2).
    running: Running<'env>,
    output: Option<R>,
    finished: bool,
}

/// The children being run, which only the scope's future touches, and their wake-ups.
struct Running<'scope> {
    children: Slab<Child<'scope>>,
    ready: Ready,
    /// The keys of the children to poll now; kept for its allocation.
    batch: Vec<usize>,
    /// Whether every child has been queued once since the scope was cancelled (invariant 4).
    swept: bool,
}

impl<'scope> Running<'scope> {
    fn new() -> Self {
        Running { children: Slab::new(), ready: Ready::new(), batch: Vec::new(), swept: false }
    }

    /// The first time the scope is seen cancelled, queues every child for a poll (invariant 4).
    fn sweep_if_cancelled(&mut self, scope: &AsyncScope<'scope, '_>) {
        if self.swept || !scope.ctx.is_cancelled() {
            return;
        }
        self.swept = true;
        let keys = (0..self.children.capacity()).filter(|&key| self.children.get(key).is_some());
        self.batch.extend(keys);
    }

    /// Polls the children woken since the last call, and those spawned meanwhile, including
    /// during this call (invariants 1 and 2); drops the finished ones. Returns whether any
    /// finished or was spawned (the body may be waiting on it).
    fn poll(&mut self, scope: &AsyncScope<'scope, '_>, cx: &mut task::Context<'_>) -> bool {
        self.ready.register(cx.waker());
        let mut batch = std::mem::take(&mut self.batch);
        self.ready.take_woken(&mut batch);
        let mut progressed = false;
        loop {
            let spawned = std::mem::take(&mut *scope.lock_spawned());
            progressed |= !spawned.is_empty();
            self.children.reserve(spawned.len());
            batch.reserve(spawned.len());
            for child in spawned {
                batch.push(self.children.insert(child));
            }
            self.ready.add_keys(self.children.capacity());
            self.publish_len(scope);
            if batch.is_empty() {
                self.batch = batch;
                return progressed;
            }
            for key in batch.drain(..) {
                progressed |= self.poll_one(scope, key);
            }
        }
    }

    /// Polls the child at `key`, if there is one (invariant 2 of `ready.rs`), with its own waker;
    /// returns whether it finished.
    fn poll_one(&mut self, scope: &AsyncScope<'scope, '_>, key: usize) -> bool {
        let Some(child) = self.children.get_mut(key) else { return false };
        let poll =
            self.ready.poll_with(key, |waker| scope.poll_child(child, &mut task::Context::from_waker(waker)));
        if poll.is_pending() {
            return false;
        }
        let child = self.children.remove(key);
        self.publish_len(scope);
        // Its context and future are user data: a panic dropping them is the scope's.
        scope.drop_caught(child);
        true
    }

    /// Tells `Debug` how many children there are: a store, not a read-modify-write, as the
    /// scope's future is the only writer. Relaxed: `Debug` orders it with nothing.
    fn publish_len(&self, scope: &AsyncScope<'scope, '_>) {
        scope.running.store(self.children.len(), Relaxed);
    }

    /// Whether no child is left, running or spawned.
    fn is_idle(&self, scope: &AsyncScope<'scope, '_>) -> bool {
        self.children.len() == 0 && scope.lock_spawned().is_empty()
    }
}

// SAFETY: the future owns the scope (a `Sync` value: its state is behind mutexes or atomics, its
// spawned children and body are `Send`) and moves it nowhere, and its running children (`Send`
// futures, contexts and slots; `Send` wakers); sending the future sends all of it.
unsafe impl<R: Send> Send for AsyncScopeFuture<'_, R> {}

// Nothing in it is pinned: the body is boxed, the scope is on the heap, and `R` is only moved.
impl<R> Unpin for AsyncScopeFuture<'_, R> {}

impl<'env, R> AsyncScopeFuture<'env, R> {
    /// Opens the scope, below the context ambient now, and calls the body with it.
    fn open(&mut self) -> NonNull<AsyncScope<'env, 'env>> {
        if let Some(scope) = self.scope {
            return scope;
        }
        let scope = NonNull::from(Box::leak(Box::new(AsyncScope::new(ambient::current().child()))));
        self.scope = Some(scope);
        let start = self.start.take().expect("tether: an async scope opened twice");
        // SAFETY: `scope` points to a live allocation that `AsyncScopeFuture` frees only in its
        // `Drop`, after it has dropped the body's future and every child's (the only holders of
        // this reference: `R` cannot hold it, being chosen outside the `for<'scope>` bound), and
        // nothing else frees it. Leaking the future leaks the allocation too. So the reference
        // is valid for as long as anything can use it, which is what the `'env` it is given here
        // stands for (module docs, "Soundness").
        self.body = Some(start(unsafe { scope.as_ref() }));
        scope
    }
}

impl<R> Future for AsyncScopeFuture<'_, R> {
    type Output = Result<R, ScopeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.finished, "tether: an async scope was polled after it completed");
        let scope = this.open();
        // SAFETY: the allocation lives until `Drop` (see `open`); a reference not tied to `this`,
        // which is mutated below.
        let scope = unsafe { scope.as_ref() };
        loop {
            if let Some(body) = &mut this.body {
                let polled = {
                    let _ambient = ambient::enter(&scope.ctx);
                    catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx)))
                };
                match polled {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(output)) => {
                        this.output = Some(output);
                        scope.drop_caught(this.body.take());
                        // Exit, step 1.
                        scope.failures.cancel(&scope.ctx, Cause::ScopeExited);
                    }
                    Err(payload) => {
                        scope.failures.panicked(&scope.ctx, Some("scope body".into()), payload);
                        scope.drop_caught(this.body.take());
                    }
                }
            }
            this.running.sweep_if_cancelled(scope);
            let progressed = this.running.poll(scope, cx);
            if this.body.is_none() && this.running.is_idle(scope) {
                this.finished = true;
                return Poll::Ready(scope.report(this.output.take()));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

impl<R> Drop for AsyncScopeFuture<'_, R> {
    fn drop(&mut self) {
        drop(self.start.take());
        let Some(scope) = self.scope else { return };
        // The body first: it may hold handles and the scope reference.
        drop(self.body.take());
        // SAFETY: the allocation lives until the end of this function.
        let scope_ref = unsafe { scope.as_ref() };
        // Then the children (a child's destructor may spawn: those go too).
        let mut children: Vec<Child<'_>> = self.running.children.drain().collect();
        loop {
            children.append(&mut scope_ref.lock_spawned());
            if children.is_empty() {
                break;
            }
            drop(std::mem::take(&mut children));
        }
        // SAFETY: from `Box::leak` in `open`; nothing refers to it any more (the body and the
        // children are gone), and it is freed once, here.
        drop(unsafe { Box::from_raw(scope.as_ptr()) });
    }
}

impl<R> fmt::Debug for AsyncScopeFuture<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncScopeFuture")
            .field("opened", &self.scope.is_some())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The handle a body and its children use to spawn children into an [`async_scope`], and its
/// context.
///
/// `'scope` is invariant: a child may borrow what outlives the scope (including the scope
/// itself, to spawn siblings), not what the body or a sibling owns.
pub struct AsyncScope<'scope, 'env: 'scope> {
    ctx: Context,
    /// Spawned and not yet taken in by a poll of the scope's future (invariant 2).
    spawned: Mutex<Vec<Child<'scope>>>,
    /// How many children the scope's future holds, as of its latest change, for `Debug` only.
    running: AtomicUsize,
    failures: FailureLog,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

struct Child<'scope> {
    ctx: Context,
    future: ChildFuture<'scope>,
    slot: Arc<dyn ChildSlot + 'scope>,
    _counted: Counted,
}

/// Counts an async child as a live task (`tether::live().tasks`) while it exists.
pub(crate) struct Counted;

impl Counted {
    pub(crate) fn new() -> Counted {
        live::add(Counter::Tasks, 1);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        live::add(Counter::Tasks, -1);
    }
}

impl<'scope, 'env> AsyncScope<'scope, 'env> {
    fn new(ctx: Context) -> Self {
        AsyncScope {
            ctx,
            spawned: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            failures: FailureLog::default(),
            scope: PhantomData,
            env: PhantomData,
        }
    }

    /// The scope's context: the parent of every child's. Cancelling it cancels every child.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// futures_executor::block_on(tether::async_scope(|s| Box::pin(async move {
    ///     assert!(!s.context().is_cancelled());
    /// })))
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Cancels the scope (with [`Cause::Cancelled`]) and so every child; does not wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause};
    /// let cause = futures_executor::block_on(tether::async_scope(|s| Box::pin(async move {
    ///     let child = s.spawn(|ctx| async move { ctx.cancelled().await });
    ///     s.cancel();
    ///     child.await.unwrap()
    /// })))
    /// .unwrap();
    /// assert_eq!(cause, Cause::Cancelled);
    /// ```
    pub fn cancel(&self) {
        self.ctx.cancel();
    }

    /// Spawns a child: `f` receives the child's own context (a child of the scope's, also
    /// ambient during the child's polls) and returns the future to run. The future may borrow
    /// anything that outlives the scope. It is polled by the scope's future, concurrently with
    /// the body and the other children.
    ///
    /// A panic in the child cancels the scope (siblings see [`Cause::Panicked`]) and is re-raised
    /// by the scope unless taken by awaiting the handle.
    ///
    /// # Examples
    ///
    /// See [`async_scope`].
    pub fn spawn<F, Fut, T>(&'scope self, f: F) -> AsyncJoinHandle<'scope, T>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = T> + Send + 'scope,
        T: Send + 'scope,
    {
        let ctx = self.ctx.child_for_spawn();
        let slot = Arc::new(Slot::new());
        let future = f(ctx.clone());
        let output = slot.clone();
        let child: ChildFuture<'scope> = Box::pin(async move {
            let value = future.await;
            output.finish(SlotState::Returned(value));
        });
        let counted = Counted::new();
        self.lock_spawned().push(Child {
            ctx: ctx.clone(),
            future: child,
            slot: slot.clone(),
            _counted: counted,
        });
        AsyncJoinHandle { slot, ctx, failures: &self.failures }
    }

    /// Spawns a child whose `Err` fails the scope: the first error cancels the scope with
    /// [`Cause::ChildFailed`], and [`async_scope`] returns a [`ScopeError`] holding it and every
    /// later error. The handle yields the same shared error.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let err = futures_executor::block_on(tether::async_scope(|s| Box::pin(async move {
    ///     let sibling = s.spawn(|ctx| async move { ctx.cancelled().await });
    ///     s.spawn_fallible(|_| async { Err::<(), _>(std::fmt::Error) });
    ///     sibling.await.unwrap()
    /// })))
    /// .unwrap_err();
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn spawn_fallible<F, Fut, T, E>(&'scope self, f: F) -> AsyncJoinHandle<'scope, Result<T, Arc<E>>>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'scope,
        T: Send + 'scope,
        E: Error + Send + Sync + 'static,
    {
        self.spawn(move |ctx| {
            let future = f(ctx);
            async move { future.await.map_err(|error| self.failures.fail_with(&self.ctx, error)) }
        })
    }

    fn lock_spawned(&self) -> MutexGuard<'_, Vec<Child<'scope>>> {
        self.spawned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_caught<T>(&self, value: T) {
        self.failures.drop_caught(value);
    }

    /// The exit's last step: the first panic, else the errors, else the body's output.
    fn report<R>(&self, body: Option<R>) -> Result<R, ScopeError> {
        let (panics, errors) = self.failures.take(&self.ctx).into_parts();
        failures::report(panics, errors, body)
    }

    /// Polls one child with its context ambient (invariant 1); a panic is recorded and cancels
    /// the scope, and its handle learns of it.
    fn poll_child(&self, child: &mut Child<'scope>, cx: &mut task::Context<'_>) -> Poll<()> {
        let _ambient = ambient::enter(&child.ctx);
        match catch_unwind(AssertUnwindSafe(|| child.future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let id = self.failures.panicked(&self.ctx, Some("async child".into()), payload);
                child.slot.panicked(id);
                Poll::Ready(())
            }
        }
    }
}

impl fmt::Debug for AsyncScope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncScope")
            .field("context", &self.ctx)
            // Relaxed: see `Running::publish_len`.
            .field("children", &(self.running.load(Relaxed) + self.lock_spawned().len()))
            .finish_non_exhaustive()
    }
}

/// Where a child's output waits for its handle.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

pub(crate) enum SlotState<T> {
    /// Not finished; the waker of a handle awaiting it.
    Running(Option<Waker>),
    Returned(T),
    /// The child panicked; the payload is in the scope's failures under this id.
    Panicked(u64),
    /// A tokio-scope child aborted before it finished (its scope's future was dropped).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Aborted(Cause),
    /// The handle took the outcome.
    Taken,
}

impl<T> Slot<T> {
    /// A slot for a child that is running.
    pub(crate) fn new() -> Slot<T> {
        Slot { state: Mutex::new(SlotState::Running(None)) }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the child's outcome and wakes the handle awaiting it.
    pub(crate) fn finish(&self, outcome: SlotState<T>) {
        let previous = std::mem::replace(&mut *self.lock(), outcome);
        if let SlotState::Running(Some(waker)) = previous {
            waker.wake();
        }
    }
}

impl<T> Slot<T> {
    /// What a join handle's poll does: the outcome once the child has finished (a panic taken
    /// back from `failures`), else `Pending` with the waker stored for [`Slot::finish`].
    pub(crate) fn poll_join(
        &self,
        cx: &mut task::Context<'_>,
        failures: &FailureLog,
    ) -> Poll<Result<T, JoinError>> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Running(_) => {
                *state = SlotState::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
            SlotState::Returned(value) => Poll::Ready(Ok(value)),
            SlotState::Panicked(id) => {
                drop(state);
                let payload = failures.take_panic(id);
                // A handle that outlived its (tokio) scope: the scope has re-raised the payload.
                let payload = payload
                    .unwrap_or_else(|| Box::new("tether: this child's panic was re-raised by its scope"));
                Poll::Ready(Err(JoinError::new(None, payload)))
            }
            SlotState::Aborted(cause) => Poll::Ready(Err(JoinError::aborted(cause))),
            SlotState::Taken => panic!("tether: a join handle was polled after it completed"),
        }
    }

    /// Marks a child that will never finish (its task was aborted), unless it has finished;
    /// `cause` is asked only then.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn abort(&self, cause: impl FnOnce() -> Cause) {
        let mut state = self.lock();
        if let SlotState::Running(waker) = &mut *state {
            let waker = waker.take();
            *state = SlotState::Aborted(cause());
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Whether the child has finished.
    pub(crate) fn is_finished(&self) -> bool {
        !matches!(*self.lock(), SlotState::Running(_))
    }
}

/// What the scope tells a child's slot, with the output type erased.
pub(crate) trait ChildSlot: Send + Sync {
    fn panicked(&self, id: u64);
}

impl<T: Send> ChildSlot for Slot<T> {
    fn panicked(&self, id: u64) {
        self.finish(SlotState::Panicked(id));
    }
}

/// Awaits a child of an [`async_scope`]: its output, or the [`JoinError`] holding its panic
/// (which the scope then does not re-raise). Dropping it does not detach the child: the scope
/// waits for it at exit (and cancels it first).
// Not `#[must_use]`: the child runs whether or not its handle is awaited (fire-and-forget
// children are normal in a scope, which waits for them anyway), like `ScopedJoinHandle`.
pub struct AsyncJoinHandle<'scope, T> {
    slot: Arc<Slot<T>>,
    ctx: Context,
    failures: &'scope FailureLog,
}

impl<T> AsyncJoinHandle<'_, T> {
    /// The child's context: cancel it to stop this child only.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause};
    /// futures_executor::block_on(tether::async_scope(|s| Box::pin(async move {
    ///     let h = s.spawn(|ctx| async move { ctx.cancelled().await });
    ///     h.context().cancel();
    ///     assert_eq!(h.await.unwrap(), Cause::Cancelled);
    /// })))
    /// .unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Whether the child has finished.
    pub fn is_finished(&self) -> bool {
        self.slot.is_finished()
    }
}

impl<T> Future for AsyncJoinHandle<'_, T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.slot.poll_join(cx, this.failures)
    }
}

impl<T> fmt::Debug for AsyncJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncJoinHandle")
            .field("finished", &self.is_finished())
            .field("context", &self.ctx)
            .finish()
    }
}
