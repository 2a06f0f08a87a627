//! [`Ctx`]: the adapter's context value, a native context plus what Go's layering adds.
//!
//! A `Ctx` is what a Go `context.Context` interface value is: whatever the derivation returned.
//! It holds the native [`crate::Context`] (the cancellation node and the typed values), the
//! string-keyed values, its Go-level layer (for `String()`), and the nearest custom ancestor.
//!
//! # Invariants
//! 1. `native` has a node iff some derivation since the nearest custom ancestor (or since the
//!    root) made one and no `without_cancel` came after it; Go's `WithValue` and `WithoutCancel`
//!    make no node (`WithValue` shares its parent's, `WithoutCancel` has none).
//! 2. Where the cancellation of a `Ctx` comes from ([`Source`]): its node if it has one, else its
//!    custom ancestor `base` if `base_cancels` (no `without_cancel` since it), else nowhere.
//! 3. A node derived below a custom ancestor is a root of the native tree, tied to the ancestor by
//!    one subscription (`link`), which is stopped when the node is cancelled or released (Go's
//!    `removeChild`).
//! 4. `deadline` is Go's `Deadline()`, fixed at creation: the derivation's own deadline, else the
//!    parent's (a custom parent's as it reported it then).

use super::any_key::{AnyKey, Describe, Nil, OwnedKey, StrMap, Value, str_hash};
use super::go_context::{GoContext, cancel_ctx_key};
use super::link::subscribe;
use super::stop::Subscription;
use super::string::{Layer, LayerKind};
use crate::cancel::{CancelError, Canceller, Cause, Done, Waiter};
use crate::value::{Key, KeyId, Valuer};
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

/// A Go-style context, running on tether's cancellation tree: what the functions of
/// [`tether::go`](super) return.
///
/// Cheap to clone (a few reference counts); clones are the same context. Its methods are Go's
/// (`deadline`, `done`, `err`, `value`, and `Display` for `String()`); it also implements
/// [`Canceller`] and [`Valuer`], so it can be handed to native tether code as is.
///
/// # Examples
///
/// ```
/// use tether::go;
///
/// let (ctx, cancel) = go::with_cancel(&go::background());
/// assert_eq!(ctx.to_string(), "context.Background.WithCancel");
/// assert!(ctx.done().is_some() && ctx.err().is_none());
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(tether::CancelError::Cancelled));
/// ```
#[derive(Clone)]
pub struct Ctx {
    /// The node (invariant 1) and the typed bindings since the custom ancestor.
    native: crate::context::Context,
    /// The string-keyed bindings since the custom ancestor.
    strings: StrMap,
    /// This context's Go-level layer.
    layer: Arc<Layer>,
    /// The nearest custom ancestor.
    base: Option<Arc<dyn GoContext>>,
    /// Whether `base` still cancels this context (invariant 2).
    base_cancels: bool,
    /// Go's `Deadline()` (invariant 4).
    deadline: Option<Instant>,
}

