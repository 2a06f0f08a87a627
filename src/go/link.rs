//! Hearing about the cancellation of a custom parent: Go's `propagateCancel`, without a thread per
//! derivation.
//!
//! Go spends a goroutine per context derived from a parent it does not recognise. Here a
//! subscription to a custom parent `P` is, in order of preference:
//! 1. nothing, if `P.done()` is `None` (it can never be cancelled);
//! 2. an immediate call, if `P`'s done channel is already closed;
//! 3. an on-cancel callback on the native node inside `P`, when `P` forwards Go's private
//!    cancel-context key to one whose done channel is `P`'s own (Go's `parentCancelCtx`: a wrapper
//!    like Go's `otherContext`);
//! 4. `P`'s own [`GoContext::after_func`] hook, when it has one (Go's `afterFuncer`);
//! 5. one entry in the crate's **shared watcher** (`src/watcher.rs`): a single thread for the
//!    whole process that waits on the done channels of every watched parent at once.

use super::go_context::{GoContext, cancel_ctx_key};
use super::stop::Subscription;
use crate::watcher::{self, Fire};
use crossbeam_channel::TryRecvError;
use std::sync::Arc;

/// Ties `fire` to the cancellation of the custom context `parent` (see the module docs for the
/// order of preference). `fire` runs at most once.
pub(crate) fn subscribe(parent: &Arc<dyn GoContext>, fire: Fire) -> Subscription {
    // 1. Never cancelled.
    let Some(done) = parent.done() else {
        return Subscription::Never;
    };
    // 2. Already done.
    if matches!(done.try_recv(), Err(TryRecvError::Disconnected)) {
        fire();
        return Subscription::Fired;
    }
    // 3. A wrapper around a native node with the same done channel.
    let inner = parent.value(cancel_ctx_key()).and_then(|v| v.downcast_ref::<crate::context::Context>());
    if let Some(inner) = inner.filter(|inner| crate::cancel::Canceller::done(*inner).same_channel(&done)) {
        return Subscription::Native(inner.on_cancel(move |_| fire()));
    }
    // 4. The parent's own hook; 5. the shared watcher.
    match parent.after_func(fire) {
        Ok(stop) => Subscription::Hook(Box::new(stop)),
        Err(fire) => {
            let entry = watcher::watch(done.receiver().clone(), fire);
            Subscription::Other(Box::new(move || entry.stop()))
        }
    }
}
