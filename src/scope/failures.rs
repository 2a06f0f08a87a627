//! [`Failures`]: the panics and errors of a scope's children (and body), in the order they
//! happened (scope invariant 3), for the exit to report: the first panic re-raised with its
//! payload, the later ones recorded as unhandled, every error kept, the one the scope was
//! cancelled with first. Shared by thread/task scopes and async scopes.

use crate::cancel::{Cause, SharedError};
use std::any::Any;
use std::sync::Arc;

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
