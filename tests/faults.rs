//! Fault injection and bad input: each fault has a defined outcome, asserted here, and no panic
//! payload and no cause is lost. Every test also checks that nothing leaked.
//!
//! | Fault | Outcome (documented where) |
//! | --- | --- |
//! | an on-cancel callback panics during `cancel()` | every callback still runs; `cancel` re-raises the payload, or `CallbackPanics` with all of them (`Context::cancel_with`, `# Panics`) |
//! | ... during a scope's exit | recorded as the scope's panic and re-raised by `scope` (`scope/mod.rs`, `Shared::cancel`) |
//! | ... on a timer firer thread (a deadline) | recorded for `testing::take_unhandled_panics` (`tether::testing` docs) |
//! | a bound value's destructor panics | see `a_panicking_value_destructor_*` |
//! | the body panics while children are blocked | children see `Cause::Panicked` naming "scope body"; `scope` re-raises the body's payload (`scope` docs, `# Panics`) |
//! | a child panics while the owner is unwinding | the owner's panic is re-raised; the child's goes to `take_unhandled_panics` (`scope` docs) |
//! | a callback cancels its own node | no deadlock; the first cause stays; the callback ran once |
//! | cancel races with the scope's exit | the scope's cause is whichever came first; every child saw that one |

#[path = "common/harness.rs"]
mod harness;

use harness::{Fault, quiet};
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tether::testing::{assert_no_leaks, take_unhandled_panics};
use tether::{CallbackPanics, CancelError, Canceller, Cause, Context, Key, ScopeBuilder};

/// Every test here holds it: the live counts and the unhandled panics are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = take_unhandled_panics();
    guard
}

fn fault_of(payload: &(dyn std::any::Any + Send)) -> &Fault {
    payload.downcast_ref::<Fault>().expect("the injected payload, unchanged")
}

/// Polls `f` for up to a second.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < give_up, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ===== panics in on-cancel callbacks =====

#[test]
fn callbacks_that_panic_during_cancel_do_not_stop_the_others_and_every_payload_is_kept() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let ctx = Context::new();
        let child = ctx.child();
        let ran = Arc::new(AtomicUsize::new(0));
        let _a = ctx.on_cancel(|_| panic_any(Fault("a")));
        let r = ran.clone();
        let _b = ctx.on_cancel(move |_| {
            r.fetch_add(1, SeqCst);
        });
        let _c = child.on_cancel(|_| panic_any(Fault("c")));
        let payload = catch_unwind(AssertUnwindSafe(|| ctx.cancel())).unwrap_err();
        let all = payload.downcast::<CallbackPanics>().expect("two panicked: all of them");
        let mut faults: Vec<_> = all.payloads.iter().map(|p| fault_of(&**p).0).collect();
        faults.sort();
        assert_eq!(faults, ["a", "c"]);
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!(child.cause(), Some(Cause::Cancelled), "the cancellation completed");

        let one = Context::new();
        let _d = one.on_cancel(|_| panic_any(Fault("d")));
        let payload = catch_unwind(AssertUnwindSafe(|| one.cancel())).unwrap_err();
        assert_eq!(fault_of(&*payload), &Fault("d"), "one panic: its own payload");
    });
}

#[test]
fn a_callback_that_panics_when_the_scope_exits_is_the_scopes_panic() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let payload = catch_unwind(AssertUnwindSafe(|| {
            tether::scope(|s| {
                let _cb = s.context().on_cancel(|_| panic_any(Fault("callback")));
                s.spawn(|ctx| assert_eq!(ctx.wait(), Cause::ScopeExited));
            })
        }))
        .unwrap_err();
        assert_eq!(fault_of(&*payload), &Fault("callback"));
        assert!(take_unhandled_panics().is_empty());
    });
}

#[test]
fn a_callback_that_panics_on_the_timer_thread_is_kept_as_an_unhandled_panic() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let ctx = Context::new().with_timeout(Duration::from_millis(1));
        let _cb = ctx.on_cancel(|_| panic_any(Fault("timer")));
        assert_eq!(ctx.wait(), Cause::DeadlineExceeded);
        let panics = eventually(|| Some(take_unhandled_panics()).filter(|p| !p.is_empty()));
        assert_eq!(panics.len(), 1);
        assert_eq!(fault_of(&*panics[0]), &Fault("timer"));
    });
}

// ===== panics in value destructors =====

/// A value whose destructor panics.
struct Bomb(&'static str);

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic_any(Fault(self.0));
        }
    }
}

static BOMB: Key<Bomb> = Key::new("bomb");

