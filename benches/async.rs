//! The async side of tether next to its peers, in one run (`benches/compare.sh` prints the
//! ratios):
//!
//! - `cancelled_poll_drop/*`: a `cancelled()` future on an open context made, polled once
//!   (pending, with a no-op waker: its waker is registered) and dropped (unregistered); next to
//!   tokio-util's `CancellationToken::cancelled()`.
//! - `cancel_wakes/futures=N/*`: a new context, `N` `cancelled()` futures polled once each
//!   (pending), the context cancelled, and every future polled again to `Ready`; per iteration.
//!   Next to tokio-util, the same with a new token.
//! - `tokio_scope_spawn_join/tasks=1000/*`: `tether::tokio_scope` spawning 1,000 no-op children
//!   and awaiting their handles, on a multi-thread runtime of 2 workers; next to a
//!   `tokio::task::JoinSet` spawning and joining the same on the same runtime, and
//!   (`join_set_child_tokens`) the same `JoinSet` with a `CancellationToken::child_token()` of one
//!   parent token made per task, moved into it and dropped at its end.
//! - `async_scope/tasks=1000/*`: `tether::async_scope` with 1,000 no-op children awaited through
//!   their handles, under `futures_executor::block_on`; next to a `FuturesUnordered` of 1,000
//!   no-op futures driven to completion under the same executor, and
//!   (`futures_unordered_child_tokens`) the same with a `child_token()` per future, moved into it
//!   and dropped at its end.
//!
//!   Why the child-token contenders: every tether child carries its own child context, a
//!   cancellation node registered with the scope's, through which that child alone can be
//!   cancelled (its handle's `context()`) and which it can derive from. A bare `JoinSet` task or
//!   `FuturesUnordered` future carries no cancellation identity at all, so the plain contenders
//!   price the scope against peers doing less. The nearest peer equivalent is a tokio-util child
//!   token per child (registered with the parent's tree, cancellable alone, released when the
//!   child ends); both rows are kept: the plain ratio is issue 14's target, the child-token one
//!   compares like with like.
//! - After criterion's groups, the wake-up latency from `cancel()` to a task awaiting
//!   `Context::cancelled_owned()` on a multi-thread runtime (2 workers), as p50 and p99 (criterion
//!   reports means, and a latency's tail is the point), next to tokio-util's
//!   `CancellationToken::cancelled_owned()`. The two contenders alternate sample by sample, so
//!   load changes on a shared machine hit both alike. `examples/wakeup_latency.rs` measures the
//!   same for a blocked thread; this is its async counterpart, kept in the criterion binary so the
//!   ratio comes from the same run. The last line printed is the figures as JSON (compare.sh).
//!
//! Run with
//! `cargo bench --bench async --features tokio -- --warm-up-time 2 --measurement-time 5`
//! (`LATENCY_SAMPLES=n` sets the latency's samples per contender, 2,000 by default).

use criterion::{Criterion, Throughput, criterion_group};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::mpsc::sync_channel;
use std::task::{Context as TaskContext, Waker};
use std::time::{Duration, Instant};
use tether::{Canceller, Context};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Children spawned and joined per iteration of the scope benchmarks.
const TASKS: usize = 1_000;

/// The multi-thread runtime of the tokio benchmarks: 2 workers, as many as the development
/// machine's cores.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("a tokio runtime")
}

fn cancelled_poll_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancelled_poll_drop");
    let mut cx = TaskContext::from_waker(Waker::noop());
    let ctx = Context::new();
    group.bench_function("tether", |b| {
        b.iter(|| {
            let mut cancelled = pin!(black_box(&ctx).cancelled());
            assert!(cancelled.as_mut().poll(&mut cx).is_pending());
        })
    });
    let token = CancellationToken::new();
    group.bench_function("tokio_util", |b| {
        b.iter(|| {
            let mut cancelled = pin!(black_box(&token).cancelled());
            assert!(cancelled.as_mut().poll(&mut cx).is_pending());
        })
    });
    group.finish();
}

