//! OpenAI Responses (`POST /v1/responses`), client side: what Codex CLI and the `openai`
//! SDKs' `client.responses.create(...)` send. detour keeps no state, so every request must
//! carry the whole conversation in `input`; answers come back as a `response` object or as
//! the Responses event stream, whichever deployment served them.
//!
//! References: <https://platform.openai.com/docs/api-reference/responses/create>,
//! <https://platform.openai.com/docs/api-reference/responses/object>,
//! <https://platform.openai.com/docs/api-reference/responses-streaming>; the shapes were
//! checked against the `openai` Python SDK's `openai.types.responses` models.
//!
//! # Requests
//!
//! | Responses | canonical |
//! |---|---|
//! | `instructions` | `system[0]` |
//! | `input` as a string | one user message |
//! | `input[]` message (`type: "message"` or no type), role `user` / `assistant` | a message of that role (consecutive items of one role share it) |
//! | `input[]` message, role `system` / `developer` | `system`, in order (text parts joined by `\n`) |
//! | content `input_text` / `output_text` / `refusal` | `Part::Text` |
//! | content `input_image` with `image_url` (`https://…` or `data:<type>;base64,…`) | `Part::Image` (`Url` / `Base64`); `detail` dropped (a hint) |
//! | `input[]` `function_call` (`call_id`, `name`, `arguments`) | `Part::ToolCall` in the preceding assistant message (`id` = `call_id`) |
//! | `input[]` `function_call_output` (`output` text or `input_text`/`input_image` parts) | `Part::ToolResult` in a user message (`is_error` false: Responses has no error flag) |
//! | `input[]` `reasoning` (Codex replays them with `encrypted_content`) | dropped: only OpenAI can read its encrypted reasoning, and a summary is not the reasoning itself |
//! | `tools[]` `{type: "function", name, description, parameters}` | `Tool`; `strict` dropped (a decoding guarantee only OpenAI gives) |
//! | `tool_choice` `auto` / `none` / `required` / `{type: "function", name}` | `ToolChoice` |
//! | `tool_choice` `{type: "allowed_tools", mode, tools}` of functions | `tools` narrowed to the allowed ones, `Auto` / `Required` |
//! | `parallel_tool_calls`, `temperature`, `top_p`, `stream` | the same |
//! | `max_output_tokens` | `max_tokens` |
//! | `text.format` `text` / `json_object` / `json_schema {name, schema, strict}` | `response_format` (`None` / `Json` / `JsonSchema`); `text.verbosity` dropped (a hint) |
//! | `reasoning.effort` | `reasoning.effort`; `reasoning.summary` dropped (a hint) |
//! | `safety_identifier`, else `user` | `user` |
//! | `model` | not read (the route group is resolved elsewhere) |
//! | `store`, `metadata`, `truncation`, `service_tier`, `prompt_cache_key`, `prompt_cache_retention`, `prompt_cache_options`, `stream_options`, `max_tool_calls`, `include` (except logprobs) | dropped: OpenAI-side bookkeeping and hints (detour stores nothing; `max_tool_calls` and most `include` values concern built-in tools, which are untranslatable anyway) |
//! | built-in tools (`web_search`, `file_search`, `computer_use_preview`, `code_interpreter`, `image_generation`, `local_shell`, `shell`, `mcp`, `custom`, …), `tool_choice` naming one, `input_file` parts, images by `file_id`, items `item_reference`, `computer_call`, `local_shell_call`, `custom_tool_call`, `mcp_*`, …, `prompt` templates, `top_logprobs`, `include: ["message.output_text.logprobs"]` | untranslatable |
//! | `previous_response_id`, `conversation`, `background: true` | `Invalid`: detour keeps no conversation or response state ("send the whole conversation in `input`") |
//!
//! Unknown input item, content part and tool types are `Invalid`, as OpenAI answers them.
//!
//! # Answers
//!
//! A `response` object: `id` is the provider's id with `resp_` in front (unless it has
//! one); `created_at` is 0 from [`encode_response`] (a codec has no clock:
//! [`encode_response_at`] and [`StreamEncoder::with_created_at`] take the time); the fields
//! that echo the request (`tools`, `tool_choice`, `parallel_tool_calls`, `temperature`, …)
//! hold their defaults, since the encoder does not see the request. Output items, in order:
//!
//! | canonical | Responses `output[]` |
//! |---|---|
//! | `Part::Thinking` | `{type: "reasoning", id: "rs_…", summary: [{type: "summary_text", text}]}` (no `encrypted_content`; the signature is dropped) |
//! | `Part::Text` | `{type: "message", id: "msg_…", role: "assistant", status, content: [{type: "output_text", text, annotations: []}]}` |
//! | `Part::ToolCall` | `{type: "function_call", id: "fc_…", call_id, name, arguments, status}` (empty arguments become `{}`) |
//! | `StopReason::MaxTokens` | `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`, last item `incomplete` |
//! | `StopReason::ContentFilter` | `status: "incomplete"`, `incomplete_details.reason: "content_filter"`, last item `incomplete` |
//! | other stop reasons | `status: "completed"` |
//! | `Usage` | `usage {input_tokens, input_tokens_details {cached_tokens, cache_write_tokens}, output_tokens, output_tokens_details {reasoning_tokens: 0}, total_tokens}` (`null` when unknown) |
//!
//! Item ids are `msg_<id>_<n>`, `rs_<id>_<n>`, `fc_<id>_<n>` (`<id>` the response id
//! without `resp_`, `<n>` the item's output index), the same in both paths.
//!
//! # Streams
//!
//! `event:` names equal the data's `type`, and `sequence_number` counts from 0:
//! `response.created`, `response.in_progress`; per block `response.output_item.added`, then
//! for text `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`; for thinking
//! `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta`…,
//! `response.reasoning_summary_text.done`, `response.reasoning_summary_part.done`; for tool
//! calls `response.function_call_arguments.delta`…, `response.function_call_arguments.done`;
//! then `response.output_item.done`. One item is open at a time: a block is closed when the
//! next one starts (a late delta for a closed block still reaches the final response, not
//! the live events). The stream ends with `response.completed` (or `response.incomplete`)
//! carrying the whole response, usage included — the same object [`encode_response`] makes
//! — or, when the provider's stream broke off, `response.failed` with
//! `error.code: "server_error"`.

