//! Spawning and joining 1,000 no-op pool tasks in a `tether::scope`, next to `rayon::scope` and a
//! thread per child (`std::thread::scope`), in the same run. The target: tether at most
//! 1.5x rayon per task.
//!
//! Each contender runs all its children to completion (tether: `wait_all` before the exit, which
//! would otherwise skip the tasks not yet started). Two measurements, as in `benches/scope.rs`:
//! criterion's, then an interleaved one (one scope of each contender per round, medians) whose
//! ratio is the figure to quote.
//!
//! Run with `cargo bench --bench tasks -- --warm-up-time 2 --measurement-time 6`.

use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Tasks spawned and joined per iteration.
const TASKS: usize = 1000;

fn tether_tasks() {
    tether::scope(|s| {
        for i in 0..TASKS {
            s.spawn_task(move |_| {
                black_box(i);
            });
        }
        s.wait_all();
    })
    .unwrap()
}

fn rayon_scope() {
    rayon::scope(|s| {
        for i in 0..TASKS {
            s.spawn(move |_| {
                black_box(i);
            });
        }
    })
}

fn thread_per_child() {
    std::thread::scope(|s| {
        for i in 0..TASKS {
            s.spawn(move || black_box(i));
        }
    })
}

fn spawn_join_1000(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join/tasks=1000");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(20);
    group.bench_function("tether_spawn_task", |b| b.iter(tether_tasks));
    group.bench_function("rayon_scope", |b| b.iter(rayon_scope));
    group.bench_function("std_thread_per_child", |b| b.iter(thread_per_child));
    group.finish();
}

/// Rounds of the interleaved measurement (after as many warm-up rounds as a tenth of them).
const ROUNDS: usize = 300;

fn time(f: fn()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One scope of each contender per round, in rotating order; medians per task.
fn interleaved() {
    let contenders: [(&str, fn()); 3] = [
        ("rayon_scope", rayon_scope),
        ("tether_spawn_task", tether_tasks),
        ("std_thread_per_child", thread_per_child),
    ];
    let mut times = vec![Vec::with_capacity(ROUNDS); contenders.len()];
    for round in 0..ROUNDS + ROUNDS / 10 {
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            let t = time(contenders[i].1);
            if round >= ROUNDS / 10 {
                times[i].push(t);
            }
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let per_task = |d: Duration| d.as_secs_f64() * 1e9 / TASKS as f64;
    println!(
        "interleaved, {ROUNDS} rounds, median per task ({} pool threads, {} rayon threads):",
        tether::pool::threads(),
        rayon::current_num_threads()
    );
    for ((name, _), m) in contenders.iter().zip(&medians) {
        println!(
            "  {name:<22} {:>9.1} ns/task   {:.3}x rayon",
            per_task(*m),
            m.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
}

criterion_group!(benches, spawn_join_1000);

fn main() {
    // `cargo bench -- --test` (and `--list`) only check that the benches run.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        interleaved();
    }
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
