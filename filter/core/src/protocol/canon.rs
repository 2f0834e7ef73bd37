//! The canonical model: one request, one answer and one stream grammar that every
//! protocol decodes into and encodes from.
//!
//! A request crosses protocols as `client protocol → canonical → provider protocol`, and
//! its answer as `provider protocol → canonical → client protocol`. The model holds what
//! the four protocols share (messages, system text, tools and tool calls, images by
//! reference or inline data, sampling parameters, output cap, stop sequences, usage with
//! cache reads and writes). What only one protocol can say is listed in
//! [`ChatRequest::untranslatable`]: such a request still goes, untouched, to deployments
//! speaking its own protocol, and skips the others with that reason recorded.
//!
//! Invariants every codec keeps:
//! - decoding never panics and never trusts sizes: bad input is an [`Invalid`] naming the
//!   field (client side) or a [`Malformed`] (provider side);
//! - a field the canonical model has no place for is either dropped because it is only a
//!   hint (documented at the codec) or named in `untranslatable`, never silently changed
//!   into something else;
//! - tool-call arguments travel as JSON *text*, exactly as the model produced them.

use serde_json::Value;

use crate::usage::Usage;

/// A wire protocol detour speaks, on the client side, the provider side, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI Chat Completions (`/v1/chat/completions`), and every OpenAI-compatible server.
    OpenAiChat,
    /// OpenAI Responses (`/v1/responses`): client side.
    OpenAiResponses,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini `generateContent` / `streamGenerateContent`: provider side.
    Gemini,
}

impl Protocol {
    /// A short name for messages and events.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::OpenAiChat => "openai-chat",
            Protocol::OpenAiResponses => "openai-responses",
            Protocol::Anthropic => "anthropic",
            Protocol::Gemini => "gemini",
        }
    }
}

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// System (developer) instructions, in order. Protocols with one system string join
    /// them with a blank line.
    pub system: Vec<String>,
    /// The conversation, oldest first. Never empty after a successful decode.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use them.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn (`None`: provider default).
    pub parallel_tool_calls: Option<bool>,
    /// The output cap.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini; OpenAI has none: dropped as a hint there).
    pub top_k: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Stream the answer.
    pub stream: bool,
    /// Structured output: plain JSON, or JSON matching a schema.
    pub response_format: Option<ResponseFormat>,
    /// Extended thinking / reasoning, when the client asked for it.
    pub reasoning: Option<Reasoning>,
    /// An end-user id for abuse tracking (`user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Features of the client's request that only its own protocol can express, one
    /// phrase each (`"content part of type input_audio"`). Empty when the request can go
    /// to any protocol.
    pub untranslatable: Vec<String>,
}

/// Who speaks a message. System text is not a message (see [`ChatRequest::system`]);
/// tool results travel inside user messages as [`Part::ToolResult`], the way Anthropic
/// and Gemini carry them (the OpenAI codec splits them into `role: tool` messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The human, or the application on its behalf (and tool results).
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said, in order.
    pub content: Vec<Part>,
}

/// Appends parts as a message of `role`, joining the previous message when it has the
/// same role: protocols that split a turn into several items (OpenAI's `tool` messages,
/// Responses' `function_call` items) meet the canonical one-message-per-turn shape.
pub fn push_parts(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(parts),
        _ => messages.push(Message {
            role,
            content: parts,
        }),
    }
}

/// One piece of a message or of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image.
    Image(Image),
    /// The model calls a tool (assistant messages and answers).
    ToolCall(ToolCall),
    /// The result of a tool call (user messages).
    ToolResult(ToolResult),
    /// The model's visible reasoning (Anthropic `thinking` blocks, OpenAI-compatible
    /// `reasoning_content`). Encoders for protocols without it drop it from requests.
    Thinking {
        /// The reasoning text.
        text: String,
        /// Anthropic's signature, needed to send the block back to Anthropic.
        signature: Option<String>,
    },
}

