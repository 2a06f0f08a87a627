//! Waking a blocked socket read when a context is cancelled: Go's `ExampleAfterFunc_connection`,
//! with tether's helper, then line by line with the Go adapter.
//!
//! A blocking `read` on a socket cannot watch a context. Go's example registers an `AfterFunc`
//! that sets the read deadline to "now", which wakes the read, and stops it once the read is over.
//! In Rust, changing a socket's read timeout does not wake a read that is already blocked, but a
//! shutdown does.
//!
//! - `read_from_conn` is the whole idiom in one call: `tether::blocking::net::read` arms a
//!   shutdown of the socket on the context for the length of the read and removes it before it
//!   returns; a cancelled read fails with an `io::Error` that carries the cause
//!   (`blocking::net::cause_of`).
//! - `read_from_conn_go` is Go's example written against the Go adapter's `go::after_func`, line
//!   by line: the callback runs on a thread of its own, so the reader waits for it to finish.
//!
//! Run with `cargo run --release --example close_on_cancel`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tether::{Cause, Context, blocking, go};

/// Reads from `conn`, and gives up (shutting the connection down) when `ctx` is cancelled.
fn read_from_conn(ctx: &Context, conn: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let read = blocking::net::read(ctx, conn, buf);
    if let Err(err) = &read
        && let Some(cause) = blocking::net::cause_of(err)
    {
        println!("    the cancellation shut the connection down ({cause})");
    }
    read
}

/// The same function written against the Go adapter, as Go's example writes it.
fn read_from_conn_go(ctx: &go::Ctx, conn: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let closer = conn.try_clone()?;
    let (stopc_tx, stopc) = crossbeam_channel::bounded::<()>(0); // stopc := make(chan struct{})
    let stop = go::after_func(ctx, move || {
        let _ = closer.shutdown(Shutdown::Both); // conn.SetReadDeadline(time.Now())
        drop(stopc_tx); // close(stopc)
    });
    let n = (&*conn).read(buf);
    if !stop.stop() {
        // The AfterFunc was started: wait for it to complete.
        let _ = stopc.recv(); // <-stopc
        return Err(io::Error::other(ctx.err().expect("the AfterFunc ran, so ctx is done")));
    }
    n
}

/// Why a client gave up, as a typed cause.
#[derive(Debug, thiserror::Error)]
#[error("the user pressed cancel")]
struct UserCancelled;

/// Runs one exchange: a server thread that answers after `reply_after` (or never), and a client
/// that reads with `read`. The scope joins the server thread before returning.
fn exchange(title: &str, reply_after: Option<Duration>, read: impl FnOnce(&TcpStream) -> io::Result<usize>) {
    println!("{title}");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tether::scope(|s| {
        s.spawn(|_| {
            let (mut conn, _) = listener.accept().expect("the client connects");
            if let Some(delay) = reply_after {
                std::thread::sleep(delay);
                let _ = conn.write_all(b"hello");
            }
            // Hold the connection until the client closes it or shuts it down.
            let _ = conn.read(&mut [0; 16]);
        });
        let conn = TcpStream::connect(addr).expect("connect to the local server");
        let start = Instant::now();
        match read(&conn) {
            Ok(n) => println!(
                "    read {n} bytes after {} ms; the connection is still open",
                start.elapsed().as_millis()
            ),
            Err(err) => println!("    read failed after {} ms: {err}", start.elapsed().as_millis()),
        }
        // Dropping `conn` closes it, which ends the server thread's last read.
    })
    .expect("nothing in this scope fails");
    println!();
}

fn main() {
    let ms = Duration::from_millis;
    let mut buf = [0u8; 1024];

    println!("== native: blocking::net::read ==");
    exchange("the server answers before the deadline", Some(ms(10)), |conn| {
        let ctx = Context::new().with_timeout(ms(500));
        read_from_conn(&ctx, conn, &mut buf)
    });
    exchange("the server is silent: the deadline closes the connection", None, |conn| {
        let ctx = Context::new().with_timeout(ms(50));
        read_from_conn(&ctx, conn, &mut buf)
    });
    exchange("another thread cancels with a typed cause", None, |conn| {
        let ctx = Context::new();
        tether::scope(|s| {
            s.spawn(|_| {
                std::thread::sleep(ms(30));
                ctx.cancel_with(Cause::custom(UserCancelled));
            });
            read_from_conn(&ctx, conn, &mut buf)
        })
        .expect("the canceller does not fail")
    });

    println!("== Go adapter: go::after_func ==");
    exchange("Go's example: WithTimeout(Background(), 1ms)", None, |conn| {
        let (ctx, cancel) = go::with_timeout(&go::background(), ms(1));
        let result = read_from_conn_go(&ctx, conn, &mut buf);
        cancel.cancel(); // defer cancel()
        result
    });
    exchange("the server answers before the deadline", Some(ms(10)), |conn| {
        let (ctx, cancel) = go::with_timeout(&go::background(), ms(500));
        let result = read_from_conn_go(&ctx, conn, &mut buf);
        cancel.cancel();
        result
    });
}
