//! The root tick's side of fleet mode: which calls to make to the fleet ledger, and what
//! their answers change. Sans-IO: the glue reads the records, asks [`plan`] for a call,
//! carries it out with `dispatch_http_call`, and feeds the answer to [`on_answer`].
//!
//! One **slot** is one budget limit in one period, or one deployment's `rpm`/`tpm` in one
//! minute (`rates.rs`). Its local account (the one requests reserve in) carries `cover`:
//! what this process may commit. Its [`Slot`] record (`detour/v1/fleet/…`) carries the
//! leases behind it:
//!
//! ```text
//! cover = flushed + Σ unexpired lease grants + allowance
//! ```
//!
//! - `flushed` is the local spend already reported to the fleet, as the `used` of lease
//!   returns.
//! - A lease is **returned** (with every unreported spend as its `used`; spend beyond
//!   its grant comes off the newer leases' local grants) only when `cover ≥ spent +
//!   reserved` stays true without it, checked in the same CAS that lowers the cover.
//! - A busy slot takes a new lease every sync interval and then returns the old one:
//!   spend reaches the fleet within about one interval.
//! - `allowance` is `local_cap × limit`, only while the ledger is unreachable and the
//!   scope fails open.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FailMode, Fleet};
use crate::budget::{self, Account};
use crate::config::Config;
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// How often a slot the fleet said is full asks again, while requests find it full.
const FULL_RECHECK_MS: u64 = 100;

/// Leases a slot holds at most; a slot at the cap only returns until one is gone.
const MAX_LEASES: usize = 3;

/// A slot idle (nothing spent or in flight) for this many sync intervals gives its
/// leases back, so a quiet process does not sit on room a busy one needs.
const IDLE_INTERVALS: u64 = 10;

/// One budget limit in one period, as the tick sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    /// Index of the limit in `config.budgets.limits`.
    pub limit_idx: usize,
    /// The local account (`budget::key`).
    pub account_key: String,
    /// The slot's lease record.
    pub slot_key: String,
    /// The scope's key in the fleet ledger.
    pub ledger_key: String,
    /// The limit, nano-dollars.
    pub limit_nanos: u64,
    /// Whether this is the period containing now (else a past period being drained).
    pub current: bool,
    /// The start of the slot's period.
    pub period_start: UnixMillis,
    /// A budget (nano-dollars) or a rate (requests or tokens per minute).
    pub kind: SlotKind,
}

/// What a slot counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A budget: nano-dollars per period.
    Budget,
    /// RPM or TPM: requests or tokens per minute.
    Rate,
}

/// The slots to look after at `now`: every budget's current period and every RPM/TPM's
/// current minute, and the period before each (whose leases still have to be returned
/// with their spend).
pub fn slots(config: &Config, now: UnixMillis) -> Vec<SlotSpec> {
    let mut out = budget_slots(config, now);
    out.extend(super::rates::slots(config, now));
    out
}

fn budget_slots(config: &Config, now: UnixMillis) -> Vec<SlotSpec> {
    let mut out = Vec::new();
    for (limit_idx, limit) in config.budgets.limits.iter().enumerate() {
        let start = limit.period.start(now);
        let previous = limit.period.start(start.saturating_sub(1));
        for (period_start, current) in [(start, true), (previous, false)] {
            if !current && previous == start {
                continue;
            }
            let account_key = budget::key(&limit.scope, period_start);
            out.push(SlotSpec {
                limit_idx,
                slot_key: slot_key(&account_key),
                ledger_key: format!("budget/{}/{period_start}", limit.scope),
                account_key,
                limit_nanos: limit.limit_nanos,
                current,
                period_start,
                kind: SlotKind::Budget,
            });
        }
    }
    out
}

/// The lease record of the slot whose account is `account_key`.
pub fn slot_key(account_key: &str) -> String {
    let rest = account_key
        .strip_prefix("detour/v1/")
        .unwrap_or(account_key);
    format!("detour/v1/fleet/{rest}")
}

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The ledger's id for it.
    pub id: String,
    /// What it holds; 0 once it expired (the ledger has taken it back).
    pub granted: u64,
    /// When it was granted.
    pub taken_at: UnixMillis,
    /// When the ledger takes it back unless it is returned.
    pub expires_at: UnixMillis,
}

