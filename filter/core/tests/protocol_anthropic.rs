//! The Anthropic Messages codec (both sides) against hand-written fixtures from Anthropic's
//! API reference: request bodies, answers, streams cut at every byte, errors, and bad input.

#![cfg(test)]

mod common;

use detour_core::protocol::anthropic::{self, StreamDecoder, StreamEncoder, DEFAULT_MAX_TOKENS};
use detour_core::protocol::sse::{SseEvent, SseParser};
use detour_core::protocol::{
    ChatRequest, ChatResponse, Image, Message, Part, ProviderError, Reasoning, ResponseFormat,
    StopReason, StreamEvent, Tool, ToolChoice,
};
use detour_core::usage::Usage;
use serde_json::{json, Map, Value};

use common::canon::{assistant, call, fixture_bytes, result, text, user};

fn fixture(name: &str) -> Vec<u8> {
    fixture_bytes("anthropic", name)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn fixture_body(name: &str) -> Map<String, Value> {
    match serde_json::from_slice(&fixture(name)).unwrap() {
        Value::Object(map) => map,
        other => panic!("{name} is not an object: {other}"),
    }
}

fn body(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn simple_request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        messages,
        ..ChatRequest::default()
    }
}

fn encode(request: &ChatRequest) -> Value {
    anthropic::encode_request(request, "claude-test").unwrap()
}

/// Decodes a whole stream given in chunks; the decoder's end result is returned apart.
fn decode_chunks(chunks: &[&[u8]]) -> (Vec<StreamEvent>, Result<(), String>) {
    let mut parser = SseParser::new();
    let mut decoder = StreamDecoder::new();
    let mut events = Vec::new();
    let mut feed = |event: SseEvent, events: &mut Vec<StreamEvent>| -> Result<(), String> {
        events.extend(decoder.event(&event).map_err(|e| e.0)?);
        Ok(())
    };
    for chunk in chunks {
        for event in parser.push(chunk).unwrap() {
            if let Err(e) = feed(event, &mut events) {
                return (events, Err(e));
            }
        }
    }
    if let Some(event) = parser.finish().unwrap() {
        if let Err(e) = feed(event, &mut events) {
            return (events, Err(e));
        }
    }
    match decoder.end() {
        Ok(more) => {
            events.extend(more);
            (events, Ok(()))
        }
        Err(e) => (events, Err(e.0)),
    }
}

fn decode_stream(bytes: &[u8]) -> (Vec<StreamEvent>, Result<(), String>) {
    decode_chunks(&[bytes])
}

fn encode_stream(events: &[StreamEvent], complete: bool) -> Vec<u8> {
    let mut encoder = StreamEncoder::new();
    let mut out = Vec::new();
    for event in events {
        encoder.event(event, &mut out);
    }
    encoder.end(complete, &mut out);
    out
}

fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = parser.push(bytes).unwrap();
    events.extend(parser.finish().unwrap());
    events
}

fn usage(prompt: u64, completion: u64, cached: u64, write: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: write,
    }
}

fn strip_cache_control(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("cache_control");
            map.values_mut().for_each(strip_cache_control);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_cache_control),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Client side: requests
// ---------------------------------------------------------------------------------------

#[test]
fn a_basic_request_decodes() {
    let request = anthropic::decode_request(&fixture_body("request_basic.json")).unwrap();
    assert_eq!(
        request,
        ChatRequest {
            system: vec!["You are a terse assistant.".into()],
            messages: vec![
                user(vec![text("Hello, Claude")]),
                assistant(vec![text("Hello!")]),
                user(vec![text("Can you describe LLMs to me?")]),
            ],
            max_tokens: Some(1024),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            stop: vec!["\n\nHuman:".into(), "END".into()],
            stream: true,
            user: Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b".into()),
            ..ChatRequest::default()
        }
    );
}

#[test]
fn a_tool_conversation_decodes() {
    let request = anthropic::decode_request(&fixture_body("request_tools.json")).unwrap();
    assert!(
        request.untranslatable.is_empty(),
        "{:?}",
        request.untranslatable
    );
    assert_eq!(
        request.system,
        vec!["You help with the weather.", "Use the tools when needed."]
    );
    assert_eq!(request.max_tokens, Some(16000));
    assert_eq!(
        request.reasoning,
        Some(Reasoning {
            budget_tokens: Some(10000),
            effort: None
        })
    );
    assert_eq!(request.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(request.parallel_tool_calls, Some(false));
    assert_eq!(request.tools.len(), 2);
    assert_eq!(request.tools[0].name, "get_weather");
    assert_eq!(
        request.tools[0].description.as_deref(),
        Some("Get the current weather in a given location")
    );
    assert_eq!(request.tools[0].parameters["required"], json!(["location"]));
    assert_eq!(request.tools[1].name, "get_time");
    assert_eq!(request.tools[1].description, None);

    assert_eq!(request.messages.len(), 5);
    assert_eq!(
        request.messages[0].content,
        vec![
            Part::Image(Image::Base64 {
                media_type: "image/jpeg".into(),
                data: "/9j/4AAQSkZJRg==".into()
            }),
            Part::Image(Image::Url(
                "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg".into()
            )),
            text("Where was this taken, and what is the weather there?"),
        ]
    );
    assert_eq!(
        request.messages[1].content,
        vec![
            Part::Thinking {
                text: "The photo looks like San Francisco. I should check the weather.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()),
            },
            text("Let me check the weather."),
            // Compact JSON text of `input`.
            call(
                "toolu_01A09q90qw90lq917835lq9",
                "get_weather",
                r#"{"location":"San Francisco, CA","unit":"celsius"}"#
            ),
        ]
    );
    // The tool result's name comes from the earlier call with that id.
    assert_eq!(
        request.messages[2].content,
        vec![result(
            "toolu_01A09q90qw90lq917835lq9",
            Some("get_weather"),
            vec![text("15 degrees, foggy")],
            false
        )]
    );
    assert_eq!(
        request.messages[3].content[1],
        call("toolu_01B", "get_time", "{}")
    );
    assert_eq!(
        request.messages[4].content,
        vec![
            result(
                "toolu_01B",
                Some("get_time"),
                vec![
                    text("time service unavailable"),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into()
                    })
                ],
                true
            ),
            text("Never mind the time."),
        ]
    );
}

