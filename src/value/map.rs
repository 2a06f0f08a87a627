//! A persistent hash array mapped trie (HAMT): the value bindings of a context.
//!
//! Binding a value copies one path of at most [`MAX_DEPTH`] small nodes and shares the rest, so a
//! context made by a million bindings costs O(n log n) memory in all, and a lookup visits at most
//! `log32(bindings)` nodes (two for a hundred bindings) however many derivations the context has:
//! Go's `Value` walks the whole chain instead. A key that is not bound is usually refused before
//! the trie is entered at all, by a filter in the root (invariant 6), so a miss costs the same at
//! one binding and at a hundred.
//!
//! # Invariants
//! 1. A `Branch` has one slot per set bit of `bitmap`, in bit order.
//! 2. An `Entry` or `Collision` in a branch at depth `d` holds keys whose hash has the branch's
//!    bits at depth `d`; a `Collision` holds two or more keys with the same full hash.
//! 3. Nodes are immutable once shared; `insert` builds new nodes along one path.
//! 4. Recursion in `insert` is bounded by the hash width (`MAX_DEPTH` levels), not by user input;
//!    dropping a map is likewise bounded by `MAX_DEPTH` nested levels.
//! 5. A `Sub` slot in a branch at depth `d` carries a filter: bit `(hash >> 5(d+1)) & 63` is set
//!    for the hash of every key below it. A lookup whose bit is clear stops there, without
//!    visiting the branch below: with a hundred bindings most slots of the root lead to a branch of
//!    two to four keys, so a missing key is usually refused one level earlier than its path.
//! 6. The root carries a 512-bit filter of every key in the map (bit `hash >> 55`, bits the trie
//!    does not use in its first eleven levels). A lookup of a key whose bit is clear returns at
//!    once, at the same cost however many keys the map holds: with `n` keys a missing key is
//!    refused there with probability `(511/512)^n` (98% at n = 10, 82% at n = 100); the rest are
//!    refused by invariant 5 or at the end of their path.

use std::borrow::Borrow;
use std::sync::Arc;

const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;
/// Levels needed to consume a 64-bit hash, five bits at a time.
const MAX_DEPTH: u32 = 64_u32.div_ceil(BITS);

#[derive(Clone)]
enum Slot<K, V> {
    Entry(u64, K, V),
    Collision(u64, Arc<Vec<(K, V)>>),
    /// A branch one level down, and the filter of the hashes below it (invariant 5).
    Sub(u64, Arc<Branch<K, V>>),
}

#[derive(Clone)]
struct Branch<K, V> {
    bitmap: u32,
    /// `positions[i]` is the index in `slots` of the slot for bit `i` (the number of set bits of
    /// `bitmap` below `i`), precomputed so a lookup pays one byte load instead of a population
    /// count (which baseline x86-64 lacks as an instruction).
    positions: [u8; 32],
    slots: Vec<Slot<K, V>>,
}

impl<K, V> Branch<K, V> {
    fn empty() -> Branch<K, V> {
        Branch { bitmap: 0, positions: [0; 32], slots: Vec::new() }
    }

    fn with_bitmap(bitmap: u32, slots: Vec<Slot<K, V>>) -> Branch<K, V> {
        let mut positions = [0u8; 32];
        let mut below = 0u8;
        for (i, p) in positions.iter_mut().enumerate() {
            *p = below;
            below += ((bitmap >> i) & 1) as u8;
        }
        Branch { bitmap, positions, slots }
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

impl<K: Clone + Eq, V: Clone> Map<K, V> {
    /// The value bound to `key` (whose hash is `hash`), looked up by any borrowed form of the key
    /// (a `&str` for `Arc<str>` keys), as `HashMap::get` does.
    #[inline]
    pub(crate) fn get<Q: Eq + ?Sized>(&self, hash: u64, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let root = self.root.as_deref()?;
        let (word, mask) = root_bit(hash);
        if root.filter[word] & mask == 0 {
            return None;
        }
        let mut branch = &root.branch;
        let mut shift = 0;
        loop {
            let i = index(hash, shift);
            if (branch.bitmap >> i) & 1 == 0 {
                return None;
            }
            let pos = branch.positions[i as usize & 31] as usize;
            match &branch.slots[pos] {
                Slot::Entry(h, k, v) => return (*h == hash && k.borrow() == key).then_some(v),
                Slot::Collision(h, entries) => {
                    return if *h == hash {
                        entries.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v)
                    } else {
                        None
                    };
                }
                Slot::Sub(filter, sub) => {
                    if filter & filter_bit(hash, shift) == 0 {
                        return None;
                    }
                    branch = sub;
                    shift += BITS;
                }
            }
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
                Root { filter, branch: Branch::empty().with_new(0, hash, Slot::Entry(hash, key, value)) }
            }
        };
        Map { root: Some(Arc::new(root)) }
    }
}

