//! Fleet mode in `detour serve`: with `detour.fleet.redis`, the filter's calls to the state
//! service are answered in-process by the state crate's router on Redis
//! (`detour::serve::fleet`); without it they go over HTTP to `fleet.state`. Each test
//! starts a private `redis-server` on a free 127.0.0.1 port, stops it by PID, and prints
//! `SKIPPED` when the binary is absent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;
// The state crate's private `redis-server` (one implementation for both crates' tests).
#[path = "../../state/tests/support/redis_server.rs"]
mod redis_server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use detour::serve::fleet::{fleet_call, FleetRoute};
use detour_core::fleet::Fleet;
use detour_host::{HeaderMap, HttpCallRequest, HttpCallResponse};
use redis_server::RedisServer;
use serde_json::{json, Value};

const PASSWORD: &str = "s3cret-fleet-pw";

// --- configs and calls -------------------------------------------------------------------

fn config_text(fleet: &str) -> String {
    format!(
        "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/m, api_base: \"http://127.0.0.1:9/v1\", api_key: sk-inline}}\ndetour:\n  fleet: {fleet}\n"
    )
}

fn fleet_of(text: &str) -> Fleet {
    let loaded = match detour_core::config::load(text, &fake_env) {
        Ok(loaded) => loaded,
        Err(e) => panic!("config does not load: {:?}\n{text}", e.errors),
    };
    loaded.config.fleet.expect("fleet mode is on")
}

fn request(method: &str, path: &str, body: Option<Value>) -> HttpCallRequest {
    HttpCallRequest {
        upstream: "ignored".into(),
        headers: HeaderMap::from_pairs([
            (":method", method),
            (":path", path),
            (":authority", "detour-state"),
            ("content-type", "application/json"),
        ]),
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        trailers: HeaderMap::new(),
        timeout: Some(Duration::from_secs(5)),
    }
}

