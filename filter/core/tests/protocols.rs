//! Requests across protocols, through the flow: what each deployment of a mixed chain is
//! sent (path, auth, body shape), how its answer reaches a client of another protocol,
//! and what happens to requests only one protocol can express.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use common::{body_json, load_ok, T0};
use detour_core::config::Config;
use detour_core::flow::{Answer, Flow, Reason, Send, Step, Verdict};
use detour_core::meter;
use detour_core::protocol::Protocol;
use detour_core::request::{self, ParsedRequest};
use detour_core::respond;
use detour_core::store::MemoryStore;
use serde_json::{json, Value};

const CONFIG: &str = r#"
model_list:
  - model_name: opus
    litellm_params: {model: anthropic/claude-opus-4-5, api_base: "http://127.0.0.1:18001/anth", api_key: os.environ/ANTHROPIC_API_KEY}
  - model_name: gemini
    litellm_params: {model: gemini/gemini-3-pro-preview, api_base: "http://127.0.0.1:18001/gem", api_key: os.environ/GEMINI_API_KEY}
  - model_name: local
    litellm_params: {model: openai/local-model, api_base: "http://127.0.0.1:18001/local/v1", api_key: os.environ/LOCAL_API_KEY, input_cost_per_token: 0, output_cost_per_token: 0}
  - model_name: local-only
    litellm_params: {model: openai/local-model, api_base: "http://127.0.0.1:18001/lonely/v1", input_cost_per_token: 0, output_cost_per_token: 0}
router_settings:
  num_retries: 0
  fallbacks: [{opus: [gemini, local]}]
"#;

fn config() -> Config {
    load_ok(CONFIG).config
}

fn parse(config: &Config, path: &str, body: &Value) -> ParsedRequest {
    let bytes = serde_json::to_vec(body).unwrap();
    match ParsedRequest::parse(config, "POST", path, &bytes) {
        Ok(parsed) => parsed,
        Err(response) => panic!("refused: {}", String::from_utf8_lossy(&response.body)),
    }
}

fn messages_request(extra: Value) -> Value {
    let mut body = json!({
        "model": "opus",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

fn send(step: Step) -> Send {
    match step {
        Step::Send(send) => send,
        other => panic!("expected a send, got {other:?}"),
    }
}

fn header<'a>(send: &'a Send, name: &str) -> Option<&'a str> {
    send.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn answer(status: u16, body: &[u8]) -> Answer<'_> {
    Answer {
        status: Some(status),
        body,
        ..Answer::default()
    }
}

#[test]
fn an_anthropic_request_walks_a_chain_of_three_protocols() {
    let config = config();
    let mut store = MemoryStore::default();
    let request = parse(&config, "/v1/messages", &messages_request(json!({})));
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();

    let first = send(flow.poll(&config, &mut store, T0));
    assert_eq!(first.path, "/anth/v1/messages");
    assert_eq!(
        header(&first, "x-api-key"),
        Some("sk-fake-anthropic_api_key")
    );
    assert_eq!(header(&first, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(&first, "authorization"), None);
    let body: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(
        body["model"], "claude-opus-4-5",
        "same protocol: model replaced"
    );
    assert_eq!(
        body["system"], "be brief",
        "same protocol: the rest untouched"
    );
    assert_eq!(
        flow.on_answer(&config, &mut store, T0, answer(529, b"{}")),
        Verdict::Next
    );

    let second = send(flow.poll(&config, &mut store, T0));
    assert_eq!(
        second.path,
        "/gem/v1beta/models/gemini-3-pro-preview:generateContent"
    );
    assert_eq!(
        header(&second, "x-goog-api-key"),
        Some("sk-fake-gemini_api_key")
    );
    let body: Value = serde_json::from_slice(&second.body).unwrap();
    assert!(body.get("contents").is_some(), "{body}");
    assert!(body.get("model").is_none(), "Gemini's model is in the path");
    assert_eq!(
        flow.on_answer(&config, &mut store, T0, answer(429, b"{}")),
        Verdict::Next
    );

    let third = send(flow.poll(&config, &mut store, T0));
    assert_eq!(third.path, "/local/v1/chat/completions");
    assert_eq!(
        header(&third, "authorization"),
        Some("Bearer sk-fake-local_api_key")
    );
    let body: Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(body["model"], "local-model");
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "hello"})
    );

    let plan = flow.answer_plan(&config);
    assert_eq!(
        (plan.client, plan.provider),
        (Protocol::Anthropic, Protocol::OpenAiChat)
    );
    let reply = br#"{"id":"chatcmpl-9","object":"chat.completion","model":"local-model","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
    let meter::Whole {
        body: out, usage, ..
    } = meter::whole(&plan, Some("application/json"), reply).unwrap();
    assert!(matches!(
        flow.on_answer(&config, &mut store, T0, answer(200, reply)),
        Verdict::Deliver(_)
    ));
    let message: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["text"], "hi there");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 12);
    assert_eq!(message["usage"]["output_tokens"], 3);
    assert_eq!(usage.map(|u| u.completion_tokens), Some(3));
}

