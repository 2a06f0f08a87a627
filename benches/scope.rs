//! Spawning and joining 64 no-op threads in a `tether::scope`, next to `std::thread::scope` and
//! crossbeam's scope, in the same run. The target: tether at most 1.1x std per thread.
//!
//! Run with `cargo bench --bench scope`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

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

criterion_group!(benches, spawn_join_64);
criterion_main!(benches);
