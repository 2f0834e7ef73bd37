//! Micro-benchmarks of the core's per-request hot path (issue #8): parsing the request,
//! the routing decision, budget reservation, usage extraction from JSON and SSE, and the
//! per-request record (event JSON, metric samples).
//!
//! `cargo bench -p detour-core --bench hot_path` (criterion; reports in target/criterion).
//! These run natively: inside Envoy the same code runs as wasm (V8), typically 1.5–2×
//! slower, plus the hostcalls, which are not here (the store is `MemoryStore`).
//! BENCHMARKS.md has the figures and what they explain.

// A benchmark is a test harness: a broken fixture should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "benchmark harness, not filter code"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use detour_core::budget;
use detour_core::config::{self, Config};
use detour_core::flow::{Answer, Flow, Step, Verdict};
use detour_core::health;
use detour_core::rate;
use detour_core::request::ParsedRequest;
use detour_core::store::{MemoryStore, Store, StoreError};
use detour_core::telemetry;
use detour_core::usage::{self, SseUsage};

/// 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000_000;

/// The bench's config (bench/run.py `router_config`): three groups, one fallback.
const BENCH_CONFIG: &str = r#"
model_list:
  - model_name: bench
    litellm_params: {model: openai/bench-model, api_base: "http://127.0.0.1:8000/json/v1", api_key: sk-bench}
  - model_name: bench-sse
    litellm_params: {model: openai/bench-model, api_base: "http://127.0.0.1:8000/sse/v1", api_key: sk-bench}
  - model_name: bench-fallback
    litellm_params: {model: openai/bench-model, api_base: "http://127.0.0.1:8000/fail/v1", api_key: sk-bench}
router_settings:
  num_retries: 0
  allowed_fails: 1000000000
  disable_cooldowns: true
  request_timeout: 30
  fallbacks: [{bench-fallback: [bench]}]
"#;

/// A config with budgets in every scope a request touches, priced, with rpm/tpm: the
/// reservation path at its widest.
const BUDGET_CONFIG: &str = r#"
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: "http://127.0.0.1:8000/json/v1"
      api_key: sk-bench
      input_cost_per_token: 0.000005
      output_cost_per_token: 0.000025
      # Never reached: every iteration takes from the same window at the same `now`.
      rpm: 1000000000000
      tpm: 1000000000000000
    model_info: {id: bench-a}
detour:
  budgets:
    total: 1000000
    groups: {bench: 100000}
    models: {bench-model: 100000}
    deployments: {bench-a: 100000}
"#;

fn load(text: &str) -> Config {
    match config::load(text, &|_| None) {
        Ok(loaded) => loaded.config,
        Err(err) => panic!("bench config does not load: {err:?}"),
    }
}

/// What the filter does at configure time: shared records exist before traffic.
fn store_for(config: &Config) -> MemoryStore {
    let mut store = MemoryStore::default();
    for d in &config.deployments {
        health::ensure_record(&mut store, &d.id).unwrap();
        rate::ensure(&mut store, &d.id);
    }
    budget::ensure_accounts(&mut store, &config.budgets.limits, NOW);
    store
}

/// The bench request (bench/run.py `request_body`): a 1,024-character user prompt.
fn request_body(model: &str, stream: bool) -> Vec<u8> {
    let prompt: String = "The quick brown fox jumps over the lazy dog. "
        .repeat(30)
        .chars()
        .take(1024)
        .collect();
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    serde_json::to_vec(&body).unwrap()
}

/// The bench upstream's non-streamed answer.
const CHAT_JSON: &[u8] = br#"{"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the bench upstream"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 260, "completion_tokens": 6, "total_tokens": 266}}"#;

/// The bench upstream's SSE answer: role chunk, 5 content chunks, finish, usage, [DONE].
fn sse_body() -> Vec<u8> {
    let chunk =
        |delta: serde_json::Value, finish: Option<&str>, usage: Option<serde_json::Value>| {
            let mut obj = serde_json::json!({
                "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "bench-model",
                "choices": if usage.is_some() { serde_json::json!([]) } else {
                    serde_json::json!([{"index": 0, "delta": delta, "finish_reason": finish}])
                },
            });
            if let Some(u) = usage {
                obj["usage"] = u;
            }
            format!("data: {obj}\n\n")
        };
    let mut out = chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
        None,
    );
    for word in ["hello ", "from ", "the ", "bench ", "upstream"] {
        out.push_str(&chunk(serde_json::json!({"content": word}), None, None));
    }
    out.push_str(&chunk(serde_json::json!({}), Some("stop"), None));
    out.push_str(&chunk(
        serde_json::Value::Null,
        None,
        Some(
            serde_json::json!({"prompt_tokens": 260, "completion_tokens": 6, "total_tokens": 266}),
        ),
    ));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// Counts shared-data round trips: in the filter each `get` and `set` is one hostcall.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    gets: std::cell::Cell<u32>,
    sets: u32,
}

