//! Wake-up latency: the time from `cancel()` on one thread to a thread blocked on the
//! cancellation running again, as p50 and p99 over many samples (criterion reports means, and a
//! latency's tail is the point).
//!
//! - `tether/wait`: the waiter is blocked in `Canceller::wait()`.
//! - `tether/select_done`: the waiter is blocked in a `crossbeam_channel::select!` on `done()` and
//!   on a channel that never becomes ready.
//! - `crossbeam/select_disconnect`: the same `select!` on a plain crossbeam channel whose only
//!   sender is dropped: the floor of a wake-up through a crossbeam channel, which `done()` is.
//! - `tokio_util/block_on_cancelled`: a current-thread tokio runtime blocked on
//!   `CancellationToken::cancelled()`, tokio-util's nearest equivalent of a blocking wait.
//! - `std/park`: `thread::park` / `unpark` on a flag: the operating system's floor.
//! - `blocking/...`: a thread blocked in one of `tether::blocking`'s helpers (a crossbeam or
//!   std-style channel, a condition variable, a held mutex, a park, a socket read, accept or
//!   datagram receive, a child process), woken by the cancellation of its context. The process
//!   row takes a tenth of the samples (each spawns a process) and includes the kill and reaping.
//!
//! Each sample uses a fresh context; the waiter is a long-lived thread that signals it is about
//! to block, and the canceller sleeps a millisecond before cancelling so the waiter is asleep in
//! the kernel, not spinning.
//!
//! ```text
//! cargo run --release --example wakeup_latency                    # 2,000 samples a mode
//! cargo run --release --example wakeup_latency -- 500 --json      # fewer, as JSON (compare.sh)
//! ```

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use tether::{Canceller, Context};
use tokio_util::sync::CancellationToken;

/// How long the canceller waits after the waiter says it is about to block.
const SETTLE: Duration = Duration::from_millis(1);

/// Runs `samples` rounds. `blocked` runs on the waiter thread with each round's item and returns
/// once woken; `wake` runs on this thread. Returns the latencies in nanoseconds, sorted.
fn measure<T: Clone + Send + 'static>(
    samples: usize,
    make: impl Fn() -> T,
    wake: impl Fn(&T),
    blocked: impl Fn(T) + Send + 'static,
) -> Vec<u64> {
    let (work_tx, work_rx): (Sender<T>, Receiver<T>) = bounded(0);
    let (ready_tx, ready_rx) = bounded::<()>(0);
    let (woke_tx, woke_rx) = bounded::<Instant>(0);
    let waiter = thread::spawn(move || {
        for item in work_rx {
            ready_tx.send(()).unwrap();
            blocked(item);
            woke_tx.send(Instant::now()).unwrap();
        }
    });
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let item = make();
        work_tx.send(item.clone()).unwrap();
        ready_rx.recv().unwrap();
        thread::sleep(SETTLE);
        let start = Instant::now();
        wake(&item);
        let woke = woke_rx.recv().unwrap();
        latencies.push(woke.saturating_duration_since(start).as_nanos() as u64);
    }
    drop(work_tx);
    waiter.join().unwrap();
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let samples: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2_000);

    let (_never_tx, never_rx) = unbounded::<()>();
    let runs: Vec<(&str, Vec<u64>)> = vec![
        ("tether/wait", measure(samples, Context::new, Context::cancel, |ctx| drop(ctx.wait()))),
        (
            "tether/select_done",
            measure(samples, Context::new, Context::cancel, {
                let never_rx = never_rx.clone();
                move |ctx| {
                    let done = ctx.done();
                    select! {
                        recv(done) -> _ => {}
                        recv(never_rx) -> _ => unreachable!("the other channel never becomes ready"),
                    }
                }
            }),
        ),
        (
            // The same `select!`, on a plain crossbeam channel whose only sender is dropped: the
            // floor of a wake-up through a crossbeam channel, which `done()` is.
            "crossbeam/select_disconnect",
            measure(
                samples,
                || {
                    let (tx, rx) = bounded::<()>(0);
                    (Arc::new(std::sync::Mutex::new(Some(tx))), rx)
                },
                |(tx, _)| drop(tx.lock().unwrap().take()),
                move |(_, rx)| {
                    select! {
                        recv(rx) -> _ => {}
                        recv(never_rx) -> _ => unreachable!("the other channel never becomes ready"),
                    }
                },
            ),
        ),
        (
            "tokio_util/block_on_cancelled",
            measure(samples, CancellationToken::new, CancellationToken::cancel, {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                move |token| runtime.block_on(token.cancelled())
            }),
        ),
        (
            "std/park",
            measure(
                samples,
                || {
                    (
                        Arc::new(AtomicBool::new(false)),
                        Arc::new(std::sync::Mutex::new(None::<thread::Thread>)),
                    )
                },
                |(flag, waiter)| {
                    flag.store(true, Ordering::Release);
                    // The waiter registers itself after saying it is ready; on a loaded machine
                    // that can take longer than SETTLE.
                    loop {
                        if let Some(thread) = waiter.lock().unwrap().as_ref() {
                            break thread.unpark();
                        }
                        thread::yield_now();
                    }
                },
                |(flag, waiter)| {
                    *waiter.lock().unwrap() = Some(thread::current());
                    while !flag.load(Ordering::Acquire) {
                        thread::park();
                    }
                },
            ),
        ),
    ];
    let runs: Vec<(&str, Vec<u64>)> = runs.into_iter().chain(helper_runs(samples)).collect();

    if json {
        let fields: Vec<String> = runs
            .iter()
            .map(|(name, l)| {
                format!(
                    "\"{name}\": {{\"p50\": {}, \"p99\": {}, \"samples\": {}}}",
                    percentile(l, 50.0),
                    percentile(l, 99.0),
                    l.len()
                )
            })
            .collect();
        println!("{{{}}}", fields.join(", "));
    } else {
        println!("wake-up latency, cancel() to the blocked thread running ({samples} samples each)");
        println!("{:<32} {:>10} {:>10} {:>10}", "mode", "p50 µs", "p99 µs", "max µs");
        for (name, l) in &runs {
            let us = |ns: u64| ns as f64 / 1000.0;
            println!(
                "{name:<32} {:>10.1} {:>10.1} {:>10.1}",
                us(percentile(l, 50.0)),
                us(percentile(l, 99.0)),
                us(*l.last().unwrap())
            );
        }
    }
}

