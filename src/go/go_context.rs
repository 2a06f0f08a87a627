//! [`GoContext`]: Go's `context.Context` interface as a trait, and Go's private cancel-context
//! key, through which a custom context reveals the native node that cancels it.

use super::any_key::AnyKey;
use super::stop::AfterFuncStop;
use crate::cancel::{CancelError, Canceller, Cause, Done};
use crate::value::Key;
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Go's `context.Context` interface: implement it to make your own context type (Go's
/// `otherContext`), then derive from it with this module's functions.
///
/// Cancellation of a custom context reaches the contexts derived from it without a thread per
/// derivation: through the native node it wraps, if [`value`](GoContext::value) forwards Go's private
/// cancel-context key to one whose done channel is this context's own (forward every key you do
/// not own to the context you wrap, as Go's embedding does); else through
/// [`after_func`](GoContext::after_func) if you implement it; else through one shared watcher thread
/// that waits on the done channels of all custom contexts at once.
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use std::time::Instant;
/// use tether::{go, CancelError, Done};
/// use tether::go::{AnyKey, GoContext};
///
/// /// Go's `otherContext`: wraps a context and forwards everything.
/// #[derive(Clone)]
/// struct Other(go::Ctx);
///
/// impl GoContext for Other {
///     fn deadline(&self) -> Option<Instant> { self.0.deadline() }
///     fn done(&self) -> Option<Done<'_>> { self.0.done() }
///     fn err(&self) -> Option<CancelError> { self.0.err() }
///     fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> { self.0.value(key) }
/// }
///
/// let (parent, cancel) = go::with_cancel(&go::background());
/// let (child, _cancel_child) = go::with_cancel(&Other(parent));
/// cancel.cancel(); // reaches `child` before returning: `Other` forwards to a native node
/// assert_eq!(child.err(), Some(CancelError::Cancelled));
/// ```
pub trait GoContext: Send + Sync + 'static {
    /// Go's `Deadline()`: when this context will be cancelled by a deadline, if ever.
    fn deadline(&self) -> Option<Instant>;

    /// Go's `Done()`: `None` (Go's nil channel) if this context can never be done, otherwise its
    /// done channel, borrowed ([`Done::from`] a receiver the context keeps), which disconnects
    /// when it is. Successive calls return the same channel.
    fn done(&self) -> Option<Done<'_>>;

    /// Go's `Err()`: `None` until the done channel is closed, then why.
    fn err(&self) -> Option<CancelError>;

    /// Go's `Value(key)`: the value bound to `key`, `None` if none (or Go's `nil`). Forward keys
    /// you do not own to the context you wrap.
    fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)>;

    /// Go's `context.Cause(c)` for this context: `None` before it is done. The default does what
    /// Go's does: the cause of the innermost native node that [`value`](GoContext::value) forwards
    /// to, else the error.
    fn cause(&self) -> Option<Cause> {
        let err = self.err()?;
        let node = self.value(cancel_ctx_key()).and_then(|v| v.downcast_ref::<crate::context::Context>());
        Some(node.and_then(Canceller::cause).unwrap_or_else(|| err.into()))
    }

    /// Writes this context's name, Go's `String()` (or its type name when it has none), used when
    /// printing contexts derived from it. The default writes the type's name.
    fn name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::any::type_name::<Self>())
    }

    /// Go's `AfterFunc` method (the `afterFuncer` interface): arrange to call `f` once after this
    /// context is done, and return a handle that stops it. Return `Err(f)` (the default) if this
    /// context has no such mechanism; the adapter then uses its shared watcher.
    fn after_func(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> Result<AfterFuncStop, Box<dyn FnOnce() + Send>> {
        Err(f)
    }
}

impl<T: GoContext + ?Sized> GoContext for Arc<T> {
    fn deadline(&self) -> Option<Instant> {
        (**self).deadline()
    }
    fn done(&self) -> Option<Done<'_>> {
        (**self).done()
    }
    fn err(&self) -> Option<CancelError> {
        (**self).err()
    }
    fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
        (**self).value(key)
    }
    fn cause(&self) -> Option<Cause> {
        (**self).cause()
    }
    fn name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).name(f)
    }
    fn after_func(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> Result<AfterFuncStop, Box<dyn FnOnce() + Send>> {
        (**self).after_func(f)
    }
}

/// Go's private `&cancelCtxKey`: asked of a context, it answers with the innermost native
/// context whose node cancels it.
static CANCEL_CTX: Key<crate::context::Context> = Key::new("context.cancelCtxKey");

pub(crate) fn cancel_ctx_key() -> AnyKey<'static> {
    AnyKey::from(&CANCEL_CTX)
}
