//! `tether::dump()`: what a snapshot shows of live scopes and children (sites, states, nesting,
//! values), its JSON form against its schema, the hang watchdog, the leak checker's report, and
//! dumping while threads spawn and exit.
//!
//! Every test finds its own scope by name: other tests of this binary run scopes at the same
//! time, and a dump lists them all. The leak-check test holds `COUNTS` (`tests/async_cancel.rs`'s
//! convention) and so does every test here, since they all create contexts and threads.

use std::panic::Location;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tether::dump::{ChildDump, ChildKind, ChildState, ScopeDump};
use tether::{Canceller, Dump, Key, ScopeBuilder};

/// Serialises the tests of this binary (the leak check reads process-wide counts).
static COUNTS: Mutex<()> = Mutex::new(());

fn counts() -> MutexGuard<'static, ()> {
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a test waits for a condition before failing rather than hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// The scope named `name` in a fresh dump.
fn scope_named(name: &str) -> Option<ScopeDump> {
    tether::dump().scopes().iter().find(|s| s.name.as_deref() == Some(name)).cloned()
}

/// Dumps until `ready` holds of the scope named `name` (the children it looks at are running on
/// other threads); fails after `PATIENCE`.
fn dump_until(name: &str, ready: impl Fn(&ScopeDump) -> bool) -> ScopeDump {
    let give_up = Instant::now() + PATIENCE;
    loop {
        if let Some(scope) = scope_named(name).filter(|s| ready(s)) {
            return scope;
        }
        assert!(Instant::now() < give_up, "scope {name:?} never got there: {}", tether::dump());
        std::thread::yield_now();
    }
}

fn child_named<'a>(scope: &'a ScopeDump, name: &str) -> &'a ChildDump {
    scope.children.iter().find(|c| c.name.as_deref() == Some(name)).expect("the child is listed")
}

#[test]
fn a_dump_shows_each_child_with_its_spawn_site_state_and_wait_site() {
    let _counts = counts();
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let blocked_id = std::sync::OnceLock::new();
    let run_line = line!() + 4;
    ScopeBuilder::new()
        .name("sites")
        .limit(4)
        .run(|s| {
            let blocked_line = line!() + 3;
            let blocked = s.builder().name("blocked").spawn(|ctx| {
                blocked_id.set(std::thread::current().id()).unwrap();
                let _ = tether::blocking::recv(ctx, &rx);
            });
            let spawned_line = line!() - 4;
            let done = s.builder().name("done").spawn(|_| 7).unwrap();
            while !done.is_finished() {
                std::thread::yield_now();
            }
            let scope = dump_until("sites", |s| {
                s.children.iter().any(|c| {
                    c.name.as_deref() == Some("blocked") && matches!(c.state, ChildState::Blocked { .. })
                })
            });
            let child = child_named(&scope, "blocked");
            assert_eq!(child.kind, ChildKind::Thread);
            assert_eq!((child.site.file(), child.site.line()), (file!(), spawned_line));
            let ChildState::Blocked { site, .. } = child.state else { unreachable!() };
            assert_eq!(site.line(), blocked_line, "the wait site is the `blocking::recv` call");
            assert_eq!(child.thread.as_ref().unwrap().name.as_deref(), Some("blocked"));
            // `ThreadId(7)` is thread 7.
            let number =
                format!("{:?}", blocked_id.get().unwrap()).replace(|c: char| !c.is_ascii_digit(), "");
            assert_eq!(child.thread.as_ref().unwrap().id.to_string(), number, "the thread's number");
            assert_eq!(child_named(&scope, "done").state, ChildState::AwaitingJoin);
            assert_eq!(
                (scope.limit, scope.slots_in_use, scope.running),
                (Some(4), Some(1), 1),
                "`done` has counted out"
            );
            assert!(!scope.cancelled);
            assert_eq!(scope.site.line(), run_line, "the scope's site is the `run` call");
            assert_eq!(done.join().unwrap(), 7);
            drop(tx);
            blocked.unwrap().join().unwrap();
            let scope = scope_named("sites").unwrap();
            assert!(scope.children.is_empty(), "joined children are not listed: {scope:?}");
        })
        .unwrap();
    assert!(scope_named("sites").is_none(), "a scope that has returned is not listed");
}

