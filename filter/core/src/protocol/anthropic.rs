//! Anthropic Messages (`POST /v1/messages`), both sides: what Claude Code and the Anthropic
//! SDKs send to detour, and what detour sends to `anthropic/` deployments.
//!
//! API references followed:
//! - <https://docs.anthropic.com/en/api/messages> (request, `message` object, usage)
//! - <https://docs.anthropic.com/en/docs/build-with-claude/streaming> (event grammar)
//! - <https://docs.anthropic.com/en/api/errors> (error shape and types)
//! - <https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking> (`thinking`)
//! - <https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use>
//!   (`tools`, `tool_choice`, `tool_use` / `tool_result` blocks)
//!
//! # Client side: request (Messages → canonical)
//!
//! | Messages | canonical | notes |
//! |---|---|---|
//! | `model` | — | not read: detour resolves the route group elsewhere |
//! | `max_tokens` | `max_tokens` | required, a non-negative integer (**Invalid** otherwise) |
//! | `system`: string, or list of `text` blocks | `system`, one string per block | empty strings skipped |
//! | `messages[]` role `user` / `assistant` | `messages[]` | non-empty list; content a string (one text part) or a list of blocks; messages are not merged |
//! | `text` block | `Part::Text` | `citations` dropped (a hint about earlier answers) |
//! | `image` block, source `base64` {media_type, data} / `url` {url} | `Part::Image` Base64 / Url | source `file` (Files API) is untranslatable |
//! | `tool_use` {id, name, input} (assistant) | `Part::ToolCall` | `arguments` = compact JSON text of `input` (keys sorted); `input` must be an object |
//! | `tool_result` {tool_use_id, content, is_error} (user) | `Part::ToolResult` | content a string or `text` / `image` blocks; `name` filled from the earlier `tool_use` with that id |
//! | `thinking` {thinking, signature} (assistant) | `Part::Thinking` | |
//! | `redacted_thinking`, `document`, `search_result`, `server_tool_use`, `*_tool_result` of server tools, `mcp_tool_use`, `mcp_tool_result`, `container_upload` blocks (also inside `tool_result`) | — | **untranslatable**, named (`content block of type document`) |
//! | any other block type | — | **Invalid** |
//! | `cache_control` (anywhere) | — | dropped: a caching hint |
//! | `tools[]` custom (`type` absent or `custom`) {name, description, input_schema} | `tools[]` | `input_schema` must be an object |
//! | `tools[]` of any other `type` (`web_search_*`, `bash_*`, `text_editor_*`, `computer_*`, `code_execution_*`, `mcp_toolset`, …) | — | **untranslatable** (`tool of type web_search_20250305`) |
//! | `tool_choice` {type `auto` / `any` / `tool` (name) / `none`} | `tool_choice` Auto / Required / Named / None | |
//! | `tool_choice.disable_parallel_tool_use: true` | `parallel_tool_calls: Some(false)` | `false` is the default: nothing |
//! | `stop_sequences`, `temperature`, `top_p`, `top_k`, `stream` | the same | |
//! | `metadata.user_id` | `user` | |
//! | `thinking` {type `enabled`, budget_tokens} / `adaptive` / `disabled` | `reasoning` {budget_tokens} / {} / none | `display` dropped (a presentation hint) |
//! | `output_config.effort` | `reasoning.effort` | |
//! | `output_config.format` / `output_format` {type `json_schema`, schema} | `response_format` JsonSchema {name `response`, strict} | other `output_config` keys are untranslatable |
//! | `service_tier` | — | `auto` (the default) dropped; any other value untranslatable |
//! | `container`, `mcp_servers`, `context_management` | — | **untranslatable** when set |
//! | other top-level keys | — | ignored (Anthropic itself rejects unknown keys) |
//!
//! # Client side: answer (canonical → Messages)
//!
//! A `message` object: `id` gets the `msg_` prefix unless it has it (`msg_detour` when
//! empty); text, `tool_use` (`input` = the parsed arguments; arguments that are empty, not
//! JSON or not a JSON object become `{}`, since Anthropic clients expect an object there)
//! and `thinking` blocks (`signature: ""` when the provider gave none); `stop_reason`
//! `end_turn` / `max_tokens` / `stop_sequence` / `tool_use`, and `refusal` for
//! ContentFilter; `stop_sequence: null` (the canonical model does not carry which one);
//! `usage` {input_tokens = prompt − cache reads − cache writes, output_tokens,
//! cache_read_input_tokens, cache_creation_input_tokens}, zeros when unknown.
//!
//! Errors: `{"type":"error","error":{"type","message"}}`, the type being the provider's own
//! when it is an Anthropic error type, else from the status: 400 `invalid_request_error`,
//! 401 `authentication_error`, 402 `billing_error`, 403 `permission_error`, 404
//! `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 529
//! `overloaded_error`, other 4xx `invalid_request_error`, anything else `api_error`.
//!
//! Streams ([`StreamEncoder`]): `message_start` (empty content, the usage known so far)
//! is written when the first content event arrives (or at the end), so that usage decoded
//! together with the start is in it; each canonical block becomes
//! `content_block_start` / `content_block_delta` (`text_delta`, `thinking_delta`,
//! `input_json_delta`) / `content_block_stop`, one block open at a time (the open one is
//! closed when another starts); at the end `message_delta` {stop_reason, usage with
//! output and input/cache counts} and `message_stop`. More text or thinking for a block
//! already closed opens a new block of the same kind; more arguments for a tool call
//! already closed go to that call's own index (the SDKs accumulate by index; dropping them
//! would corrupt the call). A broken provider stream ends with an `error` event
//! (`api_error`), which the SDKs raise.
//!
//! # Provider side: request (canonical → Messages)
//!
//! | canonical | Messages | notes |
//! |---|---|---|
//! | `untranslatable` non-empty | — | **Unsupported**, naming the features |
//! | `max_tokens` | `max_tokens` | 4096 when absent (LiteLLM's default for Anthropic); raised above a thinking budget when absent |
//! | `system` | `system` string | joined by blank lines; omitted when empty |
//! | `messages[]` | `messages[]` | consecutive messages of one role merged; empty text dropped; a message left empty skipped; tool results moved to the front of their user message (Anthropic requires them first) |
//! | `Part::Image` Base64 / `data:` URL / http(s) URL | `image` source `base64` / `base64` / `url` | another URL scheme → **Unsupported** |
//! | `Part::ToolCall` | `tool_use` | `input` = parsed arguments (empty → `{}`); not JSON, or not an object → **Unsupported**; ids outside `[A-Za-z0-9_-]` get `_` for those characters (call and result alike) |
//! | `Part::ToolResult` | `tool_result` in the user message | one text part → `content` string, else a list of text / image blocks; `is_error` when true; `name` not sent |
//! | `Part::Thinking` with a signature | `thinking` {thinking, signature} | without one (another provider's reasoning) dropped: Anthropic rejects unsigned thinking |
//! | a tool call in a user message, a tool result in an assistant message | — | **Unsupported** |
//! | `tools[]` | `tools[]` {name, description, input_schema} | a missing/empty schema → `{"type":"object","properties":{}}`; `type` added when absent; a non-object schema → **Unsupported** |
//! | `tool_choice` Auto / None / Required / Named | {type `auto` / `none` / `any` / `tool`} | without tools: Auto / None omitted, Required / Named **Unsupported**; Named naming an undeclared tool **Unsupported** |
//! | `parallel_tool_calls: Some(false)` | `tool_choice.disable_parallel_tool_use: true` | on `auto` when no choice was given; nothing with `none` |
//! | `temperature`, `top_p`, `top_k` | the same | passed as they are: Anthropic takes temperature 0–1, and a larger one gets Anthropic's 400, a client error passed back (as LiteLLM does) |
//! | `stop` | `stop_sequences` | |
//! | `stream` | `stream: true` | |
//! | `user` | `metadata.user_id` | |
//! | `response_format` Json / JsonSchema | — | **Unsupported**: Messages has no `response_format`; Anthropic's structured outputs (`output_config.format`) work only on some Claude models, which the model name alone does not tell |
//! | `reasoning.budget_tokens` | `thinking` {type `enabled`, budget_tokens} | 0 → no thinking; below 1024 raised to 1024 (Anthropic's minimum) |
//! | `reasoning.effort` (no budget) | the same with budget minimal/low 1024, medium 4096, high 16384, xhigh/max 32768; `none` → no thinking | another effort → **Unsupported**; neither budget nor effort (Anthropic `adaptive`) → 4096 |
//! | thinking with `tool_choice` Required / Named | thinking dropped | Anthropic rejects thinking when tool use is forced |
//! | thinking when the last assistant turn calls tools without a signed thinking block first | thinking dropped | Anthropic rejects it (history from another provider carries no signatures) |
//! | thinking with `temperature`, `top_k`, `top_p` < 0.95 | those dropped | Anthropic rejects them with thinking |
//! | thinking with `max_tokens` ≤ budget | budget = `max_tokens` − 1; below 1024 thinking dropped | Anthropic needs `max_tokens` > `budget_tokens` |
//!
//! # Provider side: answer, stream and errors (Messages → canonical)
//!
//! A `message` object (`type: "message"`; anything else is [`Malformed`]): `text`,
//! `tool_use` (arguments = compact JSON of `input`) and `thinking` blocks (with their
//! signature); other block types (`redacted_thinking`, server-tool blocks, …: only
//! possible when the request went to Anthropic untranslated) are skipped. `stop_reason`
//! `end_turn` / `max_tokens` / `stop_sequence` / `tool_use` / `refusal` → EndTurn /
//! MaxTokens / StopSequence / ToolUse / ContentFilter; `model_context_window_exceeded` →
//! MaxTokens; `pause_turn`, null and unknown reasons → EndTurn. Usage: `prompt_tokens` =
//! input + cache_read + cache_creation, `cached_prompt_tokens` = cache_read,
//! `cache_write_tokens` = cache_creation, `completion_tokens` = output (thinking included,
//! as Anthropic counts it); a count that is not a whole number in 0..=10^12 is
//! [`Malformed`].
//!
//! Streams ([`StreamDecoder`]): `message_start` → Start and Usage; `content_block_start`
//! of `text` / `thinking` / `tool_use` → a new canonical block (numbered in order; other
//! block types are skipped with their deltas); `text_delta` / `thinking_delta` /
//! `input_json_delta` → Text / Thinking / ToolCallArgs; `signature_delta`,
//! `citations_delta`, `ping`, `content_block_stop` and unknown events → nothing;
//! `message_delta` → Finish and Usage (cumulative: `output_tokens`, and input/cache counts
//! when present); `message_stop` ends the stream; an `error` event is [`Malformed`] with
//! the provider's message; a stream without `message_stop` is [`Malformed`] at `end()`.
//!
//! Errors: `{"type":"error","error":{"type","message"}}` → [`ProviderError`] {kind =
//! `error.type`, message}.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::sse::{self, SseEvent};
use super::{
    ChatRequest, ChatResponse, Image, Invalid, Malformed, Message, Part, ProviderError, Reasoning,
    ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
    Unsupported,
};
use crate::usage::Usage;

