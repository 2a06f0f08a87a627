//! Structured scopes of OS threads: [`scope`], [`ScopeBuilder`], [`Scope`], and the exit
//! protocol every scope runs when its body ends.
//!
//! A scope is `std::thread::scope` with cancellation added. The body runs on the calling thread
//! with a fresh node of the cancellation tree (a child of the ambient context, [`crate::current`]);
//! each spawned child is an OS thread with a node of its own below the scope's, so cancelling the
//! scope reaches every child, grandchild and nested scope.
//!
//! # The exit protocol
//! Whichever way the body ends (returns, or panics: the panic is caught), `end` runs, in a frame
//! of its own (not on the stack while the body runs):
//! 1. **cancel** the scope's node with the cause that says why: [`Cause::ScopeExited`] when the
//!    body returned, [`Cause::Panicked`] when it panicked (a child's failure or panic cancelled it
//!    earlier, and the first cause wins);
//! 2. **join**: wait until no child is running, including those whose handles were dropped or
//!    forgotten and those that children spawned, and close the running count (invariant 4); the
//!    wait runs the scope's own pending pool tasks instead of just blocking, and no other
//!    scope's (`task.rs`, "Helping"; design/0003-pool-tasks.md).
//!    Then wait until the cancellation that reached the scope's node has run every on-cancel
//!    callback it collected (invariant 5): when the canceller is a thread the scope does not
//!    join (a timer firer thread for a deadline, or whoever cancelled an ancestor), a child can see
//!    the cancellation and finish before that thread has run the callbacks of the scope's
//!    contexts. Then the scope's state, with its context and the values bound to it, is dropped on the
//!    owner's thread (after the children have let go of it), so no value outlives `scope` on a
//!    child's thread; a panicking value destructor counts as a panic of the scope;
//! 3. **report**: the first panic (body or child) is re-raised with its original payload; the
//!    later ones go to [`crate::testing::take_unhandled_panics`]. Otherwise the fallible children's
//!    errors, the first one first, as [`ScopeError`]. Otherwise the body's result.
//!
//! # Invariants
//! 1. No child outlives its scope: `scope` does not return (nor unwind: the body's panic is
//!    caught, and an unwinding anywhere else before the count is closed aborts the process)
//!    before the running count (invariant 4) is zero and closed, and a child counts itself out
//!    only after its last use of anything it borrowed. The [`Scope`] the children may borrow is a
//!    local of `run_scope`, alive until then. The count, not the join handles, is what the exit waits for, so `mem::forget`
//!    of a handle cannot let a thread keep borrowing `'scope` data (std's scheme; see
//!    `thread.rs`, `ChildBuilder::spawn_with`, and `tests/scope/forget.rs`).
//! 2. No child panic unwinds out of a child thread: the child catches it, records the payload in
//!    the scope's [`Shared`] state, and cancels the scope. So the original payload is what step 3
//!    re-raises.
//! 3. Failures are recorded under one lock, in the order they happened: the first recorded panic
//!    or error is the first in time (as observed by that lock).
//! 4. `running` counts children spawned and not yet finished (`count.rs`): incremented on the
//!    spawning thread before the child can run, decremented as the last thing the child does.
//!    A spawner is the body or a counted child, so the count cannot reach zero while a spawn is
//!    under way. Once the body has returned and the count is zero, nothing is left that can
//!    spawn, by construction: the only code that can reach the [`Scope`] is the body, the
//!    children's closures and what they return, and a child's result (thread or task) is dropped
//!    either by its handle (on the body or a counted child) or, when the handle is gone, by the
//!    child itself before it counts out (`task.rs`, "Who drops what"). The exit then closes the
//!    count (`0 -> CLOSED` in one compare-exchange), so a spawn that broke this rule would panic
//!    rather than start a child nothing waits for.
//! 5. When `scope` returns, every callback registered on the scope's context or a context below
//!    it has run or been stopped (or discarded with a context dropped uncancelled), if the
//!    cancellation that reached it is the one that reached the scope's node: the node carries a
//!    latch (`cancel::tree::Settle`) that this cancellation sets after running all the callbacks
//!    it collected, on whichever thread ran them. So a callback must not wait for its own scope
//!    to return: the scope waits for it.

pub(crate) mod count;
mod error;
mod task;
pub(crate) mod task_state;
mod thread;