fn cancel_wakes(c: &mut Criterion) {
    let mut cx = TaskContext::from_waker(Waker::noop());
    for n in [1usize, 1_000] {
        let mut group = c.benchmark_group(format!("cancel_wakes/futures={n}"));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("tether", |b| {
            b.iter(|| {
                let ctx = Context::new();
                // `Cancelled` is `Unpin`: polled in place in the vector.
                let mut futures: Vec<_> = (0..n).map(|_| ctx.cancelled()).collect();
                for f in &mut futures {
                    assert!(Pin::new(f).poll(&mut cx).is_pending());
                }
                ctx.cancel();
                for f in &mut futures {
                    assert!(Pin::new(f).poll(&mut cx).is_ready());
                }
            })
        });
        group.bench_function("tokio_util", |b| {
            b.iter(|| {
                let token = CancellationToken::new();
                // tokio-util's future is `!Unpin`: pinned in place in a vector that never
                // reallocates (rather than boxed one by one, which tether's future does not need).
                let mut futures = Vec::with_capacity(n);
                futures.extend((0..n).map(|_| token.cancelled()));
                for f in &mut futures {
                    // SAFETY: the vector is filled once to its capacity and never grows, so its
                    // elements are not moved until the vector drops them in place.
                    assert!(unsafe { Pin::new_unchecked(f) }.poll(&mut cx).is_pending());
                }
                token.cancel();
                for f in &mut futures {
                    // SAFETY: as above.
                    assert!(unsafe { Pin::new_unchecked(f) }.poll(&mut cx).is_ready());
                }
            })
        });
        group.finish();
    }
}

fn tokio_scope_spawn_join(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group(format!("tokio_scope_spawn_join/tasks={TASKS}"));
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("tether", |b| {
        b.iter(|| {
            runtime
                .block_on(tether::tokio_scope(|s| async move {
                    let handles: Vec<_> =
                        (0..TASKS).map(|i| s.spawn(move |_ctx| async move { black_box(i) })).collect();
                    for h in handles {
                        black_box(h.await.expect("no child panics"));
                    }
                }))
                .expect("no child fails")
        })
    });
    group.bench_function("join_set", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut set = JoinSet::new();
                for i in 0..TASKS {
                    set.spawn(async move { black_box(i) });
                }
                while let Some(joined) = set.join_next().await {
                    black_box(joined.expect("no task panics"));
                }
            })
        })
    });
    group.bench_function("join_set_child_tokens", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let parent = CancellationToken::new();
                let mut set = JoinSet::new();
                for i in 0..TASKS {
                    let token = parent.child_token();
                    set.spawn(async move {
                        let token = black_box(token);
                        drop(token);
                        black_box(i)
                    });
                }
                while let Some(joined) = set.join_next().await {
                    black_box(joined.expect("no task panics"));
                }
            })
        })
    });
    group.finish();
}

fn async_scope(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("async_scope/tasks={TASKS}"));
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("tether", |b| {
        b.iter(|| {
            futures_executor::block_on(tether::async_scope(|s| {
                Box::pin(async move {
                    let handles: Vec<_> =
                        (0..TASKS).map(|i| s.spawn(move |_ctx| async move { black_box(i) })).collect();
                    for h in handles {
                        black_box(h.await.expect("no child panics"));
                    }
                })
            }))
            .expect("no child fails")
        })
    });
    group.bench_function("futures_unordered", |b| {
        b.iter(|| {
            futures_executor::block_on(async {
                let mut set = FuturesUnordered::new();
                for i in 0..TASKS {
                    set.push(async move { black_box(i) });
                }
                while let Some(output) = set.next().await {
                    black_box(output);
                }
            })
        })
    });
    group.bench_function("futures_unordered_child_tokens", |b| {
        b.iter(|| {
            futures_executor::block_on(async {
                let parent = CancellationToken::new();
                let mut set = FuturesUnordered::new();
                for i in 0..TASKS {
                    let token = parent.child_token();
                    set.push(async move {
                        let token = black_box(token);
                        drop(token);
                        black_box(i)
                    });
                }
                while let Some(output) = set.next().await {
                    black_box(output);
                }
            })
        })
    });
    group.finish();
}

