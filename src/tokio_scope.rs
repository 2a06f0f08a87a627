//! [`tokio_scope`]: a scope whose children are tokio tasks, so they run in parallel on the
//! runtime's workers (cargo feature `tokio`). The children are `'static` (they cannot borrow from
//! the stack: that corner is [`async_scope`](crate::async_scope)'s), and the scope's semantics are
//! the thread scope's: child contexts (ambient during their polls), the first failure or panic
//! cancels the siblings with a typed cause, panics re-raised with their payload, every error kept,
//! values inherited, children counted as live tasks, cancel-then-wait at exit.
//!
//! # If the scope's future is dropped
//! If the future [`tokio_scope`] returns is dropped before it finishes (a `select!` that took
//! another branch, a timeout, an aborted task), the scope's context is cancelled with
//! [`Cause::ScopeExited`] and every child task is aborted. An abort takes effect at the task's
//! next yield point: a child in the middle of a poll, or blocking without yielding, runs on until
//! then (as with any tokio abort). The runtime then drops the child's future, so a
//! [`LeakCheck`](crate::testing::LeakCheck) started before the scope counts those children as
//! live tasks until then; its grace period covers that. A handle of an aborted child (they are
//! `'static`, so one may outlive the scope) then returns a [`JoinError`] whose
//! [`cancel_cause`](JoinError::cancel_cause) says why.
//!
//! # Invariants
//! 1. Every child runs as one task of the scope's `JoinSet`, wrapped so that its panic is caught
//!    inside the task (recorded, and the scope cancelled, at once) and its output goes to its
//!    handle's slot.
//! 2. The exit takes the set out of its lock and awaits it empty, again until no child is left,
//!    then closes the scope under the same lock as spawns check: a spawn after the close panics.
//! 3. Dropping the scope's future before the exit has closed the scope cancels the context and
//!    aborts every task (the guard [`AbortOnDrop`]).

use crate::ambient;
use crate::async_scope::{ChildSlot, Counted, Slot, SlotState};
use crate::cancel::{Canceller, Cause};
use crate::context::Context;
use crate::scope::failures::{self, FailureLog, Payload};
use crate::scope::{JoinError, ScopeError};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{self, Poll};
use tokio::task::JoinSet;

/// Runs `body` in a new scope whose children are tokio tasks, and returns its result once every
/// child has finished. Must be awaited within a tokio runtime (children are spawned on the
/// current one).
///
/// `body` gets a [`TokioScope`] handle (cheap to clone, so a child may take one to spawn
/// siblings). The scope's context is a child of the ambient one, ambient while the body runs.
/// When the body's future completes, the scope cancels the children still running (with
/// [`Cause::ScopeExited`]) and awaits them.
///
/// # Errors
///
/// [`ScopeError`] when a child spawned with [`TokioScope::spawn_fallible`] returned `Err`.
///
/// # Panics
///
/// Re-raises the first panic of the body or a child, after every child has finished. A
/// [`TokioScope`] used to spawn after its scope has ended panics.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// use tether::Canceller;
///
/// let total = tether::tokio_scope(|s| async move {
///     let handles: Vec<_> = (1..=3u64).map(|n| s.spawn(move |_ctx| async move { n * 10 })).collect();
///     // A child that runs until the scope ends: the exit cancels it.
///     s.spawn(|ctx| async move { ctx.cancelled_owned().await });
///     let mut total = 0;
///     for h in handles {
///         total += h.await.unwrap();
///     }
///     total
/// })
/// .await
/// .unwrap();
/// assert_eq!(total, 60);
/// # }
/// ```
///
/// A child is a tokio task, so it cannot borrow from the stack, not even what outlives the scope
/// (that is [`async_scope`](crate::async_scope)'s corner; move or share the data instead):
///
/// ```compile_fail,E0597
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let names = vec!["ada".to_string()];
/// let names = &names;
/// tether::tokio_scope(|s| async move {
///     s.spawn(move |_| async move { names.len() });
/// })
/// .await
/// .unwrap();
/// # }
/// ```
pub async fn tokio_scope<F, Fut, R>(body: F) -> Result<R, ScopeError>
where
    F: FnOnce(TokioScope) -> Fut,
    Fut: Future<Output = R> + Send,
{
    let scope = TokioScope { inner: Arc::new(Inner::new(ambient::current().child())) };
    let guard = AbortOnDrop(scope.inner.clone());
    // The body's call itself (not only its polls) runs with the scope's context ambient and its
    // panic caught.
    let handle = scope.clone();
    let body = CatchUnwind(scope.inner.ctx.bind(async move { body(handle).await })).await;
    let output = match body {
        Ok(output) => {
            scope.inner.failures.cancel(&scope.inner.ctx, Cause::ScopeExited);
            Some(output)
        }
        Err(payload) => {
            scope.inner.failures.panicked(&scope.inner.ctx, Some("scope body".into()), payload);
            None
        }
    };
    scope.inner.join_all().await;
    // Closed: its cancel is a no-op (the scope is cancelled) and there is nothing to abort.
    drop(guard);
    scope.inner.report(output)
}

