//! A persistent hash array mapped trie (HAMT): the value bindings of a context.
//!
//! Binding a value copies one path of at most [`MAX_DEPTH`] small nodes and shares the rest, so a
//! context made by a million bindings costs O(n log n) memory in all, and a lookup visits at most
//! `log32(bindings / BUCKET_MAX)` branches and one bucket (the root and a bucket for a hundred
//! bindings) however many derivations the context has: Go's `Value` walks the whole chain
//! instead. A key that is not bound is usually refused by a filter in the root (invariant 6), so a
//! miss costs about the same at one binding and at a hundred; a bound key passes the filter and is
//! found with one probe of the root slot (alone there, or in a bucket up to a few hundred
//! bindings).
//!
//! # Invariants
//! 1. A `Branch`'s first slot is `Empty`, followed by one slot per set bit of `bitmap`, in bit
//!    order; `offsets[i]` is the byte offset in `slots` of the slot for bit `i`, or 0 (the `Empty`
//!    slot) when bit `i` is clear. A lookup reads its slot at that offset without a bounds check
//!    and without testing the bitmap: `with_bitmap`, where every branch is made, asserts it.
//! 2. An `Entry` or `Bucket` in a branch at depth `d` holds keys whose hash has the branch's
//!    bits at depth `d`. A `Bucket` holds two or more distinct keys, in insertion order: at most
//!    [`BUCKET_MAX`], unless their full hashes are all equal (then nothing could tell them apart
//!    one level down). A bucket is scanned rather than branched on: with a hundred bindings most
//!    slots of the root hold two to four keys, and one more load and a short scan cost less
//!    than a branch below (its bitmap, position table and slots).
//! 3. Nodes are immutable once shared; `insert` builds new nodes along one path.
//! 4. Recursion in `insert` is bounded by the hash width (`MAX_DEPTH` levels), not by user input;
//!    dropping a map is likewise bounded by `MAX_DEPTH` nested levels.
//! 5. A `Sub` slot in a branch at depth `d` carries a filter: bit `(hash >> 5(d+1)) & 63` is set
//!    for the hash of every key below it. A lookup whose bit is clear stops there, without
//!    visiting the branch below. A `Sub` is made only when a bucket overflows (invariant 2).
//! 6. The root carries a 512-bit filter of every key in the map (bit `hash >> 55`, bits the trie
//!    does not use in its first eleven levels). A lookup tests the filter first, then reads its
//!    root slot: the filter refuses a key whose bit is clear at the same cost however many keys
//!    the map holds (a miss then reads no slot at all): with `n` keys a
//!    missing key is refused there with probability `(511/512)^n` (98% at n = 10, 82% at n =
//!    100); the rest are refused by invariant 5, or at the end of their path (an entry or a
//!    bucket's scan).

use std::sync::Arc;

const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;
/// Levels needed to consume a 64-bit hash, five bits at a time.
const MAX_DEPTH: u32 = 64_u32.div_ceil(BITS);
/// The most keys with distinct hashes a bucket holds before it is split into a branch
/// (invariant 2): with `n` keys spread over a root's 32 slots, a slot holds more than eight with
/// probability under 1% at n = 100.
const BUCKET_MAX: usize = 8;

/// `repr(u8)`: an explicit tag, one byte compare per match. Without it the tag hides in a niche
/// of the key (for `KeyId`, its `Inheritance`), and decoding it costs a lookup eight instructions.
#[derive(Clone)]
#[repr(u8)]
enum Slot<K, V> {
    Entry(u64, K, V),
    /// No key: a branch's first slot, where a lookup of every clear bit lands (invariant 1).
    Empty,
    /// Two or more keys, each with its hash (invariant 2).
    Bucket(Arc<[(u64, K, V)]>),
    /// A branch one level down, and the filter of the hashes below it (invariant 5).
    Sub(u64, Arc<Branch<K, V>>),
}

#[derive(Clone)]
struct Branch<K, V> {
    bitmap: u32,
    /// `offsets[i]` is the byte offset in `slots` of the slot for bit `i` (one plus the number of
    /// set bits of `bitmap` below `i`, times a slot's size), or 0, the `Empty` slot, when bit `i`
    /// is clear (invariant 1). A lookup pays one load for it instead of a population count (which
    /// baseline x86-64 lacks as an instruction), a test of the bitmap and a multiplication.
    offsets: [u16; 32],
    slots: Vec<Slot<K, V>>,
}