#[test]
fn a_panicking_value_destructor_unwinds_from_the_drop_of_the_last_context_holding_it() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let ctx = Context::new().with_value(&BOMB, Bomb("context value"));
        let child = ctx.child();
        drop(ctx);
        assert!(child.value(&BOMB).is_some(), "the child keeps the value alive");
        let payload = catch_unwind(AssertUnwindSafe(|| drop(child))).unwrap_err();
        assert_eq!(fault_of(&*payload), &Fault("context value"));
    });
}

#[test]
fn a_panicking_value_destructor_bound_to_a_scope_is_reraised_by_the_scope() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let joined = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            ScopeBuilder::new().value(&BOMB, Bomb("scope value")).run(|s| {
                s.spawn(|ctx| {
                    assert!(ctx.value(&BOMB).is_some());
                    ctx.wait();
                    joined.fetch_add(1, SeqCst);
                });
            })
        }));
        let payload = result.expect_err("the destructor's panic is not swallowed");
        assert_eq!(fault_of(&*payload), &Fault("scope value"));
        assert_eq!(joined.load(SeqCst), 1, "the child was joined before the value was dropped");
    });
}

// ===== panics while the owner is unwinding =====

#[test]
fn a_body_panic_while_children_are_blocked_cancels_them_with_panicked_and_is_reraised() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let seen = Mutex::new(Vec::new());
        let payload = catch_unwind(AssertUnwindSafe(|| {
            tether::scope(|s| {
                for _ in 0..3 {
                    s.spawn(|ctx| seen.lock().unwrap().push(ctx.wait()));
                }
                s.spawn(|ctx| tether::blocking::sleep(ctx, Duration::from_secs(3600)));
                panic_any(Fault("body"));
            })
        }))
        .unwrap_err();
        assert_eq!(fault_of(&*payload), &Fault("body"));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        for cause in seen {
            let Cause::Panicked(summary) = cause else { panic!("{cause:?}") };
            assert_eq!(summary.who(), Some("scope body"));
        }
        assert!(take_unhandled_panics().is_empty());
    });
}

#[test]
fn a_child_that_panics_while_the_body_is_unwinding_is_kept_as_an_unhandled_panic() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let payload = catch_unwind(AssertUnwindSafe(|| {
            tether::scope(|s| {
                s.spawn(|ctx| {
                    ctx.wait();
                    panic_any(Fault("child, while the body unwinds"));
                });
                panic_any(Fault("body"));
            })
        }))
        .unwrap_err();
        assert_eq!(fault_of(&*payload), &Fault("body"), "the first panic is re-raised");
        let later = take_unhandled_panics();
        assert_eq!(later.len(), 1, "the later one is kept");
        assert_eq!(fault_of(&*later[0]), &Fault("child, while the body unwinds"));
    });
}

// ===== re-entrant cancellation and races =====

#[test]
fn a_callback_that_cancels_its_own_node_does_not_deadlock_and_keeps_the_first_cause() {
    let _serial = serial();
    quiet();
    assert_no_leaks(|| {
        let ctx = Context::new();
        let this = ctx.clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let h = ctx.on_cancel(move |_| {
            this.cancel_with(Cause::custom(std::fmt::Error));
            this.cancel();
            r.fetch_add(1, SeqCst);
        });
        ctx.cancel_with(Cause::ScopeExited);
        assert_eq!(ctx.cause(), Some(Cause::ScopeExited));
        assert_eq!(ran.load(SeqCst), 1);
        assert!(!h.stop());
        // The callback held a clone of its own context; it was dropped when it ran.
        drop(ctx);

        // Registered on a context already cancelled: it runs at once, on this thread.
        let done = Context::new();
        done.cancel();
        let again = done.clone();
        let h = done.on_cancel(move |_| again.cancel_with(Cause::DeadlineExceeded));
        assert!(!h.stop());
        assert_eq!(done.cause(), Some(Cause::Cancelled));
    });
}

#[test]
fn a_cancel_racing_with_the_scope_exit_gives_one_cause_that_every_child_saw() {
    let _serial = serial();
    assert_no_leaks(|| {
        let (mut cancelled, mut exited) = (0, 0);
        for i in 0..300 {
            let parent = Context::new();
            let racer = parent.clone();
            let seen = Mutex::new(Vec::new());
            let mut scope_ctx = None;
            std::thread::scope(|t| {
                t.spawn(move || {
                    std::thread::sleep(Duration::from_micros(i % 50));
                    racer.cancel();
                });
                ScopeBuilder::new()
                    .parent(&parent)
                    .run(|s| {
                        scope_ctx = Some(s.context().clone());
                        for _ in 0..2 {
                            s.spawn(|ctx| seen.lock().unwrap().push(ctx.wait()));
                        }
                        std::thread::sleep(Duration::from_micros(25));
                    })
                    .unwrap();
            });
            let cause = scope_ctx.unwrap().cause().expect("cancelled by one or the other");
            match cause {
                Cause::Cancelled => cancelled += 1,
                Cause::ScopeExited => exited += 1,
                other => panic!("{other:?}"),
            }
            assert_eq!(seen.into_inner().unwrap(), [cause.clone(), cause]);
        }
        assert_eq!(cancelled + exited, 300);
    });
}

