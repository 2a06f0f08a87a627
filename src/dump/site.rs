//! Where threads are: one [`ThreadCell`] per thread that runs a scope child or a blocking call,
//! and the [`BlockingSite`] guard that records, in that cell, "in a blocking call since T at LOC".
//!
//! A cell is never freed: when its thread exits, it goes back to a free list for the next thread
//! (so the cells in use never exceed the threads alive at once, plus that many spare). A child's
//! record may therefore keep a plain `&'static` to the cell of the thread that runs it, and a
//! dump may read it at any time without a lock: at worst it reads a cell that has moved on to
//! another thread, which the dump's weak consistency allows (design/0008, "Consistency").
//!
//! A cell also says which pool task its thread is running, if any ([`TaskActivity`]): a task's
//! runner writes it as the task starts and restores it as the task ends, so that a running task
//! costs its scope nothing shared (no ledger entry, no reference kept): a dump finds running
//! tasks by reading every cell (`ALL`).
//!
//! # Invariants
//! 1. A cell's `site`, `since` and task slot are written only by the thread that holds the cell
//!    (the one whose thread-local lease it is), so no write needs a read-modify-write.
//! 2. `site` is null outside a blocking call; `since` is meaningful only while `site` is not
//!    null, and is written before `site` (Release), so a reader that sees a site (Acquire) sees
//!    the `since` of that call or of a later one.
//! 3. The task slot is a seqlock: `task_seq` is odd while its holder rewrites the slot's fields,
//!    and a reader keeps what it read only if it saw the same even `task_seq` before and after.

use std::panic::Location;
use std::sync::atomic::{
    AtomicPtr, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release, fence,
};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// What a dump knows of a thread: its id and name, and the blocking call it is in.
pub(crate) struct ThreadCell {
    /// The holder's id and name, written on lease (a short lock, taken by the holder once and by
    /// dumps). The id is kept as it is and turned into a number only by a dump: the only stable
    /// way to do that formats it, which is not a cost for every thread start.
    holder: Mutex<Option<(ThreadId, Option<String>)>>,
    /// The site of the blocking call the holder is in, or null (invariants 1 and 2).
    site: AtomicPtr<Location<'static>>,
    /// When that call began, in nanoseconds since [`epoch`] (invariant 2).
    since: AtomicU64,
    /// The task slot's version (invariant 3).
    task_seq: AtomicU64,
    /// The running task's scope id (0: none), child id, spawn site and birth (nanoseconds since
    /// [`epoch`]), under `task_seq`.
    task_scope: AtomicU64,
    task_id: AtomicU64,
    task_site: AtomicPtr<Location<'static>>,
    task_born: AtomicU64,
}

/// A running pool task as a dump reads it from its thread's cell.
#[derive(Clone, Debug)]
pub(crate) struct RunningTask {
    pub(crate) scope: u64,
    pub(crate) id: u64,
    pub(crate) site: &'static Location<'static>,
    pub(crate) born: Instant,
    pub(crate) thread: ThreadSeen,
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
/// Every cell ever made (they are never freed), for dumps to find running tasks.
static ALL: Mutex<Vec<&'static ThreadCell>> = Mutex::new(Vec::new());

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
            let cell: &'static ThreadCell = Box::leak(Box::new(ThreadCell {
                holder: Mutex::new(None),
                site: AtomicPtr::new(std::ptr::null_mut()),
                since: AtomicU64::new(0),
                task_seq: AtomicU64::new(0),
                task_scope: AtomicU64::new(0),
                task_id: AtomicU64::new(0),
                task_site: AtomicPtr::new(std::ptr::null_mut()),
                task_born: AtomicU64::new(0),
            }));
            ALL.lock().unwrap_or_else(PoisonError::into_inner).push(cell);
            cell
        });
        let me = std::thread::current();
        let holder = Some((me.id(), me.name().map(str::to_owned)));
        *cell.holder.lock().unwrap_or_else(PoisonError::into_inner) = holder;
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
fn thread_number(id: ThreadId) -> u64 {
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
        let holder = self.holder.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (number, name) = holder.map_or((0, None), |(id, name)| (thread_number(id), name));
        ThreadSeen { number, name, blocked: site.map(|site| (site, since)) }
    }
}

/// What a running task writes in its thread's cell (invariant 3).
#[derive(Clone, Copy)]
struct TaskSlot {
    scope: u64,
    id: u64,
    site: *mut Location<'static>,
    born: u64,
}

