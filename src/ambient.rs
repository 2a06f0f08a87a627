//! The ambient context: the [`Context`] of the scope body or scope child running on this thread
//! (or of the future being polled, [`WithContext`]), for code that reads it without an explicit
//! parameter (the scoped-values model).
//!
//! The explicit form works everywhere: every child receives its `&Context` as an argument, and
//! every read here has an explicit twin ([`Context::value`], [`Key::get_in`]). The ambient form
//! exists for code deep in a call stack (logging, tracing) that was never handed a context.
//!
//! # Invariants
//! 1. `CURRENT` points to `ctx` exactly while this thread runs a scope body or a scope child (or
//!    a [`with_current`] closure), and `ctx` is the innermost one's context; it is null outside.
//! 2. Entering saves the previous pointer and the guard restores it on drop, unwinding included,
//!    so nested scopes and `with_current` calls restore the outer context when they end.
//! 3. The guard borrows `ctx` for its whole life, and guards are only ever local variables of the
//!    frame that entered (never leaked or moved out: [`Entered`] is crate-private, and every use
//!    is `let _ambient = enter(..)`), so they are dropped in reverse order of entering and
//!    `CURRENT`, when not null, points to a live context. Entering costs no reference count.
//!
//! [`Key::with`] and [`Key::get`] are defined here rather than with `Key` in `value/`: they read
//! the ambient pointer, and this file is the only one that does.

use crate::context::Context;
use crate::value::Key;
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{self, Poll};

thread_local! {
    /// The innermost ambient context of this thread, or null (invariant 1).
    static CURRENT: Cell<*const Context> = const { Cell::new(std::ptr::null()) };
}

/// Restores the previous ambient context on drop (invariant 2), borrowing the entered one
/// (invariant 3).
pub(crate) struct Entered<'a> {
    previous: *const Context,
    entered: PhantomData<&'a Context>,
}

/// Makes `ctx` the ambient context of this thread until the returned guard is dropped.
pub(crate) fn enter(ctx: &Context) -> Entered<'_> {
    let previous = CURRENT.with(|c| c.replace(ctx));
    Entered { previous, entered: PhantomData }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // `try_with`: during thread-local destruction there is nothing left to restore.
        let _ = CURRENT.try_with(|c| c.set(self.previous));
    }
}

/// Calls `f` with the innermost ambient context, if any.
fn with_ambient<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
    let current = CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: when not null, `current` points to the context of a guard that is still alive on
    // this thread (invariant 3), and this call runs inside that guard's extent, so the context
    // outlives the borrow given to `f`. Contexts are `Sync` and only read through `&`.
    f(unsafe { current.as_ref() })
}

/// The ambient context of this thread: the context of the innermost scope child or scope body
/// running on it, or [`Context::background`] outside any scope.
///
/// A new [`crate::scope`] opened here becomes a child of this context, so cancelling an outer
/// scope reaches scopes opened inside its children without passing contexts around.
///
/// # Examples
///
/// ```
/// use tether::Canceller;
///
/// assert!(!tether::current().can_be_cancelled(), "outside any scope: background");
/// tether::scope(|s| {
///     s.spawn(|ctx| {
///         // Code that was not handed `ctx` can still find it.
///         assert!(tether::current().can_be_cancelled());
///         ctx.cancel();
///         assert!(tether::current().is_cancelled(), "the same node as `ctx`");
///     });
/// })
/// .unwrap();
/// ```
pub fn current() -> Context {
    with_ambient(|ctx| ctx.cloned()).unwrap_or_else(Context::background)
}

/// A new node below the ambient context (a fresh root outside any scope), seeing the bindings
/// that cross a spawn: the context of a [`crate::join`].
pub(crate) fn child_of_current() -> Context {
    with_ambient(|ctx| ctx.map_or_else(Context::new, Context::child_for_spawn))
}

