//! The borrowing async scope (`tether::async_scope`), the tokio scope (`tether::tokio_scope`,
//! feature `tokio`) and futures on thread children (`Scope::spawn_future`): tether's scope
//! semantics for async children.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tether::testing::LeakCheck;
use tether::{Canceller, Cause, Key};

/// Held by every test: some read process-wide counts.
static COUNTS: Mutex<()> = Mutex::new(());

fn counts() -> MutexGuard<'static, ()> {
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is down")]
struct ShardDown(usize);

static TRACE: Key<u64> = Key::new("trace");

#[test]
fn children_borrow_from_the_stack_and_run_concurrently_in_one_task() {
    let _counts = counts();
    let check = LeakCheck::start();
    let inputs = [1u64, 2, 3];
    let (tx, rx) = futures_channel_pair();
    let sum = futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async {
            // The second child waits for the first: they only finish if polled concurrently.
            let waiter = s.spawn(|_| async { rx.await_value().await });
            let sender = s.spawn(|_| async { tx.send(inputs.iter().sum::<u64>()) });
            sender.await.unwrap();
            waiter.await.unwrap()
        })
    }))
    .unwrap();
    assert_eq!(sum, 6);
    drop((tx, rx)); // the pair's own context
    check.finish().unwrap();
}

#[test]
fn the_exit_cancels_the_children_still_running_and_waits_for_them() {
    let _counts = counts();
    let finished = AtomicUsize::new(0);
    let finished_ref = &finished;
    futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async move {
            for _ in 0..3 {
                s.spawn(move |ctx| async move {
                    let cause = ctx.cancelled_owned().await;
                    assert_eq!(cause, Cause::ScopeExited);
                    finished_ref.fetch_add(1, SeqCst);
                });
            }
        })
    }))
    .unwrap();
    assert_eq!(finished.load(SeqCst), 3, "every child ran to its end before the scope returned");
}

#[test]
fn the_first_error_cancels_the_siblings_and_every_error_is_kept() {
    let _counts = counts();
    let err = futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async {
            let sibling = s.spawn(|ctx| async move { ctx.cancelled_owned().await });
            s.spawn_fallible(|_| async { Err::<(), _>(ShardDown(1)) });
            let cause = sibling.await.unwrap();
            assert_eq!(cause.downcast_ref::<ShardDown>().unwrap().0, 1);
            s.spawn_fallible(|_| async { Err::<(), _>(ShardDown(2)) });
        })
    }))
    .unwrap_err();
    assert_eq!(err.first().downcast_ref::<ShardDown>().unwrap().0, 1);
    assert_eq!(err.others().len(), 1);
}

#[test]
fn a_child_panic_cancels_the_siblings_and_is_reraised_with_its_payload() {
    let _counts = counts();
    let payload = std::panic::catch_unwind(|| {
        futures_executor::block_on(tether::async_scope(|s| {
            Box::pin(async {
                let sibling = s.spawn(|ctx| async move { ctx.cancelled_owned().await });
                s.spawn(|_| async { panic!("shard exploded") });
                let cause = sibling.await.unwrap();
                assert!(matches!(cause, Cause::Panicked(_)), "{cause:?}");
            })
        }))
    })
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"shard exploded"));
}

#[test]
fn a_panic_taken_by_awaiting_the_handle_is_not_reraised() {
    let _counts = counts();
    let result = futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async {
            let h = s.spawn(|_| async { panic!("taken") });
            h.await.unwrap_err().is_panic()
        })
    }));
    assert!(result.unwrap());
}

#[test]
fn children_inherit_values_and_have_their_own_ambient_context() {
    let _counts = counts();
    let ctx = tether::Context::new().with_value(&TRACE, 7);
    futures_executor::block_on(ctx.bind(tether::async_scope(|s| {
        Box::pin(async {
            let h = s.spawn(|ctx| async move { (ctx.value(&TRACE).copied(), TRACE.get()) });
            assert_eq!(h.await.unwrap(), (Some(7), Some(7)));
        })
    })))
    .unwrap();
}

