//! `std::sync::mpsc`, with receives and bounded sends that a cancellation wakes.
//!
//! A thread blocked in `std::sync::mpsc::Receiver::recv` can only be woken by a send or by the
//! last sender going away: std's receiver has no `select` and no way to be interrupted, and it
//! cannot hand out a sender. So a receiver that must be cancellable has to be made by a
//! constructor that can give the waiting call a second thing to wait on. This module is that
//! constructor: [`channel`] and [`sync_channel`] return senders and a receiver with std's
//! methods and std's own error types (`std::sync::mpsc::{SendError, RecvError, ...}`), so
//! porting is one line (`use tether::blocking::mpsc;` instead of `use std::sync::mpsc;`), plus
//! the cancellable [`recv`], [`recv_timeout`] and [`send`].
//!
//! Inside is a crossbeam channel, which is what std's `mpsc` has been built on since Rust 1.67:
//! the same ordering, the same rendezvous for a zero bound, the same disconnection rules. The
//! cancellable calls are the crossbeam helpers of [`crate::blocking`]: one `select` on the
//! channel and the context's [`done()`](crate::Canceller::done), with cancellation checked first,
//! so they wake as fast as those do. A message sent while a receive was being cancelled stays in
//! the channel; a bounded send that is cancelled gives its message back.

use super::{RecvError, RecvTimeoutError};
use crate::cancel::Canceller;
use crossbeam_channel as cb;
use std::fmt;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

/// Creates an unbounded channel, as [`std::sync::mpsc::channel`].
///
/// # Examples
///
/// ```
/// use tether::blocking::mpsc;
/// let (tx, rx) = mpsc::channel();
/// tx.send(1).unwrap();
/// assert_eq!(rx.recv(), Ok(1));
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = cb::unbounded();
    (Sender(tx), Receiver(rx))
}

/// Creates a channel that holds at most `bound` messages (0: every send waits for a receive),
/// as [`std::sync::mpsc::sync_channel`].
///
/// # Examples
///
/// ```
/// use tether::blocking::mpsc;
/// let (tx, rx) = mpsc::sync_channel(1);
/// tx.send(1).unwrap();
/// assert!(matches!(tx.try_send(2), Err(std::sync::mpsc::TrySendError::Full(2))));
/// assert_eq!(rx.recv(), Ok(1));
/// ```
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let (tx, rx) = cb::bounded(bound);
    (SyncSender(tx), Receiver(rx))
}

/// The sending half of [`channel`], as [`std::sync::mpsc::Sender`].
pub struct Sender<T>(cb::Sender<T>);

/// The sending half of [`sync_channel`], as [`std::sync::mpsc::SyncSender`].
pub struct SyncSender<T>(cb::Sender<T>);

/// The receiving half of [`channel`] and [`sync_channel`], as [`std::sync::mpsc::Receiver`].
pub struct Receiver<T>(cb::Receiver<T>);

impl<T> Sender<T> {
    /// Sends `msg`; never blocks, as [`std::sync::mpsc::Sender::send`].
    ///
    /// # Errors
    ///
    /// The message, if the receiver is gone.
    pub fn send(&self, msg: T) -> Result<(), std_mpsc::SendError<T>> {
        self.0.send(msg).map_err(|cb::SendError(msg)| std_mpsc::SendError(msg))
    }
}

impl<T> SyncSender<T> {
    /// Sends `msg`, waiting for room, as [`std::sync::mpsc::SyncSender::send`]. To be woken by a
    /// cancellation instead, use [`send`].
    ///
    /// # Errors
    ///
    /// The message, if the receiver is gone.
    #[track_caller]
    pub fn send(&self, msg: T) -> Result<(), std_mpsc::SendError<T>> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        self.0.send(msg).map_err(|cb::SendError(msg)| std_mpsc::SendError(msg))
    }

    /// Sends `msg` if there is room, as [`std::sync::mpsc::SyncSender::try_send`].
    ///
    /// # Errors
    ///
    /// `Full` or `Disconnected`, with the message.
    pub fn try_send(&self, msg: T) -> Result<(), std_mpsc::TrySendError<T>> {
        self.0.try_send(msg).map_err(|err| match err {
            cb::TrySendError::Full(msg) => std_mpsc::TrySendError::Full(msg),
            cb::TrySendError::Disconnected(msg) => std_mpsc::TrySendError::Disconnected(msg),
        })
    }
}

