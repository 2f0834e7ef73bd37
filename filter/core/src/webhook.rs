//! Posting events to a webhook: batched, through an upstream cluster, from the root
//! context's tick, so a request never waits for it.
//!
//! Two formats: `json` posts `{"source": "detour", "events": [ … ]}` with the events as
//! they are logged; `slack` posts `{"text": "…"}` with one readable line per event, which
//! Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat, Teams' Slack
//! connector) accept. Events carry deployment ids, scopes and amounts: never prompts or keys.

use serde_json::json;

use crate::cluster::Upstream;
use crate::config::Secret;
use crate::event::Event;

/// `detour.events.webhook`.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Where to post.
    pub upstream: Upstream,
    /// The path (and query) of the URL: a secret (Slack's carries the hook's token).
    pub path: Secret,
    /// Body shape.
    pub format: Format,
    /// At most this many events per post.
    pub batch_max: usize,
    /// Post at least this often while events wait.
    pub flush_interval_ms: u64,
    /// Events kept waiting at most; older ones are dropped first (and counted).
    pub buffer_max: usize,
}

/// The body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"source": "detour", "events": [...]}`.
    Json,
    /// `{"text": "..."}`.
    Slack,
}

/// The body of one post.
pub fn body(format: Format, events: &[Event], dropped: u64) -> Vec<u8> {
    let value = match format {
        Format::Json => json!({"source": "detour", "dropped": dropped, "events": events}),
        Format::Slack => {
            let mut lines: Vec<String> = events.iter().map(line).collect();
            if dropped > 0 {
                lines.push(format!(
                    "({dropped} earlier events dropped: the webhook could not keep up)"
                ));
            }
            json!({"text": lines.join("\n")})
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// One readable line.
pub fn line(event: &Event) -> String {
    match event {
        Event::Fallback {
            group,
            stage,
            from,
            to,
            reason,
            ..
        } => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let stage = stage
                .as_deref()
                .map(|s| format!(" [{s}]"))
                .unwrap_or_default();
            format!(
                ":twisted_rightwards_arrows: fallback in {group}{stage}: {from} → {to} ({reason})"
            )
        }
        Event::Retry {
            deployment,
            retry,
            reason,
            wait_ms,
            ..
        } => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!(":repeat: retry {retry} of {deployment} in {wait_ms} ms ({reason})")
        }
        Event::Cooldown {
            deployment, until, ..
        } => format!(":snowflake: {deployment} cooling down until {until}"),
        Event::BreakerOpened {
            deployment,
            until,
            probe_failed,
            ..
        } => {
            let why = if *probe_failed {
                "recovery probe failed"
            } else {
                "too many failures"
            };
            format!(":no_entry: breaker opened for {deployment} until {until} ({why})")
        }
        Event::Recovery {
            deployment, via, ..
        } => format!(":white_check_mark: {deployment} recovered ({via})"),
        Event::BudgetAlert {
            scope,
            percent,
            spent,
            limit,
            ..
        } => {
            format!(":moneybag: budget {scope} at {percent}%: ${spent} of ${limit}")
        }
        Event::TagOverrun {
            tag,
            from_group,
            to_group,
            ..
        } => {
            format!(":money_with_wings: stage {tag} over budget: {from_group} → {to_group}")
        }
        Event::Halt { scope, reason, .. } => {
            format!(":rotating_light: ALL TRAFFIC HALTED ({scope}): {reason}")
        }
        Event::Resume { by, .. } => format!(":arrow_forward: traffic resumed by {by}"),
        Event::FleetUnreachable { budgets, .. } => {
            format!(":warning: fleet ledger unreachable: budgets {budgets} until it is back")
        }
        Event::FleetRecovered { outage_ms, .. } => {
            format!(
                ":white_check_mark: fleet ledger back after {outage_ms} ms; local spend reported"
            )
        }
        Event::Request {
            group,
            outcome,
            deployment,
            ..
        } => format!(
            ":speech_balloon: request in {group}: {outcome} ({})",
            deployment.as_deref().unwrap_or("no deployment")
        ),
        Event::AllFailed {
            group,
            attempts,
            status,
            ..
        } => {
            format!(
                ":x: every deployment failed for {group} ({attempts} attempts, answered {status})"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let events = vec![
            Event::Recovery {
                ts: 1,
                deployment: "a".into(),
                via: "health_check".into(),
            },
            Event::Halt {
                ts: 2,
                scope: "total".into(),
                reason: "spend reached 110%".into(),
            },
        ];
        let json: serde_json::Value =
            serde_json::from_slice(&body(Format::Json, &events, 0)).unwrap();
        assert_eq!(json["events"][0]["event"], "recovery");
        assert_eq!(json["events"][1]["scope"], "total");
        let slack: serde_json::Value =
            serde_json::from_slice(&body(Format::Slack, &events, 3)).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(text.contains("a recovered (health_check)"));
        assert!(text.contains("ALL TRAFFIC HALTED (total)"));
        assert!(text.contains("3 earlier events dropped"));
    }
}
