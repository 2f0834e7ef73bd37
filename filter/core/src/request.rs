//! The client's request: which endpoint, which group, how big, and its body per deployment.
//!
//! A request goes to a deployment of its own protocol untouched except for `model` (and,
//! for OpenAI streams, `stream_options.include_usage`); to a deployment of another
//! protocol it is translated through the canonical model (see `protocol`). Anthropic
//! Messages and OpenAI Responses bodies are decoded, and so validated, on arrival; a Chat
//! Completions body only when a deployment of another protocol is tried, so the common
//! OpenAI-to-OpenAI path pays nothing for translation.

use std::cell::OnceCell;

use serde_json::{Map, Value};

use crate::config::{Config, Deployment};
use crate::outgoing::{self, Outgoing};
use crate::protocol::{
    anthropic, gemini, openai_chat, openai_responses, ChatRequest, Invalid, Protocol, Unsupported,
};
use crate::respond::{self, Response};

/// Request body fields a client may not send: they would pick the upstream or its key.
const BANNED_BODY_FIELDS: [&str; 4] = ["api_base", "base_url", "api_key", "api_version"];

/// An endpoint detour routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions` (OpenAI)
    ChatCompletions,
    /// `POST /v1/completions` (OpenAI, legacy)
    Completions,
    /// `POST /v1/embeddings` (OpenAI)
    Embeddings,
    /// `POST /v1/messages` (Anthropic)
    Messages,
    /// `POST /v1/responses` (OpenAI)
    Responses,
}

impl Endpoint {
    /// The path after an OpenAI-compatible `api_base` prefix. Messages and Responses
    /// requests reach OpenAI-compatible deployments as Chat Completions.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => {
                "/chat/completions"
            }
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// The path the client called, for messages.
    pub fn client_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// The protocol the client speaks on this endpoint.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Anthropic,
            Endpoint::Responses => Protocol::OpenAiResponses,
            _ => Protocol::OpenAiChat,
        }
    }

    /// The client's protocol for a path, for shaping errors (OpenAI's when unknown).
    pub fn protocol_of_path(path: &str) -> Protocol {
        Endpoint::from_path(path).map_or(Protocol::OpenAiChat, |(e, _)| e.protocol())
    }

    /// Recognises `/v1/chat/completions` or `/chat/completions` (query string ignored).
    pub fn from_path(path: &str) -> Option<(Self, &str)> {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path, ""),
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let endpoint = match path {
            "/chat/completions" => Endpoint::ChatCompletions,
            "/completions" => Endpoint::Completions,
            "/embeddings" => Endpoint::Embeddings,
            "/messages" => Endpoint::Messages,
            "/responses" => Endpoint::Responses,
            _ => return None,
        };
        Some((endpoint, query))
    }
}

/// A client request that passed validation.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// Which endpoint it calls.
    pub endpoint: Endpoint,
    /// The query string, passed on unchanged (without `?`).
    pub query: String,
    /// The `model` field, if present.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// Estimated prompt tokens, for context-window checks and cost estimates.
    pub estimated_input_tokens: u64,
    /// The output cap the client set (`max_completion_tokens` or `max_tokens`).
    pub max_tokens: Option<u64>,
    /// The client asked for usage in its stream (`stream_options.include_usage`). When it
    /// did not, detour asks on its behalf (spend must be counted) and strips the usage
    /// chunk from what the client sees.
    pub client_wants_usage: bool,
    body: Map<String, Value>,
    /// The body in canonical form: decoded on arrival for Messages and Responses, on
    /// first need for Chat Completions.
    canonical: OnceCell<Result<ChatRequest, Invalid>>,
    /// The client's `anthropic-beta` header, for Anthropic deployments of an Anthropic
    /// client (the beta features it names are in the untouched body).
    anthropic_beta: Option<String>,
}

