//! The Gemini codec (provider side) against hand-written fixtures from Google's API
//! reference: request bodies, answers, streams cut at every byte, errors, and bad input.

#![cfg(test)]

mod common;

use detour_core::protocol::gemini::{self, StreamDecoder, SKIP_THOUGHT_SIGNATURE};
use detour_core::protocol::sse::{SseEvent, SseParser};
use detour_core::protocol::{
    ChatRequest, ChatResponse, Image, Message, Part, ProviderError, Reasoning, ResponseFormat,
    StopReason, StreamEvent, Tool, ToolChoice,
};
use detour_core::usage::Usage;
use serde_json::{json, Value};

use common::canon::{assistant, call, fixture_bytes, result, text, user};

fn fixture(name: &str) -> Vec<u8> {
    fixture_bytes("gemini", name)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn simple(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        messages,
        ..ChatRequest::default()
    }
}

fn hello() -> ChatRequest {
    simple(vec![user(vec![text("Hi")])])
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: 0,
    }
}

fn unsupported(request: &ChatRequest) -> String {
    match gemini::encode_request(request) {
        Err(e) => e.0,
        Ok(body) => panic!("expected Unsupported, got {body}"),
    }
}

/// Runs a whole stream through the SSE parser (chunks as given) and the decoder.
fn decode_stream(chunks: &[&[u8]]) -> (Vec<StreamEvent>, Result<(), String>) {
    let mut parser = SseParser::new();
    let mut decoder = StreamDecoder::new();
    let mut out = Vec::new();
    let mut events: Vec<SseEvent> = Vec::new();
    for chunk in chunks {
        events.extend(parser.push(chunk).unwrap());
    }
    events.extend(parser.finish().unwrap());
    for event in &events {
        match decoder.event(event) {
            Ok(more) => out.extend(more),
            Err(e) => return (out, Err(e.0)),
        }
    }
    match decoder.end() {
        Ok(more) => {
            out.extend(more);
            (out, Ok(()))
        }
        Err(e) => (out, Err(e.0)),
    }
}

/// A stream's events gathered into a whole answer, the way a client would see it.
fn assemble(events: &[StreamEvent]) -> ChatResponse {
    let mut answer = ChatResponse::default();
    let mut blocks: Vec<(usize, Part)> = Vec::new();
    fn block(
        blocks: &mut Vec<(usize, Part)>,
        index: usize,
        make: impl FnOnce() -> Part,
    ) -> &mut Part {
        if let Some(position) = blocks.iter().position(|(i, _)| *i == index) {
            return &mut blocks[position].1;
        }
        blocks.push((index, make()));
        &mut blocks.last_mut().unwrap().1
    }
    for event in events {
        match event {
            StreamEvent::Start { id, model } => {
                answer.id = id.clone();
                answer.model = model.clone();
            }
            StreamEvent::Text { index, text: t } => match block(&mut blocks, *index, || text("")) {
                Part::Text(s) => s.push_str(t),
                other => panic!("text for {other:?}"),
            },
            StreamEvent::Thinking { index, text: t } => {
                match block(&mut blocks, *index, || Part::Thinking {
                    text: String::new(),
                    signature: None,
                }) {
                    Part::Thinking { text, .. } => text.push_str(t),
                    other => panic!("thinking for {other:?}"),
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                assert!(
                    blocks.iter().all(|(i, _)| i != index),
                    "block {index} reused"
                );
                blocks.push((*index, call(id, name, "")));
            }
            StreamEvent::ToolCallArgs { index, json } => {
                match block(&mut blocks, *index, || panic!("args before start")) {
                    Part::ToolCall(c) => c.arguments.push_str(json),
                    other => panic!("args for {other:?}"),
                }
            }
            StreamEvent::Finish(stop) => answer.stop = *stop,
            StreamEvent::Usage(u) => answer.usage = Some(*u),
        }
    }
    // Canonical indices: 0, 1, 2, … in order of first appearance.
    for (position, (index, _)) in blocks.iter().enumerate() {
        assert_eq!(*index, position, "block indices must be dense and ordered");
    }
    answer.content = blocks.into_iter().map(|(_, part)| part).collect();
    answer
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

#[test]
fn basic_request_matches_fixture() {
    let request = ChatRequest {
        system: vec![
            "You are a poet.".into(),
            String::new(),
            "Answer briefly.".into(),
        ],
        messages: vec![
            user(vec![text("Hello.")]),
            user(vec![text("Are you there?"), text("")]),
            assistant(vec![text("Yes. How can I help?")]),
            user(vec![text("Write a haiku about the sea.")]),
        ],
        max_tokens: Some(256),
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(40),
        stop: vec!["END".into(), "\n\n\n".into()],
        stream: true,
        user: Some("end-user-7".into()),
        ..ChatRequest::default()
    };
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(body, fixture_json("request_basic.json"));
}

fn tools_request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            user(vec![
                text("What is the weather in Paris and in Lyon? Here is a map."),
                Part::Image(Image::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".into(),
                }),
            ]),
            assistant(vec![
                Part::Thinking {
                    text: "Two lookups.".into(),
                    signature: Some("EqQBCkYIARgCKkA".into()),
                },
                text("Let me look both up."),
                call("call_1", "get_weather", r#"{"city":"Paris","unit":"celsius"}"#),
                call("call_2", "get_weather", r#"{ "city": "Lyon" }"#),
            ]),
            user(vec![
                result(
                    "call_1",
                    None,
                    vec![text(r#"{"temperature": 18, "sky": "cloudy"}"#)],
                    false,
                ),
                result("call_2", Some("get_weather"), vec![text("station offline")], true),
            ]),
            assistant(vec![call("toolu_9", "get_radar", "")]),
            user(vec![result(
                "toolu_9",
                None,
                vec![
                    text("radar image follows"),
                    Part::Image(Image::Url("data:image/jpeg;base64,/9j/4AAQSkZJRg==".into())),
                ],
                false,
            )]),
            // Only thinking: skipped, so the user turns around it merge.
            assistant(vec![Part::Thinking {
                text: "Waiting.".into(),
                signature: None,
            }]),
            user(vec![text("Thanks. Summarize.")]),
        ],
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Current weather for a city.".into()),
                parameters: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["city"],
                    "additionalProperties": false
                }),
            },
            Tool {
                name: "get_radar".into(),
                description: Some("The latest radar image.".into()),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ],
        tool_choice: Some(ToolChoice::Named("get_weather".into())),
        parallel_tool_calls: Some(false),
        ..ChatRequest::default()
    }
}

