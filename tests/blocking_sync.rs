//! Cancellable waits on std's synchronisation: `std::sync::mpsc`-style channels, `Condvar`,
//! held `Mutex`/`RwLock`, `thread::park`, and bounded crossbeam sends. Each helper is woken by a
//! scope's exit, a deadline and a sibling's failure; a cancelled context wins over what is ready,
//! which stays where it was; nothing stays registered, after a million calls either.
//!
//! Miri runs this binary (`.ci/miri`): it reaches the `unsafe` of the armed action and of the
//! condition variable's late notification.

#[path = "blocking/shared.rs"]
mod shared;

use shared::{cancelled, cause, counts, registered, wait_armed, wait_for, woken_three_ways};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;
use tether::blocking::sync::{LockError, WaitError, WaitTimeoutError};
use tether::blocking::{self, RecvError, SendError, mpsc};
use tether::{Canceller, Cause, Context};

/// Fewer rounds under Miri, which is slow; the same paths.
const fn rounds(native: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { native }
}

// --- std::sync::mpsc-style channels ---------------------------------------------------------

#[test]
fn mpsc_recv_is_woken_three_ways() {
    let _counts = counts();
    let (_tx, rx) = mpsc::channel::<u32>();
    woken_three_ways(false, |ctx| match mpsc::recv(ctx, &rx) {
        Err(RecvError::Cancelled(cause)) => cause,
        other => panic!("{other:?}"),
    });
}

#[test]
fn mpsc_recv_timeout_is_woken_three_ways() {
    let _counts = counts();
    let (_tx, rx) = mpsc::sync_channel::<u32>(4);
    woken_three_ways(false, |ctx| match mpsc::recv_timeout(ctx, &rx, Duration::from_secs(3600)) {
        Err(blocking::RecvTimeoutError::Cancelled(cause)) => cause,
        other => panic!("{other:?}"),
    });
}

#[test]
fn mpsc_send_on_a_full_channel_is_woken_three_ways_and_gives_the_message_back() {
    let _counts = counts();
    let (tx, _rx) = mpsc::sync_channel::<String>(0);
    woken_three_ways(false, |ctx| match mpsc::send(ctx, &tx, "job".to_string()) {
        Err(SendError::Cancelled(msg, cause)) => {
            assert_eq!(msg, "job", "the message is given back");
            cause
        }
        other => panic!("{other:?}"),
    });
}

#[test]
fn crossbeam_send_on_a_full_channel_is_woken_three_ways() {
    let _counts = counts();
    let (tx, _rx) = crossbeam_channel::bounded::<u32>(0);
    woken_three_ways(false, |ctx| {
        blocking::send(ctx, &tx, 1).map(|()| unreachable!()).unwrap_or_else(|e| match e {
            SendError::Cancelled(1, cause) => cause,
            other => panic!("{other:?}"),
        })
    });
}

#[test]
fn mpsc_a_ready_message_loses_to_the_cancellation_and_stays_in_the_channel() {
    let _counts = counts();
    let (tx, rx) = mpsc::channel();
    tx.send(7).unwrap();
    let ctx = cancelled();
    assert_eq!(mpsc::recv(&ctx, &rx), Err(RecvError::Cancelled(cause(&ctx))));
    assert_eq!(rx.try_recv(), Ok(7), "the message is still there");
}

#[test]
fn mpsc_room_in_the_channel_loses_to_the_cancellation() {
    let _counts = counts();
    let (tx, rx) = mpsc::sync_channel(1);
    let ctx = cancelled();
    assert!(matches!(mpsc::send(&ctx, &tx, 7), Err(SendError::Cancelled(7, _))));
    assert_eq!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty), "nothing was sent");
}

#[test]
fn mpsc_no_message_is_lost_when_the_receiver_is_cancelled_while_messages_flow() {
    let _counts = counts();
    let total = rounds(2_000, 50);
    let (tx, rx) = mpsc::channel();
    let ctx = Context::new();
    let mut received = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..total {
                tx.send(i).unwrap();
                if i == total / 2 {
                    ctx.cancel();
                }
            }
        });
        while let Ok(i) = mpsc::recv(&ctx, &rx) {
            assert_eq!(i, received, "in order");
            received += 1;
        }
    });
    // The sender is done: whatever the cancelled receiver did not take is still in the channel.
    let rest: Vec<usize> = rx.try_iter().collect();
    assert_eq!(received + rest.len(), total, "every message was received once: none lost");
    assert!(rest.iter().copied().eq(received..total));
}