/// Where a context's cancellation comes from (invariant 2).
pub(crate) enum Source<'a> {
    Node(&'a crate::context::Context),
    Custom(&'a Arc<dyn GoContext>),
    Never,
}

/// Stops a subscription when dropped: held by the on-cancel callback of the node it cancels, so
/// it is dropped when that node is cancelled or released (invariant 3).
struct StopOnDrop(Subscription);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

// ===== constructors =====

impl Ctx {
    pub(crate) fn root(layer: Arc<Layer>) -> Ctx {
        Ctx {
            native: crate::context::Context::background(),
            strings: StrMap::default(),
            layer,
            base: None,
            base_cancels: false,
            deadline: None,
        }
    }

    /// The context a Go interface value holding `parent` would be: a `Ctx` as is, a native
    /// context as is, anything else as a custom context.
    pub(crate) fn view<P: GoContext + Clone>(parent: &P) -> Ctx {
        let any = parent as &dyn Any;
        if let Some(ctx) = any.downcast_ref::<Ctx>() {
            return ctx.clone();
        }
        if let Some(native) = any.downcast_ref::<crate::context::Context>() {
            return Ctx::from(native.clone());
        }
        let base: Arc<dyn GoContext> = match any.downcast_ref::<Arc<dyn GoContext>>() {
            Some(shared) => shared.clone(),
            None => Arc::new(parent.clone()),
        };
        Ctx {
            deadline: base.deadline(),
            layer: Layer::root(LayerKind::Custom(base.clone())),
            base: Some(base),
            base_cancels: true,
            ..Ctx::root(Layer::native())
        }
    }

    pub(crate) fn source(&self) -> Source<'_> {
        if self.native.can_be_cancelled() {
            Source::Node(&self.native)
        } else {
            match &self.base {
                Some(base) if self.base_cancels => Source::Custom(base),
                _ => Source::Never,
            }
        }
    }

    /// Go's `WithCancel` (`own == None`) and `WithDeadlineCause`.
    pub(crate) fn derive_cancel(&self, own: Option<(Instant, Cause)>) -> Ctx {
        // "If the parent's deadline is already earlier than d, WithDeadline(parent, d) is
        // semantically equivalent to parent": a plain WithCancel.
        let own = own.filter(|(at, _)| self.deadline.is_none_or(|parent| parent >= *at));
        let native = match &own {
            Some((at, cause)) => self.native.with_deadline_cause(*at, cause.clone()),
            None => self.native.child(),
        };
        let mut parent_layer = &self.layer;
        let stop_ctx = Layer::stop_ctx();
        if let Source::Custom(base) = self.source() {
            // Go names a custom parent with an AfterFunc hook `context.stopCtx`.
            if link(base, &native) && self.layer.is_custom_root() {
                parent_layer = &stop_ctx;
            }
        }
        let kind = own.as_ref().map_or(LayerKind::Cancel, |(at, _)| LayerKind::Deadline(*at));
        Ctx {
            native,
            strings: self.strings.clone(),
            layer: Layer::on(parent_layer, kind),
            base: self.base.clone(),
            base_cancels: self.base_cancels,
            deadline: own.map(|(at, _)| at).or(self.deadline),
        }
    }

    /// Go's `WithValue`; `value == None` is Go's `nil`.
    pub(crate) fn derive_value(&self, key: OwnedKey, value: Option<(Value, Describe)>) -> Ctx {
        let mut next = self.clone();
        match &key {
            OwnedKey::Typed(id, _) => {
                let bound: Value = match &value {
                    Some((v, _)) => v.clone(),
                    None => Arc::new(Nil),
                };
                next.native = self.native.with_values(self.native.values().with(*id, bound));
            }
            OwnedKey::Str(s) => {
                let bound = value.as_ref().map(|(v, _)| v.clone());
                next.strings = self.strings.insert(str_hash(s), s.clone(), bound);
            }
        }
        next.layer = Layer::on(&self.layer, LayerKind::Value(key, value));
        next
    }

    /// Go's `WithoutCancel`.
    pub(crate) fn derive_without_cancel(&self) -> Ctx {
        Ctx {
            native: self.native.detached(),
            strings: self.strings.clone(),
            layer: Layer::on(&self.layer, LayerKind::WithoutCancel),
            base: self.base.clone(),
            base_cancels: false,
            deadline: None,
        }
    }

    /// The node, for the cancel functions.
    pub(crate) fn native(&self) -> &crate::context::Context {
        &self.native
    }
}

/// Ties the new node `native` to the custom context `base` (invariant 3). Returns whether `base`'s
/// own `after_func` hook was used.
fn link(base: &Arc<dyn GoContext>, native: &crate::context::Context) -> bool {
    let node = native.remote_canceller().expect("a derived context has a node");
    let parent = base.clone();
    let sub = subscribe(
        base,
        Box::new(move || {
            // Go: child.cancel(false, parent.Err(), Cause(parent)).
            let err = parent.err().unwrap_or(CancelError::Cancelled);
            let cause = parent.cause().unwrap_or_else(|| err.into());
            node.cancel(err, cause);
        }),
    );
    let hooked = matches!(sub, Subscription::Hook(_));
    if !matches!(sub, Subscription::Never | Subscription::Fired) {
        let guard = StopOnDrop(sub);
        // The registration is never stopped: the callback (or its discarding) is the point.
        let _registration = native.on_cancel(move |_| drop(guard));
    }
    hooked
}

