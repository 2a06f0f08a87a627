//! Typed scoped values: [`Key<T>`], the [`Valuer`] trait, and the bindings a context carries.
//!
//! A key is a `static` with a name for debugging; it is compared by its address, never by its
//! name, so two keys named alike never collide (in Go, two packages that use the same string as a
//! key do). Its type parameter makes every read typed: no `any` and no type assertion.
//!
//! # Invariants
//! 1. A key's identity is the address of its `static`. `Key` holds an atomic, which makes a `const`
//!    key's `&KEY` non-promotable, so the `&'static Key<T>` every API takes can only come from a
//!    `static` (or a leak): each key has exactly one address.
//! 2. The value bound to a key is always of the key's type `T` (the typed API is the only writer
//!    for static keys), so the downcast in a typed read never fails.
//! 3. Each context carries two persistent maps: bindings that spawned children inherit and bindings
//!    that they do not (per key, [`Inheritance`]). Deriving a context shares both maps; spawning a
//!    child keeps only the first. Lookup cost depends on the number of distinct keys bound (log32
//!    of it), never on the number of derivations.

pub(crate) mod map;

use map::Map;
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;

/// A bound value, type-erased.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

/// Whether children spawned in a scope see a key's binding.
///
/// Derived contexts (`child()`, `with_deadline()`, ...) always see every binding of their parent;
/// inheritance only decides what crosses a *spawn*, into a new thread or task.
///
/// # Examples
///
/// ```
/// use tether::{Inheritance, Key};
/// static TRACE: Key<u64> = Key::new("trace_id");
/// static SCRATCH: Key<Vec<u8>> = Key::not_inherited("scratch");
/// assert_eq!(TRACE.inheritance(), Inheritance::Inherited);
/// assert_eq!(SCRATCH.inheritance(), Inheritance::NotInherited);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inheritance {
    /// Spawned children see the binding (the default).
    Inherited,
    /// Spawned children start with the key unbound (they may bind it themselves); contexts
    /// derived on the same thread still see it.
    NotInherited,
}

/// A typed key for values bound to a context: declare it as a `static`.
///
/// Keys are compared by identity (the address of the `static`), never by name.
///
/// # Examples
///
/// ```
/// use tether::{Context, Key};
///
/// static USER: Key<String> = Key::new("user");
/// static OTHER_USER: Key<String> = Key::new("user"); // same name, different key
///
/// let ctx = Context::background().with_value(&USER, "ada".to_string());
/// assert_eq!(ctx.value(&USER).map(String::as_str), Some("ada"));
/// assert_eq!(ctx.value(&OTHER_USER), None);
/// ```
///
/// A `const` key cannot be used: it has no single address.
///
/// ```compile_fail,E0716
/// use tether::{Context, Key};
/// const USER: Key<String> = Key::new("user");
/// let ctx = Context::background().with_value(&USER, "ada".to_string());
/// ```
pub struct Key<T: 'static> {
    name: &'static str,
    inheritance: Inheritance,
    /// Interior mutability that forbids constant promotion of `&KEY` (invariant 1); never written.
    _pinned: AtomicU8,
    /// Set by [`Key::shown`]: how a dump writes a bound value.
    show: Option<ShowFn>,
    _type: PhantomData<fn() -> T>,
}

/// Writes a bound value for a dump (the `Debug` of a [`Key::shown`] key's type).
pub(crate) type ShowFn = fn(&(dyn Any + Send + Sync)) -> String;

impl<T: 'static> Key<T> {
    /// A key whose bindings spawned children inherit. `name` is for `Debug` output only.
    ///
    /// # Examples
    ///
    /// ```
    /// static REQUEST_ID: tether::Key<u64> = tether::Key::new("request_id");
    /// assert_eq!(REQUEST_ID.name(), "request_id");
    /// ```
    pub const fn new(name: &'static str) -> Self {
        Key {
            name,
            inheritance: Inheritance::Inherited,
            _pinned: AtomicU8::new(0),
            show: None,
            _type: PhantomData,
        }
    }

    /// A key whose bindings spawned children do *not* inherit: they start with the key unbound.
    ///
    /// # Examples
    ///
    /// ```
    /// static BUFFER: tether::Key<Vec<u8>> = tether::Key::not_inherited("buffer");
    /// assert_eq!(BUFFER.inheritance(), tether::Inheritance::NotInherited);
    /// ```
    pub const fn not_inherited(name: &'static str) -> Self {
        Key {
            name,
            inheritance: Inheritance::NotInherited,
            _pinned: AtomicU8::new(0),
            show: None,
            _type: PhantomData,
        }
    }

    /// How a dump writes a value bound to this key, if the key opts in ([`Key::shown`]).
    pub(crate) fn show(&self) -> Option<ShowFn> {
        self.show
    }

    /// The name given at declaration.
    ///
    /// # Examples
    ///
    /// ```
    /// static K: tether::Key<u8> = tether::Key::new("k");
    /// assert_eq!(K.name(), "k");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether spawned children inherit this key's bindings.
    ///
    /// # Examples
    ///
    /// ```
    /// static K: tether::Key<u8> = tether::Key::new("k");
    /// assert_eq!(K.inheritance(), tether::Inheritance::Inherited);
    /// ```
    pub const fn inheritance(&self) -> Inheritance {
        self.inheritance
    }

    /// The key's identity, for [`Valuer::lookup`].
    ///
    /// # Examples
    ///
    /// ```
    /// static A: tether::Key<u8> = tether::Key::new("k");
    /// static B: tether::Key<u8> = tether::Key::new("k");
    /// assert_ne!(A.id(), B.id());
    /// assert_eq!(A.id(), A.id());
    /// ```
    pub fn id(&'static self) -> KeyId {
        KeyId { addr: self as *const Self as usize, inheritance: self.inheritance }
    }

    /// Reads this key's binding from any [`Valuer`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Context, Key};
    /// static K: Key<u32> = Key::new("k");
    /// let ctx = Context::background().with_value(&K, 7);
    /// assert_eq!(K.get_in(&ctx), Some(&7));
    /// let dynamic: &dyn tether::Valuer = &ctx;
    /// assert_eq!(K.get_in(dynamic), Some(&7));
    /// ```
    pub fn get_in<'v, V: Valuer + ?Sized>(&'static self, valuer: &'v V) -> Option<&'v T> {
        valuer.lookup(self.id())?.downcast_ref::<T>()
    }
}