impl ParsedRequest {
    /// Validates method, path and body. Errors are the client's answer.
    pub fn parse(
        config: &Config,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Self, Box<Response>> {
        let Some((endpoint, query)) = Endpoint::from_path(path) else {
            return Err(Box::new(respond::client_error(
                404,
                "not_found",
                format!(
                    "detour routes POST /v1/chat/completions, /v1/messages, /v1/responses, /v1/completions and /v1/embeddings (and GET /v1/models); {} is not one of them",
                    printable(path)
                ),
            )));
        };
        if !method.eq_ignore_ascii_case("POST") {
            return Err(Box::new(respond::client_error(
                405,
                "method_not_allowed",
                format!("{} must be called with POST", endpoint.client_path()),
            )));
        }
        if body.len() as u64 > config.settings.max_request_body_bytes {
            return Err(Box::new(body_too_large(config)));
        }
        let text = std::str::from_utf8(body).map_err(|err| {
            Box::new(respond::client_error(
                400,
                "invalid_request_body",
                format!(
                    "request body is not valid UTF-8 (at byte {})",
                    err.valid_up_to()
                ),
            ))
        })?;
        if text.trim().is_empty() {
            return Err(Box::new(respond::client_error(
                400,
                "invalid_request_body",
                "request body is empty; send a JSON object",
            )));
        }
        let value: Value = serde_json::from_str(text).map_err(|err| {
            Box::new(respond::client_error(
                400,
                "invalid_request_body",
                format!("request body is not valid JSON: {err}"),
            ))
        })?;
        let Value::Object(body) = value else {
            return Err(Box::new(respond::client_error(
                400,
                "invalid_request_body",
                "request body must be a JSON object",
            )));
        };
        if let Some(field) = BANNED_BODY_FIELDS.iter().find(|f| body.contains_key(**f)) {
            return Err(Box::new(respond::client_error(
                400,
                "invalid_request_body",
                format!("`{field}` may not be set by clients: detour chooses the upstream and its credentials"),
            )));
        }
        let model = match body.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) => Some(model.clone()),
            Some(_) => {
                return Err(Box::new(respond::client_error(
                    400,
                    "invalid_request_body",
                    "`model` must be a string naming a route group",
                )))
            }
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => {
                return Err(Box::new(respond::client_error(
                    400,
                    "invalid_request_body",
                    "`stream` must be true or false",
                )))
            }
        };
        if endpoint == Endpoint::ChatCompletions {
            match body.get("messages") {
                Some(Value::Array(messages)) if !messages.is_empty() => {}
                Some(Value::Array(_)) => {
                    return Err(Box::new(respond::client_error(
                        400,
                        "invalid_request_body",
                        "`messages` must not be empty",
                    )))
                }
                _ => {
                    return Err(Box::new(respond::client_error(
                        400,
                        "invalid_request_body",
                        "`messages` is required and must be a list",
                    )))
                }
            }
        }
        let canonical = OnceCell::new();
        let decode = match endpoint {
            Endpoint::Messages => Some(anthropic::decode_request as Decode),
            Endpoint::Responses => Some(openai_responses::decode_request as Decode),
            _ => None,
        };
        if let Some(decode) = decode {
            let request = decode(&body).map_err(|invalid| Box::new(invalid_field(&invalid)))?;
            let _ = canonical.set(Ok(request));
        }
        let estimated_input_tokens = estimate_input_tokens(&body);
        let mut max_tokens = None;
        for key in ["max_completion_tokens", "max_tokens", "max_output_tokens"] {
            match body.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    max_tokens = max_tokens.or(n.as_u64());
                }
                Some(_) => {
                    return Err(Box::new(respond::client_error(
                        400,
                        "invalid_request_body",
                        format!("`{key}` must be a non-negative whole number"),
                    )))
                }
            }
        }
        let client_wants_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(ParsedRequest {
            endpoint,
            query: query.to_string(),
            model,
            stream,
            estimated_input_tokens,
            max_tokens,
            client_wants_usage,
            body,
            canonical,
            anthropic_beta: None,
        })
    }

    /// Keeps the client's `anthropic-beta` header: an Anthropic client's body may use the
    /// beta features it names, so every Anthropic deployment that gets the body untouched
    /// gets the header too (a translated request uses no beta feature and goes without).
    pub fn with_anthropic_beta(mut self, value: Option<String>) -> Self {
        self.anthropic_beta = value.filter(|v| !v.trim().is_empty());
        self
    }

    /// The protocol the client speaks.
    pub fn protocol(&self) -> Protocol {
        self.endpoint.protocol()
    }

    /// What to send to `deployment`, in its protocol; `Unsupported` when its protocol
    /// cannot express this request (the deployment is skipped with that reason).
    pub fn attempt_for(&self, deployment: &Deployment) -> Result<Outgoing, Unsupported> {
        let mut headers = outgoing::headers(deployment);
        if deployment.protocol == self.protocol() {
            if let (Protocol::Anthropic, Some(beta)) = (deployment.protocol, &self.anthropic_beta) {
                headers.push(("anthropic-beta".to_string(), beta.clone()));
            }
            return Ok(Outgoing {
                path: outgoing::path(deployment, self.endpoint.suffix(), self.stream, &self.query),
                headers,
                body: self.body_for(deployment),
            });
        }
        if matches!(self.endpoint, Endpoint::Completions | Endpoint::Embeddings) {
            return Err(Unsupported(format!(
                "{} is served by OpenAI-compatible deployments only",
                self.endpoint.client_path()
            )));
        }
        let request = self
            .canonical
            .get_or_init(|| openai_chat::decode_request(&self.body))
            .as_ref()
            .map_err(|invalid| {
                Unsupported(format!(
                    "the request cannot be translated ({}: {})",
                    invalid.field, invalid.message
                ))
            })?;
        if !request.untranslatable.is_empty() {
            return Err(Unsupported(format!(
                "only {} deployments can take {}",
                self.protocol().name(),
                request.untranslatable.join(", ")
            )));
        }
        let body = match deployment.protocol {
            Protocol::OpenAiChat | Protocol::OpenAiResponses => openai_chat::encode_request(
                request,
                &deployment.provider_model,
                outgoing::is_openai_platform(deployment),
            ),
            Protocol::Anthropic => anthropic::encode_request(request, &deployment.provider_model)?,
            Protocol::Gemini => gemini::encode_request(request)?,
        };
        Ok(Outgoing {
            // The client's query string belongs to its own protocol's API.
            path: outgoing::path(deployment, self.endpoint.suffix(), self.stream, ""),
            headers,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        })
    }

    /// The body for a deployment of the client's own protocol: the provider's model name
    /// instead of the group's.
    fn body_for(&self, deployment: &Deployment) -> Vec<u8> {
        // A stream's usage arrives only when asked for; without it the spend of a
        // streamed answer could not be counted.
        let ask_usage = self.stream
            && !self.client_wants_usage
            && matches!(
                self.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            );
        let rewritten;
        let body = if self.endpoint == Endpoint::Messages && has_unsigned_thinking(&self.body) {
            let mut copy = self.body.clone();
            drop_unsigned_thinking(&mut copy);
            rewritten = copy;
            &rewritten
        } else {
            &self.body
        };
        let out = Passthrough {
            body,
            model: &deployment.provider_model,
            ask_usage,
        };
        // Serialising JSON values cannot fail (string keys only); an empty body would be
        // rejected upstream rather than crash the worker.
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

/// The client's body as a deployment of its own protocol gets it, written straight from
/// the parsed body without copying it: `model` replaced, and `stream_options.include_usage`
/// set when detour asks for a stream's usage. Every other field passes as the client sent
/// it (keys in the order the parsed map keeps them).
struct Passthrough<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    ask_usage: bool,
}

