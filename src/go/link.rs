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
//! 5. one entry in the **shared watcher**: a single thread for the whole process that waits on
//!    the done channels of every watched parent at once.
//!
//! # Invariants
//! 1. A watch entry is `PENDING` until exactly one of fire (the parent's done channel closed) or
//!    stop wins a compare-and-swap; the winner alone runs or drops the closure.
//! 2. The watcher thread holds an entry's channel only while the entry is `PENDING`; a stopped
//!    entry is dropped at the watcher's next wake-up, which `stop` triggers.
//! 3. The closure runs on the watcher thread with no lock held.

use super::go_context::{GoContext, cancel_ctx_key};
use super::stop::Subscription;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// A closure run once when a context is done.
pub(crate) type Fire = Box<dyn FnOnce() + Send + 'static>;

/// Watch state: waiting (invariant 1).
const PENDING: u8 = 0;
/// Watch state: the parent was done and the closure ran or is running.
const FIRED: u8 = 1;
/// Watch state: stopped before it fired; the closure was dropped.
const STOPPED: u8 = 2;

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
            let entry = watch(done, fire);
            Subscription::Other(Box::new(move || entry.stop()))
        }
    }
}

/// One watched done channel.
struct Watch {
    /// `PENDING`, `FIRED` or `STOPPED` (invariant 1).
    state: AtomicU8,
    /// Taken by whichever of fire and stop wins.
    fire: Mutex<Option<Fire>>,
}

impl Watch {
    /// Takes the closure if `to` wins the race out of `PENDING` (invariant 1).
    fn claim(&self, to: u8) -> Option<Fire> {
        // AcqRel: the winner of the CAS is the only one to touch `fire`; the mutex orders the
        // closure itself, the CAS only picks the winner.
        self.state.compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire).ok()?;
        self.fire.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// True if this call prevented the closure from running.
    fn stop(&self) -> bool {
        match self.claim(STOPPED) {
            Some(fire) => {
                drop(fire); // user captures: no lock held
                // Invariant 2: let the watcher drop the channel. A send only fails if the
                // watcher thread is gone, and then there is nothing to drop.
                let _ = watcher().send(Msg::Wake);
                true
            }
            None => false,
        }
    }

    fn is_pending(&self) -> bool {
        // Acquire: pairs with the AcqRel CAS in `claim`.
        self.state.load(Ordering::Acquire) == PENDING
    }
}

enum Msg {
    Add(Receiver<Infallible>, Arc<Watch>),
    Wake,
}

fn watch(done: Receiver<Infallible>, fire: Fire) -> Arc<Watch> {
    let entry = Arc::new(Watch { state: AtomicU8::new(PENDING), fire: Mutex::new(Some(fire)) });
    // A send only fails if the watcher thread died, which it does not (panics are caught).
    let _ = watcher().send(Msg::Add(done, entry.clone()));
    entry
}

/// The shared watcher's inbox; the thread starts with the first watch.
fn watcher() -> &'static Sender<Msg> {
    static INBOX: OnceLock<Sender<Msg>> = OnceLock::new();
    INBOX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("tether-go-watcher".into())
            .spawn(move || run(rx))
            .expect("tether: cannot start the Go adapter's watcher thread");
        tx
    })
}

/// The watcher loop: wait on the inbox and every pending done channel at once; run the closure of
/// each channel that closes.
fn run(inbox: Receiver<Msg>) {
    let mut entries: Vec<(Receiver<Infallible>, Arc<Watch>)> = Vec::new();
    loop {
        entries.retain(|(_, w)| w.is_pending()); // invariant 2
        // Wait for the inbox or a done channel; finish the selected operation before the
        // borrow of `entries` ends.
        let (index, msg) = {
            let mut select = Select::new();
            select.recv(&inbox);
            for (rx, _) in &entries {
                select.recv(rx);
            }
            let op = select.select();
            match op.index() {
                0 => (0, Some(op.recv(&inbox))),
                i => {
                    let _ = op.recv(&entries[i - 1].0); // disconnected: the parent is done
                    (i, None)
                }
            }
        };
        match (index, msg) {
            (0, Some(Ok(Msg::Add(rx, w)))) => entries.push((rx, w)),
            (0, Some(Ok(Msg::Wake))) => {}
            (0, _) => return, // every sender is gone: the process is exiting
            (i, _) => {
                let (_, w) = entries.swap_remove(i - 1);
                if let Some(fire) = w.claim(FIRED) {
                    // Invariant 3; a panic has no caller to go to, so it is recorded.
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(fire)) {
                        crate::unhandled::record(payload);
                    }
                }
            }
        }
    }
}
