//! Spawning and joining 64 no-op threads in a `tether::scope`, next to `std::thread::scope` and
//! crossbeam's scope, in the same run. The target: tether at most 1.1x std per thread.
//!
//! Two measurements: criterion's (each contender measured in turn), then an interleaved one that
//! alternates one scope of each contender per round and compares medians, so that load changes on
//! a shared machine hit all three alike. The interleaved ratio is the figure to quote.
//!
//! Run with `cargo bench --bench scope -- --warm-up-time 2 --measurement-time 6`.

use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::Duration;

mod common;
use common::{median, time};

/// Threads spawned and joined per iteration.
const THREADS: usize = 64;

fn spawn_join_64(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join/threads=64");
    group.throughput(Throughput::Elements(THREADS as u64));
    group.sample_size(30);
    group.bench_function("std_thread_scope", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for i in 0..THREADS {
                    s.spawn(move || black_box(i));
                }
            })
        })
    });
    group.bench_function("crossbeam_scope", |b| {
        b.iter(|| {
            crossbeam::thread::scope(|s| {
                for i in 0..THREADS {
                    s.spawn(move |_| black_box(i));
                }
            })
            .unwrap()
        })
    });
    group.bench_function("tether_scope", |b| {
        b.iter(|| {
            tether::scope(|s| {
                for i in 0..THREADS {
                    s.spawn(move |_| black_box(i));
                }
            })
            .unwrap()
        })
    });
    group.finish();
}

fn std_scope() {
    std::thread::scope(|s| {
        for i in 0..THREADS {
            s.spawn(move || black_box(i));
        }
    })
}

fn crossbeam_scope() {
    crossbeam::thread::scope(|s| {
        for i in 0..THREADS {
            s.spawn(move |_| black_box(i));
        }
    })
    .unwrap()
}

fn tether_scope() {
    tether::scope(|s| {
        for i in 0..THREADS {
            s.spawn(move |_| black_box(i));
        }
    })
    .unwrap()
}

/// Rounds of the interleaved measurement (after as many warm-up rounds as a tenth of them).
const ROUNDS: usize = 400;

/// One scope of each contender per round, in rotating order; medians per thread.
fn interleaved() {
    let contenders: [(&str, fn()); 3] = [
        ("std_thread_scope", std_scope),
        ("crossbeam_scope", crossbeam_scope),
        ("tether_scope", tether_scope),
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
    let per_thread = |d: Duration| d.as_secs_f64() * 1e6 / THREADS as f64;
    println!("interleaved, {ROUNDS} rounds, median per thread:");
    for ((name, _), m) in contenders.iter().zip(&medians) {
        println!(
            "  {name:<18} {:>7.2} us/thread   {:.3}x std",
            per_thread(*m),
            m.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
}

criterion_group!(benches, spawn_join_64);

fn main() {
    benches();
    // `cargo bench -- --test` (and `--list`) only check that the benches run.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        interleaved();
    }
    criterion::Criterion::default().configure_from_args().final_summary();
}
