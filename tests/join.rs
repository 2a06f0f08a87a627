//! `tether::join` and `tether::try_join`: results, the join's context (a child of the ambient
//! one, shared by both halves), the first panic or failure cancelling the other half (or
//! skipping it when it has not started), every panic kept, a join from outside the pool that no
//! worker can take, and a stress of nested joins with random panics, under a watchdog.
//!
//! Miri runs this binary (`.ci/miri`): it reaches the `unsafe` of the stack job, its latch and
//! the join sent from outside the pool.

use crossbeam_channel::{bounded, unbounded};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tether::{Canceller, Cause, Context, Key};

/// Smaller inputs under Miri, which is slow; the same paths.
const fn size(native: u64, miri: u64) -> u64 {
    if cfg!(miri) { miri } else { native }
}

/// Whether a second worker can steal a join half while the first runs the other one: the tests of
/// a half running elsewhere need it (the pool's size is the process's, `TETHER_POOL_THREADS`).
fn a_thief_can_run() -> bool {
    let two = tether::pool::threads() >= 2;
    if !two {
        eprintln!("one pool worker: this test needs a second one to steal a half; not run");
    }
    two
}

/// Runs `f` in a pool task that a worker runs (this thread waits for it to start instead of
/// joining it, which would run it inline), so a join in `f` offers its second half to thieves.
fn on_a_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    tether::scope(|s| {
        let (started, task_started) = bounded::<()>(1);
        let task = s.spawn_task(move |_| {
            started.send(()).unwrap();
            f()
        });
        task_started.recv().unwrap();
        task.join().unwrap()
    })
    .unwrap()
}

/// Serialises the tests that read the process-wide list of unhandled panics, so that none takes
/// another's.
static UNHANDLED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn unhandled_lock() -> std::sync::MutexGuard<'static, ()> {
    UNHANDLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serialises the tests that block pool workers on purpose (all of them, or one while a thief
/// runs the other half): two of them at once could each wait for workers the other holds.
static BLOCKING_WORKERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn blocking_workers_lock() -> std::sync::MutexGuard<'static, ()> {
    BLOCKING_WORKERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fib_seq(n: u64) -> u64 {
    if n < 2 { n } else { fib_seq(n - 1) + fib_seq(n - 2) }
}

fn fib(n: u64, cutoff: u64) -> u64 {
    if n < cutoff {
        return fib_seq(n);
    }
    let (a, b) = tether::join(|_| fib(n - 1, cutoff), |_| fib(n - 2, cutoff));
    a + b
}

/// Fails the test (and the process) if `f` does not return within a minute: a join that hangs
/// must not hang CI.
fn watchdog<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let (done, finished) = bounded::<()>(0);
    let name = name.to_owned();
    let dog = std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            finished.recv_timeout(Duration::from_secs(60))
        {
            eprintln!("watchdog: {name} did not finish within a minute");
            std::process::abort();
        }
    });
    let result = f();
    drop(done);
    dog.join().unwrap();
    result
}

#[test]
fn join_computes_a_divide_and_conquer_from_outside_and_inside_the_pool() {
    let n = size(24, 12);
    assert_eq!(fib(n, 6), fib_seq(n), "from a thread that is not a worker");
    let inside = tether::scope(|s| s.spawn_task(|_| fib(n, 6)).join().unwrap()).unwrap();
    assert_eq!(inside, fib_seq(n), "from a pool task");
}

#[test]
fn halves_borrow_and_mutate_disjoint_stack_data() {
    let mut left = vec![1u64; 1000];
    let mut right = vec![2u64; 1000];
    let (l, r) = tether::join(
        |_| {
            left.iter_mut().for_each(|x| *x += 1);
            left.len()
        },
        |_| {
            right.iter_mut().for_each(|x| *x *= 3);
            right.len()
        },
    );
    assert_eq!((l, r), (1000, 1000));
    assert!(left.iter().all(|&x| x == 2) && right.iter().all(|&x| x == 6));
}

