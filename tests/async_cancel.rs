//! Awaiting cancellation from async code: `Canceller::cancelled`, `Context::cancelled_owned`,
//! `run_until_cancelled`, awaiting a foreign `Canceller` through the trait, and the ambient
//! context inside futures (`Context::bind`, `tether::propagate`).
//!
//! Every test holds `COUNTS`: some read the process-wide live counts, and no other test of this
//! binary may create contexts meanwhile.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tether::{Cancelled, Canceller, Cause, Context, Key, ScopeBuilder, Waiter};

static COUNTS: Mutex<()> = Mutex::new(());

fn counts() -> MutexGuard<'static, ()> {
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A waker that counts its wakes.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    (counter.clone(), Waker::from(counter))
}

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut TaskContext::from_waker(waker))
}

fn assert_send_unpin<T: Send + Unpin>(_: &T) {}

#[test]
fn an_already_cancelled_context_is_ready_on_the_first_poll_and_registers_nothing() {
    let _counts = counts();
    let ctx = Context::new();
    ctx.cancel_with(Cause::ScopeExited);
    let before = tether::live();
    let (woken, waker) = counting();
    let mut cancelled = ctx.cancelled();
    assert_send_unpin(&cancelled);
    assert_eq!(poll_once(&mut cancelled, &waker), Poll::Ready(Cause::ScopeExited));
    assert_eq!(tether::live().callbacks, before.callbacks, "nothing was registered");
    assert_eq!(woken.0.load(SeqCst), 0);
}

#[test]
fn a_pending_future_is_woken_by_the_cancellation_and_returns_its_cause() {
    let _counts = counts();
    let ctx = Context::new();
    let (woken, waker) = counting();
    let mut cancelled = ctx.cancelled();
    assert!(poll_once(&mut cancelled, &waker).is_pending());
    ctx.cancel_with(Cause::ScopeExited);
    assert_eq!(woken.0.load(SeqCst), 1, "cancel woke the registered waker before it returned");
    assert_eq!(poll_once(&mut cancelled, &waker), Poll::Ready(Cause::ScopeExited));
}

#[test]
fn a_million_create_poll_drop_cycles_on_one_open_context_leave_nothing_registered() {
    let _counts = counts();
    let ctx = Context::new();
    let before = tether::live();
    let (_woken, waker) = counting();
    let cycles = if cfg!(miri) { 100 } else { 1_000_000 };
    for _ in 0..cycles {
        let mut cancelled = ctx.cancelled();
        assert!(poll_once(&mut cancelled, &waker).is_pending());
        assert_eq!(tether::live().callbacks, before.callbacks + 1, "one registration while pending");
    }
    assert_eq!(tether::live().callbacks, before.callbacks, "every drop deregistered its waker");
    // And the node still works: a new waiter is woken.
    let (woken, waker) = counting();
    let mut cancelled = ctx.cancelled();
    assert!(poll_once(&mut cancelled, &waker).is_pending());
    ctx.cancel();
    assert_eq!(woken.0.load(SeqCst), 1);
}

#[test]
fn polling_again_with_another_waker_replaces_the_registration_instead_of_adding_one() {
    let _counts = counts();
    let ctx = Context::new();
    let before = tether::live();
    let (first, first_waker) = counting();
    let (second, second_waker) = counting();
    let mut cancelled = ctx.cancelled();
    assert!(poll_once(&mut cancelled, &first_waker).is_pending());
    assert!(poll_once(&mut cancelled, &second_waker).is_pending());
    assert!(poll_once(&mut cancelled, &second_waker).is_pending());
    assert_eq!(tether::live().callbacks, before.callbacks + 1, "still one registration");
    ctx.cancel();
    assert_eq!(first.0.load(SeqCst), 0, "the replaced waker is not woken");
    assert_eq!(second.0.load(SeqCst), 1, "the latest waker is");
    assert!(poll_once(&mut cancelled, &second_waker).is_ready());
    drop(cancelled);
    assert_eq!(tether::live().callbacks, before.callbacks);
}

#[test]
fn a_dropped_pending_future_is_never_woken() {
    let _counts = counts();
    let ctx = Context::new();
    let (woken, waker) = counting();
    let mut cancelled = ctx.cancelled();
    assert!(poll_once(&mut cancelled, &waker).is_pending());
    drop(cancelled);
    ctx.cancel();
    assert_eq!(woken.0.load(SeqCst), 0);
}

#[test]
fn a_context_that_can_never_be_cancelled_stays_pending_and_registers_nothing() {
    let _counts = counts();
    let before = tether::live();
    let background = Context::background();
    let (_woken, waker) = counting();
    let mut cancelled = background.cancelled();
    assert!(poll_once(&mut cancelled, &waker).is_pending());
    assert_eq!(tether::live().callbacks, before.callbacks);
}

#[test]
fn cancelled_awaits_across_threads_under_a_plain_executor() {
    let _counts = counts();
    let ctx = Context::new();
    let waiting = ctx.cancelled_owned();
    let waiter = std::thread::spawn(move || futures_executor::block_on(waiting));
    ctx.cancel_with(Cause::custom(std::io::Error::other("client went away")));
    assert_eq!(waiter.join().unwrap().to_string(), "client went away");
}

