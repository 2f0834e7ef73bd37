//! The OpenAI Responses codec (client side), against fixtures written from OpenAI's API
//! reference (`tests/fixtures/protocol/openai_responses/`).
//!
//! The `.sse` fixtures are the encoder's expected output; `DETOUR_WRITE_FIXTURES=1`
//! rewrites them (review the diff). `sdk_check.py` there feeds every response and stream
//! fixture through the official `openai` Python SDK; `the_openai_sdk_parses_the_fixtures`
//! runs it when the repository's `.venv` exists.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use std::path::PathBuf;

use detour_core::protocol::openai_responses::{
    decode_request, encode_response, encode_response_at, StreamEncoder,
};
use detour_core::protocol::sse::{SseEvent, SseParser};
use detour_core::protocol::{
    ChatRequest, ChatResponse, Image, Part, Reasoning, ResponseFormat, StopReason, StreamEvent,
    Tool, ToolChoice,
};
use detour_core::usage::Usage;
use serde_json::{json, Map, Value};

use common::canon::{assistant, call, text, user};

/// A function call's output: Responses has no error flag and no tool name on it.
fn result(call_id: &str, content: Vec<Part>) -> Part {
    common::canon::result(call_id, None, content, false)
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol/openai_responses")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

fn body(name: &str) -> Map<String, Value> {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn usage(prompt: u64, completion: u64, cached: u64, written: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: written,
    }
}

// ---------------------------------------------------------------- requests

#[test]
fn a_string_input_is_one_user_message() {
    let request = decode_request(&body("request_simple.json")).unwrap();
    assert_eq!(
        request,
        ChatRequest {
            system: vec!["You are a terse assistant.".into()],
            messages: vec![user(vec![text(
                "Tell me a three sentence bedtime story about a unicorn."
            )])],
            max_tokens: Some(256),
            temperature: Some(0.7),
            stream: false,
            ..ChatRequest::default()
        }
    );
}

#[test]
fn a_codex_conversation_decodes_with_its_tool_calls_and_without_reasoning_items() {
    let request = decode_request(&body("request_codex.json")).unwrap();
    let expected = ChatRequest {
        system: vec![
            "You are Codex, a coding agent running in a terminal.".into(),
            "<permissions>workspace-write</permissions>".into(),
        ],
        messages: vec![
            user(vec![
                text("<environment_context>cwd: /repo</environment_context>"),
                text("List the files in the repository."),
            ]),
            assistant(vec![
                text("I'll list the files."),
                call("call_ls_1", "shell", "{\"command\":[\"ls\",\"-la\"]}"),
                call("call_git_2", "shell", "{\"command\":[\"git\",\"status\"]}"),
            ]),
            user(vec![
                result("call_ls_1", vec![text("Cargo.toml\nREADME.md\nsrc\n")]),
                result(
                    "call_git_2",
                    vec![text("nothing to commit, working tree clean")],
                ),
            ]),
        ],
        tools: vec![Tool {
            name: "shell".into(),
            description: Some("Runs a shell command and returns its output.".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "array", "items": {"type": "string"}},
                    "workdir": {"type": "string"}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        }],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(false),
        stream: true,
        reasoning: Some(Reasoning {
            budget_tokens: None,
            effort: Some("medium".into()),
        }),
        ..ChatRequest::default()
    };
    assert_eq!(request, expected);
    assert!(request.untranslatable.is_empty());
}

#[test]
fn images_by_url_and_inline() {
    let request = decode_request(&body("request_images.json")).unwrap();
    assert_eq!(
        request.messages,
        vec![user(vec![
            text("What is the difference between these two pictures?"),
            Part::Image(Image::Url(
                "https://upload.example.org/nature-boardwalk.jpg".into()
            )),
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".into(),
            }),
        ])]
    );
    assert!(request.untranslatable.is_empty());
}

#[test]
fn structured_output_user_and_named_tool_choice() {
    let request = decode_request(&body("request_structured.json")).unwrap();
    assert_eq!(
        request.system,
        vec!["Extract the event information.".to_string()]
    );
    assert_eq!(
        request.messages,
        vec![user(vec![text(
            "Alice and Bob are going to a science fair on Friday."
        )])]
    );
    let Some(ResponseFormat::JsonSchema {
        name,
        schema,
        strict,
    }) = &request.response_format
    else {
        panic!("{:?}", request.response_format)
    };
    assert_eq!(name, "calendar_event");
    assert_eq!(schema["required"], json!(["name", "date", "participants"]));
    assert_eq!(*strict, Some(true));
    assert_eq!(request.top_p, Some(0.9));
    // safety_identifier is the newer name of the end-user id and wins over `user`.
    assert_eq!(request.user.as_deref(), Some("hashed-5678"));
    assert_eq!(
        request.tool_choice,
        Some(ToolChoice::Named("get_weather".into()))
    );
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tools[0].description, None);
    assert!(
        request.untranslatable.is_empty(),
        "{:?}",
        request.untranslatable
    );
}