/// `max_tokens` sent when the canonical request has none (Anthropic requires it; 4096 is
/// LiteLLM's default for Anthropic models).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The smallest thinking budget Anthropic accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Block types Anthropic defines that the canonical model cannot carry.
const UNTRANSLATABLE_BLOCKS: [&str; 14] = [
    "redacted_thinking",
    "document",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "tool_reference",
];

/// Top-level fields only Anthropic can honour.
const UNTRANSLATABLE_FIELDS: [&str; 3] = ["container", "mcp_servers", "context_management"];

/// Error types Anthropic defines (kept as they are in [`encode_error`]).
const ERROR_TYPES: [&str; 10] = [
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

// ---------------------------------------------------------------- client side: request

/// Client side: a Messages request body into canonical form. `model` is not read (the
/// route group is resolved elsewhere).
pub fn decode_request(body: &Map<String, Value>) -> Result<ChatRequest, Invalid> {
    let mut request = ChatRequest {
        max_tokens: Some(match body.get("max_tokens") {
            None | Some(Value::Null) => return Err(Invalid::new("max_tokens", "Field required")),
            Some(value) => value.as_u64().ok_or_else(|| {
                Invalid::new(
                    "max_tokens",
                    "Input should be a valid integer greater than or equal to 0",
                )
            })?,
        }),
        ..ChatRequest::default()
    };
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(Invalid::new("messages", "Field required")),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(Invalid::new("messages", "Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(Invalid::new("messages", "at least one message is required"));
    }
    let mut call_names = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let message = decode_message(
            message,
            &format!("messages[{i}]"),
            &mut request,
            &mut call_names,
        )?;
        request.messages.push(message);
    }
    request.system = decode_system(body.get("system"))?;
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        request.tools = decode_tools(tools, &mut request.untranslatable)?;
    }
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        let (choice, parallel) = decode_tool_choice(choice)?;
        request.tool_choice = Some(choice);
        request.parallel_tool_calls = parallel;
    }
    request.stop = match body.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    Invalid::new(
                        format!("stop_sequences[{i}]"),
                        "Input should be a valid string",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(Invalid::new(
                "stop_sequences",
                "Input should be a valid list",
            ))
        }
    };
    request.temperature = number(body, "temperature")?;
    request.top_p = number(body, "top_p")?;
    request.top_k = match body.get("top_k") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            Invalid::new(
                "top_k",
                "Input should be a valid integer greater than or equal to 0",
            )
        })?),
    };
    request.stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(Invalid::new("stream", "Input should be a valid boolean")),
    };
    request.user = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(metadata)) => match metadata.get("user_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(user)) => Some(user.clone()),
            Some(_) => {
                return Err(Invalid::new(
                    "metadata.user_id",
                    "Input should be a valid string",
                ))
            }
        },
        Some(_) => {
            return Err(Invalid::new(
                "metadata",
                "Input should be a valid dictionary",
            ))
        }
    };
    request.reasoning = decode_thinking(body.get("thinking"))?;
    decode_output_config(body, &mut request)?;
    match body.get("service_tier") {
        None | Some(Value::Null) => {}
        Some(Value::String(tier)) if tier == "auto" => {}
        Some(_) => request.untranslatable.push("`service_tier`".into()),
    }
    for field in UNTRANSLATABLE_FIELDS {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            request.untranslatable.push(format!("`{field}`"));
        }
    }
    Ok(request)
}