impl Store for Counting {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.sets += 1;
        self.inner.set(key, value, cas)
    }
}

fn parse(config: &Config, body: &[u8]) -> ParsedRequest {
    match ParsedRequest::parse(config, "POST", "/v1/chat/completions", body) {
        Ok(parsed) => parsed,
        Err(response) => panic!("bench request refused: {}", response.status),
    }
}

/// One successful non-streamed request as the glue drives it, minus the hostcalls:
/// parse, route, answer 200, meter the body, settle, the request event and its metrics.
fn whole_request<S: Store>(config: &Config, store: &mut S, body: &[u8]) -> usize {
    let parsed = parse(config, body);
    let mut flow = Flow::start(config, parsed, None, NOW, 7).unwrap();
    let Step::Send(send) = flow.poll(config, store, NOW) else {
        panic!("first poll does not send: {:?}", flow.take_events())
    };
    let verdict = flow.on_answer(
        config,
        store,
        NOW + 1,
        Answer {
            status: Some(200),
            retry_after: None,
            retry_after_ms: None,
            body: b"",
            transport_failure: None,
        },
    );
    assert!(matches!(verdict, Verdict::Deliver(_)));
    let usage = usage::from_json_body(CHAT_JSON);
    flow.settle(config, store, NOW + 2, usage);
    let mut n = send.body.len();
    for event in flow.take_events() {
        n += event.to_json().len();
    }
    n += flow.request_event(config, NOW + 2, 2).to_json().len();
    let deployment = flow.served().and_then(|idx| config.deployment(idx));
    n += telemetry::for_request(
        flow.group(),
        deployment.map(|d| d.id.as_str()),
        flow.outcome().unwrap_or("abandoned"),
        2,
        None,
    )
    .len();
    if let (Some(d), Some(u)) = (deployment, flow.settled_usage()) {
        n += telemetry::for_usage(&d.model, &u).len();
    }
    n
}