#[test]
fn both_halves_run_under_one_new_child_of_the_ambient_context() {
    static USER: Key<&str> = Key::new("user");
    tether::scope(|s| {
        let scope_ctx = s.context().clone();
        let outer = s.context().with_value(&USER, "ada");
        tether::with_current(&outer, || {
            let (a, b) = tether::join(
                |ctx| (ctx.clone(), tether::current().cause().is_none(), ctx.value(&USER).copied()),
                |ctx| (ctx.clone(), USER.get()),
            );
            let (a_ctx, open, a_user) = a;
            let (b_ctx, b_user) = b;
            assert!(open);
            assert_eq!((a_user, b_user), (Some("ada"), Some("ada")), "the bindings cross");
            // One node: cancelling it from one half's handle is seen through the other's.
            a_ctx.cancel();
            assert_eq!(b_ctx.cause(), Some(Cause::Cancelled));
            assert!(!outer.is_cancelled() && !scope_ctx.is_cancelled(), "a child, not the parent");
        });
    })
    .unwrap();
}

#[test]
fn cancelling_the_ambient_context_reaches_both_halves() {
    tether::scope(|s| {
        let (started, all_started) = unbounded();
        let joined = s.spawn_task(move |_| {
            tether::join(
                |ctx| {
                    started.send(()).unwrap();
                    ctx.wait()
                },
                |ctx| ctx.wait(),
            )
        });
        all_started.recv().unwrap();
        s.context().cancel_with(Cause::custom(std::io::Error::other("stop")));
        let (a, b) = joined.join().unwrap();
        assert_eq!(a.to_string(), "stop");
        assert_eq!(b.to_string(), "stop");
    })
    .unwrap();
}

#[test]
fn a_panic_cancels_the_other_running_half_and_is_resumed_with_its_payload() {
    if !a_thief_can_run() {
        return;
    }
    let _exclusive = blocking_workers_lock();
    // On a worker, so that `b` can be stolen and run while `a` is still running; `a` waits for
    // `b` to start (a latch), so `b` is running elsewhere when `a` panics.
    let outcome = on_a_worker(|| {
        let (started, b_started) = bounded::<()>(1);
        catch_unwind(AssertUnwindSafe(|| {
            tether::join(
                |_| {
                    b_started.recv().unwrap();
                    std::panic::panic_any(7u32)
                },
                |ctx| {
                    started.send(()).unwrap();
                    ctx.wait()
                },
            )
        }))
    });
    let payload = outcome.unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&7), "the original payload");
}

#[test]
fn the_second_half_sees_the_first_halfs_panic_as_its_cause() {
    let (tx, rx) = unbounded();
    let result = catch_unwind(AssertUnwindSafe(|| {
        tether::join(
            |_| panic!("first"),
            move |ctx| {
                // Skipped if it had not started (then it never sends); if a thief runs it, it
                // waits for the cancellation `a`'s panic makes.
                tx.send(ctx.wait()).unwrap();
            },
        )
    }));
    assert_eq!(*result.unwrap_err().downcast::<&str>().unwrap(), "first");
    if let Ok(cause) = rx.try_recv() {
        match cause {
            Cause::Panicked(summary) => assert_eq!(summary.message(), "first"),
            other => panic!("b ran, so it must have seen the panic: {other:?}"),
        }
    }
}

struct DropCounter<'a>(&'a AtomicUsize);

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Runs `f` on this thread while `blocked` pool workers are each held in a task that waits
/// for `f` to return (tasks this thread does not join, so workers run them), then releases them.
fn with_workers_blocked<R: Send>(blocked: usize, f: impl FnOnce() -> R + Send) -> R {
    let _exclusive = blocking_workers_lock();
    let (started, all_started) = unbounded();
    let (release, released) = bounded::<()>(0);
    tether::scope(|s| {
        for _ in 0..blocked {
            let (started, released) = (started.clone(), released.clone());
            s.spawn_task(move |_| {
                started.send(()).unwrap();
                let _ = released.recv();
            });
        }
        for _ in 0..blocked {
            all_started.recv().unwrap();
        }
        let r = f();
        drop(release);
        r
    })
    .unwrap()
}

/// Whether a join called on a thread that is not a pool worker runs there, offering its second
/// half to the workers (the pool has fewer workers than the machine has cores), rather than
/// being sent whole to a worker.
fn outside_joins_run_here() -> bool {
    tether::pool::threads() < std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `f` so that a join called in it runs on one thread and no other can take the half it
/// offers: with every pool worker blocked if the join runs here, else with all but one blocked
/// (the join is sent to the free one).
fn with_no_thief<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = tether::pool::threads();
    with_workers_blocked(if outside_joins_run_here() { threads } else { threads - 1 }, f)
}

