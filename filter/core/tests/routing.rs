//! Which group a request goes to, which deployments it tries in which order, and what
//! exactly is sent upstream.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use common::{
    body_json, chat, header, request, run, run_chat, Fixture, Provider, Reply, T0, TEST_KEY,
};
use detour_core::config::Config;
use detour_core::flow::{Flow, Step};
use detour_core::store::MemoryStore;
use serde_json::{json, Value};

fn staged() -> Config {
    Fixture::new()
        .deployment("high-precision", "opus")
        .deployment("implementation", "codex")
        .deployment("economy", "flash")
        .detour("stages: {Spec: high-precision, Build: implementation, Verify: economy}")
        .build()
}

fn group_of(config: &Config, model: Option<&str>, stage: Option<&str>) -> String {
    match Flow::start(config, chat(config, model), stage, T0, 0) {
        Ok(flow) => flow.group().to_string(),
        Err(response) => panic!("refused: {}", common::body_text(&response)),
    }
}

fn refusal(config: &Config, model: Option<&str>, stage: Option<&str>) -> (u16, Value) {
    match Flow::start(config, chat(config, model), stage, T0, 0) {
        Ok(flow) => panic!("routed to {}", flow.group()),
        Err(response) => (response.status, body_json(&response)["error"].clone()),
    }
}

// ---------------------------------------------------------------------------------------
// Group selection

#[test]
fn model_names_the_route_group() {
    let config = staged();
    assert_eq!(group_of(&config, Some("economy"), None), "economy");
    assert_eq!(
        group_of(&config, Some("implementation"), None),
        "implementation"
    );
}

#[test]
fn the_stage_tag_selects_the_group_when_model_is_absent() {
    let config = staged();
    assert_eq!(group_of(&config, None, Some("Build")), "implementation");
    assert_eq!(group_of(&config, None, Some("Spec")), "high-precision");
}

#[test]
fn the_stage_tag_selects_the_group_when_model_is_not_a_group() {
    let config = staged();
    assert_eq!(group_of(&config, Some("gpt-4o"), Some("Verify")), "economy");
}

#[test]
fn a_model_that_names_a_group_wins_over_the_stage_tag() {
    let config = staged();
    assert_eq!(group_of(&config, Some("economy"), Some("Spec")), "economy");
}

#[test]
fn stage_tags_match_without_regard_to_case() {
    let config = staged();
    assert_eq!(group_of(&config, None, Some("build")), "implementation");
}

#[test]
fn an_unknown_group_is_404_model_not_found() {
    let (status, error) = refusal(&staged(), Some("gpt-4o"), None);
    assert_eq!(status, 404);
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("gpt-4o"));
}

#[test]
fn no_model_and_no_stage_is_400() {
    let (status, error) = refusal(&staged(), None, None);
    assert_eq!(status, 400);
    assert_eq!(error["code"], "model_required");
}

#[test]
fn an_unknown_stage_is_400() {
    let (status, error) = refusal(&staged(), None, Some("Lunch"));
    assert_eq!(status, 400);
    assert_eq!(error["code"], "unknown_stage");
    assert!(error["message"].as_str().unwrap().contains("Lunch"));
}

#[test]
fn a_refused_request_sends_nothing() {
    let config = staged();
    let mut store = MemoryStore::default();
    let trace = run_chat(&config, &mut store, &mut Provider::new(), "nope", T0);
    assert!(trace.sent.is_empty());
    assert_eq!(trace.response().status, 404);
}

// ---------------------------------------------------------------------------------------
// Order within a group, and group fallbacks