#[test]
fn run_until_cancelled_returns_the_output_or_the_cause_and_cancellation_wins_a_tie() {
    let _counts = counts();
    let ctx = Context::new();
    assert_eq!(futures_executor::block_on(ctx.run_until_cancelled(async { 1 + 1 })), Ok(2));
    ctx.cancel_with(Cause::ScopeExited);
    // Both are ready at the first poll: the cancellation is checked first.
    let ready = std::future::ready("too late");
    assert_eq!(futures_executor::block_on(ctx.run_until_cancelled(ready)), Err(Cause::ScopeExited));
}

#[test]
fn run_until_cancelled_drops_the_future_when_cancelled_mid_flight() {
    let _counts = counts();
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = Flag(dropped.clone());
    let ctx = Context::new();
    let (_woken, waker) = counting();
    let mut run = Box::pin(ctx.run_until_cancelled(async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }));
    assert!(run.as_mut().poll(&mut TaskContext::from_waker(&waker)).is_pending());
    ctx.cancel();
    assert_eq!(run.as_mut().poll(&mut TaskContext::from_waker(&waker)), Poll::Ready(Err(Cause::Cancelled)));
    assert_eq!(dropped.load(SeqCst), 1, "the future was dropped when the cancellation won");
}

/// A canceller tether knows nothing about: only its `done()` channel says when it is cancelled.
struct Foreign {
    tx: Mutex<Option<crossbeam_channel::Sender<Infallible>>>,
    rx: crossbeam_channel::Receiver<Infallible>,
}

impl Foreign {
    fn new() -> Foreign {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Foreign { tx: Mutex::new(Some(tx)), rx }
    }
    fn cancel(&self) {
        self.tx.lock().unwrap().take();
    }
}

impl Canceller for Foreign {
    fn is_cancelled(&self) -> bool {
        self.tx.lock().unwrap().is_none()
    }
    fn err(&self) -> Option<tether::CancelError> {
        self.is_cancelled().then_some(tether::CancelError::Cancelled)
    }
    fn cause(&self) -> Option<Cause> {
        self.is_cancelled().then_some(Cause::ScopeExited)
    }
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn done(&self) -> tether::Done<'_> {
        tether::Done::from(&self.rx)
    }
    fn can_be_cancelled(&self) -> bool {
        true
    }
}

#[test]
fn a_foreign_canceller_is_awaitable_through_the_trait() {
    let _counts = counts();
    let foreign = Arc::new(Foreign::new());
    let observer = foreign.clone();
    let waiter = std::thread::spawn(move || {
        let observed: &dyn Canceller = &*observer;
        futures_executor::block_on(Cancelled::new(observed))
    });
    // Whether the waiter has parked on its watch yet or not, it sees the cancellation.
    foreign.cancel();
    assert_eq!(waiter.join().unwrap(), Cause::ScopeExited);
}

#[test]
fn a_foreign_canceller_waiter_replaces_its_waker_and_wakes_the_latest() {
    let _counts = counts();
    let foreign = Foreign::new();
    let mut waiter = Waiter::new();
    let (first, first_waker) = counting();
    let (second, second_waker) = counting();
    let mut cx1 = TaskContext::from_waker(&first_waker);
    let mut cx2 = TaskContext::from_waker(&second_waker);
    assert!(foreign.poll_cancelled(&mut cx1, &mut waiter).is_pending());
    assert!(foreign.poll_cancelled(&mut cx2, &mut waiter).is_pending());
    foreign.cancel();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.0.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the watcher never woke the waiter");
        std::thread::yield_now();
    }
    assert_eq!(first.0.load(SeqCst), 0);
    assert_eq!(foreign.poll_cancelled(&mut cx2, &mut waiter), Poll::Ready(Cause::ScopeExited));
}

#[test]
fn a_go_context_is_awaitable() {
    let _counts = counts();
    let (ctx, cancel) = tether::go::with_cancel(&tether::go::background());
    let waiting = ctx.clone();
    let waiter = std::thread::spawn(move || futures_executor::block_on(waiting.cancelled()));
    cancel.cancel();
    assert_eq!(waiter.join().unwrap(), Cause::Cancelled);
}

static TENANT: Key<&str> = Key::new("tenant");
static SECRET: Key<&str> = Key::not_inherited("secret");

#[test]
fn a_bound_context_is_ambient_during_every_poll_and_only_then() {
    let _counts = counts();
    let ctx = Context::new().with_value(&TENANT, "acme");
    let (_woken, waker) = counting();
    let mut polls = 0;
    let mut future = ctx.bind(std::future::poll_fn(|_| {
        polls += 1;
        assert_eq!(TENANT.get(), Some("acme"), "poll {polls}");
        if polls < 3 { Poll::Pending } else { Poll::Ready(()) }
    }));
    let mut future = Pin::new(&mut future);
    while future.as_mut().poll(&mut TaskContext::from_waker(&waker)).is_pending() {
        assert_eq!(TENANT.get(), None, "between polls the context is not ambient");
    }
}

#[test]
fn a_propagated_future_sees_inherited_values_on_another_thread_and_is_cancelled_with_its_parent() {
    let _counts = counts();
    ScopeBuilder::new()
        .value(&TENANT, "acme")
        .value(&SECRET, "hunter2")
        .run(|s| {
            let task = tether::propagate(async {
                let ambient = tether::current();
                (TENANT.get(), SECRET.get(), ambient.cancelled_owned().await)
            });
            let executor = std::thread::spawn(move || futures_executor::block_on(task));
            s.cancel();
            let (tenant, secret, cause) = executor.join().unwrap();
            assert_eq!(tenant, Some("acme"));
            assert_eq!(secret, None, "a key that is not inherited stays behind");
            assert_eq!(cause, Cause::Cancelled);
        })
        .unwrap();
}
