//! Google Gemini `generateContent` / `streamGenerateContent`, provider side.
//!
//! detour sends canonical requests to `gemini/` deployments as a `GenerateContentRequest`
//! body and reads back `GenerateContentResponse` answers, `?alt=sse` streams and Google's
//! error shape. The model name and the method (`models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` when streaming) go in the path, which the caller builds;
//! nothing here names the model.
//!
//! API references followed:
//! - <https://ai.google.dev/api/generate-content> (request, response, stream, usage)
//! - <https://ai.google.dev/gemini-api/docs/function-calling> (tools, `toolConfig`,
//!   `functionCall` / `functionResponse` parts)
//! - <https://ai.google.dev/gemini-api/docs/thought-signatures> (replaying function calls
//!   to Gemini 3, the documented dummy signature for history Gemini did not produce)
//! - <https://ai.google.dev/gemini-api/docs/thinking> (`thinkingConfig`)
//! - <https://ai.google.dev/gemini-api/docs/structured-output> (`responseJsonSchema`)
//!
//! # Request mapping (canonical → Gemini)
//!
//! | canonical | Gemini | notes |
//! |---|---|---|
//! | `system` | `systemInstruction.parts[].text` | one part per string; empty strings skipped |
//! | `messages[]` role user / assistant | `contents[]` role `user` / `model` | consecutive contents of one role are merged (Gemini wants turns to alternate); a message left with no parts is skipped |
//! | `Part::Text` | `{text}` | empty text dropped (Gemini rejects an empty part) |
//! | `Part::Image(Base64)` | `{inlineData:{mimeType,data}}` | a `data:<mime>;base64,` URL is sent the same way |
//! | `Part::Image(Url)` (http/https) | — | **Unsupported**: detour does not fetch images, and Gemini's `fileData` is meant for Files-API / `gs://` URIs (its newer external-URL support needs a MIME type the canonical image does not carry) |
//! | `Part::ToolCall` (assistant) | `{functionCall:{name,args}}` | `arguments` parsed; empty text is `{}`; invalid JSON or not an object → **Unsupported**. The call id is not sent (Gemini pairs results with calls by order and name). The first `functionCall` of every `model` content carries `thoughtSignature: "skip_thought_signature_validator"`, the dummy value the thought-signature guide documents for history Gemini did not produce (canonical history keeps no Gemini signature) |
//! | `Part::ToolResult` (user) | `{functionResponse:{name,response}}` | `name` from the result, else from the earlier `ToolCall` with that id (none → **Unsupported**); `response` is the result text parsed when it is a JSON object, else `{"content": text}`; `{"error": text}` when `is_error`; text parts are joined with `\n`; images in the result follow as `inlineData` parts of the same turn |
//! | `Part::Thinking` | — | dropped: Gemini takes back only its own signed thoughts |
//! | `tools[]` | `tools[0].functionDeclarations[]{name,description,parametersJsonSchema}` | the full JSON Schema goes in `parametersJsonSchema` (no OpenAPI conversion); a top-level `$schema` is removed; an object schema without properties is omitted (a function without parameters); a non-object schema, or a name outside `[A-Za-z0-9_.:-]{1,64}` → **Unsupported** |
//! | `tool_choice` Auto / None / Required / Named | `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` | Required / Named without tools, or Named naming an undeclared tool → **Unsupported**; Auto / None without tools: omitted |
//! | `parallel_tool_calls` | — | dropped as a hint: Gemini has no such switch |
//! | `max_tokens` | `generationConfig.maxOutputTokens` | capped at `i32::MAX` |
//! | `temperature`, `top_p`, `top_k` | `generationConfig.temperature`, `.topP`, `.topK` | |
//! | `stop` | `generationConfig.stopSequences` | more than 5 → **Unsupported** (Gemini's limit) |
//! | `response_format` Json | `generationConfig.responseMimeType: "application/json"` | |
//! | `response_format` JsonSchema | + `generationConfig.responseJsonSchema` | `name` and `strict` dropped (Gemini always holds to the schema); a non-object schema → **Unsupported** |
//! | `reasoning.budget_tokens` | `generationConfig.thinkingConfig.thinkingBudget` + `includeThoughts: true` | capped at 32768 (the largest budget any Gemini model takes); 0 turns thinking off (no `includeThoughts`) |
//! | `reasoning.effort` | `thinkingConfig.thinkingBudget`: minimal 512, low 1024, medium 8192, high 24576, xhigh 32768; `none` → no `thinkingConfig` | a budget, not `thinkingLevel`: the body does not know the model, Gemini 2.5 rejects `thinkingLevel` and Gemini 3 accepts budgets; Gemini 3 and 2.5 Pro cannot turn thinking off, so `none` leaves the model default; another effort → **Unsupported** |
//! | `user` | — | dropped as a hint: Gemini has no end-user field |
//! | `stream` | — | in the path (`:streamGenerateContent?alt=sse`), not the body |
//! | `untranslatable` non-empty | — | **Unsupported**, naming the first feature |
//!
//! # Answer mapping (Gemini → canonical)
//!
//! | Gemini | canonical | notes |
//! |---|---|---|
//! | `responseId` / `modelVersion` | `id` / `model` | empty when absent |
//! | `candidates[0].content.parts[]` `{text}` | `Part::Text` | only the first candidate is read |
//! | `{text, thought: true}` | `Part::Thinking { signature: None }` | a `thoughtSignature` is not kept (see above) |
//! | `{functionCall:{id?,name,args}}` | `Part::ToolCall` | id from `functionCall.id`, else `call_<responseId>_<n>` (`call_<n>` without a responseId; `n` counts the answer's calls from 0) so ids stay unique across turns; `arguments` = compact JSON of `args` (`{}` when absent) |
//! | other data parts (`inlineData`, `fileData`, `executableCode`, `codeExecutionResult`, `functionResponse`) | — | **Malformed**: detour never asks for them; parts with only metadata (`thoughtSignature`, …) are skipped |
//! | `finishReason` `STOP` | `EndTurn`, or `ToolUse` when the answer has function calls | Gemini reports a stop sequence as `STOP` too |
//! | `MAX_TOKENS` | `MaxTokens` | |
//! | `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`, `IMAGE_RECITATION` | `ContentFilter` | |
//! | any other reason, or none | `ToolUse` when there are function calls, else `EndTurn` | `LANGUAGE`, `OTHER`, `MALFORMED_FUNCTION_CALL`, … |
//! | no candidates, `promptFeedback.blockReason` | empty content, `ContentFilter` | |
//! | `usageMetadata` | `Usage` | `prompt_tokens` = `promptTokenCount` (cached tokens included) + `toolUsePromptTokenCount`; `completion_tokens` = `candidatesTokenCount` + `thoughtsTokenCount`; `cached_prompt_tokens` = `cachedContentTokenCount`; `cache_write_tokens` = 0 (Gemini bills cache storage, not writes) |
//!
//! Not a JSON object, a field of the wrong type, a count that is not a whole number in
//! 0..=10^12, or neither candidates nor a block reason: [`Malformed`].
//!
//! # Streams
//!
//! Every SSE event's data is one `GenerateContentResponse` chunk. The first chunk gives
//! [`StreamEvent::Start`]; text goes to the open text block and thought text to the open
//! thinking block, a new canonical block starting whenever the kind changes (thought →
//! answer, or after a function call); a `functionCall` arrives whole, as
//! [`StreamEvent::ToolCallStart`] plus one [`StreamEvent::ToolCallArgs`] with all of its
//! JSON; the first `finishReason` gives [`StreamEvent::Finish`]; `usageMetadata` (cumulative
//! in every chunk) gives [`StreamEvent::Usage`] whenever it changes. A chunk carrying an
//! `error` object is [`Malformed`]; so is a stream that ends before any `finishReason` or
//! block reason.
//!
//! # Errors
//!
//! `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}}`, also wrapped in an
//! array as some endpoints send it, becomes [`ProviderError`] with `kind` = `status`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::sse::SseEvent;
use super::{
    ChatRequest, ChatResponse, Image, Malformed, Part, ProviderError, Reasoning, ResponseFormat,
    Role, StopReason, StreamEvent, ToolChoice, ToolResult, Unsupported,
};
use crate::usage::Usage;