impl<T: fmt::Debug + Send + Sync + 'static> Key<T> {
    /// Opts this key in to showing its values in dumps ([`crate::dump()`]), with their `Debug`.
    /// Without it, a dump shows only the key's name: values may be secrets (tokens, user data).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::{Key, ScopeBuilder};
    /// static TENANT: Key<&str> = Key::new("tenant").shown();
    /// static TOKEN: Key<&str> = Key::new("token");
    ///
    /// ScopeBuilder::new().value(&TENANT, "acme").value(&TOKEN, "s3cret").run(|_| {
    ///     let text = tether::dump().to_string();
    ///     assert!(text.contains(r#"tenant = "acme""#));
    ///     assert!(text.contains("token") && !text.contains("s3cret"));
    /// })
    /// .unwrap();
    /// ```
    pub const fn shown(self) -> Self {
        Key { show: Some(show_value::<T>), ..self }
    }
}

/// A [`ShowFn`] for `T`.
fn show_value<T: fmt::Debug + 'static>(value: &(dyn Any + Send + Sync)) -> String {
    match value.downcast_ref::<T>() {
        Some(value) => format!("{value:?}"),
        None => "<?>".to_owned(), // unreachable: invariant 2
    }
}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("type", &std::any::type_name::<T>())
            .field("inheritance", &self.inheritance)
            .finish()
    }
}

/// The identity of a [`Key`], type-erased: what [`Valuer::lookup`] takes.
///
/// # Examples
///
/// ```
/// static K: tether::Key<u8> = tether::Key::new("k");
/// let id: tether::KeyId = K.id();
/// assert_eq!(id, K.id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId {
    addr: usize,
    inheritance: Inheritance,
}

impl KeyId {
    fn hash(self) -> u64 {
        // Fibonacci hashing spreads aligned addresses over all 64 bits.
        (self.addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }
}

/// Read access to typed values, separate from cancellation ([`crate::Canceller`]).
///
/// Code that only reads request-scoped values asks for a `&dyn Valuer` (or `impl Valuer`) and
/// cannot cancel or wait; the trait is object-safe and open, so a foreign type can serve values.
/// Typed reads go through [`Key::get_in`].
///
/// # Examples
///
/// ```
/// use tether::{Context, Key, Valuer};
///
/// static TENANT: Key<&'static str> = Key::new("tenant");
///
/// fn tenant(values: &dyn Valuer) -> &'static str {
///     TENANT.get_in(values).copied().unwrap_or("none")
/// }
///
/// let ctx = Context::background().with_value(&TENANT, "acme");
/// assert_eq!(tenant(&ctx), "acme");
/// assert_eq!(tenant(&Context::background()), "none");
/// ```
pub trait Valuer {
    /// The value bound to `key`, type-erased; `None` when the key is not bound.
    fn lookup(&self, key: KeyId) -> Option<&(dyn Any + Send + Sync)>;
}

/// The bindings a context carries (invariant 3).
#[derive(Clone, Default)]
pub(crate) struct Values {
    inherited: Map<KeyId, Value>,
    local: Map<KeyId, Value>,
}

impl Values {
    /// The bindings plus `key` bound to `value`.
    pub(crate) fn with(&self, key: KeyId, value: Value) -> Values {
        let mut next = self.clone();
        let map = match key.inheritance {
            Inheritance::Inherited => &mut next.inherited,
            Inheritance::NotInherited => &mut next.local,
        };
        *map = map.insert(key.hash(), key, value);
        next
    }

    /// The bindings a spawned child starts with: the inherited ones only (invariant 3).
    pub(crate) fn for_spawn(&self) -> Values {
        Values { inherited: self.inherited.clone(), local: Map::default() }
    }

    /// The value bound to `key`.
    #[inline]
    pub(crate) fn get(&self, key: KeyId) -> Option<&(dyn Any + Send + Sync)> {
        let map = match key.inheritance {
            Inheritance::Inherited => &self.inherited,
            Inheritance::NotInherited => &self.local,
        };
        map.get(key.hash(), &key).map(|v| &**v)
    }
}
