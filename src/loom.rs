//! The loom/std shim: the racy core uses these types, so `--cfg loom` model-checks the real code.
//!
//! Under `cfg(loom)` the mutexes, atomics and `Arc` come from [loom](https://docs.rs/loom), which
//! explores every interleaving of the models in `src/tests/`, and checks every access to an
//! [`UnsafeCell`] against the order its callers claim; otherwise they are `std`'s. Only the
//! cancellation tree (`cancel::tree`), a pool task's state (`scope::task_state`), a scope's
//! running count (`scope::count`), the armed action of a blocking helper (`blocking::armed`), the
//! latch a `join` waits on (`pool::stack_job`, with [`park_backstop`]) and an async scope's child
//! wakers (`async_scope::ready`) go through this shim.
//! The timer driver, the live counters and the lazily created done channels use `std` directly: they are not part of the modelled races
//! (the models create no deadlines, and a counter or a channel disconnect never blocks).

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence},
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence},
};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure API (`with`, `with_mut`), so that under loom every
/// access is checked against the happens-before order the callers' protocol claims.
#[cfg(not(loom))]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer for reading the value.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer for writing the value.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::thread::{Thread, current as current_thread, park};

#[cfg(not(loom))]
pub(crate) use std::thread::{Thread, current as current_thread, park};

/// `std::thread::park_timeout`; under loom, which models no time, a spurious wake-up (which the
/// callers' loops must tolerate anyway, as `park`'s contract allows).
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = timeout;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    std::thread::park_timeout(timeout);
}

/// A park whose timeout is only a backstop (the waiter is always unparked by whoever it waits
/// for): `std::thread::park_timeout`; under loom an unbounded park, so that a model that loses
/// the wake-up deadlocks instead of being rescued by a spurious return.
pub(crate) fn park_backstop(timeout: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = timeout;
        loom::thread::park();
    }
    #[cfg(not(loom))]
    std::thread::park_timeout(timeout);
}

/// Locks `mutex`, ignoring poisoning.
///
/// No code in this crate panics while holding a tree lock (user code, such as callbacks and value
/// destructors, always runs after every lock is released), so a poisoned lock can only come from a
/// bug that has already been reported by its own panic; the protected state is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    {
        mutex.lock().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(not(loom))]
    {
        mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