/// Most stop sequences Gemini takes.
pub const MAX_STOP_SEQUENCES: usize = 5;

/// The dummy `thoughtSignature` the Gemini thought-signature guide documents for function
/// calls Gemini did not produce (history from another model); it works for the Gemini API
/// and Vertex AI alike.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The largest thinking budget any Gemini model accepts (2.5 Pro).
const MAX_THINKING_BUDGET: u64 = 32_768;

/// Longest function name Gemini accepts.
const MAX_FUNCTION_NAME: usize = 64;

// ---------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------

/// Provider side: a canonical request as a `generateContent` body (the model goes in the
/// path, not the body).
pub fn encode_request(request: &ChatRequest) -> Result<Value, Unsupported> {
    if let Some(feature) = request.untranslatable.first() {
        return Err(Unsupported(format!(
            "{feature}: only the client's own protocol can express it"
        )));
    }
    let mut body = Map::new();
    body.insert("contents".into(), encode_contents(request)?);
    let system: Vec<Value> = request
        .system
        .iter()
        .filter(|text| !text.is_empty())
        .map(|text| json!({ "text": text }))
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if !request.tools.is_empty() {
        let mut declarations = Vec::with_capacity(request.tools.len());
        for (i, tool) in request.tools.iter().enumerate() {
            let at = format!("tools[{i}]");
            check_function_name(&tool.name, &at)?;
            let mut declaration = Map::new();
            declaration.insert("name".into(), Value::String(tool.name.clone()));
            if let Some(description) = tool.description.as_deref().filter(|d| !d.is_empty()) {
                declaration.insert("description".into(), Value::String(description.into()));
            }
            if let Some(schema) = parameters_schema(&tool.parameters, &at)? {
                declaration.insert("parametersJsonSchema".into(), schema);
            }
            declarations.push(Value::Object(declaration));
        }
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(config) = tool_config(request)? {
        body.insert("toolConfig".into(), config);
    }
    let generation = generation_config(request)?;
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(body))
}