pub use error::{JoinError, ScopeError, TrySpawnError};
pub use task::TaskHandle;
pub use thread::{ChildBuilder, ScopedJoinHandle};

use crate::cancel::tree::{Settle, attach_settle};
use crate::value::{KeyId, Value};
use crate::{Canceller, Cause, Context, Key, PanicSummary, SharedError, ambient};
use crossbeam_channel::{Receiver, Sender, select};
use crossbeam_utils::CachePadded;
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A panic payload.
type Payload = Box<dyn Any + Send + 'static>;

/// How long a scope's helping wait sleeps when its own queue has no pending task before it looks
/// there again (a child may queue one meanwhile); the last child's completion wakes it sooner.
const PARK: Duration = Duration::from_millis(1);

/// Runs `f` in a new scope of OS threads and returns its result once every child has finished.
///
/// The body runs on the calling thread. Its [`Scope`] spawns children that may borrow from the
/// enclosing stack (as with [`std::thread::scope`]). The scope's context is a child of the ambient
/// context ([`crate::current`]: the enclosing scope's child or body, else a new root); use
/// [`ScopeBuilder`] for another parent, a deadline, values or a concurrency limit.
///
/// When the body returns, the scope **cancels** the children still running (with
/// [`Cause::ScopeExited`]) and then joins them. To let them finish instead, call
/// [`Scope::wait_all`] at the end of the body:
///
/// ```text
/// tether::scope(|s| { ... })                  tether::scope(|s| { ...; s.wait_all() })
///   body ──────┤ cancel ├─ join ─┤ return       body ──────┤ wait for children ├─ return
///   children ──────────── stop early ┘          children ─────── run to the end ┘
/// ```
///
/// Cancel-then-join suits "get the answer, then stop the rest" (a search, a race, a server whose
/// body runs until shutdown); `wait_all` suits "do all of this work" (std, Trio and Kotlin semantics).
///
/// # Errors
///
/// [`ScopeError`] when a child spawned with [`Scope::spawn_fallible`] returned `Err`: the first
/// error cancelled the scope; every later one is kept in [`ScopeError::others`].
///
/// # Panics
///
/// Re-raises the first panic of the body or of a child, with its original payload, after every
/// child has been joined (a panic taken by [`ScopedJoinHandle::join`] is not re-raised). Later
/// panics are recorded for [`crate::testing::take_unhandled_panics`]. A panic takes precedence
/// over child errors. The destructor of a value bound to the scope ([`ScopeBuilder::value`]) runs
/// before `scope` returns, on the calling thread; if it panics, that is a panic of the scope too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::Canceller;
///
/// let words = ["tether", "scope", "thread"];
/// let mut lengths = Vec::new();
/// let total = tether::scope(|s| {
///     let handles: Vec<_> = words.iter().map(|w| s.spawn(move |_| w.len())).collect();
///     // A child that runs until the scope ends: the exit cancels it.
///     s.spawn(|ctx| ctx.wait());
///     lengths = handles.into_iter().map(|h| h.join().unwrap()).collect();
///     lengths.iter().sum::<usize>()
/// })
/// .unwrap();
/// assert_eq!(total, 17);
/// assert_eq!(lengths, [6, 5, 6], "the body borrowed `lengths` mutably, the children `words`");
/// ```
pub fn scope<'env, F, R>(f: F) -> Result<R, ScopeError>
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    ScopeBuilder::new().run(f)
}

/// Configures a scope before running it: its parent context, deadline, values and concurrency
/// limit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::{Canceller, Context, Key, ScopeBuilder};
///
/// static TENANT: Key<&'static str> = Key::new("tenant");
///
/// let request = Context::new();
/// let found = ScopeBuilder::new()
///     .parent(&request)
///     .timeout(Duration::from_secs(30))
///     .value(&TENANT, "acme")
///     .limit(4)
///     .run(|s| {
///         assert!(s.context().deadline().is_some());
///         s.spawn(|ctx| ctx.value(&TENANT).copied()).join().unwrap()
///     })
///     .unwrap();
/// assert_eq!(found, Some("acme"));
/// ```
#[derive(Default)]
#[must_use = "a ScopeBuilder does nothing until `run`"]
pub struct ScopeBuilder {
    parent: Option<Context>,
    deadline: Option<Instant>,
    values: Vec<(KeyId, Value)>,
    limit: Option<usize>,
}

