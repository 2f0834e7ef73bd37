//! The routes of the HTTP JSON API: the budget ledger for the filter's
//! `dispatch_http_call` (which speaks HTTP only), and health.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/reserve` | `request_id`, `scopes: [{key, limit_nanos}]`, `estimate_nanos`, `ttl_ms`? | `{"outcome": "reserved"}` or `{"outcome": "refused", "scope"}` |
//! | `POST /v1/settle` | `request_id`, `actual_nanos` | `{"ending"}` |
//! | `POST /v1/release` | `request_id` | `{"ending"}` |
//! | `POST /v1/lease` | `holder_id`, `scopes`, `want_nanos`, `ttl_ms`? | `{"lease_id", "granted_nanos", "room_nanos", "expires_at_ms"}` |
//! | `POST /v1/lease/return` | `lease_id`, `used_nanos` | `{"ending"}` |
//! | `POST /v1/expire` | `{}` | `{"expired": [ids]}` |
//! | `GET /v1/account?scope=KEY` | | `{"scope", "spent_nanos", "reserved_nanos"}` |
//! | `GET /healthz` | | `{"status": "ok"}`, or 503 when Redis does not answer |
//!
//! `ending` is `applied`, `after_expiry`, `repeated` or `unknown`. A lease always has a
//! `lease_id`, also with 0 granted (a full scope), to report spend under; `room_nanos` is
//! the room left in its tightest scope after the grant. `ttl_ms` defaults to
//! [`DEFAULT_TTL_MS`]. Errors: 400 naming the field, 409 for a reused id, 503 (with
//! `retry-after: 1`) when Redis is unreachable or slower than the time limit, 500 for a
//! script error.

use http::{Method, StatusCode};
use serde_json::json;

use super::json::{json_reply, Body, Problem};
use super::Reply;
use crate::clock::now_ms;
use crate::redis_ledger::RedisLedger;
use detour_core::ledger::Reserve;

/// A hold's ttl when the body names none: long enough for a slow streamed answer.
pub const DEFAULT_TTL_MS: u64 = 600_000;

/// Routes one request. `body` is the whole request body (already size-limited).
pub async fn route(
    ledger: &RedisLedger,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Reply {
    let result = match (method, path) {
        (&Method::POST, "/v1/reserve") => reserve(ledger, body).await,
        (&Method::POST, "/v1/settle") => settle(ledger, body).await,
        (&Method::POST, "/v1/release") => release(ledger, body).await,
        (&Method::POST, "/v1/lease") => lease(ledger, body).await,
        (&Method::POST, "/v1/lease/return") => return_lease(ledger, body).await,
        (&Method::POST, "/v1/expire") => expire(ledger).await,
        (&Method::GET, "/v1/account") => account(ledger, query).await,
        (&Method::GET, "/healthz") => health(ledger).await,
        (
            _,
            "/v1/reserve" | "/v1/settle" | "/v1/release" | "/v1/lease" | "/v1/lease/return"
            | "/v1/expire" | "/v1/account" | "/healthz",
        ) => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        )),
    };
    result.unwrap_or_else(Problem::into_reply)
}

async fn reserve(ledger: &RedisLedger, body: &[u8]) -> Result<Reply, Problem> {
    let body = Body::parse(body)?;
    let id = body.string("request_id")?;
    let scopes = body.scopes()?;
    let estimate = body.u64("estimate_nanos")?;
    let ttl = body.u64_or("ttl_ms", DEFAULT_TTL_MS)?;
    let answer = match ledger
        .reserve(&id, &scopes, estimate, now_ms(), ttl)
        .await?
    {
        Reserve::Reserved => json!({"outcome": "reserved"}),
        Reserve::Refused { scope } => json!({"outcome": "refused", "scope": scope}),
    };
    Ok(json_reply(StatusCode::OK, &answer))
}

async fn settle(ledger: &RedisLedger, body: &[u8]) -> Result<Reply, Problem> {
    let body = Body::parse(body)?;
    let id = body.string("request_id")?;
    let actual = body.u64("actual_nanos")?;
    let ending = ledger.settle(&id, actual, now_ms()).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "ending": ending })))
}

async fn release(ledger: &RedisLedger, body: &[u8]) -> Result<Reply, Problem> {
    let body = Body::parse(body)?;
    let id = body.string("request_id")?;
    let ending = ledger.release(&id, now_ms()).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "ending": ending })))
}

async fn lease(ledger: &RedisLedger, body: &[u8]) -> Result<Reply, Problem> {
    let body = Body::parse(body)?;
    let holder = body.string("holder_id")?;
    let scopes = body.scopes()?;
    let want = body.u64("want_nanos")?;
    let ttl = body.u64_or("ttl_ms", DEFAULT_TTL_MS)?;
    let lease = ledger.lease(&holder, &scopes, want, now_ms(), ttl).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "lease_id": lease.id,
            "granted_nanos": lease.granted_nanos,
            "room_nanos": lease.room_nanos,
            "expires_at_ms": lease.expires_at_ms,
        }),
    ))
}

async fn return_lease(ledger: &RedisLedger, body: &[u8]) -> Result<Reply, Problem> {
    let body = Body::parse(body)?;
    let id = body.string("lease_id")?;
    let used = body.u64("used_nanos")?;
    let returned = ledger.return_lease(&id, used, now_ms()).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "ending": returned.ending, "spent_nanos": returned.spent_nanos }),
    ))
}

async fn expire(ledger: &RedisLedger) -> Result<Reply, Problem> {
    let expired = ledger.expire(now_ms()).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "expired": expired })))
}

async fn account(ledger: &RedisLedger, query: Option<&str>) -> Result<Reply, Problem> {
    let scope = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .transpose()?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Problem::field("scope", "is required: GET /v1/account?scope=KEY"))?;
    // Holds expire when a script runs (no reaper): sweep first, so a reader sees a dead
    // replica's leases gone once their ttl passed, even in a quiet fleet.
    ledger.expire(now_ms()).await?;
    let account = ledger.account(&scope).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "scope": scope,
            "spent_nanos": account.spent,
            "reserved_nanos": account.reserved,
        }),
    ))
}

async fn health(ledger: &RedisLedger) -> Result<Reply, Problem> {
    ledger.ping().await?;
    Ok(json_reply(StatusCode::OK, &json!({"status": "ok"})))
}

/// `%XX` and `+` decoding of one query value.
fn percent_decode(text: &str) -> Result<String, Problem> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i.saturating_add(1)..i.saturating_add(3))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Problem::field("scope", "has a bad %-escape"))?;
                out.push(hex);
                i = i.saturating_add(3);
            }
            b'+' => {
                out.push(b' ');
                i = i.saturating_add(1);
            }
            _ => {
                out.push(b);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8(out).map_err(|_| Problem::field("scope", "is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            percent_decode("detour%2Fv1%2Fbudget%2Ftotal%2F0").unwrap(),
            "detour/v1/budget/total/0"
        );
        assert_eq!(percent_decode("a+b").unwrap(), "a b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%f").is_err());
    }
}
