//! The one answer a client gets when the whole chain failed, and the events that tell
//! what happened, in order.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use common::{body_json, header, run_chat, Fixture, Provider, Reply, T0};
use detour_core::event::{Event, FallbackReason};
use detour_core::flow::Reason;
use detour_core::store::MemoryStore;
use serde_json::json;

/// Group `g` with `a` then `b`, no retries: each request meets each deployment once.
fn pair() -> Fixture {
    Fixture::new()
        .deployment_with("g", "a", &["order: 1"])
        .deployment_with("g", "b", &["order: 2"])
        .router("num_retries: 0")
}

// ---------------------------------------------------------------------------------------
// Status of the final error

#[test]
fn every_deployment_rate_limited_is_429_with_retry_after() {
    let config = pair().build();
    let mut provider = Provider::new()
        .script("a", [Reply::status(429)])
        .script("b", [Reply::status(429).retry_after("50")]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    let response = trace.response();
    assert_eq!(response.status, 429);
    assert_eq!(trace.error()["type"], "rate_limit_error");
    assert_eq!(trace.error()["code"], "all_deployments_rate_limited");
    // a is back first: after cooldown_time (30 s).
    assert_eq!(header(&response.headers, "retry-after"), Some("30"));
}

#[test]
fn every_deployment_cooling_down_is_429_with_retry_after_until_the_first_is_back() {
    let config = pair().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new()
        .script("a", [Reply::status(429).retry_after("40")])
        .script("b", [Reply::status(429)]);
    run_chat(&config, &mut store, &mut provider, "g", T0);

    let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + 10_000);
    assert!(trace.sent.is_empty(), "both are cooling down");
    let response = trace.response();
    assert_eq!(response.status, 429);
    // b is back at T0 + 30 s: 20 s from now.
    assert_eq!(header(&response.headers, "retry-after"), Some("20"));
}

#[test]
fn nothing_could_be_sent_is_503_with_retry_after() {
    let config = pair().router("allowed_fails: 0").build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new()
        .always("a", Reply::status(500))
        .always("b", Reply::status(500));
    // allowed_fails 0: the first failure opens each breaker.
    let first = run_chat(&config, &mut store, &mut provider, "g", T0);
    assert_eq!(first.sent_ids(), ["a", "b"]);

    let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + 5_000);
    assert!(trace.sent.is_empty());
    let response = trace.response();
    assert_eq!(response.status, 503);
    assert_eq!(trace.error()["code"], "no_deployment_available");
    assert_eq!(header(&response.headers, "retry-after"), Some("25"));
}

#[test]
fn a_last_attempt_that_timed_out_is_504() {
    let config = pair().build();
    let mut provider = Provider::new()
        .script("a", [Reply::status(500)])
        .script("b", [Reply::status(504)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.response().status, 504);
    assert_eq!(trace.error()["code"], "all_deployments_failed");
}

#[test]
fn any_other_failed_chain_is_502() {
    let config = pair().build();
    for (a, b) in [(504, 500), (429, 503), (401, 403), (504, 0)] {
        let reply_b = if b == 0 {
            Reply::reset()
        } else {
            Reply::status(b)
        };
        let mut provider = Provider::new()
            .script("a", [Reply::status(a)])
            .script("b", [reply_b]);
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(trace.response().status, 502, "a {a}, b {b}");
        assert_eq!(trace.error()["type"], "server_error");
        assert_eq!(header(&trace.response().headers, "retry-after"), None);
    }
}

#[test]
fn the_error_is_openai_shaped_and_lists_every_attempt() {
    let config = pair()
        .deployment("h", "c")
        .router("fallbacks: [{g: [h]}]")
        .build();
    let mut store = MemoryStore::default();
    // c is cooling down from an earlier request.
    let mut provider = Provider::new().script("c", [Reply::status(429)]);
    run_chat(&config, &mut store, &mut provider, "h", T0);

    let mut provider = Provider::new()
        .script("a", [Reply::status(500).after(1_200)])
        .script("b", [Reply::status(401).after(300)]);
    let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + 1_000);
    let response = trace.response();
    assert_eq!(
        header(&response.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(header(&response.headers, "x-detour-group"), Some("g"));
    let error = &body_json(response)["error"];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("'g'"), "{message}");
    assert!(message.contains("2 attempts sent"), "{message}");
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], "all_deployments_failed");
    assert_eq!(
        error["attempts"],
        json!([
            {"deployment": "a", "group": "g", "status": 500, "reason": "server_error", "duration_ms": 1200},
            {"deployment": "b", "group": "g", "status": 401, "reason": "auth_error", "duration_ms": 300},
            {"deployment": "c", "group": "h", "status": null, "reason": "cooling_down", "duration_ms": 0},
        ])
    );
}

// ---------------------------------------------------------------------------------------
// Events