#[test]
fn an_answer_that_does_not_parse_in_its_protocol_is_never_a_success() {
    let config = config();
    let request = parse(&config, "/v1/messages", &messages_request(json!({})));
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let mut store = MemoryStore::default();
    send(flow.poll(&config, &mut store, T0));
    let plan = flow.answer_plan(&config);
    for garbage in [
        &b"<html>oops</html>"[..],
        br#"{"id":"chatcmpl-1","choices":[{"message":{"content":"an OpenAI answer"}}]}"#,
        b"",
    ] {
        assert!(meter::whole(&plan, Some("application/json"), garbage).is_err());
    }
    // What the glue does with it: a transient failure (retry rules apply), then on.
    let verdict = flow.on_answer(
        &config,
        &mut store,
        T0,
        Answer {
            transport_failure: Some(Reason::InvalidAnswer),
            ..answer(200, b"<html>")
        },
    );
    assert_eq!(verdict, Verdict::Next);
    let next = send(flow.poll(&config, &mut store, T0));
    assert_eq!(next.deployment_id, "gemini/gemini/gemini-3-pro-preview");
    assert_eq!(flow.attempts()[0].reason, Reason::InvalidAnswer);
}

#[test]
fn a_request_only_its_own_protocol_can_express_skips_the_others_with_the_reason() {
    let config = config();
    let mut store = MemoryStore::default();
    let body = messages_request(json!({
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a contract"}},
            {"type": "text", "text": "summarise"}
        ]}]
    }));
    let request = parse(&config, "/v1/messages", &body);
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let first = send(flow.poll(&config, &mut store, T0));
    assert_eq!(first.path, "/anth/v1/messages", "its own protocol takes it");
    assert_eq!(
        flow.on_answer(&config, &mut store, T0, answer(500, b"{}")),
        Verdict::Next
    );
    let Step::Respond(response) = flow.poll(&config, &mut store, T0) else {
        panic!("nothing else can take it")
    };
    let skipped: Vec<_> = flow
        .attempts()
        .iter()
        .filter(|a| a.reason == Reason::Untranslatable)
        .collect();
    assert_eq!(skipped.len(), 2, "{:?}", flow.attempts());
    for record in skipped {
        let detail = record.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("document"), "{detail}");
    }
    assert_eq!(response.status, 502, "the last attempt sent failed");
}

#[test]
fn when_no_deployment_can_express_the_request_the_client_hears_why_in_its_protocol() {
    let config = config();
    let mut store = MemoryStore::default();
    let body = json!({
        "model": "local-only",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}],
    });
    let request = parse(&config, "/v1/messages", &body);
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let Step::Respond(response) = flow.poll(&config, &mut store, T0) else {
        panic!("expected detour's answer")
    };
    assert_eq!(response.status, 400);
    let shaped = respond::in_protocol(response, Protocol::Anthropic);
    let body = body_json(&shaped);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "untranslatable_request");
    assert!(body["error"]["attempts"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("document"));
}

