//! Waiting for a child process, with a policy for when the context is cancelled first:
//! [`wait`] and [`OnCancel`].
//!
//! `Child::wait` can be ended by nothing but the child's exit, and std cannot wait for an exit
//! with a timeout. So [`wait`] checks with `try_wait` and parks between checks, with a back-off
//! from 100 µs to 10 ms; the cancellation unparks it at once (an unpark armed on the context).
//! The exit of the child is therefore seen up to 10 ms late, the cancellation at once. Then the
//! policy runs: kill the child, or send it a signal and give it a grace period before killing it
//! (Unix), or leave it running. The child is reaped in every case but `Leave`, and its exit
//! status is returned even when the wait was cancelled: nothing is lost.
//!
//! Signals are sent only to a child that `try_wait` has just found running, by the thread that
//! holds the `&mut Child`, so the child cannot have been reaped and its process id cannot have
//! been reused by another process.

use super::armed::Armed;
use crate::cancel::{Canceller, Cause};
use std::io;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// What [`wait`] does to the child when the context is cancelled before the child exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnCancel {
    /// Kill it at once ([`Child::kill`]: `SIGKILL` on Unix), then reap it.
    Kill,
    /// Send it `signal` (such as 15, `SIGTERM`), wait up to `grace` for it to exit, then kill it
    /// if it has not; reap it. Unix only.
    #[cfg(unix)]
    Signal {
        /// The signal number.
        signal: i32,
        /// How long the child has to exit after the signal before it is killed.
        grace: Duration,
    },
    /// Leave it running: the caller still owns the `Child` and decides.
    Leave,
}

/// Why [`wait`] returned without the child's exit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildWaitError {
    /// The context was cancelled first; the policy ran. `status` is the child's exit status
    /// after the policy (`None` for [`OnCancel::Leave`]).
    #[error("waiting for the child cancelled: {cause}")]
    Cancelled {
        /// The cause of the cancellation.
        #[source]
        cause: Cause,
        /// How the child ended, once the policy had run.
        status: Option<ExitStatus>,
    },
    /// Waiting for, signalling or killing the child failed.
    #[error("waiting for the child failed: {0}")]
    Io(#[from] io::Error),
}

impl ChildWaitError {
    /// The cause, if the wait was cancelled.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ChildWaitError::Cancelled { cause, .. } => Some(cause),
            ChildWaitError::Io(_) => None,
        }
    }
}

/// The first pause between two checks of the child.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
/// The longest pause between two checks: how late an exit may be seen.
const LONGEST_PAUSE: Duration = Duration::from_millis(10);

/// Waits for `child` to exit, as [`Child::wait`], or, if `ctx` is cancelled first, applies
/// `on_cancel` and returns the cause (with the exit status the policy led to).
///
/// Cancellation is checked first: a cancelled context applies the policy even to a child that has
/// already exited (its status is then in the error).
///
/// # Errors
///
/// [`ChildWaitError::Cancelled`] if `ctx` was cancelled first; [`ChildWaitError::Io`] if a
/// system call failed.
///
/// # Examples
///
/// ```
/// # #[cfg(unix)] {
/// use std::process::Command;
/// use tether::blocking::process::{wait, ChildWaitError, OnCancel};
///
/// let mut sleeper = Command::new("sleep").arg("3600").spawn().unwrap();
/// tether::scope(|s| {
///     let waiter = s.spawn(|ctx| wait(ctx, &mut sleeper, OnCancel::Kill));
///     s.cancel(); // the child is killed and reaped, and the waiter returns at once
///     match waiter.join().unwrap() {
///         Err(ChildWaitError::Cancelled { status: Some(status), .. }) => assert!(!status.success()),
///         other => panic!("{other:?}"),
///     }
/// })
/// .unwrap();
/// # }
/// ```
#[track_caller]
pub fn wait<C: Canceller + ?Sized>(
    ctx: &C,
    child: &mut Child,
    on_cancel: OnCancel,
) -> Result<ExitStatus, ChildWaitError> {
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    if ctx.is_cancelled() {
        return Err(apply(child, on_cancel, super::cause_of(ctx))?);
    }
    let me = thread::current();
    let armed = match Armed::arm(ctx, move || me.unpark()) {
        Ok(armed) => armed,
        Err(cause) => return Err(apply(child, on_cancel, cause)?),
    };
    let mut pause = FIRST_PAUSE;
    loop {
        if ctx.is_cancelled() {
            drop(armed);
            return Err(apply(child, on_cancel, super::cause_of(ctx))?);
        }
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::park_timeout(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Runs the policy on `child` after a cancellation with `cause`.
fn apply(child: &mut Child, on_cancel: OnCancel, cause: Cause) -> io::Result<ChildWaitError> {
    let status = match on_cancel {
        OnCancel::Leave => None,
        OnCancel::Kill => Some(kill(child)?),
        #[cfg(unix)]
        OnCancel::Signal { signal, grace } => Some(signal_then_kill(child, signal, grace)?),
    };
    Ok(ChildWaitError::Cancelled { cause, status })
}

/// Kills `child` unless it has exited, and reaps it.
fn kill(child: &mut Child) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    child.kill()?;
    child.wait()
}

/// Sends `signal` to `child` unless it has exited, waits up to `grace` for it, then kills it.
#[cfg(unix)]
fn signal_then_kill(child: &mut Child, signal: i32, grace: Duration) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    send_signal(child, signal)?;
    let end = Instant::now() + grace;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= end {
            return kill(child);
        }
        thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Sends `signal` to `child`, which `try_wait` has just found running.
#[cfg(unix)]
fn send_signal(child: &Child, signal: i32) -> io::Result<()> {
    unsafe extern "C" {
        // POSIX `int kill(pid_t pid, int sig)`; `pid_t` is a 32-bit signed integer on every Unix
        // Rust supports.
        fn kill(pid: i32, sig: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: `kill` reads no memory of ours. `pid` is our child, not yet reaped (we hold the
    // `&mut Child` that alone can reap it, and `try_wait` just found it running), so the id
    // cannot belong to another process.
    if unsafe { kill(pid, signal) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
