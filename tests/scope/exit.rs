//! The exit protocol: the body's return cancels what is still running (ScopeExited), joins it,
//! and returns the body's result; `wait_all` waits without cancelling; spawning into a cancelled
//! scope starts the child already cancelled. Every test is leak-checked, so holds
//! `exclusive()`.

use crate::exclusive;
use crossbeam_channel::bounded;
use std::sync::Mutex;
use tether::testing::assert_no_leaks;
use tether::{CancelError, Canceller, Cause};

#[test]
fn returning_from_the_body_cancels_still_running_children_with_scope_exited() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let seen = Mutex::new(Vec::new());
        let (started_tx, started) = bounded(0);
        let r = tether::scope(|s| {
            for _ in 0..3 {
                let (seen, started_tx) = (&seen, started_tx.clone());
                s.spawn(move |ctx| {
                    started_tx.send(()).unwrap();
                    let cause = ctx.wait();
                    seen.lock().unwrap().push((cause, ctx.err()));
                });
            }
            for _ in 0..3 {
                started.recv().unwrap();
            }
            "done"
        });
        assert_eq!(r.unwrap(), "done");
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen, vec![(Cause::ScopeExited, Some(CancelError::Cancelled)); 3]);
    });
}

#[test]
fn the_scope_context_is_cancelled_with_scope_exited_once_the_scope_returns() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let mut kept = None;
        tether::scope(|s| kept = Some(s.context().clone())).unwrap();
        assert_eq!(kept.unwrap().cause(), Some(Cause::ScopeExited));
    });
}

#[test]
fn wait_all_lets_children_finish_without_cancelling_them() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let (go_tx, go) = bounded::<()>(0);
        let r = tether::scope(|s| {
            let worker = s.spawn(|ctx| {
                go.recv().unwrap(); // finishes only when told, long after the body reached wait_all
                ctx.is_cancelled()
            });
            let (s_ctx, go_tx) = (s.context().clone(), go_tx);
            std::thread::scope(|helper| {
                helper.spawn(move || go_tx.send(()).unwrap());
                s.wait_all();
            });
            assert!(!s_ctx.is_cancelled());
            worker.join().unwrap()
        });
        assert!(!r.unwrap(), "the child ran to its end uncancelled");
    });
}

#[test]
fn the_scope_is_usable_after_wait_all_and_the_exit_still_cancels_later_children() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let mut seen = None;
        tether::scope(|s| {
            s.spawn(|_| ()).join().unwrap();
            s.wait_all();
            s.wait_all(); // returns at once when nothing runs
            let seen = &mut seen;
            s.spawn(move |ctx| *seen = Some(ctx.wait()));
        })
        .unwrap();
        assert_eq!(seen, Some(Cause::ScopeExited));
    });
}

#[test]
fn a_child_spawned_into_a_cancelled_scope_starts_already_cancelled_with_the_scopes_cause() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        tether::scope(|s| {
            s.context().cancel_with(Cause::custom(std::fmt::Error));
            let cause = s.spawn(|ctx| ctx.cause()).join().unwrap().expect("already cancelled at start");
            assert!(cause.downcast_ref::<std::fmt::Error>().is_some());
        })
        .unwrap();
    });
}

#[test]
fn cancelling_the_scope_stops_children_but_the_body_goes_on_and_its_result_is_returned() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let r = tether::scope(|s| {
            let h = s.spawn(|ctx| ctx.wait());
            s.cancel();
            assert_eq!(h.join().unwrap(), Cause::Cancelled);
            42
        });
        assert_eq!(r.unwrap(), 42);
    });
}
