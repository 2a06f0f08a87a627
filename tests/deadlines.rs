//! Deadlines: effective deadline is the earlier of own and parent's, one shared timer driver,
//! overflow means no deadline, a past deadline cancels at once, expiry reports DeadlineExceeded.
//!
//! Tests here read the process-wide timer count, so they take `SERIAL` to run one at a time.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether::{CancelError, Canceller, Cause, Context, live};

static SERIAL: Mutex<()> = Mutex::new(());

/// Far enough in the future that no test outlives it.
const FAR: Duration = Duration::from_secs(3600);
/// A bound that only a lost wake-up could exceed (it fails the test instead of hanging it).
const GENEROUS: Duration = Duration::from_secs(10);
/// Short enough that a test waits for it without slowing the suite.
const SHORT: Duration = Duration::from_millis(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_childs_effective_deadline_is_the_earlier_of_its_own_and_its_parents() {
    let _g = serial();
    let now = Instant::now();
    let parent = Context::new().with_deadline(now + FAR);
    let earlier = parent.with_deadline(now + FAR / 2);
    let later = parent.with_deadline(now + FAR * 2);
    assert_eq!(earlier.deadline(), Some(now + FAR / 2));
    assert_eq!(later.deadline(), Some(now + FAR), "a later deadline cannot extend the parent's");
    assert_eq!(parent.child().deadline(), Some(now + FAR));
}

#[test]
fn a_later_child_deadline_arms_no_timer_of_its_own() {
    let _g = serial();
    let parent = Context::new().with_timeout(FAR);
    let before = live().timers;
    let later = parent.with_timeout(FAR * 2);
    assert_eq!(live().timers, before);
    drop(later);
}

#[test]
fn an_expired_deadline_cancels_with_deadline_exceeded_and_reaches_descendants() {
    let _g = serial();
    let ctx = Context::new().with_timeout(SHORT);
    let child = ctx.child();
    assert_eq!(ctx.wait(), Cause::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
    assert_eq!(child.err(), Some(CancelError::DeadlineExceeded));
    assert_eq!(child.cause(), Some(Cause::DeadlineExceeded));
}

#[test]
fn a_deadline_cause_is_reported_on_expiry_while_err_stays_deadline_exceeded() {
    let _g = serial();
    #[derive(Debug, thiserror::Error)]
    #[error("upstream too slow")]
    struct Slow;
    let ctx = Context::new().with_timeout_cause(SHORT, Cause::custom(Slow));
    let cause = ctx.wait();
    assert!(cause.downcast_ref::<Slow>().is_some());
    assert!(ctx.err().unwrap().is_timeout());
}

#[test]
fn a_deadline_in_the_past_cancels_at_once_without_a_timer() {
    let _g = serial();
    let before = live().timers;
    let ctx = Context::new().with_deadline(Instant::now() - Duration::from_secs(1));
    assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
    let zero = Context::new().with_timeout(Duration::ZERO);
    assert!(zero.is_cancelled());
    assert_eq!(live().timers, before);
}

#[test]
fn a_duration_that_overflows_instant_means_no_deadline() {
    let _g = serial();
    let ctx = Context::new().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert!(!ctx.is_cancelled());
    let ctx = Context::new().with_timeout(Duration::from_secs(u64::MAX / 2));
    assert_eq!(ctx.deadline(), None);
}

#[test]
fn cancelling_or_dropping_a_node_removes_its_timer_entry() {
    let _g = serial();
    let before = live().timers;
    let cancelled = Context::new().with_timeout(FAR);
    let dropped = Context::new().with_timeout(FAR);
    assert_eq!(live().timers, before + 2);
    cancelled.cancel();
    assert_eq!(live().timers, before + 1);
    drop(dropped);
    assert_eq!(live().timers, before);
}

#[test]
fn cancelling_a_parent_removes_the_timer_entries_of_its_descendants() {
    let _g = serial();
    let before = live().timers;
    let parent = Context::new();
    let children: Vec<Context> = (0..100).map(|_| parent.with_timeout(FAR)).collect();
    assert_eq!(live().timers, before + 100);
    parent.cancel();
    assert_eq!(live().timers, before);
    drop(children);
}

#[test]
fn many_deadlines_share_one_timer_thread() {
    let _g = serial();
    let threads_before = thread_count();
    let ctxs: Vec<Context> =
        (0..1_000).map(|i| Context::new().with_timeout(FAR + Duration::from_millis(i))).collect();
    let threads_after = thread_count();
    // At most the one lazily started driver thread appears, never one per deadline.
    assert!(threads_after <= threads_before + 1, "{threads_before} -> {threads_after}");
    drop(ctxs);
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn deadlines_armed_concurrently_from_many_threads_all_fire_and_leave_no_entries() {
    let _g = serial();
    let before = live().timers;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            s.spawn(move || {
                let ctxs: Vec<Context> = (0..200u64)
                    .map(|i| Context::new().with_timeout(Duration::from_micros(t * 300 + i * 50)))
                    .collect();
                for ctx in &ctxs {
                    assert_eq!(ctx.wait(), Cause::DeadlineExceeded);
                }
            });
        }
    });
    assert_eq!(live().timers, before);
}

#[test]
fn an_earlier_deadline_armed_while_the_driver_sleeps_on_a_later_one_fires_on_time() {
    let _g = serial();
    let late = Context::new().with_timeout(FAR);
    let soon = Context::new().with_timeout(SHORT);
    // If arming `soon` failed to wake the driver, this would wait for `FAR`.
    assert_eq!(soon.wait_timeout(GENEROUS), Some(Cause::DeadlineExceeded));
    assert!(!late.is_cancelled());
}

#[test]
fn far_deadlines_come_back_exactly_as_set() {
    let _g = serial();
    use tether::go;
    const FOUR_CENTURIES: Duration = Duration::from_secs(400 * 365 * 24 * 3600);
    let now = Instant::now();
    // Linux represents both; another platform may not, and then that arm has nothing to check.
    if let Some(future) = now.checked_add(FOUR_CENTURIES) {
        let ctx = Context::new().with_deadline(future);
        assert_eq!(ctx.deadline(), Some(future));
        assert!(!ctx.is_cancelled(), "a far-future deadline does not fire");
        assert_eq!(ctx.child().deadline(), Some(future), "inherited by a child");
        assert_eq!(ctx.with_deadline(future + FAR).deadline(), Some(future), "a later one is the parent's");
        assert_eq!(ctx.with_deadline(now + FAR).deadline(), Some(now + FAR), "an earlier one wins");
        assert_eq!(go::Ctx::from(ctx.clone()).deadline(), Some(future), "seen through the Go adapter");
        let (go_ctx, _cancel) = go::with_deadline(&go::background(), future);
        assert_eq!(go_ctx.deadline(), Some(future));
        let (go_child, _cancel) = go::with_cancel(&go::Ctx::from(ctx.child()));
        assert_eq!(go_child.deadline(), Some(future));
    }
    if let Some(past) = now.checked_sub(FOUR_CENTURIES) {
        let ctx = Context::new().with_deadline(past);
        assert_eq!(ctx.deadline(), Some(past));
        assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded), "a far-past deadline cancels at once");
        assert_eq!(ctx.child().deadline(), Some(past), "inherited by a child");
        assert_eq!(go::Ctx::from(ctx.clone()).deadline(), Some(past), "seen through the Go adapter");
        let (go_ctx, _cancel) = go::with_deadline(&go::background(), past);
        assert_eq!(go_ctx.deadline(), Some(past));
        assert_eq!(go_ctx.err(), Some(CancelError::DeadlineExceeded));
    }
}
