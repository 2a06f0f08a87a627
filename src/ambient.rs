//! The ambient context: the [`Context`] of the scope body or scope child running on this thread,
//! for code that reads it without an explicit parameter (the scoped-values model).
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
use std::marker::PhantomData;

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