#[test]
fn mpsc_keeps_std_semantics_and_error_types() {
    let _counts = counts();
    let (tx, rx) = mpsc::channel::<u8>();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    drop(tx);
    tx2.send(2).unwrap();
    drop(tx2);
    assert_eq!(rx.iter().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(rx.recv(), Err(std::sync::mpsc::RecvError));
    assert_eq!(mpsc::recv(&Context::new(), &rx), Err(RecvError::Disconnected));
    let (tx, rx) = mpsc::sync_channel::<u8>(0);
    assert_eq!(tx.try_send(1), Err(std::sync::mpsc::TrySendError::Full(1)));
    drop(rx);
    assert_eq!(tx.send(1), Err(std::sync::mpsc::SendError(1)));
    assert!(matches!(mpsc::send(&Context::new(), &tx, 3), Err(SendError::Disconnected(3))));
}

// --- Condvar -------------------------------------------------------------------------------------

#[test]
fn condvar_wait_while_is_woken_three_ways_holding_the_mutex() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(0_u32), Condvar::new());
    woken_three_ways(true, |ctx| {
        let guard = state.lock().unwrap();
        match blocking::sync::wait_while(ctx, &state, &changed, guard, |n| *n == 0) {
            Err(WaitError::Cancelled(guard, cause)) => {
                assert_eq!(*guard, 0, "the guard is given back");
                cause
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn condvar_wait_timeout_while_is_woken_three_ways() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(false), Condvar::new());
    woken_three_ways(true, |ctx| {
        let guard = state.lock().unwrap();
        match blocking::sync::wait_timeout_while(
            ctx,
            &state,
            &changed,
            guard,
            Duration::from_secs(3600),
            |f| !*f,
        ) {
            Err(WaitTimeoutError::Wait(WaitError::Cancelled(_, cause))) => cause,
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn condvar_a_notification_still_ends_the_wait() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(None), Condvar::new());
    let ctx = Context::new();
    let before = registered();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = state.lock().unwrap();
            blocking::sync::wait_while(&ctx, &state, &changed, guard, |v| v.is_none())
                .map(|v| v.unwrap())
                .map_err(|e| e.to_string())
        });
        wait_armed(before);
        *state.lock().unwrap() = Some(5);
        changed.notify_all();
        assert_eq!(waiter.join().unwrap().unwrap(), 5);
    });
    assert_eq!(registered(), before);
}

#[test]
fn condvar_a_satisfied_condition_loses_to_the_cancellation() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(true), Condvar::new());
    let ctx = cancelled();
    let guard = state.lock().unwrap();
    let err = blocking::sync::wait_while(&ctx, &state, &changed, guard, |ready| !*ready).unwrap_err();
    assert_eq!(err.cause(), Some(&Cause::ScopeExited));
}

#[test]
fn condvar_cancelled_by_a_thread_that_holds_the_mutex_does_not_deadlock() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(0), Condvar::new());
    let ctx = Context::new();
    let before = registered();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = state.lock().unwrap();
            blocking::sync::wait_while(&ctx, &state, &changed, guard, |n| *n == 0)
                .map(|_| ())
                .map_err(|e| e.cause().cloned())
        });
        wait_armed(before);
        {
            let mut held = state.lock().unwrap();
            ctx.cancel(); // runs the notification while this thread holds the mutex
            *held = 0;
        }
        assert_eq!(waiter.join().unwrap(), Err(Some(Cause::Cancelled)));
    });
    assert_eq!(registered(), before);
}

#[test]
fn condvar_no_lost_wake_up_when_the_cancellation_races_the_wait() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(()), Condvar::new());
    for _ in 0..rounds(2_000, 20) {
        let ctx = Context::new();
        std::thread::scope(|s| {
            s.spawn(|| ctx.cancel());
            let guard = state.lock().unwrap();
            // Hangs (and the watchdog of CI's time limit fires) if a notification is lost.
            let err = blocking::sync::wait_while(&ctx, &state, &changed, guard, |()| true).unwrap_err();
            assert_eq!(err.cause(), Some(&Cause::Cancelled));
        });
    }
}

