//! Shared health through the store: counts survive lost compare-and-swap races, and a
//! failing store never stops traffic.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{run_chat, Fixture, Provider, Reply, T0};
use detour_core::config::Settings;
use detour_core::health::{self, Failure, Health};
use detour_core::store::{MemoryStore, Store, StoreError};

/// One worker's handle on a store shared with another worker.
///
/// Before each of its writes, it may let the other worker record a failure first, the way
/// a second Envoy worker thread would between our read and our CAS write; our write then
/// meets a genuine `CasMismatch` from the shared store.
struct Worker {
    shared: Rc<RefCell<MemoryStore>>,
    /// Writes that are overtaken by the other worker, in order.
    overtaken: Vec<bool>,
    settings: Settings,
    mismatches: u32,
    /// The other worker's clock. It may read a later time than ours and still write
    /// first: both read the clock, then race for the record.
    their_now: u64,
}

impl Store for Worker {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.shared.borrow().get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let overtaken = if self.overtaken.is_empty() {
            false
        } else {
            self.overtaken.remove(0)
        };
        if overtaken {
            // The other worker's whole read-modify-CAS lands first, on the same record.
            let mut other = self.shared.borrow_mut();
            health::record_failure(
                &mut *other,
                "d",
                self.their_now,
                &self.settings,
                Failure::Error,
                false,
            )?;
            self.their_now += 2;
        }
        let result = self.shared.borrow_mut().set(key, value, cas);
        if result == Err(StoreError::CasMismatch) {
            self.mismatches += 1;
        }
        result
    }
}

/// A shared store in which deployment `d` already has a (healthy) record.
///
/// proxy-wasm shared data cannot create a key only if it is absent (a write to a missing
/// key always succeeds), so two workers racing on a deployment's very first record can
/// lose one write; these tests are about the steady state, where the record exists.
fn shared_with_record() -> Rc<RefCell<MemoryStore>> {
    let mut store = MemoryStore::default();
    let written = store.set(&health::key("d"), &Health::default().encode(), None);
    assert_eq!(written, Ok(()));
    Rc::new(RefCell::new(store))
}

fn read(shared: &Rc<RefCell<MemoryStore>>) -> Health {
    let bytes = shared.borrow().get(&health::key("d"));
    assert!(bytes.is_ok(), "{bytes:?}");
    Health::decode(bytes.ok().flatten().as_ref().map(|(v, _)| v.as_slice()))
}

#[test]
fn interleaved_failure_counts_from_two_workers_are_not_lost() {
    let settings = Settings {
        allowed_fails: 1_000,
        ..Settings::default()
    };
    let shared = shared_with_record();
    // Every other write of ours is overtaken by the other worker (sometimes twice in a row).
    let pattern = [
        true, false, true, true, false, false, true, false, true, true,
    ];
    let mut worker = Worker {
        shared: Rc::clone(&shared),
        overtaken: pattern.to_vec(),
        settings: settings.clone(),
        mismatches: 0,
        their_now: T0 + 1,
    };
    let ours = 8;
    for i in 0..ours {
        let transition = health::record_failure(
            &mut worker,
            "d",
            T0 + 2 * i,
            &settings,
            Failure::Error,
            false,
        )
        .unwrap();
        assert_eq!(transition, None);
    }
    let theirs = pattern.iter().filter(|o| **o).count() as u32;
    assert!(worker.mismatches > 0, "the races must actually happen");
    assert_eq!(worker.mismatches, theirs, "each overtaken write is retried");
    assert_eq!(read(&shared).fails, ours as u32 + theirs);
}

#[test]
fn the_breaker_opens_on_the_fourth_failure_even_when_it_comes_from_another_worker() {
    let settings = Settings::default(); // allowed_fails 3
    let shared = shared_with_record();
    let mut worker = Worker {
        shared: Rc::clone(&shared),
        // Theirs lands before our 1st write and again before our 3rd.
        overtaken: vec![true, false, false, true, false],
        settings: settings.clone(),
        mismatches: 0,
        their_now: T0 + 1,
    };
    // Theirs, ours (2 in total), ours (3): tolerated.
    for i in 0..2 {
        let t = health::record_failure(
            &mut worker,
            "d",
            T0 + 2 * i,
            &settings,
            Failure::Error,
            false,
        )
        .unwrap();
        assert_eq!(t, None, "failure {i}");
    }
    assert_eq!(read(&shared).open_until, 0);
    // Theirs lands first: the 4th failure, it opens the breaker; ours counts in the open one.
    let t =
        health::record_failure(&mut worker, "d", T0 + 4, &settings, Failure::Error, false).unwrap();
    assert_eq!(t, None, "the other worker opened it, not us");
    assert_eq!(read(&shared).open_until, T0 + 3 + 30_000);
}

/// A store whose every operation fails, like shared data that is not there.
struct Broken;

impl Store for Broken {
    fn get(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Err(StoreError::Backend {
            message: "shared data unavailable".into(),
            transient: true,
        })
    }
    fn set(&mut self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), StoreError> {
        Err(StoreError::Backend {
            message: "shared data unavailable".into(),
            transient: true,
        })
    }
}

#[test]
fn a_failing_store_fails_open_and_traffic_keeps_flowing() {
    let config = Fixture::new()
        .deployment_with("g", "a", &["order: 1"])
        .deployment_with("g", "b", &["order: 2"])
        .router("num_retries: 0")
        .build();
    let mut provider = Provider::new().always("a", Reply::status(500));
    for i in 0..6 {
        let trace = run_chat(&config, &mut Broken, &mut provider, "g", T0 + i);
        assert_eq!(trace.sent_ids(), ["a", "b"], "request {i}");
        assert_eq!(trace.delivered_from(), Some("b"));
    }
}

/// A store that always loses the race.
struct AlwaysContended(MemoryStore);

impl Store for AlwaysContended {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.0.get(key)
    }
    fn set(&mut self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), StoreError> {
        Err(StoreError::CasMismatch)
    }
}

#[test]
fn endless_contention_gives_up_instead_of_spinning_and_the_request_still_goes_through() {
    let settings = Settings::default();
    let mut store = AlwaysContended(MemoryStore::default());
    assert_eq!(
        health::record_failure(&mut store, "d", T0, &settings, Failure::Error, false),
        Err(StoreError::Contended)
    );
    let config = Fixture::new().deployment("g", "a").build();
    let mut provider = Provider::new().script("a", [Reply::status(429)]);
    let trace = run_chat(&config, &mut store, &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a"]);
    assert_eq!(trace.response().status, 429);
}
