//! Retries with backoff, 429 cooldowns, the circuit breaker and its half-open probe,
//! failures that move on at once, context-window and content-policy chains, the deadline
//! and the attempt cap.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use common::{chat, concurrent_first_sends, run_chat, Fixture, Outcome, Provider, Reply, T0};
use detour_core::config::Config;
use detour_core::event::Event;
use detour_core::flow::{Answer, Reason, Verdict};
use detour_core::store::MemoryStore;
use serde_json::json;

/// Group `g`: `a` first, then `b`.
fn a_then_b() -> Fixture {
    Fixture::new()
        .deployment_with("g", "a", &["order: 1"])
        .deployment_with("g", "b", &["order: 2"])
}

#[track_caller]
fn assert_backoff(waits: &[u64], expected_bases: &[u64]) {
    assert_eq!(waits.len(), expected_bases.len(), "waits {waits:?}");
    for (wait, base) in waits.iter().zip(expected_bases) {
        assert!(
            *wait >= *base && *wait <= base + base / 10,
            "wait {wait} ms is not {base} ms + at most 10 % (all waits: {waits:?})"
        );
    }
}

fn retries(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Retry { retry, .. } => Some(*retry),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Transient failures: retry the same deployment with backoff

#[test]
fn transient_failures_are_retried_with_backoff_2_4_8_seconds_then_move_on() {
    let config = a_then_b().build();
    for reply in [
        Reply::status(500),
        Reply::status(502),
        Reply::status(503),
        Reply::status(504),
        Reply::status(529),
        Reply::reset(),
    ] {
        let status = reply.status;
        let mut provider = Provider::new().always("a", reply);
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(
            trace.sent_ids(),
            ["a", "a", "a", "a", "b"],
            "status {status:?}: one try and num_retries (3) retries, then the next deployment"
        );
        assert_backoff(&trace.wait_ms(), &[2_000, 4_000, 8_000]);
        assert_eq!(retries(&trace.events), [1, 2, 3], "status {status:?}");
        assert_eq!(trace.delivered_from(), Some("b"));
    }
}

#[test]
fn backoff_jitter_stays_within_ten_percent_for_every_seed() {
    let config = a_then_b().router("allowed_fails: 100").build();
    for seed in 0..200 {
        let mut provider = Provider::new().always("a", Reply::status(503));
        let trace = common::run(
            &config,
            &mut MemoryStore::default(),
            &mut provider,
            chat(&config, Some("g")),
            None,
            T0,
            seed,
        );
        assert_backoff(&trace.wait_ms(), &[2_000, 4_000, 8_000]);
    }
}

#[test]
fn the_chain_moves_on_after_num_retries_retries() {
    for (num_retries, expected) in [
        (0, vec!["a", "b"]),
        (1, vec!["a", "a", "b"]),
        (2, vec!["a", "a", "a", "b"]),
    ] {
        let config = a_then_b()
            .router(&format!("num_retries: {num_retries}"))
            .build();
        let mut provider = Provider::new().always("a", Reply::status(503));
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(trace.sent_ids(), expected, "num_retries {num_retries}");
        assert_eq!(trace.waits.len(), num_retries);
    }
}

#[test]
fn a_retry_that_succeeds_is_delivered() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script("a", [Reply::status(502)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "a"]);
    assert_eq!(trace.delivered_from(), Some("a"));
    assert_backoff(&trace.wait_ms(), &[2_000]);
    assert_eq!(
        trace.sent[1].at, trace.waits[0].until,
        "the retry goes out when the wait ends"
    );
}

#[test]
fn backoff_base_is_configurable() {
    let config = a_then_b().detour("backoff_base: 100ms").build();
    let mut provider = Provider::new().always("a", Reply::status(500));
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_backoff(&trace.wait_ms(), &[100, 200, 400]);
}

#[test]
fn retry_after_raises_the_backoff_wait() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script(
        "a",
        [
            Reply::status(503).retry_after("5"),
            Reply::status(503).retry_after_ms("6500"),
        ],
    );
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "a", "a"]);
    assert_eq!(trace.wait_ms(), [5_000, 6_500]);
}