/// Runs `f` with `ctx` as this thread's ambient context, restoring the previous one after (also
/// when `f` panics). A child uses it to rebind values for the code it calls.
///
/// # Examples
///
/// ```
/// use tether::Key;
/// static USER: Key<&'static str> = Key::new("user");
///
/// let ctx = tether::current().with_value(&USER, "ada");
/// let seen = tether::with_current(&ctx, || USER.get());
/// assert_eq!(seen, Some("ada"));
/// assert_eq!(USER.get(), None, "restored afterwards");
/// ```
pub fn with_current<R>(ctx: &Context, f: impl FnOnce() -> R) -> R {
    let _entered = enter(ctx);
    f()
}

impl<T: 'static> Key<T> {
    /// Calls `f` with this key's binding in the ambient context ([`current`]), or with `None`.
    /// Borrows the value: no clone.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Key;
    /// static NAMES: Key<Vec<String>> = Key::new("names");
    ///
    /// tether::ScopeBuilder::new().value(&NAMES, vec!["ada".to_string()]).run(|s| {
    ///     s.spawn(|_| assert_eq!(NAMES.with(|names| names.map(Vec::len)), Some(1)));
    /// })
    /// .unwrap();
    /// ```
    pub fn with<R>(&'static self, f: impl FnOnce(Option<&T>) -> R) -> R {
        // `f` may itself enter or read the ambient context: the borrow stays valid (invariant 3).
        with_ambient(|ctx| f(ctx.and_then(|ctx| ctx.value(self))))
    }

    /// A clone of this key's binding in the ambient context ([`current`]), or `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::Key;
    /// static REQUEST_ID: Key<u64> = Key::new("request_id");
    ///
    /// assert_eq!(REQUEST_ID.get(), None);
    /// tether::ScopeBuilder::new().value(&REQUEST_ID, 7).run(|s| {
    ///     assert_eq!(REQUEST_ID.get(), Some(7), "in the body");
    ///     s.spawn(|_| assert_eq!(REQUEST_ID.get(), Some(7), "in a child"));
    /// })
    /// .unwrap();
    /// ```
    pub fn get(&'static self) -> Option<T>
    where
        T: Clone,
    {
        self.with(|v| v.cloned())
    }
}

/// A future with a context that is ambient ([`current`], [`Key::get`]) during every poll, on
/// whatever thread polls it: [`Context::bind`] and [`propagate`].
///
/// Outside its polls the context is not ambient, so futures interleaved on one executor thread
/// each see their own.
///
/// # Examples
///
/// ```
/// use tether::{Context, Key};
/// static TENANT: Key<&str> = Key::new("tenant");
///
/// let ctx = Context::new().with_value(&TENANT, "acme");
/// let seen = futures_executor::block_on(ctx.bind(async { TENANT.get() }));
/// assert_eq!(seen, Some("acme"));
/// assert_eq!(TENANT.get(), None, "only during the polls");
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WithContext<F> {
    ctx: Context,
    future: F,
}

impl<F> WithContext<F> {
    pub(crate) fn new(ctx: Context, future: F) -> Self {
        WithContext { ctx, future }
    }

    /// The context this future makes ambient.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of the pinned `self`); `ctx`
        // is not pinned and only read.
        let this = unsafe { self.get_unchecked_mut() };
        let _ambient = enter(&this.ctx);
        // SAFETY: as above.
        unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx)
    }
}

/// Wraps `future` for spawning onto an executor: it runs with a child of the ambient context
/// ([`current`]) that carries the bindings inherited across spawns (per each key's
/// [`Inheritance`](crate::Inheritance)), ambient during every poll; cancelling the ambient
/// context cancels it. What tokio's `task_local!` does not do for a spawned task.
///
/// # Examples
///
/// ```
/// use tether::{Key, ScopeBuilder};
/// static REQUEST_ID: Key<u64> = Key::new("request_id");
///
/// ScopeBuilder::new().value(&REQUEST_ID, 7).run(|_| {
///     // Spawned elsewhere (here: another thread's executor), it still sees the request's values.
///     let task = tether::propagate(async { REQUEST_ID.get() });
///     let seen = std::thread::spawn(move || futures_executor::block_on(task)).join().unwrap();
///     assert_eq!(seen, Some(7));
/// })
/// .unwrap();
/// ```
pub fn propagate<F: Future>(future: F) -> WithContext<F> {
    WithContext::new(current().child_for_spawn(), future)
}
