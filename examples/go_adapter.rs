//! The Go adapter (`tether::go`) used the way Go code uses `context`. Each section shows the Go it
//! transliterates, then the Rust, and prints what Go would print.
//!
//! 1. `ctx, cancel := context.WithTimeout(...)` + `defer cancel()`, and `select` on `ctx.Done()`.
//! 2. `context.WithCancelCause` and `context.Cause`: `Err()` stays coarse, `Cause` says why.
//! 3. `context.WithoutCancel`: work that must outlive the request (an audit log).
//! 4. `context.AfterFunc`: run a function after a context is done, and `stop()` it.
//! 5. Both ways: a native `tether::Context` is a Go context, and a Go context is a `Canceller`.
//!
//! Run with `cargo run --release --example go_adapter`.

use crossbeam_channel::{after, select};
use scopeguard::defer;
use std::time::Duration;
use tether::{CancelError, Cause, Done, Key, blocking, go};

/// `var errRateLimited = errors.New("rate limited")`
#[derive(Debug, thiserror::Error)]
#[error("rate limited")]
struct RateLimited;

// func fetch(ctx context.Context, name string, latency time.Duration) (string, error) {
//     select {
//     case <-time.After(latency):
//         return name + ": ok", nil
//     case <-ctx.Done():
//         return "", context.Cause(ctx)
//     }
// }
fn fetch(ctx: &go::Ctx, name: &str, latency: Duration) -> Result<String, Cause> {
    // Go's `Done()` is nil for a context that is never done, and a nil channel blocks forever
    // in a select. Here `done()` returns `None`, and `Done::never()` plays the nil channel.
    let done = ctx.done().unwrap_or_else(Done::never);
    select! {
        recv(after(latency)) -> _ => Ok(format!("{name}: ok")),
        recv(done) -> _ => Err(go::cause(ctx).expect("Done is closed, so there is a cause")),
    }
}

fn with_timeout_and_defer_cancel() {
    println!("1. WithTimeout + defer cancel() + select on Done");
    // ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
    // defer cancel()
    let (ctx, cancel) = go::with_timeout(&go::background(), Duration::from_millis(50));
    defer! { cancel.cancel(); }

    println!("   fmt.Println(ctx)   -> {ctx}");
    println!("   fetch(ctx, fast)   -> {:?}", fetch(&ctx, "fast", Duration::from_millis(10)));
    println!("   fetch(ctx, slow)   -> {:?}", fetch(&ctx, "slow", Duration::from_secs(10)));
    // if errors.Is(ctx.Err(), context.DeadlineExceeded) { ... }
    let err = ctx.err().expect("the deadline passed");
    println!("   ctx.Err()          -> {err} (DeadlineExceeded: {})", err == CancelError::DeadlineExceeded);
    println!("   err.Timeout()      -> {}", go::is_timeout(err));
}

fn cancel_cause() {
    println!("2. WithCancelCause + context.Cause");
    // ctx, cancel := context.WithCancelCause(context.Background())
    // defer cancel(nil)
    let (ctx, cancel) = go::with_cancel_cause(&go::background());
    defer! { cancel.cancel(None); }

    // go func() { time.Sleep(20 * time.Millisecond); cancel(errRateLimited) }()
    // (a scope instead of a bare goroutine: the thread is joined before this function returns)
    let result = tether::scope(|s| {
        s.spawn(|_| {
            std::thread::sleep(Duration::from_millis(20));
            cancel.cancel(Cause::custom(RateLimited));
        });
        fetch(&ctx, "search", Duration::from_secs(10))
    })
    .expect("the canceller does not fail");

    println!("   fetch(ctx, search) -> {result:?}");
    println!("   ctx.Err()          -> {}", ctx.err().expect("cancelled"));
    let cause = go::cause(&ctx).expect("cancelled");
    // errors.Is(context.Cause(ctx), errRateLimited)
    println!(
        "   context.Cause(ctx) -> {cause} (is RateLimited: {})",
        cause.downcast_ref::<RateLimited>().is_some()
    );
}

fn without_cancel() {
    println!("3. WithoutCancel: the audit log outlives the request");
    // ctx := context.WithValue(context.Background(), "request_id", "r-42")
    // ctx, cancel := context.WithCancel(ctx)
    // audit := context.WithoutCancel(ctx)
    // cancel()
    let ctx = go::with_value(&go::background(), "request_id", "r-42");
    let (ctx, cancel) = go::with_cancel(&ctx);
    let audit = go::without_cancel(&ctx);
    cancel.cancel();

    println!("   fmt.Println(audit) -> {audit}");
    println!("   ctx.Err()          -> {:?}", ctx.err());
    println!("   audit.Err()        -> {:?}, audit.Done() == nil: {}", audit.err(), audit.done().is_none());
    // audit.Value("request_id").(string)
    let id = audit.value("request_id").and_then(|v| v.downcast_ref::<&str>());
    println!("   audit.Value(\"request_id\") -> {id:?}");
}

fn after_func() {
    println!("4. AfterFunc and its stop function");
    // ctx, cancel := context.WithCancel(context.Background())
    // stop := context.AfterFunc(ctx, func() { ran <- "connection closed" })
    // cancel()
    let (ctx, cancel) = go::with_cancel(&go::background());
    let (ran_tx, ran) = crossbeam_channel::bounded(1);
    let stop = go::after_func(&ctx, move || ran_tx.send("connection closed").unwrap());
    cancel.cancel();
    // f runs on a thread of its own, so cancel() did not wait for it: receive its message.
    println!("   after cancel(), f says: {}", ran.recv().expect("f runs once"));
    println!("   stop() after f ran -> {} (too late)", stop.stop());

    // stop := context.AfterFunc(ctx2, f); if stop() { /* f will never run */ }
    let (ctx2, cancel2) = go::with_cancel(&go::background());
    let stop2 = go::after_func(&ctx2, || unreachable!("stopped before the cancel"));
    println!("   stop() before cancel() -> {} (f will never run)", stop2.stop());
    cancel2.cancel();
}

static USER: Key<&'static str> = Key::new("user");

fn both_ways() {
    println!("5. Native and Go contexts mix freely");
    // A native context (typed value) is a Go context: derive from it with the Go functions.
    let native = tether::Context::new().with_value(&USER, "ada");
    let (ctx, cancel) = go::with_timeout(&native, Duration::from_secs(5));
    defer! { cancel.cancel(); }
    println!("   ctx.get(&USER)     -> {:?} (a typed Key<T> read through a Go context)", ctx.get(&USER));
    // A Go context is a `Canceller`: hand it to native helpers such as `blocking::sleep`.
    native.cancel();
    println!(
        "   blocking::sleep(&ctx, 10s) after the native parent was cancelled -> {:?}",
        blocking::sleep(&ctx, Duration::from_secs(10))
    );
}

fn main() {
    with_timeout_and_defer_cancel();
    cancel_cause();
    without_cancel();
    after_func();
    both_ways();
}
