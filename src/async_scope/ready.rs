//! The wake-ups of an async scope's children: each child is polled with a waker of its own, which
//! queues the child's key and wakes the scope's future, so a wake-up costs the poll of the child
//! it concerns rather than a poll of every child (`futures`' `FuturesUnordered` does the same with
//! a ready queue). [`Ready`] is the scope's side, owned by its future; [`ChildWaker`] the child's.
//!
//! # Invariants
//! 1. A key is queued at most once: a wake-up that finds its waker's `queued` flag set adds
//!    nothing. The scope clears the flag ([`Ready::waker_for_poll`]) before it polls the child, so
//!    a wake-up during or after that poll queues the key again. No wake-up is lost: a wake-up that
//!    finds the flag set was ordered before the clearing (both are `AcqRel` swaps of one flag), so
//!    the poll that follows the clearing sees what the wake-up announced.
//! 2. Keys are the indices of the scope's slab of children, reused once a child has finished. A
//!    waker that outlived its child may queue the key of a later child, which then gets a spurious
//!    poll (every future tolerates those); a queued key with no child is skipped. The wakers are
//!    made per key, not per child, so a scope whose children come and go allocates one per key.
//! 3. No code of the executor runs under the queue's lock but a clone of the scope's waker; waking
//!    it, and dropping the one it replaces, happen after the lock is released.

use crate::loom::{AtomicBool, Mutex, MutexGuard, Ordering::AcqRel};
use std::sync::{Arc, PoisonError};
use std::task::{Wake, Waker};

/// The scope's side: the queue of woken keys and a waker for each key.
pub(crate) struct Ready {
    queue: Arc<Queue>,
    /// Indexed by key: made on the key's first use, kept for the scope's life (invariant 2).
    wakers: Vec<(Arc<ChildWaker>, Waker)>,
}

/// What the wakers share with the scope.
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Keys woken since the scope last took them (invariant 1).
    keys: Vec<usize>,
    /// The waker of the scope's future, from its latest poll.
    scope: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The waker of the child at `key`.
struct ChildWaker {
    key: usize,
    /// Whether `key` is in the queue, or taken out and not yet polled (invariant 1).
    queued: AtomicBool,
    queue: Arc<Queue>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // AcqRel: pairs with the scope's clearing swap in `waker_for_poll` (invariant 1).
        if self.queued.swap(true, AcqRel) {
            return;
        }
        let scope = {
            let mut state = self.queue.lock();
            state.keys.push(self.key);
            state.scope.clone()
        };
        if let Some(scope) = scope {
            scope.wake();
        }
    }
}

impl Ready {
    /// No keys, no wakers.
    pub(crate) fn new() -> Ready {
        let state = QueueState { keys: Vec::new(), scope: None };
        Ready { queue: Arc::new(Queue { state: Mutex::new(state) }), wakers: Vec::new() }
    }

    /// Records the waker of the scope's future's current poll, which every child's wake-up
    /// wakes from now on.
    pub(crate) fn register(&self, waker: &Waker) {
        let replaced = {
            let mut state = self.queue.lock();
            match &state.scope {
                Some(current) if current.will_wake(waker) => None,
                _ => state.scope.replace(waker.clone()),
            }
        };
        drop(replaced); // invariant 3
    }

    /// Adds the keys woken since the last call to `keys`.
    pub(crate) fn take_woken(&self, keys: &mut Vec<usize>) {
        let mut state = self.queue.lock();
        if keys.is_empty() {
            std::mem::swap(keys, &mut state.keys);
        } else {
            keys.append(&mut state.keys);
        }
    }

    /// Marks the new child at `key` as queued for its first poll; `false` if the key already is
    /// (a waker of an earlier child queued it: it is in the queue, and the scope's waker was woken).
    pub(crate) fn mark_new(&mut self, key: usize) -> bool {
        // AcqRel: as in `wake_by_ref` (invariant 1).
        !self.waker(key).0.queued.swap(true, AcqRel)
    }

    /// The waker to poll the child at `key` with, its key no longer queued (invariant 1).
    pub(crate) fn waker_for_poll(&mut self, key: usize) -> &Waker {
        let (child, waker) = self.waker(key);
        // AcqRel: pairs with the swap of a wake-up that found the flag set (invariant 1).
        child.queued.swap(false, AcqRel);
        waker
    }

    fn waker(&mut self, key: usize) -> &(Arc<ChildWaker>, Waker) {
        while self.wakers.len() <= key {
            let child = Arc::new(ChildWaker {
                key: self.wakers.len(),
                queued: AtomicBool::new(false),
                queue: self.queue.clone(),
            });
            self.wakers.push((child.clone(), Waker::from(child)));
        }
        &self.wakers[key]
    }
}

impl Drop for Ready {
    /// A child's waker may outlive the scope (held by whatever the child was waiting on): it then
    /// keeps the queue, but no longer the scope's waker, nor the keys.
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.queue.lock());
        drop(state); // invariant 3
    }
}
