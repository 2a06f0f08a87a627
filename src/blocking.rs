//! Cancellable blocking: the calls a thread blocks in, made to return early, with the cause, when
//! a context is cancelled.
//!
//! | what the thread blocks on | the helper | how the cancellation wakes it |
//! | --- | --- | --- |
//! | `thread::sleep` | [`sleep`] | a select on [`done()`](crate::Canceller::done) |
//! | a crossbeam channel | [`recv`], [`recv_timeout`], [`send`] | a select on `done()` |
//! | `std::sync::mpsc` | [`mpsc::recv`], [`mpsc::recv_timeout`], [`mpsc::send`] | std's API over a crossbeam channel, then a select |
//! | `Condvar` | [`sync::wait_while`], [`sync::wait_timeout_while`] | `notify_all` under the mutex |
//! | a held `Mutex` / `RwLock` | [`sync::lock`], [`sync::read`], [`sync::write`] | an unpark (the unlock is polled: std cannot signal it) |
//! | `thread::park` | [`park`], [`park_timeout`] | an unpark |
//! | `TcpStream`, `UnixStream` | [`net::read`], [`net::write`], [`net::Cancellable`] | a shutdown of the socket |
//! | `TcpListener`, `UnixListener`, `UdpSocket` (Unix) | [`net::accept`], [`net::accept_unix`], [`net::recv_from`] | a shutdown of the socket's reading side |
//! | `Child::wait` | [`process::wait`] | the policy's kill or signal |
//!
//! Every helper checks for cancellation first, so a cancelled context wins over a ready message
//! or connection (deterministically, unlike a bare `select!`, which picks at random among ready
//! operations), and what was ready stays where it was. The channel helpers wait in one select on
//! the operation and the context's `done()` receiver. The others arm an action on the context
//! (an unpark, a `notify_all`, a shutdown) through the same mechanism a future awaiting the
//! context uses ([`Canceller::poll_cancelled`]) and remove it before they return, so nothing stays
//! registered after the call (`armed`). Each takes any [`Canceller`], `&dyn Canceller` included.
//!
//! They can be called from pool tasks, but a pool task blocked in one occupies its worker until
//! it returns: the pool does not grow to replace it, so block in thread children where the wait
//! may be long.
//!
//! To wait for cancellation itself with a timeout, use [`Canceller::wait_timeout`]; to combine
//! `done()` with other channels, use `crossbeam_channel::select!` directly.

pub(crate) mod armed;
pub mod mpsc;
pub mod net;
mod park;
pub mod process;
pub mod sync;

pub use park::{park, park_timeout};

use crate::cancel::{Canceller, Cause};
use crossbeam_channel::{Receiver, RecvTimeoutError as ChannelTimeout, Select, Sender};
use std::panic::Location;
use std::time::Duration;

/// Why [`recv`] returned without a message.
///
/// # Examples
///
/// ```
/// use tether::blocking::{recv, RecvError};
/// use tether::Context;
///
/// let ctx = Context::new();
/// let (tx, rx) = crossbeam_channel::unbounded::<u32>();
/// drop(tx);
/// assert_eq!(recv(&ctx, &rx), Err(RecvError::Disconnected));
/// ctx.cancel();
/// assert_eq!(recv(&ctx, &rx), Err(RecvError::Cancelled(tether::Cause::Cancelled)));
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The context was cancelled, with this cause.
    #[error("receive cancelled: {0}")]
    Cancelled(Cause),
    /// The channel is empty and every sender is gone.
    #[error("receiving on an empty and disconnected channel")]
    Disconnected,
}

/// Why [`recv_timeout`] returned without a message.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::blocking::{recv_timeout, RecvTimeoutError};
///
/// let (_tx, rx) = crossbeam_channel::unbounded::<u32>();
/// let err = recv_timeout(&tether::Context::new(), &rx, Duration::ZERO).unwrap_err();
/// assert!(err.is_timeout());
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// The context was cancelled, with this cause.
    #[error("receive cancelled: {0}")]
    Cancelled(Cause),
    /// No message arrived in time.
    #[error("timed out waiting on receive operation")]
    Timeout,
    /// The channel is empty and every sender is gone.
    #[error("receiving on an empty and disconnected channel")]
    Disconnected,
}