/// A user's spawn helper, marked `#[track_caller]` so the dump names the line that calls it.
#[track_caller]
fn spawn_worker<'scope>(s: &'scope tether::Scope<'scope, '_>, rx: &'scope crossbeam_channel::Receiver<()>) {
    s.spawn_task(move |_| {
        let _ = rx.recv();
    });
}

#[test]
fn a_track_caller_wrapper_reports_the_users_line_for_tasks_and_threads() {
    let _counts = counts();
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    ScopeBuilder::new()
        .name("wrapper")
        .run(|s| {
            spawn_worker(s, &rx);
            let task_line = line!() - 1;
            let scope = dump_until("wrapper", |s| s.children.len() == 1);
            let task = &scope.children[0];
            assert_eq!(task.kind, ChildKind::Task);
            assert_eq!((task.site.file(), task.site.line()), (file!(), task_line));
            drop(tx);
            s.wait_all();
        })
        .unwrap();
}

#[test]
fn nested_scopes_name_their_parent_and_are_indented_below_it() {
    let _counts = counts();
    ScopeBuilder::new()
        .name("outer")
        .run(|s| {
            s.spawn(|_| {
                ScopeBuilder::new().name("inner").run(|_| {
                    let (outer, inner) = (scope_named("outer").unwrap(), scope_named("inner").unwrap());
                    assert_eq!(inner.parent, Some(outer.id));
                    let text = tether::dump().to_string();
                    let inner_line = text.lines().find(|l| l.contains("\"inner\"")).unwrap();
                    assert!(inner_line.starts_with("    scope #"), "nested one level: {text}");
                })
            });
        })
        .unwrap();
}

#[test]
fn a_child_waiting_for_its_nested_scope_is_blocked_at_that_scopes_site() {
    let _counts = counts();
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    ScopeBuilder::new()
        .name("waits-for-nested")
        .run(|s| {
            s.builder()
                .name("opener")
                .spawn(|_| {
                    // The nested child ignores cancellation, so the nested scope's exit waits for it.
                    ScopeBuilder::new().name("nested").run(|n| {
                        n.spawn(|_| rx.recv());
                    })
                })
                .unwrap();
            let scope = dump_until("waits-for-nested", |s| {
                s.children.iter().any(|c| matches!(c.state, ChildState::Blocked { .. }))
            });
            let ChildState::Blocked { site, .. } = child_named(&scope, "opener").state else {
                unreachable!()
            };
            let nested = scope_named("nested").unwrap();
            assert_eq!(site, nested.site, "the opener waits in the nested scope's exit");
            drop(tx);
        })
        .unwrap();
}

#[test]
fn values_show_by_key_name_unless_the_key_opts_in() {
    let _counts = counts();
    static SHOWN: Key<u32> = Key::new("shard").shown();
    static HIDDEN: Key<String> = Key::new("password");
    ScopeBuilder::new()
        .name("values")
        .value(&SHOWN, 7)
        .value(&HIDDEN, "hunter2".into())
        .run(|_| {
            let scope = scope_named("values").unwrap();
            let values: Vec<_> = scope.values.iter().map(|v| (v.key, v.value.clone())).collect();
            assert_eq!(values, [("shard", Some("7".to_owned())), ("password", None)]);
            assert!(!tether::dump().to_json().contains("hunter2"));
        })
        .unwrap();
}