impl<K, V> Branch<K, V> {
    fn empty() -> Branch<K, V> {
        Branch { bitmap: 0, offsets: [0; 32], slots: vec![Slot::Empty] }
    }

    /// The branch with `slots` (the `Empty` slot, then one per set bit of `bitmap`).
    fn with_bitmap(bitmap: u32, slots: Vec<Slot<K, V>>) -> Branch<K, V> {
        // Invariant 1, which `Branch::slot` relies on for an unchecked read.
        assert_eq!(slots.len(), 1 + bitmap.count_ones() as usize, "tether: a branch needs one slot per bit");
        assert!(matches!(slots[0], Slot::Empty), "tether: a branch's first slot is empty");
        let size = std::mem::size_of::<Slot<K, V>>();
        assert!(33 * size <= usize::from(u16::MAX), "tether: a branch's offsets fit in 16 bits");
        let mut offsets = [0u16; 32];
        let mut below = 1;
        for (i, offset) in offsets.iter_mut().enumerate() {
            if (bitmap >> i) & 1 == 1 {
                *offset = (below * size) as u16;
                below += 1;
            }
        }
        Branch { bitmap, offsets, slots }
    }

    /// The slot for bit `i`: the `Empty` slot when the bit is clear.
    #[inline]
    fn slot(&self, i: u32) -> &Slot<K, V> {
        let offset = usize::from(self.offsets[i as usize & 31]);
        // SAFETY: `offset` is 0 or `(1 + r) * size_of::<Slot>()` where `r` is the number of set
        // bits of the bitmap below a set bit `i`, so `1 + r < 1 + count_ones() == slots.len()`
        // (invariant 1; asserted in `with_bitmap`, where every branch is made, and kept by
        // `insert_into`, which replaces a slot in place). The offset is therefore that of an
        // initialised slot of the vector, and the pointer carries the provenance of the whole
        // buffer, borrowed shared for `self`'s lifetime.
        unsafe { &*self.slots.as_ptr().cast::<u8>().add(offset).cast::<Slot<K, V>>() }
    }
}

/// The top of a map: the filter of every key in it (invariant 6) and the first branch.
struct Root<K, V> {
    filter: [u64; 8],
    branch: Branch<K, V>,
}

/// The bit of `hash` in a root's filter (invariant 6): its word and the mask within it.
fn root_bit(hash: u64) -> (usize, u64) {
    let bit = hash >> 55;
    ((bit >> 6) as usize, 1 << (bit & 63))
}

impl<K: MapKey, V> Root<K, V> {
    /// Whether the root filter lets a key with `hash` through (invariant 6): false only when no
    /// key of the map has its bit.
    #[inline]
    fn may_hold(&self, hash: u64) -> bool {
        let (word, mask) = root_bit(hash);
        self.filter[word] & mask != 0
    }

    /// The value bound to `key` when its root slot, `slot`, is empty (a key the root filter let
    /// through by a false positive) or holds a branch (past a few hundred bindings): the path
    /// down, with each `Sub` slot's filter (invariant 5). Out of line, as both cases are rare, so
    /// that the filter test and the probe of the root stay small enough to inline into every read.
    #[cold]
    #[inline(never)]
    fn find_below<'a, P: Probe<K>>(&'a self, mut slot: &'a Slot<K, V>, hash: u64, key: P) -> Option<&'a V> {
        let mut shift = 0;
        loop {
            match slot {
                Slot::Entry(_, k, v) => return key.is(k).then_some(v),
                Slot::Empty => return None,
                Slot::Bucket(entries) => return find_in(entries, hash, key),
                Slot::Sub(filter, sub) => {
                    if filter & filter_bit(hash, shift) == 0 {
                        return None;
                    }
                    shift += BITS;
                    slot = sub.slot(index(hash, shift));
                }
            }
        }
    }
}

/// The value of `key` in a bucket (invariant 2): keys alone are compared when that is as cheap as
/// comparing hashes, else hashes first.
#[inline]
fn find_in<K: MapKey, V, P: Probe<K>>(entries: &[(u64, K, V)], hash: u64, key: P) -> Option<&V> {
    let matches = |(h, k, _): &&(u64, K, V)| (K::CHEAP_EQ || *h == hash) && key.is(k);
    entries.iter().find(matches).map(|(.., v)| v)
}

