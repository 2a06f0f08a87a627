//! Spawning and joining 1,000 no-op pool tasks in a `tether::scope`, next to `rayon::scope` and a
//! thread per child (`std::thread::scope`), in the same run. The target: tether at most
//! 1.5x rayon per task.
//!
//! Each contender runs all its children to completion (tether: `wait_all` before the exit, which
//! would otherwise skip the tasks not yet started). The two pools are measured three ways:
//! criterion's (each contender back to back for seconds); interleaved blocks (after a pause, 40
//! scopes of each pool in rotating order, the first 10 not recorded; medians), which cancels the
//! machine's drift; and interleaved cold (a pause before each scope, so the pool starts asleep).
//! One scope per contender per round, as an earlier version did, measures neither: on two cores,
//! the pool that just ran keeps spinning down while the other one runs, and steals its CPU.
//!
//! The thread-per-child contender is measured on its own, after the pools: a block of it starts
//! and ends 1,000 OS threads per scope, and on the 2-core development machine rayon's figure
//! in the blocks that follow such a storm drops from about 380 to about 180 ns per task (one of
//! its workers then runs the whole scope, as it always does with `RAYON_NUM_THREADS=1`), while
//! tether's does not change. The blocks are therefore measured twice: pools alone, and with a
//! storm of threads before every block, so both of rayon's figures are in the same run. Run with
//! `TETHER_POOL_THREADS=1 RAYON_NUM_THREADS=1` as well to compare one worker each.
//!
//! Run with `cargo bench --bench tasks -- --warm-up-time 2 --measurement-time 6`.

use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::Duration;

mod common;
use common::{median, time};

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
const ROUNDS: usize = 20;
/// Scopes per contender per round; the first [`SETTLE`] of each block are not recorded.
const BLOCK: usize = 40;
/// Scopes run first in each block, unrecorded, after a [`COLD_PAUSE`]: the previous
/// contender's pool has fallen asleep (two pools spinning down on two cores steal each other's
/// CPU) and this one reaches its steady state, with all its workers busy, as in criterion's loop.
const SETTLE: usize = 10;
/// Pause before each scope of the cold measurement: longer than either pool spins before it
/// sleeps, so each scope starts with its pool asleep.
const COLD_PAUSE: Duration = Duration::from_millis(2);

/// Prints the medians per task of `times` (one list per contender), and each against the first.
fn report(title: &str, contenders: &[(&str, fn())], times: Vec<Vec<Duration>>) {
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let per_task = |d: Duration| d.as_secs_f64() * 1e9 / TASKS as f64;
    println!(
        "{title} ({} pool threads, {} rayon threads):",
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

/// Scopes of a thread per child run before each block of the "after thread storms" rotation.
const STORM: usize = 4;

/// Blocks: after a pause (and, if `storm`, a few scopes of a thread per child), scopes of each
/// pool back to back in rotating order, so slow drift of the machine cancels out while each pool
/// is measured in a run of its own.
fn blocks(pools: &[(&str, fn())], storm: bool) -> Vec<Vec<Duration>> {
    let mut warm = vec![Vec::new(); pools.len()];
    for round in 0..ROUNDS + ROUNDS / 10 {
        for k in 0..pools.len() {
            let i = (round + k) % pools.len();
            if storm {
                (0..STORM).for_each(|_| thread_per_child());
            }
            std::thread::sleep(COLD_PAUSE);
            for b in 0..BLOCK {
                let t = time(pools[i].1);
                if round >= ROUNDS / 10 && b >= SETTLE {
                    warm[i].push(t);
                }
            }
        }
    }
    warm
}

/// Cold: one scope at a time after a pause, each pool starting asleep (a scope in a program that
/// spawns tasks now and then).
fn cold(pools: &[(&str, fn())]) -> Vec<Vec<Duration>> {
    let mut cold = vec![Vec::new(); pools.len()];
    for round in 0..ROUNDS * 4 {
        for k in 0..pools.len() {
            let i = (round + k) % pools.len();
            std::thread::sleep(COLD_PAUSE);
            cold[i].push(time(pools[i].1));
        }
    }
    cold
}

fn interleaved() {
    let pools: [(&str, fn()); 2] = [("rayon_scope", rayon_scope), ("tether_spawn_task", tether_tasks)];
    let title = format!("{ROUNDS} rounds of {BLOCK}, median per task");
    report(&format!("interleaved blocks, pools alone, {title}"), &pools, blocks(&pools, false));
    report(
        &format!("interleaved cold ({COLD_PAUSE:?} pause before each scope), median per task"),
        &pools,
        cold(&pools),
    );
    let stormed = blocks(&pools, true);
    report(
        &format!("interleaved blocks, {STORM} thread-per-child scopes before each, {title}"),
        &pools,
        stormed,
    );
    // A thread per child is a hundred times slower: a few scopes are enough.
    let threads: Vec<Duration> = (0..12).map(|_| time(thread_per_child)).collect();
    let per_task = median(threads).as_secs_f64() * 1e9 / TASKS as f64;
    println!("thread per child (std::thread::scope), median of 12 scopes: {per_task:.1} ns/task");
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
