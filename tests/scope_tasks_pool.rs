//! Pool tasks on a pool of one worker (configured before first use): waits help, so nothing
//! deadlocks however few workers there are. Its own test binary, since the pool is per process.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tether::Scope;

fn one_worker() {
    // Every test here configures the same size; only the first call can start with it.
    let _ = tether::pool::configure(1);
    assert_eq!(tether::pool::threads(), 1);
}

/// Sums `v` by splitting it in halves, each half in a task of a nested scope.
fn sum(v: &[u64], depth: usize, deepest: &AtomicUsize) -> u64 {
    deepest.fetch_max(depth, SeqCst);
    if v.len() == 1 {
        return v[0];
    }
    let (left, right) = v.split_at(v.len() / 2);
    tether::scope(|s| {
        let l = s.spawn_task(|_| sum(left, depth + 1, deepest));
        let r = s.spawn_task(|_| sum(right, depth + 1, deepest));
        l.join().unwrap() + r.join().unwrap()
    })
    .unwrap()
}

#[test]
fn a_divide_and_conquer_twenty_levels_deep_completes_on_one_worker() {
    one_worker();
    let v: Vec<u64> = (0..1 << 20).collect();
    let deepest = AtomicUsize::new(0);
    assert_eq!(sum(&v, 0, &deepest), (1u64 << 20) * ((1 << 20) - 1) / 2);
    assert_eq!(deepest.into_inner(), 20, "nested scopes, 20 levels deep, inside tasks");
}

fn fib<'scope>(s: &'scope Scope<'scope, '_>, n: u32) -> u64 {
    if n < 2 {
        return u64::from(n);
    }
    let a = s.spawn_task(move |_| fib(s, n - 1));
    let b = s.spawn_task(move |_| fib(s, n - 2));
    a.join().unwrap() + b.join().unwrap()
}

#[test]
fn tasks_joining_sibling_tasks_never_deadlock_on_one_worker() {
    one_worker();
    let result = tether::scope(|s| fib(s, 18)).unwrap();
    assert_eq!(result, 2584);
}

#[test]
fn a_task_waiting_for_a_queued_sibling_runs_it_itself() {
    one_worker();
    tether::scope(|s| {
        let waiter = s.spawn_task(|_| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Queued on this worker's own deque: only a helping wait can run it.
            let sender = s.spawn_task(move |_| tx.send(42).unwrap());
            sender.join().unwrap();
            rx.recv().unwrap()
        });
        assert_eq!(waiter.join().unwrap(), 42);
    })
    .unwrap();
}

#[test]
fn configuring_the_pool_after_it_started_is_refused() {
    one_worker();
    tether::scope(|s| s.spawn_task(|_| ()).join().unwrap()).unwrap();
    assert_eq!(tether::pool::configure(4), Err(tether::pool::AlreadyStarted));
    assert_eq!(tether::pool::threads(), 1);
}

/// A worker counts the tasks it runs out of their scope in one step per run of tasks of that
/// scope (pool invariant 4); it must do so before it starts a task of another scope, which may
/// block for as long as it likes. Here the other scope's task blocks until the first scope has
/// returned: if the worker still held the first scope's count, that scope could not return.
#[test]
fn a_worker_counts_its_finished_tasks_out_before_it_runs_another_scopes_task() {
    use crossbeam_channel::bounded;
    use std::time::Duration;
    one_worker();
    let (x_started, x_has_started) = bounded(1);
    let (open_gate, gate) = bounded::<()>(1);
    let (go, wait_for_go) = bounded(1);
    let (y_queued, y_was_queued) = bounded(1);
    let (y_started, y_has_started) = bounded(1);
    let (x_exited, x_has_exited) = bounded(1);
    let (release, wait_for_release) = bounded(1);
    let other_scope = std::thread::spawn(move || {
        tether::scope(|s| {
            wait_for_go.recv().unwrap();
            let y = s.spawn_task(move |_| {
                y_started.send(()).unwrap();
                // Bounded, so that the test fails (rather than hangs) if the count is held.
                x_has_exited.recv_timeout(Duration::from_secs(10)).is_ok()
            });
            y_queued.send(()).unwrap();
            // Joining `y` before the worker has claimed it would run it here instead.
            wait_for_release.recv().unwrap();
            y.join().unwrap()
        })
        .unwrap()
    });
    tether::scope(|s| {
        // The only worker runs `x` and stays in it until the gate opens.
        s.spawn_task(move |_| {
            x_started.send(()).unwrap();
            gate.recv().unwrap();
        });
        x_has_started.recv().unwrap();
        // `y` is queued behind `x` (this thread does not help: it waits on plain channels).
        go.send(()).unwrap();
        y_was_queued.recv().unwrap();
        open_gate.send(()).unwrap();
        // The worker finishes `x` and then runs `y`: wait until `y` has started.
        y_has_started.recv().unwrap();
        release.send(()).unwrap();
    })
    .unwrap();
    let _ = x_exited.send(()); // fails only if `y` gave up waiting
    assert!(other_scope.join().unwrap(), "the first scope returned only once `y` gave up");
}
