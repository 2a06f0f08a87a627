//! Test support: a leak checker for users' tests, and panics that had no caller to be re-raised to.
//!
//! # Leak checking
//! [`LeakCheck`] (or [`assert_no_leaks`]) compares the process-wide live counts ([`crate::live`]:
//! threads, tasks, nodes, registered children, timers, callbacks) at the end of a test with those
//! at its start, like Go's `goleak`. A scope joins its threads before returning, but a thread
//! counts itself out a moment after its last user code ran, so the check polls, with backoff, for
//! a grace period (default [`DEFAULT_GRACE`]) before reporting. The report names what leaked: the
//! excess count of each kind, the names of the scope threads started during the check that are
//! still alive, and, as goleak prints stacks, the dump ([`crate::dump()`]) of the scopes opened
//! during the check that are still open: each child's spawn site and state.
//!
//! The counts are process-wide, so concurrently running tests disturb each other's checks. Checks
//! exclude each other ([`LeakCheck::start`] waits for any other check to finish), which makes
//! leak-checked tests in one test binary run one at a time; tests that do not use the checker
//! but create contexts or threads must not run next to a check: give leak-checked tests their own
//! test binary, or hold one shared lock in every test of the binary (`tests/scope/main.rs`).
//!
//! # Unhandled panics
//! A panic that cannot be re-raised to any caller is recorded rather than lost (by the runtime's
//! sink, `src/unhandled.rs`): a callback that panics on a timer firer thread (its context's
//! deadline fired), and every panic of a scope after the first (the first is re-raised by the
//! scope). [`take_unhandled_panics`] takes them.

use crate::dump::{self, Dump, registry};
use crate::live::{self, LiveCounts};
use std::cell::Cell;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Held by the running leak check: checks exclude each other.
static CHECK: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set while this thread holds `CHECK`, to turn a nested check's deadlock into a panic.
    static CHECKING: Cell<bool> = const { Cell::new(false) };
}

/// How long [`LeakCheck::finish`] waits, by default, for counts to return to their baseline.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

pub use crate::unhandled::take_unhandled_panics;

/// A leak check in progress: the live counts at its start (see the module docs).
///
/// # Examples
///
/// ```
/// use tether::testing::LeakCheck;
///
/// let check = LeakCheck::start();
/// tether::scope(|s| {
///     s.spawn(|ctx| ctx.clone());
/// })
/// .unwrap();
/// check.finish().expect("the scope joined its thread and dropped every context");
///
/// let check = LeakCheck::start();
/// let kept = tether::Context::new();
/// let report = check.finish().unwrap_err();
/// assert_eq!(report.leaked().nodes, 1);
/// drop(kept);
/// ```
#[must_use = "a leak check reports only when finished"]
pub struct LeakCheck {
    baseline: LiveCounts,
    /// Registry ids from here on are threads started during the check.
    first_thread: u64,
    /// Scope ids from here on are scopes opened during the check.
    first_scope: u64,
    grace: Duration,
    _exclusive: MutexGuard<'static, ()>,
}

/// What a [`LeakCheck`] found still alive: the excess count of each kind and the names of the
/// scope threads started during the check that are still running.
///
/// # Examples
///
/// ```
/// let check = tether::testing::LeakCheck::start();
/// let kept = tether::Context::new().child();
/// let report = check.finish().unwrap_err();
/// assert_eq!(report.leaked().nodes, 2);
/// assert_eq!(report.to_string(), "leaked: 2 nodes, 1 registered child");
/// # drop(kept);
/// ```
#[derive(Clone, Debug)]
pub struct LeakReport {
    leaked: LiveCounts,
    threads: Vec<String>,
    scopes: Dump,
}

impl LeakCheck {
    /// Starts a check: reads the live counts. Waits first for any other check in the process to
    /// finish (the counts are process-wide).
    ///
    /// # Panics
    ///
    /// If this thread is already running a check: the nested one would wait for itself.
    ///
    /// # Examples
    ///
    /// See [`LeakCheck`].
    pub fn start() -> LeakCheck {
        assert!(!CHECKING.get(), "tether: a leak check was started inside another on the same thread");
        let exclusive = CHECK.lock().unwrap_or_else(PoisonError::into_inner);
        CHECKING.set(true);
        let first_thread = live::register_threads();
        let first_scope = registry::peek_next_scope_id();
        LeakCheck {
            baseline: live::live(),
            first_thread,
            first_scope,
            grace: DEFAULT_GRACE,
            _exclusive: exclusive,
        }
    }

    /// Sets how long [`finish`](Self::finish) waits for the counts to return to the baseline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let check = tether::testing::LeakCheck::start().grace(Duration::from_millis(10));
    /// check.finish().unwrap();
    /// ```
    pub fn grace(mut self, grace: Duration) -> LeakCheck {
        self.grace = grace;
        self
    }