#[test]
fn tools_request_matches_fixture() {
    let body = gemini::encode_request(&tools_request()).unwrap();
    assert_eq!(body, fixture_json("request_tools.json"));
}

#[test]
fn structured_request_matches_fixture() {
    let request = ChatRequest {
        messages: vec![user(vec![text("List three primes as JSON.")])],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "primes".into(),
            schema: json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"primes": {"type": "array", "items": {"type": "integer"}}},
                "required": ["primes"],
                "additionalProperties": false
            }),
            strict: Some(true),
        }),
        reasoning: Some(Reasoning {
            budget_tokens: Some(2048),
            effort: None,
        }),
        ..ChatRequest::default()
    };
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(body, fixture_json("request_structured.json"));
}

#[test]
fn plain_json_output_sets_only_the_mime_type() {
    let mut request = hello();
    request.response_format = Some(ResponseFormat::Json);
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(
        body["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

#[test]
fn minimal_request_has_no_optional_sections() {
    let body = gemini::encode_request(&hello()).unwrap();
    assert_eq!(
        body,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    );
}

#[test]
fn tool_choice_modes() {
    let tool = Tool {
        name: "lookup".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    };
    let with = |choice: ToolChoice| {
        let mut request = hello();
        request.tools = vec![tool.clone()];
        request.tool_choice = Some(choice);
        gemini::encode_request(&request).unwrap()["toolConfig"].clone()
    };
    assert_eq!(
        with(ToolChoice::Auto),
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );
    assert_eq!(
        with(ToolChoice::None),
        json!({"functionCallingConfig": {"mode": "NONE"}})
    );
    assert_eq!(
        with(ToolChoice::Required),
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        with(ToolChoice::Named("lookup".into())),
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
    );
    // No description: no key; parameters kept.
    let mut request = hello();
    request.tools = vec![tool];
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [{
            "name": "lookup",
            "parametersJsonSchema": {"type": "object", "properties": {"q": {"type": "string"}}}
        }]}])
    );
    assert!(body.get("toolConfig").is_none());
    // Auto / None without tools: nothing to configure.
    let mut request = hello();
    request.tool_choice = Some(ToolChoice::None);
    assert!(gemini::encode_request(&request)
        .unwrap()
        .get("toolConfig")
        .is_none());
}

