//! The budget ledger: the contract every budget backend implements, and its
//! implementation over [`Store`] (proxy-wasm shared data, `detour serve`'s shared data,
//! [`crate::store::MemoryStore`]).
//!
//! A **hold** is money set aside in every scope of a request at once, under an id the
//! caller chooses (a request id) or the ledger assigns (a lease). Each hold ends exactly
//! once:
//!
//! - [`Ledger::reserve`] holds `estimate` in every scope, or in none: a scope with
//!   `spent + reserved + estimate > limit` refuses and nothing changes anywhere.
//! - [`Ledger::settle`] replaces the hold by the real cost. It is unconditional: an
//!   `actual` above the estimate is recorded as spend beyond the limit (overspend is a
//!   fact to record, never something to drop). It is idempotent: a repeated settle changes
//!   nothing and says [`Ending::Repeated`].
//! - [`Ledger::release`] gives the hold back (the attempt failed, nothing was spent).
//! - A hold whose `ttl` passes **expires**: its estimate returns by itself, so a replica
//!   that crashed while holding money does not keep it forever. Expiry happens in
//!   [`Ledger::expire`] and, on every backend, at the start of every reserve and lease
//!   (no separate reaper is needed). A settle that arrives after its hold expired still
//!   records its spend ([`Ending::AfterExpiry`]), as long as the ledger remembers the id
//!   (see `done_ttl` below).
//! - [`Ledger::lease`] is a hold of up to `want` across all scopes (capped by the room
//!   left in the tightest scope): a slice of the remaining budget that a replica spends
//!   locally. A lease always creates a hold and has an id, even when 0 is granted (a full
//!   scope), so a process always has an id to report its spend under; the answer also
//!   says the room left after the grant, from which the holder sizes its next slices.
//!   [`Ledger::return_lease`] turns what was used into spend and frees the rest; it is a
//!   settle under the lease's id, with the same guarantees (its `used` is recorded
//!   unconditionally, also after expiry and above the grant).
//!
//! Money is integer nano-dollars. A scope is a string key that embeds its period, as
//! [`crate::budget::key`] does (`detour/v1/budget/<scope>/<period start>`), so a new
//! period starts with a fresh account by itself ([`ScopeLimit::for_budget`]).
//!
//! **Sans-IO.** The trait is synchronous and takes time as `now_ms` (Unix ms): the core
//! stays free of clocks and runtimes. The in-memory backend here runs on any [`Store`];
//! the Redis backend (crate `detour-state`) is async and offers a blocking adapter that
//! implements this trait, so one conformance suite runs against every backend.
//!
//! ## [`LedgerOnStore`]: one CAS-updated record
//!
//! Shared data has CAS on one key and nothing across keys; and a first write cannot be
//! conditional (it overwrites a concurrent first write). So the whole ledger of a process
//! is **one record** under `ledger:state`: accounts, holds, recently ended ids. Every
//! operation is one read–modify–CAS of that record through [`update`], which makes it
//! all-or-nothing across scopes and atomic with respect to settle/expire races, exactly
//! like one Lua script on Redis. The record is created by [`LedgerOnStore::new`], which
//! must run before concurrent traffic (at configure time, as `budget::ensure_accounts`
//! does). Its size is bounded by the holds in flight plus [`DONE_MEMORY`] ended ids plus
//! the accounts; it suits one process's share of traffic, which is what shared data is
//! for. The fleet-wide backend is Redis.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budget::{self, Limit};
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// Every key [`LedgerOnStore`] writes starts with this.
pub const KEY_PREFIX: &str = "ledger:";

/// The one record of [`LedgerOnStore`].
pub const STATE_KEY: &str = "ledger:state";

/// How many settled or released ids [`LedgerOnStore`] remembers to answer
/// [`Ending::Repeated`]. An older id answers [`Ending::Unknown`], which also changes
/// nothing: forgetting an id can never count it twice.
pub const DONE_MEMORY: usize = 256;

/// How long an expired hold is remembered by default, so that a late settle still records
/// its spend (milliseconds).
pub const DEFAULT_DONE_TTL_MS: u64 = 3_600_000;

/// A budget scope of one request: its account key (period included) and limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeLimit {
    /// The account key, e.g. `detour/v1/budget/total/1793491200000`.
    pub key: String,
    /// The limit of this scope for its period, nano-dollars.
    pub limit_nanos: u64,
}

