//! A scope's running count (scope invariant 4): children spawned and not yet finished, and its
//! closing by the exit.
//!
//! # Invariants
//! 1. A child is counted before it can run (on the spawning thread, which is the body or itself
//!    counted, so the count cannot reach zero while a spawn is under way) and counts itself out
//!    as the last thing it does with `'scope` data.
//! 2. The exit closes the count only at zero, with one compare-exchange (`0 -> CLOSED`): a child
//!    that started after the exit saw zero makes it fail, and the exit waits again. Once closed,
//!    [`RunningCount::start`] refuses, so no child can start that nothing would wait for.
//! 3. Every access is `SeqCst`: the decrements are Release and the exit's load that sees zero is
//!    Acquire (a release sequence of read-modify-writes), so everything each child did happens
//!    before the exit goes on; and the waiters' handshake in `Shared` (`waiters` against the
//!    last decrement) is a store-load pattern that needs the single total order.
//!
//! The loom model `src/tests/loom_task.rs` checks the close against late finishes and spawns.

use crate::loom::AtomicUsize;
use crate::loom::Ordering::SeqCst;
use crossbeam_utils::CachePadded;

/// The count once the exit has closed it: its top bit.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Children spawned and not yet finished (module docs). On a cache line of its own: every child
/// start and finish writes it, from any thread.
pub(crate) struct RunningCount(CachePadded<AtomicUsize>);

/// Why [`RunningCount::start`] refused to count a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The exit has closed the count (invariant 2): a bug, since nothing can spawn then.
    Closed,
    /// Absurdly many children (only by forgetting handles by the billion): the count never wraps.
    TooMany,
}

impl RunningCount {
    pub(crate) fn new() -> RunningCount {
        RunningCount(CachePadded::new(AtomicUsize::new(0)))
    }

    /// Counts one child as running (invariant 1).
    pub(crate) fn start(&self) -> Result<(), Refused> {
        let before = self.0.fetch_add(1, SeqCst);
        if before & CLOSED != 0 {
            self.0.fetch_sub(1, SeqCst); // undone: nobody waits for a closed count
            return Err(Refused::Closed);
        }
        if before > CLOSED / 2 {
            self.0.fetch_sub(1, SeqCst); // undone: `before` was far from zero, so this is not the last
            return Err(Refused::TooMany);
        }
        Ok(())
    }

    /// Counts `n` children out; whether they were the last ones running.
    pub(crate) fn finish(&self, n: usize) -> bool {
        self.0.fetch_sub(n, SeqCst) == n
    }

    /// Whether no child is running (and the count is not closed).
    pub(crate) fn is_zero(&self) -> bool {
        self.0.load(SeqCst) == 0
    }

    /// Closes the count if it is zero (invariant 2); whether it did.
    pub(crate) fn try_close(&self) -> bool {
        self.0.compare_exchange(0, CLOSED, SeqCst, SeqCst).is_ok()
    }

    /// The number of children running, for `Debug`.
    pub(crate) fn running(&self) -> usize {
        self.0.load(SeqCst) & !CLOSED
    }
}
