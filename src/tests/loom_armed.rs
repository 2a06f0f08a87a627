//! Models of a blocking helper's armed action (`blocking/armed.rs`) against a racing cancel: the
//! action runs at most once, only while the call that armed it is still in it (never after
//! `disarm` returns), and `disarm` tells truly whether it ran.

use super::model;
use crate::blocking::armed::Armed;
use crate::context::Context;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

#[test]
fn an_armed_action_runs_at_most_once_and_never_after_disarm() {
    model(|| {
        let ctx = Context::new();
        let canceller = ctx.clone();
        let t = thread::spawn(move || canceller.cancel());
        let runs = Arc::new(AtomicUsize::new(0));
        // Stands for what the action borrows: true until the call that armed it returns.
        let borrowed = Arc::new(AtomicBool::new(true));
        let (r, b) = (runs.clone(), borrowed.clone());
        let armed = Armed::arm(&ctx, move || {
            assert!(b.load(SeqCst), "the action ran after disarm returned");
            r.fetch_add(1, SeqCst);
        });
        if let Ok(mut armed) = armed {
            let ran = armed.disarm();
            borrowed.store(false, SeqCst);
            assert_eq!(ran, runs.load(SeqCst) == 1, "disarm tells whether the action ran");
        }
        t.join().unwrap();
        assert!(runs.load(SeqCst) <= 1);
    });
}

#[test]
fn try_disarm_while_the_action_runs_then_disarm_waits_for_it() {
    model(|| {
        let ctx = Context::new();
        let canceller = ctx.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let mut armed = Armed::arm(&ctx, move || f.store(true, SeqCst)).expect("not cancelled yet");
        let t = thread::spawn(move || canceller.cancel());
        match armed.try_disarm() {
            crate::blocking::armed::Disarmed::Running => {
                assert!(armed.disarm());
                assert!(finished.load(SeqCst), "disarm returned before the action finished");
            }
            crate::blocking::armed::Disarmed::Fired => assert!(finished.load(SeqCst)),
            crate::blocking::armed::Disarmed::Idle => {}
        }
        drop(armed);
        t.join().unwrap();
    });
}