use serde_json::{json, Map, Value};

use super::canon::push_parts;
use super::sse;
use super::{
    ChatRequest, ChatResponse, Image, Invalid, Message, Part, Reasoning, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
};
use crate::usage::Usage;

/// Input item types of OpenAI's built-in tools and server-side state: valid Responses,
/// but nothing another protocol can carry.
const OPENAI_ONLY_ITEMS: [&str; 28] = [
    "item_reference",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "web_search_call",
    "tool_search_call",
    "tool_search_output",
    "additional_tools",
    "configuration_update",
    "compaction",
    "compaction_trigger",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
    "program",
    "program_output",
    "function_shell_call",
];

/// Tool types other than `function`: OpenAI runs them itself (or, for `custom`, they take
/// free text instead of JSON), so only OpenAI can honour them.
const OPENAI_ONLY_TOOLS: [&str; 19] = [
    "file_search",
    "computer",
    "computer_use_preview",
    "computer_use",
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "mcp",
    "code_interpreter",
    "programmatic_tool_calling",
    "image_generation",
    "local_shell",
    "shell",
    "custom",
    "namespace",
    "tool_search",
    "apply_patch",
    "function_shell",
];

// ---------------------------------------------------------------- client side: request

/// Client side: a Responses request body into canonical form. `model` is not read (the
/// route group is resolved elsewhere).
pub fn decode_request(body: &Map<String, Value>) -> Result<ChatRequest, Invalid> {
    let mut request = ChatRequest::default();
    for field in ["previous_response_id", "conversation"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(Invalid::new(
                field,
                format!(
                    "`{field}` is not supported: detour keeps no conversation state; send the \
                     whole conversation in `input`"
                ),
            ));
        }
    }
    match body.get("background") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(Invalid::new(
                "background",
                "background responses are not supported: detour keeps no response state; send \
                 the request without `background`",
            ))
        }
        Some(_) => return Err(Invalid::new("background", "must be a boolean")),
    }
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                request.system.push(text.clone());
            }
        }
        Some(_) => return Err(Invalid::new("instructions", "must be a string")),
    }
    match body.get("input") {
        Some(Value::String(text)) => request.messages.push(Message {
            role: Role::User,
            content: vec![Part::Text(text.clone())],
        }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                decode_item(&mut request, item, &format!("input[{i}]"))?;
            }
        }
        None | Some(Value::Null) => {
            return Err(Invalid::new(
                "input",
                "`input` is required: detour keeps no conversation state; send the whole \
                 conversation in `input`",
            ))
        }
        Some(_) => {
            return Err(Invalid::new(
                "input",
                "must be a string or a list of input items",
            ))
        }
    }
    if request.messages.is_empty() {
        return Err(Invalid::new(
            "input",
            "must contain at least one user or assistant message or function call output",
        ));
    }
    if body.get("prompt").is_some_and(|v| !v.is_null()) {
        request
            .untranslatable
            .push("a stored prompt template (`prompt`)".into());
    }
    match body.get("top_logprobs") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            if n.as_u64() != Some(0) {
                request.untranslatable.push("`top_logprobs`".into());
            }
        }
        Some(_) => return Err(Invalid::new("top_logprobs", "must be an integer")),
    }
    match body.get("include") {
        None | Some(Value::Null) => {}
        Some(Value::Array(values)) => {
            for (i, value) in values.iter().enumerate() {
                match value.as_str() {
                    Some("message.output_text.logprobs") => request
                        .untranslatable
                        .push("`include: message.output_text.logprobs`".into()),
                    Some(_) => {} // reasoning.encrypted_content, built-in tool outputs: hints
                    None => return Err(Invalid::new(format!("include[{i}]"), "must be a string")),
                }
            }
        }
        Some(_) => return Err(Invalid::new("include", "must be a list of strings")),
    }
    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(tools) => request.tools = decode_tools(tools, &mut request.untranslatable)?,
    }
    request.tool_choice = decode_tool_choice(body.get("tool_choice"), &mut request)?;
    request.parallel_tool_calls = boolean(body, "parallel_tool_calls")?;
    request.max_tokens =
        match body.get("max_output_tokens") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                Invalid::new("max_output_tokens", "must be a non-negative integer")
            })?),
        };
    request.temperature = number(body, "temperature")?;
    request.top_p = number(body, "top_p")?;
    request.stream = boolean(body, "stream")?.unwrap_or(false);
    request.user = match (string(body, "safety_identifier")?, string(body, "user")?) {
        (Some(id), _) => Some(id),
        (None, user) => user,
    };
    request.reasoning = match body.get("reasoning") {
        None | Some(Value::Null) => None,
        Some(Value::Object(reasoning)) => match reasoning.get("effort") {
            None | Some(Value::Null) => None,
            Some(Value::String(effort)) => Some(Reasoning {
                budget_tokens: None,
                effort: Some(effort.clone()),
            }),
            Some(_) => return Err(Invalid::new("reasoning.effort", "must be a string")),
        },
        Some(_) => return Err(Invalid::new("reasoning", "must be an object")),
    };
    request.response_format = match body.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::Object(text)) => match text.get("format") {
            None | Some(Value::Null) => None,
            Some(format) => decode_format(format)?,
        },
        Some(_) => return Err(Invalid::new("text", "must be an object")),
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