#[test]
fn allowed_tools_narrow_the_tool_list() {
    let request = decode_request(&body("request_allowed_tools.json")).unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(request.tool_choice, Some(ToolChoice::Required));
    assert_eq!(
        request.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(request.max_tokens, Some(1024));
}

#[test]
fn openai_only_features_are_untranslatable() {
    let request = decode_request(&body("request_builtin_tools.json")).unwrap();
    let listed = request.untranslatable.join(" | ");
    for phrase in [
        "content part of type input_file",
        "an image given by `file_id`",
        "input item of type item_reference",
        "tool of type web_search_preview",
        "tool of type file_search",
        "`tool_choice` of type file_search",
        "`top_logprobs`",
        "message.output_text.logprobs",
        "`prompt`",
    ] {
        assert!(listed.contains(phrase), "{phrase} missing from {listed}");
    }
    // Two item references: one typed, one bare `{id}`.
    assert_eq!(listed.matches("item_reference").count(), 2, "{listed}");
    // What can be carried still is.
    assert_eq!(request.tools.len(), 1);
    assert_eq!(
        request.messages,
        vec![user(vec![text(
            "Summarise this file and search the web for related news."
        )])]
    );
}

#[test]
fn every_openai_only_item_type_is_untranslatable_not_invalid() {
    for kind in [
        "computer_call",
        "computer_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "mcp_call",
        "web_search_call",
        "file_search_call",
        "image_generation_call",
        "code_interpreter_call",
    ] {
        let request = decode_request(&obj(json!({
            "input": [{"role": "user", "content": "hi"}, {"type": kind, "id": "x"}]
        })))
        .unwrap();
        assert_eq!(
            request.untranslatable,
            vec![format!("input item of type {kind}")]
        );
    }
    for kind in [
        "web_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "local_shell",
        "mcp",
        "custom",
    ] {
        let request =
            decode_request(&obj(json!({"input": "hi", "tools": [{"type": kind}]}))).unwrap();
        assert_eq!(request.untranslatable, vec![format!("tool of type {kind}")]);
    }
}

#[test]
fn function_calls_merge_into_the_preceding_assistant_message() {
    let request = decode_request(&obj(json!({
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "sunny"},
                {"type": "input_image", "image_url": "https://example.com/sun.png"}
            ]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't say more."}]},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "input_text", "text": "ok"}]}
        ]
    })))
    .unwrap();
    assert_eq!(
        request.messages,
        vec![
            user(vec![text("weather?")]),
            assistant(vec![call("c1", "w", "{}")]),
            user(vec![result(
                "c1",
                vec![
                    text("sunny"),
                    Part::Image(Image::Url("https://example.com/sun.png".into()))
                ]
            )]),
            assistant(vec![text("I can't say more.")]),
            user(vec![text("ok")]),
        ]
    );
}

#[test]
fn state_and_background_requests_are_refused_naming_the_field() {
    for (field, value) in [
        ("previous_response_id", json!("resp_123")),
        ("conversation", json!("conv_123")),
        ("conversation", json!({"id": "conv_123"})),
    ] {
        let mut request = obj(json!({"input": "hi"}));
        request.insert(field.into(), value);
        let err = decode_request(&request).unwrap_err();
        assert_eq!(err.field, field);
        assert!(
            err.message
                .contains("send the whole conversation in `input`"),
            "{err:?}"
        );
    }
    let err = decode_request(&obj(json!({"input": "hi", "background": true}))).unwrap_err();
    assert_eq!(err.field, "background");
    assert!(err.message.contains("not supported"));
    // Explicit nulls and `false` are the defaults, not requests for state.
    decode_request(&obj(json!({
        "input": "hi", "previous_response_id": null, "conversation": null, "background": false
    })))
    .unwrap();
}

#[test]
fn hints_are_dropped_without_a_trace() {
    let request = decode_request(&obj(json!({
        "input": "hi",
        "store": true,
        "metadata": {"a": "b"},
        "truncation": "auto",
        "service_tier": "flex",
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "stream_options": {"include_obfuscation": false},
        "max_tool_calls": 3,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "detailed"},
        "text": {"format": {"type": "text"}, "verbosity": "high"},
        "top_logprobs": 0
    })))
    .unwrap();
    assert_eq!(
        request,
        ChatRequest {
            messages: vec![user(vec![text("hi")])],
            ..ChatRequest::default()
        }
    );
}

