//! Budgets: spend per scope and period, enforced with reservations.
//!
//! Before an attempt, its estimated cost is **reserved** in every budget scope it touches
//! (total, its group, its model, the deployment itself, the request's stage tag), each with
//! CAS. A scope that would pass its limit refuses, the reservations already made are
//! released, and the chain skips that deployment. After the answer the reservation is
//! **settled** to the real cost (or released if the attempt failed).
//!
//! So concurrent requests can never commit more than the limit in estimates; the spend can
//! pass a limit only by what answers cost beyond their estimates (bounded by the
//! estimate's `max_tokens` for output; prompt estimates are characters / 4).
//!
//! Money is integer nano-dollars. Counters live under a key that names the period's start
//! (`detour/v1/budget/<scope>/<period start>`), so a new period starts with fresh counters
//! by itself.

use std::fmt;

use crate::period::Period;
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// What a budget applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Everything.
    Total,
    /// A route group (`model_name`).
    Group(String),
    /// A model (`litellm_params.model`), across every deployment that serves it.
    Model(String),
    /// One deployment (by id).
    Deployment(String),
    /// A stage tag (`x-detour-stage`).
    Tag(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Total => write!(f, "total"),
            Scope::Group(name) => write!(f, "group/{name}"),
            Scope::Model(name) => write!(f, "model/{name}"),
            Scope::Deployment(id) => write!(f, "deployment/{id}"),
            Scope::Tag(tag) => write!(f, "tag/{tag}"),
        }
    }
}

/// One configured budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// What it covers.
    pub scope: Scope,
    /// The limit per period, in nano-dollars.
    pub limit_nanos: u64,
    /// How long a period lasts.
    pub period: Period,
    /// Spend at this percentage of the limit halts all traffic until a human resumes
    /// (110 for the total by default; `None`: never).
    pub halt_at_percent: Option<u32>,
}

/// Alert levels, in percent of the limit. Each fires once per scope and period.
pub const THRESHOLDS: [u32; 4] = [80, 90, 100, 110];

/// A scope's counters for one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    /// Settled spend.
    pub spent: u64,
    /// Estimates of attempts in flight.
    pub reserved: u64,
    /// Bit i set: `THRESHOLDS[i]` has fired this period.
    pub fired: u8,
    /// Fleet mode: how much of the fleet's limit this process may commit (spend reported
    /// to the fleet plus the leases it holds; `crate::fleet`). Unused otherwise.
    pub cover: u64,
    /// Fleet mode: the largest estimate refused for want of cover since the last sync, so
    /// the next lease is at least that big.
    pub wanted: u64,
    /// Fleet mode: when the ledger last said the scope has no room left (0: it has room).
    /// Until a lease finds room again, what the cover does not take is refused at once
    /// instead of waiting for a lease that cannot come.
    pub full_since: UnixMillis,
}

const VERSION_1: u8 = 1;
const LEN_1: usize = 18;
const VERSION: u8 = 2;
const ENCODED_LEN: usize = 42;

impl Account {
    /// Fixed-size little-endian encoding, versioned.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.spent.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out.push(self.fired);
        out.extend_from_slice(&self.cover.to_le_bytes());
        out.extend_from_slice(&self.wanted.to_le_bytes());
        out.extend_from_slice(&self.full_since.to_le_bytes());
        out
    }

    /// Decodes an account (this version or the one before); absent or unreadable bytes
    /// read as an empty account.
    pub fn decode(bytes: Option<&[u8]>) -> Account {
        let Some(bytes) = bytes.filter(|b| {
            (b.len() == ENCODED_LEN && b.first() == Some(&VERSION))
                || (b.len() == LEN_1 && b.first() == Some(&VERSION_1))
        }) else {
            return Account::default();
        };
        let u64_at = |offset: usize| {
            bytes
                .get(offset..offset.saturating_add(8))
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        Account {
            spent: u64_at(1),
            reserved: u64_at(9),
            fired: bytes.get(17).copied().unwrap_or(0),
            cover: u64_at(18),
            wanted: u64_at(26),
            full_since: u64_at(34),
        }
    }

    /// What this process has committed: spend and estimates in flight.
    pub fn committed(&self) -> u64 {
        self.spent.saturating_add(self.reserved)
    }
}