#[test]
fn a_retry_after_shorter_than_the_backoff_does_not_lower_it() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script("a", [Reply::status(503).retry_after("1")]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_backoff(&trace.wait_ms(), &[2_000]);
}

#[test]
fn a_retry_after_above_the_cap_moves_on_at_once() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script("a", [Reply::status(503).retry_after("120")]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "b"]);
    assert!(trace.waits.is_empty(), "{:?}", trace.waits);

    let config = a_then_b().detour("retry_after_cap: 10s").build();
    let mut provider = Provider::new().script("a", [Reply::status(503).retry_after("20")]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "b"]);
    assert!(trace.waits.is_empty(), "{:?}", trace.waits);
}

// ---------------------------------------------------------------------------------------
// 429: move on at once, cool the deployment down

#[test]
fn a_429_moves_on_at_once_without_retrying() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script("a", [Reply::status(429)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "b"]);
    assert!(trace.waits.is_empty());
    assert!(retries(&trace.events).is_empty());
}

#[test]
fn a_429_cools_the_deployment_down_for_cooldown_time_across_requests() {
    let config = a_then_b().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429)]);

    let first = run_chat(&config, &mut store, &mut provider, "g", T0);
    assert!(first.events.contains(&Event::Cooldown {
        ts: T0,
        deployment: "a".into(),
        until: T0 + 30_000,
    }));

    let during = run_chat(&config, &mut store, &mut provider, "g", T0 + 29_999);
    assert_eq!(during.sent_ids(), ["b"], "a is skipped while it cools down");
    assert_eq!(during.attempts[0].deployment, "a");
    assert_eq!(during.attempts[0].reason, Reason::CoolingDown);

    let after = run_chat(&config, &mut store, &mut provider, "g", T0 + 30_000);
    assert_eq!(
        after.sent_ids(),
        ["a"],
        "a is used again once the cooldown passed"
    );
}

#[test]
fn a_longer_retry_after_on_a_429_lengthens_the_cooldown() {
    let config = a_then_b().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429).retry_after("45")]);
    run_chat(&config, &mut store, &mut provider, "g", T0);
    let during = run_chat(&config, &mut store, &mut provider, "g", T0 + 44_999);
    assert_eq!(during.sent_ids(), ["b"]);
    let after = run_chat(&config, &mut store, &mut provider, "g", T0 + 45_000);
    assert_eq!(after.sent_ids(), ["a"]);
}

#[test]
fn a_shorter_retry_after_on_a_429_does_not_shorten_the_cooldown() {
    let config = a_then_b().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429).retry_after("2")]);
    run_chat(&config, &mut store, &mut provider, "g", T0);
    let during = run_chat(&config, &mut store, &mut provider, "g", T0 + 10_000);
    assert_eq!(during.sent_ids(), ["b"]);
}

#[test]
fn a_429_cooldown_is_capped_by_max_cooldown() {
    let config = a_then_b().detour("max_cooldown: 2m").build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429).retry_after("86400")]);
    run_chat(&config, &mut store, &mut provider, "g", T0);
    assert_eq!(
        run_chat(&config, &mut store, &mut provider, "g", T0 + 119_999).sent_ids(),
        ["b"]
    );
    assert_eq!(
        run_chat(&config, &mut store, &mut provider, "g", T0 + 120_000).sent_ids(),
        ["a"]
    );
}

#[test]
fn rate_limits_do_not_count_toward_the_breaker() {
    let config = a_then_b().build();
    let mut store = MemoryStore::default();
    for i in 0..6 {
        // Each request comes after the previous cooldown ended.
        let mut provider = Provider::new().script("a", [Reply::status(429)]);
        let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + i * 30_000);
        assert_eq!(trace.sent_ids(), ["a", "b"], "request {i}");
        assert!(
            !trace.has_event("breaker_opened"),
            "request {i}: {:?}",
            trace.events
        );
    }
}

