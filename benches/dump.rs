//! `tether::dump()` of a scope with 10,000 live children (the budget: under 10 ms), and how
//! long a dump holds a scope's ledger lock (the longest it can block a spawn into that scope; the
//! budget: 1 ms), measured by timing the spawns of a thread that spawns while another dumps.
//!
//! The children are pool tasks queued behind two tasks that hold the pool's workers, so all
//! 10,000 are live (queued) while the dumps run; they are released at the end.
//!
//! Run with `cargo bench --bench dump -- --warm-up-time 1 --measurement-time 3`.

use criterion::{Criterion, criterion_group};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

const CHILDREN: usize = 10_000;

fn dump_10k(c: &mut Criterion) {
    let (release_tx, release) = crossbeam_channel::unbounded::<()>();
    tether::ScopeBuilder::new()
        .name("bench")
        .run(|s| {
            for _ in 0..tether::pool::threads() {
                s.spawn_task(|_| release.recv());
            }
            for _ in 0..CHILDREN {
                s.spawn_task(|_| ());
            }
            let mut group = c.benchmark_group(format!("dump/children={CHILDREN}"));
            group.sample_size(20);
            group.bench_function("snapshot", |b| b.iter(tether::dump));
            group.bench_function("snapshot_and_text", |b| b.iter(|| tether::dump().to_string()));
            group.bench_function("snapshot_and_json", |b| b.iter(|| tether::dump().to_json()));
            group.finish();
            drop(release_tx);
            s.wait_all();
        })
        .unwrap();
}

/// The longest spawn of 20,000 into a scope holding 10,000 live tasks while another thread dumps
/// in a loop, next to the longest without the dumper, printed (a bound, not a mean: criterion's
/// statistics do not apply).
fn spawn_while_dumping() {
    for dumping in [false, true] {
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        let stop = AtomicBool::new(false);
        let worst = tether::scope(|s| {
            for _ in 0..tether::pool::threads() {
                s.spawn_task(|_| release.recv());
            }
            for _ in 0..CHILDREN {
                s.spawn_task(|_| ());
            }
            let dumper = dumping.then(|| {
                s.spawn(|_| {
                    let mut n = 0;
                    while !stop.load(SeqCst) {
                        std::hint::black_box(tether::dump());
                        n += 1;
                    }
                    n
                })
            });
            let mut worst = Duration::ZERO;
            for _ in 0..2 * CHILDREN {
                let start = Instant::now();
                s.spawn_task(|_| ());
                worst = worst.max(start.elapsed());
            }
            stop.store(true, SeqCst);
            let dumps = dumper.map(|d| d.join().unwrap());
            drop(release_tx);
            s.wait_all();
            (worst, dumps)
        })
        .unwrap();
        println!(
            "spawn_while_dumping/dumper={dumping}: longest spawn {:?}, dumps taken {:?}",
            worst.0, worst.1
        );
    }
}

criterion_group!(benches, dump_10k);

fn main() {
    benches();
    // `cargo bench -- --test` (and `--list`) only check that the benches run.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        spawn_while_dumping();
    }
    criterion::Criterion::default().configure_from_args().final_summary();
}