/// An optional number field.
fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| Invalid::new(key, "Input should be a valid number")),
    }
}

/// A required string field of `object` at `at`.
fn required_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, Invalid> {
    match object.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Invalid::new(format!("{at}.{key}"), "Field required")),
        Some(_) => Err(Invalid::new(
            format!("{at}.{key}"),
            "Input should be a valid string",
        )),
    }
}

/// `value` as an object, or an Invalid at `at`.
fn object_at<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| Invalid::new(at, "Input should be a valid dictionary"))
}

/// The `type` of a block at `at`.
fn block_type<'a>(block: &'a Map<String, Value>, at: &str) -> Result<&'a str, Invalid> {
    required_str(block, "type", at)
}

fn decode_system(system: Option<&Value>) -> Result<Vec<String>, Invalid> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(if text.is_empty() {
            Vec::new()
        } else {
            vec![text.clone()]
        }),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let at = format!("system[{i}]");
                let block = object_at(block, &at)?;
                if block_type(block, &at)? != "text" {
                    return Err(Invalid::new(format!("{at}.type"), "Input should be 'text'"));
                }
                let text = required_str(block, "text", &at)?;
                if !text.is_empty() {
                    out.push(text.to_string());
                }
            }
            Ok(out)
        }
        Some(_) => Err(Invalid::new(
            "system",
            "Input should be a valid string or a list of text blocks",
        )),
    }
}

fn decode_message(
    message: &Value,
    at: &str,
    request: &mut ChatRequest,
    call_names: &mut HashMap<String, String>,
) -> Result<Message, Invalid> {
    let message = object_at(message, at)?;
    let role = match message.get("role") {
        Some(Value::String(role)) if role == "user" => Role::User,
        Some(Value::String(role)) if role == "assistant" => Role::Assistant,
        None | Some(Value::Null) => {
            return Err(Invalid::new(format!("{at}.role"), "Field required"))
        }
        Some(_) => {
            return Err(Invalid::new(
                format!("{at}.role"),
                "Input should be 'user' or 'assistant'",
            ))
        }
    };
    let content = match message.get("content") {
        Some(Value::String(text)) => vec![Part::Text(text.clone())],
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                if let Some(part) = decode_block(block, &at, role, request, call_names)? {
                    parts.push(part);
                }
            }
            parts
        }
        None | Some(Value::Null) => {
            return Err(Invalid::new(format!("{at}.content"), "Field required"))
        }
        Some(_) => {
            return Err(Invalid::new(
                format!("{at}.content"),
                "Input should be a valid string or a list of content blocks",
            ))
        }
    };
    Ok(Message { role, content })
}

/// One content block of a message; `None` when it is untranslatable (recorded).
fn decode_block(
    block: &Value,
    at: &str,
    role: Role,
    request: &mut ChatRequest,
    call_names: &mut HashMap<String, String>,
) -> Result<Option<Part>, Invalid> {
    let block = object_at(block, at)?;
    let kind = block_type(block, at)?;
    let only_in = |wanted: Role, name: &str| {
        if role == wanted {
            Ok(())
        } else {
            let side = match wanted {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            Err(Invalid::new(
                format!("{at}.type"),
                format!("`{name}` blocks can only be in `{side}` messages"),
            ))
        }
    };
    Ok(match kind {
        "text" => Some(Part::Text(required_str(block, "text", at)?.to_string())),
        "image" => decode_image(block, at, &mut request.untranslatable)?.map(Part::Image),
        "tool_use" => {
            only_in(Role::Assistant, "tool_use")?;
            let id = required_str(block, "id", at)?;
            let name = required_str(block, "name", at)?;
            let input = match block.get("input") {
                Some(input @ Value::Object(_)) => input,
                None | Some(Value::Null) => {
                    return Err(Invalid::new(format!("{at}.input"), "Field required"))
                }
                Some(_) => {
                    return Err(Invalid::new(
                        format!("{at}.input"),
                        "Input should be a valid dictionary",
                    ))
                }
            };
            call_names.insert(id.to_string(), name.to_string());
            Some(Part::ToolCall(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments: input.to_string(),
            }))
        }
        "tool_result" => {
            only_in(Role::User, "tool_result")?;
            let call_id = required_str(block, "tool_use_id", at)?;
            let content = match block.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(text)) if text.is_empty() => Vec::new(),
                Some(Value::String(text)) => vec![Part::Text(text.clone())],
                Some(Value::Array(blocks)) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for (k, inner) in blocks.iter().enumerate() {
                        let at = format!("{at}.content[{k}]");
                        let inner = object_at(inner, &at)?;
                        match block_type(inner, &at)? {
                            "text" => parts
                                .push(Part::Text(required_str(inner, "text", &at)?.to_string())),
                            "image" => {
                                if let Some(image) =
                                    decode_image(inner, &at, &mut request.untranslatable)?
                                {
                                    parts.push(Part::Image(image));
                                }
                            }
                            other if UNTRANSLATABLE_BLOCKS.contains(&other) => request
                                .untranslatable
                                .push(format!("tool_result content of type {other}")),
                            other => return Err(unknown_tag(&at, other)),
                        }
                    }
                    parts
                }
                Some(_) => {
                    return Err(Invalid::new(
                        format!("{at}.content"),
                        "Input should be a valid string or a list of content blocks",
                    ))
                }
            };
            let is_error = match block.get("is_error") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(Invalid::new(
                        format!("{at}.is_error"),
                        "Input should be a valid boolean",
                    ))
                }
            };
            Some(Part::ToolResult(ToolResult {
                call_id: call_id.to_string(),
                name: call_names.get(call_id).cloned(),
                content,
                is_error,
            }))
        }
        "thinking" => {
            only_in(Role::Assistant, "thinking")?;
            let text = required_str(block, "thinking", at)?.to_string();
            let signature = match block.get("signature") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(Invalid::new(
                        format!("{at}.signature"),
                        "Input should be a valid string",
                    ))
                }
            };
            Some(Part::Thinking { text, signature })
        }
        other if UNTRANSLATABLE_BLOCKS.contains(&other) => {
            request
                .untranslatable
                .push(format!("content block of type {other}"));
            None
        }
        other => return Err(unknown_tag(at, other)),
    })
}

