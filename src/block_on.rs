//! [`block_on`]: drives one future to completion on the calling thread, parking between polls.
//! What a thread child spawned with `Scope::spawn_future` runs; not a general executor (one
//! future, no spawning, no I/O driver).
//!
//! A wake sets a flag of the waker's own before it unparks the thread, and the loop parks only
//! while that flag is clear. So a wake is never lost, even when the future itself parks the
//! thread inside a poll (a blocking receive, a `Canceller::wait`) and so consumes the thread's
//! unpark token.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// Wakes the thread blocked in [`block_on`].
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Release: pairs with the Acquire swap in `block_on`, so the waker's writes are seen by
        // the poll that follows.
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `future` until it is ready; parks the thread while it is pending and not woken.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let unpark = Arc::new(Unpark { thread: std::thread::current(), woken: AtomicBool::new(false) });
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Acquire: pairs with the Release store in `wake_by_ref`.
        while !unpark.woken.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    }
}
