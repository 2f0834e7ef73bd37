//! OpenAI Chat Completions, both sides: what OpenAI and every OpenAI-compatible server
//! (vLLM, Ollama's `/v1`, LM Studio, Groq, …) speak, and what most client tools send.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat>.
//!
//! | Chat Completions | canonical |
//! |---|---|
//! | `system` / `developer` messages | `system` (text parts joined) |
//! | `user` content: string, `text` and `image_url` parts (`data:` URLs inline) | user message parts |
//! | `assistant` content, `tool_calls`, `reasoning_content` | assistant message: text, tool calls, thinking |
//! | `tool` messages | `ToolResult` parts of a user message (consecutive ones share it) |
//! | `tools` (function), `tool_choice`, `parallel_tool_calls` | the same |
//! | `max_completion_tokens` / `max_tokens` | `max_tokens` |
//! | `temperature`, `top_p`, `stop`, `stream`, `user`, `reasoning_effort` | the same |
//! | `response_format` `json_object` / `json_schema` | `response_format` |
//! | `seed`, `presence_penalty`, `frequency_penalty`, `logit_bias`, `prediction`, `store`, `metadata`, `service_tier` | dropped when crossing protocols (sampling hints and OpenAI-side bookkeeping) |
//! | `n` > 1, `logprobs`, `top_logprobs`, `audio`, `modalities`, `web_search_options`, `input_audio`/`file` parts, `function` messages, `functions` | untranslatable: only OpenAI-compatible deployments get such a request |
//!
//! Answers: `choices[0]` only (detour refuses `n` > 1 across protocols); `finish_reason`
//! `stop`/`length`/`tool_calls`/`content_filter` ↔ end turn / max tokens / tool use /
//! content filter. Streams: `chat.completion.chunk` events, a usage-only chunk when asked
//! for, then `data: [DONE]`.

use serde_json::{json, Map, Value};

use super::canon::push_parts;
use super::sse::{self, SseEvent};
use super::{
    ChatRequest, ChatResponse, Image, Invalid, Malformed, Part, ProviderError, Reasoning,
    ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
};
use crate::usage::Usage;

/// Fields whose meaning only OpenAI-compatible servers can honour.
const UNTRANSLATABLE: [&str; 6] = [
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "web_search_options",
    "functions",
];

// ---------------------------------------------------------------- client side: request

/// Client side: a Chat Completions body into canonical form. `model` is not read (the
/// route group is resolved elsewhere).
pub fn decode_request(body: &Map<String, Value>) -> Result<ChatRequest, Invalid> {
    let mut request = ChatRequest::default();
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(Invalid::new(
                "messages",
                "`messages` is required and must be a non-empty list",
            ))
        }
    };
    for (i, message) in messages.iter().enumerate() {
        decode_message(&mut request, message, &format!("messages[{i}]"))?;
    }
    for field in UNTRANSLATABLE {
        if body
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            request.untranslatable.push(format!("`{field}`"));
        }
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64) {
        if n > 1 {
            request.untranslatable.push("`n` above 1".into());
        }
    }
    if let Some(tools) = body.get("tools") {
        request.tools = decode_tools(tools, &mut request.untranslatable)?;
    }
    request.tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(Invalid::new(
                    "tool_choice",
                    "must be \"auto\", \"none\", \"required\" or a named function",
                ))
            }
        }),
        Some(Value::Object(choice)) => {
            match choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => Some(ToolChoice::Named(name.to_string())),
                None => {
                    return Err(Invalid::new(
                        "tool_choice.function.name",
                        "a named tool choice needs function.name",
                    ))
                }
            }
        }
        Some(_) => return Err(Invalid::new("tool_choice", "must be a string or an object")),
    };
    request.parallel_tool_calls = body.get("parallel_tool_calls").and_then(Value::as_bool);
    request.max_tokens = body
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| body.get("max_tokens").and_then(Value::as_u64));
    request.temperature = number(body, "temperature")?;
    request.top_p = number(body, "top_p")?;
    request.stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Invalid::new(format!("stop[{i}]"), "must be a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(Invalid::new(
                "stop",
                "must be a string or a list of strings",
            ))
        }
    };
    request.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    request.user = body.get("user").and_then(Value::as_str).map(str::to_string);
    request.reasoning = body
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .map(|effort| Reasoning {
            budget_tokens: None,
            effort: Some(effort.to_string()),
        });
    request.response_format = match body.get("response_format") {
        None | Some(Value::Null) => None,
        Some(format) => decode_response_format(format)?,
    };
    Ok(request)
}

fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(Invalid::new(key, "must be a number")),
    }
}

fn decode_response_format(format: &Value) -> Result<Option<ResponseFormat>, Invalid> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::Json)),
        Some("json_schema") => {
            let spec = format.get("json_schema").ok_or_else(|| {
                Invalid::new(
                    "response_format.json_schema",
                    "is required for type json_schema",
                )
            })?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                schema: spec.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: spec.get("strict").and_then(Value::as_bool),
            }))
        }
        _ => Err(Invalid::new(
            "response_format.type",
            "must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

fn decode_tools(tools: &Value, untranslatable: &mut Vec<String>) -> Result<Vec<Tool>, Invalid> {
    let Value::Array(items) = tools else {
        return Err(Invalid::new("tools", "must be a list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            untranslatable.push(format!("tool of type {kind}"));
            continue;
        }
        let function = tool
            .get("function")
            .ok_or_else(|| Invalid::new(format!("tools[{i}].function"), "is required"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid::new(format!("tools[{i}].function.name"), "is required"))?;
        out.push(Tool {
            name: name.to_string(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: function
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    Ok(out)
}

fn decode_message(request: &mut ChatRequest, message: &Value, at: &str) -> Result<(), Invalid> {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid::new(format!("{at}.role"), "is required"))?;
    let content = message.get("content");
    match role {
        "system" | "developer" => {
            let text = text_of(content, &format!("{at}.content"))?;
            request.system.push(text);
        }
        "user" => {
            let parts = user_parts(
                content,
                &format!("{at}.content"),
                &mut request.untranslatable,
            )?;
            push_parts(&mut request.messages, Role::User, parts);
        }
        "assistant" => {
            let mut parts = Vec::new();
            if let Some(Value::String(reasoning)) = message.get("reasoning_content") {
                if !reasoning.is_empty() {
                    parts.push(Part::Thinking {
                        text: reasoning.clone(),
                        signature: None,
                    });
                }
            }
            match content {
                None | Some(Value::Null) => {}
                Some(_) => {
                    let text = text_of(content, &format!("{at}.content"))?;
                    if !text.is_empty() {
                        parts.push(Part::Text(text));
                    }
                }
            }
            if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
                let Value::Array(calls) = calls else {
                    return Err(Invalid::new(format!("{at}.tool_calls"), "must be a list"));
                };
                for (j, call) in calls.iter().enumerate() {
                    let here = format!("{at}.tool_calls[{j}]");
                    let function = call
                        .get("function")
                        .ok_or_else(|| Invalid::new(format!("{here}.function"), "is required"))?;
                    parts.push(Part::ToolCall(ToolCall {
                        id: call
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| Invalid::new(format!("{here}.id"), "is required"))?
                            .to_string(),
                        name: function
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                Invalid::new(format!("{here}.function.name"), "is required")
                            })?
                            .to_string(),
                        arguments: function
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_string(),
                    }));
                }
            }
            push_parts(&mut request.messages, Role::Assistant, parts);
        }
        "tool" => {
            let call_id = message
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| Invalid::new(format!("{at}.tool_call_id"), "is required"))?;
            let text = text_of(content, &format!("{at}.content"))?;
            let result = Part::ToolResult(ToolResult {
                call_id: call_id.to_string(),
                name: None,
                content: vec![Part::Text(text)],
                is_error: false,
            });
            push_parts(&mut request.messages, Role::User, vec![result]);
        }
        "function" => request
            .untranslatable
            .push("messages with the legacy role \"function\"".into()),
        other => {
            return Err(Invalid::new(
                format!("{at}.role"),
                format!(
                    "unknown role {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            ))
        }
    }
    Ok(())
}

/// The text of a `content` that must be text: a string, or a list of `text` parts.
fn text_of(content: Option<&Value>, at: &str) -> Result<String, Invalid> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part.get("text").and_then(Value::as_str).ok_or_else(
                            || Invalid::new(format!("{at}[{i}].text"), "must be a string"),
                        )?);
                    }
                    Some("refusal") => {}
                    _ => {
                        return Err(Invalid::new(
                            format!("{at}[{i}].type"),
                            "only text parts are allowed here",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(Invalid::new(at, "must be a string or a list of parts")),
    }
}

fn user_parts(
    content: Option<&Value>,
    at: &str,
    untranslatable: &mut Vec<String>,
) -> Result<Vec<Part>, Invalid> {
    match content {
        Some(Value::String(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(Part::Text(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                Invalid::new(format!("{at}[{i}].text"), "must be a string")
                            })?
                            .to_string(),
                    )),
                    Some("image_url") => {
                        let url = part
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                Invalid::new(format!("{at}[{i}].image_url.url"), "is required")
                            })?;
                        out.push(Part::Image(image_from_url(url)));
                    }
                    Some(kind @ ("input_audio" | "file")) => {
                        untranslatable.push(format!("content part of type {kind}"));
                    }
                    _ => {
                        return Err(Invalid::new(
                            format!("{at}[{i}].type"),
                            "must be \"text\", \"image_url\", \"input_audio\" or \"file\"",
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(Invalid::new(at, "must be a string or a list of parts")),
    }
}

/// An image URL: `data:<media type>;base64,<data>` is inline, anything else a reference.
pub(crate) fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return Image::Base64 {
                media_type: media_type.to_string(),
                data: data.to_string(),
            };
        }
    }
    Image::Url(url.to_string())
}

/// An image as a URL (`data:` for inline bytes).
pub(crate) fn image_to_url(image: &Image) -> String {
    match image {
        Image::Url(url) => url.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

// ---------------------------------------------------------------- provider side: request

/// Provider side: a canonical request as a Chat Completions body for `provider_model`.
/// `max_completion_tokens`: OpenAI's own API (its reasoning models refuse `max_tokens`);
/// other servers get the older `max_tokens`, which they all understand.
pub fn encode_request(
    request: &ChatRequest,
    provider_model: &str,
    max_completion_tokens: bool,
) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system.join("\n\n")}));
    }
    for message in &request.messages {
        match message.role {
            Role::User => encode_user(&mut messages, &message.content),
            Role::Assistant => messages.push(encode_assistant(&message.content)),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::String(provider_model.to_string()));
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(
                request
                    .tools
                    .iter()
                    .map(|t| {
                        let mut function = json!({"name": t.name, "parameters": t.parameters});
                        if let (Some(d), Value::Object(f)) = (&t.description, &mut function) {
                            f.insert("description".into(), Value::String(d.clone()));
                        }
                        json!({"type": "function", "function": function})
                    })
                    .collect(),
            ),
        );
    }
    if let Some(choice) = &request.tool_choice {
        body.insert(
            "tool_choice".into(),
            match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
            },
        );
    }
    if let Some(parallel) = request.parallel_tool_calls {
        if !request.tools.is_empty() {
            body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(max) = request.max_tokens {
        let key = if max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(key.into(), json!(max));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(format) = &request.response_format {
        body.insert(
            "response_format".into(),
            match format {
                ResponseFormat::Json => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => {
                    let mut spec = json!({"name": name, "schema": schema});
                    if let (Some(strict), Value::Object(s)) = (strict, &mut spec) {
                        s.insert("strict".into(), Value::Bool(*strict));
                    }
                    json!({"type": "json_schema", "json_schema": spec})
                }
            },
        );
    }
    if let Some(effort) = request.reasoning.as_ref().and_then(|r| r.effort.as_ref()) {
        body.insert("reasoning_effort".into(), Value::String(effort.clone()));
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), Value::String(user.clone()));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

fn encode_user(messages: &mut Vec<Value>, parts: &[Part]) {
    // Tool results become `tool` messages, which must come right after the assistant's
    // calls: they go first, then the rest of the user's turn.
    for part in parts {
        if let Part::ToolResult(result) = part {
            let mut text = parts_text(&result.content);
            if result.is_error && !text.starts_with("Error") {
                text = format!("Error: {text}");
            }
            messages.push(json!({"role": "tool", "tool_call_id": result.call_id, "content": text}));
        }
    }
    let rest: Vec<Value> = parts
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) => Some(json!({"type": "text", "text": text})),
            Part::Image(image) => {
                Some(json!({"type": "image_url", "image_url": {"url": image_to_url(image)}}))
            }
            _ => None,
        })
        .collect();
    if rest.is_empty() {
        return;
    }
    let only_text = rest.iter().all(|p| p.get("type") == Some(&json!("text")));
    let content = if only_text {
        Value::String(
            rest.iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    } else {
        Value::Array(rest)
    };
    messages.push(json!({"role": "user", "content": content}));
}

