//! A concurrency limit: `spawn` waits for a slot and stops waiting on cancellation; `try_spawn`
//! refuses when full and hands the closure back.

use crate::shared;
use crossbeam_channel::bounded;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tether::{Canceller, Cause, ScopeBuilder};

#[test]
fn no_more_children_than_the_limit_run_at_once() {
    let _shared = shared();
    const LIMIT: usize = 3;
    let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    ScopeBuilder::new()
        .limit(LIMIT)
        .run(|s| {
            for _ in 0..24 {
                s.spawn(|_| {
                    peak.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                    std::thread::yield_now();
                    running.fetch_sub(1, SeqCst);
                });
            }
            s.wait_all();
        })
        .unwrap();
    assert!((1..=LIMIT).contains(&peak.load(SeqCst)));
}

#[test]
fn spawn_waits_for_a_slot_to_be_given_back() {
    let _shared = shared();
    let log = Mutex::new(Vec::new());
    let (release_tx, release) = bounded::<()>(0);
    ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            std::thread::scope(|helper| {
                helper.spawn(move || release_tx.send(()).unwrap());
                s.spawn(|_| {
                    release.recv().unwrap();
                    log.lock().unwrap().push("first done");
                });
                s.spawn(|_| log.lock().unwrap().push("second started")); // waits for the slot
            });
            s.wait_all();
        })
        .unwrap();
    assert_eq!(log.into_inner().unwrap(), ["first done", "second started"]);
}

#[test]
fn try_spawn_refuses_when_full_and_hands_the_closure_back() {
    let _shared = shared();
    ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            let busy = s.spawn(|ctx| ctx.wait());
            let refused = s.try_spawn(|_| "closure came back").unwrap_err();
            assert_eq!(refused.to_string(), "scope is at its concurrency limit");
            let closure = refused.into_inner();
            busy.context().cancel();
            busy.join().unwrap();
            s.wait_all(); // the slot is given back as the child finishes
            let h = s.try_spawn(closure).expect("the slot is free again");
            assert_eq!(h.join().unwrap(), "closure came back");
        })
        .unwrap();
}

#[test]
fn try_spawn_without_a_limit_always_spawns() {
    let _shared = shared();
    tether::scope(|s| {
        let handles: Vec<_> = (0..8).map(|i| s.try_spawn(move |_| i).unwrap()).collect();
        assert_eq!(handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>(), 28);
    })
    .unwrap();
}

#[test]
fn a_spawn_waiting_for_a_slot_stops_waiting_when_the_scope_is_cancelled_and_the_child_starts_cancelled() {
    let _shared = shared();
    ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            let holder = s.spawn(|ctx| ctx.wait()); // holds the only slot until cancelled
            let scope_ctx = s.context().clone();
            let (waiting_tx, waiting) = bounded::<()>(0);
            std::thread::scope(|helper| {
                helper.spawn(move || {
                    waiting.recv().unwrap();
                    scope_ctx.cancel_with(Cause::custom(std::fmt::Error));
                });
                waiting_tx.send(()).unwrap();
                let late = s.spawn(|ctx| ctx.cause()); // blocks until the cancellation
                let cause = late.join().unwrap().expect("started already cancelled");
                assert!(cause.downcast_ref::<std::fmt::Error>().is_some());
            });
            assert!(holder.join().unwrap().downcast_ref::<std::fmt::Error>().is_some());
        })
        .unwrap();
}

#[test]
#[should_panic(expected = "tether: a scope's concurrency limit must be at least 1")]
fn a_limit_of_zero_is_refused() {
    let _shared = shared();
    let _ = ScopeBuilder::new().limit(0);
}

#[test]
fn the_limit_applies_to_named_children_too() {
    let _shared = shared();
    ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            let a = s.builder().name("a").spawn(|ctx| ctx.wait()).unwrap();
            assert!(s.try_spawn(|_| ()).is_err());
            s.cancel();
            a.join().unwrap();
            assert!(s.context().is_cancelled());
        })
        .unwrap();
}
