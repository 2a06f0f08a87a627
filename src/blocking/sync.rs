//! Locks and condition variables: [`wait_while`] and [`wait_timeout_while`] on a std [`Condvar`],
//! and [`lock`], [`read`] and [`write()`] on a std [`Mutex`] or [`RwLock`] held elsewhere.
//!
//! # What std allows, and what these do
//! - **A condition variable** can be woken from outside: the cancellation runs `notify_all` on it
//!   (`blocking/armed.rs`). To close the window between the waiter's check and its wait (a
//!   notification in that window would be lost), the notifier takes the mutex first, as every
//!   correct notifier does. If the mutex is held at that moment (by the waiter in that window, by
//!   another thread, or by the very thread that cancels), it notifies at once without the lock
//!   and hands the locked notification to a short-lived thread of its own; the wait does not
//!   return before that notification is done (invariant 3 of `armed`). So the thread that
//!   cancels never blocks on the user's mutex.
//! - **A mutex or read-write lock** cannot: std has no way to wait for an unlock other than
//!   blocking in `lock()`, which nothing but the unlock ends. [`lock`], [`read`] and [`write()`]
//!   therefore try the lock and park between tries, with a back-off from 1 µs to 1 ms; the
//!   cancellation unparks the thread at once. So a cancellation is seen at once, but an unlock
//!   may be seen up to 1 ms late. Code that waits on a lock for long would be better served by a
//!   condition variable or a channel.

use super::armed::{Armed, Busy, Disarmed};
use crate::cancel::{Canceller, Cause};
use std::fmt;
use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};
use std::time::{Duration, Instant};

/// Why a cancellable wait or lock returned without what it waited for. The guard, when there is
/// one, is given back: a wait on a condition variable always ends holding the mutex.
///
/// # Examples
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use tether::blocking::sync::{wait_while, WaitError};
///
/// let (ready, wakeup) = (Mutex::new(false), Condvar::new());
/// let ctx = tether::Context::new();
/// ctx.cancel();
/// match wait_while(&ctx, &ready, &wakeup, ready.lock().unwrap(), |ready| !*ready) {
///     Err(WaitError::Cancelled(guard, cause)) => {
///         assert!(!*guard); // the mutex is held again
///         assert_eq!(cause, tether::Cause::Cancelled);
///     }
///     _ => unreachable!(),
/// }
/// ```
#[non_exhaustive]
pub enum WaitError<G> {
    /// The context was cancelled, with this cause; the guard is held again.
    Cancelled(G, Cause),
    /// The lock was poisoned (a thread panicked while holding it), as std reports it; the guard
    /// is in the [`PoisonError`].
    Poisoned(PoisonError<G>),
}

impl<G> WaitError<G> {
    /// The cause, if the wait was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::blocking::sync::WaitError::Cancelled((), tether::Cause::Cancelled);
    /// assert_eq!(err.cause(), Some(&tether::Cause::Cancelled));
    /// ```
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            WaitError::Cancelled(_, cause) => Some(cause),
            WaitError::Poisoned(_) => None,
        }
    }

    /// The guard, whichever way the wait ended.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::blocking::sync::WaitError::Cancelled(7, tether::Cause::Cancelled);
    /// assert_eq!(err.into_guard(), 7);
    /// ```
    pub fn into_guard(self) -> G {
        match self {
            WaitError::Cancelled(guard, _) => guard,
            WaitError::Poisoned(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<G> fmt::Debug for WaitError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Cancelled(_, cause) => f.debug_tuple("Cancelled").field(&"..").field(cause).finish(),
            WaitError::Poisoned(_) => f.write_str("Poisoned(..)"),
        }
    }
}

impl<G> fmt::Display for WaitError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Cancelled(_, cause) => write!(f, "wait cancelled: {cause}"),
            WaitError::Poisoned(_) => f.write_str("poisoned lock: another task failed inside"),
        }
    }
}

impl<G> std::error::Error for WaitError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Cancelled(_, cause) => Some(cause),
            WaitError::Poisoned(_) => None,
        }
    }
}

/// Why [`wait_timeout_while`] returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitTimeoutError<G> {
    /// The context was cancelled, or the lock poisoned.
    Wait(WaitError<G>),
    /// The timeout passed with the condition still true; the guard is held again.
    TimedOut(G),
}

