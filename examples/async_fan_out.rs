//! An async request handler: under one deadline it fans out to three async backends (tokio tasks
//! of a `tether::tokio_scope`) and one blocking call (a thread child of a sync `tether::scope`,
//! opened on tokio's blocking pool). The first failure cancels the rest with a typed cause; a
//! second request shows the deadline doing the cancelling instead. The program checks what it
//! prints, so CI catches a regression.
//!
//! Run with `cargo run --example async_fan_out --features tokio`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::{Canceller, Cause, Context, ScopeBuilder, ScopeError, blocking};
use tokio::time::sleep;

/// The whole request's budget.
const DEADLINE: Duration = Duration::from_millis(500);
/// A tighter budget for the second request, which nothing fails.
const TIGHT_DEADLINE: Duration = Duration::from_millis(150);
/// The profile backend answers quickly.
const PROFILE_LATENCY: Duration = Duration::from_millis(5);
/// The inventory backend takes this long, then (in the first request) fails.
const INVENTORY_LATENCY: Duration = Duration::from_millis(60);
/// The recommendations backend is slow: longer than either deadline.
const RECOMMENDATIONS_LATENCY: Duration = Duration::from_secs(5);
/// The blocking report renderer works in steps, checking its context between them.
const RENDER_STEP: Duration = Duration::from_millis(5);
const RENDER_STEPS: u32 = 200;

#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("{service} answered {status}")]
    Status { service: &'static str, status: u16 },
}

/// What each call of one request ended with: its answer, or the cause that stopped it.
#[derive(Debug, Default)]
struct Seen {
    profile: Option<Result<&'static str, Cause>>,
    inventory: Option<Result<u32, Arc<BackendError>>>,
    recommendations: Option<Result<Vec<&'static str>, Cause>>,
    report: Option<Result<u32, Cause>>,
}

/// A simulated async call: `latency` of "network", raced against the context. The race is
/// `run_until_cancelled`: the sleep is dropped at once when `ctx` is cancelled.
async fn call<T>(ctx: &Context, latency: Duration, answer: T) -> Result<T, Cause> {
    ctx.run_until_cancelled(async move {
        sleep(latency).await;
        answer
    })
    .await
}

/// The blocking call: renders a report step by step on a thread, stopping at the first step
/// after its context is cancelled.
fn render_report(ctx: &Context) -> Result<u32, Cause> {
    for _ in 0..RENDER_STEPS {
        blocking::sleep(ctx, RENDER_STEP)?;
    }
    Ok(RENDER_STEPS)
}

/// Handles one request under `deadline`; `inventory_fails` makes the inventory backend fail.
/// Returns the scope's outcome and what each call saw.
async fn handle(deadline: Duration, inventory_fails: bool) -> (Result<(), ScopeError>, Seen) {
    let mut seen = Seen::default();
    // One deadline for everything the request starts: the scope below is a child of `request`
    // because `request` is ambient (bound) when the scope opens.
    let request = Context::new().with_timeout(deadline);
    let outcome = request
        .bind(tether::tokio_scope(|s| {
            let seen = &mut seen;
            async move {
                let profile = s.spawn(|ctx| async move { call(&ctx, PROFILE_LATENCY, "ada").await });
                let inventory = s.spawn_fallible(move |ctx| async move {
                    // Only a cancellation stops this call early; otherwise it fails on time.
                    let stock = call(&ctx, INVENTORY_LATENCY, 12u32).await;
                    match stock {
                        Ok(_) if inventory_fails => {
                            Err(BackendError::Status { service: "inventory", status: 503 })
                        }
                        Ok(stock) => Ok(stock),
                        Err(cause) => panic!("inventory was cancelled first: {cause}"),
                    }
                });
                let recommendations = s.spawn(|ctx| async move {
                    // The same race written out: a sleep against the context's own future.
                    tokio::select! {
                        () = sleep(RECOMMENDATIONS_LATENCY) => Ok(vec!["kettle", "teapot"]),
                        cause = ctx.cancelled_owned() => Err(cause),
                    }
                });
                // The blocking call: a sync scope on tokio's blocking pool, below this child's
                // context, so the request's cancellation reaches the thread that renders.
                let report = s.spawn(|ctx| async move {
                    tokio::task::spawn_blocking(move || {
                        ScopeBuilder::new().parent(&ctx).run(|ts| ts.spawn(render_report).join())
                    })
                    .await
                    .expect("the blocking task was not aborted")
                    .expect("the report's scope has no fallible child")
                    .expect("the renderer does not panic")
                });
                seen.profile = Some(profile.await.expect("no child panics"));
                seen.inventory = Some(inventory.await.expect("no child panics"));
                seen.recommendations = Some(recommendations.await.expect("no child panics"));
                seen.report = Some(report.await.expect("no child panics"));
            }
        }))
        .await;
    assert!(!request.is_cancelled() || request.cause() == Some(Cause::DeadlineExceeded));
    (outcome, seen)
}

/// Runs `request`, printing how long it took.
async fn timed<F: Future>(title: &str, request: F) -> F::Output {
    let start = Instant::now();
    let output = request.await;
    println!("{title} ({} ms):", start.elapsed().as_millis());
    output
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let start = Instant::now();

    // 1. The inventory backend fails: its error cancels every other call, with itself as cause.
    let (outcome, seen) = timed("request 1: inventory fails", handle(DEADLINE, true)).await;
    println!("  profile:         {:?}", seen.profile);
    println!("  inventory:       {:?}", seen.inventory);
    println!("  recommendations: {:?}", seen.recommendations);
    println!("  report:          {:?}", seen.report);
    let err = outcome.expect_err("the inventory failure fails the request");
    println!("  scope error:     {err}");
    let first = err.downcast_ref::<BackendError>().expect("the first error, by type");
    assert!(matches!(first, BackendError::Status { service: "inventory", status: 503 }));
    assert!(err.others().is_empty(), "one failure; the others were cancelled, not failed");
    assert_eq!(seen.profile, Some(Ok("ada")), "the profile answered before the failure");
    assert!(matches!(seen.inventory, Some(Err(_))));
    for (call, cause) in [
        ("recommendations", seen.recommendations.as_ref().and_then(|r| r.as_ref().err())),
        ("report", seen.report.as_ref().and_then(|r| r.as_ref().err())),
    ] {
        let cause = cause.unwrap_or_else(|| panic!("{call} should have been cancelled"));
        let typed = cause.downcast_ref::<BackendError>();
        assert!(typed.is_some(), "{call} sees the failure as its typed cause, not {cause}");
    }

    // 2. Nothing fails, but the recommendations and the report are slower than the deadline:
    //    the deadline cancels them, and they see `DeadlineExceeded`.
    let (outcome, seen) = timed("request 2: deadline", handle(TIGHT_DEADLINE, false)).await;
    println!("  profile:         {:?}", seen.profile);
    println!("  inventory:       {:?}", seen.inventory);
    println!("  recommendations: {:?}", seen.recommendations);
    println!("  report:          {:?}", seen.report);
    outcome.expect("nothing failed: a deadline is a cancellation, not a failure");
    assert_eq!(seen.profile, Some(Ok("ada")));
    assert!(matches!(seen.inventory, Some(Ok(12))));
    assert_eq!(seen.recommendations, Some(Err(Cause::DeadlineExceeded)));
    assert_eq!(seen.report, Some(Err(Cause::DeadlineExceeded)));

    let elapsed = start.elapsed();
    println!("both requests in {} ms", elapsed.as_millis());
    assert!(elapsed < Duration::from_secs(1), "cancellation ended the slow calls early");
}