#[test]
fn json_object_format_and_tool_choice_modes() {
    let request = decode_request(&obj(json!({
        "input": "hi", "text": {"format": {"type": "json_object"}}, "tool_choice": "none"
    })))
    .unwrap();
    assert_eq!(request.response_format, Some(ResponseFormat::Json));
    assert_eq!(request.tool_choice, Some(ToolChoice::None));
    let request = decode_request(&obj(json!({"input": "hi", "tool_choice": "required"}))).unwrap();
    assert_eq!(request.tool_choice, Some(ToolChoice::Required));
}

#[test]
fn invalid_requests_name_the_field() {
    let cases = [
        (json!({}), "input"),
        (json!({"input": null}), "input"),
        (json!({"input": 3}), "input"),
        (json!({"input": []}), "input"),
        (
            json!({"input": [{"role": "system", "content": "only system"}]}),
            "input",
        ),
        (json!({"input": ["hi"]}), "input[0]"),
        (
            json!({"input": [{"content": "no role or type"}]}),
            "input[0].type",
        ),
        (json!({"input": [{"type": 7}]}), "input[0].type"),
        (json!({"input": [{"type": "banana"}]}), "input[0].type"),
        (
            json!({"input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (json!({"input": [{"role": "user"}]}), "input[0].content"),
        (
            json!({"input": [{"role": "user", "content": 5}]}),
            "input[0].content",
        ),
        (
            json!({"input": [{"role": "user", "content": [5]}]}),
            "input[0].content[0]",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_video"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"text": "no type"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
            "input[0].content[0].text",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}),
            "input[0].content[0].text",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png,abc"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:;base64,abc"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "input[0].call_id",
        ),
        (
            json!({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}),
            "input[0].name",
        ),
        (
            json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}),
            "input[0].arguments",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c"}]}),
            "input[0].output",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}),
            "input[0].output",
        ),
        (json!({"input": "hi", "instructions": 1}), "instructions"),
        (json!({"input": "hi", "tools": {}}), "tools"),
        (json!({"input": "hi", "tools": [1]}), "tools[0]"),
        (json!({"input": "hi", "tools": [{}]}), "tools[0].type"),
        (
            json!({"input": "hi", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "gadget"}]}),
            "tools[0].type",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": "x"}]}),
            "tools[0].parameters",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "function", "name": "f", "description": 2}]}),
            "tools[0].description",
        ),
        (
            json!({"input": "hi", "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"input": "hi", "tool_choice": 1}), "tool_choice"),
        (
            json!({"input": "hi", "tool_choice": {}}),
            "tool_choice.type",
        ),
        (
            json!({"input": "hi", "tool_choice": {"type": "function"}}),
            "tool_choice.name",
        ),
        (
            json!({"input": "hi", "tool_choice": {"type": "gizmo"}}),
            "tool_choice.type",
        ),
        (
            json!({"input": "hi", "tool_choice": {"type": "allowed_tools", "mode": "none", "tools": []}}),
            "tool_choice.mode",
        ),
        (
            json!({"input": "hi", "tool_choice": {"type": "allowed_tools", "mode": "auto"}}),
            "tool_choice.tools",
        ),
        (
            json!({"input": "hi", "parallel_tool_calls": "yes"}),
            "parallel_tool_calls",
        ),
        (
            json!({"input": "hi", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
        (
            json!({"input": "hi", "max_output_tokens": 1.5}),
            "max_output_tokens",
        ),
        (
            json!({"input": "hi", "max_output_tokens": 1e300}),
            "max_output_tokens",
        ),
        (
            json!({"input": "hi", "max_output_tokens": "100"}),
            "max_output_tokens",
        ),
        (json!({"input": "hi", "temperature": "hot"}), "temperature"),
        (json!({"input": "hi", "top_p": []}), "top_p"),
        (json!({"input": "hi", "stream": "true"}), "stream"),
        (json!({"input": "hi", "user": 5}), "user"),
        (
            json!({"input": "hi", "safety_identifier": {}}),
            "safety_identifier",
        ),
        (json!({"input": "hi", "reasoning": "high"}), "reasoning"),
        (
            json!({"input": "hi", "reasoning": {"effort": 3}}),
            "reasoning.effort",
        ),
        (json!({"input": "hi", "text": 1}), "text"),
        (json!({"input": "hi", "text": {"format": 1}}), "text.format"),
        (
            json!({"input": "hi", "text": {"format": {"type": "xml"}}}),
            "text.format.type",
        ),
        (
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "n"}}}),
            "text.format.schema",
        ),
        (
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format.name",
        ),
        (
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "strict": "y"}}}),
            "text.format.strict",
        ),
        (json!({"input": "hi", "include": "x"}), "include"),
        (json!({"input": "hi", "include": [1]}), "include[0]"),
        (json!({"input": "hi", "top_logprobs": "2"}), "top_logprobs"),
        (json!({"input": "hi", "background": "no"}), "background"),
    ];
    for (request, field) in cases {
        let err = decode_request(&obj(request.clone()))
            .map(|r| format!("decoded: {r:?}"))
            .unwrap_err();
        assert_eq!(err.field, field, "{request} gave {err:?}");
        assert!(!err.message.is_empty());
    }
}