#[test]
fn condvar_a_poisoned_mutex_is_reported_as_std_does() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(1), Condvar::new());
    let _ = std::thread::scope(|s| {
        s.spawn(|| {
            let _held = state.lock().unwrap();
            panic!("poison it");
        })
        .join()
    });
    let guard = state.lock().unwrap_or_else(|e| e.into_inner());
    // As std: the poison is reported by the wait's re-locking (here, after the timeout).
    let waited = blocking::sync::wait_timeout_while(
        &Context::new(),
        &state,
        &changed,
        guard,
        Duration::from_millis(1),
        |n| *n == 1,
    );
    match waited {
        Err(WaitTimeoutError::Wait(err @ WaitError::Poisoned(_))) => assert_eq!(*err.into_guard(), 1),
        other => panic!("{other:?}"),
    }
}

// --- held Mutex / RwLock ---------------------------------------------------------------------------

#[test]
fn lock_on_a_held_mutex_is_woken_three_ways_without_taking_it() {
    let _counts = counts();
    let shared = Mutex::new(0);
    let held = shared.lock().unwrap();
    let shared = &shared;
    std::thread::scope(|s| {
        s.spawn(move || {
            woken_three_ways(true, |ctx| match blocking::sync::lock(ctx, shared) {
                Err(LockError::Cancelled(cause)) => cause,
                other => panic!("{other:?}"),
            });
        })
        .join()
        .unwrap();
    });
    drop(held);
    assert!(shared.try_lock().is_ok(), "the cancelled calls did not take the lock");
}

#[test]
fn lock_is_taken_once_the_holder_lets_go() {
    let _counts = counts();
    let shared = RwLock::new(0);
    let writer = shared.write().unwrap();
    let ctx = Context::new();
    let before = registered();
    std::thread::scope(|s| {
        let reader = s.spawn(|| *blocking::sync::read(&ctx, &shared).unwrap());
        wait_for("the reader to arm", || registered() > before);
        let mut writer = writer;
        *writer = 9;
        drop(writer);
        assert_eq!(reader.join().unwrap(), 9);
    });
    *blocking::sync::write(&ctx, &shared).unwrap() += 1;
    assert_eq!(*blocking::sync::lock(&ctx, &Mutex::new(3)).unwrap(), 3);
    assert_eq!(*shared.read().unwrap(), 10);
}

#[test]
fn rwlock_write_is_woken_by_the_cancellation() {
    let _counts = counts();
    let shared = RwLock::new(0);
    let reader = shared.read().unwrap();
    let shared = &shared;
    std::thread::scope(|s| {
        s.spawn(move || {
            woken_three_ways(true, |ctx| match blocking::sync::write(ctx, shared) {
                Err(LockError::Cancelled(cause)) => cause,
                other => panic!("{other:?}"),
            })
        })
        .join()
        .unwrap();
    });
    drop(reader);
}

// --- park ----------------------------------------------------------------------------------------

#[test]
fn park_is_woken_three_ways() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        loop {
            // A spurious wake-up (or an unpark token left by an earlier test) loops.
            if let Err(cause) = blocking::park(ctx) {
                break cause;
            }
        }
    });
}

#[test]
fn park_timeout_is_woken_three_ways() {
    let _counts = counts();
    woken_three_ways(true, |ctx| {
        loop {
            if let Err(cause) = blocking::park_timeout(ctx, Duration::from_secs(3600)) {
                break cause;
            }
        }
    });
}

#[test]
fn park_still_returns_on_unpark() {
    let _counts = counts();
    let ctx = Context::new();
    let before = registered();
    std::thread::scope(|s| {
        let parked = s.spawn(|| blocking::park(&ctx));
        wait_armed(before);
        parked.thread().unpark();
        assert_eq!(parked.join().unwrap(), Ok(()));
    });
    assert_eq!(registered(), before);
}

// --- nothing stays registered ----------------------------------------------------------------------

#[test]
fn a_million_calls_cancelled_or_not_leave_nothing_registered() {
    let _counts = counts();
    let before = tether::live();
    let calls = rounds(1_000_000, 200);
    let live = Context::new();
    let dead = cancelled();
    let (state, changed) = (Mutex::new(()), Condvar::new());
    let (_tx, rx) = mpsc::channel::<u8>();
    for i in 0..calls / 4 {
        let ctx = if i % 2 == 0 { &live } else { &dead };
        std::thread::current().unpark(); // so that the park arms, parks and returns at once
        let _ = blocking::park(ctx);
        drop(blocking::sync::wait_timeout_while(
            ctx,
            &state,
            &changed,
            state.lock().unwrap(),
            Duration::ZERO,
            |()| true,
        ));
        drop(blocking::sync::lock(ctx, &state));
        let _ = mpsc::recv_timeout(ctx, &rx, Duration::ZERO);
    }
    assert_eq!(tether::live().callbacks, before.callbacks, "every arming was removed");
    drop((live, dead));
    assert_eq!(tether::live(), before);
}