/// A return sent and not yet acknowledged: retried with the same amount until it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Returning {
    /// The lease.
    pub id: String,
    /// The spend reported with it.
    pub used: u64,
    /// What it gives back to the fleet (its grant beyond `used`).
    #[serde(default)]
    pub freed: u64,
}

/// A slot's lease bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Leases held, oldest first.
    pub leases: Vec<Held>,
    /// Local spend reported to the fleet.
    pub flushed: u64,
    /// A return in flight.
    pub returning: Option<Returning>,
    /// A call for this slot is in flight until then (one call per slot at a time).
    pub busy_until: UnixMillis,
    /// Fail-open room beyond the leases while the ledger is unreachable.
    pub allowance: u64,
    /// The fleet's room in this scope after the last grant, as the ledger said.
    pub room: Option<u64>,
    /// `spent + reserved` at the last look, and since when it has not moved.
    pub last_commit: u64,
    /// Since when `last_commit` has not moved.
    pub still_since: UnixMillis,
    /// Rate slots: the minute the record is for (its key is reused a ring later).
    #[serde(default)]
    pub period_start: UnixMillis,
    /// What this process committed in the last sync interval (the slice it will want).
    #[serde(default)]
    pub pace: u64,
    /// `spent + reserved` when `pace` was last measured, and when.
    #[serde(default)]
    pub pace_from: (u64, UnixMillis),
}

impl Slot {
    /// Decodes a record; absent or unreadable reads as empty.
    pub fn decode(bytes: Option<&[u8]>) -> Slot {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What this process may commit in the scope.
    pub fn cover(&self) -> u64 {
        self.leases
            .iter()
            .fold(self.flushed, |sum, l| sum.saturating_add(l.granted))
            .saturating_add(self.allowance)
    }

    /// What its leases hold.
    pub fn granted(&self) -> u64 {
        self.leases
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.granted))
    }
}

/// A call to the fleet ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Ask for `want` more.
    Lease {
        /// Nano-dollars.
        want: u64,
    },
    /// Give a lease back, reporting `used` as spend.
    Return(Returning),
}

impl Call {
    /// The HTTP request: path and JSON body, for the state service's API.
    pub fn request(&self, spec: &SlotSpec, fleet: &Fleet, holder: &str) -> (String, Vec<u8>) {
        let (path, body) = match self {
            Call::Lease { want } => (
                "/v1/lease",
                json!({
                    "holder_id": holder,
                    "scopes": [{"key": spec.ledger_key, "limit_nanos": spec.limit_nanos}],
                    "want_nanos": want,
                    "ttl_ms": fleet.lease_ttl_ms,
                }),
            ),
            Call::Return(r) => (
                "/v1/lease/return",
                json!({"lease_id": r.id, "used_nanos": r.used}),
            ),
        };
        (
            path.to_string(),
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }
}

/// Why the tick looks at a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The sync interval's full round: flush, renew, consolidate, idle.
    Round,
    /// A tick between rounds: only a request waiting for cover is served.
    Urgent,
}