fn encode_assistant(parts: &[Part]) -> Value {
    let text = parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("");
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(call) => Some(json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            })),
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if let (false, Value::Object(m)) = (calls.is_empty(), &mut message) {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    message
}

/// The text of tool-result content (images in tool results are not carried by Chat
/// Completions `tool` messages: they are described).
pub(crate) fn parts_text(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            Part::Image(_) => "[image]".to_string(),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- provider side: answers

/// Provider side: a `chat.completion` answer into canonical form.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, Malformed> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("answer is not JSON: {e}")))?;
    let choice = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| Malformed("answer has no choices".into()))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| Malformed("choices[0] has no message".into()))?;
    let mut content = Vec::new();
    if let Some(reasoning) = message
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        content.push(Part::Thinking {
            text: reasoning.to_string(),
            signature: None,
        });
    }
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                content.push(Part::Text(text.clone()));
            }
        }
        Some(_) => return Err(Malformed("message.content is not a string".into())),
    }
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        content.push(Part::Text(refusal.to_string()));
    }
    if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| Malformed("message.tool_calls is not a list".into()))?;
        for call in calls {
            let function = call
                .get("function")
                .ok_or_else(|| Malformed("a tool call has no function".into()))?;
            content.push(Part::ToolCall(ToolCall {
                id: call
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Malformed("a tool call has no name".into()))?
                    .to_string(),
                arguments: function
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}")
                    .to_string(),
            }));
        }
    }
    Ok(ChatResponse {
        id: value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        model: value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        content,
        stop: stop_from(choice.get("finish_reason").and_then(Value::as_str)),
        usage: value.get("usage").and_then(usage_from),
    })
}