impl<K: Clone + Eq, V: Clone> Branch<K, V> {
    /// A copy of `self` with `slot` added at the (empty) position of `hash` at `shift`.
    fn with_new(&self, shift: u32, hash: u64, slot: Slot<K, V>) -> Branch<K, V> {
        let bit = 1u32 << index(hash, shift);
        let pos = (self.bitmap & (bit - 1)).count_ones() as usize;
        let mut slots = Vec::with_capacity(self.slots.len() + 1);
        slots.extend_from_slice(&self.slots[..pos]);
        slots.push(slot);
        slots.extend_from_slice(&self.slots[pos..]);
        Branch::with_bitmap(self.bitmap | bit, slots)
    }
}

fn insert_into<K: Clone + Eq, V: Clone>(
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
    let pos = (branch.bitmap & (bit - 1)).count_ones() as usize;
    let replacement = match &branch.slots[pos] {
        Slot::Entry(h, k, _) if *h == hash && *k == key => Slot::Entry(hash, key, value),
        Slot::Entry(h, k, v) if *h == hash => {
            Slot::Collision(hash, Arc::new(vec![(k.clone(), v.clone()), (key, value)]))
        }
        Slot::Collision(h, entries) if *h == hash => {
            let mut entries: Vec<(K, V)> = entries.iter().filter(|(k, _)| *k != key).cloned().collect();
            entries.push((key, value));
            Slot::Collision(hash, Arc::new(entries))
        }
        Slot::Sub(filter, sub) => Slot::Sub(
            filter | filter_bit(hash, shift),
            Arc::new(insert_into(sub, shift + BITS, hash, key, value)),
        ),
        other => {
            // Different hashes share this slot: push both one level down (invariant 2).
            let existing_hash = match other {
                Slot::Entry(h, ..) | Slot::Collision(h, _) => *h,
                Slot::Sub(..) => unreachable!("handled above"),
            };
            debug_assert!(shift + BITS < MAX_DEPTH * BITS, "distinct hashes differ within 64 bits");
            let below = Branch::empty().with_new(shift + BITS, existing_hash, other.clone());
            let filter = filter_bit(existing_hash, shift) | filter_bit(hash, shift);
            Slot::Sub(filter, Arc::new(insert_into(&below, shift + BITS, hash, key, value)))
        }
    };
    let mut copy = branch.clone();
    copy.slots[pos] = replacement;
    copy
}

#[cfg(test)]
mod tests {
    use super::Map;

    #[test]
    fn inner_bindings_shadow_outer_ones_and_old_maps_are_unchanged() {
        let a: Map<u32, &str> = Map::default().insert(1, 1, "one");
        let b = a.insert(1, 1, "uno");
        assert_eq!(a.get(1, &1), Some(&"one"));
        assert_eq!(b.get(1, &1), Some(&"uno"));
        assert_eq!(b.get(2, &2), None);
    }

    #[test]
    fn keys_with_equal_hashes_are_told_apart_by_equality() {
        let m: Map<u32, u32> = Map::default().insert(7, 1, 10).insert(7, 2, 20).insert(7, 1, 11);
        assert_eq!(m.get(7, &1), Some(&11));
        assert_eq!(m.get(7, &2), Some(&20));
        assert_eq!(m.get(7, &3), None);
    }

    #[test]
    fn ten_thousand_bindings_are_all_found() {
        let mut m: Map<u64, u64> = Map::default();
        let hash = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for k in 0..10_000 {
            m = m.insert(hash(k), k, k * 2);
        }
        for k in 0..10_000 {
            assert_eq!(m.get(hash(k), &k), Some(&(k * 2)));
        }
        assert_eq!(m.get(hash(10_001), &10_001), None);
    }

    #[test]
    fn hashes_that_agree_on_their_low_bits_split_deep_in_the_trie() {
        let m: Map<u64, u64> = Map::default().insert(1 << 62, 1, 1).insert(1 << 63, 2, 2).insert(0, 3, 3);
        assert_eq!(m.get(1 << 62, &1), Some(&1));
        assert_eq!(m.get(1 << 63, &2), Some(&2));
        assert_eq!(m.get(0, &3), Some(&3));
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
            assert_eq!(m.get(same_filters(k), &k), Some(&(k + 1)));
        }
        for k in 100..1_000 {
            assert_eq!(m.get(same_filters(k), &k), None);
        }
        // And keys that differ from every bound key in the root filter's bits are absent.
        assert_eq!(m.get(0, &7), None);
    }
}