    /// Ends the check: `Ok` once no count exceeds its baseline, polling with backoff for the
    /// grace period.
    ///
    /// # Errors
    ///
    /// The [`LeakReport`] of the last reading, when something is still alive after the grace
    /// period.
    ///
    /// # Examples
    ///
    /// See [`LeakCheck`].
    pub fn finish(self) -> Result<(), LeakReport> {
        let give_up = Instant::now() + self.grace;
        let mut pause = Duration::from_millis(1);
        loop {
            let leaked = excess(&live::live(), &self.baseline);
            if leaked.is_zero() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= give_up {
                let scopes = dump::dump_since(self.first_scope);
                return Err(LeakReport { leaked, threads: self.live_threads(), scopes });
            }
            std::thread::sleep(pause.min(give_up - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Names of the scope threads started during the check and still alive.
    fn live_threads(&self) -> Vec<String> {
        live::thread_names_since(self.first_thread)
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        // Before the exclusive lock is released (a field, dropped after this): the next check
        // sets it again.
        live::stop_registering_threads();
        let _ = CHECKING.try_with(|c| c.set(false));
    }
}

impl fmt::Debug for LeakCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakCheck").field("baseline", &self.baseline).field("grace", &self.grace).finish()
    }
}

/// The counts by which `now` exceeds `baseline`, per kind.
fn excess(now: &LiveCounts, baseline: &LiveCounts) -> LiveCounts {
    LiveCounts {
        nodes: now.nodes.saturating_sub(baseline.nodes),
        registered_children: now.registered_children.saturating_sub(baseline.registered_children),
        timers: now.timers.saturating_sub(baseline.timers),
        callbacks: now.callbacks.saturating_sub(baseline.callbacks),
        threads: now.threads.saturating_sub(baseline.threads),
        tasks: now.tasks.saturating_sub(baseline.tasks),
    }
}

impl LeakReport {
    /// How many of each kind are alive beyond the baseline.
    ///
    /// # Examples
    ///
    /// See [`LeakReport`].
    pub fn leaked(&self) -> LiveCounts {
        self.leaked
    }

    /// Names of the scope threads started during the check that are still running
    /// (`"<unnamed>"` for those without a name), in start order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let check = tether::testing::LeakCheck::start().grace(std::time::Duration::ZERO);
    /// tether::scope(|s| {
    ///     s.builder().name("stuck").spawn(|ctx| ctx.wait()).unwrap();
    ///     // Finished inside the scope, while the child still runs:
    ///     let report = check.finish().unwrap_err();
    ///     assert_eq!(report.threads(), ["stuck"]);
    /// })
    /// .unwrap();
    /// ```
    pub fn threads(&self) -> &[String] {
        &self.threads
    }

    /// The dump of the scopes opened during the check that were still open at its end, with
    /// their children: where each was spawned and what it is doing.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Canceller;
    /// let check = tether::testing::LeakCheck::start().grace(std::time::Duration::ZERO);
    /// tether::scope(|s| {
    ///     s.spawn(|ctx| ctx.wait());
    ///     let report = check.finish().unwrap_err();
    ///     assert_eq!(report.scopes().scopes().len(), 1);
    ///     assert!(report.to_string().contains("child #0 thread spawned at"));
    /// })
    /// .unwrap();
    /// ```
    pub fn scopes(&self) -> &Dump {
        &self.scopes
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.leaked;
        let kinds = [
            (l.threads, "thread", "threads"),
            (l.tasks, "task", "tasks"),
            (l.nodes, "node", "nodes"),
            (l.registered_children, "registered child", "registered children"),
            (l.timers, "timer", "timers"),
            (l.callbacks, "callback", "callbacks"),
        ];
        f.write_str("leaked:")?;
        let mut sep = " ";
        for (n, one, many) in kinds.into_iter().filter(|(n, ..)| *n > 0) {
            write!(f, "{sep}{n} {}", if n == 1 { one } else { many })?;
            sep = ", ";
        }
        if !self.threads.is_empty() {
            write!(f, " (threads: {})", self.threads.join(", "))?;
        }
        if !self.scopes.scopes().is_empty() {
            write!(f, "\n{}", self.scopes)?;
        }
        Ok(())
    }
}

impl std::error::Error for LeakReport {}

/// Runs `f` between [`LeakCheck::start`] and [`LeakCheck::finish`], and returns its result.
///
/// # Panics
///
/// With the [`LeakReport`] when something created during `f` is still alive after the grace
/// period; and if `f` panics.
///
/// # Examples
///
/// ```
/// let total = tether::testing::assert_no_leaks(|| {
///     tether::scope(|s| s.spawn(|_| 40).join().unwrap() + 2).unwrap()
/// });
/// assert_eq!(total, 42);
/// ```
///
/// ```should_panic
/// let leaked = tether::testing::assert_no_leaks(|| tether::Context::new());
/// ```
pub fn assert_no_leaks<R>(f: impl FnOnce() -> R) -> R {
    let check = LeakCheck::start();
    let result = f();
    if let Err(report) = check.finish() {
        panic!("tether: {report}");
    }
    result
}