fn unknown_tag(at: &str, tag: &str) -> Invalid {
    Invalid::new(
        format!("{at}.type"),
        format!("Input tag '{tag}' found using 'type' does not match any of the expected tags"),
    )
}

/// An `image` block's source; `None` when untranslatable (recorded).
fn decode_image(
    block: &Map<String, Value>,
    at: &str,
    untranslatable: &mut Vec<String>,
) -> Result<Option<Image>, Invalid> {
    let at = format!("{at}.source");
    let source = match block.get("source") {
        None | Some(Value::Null) => return Err(Invalid::new(at, "Field required")),
        Some(source) => object_at(source, &at)?,
    };
    match block_type(source, &at)? {
        "base64" => Ok(Some(Image::Base64 {
            media_type: required_str(source, "media_type", &at)?.to_string(),
            data: required_str(source, "data", &at)?.to_string(),
        })),
        "url" => Ok(Some(Image::Url(
            required_str(source, "url", &at)?.to_string(),
        ))),
        "file" => {
            untranslatable.push("image source of type file".into());
            Ok(None)
        }
        _ => Err(Invalid::new(
            format!("{at}.type"),
            "Input should be 'base64', 'url' or 'file'",
        )),
    }
}

fn decode_tools(tools: &Value, untranslatable: &mut Vec<String>) -> Result<Vec<Tool>, Invalid> {
    let Value::Array(items) = tools else {
        return Err(Invalid::new("tools", "Input should be a valid list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        let at = format!("tools[{i}]");
        let tool = object_at(tool, &at)?;
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "custom" => {}
            Some(Value::String(kind)) => {
                untranslatable.push(format!("tool of type {kind}"));
                continue;
            }
            Some(_) => {
                return Err(Invalid::new(
                    format!("{at}.type"),
                    "Input should be a valid string",
                ))
            }
        }
        let name = required_str(tool, "name", &at)?;
        let description = match tool.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => {
                return Err(Invalid::new(
                    format!("{at}.description"),
                    "Input should be a valid string",
                ))
            }
        };
        let parameters = match tool.get("input_schema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            None | Some(Value::Null) => {
                return Err(Invalid::new(format!("{at}.input_schema"), "Field required"))
            }
            Some(_) => {
                return Err(Invalid::new(
                    format!("{at}.input_schema"),
                    "Input should be a valid dictionary",
                ))
            }
        };
        out.push(Tool {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    Ok(out)
}

/// `tool_choice` and the parallel-calls switch it carries.
fn decode_tool_choice(choice: &Value) -> Result<(ToolChoice, Option<bool>), Invalid> {
    let choice = object_at(choice, "tool_choice")?;
    let parsed = match block_type(choice, "tool_choice")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Named(required_str(choice, "name", "tool_choice")?.to_string()),
        _ => {
            return Err(Invalid::new(
                "tool_choice.type",
                "Input should be 'auto', 'any', 'tool' or 'none'",
            ))
        }
    };
    let parallel = match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(false),
        Some(_) => {
            return Err(Invalid::new(
                "tool_choice.disable_parallel_tool_use",
                "Input should be a valid boolean",
            ))
        }
    };
    Ok((parsed, parallel))
}

fn decode_thinking(thinking: Option<&Value>) -> Result<Option<Reasoning>, Invalid> {
    let thinking = match thinking {
        None | Some(Value::Null) => return Ok(None),
        Some(thinking) => object_at(thinking, "thinking")?,
    };
    match block_type(thinking, "thinking")? {
        "enabled" => {
            let budget = match thinking.get("budget_tokens") {
                None | Some(Value::Null) => {
                    return Err(Invalid::new("thinking.budget_tokens", "Field required"))
                }
                Some(value) => value.as_u64().ok_or_else(|| {
                    Invalid::new(
                        "thinking.budget_tokens",
                        "Input should be a valid integer greater than or equal to 0",
                    )
                })?,
            };
            Ok(Some(Reasoning {
                budget_tokens: Some(budget),
                effort: None,
            }))
        }
        "adaptive" => Ok(Some(Reasoning {
            budget_tokens: None,
            effort: None,
        })),
        "disabled" => Ok(None),
        _ => Err(Invalid::new(
            "thinking.type",
            "Input should be 'enabled', 'adaptive' or 'disabled'",
        )),
    }
}

/// `output_config` {effort, format} and the older top-level `output_format`.
fn decode_output_config(
    body: &Map<String, Value>,
    request: &mut ChatRequest,
) -> Result<(), Invalid> {
    if let Some(format) = body.get("output_format").filter(|f| !f.is_null()) {
        request.response_format = Some(decode_format(format, "output_format")?);
    }
    let config = match body.get("output_config") {
        None | Some(Value::Null) => return Ok(()),
        Some(config) => object_at(config, "output_config")?,
    };
    for (key, value) in config {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "effort" => {
                let effort = value.as_str().ok_or_else(|| {
                    Invalid::new("output_config.effort", "Input should be a valid string")
                })?;
                request
                    .reasoning
                    .get_or_insert(Reasoning {
                        budget_tokens: None,
                        effort: None,
                    })
                    .effort = Some(effort.to_string());
            }
            "format" => {
                request.response_format = Some(decode_format(value, "output_config.format")?);
            }
            other => request
                .untranslatable
                .push(format!("`output_config.{other}`")),
        }
    }
    Ok(())
}

fn decode_format(format: &Value, at: &str) -> Result<ResponseFormat, Invalid> {
    let format = object_at(format, at)?;
    if block_type(format, at)? != "json_schema" {
        return Err(Invalid::new(
            format!("{at}.type"),
            "Input should be 'json_schema'",
        ));
    }
    match format.get("schema") {
        Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: schema.clone(),
            strict: Some(true),
        }),
        None | Some(Value::Null) => Err(Invalid::new(format!("{at}.schema"), "Field required")),
        Some(_) => Err(Invalid::new(
            format!("{at}.schema"),
            "Input should be a valid dictionary",
        )),
    }
}

// ---------------------------------------------------------------- client side: answers

/// Client side: a canonical answer as a Messages `message` object.
pub fn encode_response(response: &ChatResponse) -> Value {
    let content: Vec<Value> = response
        .content
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) => Some(json!({"type": "text", "text": text})),
            Part::ToolCall(call) => Some(json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": input_object(&call.arguments),
            })),
            Part::Thinking { text, signature } => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.as_deref().unwrap_or_default(),
            })),
            Part::Image(_) | Part::ToolResult(_) => None,
        })
        .collect();
    json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_to(response.stop),
        "stop_sequence": null,
        "usage": usage_to(response.usage.as_ref()),
    })
}