/// (status, JSON body) of an answer, checking the headers an HTTP answer has.
fn read(response: &HttpCallResponse) -> (u16, Value) {
    let headers = &response.headers;
    let status = headers
        .get_str(":status")
        .and_then(|s| s.parse().ok())
        .expect(":status");
    assert_eq!(
        headers.get_str("content-type"),
        Some("application/json"),
        "{headers:?}"
    );
    assert_eq!(
        headers.get_str("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert!(
        headers.get_str("date").is_some_and(|d| d.ends_with(" GMT")),
        "{headers:?}"
    );
    (status, serde_json::from_slice(&response.body).unwrap())
}

const TOTAL: &str = "detour/v1/budget/total/1793491200000";
const TAG: &str = "detour/v1/budget/tag/Spec/1793491200000";

fn lease_body(holder: &str, want: u64) -> Value {
    json!({
        "holder_id": holder,
        "scopes": [{"key": TOTAL, "limit_nanos": 1_000}, {"key": TAG, "limit_nanos": 600}],
        "want_nanos": want,
        "ttl_ms": 60_000,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// --- the in-process answer, at the unit level ---------------------------------------------

#[test]
fn a_lease_answered_in_process_shows_in_the_account() {
    let Some(redis) = RedisServer::start_with_password(PASSWORD) else {
        return;
    };
    let fleet = fleet_of(&config_text(&format!(
        "{{redis: \"{}\", namespace: unit}}",
        redis.url()
    )));
    let route = FleetRoute::from_fleet(&fleet).unwrap().unwrap();
    assert_eq!(route.cluster(), fleet.state.cluster);
    assert_eq!(route.namespace(), "unit");
    runtime().block_on(async {
        let ledger = route.ledger();
        // A lease: the tag is the tightest scope (600), 400 granted, 200 left.
        let (status, lease) = read(
            &fleet_call(
                ledger,
                request("POST", "/v1/lease", Some(lease_body("envoy-1", 400))),
            )
            .await,
        );
        assert_eq!(status, 200, "{lease}");
        assert_eq!(lease["granted_nanos"], 400);
        assert_eq!(lease["room_nanos"], 200);
        let id = lease["lease_id"].as_str().unwrap().to_string();
        assert!(id.starts_with("lease/envoy-1/"), "{id}");
        // The account shows the hold in both scopes (the query is percent-decoded).
        let account_of = |scope: &str| {
            let path = format!("/v1/account?scope={}", scope.replace('/', "%2F"));
            async move { read(&fleet_call(ledger, request("GET", &path, None)).await) }
        };
        let (status, account) = account_of(TOTAL).await;
        assert_eq!(status, 200);
        assert_eq!(
            account,
            json!({"scope": TOTAL, "spent_nanos": 0, "reserved_nanos": 400})
        );
        assert_eq!(account_of(TAG).await.1["reserved_nanos"], 400);
        // The route's own entry point (what `dispatch_http_call` uses) answers the same.
        let (status, full) = read(
            &route
                .call(request(
                    "POST",
                    "/v1/lease",
                    Some(lease_body("envoy-2", 1_000)),
                ))
                .await,
        );
        assert_eq!(
            (status, &full["granted_nanos"], &full["room_nanos"]),
            (200, &json!(200), &json!(0))
        );
        // Full: 0 granted, still an id, and spend reported under it is recorded.
        let (_, none) = read(
            &route
                .call(request(
                    "POST",
                    "/v1/lease",
                    Some(lease_body("envoy-3", 50)),
                ))
                .await,
        );
        assert_eq!(
            (&none["granted_nanos"], &none["room_nanos"]),
            (&json!(0), &json!(0))
        );
        let none_id = none["lease_id"].as_str().unwrap();
        assert!(!none_id.is_empty());
        let returned = route
            .call(request(
                "POST",
                "/v1/lease/return",
                Some(json!({"lease_id": none_id, "used_nanos": 30})),
            ))
            .await;
        // The scope's spend right after each return, as the ledger read it.
        assert_eq!(
            read(&returned),
            (200, json!({"ending": "applied", "spent_nanos": 30}))
        );
        let returned = route
            .call(request(
                "POST",
                "/v1/lease/return",
                Some(json!({"lease_id": id, "used_nanos": 150})),
            ))
            .await;
        assert_eq!(
            read(&returned),
            (200, json!({"ending": "applied", "spent_nanos": 180}))
        );
        assert_eq!(
            account_of(TAG).await.1,
            json!({"scope": TAG, "spent_nanos": 180, "reserved_nanos": 200})
        );
        // The service's error answers, unchanged.
        let (status, body) = read(&fleet_call(ledger, request("GET", "/nope", None)).await);
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (404, Some("not_found"))
        );
        let (status, body) = read(
            &fleet_call(
                ledger,
                request("POST", "/v1/lease", Some(json!({"holder_id": "h"}))),
            )
            .await,
        );
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some("scopes"))
        );
        let (status, _) = read(&fleet_call(ledger, request("GET", "/v1/lease", None)).await);
        assert_eq!(status, 405);
        let mut big = request("POST", "/v1/settle", None);
        big.body = vec![b' '; 64 * 1024 + 1];
        assert_eq!(read(&fleet_call(ledger, big).await).0, 413);
        let (status, body) = read(&fleet_call(ledger, request("GET", "/healthz", None)).await);
        assert_eq!((status, body), (200, json!({"status": "ok"})));
    });
    // Redis gone: 503 with retry-after, as from the service.
    let mut redis = redis;
    redis.stop();
    runtime().block_on(async {
        let response = fleet_call(route.ledger(), request("GET", "/healthz", None)).await;
        let (status, body) = read(&response);
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (503, Some("unavailable"))
        );
        assert_eq!(response.headers.get_str("retry-after"), Some("1"));
        assert!(!String::from_utf8_lossy(&response.body).contains(PASSWORD));
    });
}

#[test]
fn the_calls_timeout_gives_envoys_504() {
    // A "Redis" that accepts and never answers; the Redis time limit is longer than the
    // call's, so the call's timeout fires first.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let fleet = fleet_of(&config_text(&format!(
        "{{redis: \"redis://127.0.0.1:{port}/0\", call_timeout: 5s}}"
    )));
    let route = FleetRoute::from_fleet(&fleet).unwrap().unwrap();
    let mut call = request("GET", "/healthz", None);
    call.timeout = Some(Duration::from_millis(200));
    let response = runtime().block_on(route.call(call));
    assert_eq!(response.headers.get_str(":status"), Some("504"));
    assert_eq!(response.body, b"upstream request timeout");
    drop(hole);
}

#[test]
fn a_fleet_without_redis_is_not_answered_in_process() {
    let fleet = fleet_of(&config_text("{state: \"http://127.0.0.1:9\"}"));
    assert!(FleetRoute::from_fleet(&fleet).unwrap().is_none());
}

// --- `detour serve` as a process ------------------------------------------------------------

