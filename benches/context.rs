//! Benchmarks of the cancellation core, named and shaped after Go's `context/benchmark_test.go`
//! so the numbers compare one to one (`benches/compare.sh` runs Go's next to these).
//!
//! Go's `b.RunParallel` runs the body on GOMAXPROCS goroutines; [`parallel`] does the same with
//! `BENCH_THREADS` OS threads (default 2) and reports wall time per operation, as Go does.
//!
//! **Thread count.** The parallel rows (`common_parent_cancel`, `with_timeout/*`,
//! `context_cancel_done`) run on `BENCH_THREADS` threads, 2 when unset; at any other count their
//! ids end in `/threads=N`. Compare with Go at the same count:
//! `BENCH_THREADS=8 cargo bench --bench context` next to `go test -bench ... -cpu 8`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tether::{Canceller, Context, Key};

mod common;
use common::{parallel, spin, threads_suffix};

const HOUR: Duration = Duration::from_secs(3600);

static KEY: Key<&'static str> = Key::new("key");

fn common_parent_cancel(c: &mut Criterion) {
    let root = Context::background().with_value(&KEY, "value");
    let shared = root.child();
    c.bench_function(&format!("common_parent_cancel{}", threads_suffix()), |b| {
        b.iter_custom(|iters| {
            parallel(iters, || {
                let ctx = shared.child();
                assert_eq!(ctx.value(&KEY), Some(&"value"));
                spin();
                ctx.cancel();
                spin();
            })
        })
    });
    shared.cancel();
}

fn with_timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group("with_timeout");
    for concurrency in [40usize, 4_000, 400_000] {
        let root = Context::background();
        // Pending timers held for the whole measurement, as Go's benchmark does.
        let pending: Vec<Context> = (0..concurrency).map(|_| root.with_timeout(HOUR)).collect();
        let id = format!("concurrency={concurrency}{}", threads_suffix());
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                parallel(iters, || {
                    let batch: [Context; 10] = std::array::from_fn(|_| root.with_timeout(HOUR));
                    for ctx in &batch {
                        ctx.cancel();
                    }
                })
            })
        });
        for ctx in &pending {
            ctx.cancel();
        }
    }
    group.finish();
}

/// Go's `buildContextTree`: a chain of `depth` children below `root`. The leaf is returned so the
/// chain stays registered until the caller drops it (Go's discarded contexts stay registered in
/// their parents until cancelled or collected), so `root=open` cancels a real 1000-deep chain.
fn build_tree(root: &Context, depth: usize) -> Context {
    let mut ctx = root.clone();
    for _ in 0..depth {
        ctx = ctx.child();
    }
    ctx
}

fn cancel_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancel_tree");
    for depth in [1usize, 10, 100, 1000] {
        // Every variant includes dropping the chain (Go pays for it later, in its GC).
        group.bench_function(format!("depth={depth}/root=background"), |b| {
            b.iter(|| drop(build_tree(&Context::background(), depth)))
        });
        group.bench_function(format!("depth={depth}/root=open"), |b| {
            b.iter(|| {
                let root = Context::new();
                let leaf = build_tree(&root, depth);
                root.cancel(); // propagates down the live 1000-deep chain
                drop(leaf);
            })
        });
        group.bench_function(format!("depth={depth}/root=closed"), |b| {
            b.iter(|| {
                let root = Context::new();
                root.cancel();
                drop(build_tree(&root, depth));
            })
        });
    }
    group.finish();
}

fn check_cancelled(c: &mut Criterion) {
    let ctx = Context::new();
    ctx.cancel();
    let mut group = c.benchmark_group("check_cancelled");
    group.bench_function("err", |b| b.iter(|| black_box(black_box(&ctx).err())));
    group.bench_function("is_cancelled", |b| b.iter(|| black_box(black_box(&ctx).is_cancelled())));
    // Go's `select { case <-ctx.Done(): default: }` asks for `Done()` every time: so does this.
    group.bench_function("done", |b| b.iter(|| black_box(black_box(&ctx).done().try_recv().is_err())));
    group.finish();
}

fn context_cancel_done(c: &mut Criterion) {
    let ctx = Context::new();
    c.bench_function(&format!("context_cancel_done{}", threads_suffix()), |b| {
        b.iter_custom(|iters| {
            parallel(iters, || {
                // Go's body: `select { case <-ctx.Done(): default: }`, `Done()` called each time.
                black_box(black_box(&ctx).done().try_recv().is_err());
            })
        })
    });
}

fn deep_value(c: &mut Criterion) {
    static KEYS: [Key<usize>; 100] = [const { Key::new("k") }; 100];
    static MISSING: Key<usize> = Key::new("missing");
    // Many missing keys, read round robin: a key's hash comes from its address, which changes
    // with every build and (ASLR) every run, so one key's cost is one draw; these give the mean.
    static OTHERS: [Key<usize>; 64] = [const { Key::new("missing") }; 64];
    let mut group = c.benchmark_group("deep_value");
    for depth in [1usize, 10, 20, 30, 50, 100] {
        let mut ctx = Context::background();
        for (i, key) in KEYS.iter().take(depth).enumerate() {
            ctx = ctx.with_value(key, i);
        }
        group.bench_function(format!("same_thread/depth={depth}"), |b| {
            b.iter(|| black_box(black_box(&ctx).value(&MISSING)))
        });
        // A hit: the key bound first (at the root of the chain), read through the whole chain.
        group.bench_function(format!("same_thread_hit/depth={depth}"), |b| {
            b.iter(|| black_box(black_box(&ctx).value(&KEYS[0])))
        });
        if depth == 1 || depth == 10 || depth == 100 {
            group.bench_function(format!("same_thread_64_missing_keys/depth={depth}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 63;
                    black_box(black_box(&ctx).value(&OTHERS[i]))
                })
            });
            // Every bound key, read round robin: the hit's mean over key addresses (one key's
            // path through the trie is one draw, as for the missing keys above).
            group.bench_function(format!("same_thread_all_hit_keys/depth={depth}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i += 1;
                    if i == depth {
                        i = 0;
                    }
                    black_box(black_box(&ctx).value(&KEYS[i]))
                })
            });
        }
        group.bench_function(format!("new_thread/depth={depth}"), |b| {
            b.iter(|| std::thread::scope(|s| s.spawn(|| black_box(ctx.value(&MISSING)).is_none()).join()))
        });
    }
    group.finish();
}

fn err_ok(c: &mut Criterion) {
    let ctx = Context::new();
    c.bench_function("err_ok", |b| b.iter(|| black_box(black_box(&ctx).err())));
    c.bench_function("is_cancelled_ok", |b| b.iter(|| black_box(black_box(&ctx).is_cancelled())));
}

fn err_cancelled(c: &mut Criterion) {
    let ctx = Context::new();
    ctx.cancel();
    c.bench_function("err_cancelled", |b| b.iter(|| black_box(black_box(&ctx).err())));
}

criterion_group!(
    benches,
    common_parent_cancel,
    with_timeout,
    cancel_tree,
    check_cancelled,
    context_cancel_done,
    deep_value,
    err_ok,
    err_cancelled
);
criterion_main!(benches);