#[test]
fn dropping_the_scope_future_drops_its_children_and_leaks_nothing() {
    let _counts = counts();
    let check = LeakCheck::start();
    struct Flag<'a>(&'a AtomicUsize);
    impl Drop for Flag<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let dropped = AtomicUsize::new(0);
    let mut scope = Box::pin(tether::async_scope(|s| {
        Box::pin(async {
            s.spawn(|_| async {
                let _flag = Flag(&dropped);
                std::future::pending::<()>().await
            });
            std::future::pending::<()>().await
        })
    }));
    let waker = std::task::Waker::noop();
    assert!(scope.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending());
    drop(scope);
    assert_eq!(dropped.load(SeqCst), 1);
    check.finish().unwrap();
}

#[test]
fn a_future_on_a_thread_child_borrows_and_sees_its_context() {
    let _counts = counts();
    let data = [1, 2, 3];
    let out = tether::scope(|s| {
        let h = s.spawn_future(|ctx| async move {
            assert!(tether::current().can_be_cancelled());
            let cause = if ctx.is_cancelled() { ctx.cause() } else { None };
            (data.iter().sum::<i32>(), cause)
        });
        h.join().unwrap()
    })
    .unwrap();
    assert_eq!(out, (6, None));
}

#[test]
fn a_future_on_a_thread_child_is_woken_by_the_scope_exit() {
    let _counts = counts();
    let cause = tether::scope(|s| {
        s.spawn_future(|ctx| async move { ctx.cancelled_owned().await });
    });
    assert!(cause.is_ok());
}

/// A one-shot channel made of a tether context and a slot, to keep the test free of other
/// async crates: the receiver awaits the sender's "cancellation".
fn futures_channel_pair() -> (Sender, Receiver) {
    let ctx = tether::Context::new();
    let value = Arc::new(Mutex::new(None));
    (Sender { ctx: ctx.clone(), value: value.clone() }, Receiver { ctx, value })
}

struct Sender {
    ctx: tether::Context,
    value: Arc<Mutex<Option<u64>>>,
}

impl Sender {
    fn send(&self, v: u64) {
        *self.value.lock().unwrap() = Some(v);
        self.ctx.cancel();
    }
}

struct Receiver {
    ctx: tether::Context,
    value: Arc<Mutex<Option<u64>>>,
}

impl Receiver {
    async fn await_value(&self) -> u64 {
        self.ctx.cancelled().await;
        self.value.lock().unwrap().unwrap()
    }
}