#[test]
fn cache_control_is_dropped_everywhere() {
    let with = fixture_body("request_cache_control.json");
    let mut without = Value::Object(with.clone());
    strip_cache_control(&mut without);
    assert_ne!(
        Value::Object(with.clone()),
        without,
        "the fixture has cache_control"
    );
    let a = anthropic::decode_request(&with).unwrap();
    let b = anthropic::decode_request(without.as_object().unwrap()).unwrap();
    assert_eq!(a, b);
    assert!(a.untranslatable.is_empty());
    assert_eq!(a.system.len(), 2);
    assert_eq!(a.tools.len(), 1);
}

#[test]
fn anthropic_only_features_are_named_untranslatable() {
    let request = anthropic::decode_request(&fixture_body("request_untranslatable.json")).unwrap();
    let mut got = request.untranslatable.clone();
    got.sort();
    let mut want = vec![
        "`service_tier`",
        "`container`",
        "`mcp_servers`",
        "`context_management`",
        "tool of type web_search_20250305",
        "tool of type bash_20250124",
        "content block of type document",
        "image source of type file",
        "content block of type redacted_thinking",
        "content block of type server_tool_use",
        "content block of type web_search_tool_result",
    ];
    want.sort();
    assert_eq!(got, want);
    // What can be carried still is.
    assert_eq!(request.tools.len(), 1);
    assert_eq!(
        request.messages[0].content,
        vec![text("Summarize the document.")]
    );
    assert_eq!(
        request.messages[1].content,
        vec![text("Here is the summary.")]
    );
    // And the provider side refuses it, naming the features.
    let err = anthropic::encode_request(&request, "m").unwrap_err();
    assert!(err.0.contains("tool of type bash_20250124"), "{}", err.0);
}

#[test]
fn service_tier_auto_is_only_a_hint() {
    let request = anthropic::decode_request(&body(json!({
        "max_tokens": 5, "service_tier": "auto",
        "messages": [{"role": "user", "content": "hi"}]
    })))
    .unwrap();
    assert!(request.untranslatable.is_empty());
}

#[test]
fn thinking_and_output_config() {
    let decode = |extra: Value| {
        let mut b = body(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}));
        b.extend(body(extra));
        anthropic::decode_request(&b)
    };
    assert_eq!(
        decode(json!({"thinking": {"type": "disabled"}}))
            .unwrap()
            .reasoning,
        None
    );
    assert_eq!(
        decode(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}))
            .unwrap()
            .reasoning,
        Some(Reasoning {
            budget_tokens: None,
            effort: Some("high".into())
        })
    );
    let r = decode(
        json!({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    )
    .unwrap();
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: json!({"type": "object"}),
            strict: Some(true)
        })
    );
    assert!(r.untranslatable.is_empty());
    let r = decode(json!({"output_config": {"task_budget": {"type": "tokens", "total": 1000}}}))
        .unwrap();
    assert_eq!(r.untranslatable, vec!["`output_config.task_budget`"]);
    assert_eq!(
        decode(json!({"thinking": {"type": "enabled"}}))
            .unwrap_err()
            .field,
        "thinking.budget_tokens"
    );
    assert_eq!(
        decode(json!({"thinking": {"type": "sometimes"}}))
            .unwrap_err()
            .field,
        "thinking.type"
    );
}

#[test]
fn tool_choices_decode() {
    let decode = |choice: Value| {
        anthropic::decode_request(&body(json!({
            "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        })))
    };
    let got = |choice: Value| {
        let r = decode(choice).unwrap();
        (r.tool_choice, r.parallel_tool_calls)
    };
    assert_eq!(got(json!({"type": "auto"})), (Some(ToolChoice::Auto), None));
    assert_eq!(
        got(json!({"type": "any"})),
        (Some(ToolChoice::Required), None)
    );
    assert_eq!(got(json!({"type": "none"})), (Some(ToolChoice::None), None));
    assert_eq!(
        got(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})),
        (Some(ToolChoice::Named("f".into())), Some(false))
    );
    assert_eq!(
        got(json!({"type": "any", "disable_parallel_tool_use": false})),
        (Some(ToolChoice::Required), None)
    );
    assert_eq!(
        decode(json!({"type": "tool"})).unwrap_err().field,
        "tool_choice.name"
    );
    assert_eq!(
        decode(json!({"type": "required"})).unwrap_err().field,
        "tool_choice.type"
    );
    assert_eq!(decode(json!("auto")).unwrap_err().field, "tool_choice");
}

#[test]
fn invalid_requests_name_the_field() {
    let ok_message = json!({"role": "user", "content": "hi"});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"messages": [ok_message]}), "max_tokens"),
        (
            json!({"max_tokens": null, "messages": [ok_message]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": -1, "messages": [ok_message]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": 1.5, "messages": [ok_message]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": "100", "messages": [ok_message]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": 1e30, "messages": [ok_message]}),
            "max_tokens",
        ),
        (json!({"max_tokens": 1}), "messages"),
        (json!({"max_tokens": 1, "messages": []}), "messages"),
        (
            json!({"max_tokens": 1, "messages": {"role": "user"}}),
            "messages",
        ),
        (json!({"max_tokens": 1, "messages": ["hi"]}), "messages[0]"),
        (
            json!({"max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": 7}]}),
            "messages[0].content",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message, {"role": "assistant", "content": [{"type": "hologram"}]}]}),
            "messages[1].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message, ok_message, {"role": "user", "content": [{"type": "image", "source": {"type": "ftp", "url": "x"}}]}]}),
            "messages[2].content[0].source.type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}]}]}),
            "messages[0].content[0].source.media_type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image"}]}]}),
            "messages[0].content[0].source",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]}),
            "messages[0].content[0].input",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}]}),
            "messages[0].content[0].input",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
            "messages[0].content[0].tool_use_id",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]}]}]}),
            "messages[0].content[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]}),
            "messages[0].content[0].is_error",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]}]}),
            "messages[0].content[0].thinking",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "system": 5}),
            "system",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "system": [{"type": "image", "source": {}}]}),
            "system[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "tools": {}}),
            "tools",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "tools": [{"name": "f"}]}),
            "tools[0].input_schema",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "tools": [{"input_schema": {"type": "object"}}]}),
            "tools[0].name",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "tools": [{"name": "f", "input_schema": []}]}),
            "tools[0].input_schema",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "stop_sequences": "END"}),
            "stop_sequences",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "stop_sequences": [1]}),
            "stop_sequences[0]",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "top_k": -3}),
            "top_k",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "metadata": {"user_id": 5}}),
            "metadata.user_id",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "metadata": "u"}),
            "metadata",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "thinking": true}),
            "thinking",
        ),
        (
            json!({"max_tokens": 1, "messages": [ok_message], "output_config": {"format": {"type": "xml"}}}),
            "output_config.format.type",
        ),
    ];
    for (input, field) in cases {
        let err = anthropic::decode_request(&body(input.clone()))
            .expect_err(&format!("accepted {input}"));
        assert_eq!(err.field, field, "{input}: {}", err.message);
        assert!(!err.message.is_empty());
    }
}

