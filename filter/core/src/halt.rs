//! The human gate: spend past a scope's halt threshold (110 % of the total by default)
//! stops all traffic until a human resumes it through the admin API, or raises that budget
//! and reloads the config.
//!
//! The halt lives in shared data, so it holds on every worker and survives config reloads.
//! It remembers the limit it fired at: a reloaded config with a higher limit for that
//! scope releases it by itself.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// The shared-data key of the halt record.
pub const KEY: &str = "detour/v1/halt";

/// Why and since when traffic is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// The budget scope that reached its halt threshold, or `manual`.
    pub scope: String,
    /// That scope's limit (nano-dollars) when the halt fired; 0 for a manual halt.
    pub limit_nanos: u64,
    /// When it fired.
    pub since: UnixMillis,
    /// A sentence for people.
    pub reason: String,
}

/// The halt in force, if any.
pub fn read<S: Store + ?Sized>(store: &S) -> Result<Option<Halt>, StoreError> {
    Ok(store
        .get(KEY)?
        .and_then(|(bytes, _)| serde_json::from_slice::<Halt>(&bytes).ok()))
}

/// Halts traffic (keeps an earlier halt if one is in force).
pub fn set<S: Store + ?Sized>(store: &mut S, halt: &Halt) -> Result<bool, StoreError> {
    update(store, KEY, |bytes| {
        if bytes
            .and_then(|b| serde_json::from_slice::<Halt>(b).ok())
            .is_some()
        {
            return (None, false);
        }
        (Some(serde_json::to_vec(halt).unwrap_or_default()), true)
    })
}

/// Lifts the halt. Returns whether one was in force. ABI 0.2.1 has no delete: an empty
/// value means "no halt".
pub fn clear<S: Store + ?Sized>(store: &mut S) -> Result<bool, StoreError> {
    update(store, KEY, |bytes| {
        let was = bytes
            .and_then(|b| serde_json::from_slice::<Halt>(b).ok())
            .is_some();
        if was {
            (Some(Vec::new()), true)
        } else {
            (None, false)
        }
    })
}

/// Whether `halt` still holds under `config`: a manual halt always does; a budget halt does
/// until that scope's configured limit is raised above the one it fired at (or the scope
/// is gone from the config).
pub fn holds(halt: &Halt, config: &Config) -> bool {
    if halt.scope == "manual" {
        return true;
    }
    config
        .budgets
        .limits
        .iter()
        .find(|l| l.scope.to_string() == halt.scope)
        .is_some_and(|l| l.limit_nanos <= halt.limit_nanos)
}

/// Halts all traffic when `spent` reached the limit's `halt_at` percentage; returns the
/// event when this call set the halt.
pub fn halt_if_reached<S: Store + ?Sized>(
    store: &mut S,
    limit: &crate::budget::Limit,
    spent: u64,
    now: crate::UnixMillis,
) -> Option<crate::event::Event> {
    let halt_at = limit.halt_at_percent?;
    if !crate::budget::reached(spent, limit.limit_nanos, halt_at) {
        return None;
    }
    let halt = Halt {
        scope: limit.scope.to_string(),
        limit_nanos: limit.limit_nanos,
        since: now,
        reason: format!(
            "spend {} reached {halt_at}% of the {} budget {}",
            crate::price::format_dollars(spent),
            limit.scope,
            crate::price::format_dollars(limit.limit_nanos)
        ),
    };
    if !set(store, &halt).unwrap_or(false) {
        return None;
    }
    Some(crate::event::Event::Halt {
        ts: now,
        scope: halt.scope,
        reason: halt.reason,
    })
}