fn boolean(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Invalid::new(key, "must be a boolean")),
    }
}

fn string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Invalid::new(key, "must be a string")),
    }
}

/// A required string field of an object.
fn required_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, Invalid> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Invalid::new(format!("{at}.{key}"), "is required")),
        Some(_) => Err(Invalid::new(format!("{at}.{key}"), "must be a string")),
    }
}

/// At most 40 characters of a client-supplied value, for error messages.
fn short(value: &str) -> String {
    value.chars().take(40).collect()
}

fn decode_item(request: &mut ChatRequest, item: &Value, at: &str) -> Result<(), Invalid> {
    let Value::Object(item) = item else {
        return Err(Invalid::new(at, "must be an object"));
    };
    let kind = match item.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // An easy input message has no type; an item reference may have none either.
        None | Some(Value::Null) if item.contains_key("role") => "message",
        None | Some(Value::Null) if item.contains_key("id") => "item_reference",
        None | Some(Value::Null) => return Err(Invalid::new(format!("{at}.type"), "is required")),
        Some(_) => return Err(Invalid::new(format!("{at}.type"), "must be a string")),
    };
    match kind {
        "message" => decode_message(request, item, at),
        "function_call" => {
            let call = ToolCall {
                id: required_str(item, "call_id", at)?.to_string(),
                name: required_str(item, "name", at)?.to_string(),
                arguments: required_str(item, "arguments", at)?.to_string(),
            };
            push_parts(
                &mut request.messages,
                Role::Assistant,
                vec![Part::ToolCall(call)],
            );
            Ok(())
        }
        "function_call_output" => {
            let call_id = required_str(item, "call_id", at)?.to_string();
            let here = format!("{at}.output");
            let content = match item.get("output") {
                Some(Value::String(text)) => vec![Part::Text(text.clone())],
                Some(Value::Array(parts)) => {
                    content_parts(parts, &here, Role::User, &mut request.untranslatable)?
                }
                None | Some(Value::Null) => return Err(Invalid::new(here, "is required")),
                Some(_) => {
                    return Err(Invalid::new(
                        here,
                        "must be a string or a list of content parts",
                    ))
                }
            };
            let result = Part::ToolResult(ToolResult {
                call_id,
                name: None,
                content,
                is_error: false,
            });
            push_parts(&mut request.messages, Role::User, vec![result]);
            Ok(())
        }
        // OpenAI's own (often encrypted) reasoning: no other provider can use it.
        "reasoning" => Ok(()),
        kind if OPENAI_ONLY_ITEMS.contains(&kind) => {
            request
                .untranslatable
                .push(format!("input item of type {kind}"));
            Ok(())
        }
        other => Err(Invalid::new(
            format!("{at}.type"),
            format!("unknown input item type {:?}", short(other)),
        )),
    }
}