/// The rows of `tether::blocking`'s helpers: each blocked call is woken by `Context::cancel`.
fn helper_runs(samples: usize) -> Vec<(&'static str, Vec<u64>)> {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::sync::{Condvar, Mutex};
    use tether::blocking;

    /// Measures a helper: `resource` makes what one round blocks on, `blocked` blocks in the
    /// helper until the round's context is cancelled.
    fn helper<R: Send + Sync + 'static>(
        samples: usize,
        resource: impl Fn() -> R,
        blocked: impl Fn(&Context, &R) + Send + 'static,
    ) -> Vec<u64> {
        measure(
            samples,
            || (Context::new(), Arc::new(resource())),
            |(ctx, _)| ctx.cancel(),
            move |(ctx, resource)| blocked(&ctx, &resource),
        )
    }

    let (_never_tx, never_rx) = unbounded::<()>();
    let never_rx = Arc::new(never_rx);
    let (_std_tx, std_rx) = blocking::mpsc::channel::<()>();
    let std_rx = Arc::new(Mutex::new(std_rx));
    let (full_tx, _full_rx) = blocking::mpsc::sync_channel::<()>(0);
    // A mutex held by another thread for the whole measurement.
    let held = Arc::new(Mutex::new(()));
    let (release_tx, release_rx) = bounded::<()>(0);
    let (locked_tx, locked_rx) = bounded::<()>(0);
    let holder = {
        let held = held.clone();
        thread::spawn(move || {
            let _guard = held.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
    };
    locked_rx.recv().unwrap();

    let runs = vec![
        (
            "blocking/recv (crossbeam)",
            helper(samples, || (), move |ctx, ()| assert!(blocking::recv(ctx, &never_rx).is_err())),
        ),
        (
            "blocking/mpsc::recv",
            helper(
                samples,
                || (),
                move |ctx, ()| assert!(blocking::mpsc::recv(ctx, &std_rx.lock().unwrap()).is_err()),
            ),
        ),
        (
            "blocking/mpsc::send (full)",
            helper(samples, || (), move |ctx, ()| assert!(blocking::mpsc::send(ctx, &full_tx, ()).is_err())),
        ),
        (
            "blocking/sync::wait_while",
            helper(
                samples,
                || (Mutex::new(()), Condvar::new()),
                |ctx, (mutex, condvar)| {
                    let guard = mutex.lock().unwrap();
                    assert!(blocking::sync::wait_while(ctx, mutex, condvar, guard, |()| true).is_err());
                },
            ),
        ),
        ("blocking/sync::lock (held)", {
            let held = held.clone();
            helper(samples, || (), move |ctx, ()| assert!(blocking::sync::lock(ctx, &held).is_err()))
        }),
        ("blocking/park", helper(samples, || (), |ctx, ()| while blocking::park(ctx).is_ok() {})),
        (
            "blocking/net::read (tcp)",
            helper(
                samples,
                || {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                    (client, listener.accept().unwrap().0)
                },
                |ctx, (client, _server)| assert!(blocking::net::read(ctx, client, &mut [0; 16]).is_err()),
            ),
        ),
        #[cfg(target_os = "linux")]
        (
            "blocking/net::accept (tcp)",
            helper(
                samples,
                || TcpListener::bind("127.0.0.1:0").unwrap(),
                |ctx, listener| assert!(blocking::net::accept(ctx, listener).is_err()),
            ),
        ),
        #[cfg(target_os = "linux")]
        (
            "blocking/net::recv_from (udp)",
            helper(
                samples,
                || UdpSocket::bind("127.0.0.1:0").unwrap(),
                |ctx, socket| assert!(blocking::net::recv_from(ctx, socket, &mut [0; 16]).is_err()),
            ),
        ),
        #[cfg(unix)]
        (
            "blocking/process::wait (kill)",
            helper(
                (samples / 10).max(1),
                || Mutex::new(std::process::Command::new("sleep").arg("3600").spawn().unwrap()),
                |ctx, child| {
                    let kill = blocking::process::OnCancel::Kill;
                    assert!(blocking::process::wait(ctx, &mut child.lock().unwrap(), kill).is_err());
                },
            ),
        ),
    ];
    drop(release_tx);
    holder.join().unwrap();
    runs
}
