//! Cancellation at a scale Go's benchmarks do not reach: a root with 1,000,000 live children
//! (`wide`) and a 1,000,000-deep chain (`deep`), each built, cancelled from the root and dropped,
//! with tokio-util's `CancellationToken` in the same group. `*/cancel_drop` times only the cancel
//! and the drop (the tree is built in `iter_batched`'s untimed setup).
//!
//! `scale/wide=*/*/build_parallel_cancel_drop` builds the wide tree from `BENCH_THREADS` threads
//! at once (default 2; each makes its share of the children of the one root, so they contend on
//! it), then cancels the root and drops the tree; at a thread count other than 2 the id ends in
//! `/threads=N`.
//!
//! Each iteration takes a noticeable fraction of a second, so the groups use criterion's minimum
//! of 10 flat samples of one iteration each. Run with `cargo bench --bench scale`.
//!
//! Memory retained after dropping uncancelled children is measured by
//! `examples/retained_memory.rs` (it needs a counting global allocator, which a criterion binary
//! shares with criterion itself).

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use tether::Context;
use tokio_util::sync::CancellationToken;

mod common;
use common::{threads, threads_suffix};

const N: usize = 1_000_000;

/// `N` children of `root` made by `threads()` threads at once, each making its share.
fn in_parallel<T: Send>(make: impl Fn() -> T + Sync) -> Vec<Vec<T>> {
    let n = threads();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..n).map(|_| s.spawn(|| (0..N / n).map(|_| make()).collect())).collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

fn tether_wide(root: &Context) -> Vec<Context> {
    (0..N).map(|_| root.child()).collect()
}

fn tether_deep(root: &Context) -> Context {
    let mut ctx = root.clone();
    for _ in 0..N {
        ctx = ctx.child();
    }
    ctx
}

fn token_wide(root: &CancellationToken) -> Vec<CancellationToken> {
    (0..N).map(|_| root.child_token()).collect()
}

/// Every handle held: tokio-util drops a token from the tree with its last handle, so holding
/// only the leaf would leave a flat tree, not a chain.
fn token_deep(root: &CancellationToken) -> Vec<CancellationToken> {
    let mut chain = Vec::with_capacity(N);
    chain.push(root.child_token());
    for i in 1..N {
        let next = chain[i - 1].child_token();
        chain.push(next);
    }
    chain
}

fn scale(c: &mut Criterion) {
    for shape in ["wide", "deep"] {
        let mut group = c.benchmark_group(format!("scale/{shape}={N}"));
        group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
        group.throughput(Throughput::Elements(N as u64));

        group.bench_function("tether/build_cancel_drop", |b| {
            b.iter(|| {
                let root = Context::new();
                let tree = match shape {
                    "wide" => tether_wide(&root),
                    _ => vec![tether_deep(&root)],
                };
                root.cancel();
                drop(tree);
            })
        });
        group.bench_function("tether/cancel_drop", |b| {
            b.iter_batched(
                || {
                    let root = Context::new();
                    let tree = match shape {
                        "wide" => tether_wide(&root),
                        _ => vec![tether_deep(&root)],
                    };
                    (root, tree)
                },
                |(root, tree)| {
                    root.cancel();
                    drop(tree);
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function("tokio_util/build_cancel_drop", |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                let tree = match shape {
                    "wide" => token_wide(&root),
                    _ => token_deep(&root),
                };
                root.cancel();
                drop(tree);
            })
        });
        group.bench_function("tokio_util/cancel_drop", |b| {
            b.iter_batched(
                || {
                    let root = CancellationToken::new();
                    let tree = match shape {
                        "wide" => token_wide(&root),
                        _ => token_deep(&root),
                    };
                    (root, tree)
                },
                |(root, tree)| {
                    root.cancel();
                    drop(tree);
                },
                BatchSize::PerIteration,
            )
        });
        if shape == "wide" {
            group.bench_function(format!("tether/build_parallel_cancel_drop{}", threads_suffix()), |b| {
                b.iter(|| {
                    let root = Context::new();
                    let tree = in_parallel(|| root.child());
                    root.cancel();
                    drop(tree);
                })
            });
            group.bench_function(format!("tokio_util/build_parallel_cancel_drop{}", threads_suffix()), |b| {
                b.iter(|| {
                    let root = CancellationToken::new();
                    let tree = in_parallel(|| root.child_token());
                    root.cancel();
                    drop(tree);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, scale);
criterion_main!(benches);