/// How long the canceller waits after the task says its waker is registered, so that the worker
/// that polled it has gone to sleep (as in `examples/wakeup_latency.rs`).
const SETTLE: Duration = Duration::from_millis(1);

/// One sample: spawns a task that awaits `waiting` on `runtime`, waits until its first poll has
/// returned `Pending` (its waker is registered), lets the worker fall asleep, then runs `cancel`
/// on this thread (outside the runtime) and returns the time until the task ran again.
fn wakeup_sample<W>(runtime: &Runtime, waiting: W, cancel: impl FnOnce()) -> Duration
where
    W: Future + Send + 'static,
{
    let (ready_tx, ready_rx) = sync_channel(1);
    let (woke_tx, woke_rx) = sync_channel(1);
    runtime.spawn(async move {
        let mut waiting = pin!(waiting);
        let mut ready = Some(ready_tx);
        poll_fn(|cx| {
            let polled = waiting.as_mut().poll(cx);
            if let Some(ready) = ready.take() {
                assert!(polled.is_pending(), "the first poll registers the waker");
                ready.send(()).expect("the canceller waits");
            }
            polled.map(drop)
        })
        .await;
        woke_tx.send(Instant::now()).expect("the canceller waits");
    });
    ready_rx.recv().expect("the task says it is pending");
    std::thread::sleep(SETTLE);
    let start = Instant::now();
    cancel();
    let woke = woke_rx.recv().expect("the task wakes");
    woke.saturating_duration_since(start)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The wake-up latency of a task awaiting cancellation, tether and tokio-util alternating.
fn wakeup_latency() {
    let samples: usize = std::env::var("LATENCY_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let runtime = runtime();
    let mut tether = Vec::with_capacity(samples);
    let mut tokio_util = Vec::with_capacity(samples);
    for round in 0..samples + samples / 10 {
        let warm = round >= samples / 10;
        // Alternating which goes first, so neither always follows the other's wake-up.
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let ctx = Context::new();
                let t = wakeup_sample(&runtime, ctx.cancelled_owned(), || ctx.cancel());
                if warm {
                    tether.push(t);
                }
            } else {
                let token = CancellationToken::new();
                let t = wakeup_sample(&runtime, token.clone().cancelled_owned(), || token.cancel());
                if warm {
                    tokio_util.push(t);
                }
            }
        }
    }
    let runs = [("tether/cancelled_owned", tether), ("tokio_util/cancelled_owned", tokio_util)];
    let mut fields = Vec::new();
    println!("wake-up latency, cancel() to the task awaiting it running again, {samples} samples each:");
    println!("  {:<28} {:>8} {:>8} {:>8}", "mode", "p50 µs", "p99 µs", "max µs");
    for (name, mut l) in runs {
        l.sort_unstable();
        let (p50, p99, max) = (percentile(&l, 50.0), percentile(&l, 99.0), l[l.len() - 1]);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("  {name:<28} {:>8.1} {:>8.1} {:>8.1}", us(p50), us(p99), us(max));
        fields.push(format!(
            "\"{name}\": {{\"p50\": {}, \"p99\": {}, \"samples\": {}}}",
            p50.as_nanos(),
            p99.as_nanos(),
            l.len()
        ));
    }
    println!("{{{}}}", fields.join(", "));
}

criterion_group!(benches, cancelled_poll_drop, cancel_wakes, tokio_scope_spawn_join, async_scope);

fn main() {
    benches();
    // `cargo bench -- --test` (and `--list`) only check that the benches run.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        wakeup_latency();
    }
    criterion::Criterion::default().configure_from_args().final_summary();
}