/// A key of a [`Map`].
pub(crate) trait MapKey: Clone + Eq {
    /// Whether `==` costs no more than comparing two hashes (an address, an integer): a bucket's
    /// scan then compares keys alone, else (a string) it compares hashes first.
    const CHEAP_EQ: bool;
}

impl MapKey for crate::value::KeyId {
    const CHEAP_EQ: bool = true;
}

impl MapKey for Arc<str> {
    const CHEAP_EQ: bool = false;
}

/// What a lookup is given to find a key `K` by: the key itself, or a borrowed form of it (a
/// `&str` for an `Arc<str>`), passed by value so that a lookup that leaves the inlined probe of
/// the root does not first spill it to memory.
pub(crate) trait Probe<K>: Copy {
    /// Whether `key` is the key looked for.
    fn is(self, key: &K) -> bool;
}

impl<K: MapKey + Copy> Probe<K> for K {
    #[inline]
    fn is(self, key: &K) -> bool {
        self == *key
    }
}

impl Probe<Arc<str>> for &str {
    #[inline]
    fn is(self, key: &Arc<str>) -> bool {
        self == &**key
    }
}

#[cfg(test)]
impl MapKey for u32 {
    const CHEAP_EQ: bool = true;
}

#[cfg(test)]
impl MapKey for u64 {
    const CHEAP_EQ: bool = false; // the tests' keys exercise the hash-first scan
}

/// An immutable map from `K` to `V` with cheap clones and path-copying inserts.
pub(crate) struct Map<K, V> {
    root: Option<Arc<Root<K, V>>>,
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        Map { root: self.root.clone() }
    }
}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Map { root: None }
    }
}

fn index(hash: u64, shift: u32) -> u32 {
    ((hash >> shift) & MASK) as u32
}

/// The bit of `hash` in the filter of a `Sub` slot of a branch at `shift` (invariant 5): six bits
/// of the hash that the branch below starts to consume.
fn filter_bit(hash: u64, shift: u32) -> u64 {
    1 << (hash.wrapping_shr(shift + BITS) & 63)
}

impl<K: MapKey, V: Clone> Map<K, V> {
    /// The value bound to `key` (whose hash is `hash`), looked up by any borrowed form of the key
    /// (a `&str` for `Arc<str>` keys), as `HashMap::get` does.
    #[inline]
    pub(crate) fn get<P: Probe<K>>(&self, hash: u64, key: P) -> Option<&V> {
        let root = self.root.as_deref()?;
        if !root.may_hold(hash) {
            return None;
        }
        match root.branch.slot(index(hash, 0)) {
            // Equal keys have equal hashes: the key alone decides (invariant 6).
            Slot::Entry(_, k, v) => key.is(k).then_some(v),
            Slot::Bucket(entries) => find_in(entries, hash, key),
            // An empty slot past the filter (a false positive) or a branch: both are rare.
            rare => root.find_below(rare, hash, key),
        }
    }

    /// A new map with `key` bound to `value`, shadowing any earlier binding of `key`.
    pub(crate) fn insert(&self, hash: u64, key: K, value: V) -> Map<K, V> {
        let (word, mask) = root_bit(hash);
        let root = match &self.root {
            Some(root) => {
                let mut filter = root.filter;
                filter[word] |= mask;
                Root { filter, branch: insert_into(&root.branch, 0, hash, key, value) }
            }
            None => {
                let mut filter = [0; 8];
                filter[word] = mask;
                let bit = 1 << index(hash, 0);
                Root {
                    filter,
                    branch: Branch::with_bitmap(bit, vec![Slot::Empty, Slot::Entry(hash, key, value)]),
                }
            }
        };
        Map { root: Some(Arc::new(root)) }
    }
}

impl<K: MapKey, V: Clone> Branch<K, V> {
    /// A copy of `self` with `slot` added at the (empty) position of `hash` at `shift`.
    fn with_new(&self, shift: u32, hash: u64, slot: Slot<K, V>) -> Branch<K, V> {
        let bit = 1u32 << index(hash, shift);
        let pos = 1 + (self.bitmap & (bit - 1)).count_ones() as usize;
        let mut slots = Vec::with_capacity(self.slots.len() + 1);
        slots.extend_from_slice(&self.slots[..pos]);
        slots.push(slot);
        slots.extend_from_slice(&self.slots[pos..]);
        Branch::with_bitmap(self.bitmap | bit, slots)
    }
}