impl ScopeLimit {
    /// The scope of a configured budget in the period containing `now`, keyed exactly as
    /// [`budget::key`] keys it.
    pub fn for_budget(limit: &Limit, now: UnixMillis) -> ScopeLimit {
        ScopeLimit {
            key: budget::key(&limit.scope, limit.period.start(now)),
            limit_nanos: limit.limit_nanos,
        }
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// The estimate is held in every scope (also the answer to a repeated reserve of a
    /// hold that is still held: a retried call holds once).
    Reserved,
    /// This scope has no room; nothing was held anywhere.
    Refused {
        /// The account key of the first scope without room.
        scope: String,
    },
}

/// How a settle, release or lease return ended a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The hold ended now.
    Applied,
    /// The hold had expired (its estimate was already back); the spend was recorded now.
    AfterExpiry,
    /// The hold had already ended; nothing changed.
    Repeated,
    /// No such hold (never made, or forgotten); nothing changed.
    Unknown,
}

/// How a lease return ended, and the spend it left in the lease's first scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Returned {
    /// How the hold ended.
    pub ending: Ending,
    /// The first scope's spend right after this return, read in the same atomic change:
    /// `spent_nanos - used` before it, so exactly one return sees a threshold crossed
    /// (0 when this call changed nothing: repeated or unknown).
    pub spent_nanos: u64,
}

/// A slice of budget granted to one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The id to return it under (and to report spend under): never empty, also when
    /// nothing was granted.
    pub id: String,
    /// Granted nano-dollars, at most the wanted amount and the room of every scope
    /// (0 when a scope is full or overspent).
    pub granted_nanos: u64,
    /// The room left in the tightest of the lease's scopes after this grant
    /// (`limit - spent - reserved`, minimum over the scopes, 0 when a scope is full or
    /// overspent): what the holder sizes its next slices from.
    pub room_nanos: u64,
    /// When the lease expires if it is not returned (Unix ms).
    pub expires_at_ms: UnixMillis,
}

/// A scope's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScopeAccount {
    /// Settled spend (may exceed the limit: recorded overspend).
    pub spent: u64,
    /// Held by reservations and leases that have not ended.
    pub reserved: u64,
}

/// Why a ledger call failed (a refusal is not an error: see [`Reserve::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// The call is malformed (empty id, no scopes, an amount the backend cannot hold).
    Invalid(String),
    /// The id names a hold that already ended; ids are single-use.
    IdReused(String),
    /// The backend failed; `transient` errors may succeed when retried.
    Backend {
        /// What failed, for logs and error bodies.
        message: String,
        /// Whether a retry may succeed (Redis unreachable, CAS contention).
        transient: bool,
    },
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Invalid(why) => write!(f, "invalid ledger call: {why}"),
            LedgerError::IdReused(id) => write!(f, "hold {id:?} already ended; ids are single-use"),
            LedgerError::Backend { message, .. } => write!(f, "ledger backend: {message}"),
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<StoreError> for LedgerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::CasMismatch | StoreError::Contended => LedgerError::Backend {
                message: "the ledger record stayed contended".into(),
                transient: true,
            },
            StoreError::Backend { message, transient } => {
                LedgerError::Backend { message, transient }
            }
        }
    }
}

