//! Per-deployment health shared by every worker: the 429 cooldown and the circuit breaker.
//!
//! One record per deployment, under [`key`], changed only with CAS through
//! [`crate::store::update`]. The breaker:
//!
//! ```text
//!  closed ──(more than allowed_fails failures within failure_window)──▶ open
//!  open ──(cooldown_time passes)──▶ half-open: the first request to claim the probe lease
//!                                   (CAS) is the one request allowed through
//!  half-open ──(probe succeeds)──▶ closed          ──(probe fails)──▶ open again
//! ```
//!
//! A 429 is not a breaker failure: it cools the deployment down for
//! max(`cooldown_time`, `Retry-After`) and the deployment is back when that passes.

use crate::config::Settings;
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// The shared-data key of a deployment's health record.
pub fn key(deployment_id: &str) -> String {
    format!("detour/v1/health/{deployment_id}")
}

/// One deployment's health, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Failures counted in the current window.
    pub fails: u32,
    /// When the current failure window started.
    pub window_start: UnixMillis,
    /// A 429 cooldown lasts until then (0: none).
    pub cooldown_until: UnixMillis,
    /// The breaker is open until then; after it, half-open until a probe settles (0: closed).
    pub open_until: UnixMillis,
    /// A half-open probe is in flight until then (0: none). Expires on its own, so a probe
    /// whose worker died does not keep the deployment shut.
    pub probe_lease_until: UnixMillis,
}

const VERSION: u8 = 1;
const ENCODED_LEN: usize = 37;

impl Health {
    /// Fixed-size little-endian encoding, versioned.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.fails.to_le_bytes());
        for v in [
            self.window_start,
            self.cooldown_until,
            self.open_until,
            self.probe_lease_until,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes a record; anything unreadable (absent, empty, another version, garbage) reads
    /// as a healthy deployment, and the next write repairs it.
    pub fn decode(bytes: Option<&[u8]>) -> Health {
        let Some(bytes) = bytes else {
            return Health::default();
        };
        if bytes.len() != ENCODED_LEN || bytes.first() != Some(&VERSION) {
            return Health::default();
        }
        let u64_at = |offset: usize| -> u64 {
            bytes
                .get(offset..offset.saturating_add(8))
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        let fails = bytes
            .get(1..5)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0);
        Health {
            fails,
            window_start: u64_at(5),
            cooldown_until: u64_at(13),
            open_until: u64_at(21),
            probe_lease_until: u64_at(29),
        }
    }

    /// The breaker's state at `now`.
    pub fn breaker(&self, now: UnixMillis) -> BreakerState {
        if self.open_until == 0 {
            BreakerState::Closed
        } else if now < self.open_until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// No requests until `open_until`.
    Open,
    /// One probe request may go through.
    HalfOpen,
}

/// Whether a deployment may be sent a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Send.
    Available,
    /// Send: this request holds the half-open probe lease.
    Probe,
    /// Skip: cooling down after a 429 until then.
    CoolingDown(UnixMillis),
    /// Skip: the breaker is open until then.
    Open(UnixMillis),
    /// Skip: another request is probing the half-open breaker until then.
    ProbeInFlight(UnixMillis),
}

impl Availability {
    /// When the deployment may be available again, if it is not now.
    pub fn until(self) -> Option<UnixMillis> {
        match self {
            Availability::Available | Availability::Probe => None,
            Availability::CoolingDown(t)
            | Availability::Open(t)
            | Availability::ProbeInFlight(t) => Some(t),
        }
    }
}

/// A change of state worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A 429 started (or lengthened) a cooldown.
    CooledDown {
        /// Until when.
        until: UnixMillis,
    },
    /// Too many failures: the breaker opened.
    Opened {
        /// Until when.
        until: UnixMillis,
    },
    /// The half-open probe failed: open again.
    Reopened {
        /// Until when.
        until: UnixMillis,
    },
    /// The half-open probe succeeded: closed. A recovery.
    Closed,
}

/// Writes a healthy record for a deployment that has none yet.
///
/// Shared data cannot "create only if absent" (CAS 0 writes unconditionally), so two
/// workers racing on a deployment's first record could lose a count. The glue calls this
/// from `on_configure`, which Envoy runs on the main thread before workers take traffic.
pub fn ensure_record<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
) -> Result<(), StoreError> {
    let key = key(deployment_id);
    if store.get(&key)?.is_none() {
        store.set(&key, &Health::default().encode(), None)?;
    }
    Ok(())
}

/// Checks whether a deployment may be used, claiming the half-open probe if it is free.
pub fn check_and_claim<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
    now: UnixMillis,
    probe_lease_ms: u64,
) -> Result<Availability, StoreError> {
    update(store, &key(deployment_id), |bytes| {
        let mut health = Health::decode(bytes);
        if health.cooldown_until > now {
            return (None, Availability::CoolingDown(health.cooldown_until));
        }
        match health.breaker(now) {
            BreakerState::Closed => (None, Availability::Available),
            BreakerState::Open => (None, Availability::Open(health.open_until)),
            BreakerState::HalfOpen if health.probe_lease_until > now => {
                (None, Availability::ProbeInFlight(health.probe_lease_until))
            }
            BreakerState::HalfOpen => {
                health.probe_lease_until = now.saturating_add(probe_lease_ms);
                (Some(health.encode()), Availability::Probe)
            }
        }
    })
}