fn stop_from(reason: Option<&str>) -> StopReason {
    match reason {
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn stop_to(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

fn usage_from(usage: &Value) -> Option<Usage> {
    crate::usage::parse_usage(usage)
}

fn usage_to(usage: &Usage) -> Value {
    let mut out = json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    });
    if let (true, Value::Object(o)) = (usage.cache_write_tokens > 0, &mut out) {
        // LiteLLM's name for Anthropic's cache writes in OpenAI-shaped usage.
        o.insert(
            "cache_creation_input_tokens".into(),
            json!(usage.cache_write_tokens),
        );
    }
    out
}

/// Provider side: an OpenAI error body.
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let message = match error {
        Value::String(s) => s.clone(),
        _ => error.get("message").and_then(Value::as_str)?.to_string(),
    };
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(ProviderError { kind, message })
}

// ---------------------------------------------------------------- client side: answers

/// Client side: a canonical answer as a `chat.completion` object.
pub fn encode_response(response: &ChatResponse) -> Value {
    let message = encode_assistant(&response.content);
    let mut message = message;
    if let Value::Object(m) = &mut message {
        let reasoning: String = response
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Thinking { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if !reasoning.is_empty() {
            m.insert("reasoning_content".into(), Value::String(reasoning));
        }
    }
    let mut out = json!({
        "id": chat_id(&response.id),
        "object": "chat.completion",
        "created": 0,
        "model": response.model,
        "choices": [{"index": 0, "message": message, "finish_reason": stop_to(response.stop), "logprobs": null}],
    });
    if let (Some(usage), Value::Object(o)) = (&response.usage, &mut out) {
        o.insert("usage".into(), usage_to(usage));
    }
    out
}

fn chat_id(id: &str) -> String {
    if id.starts_with("chatcmpl-") {
        id.to_string()
    } else {
        format!("chatcmpl-{id}")
    }
}

/// Client side: an error in OpenAI's shape.
pub fn encode_error(status: u16, error: &ProviderError) -> Value {
    let kind = error.kind.clone().unwrap_or_else(|| {
        match status {
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
        .to_string()
    });
    json!({"error": {"message": error.message, "type": kind, "param": null, "code": null}})
}

// ---------------------------------------------------------------- streams

/// Provider side: `chat.completion.chunk` events into canonical ones.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    next_index: usize,
    text_index: Option<usize>,
    thinking_index: Option<usize>,
    /// (OpenAI tool-call index, canonical block index).
    tools: Vec<(u64, usize)>,
    finished: bool,
    done: bool,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    fn block(slot: &mut Option<usize>, next: &mut usize) -> usize {
        *slot.get_or_insert_with(|| {
            let index = *next;
            *next = next.saturating_add(1);
            index
        })
    }

    /// One SSE event.
    pub fn event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, Malformed> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| Malformed(format!("stream chunk is not JSON: {e}")))?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error event in the stream");
            return Err(Malformed(format!(
                "provider error in the stream: {message}"
            )));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                model: chunk
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let choices = match chunk.get("choices") {
            Some(Value::Array(choices)) => choices.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(Malformed("chunk choices is not a list".into())),
        };
        if let Some(choice) = choices.first() {
            let delta = choice.get("delta");
            let piece = |key: &str| {
                delta
                    .and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
            };
            if let Some(text) = piece("reasoning_content") {
                let index = Self::block(&mut self.thinking_index, &mut self.next_index);
                out.push(StreamEvent::Thinking { index, text });
            }
            if let Some(text) = piece("content") {
                let index = Self::block(&mut self.text_index, &mut self.next_index);
                out.push(StreamEvent::Text { index, text });
            }
            if let Some(calls) = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
            {
                for call in calls {
                    self.tool_delta(call, &mut out)?;
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finished = true;
                out.push(StreamEvent::Finish(stop_from(Some(reason))));
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            if let Some(usage) = usage_from(usage) {
                out.push(StreamEvent::Usage(usage));
            }
        }
        Ok(out)
    }

    fn tool_delta(&mut self, call: &Value, out: &mut Vec<StreamEvent>) -> Result<(), Malformed> {
        let position = self.tools.len() as u64;
        let openai_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let function = call.get("function");
        let index = match self.tools.iter().find(|(i, _)| *i == openai_index) {
            Some((_, index)) => *index,
            None => {
                let index = self.next_index;
                self.next_index = self.next_index.saturating_add(1);
                self.tools.push((openai_index, index));
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Malformed("a streamed tool call starts without a name".into())
                    })?;
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{index}")),
                    name: name.to_string(),
                });
                index
            }
        };
        if let Some(args) = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            out.push(StreamEvent::ToolCallArgs {
                index,
                json: args.to_string(),
            });
        }
        Ok(())
    }

    /// End of the stream: `Err` when it ended with neither a finish reason nor `[DONE]`.
    pub fn end(&mut self) -> Result<Vec<StreamEvent>, Malformed> {
        if self.finished || self.done {
            Ok(Vec::new())
        } else {
            Err(Malformed(
                "the stream ended before its finish reason".into(),
            ))
        }
    }
}

