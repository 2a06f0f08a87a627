//! [`Failures`]: the panics and errors of a scope's children (and body), in the order they
//! happened (scope invariant 3), for the exit to report: the first panic re-raised with its
//! payload, the later ones recorded as unhandled, every error kept, the one the scope was
//! cancelled with first. [`FailureLog`] keeps them behind their lock with the operations every
//! kind of scope records and reports through: thread and task scopes (`state.rs`), async scopes
//! (`async_scope/`) and tokio scopes (`tokio_scope.rs`).

use super::error::ScopeError;
use crate::cancel::{Cause, PanicSummary, SharedError};
use crate::context::Context;
use crate::unhandled;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A panic payload.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// The failures of a scope, in the order they happened (scope invariant 3).
#[derive(Default)]
pub(crate) struct Failures {
    panics: Vec<(u64, Payload)>,
    next_panic: u64,
    errors: Vec<SharedError>,
}

impl Failures {
    /// Moves the error the scope was cancelled with, if a failure cancelled it, to the front.
    /// A failure records its error and then cancels, so when two fail at once the first
    /// recorded may not be the one whose cancellation won; [`ScopeError::first`] promises that
    /// one.
    fn put_cancelling_error_first(&mut self, cause: Option<Cause>) {
        let Some(Cause::ChildFailed(winner)) = cause else { return };
        let same = |e: &SharedError| std::ptr::addr_eq(Arc::as_ptr(e), Arc::as_ptr(&winner));
        if let Some(index) = self.errors.iter().position(same) {
            self.errors[..=index].rotate_right(1);
        }
    }

    /// Records a panic payload; returns its id, for a join handle to take it back.
    pub(crate) fn record_panic(&mut self, payload: Payload) -> u64 {
        let id = self.next_panic;
        self.next_panic += 1;
        self.panics.push((id, payload));
        id
    }

    /// Takes back the payload recorded as `id`, so the scope will not re-raise it.
    pub(crate) fn take_panic(&mut self, id: u64) -> Option<Payload> {
        let index = self.panics.iter().position(|(i, _)| *i == id)?;
        Some(self.panics.remove(index).1)
    }

    /// Records a fallible child's error.
    pub(crate) fn push_error(&mut self, error: SharedError) {
        self.errors.push(error);
    }

    /// These failures, with the error the scope was cancelled with (its `cause`) first.
    pub(crate) fn ordered_by(mut self, cause: Option<Cause>) -> Failures {
        self.put_cancelling_error_first(cause);
        self
    }

    /// The panic payloads (oldest first) and the errors (the cancelling one first).
    pub(crate) fn into_parts(self) -> (Vec<Payload>, Vec<SharedError>) {
        (self.panics.into_iter().map(|(_, payload)| payload).collect(), self.errors)
    }
}

/// A scope's [`Failures`] behind their lock (scope invariant 3: recorded in the order they
/// happened, as observed by this lock), and the recording operations. None unwinds: a panic of
/// user code they run (an on-cancel callback, a destructor) is recorded too.
#[derive(Default)]
pub(crate) struct FailureLog(Mutex<Failures>);

impl FailureLog {
    fn lock(&self) -> MutexGuard<'_, Failures> {
        // A poisoned lock only means a panic elsewhere; the vectors are always consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a panic payload; returns its id, for a join handle to take it back.
    pub(crate) fn record_panic(&self, payload: Payload) -> u64 {
        self.lock().record_panic(payload)
    }

    /// Takes back the payload recorded as `id`, so the scope will not re-raise it.
    pub(crate) fn take_panic(&self, id: u64) -> Option<Payload> {
        self.lock().take_panic(id)
    }

    /// Cancels the scope's context `ctx` with `cause`; a panic of an on-cancel callback this
    /// cancellation runs is recorded like a child's.
    pub(crate) fn cancel(&self, ctx: &Context, cause: Cause) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| ctx.cancel_with(cause))) {
            self.record_panic(payload);
        }
    }

    /// Records that `who` (a child or the body) panicked and cancels the scope, naming it.
    pub(crate) fn panicked(&self, ctx: &Context, who: Option<Arc<str>>, payload: Payload) -> u64 {
        let summary = PanicSummary::from_payload(who, &*payload);
        let id = self.record_panic(payload);
        self.cancel(ctx, Cause::Panicked(summary));
        id
    }

    /// Records a fallible child's error and cancels the scope with it.
    pub(crate) fn failed(&self, ctx: &Context, error: SharedError) {
        self.lock().push_error(error.clone());
        self.cancel(ctx, Cause::ChildFailed(error));
    }

    /// A fallible child's `error`, recorded and cancelling the scope ([`failed`](Self::failed)),
    /// and handed back shared: what every `spawn_fallible` maps its child's `Err` through.
    pub(crate) fn fail_with<E: std::error::Error + Send + Sync + 'static>(
        &self,
        ctx: &Context,
        error: E,
    ) -> Arc<E> {
        let error = Arc::new(error);
        self.failed(ctx, error.clone());
        error
    }

    /// Drops `value`, which may hold user data, recording a panic from its destructor as a
    /// panic of the scope (on a worker, a child thread or an exit path, nothing else may catch
    /// it).
    pub(crate) fn drop_caught<T>(&self, value: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.record_panic(payload);
        }
    }

    /// Takes every failure recorded so far, the error the scope `ctx` was cancelled with first:
    /// what the exit reports, once no child runs.
    pub(crate) fn take(&self, ctx: &Context) -> Failures {
        std::mem::take(&mut *self.lock()).ordered_by(crate::cancel::Canceller::cause(ctx))
    }
}

/// The last step of every scope's exit: the first panic re-raised with its payload (the later
/// ones recorded as unhandled), else the errors as a [`ScopeError`], else the body's output.
pub(crate) fn report<R>(
    panics: Vec<Payload>,
    errors: Vec<SharedError>,
    body: Option<R>,
) -> Result<R, ScopeError> {
    let mut panics = panics.into_iter();
    if let Some(first) = panics.next() {
        panics.for_each(unhandled::record);
        resume_unwind(first);
    }
    match ScopeError::from_errors(errors) {
        Some(error) => Err(error),
        None => Ok(body.expect("tether: a scope's body neither returned nor panicked")),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Failures, SharedError};
    use crate::cancel::Cause;
    use std::sync::Arc;

    #[test]
    fn the_error_a_scope_was_cancelled_with_is_reported_first() {
        let error = |text: &str| -> SharedError { Arc::new(std::io::Error::other(text.to_string())) };
        let (a, b, c) = (error("a"), error("b"), error("c"));
        let mut failures = Failures { errors: vec![a.clone(), b.clone(), c.clone()], ..Failures::default() };
        // b recorded second but its cancellation won the race: it goes first, the rest keep order.
        failures.put_cancelling_error_first(Some(Cause::ChildFailed(b.clone())));
        let order: Vec<String> = failures.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        // Cancelled by something else (or by an ancestor's failure): the recorded order stays.
        failures.put_cancelling_error_first(Some(Cause::Cancelled));
        failures.put_cancelling_error_first(Some(Cause::ChildFailed(error("elsewhere"))));
        let order: Vec<String> = failures.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }
}