#[test]
fn calls_cancelled_while_they_wait_leave_nothing_registered() {
    let _counts = counts();
    let before = tether::live();
    let root = Context::new();
    for _ in 0..rounds(2_000, 20) {
        let ctx = root.child();
        std::thread::scope(|s| {
            s.spawn(|| ctx.cancel());
            let _ = blocking::park_timeout(&ctx, Duration::from_secs(60));
        });
    }
    drop(root);
    assert_eq!(tether::live(), before);
}

/// A canceller of the test's own: the helpers take any `Canceller`, `&dyn Canceller` included, and
/// arm through its `done()` channel (the shared watcher thread).
#[test]
fn a_foreign_canceller_wakes_the_helpers_too() {
    let _counts = counts();
    struct Foreign(Context);
    impl Canceller for Foreign {
        fn is_cancelled(&self) -> bool {
            self.0.is_cancelled()
        }
        fn err(&self) -> Option<tether::CancelError> {
            self.0.err()
        }
        fn cause(&self) -> Option<Cause> {
            self.0.cause()
        }
        fn deadline(&self) -> Option<std::time::Instant> {
            None
        }
        fn done(&self) -> tether::Done<'_> {
            self.0.done()
        }
        fn can_be_cancelled(&self) -> bool {
            true
        }
    }
    let foreign = Foreign(Context::new());
    let as_dyn: &(dyn Canceller + Sync) = &foreign;
    let (state, changed) = (Mutex::new(()), Condvar::new());
    std::thread::scope(|s| {
        let parked = s.spawn(|| blocking::park(as_dyn));
        let waiting = s.spawn(|| {
            let guard = state.lock().unwrap();
            blocking::sync::wait_while(as_dyn, &state, &changed, guard, |()| true)
                .map(|_| ())
                .unwrap_err()
                .cause()
                .cloned()
        });
        foreign.0.cancel_with(Cause::ScopeExited);
        assert_eq!(parked.join().unwrap(), Err(Cause::ScopeExited));
        assert_eq!(waiting.join().unwrap(), Some(Cause::ScopeExited));
    });
}

/// A pool task may block in a helper too (it holds its worker meanwhile): the scope's exit wakes it.
#[test]
fn a_pool_task_blocked_in_a_helper_is_woken_by_the_scope_exit() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(()), Condvar::new());
    // One blocked task per worker at most: a task still queued at the exit would be skipped.
    let tasks = tether::pool::threads().min(2);
    let before = registered();
    let (causes_tx, causes_rx) = crossbeam_channel::unbounded();
    tether::ScopeBuilder::new()
        .name("blocked-pool-tasks")
        .run(|s| {
            let causes_tx = &causes_tx;
            s.spawn_task(|ctx| {
                // A worker's own unpark tokens make spurious wake-ups likelier here: loop.
                let cause = loop {
                    if let Err(cause) = blocking::park(ctx) {
                        break cause;
                    }
                };
                causes_tx.send(cause).unwrap();
            });
            if tasks == 2 {
                s.spawn_task(|ctx| {
                    let guard = state.lock().unwrap();
                    let err =
                        blocking::sync::wait_while(ctx, &state, &changed, guard, |()| true).unwrap_err();
                    causes_tx.send(err.cause().cloned().unwrap()).unwrap();
                });
            }
            // Once every task has armed its wake-up, the body ends and the exit cancels them.
            wait_for("the tasks to arm", || registered() >= before + tasks);
            // A dump reads running tasks from their workers' thread cells (what Miri checks here).
            let blocked_tasks = || {
                let dump = tether::dump();
                let scope =
                    dump.scopes().iter().find(|s| s.name.as_deref() == Some("blocked-pool-tasks")).cloned();
                scope.map_or(0, |scope| {
                    let blocked = |c: &&tether::dump::ChildDump| {
                        matches!(c.state, tether::dump::ChildState::Blocked { .. })
                    };
                    scope
                        .children
                        .iter()
                        .filter(|c| c.kind == tether::dump::ChildKind::Task)
                        .filter(blocked)
                        .count()
                })
            };
            wait_for("the dump to show the tasks blocked", || blocked_tasks() == tasks);
        })
        .unwrap();
    drop(causes_tx);
    let causes: Vec<Cause> = causes_rx.iter().collect();
    assert_eq!(causes, vec![Cause::ScopeExited; tasks]);
    assert_eq!(registered(), before);
}

