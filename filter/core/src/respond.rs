//! Every answer detour writes itself, in OpenAI's error shape.
//!
//! One module renders them all so clients (the OpenAI SDKs first) see one format:
//! `{"error": {"message", "type", "param", "code"}}`, plus `attempts` when a chain failed.
//! [`in_protocol`] reshapes them for clients of another protocol (Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`), keeping detour's extra fields.

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::flow::{AttemptRecord, Reason};
use crate::halt::Halt;
use crate::protocol::{transcode, Protocol, ProviderError};
use crate::UnixMillis;

/// A response for the glue to send as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `content-length` (the host sets it).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn json_response(status: u16, body: &serde_json::Value, extra: Vec<(String, String)>) -> Response {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(extra);
    Response {
        status,
        headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// A response detour wrote, in the shape of the client's protocol. Only error bodies
/// change (Anthropic clients get Anthropic's error shape, with detour's extra fields such
/// as `attempts` kept inside `error`); anything else is returned as it is.
pub fn in_protocol(response: Response, protocol: Protocol) -> Response {
    if protocol != Protocol::Anthropic || response.status < 400 {
        return response;
    }
    let Ok(serde_json::Value::Object(mut body)) =
        serde_json::from_slice::<serde_json::Value>(&response.body)
    else {
        return response;
    };
    let Some(serde_json::Value::Object(mut error)) = body.remove("error") else {
        return response;
    };
    let message = error
        .remove("message")
        .and_then(|m| m.as_str().map(str::to_string))
        .unwrap_or_default();
    error.remove("type");
    let mut shaped = transcode::encode_error(
        protocol,
        response.status,
        &ProviderError {
            kind: None,
            message,
        },
    );
    if let Some(serde_json::Value::Object(inner)) = shaped.get_mut("error") {
        for (key, value) in error {
            if !value.is_null() {
                inner.entry(key).or_insert(value);
            }
        }
    }
    Response {
        body: serde_json::to_vec(&shaped).unwrap_or(response.body),
        ..response
    }
}

/// A 4xx caused by the request itself (never retried by OpenAI SDKs).
pub fn client_error(status: u16, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    json_response(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
        Vec::new(),
    )
}

/// A 400 for a request field that is not valid for the client's protocol.
pub fn invalid_param(field: &str, message: &str) -> Response {
    let text = if field.is_empty() {
        message.to_string()
    } else {
        format!("{field}: {message}")
    };
    json_response(
        400,
        &json!({"error": {"message": text, "type": "invalid_request_error", "param": field, "code": "invalid_request_body"}}),
        Vec::new(),
    )
}

/// detour itself is misconfigured or broke an invariant: a 500 that says so.
pub fn internal_error(message: impl Into<String>) -> Response {
    let message: String = message.into();
    json_response(
        500,
        &json!({"error": {"message": message, "type": "server_error", "param": null, "code": "detour_internal_error"}}),
        Vec::new(),
    )
}

/// Every request while traffic is halted: 402, so SDKs do not retry into the halt.
pub fn halted(halt: &Halt, config: &Config) -> Response {
    let how = match &config.admin {
        Some(admin) => format!("POST {}/resume with the admin token", admin.path_prefix),
        None => "configure detour.admin and POST /detour/admin/resume".to_string(),
    };
    let message = format!(
        "detour: all traffic is halted: {}. A human must resume it ({how}) or raise that budget and reload the config.",
        halt.reason
    );
    json_response(
        402,
        &json!({"error": {"message": message, "type": "insufficient_quota", "param": null, "code": "budget_halted", "halted_since": halt.since, "scope": halt.scope}}),
        Vec::new(),
    )
}

#[derive(Serialize)]
struct AllFailedError<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: &'static str,
    group: &'a str,
    attempts: &'a [AttemptRecord],
}