impl serde::Serialize for Passthrough<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.body {
            match key.as_str() {
                "model" => map.serialize_entry(key, self.model)?,
                "stream_options" if self.ask_usage => {
                    let mut options = match value {
                        Value::Object(options) => options.clone(),
                        _ => Map::new(),
                    };
                    options.insert("include_usage".into(), Value::Bool(true));
                    map.serialize_entry(key, &options)?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        if !self.body.contains_key("model") {
            map.serialize_entry("model", self.model)?;
        }
        if self.ask_usage && !self.body.contains_key("stream_options") {
            map.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        map.end()
    }
}

/// Whether an Anthropic body's history has a `thinking` block without a signature.
fn has_unsigned_thinking(body: &Map<String, Value>) -> bool {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return false;
    };
    messages.iter().any(|message| {
        message
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| blocks.iter().any(is_unsigned_thinking))
    })
}

fn is_unsigned_thinking(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("thinking")
        && block
            .get("signature")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
}

/// Removes `thinking` blocks without a signature from an Anthropic body's history.
///
/// Thinking that another provider produced reaches Anthropic clients with an empty
/// signature (there is none to give); sent back to Anthropic it would be refused as
/// invalid, so it is dropped, as a request translated from another protocol drops it.
fn drop_unsigned_thinking(body: &mut Map<String, Value>) {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    for message in messages {
        if let Some(Value::Array(blocks)) = message.get_mut("content") {
            blocks.retain(|block| !is_unsigned_thinking(block));
        }
    }
}

