//! The timer driver runs no user code: a deadline is fired (the cancellation, its callbacks, and
//! the drop of the expired entry with its cause) on a firer thread, so a callback or a destructor
//! that panics or blocks cannot stop or stall the other deadlines of the process.
//!
//! Tests here count the process's threads and take its unhandled panics, so they take `SERIAL` to
//! run one at a time.

use crossbeam_channel::{RecvTimeoutError, bounded};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether::{Canceller, Cause, Context, testing};

static SERIAL: Mutex<()> = Mutex::new(());

/// A bound that only a stopped or stalled driver could exceed (it fails the test instead of
/// hanging it).
const GENEROUS: Duration = Duration::from_secs(10);
/// Short enough that a test waits for it without slowing the suite.
const SHORT: Duration = Duration::from_millis(5);
/// How many deadline callbacks block at once in the tests that block several.
const BLOCKED: usize = 4;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// A user error whose destructor panics.
#[derive(Debug, thiserror::Error)]
#[error("an error whose drop panics")]
struct PanicsOnDrop;

/// The payload of [`PanicsOnDrop`]'s panic.
const DROP_PANIC: &str = "the cause's destructor panicked";

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{DROP_PANIC}");
    }
}

/// Waits until `testing::take_unhandled_panics` has returned a payload with `message`.
fn unhandled_panic_recorded(message: &str) -> bool {
    let give_up = Instant::now() + GENEROUS;
    while Instant::now() < give_up {
        let found = testing::take_unhandled_panics().iter().any(|p| {
            p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied())
                == Some(message)
        });
        if found {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1)); // polling a record, not synchronising
    }
    false
}

/// A context whose deadline comes in `SHORT` and whose on-cancel callback blocks until
/// `release` is disconnected; `entered` receives once the callback runs.
fn blocked_on_expiry(
    release: &crossbeam_channel::Receiver<()>,
    entered: &crossbeam_channel::Sender<()>,
) -> Context {
    let ctx = Context::new().with_timeout(SHORT);
    let (release, entered) = (release.clone(), entered.clone());
    drop(ctx.on_cancel(move |_| {
        let _ = entered.send(());
        let _ = release.recv(); // returns once every sender is dropped
    }));
    ctx
}

#[test]
fn a_panicking_cause_drop_does_not_stop_other_deadlines() {
    let _g = serial();
    // The context's only handle lives in its own callback, and the registration handle is
    // dropped, so once the deadline has fired the expired timer entry holds the last reference to
    // the node: dropping the entry drops the node, its cause, and the user error in it.
    let doomed = Context::new().with_timeout_cause(SHORT, Cause::custom(PanicsOnDrop));
    let last_handle = doomed.clone();
    let (fired_tx, fired_rx) = bounded(1);
    drop(doomed.on_cancel(move |_| {
        drop(last_handle);
        let _ = fired_tx.send(());
    }));
    drop(doomed);
    fired_rx.recv_timeout(GENEROUS).expect("the first deadline fired");

    let next = Context::new().with_timeout(SHORT);
    assert_eq!(
        next.done().recv_timeout(GENEROUS),
        Err(RecvTimeoutError::Disconnected),
        "a deadline armed after the panic fired"
    );
    assert_eq!(next.cause(), Some(Cause::DeadlineExceeded));
    assert!(unhandled_panic_recorded(DROP_PANIC), "the destructor's panic was recorded, not lost");
}

#[test]
fn a_panicking_deadline_callback_is_recorded_and_other_deadlines_still_fire() {
    let _g = serial();
    const MESSAGE: &str = "a deadline callback panicked";
    let first = Context::new().with_timeout(SHORT);
    drop(first.on_cancel(|_| panic!("{MESSAGE}")));
    assert!(first.wait_timeout(GENEROUS).is_some(), "the first deadline fired");
    assert!(unhandled_panic_recorded(MESSAGE));
    let next = Context::new().with_timeout(SHORT);
    assert_eq!(next.wait_timeout(GENEROUS), Some(Cause::DeadlineExceeded));
}

#[test]
fn a_blocking_deadline_callback_does_not_stall_other_deadlines() {
    let _g = serial();
    let (release_tx, release_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded(1);
    let first = blocked_on_expiry(&release_rx, &entered_tx);
    let entered = entered_rx.recv_timeout(GENEROUS);

    let second = Context::new().with_timeout(SHORT);
    let fired = second.done().recv_timeout(GENEROUS);
    drop(release_tx); // let the first callback return before asserting, whatever happened
    assert!(entered.is_ok(), "the first deadline's callback ran");
    assert_eq!(fired, Err(RecvTimeoutError::Disconnected), "the second deadline fired meanwhile");
    assert!(first.is_cancelled());
}

#[test]
fn deadlines_keep_firing_while_several_callbacks_block_at_once() {
    let _g = serial();
    let (release_tx, release_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded(BLOCKED);
    let blocked: Vec<Context> = (0..BLOCKED).map(|_| blocked_on_expiry(&release_rx, &entered_tx)).collect();
    let entered = (0..BLOCKED).all(|_| entered_rx.recv_timeout(GENEROUS).is_ok());

    let next = Context::new().with_timeout(SHORT);
    let fired = next.done().recv_timeout(GENEROUS);
    drop(release_tx);
    assert!(entered, "every blocking callback ran: each was given a thread of its own");
    assert_eq!(fired, Err(RecvTimeoutError::Disconnected));
    assert!(blocked.iter().all(Context::is_cancelled));
}

#[test]
fn firer_threads_started_for_blocked_callbacks_exit_once_released() {
    let _g = serial();
    // Warm up: the driver and one firer exist from here on (a firer may also exit when idle,
    // which only lowers the count).
    let warm = Context::new().with_timeout(SHORT);
    assert!(warm.wait_timeout(GENEROUS).is_some());
    let before = thread_count();

    let (release_tx, release_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded(BLOCKED);
    let blocked: Vec<Context> = (0..BLOCKED).map(|_| blocked_on_expiry(&release_rx, &entered_tx)).collect();
    let entered = (0..BLOCKED).all(|_| entered_rx.recv_timeout(GENEROUS).is_ok());
    let during = thread_count();
    drop(release_tx);
    assert!(entered);
    assert!(during >= before + BLOCKED - 1, "{before} threads before, {during} while blocked");

    // At most one idle firer is kept: the others exit as soon as they find nothing to do.
    let give_up = Instant::now() + GENEROUS;
    let mut after = thread_count();
    while after > before && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1)); // polling the OS's count, not synchronising
        after = thread_count();
    }
    assert!(after <= before, "{before} threads before, {during} while blocked, {after} after");
    drop(blocked);
}

#[test]
fn firer_threads_are_not_reported_as_leaks() {
    let _g = serial();
    testing::assert_no_leaks(|| {
        let (release_tx, release_rx) = bounded::<()>(0);
        let (entered_tx, entered_rx) = bounded(1);
        let ctx = blocked_on_expiry(&release_rx, &entered_tx);
        entered_rx.recv_timeout(GENEROUS).expect("the callback ran");
        drop(release_tx);
        assert!(ctx.is_cancelled());
    });
}