#[test]
fn tool_parameters_without_properties_are_omitted() {
    for parameters in [
        Value::Null,
        json!({}),
        json!({"type": "object"}),
        json!({"type": "object", "properties": {}, "required": []}),
    ] {
        let mut request = hello();
        request.tools = vec![Tool {
            name: "now".into(),
            description: Some("The time.".into()),
            parameters: parameters.clone(),
        }];
        let body = gemini::encode_request(&request).unwrap();
        assert_eq!(
            body["tools"][0]["functionDeclarations"][0],
            json!({"name": "now", "description": "The time."}),
            "{parameters}"
        );
    }
}

#[test]
fn reasoning_maps_to_thinking_budgets() {
    let thinking = |budget: Option<u64>, effort: Option<&str>| {
        let mut request = hello();
        request.reasoning = Some(Reasoning {
            budget_tokens: budget,
            effort: effort.map(str::to_string),
        });
        gemini::encode_request(&request).unwrap()["generationConfig"]["thinkingConfig"].clone()
    };
    assert_eq!(
        thinking(Some(10_000), None),
        json!({"includeThoughts": true, "thinkingBudget": 10_000})
    );
    assert_eq!(
        thinking(Some(1_000_000), Some("low")),
        json!({"includeThoughts": true, "thinkingBudget": 32_768})
    );
    assert_eq!(thinking(Some(0), None), json!({"thinkingBudget": 0}));
    assert_eq!(thinking(None, None), json!({"includeThoughts": true}));
    for (effort, budget) in [
        ("minimal", 512),
        ("low", 1024),
        ("medium", 8192),
        ("high", 24_576),
        ("xhigh", 32_768),
    ] {
        assert_eq!(
            thinking(None, Some(effort)),
            json!({"includeThoughts": true, "thinkingBudget": budget}),
            "{effort}"
        );
    }
    assert_eq!(thinking(None, Some("none")), Value::Null);
    let mut request = hello();
    request.reasoning = Some(Reasoning {
        budget_tokens: None,
        effort: Some("extreme".into()),
    });
    assert!(unsupported(&request).contains("extreme"));
}

#[test]
fn huge_caps_are_clamped_to_int32() {
    let mut request = hello();
    request.max_tokens = Some(u64::MAX);
    request.top_k = Some(u64::MAX);
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(body["generationConfig"]["maxOutputTokens"], json!(i32::MAX));
    assert_eq!(body["generationConfig"]["topK"], json!(i32::MAX));
}

#[test]
fn each_model_turn_signs_only_its_first_call() {
    let request = simple(vec![
        user(vec![text("go")]),
        assistant(vec![
            text("calling"),
            call("a", "f", "{}"),
            call("b", "f", "{}"),
        ]),
        user(vec![result("a", None, vec![text("1")], false)]),
        user(vec![result("b", None, vec![text("2")], false)]),
        assistant(vec![call("c", "g", r#"{"x":[1,2]}"#)]),
    ]);
    let body = gemini::encode_request(&request).unwrap();
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 4, "the two result turns merge");
    let model = &contents[1]["parts"];
    assert!(model[0].get("thoughtSignature").is_none());
    assert_eq!(model[1]["thoughtSignature"], json!(SKIP_THOUGHT_SIGNATURE));
    assert!(model[2].get("thoughtSignature").is_none());
    assert_eq!(contents[2]["parts"].as_array().unwrap().len(), 2);
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"]["name"],
        json!("f")
    );
    assert_eq!(
        contents[2]["parts"][1]["functionResponse"]["response"],
        json!({"content": "2"}),
        "a JSON number is not an object: wrapped"
    );
    assert_eq!(
        contents[3]["parts"][0],
        json!({"functionCall": {"name": "g", "args": {"x": [1, 2]}}, "thoughtSignature": SKIP_THOUGHT_SIGNATURE})
    );
    // Text and no calls: no signature anywhere.
    let body = gemini::encode_request(&simple(vec![
        user(vec![text("a")]),
        assistant(vec![text("b")]),
        user(vec![text("c")]),
    ]))
    .unwrap();
    assert!(!body.to_string().contains("thoughtSignature"));
}

#[test]
fn tool_results_by_their_own_name_and_multi_text() {
    let request = simple(vec![
        user(vec![text("go")]),
        user(vec![result(
            "unknown-id",
            Some("search"),
            vec![text("line one"), text("line two")],
            false,
        )]),
    ]);
    let body = gemini::encode_request(&request).unwrap();
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"functionResponse": {"name": "search", "response": {"content": "line one\nline two"}}})
    );
}