#[test]
fn request_messages_read_like_anthropics() {
    let err = anthropic::decode_request(&body(
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    ))
    .unwrap_err();
    assert_eq!(err.message, "Field required");
    let err = anthropic::decode_request(&body(json!({
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "hologram"}]}]
    })))
    .unwrap_err();
    assert!(err.message.contains("'hologram'"), "{}", err.message);
}

#[test]
fn huge_and_nested_garbage_never_panics() {
    let big = "x".repeat(100_000);
    let deep = (0..200).fold(json!(1), |v, _| json!([v]));
    let inputs = vec![
        json!({"max_tokens": u64::MAX, "messages": [{"role": "user", "content": big}]}),
        json!({"max_tokens": 1, "messages": [{"role": "user", "content": [deep.clone()]}]}),
        json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "system": [deep]}),
        json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "temperature": 1e308}),
        json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": 1, "name": [], "input": {}}]}]}),
    ];
    for input in inputs {
        let _ = anthropic::decode_request(&body(input));
    }
}

// ---------------------------------------------------------------------------------------
// Round trips: client decode → provider encode → client decode
// ---------------------------------------------------------------------------------------

#[test]
fn requests_round_trip() {
    for name in ["request_basic.json", "request_tools.json"] {
        let first = anthropic::decode_request(&fixture_body(name)).unwrap();
        let encoded = anthropic::encode_request(&first, "claude-provider").unwrap();
        assert_eq!(encoded["model"], "claude-provider", "{name}");
        let again = anthropic::decode_request(encoded.as_object().unwrap()).unwrap();
        // The provider side joins system strings into one (see the module doc).
        let mut expected = first.clone();
        if expected.system.len() > 1 {
            expected.system = vec![expected.system.join("\n\n")];
        }
        assert_eq!(again, expected, "{name}");
    }
}

#[test]
fn the_basic_request_encodes_as_anthropic_expects() {
    let request = anthropic::decode_request(&fixture_body("request_basic.json")).unwrap();
    let encoded = encode(&request);
    assert_eq!(
        encoded,
        json!({
            "model": "claude-test",
            "max_tokens": 1024,
            "system": "You are a terse assistant.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                {"role": "user", "content": [{"type": "text", "text": "Can you describe LLMs to me?"}]}
            ],
            "stop_sequences": ["\n\nHuman:", "END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stream": true,
            "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"}
        })
    );
}

// ---------------------------------------------------------------------------------------
// Provider side: requests
// ---------------------------------------------------------------------------------------

#[test]
fn max_tokens_defaults_and_system_joins() {
    let mut request = simple_request(vec![user(vec![text("hi")])]);
    request.system = vec!["one".into(), String::new(), "two".into()];
    let encoded = encode(&request);
    assert_eq!(encoded["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(DEFAULT_MAX_TOKENS, 4096);
    assert_eq!(encoded["system"], "one\n\ntwo");
    assert!(encoded.get("stream").is_none());
    assert!(encoded.get("tools").is_none());
    assert!(encoded.get("thinking").is_none());
    request.system.clear();
    assert!(encode(&request).get("system").is_none());
}

#[test]
fn consecutive_roles_merge_and_tool_results_go_first() {
    let request = simple_request(vec![
        user(vec![text("weather?")]),
        assistant(vec![text("checking")]),
        assistant(vec![
            call("call_1", "wx", r#"{"city":"Oslo"}"#),
            call("call.2:x", "wx", ""),
        ]),
        user(vec![text("here you go")]),
        user(vec![
            result("call_1", Some("wx"), vec![text("rain")], false),
            result("call.2:x", None, vec![], true),
        ]),
        user(vec![text("")]),
    ]);
    let encoded = encode(&request);
    assert_eq!(
        encoded["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "call_1", "name": "wx", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "call_2_x", "name": "wx", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
                {"type": "tool_result", "tool_use_id": "call_2_x", "is_error": true},
                {"type": "text", "text": "here you go"}
            ]}
        ])
    );
}

#[test]
fn tool_results_with_images_are_block_lists() {
    let request = simple_request(vec![
        assistant(vec![call("c", "shot", "{}")]),
        user(vec![result(
            "c",
            None,
            vec![
                text("a screenshot"),
                Part::Image(Image::Url("data:image/png;base64,iVBO".into())),
            ],
            false,
        )]),
    ]);
    let encoded = encode(&request);
    assert_eq!(
        encoded["messages"][1]["content"][0]["content"],
        json!([
            {"type": "text", "text": "a screenshot"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
        ])
    );
}

#[test]
fn images_by_url_and_inline() {
    let request = simple_request(vec![user(vec![
        Part::Image(Image::Url("https://example.com/cat.png".into())),
        Part::Image(Image::Url("data:image/webp;base64,UklG".into())),
        Part::Image(Image::Base64 {
            media_type: "image/gif".into(),
            data: "R0lG".into(),
        }),
    ])]);
    assert_eq!(
        encode(&request)["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}}
        ])
    );
    let bad = simple_request(vec![user(vec![Part::Image(Image::Url(
        "ftp://x/y.png".into(),
    ))])]);
    assert!(anthropic::encode_request(&bad, "m").is_err());
}

