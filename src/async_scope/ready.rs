//! The wake-ups of an async scope's children: each child is polled with a waker of its own, which
//! queues the child's key and wakes the scope's future, so a wake-up costs the poll of the child
//! it concerns rather than a poll of every child (`futures`' `FuturesUnordered` does the same with
//! a ready queue). [`Ready`] is the scope's side, owned by its future.
//!
//! A child is polled with a *borrowed* waker ([`Ready::poll_with`]): it points to a local of that
//! call and allocates nothing. Only when the child clones it (to keep it past the poll) is an owned
//! waker made, an `Arc` per key, kept in [`Ready`] and reused by later clones and by later children
//! at that key. So a child that finishes without waiting costs no waker at all.
//!
//! # Invariants
//! 1. A key is queued at most once: `QueueState::queued` marks the queued keys, and a wake-up of
//!    a queued key adds nothing. The scope takes the queued keys and clears their marks under the
//!    queue's lock before it polls them, so a wake-up during or after such a poll queues the key
//!    again, and one that found the mark set happened before the take (the lock orders them): no
//!    wake-up is lost.
//! 2. Keys are the indices of the scope's slab of children, reused once a child has finished. A
//!    waker that outlived its child may queue the key of a later child, which then gets a spurious
//!    poll (every future tolerates those); a queued key with no child is skipped.
//! 3. A borrowed waker lives only inside [`Ready::poll_with`], and what it points to (a local of
//!    that call, borrowing the key's owned-waker cell and the queue) outlives it; the cells grow
//!    only through `&mut self`, so none moves while a borrowed waker exists.
//! 4. No code of the executor runs under the queue's lock but a clone of the scope's waker; waking
//!    it, and dropping the one it replaces, happen after the lock is released.

use crate::loom::{Mutex, MutexGuard};
use std::sync::{Arc, OnceLock, PoisonError};
use std::task::{RawWaker, RawWakerVTable, Wake, Waker};

/// The scope's side: the queue of woken keys and each key's owned waker.
pub(crate) struct Ready {
    queue: Arc<Queue>,
    /// Indexed by key (invariant 2): its owned waker, made by the first clone of a borrowed one.
    /// Grown only by [`Ready::add_keys`] (invariant 3).
    owned: Vec<OnceLock<Waker>>,
}

/// What a borrowed waker points to, for one poll (invariant 3).
struct Borrowed<'a> {
    key: usize,
    owned: &'a OnceLock<Waker>,
    queue: &'a Arc<Queue>,
}

/// What the wakers share with the scope.
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Keys woken since the scope last took them (invariant 1).
    keys: Vec<usize>,
    /// By key: whether it is in `keys`.
    queued: Vec<bool>,
    /// The waker of the scope's future, from its latest poll.
    scope: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key`, unless it is queued, and wakes the scope's future (invariants 1 and 4).
    fn wake(&self, key: usize) {
        let scope = {
            let mut state = self.lock();
            if state.queued.len() <= key {
                state.queued.resize(key + 1, false);
            }
            if state.queued[key] {
                return;
            }
            state.queued[key] = true;
            state.keys.push(key);
            state.scope.clone()
        };
        if let Some(scope) = scope {
            scope.wake();
        }
    }
}

/// The owned waker of a key.
struct ChildWaker {
    key: usize,
    queue: Arc<Queue>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.queue.wake(self.key);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.wake(self.key);
    }
}

/// The vtable of a borrowed waker, whose data is a `*const Borrowed` (invariant 3).
static BORROWED: RawWakerVTable =
    RawWakerVTable::new(clone_borrowed, wake_borrowed, wake_borrowed, drop_borrowed);

/// Makes (once per key) and clones the key's owned waker.
unsafe fn clone_borrowed(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the `&Borrowed` a borrowed waker was made from, which outlives that waker
    // (invariant 3); this is called through that waker, so while it exists.
    let borrowed = unsafe { &*data.cast::<Borrowed<'_>>() };
    let owned = borrowed.owned.get_or_init(|| {
        Waker::from(Arc::new(ChildWaker { key: borrowed.key, queue: borrowed.queue.clone() }))
    });
    // The clone's ownership passes to the `RawWaker`, so the `Waker` must not drop it.
    let owned = std::mem::ManuallyDrop::new(owned.clone());
    RawWaker::new(owned.data(), owned.vtable())
}

/// `wake` and `wake_by_ref` alike: a borrowed waker owns nothing, so consuming it frees nothing.
unsafe fn wake_borrowed(data: *const ()) {
    // SAFETY: as in `clone_borrowed`.
    let borrowed = unsafe { &*data.cast::<Borrowed<'_>>() };
    borrowed.queue.wake(borrowed.key);
}

unsafe fn drop_borrowed(_data: *const ()) {}

impl Ready {
    /// No keys, no wakers.
    pub(crate) fn new() -> Ready {
        let state = QueueState::default();
        Ready { queue: Arc::new(Queue { state: Mutex::new(state) }), owned: Vec::new() }
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
        drop(replaced); // invariant 4
    }

    /// Adds the keys woken since the last call to `keys`, no longer marked queued (invariant 1).
    pub(crate) fn take_woken(&self, keys: &mut Vec<usize>) {
        let mut state = self.queue.lock();
        let QueueState { keys: woken, queued, .. } = &mut *state;
        for &key in woken.iter() {
            queued[key] = false;
        }
        keys.append(woken);
    }

    /// Makes sure every key below `end` has an entry, before a child at such a key is polled.
    pub(crate) fn add_keys(&mut self, end: usize) {
        if self.owned.len() < end {
            self.owned.resize_with(end, OnceLock::new);
        }
    }

    /// Calls `poll` with the waker to poll the child at `key` with (a key [`Ready::add_keys`] has
    /// seen), borrowed for the call (invariant 3).
    pub(crate) fn poll_with<R>(&self, key: usize, poll: impl FnOnce(&Waker) -> R) -> R {
        let borrowed = Borrowed { key, owned: &self.owned[key], queue: &self.queue };
        let data: *const Borrowed<'_> = &borrowed;
        // SAFETY: `BORROWED`'s functions treat the data as a `&Borrowed`, which outlives the
        // waker: `borrowed` is a local declared before it, so dropped after it, and `poll` gets
        // the waker by reference, for the call only (a clone is an ordinary `Arc` waker). They
        // are thread-safe, as a waker must be: a `Borrowed` is `Sync` (the queue is behind a
        // mutex, the owned waker in a `OnceLock`).
        let waker = unsafe { Waker::from_raw(RawWaker::new(data.cast(), &BORROWED)) };
        poll(&waker)
    }
}

impl Drop for Ready {
    /// A child's waker may outlive the scope (held by whatever the child was waiting on): it then
    /// keeps the queue, but no longer the scope's waker, nor the keys.
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.queue.lock());
        drop(state); // invariant 4
    }
}
