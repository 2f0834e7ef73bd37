//! `detour state`'s HTTP JSON API end to end: the service in-process on a free port, a
//! private `redis-server`, a real HTTP client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests that wait for real processes need a clock and a sleep"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use detour_state::rls::RateLimits;
use detour_state::{Options, Redis, RedisLedger, Running};
use support::percentiles;
use support::redis_server::{redis_binary, RedisServer};

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

async fn start_service(redis: &RedisServer) -> Running {
    detour_state::server::start(Options {
        redis_url: redis.url(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc: None,
        namespace: "http-test".into(),
        redis_timeout: REDIS_TIMEOUT,
        limits: RateLimits::default(),
    })
    .await
    .unwrap()
}

struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    fn new(running: &Running) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", running.http),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, http::HeaderMap) {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .expect("the service answers within 10 s, Redis up or down")
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, body, _) = self.call("POST", path, Some(body)).await;
        (status, body)
    }
}

fn reserve_body(id: &str, limit: u64, estimate: u64) -> Value {
    json!({
        "request_id": id,
        "scopes": [{"key": "detour/v1/budget/total/1793491200000", "limit_nanos": limit},
                   {"key": "detour/v1/budget/tag/Spec/1793491200000", "limit_nanos": limit * 10}],
        "estimate_nanos": estimate,
        "ttl_ms": 60_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_settle_release_lease_and_account() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let running = start_service(&redis).await;
    let api = Api::new(&running);

    assert_eq!(api.call("GET", "/healthz", None).await.0, 200);
    assert_eq!(
        api.post("/v1/reserve", reserve_body("r1", 1_000, 400))
            .await,
        (200, json!({"outcome": "reserved"}))
    );
    assert_eq!(
        api.post("/v1/reserve", reserve_body("r2", 1_000, 700))
            .await,
        (
            200,
            json!({"outcome": "refused", "scope": "detour/v1/budget/total/1793491200000"})
        )
    );
    // Settle twice: counted once; the actual may pass the estimate.
    let settle = json!({"request_id": "r1", "actual_nanos": 450});
    assert_eq!(
        api.post("/v1/settle", settle.clone()).await,
        (200, json!({"ending": "applied"}))
    );
    assert_eq!(
        api.post("/v1/settle", settle).await,
        (200, json!({"ending": "repeated"}))
    );
    let (status, account, _) = api
        .call(
            "GET",
            "/v1/account?scope=detour%2Fv1%2Fbudget%2Ftotal%2F1793491200000",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(account["spent_nanos"], 450);
    assert_eq!(account["reserved_nanos"], 0);

    assert_eq!(
        api.post("/v1/reserve", reserve_body("r3", 1_000, 100))
            .await
            .0,
        200
    );
    assert_eq!(
        api.post("/v1/release", json!({"request_id": "r3"})).await,
        (200, json!({"ending": "applied"}))
    );
    assert_eq!(
        api.post("/v1/release", json!({"request_id": "r3"})).await,
        (200, json!({"ending": "repeated"}))
    );
    assert_eq!(
        api.post("/v1/release", json!({"request_id": "nope"})).await,
        (200, json!({"ending": "unknown"}))
    );

    // A lease takes what is left (550), returning converts the used part.
    let (status, lease) = api
        .post("/v1/lease", json!({"holder_id": "envoy-1", "scopes": reserve_body("x", 1_000, 0)["scopes"], "want_nanos": 10_000}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(lease["granted_nanos"], 550);
    assert_eq!(lease["room_nanos"], 0);
    let id = lease["lease_id"].as_str().unwrap().to_string();
    assert_eq!(
        api.post(
            "/v1/lease/return",
            json!({"lease_id": id, "used_nanos": 50})
        )
        .await,
        // 450 settled before, 50 now: the scope's spend right after this return.
        (200, json!({"ending": "applied", "spent_nanos": 500}))
    );
    let (_, account, _) = api
        .call(
            "GET",
            "/v1/account?scope=detour/v1/budget/total/1793491200000",
            None,
        )
        .await;
    assert_eq!(
        (
            account["spent_nanos"].as_u64(),
            account["reserved_nanos"].as_u64()
        ),
        (Some(500), Some(0))
    );
    assert_eq!(
        api.post("/v1/expire", json!({})).await,
        (200, json!({"expired": []}))
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_naming_the_field() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let running = start_service(&redis).await;
    let api = Api::new(&running);
    let field = |body: &Value| body["error"]["field"].as_str().map(str::to_string);

    let mut missing = reserve_body("r", 10, 1);
    missing.as_object_mut().unwrap().remove("estimate_nanos");
    let (status, body) = api.post("/v1/reserve", missing).await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (400, Some("estimate_nanos"))
    );
    assert_eq!(body["error"]["type"], "invalid_request");

    let mut bad_scope = reserve_body("r", 10, 1);
    bad_scope["scopes"][1]["key"] = json!("");
    let (status, body) = api.post("/v1/reserve", bad_scope).await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (400, Some("scopes[1].key"))
    );

    let (status, body) = api
        .post("/v1/settle", json!({"request_id": "r", "actual_nanos": -5}))
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (400, Some("actual_nanos"))
    );
    let (status, body) = api.post("/v1/lease", json!({"holder_id": 3})).await;
    assert_eq!((status, field(&body).as_deref()), (400, Some("holder_id")));
    let (status, body, _) = api.call("GET", "/v1/account", None).await;
    assert_eq!((status, field(&body).as_deref()), (400, Some("scope")));

    // Amounts Lua could not compare exactly are refused, not misjudged.
    let (status, body) = api
        .post("/v1/reserve", reserve_body("big", 10, 1 << 53))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("estimate_nanos"));

    let (status, _, _) = api.call("POST", "/v1/reserve", None).await;
    assert_eq!(status, 400, "an empty body is not JSON");
    assert_eq!(api.call("GET", "/v1/reserve", None).await.0, 405);
    assert_eq!(api.call("GET", "/v2/nothing", None).await.0, 404);

    // A reused id is a conflict.
    assert_eq!(
        api.post("/v1/reserve", reserve_body("once", 10, 1)).await.0,
        200
    );
    assert_eq!(
        api.post("/v1/release", json!({"request_id": "once"}))
            .await
            .0,
        200
    );
    let (status, body) = api.post("/v1/reserve", reserve_body("once", 10, 1)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (409, Some("id_reused"))
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservers_over_http_get_exactly_what_fits() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let running = start_service(&redis).await;
    let api = Arc::new(Api::new(&running));
    // 1,000 of budget, estimates of 30: exactly 33 of 60 concurrent reservers fit.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                api.post("/v1/reserve", reserve_body(&format!("c{i}"), 1_000, 30))
                    .await
            })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        if body["outcome"] == "reserved" {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 33);
    let (_, account, _) = api
        .call(
            "GET",
            "/v1/account?scope=detour/v1/budget/total/1793491200000",
            None,
        )
        .await;
    assert_eq!(account["reserved_nanos"], 990);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_503_then_the_service_recovers() {
    let Some(binary) = redis_binary() else {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    };
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let running = start_service(&redis).await;
    let api = Api::new(&running);
    assert_eq!(
        api.post("/v1/reserve", reserve_body("before", 1_000, 10))
            .await
            .0,
        200
    );

    redis.stop();
    let started = Instant::now();
    let (status, body, headers) = api
        .call(
            "POST",
            "/v1/reserve",
            Some(reserve_body("during", 1_000, 10)),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "unavailable");
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        started.elapsed() < REDIS_TIMEOUT * 4,
        "answered in {:?}",
        started.elapsed()
    );
    assert_eq!(api.call("GET", "/healthz", None).await.0, 503);
    assert_eq!(
        api.post(
            "/v1/settle",
            json!({"request_id": "before", "actual_nanos": 5})
        )
        .await
        .0,
        503
    );

    // Redis comes back on the same address: the service reconnects by itself.
    let _back = RedisServer::start_on(&binary, redis.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.call("GET", "/healthz", None).await.0 != 200 {
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.post("/v1/reserve", reserve_body("after", 1_000, 10))
            .await,
        (200, json!({"outcome": "reserved"}))
    );
    running.stop().await;
}

/// Latency of one reservation, over HTTP and on Redis directly (printed; run with
/// `--nocapture` to read the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_latency_over_http_and_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let running = start_service(&redis).await;
    let api = Api::new(&running);
    const N: usize = 1_000;
    let limit = 1_000_000_000;
    let mut over_http = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        let (status, _) = api
            .post("/v1/reserve", reserve_body(&format!("h{i}"), limit, 1_000))
            .await;
        over_http.push(t.elapsed());
        assert_eq!(status, 200);
    }
    let ledger = RedisLedger::new(
        Arc::new(Redis::open(&redis.url(), REDIS_TIMEOUT).unwrap()),
        "latency",
    );
    let scopes = [
        detour_core::ledger::ScopeLimit {
            key: "total".into(),
            limit_nanos: limit,
        },
        detour_core::ledger::ScopeLimit {
            key: "tag/Spec".into(),
            limit_nanos: limit,
        },
    ];
    let mut direct = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        ledger
            .reserve(&format!("d{i}"), &scopes, 1_000, 1_795_460_787_000, 60_000)
            .await
            .unwrap();
        direct.push(t.elapsed());
    }
    let (hp50, hp99) = percentiles(over_http);
    let (dp50, dp99) = percentiles(direct);
    println!("reserve, 2 scopes, {N} sequential calls: HTTP p50 {hp50} µs p99 {hp99} µs; Redis script p50 {dp50} µs p99 {dp99} µs");
    // Loose bound: a debug build on a busy 2-core machine, but never seconds.
    assert!(hp99 < 1_000_000 && dp99 < 1_000_000);
    running.stop().await;
}