fn decode_message(
    request: &mut ChatRequest,
    item: &Map<String, Value>,
    at: &str,
) -> Result<(), Invalid> {
    let role = required_str(item, "role", at)?;
    let here = format!("{at}.content");
    let role = match role {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" | "developer" => {
            let parts = match item.get("content") {
                Some(Value::String(text)) => vec![Part::Text(text.clone())],
                Some(Value::Array(parts)) => {
                    content_parts(parts, &here, Role::User, &mut request.untranslatable)?
                }
                None | Some(Value::Null) => return Err(Invalid::new(here, "is required")),
                Some(_) => {
                    return Err(Invalid::new(
                        here,
                        "must be a string or a list of content parts",
                    ))
                }
            };
            let mut text = String::new();
            for part in parts {
                match part {
                    Part::Text(part) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&part);
                    }
                    _ => request
                        .untranslatable
                        .push(format!("an image in a {role} message")),
                }
            }
            request.system.push(text);
            return Ok(());
        }
        other => {
            return Err(Invalid::new(
                format!("{at}.role"),
                format!(
                "unknown role {:?}: must be \"user\", \"assistant\", \"system\" or \"developer\"",
                short(other)
            ),
            ))
        }
    };
    let parts = match item.get("content") {
        Some(Value::String(text)) => vec![Part::Text(text.clone())],
        Some(Value::Array(parts)) => {
            content_parts(parts, &here, role, &mut request.untranslatable)?
        }
        None | Some(Value::Null) => return Err(Invalid::new(here, "is required")),
        Some(_) => {
            return Err(Invalid::new(
                here,
                "must be a string or a list of content parts",
            ))
        }
    };
    let parts = if role == Role::Assistant {
        parts
            .into_iter()
            .filter(|part| !matches!(part, Part::Text(text) if text.is_empty()))
            .collect()
    } else {
        parts
    };
    push_parts(&mut request.messages, role, parts);
    Ok(())
}

/// Content parts of a message or a function call output.
fn content_parts(
    parts: &[Value],
    at: &str,
    role: Role,
    untranslatable: &mut Vec<String>,
) -> Result<Vec<Part>, Invalid> {
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Value::Object(part) = part else {
            return Err(Invalid::new(here, "must be an object"));
        };
        let kind = required_str(part, "type", &here)?;
        match kind {
            "input_text" | "output_text" => {
                out.push(Part::Text(required_str(part, "text", &here)?.to_string()))
            }
            "refusal" => out.push(Part::Text(
                required_str(part, "refusal", &here)?.to_string(),
            )),
            "input_image" if role == Role::User => {
                if let Some(image) = decode_image(part, &here, untranslatable)? {
                    out.push(Part::Image(image));
                }
            }
            "input_file" | "input_audio" if role == Role::User => {
                untranslatable.push(format!("content part of type {kind}"));
            }
            other => {
                return Err(Invalid::new(
                    format!("{here}.type"),
                    match role {
                        Role::User => format!(
                            "unknown content type {:?}: must be \"input_text\", \"input_image\" \
                             or \"input_file\"",
                            short(other)
                        ),
                        Role::Assistant => format!(
                            "unknown content type {:?}: must be \"output_text\" or \"refusal\"",
                            short(other)
                        ),
                    },
                ))
            }
        }
    }
    Ok(out)
}

fn decode_image(
    part: &Map<String, Value>,
    at: &str,
    untranslatable: &mut Vec<String>,
) -> Result<Option<Image>, Invalid> {
    match part.get("image_url") {
        Some(Value::String(url)) => image_from_url(url, &format!("{at}.image_url")).map(Some),
        None | Some(Value::Null) => match part.get("file_id") {
            Some(Value::String(_)) => {
                untranslatable.push("an image given by `file_id`".into());
                Ok(None)
            }
            _ => Err(Invalid::new(
                format!("{at}.image_url"),
                "is required (or `file_id`)",
            )),
        },
        Some(_) => Err(Invalid::new(format!("{at}.image_url"), "must be a string")),
    }
}

