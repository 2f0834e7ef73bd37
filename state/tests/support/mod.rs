//! What the state crate's tests share: a private `redis-server`, stopped by PID
//! ([`redis_server`], which the host's tests include too), and the store adapters the
//! conformance suite runs the in-memory ledger on.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use detour_core::store::{MemoryStore, Store, StoreError};
use detour_host::shared_data::SharedData;

pub(crate) mod redis_server;

/// A [`MemoryStore`] shared by threads, locked per `get`/`set` (not per ledger call), so
/// CAS races between threads really happen.
#[derive(Clone, Default)]
pub(crate) struct Locked(pub(crate) Arc<Mutex<MemoryStore>>);

impl Store for Locked {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.0.lock().unwrap().get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.0.lock().unwrap().set(key, value, cas)
    }
}

/// `detour serve`'s shared data (`detour_host::shared_data::SharedData`, cpp-host's
/// semantics) as the core's [`Store`]: what the filter's `Store` sees on `detour serve`.
#[derive(Clone)]
pub(crate) struct ServeStore {
    pub(crate) data: Arc<SharedData>,
    pub(crate) vm_id: String,
}

impl Store for ServeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.data.get(&self.vm_id, key.as_bytes()))
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match self
            .data
            .set(&self.vm_id, key.as_bytes(), value, cas.unwrap_or(0))
        {
            Ok(()) => Ok(()),
            Err(detour_host::Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(other) => Err(StoreError::Backend {
                message: format!("shared data: {other:?}"),
                transient: false,
            }),
        }
    }
}

/// p50 and p99 of durations, in microseconds.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_micros()
    };
    (at(0.50), at(0.99))
}
