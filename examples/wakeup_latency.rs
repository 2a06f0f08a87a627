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
//! Each sample uses a fresh context; each mode's waiter is a long-lived thread that signals it is
//! about to block, and the canceller sleeps a millisecond before cancelling so the waiter is asleep
//! in the kernel, not spinning. The modes are measured in rounds, one sample of each mode per
//! round, so that every mode sees the same stretch of the machine's life: on a shared machine a
//! mode measured alone for its own few seconds can land in a quiet or a busy stretch, which moves
//! its ratio to the floor by tens of percent from one run to the next.
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

/// One mode being measured: its waiter thread, and how to take one sample.
struct Meter {
    name: &'static str,
    /// Takes one sample: the latency in nanoseconds. Owns the sender that keeps the waiter
    /// running.
    sample: Box<dyn FnMut() -> u64>,
    waiter: thread::JoinHandle<()>,
    /// The mode takes a sample in one round out of `stride`.
    stride: usize,
    latencies: Vec<u64>,
}

/// A mode: `make` makes each sample's item, `blocked` runs on the waiter thread with it and
/// returns once woken, `wake` runs on the measuring thread.
fn meter<T: Clone + Send + 'static>(
    name: &'static str,
    make: impl Fn() -> T + 'static,
    wake: impl Fn(&T) + 'static,
    blocked: impl Fn(T) + Send + 'static,
) -> Meter {
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
    let sample = move || {
        let item = make();
        work_tx.send(item.clone()).unwrap();
        ready_rx.recv().unwrap();
        thread::sleep(SETTLE);
        let start = Instant::now();
        wake(&item);
        let woke = woke_rx.recv().unwrap();
        woke.saturating_duration_since(start).as_nanos() as u64
    };
    Meter { name, sample: Box::new(sample), waiter, stride: 1, latencies: Vec::new() }
}

impl Meter {
    /// The same mode, sampled in one round out of `stride`.
    fn every(self, stride: usize) -> Meter {
        Meter { stride, ..self }
    }
}