/// An image URL: `data:<media type>;base64,<data>` is inline, `http(s)://` a reference.
fn image_from_url(url: &str, at: &str) -> Result<Image, Invalid> {
    if let Some(rest) = url.strip_prefix("data:") {
        return match rest.split_once(',') {
            Some((meta, data)) => match meta.strip_suffix(";base64") {
                Some(media_type) if !media_type.is_empty() => Ok(Image::Base64 {
                    media_type: media_type.to_string(),
                    data: data.to_string(),
                }),
                _ => Err(Invalid::new(
                    at,
                    "a data URL must look like data:<media type>;base64,<data>",
                )),
            },
            None => Err(Invalid::new(
                at,
                "a data URL must look like data:<media type>;base64,<data>",
            )),
        };
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Ok(Image::Url(url.to_string()))
    } else {
        Err(Invalid::new(
            at,
            "must be an http(s) URL or a base64 data URL",
        ))
    }
}

fn decode_tools(tools: &Value, untranslatable: &mut Vec<String>) -> Result<Vec<Tool>, Invalid> {
    let Value::Array(items) = tools else {
        return Err(Invalid::new("tools", "must be a list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Value::Object(tool) = tool else {
            return Err(Invalid::new(at, "must be an object"));
        };
        match required_str(tool, "type", &at)? {
            "function" => {
                let name = required_str(tool, "name", &at)?;
                let description = match tool.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => {
                        return Err(Invalid::new(
                            format!("{at}.description"),
                            "must be a string",
                        ))
                    }
                };
                let parameters = match tool.get("parameters") {
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(Value::Object(schema)) => Value::Object(schema.clone()),
                    Some(_) => {
                        return Err(Invalid::new(
                            format!("{at}.parameters"),
                            "must be a JSON Schema object",
                        ))
                    }
                };
                out.push(Tool {
                    name: name.to_string(),
                    description,
                    parameters,
                });
            }
            kind if OPENAI_ONLY_TOOLS.contains(&kind) => {
                untranslatable.push(format!("tool of type {kind}"));
            }
            other => {
                return Err(Invalid::new(
                    format!("{at}.type"),
                    format!("unknown tool type {:?}", short(other)),
                ))
            }
        }
    }
    Ok(out)
}

fn decode_tool_choice(
    choice: Option<&Value>,
    request: &mut ChatRequest,
) -> Result<Option<ToolChoice>, Invalid> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) => {
            return match mode.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "none" => Ok(Some(ToolChoice::None)),
                "required" => Ok(Some(ToolChoice::Required)),
                _ => Err(Invalid::new(
                    "tool_choice",
                    "must be \"auto\", \"none\", \"required\" or an object",
                )),
            }
        }
        Some(Value::Object(choice)) => choice,
        Some(_) => return Err(Invalid::new("tool_choice", "must be a string or an object")),
    };
    match required_str(choice, "type", "tool_choice")? {
        "function" => Ok(Some(ToolChoice::Named(
            required_str(choice, "name", "tool_choice")?.to_string(),
        ))),
        "allowed_tools" => {
            let mode = match required_str(choice, "mode", "tool_choice")? {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                _ => {
                    return Err(Invalid::new(
                        "tool_choice.mode",
                        "must be \"auto\" or \"required\"",
                    ))
                }
            };
            let Some(Value::Array(allowed)) = choice.get("tools") else {
                return Err(Invalid::new("tool_choice.tools", "must be a list"));
            };
            let mut names = Vec::with_capacity(allowed.len());
            for (i, tool) in allowed.iter().enumerate() {
                let at = format!("tool_choice.tools[{i}]");
                let Value::Object(tool) = tool else {
                    return Err(Invalid::new(at, "must be an object"));
                };
                match required_str(tool, "type", &at)? {
                    "function" => names.push(required_str(tool, "name", &at)?.to_string()),
                    kind => request
                        .untranslatable
                        .push(format!("an allowed tool of type {}", short(kind))),
                }
            }
            // Offering only the allowed tools says the same thing to any provider.
            request.tools.retain(|tool| names.contains(&tool.name));
            Ok(Some(mode))
        }
        kind if OPENAI_ONLY_TOOLS.contains(&kind)
            || kind.starts_with("web_search")
            || kind.starts_with("computer") =>
        {
            request
                .untranslatable
                .push(format!("`tool_choice` of type {kind}"));
            Ok(None)
        }
        other => Err(Invalid::new(
            "tool_choice.type",
            format!("unknown tool choice type {:?}", short(other)),
        )),
    }
}

