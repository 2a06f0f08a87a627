//! Running a scope: the body, then the exit protocol, which every scope runs whichever way its
//! body ends. This file is the protocol's one telling; design/0002-scope.md argues it.
//!
//! # The exit protocol
//! The body runs on the calling thread with the scope's context ambient, under `catch_unwind`.
//! Then, in a frame of its own (not on the stack while the body runs):
//! 1. **Cancel** the scope's node with the cause that says why: [`Cause::ScopeExited`] when the
//!    body returned, [`Cause::Panicked`] when it panicked (a child's failure or panic cancelled it
//!    earlier, and the first cause wins).
//! 2. **Join and close**: wait until no child is running, including those whose handles were
//!    dropped or forgotten and those that children spawned, and close the running count (scope
//!    invariant 4); the wait runs the scope's own pending pool tasks instead of just blocking,
//!    and no other scope's (`task_queue.rs`, "Helping").
//! 3. **Settle**: wait until the cancellation that reached the scope's node has run every
//!    on-cancel callback it collected (scope invariant 5). When the canceller is a thread the
//!    scope does not join (a timer firer thread for a deadline, or whoever cancelled an ancestor),
//!    a child can see the cancellation and finish before that thread has run the callbacks of the
//!    scope's contexts.
//! 4. **Release**: drop the scope's state, with its context and the values bound to it, on the
//!    owner's thread, once every child has let go of it, so no value outlives `scope` on a
//!    child's thread; a panicking destructor there counts as a panic of the scope.
//! 5. **Report**: the first panic (body or child) is re-raised with its original payload; the
//!    later ones go to [`crate::testing::take_unhandled_panics`]. Otherwise the fallible
//!    children's errors, the one the scope was cancelled with first, as [`ScopeError`].
//!    Otherwise the body's result.
//!
//! Nothing unwinds before step 2 has closed the count: the body's panic is caught, every drop of
//! user data on the way is caught, and [`AbortOnUnwind`] turns a bug that would unwind anyway
//! into an abort rather than let a child outlive the scope (scope invariant 1).

use super::error::ScopeError;
use super::failures::{self, Payload};
use super::handle::Scope;
use super::state::ScopeState;
use crate::ambient;
use crate::cancel::{Cause, SharedError};
use crate::dump::BlockingSite;
use crate::dump::registry::{self, WorkingFor};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Runs the body `f` in the scope whose state is `state`, then the exit protocol (module docs).
/// Only the body's own call is generic; the protocol is in [`join_and_settle`], whose frame is
/// not on the stack while the body runs (a nested scope costs its caller's stack little: see the
/// stack tests in `tests/scope/nesting.rs`).
pub(super) fn run_body_then_exit<'env, F, R>(state: Arc<ScopeState>, f: F) -> Result<R, ScopeError>
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let backstop = AbortOnUnwind;
    // Children may hold `&'scope Scope`: `scope` lives in this frame until the count is closed
    // (`join_and_settle` borrows it), not only while the body runs.
    let scope = Scope { state: &state, scope: PhantomData, env: PhantomData };
    // The body and the exit run in the scope's span (`crate::telemetry`): its cancellation event too.
    let span = state.obs.enter();
    let body = {
        let _working_for = WorkingFor::enter(state.meta.id);
        let _ambient = ambient::enter(&state.ctx);
        catch_unwind(AssertUnwindSafe(|| f(&scope)))
    };
    let (body, body_panic) = match body {
        Ok(result) => (Some(result), None),
        Err(payload) => (None, Some(payload)),
    };
    let mut ended = join_and_settle(&scope, body_panic);
    drop(span);
    // Every child has finished and the count is closed: nothing uses `scope` any more.
    ended.release(state);
    std::mem::forget(backstop);
    ended.report(body)
}

/// Aborts the process if dropped while unwinding: what [`run_body_then_exit`] holds from the
/// body's start until the running count is closed, where an unwinding could only come from a bug
/// in tether and would otherwise let a child outlive the scope.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("tether: the exit of a scope unwound before its children were joined; aborting");
        std::process::abort();
    }
}

/// Steps 1 to 3, and the failures step 5 reports. Never unwinds.
#[inline(never)]
fn join_and_settle(scope: &Scope<'_, '_>, body_panic: Option<Payload>) -> Ended {
    let state = scope.state;
    // 1. Cancel with the cause that says why (the first cause wins).
    match body_panic {
        None => state.cancel(Cause::ScopeExited),
        Some(payload) => {
            state.panicked(Some("scope body".into()), payload);
        }
    }
    // For dumps, the owner is in a blocking call at the scope's site until the settle is over.
    let blocked = BlockingSite::enter(state.meta.site);
    // 2. Join: wait until no child is running, whatever happened to the handles, and close the
    //    count.
    state.close();
    // 3. Settle.
    if let Some(settle) = &state.settle {
        settle.wait();
    }
    drop(blocked);
    // The scope is no longer live for dumps; the registry lets go of its reference, so that the
    // release finds the owner's the only one (`dump/registry.rs`, invariant 1).
    registry::unregister(state.meta.id);
    // Every child has counted itself out after recording its failures, and the wait
    // synchronized with that, so these are all that will ever be recorded.
    let (panics, errors) = state.take_failures().into_parts();
    Ended { panics, errors }
}

/// The failures of a scope whose children have all finished, for steps 4 and 5.
struct Ended {
    panics: Vec<Payload>,
    errors: Vec<SharedError>,
}

impl Ended {
    /// 4. Release: drops the scope's state here, on the owner's thread, once the children have
    ///    let go of it; a destructor that panics is a panic of the scope.
    #[inline(never)]
    fn release(&mut self, state: Arc<ScopeState>) {
        sole_owner(&state);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(state))) {
            self.panics.push(payload);
        }
    }

    /// 5. Report: the first panic, else the errors, else the body's result.
    fn report<R>(self, body: Option<R>) -> Result<R, ScopeError> {
        failures::report(self.panics, self.errors, body)
    }
}

/// Waits until `state` is the only reference to the scope's state. A child takes one just before
/// it counts itself out and lets go just after (a worker reporting late finishes holds one until
/// it has reported them), so once the join has seen no child running this waits at most for that
/// last step of each child.
fn sole_owner(state: &Arc<ScopeState>) {
    // SeqCst like every access to the count; the children's decrements are Release.
    while Arc::strong_count(state) > 1 {
        std::thread::yield_now();
    }
}