#[test]
fn a_huge_max_output_tokens_that_fits_is_kept() {
    let request =
        decode_request(&obj(json!({"input": "hi", "max_output_tokens": u64::MAX}))).unwrap();
    assert_eq!(request.max_tokens, Some(u64::MAX));
    let big: Map<String, Value> =
        serde_json::from_str(r#"{"input":"hi","max_output_tokens":18446744073709551616}"#).unwrap();
    assert_eq!(decode_request(&big).unwrap_err().field, "max_output_tokens");
}

/// Every value of every fixture, replaced by every kind of garbage: an answer, never a
/// panic.
#[test]
fn garbage_anywhere_never_panics() {
    fn paths(value: &Value, here: Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        out.push(here.clone());
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let mut next = here.clone();
                    next.push(PathStep::Key(key.clone()));
                    paths(v, next, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let mut next = here.clone();
                    next.push(PathStep::Index(i));
                    paths(v, next, out);
                }
            }
            _ => {}
        }
    }
    fn slot<'a>(value: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
        path.iter().fold(value, |v, step| match step {
            PathStep::Key(k) => v.get_mut(k.as_str()).unwrap(),
            PathStep::Index(i) => v.get_mut(*i).unwrap(),
        })
    }
    let garbage = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("data:"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"type": "message"}),
    ];
    let mut decoded = 0;
    for name in [
        "request_simple.json",
        "request_codex.json",
        "request_images.json",
        "request_structured.json",
        "request_builtin_tools.json",
        "request_allowed_tools.json",
    ] {
        let original: Value = serde_json::from_str(&fixture(name)).unwrap();
        let mut all = Vec::new();
        paths(&original, Vec::new(), &mut all);
        for path in all.iter().filter(|p| !p.is_empty()) {
            for junk in &garbage {
                let mut mutated = original.clone();
                *slot(&mut mutated, path) = junk.clone();
                if decode_request(mutated.as_object().unwrap()).is_ok() {
                    decoded += 1;
                }
            }
        }
        // Truncated bodies that still parse as objects (cut after a closing brace).
        let raw = fixture(name);
        for cut in 0..raw.len() {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&raw[..cut]) {
                let _ = decode_request(&map);
            }
        }
    }
    assert!(decoded > 0);
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

// ---------------------------------------------------------------- answers

fn text_response() -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into(),
        model: "gpt-4.1-2025-04-14".into(),
        content: vec![text(
            "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.",
        )],
        stop: StopReason::EndTurn,
        usage: Some(usage(36, 87, 0, 0)),
    }
}

fn tool_call_response() -> ChatResponse {
    ChatResponse {
        id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
        model: "claude-sonnet-4-5-20250929".into(),
        content: vec![
            Part::Thinking {
                text: "The user wants the weather; I should call get_weather.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into()),
            },
            text("Let me check the weather in Paris."),
            call(
                "toolu_01A09q90qw90lq917835lq9",
                "get_weather",
                "{\"location\":\"Paris, France\"}",
            ),
            call("toolu_01B", "get_time", ""),
        ],
        stop: StopReason::ToolUse,
        usage: Some(usage(2095, 503, 1800, 200)),
    }
}