/// The next call for a slot, if it needs one. `account` is its local account.
pub fn plan(
    fleet: &Fleet,
    spec: &SlotSpec,
    slot: &Slot,
    account: &Account,
    now: UnixMillis,
    pass: Pass,
) -> Option<Call> {
    if slot.busy_until > now {
        return None;
    }
    let waiting = account.wanted > 0;
    let urgent = pass == Pass::Urgent;
    // A full scope refuses at once; whether room came back (other processes return
    // what they did not use every interval) is asked every few ticks.
    if urgent && account.full_since != 0 && now < account.full_since.saturating_add(FULL_RECHECK_MS)
    {
        return None;
    }
    if let Some(returning) = &slot.returning {
        return (!urgent || waiting).then(|| Call::Return(returning.clone()));
    }
    let unflushed = account.spent.saturating_sub(slot.flushed);
    let granted = slot.granted();
    // The oldest lease goes back with every unreported spend as its `used` (so spend
    // reaches the ledger within an interval), when what is committed stays covered
    // without it (`without_lease`; `begin` checks again atomically).
    let return_oldest = || {
        let oldest = slot.leases.first()?;
        let call = Returning {
            id: oldest.id.clone(),
            used: unflushed,
            freed: oldest.granted.saturating_sub(unflushed),
        };
        (without_lease(slot, &call).cover() >= account.committed()).then_some(Call::Return(call))
    };
    if !spec.current {
        // A past period: report its spend and give its room back; no new room.
        if urgent {
            return None;
        }
        if slot.leases.is_empty() && unflushed > 0 {
            return Some(Call::Lease { want: 0 });
        }
        return return_oldest();
    }
    if slot.leases.len() > 1 && !urgent {
        if let Some(call) = return_oldest() {
            return Some(call);
        }
    }
    // Idle: nothing in flight, nothing spent for a while, nobody waiting. Its leases go
    // back to the fleet, one per round, and it asks for none until a request waits.
    let idle_for = now.saturating_sub(slot.still_since);
    let idle = !waiting
        && account.reserved == 0
        && account.committed() == slot.last_commit
        && idle_for >= fleet.sync_interval_ms.saturating_mul(IDLE_INTERVALS);
    if idle {
        return if urgent { None } else { return_oldest() };
    }
    let room = slot.cover().saturating_sub(account.committed());
    let remaining = slot
        .room
        .unwrap_or(spec.limit_nanos)
        .saturating_add(granted);
    // A slice: its share of the room left, or what this process used in the last
    // interval if more (a busy process near the end would otherwise wait for a lease
    // every few requests); the ledger caps the grant at the room there is.
    let slice = share(remaining, fleet.lease_permille).max(slot.pace).max(1);
    let want = slice.max(account.wanted);
    let newest = slot.leases.last();
    // Now (any tick): no lease, a request waiting, or the room running low.
    let need_now = slot.leases.is_empty() || (waiting && account.wanted > room) || room < slice / 2;
    // On the round also: report spend, renew before expiry.
    let need_round = (unflushed > 0
        && newest.is_some_and(|l| now >= l.taken_at.saturating_add(fleet.sync_interval_ms)))
        || newest.is_some_and(|l| now.saturating_add(fleet.lease_ttl_ms / 2) >= l.expires_at);
    let need = need_now || (!urgent && need_round);
    if need && slot.leases.len() < MAX_LEASES {
        // A slot the fleet has no room for asks again only when a request waits or spend
        // has to be reported.
        let starved = slot.room == Some(0) && !waiting && unflushed == 0;
        if !starved || slot.leases.is_empty() {
            return Some(Call::Lease { want });
        }
    }
    None
}

/// `permille` ‰ of `amount`, rounded down.
fn share(amount: u64, permille: u32) -> u64 {
    let scaled = u128::from(amount).saturating_mul(u128::from(permille)) / 1000;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Marks the slot busy with `call` and records what it changes at once: a return leaves
/// the slot (its spend counts as reported) before the answer, so no request relies on
/// the room it gives back. Returns false when another worker took the slot first, or
/// when requests admitted since the plan would no longer be covered without the lease
/// (the return waits for a later round).
pub fn begin<S: Store + ?Sized>(
    store: &mut S,
    fleet: &Fleet,
    spec: &SlotSpec,
    call: &Call,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let busy_until = now
        .saturating_add(fleet.call_timeout_ms)
        .saturating_add(1_000);
    let claimed = update(store, &spec.slot_key, |bytes| {
        let mut slot = Slot::decode(bytes);
        if slot.busy_until > now {
            return (None, None);
        }
        slot.busy_until = busy_until;
        (Some(slot.encode()), Some(slot))
    })?;
    let Some(slot) = claimed else {
        return Ok(false);
    };
    let Call::Return(r) = call else {
        return Ok(true);
    };
    if slot.returning.is_some() {
        // A retry: the slot already counts it.
        return Ok(true);
    }
    let after = without_lease(&slot, r);
    let cover = after.cover();
    // Lower the cover where requests reserve, and only if what they hold fits: checked
    // and written in one CAS on the account, so no reservation slips in between.
    let fits = update(store, &spec.account_key, |bytes| {
        let mut account = Account::decode(bytes);
        if account.committed() > cover {
            return (None, false);
        }
        account.cover = cover;
        (Some(account.encode()), true)
    })?;
    if !fits {
        abort(store, spec)?;
        return Ok(false);
    }
    update(store, &spec.slot_key, |bytes| {
        let slot = Slot::decode(bytes);
        let after = without_lease(&slot, r);
        (Some(after.encode()), ())
    })?;
    Ok(true)
}

/// The slot once lease `r.id` went back with `r.used`. Spend beyond its grant was made
/// under the newer leases: it comes off their local grants (the ledger still holds them
/// whole until they return, so it over-counts for that long, never under-counts), and
/// the cover stays what it was but for the room given back.
fn without_lease(slot: &Slot, r: &Returning) -> Slot {
    let mut after = slot.clone();
    let granted = after
        .leases
        .iter()
        .find(|l| l.id == r.id)
        .map_or(0, |l| l.granted);
    after.leases.retain(|l| l.id != r.id);
    after.flushed = after.flushed.saturating_add(r.used);
    let mut excess = r.used.saturating_sub(granted);
    for lease in &mut after.leases {
        let taken = excess.min(lease.granted);
        lease.granted = lease.granted.saturating_sub(taken);
        excess = excess.saturating_sub(taken);
    }
    after.returning = Some(r.clone());
    after
}

/// What the state service answered, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A lease: its id, grant and the fleet's room after it.
    Leased {
        /// The lease id.
        id: String,
        /// Nano-dollars granted (0 when the scope is full).
        granted: u64,
        /// Room left in the scope after the grant.
        room: Option<u64>,
    },
    /// The return was recorded (or was already), leaving `spent` in the scope (0 when
    /// this return changed nothing).
    Returned {
        /// The fleet's spend in the scope right after this return.
        spent: u64,
    },
    /// No usable answer: the ledger is unreachable (or broken).
    Failed,
}