/// Checks that `value` has every field of the schema in `Dump`'s docs, with its type.
fn check_schema(json: &serde_json::Value) {
    use serde_json::Value as J;
    let site = |v: &J| {
        assert!(v["file"].is_string() && v["line"].is_u64() && v["column"].is_u64(), "site: {v}");
    };
    let thread =
        |v: &J| assert!(v["id"].is_u64() && (v["name"].is_string() || v["name"].is_null()), "thread: {v}");
    let opt = |v: &J, check: fn(&J) -> bool| assert!(v.is_null() || check(v), "{v}");
    assert_eq!(json["format_version"], 1);
    for s in json["scopes"].as_array().expect("scopes is an array") {
        assert!(s["id"].is_u64());
        opt(&s["name"], J::is_string);
        opt(&s["parent"], J::is_u64);
        site(&s["site"]);
        thread(&s["owner_thread"]);
        assert!(s["age_us"].is_u64());
        opt(&s["deadline_remaining_us"], J::is_u64);
        opt(&s["limit"], J::is_u64);
        opt(&s["slots_in_use"], J::is_u64);
        assert!(s["running"].is_u64() && s["cancelled"].is_boolean());
        opt(&s["cause"], J::is_string);
        for v in s["values"].as_array().unwrap() {
            assert!(v["key"].is_string());
            opt(&v["value"], J::is_string);
        }
        for c in s["children"].as_array().unwrap() {
            assert!(c["id"].is_u64());
            opt(&c["name"], J::is_string);
            assert!(["thread", "task"].contains(&c["kind"].as_str().unwrap()));
            if !c["thread"].is_null() {
                thread(&c["thread"]);
            }
            site(&c["site"]);
            assert!(c["age_us"].is_u64());
            let state = c["state"].as_str().unwrap();
            assert!(["queued", "running", "blocked", "awaiting_join"].contains(&state));
            if state == "blocked" {
                site(&c["wait"]["site"]);
                assert!(c["wait"]["for_us"].is_u64());
            } else {
                assert!(c["wait"].is_null());
            }
        }
    }
}

#[test]
fn the_json_form_parses_and_matches_its_schema() {
    let _counts = counts();
    static TENANT: Key<&str> = Key::new("tenant").shown();
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    ScopeBuilder::new()
        .name("json \"quoted\"\n\\ name")
        .timeout(Duration::from_secs(3600))
        .value(&TENANT, "a \"b\"")
        .run(|s| {
            s.builder().name("tab\there").spawn(|ctx| tether::blocking::recv(ctx, &rx)).unwrap();
            s.spawn_task(|_| ());
            let json = dump_until("json \"quoted\"\n\\ name", |s| {
                s.children.iter().any(|c| matches!(c.state, ChildState::Blocked { .. }))
            });
            drop(json);
            let text = tether::dump().to_json();
            let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            check_schema(&parsed);
            let ours = parsed["scopes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "json \"quoted\"\n\\ name")
                .expect("the name round-trips");
            assert_eq!(ours["values"][0]["value"], "\"a \\\"b\\\"\"");
            assert!(ours["deadline_remaining_us"].as_u64().unwrap() > 3_000_000_000);
            assert!(ours["children"].as_array().unwrap().iter().any(|c| c["name"] == "tab\there"));
            drop(tx);
        })
        .unwrap();
}

#[test]
fn the_watchdog_reports_a_child_still_running_after_the_scope_was_cancelled() {
    let _counts = counts();
    let (report_tx, report_rx) = mpsc::channel::<Dump>();
    let report_tx = Mutex::new(report_tx);
    // A plain std channel: the child cannot see the cancellation, so it stays running.
    let (release, stuck) = mpsc::channel::<()>();
    let mut spawn_line = 0;
    let cause = ScopeBuilder::new()
        .name("hung")
        .watchdog(Duration::from_millis(20), move |dump| {
            report_tx.lock().unwrap().send(dump.clone()).unwrap()
        })
        .run(|s| {
            s.builder().name("stubborn").spawn(move |_| stuck.recv()).unwrap();
            spawn_line = line!() - 1;
            s.cancel();
            let dump = report_rx.recv_timeout(PATIENCE).expect("the watchdog reported");
            release.send(()).unwrap();
            assert!(report_rx.recv_timeout(Duration::from_millis(50)).is_err(), "it reports once");
            dump
        })
        .unwrap();
    let scope = &cause.scopes()[0];
    assert_eq!(scope.name.as_deref(), Some("hung"));
    assert!(scope.cancelled);
    assert_eq!(scope.cause.as_deref(), Some("context canceled"));
    let child = child_named(scope, "stubborn");
    assert_eq!((child.site.file(), child.site.line()), (file!(), spawn_line));
    assert_eq!(child.state, ChildState::Running, "a std recv is not one of tether's wait sites");
    let text = cause.to_string();
    assert!(text.contains("\"stubborn\"") && text.contains(&format!("{}:{spawn_line}:", file!())), "{text}");
}

