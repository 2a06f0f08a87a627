//! Pool tasks on real workloads, next to rayon in the same run (issue 17): a recursive `fib(32)`,
//! a parallel quicksort of 2M `u32`, and a batch of 10,000 small tasks spawned from a thread that
//! is not a pool worker.
//!
//! - `fib/n=32`: Fibonacci by naive recursion, sequential below 18, forking both calls at every
//!   level above: `tether::join` against `rayon::join`, and (for the record) the form users wrote
//!   before `join` existed, a nested `tether::scope` with a `spawn_task` and its `join` per fork.
//!   `sequential` is the same recursion with no fork.
//! - `quicksort/len=2M`: partition (Lomuto, middle pivot), fork the two halves down to 4,096
//!   elements, sort those sequentially; the input is the same pseudo-random permutation each
//!   iteration (a copy is made outside the timed part).
//! - `batch/tasks=10000`: 10,000 tasks of about 2 µs each (a dependent xorshift chain) spawned
//!   from the benchmark's own thread into `tether::scope` / `rayon::scope`.
//!
//! `WORKERS` sets both pools' worker count (default: one per core); the group names carry it, so
//! `WORKERS=1` and the default can be run into the same criterion directory (`benches/compare.sh`
//! runs both). Run with `cargo bench --bench workloads -- --warm-up-time 1 --measurement-time 3`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// Below this, `fib` recurses sequentially.
const FIB_CUTOFF: u32 = 18;
/// Below this many elements, quicksort sorts sequentially.
const SORT_CUTOFF: usize = 4096;
/// Tasks per batch.
const BATCH: usize = 10_000;
/// Steps of one batch task's dependent xorshift chain: about 2 µs on the development machine.
const TASK_STEPS: u64 = 1_000;

fn fib_seq(n: u32) -> u64 {
    if n < 2 { n as u64 } else { fib_seq(n - 1) + fib_seq(n - 2) }
}

fn fib_rayon(n: u32) -> u64 {
    if n < FIB_CUTOFF {
        return fib_seq(n);
    }
    let (a, b) = rayon::join(|| fib_rayon(n - 1), || fib_rayon(n - 2));
    a + b
}

fn fib_tether_join(n: u32) -> u64 {
    if n < FIB_CUTOFF {
        return fib_seq(n);
    }
    let (a, b) = tether::join(|_| fib_tether_join(n - 1), |_| fib_tether_join(n - 2));
    a + b
}

fn fib_tether_scope(n: u32) -> u64 {
    if n < FIB_CUTOFF {
        return fib_seq(n);
    }
    tether::scope(|s| {
        let b = s.spawn_task(|_| fib_tether_scope(n - 2));
        let a = fib_tether_scope(n - 1);
        a + b.join().unwrap()
    })
    .unwrap()
}

/// Lomuto partition around the middle element; returns the pivot's final index.
fn partition(v: &mut [u32]) -> usize {
    let last = v.len() - 1;
    v.swap(v.len() / 2, last);
    let pivot = v[last];
    let mut store = 0;
    for i in 0..last {
        if v[i] < pivot {
            v.swap(i, store);
            store += 1;
        }
    }
    v.swap(store, last);
    store
}

fn sort_rayon(v: &mut [u32]) {
    if v.len() <= SORT_CUTOFF {
        return v.sort_unstable();
    }
    let mid = partition(v);
    let (lo, hi) = v.split_at_mut(mid);
    rayon::join(|| sort_rayon(lo), || sort_rayon(&mut hi[1..]));
}

fn sort_tether_join(v: &mut [u32]) {
    if v.len() <= SORT_CUTOFF {
        return v.sort_unstable();
    }
    let mid = partition(v);
    let (lo, hi) = v.split_at_mut(mid);
    tether::join(|_| sort_tether_join(lo), |_| sort_tether_join(&mut hi[1..]));
}

fn sort_tether_scope(v: &mut [u32]) {
    if v.len() <= SORT_CUTOFF {
        return v.sort_unstable();
    }
    let mid = partition(v);
    let (lo, hi) = v.split_at_mut(mid);
    tether::scope(|s| {
        let h = s.spawn_task(|_| sort_tether_scope(&mut hi[1..]));
        sort_tether_scope(lo);
        h.join().unwrap();
    })
    .unwrap()
}

/// A sort under test.
type Sort = fn(&mut [u32]);

/// A permutation-like pseudo-random input (xorshift), the same every run.
fn input(len: usize) -> Vec<u32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        })
        .collect()
}

/// One batch task: a dependent xorshift chain the compiler cannot shorten (an affine chain such
/// as an LCG it can: it composes steps, and 1,500 of them took 0.3 µs).
fn task_work(seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..TASK_STEPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn batch_tether() {
    tether::scope(|s| {
        for i in 0..BATCH as u64 {
            s.spawn_task(move |_| {
                black_box(task_work(i));
            });
        }
        s.wait_all();
    })
    .unwrap()
}

fn batch_rayon() {
    rayon::scope(|s| {
        for i in 0..BATCH as u64 {
            s.spawn(move |_| {
                black_box(task_work(i));
            });
        }
    })
}

/// Both pools' worker count: `WORKERS`, else one per core.
fn workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::env::var("WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(cores)
}

fn workloads(c: &mut Criterion) {
    let n = workers();
    tether::pool::configure(n).expect("the pool is configured before any task");
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().expect("rayon's global pool, once");
    assert_eq!(fib_tether_join(25), fib_seq(25));

    let mut group = c.benchmark_group(format!("fib/n=32/workers={n}"));
    group.sample_size(20);
    group.bench_function("sequential", |b| b.iter(|| fib_seq(black_box(32))));
    group.bench_function("rayon_join", |b| b.iter(|| fib_rayon(black_box(32))));
    group.bench_function("tether_join", |b| b.iter(|| fib_tether_join(black_box(32))));
    group.bench_function("tether_nested_scope", |b| b.iter(|| fib_tether_scope(black_box(32))));
    group.finish();

    let data = input(2_000_000);
    let mut group = c.benchmark_group(format!("quicksort/len=2M/workers={n}"));
    group.sample_size(20);
    let sorts: [(&str, Sort); 3] = [
        ("rayon_join", sort_rayon),
        ("tether_join", sort_tether_join),
        ("tether_nested_scope", sort_tether_scope),
    ];
    for (name, sort) in sorts {
        group.bench_function(name, |b| {
            b.iter_batched_ref(|| data.clone(), |v| sort(v), BatchSize::LargeInput);
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("batch/tasks=10000/workers={n}"));
    group.sample_size(20);
    group.bench_function("rayon_scope", |b| b.iter(batch_rayon));
    group.bench_function("tether_scope", |b| b.iter(batch_tether));
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