#[test]
fn unsupported_requests() {
    // An image by URL.
    let request = simple(vec![user(vec![Part::Image(Image::Url(
        "https://example.com/cat.png".into(),
    ))])]);
    let why = unsupported(&request);
    assert!(why.starts_with("messages[0].content[0]"), "{why}");
    assert!(why.contains("URL"), "{why}");
    // …also inside a tool result.
    let request = simple(vec![
        assistant(vec![call("a", "f", "{}")]),
        user(vec![result(
            "a",
            None,
            vec![Part::Image(Image::Url("http://example.com/x.jpg".into()))],
            false,
        )]),
    ]);
    assert!(unsupported(&request).contains("messages[1].content[0].content[0]"));
    // Arguments that are not a JSON object.
    for arguments in ["{\"city\":", "[1,2]", "\"text\"", "null"] {
        let request = simple(vec![
            user(vec![text("x")]),
            assistant(vec![call("a", "f", arguments)]),
        ]);
        let why = unsupported(&request);
        assert!(
            why.starts_with("messages[1].content[0]"),
            "{arguments}: {why}"
        );
    }
    // A result whose call (and so its tool's name) is unknown.
    let request = simple(vec![user(vec![result(
        "lost",
        None,
        vec![text("1")],
        false,
    )])]);
    assert!(unsupported(&request).contains("lost"));
    // More than five stop sequences.
    let mut request = hello();
    request.stop = (0..6).map(|i| format!("s{i}")).collect();
    assert!(unsupported(&request).contains("at most 5"));
    request.stop.pop();
    assert!(gemini::encode_request(&request).is_ok());
    // Tool names Gemini refuses.
    for name in ["", "has space", "emoji🙂", &"x".repeat(65)] {
        let mut request = hello();
        request.tools = vec![Tool {
            name: name.to_string(),
            description: None,
            parameters: Value::Null,
        }];
        assert!(
            unsupported(&request).starts_with("tools[0].name"),
            "{name:?}"
        );
    }
    // Schemas that are not object schemas.
    for parameters in [json!("string"), json!([1]), json!({"type": "string"})] {
        let mut request = hello();
        request.tools = vec![Tool {
            name: "f".into(),
            description: None,
            parameters: parameters.clone(),
        }];
        assert!(
            unsupported(&request).starts_with("tools[0].parameters"),
            "{parameters}"
        );
    }
    let mut request = hello();
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "x".into(),
        schema: json!(true),
        strict: None,
    });
    assert!(unsupported(&request).contains("response_format"));
    // Tool choices that need tools.
    let mut request = hello();
    request.tool_choice = Some(ToolChoice::Required);
    unsupported(&request);
    request.tool_choice = Some(ToolChoice::Named("f".into()));
    unsupported(&request);
    request.tools = vec![Tool {
        name: "g".into(),
        description: None,
        parameters: Value::Null,
    }];
    assert!(unsupported(&request).contains("\"f\""));
    // Roles the parts cannot have.
    unsupported(&simple(vec![user(vec![call("a", "f", "{}")])]));
    unsupported(&simple(vec![assistant(vec![result(
        "a",
        Some("f"),
        vec![],
        false,
    )])]));
    // Nothing left to send.
    unsupported(&simple(vec![assistant(vec![Part::Thinking {
        text: "hmm".into(),
        signature: None,
    }])]));
    unsupported(&simple(vec![]));
    // Features only the client's protocol has.
    let mut request = hello();
    request.untranslatable = vec!["content part of type input_audio".into()];
    assert!(unsupported(&request).contains("input_audio"));
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

#[test]
fn text_answer() {
    let answer = gemini::decode_response(&fixture("response_text.json")).unwrap();
    assert_eq!(
        answer,
        ChatResponse {
            id: "mXnTaPqXBYeZ1dkPxKGw4Ag".into(),
            model: "gemini-2.5-flash".into(),
            content: vec![text(
                "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."
            )],
            stop: StopReason::EndTurn,
            usage: Some(usage(21, 19, 0)),
        }
    );
}