/// The handle a scope body uses to spawn children, cancel them and wait for them.
///
/// # Lifetimes
///
/// As in std: `'scope` is the lifetime of the scope itself, from before the body starts until
/// every child has finished (but before [`scope`] returns); spawned closures and their results
/// may borrow anything that lives that long (`F: 'scope`), and join handles cannot outlive it.
/// `'env` is the lifetime of what the scope borrows from its caller: anything that outlives the
/// call to [`scope`], so `'env: 'scope`. A child cannot borrow what the body itself owns, since
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
    /// The state, owned by `run_scope` (which hands it to `end` once the body is over).
    shared: &'scope Arc<Shared>,
    /// Invariance over `'scope`, as in std, so that `'scope` cannot shrink: children get
    /// `F: 'scope`, and a child that captured `&'scope Scope` could otherwise spawn a sibling
    /// borrowing its own locals (the `compile_fail` example above), which the scope's wait would
    /// not protect.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// What the scope body and its children share: the context, the failures, the running count
/// and the limit's slots.
pub(crate) struct Shared {
    ctx: Context,
    failures: Mutex<Failures>,
    /// Children spawned and not yet finished (invariant 4; `count.rs`).
    running: count::RunningCount,
    /// Threads blocked in [`Shared::wait_idle`]: the last child out notifies `idle` only when
    /// there are some, so a scope nobody waits on yet costs no lock and no wake-up.
    waiters: AtomicUsize,
    /// Guards the waiters' check-then-sleep against the last child's notification.
    idle_lock: Mutex<()>,
    idle: Condvar,
    /// The concurrency limit's free slots, one message each; `None` without a limit.
    slots: Option<(Sender<()>, Receiver<()>)>,
    /// The scope's own queue of its pool tasks (`task.rs`, "Helping"), which its waits run.
    /// On a cache line of its own, away from the counters the workers write.
    tasks: CachePadded<Mutex<task::TaskQueue>>,
    /// Per pool worker, the node below the scope's that the tasks it runs hang from (`task.rs`,
    /// "Task contexts"); made on first use.
    task_parents: OnceLock<Box<[task::WorkerSlot]>>,
    /// Set once the cancellation that reached the scope's node has run the callbacks it collected
    /// (invariant 5); `None` if the node was cancelled already when the scope began.
    settle: Option<Arc<Settle>>,
}

/// The failures of a scope, in the order they happened (invariant 3).
#[derive(Default)]
struct Failures {
    panics: Vec<(u64, Payload)>,
    next_panic: u64,
    errors: Vec<SharedError>,
}

impl Failures {
    /// Moves the error the scope was cancelled with, if a failure cancelled it, to the front.
    /// A failure records its error and then cancels, so when two fail at once the first
    /// recorded may not be the one whose cancellation won; [`ScopeError::first`] promises that
    /// one.
    fn put_cancelling_error_first(&mut self, cause: Option<Cause>) {
        let Some(Cause::ChildFailed(winner)) = cause else { return };
        let same = |e: &SharedError| std::ptr::addr_eq(Arc::as_ptr(e), Arc::as_ptr(&winner));
        if let Some(index) = self.errors.iter().position(same) {
            self.errors[..=index].rotate_right(1);
        }
    }
}

// ===== impl ScopeBuilder =====

impl ScopeBuilder {
    /// A builder for a scope below the ambient context, with no deadline, no values and no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// let answer = tether::ScopeBuilder::new().run(|_| 42).unwrap();
    /// assert_eq!(answer, 42);
    /// ```
    pub fn new() -> ScopeBuilder {
        ScopeBuilder::default()
    }

    /// Makes the scope's context a child of `parent` instead of the ambient context: cancelling
    /// `parent` cancels the scope and every child.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Canceller, Cause, Context, ScopeBuilder};
    ///
    /// let server = Context::new();
    /// server.cancel_with(Cause::Cancelled);
    /// ScopeBuilder::new().parent(&server).run(|s| assert!(s.context().is_cancelled())).unwrap();
    /// ```
    pub fn parent(mut self, parent: &Context) -> ScopeBuilder {
        self.parent = Some(parent.clone());
        self
    }