fn request(c: &mut Criterion) {
    let config = load(BENCH_CONFIG);
    let body = request_body("bench", false);
    let mut g = c.benchmark_group("request");
    g.bench_function("parse_1k_prompt", |b| {
        b.iter(|| parse(&config, black_box(&body)))
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let config = load(BENCH_CONFIG);
    let body = request_body("bench", false);
    let parsed = parse(&config, &body);
    let mut store = store_for(&config);
    let mut g = c.benchmark_group("routing");
    // The routing decision: group, chain, health check, the first Send (its body
    // re-serialised for the deployment).
    g.bench_function("start_and_first_poll", |b| {
        b.iter_batched(
            || parsed.clone(),
            |parsed| {
                let mut flow = Flow::start(&config, parsed, None, NOW, 7).unwrap();
                black_box(flow.poll(&config, &mut store, NOW))
            },
            BatchSize::SmallInput,
        )
    });
    // The fallback decision: primary 503, then the secondary's Send.
    let fb_body = request_body("bench-fallback", false);
    let fb_parsed = parse(&config, &fb_body);
    g.bench_function("fallback_after_503", |b| {
        // Setup and routine both touch the store; criterion runs them one after the other.
        let store = std::cell::RefCell::new(&mut store);
        b.iter_batched(
            || {
                let mut flow = Flow::start(&config, fb_parsed.clone(), None, NOW, 7).unwrap();
                let _ = flow.poll(&config, &mut **store.borrow_mut(), NOW);
                flow
            },
            |mut flow| {
                let mut store = store.borrow_mut();
                let verdict = flow.on_answer(
                    &config,
                    &mut **store,
                    NOW + 1,
                    Answer {
                        status: Some(503),
                        retry_after: None,
                        retry_after_ms: None,
                        body: b"",
                        transport_failure: None,
                    },
                );
                black_box(verdict);
                black_box(flow.poll(&config, &mut **store, NOW + 1))
            },
            BatchSize::SmallInput,
        )
    });
    // How many shared-data round trips (hostcalls in the filter) one request makes.
    for (name, text) in [
        ("bench config", BENCH_CONFIG),
        ("budgets + rpm/tpm", BUDGET_CONFIG),
    ] {
        let config = load(text);
        let mut counting = Counting {
            inner: store_for(&config),
            ..Counting::default()
        };
        whole_request(&config, &mut counting, &body);
        eprintln!(
            "store round trips per successful request ({name}): {} get, {} set",
            counting.gets.get(),
            counting.sets
        );
    }
    g.bench_function("whole_request_json", |b| {
        b.iter(|| whole_request(&config, &mut store, black_box(&body)))
    });
    let budget_config = load(BUDGET_CONFIG);
    let mut budget_store = store_for(&budget_config);
    g.bench_function("whole_request_json_with_budgets_and_rpm", |b| {
        b.iter(|| whole_request(&budget_config, &mut budget_store, black_box(&body)))
    });
    g.finish();
}

fn reservation(c: &mut Criterion) {
    let config = load(BUDGET_CONFIG);
    let mut store = store_for(&config);
    let limits = &config.budgets.limits;
    let all: Vec<(usize, bool)> = (0..limits.len()).map(|i| (i, true)).collect();
    let mut g = c.benchmark_group("reservation");
    // One read-modify-CAS per scope, then the same again to give it back.
    g.bench_function(format!("reserve_release_{}_scopes", all.len()), |b| {
        b.iter(|| {
            let held = budget::reserve(&mut store, limits, &all, NOW, black_box(5_000)).unwrap();
            budget::release(&mut store, &held);
        })
    });
    g.bench_function("reserve_1_scope", |b| {
        b.iter_batched(
            || (),
            |()| {
                let held =
                    budget::reserve(&mut store, limits, &all[..1], NOW, black_box(5_000)).unwrap();
                budget::release(&mut store, &held);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn usage_extraction(c: &mut Criterion) {
    let sse = sse_body();
    // What is timed must work: a benchmark of extraction that finds nothing measures nothing.
    let json_usage = usage::from_json_body(CHAT_JSON).expect("usage in the JSON answer");
    assert_eq!(
        (json_usage.prompt_tokens, json_usage.completion_tokens),
        (260, 6)
    );
    let (stripped, sse_usage) = usage::from_sse_body(&sse, true);
    let sse_usage = sse_usage.expect("usage in the SSE answer");
    assert_eq!(
        (sse_usage.prompt_tokens, sse_usage.completion_tokens),
        (260, 6)
    );
    assert!(stripped.len() < sse.len(), "the usage chunk is stripped");
    let mut g = c.benchmark_group("usage");
    g.bench_function("json_body", |b| {
        b.iter(|| usage::from_json_body(black_box(CHAT_JSON)))
    });
    g.bench_function("sse_whole_body_strip", |b| {
        b.iter(|| usage::from_sse_body(black_box(&sse), true))
    });
    // As the stream passes through Envoy: one push per event (nginx writes them at once,
    // a real provider one by one).
    let events: Vec<&[u8]> = {
        let mut out = Vec::new();
        let mut rest: &[u8] = &sse;
        while let Some(pos) = rest.windows(2).position(|w| w == b"\n\n") {
            let (event, tail) = rest.split_at(pos + 2);
            out.push(event);
            rest = tail;
        }
        out
    };
    g.bench_function("sse_chunk_per_event", |b| {
        b.iter(|| {
            let mut meter = SseUsage::new(true);
            let mut n = 0;
            for event in &events {
                n += meter.push(black_box(event)).len();
            }
            n += meter.finish().len();
            (n, meter.usage())
        })
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let config = load(BENCH_CONFIG);
    let body = request_body("bench", false);
    let mut store = store_for(&config);
    let parsed = parse(&config, &body);
    let mut flow = Flow::start(&config, parsed, None, NOW, 7).unwrap();
    let _ = flow.poll(&config, &mut store, NOW);
    let _ = flow.on_answer(
        &config,
        &mut store,
        NOW + 1,
        Answer {
            status: Some(200),
            retry_after: None,
            retry_after_ms: None,
            body: b"",
            transport_failure: None,
        },
    );
    flow.settle(
        &config,
        &mut store,
        NOW + 2,
        usage::from_json_body(CHAT_JSON),
    );
    let mut g = c.benchmark_group("record");
    g.bench_function("request_event_to_json", |b| {
        b.iter(|| flow.request_event(&config, NOW + 2, 2).to_json())
    });
    g.bench_function("metric_samples_per_request", |b| {
        b.iter(|| {
            let mut s = telemetry::for_request("bench", Some("bench/0"), "success", 2, None);
            s.extend(telemetry::for_usage(
                "bench-model",
                &usage::Usage {
                    prompt_tokens: 260,
                    completion_tokens: 6,
                    ..Default::default()
                },
            ));
            s
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    request,
    routing,
    reservation,
    usage_extraction,
    record
);
criterion_main!(benches);
