//! [`scope`](crate::scope()) and [`ScopeBuilder`]: opening a scope, with its parent context, deadline, values
//! and concurrency limit. Running it is `exit.rs`'s.

use super::error::ScopeError;
use super::exit;
use super::handle::Scope;
use super::observe::{BoundKey, MetaConfig, ScopeMeta};
use super::state::ScopeState;
use super::watchdog::{self, OnHang};
use crate::ambient;
use crate::context::Context;
use crate::dump::{Dump, registry};
use crate::telemetry::ScopeObs;
use crate::value::{Bound, Key, KeyId, Value};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `f` in a new scope of OS threads and returns its result once every child has finished.
///
/// The body runs on the calling thread. Its [`Scope`] spawns children that may borrow from the
/// enclosing stack (as with [`std::thread::scope`]). The scope's context is a child of the ambient
/// context ([`crate::current`]: the enclosing scope's child or body, else a new root); use
/// [`ScopeBuilder`] for another parent, a deadline, values or a concurrency limit.
///
/// When the body returns, the scope **cancels** the children still running (with
/// [`Cause::ScopeExited`](crate::Cause::ScopeExited)) and then joins them. To let them finish instead, call
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
/// child has been joined (a panic taken by [`ScopedJoinHandle::join`](crate::ScopedJoinHandle::join) is not re-raised). Later
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
#[track_caller]
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
    values: Vec<(KeyId, Bound)>,
    /// The bound keys as a dump shows them (`Key::shown`).
    shown: Vec<BoundKey>,
    limit: Option<usize>,
    name: Option<String>,
    watchdog: Option<(Duration, OnHang)>,
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

    /// Cancels the scope with [`Cause::DeadlineExceeded`](crate::Cause::DeadlineExceeded) at `deadline` (or at the parent's
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

    /// Cancels the scope with [`Cause::DeadlineExceeded`](crate::Cause::DeadlineExceeded) `timeout` from now (this call, not
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
        let value = Arc::new(value);
        let shown = key.show().map(|show| (show, value.clone() as Value));
        self.shown.push(BoundKey { name: key.name(), show: shown });
        self.values.push((key.id(), Bound::typed(key, value)));
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

    /// Names the scope, for dumps ([`crate::dump()`]) and watchdog reports.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::ScopeBuilder::new().name("ingest").run(|_| {
    ///     assert!(tether::dump().scopes().iter().any(|s| s.name.as_deref() == Some("ingest")));
    /// })
    /// .unwrap();
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> ScopeBuilder {
        self.name = Some(name.into());
        self
    }

    /// Watches for a hang: once the scope has been cancelled (by its exit, a deadline, a parent,
    /// a failure) for `after` and still has running children, `on_hang` is called, once, with
    /// the dump of the scope and the scopes below it: each child still running, where it was
    /// spawned and where it is blocked.
    ///
    /// `on_hang` runs on a thread of the shared timer driver (no thread per scope); it should
    /// return soon (a slow one delays other deadlines' callbacks) and may outlive the scope (it
    /// is dropped where the timer drops it). A scope whose children all finish in time reports
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// let (report, hang) = mpsc::channel();
    /// let (release, stuck) = mpsc::channel::<()>();
    /// let report = std::sync::Mutex::new(report);
    /// tether::ScopeBuilder::new()
    ///     .watchdog(Duration::from_millis(10), move |dump| {
    ///         report.lock().unwrap().send(dump.to_string()).unwrap();
    ///     })
    ///     .run(|s| {
    ///         s.spawn(move |_| stuck.recv()); // ignores cancellation
    ///         s.cancel();
    ///         let text = hang.recv().unwrap();
    ///         assert!(text.contains("1 running"));
    ///         release.send(()).unwrap();
    ///     })
    ///     .unwrap();
    /// ```
    pub fn watchdog(
        mut self,
        after: Duration,
        on_hang: impl Fn(&Dump) + Send + Sync + 'static,
    ) -> ScopeBuilder {
        self.watchdog = Some((after, Arc::new(on_hang)));
        self
    }

    /// [`watchdog`](Self::watchdog) with the default report: the dump, printed to stderr (once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let n = tether::ScopeBuilder::new().watchdog_to_stderr(Duration::from_secs(5)).run(|_| 1).unwrap();
    /// assert_eq!(n, 1);
    /// ```
    pub fn watchdog_to_stderr(self, after: Duration) -> ScopeBuilder {
        self.watchdog(after, watchdog::to_stderr)
    }

    /// Runs `f` in the configured scope: see [`scope`](crate::scope()).
    ///
    /// # Errors
    ///
    /// As [`scope`](crate::scope()): the failures of fallible children.
    ///
    /// # Panics
    ///
    /// As [`scope`](crate::scope()): re-raises the first panic of the body or a child.
    ///
    /// # Examples
    ///
    /// ```
    /// let n = tether::ScopeBuilder::new().limit(1).run(|s| s.spawn(|_| 1).join().unwrap()).unwrap();
    /// assert_eq!(n, 1);
    /// ```
    #[track_caller]
    pub fn run<'env, F, R>(self, f: F) -> Result<R, ScopeError>
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        exit::run_body_then_exit(self.into_state(Location::caller()), f)
    }

    /// The scope's state: its context (below the parent, with the deadline and values), limit
    /// and what dumps show of it (opened at `site`), registered for dumps. Not inlined, so that
    /// its frame is not on the stack while the body runs.
    #[inline(never)]
    fn into_state(self, site: &'static Location<'static>) -> Arc<ScopeState> {
        let parent = self.parent.unwrap_or_else(ambient::current);
        let mut ctx = match self.deadline {
            Some(deadline) => parent.with_deadline(deadline),
            None => parent.child(),
        };
        if !self.values.is_empty() {
            let values = self
                .values
                .into_iter()
                .fold(ctx.values().clone(), |values, (key, v)| values.with_bound(key, v));
            ctx = ctx.with_values(values);
        }
        let mut meta =
            ScopeMeta::new(MetaConfig { name: self.name, site, limit: self.limit, values: self.shown });
        let obs = ScopeObs::open(site, meta.id, meta.name());
        if let Some((after, on_hang)) = self.watchdog {
            meta.watchdog = Some(watchdog::arm(&ctx, meta.id, after, on_hang));
        }
        let id = meta.id;
        let state = Arc::new(ScopeState::new(ctx, self.limit, meta, obs));
        registry::register(id, state.clone());
        state
    }
}

impl fmt::Debug for ScopeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeBuilder")
            .field("parent", &self.parent)
            .field("deadline", &self.deadline)
            .field("values", &self.values.len())
            .field("limit", &self.limit)
            .field("name", &self.name)
            .field("watchdog", &self.watchdog.as_ref().map(|(after, _)| after))
            .finish()
    }
}