impl<T> Receiver<T> {
    /// Waits for a message, as [`std::sync::mpsc::Receiver::recv`]. To be woken by a
    /// cancellation instead, use [`recv`].
    ///
    /// # Errors
    ///
    /// If the channel is empty and every sender is gone.
    #[track_caller]
    pub fn recv(&self) -> Result<T, std_mpsc::RecvError> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        self.0.recv().map_err(|cb::RecvError| std_mpsc::RecvError)
    }

    /// Takes a message if one is ready, as [`std::sync::mpsc::Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// `Empty`, or `Disconnected` if the channel is empty and every sender is gone.
    pub fn try_recv(&self) -> Result<T, std_mpsc::TryRecvError> {
        self.0.try_recv().map_err(|err| match err {
            cb::TryRecvError::Empty => std_mpsc::TryRecvError::Empty,
            cb::TryRecvError::Disconnected => std_mpsc::TryRecvError::Disconnected,
        })
    }

    /// Waits for a message for at most `timeout`, as
    /// [`std::sync::mpsc::Receiver::recv_timeout`].
    ///
    /// # Errors
    ///
    /// `Timeout`, or `Disconnected` if the channel is empty and every sender is gone.
    #[track_caller]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, std_mpsc::RecvTimeoutError> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        self.0.recv_timeout(timeout).map_err(|err| match err {
            cb::RecvTimeoutError::Timeout => std_mpsc::RecvTimeoutError::Timeout,
            cb::RecvTimeoutError::Disconnected => std_mpsc::RecvTimeoutError::Disconnected,
        })
    }

    /// An iterator that waits for each message and ends when the channel is disconnected.
    pub fn iter(&self) -> cb::Iter<'_, T> {
        self.0.iter()
    }

    /// An iterator over the messages ready now.
    pub fn try_iter(&self) -> cb::TryIter<'_, T> {
        self.0.try_iter()
    }

    /// The crossbeam receiver inside, to use in [`crossbeam_channel::select!`] next to a context's
    /// [`done()`](crate::Canceller::done).
    pub fn as_crossbeam(&self) -> &cb::Receiver<T> {
        &self.0
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> Self {
        SyncSender(self.0.clone())
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = cb::Iter<'a, T>;
    fn into_iter(self) -> cb::Iter<'a, T> {
        self.0.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = cb::IntoIter<T>;
    fn into_iter(self) -> cb::IntoIter<T> {
        self.0.into_iter()
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender { .. }")
    }
}

impl<T> fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncSender { .. }")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

/// Receives a message, or returns early when `ctx` is cancelled: [`crate::blocking::recv`] for
/// this module's receiver.
///
/// # Errors
///
/// [`RecvError::Cancelled`] with the cause if `ctx` is cancelled first (also when a message is
/// ready: cancellation is checked first, and the message stays in the channel);
/// [`RecvError::Disconnected`] if the channel is empty and every sender is gone.
///
/// # Examples
///
/// ```
/// use tether::blocking::{mpsc, RecvError};
///
/// let (tx, rx) = mpsc::channel::<u32>();
/// tether::scope(|s| {
///     let consumer = s.spawn(|ctx| mpsc::recv(ctx, &rx));
///     s.cancel(); // nothing was sent: the consumer is woken by the cancellation
///     assert_eq!(consumer.join().unwrap(), Err(RecvError::Cancelled(tether::Cause::Cancelled)));
/// })
/// .unwrap();
/// drop(tx);
/// ```
#[track_caller]
pub fn recv<T, C: Canceller + ?Sized>(ctx: &C, rx: &Receiver<T>) -> Result<T, RecvError> {
    super::recv(ctx, &rx.0)
}

/// As [`recv`], giving up after `timeout`.
///
/// # Errors
///
/// As [`recv`], plus [`RecvTimeoutError::Timeout`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let (_tx, rx) = tether::blocking::mpsc::channel::<u32>();
/// let ctx = tether::Context::new();
/// assert!(tether::blocking::mpsc::recv_timeout(&ctx, &rx, Duration::ZERO).unwrap_err().is_timeout());
/// ```
#[track_caller]
pub fn recv_timeout<T, C: Canceller + ?Sized>(
    ctx: &C,
    rx: &Receiver<T>,
    timeout: Duration,
) -> Result<T, RecvTimeoutError> {
    super::recv_timeout(ctx, &rx.0, timeout)
}

/// Sends `msg` on a bounded channel, waiting for room, or returns early when `ctx` is cancelled:
/// [`crate::blocking::send`] for this module's [`SyncSender`].
///
/// # Errors
///
/// [`SendError::Cancelled`](crate::blocking::SendError::Cancelled) (cancellation is checked first)
/// or [`SendError::Disconnected`](crate::blocking::SendError::Disconnected),
/// each with the message, which was not sent.
///
/// # Examples
///
/// ```
/// use tether::blocking::{mpsc, SendError};
///
/// let (tx, rx) = mpsc::sync_channel(0); // every send waits for a receive
/// tether::scope(|s| {
///     let producer = s.spawn(|ctx| mpsc::send(ctx, &tx, "job"));
///     s.cancel();
///     match producer.join().unwrap() {
///         Err(SendError::Cancelled(msg, _)) => assert_eq!(msg, "job"), // given back
///         other => panic!("{other:?}"),
///     }
/// })
/// .unwrap();
/// drop(rx);
/// ```
#[track_caller]
pub fn send<T, C: Canceller + ?Sized>(
    ctx: &C,
    tx: &SyncSender<T>,
    msg: T,
) -> Result<(), super::SendError<T>> {
    super::send(ctx, &tx.0, msg)
}