#[cfg(feature = "tokio")]
mod tokio_scope {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap()
    }

    #[test]
    fn children_run_as_tokio_tasks_and_the_exit_cancels_then_awaits_them() {
        let _counts = counts();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let total = runtime()
            .block_on(tether::tokio_scope(|s| async move {
                let handles: Vec<_> = (0..100u64).map(|n| s.spawn(move |_| async move { n })).collect();
                for _ in 0..3 {
                    let f = f.clone();
                    s.spawn(move |ctx| async move {
                        assert_eq!(ctx.cancelled_owned().await, Cause::ScopeExited);
                        f.fetch_add(1, SeqCst);
                    });
                }
                let mut total = 0;
                for h in handles {
                    total += h.await.unwrap();
                }
                total
            }))
            .unwrap();
        assert_eq!(total, 4950);
        assert_eq!(finished.load(SeqCst), 3);
    }

    #[test]
    fn a_child_error_cancels_the_siblings_and_a_panic_is_reraised() {
        let _counts = counts();
        let rt = runtime();
        let err = rt
            .block_on(tether::tokio_scope(|s| async move {
                let sibling = s.spawn(|ctx| async move { ctx.cancelled_owned().await });
                s.spawn_fallible(|_| async { Err::<(), _>(ShardDown(3)) });
                assert_eq!(sibling.await.unwrap().downcast_ref::<ShardDown>().unwrap().0, 3);
            }))
            .unwrap_err();
        assert_eq!(err.downcast_ref::<ShardDown>().unwrap().0, 3);
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(tether::tokio_scope(|s| async move {
                s.spawn(|_| async { panic!("tokio child exploded") });
            }))
        }))
        .unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"tokio child exploded"));
    }

    #[test]
    fn children_inherit_values_and_see_their_context_ambiently() {
        let _counts = counts();
        let ctx = tether::Context::new().with_value(&TRACE, 9);
        let seen = runtime()
            .block_on(ctx.bind(tether::tokio_scope(|s| async move {
                s.spawn(|_| async { TRACE.get() }).await.unwrap()
            })))
            .unwrap();
        assert_eq!(seen, Some(9));
    }

    #[test]
    fn a_handle_that_outlives_a_dropped_scope_reports_the_abort_instead_of_waiting_for_ever() {
        let _counts = counts();
        let rt = runtime();
        let escaped = Arc::new(Mutex::new(None));
        let keep = escaped.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        rt.block_on(async move {
            let mut scope = Box::pin(tether::tokio_scope(|s| async move {
                let h = s.spawn(move |_| async move {
                    started_tx.send(()).unwrap();
                    std::future::pending::<()>().await
                });
                *keep.lock().unwrap() = Some(h);
                std::future::pending::<()>().await
            }));
            tokio::select! {
                _ = &mut scope => unreachable!(),
                _ = tokio::task::spawn_blocking(move || started_rx.recv().unwrap()) => {}
            }
            drop(scope);
        });
        let handle = escaped.lock().unwrap().take().unwrap();
        let err = rt.block_on(handle).unwrap_err();
        assert_eq!(err.cancel_cause(), Some(&Cause::ScopeExited));
        assert!(!err.is_panic() && !err.is_skipped());
    }

    #[test]
    fn the_bodys_synchronous_part_sees_the_scope_and_its_panic_joins_the_children_first() {
        let _counts = counts();
        let rt = runtime();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(tether::tokio_scope(|s| {
                // Before the body's future exists: the scope's context is already ambient.
                assert!(tether::current().can_be_cancelled());
                s.spawn(move |ctx| async move {
                    ctx.cancelled_owned().await;
                    f.fetch_add(1, SeqCst);
                });
                panic!("body failed before its first await");
                #[allow(unreachable_code)]
                async {}
            }))
        }))
        .unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"body failed before its first await"));
        assert_eq!(finished.load(SeqCst), 1, "the child was cancelled and joined, not aborted");
    }

    #[test]
    fn dropping_the_scope_future_cancels_and_aborts_every_child() {
        let _counts = counts();
        let check = LeakCheck::start();
        let rt = runtime();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        rt.block_on(async move {
            let scope = tether::tokio_scope(|s| async move {
                s.spawn(move |_| async move {
                    started_tx.send(()).unwrap();
                    std::future::pending::<()>().await
                });
                std::future::pending::<()>().await
            });
            let mut scope = Box::pin(scope);
            // Poll the scope until its child has started, then drop it.
            tokio::select! {
                _ = &mut scope => unreachable!(),
                _ = tokio::task::spawn_blocking(move || started_rx.recv().unwrap()) => {}
            }
            drop(scope);
        });
        drop(rt); // the runtime drops the aborted futures
        check.finish().unwrap();
    }
}

/// A value whose destructor panics.
struct PanicsOnDrop(&'static str);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}", self.0);
        }
    }
}

#[test]
fn a_panicking_destructor_in_a_child_is_the_scopes_panic_not_lost() {
    let _counts = counts();
    let payload = std::panic::catch_unwind(|| {
        futures_executor::block_on(tether::async_scope(|s| {
            Box::pin(async move {
                s.spawn(|_| async {
                    let _guard = PanicsOnDrop("dropped badly");
                });
            })
        }))
    })
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("dropped badly"));
}