impl From<crate::context::Context> for Ctx {
    /// A native context viewed as a Go context: no copy, no new node. It prints as
    /// `tether::Context`.
    fn from(native: crate::context::Context) -> Ctx {
        Ctx { deadline: Canceller::deadline(&native), native, ..Ctx::root(Layer::native()) }
    }
}

// ===== Go's methods =====

impl Ctx {
    /// Go's `Deadline()`: when this context will be cancelled by a deadline, if ever.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tether::go;
    /// let at = Instant::now() + Duration::from_secs(60);
    /// let (ctx, _cancel) = go::with_deadline(&go::background(), at);
    /// assert_eq!(ctx.deadline(), Some(at));
    /// assert_eq!(go::background().deadline(), None);
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Go's `Done()`: a receiver that becomes ready (disconnected) when this context is done, or
    /// `None` (Go's nil channel) if it can never be: `background()`, `todo()`, `without_cancel`
    /// and value layers over them.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::go;
    /// assert!(go::background().done().is_none());
    /// let (ctx, cancel) = go::with_cancel(&go::background());
    /// let done = ctx.done().unwrap();
    /// cancel.cancel();
    /// assert!(done.recv().is_err(), "a done channel is closed, never sent on");
    /// ```
    pub fn done(&self) -> Option<Done<'_>> {
        match self.source() {
            Source::Node(native) => Some(Canceller::done(native)),
            Source::Custom(base) => base.done(),
            Source::Never => None,
        }
    }

    /// Go's `Err()`: `None` while not done, then `Cancelled` or `DeadlineExceeded` (which
    /// [`is_timeout`](CancelError::is_timeout)). Once it returns an error, `done()` is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{go, CancelError};
    /// let (ctx, cancel) = go::with_cancel(&go::background());
    /// assert_eq!(ctx.err(), None);
    /// cancel.cancel();
    /// assert_eq!(ctx.err(), Some(CancelError::Cancelled));
    /// ```
    pub fn err(&self) -> Option<CancelError> {
        match self.source() {
            Source::Node(native) => native_err(native),
            Source::Custom(base) => base.err(),
            Source::Never => None,
        }
    }

    /// Go's `context.Cause(ctx)`: why this context is done, `None` before.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{go, Cause};
    /// let (ctx, cancel) = go::with_cancel_cause(&go::background());
    /// let why = Cause::custom(std::io::Error::other("shutting down"));
    /// cancel.cancel(why.clone());
    /// assert!(ctx.cause().unwrap().is_same(&why));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        match self.source() {
            Source::Node(native) => Canceller::cause(native),
            Source::Custom(base) => base.cause(),
            Source::Never => None,
        }
    }

    /// Go's `Value(key)`: the value bound to a typed or string key by the nearest `with_value`
    /// for that key, `None` if there is none or it bound Go's `nil`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::go;
    /// let ctx = go::with_value(&go::background(), "user", String::from("ada"));
    /// let user = ctx.value("user").and_then(|v| v.downcast_ref::<String>());
    /// assert_eq!(user.map(String::as_str), Some("ada"));
    /// assert!(go::with_nil_value(&ctx, "user").value("user").is_none());
    /// ```
    pub fn value<'k>(&self, key: impl Into<AnyKey<'k>>) -> Option<&(dyn Any + Send + Sync)> {
        self.lookup(key.into())
    }

    /// The value bound to a typed key, at its type.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{go, Key};
    /// static ATTEMPT: Key<u32> = Key::new("attempt");
    /// let ctx = go::with_value(&go::background(), &ATTEMPT, 2);
    /// assert_eq!(ctx.get(&ATTEMPT), Some(&2));
    /// ```
    pub fn get<T: 'static>(&self, key: &'static Key<T>) -> Option<&T> {
        self.lookup(AnyKey::from(key))?.downcast_ref::<T>()
    }

    fn lookup(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
        if let Some(id) = key.key_id() {
            if Some(id) == cancel_ctx_key().key_id() {
                // Go's `&cancelCtxKey`: the innermost node, if this context is cancelled by one.
                return match self.source() {
                    Source::Node(native) => Some(native),
                    Source::Custom(base) => base.value(key),
                    Source::Never => None,
                };
            }
            if let Some(v) = self.native.values().get(id) {
                return (!v.is::<Nil>()).then_some(v);
            }
        } else if let Some(s) = key.as_str() {
            if let Some(v) = self.strings.get(str_hash(s), s) {
                return v.as_deref();
            }
        }
        self.base.as_ref()?.value(key)
    }
}