impl ThreadCell {
    /// Rewrites the task slot (only by the holder: invariant 1).
    fn write_task(&self, slot: TaskSlot) {
        // Relaxed, all of them: the holder is the only writer (invariant 1); the readers'
        // consistency comes from the version (invariant 3), ordered by the fences.
        let seq = self.task_seq.load(Relaxed);
        self.task_seq.store(seq + 1, Relaxed);
        fence(Release); // pairs with the Acquire fence in `read_task`: odd before the fields
        self.task_scope.store(slot.scope, Relaxed);
        self.task_id.store(slot.id, Relaxed);
        self.task_site.store(slot.site, Relaxed);
        self.task_born.store(slot.born, Relaxed);
        self.task_seq.store(seq + 2, Release); // pairs with the Acquire load in `read_task`
    }

    fn read_slot(&self) -> TaskSlot {
        TaskSlot {
            scope: self.task_scope.load(Relaxed), // Relaxed: checked by the version (invariant 3)
            id: self.task_id.load(Relaxed),
            site: self.task_site.load(Relaxed),
            born: self.task_born.load(Relaxed),
        }
    }

    /// The task slot as a consistent whole, if a few tries find it still (invariant 3).
    fn read_task(&self) -> Option<TaskSlot> {
        for _ in 0..8 {
            let before = self.task_seq.load(Acquire); // pairs with the Release store of `write_task`
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let slot = self.read_slot();
            fence(Acquire); // pairs with the Release fence of `write_task`
            if self.task_seq.load(Relaxed) == before {
                return Some(slot);
            }
        }
        None
    }
}

/// Records in the thread's cell, while it lives, that the thread runs a pool task: what a dump
/// lists as that task, running or blocked. Restores what was there (a task that another task
/// runs inline, in a join or a wait, hides the outer one until it ends).
pub(crate) struct TaskActivity {
    cell: Option<&'static ThreadCell>,
    outer: TaskSlot,
}

impl TaskActivity {
    /// Task `id` of scope `scope`, spawned at `site` at `born`, runs on this thread.
    #[inline]
    pub(crate) fn enter(
        scope: u64,
        id: u64,
        site: &'static Location<'static>,
        born: Instant,
    ) -> TaskActivity {
        let cell = current();
        let empty = TaskSlot { scope: 0, id: 0, site: std::ptr::null_mut(), born: 0 };
        let mut outer = empty;
        if let Some(cell) = cell {
            outer = cell.read_slot(); // this thread wrote it: no version needed (invariant 1)
            let born = born.saturating_duration_since(epoch()).as_nanos() as u64;
            cell.write_task(TaskSlot { scope, id, site: std::ptr::from_ref(site).cast_mut(), born });
        }
        TaskActivity { cell, outer }
    }
}

impl Drop for TaskActivity {
    #[inline]
    fn drop(&mut self) {
        if let Some(cell) = self.cell {
            cell.write_task(self.outer);
        }
    }
}

/// The pool tasks running now, from every thread's cell (weakly consistent: module docs).
pub(crate) fn running_tasks() -> Vec<RunningTask> {
    let all: Vec<&'static ThreadCell> = ALL.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut out = Vec::new();
    for cell in all {
        let Some(slot) = cell.read_task().filter(|slot| slot.scope != 0) else { continue };
        // SAFETY: a non-null task site was stored from a `&'static Location` (`TaskActivity`),
        // and the version check says this one came with the scope id read beside it.
        let Some(site) = (unsafe { slot.site.as_ref() }) else { continue };
        out.push(RunningTask {
            scope: slot.scope,
            id: slot.id,
            site,
            born: epoch() + Duration::from_nanos(slot.born),
            thread: cell.seen(),
        });
    }
    out
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
    fn a_running_task_is_found_in_its_threads_cell_and_the_outer_one_comes_back() {
        let (site, born) = (Location::caller(), Instant::now());
        let mine = |scope| running_tasks().into_iter().filter(move |t| t.scope == scope).collect::<Vec<_>>();
        {
            let _outer = TaskActivity::enter(u64::MAX, 1, site, born);
            {
                let _inner = TaskActivity::enter(u64::MAX - 1, 2, site, born);
                assert!(mine(u64::MAX).is_empty(), "the inner task hides the outer one");
                assert_eq!(mine(u64::MAX - 1)[0].id, 2);
            }
            let outer = mine(u64::MAX);
            assert_eq!((outer[0].id, outer[0].site), (1, site));
        }
        assert!(mine(u64::MAX).is_empty());
    }

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
