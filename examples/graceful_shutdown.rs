//! Graceful shutdown on SIGINT or SIGTERM. The signal cancels the server's context with a cause
//! that names it and its sender. Workers stop taking new jobs and finish the job they hold, and
//! the scope joins every thread before `main` returns. This is Go's `signal.NotifyContext(ctx,
//! os.Interrupt, syscall.SIGTERM)`, plus a typed cause and threads that cannot outlive `main`'s
//! scope.
//!
//! Run with `cargo run --release --features signal --example graceful_shutdown`: after a moment
//! the program sends itself SIGTERM, so it ends by itself. Run it with `-- --wait` to wait for a
//! real signal instead: press Ctrl-C, or run `kill -TERM <pid>` from another terminal.
//!
//! Signals come from `tether::signal` (feature `signal`): `notify` returns a guard whose context
//! the first signal cancels, with a `Signal` cause; a second Ctrl-C exits at once with status
//! 130; dropping the guard at the end of `main` gives the signals their default disposition back.
//!
//! The job queue is a bounded `std::sync::mpsc`-style channel from `tether::blocking::mpsc`: the
//! workers wait in `mpsc::recv` and the producer in `mpsc::send` when the queue is full, and the
//! shutdown wakes both, wherever they wait.

use signal_hook::low_level::raise;
use std::time::{Duration, Instant};
use tether::blocking::{self, RecvError, mpsc};
use tether::signal::{self, SIGINT, SIGTERM, Signal};
use tether::{Canceller, Context, ScopeBuilder};

const WORKERS: usize = 3;
/// A new job arrives this often.
const ARRIVAL: Duration = Duration::from_millis(30);
/// How long a job takes.
const JOB: Duration = Duration::from_millis(80);
/// The longest a job may run. Shutdown does not cut a job short: this bound does.
const JOB_TIMEOUT: Duration = Duration::from_secs(2);
/// Without `--wait`, the program raises SIGTERM after this long.
const SELF_SIGNAL_AFTER: Duration = Duration::from_millis(400);

/// A worker takes jobs until the server shuts down, and finishes the job it holds.
fn worker(ctx: &Context, id: usize, jobs: &mpsc::Receiver<u32>) -> usize {
    let mut done = 0;
    loop {
        // Wait for a job, or for the shutdown, whichever comes first.
        let job = match mpsc::recv(ctx, jobs) {
            Ok(job) => job,
            Err(RecvError::Cancelled(cause)) => {
                println!("  worker-{id}: takes no more jobs ({cause})");
                return done;
            }
            Err(err) => panic!("the job queue outlives the workers: {err}"),
        };
        // The job in hand runs to completion: its context is detached from the shutdown (Go's
        // `WithoutCancel`) and gets a timeout of its own.
        let job_ctx = ctx.detached().with_timeout(JOB_TIMEOUT);
        match blocking::sleep(&job_ctx, JOB) {
            Ok(()) if ctx.is_cancelled() => println!("  worker-{id}: finished job {job} during the shutdown"),
            Ok(()) => {}
            Err(cause) => println!("  worker-{id}: abandoned job {job}: {cause}"),
        }
        done += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wait_for_signal = std::env::args().any(|arg| arg == "--wait");
    let start = Instant::now();

    // Listen before starting any work, so that no signal is missed.
    let shutdown = signal::notify(&Context::new(), &[SIGINT, SIGTERM])?;
    let server = shutdown.context().clone();
    println!("server (pid {}) started {WORKERS} workers", std::process::id());
    if wait_for_signal {
        println!("waiting for Ctrl-C or `kill -TERM {}`", std::process::id());
    }

    // A queue of at most one job per worker: a producer that outpaces them waits for room.
    let (tx, jobs) = mpsc::sync_channel(WORKERS);
    let (queued, done) = ScopeBuilder::new().parent(&server).run(|s| {
        let _announce = server.on_cancel(move |cause| {
            println!("{:>4} ms: {cause}: shutting down", start.elapsed().as_millis());
        });

        // Without `--wait`, send ourselves SIGTERM after a moment, unless the server stopped first.
        if !wait_for_signal {
            s.spawn(|ctx| {
                if blocking::sleep(ctx, SELF_SIGNAL_AFTER).is_ok() {
                    raise(SIGTERM).expect("raise(SIGTERM)");
                }
            });
        }

        let jobs = &jobs;
        let workers: Vec<_> = (0..WORKERS)
            .map(|id| s.builder().name(format!("worker-{id}")).spawn(move |ctx| worker(ctx, id, jobs)))
            .collect::<Result<_, _>>()?;

        // The body hands out jobs until the shutdown, which also ends a wait for room.
        let mut next = 0;
        while blocking::sleep(s.context(), ARRIVAL).is_ok() {
            match mpsc::send(s.context(), &tx, next) {
                Ok(()) => next += 1,
                Err(err) => {
                    let why = err.to_string();
                    println!("  producer: job {} not queued ({why})", err.into_inner());
                }
            }
        }
        let done: usize = workers.into_iter().map(|w| w.join().expect("workers do not panic")).sum();
        Ok::<_, std::io::Error>((jobs.try_iter().count(), done))
    })??;

    // Every thread of the scope has been joined: nothing runs past this line.
    let cause = server.cause().expect("the server was cancelled");
    println!(
        "{:>4} ms: shutdown complete: {done} jobs done, {queued} left in the queue",
        start.elapsed().as_millis()
    );
    println!("cause: {cause}");
    if let Some(signal) = cause.downcast_ref::<Signal>() {
        println!("(a real server would now exit with status {})", 128 + signal.number());
    }
    drop(shutdown); // stop listening: a signal from now on has its default effect
    Ok(())
}
