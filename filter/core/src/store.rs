//! The counter store: shared, compare-and-swap state seen by every worker.
//!
//! In Envoy and `detour serve` it is proxy-wasm shared data (one namespace per `vm_id`,
//! a new CAS value on every write, CAS `None` meaning "write unconditionally"); in tests it
//! is [`MemoryStore`]; the fleet-wide Redis store will implement the same trait. The core
//! only ever changes a key through [`update`], a bounded read–modify–CAS loop.

use std::collections::HashMap;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since we read it.
    CasMismatch,
    /// [`update`] lost the race too many times in a row.
    Contended,
    /// The backend failed; `transient` errors may succeed on the next request.
    Backend {
        /// What failed, for logs.
        message: String,
        /// Whether a later call may succeed.
        transient: bool,
    },
}

/// A key/value store with compare-and-swap, as proxy-wasm shared data offers.
pub trait Store {
    /// The value and its CAS token, or `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's CAS token still equals `cas` (`None`: unconditionally).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How many times [`update`] re-reads after losing a CAS race before giving up. Races are
/// rare (7 in 5,000 contended increments on Envoy); a bound keeps a worker from spinning.
pub const MAX_CAS_ATTEMPTS: u32 = 16;

/// Reads `key`, computes its new value with `change`, and writes it with CAS, retrying on
/// a lost race. `change` returns the new bytes (or `None` to leave the key as it is) and a
/// result for the caller.
pub fn update<S, T>(
    store: &mut S,
    key: &str,
    mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError>
where
    S: Store + ?Sized,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = store.get(key)?;
        let (bytes, cas) = match &current {
            Some((bytes, cas)) => (Some(bytes.as_slice()), Some(*cas)),
            None => (None, None),
        };
        let (new_value, result) = change(bytes);
        let Some(new_value) = new_value else {
            return Ok(result);
        };
        match store.set(key, &new_value, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::Contended)
}

/// An in-memory store with the exact CAS semantics of proxy-wasm shared data.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if let (Some(expected), Some((_, current))) =
            (cas.filter(|c| *c != 0), self.entries.get(key))
        {
            if expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        // One process-wide counter, like Envoy's: CAS values are never reused.
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let mut store = MemoryStore::default();
        assert_eq!(store.get("k").unwrap(), None);
        store.set("k", b"a", None).unwrap();
        let (_, cas) = store.get("k").unwrap().unwrap();
        store.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(
            store.set("k", b"c", Some(cas)),
            Err(StoreError::CasMismatch)
        );
        // 0 means "no check", as in the ABI.
        store.set("k", b"d", Some(0)).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().0, b"d");
    }

    /// A store that loses the race a fixed number of times, as a second worker would make it.
    struct Racy {
        inner: MemoryStore,
        losses: u32,
    }

    impl Store for Racy {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.losses > 0 {
                self.losses -= 1;
                // The other worker's write lands first.
                let other = self.inner.get(key)?.map(|(v, _)| v).unwrap_or_default();
                let mut bumped = other.clone();
                bumped.push(b'x');
                self.inner.set(key, &bumped, None)?;
                return Err(StoreError::CasMismatch);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn update_retries_lost_races_and_keeps_both_writes() {
        let mut store = Racy {
            inner: MemoryStore::default(),
            losses: 3,
        };
        let n = update(&mut store, "k", |old| {
            let mut v = old.map(<[u8]>::to_vec).unwrap_or_default();
            v.push(b'y');
            let len = v.len();
            (Some(v), len)
        })
        .unwrap();
        assert_eq!(n, 4); // three racing writes, then ours
        assert_eq!(store.inner.get("k").unwrap().unwrap().0, b"xxxy");

        let mut store = Racy {
            inner: MemoryStore::default(),
            losses: MAX_CAS_ATTEMPTS,
        };
        assert_eq!(
            update(&mut store, "k", |_| (Some(vec![1]), ())),
            Err(StoreError::Contended)
        );
    }
}