#[test]
fn deployments_are_tried_by_order_not_file_order() {
    let config = Fixture::new()
        .deployment_with("g", "third", &["order: 3"])
        .deployment_with("g", "first", &["order: 1"])
        .deployment_with("g", "second", &["order: 2"])
        .router("num_retries: 0")
        .build();
    let mut provider = Provider::new()
        .script("first", [Reply::status(401)])
        .script("second", [Reply::status(401)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["first", "second", "third"]);
    assert_eq!(trace.delivered_from(), Some("third"));
}

#[test]
fn equal_orders_are_split_by_weight() {
    let config = Fixture::new()
        .deployment_with("g", "heavy", &["weight: 3"])
        .deployment_with("g", "light", &["weight: 1"])
        .build();
    let mut store = MemoryStore::default();
    let n = 4000;
    let mut heavy_first = 0;
    for seed in 0..n {
        let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, seed).unwrap();
        match flow.poll(&config, &mut store, T0) {
            Step::Send(send) if send.deployment_id == "heavy" => heavy_first += 1,
            Step::Send(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // Expect 3:1 = 75 %; allow a generous band.
    let share = f64::from(heavy_first) / f64::from(n as u32);
    assert!(
        (0.68..=0.82).contains(&share),
        "heavy went first {share:.3} of the time"
    );
}

#[test]
fn every_deployment_of_equal_order_is_tried_once_before_moving_on() {
    let config = Fixture::new()
        .deployment_with("g", "a", &["weight: 5"])
        .deployment_with("g", "b", &["weight: 1"])
        .deployment_with("g", "c", &["weight: 1"])
        .deployment_with("g", "last", &["order: 9"])
        .router("num_retries: 0")
        .build();
    for seed in 0..50 {
        let mut provider = Provider::new()
            .always("a", Reply::status(500))
            .always("b", Reply::status(500))
            .always("c", Reply::status(500));
        let trace = run(
            &config,
            &mut MemoryStore::default(),
            &mut provider,
            chat(&config, Some("g")),
            None,
            T0,
            seed,
        );
        let ids = trace.sent_ids();
        let mut first_three = ids[..3].to_vec();
        first_three.sort_unstable();
        assert_eq!(first_three, ["a", "b", "c"], "seed {seed}: {ids:?}");
        assert_eq!(ids[3..], ["last"], "seed {seed}");
    }
}

#[test]
fn group_fallbacks_are_tried_in_exactly_the_configured_order() {
    // Alphabetical order would be alpha, mid, zeta: the configured order must win.
    let config = Fixture::new()
        .deployment("g", "g1")
        .deployment("zeta", "z1")
        .deployment("alpha", "a1")
        .deployment("mid", "m1")
        .router("num_retries: 0")
        .router("fallbacks: [{g: [zeta, alpha, mid]}]")
        .build();
    let mut provider = Provider::new()
        .script("g1", [Reply::status(500)])
        .script("z1", [Reply::status(503)])
        .script("a1", [Reply::status(401)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["g1", "z1", "a1", "m1"]);
    assert_eq!(trace.delivered_from(), Some("m1"));
}

#[test]
fn a_groups_own_deployments_come_before_its_fallback_groups() {
    let config = Fixture::new()
        .deployment_with("g", "g2", &["order: 2"])
        .deployment_with("g", "g1", &["order: 1"])
        .deployment("h", "h1")
        .router("num_retries: 0")
        .router("fallbacks: [{g: [h]}]")
        .build();
    let mut provider = Provider::new()
        .script("g1", [Reply::status(500)])
        .script("g2", [Reply::status(500)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["g1", "g2", "h1"]);
}

#[test]
fn fallbacks_of_a_fallback_group_are_not_followed() {
    let config = Fixture::new()
        .deployment("g", "g1")
        .deployment("h", "h1")
        .deployment("k", "k1")
        .router("num_retries: 0")
        .router("fallbacks: [{g: [h]}, {h: [k]}]")
        .build();
    let mut provider = Provider::new()
        .always("g1", Reply::status(500))
        .always("h1", Reply::status(500));
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["g1", "h1"]);
    assert_eq!(trace.response().status, 502);
}

#[test]
fn default_fallbacks_apply_to_groups_without_their_own_entry() {
    let config = Fixture::new()
        .deployment("g", "g1")
        .deployment("h", "h1")
        .deployment("last-resort", "local")
        .router("num_retries: 0")
        .router("fallbacks: [{h: [g]}]")
        .router("default_fallbacks: [last-resort]")
        .build();
    let mut provider = Provider::new()
        .always("g1", Reply::status(500))
        .always("h1", Reply::status(500));
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    assert_eq!(trace.sent_ids(), ["g1", "local"]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "h", T0);
    assert_eq!(
        trace.sent_ids(),
        ["h1", "g1"],
        "h's own entry replaces the default"
    );
}

// ---------------------------------------------------------------------------------------
// What is sent

#[test]
fn the_body_carries_the_providers_model_name_and_everything_else_unchanged() {
    let config = Fixture::new().deployment("g", "a").build();
    let req = request(
        &config,
        &json!({
            "model": "g",
            "messages": [{"role": "user", "content": "hello"}],
            "temperature": 0.2,
            "max_tokens": 50,
        }),
    );
    let mut flow = Flow::start(&config, req, None, T0, 0).unwrap();
    let Step::Send(send) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected a send");
    };
    let body: Value = serde_json::from_slice(&send.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "a-model",
            "messages": [{"role": "user", "content": "hello"}],
            "temperature": 0.2,
            "max_tokens": 50,
        })
    );
}

#[test]
fn the_path_is_the_api_base_path_plus_the_endpoint() {
    let config = Fixture::new().deployment("g", "a").build();
    let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, 0).unwrap();
    let Step::Send(send) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected a send");
    };
    assert_eq!(send.path, "/a/v1/chat/completions");
    assert_eq!(send.authority, "127.0.0.1:18001");
    assert_eq!(send.cluster, "detour_http_127.0.0.1_18001");
    assert_eq!(send.deployment_id, "a");
    assert_eq!(send.attempt, 1);
}