// ===== bad input =====

#[test]
fn deadlines_far_in_the_past_cancel_at_once() {
    let _serial = serial();
    assert_no_leaks(|| {
        // The earliest instant this clock can represent (Instant cannot go below its epoch).
        let mut past = Instant::now();
        let mut step = Duration::from_secs(1 << 40);
        while step > Duration::from_secs(1) {
            match past.checked_sub(step) {
                Some(p) => past = p,
                None => step /= 2,
            }
        }
        let ctx = Context::new().with_deadline(past);
        assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
        let seen = ScopeBuilder::new().deadline(past).run(|s| s.spawn(|ctx| ctx.wait()).join().unwrap());
        assert_eq!(seen.unwrap(), Cause::DeadlineExceeded);
    });
}

#[test]
fn overflowing_durations_mean_no_deadline_and_waits_still_end_on_cancel() {
    let _serial = serial();
    assert_no_leaks(|| {
        let ctx = Context::new().with_timeout(Duration::MAX);
        assert_eq!(ctx.deadline(), None);
        ScopeBuilder::new()
            .timeout(Duration::MAX)
            .run(|s| {
                assert_eq!(s.context().deadline(), None);
                let sleeper = s.spawn(|ctx| tether::blocking::sleep(ctx, Duration::MAX));
                let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
                let receiver = s.spawn(move |ctx| tether::blocking::recv_timeout(ctx, &rx, Duration::MAX));
                let waiter = s.spawn(|ctx| ctx.wait_timeout(Duration::MAX));
                std::thread::sleep(Duration::from_millis(5));
                s.cancel();
                assert_eq!(sleeper.join().unwrap(), Err(Cause::Cancelled));
                assert!(receiver.join().unwrap().unwrap_err().is_cancelled());
                assert_eq!(waiter.join().unwrap(), Some(Cause::Cancelled));
            })
            .unwrap();
        ctx.cancel();
        assert_eq!(tether::blocking::sleep(&ctx, Duration::MAX), Err(Cause::Cancelled));
    });
}

#[test]
fn cancelling_twice_with_different_causes_keeps_the_first() {
    let _serial = serial();
    assert_no_leaks(|| {
        let ctx = Context::new();
        let child = ctx.child();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let _cb = child.on_cancel(move |_| {
            r.fetch_add(1, SeqCst);
        });
        ctx.cancel_with(Cause::custom(std::fmt::Error));
        ctx.cancel_with(Cause::DeadlineExceeded);
        child.cancel();
        assert!(ctx.cause().unwrap().downcast_ref::<std::fmt::Error>().is_some());
        assert!(child.cause().unwrap().downcast_ref::<std::fmt::Error>().is_some());
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
        assert_eq!(ran.load(SeqCst), 1, "callbacks run once");
    });
}

#[test]
fn stopping_a_callback_twice_prevents_it_once() {
    let _serial = serial();
    assert_no_leaks(|| {
        let ctx = Context::new();
        let h = ctx.on_cancel(|_| unreachable!("stopped"));
        assert!(h.stop());
        assert!(!h.stop());
        ctx.cancel();
        assert!(!h.stop());
        let background = Context::background().on_cancel(|_| unreachable!("never runs"));
        assert!(background.stop());
        assert!(!background.stop());
    });
}

#[test]
fn a_key_never_bound_reads_as_none() {
    static NEVER: Key<u64> = Key::new("never bound");
    static HIDDEN: Key<u64> = Key::not_inherited("not inherited");
    let _serial = serial();
    assert_no_leaks(|| {
        assert_eq!(Context::new().value(&NEVER), None);
        assert_eq!(Context::background().value(&NEVER), None);
        ScopeBuilder::new()
            .value(&HIDDEN, 1)
            .run(|s| {
                assert_eq!(s.context().value(&HIDDEN), Some(&1));
                assert_eq!(
                    s.spawn(|ctx| (ctx.value(&NEVER).copied(), ctx.value(&HIDDEN).copied())).join().unwrap(),
                    (None, None)
                );
            })
            .unwrap();
    });
}
