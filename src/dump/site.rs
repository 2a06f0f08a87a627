//! Where threads are: one [`ThreadCell`] per thread that runs a scope child or a blocking call,
//! and the [`BlockingSite`] guard that records, in that cell, "in a blocking call since T at LOC".
//!
//! A cell is never freed: when its thread exits, it goes back to a free list for the next thread
//! (so the cells in use never exceed the threads alive at once, plus that many spare). A child's
//! record may therefore keep a plain `&'static` to the cell of the thread that runs it, and a
//! dump may read it at any time without a lock: at worst it reads a cell that has moved on to
//! another thread, which the dump's weak consistency allows (design/0008, "Consistency").
//!
//! # Invariants
//! 1. A cell's `site` and `since` are written only by the thread that holds the cell (the one
//!    whose thread-local lease it is), so the guard needs no read-modify-write.
//! 2. `site` is null outside a blocking call; `since` is meaningful only while `site` is not
//!    null, and is written before `site` (Release), so a reader that sees a site (Acquire) sees
//!    the `since` of that call or of a later one.

use std::panic::Location;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What a dump knows of a thread: its number and name, and the blocking call it is in.
pub(crate) struct ThreadCell {
    /// The number of the holder's `std::thread::ThreadId` (`ThreadId(7)` is 7). Written on lease.
    number: AtomicU64,
    /// The holder's name, written on lease (a short lock, taken by the holder once and by dumps).
    name: Mutex<Option<String>>,
    /// The site of the blocking call the holder is in, or null (invariants 1 and 2).
    site: AtomicPtr<Location<'static>>,
    /// When that call began, in nanoseconds since [`epoch`] (invariant 2).
    since: AtomicU64,
}

/// What a dump reads of a thread.
#[derive(Clone, Debug)]
pub(crate) struct ThreadSeen {
    pub(crate) number: u64,
    pub(crate) name: Option<String>,
    pub(crate) blocked: Option<(&'static Location<'static>, Instant)>,
}

/// Cells whose threads have exited, for the next threads to take.
static FREE: Mutex<Vec<&'static ThreadCell>> = Mutex::new(Vec::new());

/// The instant `since` counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A thread's hold on its cell; gives it back when the thread exits.
struct Lease(&'static ThreadCell);

impl Lease {
    fn take() -> Lease {
        let reused = FREE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let cell = reused.unwrap_or_else(|| {
            Box::leak(Box::new(ThreadCell {
                number: AtomicU64::new(0),
                name: Mutex::new(None),
                site: AtomicPtr::new(std::ptr::null_mut()),
                since: AtomicU64::new(0),
            }))
        });
        let me = std::thread::current();
        // Relaxed: a dump may read a stale number (module docs); nothing is published by it.
        cell.number.store(thread_number(me.id()), Relaxed);
        *cell.name.lock().unwrap_or_else(PoisonError::into_inner) = me.name().map(str::to_owned);
        Lease(cell)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Relaxed: invariant 1 (this thread is the only writer).
        self.0.site.store(std::ptr::null_mut(), Relaxed);
        FREE.lock().unwrap_or_else(PoisonError::into_inner).push(self.0);
    }
}

thread_local! {
    static CELL: Lease = Lease::take();
}

/// The number in `ThreadId(n)`: std's stable way to print a thread's id.
fn thread_number(id: std::thread::ThreadId) -> u64 {
    format!("{id:?}").chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

/// This thread's cell, or `None` while the thread is exiting.
pub(crate) fn current() -> Option<&'static ThreadCell> {
    CELL.try_with(|lease| lease.0).ok()
}

impl ThreadCell {
    /// What a dump reads of the thread now (weakly consistent: module docs).
    pub(crate) fn seen(&self) -> ThreadSeen {
        // Acquire: pairs with the Release store of `site` in `BlockingSite::enter` (invariant 2).
        let site = self.site.load(Acquire);
        // SAFETY: a non-null `site` was stored from a `&'static Location` (`BlockingSite::enter`).
        let site = unsafe { site.as_ref() };
        let since = epoch() + Duration::from_nanos(self.since.load(Relaxed)); // Relaxed: invariant 2
        ThreadSeen {
            number: self.number.load(Relaxed), // Relaxed: see `Lease::take`
            name: self.name.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            blocked: site.map(|site| (site, since)),
        }
    }
}

/// Records, while it lives, that the current thread is in a blocking call made at a site: what a
/// dump shows as the child's wait site. The hook for every blocking helper of the crate:
///
/// ```text
/// #[track_caller]
/// pub fn recv<T>(ctx: &C, rx: &Receiver<T>) -> Result<T, RecvError> {
///     let _blocked = crate::dump::BlockingSite::enter(Location::caller());
///     ...
/// }
/// ```
///
/// Costs a thread-local access, a clock read and two relaxed stores on entry (the start time and
/// the site), one relaxed store on exit; nothing else, and no lock. Nested guards (a blocking
/// helper calling another) leave the outer site in place.
pub(crate) struct BlockingSite {
    cell: Option<&'static ThreadCell>,
}

impl BlockingSite {
    /// Marks the current thread as blocked at `site` until the guard drops.
    #[inline]
    pub(crate) fn enter(site: &'static Location<'static>) -> BlockingSite {
        let cell = current().filter(|cell| cell.site.load(Relaxed).is_null()); // Relaxed: invariant 1
        if let Some(cell) = cell {
            let since = epoch().elapsed().as_nanos() as u64;
            cell.since.store(since, Relaxed); // Relaxed: published by the Release below
            // Release: pairs with the Acquire load in `ThreadCell::seen` (invariant 2).
            cell.site.store(std::ptr::from_ref(site).cast_mut(), Release);
        }
        BlockingSite { cell }
    }
}

impl Drop for BlockingSite {
    #[inline]
    fn drop(&mut self) {
        if let Some(cell) = self.cell {
            // Relaxed: a dump that still sees the site after this is merely late (module docs).
            cell.site.store(std::ptr::null_mut(), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_records_its_site_until_it_drops() {
        let site = Location::caller();
        let cell = current().unwrap();
        assert!(cell.seen().blocked.is_none());
        {
            let _outer = BlockingSite::enter(site);
            let _inner = BlockingSite::enter(Location::caller());
            let (seen, _since) = cell.seen().blocked.unwrap();
            assert_eq!(seen, site, "the outer call's site stays");
        }
        assert!(cell.seen().blocked.is_none());
    }
}
