//! What a `tracing` subscriber sees of scopes (feature `tracing`): a span per scope and per child,
//! parented across threads and pool tasks, with the spawn site; one event per cancellation; a
//! child's error at WARN and its panic at ERROR. A recording layer, installed as the global
//! subscriber (pool workers and child threads must see it), keeps every span and event.
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use tether::{Canceller, Cause, Context, ScopeBuilder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Debug)]
struct SpanRecord {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Clone, Debug)]
struct EventRecord {
    level: Level,
    /// The span the event happened in.
    span: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Records {
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
}

static RECORDS: Mutex<Records> = Mutex::new(Records { spans: Vec::new(), events: Vec::new() });

fn records() -> MutexGuard<'static, Records> {
    RECORDS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the fields of a span or event as strings.
struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

struct Recorder;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx.span(id).and_then(|span| span.parent()).map(|p| p.id().into_u64());
        let name = attrs.metadata().name();
        records().spans.push(SpanRecord { id: id.into_u64(), name, parent, fields });
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|s| s.id().into_u64());
        records().events.push(EventRecord { level: *event.metadata().level(), span, fields });
    }
}

/// Installs the recorder once, serialises the tests (they read one global record) and clears
/// the record: what every test starts with.
fn recording() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    *records() = Records::default();
    guard
}

fn spans_named(name: &str) -> Vec<SpanRecord> {
    records().spans.iter().filter(|s| s.name == name).cloned().collect()
}

fn span(id: u64) -> SpanRecord {
    records().spans.iter().find(|s| s.id == id).cloned().expect("a recorded span")
}

