//! The scenarios of `benches/context.rs` on the Rust peers, in one run, so `benches/compare.sh`
//! can put the best peer next to tether and Go:
//!
//! - `cancellation_token/*`: tokio-util's `CancellationToken` (a check on an open and on a
//!   cancelled token, Go's `CancelTree` shape as a child-token chain, a parent with many children,
//!   Go's `CommonParentCancel` shape), with tether's own number in the same group where Go has no
//!   benchmark of that shape (`cancel_wide`).
//! - `pool_tasks/tasks=1000/*`: `rayon::scope` spawning 1,000 no-op tasks.
//! - `value_lookup/*`: a `thread_local!` and a tokio `task_local!` read next to `Context::value`.
//!
//! Run with `cargo bench --bench peers`. The parallel row (`cancellation_token/common_parent_cancel`)
//! runs on `BENCH_THREADS` threads, 2 when unset; at any other count its id ends in `/threads=N`
//! (see `benches/context.rs`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::cell::Cell;
use std::hint::black_box;

use tether::{Context, Key};
use tokio_util::sync::CancellationToken;

mod common;
use common::{parallel, spin, threads_suffix};

/// A chain of `depth` child tokens below `root`; the leaf keeps the chain registered.
fn token_chain(root: &CancellationToken, depth: usize) -> CancellationToken {
    let mut token = root.clone();
    for _ in 0..depth {
        token = token.child_token();
    }
    token
}

fn cancellation_token(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancellation_token");

    // Go's ErrOK / ErrCanceled, tether's `is_cancelled_ok` / `check_cancelled/is_cancelled`.
    let open = CancellationToken::new();
    group.bench_function("is_cancelled_open", |b| b.iter(|| black_box(black_box(&open).is_cancelled())));
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    group.bench_function("is_cancelled_cancelled", |b| {
        b.iter(|| black_box(black_box(&cancelled).is_cancelled()))
    });

    // Go's CancelTree, the shapes of tether's `cancel_tree` (build, cancel the root, drop).
    // There is no never-cancelled token, so no `root=background`.
    for depth in [1usize, 10, 100, 1000] {
        group.bench_function(format!("cancel_tree/depth={depth}/root=open"), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                let leaf = token_chain(&root, depth);
                root.cancel();
                drop(leaf);
            })
        });
        if depth == 1000 {
            // tokio-util removes a token from the tree when its last handle drops and moves its
            // children up, so the chain above, holding only the leaf, is flat by the time the root
            // is cancelled. Holding every handle keeps a real 1000-deep chain, tether's shape.
            group.bench_function(format!("cancel_tree/depth={depth}/root=open_all_held"), |b| {
                b.iter(|| {
                    let root = CancellationToken::new();
                    let mut chain = Vec::with_capacity(depth);
                    chain.push(root.child_token());
                    for i in 1..depth {
                        let next = chain[i - 1].child_token();
                        chain.push(next);
                    }
                    root.cancel();
                    drop(chain);
                })
            });
        }
        group.bench_function(format!("cancel_tree/depth={depth}/root=closed"), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                root.cancel();
                drop(token_chain(&root, depth));
            })
        });
    }

    // A parent with many live children, cancelled: tokio-util and tether side by side (Go has no
    // benchmark of this shape).
    {
        let children = 1_000usize;
        group.throughput(Throughput::Elements(children as u64));
        group.bench_function(format!("cancel_wide/children={children}/tokio_util"), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                let kids: Vec<_> = (0..children).map(|_| root.child_token()).collect();
                root.cancel();
                drop(kids);
            })
        });
        group.bench_function(format!("cancel_wide/children={children}/tether"), |b| {
            b.iter(|| {
                let root = Context::new();
                let kids: Vec<_> = (0..children).map(|_| root.child()).collect();
                root.cancel();
                drop(kids);
            })
        });
    }
    group.throughput(Throughput::Elements(1));

    // Go's CommonParentCancel: every core creates a child of one shared parent and cancels it.
    // A token carries no values, so the peer skips Go's (and tether's) `Value` lookup.
    let shared = CancellationToken::new();
    group.bench_function(format!("common_parent_cancel{}", threads_suffix()), |b| {
        b.iter_custom(|iters| {
            parallel(iters, || {
                let token = shared.child_token();
                spin();
                token.cancel();
                spin();
            })
        })
    });
    shared.cancel();
    group.finish();
}

/// Tasks spawned and joined per iteration in the pool comparison.
const TASKS: usize = 1_000;

fn pool_tasks(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("pool_tasks/tasks={TASKS}"));
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("rayon_scope", |b| {
        b.iter(|| {
            rayon::scope(|s| {
                for i in 0..TASKS {
                    s.spawn(move |_| {
                        black_box(i);
                    });
                }
            })
        })
    });
    group.bench_function("tether", |b| {
        b.iter(|| {
            tether::scope(|s| {
                for i in 0..TASKS {
                    s.spawn_task(move |_| {
                        black_box(i);
                    });
                }
                s.wait_all(); // run them all: the exit would skip tasks not yet started
            })
            .expect("no task fails")
        })
    });
    group.finish();
}

thread_local! {
    static THREAD_VALUE: Cell<usize> = const { Cell::new(7) };
}

tokio::task_local! {
    static TASK_VALUE: usize;
}

fn value_lookup(c: &mut Criterion) {
    static KEYS: [Key<usize>; 100] = [const { Key::new("k") }; 100];
    let mut group = c.benchmark_group("value_lookup");
    group.bench_function("thread_local", |b| b.iter(|| black_box(THREAD_VALUE.with(Cell::get))));
    // `sync_scope` binds the task-local without a runtime; the read is what a task pays.
    TASK_VALUE.sync_scope(7, || {
        group.bench_function("tokio_task_local", |b| b.iter(|| black_box(TASK_VALUE.with(|v| *v))));
    });
    // tether's lookup of a key bound at the root of 1 and of 100 bindings (a hit; Go's
    // `deep_value` in benches/context.rs looks up a missing key).
    for depth in [1usize, 100] {
        let mut ctx = Context::background();
        for (i, key) in KEYS.iter().take(depth).enumerate() {
            ctx = ctx.with_value(key, i);
        }
        group.bench_function(format!("tether/depth={depth}"), |b| {
            b.iter(|| black_box(black_box(&ctx).value(&KEYS[0])))
        });
    }
    group.finish();
}

criterion_group!(benches, cancellation_token, pool_tasks, value_lookup);
criterion_main!(benches);