#[test]
fn events_tell_the_story_in_order() {
    let config = Fixture::new()
        .deployment_with("g", "a", &["order: 1"])
        .deployment_with("g", "b", &["order: 2"])
        .deployment("h", "c")
        .router("num_retries: 1")
        .router("allowed_fails: 1")
        .router("fallbacks: [{g: [h]}]")
        .build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new()
        .script("a", [Reply::status(503), Reply::status(503)])
        .script("b", [Reply::status(429)])
        .script("c", [Reply::status(401)]);
    let trace = common::run(
        &config,
        &mut store,
        &mut provider,
        common::chat(&config, Some("g")),
        Some("Build"),
        T0,
        0,
    );
    assert_eq!(trace.sent_ids(), ["a", "a", "b", "c"]);
    let retry_at = trace.waits[0].until;
    let stage = Some("Build".to_string());
    assert_eq!(
        trace.events,
        [
            Event::Retry {
                ts: T0,
                group: "g".into(),
                deployment: "a".into(),
                retry: 1,
                reason: Reason::ServerError,
                status: Some(503),
                wait_ms: retry_at - T0,
            },
            // The second failure is one more than allowed_fails (1).
            Event::BreakerOpened {
                ts: retry_at,
                deployment: "a".into(),
                until: retry_at + 30_000,
                probe_failed: false,
            },
            Event::Fallback {
                ts: retry_at,
                group: "g".into(),
                stage: stage.clone(),
                from: "a".into(),
                to: "b".into(),
                reason: FallbackReason::Failure,
            },
            Event::Cooldown {
                ts: retry_at,
                deployment: "b".into(),
                until: retry_at + 30_000,
            },
            Event::Fallback {
                ts: retry_at,
                group: "g".into(),
                stage: stage.clone(),
                from: "b".into(),
                to: "c".into(),
                reason: FallbackReason::RateLimit,
            },
            Event::AllFailed {
                ts: retry_at,
                group: "g".into(),
                stage,
                attempts: 4,
                status: 502,
            },
        ]
    );

    // After cooldown_time: a's probe succeeds (Recovery); b is back without an event.
    let later = retry_at + 30_000;
    let trace = run_chat(&config, &mut store, &mut Provider::new(), "g", later);
    assert_eq!(trace.sent_ids(), ["a"]);
    assert_eq!(
        trace.events,
        [Event::Recovery {
            ts: later,
            deployment: "a".into(),
            via: "half_open".into()
        }]
    );
}

#[test]
fn a_skipped_deployment_is_left_with_the_reason_it_was_skipped() {
    let config = pair().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429)]);
    run_chat(&config, &mut store, &mut provider, "g", T0);
    let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + 1);
    let fallbacks: Vec<&Event> = trace
        .events
        .iter()
        .filter(|e| matches!(e, Event::Fallback { .. }))
        .collect();
    assert_eq!(
        fallbacks,
        [&Event::Fallback {
            ts: T0 + 1,
            group: "g".into(),
            stage: None,
            from: "a".into(),
            to: "b".into(),
            reason: FallbackReason::RateLimit,
        }]
    );
}

#[test]
fn context_window_fallbacks_are_recorded_as_such() {
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("big", "b")
        .router("context_window_fallbacks: [{g: [big]}]")
        .build();
    let mut provider = Provider::new().script("a", [Reply::context_length()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.event_names(), ["fallback"]);
    assert!(matches!(
        &trace.events[0],
        Event::Fallback { from, to, reason: FallbackReason::ContextWindow, .. } if from == "a" && to == "b"
    ));
}

#[test]
fn a_plain_success_records_no_events() {
    let config = pair().build();
    let trace = run_chat(
        &config,
        &mut MemoryStore::default(),
        &mut Provider::new(),
        "g",
        T0,
    );
    assert!(trace.events.is_empty(), "{:?}", trace.events);
}

#[test]
fn events_serialise_as_json_lines_with_an_event_tag() {
    let event = Event::Fallback {
        ts: T0,
        group: "g".into(),
        stage: Some("Build".into()),
        from: "a".into(),
        to: "b".into(),
        reason: FallbackReason::RateLimit,
    };
    let value: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(
        value,
        json!({"event": "fallback", "ts": T0, "group": "g", "stage": "Build", "from": "a", "to": "b", "reason": "rate_limit"})
    );
}

#[test]
fn a_deployment_skipped_for_its_small_window_is_left_for_the_context_window() {
    let config = Fixture::new()
        .deployment_with("g", "small", &["order: 1", "max_input_tokens: 100"])
        .deployment_with("g", "large", &["order: 2"])
        .build();
    let req = common::request(
        &config,
        &json!({"model": "g", "messages": [{"role": "user", "content": "x".repeat(4_000)}]}),
    );
    let trace = common::run(
        &config,
        &mut MemoryStore::default(),
        &mut Provider::new(),
        req,
        None,
        T0,
        0,
    );
    assert_eq!(trace.sent_ids(), ["large"]);
    assert!(
        matches!(
            &trace.events[..],
            [Event::Fallback { from, to, reason: FallbackReason::ContextWindow, .. }]
                if from == "small" && to == "large"
        ),
        "{:?}",
        trace.events
    );
}

#[test]
fn rate_limited_everywhere_the_prompt_fits_is_still_429() {
    // `small` is skipped for its window; `large` answers 429: "come back later" is the
    // useful answer, not a 502 or a context-length error.
    let config = Fixture::new()
        .deployment_with("g", "small", &["order: 1", "max_input_tokens: 100"])
        .deployment_with("g", "large", &["order: 2"])
        .router("num_retries: 0")
        .build();
    let long = "word ".repeat(400);
    let req = common::request(
        &config,
        &json!({"model": "g", "messages": [{"role": "user", "content": long}]}),
    );
    let mut provider = Provider::new().script("large", [Reply::status(429)]);
    let trace = common::run(
        &config,
        &mut MemoryStore::default(),
        &mut provider,
        req,
        None,
        T0,
        0,
    );
    assert_eq!(trace.sent_ids(), ["large"]);
    assert_eq!(trace.response().status, 429);
    assert_eq!(trace.error()["code"], "all_deployments_rate_limited");
}