#[test]
fn a_half_not_started_when_the_other_panics_is_skipped_and_dropped() {
    // Nobody can take `b` (every worker that could is blocked): `a` panics before `b` starts, so
    // `b` is taken back and dropped unrun, its captures dropped once.
    let drops = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    with_no_thief(|| {
        let guard = DropCounter(&drops);
        let r = catch_unwind(AssertUnwindSafe(|| {
            tether::join(
                |_| -> bool { panic!("a fails") },
                |_| {
                    let _guard = guard;
                    ran.fetch_add(1, SeqCst);
                },
            )
        }));
        assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "a fails");
    });
    assert_eq!(drops.load(SeqCst), 1, "b's captures are dropped once");
    assert_eq!(ran.load(SeqCst), 0, "b was skipped");
}

#[test]
fn a_skipped_half_whose_drop_panics_loses_neither_panic() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("skipped-drop-panics");
        }
    }
    let _unhandled = unhandled_lock();
    let bomb = PanicOnDrop;
    let r = with_no_thief(|| {
        catch_unwind(AssertUnwindSafe(|| {
            tether::join(
                |_| -> () { panic!("a-panics-first") },
                move |_| {
                    let _bomb = bomb;
                },
            )
        }))
    });
    assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "a-panics-first");
    let kept = tether::testing::take_unhandled_panics();
    assert!(kept.iter().any(|p| p.downcast_ref::<&str>() == Some(&"skipped-drop-panics")));
}

#[test]
fn when_both_halves_panic_the_first_is_resumed_and_the_second_kept() {
    if !a_thief_can_run() {
        return;
    }
    let _exclusive = blocking_workers_lock();
    let _unhandled = unhandled_lock();
    let (started, b_started) = bounded::<()>(1);
    let (b_may_panic, b_go) = bounded::<()>(1);
    let outcome = on_a_worker(|| {
        catch_unwind(AssertUnwindSafe(|| {
            tether::join(
                |_| {
                    b_started.recv().unwrap();
                    b_may_panic.send(()).unwrap();
                    panic!("join-both-a")
                },
                |_| {
                    started.send(()).unwrap();
                    b_go.recv().unwrap();
                    panic!("join-both-b")
                },
            )
        }))
    });
    assert_eq!(*outcome.unwrap_err().downcast::<&str>().unwrap(), "join-both-a");
    let kept = tether::testing::take_unhandled_panics();
    let b = kept.iter().filter(|p| p.downcast_ref::<&str>() == Some(&"join-both-b")).count();
    assert_eq!(b, 1, "b's panic is kept, not lost");
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} failed")]
struct ShardError(u32);

#[test]
fn try_join_returns_both_values_when_both_succeed() {
    let r = tether::try_join(|_| Ok::<_, ShardError>("a"), |_| Ok(2));
    assert_eq!(r.unwrap(), ("a", 2));
}

#[test]
fn try_join_first_failure_cancels_the_other_half_and_comes_first() {
    if !a_thief_can_run() {
        return;
    }
    let _exclusive = blocking_workers_lock();
    // `b` runs elsewhere (it signals it started), `a` fails, `b` sees the failure as its cause
    // and fails too: both errors are reported, `a`'s first.
    let err = on_a_worker(|| {
        let (started, b_started) = bounded::<()>(1);
        tether::try_join(
            |_| {
                b_started.recv().unwrap();
                Err::<(), _>(ShardError(1))
            },
            |ctx| {
                started.send(()).unwrap();
                let cause = ctx.wait();
                assert_eq!(cause.downcast_ref::<ShardError>().map(|e| e.0), Some(1));
                Err::<(), _>(ShardError(2))
            },
        )
    })
    .unwrap_err();
    assert_eq!(err.downcast_ref::<ShardError>().unwrap().0, 1, "the first failure first");
    let others: Vec<u32> = err.others().iter().map(|e| e.downcast_ref::<ShardError>().unwrap().0).collect();
    assert_eq!(others, [2], "the later failure is kept");
}