/// Waits on `condvar` while `condition` holds, as [`Condvar::wait_while`] does, or until `ctx` is
/// cancelled. `guard` must be a guard of `mutex` (the mutex the condition variable is used
/// with): the cancellation locks it to notify without a lost wake-up (module docs).
///
/// Cancellation is checked first, before the condition, and after every wake-up.
///
/// # Errors
///
/// [`WaitError::Cancelled`] with the guard (held again) and the cause;
/// [`WaitError::Poisoned`] as std reports it.
///
/// # Examples
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use tether::blocking::sync::wait_while;
///
/// let (jobs, changed) = (Mutex::new(Vec::<u32>::new()), Condvar::new());
/// tether::scope(|s| {
///     let worker = s.spawn(|ctx| {
///         let guard = jobs.lock().unwrap();
///         // Blocks until a job arrives, or until the scope cancels the worker.
///         wait_while(ctx, &jobs, &changed, guard, |jobs| jobs.is_empty()).map(|jobs| jobs[0]).ok()
///     });
///     s.cancel();
///     assert_eq!(worker.join().unwrap(), None);
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn wait_while<'a, T, C, F>(
    ctx: &C,
    mutex: &'a Mutex<T>,
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    condition: F,
) -> Result<MutexGuard<'a, T>, WaitError<MutexGuard<'a, T>>>
where
    T: Send,
    C: Canceller + ?Sized,
    F: FnMut(&mut T) -> bool,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    match wait_inner(ctx, mutex, condvar, guard, condition, None) {
        Ok(guard) => Ok(guard),
        Err(WaitTimeoutError::Wait(err)) => Err(err),
        Err(WaitTimeoutError::TimedOut(_)) => unreachable!("no timeout was given"),
    }
}

/// As [`wait_while`], returning [`WaitTimeoutError::TimedOut`] if `timeout` passes first.
///
/// # Errors
///
/// As [`wait_while`], plus the timeout.
///
/// # Examples
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// use tether::blocking::sync::{wait_timeout_while, WaitTimeoutError};
///
/// let (flag, cv) = (Mutex::new(false), Condvar::new());
/// let ctx = tether::Context::new();
/// let waited = wait_timeout_while(&ctx, &flag, &cv, flag.lock().unwrap(), Duration::ZERO, |f| !*f);
/// assert!(matches!(waited, Err(WaitTimeoutError::TimedOut(_))));
/// ```
#[track_caller]
pub fn wait_timeout_while<'a, T, C, F>(
    ctx: &C,
    mutex: &'a Mutex<T>,
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    condition: F,
) -> Result<MutexGuard<'a, T>, WaitTimeoutError<MutexGuard<'a, T>>>
where
    T: Send,
    C: Canceller + ?Sized,
    F: FnMut(&mut T) -> bool,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    wait_inner(ctx, mutex, condvar, guard, condition, Some(Instant::now() + timeout))
}

/// The wait loop of [`wait_while`] and [`wait_timeout_while`].
fn wait_inner<'a, T, C, F>(
    ctx: &C,
    mutex: &'a Mutex<T>,
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    mut condition: F,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, WaitTimeoutError<MutexGuard<'a, T>>>
where
    T: Send,
    C: Canceller + ?Sized,
    F: FnMut(&mut T) -> bool,
{
    let cancelled =
        |guard, ctx: &C| Err(WaitTimeoutError::Wait(WaitError::Cancelled(guard, super::cause_of(ctx))));
    if ctx.is_cancelled() {
        return cancelled(guard, ctx);
    }
    let mut armed = match Armed::arm_busy(ctx, move |busy| notify_locked(mutex, condvar, busy)) {
        Ok(armed) => armed,
        Err(cause) => return Err(WaitTimeoutError::Wait(WaitError::Cancelled(guard, cause))),
    };
    // Declared after `armed`, so dropped before it if `condition` panics: a late notification
    // that waits for the mutex gets it, and `armed`'s drop, which waits for that notification,
    // does not deadlock.
    let mut guard = guard;
    let mut poisoned = false;
    let mut timed_out = false;
    // Cancellation first (it is set before the notification is sent), then the condition.
    while !ctx.is_cancelled() && condition(&mut *guard) {
        let woken = match deadline {
            None => condvar.wait(guard).map_err(PoisonError::into_inner),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Not even a zero-length wait: the kernel would round it up to its slack. The
                    // poison is reported as the wait's re-locking would have reported it.
                    timed_out = true;
                    poisoned = mutex.is_poisoned();
                    break;
                }
                let (woken, result) = match condvar.wait_timeout(guard, left) {
                    Ok((guard, result)) => (Ok(guard), result),
                    Err(poisoned) => {
                        let (guard, result) = poisoned.into_inner();
                        (Err(guard), result)
                    }
                };
                timed_out = result.timed_out();
                woken
            }
        };
        guard = woken.unwrap_or_else(|guard| {
            poisoned = true;
            guard
        });
        if poisoned || timed_out {
            break;
        }
    }
    // Disarm while holding the guard, unless the notification is running: it may wait for the
    // mutex, so release it, let the notification finish, and take the mutex again.
    if armed.try_disarm() == Disarmed::Running {
        drop(guard);
        armed.disarm();
        guard = mutex.lock().unwrap_or_else(|e| {
            poisoned = true;
            e.into_inner()
        });
    }
    drop(armed);
    if ctx.is_cancelled() {
        return cancelled(guard, ctx);
    }
    if poisoned {
        return Err(WaitTimeoutError::Wait(WaitError::Poisoned(PoisonError::new(guard))));
    }
    if timed_out && condition(&mut *guard) {
        return Err(WaitTimeoutError::TimedOut(guard));
    }
    Ok(guard)
}