/// The shared-data key of a scope's account for the period starting at `period_start`.
pub fn key(scope: &Scope, period_start: UnixMillis) -> String {
    format!("detour/v1/budget/{scope}/{period_start}")
}

/// Estimates held for one attempt, to settle or release.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reservation {
    /// (limit index in the config, account key, amount held there).
    pub held: Vec<(usize, String, u64)>,
    /// The estimate.
    pub estimate: u64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This scope has no room for the estimate.
    Exhausted(Scope),
    /// Fleet mode: the scope has room for it, but this process's leases do not cover it
    /// yet (the next sync asks for more).
    Uncovered(Scope),
    /// The counters could not be read or written; budgets fail closed.
    Unavailable(StoreError),
}

/// Reserves `estimate` in every limit of `limits` (indices into `all`). All or nothing:
/// a refusal releases what was already held.
pub fn reserve<S: Store + ?Sized>(
    store: &mut S,
    all: &[Limit],
    limits: &[(usize, bool)],
    now: UnixMillis,
    estimate: u64,
) -> Result<Reservation, Refusal> {
    reserve_in(store, all, limits, now, estimate, false)
}

/// [`reserve`], and in fleet mode also within each account's `cover` (what this process
/// leased from the fleet): an estimate the limit allows but the cover does not is
/// `Uncovered`, and is remembered in `wanted` for the next lease.
pub fn reserve_in<S: Store + ?Sized>(
    store: &mut S,
    all: &[Limit],
    limits: &[(usize, bool)],
    now: UnixMillis,
    estimate: u64,
    fleet: bool,
) -> Result<Reservation, Refusal> {
    let mut reservation = Reservation {
        held: Vec::new(),
        estimate,
    };
    for (idx, enforced) in limits {
        let Some(limit) = all.get(*idx) else { continue };
        let key = key(&limit.scope, limit.period.start(now));
        let outcome = hold(store, &key, limit.limit_nanos, estimate, *enforced, fleet);
        match outcome {
            Ok(Admission::Held) => reservation.held.push((*idx, key, estimate)),
            Ok(Admission::OverLimit) => {
                release(store, &reservation);
                return Err(Refusal::Exhausted(limit.scope.clone()));
            }
            Ok(Admission::Uncovered) => {
                release(store, &reservation);
                return Err(Refusal::Uncovered(limit.scope.clone()));
            }
            Err(err) => {
                release(store, &reservation);
                return Err(Refusal::Unavailable(err));
            }
        }
    }
    Ok(reservation)
}

/// One account's answer to a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The amount is held.
    Held,
    /// The limit has no room for it.
    OverLimit,
    /// Fleet mode: the limit has room, this process's cover does not.
    Uncovered,
}

/// Holds `amount` in the account at `key` (any unit: nano-dollars, requests, tokens),
/// within `limit` when `enforced`, and in fleet mode within the account's cover.
pub fn hold<S: Store + ?Sized>(
    store: &mut S,
    key: &str,
    limit: u64,
    amount: u64,
    enforced: bool,
    fleet: bool,
) -> Result<Admission, StoreError> {
    update(store, key, |bytes| {
        let mut account = Account::decode(bytes);
        let wanted = account.committed().saturating_add(amount);
        if enforced && wanted > limit {
            return (None, Admission::OverLimit);
        }
        if enforced && fleet && wanted > account.cover {
            // The fleet has no room either: refused now (the estimate is still noted, so
            // the next sync looks whether room came back).
            let refusal = if account.full_since != 0 {
                Admission::OverLimit
            } else {
                Admission::Uncovered
            };
            if amount <= account.wanted {
                return (None, refusal);
            }
            account.wanted = amount;
            return (Some(account.encode()), refusal);
        }
        account.reserved = account.reserved.saturating_add(amount);
        (Some(account.encode()), Admission::Held)
    })
}

/// Replaces a hold of `held` at `key` by `actual` of spend.
pub fn spend<S: Store + ?Sized>(store: &mut S, key: &str, held: u64, actual: u64) {
    let _ = update(store, key, |bytes| {
        let mut account = Account::decode(bytes);
        account.reserved = account.reserved.saturating_sub(held);
        account.spent = account.spent.saturating_add(actual);
        (Some(account.encode()), ())
    });
}