#[test]
fn a_trailing_slash_in_api_base_does_not_double_up() {
    let text = "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gemini-2.5-flash\n      \
                api_base: https://generativelanguage.googleapis.com/v1beta/openai/\n      api_key: os.environ/GEMINI_API_KEY\n";
    let config = common::load_ok(text).config;
    let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, 0).unwrap();
    let Step::Send(send) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected a send");
    };
    assert_eq!(send.path, "/v1beta/openai/chat/completions");
    assert_eq!(send.authority, "generativelanguage.googleapis.com");
}

#[test]
fn the_auth_header_is_bearer_with_the_deployments_key() {
    let config = Fixture::new().deployment("g", "a").build();
    let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, 0).unwrap();
    let Step::Send(send) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected a send");
    };
    assert_eq!(
        header(&send.headers, "authorization"),
        Some(format!("Bearer {TEST_KEY}").as_str())
    );
    assert_eq!(
        header(&send.headers, "content-type"),
        Some("application/json")
    );
}

#[test]
fn a_deployment_without_a_key_sends_no_auth_header() {
    let text = "model_list:\n  - {model_name: g, litellm_params: {model: openai/llama3, api_base: 'http://127.0.0.1:11434/v1'}}\n";
    let config = common::load_ok(text).config;
    let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, 0).unwrap();
    let Step::Send(send) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected a send");
    };
    assert_eq!(header(&send.headers, "authorization"), None);
    assert_eq!(send.path, "/v1/chat/completions");
}

#[test]
fn each_fallback_is_rewritten_for_its_own_deployment() {
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("h", "b")
        .router("fallbacks: [{g: [h]}]")
        .build();
    let mut provider = Provider::new().script("a", [Reply::status(401)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    let second = &trace.sent[1].send;
    assert_eq!(second.path, "/b/v1/chat/completions");
    let body: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(body["model"], "b-model");
    assert_eq!(second.attempt, 2);
}

#[test]
fn the_delivered_answer_names_group_deployment_and_attempts() {
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("h", "b")
        .router("fallbacks: [{g: [h]}]")
        .build();
    let mut provider = Provider::new().script("a", [Reply::status(403)]);
    let trace = run_chat(&config, &mut MemoryStore::default(), &mut provider, "g", T0);
    let common::Outcome::Delivered {
        headers, status, ..
    } = &trace.outcome
    else {
        panic!("expected a delivery");
    };
    assert_eq!(*status, Some(200));
    assert_eq!(header(headers, "x-detour-group"), Some("g"));
    assert_eq!(header(headers, "x-detour-deployment"), Some("b"));
    assert_eq!(header(headers, "x-detour-attempts"), Some("2"));
}

#[test]
fn request_timeout_bounds_each_attempt_and_the_deadline_shortens_it() {
    let config = Fixture::new()
        .deployment("g", "a")
        .router("request_timeout: 10")
        .detour("request_deadline: 25s")
        .build();
    let mut flow = Flow::start(&config, chat(&config, Some("g")), None, T0, 0).unwrap();
    let mut store = MemoryStore::default();
    let Step::Send(send) = flow.poll(&config, &mut store, T0) else {
        panic!("expected a send");
    };
    assert_eq!(send.first_byte_timeout_ms, 10_000);
    assert_eq!(send.total_timeout_ms, 10_000);
    // 20 s later only 5 s of the deadline are left.
    let verdict = flow.on_answer(
        &config,
        &mut store,
        T0 + 20_000,
        detour_core::flow::Answer {
            status: Some(503),
            ..Default::default()
        },
    );
    assert_eq!(verdict, detour_core::flow::Verdict::Next);
    let step = flow.poll(&config, &mut store, T0 + 20_000);
    let Step::Wait(at) = step else {
        panic!("expected a backoff wait, got {step:?}");
    };
    let Step::Send(retry) = flow.poll(&config, &mut store, at) else {
        panic!("expected the retry");
    };
    assert_eq!(retry.first_byte_timeout_ms, T0 + 25_000 - at);
}
