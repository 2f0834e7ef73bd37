//! Metrics: what detour counts, under which names and labels.
//!
//! The glue turns these samples into proxy-wasm metrics, so they appear at Envoy's
//! `/stats/prometheus` and at `detour serve`'s `/metrics`. proxy-wasm metrics have names,
//! not labels, so labels ride in the name in Envoy's tag syntax (`name.key=.=value;.;`)
//! and the bootstrap's `stats_tags` (from [`stats_tags`]) turn them back into Prometheus
//! labels. Every label value is bounded by the config (groups, deployments, scopes) or by
//! a closed list (outcomes, reasons), so the number of series is bounded too.
//!
//! Names follow OpenTelemetry's GenAI conventions where one exists
//! (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`,
//! `gen_ai.server.time_to_first_token`), in Prometheus spelling and in milliseconds
//! because Envoy's histograms are.

use crate::budget;
use crate::config::Config;
use crate::event::Event;
use crate::health::{self, BreakerState};
use crate::store::Store;
use crate::usage::Usage;
use crate::UnixMillis;

/// The kind of a proxy-wasm metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to a value.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

/// One thing to tell the metrics system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The full name, labels included in tag syntax.
    pub name: String,
    /// Increment (counter), value (gauge) or observation (histogram).
    pub value: u64,
}

/// Every label detour uses; [`stats_tags`] makes one Envoy tag extractor per label.
pub const LABELS: [&str; 8] = [
    "group",
    "deployment",
    "outcome",
    "reason",
    "scope",
    "gen_ai_request_model",
    "gen_ai_token_type",
    "gen_ai_provider_name",
];

/// `(tag name, regex)` pairs for Envoy's `stats_config.stats_tags`.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    LABELS
        .iter()
        .map(|label| (*label, format!(r"({label}=\.=(.+?);\.;)")))
        .collect()
}

/// `base` with `labels` in Envoy's tag syntax. Values lose the characters that would end a
/// tag (`;` and `=`).
pub fn name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut out = base.to_string();
    if !labels.is_empty() {
        out.push('.');
    }
    for (key, value) in labels {
        let value: String = value
            .chars()
            .map(|c| {
                if c == ';' || c == '=' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        out.push_str(key);
        out.push_str("=.=");
        out.push_str(if value.is_empty() { "none" } else { &value });
        out.push_str(";.;");
    }
    out
}

fn counter(base: &str, labels: &[(&str, &str)], value: u64) -> Sample {
    Sample {
        kind: Kind::Counter,
        name: name(base, labels),
        value,
    }
}

fn gauge(base: &str, labels: &[(&str, &str)], value: u64) -> Sample {
    Sample {
        kind: Kind::Gauge,
        name: name(base, labels),
        value,
    }
}

fn histogram(base: &str, labels: &[(&str, &str)], value: u64) -> Sample {
    Sample {
        kind: Kind::Histogram,
        name: name(base, labels),
        value,
    }
}

/// Counters an event implies.
pub fn for_event(event: &Event) -> Vec<Sample> {
    match event {
        Event::Fallback { group, reason, .. } => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            vec![counter(
                "detour_fallbacks_total",
                &[("group", group), ("reason", &reason)],
                1,
            )]
        }
        Event::Retry {
            deployment, reason, ..
        } => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            vec![counter(
                "detour_retries_total",
                &[("deployment", deployment), ("reason", &reason)],
                1,
            )]
        }
        Event::Cooldown { deployment, .. } => vec![counter(
            "detour_cooldowns_total",
            &[("deployment", deployment)],
            1,
        )],
        Event::BreakerOpened { deployment, .. } => {
            vec![counter(
                "detour_breaker_trips_total",
                &[("deployment", deployment)],
                1,
            )]
        }
        Event::Recovery { deployment, .. } => vec![counter(
            "detour_recoveries_total",
            &[("deployment", deployment)],
            1,
        )],
        Event::BudgetAlert { scope, .. } => vec![counter(
            "detour_budget_alerts_total",
            &[("scope", scope)],
            1,
        )],
        Event::AllFailed { group, .. } => {
            vec![counter("detour_all_failed_total", &[("group", group)], 1)]
        }
        Event::Halt { .. } => vec![counter("detour_halts_total", &[], 1)],
        Event::FleetUnreachable { .. } => vec![counter("detour_fleet_outages_total", &[], 1)],
        Event::FleetRecovered { .. } => vec![counter("detour_fleet_recoveries_total", &[], 1)],
        // Requests are counted where they end (`for_request`).
        Event::TagOverrun { .. } | Event::Resume { .. } | Event::Request { .. } => Vec::new(),
    }
}