#[test]
fn unusable_tool_arguments_are_unsupported() {
    for arguments in ["{not json", "[1,2]", "\"text\""] {
        let request = simple_request(vec![
            user(vec![text("go")]),
            assistant(vec![call("c", "f", arguments)]),
        ]);
        let err = anthropic::encode_request(&request, "m").unwrap_err();
        assert!(
            err.0.contains("messages[1].content[0]"),
            "{arguments}: {}",
            err.0
        );
    }
    let misplaced = simple_request(vec![user(vec![call("c", "f", "{}")])]);
    assert!(anthropic::encode_request(&misplaced, "m").is_err());
    let misplaced = simple_request(vec![assistant(vec![result("c", None, vec![], false)])]);
    assert!(anthropic::encode_request(&misplaced, "m").is_err());
    let empty = simple_request(vec![user(vec![text("")])]);
    assert!(anthropic::encode_request(&empty, "m").is_err());
}

#[test]
fn response_format_is_unsupported() {
    for format in [
        ResponseFormat::Json,
        ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: json!({"type": "object"}),
            strict: None,
        },
    ] {
        let mut request = simple_request(vec![user(vec![text("hi")])]);
        request.response_format = Some(format);
        let err = anthropic::encode_request(&request, "m").unwrap_err();
        assert!(err.0.contains("response_format"), "{}", err.0);
    }
}