/// The cancellation's notification: under the mutex if it is free; else at once, and again under
/// the mutex from a thread of its own that holds the [`Busy`] token until it is done (module
/// docs), so the cancelling thread never blocks on the user's mutex.
fn notify_locked<T: Send>(mutex: &Mutex<T>, condvar: &Condvar, busy: Busy) {
    match mutex.try_lock() {
        Ok(_locked) => condvar.notify_all(),
        Err(TryLockError::Poisoned(_locked)) => condvar.notify_all(),
        Err(TryLockError::WouldBlock) => {
            condvar.notify_all(); // wakes a waiter that is already waiting
            let late = LateNotify {
                mutex: (mutex as *const Mutex<T>).cast(),
                condvar: condvar as *const Condvar,
                notify: notify_under::<T>,
                busy,
            };
            // A failed spawn drops the closure, and `busy` with it: the notification above is
            // then all there is.
            let _ = std::thread::Builder::new().name("tether-notify".into()).spawn(move || late.run());
        }
    }
}

/// A notification under the mutex, to run on a thread of its own while the waiter's call waits
/// for `busy` (armed invariant 3).
struct LateNotify {
    /// The `Mutex<T>`, its type erased so that the thread's closure is `'static`.
    mutex: *const (),
    condvar: *const Condvar,
    /// `notify_under::<T>`, for the erased `T`.
    notify: unsafe fn(*const (), &Condvar),
    busy: Busy,
}

// SAFETY: the pointers are to a `Mutex<T>` with `T: Send` (so `Sync`) and a `Condvar` (`Sync`),
// which the waiting call keeps alive until `busy` is dropped (armed invariants 2 and 3).
unsafe impl Send for LateNotify {}

impl LateNotify {
    fn run(self) {
        // SAFETY: alive until `self.busy` drops, at the end of this function (see `Send` above);
        // `notify` was instantiated for the mutex's own `T`.
        unsafe { (self.notify)(self.mutex, &*self.condvar) };
        drop(self.busy);
    }
}

/// Locks the `Mutex<T>` at `mutex` and notifies `condvar` under it.
///
/// # Safety
///
/// `mutex` points to a live `Mutex<T>`.
unsafe fn notify_under<T>(mutex: *const (), condvar: &Condvar) {
    // SAFETY: the caller's contract.
    let mutex = unsafe { &*mutex.cast::<Mutex<T>>() };
    let _locked = mutex.lock();
    condvar.notify_all();
}

/// Why [`lock`], [`read`] or [`write()`] returned without the lock.
///
/// # Examples
///
/// ```
/// use std::sync::Mutex;
/// use tether::blocking::sync::{lock, LockError};
///
/// let shared = Mutex::new(0);
/// let ctx = tether::Context::new();
/// ctx.cancel();
/// assert!(matches!(lock(&ctx, &shared), Err(LockError::Cancelled(tether::Cause::Cancelled))));
/// ```
#[non_exhaustive]
pub enum LockError<G> {
    /// The context was cancelled before the lock was free; the lock is not held.
    Cancelled(Cause),
    /// The lock is poisoned (a thread panicked while holding it), as std reports it; the guard
    /// is in the [`PoisonError`].
    Poisoned(PoisonError<G>),
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Cancelled(cause) => f.debug_tuple("Cancelled").field(cause).finish(),
            LockError::Poisoned(_) => f.write_str("Poisoned(..)"),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Cancelled(cause) => write!(f, "lock cancelled: {cause}"),
            LockError::Poisoned(_) => f.write_str("poisoned lock: another task failed inside"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Cancelled(cause) => Some(cause),
            LockError::Poisoned(_) => None,
        }
    }
}