/// The conversation as `contents`, same-role turns merged, signatures added.
fn encode_contents(request: &ChatRequest) -> Result<Value, Unsupported> {
    let mut contents: Vec<(Role, Vec<Value>)> = Vec::new();
    // Tool names by call id, as the calls appear: results name their call's tool.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (m, message) in request.messages.iter().enumerate() {
        let mut parts = Vec::new();
        for (p, part) in message.content.iter().enumerate() {
            let at = format!("messages[{m}].content[{p}]");
            match part {
                Part::Text(text) => {
                    if !text.is_empty() {
                        parts.push(json!({ "text": text }));
                    }
                }
                Part::Image(image) => parts.push(image_part(image, &at)?),
                Part::Thinking { .. } => {}
                Part::ToolCall(call) => {
                    if message.role != Role::Assistant {
                        return Err(Unsupported(format!("{at}: a tool call in a user message")));
                    }
                    let args = call_arguments(&call.arguments, &at)?;
                    call_names.insert(call.id.as_str(), call.name.as_str());
                    parts.push(json!({
                        "functionCall": { "name": call.name, "args": args }
                    }));
                }
                Part::ToolResult(result) => {
                    if message.role != Role::User {
                        return Err(Unsupported(format!(
                            "{at}: a tool result in an assistant message"
                        )));
                    }
                    let name = match result.name.as_deref() {
                        Some(name) if !name.is_empty() => name,
                        _ => call_names
                            .get(result.call_id.as_str())
                            .copied()
                            .ok_or_else(|| {
                                Unsupported(format!(
                                    "{at}: the tool result answers call {:?}, which no earlier \
                                     message makes, and Gemini needs the tool's name",
                                    result.call_id
                                ))
                            })?,
                    };
                    parts.extend(tool_result_parts(result, name, &at)?);
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((role, existing)) if *role == message.role => existing.extend(parts),
            _ => contents.push((message.role, parts)),
        }
    }
    if contents.is_empty() {
        return Err(Unsupported(
            "no message has content Gemini can carry (only thinking or empty text)".into(),
        ));
    }
    let contents = contents
        .into_iter()
        .map(|(role, mut parts)| {
            if role == Role::Assistant {
                sign_first_call(&mut parts);
            }
            let role = match role {
                Role::User => "user",
                Role::Assistant => "model",
            };
            json!({ "role": role, "parts": parts })
        })
        .collect();
    Ok(Value::Array(contents))
}

/// Gives the first `functionCall` part of a model turn the documented dummy signature
/// (Gemini 3 validates the first call of each step; history from elsewhere has none).
fn sign_first_call(parts: &mut [Value]) {
    let first_call = parts
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|part| part.contains_key("functionCall"));
    if let Some(part) = first_call {
        part.insert(
            "thoughtSignature".into(),
            Value::String(SKIP_THOUGHT_SIGNATURE.into()),
        );
    }
}

