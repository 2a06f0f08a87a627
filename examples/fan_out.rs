//! Fan out: query every shard of a store at once, under a deadline; the first failure cancels
//! the rest, and every error is still reported.
//!
//! Run with `cargo run --example fan_out`.

use std::time::{Duration, Instant};
use tether::{Cause, Context, ScopeBuilder, ScopeError, blocking};

#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("shard {shard} failed: {reason}")]
    Failed { shard: usize, reason: &'static str },
    #[error("shard {shard} gave up: {cause}")]
    Cancelled { shard: usize, cause: Cause },
}

/// A shard: how long it takes to answer, and whether it then fails.
struct Shard {
    latency: Duration,
    fails: bool,
}

/// One query: "works" for `latency`, returning early if `ctx` is cancelled.
fn query(ctx: &Context, shard: usize, spec: &Shard) -> Result<String, QueryError> {
    blocking::sleep(ctx, spec.latency).map_err(|cause| QueryError::Cancelled { shard, cause })?;
    if spec.fails {
        return Err(QueryError::Failed { shard, reason: "disk error" });
    }
    Ok(format!("rows from shard {shard}"))
}

/// Queries every shard in parallel; the whole fan-out must finish within `budget`.
fn fan_out(shards: &[Shard], budget: Duration) -> Result<Vec<String>, ScopeError> {
    ScopeBuilder::new().timeout(budget).run(|s| {
        let handles: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                s.builder().name(format!("shard-{i}")).spawn_fallible(move |ctx| query(ctx, i, spec))
            })
            .collect::<Result<_, _>>()
            .expect("the OS refused a thread");
        // Collect what succeeded; failures are reported by the scope itself.
        handles.into_iter().filter_map(|h| h.join().expect("no query panics").ok()).collect()
    })
}

fn report(title: &str, shards: &[Shard], budget: Duration) {
    let start = Instant::now();
    let outcome = fan_out(shards, budget);
    println!("{title} ({} ms):", start.elapsed().as_millis());
    match outcome {
        Ok(rows) => rows.iter().for_each(|r| println!("  ok: {r}")),
        Err(err) => {
            println!("  failed: {err}");
            if let Some(QueryError::Failed { shard, .. }) = err.downcast_ref::<QueryError>() {
                println!("  (the first error, recovered by type: shard {shard})");
            }
            for other in err.others() {
                println!("  later: {other}");
            }
        }
    }
}

fn main() {
    let ms = Duration::from_millis;
    let healthy = [Shard { latency: ms(20), fails: false }, Shard { latency: ms(30), fails: false }];
    report("all shards answer", &healthy, ms(500));

    let one_bad = [
        Shard { latency: ms(400), fails: false },
        Shard { latency: ms(10), fails: true },
        Shard { latency: ms(400), fails: false },
    ];
    report("shard 1 fails fast and cancels the slow ones", &one_bad, ms(500));

    let slow = [Shard { latency: ms(400), fails: false }, Shard { latency: ms(400), fails: false }];
    report("the deadline passes first", &slow, ms(50));
}
