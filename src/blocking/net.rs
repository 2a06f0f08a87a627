//! Sockets: reads, writes, accepts and datagram receives that a cancellation wakes, by shutting
//! the socket down.
//!
//! A thread blocked in a socket call is woken by nothing but the socket: changing its timeout
//! does not wake a call already blocked (Go's `SetReadDeadline` does, std's `set_read_timeout`
//! does not). A shutdown does, at once. So each helper arms a shutdown on the context
//! (`blocking/armed.rs`) for the length of the call, then removes it.
//!
//! # What a cancellation leaves
//! - A **stream** (`TcpStream`, `UnixStream`) is shut down both ways: every later read returns 0
//!   and every write fails. Drop it. The peer sees the end of the stream.
//! - A **listener** (Linux and Android) stops listening: the blocked `accept` fails, so do later
//!   ones, and new connections are refused. Connections already queued are closed when it drops.
//!   Bind a new one to serve again.
//! - A **UDP socket** (Linux and Android) has its reading side shut down: later receives return
//!   at once with nothing; sending still works.
//!
//! What was ready is not lost: cancellation is checked before the call, so a cancelled context
//! leaves a ready byte, connection or datagram where it was; and a call that got data, a
//! connection or a datagram before the shutdown took effect returns it (`Ok`), even if the
//! context was cancelled meanwhile; the next call then reports the cancellation.
//!
//! A cancelled call fails with an [`io::Error`] whose kind is [`io::ErrorKind::TimedOut`] for a
//! deadline and [`io::ErrorKind::Other`] otherwise, and whose inner error is an [`IoCancelled`]
//! holding the cause: [`cause_of`] gets it back.
//!
//! `connect` is not here: std creates the socket inside `TcpStream::connect` and gives nothing to
//! shut down until the handshake is over. Bound a connect by the context's deadline with
//! `TcpStream::connect_timeout(addr, ctx.deadline()...)` instead.