/// An image as an `inlineData` part.
fn image_part(image: &Image, at: &str) -> Result<Value, Unsupported> {
    let (mime, data) = match image {
        Image::Base64 { media_type, data } => (media_type.as_str(), data.as_str()),
        Image::Url(url) => data_url(url).ok_or_else(|| {
            Unsupported(format!(
                "{at}: an image by URL; Gemini takes images inline (its fileData is for files \
                 uploaded with the Files API or gs:// URIs) and detour does not fetch them"
            ))
        })?,
    };
    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

/// `data:<mime>;base64,<data>` split into its MIME type and base64 text.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    (!mime.is_empty() && !mime.contains(';')).then_some((mime, data))
}

/// Tool-call arguments (JSON text) as the object Gemini's `args` wants.
fn call_arguments(arguments: &str, at: &str) -> Result<Map<String, Value>, Unsupported> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(args)) => Ok(args),
        Ok(_) => Err(Unsupported(format!(
            "{at}: the tool call's arguments are not a JSON object, and Gemini's args must be one"
        ))),
        Err(_) => Err(Unsupported(format!(
            "{at}: the tool call's arguments are not valid JSON"
        ))),
    }
}

/// A tool result as a `functionResponse` part, followed by the images it holds.
fn tool_result_parts(result: &ToolResult, name: &str, at: &str) -> Result<Vec<Value>, Unsupported> {
    let mut texts = Vec::new();
    let mut media = Vec::new();
    for (i, part) in result.content.iter().enumerate() {
        match part {
            Part::Text(text) => texts.push(text.as_str()),
            Part::Image(image) => media.push(image_part(image, &format!("{at}.content[{i}]"))?),
            Part::Thinking { .. } => {}
            Part::ToolCall(_) | Part::ToolResult(_) => {
                return Err(Unsupported(format!(
                    "{at}.content[{i}]: a tool call or result inside a tool result"
                )))
            }
        }
    }
    let text = texts.join("\n");
    let response = if result.is_error {
        json!({ "error": text })
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Value::Object(object),
            _ => json!({ "content": text }),
        }
    };
    let mut parts = Vec::with_capacity(media.len().saturating_add(1));
    parts.push(json!({ "functionResponse": { "name": name, "response": response } }));
    parts.extend(media);
    Ok(parts)
}

/// Gemini's rule for function names: `[A-Za-z0-9_.:-]`, at most 64 characters.
fn check_function_name(name: &str, at: &str) -> Result<(), Unsupported> {
    let valid = !name.is_empty()
        && name.len() <= MAX_FUNCTION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Unsupported(format!(
            "{at}.name: Gemini function names are letters, digits, '_', '.', ':' and '-', \
             at most {MAX_FUNCTION_NAME} characters; {name:?} is not"
        )))
    }
}

/// A tool's JSON Schema for `parametersJsonSchema`, or `None` when the function takes no
/// parameters.
fn parameters_schema(parameters: &Value, at: &str) -> Result<Option<Value>, Unsupported> {
    let schema = match parameters {
        Value::Null => return Ok(None),
        Value::Object(schema) => schema,
        _ => {
            return Err(Unsupported(format!(
                "{at}.parameters: not a JSON Schema object"
            )))
        }
    };
    if let Some(kind) = schema.get("type") {
        if kind.as_str() != Some("object") {
            return Err(Unsupported(format!(
                "{at}.parameters: Gemini wants an object schema, this one has type {kind}"
            )));
        }
    }
    let has_properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|properties| !properties.is_empty());
    let only_object_type = schema.keys().all(|key| {
        matches!(
            key.as_str(),
            "type"
                | "properties"
                | "$schema"
                | "additionalProperties"
                | "required"
                | "title"
                | "description"
        )
    });
    if !has_properties && only_object_type {
        return Ok(None);
    }
    let mut schema = schema.clone();
    schema.remove("$schema");
    Ok(Some(Value::Object(schema)))
}

