//! A hang at shutdown, and the report that finds it. A small service runs four children: two
//! workers that stop when cancelled, a flusher that calls a legacy API blocking on a plain
//! channel (deaf to cancellation), and a drainer that waits, through tether, on a *detached*
//! context (so the scope's cancellation does not reach it either). At shutdown the scope cancels
//! its children and waits: the workers stop at once, the other two do not. After 200 ms the
//! scope's watchdog prints the dump of the scope to stderr: which children are still running,
//! where each was spawned, and for the drainer where it is blocked and for how long. Then the same
//! dump in JSON, as a tool would read it, and finally both are released so the program ends by
//! itself.
//!
//! Run with `cargo run --release --example hang_report`.

use crossbeam_channel::{Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;
use tether::{Canceller, Context, Key, ScopeBuilder};

/// Shown in dumps: the value is not a secret.
static REGION: Key<&str> = Key::new("region").shown();
/// Not shown: a dump names the key only.
static API_TOKEN: Key<&str> = Key::new("api_token");

/// How long the scope may stay cancelled with running children before the watchdog reports.
const HANG_AFTER: Duration = Duration::from_millis(200);

/// The legacy call: blocks on a plain channel, deaf to cancellation.
fn legacy_flush(release: &Receiver<()>) {
    let _ = release.recv();
}

/// A well-behaved worker: waits for jobs, stops when cancelled.
fn worker(ctx: &Context, jobs: &Receiver<u32>) {
    while let Ok(job) = tether::blocking::recv(ctx, jobs) {
        println!("job {job} done");
    }
}

fn main() {
    let (_jobs_tx, jobs) = crossbeam_channel::unbounded::<u32>();
    let (release_tx, release) = crossbeam_channel::unbounded::<()>();
    let (report_tx, report) = crossbeam_channel::bounded::<tether::Dump>(1);
    let report_tx = Mutex::new(report_tx);
    let releaser = std::thread::spawn(move || release_after_report(report, release_tx));

    ScopeBuilder::new()
        .name("service")
        .value(&REGION, "eu-west-1")
        .value(&API_TOKEN, "do-not-print")
        .watchdog(HANG_AFTER, move |dump| {
            eprintln!("watchdog: shutdown is taking longer than {HANG_AFTER:?}\n{dump}");
            let _ = report_tx.lock().unwrap().try_send(dump.clone());
        })
        .run(|s| {
            for i in 0..2 {
                s.builder().name(format!("worker-{i}")).spawn(|ctx| worker(ctx, &jobs)).unwrap();
            }
            s.builder().name("flusher").spawn(|_| legacy_flush(&release)).unwrap();
            s.builder()
                .name("drainer")
                .spawn(|ctx| tether::blocking::recv(&ctx.detached(), &release))
                .unwrap();
            s.spawn(|ctx| ctx.wait_timeout(Duration::from_secs(3600)));
            println!("service up; shutting down");
            // The body returns: the exit cancels every child and waits for them.
        })
        .unwrap();
    releaser.join().unwrap();
    println!("service stopped");
}

/// Plays the operator: reads the watchdog's report, prints it as JSON, then unblocks the legacy
/// call so the scope can end.
fn release_after_report(report: Receiver<tether::Dump>, release: Sender<()>) {
    let dump = report.recv_timeout(Duration::from_secs(30)).expect("the watchdog reports");
    println!("the same dump as JSON:\n{}", dump.to_json());
    let service = &dump.scopes()[0];
    let stuck: Vec<_> = service.children.iter().filter_map(|c| c.name.as_deref()).collect();
    assert_eq!(stuck, ["flusher", "drainer"], "the workers stopped when cancelled");
    release.send(()).unwrap();
    release.send(()).unwrap();
}
