//! eBPF maps in userspace: arrays and hash tables with their storage allocated once, so
//! that the pointers a program gets from `bpf_map_lookup_elem` stay valid (and inside memory
//! the interpreter allows) for as long as the program exists. The application reads and
//! writes them by name while the program runs ([`Maps`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use super::LoadError;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_HASH` (one copy here).
pub const MAP_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_PERCPU_ARRAY` (one copy here).
pub const MAP_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_DEVMAP`: `bpf_redirect_map` sends to the redirect ring of the key.
pub const MAP_DEVMAP: u32 = 14;
/// `BPF_MAP_TYPE_XSKMAP`: as `DEVMAP`.
pub const MAP_XSKMAP: u32 = 17;

/// Largest map a program may ask for: entries times value size, plus, for hash maps,
/// entries times key size and [`HASH_ENTRY_OVERHEAD`].
pub const MAX_MAP_BYTES: u64 = 64 << 20;
/// What a hash map's index takes per entry besides its key's bytes (the key's heap
/// allocation and the table's slot), counted against [`MAX_MAP_BYTES`].
pub const HASH_ENTRY_OVERHEAD: u64 = 64;
/// Bytes after a map's values that no program access may start in.
const SLACK: usize = 8;
/// Most bytes all of an object's maps may take together.
pub const MAX_OBJECT_MAP_BYTES: u64 = 128 << 20;

/// A map's definition, as the object file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Its name (the variable's).
    pub name: String,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Most entries.
    pub max_entries: u32,
}

impl MapSpec {
    pub(crate) fn check(&self) -> Result<(), LoadError> {
        let bad = |why: &str| Err(LoadError::Map(format!("{}: {why}", self.name)));
        match self.map_type {
            MAP_HASH | MAP_PERCPU_HASH => {}
            MAP_ARRAY | MAP_PERCPU_ARRAY | MAP_DEVMAP | MAP_XSKMAP => {
                if self.key_size != 4 {
                    return bad("array keys are 4 bytes");
                }
            }
            t => return bad(&format!("map type {t} is not supported")),
        }
        if self.key_size == 0 || self.key_size > 512 || self.value_size > 65536 {
            return bad("key or value size out of range");
        }
        if self.max_entries == 0 || self.bytes() > MAX_MAP_BYTES {
            return bad("too many entries");
        }
        Ok(())
    }

    /// What the map may take at most: its values, and for a hash map each entry's key and
    /// index entry too (`HASH_ENTRY_OVERHEAD`), all of which a program's updates with keys
    /// from packets can fill.
    pub(crate) fn bytes(&self) -> u64 {
        let per_entry = u64::from(self.value_size.max(1))
            + if self.is_hash() {
                u64::from(self.key_size) + HASH_ENTRY_OVERHEAD
            } else {
                0
            };
        u64::from(self.max_entries) * per_entry
    }

    fn is_hash(&self) -> bool {
        matches!(self.map_type, MAP_HASH | MAP_PERCPU_HASH)
    }
}

/// Why an update failed (as the kernel's errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// No such key (`ENOENT`).
    #[error("no such key")]
    NotFound,
    /// The key exists and `BPF_NOEXIST` was asked (`EEXIST`).
    #[error("the key exists")]
    Exists,
    /// The map is full (`E2BIG`).
    #[error("the map is full")]
    Full,
    /// Wrong key or value size, key out of range, or bad flags (`EINVAL`).
    #[error("invalid key, value or flags")]
    Invalid,
}

impl MapError {
    /// The negative errno a helper returns.
    pub(crate) fn errno(self) -> i64 {
        match self {
            MapError::NotFound => -2,
            MapError::Exists => -17,
            MapError::Full => -7,
            MapError::Invalid => -22,
        }
    }
}

/// One map and its storage.
#[derive(Debug)]
pub(crate) struct Map {
    pub(crate) spec: MapSpec,
    /// `max_entries` values, then 8 bytes of slack outside [`range`](Self::range) (the
    /// interpreter checks only where an access starts: one of up to 8 bytes that starts in
    /// the range ends at most 7 bytes past it).
    storage: Box<[u8]>,
    /// Hash maps: key to slot, the slots freed by deletes, and the first never used.
    index: HashMap<Vec<u8>, u32>,
    free: Vec<u32>,
    fresh: u32,
}