/// Gives back a half-open probe lease claimed for an attempt that was then not sent (its
/// budget or rate limit refused it), so another request can probe at once.
pub fn release_probe<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
) -> Result<(), StoreError> {
    update(store, &key(deployment_id), |bytes| {
        let mut health = Health::decode(bytes);
        if health.probe_lease_until == 0 {
            return (None, ());
        }
        health.probe_lease_until = 0;
        (Some(health.encode()), ())
    })
}

/// Marks a deployment healthy (a passing health-check probe): no cooldown, breaker
/// closed, failure count reset. Returns whether it was unhealthy.
pub fn clear<S: Store + ?Sized>(store: &mut S, deployment_id: &str) -> Result<bool, StoreError> {
    update(store, &key(deployment_id), |bytes| {
        let health = Health::decode(bytes);
        if health.open_until == 0 && health.cooldown_until == 0 {
            return (None, false);
        }
        let cleared = Health {
            window_start: health.window_start,
            ..Health::default()
        };
        (Some(cleared.encode()), true)
    })
}

/// Records a successful answer. Closes the breaker when it came from the probe.
pub fn record_success<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
    was_probe: bool,
) -> Result<Option<Transition>, StoreError> {
    if !was_probe {
        // Successes do not erase failures counted in the window (LiteLLM counts the same
        // way); not writing keeps the hot path free of shared-data writes.
        return Ok(None);
    }
    update(store, &key(deployment_id), |bytes| {
        let mut health = Health::decode(bytes);
        if health.open_until == 0 {
            return (None, None);
        }
        health.open_until = 0;
        health.probe_lease_until = 0;
        health.fails = 0;
        (Some(health.encode()), Some(Transition::Closed))
    })
}

/// What kind of failure to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A 429: cool down for this long.
    RateLimited {
        /// max(`cooldown_time`, `Retry-After`), capped.
        cooldown_ms: u64,
    },
    /// Anything that counts toward the breaker.
    Error,
}