fn insert_into<K: MapKey, V: Clone>(
    branch: &Branch<K, V>,
    shift: u32,
    hash: u64,
    key: K,
    value: V,
) -> Branch<K, V> {
    let bit = 1u32 << index(hash, shift);
    if branch.bitmap & bit == 0 {
        return branch.with_new(shift, hash, Slot::Entry(hash, key, value));
    }
    let pos = 1 + (branch.bitmap & (bit - 1)).count_ones() as usize;
    let replacement = match &branch.slots[pos] {
        Slot::Entry(_, k, _) if *k == key => Slot::Entry(hash, key, value),
        Slot::Entry(h, k, v) => Slot::Bucket(Arc::new([(*h, k.clone(), v.clone()), (hash, key, value)])),
        Slot::Bucket(entries) => into_bucket(entries, shift, hash, key, value),
        Slot::Empty => unreachable!("tether: the slot of a set bit is never the empty one (invariant 1)"),
        Slot::Sub(filter, sub) => Slot::Sub(
            filter | filter_bit(hash, shift),
            Arc::new(insert_into(sub, shift + BITS, hash, key, value)),
        ),
    };
    let mut copy = branch.clone();
    copy.slots[pos] = replacement;
    copy
}

/// The slot that replaces a bucket of a branch at `shift` once `key` is bound in it: the bucket
/// with `key`'s entry replaced or added, or, when that would overflow it (invariant 2), a branch
/// one level down holding all of them.
fn into_bucket<K: MapKey, V: Clone>(
    entries: &[(u64, K, V)],
    shift: u32,
    hash: u64,
    key: K,
    value: V,
) -> Slot<K, V> {
    let mut entries: Vec<(u64, K, V)> = entries.iter().filter(|(_, k, _)| *k != key).cloned().collect();
    entries.push((hash, key, value));
    if entries.len() <= BUCKET_MAX || entries.iter().all(|(h, ..)| *h == hash) {
        return Slot::Bucket(entries.into());
    }
    // Distinct hashes agree on every bit consumed so far, so they differ in a later group:
    // the level below exists (invariant 4).
    debug_assert!(shift + BITS < MAX_DEPTH * BITS, "distinct hashes differ within 64 bits");
    let mut filter = 0;
    let mut below = Branch::empty();
    for (h, k, v) in entries {
        filter |= filter_bit(h, shift);
        below = insert_into(&below, shift + BITS, h, k, v);
    }
    Slot::Sub(filter, Arc::new(below))
}

#[cfg(test)]
mod tests {
    use super::{BUCKET_MAX, Map};

    #[test]
    fn inner_bindings_shadow_outer_ones_and_old_maps_are_unchanged() {
        let a: Map<u32, &str> = Map::default().insert(1, 1, "one");
        let b = a.insert(1, 1, "uno");
        assert_eq!(a.get(1, 1), Some(&"one"));
        assert_eq!(b.get(1, 1), Some(&"uno"));
        assert_eq!(b.get(2, 2), None);
    }

    #[test]
    fn every_clear_bit_of_a_branch_leads_to_its_empty_slot() {
        let hash = |k: u64| k * 3; // root slots 0, 3, 6, ...: most bits stay clear
        let mut m: Map<u64, u64> = Map::default();
        for k in 0..8 {
            m = m.insert(hash(k), k, k);
        }
        let branch = &m.root.as_ref().unwrap().branch;
        assert!(matches!(branch.slots[0], super::Slot::Empty));
        for i in 0..32u32 {
            let set = (branch.bitmap >> i) & 1 == 1;
            assert_eq!(branch.offsets[i as usize] == 0, !set, "bit {i}");
            assert_eq!(matches!(branch.slot(i), super::Slot::Empty), !set, "bit {i}");
        }
        for k in 0..8 {
            assert_eq!(m.get(hash(k), k), Some(&k));
        }
        for probe in [1, 2, 4, 5, 31] {
            assert_eq!(m.get(probe, 1000 + probe), None, "an empty root slot answers none");
        }
    }

    #[test]
    fn keys_with_equal_hashes_are_told_apart_by_equality() {
        let m: Map<u32, u32> = Map::default().insert(7, 1, 10).insert(7, 2, 20).insert(7, 1, 11);
        assert_eq!(m.get(7, 1), Some(&11));
        assert_eq!(m.get(7, 2), Some(&20));
        assert_eq!(m.get(7, 3), None);
    }