impl Map {
    pub(crate) fn new(spec: MapSpec) -> Map {
        let n = spec.max_entries as usize * spec.value_size as usize + SLACK;
        Map {
            spec,
            storage: vec![0u8; n].into_boxed_slice(),
            index: HashMap::new(),
            free: Vec::new(),
            fresh: 0,
        }
    }

    /// The values' address range, where a program's accesses may start (the slack after
    /// it is not part of it: an access starting there would end past the allocation).
    pub(crate) fn range(&self) -> Range<u64> {
        let p = self.storage.as_ptr() as u64;
        p..p + (self.storage.len() - SLACK) as u64
    }

    fn slot(&self, key: &[u8]) -> Option<u32> {
        if key.len() != self.spec.key_size as usize {
            return None;
        }
        if self.spec.is_hash() {
            self.index.get(key).copied()
        } else {
            let k = u32::from_le_bytes(key.try_into().ok()?);
            (k < self.spec.max_entries).then_some(k)
        }
    }

    fn value_range(&self, slot: u32) -> Range<usize> {
        let vs = self.spec.value_size as usize;
        let s = slot as usize * vs;
        s..s + vs
    }

    /// The value of `key`, in place.
    pub(crate) fn lookup_mut(&mut self, key: &[u8]) -> Option<&mut [u8]> {
        let slot = self.slot(key)?;
        let r = self.value_range(slot);
        Some(&mut self.storage[r])
    }

    /// A copy of the value of `key`.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let slot = self.slot(key)?;
        Some(self.storage[self.value_range(slot)].to_vec())
    }

    /// `flags`: 0 any, 1 only if new, 2 only if present.
    pub(crate) fn update(&mut self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if key.len() != self.spec.key_size as usize
            || value.len() != self.spec.value_size as usize
            || flags > 2
        {
            return Err(MapError::Invalid);
        }
        let slot = match (self.slot(key), self.spec.is_hash()) {
            (Some(_), _) if flags == 1 => return Err(MapError::Exists),
            (Some(s), _) => s,
            (None, false) => return Err(MapError::Invalid),
            (None, true) if flags == 2 => return Err(MapError::NotFound),
            (None, true) => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None if self.fresh < self.spec.max_entries => {
                        self.fresh += 1;
                        self.fresh - 1
                    }
                    None => return Err(MapError::Full),
                };
                self.index.insert(key.to_vec(), s);
                s
            }
        };
        let r = self.value_range(slot);
        self.storage[r].copy_from_slice(value);
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        if !self.spec.is_hash() {
            return Err(MapError::Invalid);
        }
        let s = self.index.remove(key).ok_or(MapError::NotFound)?;
        self.free.push(s);
        Ok(())
    }

    /// The keys present (hash maps) or every index (arrays).
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        if self.spec.is_hash() {
            self.index.keys().cloned().collect()
        } else {
            (0..self.spec.max_entries)
                .map(|k| k.to_le_bytes().to_vec())
                .collect()
        }
    }
}

/// A program's maps, shared by the program's copies (one per runtime instance) and the
/// application; a run holds the lock for a burst.
#[derive(Clone, Debug)]
pub struct Maps {
    pub(crate) inner: Arc<Mutex<Vec<Map>>>,
}

impl Maps {
    pub(crate) fn new(specs: &[MapSpec]) -> Maps {
        Maps {
            inner: Arc::new(Mutex::new(specs.iter().cloned().map(Map::new).collect())),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<Map>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Map) -> T) -> Option<T> {
        let mut g = self.lock();
        g.iter_mut().find(|m| m.spec.name == name).map(f)
    }

    /// The maps' definitions.
    pub fn specs(&self) -> Vec<MapSpec> {
        self.lock().iter().map(|m| m.spec.clone()).collect()
    }