/// Tool-call arguments as the object Anthropic clients expect (`{}` when they are not one).
fn input_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}

fn message_id(id: &str) -> String {
    if id.is_empty() {
        "msg_detour".into()
    } else if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

fn stop_to(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

fn stop_from(reason: Option<&str>) -> StopReason {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

/// The four Anthropic usage counts of a canonical usage.
fn usage_fields(usage: Option<&Usage>) -> (u64, u64, u64, u64) {
    let usage = usage.copied().unwrap_or_default();
    (
        usage
            .prompt_tokens
            .saturating_sub(usage.cached_prompt_tokens)
            .saturating_sub(usage.cache_write_tokens),
        usage.completion_tokens,
        usage.cached_prompt_tokens,
        usage.cache_write_tokens,
    )
}

fn usage_to(usage: Option<&Usage>) -> Value {
    let (input, output, read, write) = usage_fields(usage);
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    })
}

/// Client side: an error in Anthropic's shape, `{"type":"error","error":{"type","message"}}`.
pub fn encode_error(status: u16, error: &ProviderError) -> Value {
    let kind = match error.kind.as_deref() {
        Some(kind) if ERROR_TYPES.contains(&kind) => kind,
        _ => match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            405..=499 => "invalid_request_error",
            _ => "api_error",
        },
    };
    json!({"type": "error", "error": {"type": kind, "message": error.message}})
}

// ---------------------------------------------------------------- provider side: request

/// Provider side: a canonical request as a Messages body for `provider_model`.
pub fn encode_request(request: &ChatRequest, provider_model: &str) -> Result<Value, Unsupported> {
    if !request.untranslatable.is_empty() {
        return Err(Unsupported(format!(
            "only deployments of the client's protocol can take {}",
            request.untranslatable.join(", ")
        )));
    }
    if let Some(format) = &request.response_format {
        let what = match format {
            ResponseFormat::Json => "JSON output (`response_format`)",
            ResponseFormat::JsonSchema { .. } => "JSON-schema output (`response_format`)",
        };
        return Err(Unsupported(format!(
            "{what}: Anthropic Messages has no response_format, and its structured outputs \
             work only on some Claude models, which detour cannot tell from the model name"
        )));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(provider_model));
    let messages = encode_messages(request)?;
    let unsigned_tool_turn = last_tool_turn_lacks_thinking(&messages);
    body.insert("messages".into(), Value::Array(messages));
    let system: Vec<&str> = request
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let forced_tools = encode_tools(request, &mut body)?;

    let mut max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut budget = match &request.reasoning {
        Some(reasoning) if !forced_tools && !unsigned_tool_turn => thinking_budget(reasoning)?,
        _ => None,
    };
    if let Some(b) = budget {
        if max_tokens <= b {
            if request.max_tokens.is_none() {
                max_tokens = b.saturating_add(DEFAULT_MAX_TOKENS);
            } else {
                let lowered = max_tokens.saturating_sub(1);
                budget = (lowered >= MIN_THINKING_BUDGET).then_some(lowered);
            }
        }
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    if let Some(budget) = budget {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(k) = request.top_k {
            body.insert("top_k".into(), json!(k));
        }
    }
    if let Some(p) = request.top_p {
        if budget.is_none() || p >= 0.95 {
            body.insert("top_p".into(), json!(p));
        }
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if request.stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

/// Whether the last assistant turn calls tools without opening with a (signed) thinking
/// block: Anthropic rejects thinking for such a conversation (the turn came from another
/// provider), so thinking is left off.
fn last_tool_turn_lacks_thinking(messages: &[Value]) -> bool {
    let Some(turn) = messages
        .iter()
        .rev()
        .find(|m| m.get("role") == Some(&json!("assistant")))
    else {
        return false;
    };
    let blocks = turn
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let calls = blocks
        .iter()
        .any(|b| b.get("type") == Some(&json!("tool_use")));
    let opens_with_thinking = blocks
        .first()
        .is_some_and(|b| b.get("type") == Some(&json!("thinking")));
    calls && !opens_with_thinking
}

/// The thinking budget for `reasoning`; `None`: no thinking.
fn thinking_budget(reasoning: &Reasoning) -> Result<Option<u64>, Unsupported> {
    let budget = match (reasoning.budget_tokens, reasoning.effort.as_deref()) {
        (Some(0), _) => return Ok(None),
        (Some(budget), _) => budget,
        (None, None) => 4096,
        (None, Some("none")) => return Ok(None),
        (None, Some("minimal" | "low")) => 1024,
        (None, Some("medium")) => 4096,
        (None, Some("high")) => 16_384,
        (None, Some("xhigh" | "max")) => 32_768,
        (None, Some(other)) => {
            return Err(Unsupported(format!(
                "reasoning effort {other:?} has no Anthropic thinking budget"
            )))
        }
    };
    Ok(Some(budget.max(MIN_THINKING_BUDGET)))
}

/// `tools` and `tool_choice`; returns whether tool use is forced (then no thinking).
fn encode_tools(request: &ChatRequest, body: &mut Map<String, Value>) -> Result<bool, Unsupported> {
    let mut tools = Vec::with_capacity(request.tools.len());
    for (i, tool) in request.tools.iter().enumerate() {
        let schema = match &tool.parameters {
            Value::Null => json!({"type": "object", "properties": {}}),
            Value::Object(schema) if schema.is_empty() => {
                json!({"type": "object", "properties": {}})
            }
            Value::Object(schema) => {
                let mut schema = schema.clone();
                schema
                    .entry("type")
                    .or_insert_with(|| Value::String("object".into()));
                if schema.get("type") != Some(&json!("object")) {
                    return Err(Unsupported(format!(
                        "tools[{i}] ({}): Anthropic takes only object schemas as tool input",
                        tool.name
                    )));
                }
                Value::Object(schema)
            }
            _ => {
                return Err(Unsupported(format!(
                    "tools[{i}] ({}): the parameters are not a JSON Schema object",
                    tool.name
                )))
            }
        };
        let mut out = Map::new();
        out.insert("name".into(), json!(tool.name));
        if let Some(description) = &tool.description {
            out.insert("description".into(), json!(description));
        }
        out.insert("input_schema".into(), schema);
        tools.push(Value::Object(out));
    }
    let no_parallel = request.parallel_tool_calls == Some(false);
    let mut choice = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Named(name)) => {
            if !request.tools.iter().any(|t| &t.name == name) {
                return Err(Unsupported(format!(
                    "tool_choice names {name:?}, which is not among the tools"
                )));
            }
            Some(json!({"type": "tool", "name": name}))
        }
    };
    let forced = matches!(
        request.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Named(_))
    );
    if tools.is_empty() {
        if forced {
            return Err(Unsupported(
                "tool_choice requires a tool call, but the request has no tools".into(),
            ));
        }
        return Ok(false);
    }
    if no_parallel && choice.is_none() {
        choice = Some(json!({"type": "auto"}));
    }
    if let Some(Value::Object(c)) = &mut choice {
        if no_parallel && c.get("type") != Some(&json!("none")) {
            c.insert("disable_parallel_tool_use".into(), json!(true));
        }
    }
    body.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    Ok(forced)
}

