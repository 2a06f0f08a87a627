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
//! 4. A binding is a [`Bound`]: the pointer `Arc::into_raw` gives for its [`Value`], so its address
//!    is the value's own, with bit 0 clear when the binding was written through a typed API for a
//!    `Key<T>` (the value is a `T`, by invariants 1 and 2) and set otherwise. A typed read of a
//!    binding whose bit is clear casts the pointer as it is (no mask); any other read downcasts. The cast skips the vtable (a load for the `Arc`'s data
//!    offset and a call for the `TypeId`): two of the five dependent steps of a read at depth one.

pub(crate) mod map;

use map::Map;
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
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
#[derive(Clone, Copy, Debug)]
pub struct KeyId {
    addr: usize,
    inheritance: Inheritance,
}

// By address alone: a key's address determines its inheritance (invariant 1), so comparing it
// too would only cost a lookup one more compare.
impl PartialEq for KeyId {
    fn eq(&self, other: &KeyId) -> bool {
        self.addr == other.addr
    }
}

impl Eq for KeyId {}

impl std::hash::Hash for KeyId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
    }
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

/// One binding (invariant 4): a strong count of a [`Value`]'s `Arc`, held as its data pointer,
/// bit 0 set when the value is *not* known to be the key's type (the rarer case, so that a typed
/// read uses the pointer unmasked).
pub(crate) struct Bound(NonNull<dyn Any + Send + Sync>);

/// Bit 0 of a [`Bound`]'s address: the binding is untyped (invariant 4).
const UNTYPED: usize = 1;

// SAFETY: a `Bound` is an `Arc<dyn Any + Send + Sync>` in raw form (it owns one strong count and
// only ever hands out shared references to the value), and such an `Arc` is `Send` and `Sync`.
unsafe impl Send for Bound {}
// SAFETY: as for `Send` above.
unsafe impl Sync for Bound {}

impl Bound {
    /// A binding for `key` that a typed read may cast (invariant 4): `value` is a `T` and `key` a
    /// `Key<T>`, the one static at its address (invariant 1).
    pub(crate) fn typed<T: Send + Sync + 'static>(_key: &'static Key<T>, value: Arc<T>) -> Bound {
        Bound::from_value(value as Value, 0)
    }

    /// A binding read only by downcasting: its type is not known to be the key's.
    pub(crate) fn untyped(value: Value) -> Bound {
        Bound::from_value(value, UNTYPED)
    }

    fn from_value(value: Value, tag: usize) -> Bound {
        let raw = Arc::into_raw(value).cast_mut();
        // An `Arc`'s data sits after its two counters, so its address is aligned to at least a
        // `usize` and bit 0 is free for the tag.
        debug_assert_eq!(raw.addr() & UNTYPED, 0);
        // SAFETY: `Arc::into_raw` never returns null, and setting a bit that was clear keeps it so.
        Bound(unsafe { NonNull::new_unchecked(raw.map_addr(|addr| addr | tag)) })
    }

    /// The pointer `Arc::into_raw` returned, without the tag.
    fn raw(&self) -> *const (dyn Any + Send + Sync) {
        self.0.as_ptr().map_addr(|addr| addr & !UNTYPED)
    }

    /// The value, type-erased.
    pub(crate) fn get(&self) -> &(dyn Any + Send + Sync) {
        // SAFETY: `raw` is the pointer of an `Arc` whose strong count `self` owns, so the value
        // lives at least as long as `self`.
        unsafe { &*self.raw() }
    }

    /// The value as a `T`, if it is one; `key` is the key it was bound to.
    #[inline]
    fn get_as<T: 'static>(&self, _key: &'static Key<T>) -> Option<&T> {
        if self.0.as_ptr().addr() & UNTYPED == 0 {
            // SAFETY: the tag is clear only in a binding made by `Bound::typed` for a `Key<T>` at
            // this key's address, which is this same `Key<T>` (invariant 1), with an `Arc<T>`
            // whose strong count `self` owns (invariant 4); with the tag clear, the pointer is
            // `Arc::into_raw`'s own, unmasked.
            Some(unsafe { &*self.0.as_ptr().cast_const().cast::<T>() })
        } else {
            self.downcast()
        }
    }

    /// The value as a `T` by its vtable: the untyped case of [`get_as`](Bound::get_as), out of
    /// line so the typed read needs no stack frame.
    #[cold]
    #[inline(never)]
    fn downcast<T: 'static>(&self) -> Option<&T> {
        self.get().downcast_ref::<T>()
    }
}

impl Clone for Bound {
    fn clone(&self) -> Bound {
        // SAFETY: `raw` came from `Arc::into_raw` and `self` owns a strong count, so the `Arc`
        // is alive; the new count is owned by the returned copy, which keeps the same tag.
        unsafe { Arc::increment_strong_count(self.raw()) };
        Bound(self.0)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // SAFETY: gives back the strong count `self` owns, to the `Arc` it came from.
        drop(unsafe { Arc::from_raw(self.raw()) });
    }
}

/// The bindings a context carries (invariant 3).
#[derive(Clone, Default)]
pub(crate) struct Values {
    inherited: Map<KeyId, Bound>,
    local: Map<KeyId, Bound>,
}

impl Values {
    /// The bindings plus `key` bound to `value`, which typed reads will downcast.
    pub(crate) fn with(&self, key: KeyId, value: Value) -> Values {
        self.with_bound(key, Bound::untyped(value))
    }

    /// The bindings plus `key` bound to `bound`.
    pub(crate) fn with_bound(&self, key: KeyId, bound: Bound) -> Values {
        let mut next = self.clone();
        let map = match key.inheritance {
            Inheritance::Inherited => &mut next.inherited,
            Inheritance::NotInherited => &mut next.local,
        };
        *map = map.insert(key.hash(), key, bound);
        next
    }

    /// The bindings a spawned child starts with: the inherited ones only (invariant 3).
    pub(crate) fn for_spawn(&self) -> Values {
        Values { inherited: self.inherited.clone(), local: Map::default() }
    }

    #[inline]
    fn bound(&self, key: KeyId) -> Option<&Bound> {
        let map = match key.inheritance {
            Inheritance::Inherited => &self.inherited,
            Inheritance::NotInherited => &self.local,
        };
        map.get(key.hash(), key)
    }

    /// The value bound to `key`.
    #[inline]
    pub(crate) fn get(&self, key: KeyId) -> Option<&(dyn Any + Send + Sync)> {
        self.bound(key).map(Bound::get)
    }

    /// The value bound to `key`, if it is a `T` (invariant 4).
    #[inline]
    pub(crate) fn get_typed<T: 'static>(&self, key: &'static Key<T>) -> Option<&T> {
        self.bound(key.id())?.get_as(key)
    }
}
