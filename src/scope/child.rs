//! What thread children (`thread.rs`) and task children (`task.rs`) share: the outcome a child
//! hands to its handle and how a handle turns it into a join result, the guard that counts a
//! child as running, the marker that tells a thread which scope's child it is running, and the
//! wrapper that makes a fallible child's `Err` fail its scope.
//!
//! # A child's life, whatever its kind
//! 1. On the spawning thread (the body or a counted child): take a slot of the limit, if any
//!    ([`Slot`]), and count the child as running ([`Running::start`]) before it can run.
//! 2. Wherever it runs: make its context ambient, mark the thread as running a child of the
//!    scope ([`ChildOf`]), run the closure under `catch_unwind`.
//! 3. A panic is recorded in the scope and cancels it (scope invariant 2); a fallible child's
//!    `Err` is recorded and cancels the scope with [`Cause::ChildFailed`]([`fail_scope_on_err`]).
//! 4. Hand the [`Outcome`] to the handle; if the handle is gone, drop it, and the child's
//!    context, here, under `catch_unwind` (`ScopeState::drop_caught`).
//! 5. Drop [`Running`]: give the slot back and count the child out, the last thing it does with
//!    anything borrowed from `'scope`.
//!
//! [`Cause::ChildFailed`]: crate::Cause::ChildFailed

use super::error::JoinError;
use super::state::{ScopeState, Slot};
use crate::cancel::Cause;
use crate::context::Context;
use crate::live::{self, Counter};
use crate::pool;
use std::cell::Cell;
use std::error::Error;
use std::ptr::NonNull;
use std::sync::Arc;

/// What a child hands to its handle.
pub(super) enum Outcome<T> {
    Returned(T),
    /// The child panicked; the payload is in the scope's failures under this id.
    Panicked(u64),
    /// A task whose context was cancelled before it started; its closure was dropped uncalled.
    /// The cause is that context's (or, if the task never made one, the scope's): a cause never
    /// changes once set, so the handle reads it there (which keeps a task's allocation small).
    /// Thread children always run.
    Skipped,
}

impl<T> Outcome<T> {
    /// What `join` returns for this outcome: the value, or the panic (taken back from the
    /// scope, which then does not re-raise it), or the skip with its cause.
    pub(super) fn into_join_result(
        self,
        state: &ScopeState,
        name: Option<Arc<str>>,
        skip_cause: impl FnOnce() -> Cause,
    ) -> Result<T, JoinError> {
        match self {
            Outcome::Returned(value) => Ok(value),
            Outcome::Panicked(id) => {
                let payload = state.take_panic(id).expect("tether: a child's panic was taken twice");
                Err(JoinError::new(name, payload))
            }
            Outcome::Skipped => Err(JoinError::skipped(skip_cause())),
        }
    }
}

/// Wraps a fallible child's closure so that its `Err` fails the scope (step 3): recorded, and
/// the scope cancelled with it; the handle gets the same shared error.
pub(super) fn fail_scope_on_err<'scope, F, T, E>(
    state: &'scope ScopeState,
    f: F,
) -> impl FnOnce(&Context) -> Result<T, Arc<E>> + Send + 'scope
where
    F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
    E: Error + Send + Sync + 'static,
{
    move |ctx| f(ctx).map_err(|error| state.fail_with(error))
}

/// Which kind of child a [`Running`] counts, with what that kind does as it counts out.
pub(super) enum Kind {
    /// A thread child, and its entry in the leak checker's registry of live scope threads.
    Thread { registry_id: Option<u64> },
    /// A task child, and whether its worker may count it out late, in one step with the next
    /// tasks of the same scope it runs (pool invariant 4; set by [`Running::begin_task`]).
    Task { late: bool },
}

/// Counts a child as running from its spawn until it is done (scope invariant 4): dropping it is
/// the child's last step.
///
/// Holds the scope's state by address, not by `Arc`: the count it stands for keeps the state
/// alive (the scope drops its `Arc` only after it has seen the count at zero), so a child costs
/// the state's reference count nothing while it runs. Counting out takes a reference first
/// ([`Drop`]).
pub(super) struct Running {
    /// From [`Arc::as_ptr`], so its provenance covers the `Arc`'s header too ([`Running::hold`]).
    state: NonNull<ScopeState>,
    slot: Slot,
    kind: Kind,
}