#[test]
fn tools_and_tool_choice_encode() {
    let mut request = simple_request(vec![user(vec![text("hi")])]);
    request.tools = vec![
        Tool {
            name: "wx".into(),
            description: Some("weather".into()),
            parameters: json!({"properties": {"city": {"type": "string"}}}),
        },
        Tool {
            name: "noargs".into(),
            description: None,
            parameters: Value::Null,
        },
    ];
    request.parallel_tool_calls = Some(false);
    let encoded = encode(&request);
    assert_eq!(
        encoded["tools"],
        json!([
            {"name": "wx", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "noargs", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(
        encoded["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let choice = |choice: ToolChoice, parallel: Option<bool>| {
        let mut r = request.clone();
        r.tool_choice = Some(choice);
        r.parallel_tool_calls = parallel;
        anthropic::encode_request(&r, "m").map(|b| b["tool_choice"].clone())
    };
    assert_eq!(
        choice(ToolChoice::Auto, None).unwrap(),
        json!({"type": "auto"})
    );
    assert_eq!(
        choice(ToolChoice::None, Some(false)).unwrap(),
        json!({"type": "none"})
    );
    assert_eq!(
        choice(ToolChoice::Required, Some(true)).unwrap(),
        json!({"type": "any"})
    );
    assert_eq!(
        choice(ToolChoice::Named("wx".into()), Some(false)).unwrap(),
        json!({"type": "tool", "name": "wx", "disable_parallel_tool_use": true})
    );
    assert!(choice(ToolChoice::Named("nope".into()), None).is_err());

    let mut bad = request.clone();
    bad.tools[0].parameters = json!({"type": "array"});
    assert!(anthropic::encode_request(&bad, "m").is_err());
    bad.tools[0].parameters = json!("schema");
    assert!(anthropic::encode_request(&bad, "m").is_err());

    let mut no_tools = simple_request(vec![user(vec![text("hi")])]);
    no_tools.tool_choice = Some(ToolChoice::Auto);
    assert!(encode(&no_tools).get("tool_choice").is_none());
    no_tools.tool_choice = Some(ToolChoice::Required);
    assert!(anthropic::encode_request(&no_tools, "m").is_err());
}

#[test]
fn reasoning_becomes_thinking() {
    let with = |budget: Option<u64>, effort: Option<&str>, max_tokens: Option<u64>| {
        let mut r = simple_request(vec![user(vec![text("hi")])]);
        r.reasoning = Some(Reasoning {
            budget_tokens: budget,
            effort: effort.map(str::to_string),
        });
        r.max_tokens = max_tokens;
        r.temperature = Some(0.3);
        r.top_k = Some(5);
        r.top_p = Some(0.5);
        anthropic::encode_request(&r, "m")
    };
    let b = with(Some(2000), None, Some(8000)).unwrap();
    assert_eq!(
        b["thinking"],
        json!({"type": "enabled", "budget_tokens": 2000})
    );
    assert_eq!(b["max_tokens"], 8000);
    // Anthropic rejects these sampling settings with thinking on.
    assert!(b.get("temperature").is_none());
    assert!(b.get("top_k").is_none());
    assert!(b.get("top_p").is_none());
    for (effort, budget) in [
        ("minimal", 1024),
        ("low", 1024),
        ("medium", 4096),
        ("high", 16384),
        ("xhigh", 32768),
    ] {
        let b = with(None, Some(effort), Some(50_000)).unwrap();
        assert_eq!(b["thinking"]["budget_tokens"], budget, "{effort}");
    }
    assert!(with(None, Some("none"), None)
        .unwrap()
        .get("thinking")
        .is_none());
    assert_eq!(with(None, Some("none"), None).unwrap()["temperature"], 0.3);
    assert!(with(None, Some("extreme"), None).is_err());
    assert!(with(Some(0), None, None).unwrap().get("thinking").is_none());
    // Below Anthropic's minimum: raised.
    assert_eq!(
        with(Some(10), None, Some(5000)).unwrap()["thinking"]["budget_tokens"],
        1024
    );
    // No max_tokens: raised above the budget.
    let b = with(Some(10_000), None, None).unwrap();
    assert_eq!(b["max_tokens"], 10_000 + DEFAULT_MAX_TOKENS);
    // An explicit max_tokens at or below the budget lowers the budget, or turns thinking off.
    assert_eq!(
        with(Some(10_000), None, Some(5000)).unwrap()["thinking"]["budget_tokens"],
        4999
    );
    let b = with(Some(10_000), None, Some(1000)).unwrap();
    assert!(b.get("thinking").is_none());
    assert_eq!(b["max_tokens"], 1000);
}

#[test]
fn thinking_is_left_off_when_anthropic_would_reject_it() {
    let mut request = simple_request(vec![user(vec![text("hi")])]);
    request.reasoning = Some(Reasoning {
        budget_tokens: Some(2000),
        effort: None,
    });
    request.tools = vec![Tool {
        name: "f".into(),
        description: None,
        parameters: json!({"type": "object"}),
    }];
    request.tool_choice = Some(ToolChoice::Required);
    assert!(encode(&request).get("thinking").is_none());
    request.tool_choice = Some(ToolChoice::Auto);
    assert!(encode(&request).get("thinking").is_some());
    // A tool turn from another provider (no signed thinking) ends the conversation.
    request.messages.push(assistant(vec![
        Part::Thinking {
            text: "unsigned".into(),
            signature: None,
        },
        call("c", "f", "{}"),
    ]));
    request
        .messages
        .push(user(vec![result("c", None, vec![text("ok")], false)]));
    let encoded = encode(&request);
    assert!(encoded.get("thinking").is_none());
    // Unsigned thinking is not sent back.
    assert_eq!(encoded["messages"][1]["content"][0]["type"], "tool_use");
    // A signed one is, and thinking stays on.
    request.messages[1].content[0] = Part::Thinking {
        text: "signed".into(),
        signature: Some("sig".into()),
    };
    let encoded = encode(&request);
    assert_eq!(
        encoded["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "signed", "signature": "sig"})
    );
    assert!(encoded.get("thinking").is_some());
}

#[test]
fn temperature_passes_as_it_is() {
    let mut request = simple_request(vec![user(vec![text("hi")])]);
    request.temperature = Some(1.7);
    assert_eq!(encode(&request)["temperature"], 1.7);
}

// ---------------------------------------------------------------------------------------
// Provider side: answers and errors
// ---------------------------------------------------------------------------------------

#[test]
fn a_text_answer_decodes() {
    let answer = anthropic::decode_response(&fixture("response_text.json")).unwrap();
    assert_eq!(
        answer,
        ChatResponse {
            id: "msg_013Zva2CMHLNnXjNJJKqJ2EF".into(),
            model: "claude-sonnet-4-5-20250929".into(),
            content: vec![text("Hi! My name is Claude.")],
            stop: StopReason::EndTurn,
            usage: Some(usage(2095, 503, 0, 0)),
        }
    );
}

#[test]
fn a_tool_answer_decodes_with_cache_usage() {
    let answer = anthropic::decode_response(&fixture("response_tool_use.json")).unwrap();
    assert_eq!(answer.stop, StopReason::ToolUse);
    // prompt = input + cache reads + cache writes.
    assert_eq!(answer.usage, Some(usage(50 + 3000 + 1200, 120, 3000, 1200)));
    assert_eq!(
        answer.content,
        vec![
            Part::Thinking {
                text: "The user wants the weather in San Francisco.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()),
            },
            // redacted_thinking is skipped.
            text("I'll check the current weather in San Francisco for you."),
            call(
                "toolu_01A09q90qw90lq917835lq9",
                "get_weather",
                r#"{"location":"San Francisco, CA","unit":"celsius"}"#
            ),
        ]
    );
}

#[test]
fn stop_reasons_decode() {
    for (reason, stop) in [
        (json!("end_turn"), StopReason::EndTurn),
        (json!("max_tokens"), StopReason::MaxTokens),
        (json!("stop_sequence"), StopReason::StopSequence),
        (json!("tool_use"), StopReason::ToolUse),
        (json!("refusal"), StopReason::ContentFilter),
        (json!("pause_turn"), StopReason::EndTurn),
        (
            json!("model_context_window_exceeded"),
            StopReason::MaxTokens,
        ),
        (json!(null), StopReason::EndTurn),
        (json!("something_new"), StopReason::EndTurn),
    ] {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": reason});
        let answer = anthropic::decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(answer.stop, stop, "{reason}");
        assert_eq!(answer.usage, None);
    }
}

#[test]
fn malformed_answers_are_errors() {
    let full = fixture("response_tool_use.json");
    for cut in 0..full.len() {
        let prefix = &full[..cut];
        // Whitespace-only tails of the fixture still parse; every real cut fails.
        if prefix.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<Value>(prefix).is_err()
        {
            assert!(anthropic::decode_response(prefix).is_err(), "cut at {cut}");
        }
    }
    let bad: Vec<Value> = vec![
        json!([]),
        json!("message"),
        json!({"type": "message"}),
        json!({"type": "message", "content": {}}),
        json!({"type": "completion", "content": []}),
        json!({"content": [{"type": "text", "text": "no type"}]}),
        json!({"type": "message", "content": [{"type": "text"}]}),
        json!({"type": "message", "content": [{"type": "text", "text": 5}]}),
        json!({"type": "message", "content": [{"text": "x"}]}),
        json!({"type": "message", "content": ["x"]}),
        json!({"type": "message", "content": [{"type": "tool_use", "name": "f", "input": {}}]}),
        json!({"type": "message", "content": [], "usage": {"input_tokens": -1}}),
        json!({"type": "message", "content": [], "usage": {"input_tokens": 1.5}}),
        json!({"type": "message", "content": [], "usage": {"output_tokens": 1e20}}),
        json!({"type": "message", "content": [], "usage": {"cache_read_input_tokens": "3"}}),
        json!({"type": "message", "content": [], "usage": 7}),
        json!({"type": "message", "content": [], "stop_reason": 3}),
        json!({"type": "message", "content": [], "id": 3}),
        fixture_json_value("error_overloaded.json"),
    ];
    for value in bad {
        assert!(
            anthropic::decode_response(value.to_string().as_bytes()).is_err(),
            "accepted {value}"
        );
    }
    assert!(anthropic::decode_response(b"").is_err());
    assert!(anthropic::decode_response(b"<html>502 Bad Gateway</html>").is_err());
    assert!(anthropic::decode_response(&[0xff, 0xfe, 0x00]).is_err());
    // Whole-number floats are counts.
    let ok = json!({"type": "message", "content": [], "usage": {"input_tokens": 3.0, "output_tokens": 1}});
    assert_eq!(
        anthropic::decode_response(ok.to_string().as_bytes())
            .unwrap()
            .usage,
        Some(usage(3, 1, 0, 0))
    );
}

fn fixture_json_value(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

#[test]
fn provider_errors_decode() {
    assert_eq!(
        anthropic::decode_error(&fixture("error_overloaded.json")),
        Some(ProviderError {
            kind: Some("overloaded_error".into()),
            message: "Overloaded".into()
        })
    );
    let err = anthropic::decode_error(&fixture("error_rate_limit.json")).unwrap();
    assert_eq!(err.kind.as_deref(), Some("rate_limit_error"));
    assert!(err.message.starts_with("This request would exceed"));
    let err = anthropic::decode_error(&fixture("error_invalid_request.json")).unwrap();
    assert_eq!(err.kind.as_deref(), Some("invalid_request_error"));
    assert!(err.message.contains("prompt is too long"));
    assert_eq!(
        anthropic::decode_error(br#"{"type":"error","error":{"type":"api_error"}}"#),
        Some(ProviderError {
            kind: Some("api_error".into()),
            message: "api_error".into()
        })
    );
    assert_eq!(anthropic::decode_error(b"<html>"), None);
    assert_eq!(anthropic::decode_error(br#"{"error":"x"}"#), None);
    assert_eq!(anthropic::decode_error(br#"{"error":{}}"#), None);
    assert_eq!(
        anthropic::decode_error(&fixture("response_text.json")),
        None
    );
}

// ---------------------------------------------------------------------------------------
// Client side: answers and errors
// ---------------------------------------------------------------------------------------

#[test]
fn answers_encode_as_message_objects() {
    let answer = ChatResponse {
        id: "chatcmpl-abc".into(),
        model: "gpt-4o".into(),
        content: vec![
            Part::Thinking {
                text: "hmm".into(),
                signature: None,
            },
            text("Sure."),
            call("call_1", "wx", r#"{"city": "Oslo"}"#),
            call("call_2", "noargs", ""),
            call("call_3", "broken", "{\"cut"),
        ],
        stop: StopReason::ToolUse,
        usage: Some(usage(1000, 50, 600, 100)),
    };
    assert_eq!(
        anthropic::encode_response(&answer),
        json!({
            "id": "msg_chatcmpl-abc",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": ""},
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "call_1", "name": "wx", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "call_2", "name": "noargs", "input": {}},
                {"type": "tool_use", "id": "call_3", "name": "broken", "input": {}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 300,
                "output_tokens": 50,
                "cache_read_input_tokens": 600,
                "cache_creation_input_tokens": 100
            }
        })
    );
    let mut plain = ChatResponse {
        id: "msg_keep".into(),
        stop: StopReason::ContentFilter,
        ..ChatResponse::default()
    };
    let out = anthropic::encode_response(&plain);
    assert_eq!(out["id"], "msg_keep");
    assert_eq!(out["stop_reason"], "refusal");
    assert_eq!(out["content"], json!([]));
    assert_eq!(out["usage"]["input_tokens"], 0);
    plain.id.clear();
    assert!(anthropic::encode_response(&plain)["id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    for (stop, name) in [
        (StopReason::EndTurn, "end_turn"),
        (StopReason::MaxTokens, "max_tokens"),
        (StopReason::StopSequence, "stop_sequence"),
    ] {
        plain.stop = stop;
        assert_eq!(anthropic::encode_response(&plain)["stop_reason"], name);
    }
}

#[test]
fn answers_round_trip_through_both_sides() {
    for name in ["response_text.json", "response_tool_use.json"] {
        let first = anthropic::decode_response(&fixture(name)).unwrap();
        let encoded = anthropic::encode_response(&first);
        let again = anthropic::decode_response(encoded.to_string().as_bytes()).unwrap();
        assert_eq!(again, first, "{name}");
    }
}

#[test]
fn errors_encode_in_anthropics_shape() {
    let err = |kind: Option<&str>| ProviderError {
        kind: kind.map(str::to_string),
        message: "boom".into(),
    };
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(
            anthropic::encode_error(status, &err(None)),
            json!({"type": "error", "error": {"type": kind, "message": "boom"}}),
            "{status}"
        );
        // A provider kind that is not Anthropic's falls back to the status.
        assert_eq!(
            anthropic::encode_error(status, &err(Some("RESOURCE_EXHAUSTED")))["error"]["type"],
            kind
        );
    }
    // An Anthropic kind is kept whatever the status.
    assert_eq!(
        anthropic::encode_error(503, &err(Some("overloaded_error")))["error"]["type"],
        "overloaded_error"
    );
    // Provider errors round trip.
    let decoded = anthropic::decode_error(&fixture("error_rate_limit.json")).unwrap();
    let encoded = anthropic::encode_error(429, &decoded);
    assert_eq!(
        anthropic::decode_error(encoded.to_string().as_bytes()),
        Some(decoded)
    );
}

// ---------------------------------------------------------------------------------------
// Provider side: streams
// ---------------------------------------------------------------------------------------

fn text_stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".into(),
            model: "claude-sonnet-4-5-20250929".into(),
        },
        StreamEvent::Usage(usage(25, 1, 0, 0)),
        StreamEvent::Text {
            index: 0,
            text: "Hello".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "!".into(),
        },
        StreamEvent::Finish(StopReason::EndTurn),
        StreamEvent::Usage(usage(25, 15, 0, 0)),
    ]
}

fn tool_stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
            model: "claude-opus-4-5-20251101".into(),
        },
        StreamEvent::Usage(usage(2572, 2, 2000, 100)),
        StreamEvent::Thinking {
            index: 0,
            text: "I need the weather ".into(),
        },
        StreamEvent::Thinking {
            index: 0,
            text: "in San Francisco.".into(),
        },
        StreamEvent::Text {
            index: 1,
            text: "Okay, let's check the weather for San Francisco, CA:".into(),
        },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: "{\"location\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: " \"San Francisco, CA\"".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: ", \"unit\": \"fahrenheit\"}".into(),
        },
        StreamEvent::Finish(StopReason::ToolUse),
        StreamEvent::Usage(usage(2572, 89, 2000, 100)),
    ]
}

#[test]
fn streams_decode() {
    let (events, end) = decode_stream(&fixture("stream_text.sse"));
    assert_eq!(end, Ok(()));
    assert_eq!(events, text_stream_events());
    let (events, end) = decode_stream(&fixture("stream_tool_use.sse"));
    assert_eq!(end, Ok(()));
    assert_eq!(events, tool_stream_events());
}

#[test]
fn server_tool_blocks_are_skipped_and_indices_stay_canonical() {
    let (events, end) = decode_stream(&fixture("stream_server_tool.sse"));
    assert_eq!(end, Ok(()));
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "msg_01G...".into(),
                model: "claude-sonnet-4-5-20250929".into()
            },
            StreamEvent::Usage(usage(2679, 3, 0, 0)),
            StreamEvent::Text {
                index: 0,
                text: "It is sunny in New York.".into()
            },
            StreamEvent::Finish(StopReason::EndTurn),
            // message_delta carries cumulative input counts too.
            StreamEvent::Usage(usage(10682, 510, 0, 0)),
        ]
    );
}

#[test]
fn streams_survive_every_cut() {
    for name in [
        "stream_text.sse",
        "stream_tool_use.sse",
        "stream_server_tool.sse",
        "stream_error.sse",
        "stream_truncated.sse",
    ] {
        let bytes = fixture(name);
        let whole = decode_stream(&bytes);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_chunks(&[a, b]), whole, "{name} cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&bytewise), whole, "{name} byte by byte");
        // CRLF line endings are the same stream.
        let crlf = String::from_utf8(bytes.clone())
            .unwrap()
            .replace('\n', "\r\n");
        assert_eq!(decode_stream(crlf.as_bytes()), whole, "{name} with CRLF");
    }
}

#[test]
fn broken_streams_are_errors() {
    let (events, end) = decode_stream(&fixture("stream_error.sse"));
    let err = end.unwrap_err();
    assert!(
        err.contains("Overloaded") && err.contains("overloaded_error"),
        "{err}"
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Text {
            index: 0,
            text: "Partial".into()
        })
    );
    let (events, end) = decode_stream(&fixture("stream_truncated.sse"));
    assert!(end.unwrap_err().contains("message_stop"));
    assert_eq!(events.len(), 3);
    assert!(StreamDecoder::new().end().is_err());
    // Cut anywhere before its last event, the text stream is incomplete.
    let bytes = fixture("stream_text.sse");
    let last = String::from_utf8(bytes.clone())
        .unwrap()
        .rfind("event: message_stop")
        .unwrap();
    for cut in 0..last {
        assert!(decode_stream(&bytes[..cut]).1.is_err(), "cut at {cut}");
    }
}

#[test]
fn garbage_stream_events_are_malformed() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n";
    let text_block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    let bad = [
        "data: not json\n\n".to_string(),
        "data: [1,2]\n\n".to_string(),
        // Content before message_start.
        text_block.to_string(),
        format!("{start}{start}"),
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n".to_string(),
        format!("{start}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{{\"type\":\"text_delta\",\"text\":\"x\"}}}}\n\n"),
        format!("{start}{text_block}{text_block}"),
        format!("{start}{text_block}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{{\"}}}}\n\n"),
        format!("{start}{text_block}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\"}}}}\n\n"),
        format!("{start}{text_block}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0}}\n\n"),
        format!("{start}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"name\":\"f\"}}}}\n\n"),
        format!("{start}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"content_block\":{{\"type\":\"text\"}}}}\n\n"),
        format!("{start}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":5}}}}\n\n"),
        format!("{start}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{}},\"usage\":{{\"output_tokens\":-4}}}}\n\n"),
        format!("{start}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{}},\"usage\":{{\"output_tokens\":1e300}}}}\n\n"),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n".to_string(),
    ];
    for stream in bad {
        let mut parser = SseParser::new();
        let mut decoder = StreamDecoder::new();
        let failed = parser
            .push(stream.as_bytes())
            .unwrap()
            .iter()
            .any(|event| decoder.event(event).is_err());
        assert!(failed, "accepted {stream:?}");
    }
}

