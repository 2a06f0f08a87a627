//! The tether demo: cancellation, a deadline and a typed cause, in a few lines of output.
//!
//! Run with `cargo run --release --example demo`.

use std::time::{Duration, Instant};
use tether::{Canceller, Cause, Context, Key};

static REQUEST_ID: Key<u64> = Key::new("request_id");

#[derive(Debug, thiserror::Error)]
#[error("client {client} disconnected")]
struct ClientGone {
    client: &'static str,
}

fn main() {
    let start = Instant::now();

    // 1. Cancellation flows down a tree, synchronously, with a typed cause.
    let request = Context::new().with_value(&REQUEST_ID, 7);
    let db_query = request.child();
    let cache_lookup = request.child();
    let _on_cancel = db_query.on_cancel(|cause| println!("  db query: on_cancel callback ran ({cause})"));
    println!("request {} started; db and cache calls derived from it", request.value(&REQUEST_ID).unwrap());
    request.cancel_with(Cause::custom(ClientGone { client: "10.0.0.7" }));
    let cause = cache_lookup.cause().unwrap();
    println!("  cache lookup cancelled: err={}, cause={cause}", cache_lookup.err().unwrap());
    let typed = cause.downcast_ref::<ClientGone>().expect("the cause keeps its type");
    println!("  the cause is a ClientGone for client {}", typed.client);

    // 2. A deadline: the earlier of the node's own and its parent's, served by one timer driver.
    let batch = Context::new().with_timeout(Duration::from_millis(50));
    let step = batch.with_timeout(Duration::from_secs(60)); // cannot outlive its parent
    println!("batch step deadline is the parent's: {}", step.deadline() == batch.deadline());
    let cause = step.wait(); // blocks until the parent's deadline fires
    println!(
        "  step cancelled after {:?}: err={} (timeout: {}), cause={cause}",
        start.elapsed(),
        step.err().unwrap(),
        step.err().unwrap().is_timeout()
    );

    // 3. Forgetting to cancel leaks nothing: dropped children detach from their parent.
    let parent = Context::new();
    for _ in 0..100_000 {
        drop(parent.with_timeout(Duration::from_secs(3600)));
    }
    let live = tether::live();
    println!(
        "100000 uncancelled children dropped: parent has {} registered children, {} timers pending",
        parent.registered_children(),
        live.timers
    );
}