// SAFETY: `Running` is `!Send` only because of the pointer; `ScopeState` is `Sync`, and the
// pointee lives for as long as the `Running` does (see the type's docs).
unsafe impl Send for Running {}

impl Running {
    /// Counts a child of `state` as running (step 1).
    pub(super) fn start(state: &Arc<ScopeState>, slot: Slot, kind: Kind) -> Running {
        state.start_one();
        live::add(counter(&kind), 1);
        // `Arc::as_ptr`, not a reference: `hold` uses the pointer to reach the `Arc`'s counts,
        // which a reference to the contents has no provenance over.
        let state = NonNull::new(Arc::as_ptr(state).cast_mut()).expect("an `Arc` is never null");
        Running { state, slot, kind }
    }

    /// The scope's state, alive while this count is (see the type's docs).
    pub(super) fn state(&self) -> &ScopeState {
        // SAFETY: the scope keeps its `Arc` until it has seen the count at zero, and this
        // `Running` is one of that count until it drops.
        unsafe { self.state.as_ref() }
    }

    /// Called as a task starts running on a pool thread: whether its worker may count it out
    /// late (pool invariant 4).
    pub(super) fn begin_task(&mut self) {
        if let Kind::Task { late } = &mut self.kind {
            *late = pool::begin_job(self.state.as_ptr().cast());
        }
    }

    /// A new reference to the scope's state, to use after the count has dropped.
    fn hold(&self) -> Arc<ScopeState> {
        let ptr = self.state.as_ptr().cast_const();
        // SAFETY: `ptr` came from `Arc::as_ptr` on the scope's `Arc<ScopeState>` (`start`),
        // whose allocation is alive (see `state`), so its strong count is at least one and may
        // be incremented, and `from_raw` then owns that new count.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }
}

fn counter(kind: &Kind) -> Counter {
    match kind {
        Kind::Thread { .. } => Counter::Threads,
        Kind::Task { .. } => Counter::Tasks,
    }
}

impl Drop for Running {
    /// Step 5.
    fn drop(&mut self) {
        self.state().give_back(self.slot);
        if let Kind::Thread { registry_id: Some(id) } = self.kind {
            live::thread_finished(id);
        }
        live::add(counter(&self.kind), -1);
        // Last: after this the scope may end (see the `SAFETY` comments of the spawns), so a
        // reference is taken first, for the decrement's wake-up (and, late, for the worker to
        // report it).
        match self.kind {
            Kind::Task { late: true } => {
                pool::finish_late(self.state.as_ptr().cast_const().cast(), || self.hold())
            }
            _ => self.hold().finish(1),
        }
    }
}

thread_local! {
    /// The scopes this thread is running a child of, as addresses for comparison only (null when
    /// none): the thread child's scope, and the innermost task's.
    static CHILD_OF: ChildOfCells = const { ChildOfCells { thread: Cell::new(std::ptr::null()), task: Cell::new(std::ptr::null()) } };
}

struct ChildOfCells {
    thread: Cell<*const ScopeState>,
    task: Cell<*const ScopeState>,
}

/// Marks this thread as running a child of a scope until dropped (step 2), for
/// [`Scope::wait_all`](super::Scope::wait_all) to refuse to wait for itself.
pub(super) struct ChildOf {
    /// The task marker this one replaced (tasks nest: a task may run another scope's inline).
    outer_task: Option<*const ScopeState>,
}

impl ChildOf {
    /// This thread is the thread child of `state`'s scope, for the rest of its life.
    pub(super) fn thread(state: &ScopeState) -> ChildOf {
        let _ = CHILD_OF.try_with(|c| c.thread.set(state));
        ChildOf { outer_task: None }
    }

    /// This thread runs a task of `state`'s scope until the marker drops.
    pub(super) fn task(state: &ScopeState) -> ChildOf {
        ChildOf { outer_task: CHILD_OF.try_with(|c| c.task.replace(state)).ok() }
    }
}

impl Drop for ChildOf {
    fn drop(&mut self) {
        if let Some(outer) = self.outer_task {
            let _ = CHILD_OF.try_with(|c| c.task.set(outer));
        }
    }
}

/// Whether this thread is running a child (thread or task) of the scope whose state is `state`.
pub(super) fn is_child_of(state: &ScopeState) -> bool {
    CHILD_OF
        .try_with(|c| std::ptr::eq(c.thread.get(), state) || std::ptr::eq(c.task.get(), state))
        .unwrap_or(false)
}
