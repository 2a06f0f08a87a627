//! A minimal slab: O(1) insert and remove by index, for a parent's children and a node's callbacks.
//!
//! # Invariants
//! 1. `len` equals the number of `Occupied` entries.
//! 2. Every `Vacant` entry is on the free list that starts at `free` (a chain of indices).
//! 3. When `len` drops to 0 and the slab has grown past [`RETAIN`] entries, its memory is
//!    released, so a parent that once had a million children and now has none keeps nothing.

/// Capacity kept when the slab empties (small enough to be noise, large enough that a parent whose
/// children come and go one at a time does not allocate on every registration).
const RETAIN: usize = 8;

const NONE: usize = usize::MAX;

enum Entry<T> {
    Occupied(T),
    Vacant(usize),
}

/// A slab of `T`s addressed by the index `insert` returned.
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: usize,
    len: usize,
}

impl<T> Slab<T> {
    /// An empty slab; does not allocate.
    pub(crate) const fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    /// Number of occupied entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` and returns its index, reusing a vacant entry if there is one.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if self.free == NONE {
            self.entries.push(Entry::Occupied(value));
            return self.entries.len() - 1;
        }
        let index = self.free;
        match std::mem::replace(&mut self.entries[index], Entry::Occupied(value)) {
            Entry::Vacant(next) => self.free = next,
            Entry::Occupied(_) => {
                unreachable!("free list points at an occupied entry (invariant 2)")
            }
        }
        index
    }

    /// Removes and returns the entry at `index`, if it is occupied.
    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let entry = self.entries.get_mut(index)?;
        if matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        let Entry::Occupied(value) = std::mem::replace(entry, Entry::Vacant(self.free)) else {
            unreachable!("checked occupied above")
        };
        self.free = index;
        self.len -= 1;
        if self.len == 0 && self.entries.capacity() > RETAIN {
            // Invariant 3: give the memory back.
            *self = Slab::new();
        }
        Some(value)
    }

    /// A reference to the entry at `index`, if it is occupied.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        match self.entries.get(index)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// Empties the slab, returning every occupied value in index order.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let entries = std::mem::take(&mut self.entries);
        *self = Slab::new();
        entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Occupied(v) => Some(v),
                Entry::Vacant(_) => None,
            })
            .collect()
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
        for id in ids {
            slab.remove(id);
        }
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.entries.capacity(), 0);
    }

    #[test]
    fn drain_returns_every_occupied_value_in_index_order() {
        let mut slab = Slab::new();
        for i in 0..5 {
            slab.insert(i);
        }
        slab.remove(2);
        assert_eq!(slab.drain(), vec![0, 1, 3, 4]);
        assert_eq!(slab.len(), 0);
    }
}
