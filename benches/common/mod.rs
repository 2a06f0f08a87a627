//! Helpers shared by the benches (each bench includes this file with `mod common;`).

#![allow(dead_code)] // each bench uses part of it

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Threads the scaling benchmarks run on: the `BENCH_THREADS` environment variable, 2 when it is
/// unset (the development machines' core count). Go's side of such a row runs with the same
/// `-cpu N` (`RunParallel` uses `GOMAXPROCS` goroutines).
pub fn threads() -> usize {
    match std::env::var("BENCH_THREADS") {
        Ok(n) => n.parse().ok().filter(|&n| n > 0).expect("BENCH_THREADS must be a positive integer"),
        Err(_) => 2,
    }
}

/// The suffix of a scaling row's id: none at the default of 2 threads (so the ids stay those
/// `benches/compare.sh` knows), `/threads=N` otherwise.
pub fn threads_suffix() -> String {
    match threads() {
        2 => String::new(),
        n => format!("/threads={n}"),
    }
}

/// Runs `body` `iters` times spread over [`threads`] threads (Go's `RunParallel`); returns the
/// wall time.
pub fn parallel<F: Fn() + Sync>(iters: u64, body: F) -> Duration {
    let n = threads() as u64;
    let per_thread = iters.div_ceil(n);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                for _ in 0..per_thread {
                    body();
                }
            });
        }
    });
    start.elapsed()
}

/// Go's `for i := 0; i < 100; i++ { x /= x + 1 }`, with `x := 0`. Go's compiler proves `x` stays
/// 0 and deletes the division: `go tool objdump -s BenchmarkCommonParentCancel.func1` on the
/// test binary shows only the counting loop (go1.27). So this is the counting loop alone, kept
/// by `black_box`. Two real 64-bit division chains cost about 3.2 µs per operation on the
/// development machine, 13 times Go's two counting loops, and made the benchmark measure
/// arithmetic rather than contexts.
pub fn spin() {
    for i in 0..100u32 {
        black_box(i);
    }
}

/// The wall time of one call of `f`.
pub fn time(f: fn()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The median of `v` (the upper one for an even length).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