/// A dump shows a child blocked in a helper as blocked at the helper's call in the user's code.
#[test]
fn a_dump_shows_the_helper_call_as_the_wait_site() {
    let _counts = counts();
    let (state, changed) = (Mutex::new(()), Condvar::new());
    let (_tx, rx) = mpsc::channel::<u8>();
    let before = registered();
    // Set by the child itself: the line of its call, whatever the formatting around it.
    let condvar_line = std::sync::OnceLock::new();
    tether::ScopeBuilder::new()
        .name("blocking-wait-sites")
        .run(|s| {
            s.builder()
                .name("condvar")
                .spawn(|ctx| {
                    let guard = state.lock().unwrap();
                    condvar_line.set(line!() + 1).unwrap();
                    let _ = blocking::sync::wait_while(ctx, &state, &changed, guard, |()| true).map(drop);
                })
                .unwrap();
            let park_line = line!() + 1;
            s.builder().name("park").spawn(|ctx| while blocking::park(ctx).is_ok() {}).unwrap();
            let recv_line = line!() + 1;
            s.builder().name("mpsc").spawn(|ctx| mpsc::recv(ctx, &rx).map(drop)).unwrap();
            wait_armed(before + 1); // both arming helpers have armed
            let blocked_at = |name: &str| {
                let dump = tether::dump();
                let scope =
                    dump.scopes().iter().find(|s| s.name.as_deref() == Some("blocking-wait-sites")).unwrap();
                scope.children.iter().find(|c| c.name.as_deref() == Some(name)).and_then(|c| match c.state {
                    tether::dump::ChildState::Blocked { site, .. } => {
                        Some((site.file().to_string(), site.line()))
                    }
                    _ => None,
                })
            };
            wait_for("the condvar child to start", || condvar_line.get().is_some());
            let condvar_line = *condvar_line.get().unwrap();
            for (name, line) in [("condvar", condvar_line), ("park", park_line), ("mpsc", recv_line)] {
                wait_for("the child to show as blocked", || blocked_at(name).is_some());
                assert_eq!(blocked_at(name), Some((file!().to_string(), line)), "{name}");
            }
        })
        .unwrap();
}

/// A condition that panics while the cancellation's late notification waits for the mutex: the
/// panic unwinds out of the wait (it does not deadlock on that notification).
#[test]
fn condvar_a_panicking_condition_during_a_late_notification_unwinds() {
    let _counts = counts();
    shared::quiet_panics();
    let shared = std::sync::Arc::new((Mutex::new(()), Condvar::new()));
    let ctx = Context::new();
    let (in_condition_tx, in_condition_rx) = crossbeam_channel::bounded::<()>(0);
    let (cancelled_tx, cancelled_rx) = crossbeam_channel::bounded::<()>(0);
    let (finished_tx, finished_rx) = crossbeam_channel::bounded(1);
    // Not a scoped thread: if it deadlocks, the watchdog below still fails the test.
    let waiter = {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        std::thread::spawn(move || {
            let (state, changed) = &*shared;
            let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let guard = state.lock().unwrap();
                let _ = blocking::sync::wait_while(&ctx, state, changed, guard, |()| {
                    // The waiter holds the mutex here: the cancellation finds it held.
                    in_condition_tx.send(()).unwrap();
                    cancelled_rx.recv().unwrap();
                    std::panic::panic_any(shared::Injected)
                })
                .map(drop);
            }));
            finished_tx.send(waited.is_err()).unwrap();
        })
    };
    in_condition_rx.recv().unwrap();
    ctx.cancel(); // the notification cannot take the mutex: it goes to a thread of its own
    cancelled_tx.send(()).unwrap();
    let unwound = finished_rx.recv_timeout(Duration::from_secs(120)).expect("watchdog: the wait deadlocked");
    assert!(unwound, "the condition's panic came out of the wait");
    waiter.join().unwrap();
}