#[test]
fn thinking_answer_counts_thoughts_as_output() {
    let answer = gemini::decode_response(&fixture("response_thinking.json")).unwrap();
    assert_eq!(answer.model, "gemini-3-pro-preview");
    assert_eq!(
        answer.content,
        vec![
            Part::Thinking {
                text: "**Checking the arithmetic**\n\n17 times 3 is 51, plus 4 is 55.".into(),
                signature: None,
            },
            text("The answer is 55."),
        ]
    );
    assert_eq!(answer.stop, StopReason::EndTurn);
    assert_eq!(answer.usage, Some(usage(14, 6 + 132, 0)));
}

#[test]
fn tool_call_answer_gets_unique_synthesized_ids() {
    let answer = gemini::decode_response(&fixture("response_tool_calls.json")).unwrap();
    assert_eq!(answer.stop, StopReason::ToolUse);
    assert_eq!(
        answer.content,
        vec![
            text("Let me look both up."),
            call("call_Zk9taBc_0", "get_weather", r#"{"city":"Paris"}"#),
            call("call_Zk9taBc_1", "get_weather", r#"{"city":"Lyon"}"#),
        ]
    );
    // Provider ids win; missing args are an empty object.
    let answer = gemini::decode_response(&fixture("response_tool_call_id.json")).unwrap();
    assert_eq!(answer.content, vec![call("fc_8d2a", "get_radar", "{}")]);
    assert_eq!(answer.stop, StopReason::ToolUse);
    assert_eq!(answer.usage, None);
    // Without a responseId: call_<n>.
    let body = json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {"a": {"b": [1, "two", null]}}}}
    ]}}]});
    let answer = gemini::decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        answer.content,
        vec![call("call_0", "f", r#"{"a":{"b":[1,"two",null]}}"#)]
    );
    assert_eq!(
        answer.stop,
        StopReason::ToolUse,
        "no finishReason, but calls"
    );
    assert_eq!(answer.id, "");
}

#[test]
fn stop_reasons_from_fixtures_and_each_reason() {
    let answer = gemini::decode_response(&fixture("response_max_tokens.json")).unwrap();
    assert_eq!(answer.stop, StopReason::MaxTokens);
    assert_eq!(answer.usage, Some(usage(9, 10, 0)));
    let answer = gemini::decode_response(&fixture("response_safety.json")).unwrap();
    assert_eq!(answer.stop, StopReason::ContentFilter);
    assert!(answer.content.is_empty());
    assert_eq!(answer.usage, Some(usage(17, 0, 0)));
    let answer = gemini::decode_response(&fixture("response_prompt_blocked.json")).unwrap();
    assert_eq!(answer.stop, StopReason::ContentFilter);
    assert!(answer.content.is_empty());
    assert_eq!(answer.id, "pb-1");
    assert_eq!(answer.usage, Some(usage(31, 0, 0)));

    for (reason, want) in [
        ("STOP", StopReason::EndTurn),
        ("MAX_TOKENS", StopReason::MaxTokens),
        ("SAFETY", StopReason::ContentFilter),
        ("RECITATION", StopReason::ContentFilter),
        ("BLOCKLIST", StopReason::ContentFilter),
        ("PROHIBITED_CONTENT", StopReason::ContentFilter),
        ("SPII", StopReason::ContentFilter),
        ("IMAGE_SAFETY", StopReason::ContentFilter),
        ("LANGUAGE", StopReason::EndTurn),
        ("OTHER", StopReason::EndTurn),
        ("MALFORMED_FUNCTION_CALL", StopReason::EndTurn),
        ("FINISH_REASON_UNSPECIFIED", StopReason::EndTurn),
        ("SOMETHING_NEW", StopReason::EndTurn),
    ] {
        let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
        let answer = gemini::decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(answer.stop, want, "{reason}");
    }
}

#[test]
fn usage_maps_cache_reads_and_tool_prompts() {
    let answer = gemini::decode_response(&fixture("response_cached.json")).unwrap();
    // prompt 12000 (cached 11000 included) + 300 tool-use prompt; 7 + 50 thoughts out.
    assert_eq!(answer.usage, Some(usage(12_300, 57, 11_000)));
    // Whole floats are counts; cached never exceeds the prompt.
    let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}],
        "usageMetadata": {"promptTokenCount": 10.0, "cachedContentTokenCount": 50}});
    let answer = gemini::decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(answer.usage, Some(usage(10, 0, 10)));
}