/// The one answer when the whole chain failed: what happened to every deployment tried
/// or skipped, under a status that says what kind of failure it was.
pub fn all_failed(
    now: UnixMillis,
    group: &str,
    attempts: &[AttemptRecord],
    soonest_available: Option<UnixMillis>,
) -> Response {
    let (status, kind, code) = final_status(attempts);
    let summary: Vec<String> = attempts
        .iter()
        .map(|a| match a.status {
            Some(status) => format!("{} ({} {})", a.deployment, status, a.reason.describe()),
            None => format!("{} ({})", a.deployment, a.reason.describe()),
        })
        .collect();
    let n_sent = attempts.iter().filter(|a| !a.reason.is_skip()).count();
    let message = format!(
        "detour: every deployment for group '{group}' failed or was unavailable ({n_sent} attempts sent): {}",
        summary.join(", ")
    );
    let error = AllFailedError {
        message,
        kind,
        param: None,
        code,
        group,
        attempts,
    };
    let mut extra = vec![("x-detour-group".to_string(), group.to_string())];
    if matches!(status, 429 | 503) {
        let wait_ms = soonest_available
            .map(|t| t.saturating_sub(now))
            .unwrap_or(1000);
        extra.push((
            "retry-after".to_string(),
            wait_ms.div_ceil(1000).max(1).to_string(),
        ));
    }
    json_response(status, &json!({ "error": error }), extra)
}

/// Picks the status for a failed chain from what its attempts met.
fn final_status(attempts: &[AttemptRecord]) -> (u16, &'static str, &'static str) {
    // Rate limits first: "come back later" is the useful answer even when some
    // deployments were also skipped for their window size.
    let limited = |r: Reason| {
        matches!(
            r,
            Reason::RateLimited | Reason::CoolingDown | Reason::LocalRateLimit
        )
    };
    if attempts.iter().any(|a| limited(a.reason))
        && attempts
            .iter()
            .all(|a| limited(a.reason) || a.reason == Reason::ContextTooLarge)
    {
        return (429, "rate_limit_error", "all_deployments_rate_limited");
    }
    // The fleet's ledger is down and budgets fail closed: a server-side outage, not an
    // empty budget; 503 with Retry-After so clients come back when it may be up.
    if attempts
        .iter()
        .any(|a| a.reason == Reason::FleetUnreachable)
        && attempts.iter().all(|a| {
            matches!(
                a.reason,
                Reason::FleetUnreachable | Reason::BudgetExhausted | Reason::ContextTooLarge
            )
        })
    {
        return (503, "server_error", "budget_ledger_unreachable");
    }
    // Budgets next: 402, which OpenAI SDKs do not retry (retrying cannot add money).
    if attempts.iter().any(|a| a.reason == Reason::BudgetExhausted)
        && attempts
            .iter()
            .all(|a| matches!(a.reason, Reason::BudgetExhausted | Reason::ContextTooLarge))
    {
        return (402, "insufficient_quota", "budget_exceeded");
    }
    // Nothing could take the request in its protocol: the request is the problem.
    if !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| matches!(a.reason, Reason::Untranslatable | Reason::ContextTooLarge))
        && attempts.iter().any(|a| a.reason == Reason::Untranslatable)
    {
        return (400, "invalid_request_error", "untranslatable_request");
    }
    let last_sent = attempts.iter().rev().find(|a| !a.reason.is_skip());
    match last_sent.map(|a| a.reason) {
        Some(Reason::ContextWindow) | None
            if attempts.iter().any(|a| {
                a.reason == Reason::ContextWindow || a.reason == Reason::ContextTooLarge
            }) =>
        {
            (400, "invalid_request_error", "context_length_exceeded")
        }
        Some(Reason::ContentPolicy) => (400, "invalid_request_error", "content_policy_violation"),
        None => (503, "server_error", "no_deployment_available"),
        Some(Reason::Timeout) => (504, "server_error", "all_deployments_failed"),
        Some(_) => (502, "server_error", "all_deployments_failed"),
    }
}