/// `toolConfig.functionCallingConfig` for the tool choice.
fn tool_config(request: &ChatRequest) -> Result<Option<Value>, Unsupported> {
    let Some(choice) = &request.tool_choice else {
        return Ok(None);
    };
    let no_tools = request.tools.is_empty();
    let config = match choice {
        ToolChoice::Auto | ToolChoice::None if no_tools => return Ok(None),
        ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ToolChoice::None => json!({ "mode": "NONE" }),
        ToolChoice::Required | ToolChoice::Named(_) if no_tools => {
            return Err(Unsupported(
                "tool_choice asks for a tool call, but the request declares no tools".into(),
            ))
        }
        ToolChoice::Required => json!({ "mode": "ANY" }),
        ToolChoice::Named(name) => {
            if !request.tools.iter().any(|tool| &tool.name == name) {
                return Err(Unsupported(format!(
                    "tool_choice names {name:?}, which the request does not declare"
                )));
            }
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

/// `generationConfig`: sampling, output cap, stops, structured output, thinking.
fn generation_config(request: &ChatRequest) -> Result<Map<String, Value>, Unsupported> {
    let mut config = Map::new();
    if let Some(max) = request.max_tokens {
        config.insert("maxOutputTokens".into(), json!(max.min(i32::MAX as u64)));
    }
    if let Some(temperature) = request.temperature.filter(|t| t.is_finite()) {
        config.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p.filter(|p| p.is_finite()) {
        config.insert("topP".into(), json!(top_p));
    }
    if let Some(top_k) = request.top_k {
        config.insert("topK".into(), json!(top_k.min(i32::MAX as u64)));
    }
    if request.stop.len() > MAX_STOP_SEQUENCES {
        return Err(Unsupported(format!(
            "{} stop sequences; Gemini takes at most {MAX_STOP_SEQUENCES}",
            request.stop.len()
        )));
    }
    if !request.stop.is_empty() {
        config.insert("stopSequences".into(), json!(request.stop));
    }
    match &request.response_format {
        None => {}
        Some(ResponseFormat::Json) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            let Value::Object(schema) = schema else {
                return Err(Unsupported(
                    "response_format: the JSON schema is not an object".into(),
                ));
            };
            let mut schema = schema.clone();
            schema.remove("$schema");
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseJsonSchema".into(), Value::Object(schema));
        }
    }
    if let Some(reasoning) = &request.reasoning {
        if let Some(thinking) = thinking_config(reasoning)? {
            config.insert("thinkingConfig".into(), thinking);
        }
    }
    Ok(config)
}

/// `thinkingConfig` for the client's reasoning request (`None`: the model's default).
fn thinking_config(reasoning: &Reasoning) -> Result<Option<Value>, Unsupported> {
    let budget = match (reasoning.budget_tokens, reasoning.effort.as_deref()) {
        (Some(budget), _) => Some(budget.min(MAX_THINKING_BUDGET)),
        (None, None) => None,
        (None, Some("none")) => return Ok(None),
        (None, Some("minimal")) => Some(512),
        (None, Some("low")) => Some(1024),
        (None, Some("medium")) => Some(8192),
        (None, Some("high")) => Some(24_576),
        (None, Some("xhigh")) => Some(MAX_THINKING_BUDGET),
        (None, Some(other)) => {
            return Err(Unsupported(format!(
                "reasoning effort {other:?} has no Gemini thinking budget"
            )))
        }
    };
    Ok(Some(match budget {
        Some(0) => json!({ "thinkingBudget": 0 }),
        Some(budget) => json!({ "includeThoughts": true, "thinkingBudget": budget }),
        None => json!({ "includeThoughts": true }),
    }))
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

/// One content part of a candidate, as far as detour reads it.
#[derive(Debug)]
enum AnswerPart {
    Text(String),
    Thought(String),
    Call {
        id: Option<String>,
        name: String,
        arguments: String,
    },
}

/// One `GenerateContentResponse` (a whole answer, or one stream chunk), read.
#[derive(Debug, Default)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    has_candidate: bool,
    parts: Vec<AnswerPart>,
    finish: Option<String>,
    /// No candidate, and `promptFeedback.blockReason` says why.
    blocked: bool,
    usage: Option<Usage>,
}

fn malformed(message: impl std::fmt::Display) -> Malformed {
    Malformed(format!("Gemini answer: {message}"))
}

/// Reads one `GenerateContentResponse` object.
fn read_chunk(object: &Map<String, Value>) -> Result<Chunk, Malformed> {
    let mut chunk = Chunk {
        id: optional_string(object, "responseId", "responseId")?,
        model: optional_string(object, "modelVersion", "modelVersion")?,
        ..Chunk::default()
    };
    match object.get("candidates") {
        None | Some(Value::Null) => {}
        Some(Value::Array(candidates)) => {
            if let Some(candidate) = candidates.first() {
                read_candidate(candidate, &mut chunk)?;
            }
        }
        Some(_) => return Err(malformed("candidates is not an array")),
    }
    if !chunk.has_candidate {
        match object.get("promptFeedback") {
            None | Some(Value::Null) => {}
            Some(Value::Object(feedback)) => match feedback.get("blockReason") {
                None | Some(Value::Null) => {}
                Some(Value::String(_)) => chunk.blocked = true,
                Some(_) => return Err(malformed("promptFeedback.blockReason is not a string")),
            },
            Some(_) => return Err(malformed("promptFeedback is not an object")),
        }
    }
    match object.get("usageMetadata") {
        None | Some(Value::Null) => {}
        Some(usage) => chunk.usage = Some(read_usage(usage)?),
    }
    Ok(chunk)
}

fn read_candidate(candidate: &Value, chunk: &mut Chunk) -> Result<(), Malformed> {
    let candidate = candidate
        .as_object()
        .ok_or_else(|| malformed("candidates[0] is not an object"))?;
    chunk.has_candidate = true;
    chunk.finish = optional_string(candidate, "finishReason", "candidates[0].finishReason")?;
    let content = match candidate.get("content") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(content)) => content,
        Some(_) => return Err(malformed("candidates[0].content is not an object")),
    };
    let parts = match content.get("parts") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(malformed("candidates[0].content.parts is not an array")),
    };
    for (i, part) in parts.iter().enumerate() {
        if let Some(part) = read_part(part, i)? {
            chunk.parts.push(part);
        }
    }
    Ok(())
}