#[test]
fn disable_cooldowns_keeps_a_429d_deployment_in_use() {
    let config = a_then_b().router("disable_cooldowns: true").build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().script("a", [Reply::status(429)]);
    run_chat(&config, &mut store, &mut provider, "g", T0);
    assert_eq!(
        run_chat(&config, &mut store, &mut provider, "g", T0 + 1).sent_ids(),
        ["a"]
    );
}

// ---------------------------------------------------------------------------------------
// The circuit breaker

/// `a` then `b`, no retries, so each request meets `a` once.
fn breaker_config() -> Config {
    a_then_b().router("num_retries: 0").build()
}

/// Four requests whose attempt on `a` fails: the fourth opens a's breaker at T0 + 3000.
fn open_the_breaker(config: &Config, store: &mut MemoryStore) -> u64 {
    let mut provider = Provider::new().always("a", Reply::status(500));
    for i in 0..4 {
        let trace = run_chat(config, store, &mut provider, "g", T0 + i * 1_000);
        assert_eq!(trace.sent_ids(), ["a", "b"], "request {i}");
        let opened = trace.has_event("breaker_opened");
        assert_eq!(opened, i == 3, "request {i}: {:?}", trace.events);
    }
    T0 + 3_000 + 30_000
}

#[test]
fn the_breaker_opens_on_the_failure_after_allowed_fails_and_stays_open_for_cooldown_time() {
    let config = breaker_config();
    let mut store = MemoryStore::default();
    let reopens_at = open_the_breaker(&config, &mut store);
    let mut provider = Provider::new();

    let open = run_chat(&config, &mut store, &mut provider, "g", T0 + 4_000);
    assert_eq!(open.sent_ids(), ["b"]);
    assert_eq!(open.attempts[0].reason, Reason::CircuitOpen);

    let still_open = run_chat(&config, &mut store, &mut provider, "g", reopens_at - 1);
    assert_eq!(still_open.sent_ids(), ["b"]);

    let half_open = run_chat(&config, &mut store, &mut provider, "g", reopens_at);
    assert_eq!(
        half_open.sent_ids(),
        ["a"],
        "after cooldown_time a gets a probe"
    );
}

#[test]
fn allowed_fails_sets_how_many_failures_are_tolerated() {
    let config = a_then_b()
        .router("num_retries: 0")
        .router("allowed_fails: 1")
        .build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().always("a", Reply::status(401));
    let first = run_chat(&config, &mut store, &mut provider, "g", T0);
    assert!(!first.has_event("breaker_opened"));
    let second = run_chat(&config, &mut store, &mut provider, "g", T0 + 1);
    assert!(second.has_event("breaker_opened"));
    let third = run_chat(&config, &mut store, &mut provider, "g", T0 + 2);
    assert_eq!(third.sent_ids(), ["b"]);
}

#[test]
fn failures_spread_wider_than_the_failure_window_do_not_open_the_breaker() {
    let config = breaker_config();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().always("a", Reply::status(500));
    for i in 0..8 {
        let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + i * 61_000);
        assert_eq!(trace.sent_ids(), ["a", "b"], "request {i}");
        assert!(!trace.has_event("breaker_opened"));
    }
}

#[test]
fn retries_of_one_request_count_toward_the_breaker() {
    // Defaults: the fourth failed try of a single request (1 try + 3 retries) opens it.
    let config = a_then_b().build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().always("a", Reply::status(503));
    let trace = run_chat(&config, &mut store, &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "a", "a", "a", "b"]);
    assert!(trace.has_event("breaker_opened"));
    let next = run_chat(&config, &mut store, &mut provider, "g", trace.end + 1);
    assert_eq!(next.sent_ids(), ["b"]);
}