/// A tool-use id Anthropic accepts (`[A-Za-z0-9_-]+`): other characters become `_`.
fn tool_id(id: &str) -> String {
    if id.is_empty() {
        return "call".into();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn encode_messages(request: &ChatRequest) -> Result<Vec<Value>, Unsupported> {
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let mut blocks = Vec::with_capacity(message.content.len());
        for (j, part) in message.content.iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            match part {
                Part::Text(text) => {
                    if !text.is_empty() {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                }
                Part::Image(image) => blocks.push(image_block(image, &at)?),
                Part::ToolCall(call) => {
                    if message.role != Role::Assistant {
                        return Err(Unsupported(format!("{at}: a tool call in a user message")));
                    }
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tool_id(&call.id),
                        "name": call.name,
                        "input": call_input(&call.arguments, &at)?,
                    }));
                }
                Part::ToolResult(result) => {
                    if message.role != Role::User {
                        return Err(Unsupported(format!(
                            "{at}: a tool result in an assistant message"
                        )));
                    }
                    blocks.push(tool_result_block(result, &at)?);
                }
                Part::Thinking { text, signature } => {
                    if let Some(signature) = signature.as_deref().filter(|s| !s.is_empty()) {
                        if message.role == Role::Assistant {
                            blocks.push(json!({
                                "type": "thinking",
                                "thinking": text,
                                "signature": signature,
                            }));
                        }
                    }
                }
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, previous)) if *role == message.role => previous.extend(blocks),
            _ => turns.push((message.role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(Unsupported(
            "the conversation has no content Anthropic can take".into(),
        ));
    }
    Ok(turns
        .into_iter()
        .map(|(role, blocks)| {
            let (role, blocks) = match role {
                Role::User => {
                    // Anthropic wants a user turn's tool results before anything else.
                    let (mut results, rest): (Vec<Value>, Vec<Value>) = blocks
                        .into_iter()
                        .partition(|b| b.get("type") == Some(&json!("tool_result")));
                    results.extend(rest);
                    ("user", results)
                }
                Role::Assistant => ("assistant", blocks),
            };
            json!({"role": role, "content": blocks})
        })
        .collect())
}

/// Tool-call arguments as an `input` object.
fn call_input(arguments: &str, at: &str) -> Result<Value, Unsupported> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(Unsupported(format!(
            "{at}: the tool call's arguments are not a JSON object"
        ))),
        Err(_) => Err(Unsupported(format!(
            "{at}: the tool call's arguments are not valid JSON"
        ))),
    }
}

fn image_block(image: &Image, at: &str) -> Result<Value, Unsupported> {
    let source = match image {
        Image::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        Image::Url(url) => {
            if let Some((media_type, data)) = data_url(url) {
                json!({"type": "base64", "media_type": media_type, "data": data})
            } else if url.starts_with("https://") || url.starts_with("http://") {
                json!({"type": "url", "url": url})
            } else {
                return Err(Unsupported(format!(
                    "{at}: Anthropic takes images as base64 data or http(s) URLs"
                )));
            }
        }
    };
    Ok(json!({"type": "image", "source": source}))
}

/// `data:<media type>;base64,<data>` split in two.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let media_type = head.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

fn tool_result_block(result: &ToolResult, at: &str) -> Result<Value, Unsupported> {
    let mut block = Map::new();
    block.insert("type".into(), json!("tool_result"));
    block.insert("tool_use_id".into(), json!(tool_id(&result.call_id)));
    let mut content = Vec::with_capacity(result.content.len());
    for (k, part) in result.content.iter().enumerate() {
        let at = format!("{at}.content[{k}]");
        match part {
            Part::Text(text) => {
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
            }
            Part::Image(image) => content.push(image_block(image, &at)?),
            Part::ToolCall(_) | Part::ToolResult(_) | Part::Thinking { .. } => {
                return Err(Unsupported(format!(
                    "{at}: a tool result holds only text and images in Anthropic"
                )))
            }
        }
    }
    match content.as_slice() {
        [] => {}
        [only] if only.get("type") == Some(&json!("text")) => {
            block.insert(
                "content".into(),
                only.get("text").cloned().unwrap_or_default(),
            );
        }
        _ => {
            block.insert("content".into(), Value::Array(content));
        }
    }
    if result.is_error {
        block.insert("is_error".into(), json!(true));
    }
    Ok(Value::Object(block))
}

// ---------------------------------------------------------------- provider side: answers

fn malformed(message: impl std::fmt::Display) -> Malformed {
    Malformed(format!("anthropic: {message}"))
}

/// A token count (`None` when absent or null), or `Malformed` when it is not one (the
/// shared rule: `usage::token_count`).
fn token_count(usage: &Map<String, Value>, key: &str) -> Result<Option<u64>, Malformed> {
    crate::usage::token_count(usage.get(key))
        .ok_or_else(|| malformed(format_args!("usage.{key} is not a token count")))
}

/// Anthropic usage counts, the ones present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl Counts {
    fn read(usage: &Value) -> Result<Counts, Malformed> {
        let usage = usage
            .as_object()
            .ok_or_else(|| malformed("usage is not an object"))?;
        Ok(Counts {
            input: token_count(usage, "input_tokens")?,
            output: token_count(usage, "output_tokens")?,
            cache_read: token_count(usage, "cache_read_input_tokens")?,
            cache_write: token_count(usage, "cache_creation_input_tokens")?,
        })
    }

    /// `self` updated with the counts `newer` has.
    fn merge(self, newer: Counts) -> Counts {
        Counts {
            input: newer.input.or(self.input),
            output: newer.output.or(self.output),
            cache_read: newer.cache_read.or(self.cache_read),
            cache_write: newer.cache_write.or(self.cache_write),
        }
    }

    fn usage(self) -> Usage {
        let read = self.cache_read.unwrap_or(0);
        let write = self.cache_write.unwrap_or(0);
        Usage {
            prompt_tokens: self
                .input
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(write),
            completion_tokens: self.output.unwrap_or(0),
            cached_prompt_tokens: read,
            cache_write_tokens: write,
        }
    }
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, Malformed> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format_args!("{at}.{key} is not a string"))),
    }
}