/// The handle of a [`tokio_scope`]: spawns children as tokio tasks, and cancels them.
#[derive(Clone)]
pub struct TokioScope {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    /// The running children; `None` once the exit has closed the scope (invariant 2).
    tasks: Mutex<Option<JoinSet<()>>>,
    failures: FailureLog,
}

impl TokioScope {
    /// The scope's context: the parent of every child's.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tether::Canceller;
    /// tether::tokio_scope(|s| async move { assert!(!s.context().is_cancelled()) }).await.unwrap();
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// Cancels the scope (with [`Cause::Cancelled`]) and so every child; does not wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cause = tether::tokio_scope(|s| async move {
    ///     let child = s.spawn(|ctx| async move { ctx.cancelled_owned().await });
    ///     s.cancel();
    ///     child.await.unwrap()
    /// })
    /// .await
    /// .unwrap();
    /// assert_eq!(cause, tether::Cause::Cancelled);
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.inner.ctx.cancel();
    }

    /// Spawns a child task on the current tokio runtime: `f` receives the child's context (a
    /// child of the scope's, ambient during the task's polls) and returns its future.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or after the scope has ended.
    ///
    /// # Examples
    ///
    /// See [`tokio_scope`].
    pub fn spawn<F, Fut, T>(&self, f: F) -> TokioJoinHandle<T>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = self.inner.ctx.child_for_spawn();
        let slot = Arc::new(Slot::new());
        let future = ctx.bind(f(ctx.clone()));
        let (child, counted) = (ChildTask { slot: slot.clone(), inner: self.inner.clone() }, Counted::new());
        let task = async move {
            let _counted = counted;
            let outcome = CatchUnwind(future).await;
            let ChildTask { slot, inner } = &child;
            match outcome {
                Ok(value) => slot.finish(SlotState::Returned(value)),
                Err(payload) => {
                    slot.panicked(inner.failures.panicked(&inner.ctx, Some("tokio child".into()), payload))
                }
            }
        };
        match &mut *self.inner.lock_tasks() {
            Some(tasks) => drop(tasks.spawn(task)),
            None => panic!("tether: a child was spawned into a tokio scope that has ended"),
        }
        TokioJoinHandle { slot, ctx, inner: self.inner.clone() }
    }

    /// Spawns a child whose `Err` fails the scope, as
    /// [`AsyncScope::spawn_fallible`](crate::AsyncScope::spawn_fallible) does.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = tether::tokio_scope(|s| async move {
    ///     s.spawn_fallible(|_| async { Err::<(), _>(std::fmt::Error) });
    /// })
    /// .await
    /// .unwrap_err();
    /// assert!(err.downcast_ref::<std::fmt::Error>().is_some());
    /// # }
    /// ```
    pub fn spawn_fallible<F, Fut, T, E>(&self, f: F) -> TokioJoinHandle<Result<T, Arc<E>>>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Error + Send + Sync + 'static,
    {
        let inner = self.inner.clone();
        self.spawn(move |ctx| {
            let future = f(ctx);
            async move { future.await.map_err(|error| inner.failures.fail_with(&inner.ctx, error)) }
        })
    }
}