    #[test]
    fn a_bucket_that_overflows_becomes_a_branch_and_loses_no_key() {
        // Hashes that share the root slot (low five bits) but differ above: the first
        // BUCKET_MAX fill one bucket, the next splits it into a branch one level down.
        let hash = |k: u64| (k << 5) | 0b10101;
        let mut m: Map<u64, u64> = Map::default();
        for k in 0..=BUCKET_MAX as u64 * 3 {
            m = m.insert(hash(k), k, k + 100);
            for seen in 0..=k {
                assert_eq!(m.get(hash(seen), seen), Some(&(seen + 100)), "key {seen} after binding {k}");
            }
            assert_eq!(m.get(hash(k + 1), k + 1), None);
        }
        match &m.root.as_ref().unwrap().branch.slots[..] {
            [super::Slot::Empty, super::Slot::Sub(..)] => {}
            _ => panic!("an overflowing bucket is split into a branch"),
        }
    }

    #[test]
    fn rebinding_a_key_in_a_bucket_replaces_it() {
        let mut m: Map<u64, u64> = Map::default();
        for k in 0..4 {
            m = m.insert(7 + (k << 5), k, k);
        }
        let rebound = m.insert(7 + (2 << 5), 2, 20);
        assert_eq!(rebound.get(7 + (2 << 5), 2), Some(&20));
        assert_eq!(m.get(7 + (2 << 5), 2), Some(&2), "the old map is unchanged");
        match &rebound.root.as_ref().unwrap().branch.slots[..] {
            [super::Slot::Empty, super::Slot::Bucket(entries)] => {
                assert_eq!(entries.len(), 4, "replaced, not added")
            }
            _ => panic!("four keys in one root slot are one bucket"),
        }
    }

    #[test]
    fn more_than_a_bucket_of_keys_with_one_hash_stay_in_one_bucket() {
        let mut m: Map<u64, u64> = Map::default();
        for k in 0..BUCKET_MAX as u64 * 2 {
            m = m.insert(42, k, k * 3);
        }
        for k in 0..BUCKET_MAX as u64 * 2 {
            assert_eq!(m.get(42, k), Some(&(k * 3)));
        }
        match &m.root.as_ref().unwrap().branch.slots[..] {
            [super::Slot::Empty, super::Slot::Bucket(entries)] => assert_eq!(entries.len(), BUCKET_MAX * 2),
            _ => panic!("keys with one full hash cannot be split"),
        }
    }

    #[test]
    fn ten_thousand_bindings_are_all_found() {
        let mut m: Map<u64, u64> = Map::default();
        let hash = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for k in 0..10_000 {
            m = m.insert(hash(k), k, k * 2);
        }
        for k in 0..10_000 {
            assert_eq!(m.get(hash(k), k), Some(&(k * 2)));
        }
        assert_eq!(m.get(hash(10_001), 10_001), None);
    }

    #[test]
    fn hashes_that_agree_on_their_low_bits_split_deep_in_the_trie() {
        let m: Map<u64, u64> = Map::default().insert(1 << 62, 1, 1).insert(1 << 63, 2, 2).insert(0, 3, 3);
        assert_eq!(m.get(1 << 62, 1), Some(&1));
        assert_eq!(m.get(1 << 63, 2), Some(&2));
        assert_eq!(m.get(0, 3), Some(&3));
    }

    #[test]
    fn filters_only_refuse_keys_that_are_absent() {
        // Bound keys whose hashes agree with the probes on the root filter's bits (55..64) and on
        // the root slot and sub filter's bits (0..11): the filters pass the probes, so the lookup
        // must still go to the end of the path and answer by the keys themselves.
        let same_filters = |k: u64| (0b1_0110_1001 << 55) | (k << 11) | 0b101_1001_0011;
        let mut m: Map<u64, u64> = Map::default();
        for k in 0..100 {
            m = m.insert(same_filters(k), k, k + 1);
        }
        for k in 0..100 {
            assert_eq!(m.get(same_filters(k), k), Some(&(k + 1)));
        }
        for k in 100..1_000 {
            assert_eq!(m.get(same_filters(k), k), None);
        }
        // And keys that differ from every bound key in the root filter's bits are absent.
        assert_eq!(m.get(0, 7), None);
    }
}