impl RecvError {
    /// True for [`RecvError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::blocking::RecvError::Cancelled(tether::Cause::Cancelled).is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, RecvError::Cancelled(_))
    }

    /// True for [`RecvError::Disconnected`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::blocking::RecvError::Disconnected.is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvError::Disconnected)
    }
}

impl RecvTimeoutError {
    /// True for [`RecvTimeoutError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tether::blocking::RecvTimeoutError::Cancelled(tether::Cause::Cancelled);
    /// assert!(err.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, RecvTimeoutError::Cancelled(_))
    }

    /// True for [`RecvTimeoutError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::blocking::RecvTimeoutError::Timeout.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }

    /// True for [`RecvTimeoutError::Disconnected`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::blocking::RecvTimeoutError::Disconnected.is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvTimeoutError::Disconnected)
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Cancelled(cause) => RecvTimeoutError::Cancelled(cause),
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
        }
    }
}

/// The cause of a cancelled `ctx` (a foreign [`Canceller`] might not report one).
fn cause_of<C: Canceller + ?Sized>(ctx: &C) -> Cause {
    ctx.cause().unwrap_or(Cause::Cancelled)
}

/// Sleeps for `duration`, or until `ctx` is cancelled.
///
/// # Errors
///
/// The cause, if `ctx` is cancelled before or during the sleep.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::Canceller;
///
/// tether::scope(|s| {
///     let sleeper = s.spawn(|ctx| tether::blocking::sleep(ctx, Duration::from_secs(3600)));
///     s.cancel();
///     assert_eq!(sleeper.join().unwrap(), Err(tether::Cause::Cancelled), "woken at once");
/// })
/// .unwrap();
/// assert_eq!(tether::blocking::sleep(&tether::Context::new(), Duration::ZERO), Ok(()));
/// ```
#[track_caller]
pub fn sleep<C: Canceller + ?Sized>(ctx: &C, duration: Duration) -> Result<(), Cause> {
    let _blocked = crate::dump::BlockingSite::enter(Location::caller());
    if ctx.is_cancelled() {
        return Err(cause_of(ctx));
    }
    match ctx.done().recv_timeout(duration) {
        Err(ChannelTimeout::Timeout) => Ok(()),
        // `done()` never delivers a message: it disconnects on cancellation.
        Ok(never) => match never {},
        Err(ChannelTimeout::Disconnected) => Err(cause_of(ctx)),
    }
}

/// Receives a message from `rx`, or returns early when `ctx` is cancelled.
///
/// # Errors
///
/// [`RecvError::Cancelled`] with the cause if `ctx` is cancelled first (also when a message is
/// ready but `ctx` was already cancelled); [`RecvError::Disconnected`] if the channel is empty and
/// disconnected.
///
/// # Examples
///
/// ```
/// let (tx, rx) = crossbeam_channel::unbounded();
/// tether::scope(|s| {
///     let consumer = s.spawn(|ctx| {
///         let mut got = Vec::new();
///         while let Ok(job) = tether::blocking::recv(ctx, &rx) {
///             got.push(job);
///         }
///         got
///     });
///     tx.send(1).unwrap();
///     drop(tx);
///     assert_eq!(consumer.join().unwrap(), [1]);
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn recv<T, C: Canceller + ?Sized>(ctx: &C, rx: &Receiver<T>) -> Result<T, RecvError> {
    let _blocked = crate::dump::BlockingSite::enter(Location::caller());
    match recv_until(ctx, rx, None) {
        Received::Message(msg) => Ok(msg),
        Received::Disconnected => Err(RecvError::Disconnected),
        Received::Cancelled(cause) => Err(RecvError::Cancelled(cause)),
        Received::TimedOut => unreachable!("no timeout was given"),
    }
}

/// Receives a message from `rx`, or returns early when `ctx` is cancelled or `timeout` passes.
///
/// # Errors
///
/// As [`recv`], plus [`RecvTimeoutError::Timeout`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let (tx, rx) = crossbeam_channel::unbounded();
/// tx.send("hi").unwrap();
/// let ctx = tether::Context::new();
/// assert_eq!(tether::blocking::recv_timeout(&ctx, &rx, Duration::from_secs(1)), Ok("hi"));
/// ```
#[track_caller]
pub fn recv_timeout<T, C: Canceller + ?Sized>(
    ctx: &C,
    rx: &Receiver<T>,
    timeout: Duration,
) -> Result<T, RecvTimeoutError> {
    let _blocked = crate::dump::BlockingSite::enter(Location::caller());
    match recv_until(ctx, rx, Some(timeout)) {
        Received::Message(msg) => Ok(msg),
        Received::Disconnected => Err(RecvTimeoutError::Disconnected),
        Received::Cancelled(cause) => Err(RecvTimeoutError::Cancelled(cause)),
        Received::TimedOut => Err(RecvTimeoutError::Timeout),
    }
}

