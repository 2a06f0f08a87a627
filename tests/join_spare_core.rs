//! `tether::join` called on a thread that is not a pool worker, when the pool has fewer workers
//! than the machine has cores: the calling thread takes part. It runs the first half itself, offers
//! the second to the workers, runs it too if none took it, and otherwise waits for it while running
//! other join halves.
//!
//! This binary's pool has one worker (each test configures it first), so on a machine with two
//! cores or more every join below takes that path. On a single core the join is sent whole to the
//! worker, and the tests that need the spare core say so and return.
//!
//! Miri runs this binary with two CPUs (`.ci/miri`): it reaches the erased lifetime of the half
//! sent to the pool, its claim, and the helping wait.

use crossbeam_channel::bounded;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tether::{Canceller, Cause};

/// One pool worker, and whether the machine has a core besides: the condition for the path under
/// test. The configuration fails once the pool has started; every test asks for the same.
fn one_worker_and_a_spare_core() -> bool {
    let _ = tether::pool::configure(1);
    assert_eq!(tether::pool::threads(), 1, "this binary's pool has one worker");
    let spare = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !spare {
        eprintln!("a single core: a join from outside the pool is sent whole to the worker; not run");
    }
    spare
}

/// Fails the test if `f` does not return within a minute, instead of hanging CI.
fn watchdog<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let (done, finished) = bounded::<()>(0);
    let name = name.to_owned();
    let dog = std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            finished.recv_timeout(Duration::from_secs(60))
        {
            eprintln!("watchdog: {name} did not finish within a minute");
            std::process::abort();
        }
    });
    let r = f();
    drop(done);
    dog.join().unwrap();
    r
}

fn fib(n: u64) -> u64 {
    if n < 10 {
        return if n < 2 { n } else { fib(n - 1) + fib(n - 2) };
    }
    let (a, b) = tether::join(|_| fib(n - 1), |_| fib(n - 2));
    a + b
}

#[test]
fn the_calling_thread_runs_the_first_half() {
    if !one_worker_and_a_spare_core() {
        return;
    }
    let here = std::thread::current().id();
    let (a, b) = tether::join(|_| std::thread::current().id(), |_| 2);
    assert_eq!(a, here, "the first half ran on the calling thread");
    assert_eq!(b, 2);
    assert_eq!(fib(if cfg!(miri) { 12 } else { 25 }), if cfg!(miri) { 144 } else { 75_025 });
}

#[test]
fn the_worker_takes_the_second_half_while_the_first_runs_here() {
    if !one_worker_and_a_spare_core() {
        return;
    }
    // `a` waits until `b` has started: only the worker can run `b` meanwhile, so the two halves
    // run at once, on both cores.
    let (started, b_started) = bounded::<()>(1);
    let here = std::thread::current().id();
    let (a, b) = watchdog("a waiting for b on the worker", || {
        tether::join(
            |_| b_started.recv().is_ok(),
            move |_| {
                started.send(()).unwrap();
                std::thread::current().id()
            },
        )
    });
    assert!(a);
    assert_ne!(b, here, "the worker ran the second half");
}

#[test]
fn waiting_for_the_workers_half_runs_the_join_halves_it_offers() {
    if !one_worker_and_a_spare_core() {
        return;
    }
    // The worker takes `b` (`a` waits for that), and `b` joins `b1` and `b2`: `b1`, on the worker,
    // waits until `b2` has run. The worker cannot run `b2` meanwhile, so only this thread can: it
    // does while it waits for `b`.
    let (started, b_started) = bounded::<()>(1);
    let (b2_ran, b2_has_run) = bounded::<std::thread::ThreadId>(1);
    let here = std::thread::current().id();
    watchdog("this thread running a half of the worker's join", || {
        tether::join(
            |_| b_started.recv().unwrap(),
            move |_| {
                started.send(()).unwrap();
                tether::join(
                    |_| assert_eq!(b2_has_run.recv().unwrap(), here, "b2 ran on the waiting thread"),
                    move |_| b2_ran.send(std::thread::current().id()).unwrap(),
                )
            },
        )
    });
}

#[test]
fn a_failing_first_half_skips_an_untaken_second_half_or_cancels_a_taken_one() {
    if !one_worker_and_a_spare_core() {
        return;
    }
    let (ran, saw_the_panic) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let r = catch_unwind(AssertUnwindSafe(|| {
        tether::join(
            |_| -> () { panic!("a fails") },
            |ctx| {
                ran.fetch_add(1, SeqCst);
                // If the worker took `b` before `a` panicked, `b` sees the join cancelled.
                ctx.wait();
                if matches!(ctx.cause(), Some(Cause::Panicked(_))) {
                    saw_the_panic.fetch_add(1, SeqCst);
                }
            },
        )
    }));
    assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "a fails");
    let ran = ran.load(SeqCst);
    assert!(ran <= 1, "b ran at most once");
    assert_eq!(saw_the_panic.load(SeqCst), ran, "a b that ran was cancelled by a's panic");
}

#[test]
fn try_join_returns_the_first_failure_through_this_path() {
    if !one_worker_and_a_spare_core() {
        return;
    }
    #[derive(Debug, thiserror::Error)]
    #[error("shard {0}")]
    struct Shard(u32);
    let err = tether::try_join(
        |_| Err::<(), _>(Shard(1)),
        |ctx| {
            ctx.wait();
            Err::<(), _>(Shard(2))
        },
    )
    .unwrap_err();
    assert_eq!(err.downcast_ref::<Shard>().unwrap().0, 1, "the first failure comes first");
    assert_eq!(tether::try_join(|_| Ok::<_, Shard>(1), |_| Ok(2)).unwrap(), (1, 2));
}