    /// Cancels the scope with [`Cause::DeadlineExceeded`] at `deadline` (or at the parent's
    /// deadline if that is earlier). With [`timeout`](Self::timeout) too, the earlier one applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use tether::{Canceller, CancelError};
    ///
    /// tether::ScopeBuilder::new().deadline(Instant::now()).run(|s| {
    ///     assert_eq!(s.spawn(|ctx| ctx.err()).join().unwrap(), Some(CancelError::DeadlineExceeded));
    /// })
    /// .unwrap();
    /// ```
    pub fn deadline(mut self, deadline: Instant) -> ScopeBuilder {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Cancels the scope with [`Cause::DeadlineExceeded`] `timeout` from now (this call, not
    /// `run`). A timeout too large to represent means no deadline of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tether::Canceller;
    ///
    /// let cause = tether::ScopeBuilder::new()
    ///     .timeout(Duration::from_millis(1))
    ///     .run(|s| s.context().wait())
    ///     .unwrap();
    /// assert_eq!(cause, tether::Cause::DeadlineExceeded);
    /// ```
    pub fn timeout(self, timeout: Duration) -> ScopeBuilder {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline),
            None => self,
        }
    }

    /// Binds `value` to `key` in the scope's context; children see it per the key's
    /// [`Inheritance`](crate::Inheritance).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Key;
    /// static USER: Key<String> = Key::new("user");
    ///
    /// tether::ScopeBuilder::new().value(&USER, "ada".to_string()).run(|s| {
    ///     s.spawn(|ctx| assert_eq!(ctx.value(&USER).unwrap(), "ada"));
    /// })
    /// .unwrap();
    /// ```
    pub fn value<T: Send + Sync + 'static>(mut self, key: &'static Key<T>, value: T) -> ScopeBuilder {
        self.values.push((key.id(), Arc::new(value) as Value));
        self
    }

    /// Lets at most `limit` children run at once (errgroup's `SetLimit`):
    /// [`Scope::spawn`] waits for a free slot, [`Scope::try_spawn`] refuses when there is none.
    ///
    /// A `spawn` waiting for a slot stops waiting when the scope is cancelled; the child then
    /// starts at once, already cancelled, outside the limit (so it can see the cause and return).
    ///
    /// # Panics
    ///
    /// If `limit` is zero: no child could ever run.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    ///
    /// let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    /// tether::ScopeBuilder::new().limit(2).run(|s| {
    ///     for _ in 0..8 {
    ///         s.spawn(|_| {
    ///             let now = running.fetch_add(1, SeqCst) + 1;
    ///             peak.fetch_max(now, SeqCst);
    ///             running.fetch_sub(1, SeqCst);
    ///         });
    ///     }
    ///     s.wait_all();
    /// })
    /// .unwrap();
    /// assert!(peak.load(SeqCst) <= 2);
    /// ```
    pub fn limit(mut self, limit: usize) -> ScopeBuilder {
        assert!(limit > 0, "tether: a scope's concurrency limit must be at least 1");
        self.limit = Some(limit);
        self
    }

    /// Runs `f` in the configured scope: see [`scope`].
    ///
    /// # Errors
    ///
    /// As [`scope`]: the failures of fallible children.
    ///
    /// # Panics
    ///
    /// As [`scope`]: re-raises the first panic of the body or a child.
    ///
    /// # Examples
    ///
    /// ```
    /// let n = tether::ScopeBuilder::new().limit(1).run(|s| s.spawn(|_| 1).join().unwrap()).unwrap();
    /// assert_eq!(n, 1);
    /// ```
    pub fn run<'env, F, R>(self, f: F) -> Result<R, ScopeError>
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        run_scope(self.into_state(), f)
    }

    /// The scope's state: its context (below the parent, with the deadline and values) and
    /// limit. Not inlined, so that its frame is not on the stack while the body runs.
    #[inline(never)]
    fn into_state(self) -> Arc<Shared> {
        let parent = self.parent.unwrap_or_else(crate::current);
        let mut ctx = match self.deadline {
            Some(deadline) => parent.with_deadline(deadline),
            None => parent.child(),
        };
        if !self.values.is_empty() {
            let values =
                self.values.into_iter().fold(ctx.values().clone(), |values, (key, v)| values.with(key, v));
            ctx = ctx.with_values(values);
        }
        Arc::new(Shared::new(ctx, self.limit))
    }
}

