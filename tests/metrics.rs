//! What a `metrics` recorder sees (feature `metrics`): gauges of live scopes, children by kind,
//! nodes and timers that return to zero once everything has ended; counters of cancellations by
//! cause kind and of refused `try_spawn`s.
//!
//! metrics-util's debugging recorder, installed once before anything is counted (the gauges
//! move by increments, so they mirror the live counts only from the start). Its snapshot drains
//! what it holds, so [`totals`] adds each drain to running totals.
#![cfg(feature = "metrics")]

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;
use tether::{Canceller, Cause, Context, ScopeBuilder};

static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
/// Every metric's value since the recorder was installed, by `name{label=value,...}`.
static TOTALS: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// Installs the recorder before the first test counts anything, and serialises the tests (they
/// read process-wide values).
fn recording() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder");
        snapshotter
    });
    guard
}

/// The value of every metric now.
fn totals() -> BTreeMap<String, f64> {
    let mut totals = TOTALS.lock().unwrap_or_else(PoisonError::into_inner);
    for (key, _, _, value) in SNAPSHOTTER.get().expect("installed").snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match value {
            DebugValue::Gauge(v) => v.into_inner(),
            DebugValue::Counter(n) => n as f64,
            DebugValue::Histogram(_) => unreachable!("tether records no histogram"),
        };
        *totals.entry(name).or_default() += value;
    }
    totals.clone()
}

fn value(totals: &BTreeMap<String, f64>, name: &str) -> f64 {
    totals.get(name).copied().unwrap_or(0.0)
}

#[test]
fn the_gauges_count_what_is_alive_and_return_to_zero_after_assert_no_leaks() {
    let _serial = recording();
    let during = tether::testing::assert_no_leaks(|| {
        ScopeBuilder::new()
            .timeout(Duration::from_secs(60))
            .run(|s| {
                for _ in 0..3 {
                    s.spawn(|ctx| ctx.wait());
                }
                for _ in 0..2 {
                    s.spawn_task(|ctx| ctx.wait());
                }
                let during = totals();
                s.cancel();
                during
            })
            .unwrap()
    });
    assert_eq!(value(&during, "tether_scopes{}"), 1.0);
    assert_eq!(value(&during, "tether_children{kind=thread}"), 3.0);
    assert_eq!(value(&during, "tether_children{kind=task}"), 2.0);
    assert!(value(&during, "tether_nodes{}") >= 4.0, "the scope's node and the threads': {during:?}");
    assert!(value(&during, "tether_timers{}") >= 1.0, "the scope's deadline: {during:?}");

    let after = totals();
    let gauges = [
        "tether_scopes{}",
        "tether_children{kind=thread}",
        "tether_children{kind=task}",
        "tether_nodes{}",
        "tether_registered_children{}",
        "tether_timers{}",
        "tether_callbacks{}",
    ];
    for gauge in gauges {
        assert_eq!(value(&after, gauge), 0.0, "{gauge}: {after:?}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stop")]
struct Stop;

#[test]
fn cancellations_are_counted_once_by_cause_kind_and_refused_try_spawns_by_kind() {
    let _serial = recording();
    let before = totals();

    let root = Context::new();
    let tree: Vec<Context> = (0..50).map(|_| root.child()).collect();
    root.cancel_with(Cause::custom(Stop));
    assert!(tree.iter().all(|c| c.is_cancelled()));
    ScopeBuilder::new().timeout(Duration::ZERO).run(|s| s.context().wait()).unwrap();
    ScopeBuilder::new()
        .limit(1)
        .run(|s| {
            s.spawn(|ctx| ctx.wait());
            assert!(s.try_spawn(|_| ()).is_err());
            assert!(s.try_spawn_task(|_| ()).is_err());
            assert!(s.try_spawn_task(|_| ()).is_err());
        })
        .unwrap();

    let after = totals();
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta("tether_cancellations_total{cause=custom}"), 1.0, "one for a tree of 51 nodes");
    assert_eq!(delta("tether_cancellations_total{cause=deadline_exceeded}"), 1.0);
    // The deadline had cancelled its scope, so only the last scope's exit cancels.
    assert_eq!(delta("tether_cancellations_total{cause=scope_exited}"), 1.0);
    assert_eq!(delta("tether_try_spawn_rejected_total{kind=thread}"), 1.0);
    assert_eq!(delta("tether_try_spawn_rejected_total{kind=task}"), 2.0);
}