fn events_with(message: &str) -> Vec<EventRecord> {
    records()
        .events
        .iter()
        .filter(|e| e.fields.get("message").is_some_and(|m| m == message))
        .cloned()
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(&'static str);

#[test]
fn a_thread_child_and_a_pool_task_run_in_spans_parented_to_their_scope() {
    let _serial = recording();
    let test_thread = std::thread::current().id();
    let request = tracing::info_span!("request");
    let (thread_ran_on, task_ran_on, dump_id) = request.in_scope(|| {
        ScopeBuilder::new()
            .name("handler")
            .run(|s| {
                let thread = s.spawn(|_| {
                    tracing::info!("in the thread");
                    std::thread::current().id()
                });
                let task = s.spawn_task(|_| {
                    tracing::info!("in the task");
                    std::thread::current().id()
                });
                // Not `join` or `wait_all`, which may run the task here: a pool worker takes it.
                while !task.is_finished() {
                    std::thread::yield_now();
                }
                let dump = tether::dump();
                let this =
                    dump.scopes().iter().find(|s| s.name.as_deref() == Some("handler")).expect("listed");
                (thread.join().unwrap(), task.join().unwrap(), this.id)
            })
            .unwrap()
    });
    assert_ne!(thread_ran_on, test_thread);
    assert_ne!(task_ran_on, test_thread, "the task ran on a pool worker");

    let request = request.id().unwrap().into_u64();
    let scopes = spans_named("scope");
    let [scope] = &scopes[..] else { panic!("one scope span") };
    assert_eq!(scope.parent, Some(request), "the scope's span is a child of the caller's");
    assert_eq!(scope.fields["name"], "handler");
    assert_eq!(scope.fields["scope.id"], dump_id.to_string(), "the id a dump shows");
    for (message, kind) in [("in the thread", "thread"), ("in the task", "task")] {
        let [event] = &events_with(message)[..] else { panic!("one event {message:?}") };
        let child = span(event.span.expect("the event is in a span"));
        assert_eq!((child.name, child.parent), ("child", Some(scope.id)), "{message}");
        assert_eq!(child.fields["kind"], kind);
    }
}

#[test]
fn the_spawn_site_fields_are_the_file_and_line_of_the_spawn_call() {
    let _serial = recording();
    let mut lines = Vec::new();
    let scope_line = line!() + 1;
    tether::scope(|s| {
        lines.push((line!(), s.spawn(|_| ()).join().unwrap()));
        lines.push((line!(), s.builder().name("named").spawn(|_| ()).unwrap().join().unwrap()));
        lines.push((line!(), s.spawn_task(|_| ()).join().unwrap()));
        lines.push((line!(), s.try_spawn(|_| ()).ok().unwrap().join().unwrap()));
        lines.push((line!(), s.try_spawn_task(|_| ()).ok().unwrap().join().unwrap()));
        lines.push((line!(), s.spawn_fallible(|_| Ok::<_, Failure>(())).join().unwrap().unwrap()));
        lines.push((line!(), s.spawn_task_fallible(|_| Ok::<_, Failure>(())).join().unwrap().unwrap()));
        lines.push((line!(), s.spawn_future(|_| async {}).join().unwrap()));
    })
    .unwrap();

    let scopes = spans_named("scope");
    let [scope] = &scopes[..] else { panic!("one scope span") };
    assert_eq!(scope.fields["loc.file"], file!());
    assert_eq!(scope.fields["loc.line"], scope_line.to_string());
    let children = spans_named("child");
    let recorded: Vec<(&str, String)> =
        children.iter().map(|c| (c.fields["loc.file"].as_str(), c.fields["loc.line"].clone())).collect();
    let expected: Vec<(&str, String)> = lines.iter().map(|(line, ())| (file!(), line.to_string())).collect();
    assert_eq!(recorded, expected);
    assert!(children.iter().all(|c| c.fields.contains_key("loc.col")));
    assert_eq!(children[1].fields["name"], "named");
}

#[test]
fn a_cancellation_is_one_event_at_its_origin_however_many_nodes_it_reaches() {
    let _serial = recording();
    let root = Context::new();
    let branches: Vec<Context> = (0..100).map(|_| root.child()).collect();
    let leaves: Vec<Context> = branches.iter().flat_map(|b| (0..10).map(|_| b.child())).collect();
    ScopeBuilder::new()
        .parent(&root)
        .run(|s| {
            for _ in 0..8 {
                s.spawn(|ctx| ctx.wait());
                s.spawn_task(|ctx| ctx.wait());
            }
            root.cancel_with(Cause::custom(Failure("stop the tree")));
        })
        .unwrap();
    assert!(leaves.iter().all(|leaf| leaf.is_cancelled()));

    let cancellations = events_with("cancelled");
    let [event] = &cancellations[..] else {
        panic!("one event, not {}: {cancellations:?}", cancellations.len())
    };
    assert_eq!(event.fields["cause"], "stop the tree");
    assert_eq!(event.fields["cause.kind"], "custom");
    assert_eq!(event.level, Level::INFO);
}

#[test]
fn a_scope_exit_and_a_deadline_are_each_one_event_naming_their_cause() {
    let _serial = recording();
    tether::scope(|s| {
        s.spawn(|ctx| ctx.wait());
    })
    .unwrap();
    let deadline =
        ScopeBuilder::new().timeout(std::time::Duration::ZERO).run(|s| s.context().wait()).unwrap();
    assert_eq!(deadline, Cause::DeadlineExceeded);

    let kinds: Vec<(Level, String)> =
        events_with("cancelled").iter().map(|e| (e.level, e.fields["cause.kind"].clone())).collect();
    assert_eq!(kinds, [(Level::DEBUG, "scope_exited".into()), (Level::INFO, "deadline_exceeded".into())]);
}

#[test]
fn a_childs_error_is_a_warning_and_its_panic_an_error_in_the_childs_span() {
    let _serial = recording();
    // One scope each: the first failure cancels its scope, and a task cancelled before it
    // starts is skipped.
    let err = tether::scope(|s| drop(s.spawn_fallible(|_| Err::<(), _>(Failure("bad input"))))).unwrap_err();
    assert_eq!(err.to_string(), "bad input");
    let err = tether::scope(|s| {
        let task = s.spawn_task_fallible(|_| Err::<(), _>(Failure("bad task")));
        assert!(task.join().unwrap().is_err());
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "bad task");
    tether::scope(|s| assert!(s.spawn(|_| panic!("boom")).join().unwrap_err().is_panic())).unwrap();
    tether::scope(|s| assert!(s.spawn_task(|_| panic!("task boom")).join().unwrap_err().is_panic())).unwrap();

    let failures = events_with("child failed");
    let mut errors: Vec<&str> = failures.iter().map(|e| e.fields["error"].as_str()).collect();
    errors.sort();
    assert_eq!(errors, ["bad input", "bad task"]);
    let panics = events_with("child panicked");
    let mut messages: Vec<&str> = panics.iter().map(|e| e.fields["panic"].as_str()).collect();
    messages.sort();
    assert_eq!(messages, ["boom", "task boom"]);
    for (event, level) in
        failures.iter().map(|e| (e, Level::WARN)).chain(panics.iter().map(|e| (e, Level::ERROR)))
    {
        assert_eq!(event.level, level);
        assert_eq!(span(event.span.expect("in a span")).name, "child");
    }
}