/// `tests/guests/dispatch_probe.wat` (one `dispatch_http_call` per request to the cluster
/// named by `x-probe-cluster`, answering `<headers>;<:status>;<body>`), with the call's
/// `GET /` turned into `GET <path>`.
fn probe_for(dir: &Path, path: &str) -> PathBuf {
    assert!(path.len() < 128 && !path.contains(['"', '\\']));
    let wat = std::fs::read_to_string(repo_root().join("tests/guests/dispatch_probe.wat")).unwrap();
    let mut edited = wat.clone();
    for (from, to) in [
        (
            "\"\\05\\00\\00\\00\\01\\00\\00\\00\"".to_string(),
            format!("\"\\05\\00\\00\\00\\{:02x}\\00\\00\\00\"", path.len()),
        ),
        (":path\\00/\\00".to_string(), format!(":path\\00{path}\\00")),
        (
            "(i32.const 0x400) (i32.const 65)".to_string(),
            format!("(i32.const 0x400) (i32.const {})", 64 + path.len()),
        ),
    ] {
        assert_eq!(
            edited.matches(&from).count(),
            1,
            "the probe guest changed: {from}"
        );
        edited = edited.replace(&from, &to);
    }
    let wasm = dir.join("fleet_probe.wasm");
    std::fs::write(&wasm, wat::parse_str(&edited).unwrap()).unwrap();
    wasm
}

/// One request to the probe, its call going to `cluster`: the probe's answer.
fn probe(address: &str, cluster: &str) -> String {
    let (status, body) = http_get(address, "/", &format!("x-probe-cluster: {cluster}\r\n"));
    assert_eq!(status, 200, "{body}");
    body
}

/// `detour serve` with `detour.fleet.redis` starts cleanly, answers the filter's calls to
/// the state cluster in-process on that Redis (password and all, never logged), and gives
/// exactly the answer the same call gets over HTTP from `detour state` when the config
/// names the service instead.
#[test]
fn serve_answers_the_state_cluster_in_process_as_the_service_would() {
    let Some(redis) = RedisServer::start_with_password(PASSWORD) else {
        return;
    };
    let dir = scratch_dir("serve-fleet");
    // A lease taken through the in-process route (namespace `detour`, the default).
    let in_process = config_text(&format!("{{redis: \"{}\"}}", redis.url()));
    let fleet = fleet_of(&in_process);
    let route = FleetRoute::from_fleet(&fleet).unwrap().unwrap();
    let (status, lease) = runtime().block_on(async {
        read(
            &route
                .call(request("POST", "/v1/lease", Some(lease_body("e2e", 250))))
                .await,
        )
    });
    assert_eq!((status, &lease["granted_nanos"]), (200, &json!(250)));

    let wasm = probe_for(&dir, &format!("/v1/account?scope={TOTAL}"));
    let want = format!(
        "4;200;{}",
        json!({"scope": TOTAL, "spent_nanos": 0, "reserved_nanos": 250})
    );

    let (serve_redis, listen) = start_serve(&dir, "serve-redis", &wasm, &in_process, &[]);
    let listen =
        listen.unwrap_or_else(|| panic!("serve did not start:\n{}", serve_redis.log_text()));
    // Both workers (connections alternate), twice: one connection, many calls.
    for _ in 0..4 {
        assert_eq!(probe(&listen, &fleet.state.cluster), want);
    }
    let log = serve_redis.log_text();
    assert!(
        log.contains("fleet mode: calls to the state cluster"),
        "{log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the Redis password was logged:\n{log}"
    );
    drop(serve_redis);

    // The same call over HTTP: `detour state` on the same Redis, named by `fleet.state`.
    let (state, ready) = start_detour(
        &dir,
        "state",
        &["state", "--redis", &redis.url(), "--listen", "127.0.0.1:0"],
    );
    let state_addr = ready
        .unwrap_or_else(|| panic!("detour state did not start:\n{}", state.log_text()))["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let over_http = config_text(&format!("{{state: \"http://{state_addr}\"}}"));
    let http_fleet = fleet_of(&over_http);
    let (serve_http, listen) = start_serve(&dir, "serve-http", &wasm, &over_http, &[]);
    let listen =
        listen.unwrap_or_else(|| panic!("serve did not start:\n{}", serve_http.log_text()));
    assert_eq!(probe(&listen, &http_fleet.state.cluster), want);
    assert!(!serve_http.log_text().contains("fleet mode:"));
}

/// A Redis URL `detour serve` cannot use stops it at startup, with a message that does not
/// show the URL (it may hold a password).
#[test]
fn an_unusable_redis_url_stops_serve_without_showing_it() {
    let dir = scratch_dir("serve-fleet-bad-url");
    let wasm = probe_for(&dir, "/healthz");
    // A Sentinel URL must name its master: this one passes the config's check of the
    // scheme but not the Redis client's.
    let text = config_text(&format!(
        "{{redis: \"redis+sentinel://:{PASSWORD}@127.0.0.1:1\"}}"
    ));
    let (mut proc, listen) = start_serve(&dir, "serve-bad", &wasm, &text, &[]);
    assert!(listen.is_none(), "serve started with an unusable Redis URL");
    let status = proc.child.wait().unwrap();
    assert!(!status.success());
    let log = proc.log_text();
    assert!(log.contains("not a usable Redis URL"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the Redis password was shown:\n{log}"
    );
}