impl ParsedRequest {
    /// Output tokens to assume for estimates: the client's cap, else `default` (0 for
    /// embeddings, which produce no output tokens).
    pub fn output_estimate(&self, default: u64) -> u64 {
        if self.endpoint == Endpoint::Embeddings {
            0
        } else {
            self.max_tokens.unwrap_or(default)
        }
    }
}

/// A client-side decoder of one protocol.
type Decode = fn(&Map<String, Value>) -> Result<ChatRequest, Invalid>;

/// The 400 for a body that is valid JSON but not valid for its protocol, naming the field.
fn invalid_field(invalid: &Invalid) -> Response {
    respond::invalid_param(&invalid.field, &invalid.message)
}

/// The answer to a body over `detour.max_request_body_bytes`.
pub fn body_too_large(config: &Config) -> Response {
    respond::client_error(
        413,
        "request_too_large",
        format!(
            "request body exceeds detour's limit of {} bytes",
            config.settings.max_request_body_bytes
        ),
    )
}

/// A rough prompt size: characters of the text the model reads, over four, plus a few
/// tokens per message. Good enough to tell an 8k window from a 128k one; never used for
/// billing.
fn estimate_input_tokens(body: &Map<String, Value>) -> u64 {
    let mut chars: u64 = 0;
    let mut n_messages: u64 = 0;
    for key in [
        "messages",
        "prompt",
        "input",
        "tools",
        "functions",
        "system",
        "instructions",
    ] {
        if let Some(value) = body.get(key) {
            if let (Value::Array(items), "messages") = (value, key) {
                n_messages = items.len() as u64;
            }
            chars = chars.saturating_add(text_chars(value, 0));
        }
    }
    chars
        .div_ceil(4)
        .saturating_add(n_messages.saturating_mul(4))
}

/// Characters of every string inside `value`. Depth-limited: a hostile body cannot recurse
/// without bound (serde_json already caps parsing depth at 128).
fn text_chars(value: &Value, depth: u32) -> u64 {
    if depth > 64 {
        return 0;
    }
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().fold(0u64, |acc, v| {
            acc.saturating_add(text_chars(v, depth.saturating_add(1)))
        }),
        Value::Object(map) => map.values().fold(0u64, |acc, v| {
            acc.saturating_add(text_chars(v, depth.saturating_add(1)))
        }),
        _ => 0,
    }
}

/// A path for an error message: at most 200 characters, control characters replaced.
fn printable(path: &str) -> String {
    path.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `GET /v1/models` (or `/models`): the route groups and their listed aliases, as a list both the OpenAI SDKs
/// (`object`, `id`, `created`, `owned_by`) and the Anthropic SDKs (`type`, `id`,
/// `display_name`, `created_at`, `has_more`, `first_id`, `last_id`) read. `None` for any
/// other request.
pub fn models_answer(config: &Config, method: &str, path: &str) -> Option<Response> {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    let bare = bare.trim_end_matches('/');
    let bare = bare.strip_prefix("/v1").unwrap_or(bare);
    if bare != "/models" || !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let names: Vec<&String> = config
        .groups
        .keys()
        .chain(
            config
                .aliases
                .iter()
                .filter(|(_, alias)| !alias.hidden)
                .map(|(name, _)| name),
        )
        .collect();
    let data: Vec<Value> = names
        .iter()
        .map(|name| {
            serde_json::json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "detour",
                "type": "model",
                "display_name": name,
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": names.first(),
        "last_id": names.last(),
    });
    Some(Response {
        status: 200,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    })
}
