//! Go's `any` keys and values: typed [`Key<T>`](crate::Key)s and string keys, and the persistent
//! map that holds the string-keyed bindings.
//!
//! Go compares keys with `==` on interfaces: a pointer or struct key by identity, a string key by
//! its bytes. Here a typed key is compared by its [`KeyId`] (the address of its `static`) and a
//! string key by its contents, so `with_value(ctx, "user", ..)` ports directly.
//!
//! # Invariants
//! 1. Typed bindings live in the native context's values (so native code reads them through
//!    [`Valuer`](crate::Valuer) at no cost); string bindings live in [`StrMap`]. Both hold only the
//!    bindings made since the nearest custom ancestor; older ones are that ancestor's to answer.
//! 2. A Go `nil` value is stored, not omitted: [`Nil`] for a typed key, `None` for a string key.
//!    A lookup that finds it answers "no value" and stops, hiding outer bindings (Go's
//!    `WithValue(ctx, k, nil)`).
//! 3. Lookup cost is that of the persistent maps (`log32` of the number of keys bound), never the
//!    depth of the chain.

use crate::value::map::Map;
use crate::value::{Key, KeyId};
use std::any::Any;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// A bound value, type-erased.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

/// How [`Display`](fmt::Display) shows a bound value: Go's `stringify` (a string as itself,
/// anything else by its type name).
pub(crate) type Describe = fn(&(dyn Any + Send + Sync), &mut fmt::Formatter<'_>) -> fmt::Result;

/// The string-keyed bindings; `None` is a Go `nil` value (invariant 2).
pub(crate) type StrMap = Map<Arc<str>, Option<Value>>;

/// The marker bound to a typed key by Go's `WithValue(ctx, key, nil)` (invariant 2): no typed read
/// can downcast it, so native code sees the key as unbound too.
pub(crate) struct Nil;

/// A key as Go's `Value(key any)` receives it: a typed [`Key<T>`](crate::Key) or a string.
///
/// Typed keys compare by identity, string keys by contents, as Go compares a pointer key and a
/// string key.
///
/// # Examples
///
/// ```
/// use tether::Key;
/// use tether::go::AnyKey;
///
/// static USER: Key<String> = Key::new("user");
/// assert_eq!(AnyKey::from(&USER), AnyKey::from(&USER));
/// assert_eq!(AnyKey::from("user"), AnyKey::from(String::from("user").as_str()));
/// assert_ne!(AnyKey::from(&USER), AnyKey::from("user"));
/// assert_eq!(AnyKey::from("user").as_str(), Some("user"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnyKey<'a>(Repr<'a>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Repr<'a> {
    Typed(KeyId),
    Str(&'a str),
}

impl<'a> AnyKey<'a> {
    /// The identity of a typed key, `None` for a string key.
    ///
    /// # Examples
    ///
    /// ```
    /// static K: tether::Key<u8> = tether::Key::new("k");
    /// assert_eq!(tether::go::AnyKey::from(&K).key_id(), Some(K.id()));
    /// ```
    pub fn key_id(&self) -> Option<KeyId> {
        match self.0 {
            Repr::Typed(id) => Some(id),
            Repr::Str(_) => None,
        }
    }

    /// The string of a string key, `None` for a typed key.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::go::AnyKey::from("k").as_str(), Some("k"));
    /// ```
    pub fn as_str(&self) -> Option<&'a str> {
        match self.0 {
            Repr::Str(s) => Some(s),
            Repr::Typed(_) => None,
        }
    }

    pub(crate) fn typed(id: KeyId) -> Self {
        AnyKey(Repr::Typed(id))
    }
}

impl<'a, T: 'static> From<&'static Key<T>> for AnyKey<'a> {
    fn from(key: &'static Key<T>) -> Self {
        AnyKey(Repr::Typed(key.id()))
    }
}

impl<'a> From<&'a str> for AnyKey<'a> {
    fn from(key: &'a str) -> Self {
        AnyKey(Repr::Str(key))
    }
}

