//! The `tracing` side of the hooks (feature `tracing`): a span per scope, a span per child
//! parented to its scope's whatever thread runs it, an event per cancellation at its origin, a
//! child's error at WARN and its panic at ERROR. Spans and events have the target `tether`.
//!
//! Spawn sites are the `loc.file`, `loc.line` and `loc.col` fields, as tokio names them.
//!
//! When the scope's span is disabled (no subscriber, or a filter that drops it), the scope keeps
//! the span that was current where it opened instead, and a child with a disabled span runs in
//! that one: the caller's span still reaches every child thread and pool task (tracing#1391,
//! rayon#1018), at the cost of one reference count per child.

use super::{Site, kind_str};
use crate::cancel::{CancelError, Cause, PanicSummary};
use crate::context::Context;
use crate::dump::ChildKind;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use tracing::{Level, Span};

/// A scope's span, or the span current where the scope opened when its own is disabled.
pub(super) struct ScopeSpan(Span);

impl ScopeSpan {
    pub(super) fn open(site: Site, id: u64, name: Option<&str>) -> ScopeSpan {
        let span = tracing::span!(
            target: "tether",
            Level::INFO,
            "scope",
            scope.id = id,
            name = name,
            loc.file = site.file(),
            loc.line = site.line(),
            loc.col = site.column(),
        );
        ScopeSpan(if span.is_disabled() { Span::current() } else { span })
    }

    pub(super) fn enter(&self) -> tracing::span::Entered<'_> {
        self.0.enter()
    }
}

/// `f`, run inside a new child span of `scope`'s (made here, on the spawning thread), with a
/// panic reported at ERROR inside that span before it unwinds on to the scope.
pub(super) fn instrument<'a, F, T>(
    scope: &ScopeSpan,
    kind: ChildKind,
    name: Option<&str>,
    site: Site,
    f: F,
) -> impl FnOnce(&Context) -> T + Send + 'a
where
    F: FnOnce(&Context) -> T + Send + 'a,
{
    let span = tracing::span!(
        target: "tether",
        parent: &scope.0,
        Level::INFO,
        "child",
        kind = kind_str(kind),
        name = name,
        loc.file = site.file(),
        loc.line = site.line(),
        loc.col = site.column(),
    );
    let span = if span.is_disabled() { scope.0.clone() } else { span };
    move |ctx: &Context| {
        let _entered = span.enter();
        match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
            Ok(value) => value,
            Err(payload) => {
                let panic = PanicSummary::from_payload(None, &*payload);
                tracing::event!(target: "tether", Level::ERROR, panic = panic.message(), "child panicked");
                // On to the scope, which records it (scope invariant 2); no hook runs again.
                resume_unwind(payload)
            }
        }
    }
}

pub(super) fn child_failed(error: &(dyn std::error::Error + 'static)) {
    tracing::event!(target: "tether", Level::WARN, error = error, "child failed");
}

/// One event per cancellation, at its origin: INFO when something went wrong or ran out of time,
/// DEBUG for the cancellations of every day (an explicit `cancel`, a scope's exit).
pub(super) fn cancelled(err: CancelError, cause: &Cause) {
    let kind = super::cause_kind(cause);
    match cause {
        Cause::Cancelled | Cause::ScopeExited => tracing::event!(
            target: "tether", Level::DEBUG, cause = %cause, cause.kind = kind, err = %err, "cancelled"
        ),
        _ => tracing::event!(
            target: "tether", Level::INFO, cause = %cause, cause.kind = kind, err = %err, "cancelled"
        ),
    }
}
