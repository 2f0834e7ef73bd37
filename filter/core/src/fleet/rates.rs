//! RPM/TPM across the fleet: each rate-limited deployment has one slot per minute for
//! requests and one for tokens, leased from the fleet ledger like a budget.
//!
//! The fleet counts fixed minutes (a minute's ledger key names its start); each process
//! still applies its own sliding window (`crate::rate`) on top. So the fleet admits at
//! most the limit per calendar minute (plus the overshoot of tokens beyond their
//! estimates), and at most twice the limit in a 60-second span that straddles a minute
//! boundary, which the per-process sliding windows smooth in practice.
//!
//! A request is counted when it is admitted (the provider sees it even if it fails);
//! tokens are held at their estimate and replaced by the reported usage at settlement,
//! or given back when the attempt failed.

use super::sync::{slot_key, SlotKind, SlotSpec};
use crate::budget::{self, Admission};
use crate::config::{Config, Deployment};
use crate::store::Store;
use crate::UnixMillis;

const MINUTE_MS: u64 = 60_000;

/// Minutes on the ring of local keys: a key comes back every ten minutes, long after its
/// minute's leases were returned and its holds settled (an answer that takes longer
/// than that settles into a fresh minute's count, saturating: a count, not money).
const RING: u64 = 10;

/// The local account of a deployment's `rpm` or `tpm` in the minute starting at `minute`.
pub fn account_key(deployment_id: &str, what: &str, minute: UnixMillis) -> String {
    let slot = (minute / MINUTE_MS) % RING;
    format!("detour/v1/fleet-rate/{deployment_id}/{what}/{slot}")
}

fn minute_of(now: UnixMillis) -> UnixMillis {
    now.saturating_sub(now % MINUTE_MS)
}

fn limits(deployment: &Deployment) -> [(&'static str, Option<u64>); 2] {
    [("rpm", deployment.rpm), ("tpm", deployment.tpm)]
}

/// The rate slots at `now`: this minute's and the previous one's.
pub fn slots(config: &Config, now: UnixMillis) -> Vec<SlotSpec> {
    let minute = minute_of(now);
    let mut out = Vec::new();
    for deployment in &config.deployments {
        for (what, limit) in limits(deployment) {
            let Some(limit) = limit else { continue };
            for (start, current) in [(minute, true), (minute.saturating_sub(MINUTE_MS), false)] {
                let account_key = account_key(&deployment.id, what, start);
                out.push(SlotSpec {
                    limit_idx: 0,
                    slot_key: slot_key(&account_key),
                    ledger_key: format!("rate/{}/{what}/{start}", deployment.id),
                    account_key,
                    limit_nanos: limit,
                    current,
                    period_start: start,
                    kind: SlotKind::Rate,
                });
            }
        }
    }
    out
}

/// The accounts of this minute and the next (with their minute), to make ready ahead of
/// use.
pub fn upcoming_accounts(config: &Config, now: UnixMillis) -> Vec<(String, UnixMillis)> {
    let minute = minute_of(now);
    let mut out = Vec::new();
    for deployment in &config.deployments {
        for (what, limit) in limits(deployment) {
            if limit.is_some() {
                for start in [minute, minute.saturating_add(MINUTE_MS)] {
                    out.push((account_key(&deployment.id, what, start), start));
                }
            }
        }
    }
    out
}

/// Tokens held for an attempt: the account and the amount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenHold {
    /// The `tpm` account of the attempt's minute (empty: nothing held).
    pub key: String,
    /// Tokens held at their estimate.
    pub amount: u64,
}

/// Why an attempt is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefusal {
    /// The fleet's limit for this minute is used up.
    Full,
    /// This process's leases do not cover it yet.
    Uncovered,
}

/// Counts one request and holds `tokens` against the deployment's fleet limits.
pub fn take<S: Store + ?Sized>(
    store: &mut S,
    deployment: &Deployment,
    now: UnixMillis,
    tokens: u64,
) -> Result<TokenHold, RateRefusal> {
    let minute = minute_of(now);
    let mut hold = TokenHold::default();
    if let Some(tpm) = deployment.tpm {
        let key = account_key(&deployment.id, "tpm", minute);
        match budget::hold(store, &key, tpm, tokens, true, true) {
            Ok(Admission::Held) => {
                hold = TokenHold {
                    key,
                    amount: tokens,
                }
            }
            Ok(refusal) => return Err(refusal_of(refusal)),
            // A broken store fails open, as the per-process window does.
            Err(_) => {}
        }
    }
    if let Some(rpm) = deployment.rpm {
        let key = account_key(&deployment.id, "rpm", minute);
        match budget::hold(store, &key, rpm, 1, true, true) {
            Ok(Admission::Held) => budget::spend(store, &key, 1, 1),
            Ok(refusal) => {
                release(store, &hold);
                return Err(refusal_of(refusal));
            }
            // Fails open, as above.
            Err(_) => {}
        }
    }
    Ok(hold)
}

fn refusal_of(admission: Admission) -> RateRefusal {
    match admission {
        Admission::Uncovered => RateRefusal::Uncovered,
        Admission::Held | Admission::OverLimit => RateRefusal::Full,
    }
}

/// The attempt's answer completed: its tokens count as the provider reported them (at
/// their estimate without a report).
pub fn settle<S: Store + ?Sized>(store: &mut S, hold: &TokenHold, actual: Option<u64>) {
    if !hold.key.is_empty() {
        budget::spend(store, &hold.key, hold.amount, actual.unwrap_or(hold.amount));
    }
}

/// The attempt failed: its tokens are given back (its request still counts).
pub fn release<S: Store + ?Sized>(store: &mut S, hold: &TokenHold) {
    if !hold.key.is_empty() {
        budget::spend(store, &hold.key, hold.amount, 0);
    }
}