/// Runs `rounds` rounds, one sample of each meter per round (of those whose stride says so), and
/// returns each mode's latencies in nanoseconds, sorted.
fn measure(rounds: usize, meters: Vec<Meter>) -> Vec<(&'static str, Vec<u64>)> {
    let mut meters = meters;
    for round in 0..rounds {
        for meter in meters.iter_mut().filter(|m| round % m.stride == 0) {
            let latency = (meter.sample)();
            meter.latencies.push(latency);
        }
    }
    meters
        .into_iter()
        .map(|Meter { name, sample, waiter, mut latencies, .. }| {
            drop(sample); // drops the work sender: the waiter's loop ends
            waiter.join().unwrap();
            latencies.sort_unstable();
            (name, latencies)
        })
        .collect()
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
    let mut meters = vec![
        meter("tether/wait", Context::new, Context::cancel, |ctx| drop(ctx.wait())),
        meter("tether/select_done", Context::new, Context::cancel, {
            let never_rx = never_rx.clone();
            move |ctx| {
                let done = ctx.done();
                select! {
                    recv(done) -> _ => {}
                    recv(never_rx) -> _ => unreachable!("the other channel never becomes ready"),
                }
            }
        }),
        // The same `select!`, on a plain crossbeam channel whose only sender is dropped: the
        // floor of a wake-up through a crossbeam channel, which `done()` is.
        meter(
            "crossbeam/select_disconnect",
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
        meter("tokio_util/block_on_cancelled", CancellationToken::new, CancellationToken::cancel, {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            move |token| runtime.block_on(token.cancelled())
        }),
        meter(
            "std/park",
            || (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(None::<thread::Thread>))),
            |(flag, waiter)| {
                flag.store(true, Ordering::Release);
                // The waiter registers itself after saying it is ready; on a loaded machine that
                // can take longer than SETTLE.
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
    ];
    let (helpers, kept) = helper_meters();
    meters.extend(helpers);
    let runs = measure(samples, meters);
    drop(kept);

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

/// What the helpers' rows block on, kept until this is dropped (after the measurement): the
/// channel ends that keep their channels open, and the thread holding the locked mutex.
struct Kept {
    channel_ends: Vec<Box<dyn std::any::Any>>,
    release_tx: Option<Sender<()>>,
    holder: Option<thread::JoinHandle<()>>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.channel_ends.clear();
        drop(self.release_tx.take());
        if let Some(holder) = self.holder.take() {
            holder.join().unwrap();
        }
    }
}

/// The rows of `tether::blocking`'s helpers: each blocked call is woken by `Context::cancel`.
/// Returns them with what they block on, which stays open, or locked, until it is dropped.
fn helper_meters() -> (Vec<Meter>, Kept) {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::sync::{Condvar, Mutex};
    use tether::blocking;

    /// Measures a helper: `resource` makes what one round blocks on, `blocked` blocks in the
    /// helper until the round's context is cancelled.
    fn helper<R: Send + Sync + 'static>(
        name: &'static str,
        resource: impl Fn() -> R + 'static,
        blocked: impl Fn(&Context, &R) + Send + 'static,
    ) -> Meter {
        meter(
            name,
            move || (Context::new(), Arc::new(resource())),
            |(ctx, _)| ctx.cancel(),
            move |(ctx, resource)| blocked(&ctx, &resource),
        )
    }

    let (never_tx, never_rx) = unbounded::<()>();
    let never_rx = Arc::new(never_rx);
    let (std_tx, std_rx) = blocking::mpsc::channel::<()>();
    let std_rx = Arc::new(Mutex::new(std_rx));
    let (full_tx, full_rx) = blocking::mpsc::sync_channel::<()>(0);
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

    let meters = vec![
        helper(
            "blocking/recv (crossbeam)",
            || (),
            move |ctx, ()| assert!(blocking::recv(ctx, &never_rx).is_err()),
        ),
        helper(
            "blocking/mpsc::recv",
            || (),
            move |ctx, ()| assert!(blocking::mpsc::recv(ctx, &std_rx.lock().unwrap()).is_err()),
        ),
        helper(
            "blocking/mpsc::send (full)",
            || (),
            move |ctx, ()| assert!(blocking::mpsc::send(ctx, &full_tx, ()).is_err()),
        ),
        helper(
            "blocking/sync::wait_while",
            || (Mutex::new(()), Condvar::new()),
            |ctx, (mutex, condvar)| {
                let guard = mutex.lock().unwrap();
                assert!(blocking::sync::wait_while(ctx, mutex, condvar, guard, |()| true).is_err());
            },
        ),
        helper("blocking/sync::lock (held)", || (), {
            let held = held.clone();
            move |ctx, ()| assert!(blocking::sync::lock(ctx, &held).is_err())
        }),
        helper("blocking/park", || (), |ctx, ()| while blocking::park(ctx).is_ok() {}),
        helper(
            "blocking/net::read (tcp)",
            || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                (client, listener.accept().unwrap().0)
            },
            |ctx, (client, _server)| assert!(blocking::net::read(ctx, client, &mut [0; 16]).is_err()),
        ),
        #[cfg(target_os = "linux")]
        helper(
            "blocking/net::accept (tcp)",
            || TcpListener::bind("127.0.0.1:0").unwrap(),
            |ctx, listener| assert!(blocking::net::accept(ctx, listener).is_err()),
        ),
        #[cfg(target_os = "linux")]
        helper(
            "blocking/net::recv_from (udp)",
            || UdpSocket::bind("127.0.0.1:0").unwrap(),
            |ctx, socket| assert!(blocking::net::recv_from(ctx, socket, &mut [0; 16]).is_err()),
        ),
        #[cfg(unix)]
        helper(
            "blocking/process::wait (kill)",
            || Mutex::new(std::process::Command::new("sleep").arg("3600").spawn().unwrap()),
            |ctx, child| {
                let kill = blocking::process::OnCancel::Kill;
                assert!(blocking::process::wait(ctx, &mut child.lock().unwrap(), kill).is_err());
            },
        )
        .every(10),
    ];
    let channel_ends: Vec<Box<dyn std::any::Any>> =
        vec![Box::new(never_tx), Box::new(std_tx), Box::new(full_rx)];
    (meters, Kept { channel_ends, release_tx: Some(release_tx), holder: Some(holder) })
}
