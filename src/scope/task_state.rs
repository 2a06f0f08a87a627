//! A pool task's life in one byte: who runs it, whether its outcome is stored, whether its
//! handle is gone, and so who drops what is left (`task.rs`, "Who drops what").
//!
//! Three bits, each set once by one read-modify-write: [`CLAIMED`] by the one thread that runs
//! (or skips) the task, [`DONE`] by that thread once the outcome is stored, [`RELEASED`] by the
//! handle's drop. The runner and the handle each set one of `DONE` and `RELEASED` and learn from
//! the same `fetch_or` whether the other's bit was already there, so exactly one of them lets go
//! [`Last`](LetGo::Last) and drops the leftovers, after the other's last use of them.
//!
//! The loom model `src/tests/loom_task.rs` checks this protocol: claim against an inline join
//! and a stale copy, the handle's drop against the runner's finish, and that the leftovers are
//! dropped once, before the task counts itself out.

use crate::loom::AtomicU8;
use crate::loom::Ordering::{AcqRel, Acquire};

/// A thread has claimed the task, to run or skip it.
const CLAIMED: u8 = 1;
/// The outcome is stored.
const DONE: u8 = 2;
/// The handle is gone.
const RELEASED: u8 = 4;

/// The state of one pool task (module docs).
pub(crate) struct TaskState(AtomicU8);

/// What a party learns when it lets go of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the party that lets go last must drop the leftovers"]
pub(crate) enum LetGo {
    /// The other party still uses the task: it drops the leftovers when it lets go.
    First,
    /// The other party has let go: drop the leftovers (the outcome if nobody took it, the
    /// context) now. Everything the other party did with them happened before.
    Last,
}

impl TaskState {
    /// A task nobody has claimed, not done, with its handle.
    pub(crate) fn new() -> TaskState {
        TaskState(AtomicU8::new(0))
    }

    /// Claims the task for this thread; `true` for exactly one caller, ever.
    pub(crate) fn claim(&self) -> bool {
        // Acquire: the spawner's writes of the closure happen before (they are also published
        // by the queues, or by moving the handle to the joiner's thread).
        self.0.fetch_or(CLAIMED, Acquire) & CLAIMED == 0
    }

    /// Whether a thread has claimed the task (then every other copy of it is stale).
    pub(crate) fn is_claimed(&self) -> bool {
        // Acquire: pairs with `claim`, so a caller that frees a claimed copy does so after it.
        self.0.load(Acquire) & CLAIMED != 0
    }

    /// Whether the outcome is stored.
    pub(crate) fn is_done(&self) -> bool {
        // Acquire: pairs with the Release half of `finish`: the outcome may be read after this.
        self.0.load(Acquire) & DONE != 0
    }

    /// Whether the handle is gone.
    pub(crate) fn is_released(&self) -> bool {
        // Acquire: pairs with the Release half of `release`: what the handle made before it
        // went (the task's context) is seen after this.
        self.0.load(Acquire) & RELEASED != 0
    }

    /// The runner has stored the outcome.
    pub(crate) fn finish(&self) -> LetGo {
        // AcqRel: Release publishes the outcome to `is_done`; Acquire pairs with `release`, so
        // the handle's last use of the task happens before this thread drops the leftovers.
        Self::second_if(self.0.fetch_or(DONE, AcqRel) & RELEASED != 0)
    }

    /// The handle is gone.
    pub(crate) fn release(&self) -> LetGo {
        // AcqRel: Release orders the handle's uses of the task before the runner's drop of the
        // leftovers; Acquire pairs with `finish`, before this thread drops them.
        Self::second_if(self.0.fetch_or(RELEASED, AcqRel) & DONE != 0)
    }

    fn second_if(other_went: bool) -> LetGo {
        if other_went { LetGo::Last } else { LetGo::First }
    }
}