/// Parses an answer to `call`: status and body.
pub fn parse_answer(call: &Call, status: Option<u16>, body: &[u8]) -> Answer {
    if !status.is_some_and(|s| (200..300).contains(&s)) {
        return Answer::Failed;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Answer::Failed;
    };
    match call {
        Call::Lease { .. } => {
            let id = value.get("lease_id").and_then(|v| v.as_str());
            let granted = value.get("granted_nanos").and_then(|v| v.as_u64());
            match (id, granted) {
                (Some(id), Some(granted)) if !id.is_empty() || granted == 0 => Answer::Leased {
                    id: id.to_string(),
                    granted,
                    room: value.get("room_nanos").and_then(|v| v.as_u64()),
                },
                _ => Answer::Failed,
            }
        }
        Call::Return(_) => match value.get("ending").and_then(|v| v.as_str()) {
            Some(_) => Answer::Returned {
                spent: value
                    .get("spent_nanos")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
            },
            None => Answer::Failed,
        },
    }
}

/// What an answer changed that the glue reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// The ledger answered (after earlier failures: it recovered).
    Answered,
    /// The ledger did not answer.
    Unreachable,
}

/// Applies the answer to `call` to the slot and its account's cover.
pub fn on_answer<S: Store + ?Sized>(
    store: &mut S,
    fleet: &Fleet,
    spec: &SlotSpec,
    call: &Call,
    answer: &Answer,
    now: UnixMillis,
) -> Result<Reachability, StoreError> {
    let mode = match spec.kind {
        SlotKind::Budget => fleet.budgets_unreachable,
        SlotKind::Rate => fleet.rates_unreachable,
    };
    let open = mode == FailMode::Open;
    let allowance = share(spec.limit_nanos, fleet.local_cap_permille);
    let (reach, cover) = update(store, &spec.slot_key, |bytes| {
        let mut slot = Slot::decode(bytes);
        slot.busy_until = 0;
        let reach = match (call, answer) {
            (Call::Lease { .. }, Answer::Leased { id, granted, room }) => {
                if !id.is_empty() && !slot.leases.iter().any(|l| l.id == *id) {
                    slot.leases.push(Held {
                        id: id.clone(),
                        granted: *granted,
                        taken_at: now,
                        expires_at: now.saturating_add(fleet.lease_ttl_ms),
                    });
                }
                slot.room = *room;
                // A lease is taken for traffic: the idle clock starts again.
                slot.still_since = now;
                Reachability::Answered
            }
            (Call::Return(r), Answer::Returned { .. }) => {
                if slot.returning.as_ref().is_some_and(|x| x.id == r.id) {
                    slot.returning = None;
                }
                Reachability::Answered
            }
            _ => Reachability::Unreachable,
        };
        slot.allowance = match reach {
            Reachability::Answered => 0,
            Reachability::Unreachable if open => allowance,
            Reachability::Unreachable => 0,
        };
        let cover = slot.cover();
        (Some(slot.encode()), (reach, cover))
    })?;
    // The account in one write: the new cover, and what the answer says of fullness.
    // A lease answers the request that asked (a later one asks anew) and whether the
    // fleet has room left (none: refuse at once until a lease finds some); a return
    // of unused room means the fleet has room again.
    let full_since = match (call, answer) {
        (Call::Lease { .. }, Answer::Leased { room, .. }) => {
            Some(if *room == Some(0) { now.max(1) } else { 0 })
        }
        (Call::Return(r), Answer::Returned { .. }) if r.freed > 0 => Some(0),
        _ => None,
    };
    let leased = matches!(answer, Answer::Leased { .. });
    update(store, &spec.account_key, |bytes| {
        let mut account = Account::decode(bytes);
        let before = account;
        account.cover = cover;
        if leased {
            account.wanted = 0;
        }
        if let Some(full_since) = full_since {
            account.full_since = full_since;
        }
        let changed = account != before;
        (changed.then(|| account.encode()), ())
    })?;
    Ok(reach)
}