/// One part; `None` for a part holding only metadata (a bare `thoughtSignature`).
fn read_part(part: &Value, i: usize) -> Result<Option<AnswerPart>, Malformed> {
    let at = format!("candidates[0].content.parts[{i}]");
    let part = part
        .as_object()
        .ok_or_else(|| malformed(format_args!("{at} is not an object")))?;
    if let Some(call) = part.get("functionCall") {
        let call = call
            .as_object()
            .ok_or_else(|| malformed(format_args!("{at}.functionCall is not an object")))?;
        let name = match call.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => {
                return Err(malformed(format_args!(
                    "{at}.functionCall.name is missing or not a string"
                )))
            }
        };
        let id = optional_string(call, "id", "functionCall.id")?.filter(|id| !id.is_empty());
        let arguments = match call.get("args") {
            None | Some(Value::Null) => "{}".to_string(),
            Some(args @ Value::Object(_)) => args.to_string(),
            Some(_) => {
                return Err(malformed(format_args!(
                    "{at}.functionCall.args is not an object"
                )))
            }
        };
        return Ok(Some(AnswerPart::Call {
            id,
            name,
            arguments,
        }));
    }
    if let Some(text) = part.get("text") {
        let text = text
            .as_str()
            .ok_or_else(|| malformed(format_args!("{at}.text is not a string")))?;
        let thought = match part.get("thought") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(thought)) => *thought,
            Some(_) => return Err(malformed(format_args!("{at}.thought is not a boolean"))),
        };
        return Ok(Some(if thought {
            AnswerPart::Thought(text.to_string())
        } else {
            AnswerPart::Text(text.to_string())
        }));
    }
    const UNSUPPORTED: [&str; 5] = [
        "inlineData",
        "fileData",
        "executableCode",
        "codeExecutionResult",
        "functionResponse",
    ];
    if let Some(kind) = UNSUPPORTED.iter().find(|kind| part.contains_key(**kind)) {
        return Err(malformed(format_args!(
            "{at} is a {kind} part, which detour neither asks for nor carries"
        )));
    }
    Ok(None)
}

fn optional_string(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, Malformed> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(malformed(format_args!("{path} is not a string"))),
    }
}

