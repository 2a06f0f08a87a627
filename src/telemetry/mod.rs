//! Observability hooks: what the scope wing and the cancellation tree tell a `tracing` subscriber
//! (feature `tracing`, `tracing.rs`) and a `metrics` recorder (feature `metrics`, `metrics.rs`).
//! Design: design/0009-tracing-metrics-signals.md.
//!
//! Every hook is a one-line call from the code it observes, and with both features off each is
//! an empty `#[inline]` function over zero-sized types: the observed code compiles to what it was.
//!
//! # Invariants
//! 1. A hook never unwinds into the code it observes except where that code already expects user
//!    code to panic (a subscriber or recorder is user code: the events are emitted where a panic
//!    is caught, or after every lock of the tree is released, in `Fired::run`).
//! 2. One cancellation, one report: [`Cancellation`] is filled only where a cancellation starts
//!    (the node it was called on, when it was still open), never for the descendants it reaches.
//! 3. Each gauge mirrors a live count (`crate::live`) or the scopes alive, by the same
//!    increments and decrements: it reads zero whenever the count is zero, if the recorder was
//!    installed before the first thing it counts was made.

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "tracing")]
mod tracing;

use crate::cancel::{CancelError, Cause};
use crate::context::Context;
use crate::dump::ChildKind;
use crate::live::Counter;
use std::panic::Location;

/// The spawn site of a scope or child: the caller of the public `scope`/`spawn` method
/// (`#[track_caller]`), so that a wrapper never hides the user's line.
pub(crate) type Site = &'static Location<'static>;

/// The value of a child's `kind` field and label.
#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
fn kind_str(kind: ChildKind) -> &'static str {
    match kind {
        ChildKind::Thread => "thread",
        ChildKind::Task => "task",
    }
}

/// What a scope keeps for its observers, for its whole life (dropped with its state): its span,
/// the parent of its children's spans, and its place in the live-scopes gauge.
pub(crate) struct ScopeObs {
    #[cfg(feature = "tracing")]
    span: tracing::ScopeSpan,
    #[cfg(feature = "metrics")]
    _alive: metrics::ScopeAlive,
}

impl ScopeObs {
    /// A scope opens at `site`, with its dump id and its name, if any.
    #[inline]
    pub(crate) fn open(site: Site, id: u64, name: Option<&str>) -> ScopeObs {
        let _ = (site, id, name);
        ScopeObs {
            #[cfg(feature = "tracing")]
            span: tracing::ScopeSpan::open(site, id, name),
            #[cfg(feature = "metrics")]
            _alive: metrics::ScopeAlive::open(),
        }
    }

    /// Enters the scope's span on this thread (the owner's, for the body and the exit) until the
    /// guard drops.
    #[inline]
    pub(crate) fn enter(&self) -> impl Sized + '_ {
        #[cfg(feature = "tracing")]
        return self.span.enter();
        #[cfg(not(feature = "tracing"))]
        ()
    }
}

/// Wraps a child's closure so that it runs inside the child's span (a child of the scope's,
/// made now, on the spawning thread, with the spawn site), and reports a panic at ERROR inside
/// it before the panic goes on to the scope. Without the `tracing` feature, `f` itself.
#[inline]
pub(crate) fn instrument<'a, F, T>(
    scope: &ScopeObs,
    kind: ChildKind,
    name: Option<&str>,
    site: Site,
    f: F,
) -> impl FnOnce(&Context) -> T + Send + 'a
where
    F: FnOnce(&Context) -> T + Send + 'a,
{
    let _ = (scope, kind, name, site);
    #[cfg(feature = "tracing")]
    return tracing::instrument(&scope.span, kind, name, site, f);
    #[cfg(not(feature = "tracing"))]
    f
}

/// A child's closure returned an error that fails its scope: WARN, in the child's span (this runs
/// on the child's thread, inside [`instrument`]'s span).
#[inline]
pub(crate) fn child_failed(error: &(dyn std::error::Error + 'static)) {
    let _ = error;
    #[cfg(feature = "tracing")]
    tracing::child_failed(error);
}

/// A `try_spawn` found every slot of the limit taken.
#[inline]
pub(crate) fn try_spawn_rejected(kind: ChildKind) {
    let _ = kind;
    #[cfg(feature = "metrics")]
    metrics::try_spawn_rejected(kind);
}

/// A live count changed (invariant 3): called by `live::add`.
#[inline]
pub(crate) fn live_changed(kind: Counter, delta: isize) {
    let _ = (kind, delta);
    #[cfg(feature = "metrics")]
    metrics::live_changed(kind, delta);
}

/// The report of one cancellation, filled at its origin (invariant 2) and emitted by
/// `Fired::run`, once no lock of the tree is held (invariant 1).
#[derive(Default)]
pub(crate) struct Cancellation {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    origin: Option<(CancelError, Cause)>,
}

impl Cancellation {
    /// The cancellation that carries this report started here, with `err` and `cause`.
    #[inline]
    pub(crate) fn set_origin(&mut self, err: CancelError, cause: &Cause) {
        let _ = (err, cause);
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            self.origin = Some((err, cause.clone()));
        }
    }

    /// Reports the cancellation, if it started here: one event, one count.
    #[inline]
    pub(crate) fn emit(self) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        if let Some((err, cause)) = self.origin {
            #[cfg(feature = "tracing")]
            tracing::cancelled(err, &cause);
            #[cfg(feature = "metrics")]
            metrics::cancelled(&cause);
            let _ = err;
        }
    }
}

/// The `cause.kind` field and label: the variant of the cause.
#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
fn cause_kind(cause: &Cause) -> &'static str {
    match cause {
        Cause::Cancelled => "cancelled",
        Cause::DeadlineExceeded => "deadline_exceeded",
        Cause::ScopeExited => "scope_exited",
        Cause::ChildFailed(_) => "child_failed",
        Cause::Panicked(_) => "panicked",
        Cause::Custom(_) => "custom",
    }
}