#[test]
fn try_join_a_panic_takes_precedence_over_an_error() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        tether::try_join(
            |_| Err::<(), _>(ShardError(1)),
            |_| -> Result<(), ShardError> { panic!("precedence") },
        )
    }));
    // Either `b` was skipped (then the error is returned) or it ran and panicked (resumed).
    match r {
        Ok(result) => assert_eq!(result.unwrap_err().downcast_ref::<ShardError>().unwrap().0, 1),
        Err(payload) => assert_eq!(*payload.downcast::<&str>().unwrap(), "precedence"),
    }
}

#[test]
fn a_join_from_outside_the_pool_runs_even_when_every_worker_is_blocked() {
    // Every worker blocked in a task that waits for this thread: a join sent to the pool would
    // wait for ever, so the sender takes it back and runs both halves itself.
    with_workers_blocked(tether::pool::threads(), || {
        let here = std::thread::current().id();
        let (a, b) = watchdog("join with every worker blocked", || {
            tether::join(|_| std::thread::current().id(), |_| std::thread::current().id())
        });
        assert_eq!((a, b), (here, here), "run by the sender itself");
    });
}

#[test]
fn nested_joins_in_many_threads_with_random_panics_lose_nothing() {
    // A binary tree of joins per root; some leaves panic. Every leaf panic is either resumed out
    // of its root or kept as unhandled; sums match the sequential walk.
    fn walk(depth: u32, id: u64, panics: &AtomicUsize) -> u64 {
        if depth == 0 {
            if id % 37 == 5 {
                panics.fetch_add(1, SeqCst);
                std::panic::panic_any(format!("leaf-{id}"));
            }
            return id;
        }
        let (a, b) =
            tether::join(|_| walk(depth - 1, id * 2, panics), |_| walk(depth - 1, id * 2 + 1, panics));
        a + b
    }
    let _unhandled = unhandled_lock();
    let _ = tether::testing::take_unhandled_panics();
    let depth = size(10, 3) as u32;
    let leaf_panics = AtomicUsize::new(0);
    let resumed = AtomicUsize::new(0);
    watchdog("nested joins", || {
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (leaf_panics, resumed) = (&leaf_panics, &resumed);
                s.spawn(move || {
                    for round in 0..size(20, 2) {
                        let panics = AtomicUsize::new(0);
                        let root = t * 1000 + round;
                        let r = catch_unwind(AssertUnwindSafe(|| walk(depth, root, &panics)));
                        leaf_panics.fetch_add(panics.load(SeqCst), SeqCst);
                        match r {
                            Ok(sum) => {
                                assert_eq!(panics.load(SeqCst), 0);
                                let first = root << depth;
                                let n = 1u64 << depth;
                                assert_eq!(sum, n * first + n * (n - 1) / 2);
                            }
                            Err(payload) => {
                                assert!(payload.downcast_ref::<String>().unwrap().starts_with("leaf-"));
                                resumed.fetch_add(1, SeqCst);
                            }
                        }
                    }
                });
            }
        });
    });
    let kept = tether::testing::take_unhandled_panics();
    let kept =
        kept.iter().filter(|p| p.downcast_ref::<String>().is_some_and(|m| m.starts_with("leaf-"))).count();
    assert!(leaf_panics.load(SeqCst) > 0, "the pattern makes some leaves panic");
    assert_eq!(resumed.load(SeqCst) + kept, leaf_panics.load(SeqCst), "every panic resumed or kept");
}

#[test]
fn a_join_leaves_nothing_registered() {
    // Every join context of a recursion hangs below `parent` (directly or not): when the joins
    // are done, `parent` has no registered child left, whichever threads ran the halves.
    let parent = Context::new();
    let n = size(20, 10);
    let sum = tether::with_current(&parent, || {
        tether::join(
            |ctx| {
                assert_eq!(ctx.registered_children(), 0);
                fib(n, 5)
            },
            |_| fib(n - 1, 5),
        )
    });
    assert_eq!(sum, (fib_seq(n), fib_seq(n - 1)));
    assert_eq!(parent.registered_children(), 0, "every join context detached");
}

/// A random program of nested joins: leaves return a value, panic, or cancel their own context.
#[derive(Clone, Debug)]
enum Program {
    Value(u64),
    Panic(u64),
    CancelOwn(u64),
    Join(Box<Program>, Box<Program>),
}