/// `usageMetadata` in canonical form.
fn read_usage(usage: &Value) -> Result<Usage, Malformed> {
    let usage = usage
        .as_object()
        .ok_or_else(|| malformed("usageMetadata is not an object"))?;
    let prompt = token_count(usage, "promptTokenCount")?;
    let tool_prompt = token_count(usage, "toolUsePromptTokenCount")?;
    let candidates = token_count(usage, "candidatesTokenCount")?;
    let thoughts = token_count(usage, "thoughtsTokenCount")?;
    let cached = token_count(usage, "cachedContentTokenCount")?;
    let prompt_tokens = prompt.saturating_add(tool_prompt);
    Ok(Usage {
        prompt_tokens,
        completion_tokens: candidates.saturating_add(thoughts),
        cached_prompt_tokens: cached.min(prompt_tokens),
        cache_write_tokens: 0,
    })
}

/// A token count (0 when absent or null), or `Malformed` when it is not one (the shared
/// rule: `usage::token_count`).
fn token_count(usage: &Map<String, Value>, key: &str) -> Result<u64, Malformed> {
    crate::usage::token_count(usage.get(key))
        .map(Option::unwrap_or_default)
        .ok_or_else(|| malformed(format_args!("usageMetadata.{key} is not a token count")))
}

/// The canonical stop reason for a Gemini `finishReason`.
fn stop_reason(finish: Option<&str>, has_calls: bool) -> StopReason {
    match finish {
        Some("MAX_TOKENS") => StopReason::MaxTokens,
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => StopReason::ContentFilter,
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

/// The id of the `n`th function call of an answer that gave none: unique across turns
/// (Anthropic rejects a conversation repeating a `tool_use` id), so it carries the answer's
/// id, reduced to the characters every protocol's id pattern allows.
fn synthesized_call_id(response_id: &str, n: usize) -> String {
    let id: String = response_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(48)
        .collect();
    if id.is_empty() {
        format!("call_{n}")
    } else {
        format!("call_{id}_{n}")
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(malformed("not a JSON object")),
        Err(error) => Err(malformed(format_args!("not JSON ({error})"))),
    }
}

/// Provider side: a `GenerateContentResponse` into canonical form.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, Malformed> {
    let object = parse_object(body)?;
    let chunk = read_chunk(&object)?;
    if !chunk.has_candidate && !chunk.blocked {
        return Err(malformed("no candidates and no promptFeedback.blockReason"));
    }
    let id = chunk.id.unwrap_or_default();
    let mut calls = 0usize;
    let mut content = Vec::with_capacity(chunk.parts.len());
    for part in chunk.parts {
        match part {
            AnswerPart::Text(text) => {
                if !text.is_empty() {
                    content.push(Part::Text(text));
                }
            }
            AnswerPart::Thought(text) => {
                if !text.is_empty() {
                    content.push(Part::Thinking {
                        text,
                        signature: None,
                    });
                }
            }
            AnswerPart::Call {
                id: call_id,
                name,
                arguments,
            } => {
                let call_id = call_id.unwrap_or_else(|| synthesized_call_id(&id, calls));
                calls = calls.saturating_add(1);
                content.push(Part::ToolCall(super::ToolCall {
                    id: call_id,
                    name,
                    arguments,
                }));
            }
        }
    }
    let stop = if chunk.blocked {
        StopReason::ContentFilter
    } else {
        stop_reason(chunk.finish.as_deref(), calls > 0)
    };
    Ok(ChatResponse {
        id,
        model: chunk.model.unwrap_or_default(),
        content,
        stop,
        usage: chunk.usage,
    })
}

/// Provider side: a Google API error body (`{"error":{"code","message","status"}}`, or the
/// same wrapped in an array).
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let value = match value {
        Value::Array(items) => items.into_iter().next()?,
        value => value,
    };
    let error = value.get("error")?.as_object()?;
    let status = error
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| status.clone())
        .or_else(|| {
            error
                .get("code")
                .and_then(Value::as_i64)
                .map(|c| format!("error {c}"))
        })?;
    Some(ProviderError {
        kind: status,
        message,
    })
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// The kind of the text block open in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
}