#[test]
fn metadata_only_parts_and_empty_text_are_skipped() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": ""},
        {"thoughtSignature": "abc"},
        {"text": "", "thought": true},
        {"text": "ok"}
    ]}, "finishReason": "STOP"}]});
    let answer = gemini::decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(answer.content, vec![text("ok")]);
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"\xff\xfe".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        br#"{}"#.to_vec(),
        br#"{"candidates": []}"#.to_vec(),
        br#"{"candidates": {}}"#.to_vec(),
        br#"{"candidates": [1]}"#.to_vec(),
        br#"{"candidates": [{"content": []}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": {}}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [7]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"text": 7}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"text": "a", "thought": "yes"}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"functionCall": "f"}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": 3}}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}}]}"#.to_vec(),
        br#"{"candidates": [{"content": {"parts": [{"executableCode": {"language": "PYTHON", "code": "1"}}]}}]}"#.to_vec(),
        br#"{"candidates": [{"finishReason": 1}]}"#.to_vec(),
        br#"{"candidates": [{}], "responseId": 5}"#.to_vec(),
        br#"{"candidates": [{}], "modelVersion": ["x"]}"#.to_vec(),
        br#"{"promptFeedback": {}}"#.to_vec(),
        br#"{"promptFeedback": {"blockReason": 2}}"#.to_vec(),
        br#"{"promptFeedback": "SAFETY"}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": []}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"promptTokenCount": -1}}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"promptTokenCount": 1.5}}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"candidatesTokenCount": "9"}}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"thoughtsTokenCount": 1e300}}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"promptTokenCount": 18446744073709551615}}"#.to_vec(),
        br#"{"candidates": [{}], "usageMetadata": {"promptTokenCount": 999999999999999999999999}}"#.to_vec(),
    ];
    for body in &cases {
        assert!(
            gemini::decode_response(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A candidate with nothing in it is an (empty) answer, not an error.
    let answer = gemini::decode_response(br#"{"candidates": [{}]}"#).unwrap();
    assert_eq!(answer.content, vec![]);
    assert_eq!(answer.stop, StopReason::EndTurn);
}

#[test]
fn every_truncation_of_every_answer_is_an_error() {
    for name in [
        "response_text.json",
        "response_thinking.json",
        "response_tool_calls.json",
        "response_cached.json",
        "response_prompt_blocked.json",
    ] {
        let body = fixture(name);
        assert!(gemini::decode_response(&body).is_ok(), "{name}");
        let end = body.iter().rposition(|b| *b == b'}').unwrap();
        for cut in 0..end {
            assert!(
                gemini::decode_response(&body[..cut]).is_err(),
                "{name} cut at {cut}"
            );
        }
    }
}

#[test]
fn deeply_nested_args_do_not_overflow_the_stack() {
    let depth = 100_000;
    let body = format!(
        r#"{{"candidates": [{{"content": {{"parts": [{{"functionCall": {{"name": "f", "args": {{"a": {}{}}}}}}}]}}}}]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(gemini::decode_response(body.as_bytes()).is_err());
}

// ---------------------------------------------------------------------------------------
// History round trip: what Gemini answered goes back to Gemini unchanged in meaning
// ---------------------------------------------------------------------------------------

#[test]
fn an_answer_replayed_as_history_encodes_to_the_same_calls() {
    let answer = gemini::decode_response(&fixture("response_tool_calls.json")).unwrap();
    let original = fixture_json("response_tool_calls.json");
    let results: Vec<Part> = answer
        .content
        .iter()
        .filter_map(|part| match part {
            Part::ToolCall(c) => Some(result(&c.id, None, vec![text(r#"{"ok": true}"#)], false)),
            _ => None,
        })
        .collect();
    let request = simple(vec![
        user(vec![text("Weather in Paris and Lyon?")]),
        assistant(answer.content.clone()),
        user(results),
    ]);
    let body = gemini::encode_request(&request).unwrap();
    let model = body["contents"][1]["parts"].as_array().unwrap();
    let sent = original["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(model.len(), sent.len());
    for (ours, theirs) in model.iter().zip(sent) {
        assert_eq!(ours.get("text"), theirs.get("text"));
        assert_eq!(ours.get("functionCall"), theirs.get("functionCall"));
    }
    // The Gemini signature was not kept: the documented dummy stands in for it.
    assert_eq!(model[1]["thoughtSignature"], json!(SKIP_THOUGHT_SIGNATURE));
    let responses = body["contents"][2]["parts"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    for response in responses {
        assert_eq!(
            response["functionResponse"],
            json!({"name": "get_weather", "response": {"ok": true}})
        );
    }
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// The stream fixture decoded whole, then cut in two at every byte, and one byte at a
/// time: the canonical events never change.
fn stream_events_any_cut(name: &str) -> (Vec<StreamEvent>, Result<(), String>) {
    let bytes = fixture(name);
    let whole = decode_stream(&[&bytes]);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(decode_stream(&[a, b]), whole, "{name} cut at {cut}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_stream(&singles), whole, "{name} byte by byte");
    whole
}

#[test]
fn text_stream() {
    let (events, end) = stream_events_any_cut("stream_text.sse");
    assert_eq!(end, Ok(()));
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "st-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::Text {
                index: 0,
                text: "The".into()
            },
            StreamEvent::Usage(usage(5, 1, 0)),
            StreamEvent::Text {
                index: 0,
                text: " answer".into()
            },
            StreamEvent::Usage(usage(5, 3, 0)),
            StreamEvent::Text {
                index: 0,
                text: " is 4.".into()
            },
            StreamEvent::Finish(StopReason::EndTurn),
            StreamEvent::Usage(usage(5, 6, 0)),
        ]
    );
}

#[test]
fn thinking_and_tool_call_stream() {
    let (events, end) = stream_events_any_cut("stream_thinking_tools.sse");
    assert_eq!(end, Ok(()));
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "tt-9".into(),
                model: "gemini-3-pro-preview".into()
            },
            StreamEvent::Thinking {
                index: 0,
                text: "**Planning**\nTwo cities,".into()
            },
            StreamEvent::Usage(usage(120, 0, 0)),
            StreamEvent::Thinking {
                index: 0,
                text: " two calls.".into()
            },
            StreamEvent::Usage(usage(120, 40, 0)),
            StreamEvent::Text {
                index: 1,
                text: "Checking both.".into()
            },
            StreamEvent::Usage(usage(120, 43, 0)),
            StreamEvent::ToolCallStart {
                index: 2,
                id: "call_tt-9_0".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 2,
                json: r#"{"city":"Paris"}"#.into()
            },
            StreamEvent::ToolCallStart {
                index: 3,
                id: "call_tt-9_1".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 3,
                json: r#"{"city":"Lyon"}"#.into()
            },
            StreamEvent::Usage(usage(120, 65, 0)),
            StreamEvent::Text {
                index: 4,
                text: "Then I will compare.".into()
            },
            StreamEvent::Usage(usage(120, 70, 0)),
            StreamEvent::Finish(StopReason::ToolUse),
            StreamEvent::Usage(usage(120, 70, 64)),
        ]
    );
}

#[test]
fn streams_assemble_to_the_same_answer_as_the_whole_response() {
    for (stream, whole) in [
        ("stream_thinking_tools.sse", "response_thinking_tools.json"),
        ("stream_max_tokens.sse", "response_max_tokens.json"),
    ] {
        let (events, end) = decode_stream(&[&fixture(stream)]);
        assert_eq!(end, Ok(()), "{stream}");
        let answer = gemini::decode_response(&fixture(whole)).unwrap();
        assert_eq!(assemble(&events), answer, "{stream} vs {whole}");
    }
}

#[test]
fn blocked_prompt_stream_finishes_with_content_filter() {
    let (events, end) = stream_events_any_cut("stream_blocked.sse");
    assert_eq!(end, Ok(()));
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "bl-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::Finish(StopReason::ContentFilter),
            StreamEvent::Usage(usage(12, 0, 0)),
        ]
    );
}

#[test]
fn a_stream_without_finish_reason_is_malformed() {
    let (events, end) = stream_events_any_cut("stream_truncated.sse");
    assert!(end.is_err());
    assert_eq!(
        assemble(&events).content,
        vec![text("Once upon a time")],
        "what came is still delivered in order"
    );
    // Nothing at all.
    let (events, end) = decode_stream(&[b""]);
    assert!(events.is_empty());
    assert!(end.is_err());
    // The finishing chunk cut off mid-JSON: the SSE parser hands over the partial event
    // at end of stream, and it does not parse.
    let bytes = fixture("stream_text.sse");
    let (_, end) = decode_stream(&[&bytes[..bytes.len() - 20]]);
    assert!(end.is_err());
}

#[test]
fn an_error_chunk_is_malformed() {
    let (events, end) = decode_stream(&[&fixture("stream_error.sse")]);
    let why = end.unwrap_err();
    assert!(why.contains("INTERNAL"), "{why}");
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "er-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::Text {
                index: 0,
                text: "Partial".into()
            },
        ]
    );
}

#[test]
fn garbage_stream_events_are_errors_not_panics() {
    for data in [
        "not json",
        "[1,2]",
        "\"text\"",
        r#"{"candidates": [{"content": {"parts": [{"text": 5}]}}]}"#,
        r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": "x"}}]}}]}"#,
        r#"{"candidates": [{"content": {"parts": [{"fileData": {"fileUri": "gs://b/o"}}]}}]}"#,
        r#"{"candidates": "x"}"#,
        r#"{"usageMetadata": {"promptTokenCount": -5}}"#,
        r#"{"error": "boom"}"#,
    ] {
        let mut decoder = StreamDecoder::new();
        let event = SseEvent {
            event: None,
            data: data.to_string(),
        };
        assert!(decoder.event(&event).is_err(), "{data}");
    }
    // Empty data (a keep-alive) is nothing, not an error.
    let mut decoder = StreamDecoder::new();
    let empty = SseEvent::default();
    assert_eq!(decoder.event(&empty), Ok(vec![]));
}

#[test]
fn only_the_first_finish_counts_and_usage_repeats_are_dropped() {
    let mut decoder = StreamDecoder::new();
    let chunk = |data: Value| SseEvent {
        event: None,
        data: data.to_string(),
    };
    let first = decoder
        .event(&chunk(json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}})))
        .unwrap();
    assert_eq!(
        first,
        vec![
            StreamEvent::Start {
                id: String::new(),
                model: String::new()
            },
            StreamEvent::Text {
                index: 0,
                text: "a".into()
            },
            StreamEvent::Finish(StopReason::MaxTokens),
            StreamEvent::Usage(usage(3, 1, 0)),
        ]
    );
    let again = decoder
        .event(&chunk(json!({"candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}})))
        .unwrap();
    assert_eq!(again, vec![]);
    assert_eq!(decoder.end(), Ok(vec![]));
}

#[test]
fn stream_call_ids_from_gemini_are_kept() {
    let mut decoder = StreamDecoder::new();
    let event = SseEvent {
        event: None,
        data: json!({"candidates": [{"content": {"parts": [
            {"text": "x", "thought": true},
            {"functionCall": {"id": "fc_1", "name": "f"}},
            {"text": "y", "thought": true}
        ]}, "finishReason": "STOP"}]})
        .to_string(),
    };
    let events = decoder.event(&event).unwrap();
    assert_eq!(
        &events[1..],
        &[
            StreamEvent::Thinking {
                index: 0,
                text: "x".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "fc_1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallArgs {
                index: 1,
                json: "{}".into()
            },
            StreamEvent::Thinking {
                index: 2,
                text: "y".into()
            },
            StreamEvent::Finish(StopReason::ToolUse),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn error_shapes() {
    assert_eq!(
        gemini::decode_error(&fixture("error_429.json")),
        Some(ProviderError {
            kind: Some("RESOURCE_EXHAUSTED".into()),
            message: "Resource has been exhausted (e.g. check quota).".into(),
        })
    );
    assert_eq!(
        gemini::decode_error(&fixture("error_400_array.json")),
        Some(ProviderError {
            kind: Some("INVALID_ARGUMENT".into()),
            message: "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).".into(),
        })
    );
    assert_eq!(
        gemini::decode_error(&fixture("error_503.json")),
        Some(ProviderError {
            kind: Some("UNAVAILABLE".into()),
            message: "The model is overloaded. Please try again later.".into(),
        })
    );
    assert_eq!(
        gemini::decode_error(br#"{"error": {"code": 404}}"#),
        Some(ProviderError {
            kind: None,
            message: "error 404".into(),
        })
    );
    assert_eq!(
        gemini::decode_error(br#"{"error": {"status": "PERMISSION_DENIED"}}"#),
        Some(ProviderError {
            kind: Some("PERMISSION_DENIED".into()),
            message: "PERMISSION_DENIED".into(),
        })
    );
    for garbage in [
        &b""[..],
        b"<html>502 Bad Gateway</html>",
        b"{}",
        b"[]",
        b"{\"error\": \"quota\"}",
        b"{\"error\": {}}",
        b"[{\"nope\": 1}]",
        b"\xff",
    ] {
        assert_eq!(
            gemini::decode_error(garbage),
            None,
            "{}",
            String::from_utf8_lossy(garbage)
        );
    }
}