impl Program {
    /// What the program returns run sequentially, or the panic a join must resume: `a`'s
    /// whenever `a` panics (so the leftmost panicking leaf), else `b`'s.
    fn expected(&self) -> Result<u64, u64> {
        match self {
            Program::Value(v) | Program::CancelOwn(v) => Ok(*v),
            Program::Panic(id) => Err(*id),
            Program::Join(a, b) => {
                let a = a.expected()?;
                Ok(a + b.expected()?)
            }
        }
    }

    fn run(&self, ctx: &Context) -> u64 {
        match self {
            Program::Value(v) => *v,
            Program::Panic(id) => std::panic::panic_any(*id),
            Program::CancelOwn(v) => {
                ctx.cancel();
                *v
            }
            Program::Join(a, b) => {
                let (x, y) = tether::join(|ctx| a.run(ctx), |ctx| b.run(ctx));
                x + y
            }
        }
    }
}

fn program() -> impl proptest::strategy::Strategy<Value = Program> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        6 => (0..1000u64).prop_map(Program::Value),
        1 => (0..1000u64).prop_map(Program::Panic),
        1 => (0..1000u64).prop_map(Program::CancelOwn),
    ];
    leaf.prop_recursive(6, 64, 2, |inner| {
        (inner.clone(), inner).prop_map(|(a, b)| Program::Join(Box::new(a), Box::new(b)))
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: if cfg!(miri) { 4 } else { 128 },
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Whatever the program, a join returns the sequential result or resumes the leftmost
    /// panic, from outside the pool and inside a task, and leaves its parent without children.
    #[test]
    fn random_join_programs_return_the_sequential_result_or_the_leftmost_panic(p in program()) {
        let parent = Context::new();
        let expected = p.expected();
        let outside = catch_unwind(AssertUnwindSafe(|| tether::with_current(&parent, || p.run(&parent))));
        let inside = tether::scope(|s| {
            let p = &p;
            s.spawn_task(move |ctx| catch_unwind(AssertUnwindSafe(|| p.run(ctx)))).join().unwrap()
        });
        for got in [outside, inside.unwrap()] {
            match (&expected, got) {
                (Ok(v), Ok(got)) => proptest::prop_assert_eq!(*v, got),
                (Err(id), Err(payload)) => proptest::prop_assert_eq!(payload.downcast_ref::<u64>(), Some(id)),
                (e, g) => proptest::prop_assert!(false, "expected {:?}, got {:?}", e, g.map_err(|_| "a panic")),
            }
        }
        proptest::prop_assert_eq!(parent.registered_children(), 0);
    }
}

#[test]
fn the_join_context_is_a_child_of_a_context_made_ambient() {
    let parent = Context::new();
    let (a, b) = tether::with_current(&parent, || {
        tether::join(
            |ctx| {
                parent.cancel();
                ctx.is_cancelled()
            },
            |ctx| ctx.clone(),
        )
    });
    assert!(a, "the parent's cancellation reaches the join's context");
    assert!(b.is_cancelled());
}

#[test]
fn each_join_gets_a_fresh_context_even_after_one_was_cancelled_or_kept() {
    // Joins one after another below the same parent (the halves of an outer join) may reuse a
    // context left as new; one that was cancelled, or that someone kept, must never come back.
    let kept = tether::join(
        |_| {
            let (kept, _) = tether::join(|ctx| ctx.clone(), |_| ());
            let (cancelled, _) = tether::join(
                |ctx| {
                    ctx.cancel();
                    ctx.is_cancelled()
                },
                |_| (),
            );
            assert!(cancelled);
            let (open, _) = tether::join(|ctx| !ctx.is_cancelled(), |ctx| !ctx.is_cancelled());
            assert!(open, "a cancelled join context is not handed to the next join");
            let (plain, _) = tether::join(|ctx| ctx.registered_children(), |_| ());
            assert_eq!(plain, 0);
            kept
        },
        |_| (),
    )
    .0;
    // The kept context is its own: cancelling it now reaches no other join's.
    kept.cancel();
    assert!(kept.is_cancelled());
    let (after, _) = tether::join(|ctx| ctx.is_cancelled(), |_| ());
    assert!(!after);
}