/// What one finished request counts: its outcome, its latency and time to first token.
pub fn for_request(
    group: &str,
    deployment: Option<&str>,
    outcome: &str,
    duration_ms: u64,
    time_to_first_token_ms: Option<u64>,
) -> Vec<Sample> {
    let deployment = deployment.unwrap_or("none");
    let mut out = vec![
        counter(
            "detour_requests_total",
            &[
                ("group", group),
                ("deployment", deployment),
                ("outcome", outcome),
            ],
            1,
        ),
        histogram(
            "gen_ai_client_operation_duration_milliseconds",
            &[("group", group), ("deployment", deployment)],
            duration_ms,
        ),
    ];
    if let Some(ttft) = time_to_first_token_ms {
        out.push(histogram(
            "gen_ai_server_time_to_first_token_milliseconds",
            &[("deployment", deployment)],
            ttft,
        ));
    }
    out
}

/// Tokens a settled answer used.
pub fn for_usage(model: &str, usage: &Usage) -> Vec<Sample> {
    vec![
        counter(
            "gen_ai_client_token_usage_total",
            &[
                ("gen_ai_request_model", model),
                ("gen_ai_token_type", "input"),
            ],
            usage.prompt_tokens,
        ),
        counter(
            "gen_ai_client_token_usage_total",
            &[
                ("gen_ai_request_model", model),
                ("gen_ai_token_type", "output"),
            ],
            usage.completion_tokens,
        ),
    ]
}

/// Gauges of the shared state: breaker state per deployment (0 closed, 1 open, 2
/// half-open), and spend, limit and remaining budget per scope (micro-dollars), for the
/// current periods. Any worker may publish them: gauges are process-wide.
pub fn for_state<S: Store + ?Sized>(config: &Config, store: &S, now: UnixMillis) -> Vec<Sample> {
    let mut out = Vec::new();
    for d in &config.deployments {
        let record = store.get(&health::key(&d.id)).ok().flatten();
        let h = health::Health::decode(record.as_ref().map(|(b, _)| b.as_slice()));
        let state = match h.breaker(now) {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        out.push(gauge(
            "detour_breaker_state",
            &[("deployment", &d.id)],
            state,
        ));
    }
    for limit in &config.budgets.limits {
        let account = budget::account(store, limit, now).unwrap_or_default();
        let scope = limit.scope.to_string();
        let micros = |nanos: u64| nanos / 1000;
        out.push(gauge(
            "detour_budget_spent_microdollars",
            &[("scope", &scope)],
            micros(account.spent),
        ));
        out.push(gauge(
            "detour_budget_limit_microdollars",
            &[("scope", &scope)],
            micros(limit.limit_nanos),
        ));
        let remaining = limit
            .limit_nanos
            .saturating_sub(account.spent.saturating_add(account.reserved));
        out.push(gauge(
            "detour_budget_remaining_microdollars",
            &[("scope", &scope)],
            micros(remaining),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_labels_in_envoy_tag_syntax() {
        assert_eq!(
            name(
                "detour_requests_total",
                &[("group", "high-precision"), ("outcome", "a;b=c")]
            ),
            "detour_requests_total.group=.=high-precision;.;outcome=.=a_b_c;.;"
        );
        assert_eq!(name("x", &[("scope", "")]), "x.scope=.=none;.;");
        let tags = stats_tags();
        assert_eq!(tags.len(), LABELS.len());
        assert_eq!(tags[0], ("group", r"(group=\.=(.+?);\.;)".to_string()));
    }
}
