//! Cancellable socket calls and child processes: each is woken by a scope's exit, a deadline and
//! a sibling's failure with the cause inside its error; what was ready (bytes, a connection, a
//! datagram, an exit status) is not lost; nothing stays registered.

#[path = "blocking/shared.rs"]
mod shared;

use shared::{cancelled, counts, registered, woken_three_ways};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use tether::blocking::net::{self, Cancellable};
use tether::{Cause, Context};

/// A connected pair of loopback TCP streams.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// The cause inside the error of a cancelled socket call.
fn io_cause(result: io::Result<impl std::fmt::Debug>) -> Cause {
    let err = result.expect_err("the call was cancelled");
    let cause = net::cause_of(&err).cloned().unwrap_or_else(|| panic!("not a cancellation: {err:?}"));
    let expected_kind =
        if cause == Cause::DeadlineExceeded { io::ErrorKind::TimedOut } else { io::ErrorKind::Other };
    assert_eq!(err.kind(), expected_kind);
    cause
}

#[test]
fn tcp_read_is_woken_three_ways() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        let (client, _server) = tcp_pair(); // the server never writes
        io_cause(net::read(ctx, &client, &mut [0; 64]))
    });
}

#[test]
fn tcp_write_to_a_peer_that_never_reads_is_woken_three_ways() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        let (client, _server) = tcp_pair();
        let chunk = vec![0_u8; 1 << 16];
        // Fill both socket buffers until a write blocks; the cancellation ends it.
        loop {
            if let Err(err) = net::write(ctx, &client, &chunk) {
                break io_cause(Err::<(), _>(err));
            }
        }
    });
}

#[cfg(unix)]
#[test]
fn unix_stream_read_is_woken_three_ways() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        io_cause(net::read(ctx, &a, &mut [0; 8]))
    });
}

#[test]
fn the_adapter_makes_every_call_on_a_stream_cancellable() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        let (client, mut server) = tcp_pair();
        server.write_all(b"abc").unwrap();
        let mut reader = Cancellable::new(ctx, &client);
        let mut got = [0; 3];
        if let Err(err) = reader.read_exact(&mut got) {
            return io_cause(Err::<(), _>(err)); // the deadline came first: cancellation wins
        }
        assert_eq!(&got, b"abc", "what arrived is read");
        io_cause(reader.read_exact(&mut [0; 1]))
    });
}

#[test]
fn ready_bytes_lose_to_the_cancellation_and_stay_readable() {
    let _counts = counts();
    let (mut client, mut server) = tcp_pair();
    server.write_all(b"kept").unwrap();
    let ctx = cancelled();
    assert_eq!(io_cause(net::read(&ctx, &client, &mut [0; 4])), Cause::ScopeExited);
    let mut got = [0; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"kept", "the socket was not touched");
    assert_eq!(io_cause(net::write(&ctx, &client, b"x")), Cause::ScopeExited);
}

