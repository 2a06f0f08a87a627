//! Forgetting to cancel leaks nothing: a child whose handles are all dropped detaches itself.
//!
//! Reads process-wide counts: this file's tests take `SERIAL`.

use std::sync::Mutex;
use std::time::Duration;
use tether::{Canceller, Context, live};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_million_dropped_uncancelled_children_leave_no_registration_and_no_timer() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = live();
    let parent = Context::new();
    for i in 0..1_000_000u64 {
        // Every tenth child has a deadline of its own, so timer entries are exercised too.
        let child = if i % 10 == 0 { parent.with_timeout(Duration::from_secs(3600)) } else { parent.child() };
        drop(child);
    }
    assert_eq!(parent.registered_children(), 0);
    let after = live();
    assert_eq!(after.timers, before.timers, "no timer entries remain");
    assert_eq!(after.registered_children, before.registered_children);
    assert_eq!(after.nodes, before.nodes + 1, "only the parent itself is alive");
    assert!(!parent.is_cancelled());
}

#[test]
fn dropping_a_middle_handle_keeps_the_node_alive_while_a_descendant_needs_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = Context::new();
    let middle = root.child();
    let leaf = middle.child();
    drop(middle);
    assert_eq!(root.registered_children(), 1);
    root.cancel();
    assert!(leaf.is_cancelled(), "cancellation still flows through the dropped handle's node");
    drop(leaf);
    assert_eq!(root.registered_children(), 0);
}

#[test]
fn dropping_every_handle_returns_the_live_counts_to_where_they_were() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = live();
    {
        let root = Context::new();
        let a = root.with_timeout(Duration::from_secs(60));
        let b = a.child();
        let _cb = b.on_cancel(|_| {});
        let c = root.child();
        c.cancel();
        assert!(live().nodes >= before.nodes + 4);
    }
    assert_eq!(live(), before);
}