/// A native context's `Err()`, Go-style: once it reports an error its done channel is closed.
pub(crate) fn native_err(native: &crate::context::Context) -> Option<CancelError> {
    let err = Canceller::err(native)?;
    // The engine publishes the state just before it disconnects the done channel; wait out that
    // window, as Go's `Err()` does with `<-c.Done()`, so that "Err is set" implies "Done is
    // closed" (Go issue 75533). The receive returns at once or within that window.
    let _ = Canceller::done(native).recv();
    Some(err)
}

// ===== trait impls =====

impl GoContext for Ctx {
    fn deadline(&self) -> Option<Instant> {
        Ctx::deadline(self)
    }
    fn done(&self) -> Option<Done<'_>> {
        Ctx::done(self)
    }
    fn err(&self) -> Option<CancelError> {
        Ctx::err(self)
    }
    fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
        self.lookup(key)
    }
    fn cause(&self) -> Option<Cause> {
        Ctx::cause(self)
    }
    fn name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Canceller for Ctx {
    fn is_cancelled(&self) -> bool {
        match self.source() {
            Source::Node(native) => native.is_cancelled(),
            Source::Custom(base) => base.err().is_some(),
            Source::Never => false,
        }
    }
    fn err(&self) -> Option<CancelError> {
        Ctx::err(self)
    }
    fn cause(&self) -> Option<Cause> {
        Ctx::cause(self)
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn done(&self) -> Done<'_> {
        Ctx::done(self).unwrap_or_else(Done::never)
    }
    fn can_be_cancelled(&self) -> bool {
        match self.source() {
            Source::Node(_) => true,
            Source::Custom(base) => base.done().is_some(),
            Source::Never => false,
        }
    }
    fn poll_cancelled(&self, cx: &mut std::task::Context<'_>, waiter: &mut Waiter) -> Poll<Cause> {
        match self.source() {
            Source::Node(native) => native.poll_cancelled(cx, waiter),
            _ => waiter.poll_watching(self, cx),
        }
    }
}

impl Valuer for Ctx {
    fn lookup(&self, key: KeyId) -> Option<&(dyn Any + Send + Sync)> {
        Ctx::lookup(self, AnyKey::typed(key))
    }
}

impl fmt::Display for Ctx {
    /// Go's `String()`: the chain of derivations, e.g. `context.Background.WithValue(k, v).WithCancel`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.layer, f)
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("string", &format_args!("{self}"))
            .field("err", &self.err())
            .finish_non_exhaustive()
    }
}

/// A native context viewed as a Go context, in place.
impl GoContext for crate::context::Context {
    fn deadline(&self) -> Option<Instant> {
        Canceller::deadline(self)
    }
    fn done(&self) -> Option<Done<'_>> {
        self.can_be_cancelled().then(|| Canceller::done(self))
    }
    fn err(&self) -> Option<CancelError> {
        native_err(self)
    }
    fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
        let id = key.key_id()?;
        if Some(id) == cancel_ctx_key().key_id() {
            return self.can_be_cancelled().then_some(self as &(dyn Any + Send + Sync));
        }
        Valuer::lookup(self, id).filter(|v| !v.is::<Nil>())
    }
    fn cause(&self) -> Option<Cause> {
        Canceller::cause(self)
    }
    fn name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tether::Context")
    }
}