/// Locks `mutex`, or returns when `ctx` is cancelled first. The cancellation is seen at once; the
/// unlock up to 1 ms late (module docs: std cannot wait for an unlock and be woken otherwise).
/// A lock that is free costs one `try_lock` and nothing else.
///
/// # Errors
///
/// [`LockError::Cancelled`] if `ctx` is cancelled before the lock is taken (checked first);
/// [`LockError::Poisoned`] as [`Mutex::lock`] reports it.
///
/// # Examples
///
/// ```
/// use std::sync::Mutex;
/// let counter = Mutex::new(0);
/// tether::scope(|s| {
///     let held = counter.lock().unwrap(); // held by the body for as long as it likes
///     let waiter = s.spawn(|ctx| tether::blocking::sync::lock(ctx, &counter).map(|mut n| *n += 1).is_ok());
///     s.cancel(); // the waiter gives up at once
///     assert!(!waiter.join().unwrap());
///     drop(held);
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn lock<'a, T, C>(ctx: &C, mutex: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, LockError<MutexGuard<'a, T>>>
where
    T: ?Sized,
    C: Canceller + ?Sized,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    acquire(ctx, || mutex.try_lock())
}

/// Takes `lock` for reading, or returns when `ctx` is cancelled first; as [`lock`].
///
/// # Errors
///
/// As [`lock`].
///
/// # Examples
///
/// ```
/// let config = std::sync::RwLock::new("v1");
/// let ctx = tether::Context::new();
/// assert_eq!(*tether::blocking::sync::read(&ctx, &config).unwrap(), "v1");
/// ```
#[track_caller]
pub fn read<'a, T, C>(
    ctx: &C,
    lock: &'a RwLock<T>,
) -> Result<RwLockReadGuard<'a, T>, LockError<RwLockReadGuard<'a, T>>>
where
    T: ?Sized,
    C: Canceller + ?Sized,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    acquire(ctx, || lock.try_read())
}

/// Takes `lock` for writing, or returns when `ctx` is cancelled first; as [`lock`].
///
/// # Errors
///
/// As [`lock`].
///
/// # Examples
///
/// ```
/// let config = std::sync::RwLock::new("v1");
/// let ctx = tether::Context::new();
/// *tether::blocking::sync::write(&ctx, &config).unwrap() = "v2";
/// assert_eq!(*config.read().unwrap(), "v2");
/// ```
#[track_caller]
pub fn write<'a, T, C>(
    ctx: &C,
    lock: &'a RwLock<T>,
) -> Result<RwLockWriteGuard<'a, T>, LockError<RwLockWriteGuard<'a, T>>>
where
    T: ?Sized,
    C: Canceller + ?Sized,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    acquire(ctx, || lock.try_write())
}

/// The first pause between two tries of a held lock.
const FIRST_PAUSE: Duration = Duration::from_micros(1);
/// The longest pause between two tries: how late an unlock may be seen.
const LONGEST_PAUSE: Duration = Duration::from_millis(1);

/// Tries `try_lock` until it succeeds, parking between tries with a doubling pause; an unpark
/// armed on `ctx` ends the pause at once when it is cancelled.
fn acquire<C, G>(ctx: &C, mut try_lock: impl FnMut() -> Result<G, TryLockError<G>>) -> Result<G, LockError<G>>
where
    C: Canceller + ?Sized,
{
    let mut armed = None;
    let mut pause = FIRST_PAUSE;
    loop {
        if ctx.is_cancelled() {
            return Err(LockError::Cancelled(super::cause_of(ctx)));
        }
        match try_lock() {
            Ok(guard) => return Ok(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Err(LockError::Poisoned(poisoned)),
            Err(TryLockError::WouldBlock) => {}
        }
        if armed.is_none() {
            // Only a lock that is held pays for the arming, once per call.
            let me = std::thread::current();
            armed = Some(Armed::arm(ctx, move || me.unpark()).map_err(LockError::Cancelled)?);
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
