//! Stress: many threads deriving, cancelling and dropping nodes at once; a cancel storm on a parent
//! with 100,000 children; a deadline storm of 100,000 timers. Each ends with zero live counts, and
//! a watchdog aborts the process with a message (instead of hanging CI) if one deadlocks.

use crossbeam_channel::{Sender, bounded};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tether::testing::assert_no_leaks;
use tether::{CancelError, Canceller, Cause, Context};

/// Every test here holds it: the live counts are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a stress test may take before the watchdog declares a deadlock.
const WATCHDOG: Duration = Duration::from_secs(60);
const STORM: usize = 100_000;
const THREADS: usize = 4;
const ITERATIONS: usize = 20_000;

/// Aborts the process with a message if not dropped within `limit`: a deadlocked test fails
/// instead of hanging CI (a panic on the watchdog thread would not stop the stuck test).
#[must_use]
struct Watchdog(#[allow(dead_code)] Sender<()>);

fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let (tx, rx) = bounded::<()>(0);
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {name} still running after {limit:?}: deadlock? aborting");
            std::process::abort();
        }
    });
    Watchdog(tx)
}

/// A small deterministic generator (xorshift), one per thread.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn threads_deriving_cancelling_and_dropping_nodes_concurrently_leak_nothing() {
    let _serial = serial();
    let _dog = watchdog("derive/cancel/drop", WATCHDOG);
    assert_no_leaks(|| {
        let root = Context::new();
        // Shared middle nodes that every thread derives from, cancels and replaces.
        let shared: Arc<Mutex<Vec<Context>>> = Arc::new(Mutex::new((0..8).map(|_| root.child()).collect()));
        let start = Barrier::new(THREADS);
        let callbacks_ran = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|t| {
            for seed in 0..THREADS as u64 {
                let (root, shared, start, callbacks_ran) = (&root, &shared, &start, &callbacks_ran);
                t.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                    let mut mine: Vec<Context> = Vec::new();
                    start.wait();
                    for _ in 0..ITERATIONS {
                        match rng.below(8) {
                            0..=2 => {
                                let i = rng.below(8);
                                let parent = shared.lock().unwrap()[i].clone();
                                mine.push(match rng.below(3) {
                                    0 => parent.child(),
                                    1 => parent.with_timeout(Duration::from_secs(3600)),
                                    _ => parent.with_timeout(Duration::from_micros(rng.below(500) as u64)),
                                });
                            }
                            3 if !mine.is_empty() => {
                                let i = rng.below(mine.len());
                                mine.push(mine[i].child());
                            }
                            4 if !mine.is_empty() => {
                                let i = rng.below(mine.len());
                                mine[i].cancel_with(Cause::Cancelled);
                            }
                            5 if !mine.is_empty() => {
                                let i = rng.below(mine.len());
                                mine.swap_remove(i);
                            }
                            6 => {
                                // Cancel a shared node, and replace it with a fresh one.
                                let i = rng.below(8);
                                let old = std::mem::replace(&mut shared.lock().unwrap()[i], root.child());
                                old.cancel();
                            }
                            _ if !mine.is_empty() => {
                                let i = rng.below(mine.len());
                                let ran = callbacks_ran.clone();
                                let h = mine[i].on_cancel(move |_| {
                                    ran.fetch_add(1, SeqCst);
                                });
                                if rng.below(2) == 0 {
                                    let _ = h.stop();
                                }
                            }
                            _ => {}
                        }
                        if mine.len() > 256 {
                            mine.drain(..128);
                        }
                    }
                });
            }
        });
        root.cancel();
        drop(shared);
    });
}

#[test]
fn a_cancel_storm_on_a_parent_with_100_000_children_reaches_every_child() {
    let _serial = serial();
    let _dog = watchdog("cancel storm", WATCHDOG);
    assert_no_leaks(|| {
        let parent = Context::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut stopped_early = 0;
        let mut handles = Vec::new();
        let children: Vec<Context> = (0..STORM)
            .map(|i| {
                let child = parent.child();
                if i % 10 == 0 {
                    let ran = ran.clone();
                    let h = child.on_cancel(move |cause| {
                        assert_eq!(*cause, Cause::Cancelled);
                        ran.fetch_add(1, SeqCst);
                    });
                    if i % 20 == 0 && h.stop() {
                        stopped_early += 1;
                    }
                    handles.push(h);
                }
                child
            })
            .collect();
        assert_eq!(parent.registered_children(), STORM);
        // Half the children are dropped by another thread while the parent is being cancelled.
        let (keep, dropped): (Vec<_>, Vec<_>) =
            children.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        std::thread::scope(|t| {
            t.spawn(move || drop(dropped));
            parent.cancel();
        });
        assert!(keep.iter().all(|(_, c)| c.cause() == Some(Cause::Cancelled)));
        // Every callback ran once or was stopped (the dropped children's ran or were discarded,
        // which `stop()` reports as prevented).
        let prevented = handles.iter().filter(|h| h.stop()).count();
        assert_eq!(ran.load(SeqCst) + stopped_early + prevented, STORM / 10);
        assert_eq!(stopped_early, STORM / 20);
    });
}

#[test]
fn a_deadline_storm_of_100_000_timers_fires_the_few_that_expire_and_leaks_none() {
    let _serial = serial();
    let _dog = watchdog("deadline storm", WATCHDOG);
    assert_no_leaks(|| {
        let root = Context::new();
        let start = Instant::now();
        // Every 100th expires within 20 ms; the rest are an hour away, and are cancelled (half)
        // or dropped (half) before they expire.
        let timers: Vec<Context> = (0..STORM)
            .map(|i| match i % 100 {
                0 => root.with_deadline(start + Duration::from_millis((i % 20) as u64)),
                _ => root.with_timeout(Duration::from_secs(3600)),
            })
            .collect();
        assert!(tether::live().timers >= STORM / 100);
        let (expiring, far): (Vec<_>, Vec<_>) =
            timers.into_iter().enumerate().partition(|(i, _)| i % 100 == 0);
        for (i, ctx) in far {
            if i % 2 == 0 {
                ctx.cancel();
            }
        }
        for (_, ctx) in &expiring {
            assert_eq!(ctx.wait_timeout(WATCHDOG), Some(Cause::DeadlineExceeded));
            assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
        }
        assert_eq!(expiring.len(), STORM / 100);
        assert!(!root.is_cancelled());
    });
}

#[test]
fn a_scope_with_a_thousand_blocked_children_cancels_and_joins_them_all() {
    let _serial = serial();
    let _dog = watchdog("scope storm", WATCHDOG);
    assert_no_leaks(|| {
        let woken = AtomicUsize::new(0);
        tether::scope(|s| {
            for _ in 0..1_000 {
                s.spawn(|ctx| {
                    assert_eq!(ctx.wait(), Cause::ScopeExited);
                    woken.fetch_add(1, SeqCst);
                });
            }
        })
        .unwrap();
        assert_eq!(woken.load(SeqCst), 1_000);
    });
}
