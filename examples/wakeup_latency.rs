//! Wake-up latency: the time from `cancel()` on one thread to a thread blocked on the
//! cancellation running again, as p50 and p99 over many samples (criterion reports means, and a
//! latency's tail is the point).
//!
//! - `tether/wait`: the waiter is blocked in `Canceller::wait()`.
//! - `tether/select_done`: the waiter is blocked in a `crossbeam_channel::select!` on `done()` and
//!   on a channel that never becomes ready.
//! - `tokio_util/block_on_cancelled`: a current-thread tokio runtime blocked on
//!   `CancellationToken::cancelled()`, tokio-util's nearest equivalent of a blocking wait.
//! - `std/park`: `thread::park` / `unpark` on a flag: the operating system's floor.
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
            measure(samples, Context::new, Context::cancel, move |ctx| {
                let done = ctx.done();
                select! {
                    recv(done) -> _ => {}
                    recv(never_rx) -> _ => unreachable!("the other channel never becomes ready"),
                }
            }),
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
