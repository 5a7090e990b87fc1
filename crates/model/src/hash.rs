//! Small, deterministic, non-cryptographic hashing for the plan: FNV-1a for change ids that stay
//! the same from run to run, and a fast word-at-a-time hasher for the plan's in-memory indexes.
//!
//! Neither needs to resist an attacker: the keys come from the operator's own Keycloak and
//! products, and the indexes live for one call of [`crate::plan::plan`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map with [`FastHasher`]: the plan's indexes hold millions of short string keys, and the
/// standard SipHash costs a noticeable share of the plan's time.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Makes an empty [`FastMap`] with room for `capacity` entries.
pub(crate) fn fast_map<K, V>(capacity: usize) -> FastMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default())
}

/// The FxHash mixing step over 8-byte words, with a Murmur3-style finalizer so that both the high
/// bits (hashbrown's control bytes) and the low bits (its bucket index) depend on every input byte.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        let mut hash = self.hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash
    }
}

/// An id as a map key, by value: its precomputed hash and its text. Comparing two keys reads
/// neither string when the hashes differ or the texts share one allocation, so a lookup costs one
/// memory access to the bucket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdKey<'a> {
    pub(crate) hash: u64,
    pub(crate) text: &'a str,
}

impl PartialEq for IdKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (std::ptr::eq(self.text, other.text) || self.text == other.text)
    }
}

impl Eq for IdKey<'_> {}

impl std::hash::Hash for IdKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Ids to `u32` indexes, for the plan's joins of millions of memberships: open addressing with
/// linear probing over slots that hold the key by value, so a lookup reads one slot and (almost
/// always) nothing else.
///
/// A join first [`IdTable::touch`]es the slots of a batch of keys and then looks them up: the
/// touches do not depend on each other, so the processor waits for their cache misses together
/// instead of one by one, which makes the join several times faster than a lookup at a time.
pub(crate) struct IdTable<'a> {
    slots: Vec<Slot<'a>>,
    mask: usize,
    len: usize,
}

#[derive(Clone, Copy)]
struct Slot<'a> {
    key: IdKey<'a>,
    /// `u32::MAX` marks an empty slot.
    value: u32,
}

/// How many keys a join touches before looking them up.
pub(crate) const BATCH: usize = 32;

impl<'a> IdTable<'a> {
    /// A table with room for `capacity` keys before it grows; it is kept at most half full.
    pub(crate) fn with_capacity(capacity: usize) -> IdTable<'a> {
        let n_slots = (capacity.saturating_mul(2)).max(16).next_power_of_two();
        let empty = Slot {
            key: IdKey { hash: 0, text: "" },
            value: u32::MAX,
        };
        IdTable {
            slots: vec![empty; n_slots],
            mask: n_slots - 1,
            len: 0,
        }
    }

    /// Adds `key` with `value`, or returns the value it already has (and keeps it).
    pub(crate) fn insert(&mut self, key: IdKey<'a>, value: u32) -> Option<u32> {
        if (self.len + 1) * 2 > self.slots.len() {
            let mut bigger = IdTable::with_capacity(self.slots.len());
            for slot in &self.slots {
                if slot.value != u32::MAX {
                    bigger.insert(slot.key, slot.value);
                }
            }
            *self = bigger;
        }
        let mut idx = key.hash as usize & self.mask;
        loop {
            let slot = &mut self.slots[idx];
            if slot.value == u32::MAX {
                *slot = Slot { key, value };
                self.len += 1;
                return None;
            }
            if slot.key == key {
                return Some(slot.value);
            }
            idx = (idx + 1) & self.mask;
        }
    }

    pub(crate) fn get(&self, key: &IdKey<'_>) -> Option<u32> {
        let mut idx = key.hash as usize & self.mask;
        loop {
            let slot = &self.slots[idx];
            if slot.value == u32::MAX {
                return None;
            }
            if slot.key.hash == key.hash
                && (std::ptr::eq(slot.key.text, key.text) || slot.key.text == key.text)
            {
                return Some(slot.value);
            }
            idx = (idx + 1) & self.mask;
        }
    }

    /// Reads the first slot `key` would use and returns a value that depends on it, so that the
    /// caller can fold the results into [`std::hint::black_box`] and the read is not optimized
    /// away.
    pub(crate) fn touch(&self, key: &IdKey<'_>) -> u64 {
        self.slots[key.hash as usize & self.mask].key.hash
    }
}

/// The [`FastHasher`] hash of a string, which ids compute once when they are made.
pub(crate) fn hash_str(text: &str) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// 64-bit FNV-1a over a sequence of fields, each followed by a 0xff byte (which never occurs in
/// UTF-8), so that `("ab", "c")` and `("a", "bc")` hash differently.
pub(crate) fn fnv1a(fields: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for &byte in field.as_bytes().iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_value_for_one_field() {
        // FNV-1a 64 of "a" followed by 0xff, computed by hand from the published algorithm.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in [b'a', 0xff] {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fnv1a(&["a"]), hash);
    }

    #[test]
    fn fnv1a_separates_fields() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_ne!(fnv1a(&["a", ""]), fnv1a(&["a"]));
    }

    #[test]
    fn id_table_finds_what_was_inserted_and_keeps_the_first_value() {
        let texts: Vec<String> = (0..100).map(|idx| format!("id-{idx}")).collect();
        fn key(text: &str) -> IdKey<'_> {
            IdKey {
                hash: hash_str(text),
                text,
            }
        }
        let mut table = IdTable::with_capacity(10);
        for (idx, text) in texts.iter().enumerate() {
            assert_eq!(table.insert(key(text), idx as u32), None);
        }
        assert_eq!(table.insert(key("id-7"), 1000), Some(7));
        // A copy of the text in another allocation is the same key.
        let copy = String::from("id-42");
        assert_eq!(table.get(&key(&copy)), Some(42));
        assert_eq!(table.get(&key("id-100")), None);
    }

    #[test]
    fn fast_hasher_spreads_similar_keys_over_low_bits() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let builder = BuildHasherDefault::<FastHasher>::default();
        let mut buckets = std::collections::HashSet::new();
        for idx in 0..1024 {
            buckets.insert(builder.hash_one(format!("user{idx}")) & 1023);
        }
        assert!(
            buckets.len() > 600,
            "only {} of 1024 buckets used",
            buckets.len()
        );
    }
}
