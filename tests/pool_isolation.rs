//! Helping is isolated: a thread waiting for a scope runs only that scope's own tasks, never
//! another scope's. One pool worker (configured before the first task), so that a wait that ran
//! unrelated work would show it deterministically. The tests are serialised.

use crossbeam_channel::bounded;
use std::sync::{Arc, Barrier, Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;
use tether::{Canceller, Scope};

static SERIAL: Mutex<()> = Mutex::new(());

fn one_worker() -> MutexGuard<'static, ()> {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| tether::pool::configure(1).expect("no task ran before this"));
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Long enough to mean "never" for a failure detector.
const NEVER: Duration = Duration::from_secs(10);

/// Holds the one worker until the scope is cancelled.
fn occupy_the_worker<'scope>(s: &'scope Scope<'scope, '_>) {
    let busy = Arc::new(Barrier::new(2));
    let b = busy.clone();
    s.spawn_task(move |ctx| {
        b.wait();
        ctx.wait();
    });
    busy.wait();
}

#[test]
fn a_threads_only_scope_exit_does_not_run_another_scopes_pending_task() {
    let _serial = one_worker();
    let me = std::thread::current().id();
    let ran_on = Mutex::new(None);
    tether::scope(|outer| {
        occupy_the_worker(outer);
        // Pending: the only worker is busy.
        outer.spawn_task(|_| *ran_on.lock().unwrap() = Some(std::thread::current().id()));
        tether::scope(|s| {
            s.spawn(|_| std::thread::sleep(Duration::from_millis(50)));
        })
        .unwrap();
        assert_eq!(*ran_on.lock().unwrap(), None, "the inner exit ran only what it waits for");
        outer.cancel();
    })
    .unwrap();
    assert_ne!(*ran_on.lock().unwrap(), Some(me), "the other scope's task was not run by the inner exit");
}

#[test]
fn a_nested_wait_on_the_only_worker_does_not_run_a_sibling_that_waits_for_it() {
    let _serial = one_worker();
    let (to_sibling, from_first) = bounded::<()>(1);
    let (finished_tx, finished) = bounded::<()>(1);
    tether::scope(|s| {
        s.spawn_task(move |_| {
            // Queued on this worker's own deque, on top: a wait that helped with anything would
            // run it next, on top of this task, which it then waits for for ever.
            s.spawn_task(move |_| from_first.recv().unwrap());
            tether::scope(|inner| {
                inner.spawn(|_| std::thread::sleep(Duration::from_millis(20)));
            })
            .unwrap();
            to_sibling.send(()).unwrap();
            finished_tx.send(()).unwrap();
        });
        if finished.recv_timeout(NEVER).is_err() {
            // The worker is deadlocked (the sibling runs on top of the first task): the scope
            // could never return, so the test can only end the process.
            eprintln!("deadlock: the nested scope's wait ran a sibling task that waits for it");
            std::process::abort();
        }
        s.wait_all();
    })
    .unwrap();
}