/// What a return's answer says about the fleet's spend: the thresholds it crossed (each
/// crossed by exactly one return across the fleet, since the ledger reads the spend in
/// the same atomic change), and the halt when it reached `halt_at`. Budgets only.
pub fn on_report<S: Store + ?Sized>(
    store: &mut S,
    config: &Config,
    spec: &SlotSpec,
    call: &Call,
    answer: &Answer,
    now: UnixMillis,
) -> Vec<crate::event::Event> {
    let (Call::Return(r), Answer::Returned { spent }, SlotKind::Budget) = (call, answer, spec.kind)
    else {
        return Vec::new();
    };
    let Some(limit) = config.budgets.limits.get(spec.limit_idx) else {
        return Vec::new();
    };
    if *spent == 0 {
        return Vec::new();
    }
    let before = spent.saturating_sub(r.used);
    let mut events: Vec<crate::event::Event> = budget::THRESHOLDS
        .iter()
        .filter(|p| {
            !budget::reached(before, limit.limit_nanos, **p)
                && budget::reached(*spent, limit.limit_nanos, **p)
        })
        .map(|p| budget::alert(limit, spec.period_start, *p, *spent, now))
        .collect();
    let crossed_halt = limit
        .halt_at_percent
        .is_some_and(|h| !budget::reached(before, limit.limit_nanos, h));
    if crossed_halt {
        events.extend(crate::halt::halt_if_reached(store, limit, *spent, now));
    }
    events
}

/// The start of a round for one slot: leases past their expiry stop counting (the ledger
/// has taken them back; they stay to be returned, which still records their spend), and
/// the idle clock moves.
pub fn refresh<S: Store + ?Sized>(
    store: &mut S,
    fleet: &Fleet,
    spec: &SlotSpec,
    now: UnixMillis,
) -> Result<(Slot, Account), StoreError> {
    let account = read_account(store, spec);
    let commit = account.committed();
    let slot = update(store, &spec.slot_key, |bytes| {
        let mut slot = Slot::decode(bytes);
        let mut changed = false;
        for lease in &mut slot.leases {
            if lease.granted > 0 && now >= lease.expires_at {
                lease.granted = 0;
                changed = true;
            }
        }
        if slot.last_commit != commit || slot.still_since == 0 {
            slot.last_commit = commit;
            slot.still_since = now;
            changed = true;
        }
        let (base, at) = slot.pace_from;
        if now >= at.saturating_add(fleet.sync_interval_ms) {
            slot.pace = if at == 0 {
                0
            } else {
                commit.saturating_sub(base)
            };
            slot.pace_from = (commit, now);
            changed = true;
        }
        let encoded = changed.then(|| slot.encode());
        (encoded, slot)
    })?;
    write_cover(store, spec, slot.cover())?;
    Ok((slot, account))
}

/// The slot's lease record (empty when absent or unreadable).
pub fn read_slot<S: Store + ?Sized>(store: &S, spec: &SlotSpec) -> Slot {
    let record = store.get(&spec.slot_key).ok().flatten();
    Slot::decode(record.as_ref().map(|(b, _)| b.as_slice()))
}