#[test]
fn unknown_events_and_deltas_are_ignored() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\"}}\n\n",
        "event: brand_new_event\ndata: {\"type\":\"brand_new_event\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"pre\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"future_delta\",\"x\":1}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9}\n\n",
    );
    let (events, end) = decode_stream(stream.as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "m".into(),
                model: "x".into()
            },
            StreamEvent::Text {
                index: 0,
                text: "pre".into()
            },
            // No message_delta: message_stop still finishes.
            StreamEvent::Finish(StopReason::EndTurn),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Client side: streams
// ---------------------------------------------------------------------------------------

/// Checks the Messages stream grammar: names match types, one message_start first, blocks
/// started in index order, one open at a time, closed before message_delta, message_stop
/// last. Returns the event types in order.
fn check_grammar(bytes: &[u8]) -> Vec<String> {
    let events = sse_events(bytes);
    let mut types = Vec::new();
    let mut open: Option<u64> = None;
    let mut next = 0;
    for event in &events {
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let kind = data["type"].as_str().unwrap().to_string();
        assert_eq!(
            event.event.as_deref(),
            Some(kind.as_str()),
            "name and type differ"
        );
        match kind.as_str() {
            "message_start" => {
                assert!(types.is_empty(), "message_start is not first");
                let message = &data["message"];
                assert_eq!(message["type"], "message");
                assert_eq!(message["role"], "assistant");
                assert_eq!(message["content"], json!([]));
                assert!(message["id"].as_str().unwrap().starts_with("msg_"));
                assert!(message["usage"]["input_tokens"].is_u64());
                assert!(message["usage"]["output_tokens"].is_u64());
            }
            "content_block_start" => {
                assert_eq!(open, None, "a block started while another is open");
                assert_eq!(data["index"], next, "blocks start in order");
                open = data["index"].as_u64();
                next += 1;
            }
            "content_block_delta" => {
                assert!(data["index"].as_u64().unwrap() < next);
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open, "stop for a block not open");
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta with a block open");
                assert!(data["delta"]["stop_reason"].is_string());
                assert!(data["delta"]["stop_sequence"].is_null());
                assert!(data["usage"]["output_tokens"].is_u64());
            }
            "message_stop" => {}
            "error" => {
                assert!(data["error"]["type"].is_string());
                assert!(data["error"]["message"].is_string());
            }
            other => panic!("unexpected event {other}"),
        }
        types.push(kind);
    }
    types
}