fn needed_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, Malformed> {
    optional_str(object, key, at)?.ok_or_else(|| malformed(format_args!("{at}.{key} is missing")))
}

/// Provider side: a Messages answer into canonical form.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, Malformed> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format_args!("the answer is not JSON: {e}")))?;
    let message = value
        .as_object()
        .ok_or_else(|| malformed("the answer is not a JSON object"))?;
    match message.get("type").and_then(Value::as_str) {
        Some("message") => {}
        Some("error") => {
            let text = decode_error(body).map(|e| e.message).unwrap_or_default();
            return Err(malformed(format_args!("the answer is an error: {text}")));
        }
        _ => return Err(malformed("the answer is not a `message` object")),
    }
    let blocks = match message.get("content") {
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(malformed("content is not a list")),
    };
    let mut content = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("content[{i}]");
        let block = block
            .as_object()
            .ok_or_else(|| malformed(format_args!("{at} is not an object")))?;
        match needed_str(block, "type", &at)? {
            "text" => content.push(Part::Text(needed_str(block, "text", &at)?.to_string())),
            "tool_use" => content.push(Part::ToolCall(ToolCall {
                id: needed_str(block, "id", &at)?.to_string(),
                name: needed_str(block, "name", &at)?.to_string(),
                arguments: match block.get("input") {
                    None | Some(Value::Null) => "{}".into(),
                    Some(input) => input.to_string(),
                },
            })),
            "thinking" => content.push(Part::Thinking {
                text: needed_str(block, "thinking", &at)?.to_string(),
                signature: optional_str(block, "signature", &at)?.map(str::to_string),
            }),
            _ => {} // redacted thinking, server-tool blocks: nothing canonical
        }
    }
    let stop = stop_from(optional_str(message, "stop_reason", "message")?);
    let usage = match message.get("usage") {
        None | Some(Value::Null) => None,
        Some(usage) => Some(Counts::read(usage)?.usage()),
    };
    Ok(ChatResponse {
        id: optional_str(message, "id", "message")?
            .unwrap_or_default()
            .to_string(),
        model: optional_str(message, "model", "message")?
            .unwrap_or_default()
            .to_string(),
        content,
        stop,
        usage,
    })
}

/// Provider side: an Anthropic error body, `{"type":"error","error":{"type","message"}}`.
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    error_of(&value)
}

fn error_of(value: &Value) -> Option<ProviderError> {
    let error = value.get("error")?.as_object()?;
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| kind.clone())?;
    Some(ProviderError { kind, message })
}

// ---------------------------------------------------------------- streams

/// What an Anthropic content block is, as a decoder follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Tool,
    /// A block the canonical model has no place for: it and its deltas are skipped.
    Skipped,
}

/// Provider side: Messages stream events into canonical ones.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// `message_start` was seen.
    started: bool,
    /// `message_stop` was seen.
    stopped: bool,
    /// `Finish` was emitted.
    finished: bool,
    /// The next canonical block index.
    next_index: usize,
    /// (Anthropic index, kind, canonical index) of every block started.
    blocks: Vec<(u64, Kind, usize)>,
    /// Usage counts so far.
    counts: Counts,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// One SSE event.
    pub fn event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, Malformed> {
        if event.data.trim().is_empty() || self.stopped {
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| malformed(format_args!("a stream event is not JSON: {e}")))?;
        let data = data
            .as_object()
            .ok_or_else(|| malformed("a stream event is not a JSON object"))?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        if kind == "error" {
            let error = error_of(&Value::Object(data.clone())).unwrap_or_default();
            return Err(malformed(format_args!(
                "the stream carried an error: {}{}",
                error.kind.map(|k| format!("{k}: ")).unwrap_or_default(),
                error.message
            )));
        }
        if kind == "ping" {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if kind == "message_start" {
            if self.started {
                return Err(malformed("a second message_start"));
            }
            self.started = true;
            let message = data
                .get("message")
                .and_then(Value::as_object)
                .ok_or_else(|| malformed("message_start without a message"))?;
            out.push(StreamEvent::Start {
                id: optional_str(message, "id", "message")?
                    .unwrap_or_default()
                    .to_string(),
                model: optional_str(message, "model", "message")?
                    .unwrap_or_default()
                    .to_string(),
            });
            if let Some(usage) = message.get("usage").filter(|u| !u.is_null()) {
                self.counts = Counts::read(usage)?;
                out.push(StreamEvent::Usage(self.counts.usage()));
            }
            return Ok(out);
        }
        if !matches!(
            kind,
            "content_block_start"
                | "content_block_delta"
                | "content_block_stop"
                | "message_delta"
                | "message_stop"
        ) {
            return Ok(out); // events Anthropic may add later
        }
        if !self.started {
            return Err(malformed(format_args!("{kind} before message_start")));
        }
        match kind {
            "content_block_start" => self.block_start(data, &mut out)?,
            "content_block_delta" => self.block_delta(data, &mut out)?,
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .filter(|r| !r.is_null())
                {
                    let reason = reason
                        .as_str()
                        .ok_or_else(|| malformed("delta.stop_reason is not a string"))?;
                    if !self.finished {
                        self.finished = true;
                        out.push(StreamEvent::Finish(stop_from(Some(reason))));
                    }
                }
                if let Some(usage) = data.get("usage").filter(|u| !u.is_null()) {
                    self.counts = self.counts.merge(Counts::read(usage)?);
                    out.push(StreamEvent::Usage(self.counts.usage()));
                }
            }
            "message_stop" => {
                self.stopped = true;
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish(StopReason::EndTurn));
                }
            }
            _ => {} // content_block_stop: the next start says what comes
        }
        Ok(out)
    }

    fn anthropic_index(data: &Map<String, Value>) -> Result<u64, Malformed> {
        data.get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("a content block event without an index"))
    }

    fn block_start(
        &mut self,
        data: &Map<String, Value>,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), Malformed> {
        let index = Self::anthropic_index(data)?;
        if self.blocks.iter().any(|(i, _, _)| *i == index) {
            return Err(malformed(format_args!(
                "content block {index} started twice"
            )));
        }
        let block = data
            .get("content_block")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("content_block_start without a content_block"))?;
        let at = "content_block";
        let kind = match needed_str(block, "type", at)? {
            "text" => Kind::Text,
            "thinking" => Kind::Thinking,
            "tool_use" => Kind::Tool,
            _ => Kind::Skipped,
        };
        let canonical = self.next_index;
        if kind != Kind::Skipped {
            self.next_index = self.next_index.saturating_add(1);
        }
        self.blocks.push((index, kind, canonical));
        match kind {
            Kind::Text => {
                if let Some(text) = optional_str(block, "text", at)?.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text {
                        index: canonical,
                        text: text.to_string(),
                    });
                }
            }
            Kind::Thinking => {
                if let Some(text) = optional_str(block, "thinking", at)?.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Thinking {
                        index: canonical,
                        text: text.to_string(),
                    });
                }
            }
            Kind::Tool => {
                out.push(StreamEvent::ToolCallStart {
                    index: canonical,
                    id: needed_str(block, "id", at)?.to_string(),
                    name: needed_str(block, "name", at)?.to_string(),
                });
                // Anthropic starts with `input: {}` and streams the JSON; a server that
                // sends the whole input up front is taken at its word.
                if let Some(input) = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                {
                    out.push(StreamEvent::ToolCallArgs {
                        index: canonical,
                        json: input.to_string(),
                    });
                }
            }
            Kind::Skipped => {}
        }
        Ok(())
    }

    fn block_delta(
        &mut self,
        data: &Map<String, Value>,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), Malformed> {
        let index = Self::anthropic_index(data)?;
        let (kind, canonical) = self
            .blocks
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, kind, canonical)| (*kind, *canonical))
            .ok_or_else(|| malformed(format_args!("a delta for block {index}, never started")))?;
        let delta = data
            .get("delta")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("content_block_delta without a delta"))?;
        let at = "delta";
        let delta_type = needed_str(delta, "type", at)?;
        type Make = fn(usize, String) -> StreamEvent;
        let (field, wanted, make): (&str, Kind, Make) = match delta_type {
            "text_delta" => ("text", Kind::Text, |index, text| StreamEvent::Text {
                index,
                text,
            }),
            "thinking_delta" => ("thinking", Kind::Thinking, |index, text| {
                StreamEvent::Thinking { index, text }
            }),
            "input_json_delta" => ("partial_json", Kind::Tool, |index, json| {
                StreamEvent::ToolCallArgs { index, json }
            }),
            _ => return Ok(()), // signature_delta, citations_delta and later additions
        };
        let piece = needed_str(delta, field, at)?;
        if kind == Kind::Skipped {
            return Ok(());
        }
        if kind != wanted {
            return Err(malformed(format_args!(
                "a {delta_type} for a block that is not one"
            )));
        }
        if !piece.is_empty() {
            out.push(make(canonical, piece.to_string()));
        }
        Ok(())
    }

    /// End of the stream: `Err` when it ended before `message_stop`.
    pub fn end(&mut self) -> Result<Vec<StreamEvent>, Malformed> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(malformed("the stream ended before message_stop"))
        }
    }
}