#[test]
fn after_cooldown_exactly_one_concurrent_request_probes_and_success_closes_the_breaker() {
    let config = breaker_config();
    let mut store = MemoryStore::default();
    let half_open_at = open_the_breaker(&config, &mut store);

    let (mut flows, targets) = concurrent_first_sends(&config, &mut store, 4, half_open_at);
    assert_eq!(
        targets,
        ["a", "b", "b", "b"],
        "only the first flow gets the probe"
    );
    for flow in &flows[1..] {
        assert_eq!(flow.attempts()[0].reason, Reason::ProbeInFlight);
    }

    // The probe succeeds: a Recovery event, and the breaker is closed for everyone.
    let now = half_open_at + 500;
    let verdict = flows[0].on_answer(&config, &mut store, now, ok_answer());
    assert!(matches!(verdict, Verdict::Deliver(_)));
    let events = flows[0].take_events();
    assert_eq!(
        events,
        [Event::Recovery {
            ts: now,
            deployment: "a".into(),
            via: "half_open".into()
        }]
    );
    for flow in &mut flows[1..] {
        assert!(matches!(
            flow.on_answer(&config, &mut store, now, ok_answer()),
            Verdict::Deliver(_)
        ));
    }
    let mut provider = Provider::new();
    let (_, targets) = concurrent_first_sends(&config, &mut store, 3, now + 1);
    assert_eq!(targets, ["a", "a", "a"]);
    let trace = run_chat(&config, &mut store, &mut provider, "g", now + 2);
    assert_eq!(trace.sent_ids(), ["a"]);
}

#[test]
fn a_failed_probe_reopens_the_breaker_for_another_cooldown_time() {
    let config = breaker_config();
    let mut store = MemoryStore::default();
    let half_open_at = open_the_breaker(&config, &mut store);

    let mut provider = Provider::new().script("a", [Reply::status(500)]);
    let probe = run_chat(&config, &mut store, &mut provider, "g", half_open_at);
    assert_eq!(
        probe.sent_ids(),
        ["a", "b"],
        "a failed probe is not retried"
    );
    assert!(probe.events.contains(&Event::BreakerOpened {
        ts: half_open_at,
        deployment: "a".into(),
        until: half_open_at + 30_000,
        probe_failed: true,
    }));
    assert!(!probe.has_event("recovery"));

    let reopened = run_chat(&config, &mut store, &mut provider, "g", half_open_at + 1);
    assert_eq!(reopened.sent_ids(), ["b"]);
    assert_eq!(reopened.attempts[0].reason, Reason::CircuitOpen);

    let next_probe = run_chat(
        &config,
        &mut store,
        &mut provider,
        "g",
        half_open_at + 30_000,
    );
    assert_eq!(next_probe.sent_ids(), ["a"]);
    assert!(next_probe.has_event("recovery"));
}

#[test]
fn a_probe_whose_answer_never_comes_back_frees_the_deployment_after_its_lease() {
    let config = breaker_config();
    let mut store = MemoryStore::default();
    let half_open_at = open_the_breaker(&config, &mut store);
    let (_abandoned, targets) = concurrent_first_sends(&config, &mut store, 1, half_open_at);
    assert_eq!(targets, ["a"]);
    // The lease is the attempt's timeout plus a second: 10 s + 1 s.
    let (_, targets) = concurrent_first_sends(&config, &mut store, 1, half_open_at + 10_999);
    assert_eq!(targets, ["b"]);
    let (_, targets) = concurrent_first_sends(&config, &mut store, 1, half_open_at + 11_000);
    assert_eq!(
        targets,
        ["a"],
        "a new probe once the abandoned lease ran out"
    );
}

