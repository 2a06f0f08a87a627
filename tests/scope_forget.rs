//! No child outlives its scope, even when its handle is forgotten (the forget-safety std proves
//! for its own scoped threads).

use crossbeam_channel::bounded;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use tether::Canceller;

#[test]
fn a_forgotten_handle_does_not_let_its_child_outlive_the_scope() {
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
    let payload = std::panic::catch_unwind(|| {
        tether::scope(|s| mem::forget(s.spawn(|_| std::panic::panic_any(41_u32)))).unwrap();
    })
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&41));
}