fn incomplete_response() -> ChatResponse {
    ChatResponse {
        id: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b".into(),
        model: "gemini-2.5-pro".into(),
        content: vec![text("The first ten primes are 2, 3, 5")],
        stop: StopReason::MaxTokens,
        usage: None,
    }
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

#[test]
fn answers_encode_as_the_fixtures() {
    assert_eq!(
        encode_response(&text_response()),
        json_fixture("response_text.json")
    );
    assert_eq!(
        encode_response(&tool_call_response()),
        json_fixture("response_tool_call.json")
    );
    assert_eq!(
        encode_response(&incomplete_response()),
        json_fixture("response_incomplete.json")
    );
}

#[test]
fn stop_reasons_map_to_status() {
    for (stop, status, reason) in [
        (StopReason::EndTurn, "completed", Value::Null),
        (StopReason::StopSequence, "completed", Value::Null),
        (StopReason::ToolUse, "completed", Value::Null),
        (
            StopReason::MaxTokens,
            "incomplete",
            json!("max_output_tokens"),
        ),
        (
            StopReason::ContentFilter,
            "incomplete",
            json!("content_filter"),
        ),
    ] {
        let response = encode_response(&ChatResponse {
            stop,
            content: vec![text("x")],
            ..text_response()
        });
        assert_eq!(response["status"], status);
        assert_eq!(response["incomplete_details"]["reason"], reason);
        let item_status = if reason.is_null() {
            "completed"
        } else {
            "incomplete"
        };
        assert_eq!(response["output"][0]["status"], item_status);
    }
}

#[test]
fn created_at_and_ids() {
    let response = encode_response_at(&text_response(), 1_741_476_777);
    assert_eq!(response["created_at"], 1_741_476_777);
    let response = encode_response(&ChatResponse::default());
    assert_eq!(response["id"], "resp_detour");
    assert_eq!(response["output"], json!([]));
    assert_eq!(response["usage"], Value::Null);
    let overflow = encode_response(&ChatResponse {
        usage: Some(usage(u64::MAX, 5, 0, 0)),
        ..text_response()
    });
    assert_eq!(overflow["usage"]["total_tokens"], u64::MAX);
}

/// Reads a `response` object back into canonical form (what a client makes of it).
fn read_response(value: &Value) -> ChatResponse {
    let mut content = Vec::new();
    for item in value["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for part in item["content"].as_array().unwrap() {
                    content.push(text(part["text"].as_str().unwrap()));
                }
            }
            "reasoning" => {
                for part in item["summary"].as_array().unwrap() {
                    content.push(Part::Thinking {
                        text: part["text"].as_str().unwrap().into(),
                        signature: None,
                    });
                }
            }
            "function_call" => content.push(call(
                item["call_id"].as_str().unwrap(),
                item["name"].as_str().unwrap(),
                item["arguments"].as_str().unwrap(),
            )),
            other => panic!("unexpected item {other}"),
        }
    }
    let stop = match (
        value["status"].as_str().unwrap(),
        value["incomplete_details"]["reason"].as_str(),
    ) {
        ("completed", _) if content.iter().any(|p| matches!(p, Part::ToolCall(_))) => {
            StopReason::ToolUse
        }
        ("completed", _) => StopReason::EndTurn,
        ("incomplete", Some("max_output_tokens")) => StopReason::MaxTokens,
        ("incomplete", Some("content_filter")) => StopReason::ContentFilter,
        other => panic!("unexpected status {other:?}"),
    };
    let usage = value["usage"].as_object().map(|u| Usage {
        prompt_tokens: u["input_tokens"].as_u64().unwrap(),
        completion_tokens: u["output_tokens"].as_u64().unwrap(),
        cached_prompt_tokens: u["input_tokens_details"]["cached_tokens"].as_u64().unwrap(),
        cache_write_tokens: u["input_tokens_details"]["cache_write_tokens"]
            .as_u64()
            .unwrap(),
    });
    ChatResponse {
        id: value["id"].as_str().unwrap().into(),
        model: value["model"].as_str().unwrap().into(),
        content,
        stop,
        usage,
    }
}

/// What survives the trip: everything but the thinking signature and an empty argument
/// text (which becomes `{}`), with `resp_` before the id.
fn as_sent(response: &ChatResponse) -> ChatResponse {
    let id = if response.id.starts_with("resp_") {
        response.id.clone()
    } else {
        format!("resp_{}", response.id)
    };
    let content = response
        .content
        .iter()
        .map(|part| match part {
            Part::Thinking { text, .. } => Part::Thinking {
                text: text.clone(),
                signature: None,
            },
            Part::ToolCall(c) if c.arguments.is_empty() => call(&c.id, &c.name, "{}"),
            other => other.clone(),
        })
        .collect();
    ChatResponse {
        id,
        content,
        ..response.clone()
    }
}

#[test]
fn answers_read_back_as_they_were() {
    for response in [text_response(), tool_call_response(), incomplete_response()] {
        assert_eq!(
            read_response(&encode_response(&response)),
            as_sent(&response)
        );
    }
}

// ---------------------------------------------------------------- streams

fn encode_stream(events: &[StreamEvent], complete: bool) -> Vec<u8> {
    let mut encoder = StreamEncoder::new();
    let mut out = Vec::new();
    for event in events {
        encoder.event(event, &mut out);
    }
    encoder.end(complete, &mut out);
    out
}