fn decode_format(format: &Value) -> Result<Option<ResponseFormat>, Invalid> {
    let Value::Object(format) = format else {
        return Err(Invalid::new("text.format", "must be an object"));
    };
    match required_str(format, "type", "text.format")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(ResponseFormat::Json)),
        "json_schema" => {
            let name = required_str(format, "name", "text.format")?.to_string();
            let schema = match format.get("schema") {
                Some(Value::Object(schema)) => Value::Object(schema.clone()),
                None | Some(Value::Null) => {
                    return Err(Invalid::new("text.format.schema", "is required"))
                }
                Some(_) => {
                    return Err(Invalid::new(
                        "text.format.schema",
                        "must be a JSON Schema object",
                    ))
                }
            };
            let strict = match format.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(strict)) => Some(*strict),
                Some(_) => return Err(Invalid::new("text.format.strict", "must be a boolean")),
            };
            Ok(Some(ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            }))
        }
        other => Err(Invalid::new(
            "text.format.type",
            format!(
                "unknown format type {:?}: must be \"text\", \"json_object\" or \"json_schema\"",
                short(other)
            ),
        )),
    }
}

// ---------------------------------------------------------------- client side: answer

/// Client side: a canonical answer as a Responses `response` object, with `created_at` 0
/// (see [`encode_response_at`]).
pub fn encode_response(response: &ChatResponse) -> Value {
    encode_response_at(response, 0)
}

/// Client side: a canonical answer as a Responses `response` object created at
/// `created_at` (Unix seconds).
pub fn encode_response_at(response: &ChatResponse, created_at: u64) -> Value {
    let id = response_id(&response.id);
    let mut items: Vec<Item> = Vec::with_capacity(response.content.len());
    for part in &response.content {
        let n = items.len();
        let (kind, text) = match part {
            Part::Text(text) => (Kind::Message, text.clone()),
            Part::Thinking { text, .. } => (Kind::Reasoning, text.clone()),
            Part::ToolCall(call) => (
                Kind::Call {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                },
                call.arguments.clone(),
            ),
            Part::Image(_) | Part::ToolResult(_) => continue,
        };
        items.push(Item::new(kind, &id, n, text));
    }
    let incomplete = incomplete_reason(response.stop);
    if let Some(last) = items.last_mut() {
        last.complete = incomplete.is_none();
    }
    let output = items.iter().map(Item::to_json).collect();
    let status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    envelope(
        &id,
        &response.model,
        created_at,
        status,
        output,
        response.usage.as_ref(),
        incomplete,
        None,
    )
}

/// `incomplete_details.reason` for a stop reason that leaves the response incomplete.
fn incomplete_reason(stop: StopReason) -> Option<&'static str> {
    match stop {
        StopReason::MaxTokens => Some("max_output_tokens"),
        StopReason::ContentFilter => Some("content_filter"),
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => None,
    }
}

/// The response id: the provider's, with `resp_` in front unless it has it.
fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else if id.is_empty() {
        "resp_detour".to_string()
    } else {
        format!("resp_{id}")
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
    })
}

/// A whole `response` object. The fields echoing the request hold their defaults.
#[allow(
    clippy::too_many_arguments,
    reason = "one private constructor of the response object"
)]
fn envelope(
    id: &str,
    model: &str,
    created_at: u64,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    incomplete: Option<&str>,
    error: Option<Value>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
        "instructions": null,
        "max_output_tokens": null,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": null,
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "user": null,
    })
}

/// What an output item is.
#[derive(Debug, Clone)]
enum Kind {
    Message,
    Reasoning,
    Call { call_id: String, name: String },
}

/// One output item, as built so far.
#[derive(Debug, Clone)]
struct Item {
    kind: Kind,
    id: String,
    /// The text, reasoning text or arguments.
    text: String,
    /// Finished normally (`completed`), rather than cut off (`incomplete`).
    complete: bool,
}

impl Item {
    fn new(kind: Kind, response_id: &str, n: usize, text: String) -> Self {
        let prefix = match kind {
            Kind::Message => "msg",
            Kind::Reasoning => "rs",
            Kind::Call { .. } => "fc",
        };
        let stem = response_id.strip_prefix("resp_").unwrap_or(response_id);
        Item {
            kind,
            id: format!("{prefix}_{stem}_{n}"),
            text,
            complete: true,
        }
    }

