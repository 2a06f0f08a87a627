//! A minimal slab: O(1) insert and remove by index, for a parent's children and a node's callbacks.
//!
//! Index 0 lives inline (`first`), so the common case of a node with one child (a chain of
//! derivations) allocates nothing here; the rest lives behind one pointer, so an empty or
//! one-entry slab costs 24 bytes in every node.
//!
//! # Invariants
//! 1. `len` equals the number of occupied entries (`first` plus `Occupied` entries of `rest`).
//! 2. Index 0 is `first`; index `i >= 1` is `rest.entries[i - 1]`. Every `Vacant` entry is on the
//!    free list that starts at `rest.free` (a chain of indices into `rest.entries`).
//! 3. When `len` drops to 0 and `rest` has grown past [`RETAIN`] entries, its memory is released,
//!    so a parent that once had a million children and now has none keeps nothing.

/// Capacity kept when the slab empties (small enough to be noise, large enough that a parent whose
/// children come and go one at a time does not allocate on every registration).
const RETAIN: usize = 8;

const NONE: u32 = u32::MAX;

enum Entry<T> {
    Occupied(T),
    Vacant(u32),
}

/// A slab of `T`s addressed by the index `insert` returned.
pub(crate) struct Slab<T> {
    first: Option<T>,
    rest: Option<Box<Rest<T>>>,
    /// `u32` keeps the slab small: it sits in every node, and four billion live children of one
    /// parent is not a use case (`insert` checks).
    len: u32,
}

/// Indices 1 and up.
struct Rest<T> {
    entries: Vec<Entry<T>>,
    /// Head of the free list (an index into `entries`), or `NONE`.
    free: u32,
}

impl<T> Slab<T> {
    /// An empty slab; does not allocate.
    pub(crate) const fn new() -> Self {
        Slab { first: None, rest: None, len: 0 }
    }

    /// Number of occupied entries.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// One more than the highest index the slab can hand out without growing.
    pub(crate) fn capacity(&self) -> usize {
        1 + self.rest.as_ref().map_or(0, |rest| rest.entries.capacity())
    }

    /// Makes room for `additional` more entries beyond the vacant ones, in one allocation.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let occupied_in_rest = self.len() - usize::from(self.first.is_some());
        let vacant_in_rest = self.rest.as_ref().map_or(0, |rest| rest.entries.len()) - occupied_in_rest;
        let vacant = usize::from(self.first.is_none()) + vacant_in_rest;
        if additional > vacant {
            let rest = self.rest.get_or_insert_with(|| Box::new(Rest { entries: Vec::new(), free: NONE }));
            // Room for that many pushes past the entries in use or on the free list.
            rest.entries.reserve(additional - vacant);
        }
    }

    /// Stores `value` and returns its index, reusing a vacant entry if there is one.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        assert!(self.len < NONE - 1, "tether: more than 2^32 - 2 live entries in one slab");
        self.len += 1;
        if self.first.is_none() {
            self.first = Some(value);
            return 0;
        }
        let rest = self.rest.get_or_insert_with(|| Box::new(Rest { entries: Vec::new(), free: NONE }));
        if rest.free == NONE {
            rest.entries.push(Entry::Occupied(value));
            return rest.entries.len();
        }
        let at = rest.free as usize;
        match std::mem::replace(&mut rest.entries[at], Entry::Occupied(value)) {
            Entry::Vacant(next) => rest.free = next,
            Entry::Occupied(_) => unreachable!("free list points at an occupied entry (invariant 2)"),
        }
        at + 1
    }

    /// Removes and returns the entry at `index`, if it is occupied.
    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let value = if index == 0 {
            self.first.take()?
        } else {
            let at = index - 1;
            let rest = self.rest.as_mut()?;
            let entry = rest.entries.get_mut(at)?;
            if matches!(entry, Entry::Vacant(_)) {
                return None;
            }
            let Entry::Occupied(value) = std::mem::replace(entry, Entry::Vacant(rest.free)) else {
                unreachable!("checked occupied above")
            };
            rest.free = at as u32;
            value
        };
        self.len -= 1;
        if self.len == 0 && self.rest.as_ref().is_some_and(|r| r.entries.capacity() > RETAIN) {
            // Invariant 3: give the memory back.
            *self = Slab::new();
        }
        Some(value)
    }

    /// A reference to the entry at `index`, if it is occupied.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        if index == 0 {
            return self.first.as_ref();
        }
        match self.rest.as_ref()?.entries.get(index - 1)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// A mutable reference to the entry at `index`, if it is occupied.
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index == 0 {
            return self.first.as_mut();
        }
        match self.rest.as_mut()?.entries.get_mut(index - 1)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// Empties the slab into `out`, in index order; returns how many values moved. Allocates
    /// nothing beyond `out`'s growth; the one-entry case (a chain) is a single push.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<T>) -> usize {
        let Slab { first, rest, len } = std::mem::replace(self, Slab::new());
        out.extend(first);
        if let Some(rest) = rest {
            out.extend(rest.entries.into_iter().filter_map(|e| match e {
                Entry::Occupied(v) => Some(v),
                Entry::Vacant(_) => None,
            }));
        }
        len as usize
    }

    /// Empties the slab, yielding every occupied value in index order. Allocates nothing.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + use<T> {
        let Slab { first, rest, .. } = std::mem::replace(self, Slab::new());
        let rest = rest.map(|r| r.entries).unwrap_or_default();
        first.into_iter().chain(rest.into_iter().filter_map(|e| match e {
            Entry::Occupied(v) => Some(v),
            Entry::Vacant(_) => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn removed_slots_are_reused_and_an_emptied_slab_releases_its_memory() {
        let mut slab = Slab::new();
        let ids: Vec<usize> = (0..100).map(|i| slab.insert(i)).collect();
        assert_eq!(slab.len(), 100);
        assert_eq!(slab.remove(ids[10]), Some(10));
        assert_eq!(slab.remove(ids[10]), None);
        assert_eq!(slab.insert(1000), ids[10]);
        assert_eq!(slab.get(ids[10]), Some(&1000));
        assert_eq!(slab.remove(ids[0]), Some(0));
        assert_eq!(slab.insert(2000), ids[0]);
        for id in ids {
            slab.remove(id);
        }
        assert_eq!(slab.len(), 0);
        assert!(slab.rest.is_none());
    }

    #[test]
    fn reserve_makes_room_for_that_many_inserts_without_growing() {
        let mut slab = Slab::new();
        slab.insert(0);
        slab.insert(1);
        slab.remove(0);
        slab.reserve(100);
        let capacity = slab.capacity();
        let indices: Vec<usize> = (0..100).map(|i| slab.insert(i)).collect();
        assert_eq!(slab.capacity(), capacity, "no insert grew the slab");
        assert!(indices.iter().all(|&i| i < capacity), "every index is below the capacity");
        assert_eq!(slab.len(), 101);
    }

    #[test]
    fn drain_returns_every_occupied_value_in_index_order() {
        let mut slab = Slab::new();
        for i in 0..5 {
            slab.insert(i);
        }
        slab.remove(2);
        assert_eq!(slab.drain().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
        assert_eq!(slab.len(), 0);
    }
}