use super::armed::Armed;
use crate::cancel::{Canceller, Cause};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// The error inside the [`io::Error`] of a cancelled socket call: the cause.
///
/// # Examples
///
/// ```
/// use std::io;
/// use tether::blocking::net::{cause_of, IoCancelled};
///
/// let err = io::Error::other(IoCancelled(tether::Cause::ScopeExited));
/// assert_eq!(cause_of(&err), Some(&tether::Cause::ScopeExited));
/// assert_eq!(cause_of(&io::Error::other("unrelated")), None);
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("I/O cancelled: {0}")]
pub struct IoCancelled(#[source] pub Cause);

/// The tether cause of an I/O error returned by a cancelled call of this module, if it is one.
pub fn cause_of(err: &io::Error) -> Option<&Cause> {
    err.get_ref()?.downcast_ref::<IoCancelled>().map(|cancelled| &cancelled.0)
}

/// The error a cancelled call returns.
fn cancelled(cause: Cause) -> io::Error {
    let kind = if cause == Cause::DeadlineExceeded { io::ErrorKind::TimedOut } else { io::ErrorKind::Other };
    io::Error::new(kind, IoCancelled(cause))
}

/// A stream socket that a shutdown wakes: [`TcpStream`], `UnixStream` (Unix), and references to
/// them. Sealed.
pub trait Stream: ops::StreamOps {}

mod ops {
    use std::io;

    /// What the helpers need of a stream; private, so that [`super::Stream`] is sealed.
    pub trait StreamOps: Sync {
        fn read_once(&self, buf: &mut [u8]) -> io::Result<usize>;
        fn write_once(&self, buf: &[u8]) -> io::Result<usize>;
        fn shut_down(&self);
    }
}

impl ops::StreamOps for TcpStream {
    fn read_once(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn write_once(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn shut_down(&self) {
        // Fails only if the socket is already closed by the peer: nothing is blocked on it then.
        let _ = self.shutdown(Shutdown::Both);
    }
}
impl Stream for TcpStream {}

#[cfg(unix)]
impl ops::StreamOps for std::os::unix::net::UnixStream {
    fn read_once(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn write_once(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn shut_down(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}
#[cfg(unix)]
impl Stream for std::os::unix::net::UnixStream {}

impl<S: Stream> ops::StreamOps for &S {
    fn read_once(&self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_once(buf)
    }
    fn write_once(&self, buf: &[u8]) -> io::Result<usize> {
        (**self).write_once(buf)
    }
    fn shut_down(&self) {
        (**self).shut_down();
    }
}
impl<S: Stream> Stream for &S {}

/// Runs `call` with a shutdown of the socket armed on `ctx`. `got` tells a result that carries
/// something (data, a connection) from one that does not: the first is returned even if the
/// cancellation came meanwhile (nothing is lost), the second becomes the cancellation's error.
fn guarded<C, T>(
    ctx: &C,
    shut_down: impl FnOnce() + Send,
    call: impl FnOnce() -> io::Result<T>,
    got: impl FnOnce(&T) -> bool,
) -> io::Result<T>
where
    C: Canceller + ?Sized,
{
    if ctx.is_cancelled() {
        return Err(cancelled(super::cause_of(ctx)));
    }
    let mut armed = Armed::arm(ctx, shut_down).map_err(cancelled)?;
    let result = call();
    if !armed.disarm() {
        return result;
    }
    match result {
        Ok(value) if got(&value) => Ok(value),
        _ => Err(cancelled(super::cause_of(ctx))),
    }
}

/// Reads from `stream` into `buf`, as [`Read::read`], or returns early when `ctx` is cancelled
/// (the stream is then shut down: module docs).
///
/// # Errors
///
/// A cancelled read fails with the cause inside ([`cause_of`]); otherwise as `read`.
///
/// # Examples
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use tether::blocking::net;
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (_server, _) = listener.accept().unwrap(); // connected, and it never writes
/// tether::scope(|s| {
///     let reader = s.spawn(|ctx| net::read(ctx, &client, &mut [0; 16]));
///     s.cancel(); // the read is woken by a shutdown
///     let err = reader.join().unwrap().unwrap_err();
///     assert_eq!(net::cause_of(&err), Some(&tether::Cause::Cancelled));
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn read<C, S>(ctx: &C, stream: &S, buf: &mut [u8]) -> io::Result<usize>
where
    C: Canceller + ?Sized,
    S: Stream,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    let empty = buf.is_empty();
    guarded(ctx, || stream.shut_down(), || stream.read_once(buf), |&n| n > 0 || empty)
}

/// Writes `buf` to `stream`, as [`Write::write`], or returns early when `ctx` is cancelled (the
/// stream is then shut down: module docs).
///
/// # Errors
///
/// A cancelled write fails with the cause inside ([`cause_of`]); otherwise as `write`.
///
/// # Examples
///
/// ```
/// use std::io::Read;
/// use std::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (mut server, _) = listener.accept().unwrap();
/// let ctx = tether::Context::new();
/// assert_eq!(tether::blocking::net::write(&ctx, &client, b"hi").unwrap(), 2);
/// let mut got = [0; 2];
/// server.read_exact(&mut got).unwrap();
/// assert_eq!(&got, b"hi");
/// ```
#[track_caller]
pub fn write<C, S>(ctx: &C, stream: &S, buf: &[u8]) -> io::Result<usize>
where
    C: Canceller + ?Sized,
    S: Stream,
{
    let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
    let empty = buf.is_empty();
    guarded(ctx, || stream.shut_down(), || stream.write_once(buf), |&n| n > 0 || empty)
}

/// A stream whose every `read` and `write` is cancellable under one context: [`read`] and
/// [`write()`] behind [`Read`] and [`Write`], so `read_exact`, `write_all`, `BufReader` and
/// `io::copy` stop when the context is cancelled.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::{TcpListener, TcpStream};
/// use tether::blocking::net::Cancellable;
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (server, _) = listener.accept().unwrap();
/// client.write_all(b"first line\n").unwrap();
/// let (first_tx, first_rx) = crossbeam_channel::bounded(1);
/// tether::scope(|s| {
///     let reader = s.spawn(|ctx| {
///         let mut lines = BufReader::new(Cancellable::new(ctx, &server)).lines();
///         first_tx.send(lines.next().unwrap().unwrap()).unwrap();
///         lines.next().unwrap().is_err() // nothing more comes: cancelled
///     });
///     assert_eq!(first_rx.recv().unwrap(), "first line");
///     s.cancel();
///     assert!(reader.join().unwrap());
/// })
/// .unwrap();
/// ```
pub struct Cancellable<'c, C: ?Sized, S> {
    ctx: &'c C,
    stream: S,
}

impl<'c, C: Canceller + ?Sized, S: Stream> Cancellable<'c, C, S> {
    /// Wraps `stream` (a stream or a reference to one) so that its calls watch `ctx`.
    pub fn new(ctx: &'c C, stream: S) -> Self {
        Cancellable { ctx, stream }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<C: ?Sized, S: std::fmt::Debug> std::fmt::Debug for Cancellable<'_, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellable").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl<C: Canceller + ?Sized, S: Stream> Read for Cancellable<'_, C, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.ctx, &self.stream, buf)
    }
}

impl<C: Canceller + ?Sized, S: Stream> Write for Cancellable<'_, C, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(self.ctx, &self.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Stream sockets have no user-space buffer: a flush never blocks.
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use listening::{accept, accept_unix, recv_from};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod listening {
    use super::guarded;
    use crate::cancel::Canceller;
    use std::io;
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::{self as unix, UnixListener, UnixStream};

    /// Shuts down the reading side of the socket `fd`: on Linux this wakes a blocked `accept` on a
    /// listener and a blocked receive on a UDP socket (std has no `shutdown` for either).
    fn shut_down_reading(fd: RawFd) {
        unsafe extern "C" {
            // POSIX `int shutdown(int socket, int how)`, from the C library std links.
            fn shutdown(fd: std::os::raw::c_int, how: std::os::raw::c_int) -> std::os::raw::c_int;
        }
        /// `SHUT_RD` on Linux (and every Unix).
        const SHUT_RD: std::os::raw::c_int = 0;
        // SAFETY: `shutdown` reads no memory of ours. `fd` is the descriptor of a socket that the
        // call which armed this action borrows until it disarms it, and the action never runs
        // after that (armed invariant 2): so `fd` is open and still that socket (I/O safety).
        // An error (`ENOTCONN` for UDP) is expected and harmless: the wake-up happens anyway.
        let _ = unsafe { shutdown(fd, SHUT_RD) };
    }

    /// Accepts a connection, as [`TcpListener::accept`], or returns early when `ctx` is cancelled
    /// (the listener then stops listening: module docs). Linux and Android.
    ///
    /// # Errors
    ///
    /// A cancelled accept fails with the cause inside ([`super::cause_of`]); otherwise as
    /// `accept`.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// tether::scope(|s| {
    ///     let server = s.spawn(|ctx| tether::blocking::net::accept(ctx, &listener));
    ///     s.cancel(); // nobody connects: the accept is woken
    ///     assert!(server.join().unwrap().is_err());
    /// })
    /// .unwrap();
    /// ```
    #[track_caller]
    pub fn accept<C: Canceller + ?Sized>(
        ctx: &C,
        listener: &TcpListener,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        let fd = listener.as_raw_fd();
        guarded(ctx, move || shut_down_reading(fd), || listener.accept(), |_| true)
    }

    /// [`accept`] for a [`UnixListener`].
    ///
    /// # Errors
    ///
    /// As [`accept`].
    #[track_caller]
    pub fn accept_unix<C: Canceller + ?Sized>(
        ctx: &C,
        listener: &UnixListener,
    ) -> io::Result<(UnixStream, unix::SocketAddr)> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        let fd = listener.as_raw_fd();
        guarded(ctx, move || shut_down_reading(fd), || listener.accept(), |_| true)
    }

    /// Receives a datagram, as [`UdpSocket::recv_from`], or returns early when `ctx` is cancelled
    /// (the socket's reading side is then shut down: module docs). An empty datagram that
    /// arrives as the context is cancelled cannot be told from the shutdown, and is reported as
    /// the cancellation.
    ///
    /// # Errors
    ///
    /// A cancelled receive fails with the cause inside ([`super::cause_of`]); otherwise as
    /// `recv_from`.
    ///
    /// # Examples
    ///
    /// ```
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// tether::scope(|s| {
    ///     let receiver = s.spawn(|ctx| tether::blocking::net::recv_from(ctx, &socket, &mut [0; 64]));
    ///     s.cancel();
    ///     assert!(receiver.join().unwrap().is_err());
    /// })
    /// .unwrap();
    /// ```
    #[track_caller]
    pub fn recv_from<C: Canceller + ?Sized>(
        ctx: &C,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        let _blocked = crate::dump::BlockingSite::enter(std::panic::Location::caller());
        let fd = socket.as_raw_fd();
        guarded(ctx, move || shut_down_reading(fd), || socket.recv_from(buf), |&(n, _)| n > 0)
    }
}
