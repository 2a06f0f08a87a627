//! The ambient context: the [`Context`] of the scope body or scope child running on this thread,
//! for code that reads it without an explicit parameter (the scoped-values model).
//!
//! The explicit form works everywhere: every child receives its `&Context` as an argument, and
//! every read here has an explicit twin ([`Context::value`], [`Key::get_in`]). The ambient form
//! exists for code deep in a call stack (logging, tracing) that was never handed a context.
//!
//! # Invariants
//! 1. `CURRENT` is `Some(ctx)` exactly while this thread runs a scope body or a scope child (or a
//!    [`with_current`] closure), and `ctx` is the innermost one's context.
//! 2. Entering saves the previous value and the guard restores it on drop, unwinding included, so
//!    nested scopes and `with_current` calls restore the outer context when they end.

use crate::{Context, Key};
use std::cell::RefCell;

thread_local! {
    /// The innermost ambient context of this thread (invariant 1).
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Restores the previous ambient context on drop (invariant 2).
pub(crate) struct Entered {
    previous: Option<Context>,
}

/// Makes `ctx` the ambient context of this thread until the returned guard is dropped.
pub(crate) fn enter(ctx: Context) -> Entered {
    let previous = CURRENT.with(|c| c.replace(Some(ctx)));
    Entered { previous }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // `try_with`: during thread-local destruction there is nothing left to restore. The
        // replaced context is dropped after the borrow ends, since its drop may run user code.
        let replaced = CURRENT.try_with(|c| c.replace(previous)).ok().flatten();
        drop(replaced);
    }
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
    CURRENT.with(|c| c.borrow().clone()).unwrap_or_else(Context::background)
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
    let _entered = enter(ctx.clone());
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
        CURRENT.with(|c| {
            // Clone the handle out (two reference counts) so `f` may itself enter or read the
            // ambient context without a `RefCell` borrow conflict.
            let ctx = c.borrow().clone();
            f(ctx.as_ref().and_then(|ctx| ctx.value(self)))
        })
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