/// The slot's local account (empty when absent or unreadable).
pub fn read_account<S: Store + ?Sized>(store: &S, spec: &SlotSpec) -> Account {
    let record = store.get(&spec.account_key).ok().flatten();
    Account::decode(record.as_ref().map(|(b, _)| b.as_slice()))
}

/// Writes the slot's cover into its account, where requests check it.
fn write_cover<S: Store + ?Sized>(
    store: &mut S,
    spec: &SlotSpec,
    cover: u64,
) -> Result<(), StoreError> {
    update(store, &spec.account_key, |bytes| {
        let mut account = Account::decode(bytes);
        if account.cover == cover {
            return (None, ());
        }
        account.cover = cover;
        (Some(account.encode()), ())
    })
}

/// Forgets a slot's call in flight (the call could not be sent).
pub fn abort<S: Store + ?Sized>(store: &mut S, spec: &SlotSpec) -> Result<(), StoreError> {
    update(store, &spec.slot_key, |bytes| {
        let mut slot = Slot::decode(bytes);
        slot.busy_until = 0;
        (Some(slot.encode()), ())
    })
}

/// The process's fleet status: when the ledger stopped answering (absent or 0: it
/// answers).
pub const STATUS_KEY: &str = "detour/v1/fleet/status";

/// The process's holder id (leases are named after it).
pub const HOLDER_KEY: &str = "detour/v1/fleet/holder";

/// Records whether the ledger answered; returns the event when that changed.
pub fn note_reach<S: Store + ?Sized>(
    store: &mut S,
    fleet: &Fleet,
    reach: Reachability,
    now: UnixMillis,
) -> Option<crate::event::Event> {
    let since = update(store, STATUS_KEY, |bytes| {
        let since = bytes
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        match reach {
            Reachability::Answered if since != 0 => (Some(0u64.to_le_bytes().to_vec()), since),
            Reachability::Unreachable if since == 0 => (Some(now.max(1).to_le_bytes().to_vec()), 0),
            _ => (None, u64::MAX),
        }
    })
    .ok()?;
    match (reach, since) {
        (_, u64::MAX) => None,
        (Reachability::Unreachable, _) => Some(crate::event::Event::FleetUnreachable {
            ts: now,
            budgets: fleet.budgets_unreachable.as_str().to_string(),
        }),
        (Reachability::Answered, since) => Some(crate::event::Event::FleetRecovered {
            ts: now,
            outage_ms: now.saturating_sub(since),
        }),
    }
}

/// Whether the ledger is unreachable, as the last call found.
pub fn unreachable<S: Store + ?Sized>(store: &S) -> bool {
    store
        .get(STATUS_KEY)
        .ok()
        .flatten()
        .and_then(|(b, _)| <[u8; 8]>::try_from(b.as_slice()).ok())
        .is_some_and(|b| u64::from_le_bytes(b) != 0)
}

/// Creates the lease records of the current and the next period of every limit where
/// they do not exist yet (their accounts are `budget::ensure_accounts`' to create, on
/// the same occasions and for the same reason: a first write cannot be conditional, so
/// it must not race with the tick).
pub fn ensure_slots<S: Store + ?Sized>(store: &mut S, config: &Config, now: UnixMillis) {
    for limit in &config.budgets.limits {
        for start in [limit.period.start(now), limit.period.end(now)] {
            let key = slot_key(&budget::key(&limit.scope, start));
            if let Ok(None) = store.get(&key) {
                let _ = store.set(&key, &Slot::default().encode(), None);
            }
        }
    }
    // Rate slots live on a ring of keys (shared data cannot delete: one key per minute
    // would grow without end). A key is made fresh for its minute before the minute
    // starts, when it still holds a minute long past; nobody uses it then.
    for (account, minute) in super::rates::upcoming_accounts(config, now) {
        let key = slot_key(&account);
        let current = store.get(&key).ok().flatten();
        let stale = current
            .as_ref()
            .is_none_or(|(bytes, _)| Slot::decode(Some(bytes)).period_start != minute);
        if stale {
            let fresh = Slot {
                period_start: minute,
                ..Slot::default()
            };
            let _ = store.set(&key, &fresh.encode(), None);
            let _ = store.set(&account, &Account::default().encode(), None);
        }
    }
}
