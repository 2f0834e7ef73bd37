//! Records of what detour did: JSON lines with a stable schema.
//!
//! The glue writes each event as one log line (`detour-event {json}`); later versions also
//! post them to webhooks and turn them into reports. Events never carry prompts or keys.

use serde::Serialize;

use crate::flow::Reason;
use crate::UnixMillis;

/// Why the chain left a deployment for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// 429, or a deployment cooling down after one.
    RateLimit,
    /// Errors, timeouts, an open breaker.
    Failure,
    /// The prompt did not fit.
    ContextWindow,
    /// The provider refused the content.
    ContentPolicy,
    /// A budget scope had no room for the attempt's estimate.
    Budget,
    /// The deployment is at its own RPM/TPM limit.
    RateLimitLocal,
}

/// One record. `ts` is Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The same deployment will be tried again after `wait_ms`.
    Retry {
        /// When.
        ts: UnixMillis,
        /// The request's route group.
        group: String,
        /// The deployment being retried.
        deployment: String,
        /// Which retry this is (1 = first retry).
        retry: u32,
        /// What failed.
        reason: Reason,
        /// The failed attempt's status, if one arrived.
        status: Option<u16>,
        /// Backoff before the retry.
        wait_ms: u64,
    },
    /// The chain moved from one deployment to the next.
    Fallback {
        /// When.
        ts: UnixMillis,
        /// The request's route group.
        group: String,
        /// The request's stage tag, if any.
        stage: Option<String>,
        /// The deployment left behind.
        from: String,
        /// The deployment tried next.
        to: String,
        /// Why.
        reason: FallbackReason,
    },
    /// A 429 cooled a deployment down.
    Cooldown {
        /// When.
        ts: UnixMillis,
        /// Which deployment.
        deployment: String,
        /// Until when.
        until: UnixMillis,
    },
    /// A breaker opened (or reopened after a failed half-open probe).
    BreakerOpened {
        /// When.
        ts: UnixMillis,
        /// Which deployment.
        deployment: String,
        /// Until when.
        until: UnixMillis,
        /// True when a half-open probe failed.
        probe_failed: bool,
    },
    /// A deployment is back: a half-open request or a health-check probe succeeded.
    Recovery {
        /// When.
        ts: UnixMillis,
        /// Which deployment.
        deployment: String,
        /// `half_open` (a real request probed it) or `health_check` (an active probe).
        via: String,
    },
    /// A budget scope reached 80, 90, 100 or 110 % of its limit (once per period).
    BudgetAlert {
        /// When.
        ts: UnixMillis,
        /// The scope (`total`, `group/…`, `model/…`, `deployment/…`, `tag/…`).
        scope: String,
        /// Start of the period (Unix ms).
        period_start: UnixMillis,
        /// 80, 90, 100 or 110.
        percent: u32,
        /// Spend in the period, in dollars (`"12.345678"`).
        spent: String,
        /// The limit, in dollars.
        limit: String,
    },
    /// A stage tag's budget is used up: its requests go to the tag's overrun group.
    TagOverrun {
        /// When.
        ts: UnixMillis,
        /// The stage tag.
        tag: String,
        /// The group the request would have used.
        from_group: String,
        /// The overrun group it uses instead.
        to_group: String,
    },
    /// All traffic is halted until a human resumes it.
    Halt {
        /// When.
        ts: UnixMillis,
        /// The scope whose spend reached its halt threshold, or `manual`.
        scope: String,
        /// Why.
        reason: String,
    },
    /// A human (or a raised budget) resumed traffic.
    Resume {
        /// When.
        ts: UnixMillis,
        /// `admin` or `config`.
        by: String,
    },
    /// One request ended (written for every routed request, after its answer completed
    /// or it was abandoned): the denominator of fallback rates and the exact spend.
    Request {
        /// When it ended.
        ts: UnixMillis,
        /// Its route group.
        group: String,
        /// Its stage tag, if any.
        stage: Option<String>,
        /// The deployment whose answer the client got, if one did.
        deployment: Option<String>,
        /// `success`, `provider_error`, `failed`, `rate_limited`, `budget`, `halted`,
        /// `client_error`, or `abandoned`.
        outcome: String,
        /// Attempts sent.
        attempts: u32,
        /// Fallbacks taken (moves from one deployment to another).
        fallbacks: u32,
        /// Reported usage, when the provider reported it.
        prompt_tokens: Option<u64>,
        /// Reported usage, when the provider reported it.
        completion_tokens: Option<u64>,
        /// What the answer cost, in dollars (`"0.000123"`); the estimate when no usage came.
        cost: Option<String>,
        /// From arrival to the end of the answer.
        duration_ms: u64,
    },
    /// Fleet mode: this process cannot reach the fleet ledger. Budgets and RPM/TPM go on
    /// as `on_unreachable` says; local spend is reported once it is back.
    FleetUnreachable {
        /// When the first call failed.
        ts: UnixMillis,
        /// Budgets' mode meanwhile: `closed` (only leases already held) or `open`
        /// (plus `local_cap` of each limit).
        budgets: String,
    },
    /// Fleet mode: the ledger answers again; spend made meanwhile is being reported.
    FleetRecovered {
        /// When.
        ts: UnixMillis,
        /// How long it was unreachable.
        outage_ms: u64,
    },
    /// Every deployment of the chain failed or was unavailable.
    AllFailed {
        /// When.
        ts: UnixMillis,
        /// The request's route group.
        group: String,
        /// The request's stage tag, if any.
        stage: Option<String>,
        /// Attempts sent.
        attempts: u32,
        /// The status the client got.
        status: u16,
    },
}

impl Event {
    /// The event as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