impl fmt::Debug for TokioScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioScope").field("context", &self.inner.ctx).finish_non_exhaustive()
    }
}

impl Inner {
    fn new(ctx: Context) -> Inner {
        Inner { ctx, tasks: Mutex::new(Some(JoinSet::new())), failures: FailureLog::default() }
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Option<JoinSet<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Awaits every child, including those spawned meanwhile, then closes the scope
    /// (invariant 2).
    async fn join_all(&self) {
        loop {
            let taken = {
                let mut tasks = self.lock_tasks();
                match tasks.as_mut() {
                    Some(set) if set.is_empty() => {
                        *tasks = None; // closed: no child is left to spawn another
                        return;
                    }
                    Some(set) => std::mem::take(set),
                    None => return,
                }
            };
            let mut taken = taken;
            // A task's panic is caught inside it (invariant 1), but dropping what it finished
            // with (its context, its future's captures) is user code too: a panic there reaches
            // the join, and is a panic of the scope. Nothing aborts these tasks.
            while let Some(joined) = taken.join_next().await {
                if let Err(error) = joined {
                    if error.is_panic() {
                        self.failures.record_panic(error.into_panic());
                    }
                }
            }
        }
    }

    /// The exit's last step: the first panic, else the errors, else the body's output.
    fn report<R>(&self, body: Option<R>) -> Result<R, ScopeError> {
        let (panics, errors) = self.failures.take(&self.ctx).into_parts();
        failures::report(panics, errors, body)
    }
}

/// What a child's task keeps to hand its outcome over: its handle's slot and the scope. Dropped
/// before the child finished (an abort), it marks the slot aborted, so that a handle that
/// outlived the scope does not wait for ever.
struct ChildTask<T> {
    slot: Arc<Slot<T>>,
    inner: Arc<Inner>,
}

impl<T> Drop for ChildTask<T> {
    fn drop(&mut self) {
        self.slot.abort(|| self.inner.ctx.cause().unwrap_or(Cause::ScopeExited));
    }
}

/// Cancels the scope and aborts every child if the scope's future is dropped before its exit
/// (invariant 3).
struct AbortOnDrop(Arc<Inner>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.failures.cancel(&self.0.ctx, Cause::ScopeExited);
        let tasks = self.0.lock_tasks().take();
        if let Some(mut tasks) = tasks {
            tasks.abort_all();
            // Dropping the set aborts what is left too; the runtime drops each aborted future
            // once its abort takes effect.
            drop(tasks);
        }
    }
}

/// Awaits a child of a [`tokio_scope`]: its output, or the [`JoinError`] holding its panic (which
/// the scope then does not re-raise). Dropping it does not detach the child.
// Not `#[must_use]`: the child runs whether or not its handle is awaited (fire-and-forget
// children are normal in a scope, which waits for them anyway), like `ScopedJoinHandle`.
pub struct TokioJoinHandle<T> {
    slot: Arc<Slot<T>>,
    ctx: Context,
    inner: Arc<Inner>,
}

impl<T> TokioJoinHandle<T> {
    /// The child's context: cancel it to stop this child only.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Whether the child has finished.
    pub fn is_finished(&self) -> bool {
        self.slot.is_finished()
    }
}

impl<T> Future for TokioJoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.slot.poll_join(cx, &this.inner.failures)
    }
}

impl<T> fmt::Debug for TokioJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioJoinHandle")
            .field("finished", &self.is_finished())
            .field("context", &self.ctx)
            .finish()
    }
}

/// Polls a future under `catch_unwind`: `Err` with the payload if a poll panicked.
struct CatchUnwind<F>(F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Payload>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the field is structurally pinned: `CatchUnwind` never moves it out, and has no
        // `Drop` impl or `Unpin` impl of its own.
        let future = unsafe { self.map_unchecked_mut(|this| &mut this.0) };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}