fn start(id: &str, model: &str) -> StreamEvent {
    StreamEvent::Start {
        id: id.into(),
        model: model.into(),
    }
}

fn text_stream() -> Vec<StreamEvent> {
    vec![
        start("chatcmpl-abc123", "gpt-4.1-mini"),
        StreamEvent::Text {
            index: 0,
            text: "Hello".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: " there!".into(),
        },
        StreamEvent::Finish(StopReason::EndTurn),
        StreamEvent::Usage(usage(12, 3, 0, 0)),
    ]
}

fn tool_stream() -> Vec<StreamEvent> {
    vec![
        start("msg_01ABC", "claude-sonnet-4-5-20250929"),
        StreamEvent::Thinking {
            index: 0,
            text: "The user wants the weather.".into(),
        },
        StreamEvent::Thinking {
            index: 0,
            text: " Call get_weather.".into(),
        },
        StreamEvent::Usage(usage(100, 1, 60, 20)),
        StreamEvent::Text {
            index: 1,
            text: "Checking.".into(),
        },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "toolu_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: "{\"loc".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 2,
            json: "ation\":\"Paris\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 3,
            id: "toolu_2".into(),
            name: "get_time".into(),
        },
        StreamEvent::Finish(StopReason::ToolUse),
        StreamEvent::Usage(usage(100, 40, 60, 20)),
    ]
}

fn max_tokens_stream() -> Vec<StreamEvent> {
    vec![
        start("resp_0f1e2d", "gemini-2.5-flash"),
        StreamEvent::Text {
            index: 0,
            text: "The first ten primes are 2, 3, 5".into(),
        },
        StreamEvent::Usage(usage(9, 16, 0, 0)),
        StreamEvent::Finish(StopReason::MaxTokens),
    ]
}

fn broken_stream() -> Vec<StreamEvent> {
    vec![
        start("chatcmpl-broken", "llama-3.3-70b"),
        StreamEvent::Text {
            index: 0,
            text: "Once upon".into(),
        },
    ]
}

/// The streams and their expected encodings.
fn stream_cases() -> Vec<(&'static str, Vec<StreamEvent>, bool)> {
    vec![
        ("stream_text.sse", text_stream(), true),
        ("stream_tool_calls.sse", tool_stream(), true),
        ("stream_max_tokens.sse", max_tokens_stream(), true),
        ("stream_broken.sse", broken_stream(), false),
    ]
}

fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = parser.push(bytes).unwrap();
    events.extend(parser.finish().unwrap());
    events
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

#[test]
fn streams_encode_as_the_fixtures() {
    for (name, events, complete) in stream_cases() {
        let out = encode_stream(&events, complete);
        if std::env::var_os("DETOUR_WRITE_FIXTURES").is_some() {
            std::fs::write(dir().join(name), &out).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            fixture(name),
            "{name} differs (DETOUR_WRITE_FIXTURES=1 rewrites it)"
        );
    }
}

#[test]
fn stream_fixtures_parse_the_same_cut_anywhere() {
    for (name, _, _) in stream_cases() {
        let bytes = fixture(name).into_bytes();
        let whole = parse_all(&bytes);
        assert!(whole.len() > 3, "{name}");
        for cut in 0..bytes.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&bytes[..cut]).unwrap();
            events.extend(parser.push(&bytes[cut..]).unwrap());
            events.extend(parser.finish().unwrap());
            assert_eq!(events, whole, "{name} cut at {cut}");
        }
    }
}

