//! The `metrics` side of the hooks (feature `metrics`): gauges of what is alive, counters of
//! cancellations and refused spawns, through the `metrics` facade (the application installs the
//! recorder). Names and labels:
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `tether_scopes` | gauge | |
//! | `tether_children` | gauge | `kind` = `thread` \| `task` |
//! | `tether_nodes` | gauge | |
//! | `tether_registered_children` | gauge | |
//! | `tether_timers` | gauge | |
//! | `tether_callbacks` | gauge | |
//! | `tether_cancellations_total` | counter | `cause` = the cause's kind |
//! | `tether_try_spawn_rejected_total` | counter | `kind` |
//!
//! The gauges move by increments and decrements (invariant 3 of `observe`), never by setting a
//! value read elsewhere, so concurrent updates commute.

use super::kind_str;
use crate::cancel::Cause;
use crate::dump::ChildKind;
use crate::live::Counter;
use metrics::{counter, gauge};

/// A scope counted in `tether_scopes` until dropped.
pub(super) struct ScopeAlive(());

impl ScopeAlive {
    pub(super) fn open() -> ScopeAlive {
        gauge!("tether_scopes").increment(1.0);
        ScopeAlive(())
    }
}

impl Drop for ScopeAlive {
    fn drop(&mut self) {
        gauge!("tether_scopes").decrement(1.0);
    }
}

pub(super) fn live_changed(kind: Counter, delta: isize) {
    let gauge = match kind {
        Counter::Nodes => gauge!("tether_nodes"),
        Counter::Children => gauge!("tether_registered_children"),
        Counter::Timers => gauge!("tether_timers"),
        Counter::Callbacks => gauge!("tether_callbacks"),
        Counter::Threads => gauge!("tether_children", "kind" => kind_str(ChildKind::Thread)),
        Counter::Tasks => gauge!("tether_children", "kind" => kind_str(ChildKind::Task)),
    };
    gauge.increment(delta as f64);
}

pub(super) fn cancelled(cause: &Cause) {
    counter!("tether_cancellations_total", "cause" => super::cause_kind(cause)).increment(1);
}

pub(super) fn try_spawn_rejected(kind: ChildKind) {
    counter!("tether_try_spawn_rejected_total", "kind" => kind_str(kind)).increment(1);
}
