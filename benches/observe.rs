//! What the `tracing` and `metrics` features cost a spawn when nobody listens (no subscriber, no
//! recorder): the issue's target is at most 10 ns more per spawn. Features are per build, so the
//! same bench runs twice, and criterion compares the second run with the first's saved baseline:
//!
//! ```text
//! cargo bench --bench observe -- --save-baseline off
//! cargo bench --bench observe --features tracing,metrics -- --baseline off
//! ```
//!
//! Pool tasks, whose spawn is the cheapest (an allocation and a queue push), so a fixed cost per
//! spawn shows most: one task spawned and joined at a time (the join runs it inline: no
//! cross-thread noise), and a thousand spawned then waited for.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tether::Canceller;

/// Tasks per iteration.
const TASKS: usize = 1000;

fn spawn_task(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("spawn_task_join_inline/tasks=1000", |b| {
        b.iter(|| {
            tether::scope(|s| {
                for i in 0..TASKS {
                    black_box(s.spawn_task(move |_| black_box(i)).join().unwrap());
                }
            })
            .unwrap()
        })
    });
    group.bench_function("spawn_task_wait_all/tasks=1000", |b| {
        b.iter(|| {
            tether::scope(|s| {
                for i in 0..TASKS {
                    s.spawn_task(move |_| black_box(i));
                }
                s.wait_all();
            })
            .unwrap()
        })
    });
    group.finish();
    c.bench_function("observe/scope_open_close", |b| {
        b.iter(|| tether::scope(|s| black_box(s.context().is_cancelled())).unwrap())
    });
}

criterion_group!(benches, spawn_task);
criterion_main!(benches);