/// Gives back what a failed attempt held.
pub fn release<S: Store + ?Sized>(store: &mut S, reservation: &Reservation) {
    for (_, key, amount) in &reservation.held {
        spend(store, key, *amount, 0);
    }
}

/// A threshold crossed by a settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// Index of the limit in the config.
    pub limit_idx: usize,
    /// Which threshold (80, 90, 100, 110).
    pub percent: u32,
    /// Spend after the settlement.
    pub spent: u64,
}

/// Replaces an attempt's reservation by its real cost, and reports the thresholds this
/// crossed for the first time in the period.
pub fn settle<S: Store + ?Sized>(
    store: &mut S,
    all: &[Limit],
    reservation: &Reservation,
    actual: u64,
) -> Vec<Crossing> {
    let mut crossings = Vec::new();
    for (idx, key, amount) in &reservation.held {
        let Some(limit) = all.get(*idx) else { continue };
        let result = update(store, key, |bytes| {
            let mut account = Account::decode(bytes);
            account.reserved = account.reserved.saturating_sub(*amount);
            account.spent = account.spent.saturating_add(actual);
            let mut new = Vec::new();
            for (bit, percent) in THRESHOLDS.iter().enumerate() {
                let mask = 1u8 << bit;
                if account.fired & mask == 0 && reached(account.spent, limit.limit_nanos, *percent)
                {
                    account.fired |= mask;
                    new.push(*percent);
                }
            }
            (Some(account.encode()), (new, account.spent))
        });
        if let Ok((new, spent)) = result {
            crossings.extend(new.into_iter().map(|percent| Crossing {
                limit_idx: *idx,
                percent,
                spent,
            }));
        }
    }
    crossings
}

/// The `budget_alert` event of `limit` crossing `percent` at `spent`.
pub fn alert(
    limit: &Limit,
    period_start: UnixMillis,
    percent: u32,
    spent: u64,
    now: UnixMillis,
) -> crate::event::Event {
    crate::event::Event::BudgetAlert {
        ts: now,
        scope: limit.scope.to_string(),
        period_start,
        percent,
        spent: crate::price::format_dollars(spent),
        limit: crate::price::format_dollars(limit.limit_nanos),
    }
}

/// Whether `spent` is at least `percent` % of `limit` (exact integer arithmetic).
pub fn reached(spent: u64, limit: u64, percent: u32) -> bool {
    // u64 × u32 fits in u128: neither product can overflow.
    u128::from(spent).saturating_mul(100) >= u128::from(limit).saturating_mul(u128::from(percent))
}

/// Creates the accounts of the current and the next period of every limit, where they do
/// not exist yet.
///
/// Shared data cannot "create only if absent": a first write carries no CAS token and
/// overwrites whatever another worker wrote in between, so two first reservations racing
/// on a new account could lose one. Accounts created ahead of use never race: the glue
/// calls this when the plugin is configured (Envoy's main thread, before workers take
/// traffic) and every few seconds after, so the next period's accounts exist long before
/// its first request. Concurrent calls are harmless: they all write the same empty
/// account to a key nobody uses yet.
pub fn ensure_accounts<S: Store + ?Sized>(store: &mut S, limits: &[Limit], now: UnixMillis) {
    for limit in limits {
        for start in [limit.period.start(now), limit.period.end(now)] {
            let key = key(&limit.scope, start);
            if let Ok(None) = store.get(&key) {
                let _ = store.set(&key, &Account::default().encode(), None);
            }
        }
    }
}

