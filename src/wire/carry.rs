//! Which context values cross the wire: only those of keys registered in a [`Carry`], each with
//! its header name and a codec. Nothing is carried by default, because a value bound to a context
//! (a user id, a token, a database handle) is not meant for every server the request reaches.
//!
//! # Invariants
//! 1. [`Carry::inject`] writes a header only for a registered key bound in the context; an
//!    unregistered key never reaches a header, whatever its type.
//! 2. [`Carry::extract`] binds a key only from a value its codec accepted; a rejected value is
//!    reported, never bound, and never stops the other keys.

use crate::cancel::SharedError;
use crate::context::Context;
use crate::value::Key;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A value that arrived in a header and was rejected by its key's codec (or was not UTF-8).
///
/// # Examples
///
/// ```
/// use tether::wire::Carry;
/// let carry = Carry::trace_context();
/// let (_ctx, errors) = carry.extract(&tether::Context::new(), |name| {
///     (name == "traceparent").then_some(b"00-bad".as_slice())
/// });
/// assert_eq!(errors[0].header(), "traceparent");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("header {header}: {source}")]
pub struct CarryError {
    header: &'static str,
    source: SharedError,
}

impl CarryError {
    /// The header whose value was rejected.
    ///
    /// # Examples
    ///
    /// See [`CarryError`].
    pub fn header(&self) -> &'static str {
        self.header
    }
}

/// The header value was not UTF-8.
#[derive(Debug, thiserror::Error)]
#[error("the value is not UTF-8")]
struct NotUtf8;

/// Writes a key's value from a context, if bound.
type InjectFn = Box<dyn Fn(&Context) -> Option<String> + Send + Sync>;
/// Reads a key's value from its header text into a new context below the given one.
type ExtractFn = Box<dyn Fn(&Context, &str) -> Result<Context, SharedError> + Send + Sync>;

/// One registered key: how to write its value and how to read it back into a context.
struct Entry {
    header: &'static str,
    inject: InjectFn,
    extract: ExtractFn,
}

/// The keys whose values cross the wire, each with its header and codec: an opt-in list, empty by
/// default. [`Carry::trace_context`] registers the W3C keys, [`TRACE_PARENT`](super::TRACE_PARENT)
/// and [`BAGGAGE`](super::BAGGAGE).
///
/// Cloning copies a short list of shared entries; the layers hold one behind an `Arc`.
///
/// # Examples
///
/// ```
/// use tether::wire::Carry;
/// use tether::{Context, Key};
///
/// static TENANT: Key<String> = Key::new("tenant");
/// static PASSWORD: Key<String> = Key::new("password"); // never registered: never sent
///
/// let carry = Carry::new().with(&TENANT, "x-tenant", |t| t.clone(), |s| Ok::<_, std::convert::Infallible>(s.to_owned()));
/// let ctx = Context::new().with_value(&TENANT, "acme".into()).with_value(&PASSWORD, "hunter2".into());
/// let mut sent = Vec::new();
/// carry.inject(&ctx, |name, value| sent.push((name, value)));
/// assert_eq!(sent, [("x-tenant", "acme".to_string())]);
///
/// let (server, errors) = carry.extract(&Context::new(), |name| {
///     sent.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
/// });
/// assert!(errors.is_empty());
/// assert_eq!(server.value(&TENANT).map(String::as_str), Some("acme"));
/// assert_eq!(server.value(&PASSWORD), None);
/// ```
#[derive(Clone, Default)]
pub struct Carry {
    entries: Vec<Arc<Entry>>,
}

impl Carry {
    /// A list that carries nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::wire::Carry::new().headers().count(), 0);
    /// ```
    pub fn new() -> Self {
        Carry::default()
    }

    /// Carries [`TRACE_PARENT`](super::TRACE_PARENT) in `traceparent` and
    /// [`BAGGAGE`](super::BAGGAGE) in `baggage`, validated on the way in.
    ///
    /// # Examples
    ///
    /// ```
    /// let headers: Vec<_> = tether::wire::Carry::trace_context().headers().collect();
    /// assert_eq!(headers, ["traceparent", "baggage"]);
    /// ```
    pub fn trace_context() -> Self {
        use super::{BAGGAGE, Baggage, TRACE_PARENT, TraceParent};
        Carry::new()
            .with(&TRACE_PARENT, super::TRACEPARENT_HEADER, ToString::to_string, TraceParent::parse)
            .with(&BAGGAGE, super::BAGGAGE_HEADER, ToString::to_string, Baggage::parse)
    }

    /// Also carries `key`, in the header `header`, written by `encode` and read by `decode`.
    ///
    /// # Panics
    ///
    /// If `header` is not a lowercase HTTP token (HTTP/2 forbids uppercase names), or is already
    /// registered.
    ///
    /// # Examples
    ///
    /// See [`Carry`].
    pub fn with<T, E>(
        self,
        key: &'static Key<T>,
        header: &'static str,
        encode: fn(&T) -> String,
        decode: fn(&str) -> Result<T, E>,
    ) -> Self
    where
        T: Send + Sync + 'static,
        E: Error + Send + Sync + 'static,
    {
        assert!(
            !header.is_empty() && header.bytes().all(is_lowercase_tchar),
            "tether: carried header name {header:?} is not a lowercase token"
        );
        assert!(self.headers().all(|h| h != header), "tether: header {header:?} is carried twice");
        let entry = Entry {
            header,
            inject: Box::new(move |ctx| ctx.value(key).map(encode)),
            extract: Box::new(move |ctx, text| {
                decode(text).map(|v| ctx.with_value(key, v)).map_err(|e| Arc::new(e) as SharedError)
            }),
        };
        let mut entries = self.entries;
        entries.push(Arc::new(entry));
        Carry { entries }
    }

    /// The header names this list writes and reads, in registration order.
    ///
    /// # Examples
    ///
    /// See [`Carry::trace_context`].
    pub fn headers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.header)
    }

    /// Calls `put(header, value)` for every registered key bound in `ctx` (invariant 1).
    ///
    /// # Examples
    ///
    /// See [`Carry`].
    pub fn inject(&self, ctx: &Context, mut put: impl FnMut(&'static str, String)) {
        for entry in self.entries.iter() {
            if let Some(value) = (entry.inject)(ctx) {
                put(entry.header, value);
            }
        }
    }

    /// Reads every registered header with `get` and returns `ctx` with the accepted values bound,
    /// and an error for each rejected one (invariant 2). `ctx` comes back unchanged (the same
    /// node) when no header is present.
    ///
    /// # Examples
    ///
    /// See [`Carry`].
    pub fn extract<'h>(
        &self,
        ctx: &Context,
        mut get: impl FnMut(&'static str) -> Option<&'h [u8]>,
    ) -> (Context, Vec<CarryError>) {
        let mut ctx = ctx.clone();
        let mut errors = Vec::new();
        for entry in self.entries.iter() {
            let Some(raw) = get(entry.header) else { continue };
            let decoded = std::str::from_utf8(raw)
                .map_err(|_| Arc::new(NotUtf8) as SharedError)
                .and_then(|text| (entry.extract)(&ctx, text));
            match decoded {
                Ok(next) => ctx = next,
                Err(source) => errors.push(CarryError { header: entry.header, source }),
            }
        }
        (ctx, errors)
    }
}

/// A `tchar` (RFC 7230) that is not an uppercase letter.
fn is_lowercase_tchar(b: u8) -> bool {
    (b.is_ascii_alphanumeric() && !b.is_ascii_uppercase()) || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl fmt::Debug for Carry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carry").field("headers", &self.headers().collect::<Vec<_>>()).finish()
    }
}
