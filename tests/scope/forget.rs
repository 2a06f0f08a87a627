//! No child outlives its scope, even when its handle is forgotten (the forget-safety std proves
//! for its own scoped threads).

use crate::shared;
use crossbeam_channel::bounded;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use tether::Canceller;

#[test]
fn a_forgotten_handle_does_not_let_its_child_outlive_the_scope() {
    let _shared = shared();
    let borrowed = vec![1_u64, 2, 3];
    let finished = AtomicBool::new(false);
    let (started_tx, started) = bounded(0);
    tether::scope(|s| {
        let handle = s.spawn(|ctx| {
            started_tx.send(()).unwrap();
            ctx.wait(); // runs until the scope's exit cancels it
            let sum: u64 = borrowed.iter().sum(); // still borrowing the caller's stack
            finished.store(sum == 6, SeqCst);
        });
        mem::forget(handle);
        started.recv().unwrap();
    })
    .unwrap();
    assert!(finished.load(SeqCst), "the child ran to its end before scope returned");
    drop(borrowed);
}

#[test]
fn forgotten_handles_of_many_children_are_all_joined_even_under_wait_all() {
    let _shared = shared();
    let done = AtomicUsize::new(0);
    let data = [7_u8; 16];
    tether::scope(|s| {
        for i in 0..16 {
            let (done, data) = (&done, &data);
            mem::forget(s.spawn(move |_| {
                assert_eq!(data[i], 7);
                done.fetch_add(1, SeqCst);
            }));
        }
        s.wait_all();
        assert_eq!(done.load(SeqCst), 16, "wait_all waits for children whose handles were forgotten");
    })
    .unwrap();
}

#[test]
fn a_forgotten_handle_of_a_panicking_child_still_has_its_panic_reraised() {
    let _shared = shared();
    let payload = std::panic::catch_unwind(|| {
        tether::scope(|s| mem::forget(s.spawn(|_| std::panic::panic_any(41_u32)))).unwrap();
    })
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&41));
}

#[test]
fn many_forgotten_handles_of_children_borrowing_the_stack_are_all_waited_for() {
    let _shared = shared();
    const CHILDREN: usize = 64;
    let mut slots = [0_u64; CHILDREN];
    let table: Vec<u64> = (0..CHILDREN as u64).collect();
    let (started_tx, started) = bounded(CHILDREN);
    tether::scope(|s| {
        for (i, slot) in slots.iter_mut().enumerate() {
            let (table, started_tx) = (&table, started_tx.clone());
            // Each child holds a mutable borrow of a stack slot and a shared one of `table`, and
            // is still running when the body returns: only the scope's own count waits for it.
            mem::forget(s.spawn(move |ctx| {
                started_tx.send(()).unwrap();
                ctx.wait();
                std::thread::yield_now();
                *slot = table[i] * 2;
            }));
        }
        for _ in 0..CHILDREN {
            started.recv().unwrap();
        }
    })
    .unwrap();
    // Every borrow has ended and every write happened before `scope` returned.
    assert!(slots.iter().enumerate().all(|(i, v)| *v == 2 * i as u64), "{slots:?}");
    drop(table);
}

/// A result that reads borrowed stack data when dropped.
struct Tally<'a>(&'a AtomicUsize);

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn results_borrowing_the_stack_are_dropped_before_the_scope_returns_unless_forgotten() {
    let _shared = shared();
    let dropped = AtomicUsize::new(0);
    tether::scope(|s| {
        for i in 0..16 {
            let handle = s.spawn(|_| Tally(&dropped));
            if i % 2 == 0 {
                drop(handle); // the result is dropped by the child, or by this drop if later
            } else {
                mem::forget(handle); // the result is leaked with the handle, never dropped
            }
        }
    })
    .unwrap();
    assert_eq!(dropped.load(SeqCst), 8, "exactly the dropped handles' results, all before the return");
}