/// What [`recv_until`] ended with.
enum Received<T> {
    Message(T),
    Disconnected,
    Cancelled(Cause),
    TimedOut,
}

/// Waits for a message on `rx`, the cancellation of `ctx` (checked first, so it wins over a ready
/// message) or `timeout` (none: wait as long as it takes), in one select.
fn recv_until<T, C: Canceller + ?Sized>(ctx: &C, rx: &Receiver<T>, timeout: Option<Duration>) -> Received<T> {
    if ctx.is_cancelled() {
        return Received::Cancelled(cause_of(ctx));
    }
    let done = ctx.done();
    let mut select = Select::new();
    let message = select.recv(rx);
    select.recv(&done);
    let ready = match timeout {
        None => select.select(),
        Some(timeout) => match select.select_timeout(timeout) {
            Ok(ready) => ready,
            Err(_) => return Received::TimedOut,
        },
    };
    if ready.index() == message {
        match ready.recv(rx) {
            Ok(msg) => Received::Message(msg),
            Err(_) => Received::Disconnected,
        }
    } else {
        // `done` only ever disconnects: this completes the selected operation.
        let _ = ready.recv(&done);
        Received::Cancelled(cause_of(ctx))
    }
}

/// Why [`send`] did not send: the message is given back.
///
/// # Examples
///
/// ```
/// use tether::blocking::{send, SendError};
///
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// drop(rx);
/// let ctx = tether::Context::new();
/// assert_eq!(send(&ctx, &tx, 7), Err(SendError::Disconnected(7)));
/// ```
#[derive(Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The context was cancelled first, with this cause; the message was not sent.
    #[error("send cancelled: {1}")]
    Cancelled(T, Cause),
    /// Every receiver is gone; the message was not sent.
    #[error("sending on a disconnected channel")]
    Disconnected(T),
}

impl<T> SendError<T> {
    /// The message that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::blocking::SendError::Disconnected("job").into_inner(), "job");
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendError::Cancelled(msg, _) | SendError::Disconnected(msg) => msg,
        }
    }

    /// True for [`SendError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::blocking::SendError::Cancelled((), tether::Cause::Cancelled).is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, SendError::Cancelled(..))
    }
}

impl<T> std::fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Cancelled(_, cause) => f.debug_tuple("Cancelled").field(&"..").field(cause).finish(),
            SendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

/// Sends `msg` on `tx`, waiting for room in a bounded channel, or returns early when `ctx` is
/// cancelled. Cancellation is checked first: a cancelled context wins over room in the channel.
///
/// # Errors
///
/// [`SendError::Cancelled`] or [`SendError::Disconnected`], with the message, which was not sent.
///
/// # Examples
///
/// ```
/// let (tx, rx) = crossbeam_channel::bounded(0);
/// tether::scope(|s| {
///     let producer = s.spawn(|ctx| tether::blocking::send(ctx, &tx, 1));
///     assert_eq!(rx.recv(), Ok(1));
///     assert_eq!(producer.join().unwrap(), Ok(()));
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn send<T, C: Canceller + ?Sized>(ctx: &C, tx: &Sender<T>, msg: T) -> Result<(), SendError<T>> {
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    if ctx.is_cancelled() {
        return Err(SendError::Cancelled(msg, cause_of(ctx)));
    }
    let done = ctx.done();
    let mut select = Select::new();
    let room = select.send(tx);
    select.recv(&done);
    let ready = select.select();
    if ready.index() == room {
        ready.send(tx, msg).map_err(|crossbeam_channel::SendError(msg)| SendError::Disconnected(msg))
    } else {
        // `done` only ever disconnects: this completes the selected operation.
        let _ = ready.recv(&done);
        Err(SendError::Cancelled(msg, cause_of(ctx)))
    }
}