impl fmt::Debug for ScopeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeBuilder")
            .field("parent", &self.parent)
            .field("deadline", &self.deadline)
            .field("values", &self.values.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Runs the body, then the exit protocol (module docs). Only the body's own call is generic;
/// the protocol is in [`end`], whose frame is not on the stack while the body runs (a nested
/// scope costs its caller's stack little: see `tests/scope/nesting.rs`).
fn run_scope<'env, F, R>(shared: Arc<Shared>, f: F) -> Result<R, ScopeError>
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    // Nothing below unwinds before `end` has closed the count: the body's panic is caught, and
    // the backstop turns any other unwinding into an abort rather than let a child outlive
    // the scope (invariant 1).
    let backstop = AbortOnUnwind;
    // Children may hold `&'scope Scope`: `scope` lives in this frame until the count is closed
    // (`end` borrows it), not only while the body runs.
    let scope = Scope { shared: &shared, scope: PhantomData, env: PhantomData };
    let body = {
        let _ambient = ambient::enter(&shared.ctx);
        catch_unwind(AssertUnwindSafe(|| f(&scope)))
    };
    let (body, body_panic) = match body {
        Ok(result) => (Some(result), None),
        Err(payload) => (None, Some(payload)),
    };
    let mut ended = end(&scope, body_panic);
    // Every child has finished and the count is closed: nothing uses `scope` any more.
    ended.release(shared);
    std::mem::forget(backstop);
    ended.report(body)
}

/// Aborts the process if dropped while unwinding: what `run_scope` holds from the body's start
/// until the running count is closed, where an unwinding could only come from a bug in tether
/// and would otherwise let a child outlive the scope.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("tether: the exit of a scope unwound before its children were joined; aborting");
        std::process::abort();
    }
}

/// Steps 1 and 2 of the exit protocol and the failures step 3 reports: cancel, close the count
/// (wait until no child runs), wait for the cancellation's callbacks. Never unwinds.
#[inline(never)]
fn end(scope: &Scope<'_, '_>, body_panic: Option<Payload>) -> Ended {
    let shared = scope.shared;
    // 1. Cancel with the cause that says why (a failure may have cancelled it already: the
    //    first cause wins).
    match body_panic {
        None => shared.cancel(Cause::ScopeExited),
        Some(payload) => {
            shared.panicked(Some("scope body".into()), payload);
        }
    }
    // 2. Join: wait until no child is running, whatever happened to the handles, and close the
    //    count (invariant 4); then wait until the cancellation that reached the scope has run
    //    its callbacks (invariant 5).
    shared.close();
    if let Some(settle) = &shared.settle {
        settle.wait();
    }
    // Every child has counted itself out after recording its failures, and the wait
    // synchronized with that, so the failures below are all that will ever be recorded.
    let mut failures = std::mem::take(&mut *shared.failures());
    failures.put_cancelling_error_first(shared.ctx.cause());
    let Failures { panics, errors, .. } = failures;
    Ended { panics: panics.into_iter().map(|(_, payload)| payload).collect(), errors }
}

/// The failures of an ended scope, for step 3 of the exit protocol.
struct Ended {
    panics: Vec<Payload>,
    errors: Vec<SharedError>,
}

impl Ended {
    /// The end of step 2: drops the scope's state, with its context and the values bound to it,
    /// here, on the owner's thread, before `scope` returns, once the children have let go of it;
    /// a value destructor that panics is a panic of the scope (`tests/faults.rs`).
    #[inline(never)]
    fn release(&mut self, shared: Arc<Shared>) {
        sole_owner(&shared);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(shared))) {
            self.panics.push(payload);
        }
    }

    /// 3. Report: the first panic, else the errors, else the body's result.
    fn report<R>(self, body: Option<R>) -> Result<R, ScopeError> {
        let mut panics = self.panics.into_iter();
        if let Some(first) = panics.next() {
            panics.for_each(crate::testing::record_unhandled_panic);
            resume_unwind(first);
        }
        match ScopeError::from_errors(self.errors) {
            Some(error) => Err(error),
            None => Ok(body.expect("tether: the body neither returned nor panicked")),
        }
    }
}

/// Waits until `shared` is the only reference to the scope's state. A child holds one across the
/// step that counts it out (a thread child for its whole life, a task from just before that step,
/// a worker reporting late finishes until it has reported them) and lets go just after, so once
/// the join has seen no child running this waits at most for that last step of each child.
fn sole_owner(shared: &Arc<Shared>) {
    // SeqCst like every access to the count; the children's decrements are Release.
    while Arc::strong_count(shared) > 1 {
        std::thread::yield_now();
    }
}