#[test]
fn a_scope_that_ends_in_time_reports_nothing_and_leaves_no_timer() {
    let _counts = counts();
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reported.clone();
    tether::testing::assert_no_leaks(|| {
        ScopeBuilder::new()
            .watchdog(Duration::from_millis(1), move |_| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .run(|s| {
                s.spawn(|ctx| ctx.wait());
            })
            .unwrap();
    });
    assert!(!reported.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn a_leak_report_includes_the_dump_of_what_leaked() {
    let _counts = counts();
    let check = tether::testing::LeakCheck::start().grace(Duration::ZERO);
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    ScopeBuilder::new()
        .name("leaky")
        .run(|s| {
            s.builder().name("lingering").spawn(|ctx| tether::blocking::recv(ctx, &rx)).unwrap();
            let spawn_line = line!() - 1;
            dump_until("leaky", |s| s.children.iter().any(|c| matches!(c.state, ChildState::Blocked { .. })));
            let report = check.finish().unwrap_err().to_string();
            assert!(report.contains("scope #") && report.contains("\"leaky\""), "{report}");
            assert!(report.contains(&format!("{}:{spawn_line}:", file!())), "the spawn site: {report}");
            assert!(report.contains("blocked for"), "the state: {report}");
            drop(tx);
        })
        .unwrap();
}

#[test]
fn dumping_while_eight_threads_spawn_and_exit_scopes_does_not_deadlock() {
    let _counts = counts();
    const SPAWNERS: usize = 8;
    const ROUNDS: usize = 200;
    let (done_tx, done_rx) = mpsc::channel();
    // The work runs on its own thread, so a deadlock fails the test (below) instead of hanging it.
    let worker = std::thread::spawn(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|outer| {
            let dumper = outer.spawn(|| {
                let mut dumps = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let dump = tether::dump();
                    let _ = (dump.to_string(), dump.to_json());
                    dumps += 1;
                }
                dumps
            });
            let spawners: Vec<_> = (0..SPAWNERS)
                .map(|i| {
                    outer.spawn(move || {
                        for _ in 0..ROUNDS {
                            ScopeBuilder::new()
                                .name(format!("stress-{i}"))
                                .run(|s| {
                                    s.spawn(|_| ());
                                    for _ in 0..4 {
                                        s.spawn_task(|ctx| tether::blocking::sleep(ctx, Duration::ZERO));
                                    }
                                    s.wait_all();
                                })
                                .unwrap();
                        }
                    })
                })
                .collect();
            for spawner in spawners {
                spawner.join().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(dumper.join().unwrap() > 0);
        });
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(Duration::from_secs(120)).expect("dumping while spawning deadlocked");
    worker.join().unwrap();
}

#[test]
fn wait_sites_cover_waits_and_joins() {
    let _counts = counts();
    ScopeBuilder::new()
        .name("waits")
        .run(|s| {
            let waiter = s.builder().name("waiter").spawn(|ctx| ctx.wait()).unwrap();
            let wait_line = line!() - 1;
            let scope = dump_until("waits", |s| {
                s.children.iter().any(|c| matches!(c.state, ChildState::Blocked { .. }))
            });
            let ChildState::Blocked { site, .. } = child_named(&scope, "waiter").state else {
                unreachable!()
            };
            assert_eq!(site.line(), wait_line, "`Canceller::wait` is a wait site");
            s.cancel();
            waiter.join().unwrap();
        })
        .unwrap();
    let _ = Location::caller();
}