impl<'a> From<&'a String> for AnyKey<'a> {
    fn from(key: &'a String) -> Self {
        AnyKey(Repr::Str(key))
    }
}

/// A key as stored by a binding.
#[derive(Clone, Debug)]
pub(crate) enum OwnedKey {
    /// A typed key: its identity and its name (for `Display`).
    Typed(KeyId, &'static str),
    Str(Arc<str>),
}

impl fmt::Display for OwnedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnedKey::Typed(_, name) => f.write_str(name),
            OwnedKey::Str(s) => f.write_str(s),
        }
    }
}

/// A key [`with_value`](super::with_value) accepts for a value of type `V`: a `&'static Key<V>`
/// (typed: the value must be a `V`), or a string (`&str`, `String`, `Arc<str>`) for any `V`.
///
/// Sealed: the adapter needs to know how to compare every key.
///
/// # Examples
///
/// ```
/// use tether::{go, Key};
/// static ATTEMPT: Key<u32> = Key::new("attempt");
/// let ctx = go::with_value(&go::background(), &ATTEMPT, 3);
/// let ctx = go::with_value(&ctx, "user", "ada");
/// assert_eq!(ctx.get(&ATTEMPT), Some(&3));
/// assert_eq!(ctx.value("user").and_then(|v| v.downcast_ref::<&str>()), Some(&"ada"));
/// ```
pub trait ValueKey<V>: sealed::Sealed {}

/// A key [`with_nil_value`](super::with_nil_value) accepts: any `&'static Key<T>` or string.
///
/// # Examples
///
/// ```
/// use tether::{go, Key};
/// static ATTEMPT: Key<u32> = Key::new("attempt");
/// let ctx = go::with_value(&go::background(), &ATTEMPT, 3);
/// assert_eq!(go::with_nil_value(&ctx, &ATTEMPT).get(&ATTEMPT), None);
/// ```
pub trait NilKey: sealed::Sealed {}

#[allow(unreachable_pub)] // the sealed-trait pattern: public in a private module
mod sealed {
    /// Converts a key argument into a stored key.
    pub trait Sealed {
        /// The stored form.
        fn into_owned(self) -> Owned;
    }

    /// A stored key, opaque outside the crate.
    #[derive(Debug)]
    pub struct Owned(pub(crate) super::OwnedKey);
}

impl<T: Send + Sync + 'static> ValueKey<T> for &'static Key<T> {}
impl<T: 'static> NilKey for &'static Key<T> {}
impl<T: 'static> sealed::Sealed for &'static Key<T> {
    fn into_owned(self) -> sealed::Owned {
        sealed::Owned(OwnedKey::Typed(self.id(), self.name()))
    }
}

macro_rules! string_keys {
    ($($t:ty),*) => {$(
        impl<V> ValueKey<V> for $t {}
        impl NilKey for $t {}
        impl sealed::Sealed for $t {
            fn into_owned(self) -> sealed::Owned {
                sealed::Owned(OwnedKey::Str(Arc::from(self)))
            }
        }
    )*};
}
string_keys!(&str, String, Arc<str>);

pub(crate) use sealed::Sealed;

/// The hash under which a string key is stored. Deterministic (SipHash with fixed keys): the map
/// is private, so flooding it would only slow the flooder's own lookups.
pub(crate) fn str_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Go's `stringify` for a value of type `V`: strings print as themselves, anything else as its type
/// name (Rust cannot ask at run time whether a type implements `Display`).
pub(crate) fn describe<V: 'static>(
    value: &(dyn Any + Send + Sync),
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    if let Some(s) = value.downcast_ref::<String>() {
        f.write_str(s)
    } else if let Some(s) = value.downcast_ref::<&'static str>() {
        f.write_str(s)
    } else if let Some(s) = value.downcast_ref::<Arc<str>>() {
        f.write_str(s)
    } else {
        f.write_str(std::any::type_name::<V>())
    }
}
