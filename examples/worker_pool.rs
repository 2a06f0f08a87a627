//! A worker pool with a concurrency limit: errgroup's `SetLimit` and `TryGo` become
//! `ScopeBuilder::limit`, `Scope::spawn` (which waits for a free slot) and `Scope::try_spawn`
//! (which refuses when every slot is taken and hands the job back).
//!
//! 1. Back-pressure: twelve jobs, at most three at a time. `spawn` blocks the producer while the
//!    pool is full.
//! 2. Load shedding: requests arrive faster than two workers can serve them. `try_spawn` refuses
//!    when the pool is full, and the refused job comes back (`into_inner`) to run on the caller's
//!    thread, which also slows the producer down (Java's `CallerRunsPolicy`).
//! 3. A deadline over the pool: when it passes, the running jobs are cancelled, and the spawns
//!    still waiting for a slot stop waiting. Their jobs start at once, already cancelled, and
//!    return.
//!
//! Run with `cargo run --release --example worker_pool`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tether::{Cause, Context, ScopeBuilder, blocking};

/// How long one job takes.
const JOB: Duration = Duration::from_millis(40);

/// Counts the jobs running right now, and the most that ever ran at once.
#[derive(Default)]
struct Gauge {
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// One job: "works" for `JOB` unless its context is cancelled first.
fn work(ctx: &Context, gauge: &Gauge) -> Result<(), Cause> {
    let now = gauge.running.fetch_add(1, SeqCst) + 1;
    gauge.peak.fetch_max(now, SeqCst);
    let result = blocking::sleep(ctx, JOB);
    gauge.running.fetch_sub(1, SeqCst);
    result
}

fn back_pressure() {
    let gauge = &Gauge::default();
    let start = Instant::now();
    let done = ScopeBuilder::new()
        .limit(3)
        .run(|s| {
            // Each `spawn` waits for a free slot: this loop runs at the pool's pace.
            let jobs: Vec<_> = (0..12).map(|_| s.spawn(move |ctx| work(ctx, gauge))).collect();
            jobs.into_iter().map(|job| job.join().expect("jobs do not panic")).filter(Result::is_ok).count()
        })
        .expect("no job fails");
    println!(
        "1. back-pressure: {done} of 12 jobs done in {} ms, at most {} at once (limit 3)",
        start.elapsed().as_millis(),
        gauge.peak.load(SeqCst)
    );
}

fn load_shedding() {
    let gauge = &Gauge::default();
    let (mut pooled, mut on_caller) = (0, 0);
    ScopeBuilder::new()
        .limit(2)
        .run(|s| {
            for request in 0..10 {
                match s.try_spawn(move |ctx| work(ctx, gauge)) {
                    Ok(_handle) => pooled += 1, // dropping the handle is fine: the scope joins it
                    Err(full) => {
                        println!("   request {request}: the pool is full; it runs on the caller's thread");
                        let job = full.into_inner();
                        job(s.context()).expect("the pool is not cancelled");
                        on_caller += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10)); // a new request every 10 ms
            }
            s.wait_all(); // let the pooled jobs finish instead of cancelling them at the exit
        })
        .expect("no job fails");
    println!(
        "2. load shedding: {pooled} requests ran in the pool, {on_caller} on the caller's thread; \
         at most {} ran at once: the pool's 2 (its limit) plus the caller",
        gauge.peak.load(SeqCst)
    );
}

fn deadline() {
    let gauge = &Gauge::default();
    let start = Instant::now();
    let (done, cancelled) = ScopeBuilder::new()
        .limit(2)
        .timeout(Duration::from_millis(100))
        .run(|s| {
            let jobs: Vec<_> = (0..10).map(|_| s.spawn(move |ctx| work(ctx, gauge))).collect();
            let results: Vec<_> =
                jobs.into_iter().map(|job| job.join().expect("jobs do not panic")).collect();
            let done = results.iter().filter(|r| r.is_ok()).count();
            (done, results.len() - done)
        })
        .expect("no job fails");
    println!(
        "3. deadline: {done} jobs done and {cancelled} cancelled (context deadline exceeded) in {} ms",
        start.elapsed().as_millis()
    );
}

fn main() {
    back_pressure();
    load_shedding();
    deadline();
}
