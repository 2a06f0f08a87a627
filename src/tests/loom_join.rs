//! Models of a `join`'s stolen half (`pool/stack_job.rs`): the thief runs the real `StackJob`
//! through its `StackRef` and sets the real latch while the owner waits on it, announcing its
//! sleep and parking. The park is modelled without a timeout (`crate::loom::park_backstop`), so a lost
//! wake-up is a deadlock loom reports; the owner frees the job as soon as it sees the latch set,
//! so a thief that touched the job after setting it would use freed memory.

use super::model;
use crate::loom::park_backstop;
use crate::pool::{Owner, StackJob};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::time::Duration;

/// Waits as `pool::wait_join` does once it has nothing to help with: announce, park, recheck.
fn wait_parked<F: FnOnce() -> u32 + Send>(job: &StackJob<F, u32>) {
    while !job.latch.probe() {
        if job.latch.announce_sleep() {
            park_backstop(Duration::from_millis(1));
            job.latch.end_sleep();
        }
    }
}

#[test]
fn a_stolen_half_wakes_its_parked_owner_and_its_result_is_seen() {
    model(|| {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let job = Box::new(StackJob::new(
            move || {
                r.fetch_add(1, SeqCst);
                42u32
            },
            Owner::Thread(thread::current()),
        ));
        let stolen = job.stack_ref();
        let thief = thread::spawn(move || stolen.execute());
        wait_parked(&job);
        // Freed at once, as the owner's frame returns: the thief must be done with it.
        let result = job.into_result();
        assert_eq!(result.ok(), Some(42));
        assert_eq!(ran.load(SeqCst), 1);
        thief.join().unwrap();
    });
}

#[test]
fn a_half_taken_back_by_its_owner_never_runs_elsewhere() {
    // The owner's pop and a thief's steal both want the half: the deque gives it to one of
    // them (modelled by an atomic claim, as `crossbeam_deque` does with its own); the owner
    // then runs it inline or waits for the thief.
    model(|| {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let job =
            Box::new(StackJob::new(move || r.fetch_add(1, SeqCst) as u32, Owner::Thread(thread::current())));
        let taken = Arc::new(AtomicUsize::new(0));
        let (stolen, t) = (job.stack_ref(), taken.clone());
        let thief = thread::spawn(move || {
            if t.compare_exchange(0, 1, SeqCst, SeqCst).is_ok() {
                stolen.execute();
            }
        });
        let result = if taken.compare_exchange(0, 2, SeqCst, SeqCst).is_ok() {
            job.run_inline()
        } else {
            wait_parked(&job);
            job.into_result()
        };
        assert_eq!(result.ok(), Some(0), "it ran once, here or there");
        thief.join().unwrap();
        assert_eq!(ran.load(SeqCst), 1);
    });
}