    fn status(&self) -> &'static str {
        if self.complete {
            "completed"
        } else {
            "incomplete"
        }
    }

    /// Final arguments: the model's text, `{}` when it produced none.
    fn arguments(&self) -> &str {
        if self.text.is_empty() {
            "{}"
        } else {
            &self.text
        }
    }

    fn text_part(&self) -> Value {
        json!({"type": "output_text", "text": self.text, "annotations": []})
    }

    fn summary_part(&self) -> Value {
        json!({"type": "summary_text", "text": self.text})
    }

    /// The item as it ends.
    fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Message => json!({
                "type": "message",
                "id": self.id,
                "status": self.status(),
                "role": "assistant",
                "content": [self.text_part()],
            }),
            Kind::Reasoning => json!({
                "type": "reasoning",
                "id": self.id,
                "summary": [self.summary_part()],
            }),
            Kind::Call { call_id, name } => json!({
                "type": "function_call",
                "id": self.id,
                "call_id": call_id,
                "name": name,
                "arguments": self.arguments(),
                "status": self.status(),
            }),
        }
    }

    /// The item as it starts (`response.output_item.added`).
    fn started_json(&self) -> Value {
        match &self.kind {
            Kind::Message => json!({
                "type": "message",
                "id": self.id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }),
            Kind::Reasoning => json!({
                "type": "reasoning",
                "id": self.id,
                "summary": [],
            }),
            Kind::Call { call_id, name } => json!({
                "type": "function_call",
                "id": self.id,
                "call_id": call_id,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }),
        }
    }
}

// ---------------------------------------------------------------- client side: stream

/// Client side: canonical stream events as Responses SSE (`response.created`, …,
/// `response.completed`).
#[derive(Debug, Default)]
pub struct StreamEncoder {
    created_at: u64,
    /// The next `sequence_number`.
    seq: u64,
    /// The response id (`resp_…`) and model, known from `Start`.
    id: String,
    model: String,
    /// `response.created` is out.
    started: bool,
    /// The closing event is out: nothing more is written.
    ended: bool,
    /// Output items in order; an item's position is its `output_index`.
    items: Vec<Item>,
    /// Canonical block index → output index.
    blocks: Vec<(usize, usize)>,
    /// The output index of the item still open (only one is: the last started).
    open: Option<usize>,
    finish: Option<StopReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// An encoder at the start of a stream.
    pub fn new() -> Self {
        StreamEncoder::default()
    }

    /// The same, with `created_at` (Unix seconds) in the response objects instead of 0.
    pub fn with_created_at(mut self, created_at: u64) -> Self {
        self.created_at = created_at;
        self
    }