#[test]
fn streams_encode_in_anthropics_grammar() {
    let out = encode_stream(&tool_stream_events(), true);
    let types = check_grammar(&out);
    assert_eq!(
        types,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let events = sse_events(&out);
    let data = |i: usize| -> Value { serde_json::from_str(&events[i].data).unwrap() };
    // message_start carries the usage decoded with the start.
    assert_eq!(
        data(0)["message"]["usage"],
        json!({"input_tokens": 472, "output_tokens": 2, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000})
    );
    assert_eq!(data(0)["message"]["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(data(0)["message"]["model"], "claude-opus-4-5-20251101");
    assert_eq!(
        data(1)["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        data(8)["content_block"],
        json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        data(9)["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"location\":"})
    );
    assert_eq!(
        data(13),
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89, "input_tokens": 472, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
        })
    );
}

#[test]
fn streams_round_trip_through_both_sides() {
    for name in [
        "stream_text.sse",
        "stream_tool_use.sse",
        "stream_server_tool.sse",
    ] {
        let (events, end) = decode_stream(&fixture(name));
        assert_eq!(end, Ok(()));
        let out = encode_stream(&events, true);
        check_grammar(&out);
        let (again, end) = decode_stream(&out);
        assert_eq!(end, Ok(()), "{name}");
        // The encoder writes usage once at the start and once at the end, as the decoder
        // reads it; the content, stop reason and final usage match.
        let content = |events: &[StreamEvent]| -> Vec<StreamEvent> {
            events
                .iter()
                .filter(|e| !matches!(e, StreamEvent::Usage(_)))
                .cloned()
                .collect()
        };
        assert_eq!(content(&again), content(&events), "{name}");
        let last_usage = |events: &[StreamEvent]| {
            events.iter().rev().find_map(|e| match e {
                StreamEvent::Usage(u) => Some(*u),
                _ => None,
            })
        };
        assert_eq!(last_usage(&again), last_usage(&events), "{name}");
    }
}

#[test]
fn a_stream_from_another_protocol_encodes() {
    // OpenAI-style: no usage until the end, Finish before Usage, a text block after a tool
    // call's index, and tool arguments resumed after another block.
    let events = vec![
        StreamEvent::Start {
            id: "chatcmpl-9".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::Thinking {
            index: 0,
            text: "think".into(),
        },
        StreamEvent::Text {
            index: 1,
            text: "a".into(),
        },
        StreamEvent::Thinking {
            index: 0,
            text: "more".into(),
        },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "call_a".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: "{\"x\":".into(),
        },
        StreamEvent::ToolCallStart {
            index: 3,
            id: "call_b".into(),
            name: "g".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: "1}".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 3,
            json: "".into(),
        },
        StreamEvent::Finish(StopReason::ToolUse),
        StreamEvent::Usage(usage(100, 20, 40, 0)),
    ];
    let out = encode_stream(&events, true);
    check_grammar(&out);
    let (decoded, end) = decode_stream(&out);
    assert_eq!(end, Ok(()));
    assert_eq!(
        decoded,
        vec![
            StreamEvent::Start {
                id: "msg_chatcmpl-9".into(),
                model: "gpt-4o".into()
            },
            StreamEvent::Usage(usage(0, 0, 0, 0)),
            StreamEvent::Thinking {
                index: 0,
                text: "think".into()
            },
            StreamEvent::Text {
                index: 1,
                text: "a".into()
            },
            // More thinking after the text opens a new thinking block.
            StreamEvent::Thinking {
                index: 2,
                text: "more".into()
            },
            StreamEvent::ToolCallStart {
                index: 3,
                id: "call_a".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallArgs {
                index: 3,
                json: "{\"x\":".into()
            },
            StreamEvent::ToolCallStart {
                index: 4,
                id: "call_b".into(),
                name: "g".into()
            },
            // Late arguments go to their own call's index.
            StreamEvent::ToolCallArgs {
                index: 3,
                json: "1}".into()
            },
            StreamEvent::Finish(StopReason::ToolUse),
            StreamEvent::Usage(usage(100, 20, 40, 0)),
        ]
    );
}

#[test]
fn an_empty_stream_still_has_the_whole_grammar() {
    let out = encode_stream(&[], true);
    assert_eq!(
        check_grammar(&out),
        vec!["message_start", "message_delta", "message_stop"]
    );
    let events = sse_events(&out);
    let delta: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"], json!({"output_tokens": 0}));
}

#[test]
fn a_broken_stream_ends_with_an_error_event() {
    let events = &text_stream_events()[..3];
    let out = encode_stream(events, false);
    let types = check_grammar(&out);
    assert_eq!(
        types,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    let last = sse_events(&out).pop().unwrap();
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    // The provider-side decoder (a client of this grammar) sees a failure.
    assert!(decode_stream(&out).1.is_err());
    // Nothing after the end.
    let mut encoder = StreamEncoder::new();
    let mut out = Vec::new();
    encoder.end(false, &mut out);
    let len = out.len();
    encoder.end(true, &mut out);
    encoder.event(
        &StreamEvent::Text {
            index: 0,
            text: "late".into(),
        },
        &mut out,
    );
    assert_eq!(out.len(), len);
}

#[test]
fn stop_reasons_reach_the_stream() {
    for (stop, name) in [
        (StopReason::EndTurn, "end_turn"),
        (StopReason::MaxTokens, "max_tokens"),
        (StopReason::StopSequence, "stop_sequence"),
        (StopReason::ToolUse, "tool_use"),
        (StopReason::ContentFilter, "refusal"),
    ] {
        let out = encode_stream(&[StreamEvent::Finish(stop)], true);
        let events = sse_events(&out);
        let delta: Value = serde_json::from_str(&events[1].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], name);
    }
}
