//! The leak checker: passes when a scope cleans up after itself, and names what leaked otherwise.
//! Checks exclude each other, but one test here also creates a scope outside its checks, whose
//! contexts would offset another test's deliberate leak: every test holds `exclusive()`.

use crate::exclusive;
use crossbeam_channel::bounded;
use std::time::Duration;
use tether::testing::{LeakCheck, assert_no_leaks};
use tether::{Canceller, Context, Key, ScopeBuilder};

/// How long a check that is expected to fail waits before reporting.
const NO_GRACE: Duration = Duration::ZERO;

static K: Key<u32> = Key::new("k");

#[test]
fn a_scope_with_children_deadlines_values_and_errors_leaks_nothing() {
    let _exclusive = exclusive();
    assert_no_leaks(|| {
        let err = ScopeBuilder::new()
            .timeout(Duration::from_secs(3600))
            .value(&K, 1)
            .limit(2)
            .run(|s| {
                for _ in 0..4 {
                    s.spawn(|ctx| ctx.with_timeout(Duration::from_secs(60)).child());
                }
                s.spawn(|ctx| ctx.wait());
                let _cb = s.context().on_cancel(|_| ());
                s.spawn_fallible(|_| Err::<(), _>(std::fmt::Error));
            })
            .unwrap_err();
        drop(err);
    });
}

#[test]
fn a_context_kept_alive_is_reported_as_leaked_nodes() {
    let _exclusive = exclusive();
    let check = LeakCheck::start().grace(NO_GRACE);
    let kept = tether::scope(|s| s.context().child()).unwrap();
    let report = check.finish().unwrap_err();
    assert!(report.leaked().nodes >= 1, "{report}");
    assert!(report.to_string().starts_with("leaked: "), "{report}");
    assert!(report.to_string().contains("node"), "{report}");
    drop(kept);
}

#[test]
fn a_callback_left_registered_is_reported() {
    let _exclusive = exclusive();
    let check = LeakCheck::start().grace(NO_GRACE);
    let ctx = Context::new();
    let handle = ctx.on_cancel(|_| ());
    let report = check.finish().unwrap_err();
    assert_eq!(report.leaked().callbacks, 1, "{report}");
    assert!(report.to_string().contains("1 callback"), "{report}");
    assert!(handle.stop());
}

#[test]
fn a_running_scope_thread_is_reported_by_name() {
    let _exclusive = exclusive();
    let (running_tx, running) = bounded(0);
    tether::scope(|s| {
        s.builder()
            .name("stuck-worker")
            .spawn(move |ctx| {
                running_tx.send(()).unwrap();
                ctx.wait()
            })
            .unwrap();
        running.recv().unwrap();
        let check = LeakCheck::start().grace(NO_GRACE);
        s.spawn(|ctx| ctx.wait()); // started during the check, unnamed
        let report = check.finish().unwrap_err();
        assert_eq!(report.leaked().threads, 1);
        assert_eq!(report.threads(), ["<unnamed>"], "only threads started during the check");
        assert!(report.to_string().contains("1 thread"), "{report}");
        let check = LeakCheck::start().grace(NO_GRACE);
        s.builder().name("stuck-worker-2").spawn(|ctx| ctx.wait()).unwrap();
        let report = check.finish().unwrap_err();
        assert_eq!(report.threads(), ["stuck-worker-2"]);
        assert!(report.to_string().contains("stuck-worker-2"), "{report}");
    })
    .unwrap();
}

#[test]
fn finishing_after_the_scope_returns_finds_every_thread_gone() {
    let _exclusive = exclusive();
    let check = LeakCheck::start();
    tether::scope(|s| {
        for i in 0..8 {
            s.builder().name(format!("w{i}")).spawn(|ctx| ctx.is_cancelled()).unwrap();
        }
    })
    .unwrap();
    check.finish().unwrap();
}

#[test]
#[should_panic(expected = "tether: leaked: ")]
fn assert_no_leaks_panics_naming_the_leak() {
    let _exclusive = exclusive();
    let kept = assert_no_leaks(Context::new);
    drop(kept);
}

#[test]
#[should_panic(expected = "inside another")]
fn a_nested_check_on_the_same_thread_panics_instead_of_deadlocking() {
    let _exclusive = exclusive();
    let _outer = LeakCheck::start();
    let _inner = LeakCheck::start();
}