/// Records a failed answer, opening the breaker when the window's count passes
/// `allowed_fails` (LiteLLM's semantics: `allowed_fails: 3` tolerates three, the fourth opens).
pub fn record_failure<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
    now: UnixMillis,
    settings: &Settings,
    failure: Failure,
    was_probe: bool,
) -> Result<Option<Transition>, StoreError> {
    if settings.cooldowns_disabled {
        return Ok(None);
    }
    update(store, &key(deployment_id), |bytes| {
        let mut health = Health::decode(bytes);
        let mut transition = None;
        if was_probe {
            health.probe_lease_until = 0;
            health.open_until = now.saturating_add(settings.cooldown_ms.max(1));
            health.fails = 0;
            transition = Some(Transition::Reopened {
                until: health.open_until,
            });
        }
        match failure {
            Failure::RateLimited { cooldown_ms } => {
                let until = now.saturating_add(cooldown_ms);
                if until > health.cooldown_until {
                    health.cooldown_until = until;
                    if transition.is_none() {
                        transition = Some(Transition::CooledDown { until });
                    }
                }
            }
            Failure::Error if !was_probe => {
                if now
                    >= health
                        .window_start
                        .saturating_add(settings.failure_window_ms)
                    // A clock a little behind (another worker read it first, then lost
                    // the race) counts in the window; only a big step back restarts it.
                    || now.saturating_add(settings.failure_window_ms) < health.window_start
                {
                    health.window_start = now;
                    health.fails = 0;
                }
                health.fails = health.fails.saturating_add(1);
                if health.open_until == 0 && health.fails > settings.allowed_fails {
                    health.open_until = now.saturating_add(settings.cooldown_ms.max(1));
                    health.fails = 0;
                    transition = Some(Transition::Opened {
                        until: health.open_until,
                    });
                }
            }
            Failure::Error => {}
        }
        (Some(health.encode()), transition)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn ensure_record_creates_once_and_keeps_existing_state() {
        let s = settings();
        let mut store = MemoryStore::default();
        ensure_record(&mut store, "d").unwrap();
        let (_, cas) = store.get(&key("d")).unwrap().unwrap();
        record_failure(
            &mut store,
            "d",
            5,
            &s,
            Failure::RateLimited { cooldown_ms: 100 },
            false,
        )
        .unwrap();
        ensure_record(&mut store, "d").unwrap();
        assert_ne!(store.get(&key("d")).unwrap().unwrap().1, cas);
        assert_eq!(
            check_and_claim(&mut store, "d", 50, 1).unwrap(),
            Availability::CoolingDown(105)
        );
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let h = Health {
            fails: 3,
            window_start: 1,
            cooldown_until: 2,
            open_until: 3,
            probe_lease_until: u64::MAX,
        };
        assert_eq!(Health::decode(Some(&h.encode())), h);
        assert_eq!(Health::decode(Some(b"garbage")), Health::default());
        assert_eq!(Health::decode(Some(&[])), Health::default());
        let mut wrong_version = h.encode();
        wrong_version[0] = 9;
        assert_eq!(Health::decode(Some(&wrong_version)), Health::default());
    }

    #[test]
    fn breaker_opens_after_allowed_fails_then_half_opens_for_one_probe() {
        let s = settings();
        let mut store = MemoryStore::default();
        let t0 = 1_000_000;
        for i in 0..3 {
            assert_eq!(
                record_failure(&mut store, "d", t0 + i, &s, Failure::Error, false).unwrap(),
                None
            );
        }
        assert_eq!(
            check_and_claim(&mut store, "d", t0 + 3, 5000).unwrap(),
            Availability::Available
        );
        let opened = record_failure(&mut store, "d", t0 + 3, &s, Failure::Error, false).unwrap();
        assert_eq!(
            opened,
            Some(Transition::Opened {
                until: t0 + 3 + 30_000
            })
        );
        assert_eq!(
            check_and_claim(&mut store, "d", t0 + 10, 5000).unwrap(),
            Availability::Open(t0 + 30_003)
        );

        // Half-open: exactly one claim wins; the others skip until the lease ends.
        let t1 = t0 + 30_003;
        assert_eq!(
            check_and_claim(&mut store, "d", t1, 5000).unwrap(),
            Availability::Probe
        );
        assert_eq!(
            check_and_claim(&mut store, "d", t1 + 1, 5000).unwrap(),
            Availability::ProbeInFlight(t1 + 5000)
        );
        // A probe that never reports back loses its lease.
        assert_eq!(
            check_and_claim(&mut store, "d", t1 + 5000, 5000).unwrap(),
            Availability::Probe
        );

        assert_eq!(
            record_success(&mut store, "d", true).unwrap(),
            Some(Transition::Closed)
        );
        assert_eq!(
            check_and_claim(&mut store, "d", t1 + 5001, 5000).unwrap(),
            Availability::Available
        );
    }

    #[test]
    fn failed_probe_reopens() {
        let s = settings();
        let mut store = MemoryStore::default();
        for i in 0..4 {
            record_failure(&mut store, "d", 10 + i, &s, Failure::Error, false).unwrap();
        }
        let t = 10 + 3 + 30_000;
        assert_eq!(
            check_and_claim(&mut store, "d", t, 5000).unwrap(),
            Availability::Probe
        );
        let reopened = record_failure(&mut store, "d", t + 100, &s, Failure::Error, true).unwrap();
        assert_eq!(
            reopened,
            Some(Transition::Reopened {
                until: t + 100 + 30_000
            })
        );
        assert_eq!(
            check_and_claim(&mut store, "d", t + 200, 5000).unwrap(),
            Availability::Open(t + 30_100)
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_accumulate() {
        let s = settings();
        let mut store = MemoryStore::default();
        let mut t = 0;
        for _ in 0..10 {
            t += 20_000; // three per minute at most
            assert_eq!(
                record_failure(&mut store, "d", t, &s, Failure::Error, false).unwrap(),
                None
            );
        }
    }

    #[test]
    fn rate_limit_cools_down_and_never_shortens() {
        let s = settings();
        let mut store = MemoryStore::default();
        let t = record_failure(
            &mut store,
            "d",
            100,
            &s,
            Failure::RateLimited {
                cooldown_ms: 60_000,
            },
            false,
        )
        .unwrap();
        assert_eq!(t, Some(Transition::CooledDown { until: 60_100 }));
        assert_eq!(
            record_failure(
                &mut store,
                "d",
                200,
                &s,
                Failure::RateLimited {
                    cooldown_ms: 30_000
                },
                false
            )
            .unwrap(),
            None
        );
        assert_eq!(
            check_and_claim(&mut store, "d", 50_000, 1).unwrap(),
            Availability::CoolingDown(60_100)
        );
        assert_eq!(
            check_and_claim(&mut store, "d", 60_100, 1).unwrap(),
            Availability::Available
        );
    }

    #[test]
    fn disabled_cooldowns_record_nothing() {
        let s = Settings {
            cooldowns_disabled: true,
            ..settings()
        };
        let mut store = MemoryStore::default();
        for i in 0..10 {
            record_failure(&mut store, "d", i, &s, Failure::Error, false).unwrap();
        }
        record_failure(
            &mut store,
            "d",
            10,
            &s,
            Failure::RateLimited { cooldown_ms: 1000 },
            false,
        )
        .unwrap();
        assert_eq!(
            check_and_claim(&mut store, "d", 11, 1).unwrap(),
            Availability::Available
        );
    }
}