#[test]
fn an_uncancelled_stream_works_as_std_and_stays_usable() {
    let _counts = counts();
    let before = registered();
    let (client, mut server) = tcp_pair();
    let ctx = Context::new();
    let mut both = Cancellable::new(&ctx, &client);
    both.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    server.read_exact(&mut got).unwrap();
    server.write_all(b"pong").unwrap();
    both.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    drop(server);
    assert_eq!(both.read(&mut got).unwrap(), 0, "end of stream is not a cancellation");
    assert_eq!(registered(), before);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod listening {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn tcp_accept_is_woken_three_ways() {
        let _counts = counts();
        woken_three_ways(true, |ctx| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            io_cause(net::accept(ctx, &listener))
        });
    }

    #[test]
    fn unix_accept_is_woken_three_ways() {
        let _counts = counts();
        let dir = std::env::temp_dir().join(format!("tether-accept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let round = std::sync::atomic::AtomicUsize::new(0);
        woken_three_ways(true, |ctx| {
            let path = dir.join(round.fetch_add(1, std::sync::atomic::Ordering::SeqCst).to_string());
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            io_cause(net::accept_unix(ctx, &listener))
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn udp_recv_from_is_woken_three_ways() {
        let _counts = counts();
        woken_three_ways(true, |ctx| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            io_cause(net::recv_from(ctx, &socket, &mut [0; 64]))
        });
    }

    #[test]
    fn a_waiting_connection_loses_to_the_cancellation_and_stays_in_the_backlog() {
        let _counts = counts();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(io_cause(net::accept(&cancelled(), &listener)), Cause::ScopeExited);
        let (_server, peer) = listener.accept().expect("the connection is still there");
        assert_eq!(peer, client.local_addr().unwrap());
    }

    #[test]
    fn a_ready_datagram_loses_to_the_cancellation_and_stays_queued() {
        let _counts = counts();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"kept", socket.local_addr().unwrap()).unwrap();
        assert_eq!(io_cause(net::recv_from(&cancelled(), &socket, &mut [0; 8])), Cause::ScopeExited);
        let mut buf = [0; 8];
        let ctx = Context::new();
        let (n, from) = net::recv_from(&ctx, &socket, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"kept"[..], sender.local_addr().unwrap()));
    }

    #[test]
    fn an_accept_that_gets_a_connection_returns_it() {
        let _counts = counts();
        let before = registered();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ctx = Context::new();
        let addr = listener.local_addr().unwrap();
        let connector = std::thread::spawn(move || TcpStream::connect(addr).unwrap());
        let (_server, peer) = net::accept(&ctx, &listener).unwrap();
        assert_eq!(peer, connector.join().unwrap().local_addr().unwrap());
        assert_eq!(registered(), before);
    }
}

#[cfg(unix)]
mod process {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    use tether::blocking::process::{ChildWaitError, OnCancel, wait};

    fn sh(script: &str) -> std::process::Child {
        Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().unwrap()
    }

    /// Starts `script`, which prints a line once its signal handling is set up, and waits for
    /// that line: a signal sent earlier would meet the default disposition.
    fn sh_ready(script: &str) -> std::process::Child {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0; 6];
        child.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
        assert_eq!(&line, b"ready\n");
        child
    }

    fn cancelled_with_status(
        result: Result<std::process::ExitStatus, ChildWaitError>,
    ) -> (Cause, Option<std::process::ExitStatus>) {
        match result {
            Err(ChildWaitError::Cancelled { cause, status }) => (cause, status),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waiting_for_a_child_is_woken_three_ways_and_the_child_is_killed() {
        let _counts = counts();
        woken_three_ways(true, |ctx| {
            let mut child = sh("exec sleep 3600");
            let (cause, status) = cancelled_with_status(wait(ctx, &mut child, OnCancel::Kill));
            assert_eq!(status.and_then(|s| s.signal()), Some(9), "killed and reaped");
            cause
        });
    }

    #[test]
    fn a_child_that_exits_on_the_signal_gives_its_own_status() {
        let _counts = counts();
        woken_three_ways(true, |ctx| {
            // Exits with 3 on SIGTERM.
            let mut child = sh_ready("trap 'exit 3' TERM; echo ready; while :; do sleep 0.01; done");
            let policy = OnCancel::Signal { signal: 15, grace: Duration::from_secs(30) };
            let (cause, status) = cancelled_with_status(wait(ctx, &mut child, policy));
            assert_eq!(status.and_then(|s| s.code()), Some(3), "it exited by itself within the grace");
            cause
        });
    }

    #[test]
    fn a_child_that_ignores_the_signal_is_killed_after_the_grace() {
        let _counts = counts();
        let mut child = sh_ready("trap '' TERM; echo ready; exec sleep 3600");
        let ctx = Context::new();
        let before = registered();
        let ctx = &ctx;
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                wait(ctx, &mut child, OnCancel::Signal { signal: 15, grace: Duration::from_millis(50) })
            });
            shared::wait_armed(before);
            ctx.cancel();
            let (cause, status) = cancelled_with_status(waiter.join().unwrap());
            assert_eq!(cause, Cause::Cancelled);
            assert_eq!(status.and_then(|s| s.signal()), Some(9));
        });
    }

    #[test]
    fn an_exit_status_that_was_ready_is_not_lost() {
        let _counts = counts();
        let mut child = sh("exit 4");
        let ctx = Context::new();
        assert_eq!(wait(&ctx, &mut child, OnCancel::Kill).unwrap().code(), Some(4));
        let mut child = sh("exit 5");
        // Cancelled first: the policy runs on a child that may have exited; its status is kept.
        let (cause, status) = cancelled_with_status(wait(&cancelled(), &mut child, OnCancel::Kill));
        assert_eq!(cause, Cause::ScopeExited);
        let status = status.expect("reaped");
        assert!(status.code() == Some(5) || status.signal() == Some(9), "{status:?}");
        let mut child = sh("exec sleep 3600");
        let (_, status) = cancelled_with_status(wait(&cancelled(), &mut child, OnCancel::Leave));
        assert_eq!(status, None, "left running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
