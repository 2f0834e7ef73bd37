//! RPM/TPM counters on Redis: sliding windows checked and counted by one script for all
//! of a request's descriptors (`lua/rls.lua`).

use std::sync::Arc;

use detour_core::ledger::LedgerError;
use detour_core::UnixMillis;

use crate::conn::Redis;
use crate::scripts::RLS;

/// One descriptor to check and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The counter's identity (domain and entries).
    pub counter: String,
    /// Hits allowed per window.
    pub limit: u64,
    /// Hits this request adds.
    pub hits: u64,
    /// The window, milliseconds (at least 1).
    pub window_ms: u64,
}

/// The verdict for one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this descriptor is over its limit.
    pub over: bool,
    /// Hits in the last window, this request's included when it was admitted.
    pub used: u64,
    /// When the current fixed window ends (the previous one stops weighing then).
    pub window_end: UnixMillis,
}

/// The counters of one namespace.
#[derive(Debug, Clone)]
pub struct RateWindows {
    redis: Arc<Redis>,
    prefix: String,
}

impl RateWindows {
    /// Counters under `{<ns>-rl}:` (their own hash tag: one Cluster slot for every
    /// descriptor of a request, apart from the ledger's slot).
    pub fn new(redis: Arc<Redis>, ns: &str) -> RateWindows {
        RateWindows {
            redis,
            prefix: format!("{{{ns}-rl}}:"),
        }
    }

    /// Checks every descriptor and counts them all if none is over; counts none
    /// otherwise. Verdicts are in the order of `checks`.
    pub async fn check(
        &self,
        checks: &[Check],
        now: UnixMillis,
    ) -> Result<Vec<Verdict>, LedgerError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = RLS.prepare_invoke();
        call.arg(now);
        let mut ends = Vec::with_capacity(checks.len());
        for check in checks {
            let window = check.window_ms.max(1);
            let start = now.saturating_sub(now % window);
            call.key(format!("{}{}:{window}:{start}", self.prefix, check.counter))
                .key(format!(
                    "{}{}:{window}:{}",
                    self.prefix,
                    check.counter,
                    start.saturating_sub(window)
                ))
                .arg(check.limit)
                .arg(check.hits)
                .arg(window)
                .arg(start);
            ends.push(start.saturating_add(window));
        }
        let reply: Vec<i64> = self
            .redis
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let mut verdicts = Vec::with_capacity(checks.len());
        for (i, end) in ends.into_iter().enumerate() {
            let at = |offset: usize| {
                i.checked_mul(2)
                    .and_then(|j| j.checked_add(offset))
                    .and_then(|j| reply.get(j))
                    .copied()
            };
            let (Some(code), Some(used)) = (at(1), at(2)) else {
                return Err(LedgerError::Backend {
                    message: format!("rate script answered {} values", reply.len()),
                    transient: false,
                });
            };
            verdicts.push(Verdict {
                over: code == 2,
                used: u64::try_from(used).unwrap_or(0),
                window_end: end,
            });
        }
        Ok(verdicts)
    }
}