#[test]
fn a_future_on_a_thread_child_that_parks_inside_its_poll_still_gets_its_wake_up() {
    let _counts = counts();
    // The future blocks on a channel inside its first poll (which parks the thread and may use
    // up its unpark token) while another thread wakes it; the executor must not lose that wake.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let polls = tether::scope(|s| {
            s.spawn_future(|_| {
                let mut polls = 0;
                std::future::poll_fn(move |cx| {
                    polls += 1;
                    if polls > 1 {
                        return std::task::Poll::Ready(polls);
                    }
                    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(0);
                    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
                    let waker = cx.waker().clone();
                    std::thread::spawn(move || {
                        ready_rx.recv().unwrap();
                        waker.wake();
                        go_tx.send(()).unwrap();
                    });
                    ready_tx.send(()).unwrap();
                    go_rx.recv().unwrap(); // parks this thread while the wake arrives
                    std::task::Poll::Pending
                })
            })
            .join()
            .unwrap()
        })
        .unwrap();
        done_tx.send(polls).unwrap();
    });
    let polls = done_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the wake-up was lost: the thread child hangs");
    assert_eq!(polls, 2);
}

/// A gate a test opens by hand: a future pending until then, counting its polls.
#[derive(Default)]
struct Gate {
    open: bool,
    waker: Option<std::task::Waker>,
}

fn open(gate: &Mutex<Gate>) {
    let waker = {
        let mut gate = gate.lock().unwrap();
        gate.open = true;
        gate.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

async fn pass(gate: &Mutex<Gate>, polls: &AtomicUsize) {
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, SeqCst);
        let mut gate = gate.lock().unwrap();
        if gate.open {
            std::task::Poll::Ready(())
        } else {
            gate.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn a_wake_up_polls_the_child_it_woke_not_every_child() {
    let _counts = counts();
    const CHILDREN: usize = 200;
    let gates: Vec<Mutex<Gate>> = (0..CHILDREN).map(|_| Mutex::default()).collect();
    let polls = AtomicUsize::new(0);
    let (gates, polls_ref) = (&gates, &polls);
    futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async move {
            let handles: Vec<_> = gates
                .iter()
                .map(|gate| s.spawn(move |_| async move { pass(gate, polls_ref).await }))
                .collect();
            // One child at a time: each wake-up concerns one child; the other pending children
            // have nothing new to see.
            for (gate, handle) in gates.iter().zip(handles) {
                open(gate);
                handle.await.unwrap();
            }
        })
    }))
    .unwrap();
    // Each child is polled once when it starts and once after its gate opens (the first child's
    // gate is open before its first poll): a scope that polled every child at every wake-up
    // would make about CHILDREN²/2 polls.
    let polls = polls.load(SeqCst);
    assert!(polls <= 2 * CHILDREN, "{polls} polls for {CHILDREN} children woken one at a time");
}

#[test]
fn children_woken_from_other_threads_are_polled_and_finish() {
    let _counts = counts();
    const CHILDREN: usize = 32;
    let gates: Vec<Mutex<Gate>> = (0..CHILDREN).map(|_| Mutex::default()).collect();
    let polls = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    let (gates, polls_ref, started_ref) = (&gates, &polls, &started);
    std::thread::scope(|threads| {
        // Opens the gates from another thread, last first, once every child waits at its gate.
        threads.spawn(move || {
            while started_ref.load(SeqCst) < CHILDREN {
                std::thread::yield_now();
            }
            for gate in gates.iter().rev() {
                open(gate);
            }
        });
        let sum = futures_executor::block_on(tether::async_scope(|s| {
            Box::pin(async move {
                let handles: Vec<_> = (0..CHILDREN)
                    .map(|i| {
                        s.spawn(move |_| async move {
                            started_ref.fetch_add(1, SeqCst);
                            pass(&gates[i], polls_ref).await;
                            i
                        })
                    })
                    .collect();
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                sum
            })
        }))
        .unwrap();
        assert_eq!(sum, (0..CHILDREN).sum::<usize>());
    });
    assert!(polls.load(SeqCst) <= 2 * CHILDREN, "a wake-up polled children it did not concern");
}