/// Provider side: `streamGenerateContent?alt=sse` events into canonical ones.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// `Start` was emitted.
    started: bool,
    /// The answer's id (from the first chunk that has one), for synthesized call ids.
    response_id: String,
    /// The next canonical block index.
    next_index: usize,
    /// The text or thinking block text goes to, if still open.
    open: Option<(Block, usize)>,
    /// Function calls seen.
    calls: usize,
    /// `Finish` was emitted.
    finished: bool,
    /// The last usage emitted.
    usage: Option<Usage>,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    fn new_block(&mut self) -> usize {
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        index
    }

    /// The index of the open block of `kind`, opening one if needed.
    fn block(&mut self, kind: Block) -> usize {
        match self.open {
            Some((open, index)) if open == kind => index,
            _ => {
                let index = self.new_block();
                self.open = Some((kind, index));
                index
            }
        }
    }

    /// One SSE event (one `GenerateContentResponse` chunk).
    pub fn event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, Malformed> {
        if event.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let object = parse_object(event.data.as_bytes())?;
        if let Some(error) = object.get("error") {
            let error = error.as_object();
            let field = |key: &str| {
                error
                    .and_then(|e| e.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(malformed(format_args!(
                "the stream carried an error: {} {}",
                field("status"),
                field("message")
            )));
        }
        let chunk = read_chunk(&object)?;
        let mut out = Vec::new();
        if self.response_id.is_empty() {
            if let Some(id) = &chunk.id {
                self.response_id.clone_from(id);
            }
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.clone().unwrap_or_default(),
                model: chunk.model.clone().unwrap_or_default(),
            });
        }
        for part in chunk.parts {
            match part {
                AnswerPart::Text(text) => {
                    if !text.is_empty() {
                        let index = self.block(Block::Text);
                        out.push(StreamEvent::Text { index, text });
                    }
                }
                AnswerPart::Thought(text) => {
                    if !text.is_empty() {
                        let index = self.block(Block::Thinking);
                        out.push(StreamEvent::Thinking { index, text });
                    }
                }
                AnswerPart::Call {
                    id,
                    name,
                    arguments,
                } => {
                    let id =
                        id.unwrap_or_else(|| synthesized_call_id(&self.response_id, self.calls));
                    self.calls = self.calls.saturating_add(1);
                    self.open = None;
                    let index = self.new_block();
                    out.push(StreamEvent::ToolCallStart { index, id, name });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        json: arguments,
                    });
                }
            }
        }
        if !self.finished {
            let stop = if chunk.blocked {
                Some(StopReason::ContentFilter)
            } else {
                chunk
                    .finish
                    .as_deref()
                    .map(|finish| stop_reason(Some(finish), self.calls > 0))
            };
            if let Some(stop) = stop {
                self.finished = true;
                out.push(StreamEvent::Finish(stop));
            }
        }
        if let Some(usage) = chunk.usage {
            if self.usage != Some(usage) {
                self.usage = Some(usage);
                out.push(StreamEvent::Usage(usage));
            }
        }
        Ok(out)
    }

    /// End of the stream: `Err` when no chunk carried a finish reason.
    pub fn end(&mut self) -> Result<Vec<StreamEvent>, Malformed> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(malformed("the stream ended before any finishReason"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_split() {
        assert_eq!(
            data_url("data:image/png;base64,iVBO"),
            Some(("image/png", "iVBO"))
        );
        assert_eq!(data_url("data:image/png,iVBO"), None);
        assert_eq!(data_url("data:;base64,iVBO"), None);
        assert_eq!(data_url("https://example.com/a.png"), None);
    }

    #[test]
    fn synthesized_ids_keep_safe_characters() {
        assert_eq!(synthesized_call_id("", 3), "call_3");
        assert_eq!(synthesized_call_id("ab/c+d=", 0), "call_abcd_0");
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(Some("STOP"), false), StopReason::EndTurn);
        assert_eq!(stop_reason(Some("STOP"), true), StopReason::ToolUse);
        assert_eq!(stop_reason(Some("MAX_TOKENS"), true), StopReason::MaxTokens);
        assert_eq!(stop_reason(Some("SPII"), false), StopReason::ContentFilter);
        assert_eq!(stop_reason(Some("LANGUAGE"), false), StopReason::EndTurn);
        assert_eq!(stop_reason(None, false), StopReason::EndTurn);
    }

    #[test]
    fn token_counts_are_bounded() {
        let usage = json!({"a": 1, "b": 2.0, "c": -1, "d": 1.5, "e": 1e13, "f": "3"});
        let usage = usage.as_object().unwrap();
        assert_eq!(token_count(usage, "a"), Ok(1));
        assert_eq!(token_count(usage, "b"), Ok(2));
        assert_eq!(token_count(usage, "missing"), Ok(0));
        for key in ["c", "d", "e", "f"] {
            assert!(token_count(usage, key).is_err(), "{key}");
        }
    }
}
