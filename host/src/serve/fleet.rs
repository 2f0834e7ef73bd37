//! Fleet mode in `detour serve`: when `detour.fleet.redis` names a Redis, the filter's
//! calls to the state service (a `dispatch_http_call` to the cluster
//! `fleet.state.cluster`) are answered in-process, by the state crate's own router
//! ([`detour_state::http::api::route`]) on one [`RedisLedger`]: the same Lua scripts and
//! the same JSON answers as `detour state`, without the socket hop. Without `redis`,
//! those calls go over HTTP to `fleet.state` like calls to any cluster
//! ([`super::router::Clusters`] has it).
//!
//! The answer is delivered as an HTTP call's answer is: `:status`, the service's headers
//! (`content-type`, `content-length`, `date`, `retry-after` on a 503) and the body; the
//! call's own timeout gives Envoy's 504 `upstream request timeout`, as over HTTP.
//!
//! The ledger and its one multiplexed Redis connection live on the runtime of the thread
//! that loaded the config (`detour serve`'s main thread, idle but for accepting
//! connections): each worker's call runs there and its answer comes back to the worker.
//! So the process keeps one connection, and a worker busy in a VM call never holds up
//! another worker's Redis traffic.
//!
//! The Redis URL may carry a password: it never appears in a log line or an error.

use std::sync::Arc;
use std::time::Duration;

use detour_core::fleet::Fleet;
use detour_core::period::civil_from_days;
use detour_host::{HttpCallRequest, HttpCallResponse};
use detour_state::http::json::Problem;
use detour_state::http::{api, Reply, MAX_BODY_BYTES};
use detour_state::{Redis, RedisLedger};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::runtime::Handle;

use super::host::wall_time_nanos;
use super::router::{response_headers, synthetic, RouterReply};

/// The in-process state service of one loaded config.
#[derive(Debug)]
pub struct FleetRoute {
    cluster: String,
    namespace: String,
    ledger: RedisLedger,
    runtime: Option<Handle>,
}

impl FleetRoute {
    /// The route for `fleet`, when it names a Redis (`None`: its calls go over HTTP).
    /// Dials nothing yet: the first call does. The error never contains the URL.
    pub fn from_fleet(fleet: &Fleet) -> Result<Option<FleetRoute>, String> {
        let Some(secret) = &fleet.redis else {
            return Ok(None);
        };
        let url = secret.expose();
        let timeout = Duration::from_millis(fleet.call_timeout_ms.max(1));
        // `Redis::open`'s error quotes the URL: it is replaced, not passed on.
        let redis = Redis::open(url, timeout).map_err(|_| unusable_url(url))?;
        Ok(Some(FleetRoute {
            cluster: fleet.state.cluster.clone(),
            namespace: fleet.namespace.clone(),
            ledger: RedisLedger::new(Arc::new(redis), &fleet.namespace),
            runtime: None,
        }))
    }

    /// Runs every call (and so the Redis connection) on `runtime` instead of the caller's.
    pub fn on_runtime(mut self, runtime: Handle) -> FleetRoute {
        self.runtime = Some(runtime);
        self
    }

    /// The cluster whose calls this route answers.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The ledger's key namespace in Redis.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ledger underneath.
    pub fn ledger(&self) -> &RedisLedger {
        &self.ledger
    }

    /// Answers one call to [`Self::cluster`].
    pub async fn call(&self, request: HttpCallRequest) -> HttpCallResponse {
        match &self.runtime {
            Some(runtime) => {
                let ledger = self.ledger.clone();
                // A task that died or a runtime shutting down: the call was reset.
                runtime
                    .spawn(async move { fleet_call(&ledger, request).await })
                    .await
                    .unwrap_or_default()
            }
            None => fleet_call(&self.ledger, request).await,
        }
    }
}

/// Why a Redis URL cannot be used, without the URL.
fn unusable_url(url: &str) -> String {
    if url.starts_with("rediss://") {
        "detour.fleet.redis: rediss:// (TLS) is not supported by detour serve; use redis:// (the URL is not shown: it may hold a password)".into()
    } else {
        "detour.fleet.redis is not a usable Redis URL: redis://[:password@]host:port/db, redis+cluster://host:port,… or redis+sentinel://host:port,…/master (the URL is not shown: it may hold a password)".into()
    }
}

/// One `dispatch_http_call` to the state service, answered by the state crate's router on
/// `ledger`: `:method` and `:path` (with its query) route it, the body is the request's.
/// The call's timeout covers the whole exchange (Envoy's 504 when it fires).
pub async fn fleet_call(ledger: &RedisLedger, request: HttpCallRequest) -> HttpCallResponse {
    let exchange = async {
        let reply = answer(ledger, &request).await;
        into_call_response(reply).await
    };
    match request.timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| synthetic(&RouterReply::response_timeout())),
        None => exchange.await,
    }
}

async fn answer(ledger: &RedisLedger, request: &HttpCallRequest) -> Reply {
    let method = request.headers.get_str(":method").unwrap_or("GET");
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the method is not an HTTP method",
        )
        .into_reply();
    };
    let target = request.headers.get_str(":path").unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    // The service's own limit, with its own answer.
    if request.body.len() > MAX_BODY_BYTES {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
        .into_reply();
    }
    api::route(ledger, &method, path, query, &request.body).await
}

/// The router's answer as an HTTP call's answer: the headers `detour state`'s server
/// sends with it (`content-length` and `date` are added there by hyper).
async fn into_call_response(reply: Reply) -> HttpCallResponse {
    let (parts, body) = reply.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(never) => match never {},
    };
    let mut headers = response_headers(&parts);
    if headers.get(b"content-length").is_none() {
        headers.add(b"content-length", body.len().to_string().as_bytes());
    }
    if headers.get(b"date").is_none() {
        headers.add(
            b"date",
            http_date(wall_time_nanos() / 1_000_000_000).as_bytes(),
        );
    }
    HttpCallResponse {
        headers,
        body,
        trailers: detour_host::HeaderMap::new(),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of Unix seconds.
fn http_date(unix_seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_seconds / 86_400;
    let seconds = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = usize::try_from(days % 7)
        .ok()
        .and_then(|i| WEEKDAYS.get(i))
        .unwrap_or(&"Thu");
    let month = usize::try_from(month.saturating_sub(1))
        .ok()
        .and_then(|i| MONTHS.get(i))
        .unwrap_or(&"Jan");
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_460_787), "Mon, 23 Nov 2026 19:06:27 GMT");
    }

    #[test]
    fn unusable_urls_are_described_without_the_url() {
        let why = unusable_url("rediss://:hunter2@redis:6380/0");
        assert!(!why.contains("hunter2"), "{why}");
        let why = unusable_url("redis://:hunter2@[bad/0");
        assert!(!why.contains("hunter2"), "{why}");
    }
}
