//! The shared watcher: one thread for the whole process that waits on many done channels at once
//! and runs a closure when one of them closes. What tether uses to hear about the cancellation of
//! something it cannot register a callback with: a custom Go context (`go/link.rs`), or a foreign
//! [`Canceller`](crate::Canceller) awaited as a future (`cancel/awaited.rs`). Costs no thread per
//! watch; the thread starts with the first watch.
//!
//! # Invariants
//! 1. A watch entry is `PENDING` until exactly one of fire (its done channel closed) or stop wins a
//!    compare-and-swap; the winner alone runs or drops the closure.
//! 2. The watcher thread holds an entry's channel only while the entry is `PENDING`; a stopped
//!    entry is dropped at the watcher's next wake-up, which `stop` triggers.
//! 3. The closure runs on the watcher thread with no lock held; a panic there has no caller and
//!    is recorded (`unhandled.rs`).

use crossbeam_channel::{Receiver, Select, Sender};
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

/// One watched done channel.
pub(crate) struct Watch {
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
    pub(crate) fn stop(&self) -> bool {
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

/// Runs `fire` on the watcher thread once `done` disconnects, unless stopped first.
pub(crate) fn watch(done: Receiver<Infallible>, fire: Fire) -> Arc<Watch> {
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
            .name("tether-watcher".into())
            .spawn(move || run(rx))
            .expect("tether: cannot start the watcher thread");
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
