//! Process-wide state that outlives any one VM: shared data (key–value with CAS) and
//! shared queues, both namespaced by `vm_id`, as in proxy-wasm-cpp-host
//! (`src/shared_data.cc`, `src/shared_queue.cc`).
//!
//! Shared data semantics, exactly cpp-host's:
//! - one table per `vm_id`, shared by every worker's VM with that `vm_id`;
//! - one CAS counter for the whole process, starting at 1; every successful write (any
//!   key, any `vm_id`) takes the next value (0 is skipped on wrap-around);
//! - `set` with CAS 0 writes unconditionally; a non-zero CAS that differs from an
//!   existing key's is `CasMismatch`; writing an absent key always succeeds;
//! - there is no delete in ABI 0.2.1: the SDK's "remove" stores an empty value.
//!
//! It survives VM reloads (a trap, a SIGHUP): cooldowns and breakers live here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::types::Status;

/// The process-wide shared-data store.
#[derive(Debug)]
pub struct SharedData {
    inner: Mutex<DataInner>,
}

/// One `vm_id`'s keys: value and CAS.
type Table = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Debug)]
struct DataInner {
    next_cas: u32,
    by_vm: HashMap<String, Table>,
}

impl Default for SharedData {
    fn default() -> Self {
        SharedData {
            inner: Mutex::new(DataInner {
                next_cas: 1,
                by_vm: HashMap::new(),
            }),
        }
    }
}

/// Locks a mutex, taking the data even if a thread panicked while holding it (the
/// tables stay consistent: every update is a single insert).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SharedData {
    /// An empty store.
    pub fn new() -> Self {
        SharedData::default()
    }

    /// The value and CAS of `key` in `vm_id`'s namespace.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let inner = lock(&self.inner);
        inner
            .by_vm
            .get(vm_id)
            .and_then(|table| table.get(key))
            .cloned()
    }

    /// Writes `key` in `vm_id`'s namespace (see the module doc for CAS rules).
    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        if cas != 0 {
            if let Some((_, current)) = inner.by_vm.get(vm_id).and_then(|t| t.get(key)) {
                if *current != cas {
                    return Err(Status::CasMismatch);
                }
            }
        }
        let new_cas = inner.next_cas;
        inner.next_cas = match inner.next_cas.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        inner
            .by_vm
            .entry(vm_id.to_string())
            .or_default()
            .insert(key.to_vec(), (value.to_vec(), new_cas));
        Ok(())
    }

    /// How many keys `vm_id` has (for the admin endpoint and tests).
    pub fn len(&self, vm_id: &str) -> usize {
        lock(&self.inner).by_vm.get(vm_id).map_or(0, HashMap::len)
    }
}

/// Called with a queue's token when an item was enqueued; the embedding delivers
/// `proxy_on_queue_ready` on the registrant's worker.
pub type QueueNotifier = Arc<dyn Fn(u32) + Send + Sync>;

/// Process-wide shared queues, keyed by (`vm_id`, name); tokens from one counter
/// starting at 1.
#[derive(Default)]
pub struct SharedQueues {
    inner: Mutex<QueuesInner>,
}

#[derive(Default)]
struct QueuesInner {
    next_token: u32,
    tokens: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    notify: Option<QueueNotifier>,
}

impl std::fmt::Debug for SharedQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQueues").finish_non_exhaustive()
    }
}

impl SharedQueues {
    /// Creates or re-opens (`vm_id`, `name`); the registrant's notifier replaces the
    /// previous one (the last registrant is notified, as in cpp-host).
    pub fn register(&self, vm_id: &str, name: &[u8], notify: Option<QueueNotifier>) -> u32 {
        let mut inner = lock(&self.inner);
        let key = (vm_id.to_string(), name.to_vec());
        let token = match inner.tokens.get(&key) {
            Some(token) => *token,
            None => {
                inner.next_token = inner.next_token.wrapping_add(1).max(1);
                let token = inner.next_token;
                inner.tokens.insert(key, token);
                token
            }
        };
        let queue = inner.queues.entry(token).or_insert_with(|| Queue {
            items: VecDeque::new(),
            notify: None,
        });
        queue.notify = notify;
        token
    }

    /// The token of (`vm_id`, `name`), if it was registered.
    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        lock(&self.inner)
            .tokens
            .get(&(vm_id.to_string(), name.to_vec()))
            .copied()
    }

    /// Appends an item and notifies the registrant.
    pub fn enqueue(&self, token: u32, value: &[u8]) -> Result<(), Status> {
        let notify = {
            let mut inner = lock(&self.inner);
            let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
            queue.items.push_back(value.to_vec());
            queue.notify.clone()
        };
        if let Some(notify) = notify {
            notify(token);
        }
        Ok(())
    }

    /// Takes the oldest item: `NotFound` for an unknown token, `Empty` for no item.
    pub fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics_match_cpp_host() {
        let data = SharedData::new();
        assert_eq!(data.get("vm", b"k"), None);
        // Absent key: any CAS succeeds; CAS values come from one counter from 1.
        data.set("vm", b"k", b"v1", 0).unwrap();
        assert_eq!(data.get("vm", b"k"), Some((b"v1".to_vec(), 1)));
        data.set("vm", b"other", b"x", 77).unwrap();
        assert_eq!(data.get("vm", b"other"), Some((b"x".to_vec(), 2)));
        // Stale CAS on an existing key: mismatch, nothing written.
        assert_eq!(data.set("vm", b"k", b"v2", 2), Err(Status::CasMismatch));
        data.set("vm", b"k", b"v2", 1).unwrap();
        assert_eq!(data.get("vm", b"k"), Some((b"v2".to_vec(), 3)));
        // CAS 0 overwrites unconditionally; "remove" stores empty.
        data.set("vm", b"k", b"", 0).unwrap();
        assert_eq!(data.get("vm", b"k"), Some((Vec::new(), 4)));
        // Namespaces are per vm_id.
        assert_eq!(data.get("other-vm", b"k"), None);
        assert_eq!(data.len("vm"), 2);
    }

    #[test]
    fn queues_register_resolve_enqueue_dequeue() {
        let queues = SharedQueues::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let token = queues.register(
            "vm",
            b"q",
            Some(Arc::new(move |t| sink.lock().unwrap().push(t))),
        );
        assert_eq!(queues.resolve("vm", b"q"), Some(token));
        assert_eq!(queues.resolve("vm", b"nope"), None);
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        queues.enqueue(token, b"a").unwrap();
        assert_eq!(queues.dequeue(token), Ok(b"a".to_vec()));
        assert_eq!(queues.enqueue(token + 1, b"a"), Err(Status::NotFound));
        assert_eq!(*seen.lock().unwrap(), vec![token]);
    }
}