    /// A copy of the value of `key` in map `name`.
    pub fn lookup(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.with(name, |m| m.lookup(key)).flatten()
    }

    /// Set `key` to `value` in map `name` (`BPF_ANY`).
    pub fn update(&self, name: &str, key: &[u8], value: &[u8]) -> Result<(), MapError> {
        self.with(name, |m| m.update(key, value, 0))
            .unwrap_or(Err(MapError::NotFound))
    }

    /// Remove `key` from hash map `name`.
    pub fn delete(&self, name: &str, key: &[u8]) -> Result<(), MapError> {
        self.with(name, |m| m.delete(key))
            .unwrap_or(Err(MapError::NotFound))
    }

    /// The keys of map `name`.
    pub fn keys(&self, name: &str) -> Vec<Vec<u8>> {
        self.with(name, |m| m.keys()).unwrap_or_default()
    }

    /// The `u64` at the start of the value of the `u32` key `k` in map `name` (counters).
    pub fn read_u64(&self, name: &str, k: u32) -> Option<u64> {
        let v = self.lookup(name, &k.to_le_bytes())?;
        Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: u32, ks: u32, vs: u32, n: u32) -> MapSpec {
        MapSpec {
            name: "m".into(),
            map_type: t,
            key_size: ks,
            value_size: vs,
            max_entries: n,
        }
    }

    /// A hash map's keys and index count against its bound: a program's updates with keys
    /// from packets fill them all (512-byte keys and 1-byte values used to pass as a
    /// million bytes for a million entries, and take over half a gigabyte).
    #[test]
    fn hash_keys_count_against_the_map_bound() {
        assert_eq!(spec(MAP_HASH, 512, 1, 1000).bytes(), 1000 * (1 + 512 + 64));
        assert!(spec(MAP_HASH, 512, 1, 100_000).check().is_ok());
        assert!(spec(MAP_HASH, 512, 1, 1_000_000).check().is_err());
        assert!(spec(MAP_ARRAY, 4, 1, 1_000_000).check().is_ok());
        assert_eq!(spec(MAP_ARRAY, 4, 8, 10).bytes(), 80);
    }

    /// A program's accesses may start in the values only, not in the slack after them.
    #[test]
    fn the_range_is_the_values_without_the_slack() {
        let m = Map::new(spec(MAP_ARRAY, 4, 8, 3));
        assert_eq!(m.range().end - m.range().start, 24);
        assert_eq!(m.storage.len(), 24 + SLACK);
    }

    #[test]
    fn array_and_hash_semantics() {
        let mut a = Map::new(spec(MAP_ARRAY, 4, 8, 2));
        assert_eq!(a.lookup(&1u32.to_le_bytes()), Some(vec![0; 8]));
        assert_eq!(a.lookup(&2u32.to_le_bytes()), None);
        a.update(&1u32.to_le_bytes(), &[1; 8], 0).unwrap();
        assert_eq!(
            a.update(&1u32.to_le_bytes(), &[1; 8], 1),
            Err(MapError::Exists)
        );
        assert_eq!(a.delete(&1u32.to_le_bytes()), Err(MapError::Invalid));
        let mut h = Map::new(spec(MAP_HASH, 2, 1, 2));
        assert_eq!(h.update(b"ab", &[1], 2), Err(MapError::NotFound));
        h.update(b"ab", &[1], 0).unwrap();
        h.update(b"cd", &[2], 1).unwrap();
        assert_eq!(h.update(b"ef", &[3], 0), Err(MapError::Full));
        h.delete(b"ab").unwrap();
        h.update(b"ef", &[3], 0).unwrap();
        assert_eq!(h.lookup(b"ef"), Some(vec![3]));
        assert_eq!(h.lookup(b"ab"), None);
        assert_eq!(h.update(b"abc", &[3], 0), Err(MapError::Invalid));
        assert!(spec(MAP_ARRAY, 8, 8, 1).check().is_err());
        assert!(spec(99, 4, 8, 1).check().is_err());
        assert!(spec(MAP_HASH, 4, 65536, 1 << 20).check().is_err());
    }
}