/// A future that wakes itself and is pending at every poll, until `stop` is set.
async fn spin(stop: &std::sync::atomic::AtomicBool) {
    std::future::poll_fn(|cx| {
        if stop.load(SeqCst) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn a_child_that_keeps_waking_itself_does_not_hold_the_executor() {
    let _counts = counts();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    let mut scope = Box::pin(tether::async_scope(|s| {
        Box::pin(async move {
            s.spawn(move |_| spin(stop)).await.unwrap();
        })
    }));
    let woken = Arc::new(WakeCount::default());
    let waker = std::task::Waker::from(woken.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    // Each poll returns (the child is polled once per poll of the scope) and asks for the next.
    for round in 1..=3 {
        assert!(scope.as_mut().poll(&mut cx).is_pending());
        assert!(woken.0.load(SeqCst) >= round, "the child's wake-up woke the scope's future");
    }
    stop.store(true, SeqCst);
    assert!(scope.as_mut().poll(&mut cx).is_ready());
}

#[derive(Default)]
struct WakeCount(AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_waker_that_outlives_its_child_wakes_nothing_it_should_not() {
    let _counts = counts();
    let check = LeakCheck::start();
    let kept: Mutex<Option<std::task::Waker>> = Mutex::new(None);
    let gate = Mutex::<Gate>::default();
    let polls = AtomicUsize::new(0);
    let (kept, gate, polls_ref) = (&kept, &gate, &polls);
    futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async move {
            // The first child keeps its waker and finishes: its key is free for the next child.
            s.spawn(move |_| {
                std::future::poll_fn(move |cx| {
                    *kept.lock().unwrap() = Some(cx.waker().clone());
                    std::task::Poll::Ready(())
                })
            })
            .await
            .unwrap();
            let second = s.spawn(move |_| pass(gate, polls_ref));
            // Let the second child start (and wait at its gate), then wake the first's waker:
            // at most a spurious poll of the second child, which stays pending.
            yield_once().await;
            kept.lock().unwrap().as_ref().unwrap().wake_by_ref();
            yield_once().await;
            assert!(!second.is_finished());
            open(gate);
            second.await.unwrap();
        })
    }))
    .unwrap();
    assert!(
        polls.load(SeqCst) <= 3,
        "its first poll, at most one spurious poll, and the one after its gate opened"
    );
    // After the scope: waking the kept waker reaches nothing and frees nothing twice.
    kept.lock().unwrap().take().unwrap().wake();
    check.finish().unwrap();
}

/// Pending once (waking itself), then ready: lets the scope's future poll its children.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn the_scopes_debug_counts_its_children_spawned_and_running() {
    let _counts = counts();
    // A gate each: a gate keeps one waker.
    let gates = [Mutex::<Gate>::default(), Mutex::<Gate>::default()];
    let polls = AtomicUsize::new(0);
    let (gates, polls) = (&gates, &polls);
    futures_executor::block_on(tether::async_scope(|s| {
        Box::pin(async move {
            let a = s.spawn(move |_| pass(&gates[0], polls));
            let b = s.spawn(move |_| pass(&gates[1], polls));
            assert!(format!("{s:?}").contains("children: 2"), "two spawned: {s:?}");
            yield_once().await; // the scope's future takes them in and polls them
            assert!(format!("{s:?}").contains("children: 2"), "two running: {s:?}");
            gates.iter().for_each(open);
            a.await.unwrap();
            b.await.unwrap();
            assert!(format!("{s:?}").contains("children: 0"), "none left: {s:?}");
        })
    }))
    .unwrap();
}

#[test]
fn a_child_that_only_checks_for_cancellation_when_polled_is_polled_once_the_scope_is_cancelled() {
    let _counts = counts();
    let mut scope = Box::pin(tether::async_scope(|s| {
        Box::pin(async move {
            // Pending with no wake-up arranged: only a poll after the cancellation ends it.
            s.spawn(|ctx| {
                std::future::poll_fn(move |_| {
                    if ctx.is_cancelled() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
                })
            });
            yield_once().await; // the child's first poll: pending, and nothing will wake it
        })
    }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // One poll: the child's first poll, then the body ends, the exit cancels the scope, and the
    // child is polled again.
    assert!(scope.as_mut().poll(&mut cx).is_ready(), "the exit polled the child after cancelling");
}