fn ok_answer() -> Answer<'static> {
    Answer {
        status: Some(200),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Failures that move on at once

#[test]
fn auth_and_not_found_errors_move_on_at_once() {
    let config = a_then_b().build();
    for status in [401, 403, 404] {
        let mut provider = Provider::new().script("a", [Reply::status(status)]);
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(trace.sent_ids(), ["a", "b"], "status {status}");
        assert!(trace.waits.is_empty(), "status {status}");
        assert!(retries(&trace.events).is_empty(), "status {status}");
    }
}

#[test]
fn other_5xx_move_on_at_once() {
    let config = a_then_b().build();
    let mut provider = Provider::new().script("a", [Reply::status(501)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "b"]);
    assert!(trace.waits.is_empty());
}

#[test]
fn other_client_errors_are_delivered_untouched() {
    let config = a_then_b()
        .deployment("h", "c")
        .router("fallbacks: [{g: [h]}]")
        .build();
    for reply in [
        Reply::status(400).body(r#"{"error":{"message":"temperature must be <= 2"}}"#),
        Reply::status(422),
        Reply::status(409),
        Reply::status(413).body("payload too large"),
    ] {
        let status = reply.status;
        let mut provider = Provider::new().script("a", [reply]);
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(trace.sent_ids(), ["a"], "status {status:?}");
        let Outcome::Delivered {
            deployment,
            status: delivered,
            ..
        } = &trace.outcome
        else {
            panic!("status {status:?} was not delivered: {:?}", trace.outcome);
        };
        assert_eq!((deployment.as_str(), *delivered), ("a", status));
    }
}

#[test]
fn a_client_error_is_not_held_against_the_deployment() {
    let config = a_then_b().router("allowed_fails: 0").build();
    let mut store = MemoryStore::default();
    let mut provider = Provider::new().always("a", Reply::status(400).body("bad request"));
    for i in 0..3 {
        let trace = run_chat(&config, &mut store, &mut provider, "g", T0 + i);
        assert_eq!(trace.sent_ids(), ["a"]);
    }
}

// ---------------------------------------------------------------------------------------
// Context window and content policy

fn with_special_chains() -> Fixture {
    Fixture::new()
        .deployment("g", "a")
        .deployment("general", "gen")
        .deployment("big", "big1")
        .deployment("bigger", "big2")
        .deployment("lenient", "len")
        .router("num_retries: 0")
        .router("fallbacks: [{g: [general]}]")
        .router("context_window_fallbacks: [{g: [big, bigger]}]")
        .router("content_policy_fallbacks: [{g: [lenient]}]")
}

#[test]
fn a_context_length_error_follows_context_window_fallbacks() {
    let config = with_special_chains().build();
    let mut provider = Provider::new().script("a", [Reply::context_length()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "big1"]);
    assert_eq!(trace.delivered_from(), Some("big1"));
    assert!(
        trace.waits.is_empty(),
        "a context-length error is never retried"
    );
}

#[test]
fn the_context_window_chain_is_followed_to_its_end() {
    let config = with_special_chains().build();
    let mut provider = Provider::new()
        .script("a", [Reply::context_length()])
        .script("big1", [Reply::context_length()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "big1", "big2"]);
    assert_eq!(trace.delivered_from(), Some("big2"));
}

#[test]
fn an_exhausted_context_window_chain_is_400_context_length_exceeded() {
    let config = with_special_chains().build();
    let mut provider = Provider::new()
        .script("a", [Reply::context_length()])
        .script("big1", [Reply::context_length()])
        .script("big2", [Reply::context_length()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "big1", "big2"]);
    assert_eq!(trace.response().status, 400);
    assert_eq!(trace.error()["code"], "context_length_exceeded");
}

#[test]
fn a_prompt_larger_than_max_input_tokens_skips_the_deployment_before_sending() {
    let config = Fixture::new()
        .deployment_with("g", "small", &["order: 1", "max_input_tokens: 1000"])
        .deployment_with("g", "large", &["order: 2", "max_input_tokens: 200000"])
        .build();
    let long = "word ".repeat(2_000); // ~10,000 characters: ~2,500 tokens
    let req = common::request(
        &config,
        &json!({"model": "g", "messages": [{"role": "user", "content": long}]}),
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
    assert_eq!(trace.attempts[0].deployment, "small");
    assert_eq!(trace.attempts[0].reason, Reason::ContextTooLarge);

    // A short prompt still goes to the small deployment first.
    let trace = run_chat(
        &config,
        &mut MemoryStore::default(),
        &mut Provider::new(),
        "g",
        T0,
    );
    assert_eq!(trace.sent_ids(), ["small"]);
}

#[test]
fn a_prompt_too_large_for_every_deployment_is_400_without_sending() {
    let config = Fixture::new()
        .deployment_with("g", "small", &["max_input_tokens: 100"])
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
    assert!(trace.sent.is_empty());
    assert_eq!(trace.response().status, 400);
    assert_eq!(trace.error()["code"], "context_length_exceeded");
}

#[test]
fn a_content_policy_refusal_follows_content_policy_fallbacks() {
    let config = with_special_chains().build();
    let mut provider = Provider::new().script("a", [Reply::content_policy()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "len"]);
    assert_eq!(trace.delivered_from(), Some("len"));
}

#[test]
fn without_a_chain_for_the_group_the_providers_answer_is_delivered() {
    // Both special tables exist, but name only `other`: nothing for g.
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("general", "gen")
        .deployment("other", "o")
        .router("fallbacks: [{g: [general]}]")
        .router("context_window_fallbacks: [{other: [general]}]")
        .router("content_policy_fallbacks: [{other: [general]}]")
        .build();
    for reply in [Reply::context_length(), Reply::content_policy()] {
        let body = reply.body.clone();
        let mut provider = Provider::new().script("a", [reply]);
        let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
        assert_eq!(
            trace.sent_ids(),
            ["a"],
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(trace.delivered_from(), Some("a"));
    }
}

#[test]
fn without_any_special_table_the_general_fallbacks_apply() {
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("general", "gen")
        .router("fallbacks: [{g: [general]}]")
        .build();
    let mut provider = Provider::new().script("a", [Reply::context_length()]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "gen"]);
}

// ---------------------------------------------------------------------------------------
// Deadline and attempt cap

#[test]
fn the_request_deadline_stops_the_chain() {
    let config = a_then_b().detour("request_deadline: 5s").build();
    let mut provider = Provider::new().script("a", [Reply::status(503).after(6_000)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(
        trace.sent_ids(),
        ["a"],
        "no retry and no fallback after the deadline"
    );
    assert!(trace.waits.is_empty());
    assert_eq!(trace.attempts[1].deployment, "b");
    assert_eq!(trace.attempts[1].reason, Reason::DeadlineExceeded);
    assert_eq!(trace.response().status, 502);
}

#[test]
fn a_backoff_that_would_end_past_the_deadline_moves_on_instead() {
    let config = a_then_b().detour("request_deadline: 5s").build();
    let mut provider = Provider::new().always("a", Reply::status(503));
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    // 2 s wait fits; the 4 s one would end at 6 s > 5 s.
    assert_eq!(trace.sent_ids(), ["a", "a", "b"]);
    assert_backoff(&trace.wait_ms(), &[2_000]);
}

#[test]
fn max_attempts_caps_the_attempts_sent() {
    let config = Fixture::new()
        .deployment_with("g", "d1", &["order: 1"])
        .deployment_with("g", "d2", &["order: 2"])
        .deployment_with("g", "d3", &["order: 3"])
        .deployment_with("g", "d4", &["order: 4"])
        .deployment_with("g", "d5", &["order: 5"])
        .router("num_retries: 0")
        .detour("max_attempts: 3")
        .build();
    let mut provider = Provider::new();
    for d in ["d1", "d2", "d3", "d4", "d5"] {
        provider = provider.always(d, Reply::status(500));
    }
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["d1", "d2", "d3"]);
    assert_eq!(trace.attempts[3].reason, Reason::AttemptCapReached);
    assert_eq!(
        trace.attempts.len(),
        4,
        "nothing after the cap is listed as tried"
    );
    assert_eq!(trace.response().status, 502);
}

#[test]
fn max_attempts_counts_retries_and_never_waits_for_a_retry_it_cannot_send() {
    let config = a_then_b().detour("max_attempts: 2").build();
    let mut provider = Provider::new().always("a", Reply::status(503));
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["a", "a"]);
    assert_eq!(trace.waits.len(), 1, "{:?}", trace.waits);
    assert_eq!(retries(&trace.events), [1]);
}