/// Client side: canonical events as `chat.completion.chunk` SSE.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    include_usage: bool,
    id: String,
    model: String,
    role_sent: bool,
    /// (canonical block index, OpenAI tool-call index).
    tools: Vec<(usize, usize)>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// `include_usage`: the client asked for `stream_options.include_usage`.
    pub fn new(include_usage: bool) -> Self {
        StreamEncoder {
            include_usage,
            ..StreamEncoder::default()
        }
    }

    fn chunk(&mut self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let mut delta = delta;
        if !self.role_sent {
            self.role_sent = true;
            if let Value::Object(d) = &mut delta {
                d.insert("role".into(), json!("assistant"));
            }
        }
        let mut chunk = json!({
            "id": chat_id(&self.id),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let (true, Value::Object(c)) = (self.include_usage, &mut chunk) {
            c.insert("usage".into(), Value::Null);
        }
        sse::write_event(out, None, &chunk.to_string());
    }

    /// One canonical event.
    pub fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match event {
            StreamEvent::Start { id, model } => {
                self.id = id.clone();
                self.model = model.clone();
            }
            StreamEvent::Text { text, .. } => self.chunk(json!({"content": text}), None, out),
            StreamEvent::Thinking { text, .. } => {
                self.chunk(json!({"reasoning_content": text}), None, out)
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let n = self.tools.len();
                self.tools.push((*index, n));
                self.chunk(
                    json!({"tool_calls": [{"index": n, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    None,
                    out,
                );
            }
            StreamEvent::ToolCallArgs { index, json } => {
                let n = self
                    .tools
                    .iter()
                    .find(|(i, _)| i == index)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                self.chunk(
                    json!({"tool_calls": [{"index": n, "function": {"arguments": json}}]}),
                    None,
                    out,
                );
            }
            StreamEvent::Finish(stop) => self.stop = Some(*stop),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
        }
    }

    /// End of the stream: the finish chunk, the usage chunk when asked for, `[DONE]`; or,
    /// when the provider's stream broke off, an error event the OpenAI SDKs raise.
    pub fn end(&mut self, complete: bool, out: &mut Vec<u8>) {
        if !complete {
            let error = json!({"error": {"message": "detour: the provider's stream ended before the answer was complete", "type": "server_error", "param": null, "code": "stream_incomplete"}});
            sse::write_event(out, None, &error.to_string());
            return;
        }
        let stop = self.stop.unwrap_or_default();
        self.chunk(json!({}), Some(stop_to(stop)), out);
        if self.include_usage {
            let usage = self.usage.map(|u| usage_to(&u)).unwrap_or(Value::Null);
            let chunk = json!({
                "id": chat_id(&self.id),
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [],
                "usage": usage,
            });
            sse::write_event(out, None, &chunk.to_string());
        }
        sse::write_event(out, None, "[DONE]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_tool_conversation_round_trips() {
        let request = body(json!({
            "model": "g",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "wx", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "rain"},
            ],
            "tools": [{"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "max_tokens": 50,
            "stop": "END",
            "stream": true,
        }));
        let canon = decode_request(&request).unwrap();
        assert_eq!(canon.system, vec!["be brief"]);
        assert_eq!(canon.messages.len(), 3);
        assert!(matches!(canon.messages[1].content[0], Part::ToolCall(_)));
        assert!(matches!(canon.messages[2].content[0], Part::ToolResult(_)));
        let encoded = encode_request(&canon, "provider-model", false);
        assert_eq!(encoded["model"], "provider-model");
        assert_eq!(encoded["messages"][3]["role"], "tool");
        assert_eq!(encoded["max_tokens"], 50);
        assert_eq!(encoded["stream_options"]["include_usage"], true);
        let again = decode_request(encoded.as_object().unwrap()).unwrap();
        assert_eq!(again, canon);
    }

    #[test]
    fn untranslatable_and_invalid() {
        let r = decode_request(&body(json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "n": 2, "logprobs": true}))).unwrap();
        assert_eq!(r.untranslatable.len(), 3);
        let err = decode_request(&body(
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "messages[0].role");
        assert!(decode_request(&body(json!({"messages": []}))).is_err());
    }

    #[test]
    fn a_stream_decodes_and_reencodes() {
        let stream = concat!(
            "data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"he\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut parser = sse::SseParser::new();
        let mut decoder = StreamDecoder::new();
        let mut events = Vec::new();
        for e in parser.push(stream.as_bytes()).unwrap() {
            events.extend(decoder.event(&e).unwrap());
        }
        events.extend(decoder.end().unwrap());
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "x".into(),
                    model: "m".into()
                },
                StreamEvent::Text {
                    index: 0,
                    text: "he".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "c".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 1,
                    json: "{\"a\"".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 1,
                    json: ":1}".into()
                },
                StreamEvent::Finish(StopReason::ToolUse),
                StreamEvent::Usage(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 2,
                    ..Usage::default()
                }),
            ]
        );
        let mut encoder = StreamEncoder::new(true);
        let mut out = Vec::new();
        for e in &events {
            encoder.event(e, &mut out);
        }
        encoder.end(true, &mut out);
        let mut parser = sse::SseParser::new();
        let mut decoder = StreamDecoder::new();
        let mut again = Vec::new();
        for e in parser.push(&out).unwrap() {
            again.extend(decoder.event(&e).unwrap());
        }
        assert_eq!(again[1..], events[1..]);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("data: [DONE]\n\n"));
        assert!(StreamDecoder::new().end().is_err());
    }

    #[test]
    fn answers_and_errors() {
        let answer = br#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let canon = decode_response(answer).unwrap();
        assert_eq!(canon.stop, StopReason::MaxTokens);
        assert_eq!(canon.content, vec![Part::Text("hi".into())]);
        let out = encode_response(&canon);
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert_eq!(out["usage"]["total_tokens"], 4);
        assert!(decode_response(b"{\"choices\":[]}").is_err());
        assert!(decode_response(b"<html>").is_err());
        let err = decode_error(br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#)
            .unwrap();
        assert_eq!(err.kind.as_deref(), Some("rate_limit_error"));
    }
}