/// Client side: canonical stream events as Messages SSE.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    id: String,
    model: String,
    /// `message_start` was written.
    started: bool,
    /// The closing (or error) events were written.
    ended: bool,
    /// The next Anthropic block index.
    next_index: usize,
    /// The open block: (canonical index, Anthropic index, kind).
    open: Option<(usize, usize, Kind)>,
    /// (canonical index, Anthropic index) of every tool call.
    tools: Vec<(usize, usize)>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// An encoder at the start of a stream.
    pub fn new() -> Self {
        StreamEncoder::default()
    }

    fn write(out: &mut Vec<u8>, data: &Value) {
        let name = data.get("type").and_then(Value::as_str).unwrap_or("error");
        sse::write_event(out, Some(name), &data.to_string());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let (input, output, read, write) = usage_fields(self.usage.as_ref());
        Self::write(
            out,
            &json!({
                "type": "message_start",
                "message": {
                    "id": message_id(&self.id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": input,
                        "output_tokens": output,
                        "cache_creation_input_tokens": write,
                        "cache_read_input_tokens": read,
                    },
                },
            }),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index, _)) = self.open.take() {
            Self::write(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// The Anthropic index of the open block for canonical `index` of `kind`, opening
    /// one (closing the open one) when needed.
    fn block(&mut self, index: usize, kind: Kind, out: &mut Vec<u8>) -> usize {
        if let Some((canonical, anthropic, open_kind)) = self.open {
            if canonical == index && open_kind == kind {
                return anthropic;
            }
        }
        self.close(out);
        let anthropic = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        self.open = Some((index, anthropic, kind));
        let block = match kind {
            Kind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        Self::write(
            out,
            &json!({"type": "content_block_start", "index": anthropic, "content_block": block}),
        );
        anthropic
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: Value) {
        Self::write(
            out,
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    /// One canonical event.
    pub fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.id.clone_from(id);
                    self.model.clone_from(model);
                }
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Finish(stop) => self.stop = Some(*stop),
            StreamEvent::Text { index, text } => {
                if text.is_empty() {
                    return;
                }
                self.start(out);
                let at = self.block(*index, Kind::Text, out);
                Self::delta(out, at, json!({"type": "text_delta", "text": text}));
            }
            StreamEvent::Thinking { index, text } => {
                if text.is_empty() {
                    return;
                }
                self.start(out);
                let at = self.block(*index, Kind::Thinking, out);
                Self::delta(out, at, json!({"type": "thinking_delta", "thinking": text}));
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                self.close(out);
                let anthropic = self.next_index;
                self.next_index = self.next_index.saturating_add(1);
                self.open = Some((*index, anthropic, Kind::Tool));
                self.tools.push((*index, anthropic));
                Self::write(
                    out,
                    &json!({
                        "type": "content_block_start",
                        "index": anthropic,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                    }),
                );
            }
            StreamEvent::ToolCallArgs { index, json } => {
                if json.is_empty() {
                    return;
                }
                let at = match self.open {
                    Some((canonical, anthropic, Kind::Tool)) if canonical == *index => {
                        Some(anthropic)
                    }
                    _ => self
                        .tools
                        .iter()
                        .find(|(canonical, _)| canonical == index)
                        .map(|(_, anthropic)| *anthropic),
                };
                if let Some(at) = at {
                    Self::delta(
                        out,
                        at,
                        json!({"type": "input_json_delta", "partial_json": json}),
                    );
                }
            }
        }
    }

    /// End of the stream; `complete`: the provider's stream ended properly.
    pub fn end(&mut self, complete: bool, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if !complete {
            Self::write(
                out,
                &json!({"type": "error", "error": {
                    "type": "api_error",
                    "message": "detour: the provider's stream ended before the answer was complete",
                }}),
            );
            return;
        }
        self.start(out);
        self.close(out);
        let (input, output, read, write) = usage_fields(self.usage.as_ref());
        let mut usage = json!({"output_tokens": output});
        if let (Some(_), Value::Object(u)) = (self.usage, &mut usage) {
            u.insert("input_tokens".into(), json!(input));
            u.insert("cache_creation_input_tokens".into(), json!(write));
            u.insert("cache_read_input_tokens".into(), json!(read));
        }
        Self::write(
            out,
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_to(self.stop.unwrap_or_default()), "stop_sequence": null},
                "usage": usage,
            }),
        );
        Self::write(out, &json!({"type": "message_stop"}));
    }
}