/// The budget-engine contract (see the module doc for the semantics every backend
/// honours; `tests/conformance.rs` in `detour-state` checks them on every backend).
pub trait Ledger {
    /// Holds `estimate_nanos` in every scope or in none, until `now_ms + ttl_ms`.
    fn reserve(
        &mut self,
        request_id: &str,
        scopes: &[ScopeLimit],
        estimate_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Reserve, LedgerError>;

    /// Replaces the hold by `actual_nanos` of spend in each of its scopes. Unconditional
    /// and idempotent.
    fn settle(
        &mut self,
        request_id: &str,
        actual_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Ending, LedgerError>;

    /// Gives the hold back. Idempotent; a release after expiry is [`Ending::Repeated`].
    fn release(&mut self, request_id: &str, now_ms: UnixMillis) -> Result<Ending, LedgerError>;

    /// Expires every hold whose ttl has passed at `now_ms`; returns their ids.
    fn expire(&mut self, now_ms: UnixMillis) -> Result<Vec<String>, LedgerError>;

    /// A scope's counters (zero for a scope never used).
    fn account(&self, scope_key: &str) -> Result<ScopeAccount, LedgerError>;

    /// Grants up to `want_nanos` in every scope at once (the room of the tightest scope
    /// caps it). Always holds and answers an id, with 0 granted when a scope is full, so
    /// the holder can report spend under it; [`Lease::room_nanos`] is the room left
    /// after the grant.
    fn lease(
        &mut self,
        holder_id: &str,
        scopes: &[ScopeLimit],
        want_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Lease, LedgerError>;

    /// Records `used_nanos` as spend and frees the rest of the lease. Unconditional (also
    /// above the grant, and after expiry: [`Ending::AfterExpiry`]) and idempotent.
    fn return_lease(
        &mut self,
        lease_id: &str,
        used_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Returned, LedgerError>;
}

/// Checks what every backend requires of a reservation or lease.
pub fn validate(id: &str, scopes: &[ScopeLimit]) -> Result<(), LedgerError> {
    if id.is_empty() {
        return Err(LedgerError::Invalid("the id is empty".into()));
    }
    if scopes.is_empty() {
        return Err(LedgerError::Invalid("no scopes".into()));
    }
    for scope in scopes {
        if scope.key.is_empty() || scope.key.contains('\n') {
            return Err(LedgerError::Invalid(format!(
                "scope key {:?} is empty or contains a newline",
                scope.key
            )));
        }
    }
    Ok(())
}

/// One hold in [`State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    scopes: Vec<String>,
    amount: u64,
    expires: UnixMillis,
}

/// The whole ledger of a [`LedgerOnStore`], versioned JSON under [`STATE_KEY`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    v: u8,
    accounts: BTreeMap<String, ScopeAccount>,
    held: BTreeMap<String, Hold>,
    /// Expired holds, remembered until `forget_at` so a late settle records its spend.
    expired: BTreeMap<String, (Hold, UnixMillis)>,
    /// Settled, released and returned ids, newest last, at most [`DONE_MEMORY`].
    done: VecDeque<String>,
    /// Lease ids are `lease/<holder>/<seq>`.
    seq: u64,
}

const STATE_VERSION: u8 = 1;

impl State {
    fn decode(bytes: Option<&[u8]>) -> Result<State, LedgerError> {
        match bytes {
            None | Some([]) => Err(LedgerError::Backend {
                message: format!("{STATE_KEY} is missing: create the ledger before traffic"),
                transient: false,
            }),
            Some(bytes) => match serde_json::from_slice::<State>(bytes) {
                Ok(state) if state.v == STATE_VERSION => Ok(state),
                _ => Err(LedgerError::Backend {
                    message: format!("{STATE_KEY} is not a version {STATE_VERSION} ledger"),
                    transient: false,
                }),
            },
        }
    }

    fn encode(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    /// Expires holds due at `now` and forgets expired holds past their memory.
    fn sweep(&mut self, now: UnixMillis, done_ttl: u64) -> Vec<String> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, hold)| hold.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            if let Some(hold) = self.held.remove(id) {
                self.unhold(&hold);
                let forget_at = now.saturating_add(done_ttl);
                self.expired.insert(id.clone(), (hold, forget_at));
            }
        }
        self.expired.retain(|_, (_, forget_at)| *forget_at > now);
        due
    }

    fn unhold(&mut self, hold: &Hold) {
        for key in &hold.scopes {
            let account = self.accounts.entry(key.clone()).or_default();
            account.reserved = account.reserved.saturating_sub(hold.amount);
        }
    }

    fn spend(&mut self, scopes: &[String], actual: u64) {
        for key in scopes {
            let account = self.accounts.entry(key.clone()).or_default();
            account.spent = account.spent.saturating_add(actual);
        }
    }

    /// Room left in a scope: `None` when it is already past its limit (overspent).
    fn room(&self, scope: &ScopeLimit) -> Option<u64> {
        let account = self.accounts.get(&scope.key).copied().unwrap_or_default();
        scope
            .limit_nanos
            .checked_sub(account.spent.saturating_add(account.reserved))
    }

    /// The first scope (in the caller's order) where `amount` does not fit.
    fn refusing(&self, scopes: &[ScopeLimit], amount: u64) -> Option<String> {
        scopes
            .iter()
            .find(|scope| self.room(scope).is_none_or(|room| amount > room))
            .map(|scope| scope.key.clone())
    }

