//! The admin API: status, halt and resume, behind a bearer token.
//!
//! The filter answers `detour.admin.path_prefix` (default `/detour/admin`) itself, on the
//! same listener as traffic; `detour serve` also offers it on its admin listener. Without
//! the right token a caller gets 401 and learns nothing else (not even which paths exist).

use serde_json::{json, Value};

use crate::budget;
use crate::config::Config;
use crate::event::Event;
use crate::fleet::sync;
use crate::halt::{self, Halt};
use crate::health::{self, BreakerState};
use crate::price;
use crate::rate;
use crate::respond::{self, Response};
use crate::store::Store;
use crate::UnixMillis;

/// Whether a request path belongs to the admin API.
pub fn is_admin_path(config: &Config, path: &str) -> bool {
    let Some(admin) = &config.admin else {
        return false;
    };
    let path = path.split('?').next().unwrap_or(path);
    path == admin.path_prefix || path.starts_with(&format!("{}/", admin.path_prefix))
}

/// Answers one admin request. `authorization` is the request's header as sent.
pub fn handle<S: Store + ?Sized>(
    config: &Config,
    store: &mut S,
    now: UnixMillis,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (Response, Vec<Event>) {
    let Some(admin) = &config.admin else {
        return (
            respond::client_error(404, "not_found", "not found"),
            Vec::new(),
        );
    };
    let presented = authorization
        .and_then(|h| h.trim().strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), admin.token.expose().as_bytes()) {
        let mut response =
            respond::client_error(401, "unauthorized", "a valid admin token is required");
        response
            .headers
            .push(("www-authenticate".to_string(), "Bearer".to_string()));
        return (response, Vec::new());
    }
    let path = path.split('?').next().unwrap_or(path);
    let action = path.strip_prefix(&admin.path_prefix).unwrap_or("");
    let method = method.to_ascii_uppercase();
    match (method.as_str(), action) {
        ("GET", "/status") => (json_ok(&status(config, store, now)), Vec::new()),
        ("POST", "/halt") => {
            let halt = Halt {
                scope: "manual".into(),
                limit_nanos: 0,
                since: now,
                reason: "halted by an operator through the admin API".into(),
            };
            match halt::set(store, &halt) {
                Ok(newly) => {
                    let events = if newly {
                        vec![Event::Halt {
                            ts: now,
                            scope: halt.scope,
                            reason: halt.reason,
                        }]
                    } else {
                        Vec::new()
                    };
                    (
                        json_ok(&json!({"halted": true, "was_halted": !newly})),
                        events,
                    )
                }
                Err(err) => (
                    respond::internal_error(format!("cannot halt: {err:?}")),
                    Vec::new(),
                ),
            }
        }
        ("POST", "/resume") => match halt::clear(store) {
            Ok(was) => {
                let events = if was {
                    vec![Event::Resume {
                        ts: now,
                        by: "admin".into(),
                    }]
                } else {
                    Vec::new()
                };
                (
                    json_ok(&json!({"halted": false, "was_halted": was})),
                    events,
                )
            }
            Err(err) => (
                respond::internal_error(format!("cannot resume: {err:?}")),
                Vec::new(),
            ),
        },
        (_, "/status" | "/halt" | "/resume") => (
            respond::client_error(
                405,
                "method_not_allowed",
                "GET /status, POST /halt, POST /resume",
            ),
            Vec::new(),
        ),
        _ => (
            respond::client_error(
                404,
                "not_found",
                "admin paths: GET /status, POST /halt, POST /resume",
            ),
            Vec::new(),
        ),
    }
}

/// Everything an operator needs at a glance: the halt, every budget's current period,
/// every deployment's breaker, cooldown and rate window. No keys, no prompts.
pub fn status<S: Store + ?Sized>(config: &Config, store: &S, now: UnixMillis) -> Value {
    let halt = halt::read(store)
        .ok()
        .flatten()
        .filter(|h| halt::holds(h, config));
    let budgets: Vec<Value> = config
        .budgets
        .limits
        .iter()
        .map(|limit| {
            let account = budget::account(store, limit, now).unwrap_or_default();
            let fired: Vec<u32> = budget::THRESHOLDS
                .iter()
                .enumerate()
                .filter(|(bit, _)| account.fired & (1 << bit) != 0)
                .map(|(_, p)| *p)
                .collect();
            json!({
                "scope": limit.scope.to_string(),
                "period": limit.period.to_string(),
                "period_start": limit.period.start(now),
                "period_end": limit.period.end(now),
                "limit": price::format_dollars(limit.limit_nanos),
                "spent": price::format_dollars(account.spent),
                "reserved": price::format_dollars(account.reserved),
                "remaining": price::format_dollars(limit.limit_nanos.saturating_sub(account.spent.saturating_add(account.reserved))),
                "spent_nanos": account.spent,
                "reserved_nanos": account.reserved,
                "limit_nanos": limit.limit_nanos,
                "alerts_fired": fired,
                "halt_at_percent": limit.halt_at_percent,
            })
        })
        .collect();
    let deployments: Vec<Value> = config
        .deployments
        .iter()
        .map(|d| {
            let health = health::Health::decode(
                store
                    .get(&health::key(&d.id))
                    .ok()
                    .flatten()
                    .as_ref()
                    .map(|(b, _)| b.as_slice()),
            );
            let breaker = match health.breaker(now) {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            };
            let window = rate::Window::decode(
                store
                    .get(&rate::key(&d.id))
                    .ok()
                    .flatten()
                    .as_ref()
                    .map(|(b, _)| b.as_slice()),
            )
            .at(now);
            let (requests, tokens) = window.rate(now);
            json!({
                "id": d.id,
                "group": d.group,
                "model": d.model,
                "breaker": breaker,
                "failures_in_window": health.fails,
                "cooling_down_until": (health.cooldown_until > now).then_some(health.cooldown_until),
                "open_until": (health.open_until > now).then_some(health.open_until),
                "rpm": d.rpm,
                "tpm": d.tpm,
                "requests_last_minute": requests,
                "tokens_last_minute": tokens,
            })
        })
        .collect();
    json!({
        "now": now,
        "halted": halt.is_some(),
        "halt": halt,
        "budgets": budgets,
        "deployments": deployments,
        "fleet": fleet_status(config, store, now),
    })
}

/// Fleet mode: this process's leases per slot (its `budgets` above are its own share).
/// The state service by its authority only: a Redis URL may carry a password.
fn fleet_status<S: Store + ?Sized>(config: &Config, store: &S, now: UnixMillis) -> Value {
    let Some(fleet) = &config.fleet else {
        return Value::Null;
    };
    let slots: Vec<Value> = sync::slots(config, now)
        .iter()
        .filter(|spec| spec.current)
        .map(|spec| {
            let slot = sync::read_slot(store, spec);
            let account = sync::read_account(store, spec);
            json!({
                "key": spec.ledger_key,
                "limit": spec.limit_nanos,
                "cover": account.cover,
                "spent": account.spent,
                "reserved": account.reserved,
                "reported": slot.flushed,
                "leases": slot.leases.len(),
                "leased": slot.granted(),
                "fleet_room": slot.room,
                "fleet_full": account.full_since != 0,
            })
        })
        .collect();
    json!({
        "state": fleet.state.authority(),
        "reachable": !sync::unreachable(store),
        "budgets_when_unreachable": fleet.budgets_unreachable.as_str(),
        "rates_when_unreachable": fleet.rates_unreachable.as_str(),
        "slots": slots,
    })
}

fn json_ok(value: &Value) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, byte) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ byte;
    }
    diff == 0
}