/// A scope's account in the period containing `now` (for status and tag overrun).
pub fn account<S: Store + ?Sized>(
    store: &S,
    limit: &Limit,
    now: UnixMillis,
) -> Result<Account, StoreError> {
    let key = key(&limit.scope, limit.period.start(now));
    Ok(Account::decode(
        store.get(&key)?.as_ref().map(|(bytes, _)| bytes.as_slice()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const NOW: u64 = 1_795_460_787_000;

    fn limits() -> Vec<Limit> {
        vec![
            Limit {
                scope: Scope::Total,
                limit_nanos: 1_000,
                period: Period::Month,
                halt_at_percent: Some(110),
            },
            Limit {
                scope: Scope::Tag("Spec".into()),
                limit_nanos: 500,
                period: Period::Day,
                halt_at_percent: None,
            },
        ]
    }

    #[test]
    fn reservations_never_commit_past_the_limit() {
        let all = limits();
        let mut store = MemoryStore::default();
        let both = [(0, true), (1, true)];
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(reserve(&mut store, &all, &both, NOW, 100).unwrap());
        }
        // Tag is at 500 of 500 in reservations: the sixth is refused and releases the total.
        assert_eq!(
            reserve(&mut store, &all, &both, NOW, 100),
            Err(Refusal::Exhausted(Scope::Tag("Spec".into())))
        );
        assert_eq!(account(&store, &all[0], NOW).unwrap().reserved, 500);
        // Settling below the estimate frees room.
        for r in &held {
            settle(&mut store, &all, r, 60);
        }
        let tag = account(&store, &all[1], NOW).unwrap();
        assert_eq!((tag.spent, tag.reserved), (300, 0));
        assert!(reserve(&mut store, &all, &both, NOW, 200).is_ok());
    }

    #[test]
    fn thresholds_fire_once_per_period() {
        let all = limits();
        let mut store = MemoryStore::default();
        let total = [(0, true)];
        let mut fired = Vec::new();
        for _ in 0..12 {
            if let Ok(r) = reserve(&mut store, &all, &[(0, false)], NOW, 100) {
                fired.extend(
                    settle(&mut store, &all, &r, 100)
                        .into_iter()
                        .map(|c| c.percent),
                );
            }
        }
        assert_eq!(fired, vec![80, 90, 100, 110]);
        // Enforced, the total is now full.
        assert!(matches!(
            reserve(&mut store, &all, &total, NOW, 1),
            Err(Refusal::Exhausted(Scope::Total))
        ));
        // A new month starts empty, by itself.
        let next_month = Period::Month.end(NOW);
        assert!(reserve(&mut store, &all, &total, next_month, 100).is_ok());
    }

    #[test]
    fn release_returns_the_estimate() {
        let all = limits();
        let mut store = MemoryStore::default();
        let r = reserve(&mut store, &all, &[(0, true)], NOW, 700).unwrap();
        assert!(reserve(&mut store, &all, &[(0, true)], NOW, 700).is_err());
        release(&mut store, &r);
        assert!(reserve(&mut store, &all, &[(0, true)], NOW, 700).is_ok());
    }

    #[test]
    fn percent_arithmetic_is_exact() {
        assert!(reached(80, 100, 80));
        assert!(!reached(79, 100, 80));
        assert!(reached(u64::MAX, u64::MAX, 100));
        assert!(!reached(u64::MAX - 1, u64::MAX, 100));
        assert!(reached(0, 0, 110));
    }

    #[test]
    fn accounts_exist_before_their_period_starts() {
        let all = limits();
        let mut store = MemoryStore::default();
        ensure_accounts(&mut store, &all, NOW);
        for limit in &all {
            for start in [limit.period.start(NOW), limit.period.end(NOW)] {
                assert!(store.get(&key(&limit.scope, start)).unwrap().is_some());
            }
        }
        // Existing accounts are left alone.
        let r = reserve(&mut store, &all, &[(0, true)], NOW, 100).unwrap();
        ensure_accounts(&mut store, &all, NOW);
        assert_eq!(account(&store, &all[0], NOW).unwrap().reserved, 100);
        release(&mut store, &r);
    }

    #[test]
    fn account_encoding_round_trips() {
        let a = Account {
            spent: 1,
            reserved: u64::MAX,
            fired: 0b1011,
            cover: 7,
            wanted: 9,
            full_since: 11,
        };
        assert_eq!(Account::decode(Some(&a.encode())), a);
        // A version-1 account (before fleet mode) still reads.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&6u64.to_le_bytes());
        v1.push(0b1);
        let old = Account::decode(Some(&v1));
        assert_eq!(
            (old.spent, old.reserved, old.fired, old.cover),
            (5, 6, 1, 0)
        );
        assert_eq!(Account::decode(Some(b"junk")), Account::default());
    }
}