    /// The room of the tightest scope.
    fn least_room(&self, scopes: &[ScopeLimit]) -> u64 {
        scopes
            .iter()
            .map(|scope| self.room(scope).unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    fn hold(&mut self, id: String, scopes: &[ScopeLimit], amount: u64, expires: UnixMillis) {
        for scope in scopes {
            let account = self.accounts.entry(scope.key.clone()).or_default();
            account.reserved = account.reserved.saturating_add(amount);
        }
        let hold = Hold {
            scopes: scopes.iter().map(|s| s.key.clone()).collect(),
            amount,
            expires,
        };
        self.held.insert(id, hold);
    }

    fn remember_done(&mut self, id: &str) {
        self.done.push_back(id.to_string());
        while self.done.len() > DONE_MEMORY {
            self.done.pop_front();
        }
    }

    /// Settle (`Some(actual)`) or release (`None`).
    fn finish(&mut self, id: &str, actual: Option<u64>) -> Ending {
        if let Some(hold) = self.held.remove(id) {
            self.unhold(&hold);
            if let Some(actual) = actual {
                self.spend(&hold.scopes, actual);
            }
            self.remember_done(id);
            return Ending::Applied;
        }
        if let Some((hold, _)) = self.expired.remove(id) {
            self.remember_done(id);
            return match actual {
                Some(actual) => {
                    self.spend(&hold.scopes, actual);
                    Ending::AfterExpiry
                }
                None => Ending::Repeated,
            };
        }
        if self.done.iter().any(|d| d == id) {
            Ending::Repeated
        } else {
            Ending::Unknown
        }
    }
}

/// [`Ledger`] over any [`Store`]: one CAS-updated record (see the module doc).
#[derive(Debug)]
pub struct LedgerOnStore<S> {
    store: S,
    done_ttl_ms: u64,
}

/// How many times a call re-runs [`update`] after it gave up on contention: every retry
/// means another worker's change landed, so the ledger as a whole is making progress.
const CONTENDED_RETRIES: u32 = 64;

impl<S: Store> LedgerOnStore<S> {
    /// A ledger on `store`, creating its record if absent. Run this before concurrent
    /// traffic: a first write in shared data is unconditional.
    pub fn new(mut store: S) -> Result<Self, LedgerError> {
        if store
            .get(STATE_KEY)?
            .is_none_or(|(bytes, _)| bytes.is_empty())
        {
            let empty = State {
                v: STATE_VERSION,
                ..State::default()
            };
            let bytes = empty.encode().ok_or_else(|| LedgerError::Backend {
                message: "cannot encode an empty ledger".into(),
                transient: false,
            })?;
            store.set(STATE_KEY, &bytes, None)?;
        }
        Ok(LedgerOnStore {
            store,
            done_ttl_ms: DEFAULT_DONE_TTL_MS,
        })
    }

    /// A ledger on a store whose record already exists (another worker created it).
    pub fn attach(store: S) -> Self {
        LedgerOnStore {
            store,
            done_ttl_ms: DEFAULT_DONE_TTL_MS,
        }
    }

    /// How long an expired hold is remembered for a late settle.
    pub fn with_done_ttl(mut self, done_ttl_ms: u64) -> Self {
        self.done_ttl_ms = done_ttl_ms;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// One atomic change of the record: `change` edits a decoded copy and returns its
    /// result; the copy is written back with CAS (and the change re-run on a lost race).
    fn change<T>(
        &mut self,
        mut change: impl FnMut(&mut State) -> Result<(T, bool), LedgerError>,
    ) -> Result<T, LedgerError> {
        for _ in 0..CONTENDED_RETRIES {
            let outcome = update(&mut self.store, STATE_KEY, |bytes| {
                let mut state = match State::decode(bytes) {
                    Ok(state) => state,
                    Err(err) => return (None, Err(err)),
                };
                match change(&mut state) {
                    Ok((result, true)) => match state.encode() {
                        Some(bytes) => (Some(bytes), Ok(result)),
                        None => (
                            None,
                            Err(LedgerError::Backend {
                                message: "cannot encode the ledger".into(),
                                transient: false,
                            }),
                        ),
                    },
                    Ok((result, false)) => (None, Ok(result)),
                    Err(err) => (None, Err(err)),
                }
            });
            match outcome {
                Ok(result) => return result,
                Err(StoreError::Contended) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Contended.into())
    }
}

impl<S: Store> Ledger for LedgerOnStore<S> {
    fn reserve(
        &mut self,
        request_id: &str,
        scopes: &[ScopeLimit],
        estimate_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Reserve, LedgerError> {
        validate(request_id, scopes)?;
        let done_ttl = self.done_ttl_ms;
        self.change(|state| {
            let swept = !state.sweep(now_ms, done_ttl).is_empty();
            if state.held.contains_key(request_id) {
                return Ok((Ok(Reserve::Reserved), swept));
            }
            if state.expired.contains_key(request_id) || state.done.iter().any(|d| d == request_id)
            {
                return Ok((Err(LedgerError::IdReused(request_id.to_string())), swept));
            }
            if let Some(scope) = state.refusing(scopes, estimate_nanos) {
                return Ok((Ok(Reserve::Refused { scope }), swept));
            }
            let expires = now_ms.saturating_add(ttl_ms);
            state.hold(request_id.to_string(), scopes, estimate_nanos, expires);
            Ok((Ok(Reserve::Reserved), true))
        })?
    }

    fn settle(
        &mut self,
        request_id: &str,
        actual_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Ending, LedgerError> {
        let done_ttl = self.done_ttl_ms;
        self.change(|state| {
            // Sweep first, as Redis does: a settle after the ttl is a late settle on
            // every backend, whoever swept.
            state.sweep(now_ms, done_ttl);
            let ending = state.finish(request_id, Some(actual_nanos));
            Ok((ending, true))
        })
    }

    fn release(&mut self, request_id: &str, now_ms: UnixMillis) -> Result<Ending, LedgerError> {
        let done_ttl = self.done_ttl_ms;
        self.change(|state| {
            state.sweep(now_ms, done_ttl);
            let ending = state.finish(request_id, None);
            Ok((ending, true))
        })
    }

    fn expire(&mut self, now_ms: UnixMillis) -> Result<Vec<String>, LedgerError> {
        let done_ttl = self.done_ttl_ms;
        self.change(|state| Ok((state.sweep(now_ms, done_ttl), true)))
    }

    fn account(&self, scope_key: &str) -> Result<ScopeAccount, LedgerError> {
        let current = self.store.get(STATE_KEY)?;
        let state = State::decode(current.as_ref().map(|(bytes, _)| bytes.as_slice()))?;
        Ok(state.accounts.get(scope_key).copied().unwrap_or_default())
    }

    fn lease(
        &mut self,
        holder_id: &str,
        scopes: &[ScopeLimit],
        want_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Lease, LedgerError> {
        validate(holder_id, scopes)?;
        let done_ttl = self.done_ttl_ms;
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        self.change(|state| {
            state.sweep(now_ms, done_ttl);
            let room = state.least_room(scopes);
            let granted = want_nanos.min(room);
            // Held even when 0 is granted: the holder needs an id to report spend under.
            state.seq = state.seq.saturating_add(1);
            let id = format!("lease/{holder_id}/{}", state.seq);
            state.hold(id.clone(), scopes, granted, expires_at_ms);
            let lease = Lease {
                id,
                granted_nanos: granted,
                room_nanos: room.saturating_sub(granted),
                expires_at_ms,
            };
            Ok((lease, true))
        })
    }

    fn return_lease(
        &mut self,
        lease_id: &str,
        used_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Returned, LedgerError> {
        let done_ttl = self.done_ttl_ms;
        self.change(|state| {
            state.sweep(now_ms, done_ttl);
            let first = state
                .held
                .get(lease_id)
                .or_else(|| state.expired.get(lease_id).map(|(hold, _)| hold))
                .and_then(|hold| hold.scopes.first().cloned());
            let ending = state.finish(lease_id, Some(used_nanos));
            let spent_nanos = match ending {
                Ending::Applied | Ending::AfterExpiry => first
                    .and_then(|key| state.accounts.get(&key).map(|a| a.spent))
                    .unwrap_or(0),
                Ending::Repeated | Ending::Unknown => 0,
            };
            Ok((
                Returned {
                    ending,
                    spent_nanos,
                },
                true,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Scope;
    use crate::period::Period;
    use crate::store::MemoryStore;

    fn scope(key: &str, limit: u64) -> ScopeLimit {
        ScopeLimit {
            key: key.into(),
            limit_nanos: limit,
        }
    }

    #[test]
    fn scope_keys_follow_budget_keys() {
        let limit = Limit {
            scope: Scope::Tag("Spec".into()),
            limit_nanos: 5,
            period: Period::Day,
            halt_at_percent: None,
        };
        let now = 1_795_460_787_000;
        let s = ScopeLimit::for_budget(&limit, now);
        assert_eq!(s.key, budget::key(&limit.scope, Period::Day.start(now)));
        assert_eq!(s.limit_nanos, 5);
    }

    #[test]
    fn missing_record_is_an_error_not_an_empty_ledger() {
        let ledger = LedgerOnStore::attach(MemoryStore::default());
        assert!(matches!(
            ledger.account("x"),
            Err(LedgerError::Backend {
                transient: false,
                ..
            })
        ));
    }

    #[test]
    fn the_state_record_round_trips_and_rejects_other_versions() {
        let mut ledger = LedgerOnStore::new(MemoryStore::default()).unwrap();
        ledger.reserve("r", &[scope("a", 10)], 4, 0, 10).unwrap();
        let bytes = ledger.store().get(STATE_KEY).unwrap().unwrap().0;
        let state = State::decode(Some(&bytes)).unwrap();
        assert_eq!(state.accounts["a"].reserved, 4);
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace("\"v\":1", "\"v\":2");
        assert!(State::decode(Some(other.as_bytes())).is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut ledger = LedgerOnStore::new(MemoryStore::default()).unwrap();
        assert!(matches!(
            ledger.reserve("", &[scope("a", 1)], 1, 0, 1),
            Err(LedgerError::Invalid(_))
        ));
        assert!(matches!(
            ledger.reserve("r", &[], 1, 0, 1),
            Err(LedgerError::Invalid(_))
        ));
        assert!(matches!(
            ledger.lease("h", &[scope("a\nb", 1)], 1, 0, 1),
            Err(LedgerError::Invalid(_))
        ));
    }

    #[test]
    fn a_lease_always_has_an_id_and_says_the_room_left() {
        let mut ledger = LedgerOnStore::new(MemoryStore::default()).unwrap();
        let scopes = [scope("total", 1_000), scope("tag/T", 300)];
        ledger.reserve("r", &scopes, 100, 0, 10_000).unwrap();
        // Tag room 200, total room 900: the tag caps the grant and the room left.
        let first = ledger.lease("h", &scopes, 150, 0, 10_000).unwrap();
        assert_eq!((first.granted_nanos, first.room_nanos), (150, 50));
        let second = ledger.lease("h", &scopes, 500, 0, 10_000).unwrap();
        assert_eq!((second.granted_nanos, second.room_nanos), (50, 0));
        // Full: nothing granted, but a hold and an id all the same.
        let none = ledger.lease("h", &scopes, 10, 0, 10_000).unwrap();
        assert_eq!((none.granted_nanos, none.room_nanos), (0, 0));
        assert!(!none.id.is_empty());
        assert_ne!(none.id, second.id);
        assert_eq!(ledger.account("tag/T").unwrap().reserved, 300);
        // Spend reported under the empty lease is recorded, once.
        assert_eq!(
            ledger.return_lease(&none.id, 7, 0).unwrap().ending,
            Ending::Applied
        );
        assert_eq!(
            ledger.return_lease(&none.id, 7, 0).unwrap().ending,
            Ending::Repeated
        );
        let tag = ledger.account("tag/T").unwrap();
        assert_eq!((tag.spent, tag.reserved), (7, 300));
        // An overspent scope grants 0 and reports no room (never a wrapped value).
        let over = [scope("tag/T", 5)];
        let lease = ledger.lease("h", &over, 10, 0, 10_000).unwrap();
        assert_eq!((lease.granted_nanos, lease.room_nanos), (0, 0));
        assert!(!lease.id.is_empty());
    }

    #[test]
    fn done_memory_is_bounded_and_forgetting_never_double_counts() {
        let mut ledger = LedgerOnStore::new(MemoryStore::default()).unwrap();
        let s = [scope("a", u64::MAX)];
        for i in 0..(DONE_MEMORY + 10) {
            let id = format!("r{i}");
            ledger.reserve(&id, &s, 1, 0, 100).unwrap();
            ledger.settle(&id, 1, 0).unwrap();
        }
        let spent = ledger.account("a").unwrap().spent;
        // The oldest ids are forgotten: a repeat is Unknown and still changes nothing.
        assert_eq!(ledger.settle("r0", 1, 0).unwrap(), Ending::Unknown);
        assert_eq!(
            ledger
                .settle(&format!("r{}", DONE_MEMORY + 9), 1, 0)
                .unwrap(),
            Ending::Repeated
        );
        assert_eq!(ledger.account("a").unwrap().spent, spent);
    }
}
