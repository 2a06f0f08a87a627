//! Panics: a child panic cancels the siblings at once, every child is still joined, and the
//! original payload is re-raised by the scope (not std's "a scoped thread panicked"). Later panics
//! go to `tether::testing::take_unhandled_panics`.
//!
//! The unhandled-panic list is process-wide, so the tests of this file hold `exclusive()`.

use crate::exclusive;
use crossbeam_channel::bounded;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use tether::testing::take_unhandled_panics;
use tether::{Canceller, Cause};

#[derive(Debug, PartialEq)]
struct Payload(u32);

#[test]
fn the_original_payload_of_a_child_panic_is_reraised_after_every_child_is_joined() {
    let _exclusive = exclusive();
    let sibling_finished = AtomicBool::new(false);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            s.spawn(|ctx| {
                ctx.wait();
                sibling_finished.store(true, SeqCst);
            });
            s.spawn(|_| std::panic::panic_any(Payload(7)));
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(7)));
    assert!(sibling_finished.load(SeqCst), "the sibling was joined before the panic was re-raised");
    assert!(take_unhandled_panics().is_empty());
}

#[test]
fn a_string_panic_message_is_kept_not_replaced_by_a_generic_one() {
    let _exclusive = exclusive();
    let disk = std::hint::black_box(3); // a runtime value: the payload is a formatted `String`
    let payload =
        catch_unwind(|| tether::scope(|s| drop(s.spawn(move |_| panic!("disk {disk} on fire")))).unwrap())
            .unwrap_err();
    assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("disk 3 on fire"));
}

#[test]
fn a_child_panic_cancels_its_siblings_at_once_with_a_cause_naming_the_child() {
    let _exclusive = exclusive();
    let (saw_tx, saw) = bounded(1);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            s.spawn(move |ctx| saw_tx.send(ctx.wait()).unwrap());
            s.builder().name("worker-9").spawn(|_| panic!("index out of bounds")).unwrap();
            // The body waits for the sibling's observation: the cancellation came from the
            // panicking child, not from the scope's exit.
            let cause = saw.recv().unwrap();
            let Cause::Panicked(summary) = cause else { panic!("unexpected cause {cause:?}") };
            assert_eq!(summary.who(), Some("worker-9"));
            assert_eq!(summary.message(), "index out of bounds");
        })
    }))
    .unwrap_err();
}

#[test]
fn a_panicking_body_cancels_children_with_panicked_joins_them_and_reraises_its_payload() {
    let _exclusive = exclusive();
    let mut child_saw = None;
    let payload = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            let child_saw = &mut child_saw;
            s.spawn(move |ctx| *child_saw = Some(ctx.wait()));
            std::panic::panic_any(Payload(1));
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(1)));
    let Some(Cause::Panicked(summary)) = child_saw else { panic!("unexpected {child_saw:?}") };
    assert_eq!(summary.who(), Some("scope body"));
}

#[test]
fn with_several_panics_the_first_is_reraised_and_the_others_are_recorded_not_lost() {
    let _exclusive = exclusive();
    let payload = catch_unwind(|| {
        tether::scope(|s| {
            s.spawn(|_| std::panic::panic_any(Payload(1)));
            s.spawn(|ctx| {
                ctx.wait(); // cancelled by the first panic: this one comes second
                std::panic::panic_any(Payload(2))
            });
            s.spawn(|ctx| {
                ctx.wait();
                std::panic::panic_any(Payload(3))
            });
            // Wait for the first panic's cancellation: the exit's own would let 2 and 3 go first.
            s.context().wait();
        })
    })
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(1)));
    let mut others: Vec<u32> =
        take_unhandled_panics().into_iter().map(|p| p.downcast_ref::<Payload>().unwrap().0).collect();
    others.sort();
    assert_eq!(others, [2, 3]);
}

#[test]
fn errors_and_panics_from_several_children_at_once_raise_one_panic_and_record_the_rest() {
    let _exclusive = exclusive();
    let all_started = Barrier::new(4);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            for i in 0..2 {
                let all_started = &all_started;
                s.spawn(move |_| {
                    all_started.wait();
                    std::panic::panic_any(Payload(i))
                });
                s.spawn_fallible(move |_| {
                    all_started.wait();
                    Err::<(), _>(std::fmt::Error)
                });
            }
        })
    }))
    .unwrap_err();
    let first = payload.downcast_ref::<Payload>().expect("a panic wins over errors").0;
    let others = take_unhandled_panics();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].downcast_ref::<Payload>(), Some(&Payload(1 - first)));
}

/// A result whose destructor panics.
struct ExplodesOnDrop;

impl Drop for ExplodesOnDrop {
    fn drop(&mut self) {
        std::panic::panic_any(Payload(99));
    }
}

#[test]
fn a_panic_dropping_an_unjoined_result_on_the_child_thread_is_reraised_by_the_scope() {
    let _exclusive = exclusive();
    let (dropped_tx, dropped) = bounded::<()>(0);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        tether::scope(|s| {
            let handle = s.spawn(move |_| {
                let _ = dropped.recv(); // returns once the handle is gone
                ExplodesOnDrop
            });
            drop(handle);
            drop(dropped_tx);
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(99)));
    assert!(take_unhandled_panics().is_empty());
}