// ===== impl Scope =====

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
        &self.shared.ctx
    }

    /// Cancels the scope (with [`Cause::Cancelled`]) and so every child; does not wait for them.
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
        self.shared.ctx.cancel();
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
    pub fn wait_all(&self) {
        assert!(
            !thread::is_child_of(self.shared) && !task::is_task_of(self.shared),
            "tether: wait_all called from a child of the same scope would wait for itself"
        );
        self.shared.wait_idle();
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("context", &self.shared.ctx)
            .field("running", &self.shared.running.running())
            .finish_non_exhaustive()
    }
}

// ===== impl Shared =====

impl Shared {
    fn new(ctx: Context, limit: Option<usize>) -> Shared {
        let settle = Arc::new(Settle::default());
        let settle = ctx.core().is_some_and(|core| attach_settle(core, settle.clone())).then_some(settle);
        let slots = limit.map(|n| {
            let (tx, rx) = crossbeam_channel::bounded(n);
            for _ in 0..n {
                tx.send(()).expect("the receiver is alive");
            }
            (tx, rx)
        });
        Shared {
            ctx,
            failures: Mutex::new(Failures::default()),
            running: count::RunningCount::new(),
            waiters: AtomicUsize::new(0),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
            slots,
            tasks: CachePadded::new(Mutex::new(task::TaskQueue::default())),
            task_parents: OnceLock::new(),
            settle,
        }
    }

    /// Counts a child as running (invariant 4), before its thread starts or its task is queued.
    ///
    /// # Panics
    ///
    /// If the count is closed (a bug: invariant 4 says nothing can spawn then), or absurdly high.
    fn start_one(&self) {
        match self.running.start() {
            Ok(()) => {}
            Err(count::Refused::Closed) => panic!("tether: a child was spawned into a scope that has ended"),
            Err(count::Refused::TooMany) => panic!("tether: too many running children in a scope"),
        }
    }

    /// Waits until no child is running and closes the count (invariant 4): a spawn after this
    /// panics instead of starting a child that nothing would wait for. Never unwinds.
    fn close(&self) {
        loop {
            self.wait_idle();
            // Fails if a child started after the wait saw zero (count invariant 2).
            if self.running.try_close() {
                return;
            }
        }
    }

    /// Counts a child as finished, waking the waiters if it was the last one. After this the
    /// scope may end: the caller must not touch anything borrowed from `'scope` any more (it
    /// keeps `self` alive with its own `Arc`).
    fn finish_one(&self) {
        self.finish_many(1);
    }

    /// Counts `n` children as finished at once ([`finish_one`](Self::finish_one) `n` times).
    fn finish_many(&self, n: usize) {
        // SeqCst (a Release decrement, in the order the waiters' `waiters` increment is in):
        // either a waiter's check of `running` sees zero, or this thread sees the waiter and
        // notifies it under `idle_lock`, after the waiter has started sleeping.
        if self.running.finish(n) && self.waiters.load(SeqCst) > 0 {
            drop(self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.idle.notify_all();
        }
    }

    /// Blocks until no child is running. Panic-free: the tasks it helps with never unwind
    /// (`pool::run_job`).
    fn wait_idle(&self) {
        // SeqCst (so Acquire): seeing zero synchronizes with every child's decrement, which is
        // a release sequence of read-modify-writes, hence with everything each child did.
        if self.running.is_zero() {
            return;
        }
        if crate::pool::started() {
            // This scope's tasks may be pending: run them (and only them) while waiting, so that
            // a wait never depends on a free worker (`task.rs`, "Helping"; design/0003).
            crate::pool::wait_until(|| self.running.is_zero(), || self.help_own(), || self.park_idle());
            return;
        }
        let mut guard = self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, SeqCst);
        while !self.running.is_zero() {
            guard = self.idle.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        self.waiters.fetch_sub(1, SeqCst);
    }

    /// Sleeps until the last child finishes or [`PARK`] passes (whichever is first): the park of
    /// a helping wait, bounded so that it looks for pool jobs again.
    fn park_idle(&self) {
        let guard = self.idle_lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SeqCst: as in `wait_idle`'s slow path (the `waiters` handshake with `finish_one`).
        self.waiters.fetch_add(1, SeqCst);
        if !self.running.is_zero() {
            drop(self.idle.wait_timeout(guard, PARK).unwrap_or_else(PoisonError::into_inner));
        } else {
            drop(guard);
        }
        self.waiters.fetch_sub(1, SeqCst);
    }

    /// Drops `value`, which may hold user data, recording a panic from its destructor as a panic
    /// of the scope (on a worker, a child thread or an exit path, nothing else may catch it).
    fn drop_caught<T>(&self, value: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.record_panic(payload);
        }
    }