    /// One canonical event.
    pub fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.id = response_id(id);
                    self.model.clone_from(model);
                }
                self.start(out);
            }
            StreamEvent::Text { index, text } => self.delta(*index, Kind::Message, text, out),
            StreamEvent::Thinking { index, text } => self.delta(*index, Kind::Reasoning, text, out),
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.output_index(*index).is_none() {
                    let kind = Kind::Call {
                        call_id: id.clone(),
                        name: name.clone(),
                    };
                    self.open_item(*index, kind, out);
                }
            }
            StreamEvent::ToolCallArgs { index, json } => {
                // Arguments of a call that never started have no name: dropped.
                if let Some(n) = self.output_index(*index) {
                    if matches!(self.items.get(n).map(|i| &i.kind), Some(Kind::Call { .. })) {
                        self.append(n, json, out);
                    }
                }
            }
            StreamEvent::Finish(stop) => self.finish = Some(*stop),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
        }
    }

    /// End of the stream; `complete`: the provider's stream ended properly.
    pub fn end(&mut self, complete: bool, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.ended = true;
        if complete {
            let incomplete = incomplete_reason(self.finish.unwrap_or_default());
            self.close_open(incomplete.is_none(), out);
            let (kind, status) = match incomplete {
                Some(_) => ("response.incomplete", "incomplete"),
                None => ("response.completed", "completed"),
            };
            let response = self.response(status, incomplete, None);
            self.emit(out, kind, json!({ "response": response }));
        } else {
            if let Some(item) = self.open.take().and_then(|n| self.items.get_mut(n)) {
                item.complete = false;
            }
            let error = json!({
                "code": "server_error",
                "message": "the provider's stream broke off before the answer was complete",
            });
            let response = self.response("failed", None, Some(error));
            self.emit(out, "response.failed", json!({ "response": response }));
        }
    }

    fn response(&self, status: &str, incomplete: Option<&str>, error: Option<Value>) -> Value {
        let output = match status {
            "in_progress" => Vec::new(),
            _ => self.items.iter().map(Item::to_json).collect(),
        };
        let usage = match status {
            "in_progress" => None,
            _ => self.usage.as_ref(),
        };
        envelope(
            &self.id,
            &self.model,
            self.created_at,
            status,
            output,
            usage,
            incomplete,
            error,
        )
    }

    /// Writes one event: its `type` and `sequence_number` are added to `data`.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Value::Object(fields) = &mut data {
            fields.insert("type".into(), Value::String(kind.to_string()));
            fields.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq = self.seq.saturating_add(1);
        sse::write_event(out, Some(kind), &data.to_string());
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = response_id("");
        }
        for kind in ["response.created", "response.in_progress"] {
            let response = self.response("in_progress", None, None);
            self.emit(out, kind, json!({ "response": response }));
        }
    }

    fn output_index(&self, block: usize) -> Option<usize> {
        self.blocks
            .iter()
            .find(|(index, _)| *index == block)
            .map(|(_, n)| *n)
    }

    /// Text or thinking for a block: opens its item when it is new.
    fn delta(&mut self, block: usize, kind: Kind, text: &str, out: &mut Vec<u8>) {
        let n = match self.output_index(block) {
            Some(n) => n,
            None => self.open_item(block, kind.clone(), out),
        };
        let same_kind = matches!(
            (self.items.get(n).map(|i| &i.kind), &kind),
            (Some(Kind::Message), Kind::Message) | (Some(Kind::Reasoning), Kind::Reasoning)
        );
        if same_kind {
            self.append(n, text, out);
        }
    }

    /// Closes the open item and starts a new one for `block`; returns its output index.
    fn open_item(&mut self, block: usize, kind: Kind, out: &mut Vec<u8>) -> usize {
        self.start(out);
        self.close_open(true, out);
        let n = self.items.len();
        let item = Item::new(kind, &self.id, n, String::new());
        let added = json!({"output_index": n, "item": item.started_json()});
        let part_added = match item.kind {
            Kind::Message => Some((
                "response.content_part.added",
                json!({
                    "item_id": item.id,
                    "output_index": n,
                    "content_index": 0,
                    "part": item.text_part(),
                }),
            )),
            Kind::Reasoning => Some((
                "response.reasoning_summary_part.added",
                json!({
                    "item_id": item.id,
                    "output_index": n,
                    "summary_index": 0,
                    "part": item.summary_part(),
                }),
            )),
            Kind::Call { .. } => None,
        };
        self.items.push(item);
        self.blocks.push((block, n));
        self.open = Some(n);
        self.emit(out, "response.output_item.added", added);
        if let Some((kind, data)) = part_added {
            self.emit(out, kind, data);
        }
        n
    }

    /// Adds text to item `n`: a delta event while it is open; folded into the final
    /// response only once it is closed.
    fn append(&mut self, n: usize, text: &str, out: &mut Vec<u8>) {
        let Some(item) = self.items.get_mut(n) else {
            return;
        };
        item.text.push_str(text);
        if self.open != Some(n) || text.is_empty() {
            return;
        }
        let (kind, data) = match item.kind {
            Kind::Message => (
                "response.output_text.delta",
                json!({
                    "item_id": item.id,
                    "output_index": n,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }),
            ),
            Kind::Reasoning => (
                "response.reasoning_summary_text.delta",
                json!({
                    "item_id": item.id,
                    "output_index": n,
                    "summary_index": 0,
                    "delta": text,
                }),
            ),
            Kind::Call { .. } => (
                "response.function_call_arguments.delta",
                json!({"item_id": item.id, "output_index": n, "delta": text}),
            ),
        };
        self.emit(out, kind, data);
    }

    /// Writes the closing events of the open item, if any.
    fn close_open(&mut self, complete: bool, out: &mut Vec<u8>) {
        let Some(n) = self.open.take() else {
            return;
        };
        let Some(item) = self.items.get_mut(n) else {
            return;
        };
        item.complete = complete;
        let item = item.clone();
        match item.kind {
            Kind::Message => {
                let at = json!({"item_id": item.id, "output_index": n, "content_index": 0});
                let mut done = at.clone();
                if let Value::Object(done) = &mut done {
                    done.insert("text".into(), Value::String(item.text.clone()));
                    done.insert("logprobs".into(), json!([]));
                }
                self.emit(out, "response.output_text.done", done);
                let mut part = at;
                if let Value::Object(part) = &mut part {
                    part.insert("part".into(), item.text_part());
                }
                self.emit(out, "response.content_part.done", part);
            }
            Kind::Reasoning => {
                let at = json!({"item_id": item.id, "output_index": n, "summary_index": 0});
                let mut done = at.clone();
                if let Value::Object(done) = &mut done {
                    done.insert("text".into(), Value::String(item.text.clone()));
                }
                self.emit(out, "response.reasoning_summary_text.done", done);
                let mut part = at;
                if let Value::Object(part) = &mut part {
                    part.insert("part".into(), item.summary_part());
                }
                self.emit(out, "response.reasoning_summary_part.done", part);
            }
            Kind::Call { .. } => {
                let done = json!({
                    "item_id": item.id,
                    "output_index": n,
                    "arguments": item.arguments(),
                });
                self.emit(out, "response.function_call_arguments.done", done);
            }
        }
        let done = json!({"output_index": n, "item": item.to_json()});
        self.emit(out, "response.output_item.done", done);
    }
}