/// The grammar: event names equal types, sequence numbers count up from 0, created and
/// in_progress open, items are added before their deltas and done after them, one item is
/// open at a time, and exactly one terminal event closes.
#[test]
fn streams_keep_the_responses_grammar() {
    for (name, events, complete) in stream_cases() {
        let sse = parse_all(&encode_stream(&events, complete));
        let mut open: Option<u64> = None;
        let mut added = 0u64;
        for (n, event) in sse.iter().enumerate() {
            let d = data(event);
            let kind = d["type"].as_str().unwrap();
            assert_eq!(event.event.as_deref(), Some(kind), "{name}");
            assert_eq!(d["sequence_number"], n as u64, "{name}");
            match n {
                0 => assert_eq!(kind, "response.created"),
                1 => assert_eq!(kind, "response.in_progress"),
                _ => {}
            }
            if n == sse.len() - 1 {
                let terminal = if !complete {
                    "response.failed"
                } else if name.contains("max_tokens") {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                assert_eq!(kind, terminal, "{name}");
            } else {
                assert!(
                    !matches!(
                        kind,
                        "response.completed" | "response.incomplete" | "response.failed"
                    ),
                    "{name}: {kind} before the end"
                );
            }
            match kind {
                "response.output_item.added" => {
                    assert_eq!(open, None, "{name}: two items open");
                    assert_eq!(d["output_index"], added);
                    open = Some(added);
                    added += 1;
                }
                "response.output_item.done" => {
                    assert_eq!(open, d["output_index"].as_u64(), "{name}");
                    open = None;
                }
                k if k.starts_with("response.") && d.get("output_index").is_some() => {
                    assert_eq!(open, d["output_index"].as_u64(), "{name}: {k}");
                    let item_id = d["item_id"].as_str().unwrap();
                    assert!(
                        ["msg_", "rs_", "fc_"]
                            .iter()
                            .any(|p| item_id.starts_with(p)),
                        "{item_id}"
                    );
                }
                _ => {}
            }
        }
        if complete {
            assert_eq!(open, None, "{name}: an item left open");
        }
    }
}

/// What a client accumulates from the stream equals what the events said, and the final
/// response object is the one `encode_response` makes of the same answer.
#[test]
fn the_final_response_is_the_streamed_answer() {
    for (name, events, complete) in stream_cases() {
        let answer = accumulate(&events);
        let sse = parse_all(&encode_stream(&events, complete));
        let last = data(sse.last().unwrap());
        let response = &last["response"];
        if complete {
            assert_eq!(*response, encode_response(&answer), "{name}");
        } else {
            assert_eq!(response["status"], "failed");
            assert_eq!(response["error"]["code"], "server_error");
            assert_eq!(response["output"][0]["status"], "incomplete");
            assert_eq!(response["output"][0]["content"][0]["text"], "Once upon");
        }
        // The live deltas rebuild the same content.
        let mut live: Vec<(String, String)> = Vec::new(); // (item type, text)
        for event in &sse {
            let d = data(event);
            match d["type"].as_str().unwrap() {
                "response.output_item.added" => {
                    live.push((d["item"]["type"].as_str().unwrap().into(), String::new()))
                }
                "response.output_text.delta"
                | "response.reasoning_summary_text.delta"
                | "response.function_call_arguments.delta" => {
                    let i = d["output_index"].as_u64().unwrap() as usize;
                    live[i].1.push_str(d["delta"].as_str().unwrap());
                }
                "response.output_text.done" | "response.reasoning_summary_text.done" => {
                    let i = d["output_index"].as_u64().unwrap() as usize;
                    assert_eq!(live[i].1, d["text"].as_str().unwrap());
                }
                _ => {}
            }
        }
        let rebuilt: Vec<(String, String)> = answer
            .content
            .iter()
            .map(|part| match part {
                Part::Text(t) => ("message".into(), t.clone()),
                Part::Thinking { text, .. } => ("reasoning".into(), text.clone()),
                Part::ToolCall(c) => ("function_call".into(), c.arguments.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(live, rebuilt, "{name}");
    }
}

/// The canonical answer a stream of events describes.
fn accumulate(events: &[StreamEvent]) -> ChatResponse {
    let mut response = ChatResponse::default();
    let mut blocks: Vec<usize> = Vec::new();
    for event in events {
        match event {
            StreamEvent::Start { id, model } => {
                response.id = id.clone();
                response.model = model.clone();
            }
            StreamEvent::Text { index, text: t } | StreamEvent::Thinking { index, text: t } => {
                match blocks.iter().position(|b| b == index) {
                    Some(i) => match &mut response.content[i] {
                        Part::Text(s) | Part::Thinking { text: s, .. } => s.push_str(t),
                        _ => {}
                    },
                    None => {
                        blocks.push(*index);
                        response.content.push(match event {
                            StreamEvent::Text { .. } => text(t),
                            _ => Part::Thinking {
                                text: t.clone(),
                                signature: None,
                            },
                        });
                    }
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                blocks.push(*index);
                response.content.push(call(id, name, ""));
            }
            StreamEvent::ToolCallArgs { index, json } => {
                let i = blocks.iter().position(|b| b == index).unwrap();
                if let Part::ToolCall(c) = &mut response.content[i] {
                    c.arguments.push_str(json);
                }
            }
            StreamEvent::Finish(stop) => response.stop = *stop,
            StreamEvent::Usage(u) => response.usage = Some(*u),
        }
    }
    response
}

#[test]
fn tool_call_argument_deltas_stream_and_usage_counts_cache() {
    let sse = parse_all(&encode_stream(&tool_stream(), true));
    let deltas: Vec<String> = sse
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.function_call_arguments.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, ["{\"loc", "ation\":\"Paris\"}"]);
    let dones: Vec<Value> = sse
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.function_call_arguments.done")
        .map(|d| d["arguments"].clone())
        .collect();
    assert_eq!(dones, [json!("{\"location\":\"Paris\"}"), json!("{}")]);
    let last = data(sse.last().unwrap());
    assert_eq!(
        last["response"]["usage"],
        json!({
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 20},
            "output_tokens": 40,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 140
        })
    );
    let added: Vec<Value> = sse
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.output_item.added")
        .map(|d| d["item"].clone())
        .collect();
    assert_eq!(added[2]["call_id"], "toolu_1");
    assert_eq!(added[2]["name"], "get_weather");
    assert_eq!(added[2]["status"], "in_progress");
    assert_eq!(added[0]["type"], "reasoning");
}

#[test]
fn a_stream_without_start_still_opens_properly() {
    let out = encode_stream(
        &[StreamEvent::Text {
            index: 0,
            text: "hi".into(),
        }],
        true,
    );
    let sse = parse_all(&out);
    let first = data(&sse[0]);
    assert_eq!(first["type"], "response.created");
    assert_eq!(first["response"]["id"], "resp_detour");
    assert_eq!(first["response"]["status"], "in_progress");
    assert_eq!(data(sse.last().unwrap())["type"], "response.completed");
    // A stream with nothing at all, broken: created, in_progress, failed.
    let sse = parse_all(&encode_stream(&[], false));
    let kinds: Vec<String> = sse.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
}

#[test]
fn nothing_is_written_after_the_end_and_start_counts_once() {
    let mut encoder = StreamEncoder::new().with_created_at(1_700_000_000);
    let mut out = Vec::new();
    encoder.event(&start("a", "m"), &mut out);
    encoder.event(&start("b", "n"), &mut out);
    encoder.end(true, &mut out);
    let len = out.len();
    encoder.event(
        &StreamEvent::Text {
            index: 0,
            text: "late".into(),
        },
        &mut out,
    );
    encoder.end(false, &mut out);
    assert_eq!(out.len(), len);
    let sse = parse_all(&out);
    assert_eq!(sse.len(), 3);
    let last = data(&sse[2]);
    assert_eq!(last["response"]["id"], "resp_a");
    assert_eq!(last["response"]["model"], "m");
    assert_eq!(last["response"]["created_at"], 1_700_000_000);
}

#[test]
fn interleaved_and_stray_deltas_keep_the_grammar() {
    let events = vec![
        start("x", "m"),
        StreamEvent::Text {
            index: 0,
            text: "a".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "c".into(),
            name: "f".into(),
        },
        // Late text for the closed block 0: in the final answer, not in live events.
        StreamEvent::Text {
            index: 0,
            text: "b".into(),
        },
        // Arguments for a call that never started, text for a tool block: ignored.
        StreamEvent::ToolCallArgs {
            index: 9,
            json: "{}".into(),
        },
        StreamEvent::Text {
            index: 1,
            text: "zzz".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "again".into(),
            name: "g".into(),
        },
        StreamEvent::Finish(StopReason::ToolUse),
    ];
    let sse = parse_all(&encode_stream(&events, true));
    let last = data(sse.last().unwrap());
    assert_eq!(last["type"], "response.completed");
    let output = &last["response"]["output"];
    assert_eq!(output[0]["content"][0]["text"], "ab");
    assert_eq!(output[1]["call_id"], "c");
    assert_eq!(output[1]["arguments"], "{}");
    assert_eq!(output.as_array().unwrap().len(), 2);
    let text_deltas = sse
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.output_text.delta")
        .count();
    assert_eq!(text_deltas, 1);
}

#[test]
fn a_content_filter_stop_is_incomplete() {
    let events = vec![
        start("x", "m"),
        StreamEvent::Text {
            index: 0,
            text: "I".into(),
        },
        StreamEvent::Finish(StopReason::ContentFilter),
    ];
    let sse = parse_all(&encode_stream(&events, true));
    let last = data(sse.last().unwrap());
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "content_filter"
    );
    let item_done = sse
        .iter()
        .map(data)
        .find(|d| d["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(item_done["item"]["status"], "incomplete");
}

/// Runs `sdk_check.py` with the repository's virtualenv when it exists: the official
/// `openai` SDK must parse every response and stream fixture.
#[test]
fn the_openai_sdk_parses_the_fixtures() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no {}", python.display());
        return;
    }
    let output = std::process::Command::new(python)
        .arg(dir().join("sdk_check.py"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sdk_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