#[test]
fn a_body_invalid_for_its_protocol_gets_that_protocols_400_naming_the_field() {
    let config = config();
    let body = serde_json::to_vec(
        &json!({"model": "opus", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    let response = ParsedRequest::parse(&config, "POST", "/v1/messages", &body).unwrap_err();
    assert_eq!(response.status, 400);
    let shaped = respond::in_protocol(*response, Protocol::Anthropic);
    let body = body_json(&shaped);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "max_tokens");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
}

#[test]
fn a_chat_stream_to_gemini_uses_the_streaming_method() {
    let config = config();
    let mut store = MemoryStore::default();
    let request = parse(
        &config,
        "/v1/chat/completions?beta=1",
        &json!({"model": "gemini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let first = send(flow.poll(&config, &mut store, T0));
    assert_eq!(
        first.path, "/gem/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse",
        "the client's query belongs to its own protocol and is not passed on"
    );
}

#[test]
fn embeddings_never_cross_protocols() {
    let config = load_ok(
        "model_list:\n  - model_name: e\n    litellm_params: {model: gemini/text-embedding-004, api_key: os.environ/GEMINI_API_KEY, input_cost_per_token: 0, output_cost_per_token: 0}\n",
    )
    .config;
    let body = serde_json::to_vec(&json!({"model": "e", "input": "hi"})).unwrap();
    let request = ParsedRequest::parse(&config, "POST", "/v1/embeddings", &body).unwrap();
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let Step::Respond(response) = flow.poll(&config, &mut MemoryStore::default(), T0) else {
        panic!("expected detour's answer")
    };
    assert_eq!(response.status, 400);
    assert!(flow.attempts()[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("OpenAI-compatible"));
}

#[test]
fn native_deployments_default_to_the_providers_public_endpoints() {
    let config = load_ok(
        "model_list:\n  - model_name: a\n    litellm_params: {model: anthropic/claude-opus-4-5, api_key: os.environ/ANTHROPIC_API_KEY}\n  - model_name: g\n    litellm_params: {model: gemini/gemini-3-pro-preview, api_key: os.environ/GEMINI_API_KEY}\n",
    )
    .config;
    let bases: Vec<String> = config
        .deployments
        .iter()
        .map(|d| d.upstream.base_url())
        .collect();
    assert_eq!(
        bases,
        vec![
            "https://api.anthropic.com",
            "https://generativelanguage.googleapis.com"
        ]
    );
    assert_eq!(config.deployments[0].protocol, Protocol::Anthropic);
    assert_eq!(config.deployments[1].protocol, Protocol::Gemini);
}

#[test]
fn models_lists_the_route_groups_for_both_sdks() {
    let config = config();
    let response = request::models_answer(&config, "GET", "/v1/models").unwrap();
    let body = body_json(&response);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gemini", "local", "local-only", "opus"]);
    assert_eq!(body["object"], "list");
    assert_eq!(body["has_more"], false);
    assert_eq!(body["data"][0]["type"], "model");
    assert!(request::models_answer(&config, "POST", "/v1/models").is_none());
    assert!(request::models_answer(&config, "GET", "/v1/chat/completions").is_none());
}

#[test]
fn thinking_from_another_provider_is_not_sent_back_to_anthropic() {
    let config = config();
    let body = messages_request(json!({"messages": [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "from gemini", "signature": ""},
            {"type": "thinking", "thinking": "from claude", "signature": "sig-1"},
            {"type": "text", "text": "a1"}
        ]},
        {"role": "user", "content": "q2"}
    ]}));
    let request = parse(&config, "/v1/messages", &body);
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let first = send(flow.poll(&config, &mut MemoryStore::default(), T0));
    let sent: Value = serde_json::from_slice(&first.body).unwrap();
    let blocks = sent["messages"][1]["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["signature"], "sig-1");
}

#[test]
fn a_refusal_that_arrives_as_a_success_follows_the_content_policy_chain() {
    let config = load_ok(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: gemini/gemini-3-pro-preview, api_base: "http://127.0.0.1:18001/gem", api_key: os.environ/GEMINI_API_KEY}
  - model_name: safe
    litellm_params: {model: openai/local-model, api_base: "http://127.0.0.1:18001/safe/v1", input_cost_per_token: 0, output_cost_per_token: 0}
router_settings:
  num_retries: 0
  content_policy_fallbacks: [{g: [safe]}]
"#,
    )
    .config;
    let mut store = MemoryStore::default();
    let request = parse(
        &config,
        "/v1/chat/completions",
        &json!({"model": "g", "messages": [{"role": "user", "content": "x"}]}),
    );
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    send(flow.poll(&config, &mut store, T0));
    let blocked = include_bytes!("fixtures/protocol/gemini/response_prompt_blocked.json");
    let gemini_plan = flow.answer_plan(&config);
    assert_eq!(gemini_plan.provider, Protocol::Gemini);
    assert!(
        meter::whole(&gemini_plan, Some("application/json"), blocked)
            .unwrap()
            .refused
    );
    // An ordinary answer is not a refusal.
    let fine = include_bytes!("fixtures/protocol/gemini/response_text.json");
    assert!(
        !meter::whole(&gemini_plan, Some("application/json"), fine)
            .unwrap()
            .refused
    );
    let verdict = flow.on_answer(
        &config,
        &mut store,
        T0,
        Answer {
            transport_failure: Some(Reason::ContentPolicy),
            ..answer(200, blocked)
        },
    );
    assert_eq!(verdict, Verdict::Next);
    let next = send(flow.poll(&config, &mut store, T0));
    assert_eq!(next.path, "/safe/v1/chat/completions");
}

#[test]
fn an_anthropic_clients_beta_header_goes_only_where_its_body_goes_untouched() {
    let config = config();
    let mut store = MemoryStore::default();
    let request = parse(&config, "/v1/messages", &messages_request(json!({})))
        .with_anthropic_beta(Some("context-1m-2025-08-07".into()));
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let first = send(flow.poll(&config, &mut store, T0));
    assert_eq!(
        header(&first, "anthropic-beta"),
        Some("context-1m-2025-08-07")
    );
    flow.on_answer(&config, &mut store, T0, answer(529, b"{}"));
    let second = send(flow.poll(&config, &mut store, T0));
    assert_eq!(
        header(&second, "anthropic-beta"),
        None,
        "Gemini gets a translated body"
    );
}

#[test]
fn a_same_protocol_body_goes_as_sent_but_for_model_and_the_usage_detour_asks_for() {
    let config = config();
    let body = json!({
        "model": "local",
        "stream": true,
        "stream_options": {"chunk_hint": 3},
        "messages": [{"role": "user", "content": "h\u{e9}llo \"q\"\n"}],
        "temperature": 0.25,
        "vendor_extension": {"nested": [1, 2, {"x": null}]},
    });
    let request = parse(&config, "/v1/chat/completions", &body);
    let mut flow = Flow::start(&config, request, None, T0, 7).unwrap();
    let sent = send(flow.poll(&config, &mut MemoryStore::default(), T0));
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    let mut want = body.clone();
    want["model"] = json!("local-model");
    want["stream_options"] = json!({"chunk_hint": 3, "include_usage": true});
    assert_eq!(sent, want);

    // A body without `model` (routed by stage tag) gets the provider's model added.
    let config = load_ok(
        "model_list:\n  - model_name: local\n    litellm_params: {model: openai/local-model, api_base: \"http://127.0.0.1:18001/l/v1\", input_cost_per_token: 0, output_cost_per_token: 0}\ndetour:\n  stages: {Build: local}\n",
    )
    .config;
    let request = parse(
        &config,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    );
    let mut flow = Flow::start(&config, request, Some("Build"), T0, 7).unwrap();
    let sent = send(flow.poll(&config, &mut MemoryStore::default(), T0));
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        sent,
        json!({"model": "local-model", "messages": [{"role": "user", "content": "x"}]})
    );
}