/// An image, by reference or inline.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// An `http(s)://` URL the provider fetches.
    Url(String),
    /// Inline bytes, base64-encoded.
    Base64 {
        /// `image/png`, `image/jpeg`, …
        media_type: String,
        /// The base64 text (not decoded: detour only carries it).
        data: String,
    },
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id (synthesised as `call_<n>` for protocols without ids, e.g. Gemini).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text (an object), as the model produced them.
    pub arguments: String,
}

/// What a tool returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The id of the call it answers.
    pub call_id: String,
    /// The tool's name when the protocol carries it (Gemini needs it; encoders look it up
    /// from the matching [`ToolCall`] otherwise).
    pub name: Option<String>,
    /// The result: text and images.
    pub content: Vec<Part>,
    /// The tool failed.
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Its parameters as a JSON Schema object.
    pub parameters: Value,
}

/// How the model must use the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Named(String),
}

/// Structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    Json,
    /// JSON matching this schema.
    JsonSchema {
        /// The schema's name (OpenAI requires one).
        name: String,
        /// The JSON Schema.
        schema: Value,
        /// OpenAI's `strict`.
        strict: Option<bool>,
    },
}

/// Extended thinking / reasoning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reasoning {
    /// A token budget for thinking (Anthropic `thinking.budget_tokens`, Gemini
    /// `thinkingConfig.thinkingBudget`).
    pub budget_tokens: Option<u64>,
    /// An effort level (`low`, `medium`, `high`: OpenAI `reasoning_effort`).
    pub effort: Option<String>,
}

/// A complete (non-streamed) answer in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    /// The provider's id for the answer.
    pub id: String,
    /// The model as the provider names it.
    pub model: String,
    /// Text, thinking and tool calls, in order.
    pub content: Vec<Part>,
    /// Why the model stopped.
    pub stop: StopReason,
    /// Token counts, when reported.
    pub usage: Option<Usage>,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopReason {
    /// It finished its turn.
    #[default]
    EndTurn,
    /// It hit the output cap.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// It wants tool results.
    ToolUse,
    /// The provider's safety system stopped or refused the answer.
    ContentFilter,
}

/// One step of a streamed answer, in canonical form.
///
/// Content blocks are numbered in the order they start (`index` 0, 1, …), across text,
/// thinking and tool calls; a decoder maps each protocol's own numbering onto that.
/// [`StreamEvent::Usage`] carries the totals known so far (the last one counts), and may
/// come before or after [`StreamEvent::Finish`]; encoders write their closing events at the
/// end of the stream, when both are known.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer begins.
    Start {
        /// The provider's id for it.
        id: String,
        /// The model as the provider names it.
        model: String,
    },
    /// Text for block `index`.
    Text {
        /// The block.
        index: usize,
        /// The new text.
        text: String,
    },
    /// Reasoning text for block `index`.
    Thinking {
        /// The block.
        index: usize,
        /// The new text.
        text: String,
    },
    /// Block `index` is a tool call.
    ToolCallStart {
        /// The block.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More JSON text of the arguments of the tool call in block `index`.
    ToolCallArgs {
        /// The block.
        index: usize,
        /// The next piece of the arguments.
        json: String,
    },
    /// The model stopped.
    Finish(StopReason),
    /// Token totals so far.
    Usage(Usage),
}

/// A client request that is valid JSON but not valid for its protocol: the answer is
/// that protocol's 400, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, as a path (`messages[2].content[0].type`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A provider answer that does not parse in its protocol: a failure of that deployment
/// (retry rules apply), never a success passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// A request the provider's protocol cannot express: the deployment is skipped with this
/// reason recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// A provider's error answer, read from its own error shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderError {
    /// The provider's error type or status (`rate_limit_error`, `RESOURCE_EXHAUSTED`,
    /// `invalid_request_error`), when it gave one.
    pub kind: Option<String>,
    /// Its message.
    pub message: String,
}