    fn failures(&self) -> MutexGuard<'_, Failures> {
        // A poisoned lock only means a panic elsewhere; the vectors are always consistent.
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancels the scope with `cause`. A panic of an on-cancel callback run by this cancellation
    /// is recorded like a child's (it must not unwind out of a child thread: invariant 2).
    fn cancel(&self, cause: Cause) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.ctx.cancel_with(cause))) {
            self.record_panic(payload);
        }
    }

    /// Records a panic payload; returns its id, for a join handle to take it back.
    fn record_panic(&self, payload: Payload) -> u64 {
        let mut failures = self.failures();
        let id = failures.next_panic;
        failures.next_panic += 1;
        failures.panics.push((id, payload));
        id
    }

    /// Records that `who` (a child or the body) panicked and cancels the scope, naming it.
    fn panicked(&self, who: Option<Arc<str>>, payload: Payload) -> u64 {
        let summary = PanicSummary::from_payload(who, &*payload);
        let id = self.record_panic(payload);
        self.cancel(Cause::Panicked(summary));
        id
    }

    /// Takes back the payload recorded as `id`, so the scope will not re-raise it.
    fn take_panic(&self, id: u64) -> Option<Payload> {
        let mut failures = self.failures();
        let index = failures.panics.iter().position(|(i, _)| *i == id)?;
        Some(failures.panics.remove(index).1)
    }

    /// Records a fallible child's error and cancels the scope with it.
    fn failed(&self, error: SharedError) {
        self.failures().errors.push(error.clone());
        self.cancel(Cause::ChildFailed(error));
    }

    /// Waits for a slot of the limit. `true` if one was taken (the child must give it back);
    /// `false` without a limit, or when the scope was cancelled first.
    fn acquire_slot(&self) -> bool {
        let Some((_, free)) = &self.slots else { return false };
        if free.try_recv().is_ok() {
            return true;
        }
        let done = self.ctx.done();
        select! {
            recv(free) -> slot => slot.is_ok(),
            recv(done) -> _ => false,
        }
    }

    /// [`acquire_slot`](Self::acquire_slot) for a task spawner: runs pending pool jobs while it
    /// waits (the slots may be held by queued tasks that only this thread is free to run).
    fn acquire_slot_helping(&self) -> bool {
        let Some((_, free)) = &self.slots else { return false };
        let done = self.ctx.done();
        loop {
            if free.try_recv().is_ok() {
                return true;
            }
            if self.ctx.is_cancelled() {
                return false;
            }
            if self.help_own() {
                continue;
            }
            select! {
                recv(free) -> slot => return slot.is_ok(),
                recv(done) -> _ => return false,
                default(PARK) => {}
            }
        }
    }

    /// Takes a slot if one is free. `Some(taken)` as [`acquire_slot`](Self::acquire_slot), `None`
    /// when the limit is full.
    fn try_acquire_slot(&self) -> Option<bool> {
        match &self.slots {
            None => Some(false),
            Some((_, free)) => free.try_recv().ok().map(|()| true),
        }
    }

    fn release_slot(&self) {
        if let Some((give_back, _)) = &self.slots {
            // Never full: at most `limit` slots are out, and each is given back once.
            let _ = give_back.try_send(());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Failures, SharedError};
    use crate::Cause;
    use std::sync::Arc;

    #[test]
    fn the_error_a_scope_was_cancelled_with_is_reported_first() {
        let error = |text: &str| -> SharedError { Arc::new(std::io::Error::other(text.to_string())) };
        let (a, b, c) = (error("a"), error("b"), error("c"));
        let mut failures = Failures { errors: vec![a.clone(), b.clone(), c.clone()], ..Failures::default() };
        // b recorded second but its cancellation won the race: it goes first, the rest keep order.
        failures.put_cancelling_error_first(Some(Cause::ChildFailed(b.clone())));
        let order: Vec<String> = failures.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        // Cancelled by something else (or by an ancestor's failure): the recorded order stays.
        failures.put_cancelling_error_first(Some(Cause::Cancelled));
        failures.put_cancelling_error_first(Some(Cause::ChildFailed(error("elsewhere"))));
        let order: Vec<String> = failures.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }
}
