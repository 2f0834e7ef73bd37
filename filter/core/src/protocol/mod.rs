//! Wire protocols: how requests, answers, streams and errors look in each protocol detour
//! speaks, and the canonical model ([`canon`]) they all translate through.
//!
//! | protocol | client side (detour accepts) | provider side (detour sends) |
//! |---|---|---|
//! | OpenAI Chat Completions ([`openai_chat`]) | `POST /v1/chat/completions` | `openai/`, unprefixed, every OpenAI-compatible server |
//! | OpenAI Responses ([`openai_responses`]) | `POST /v1/responses` | — (sent as Chat Completions) |
//! | Anthropic Messages ([`anthropic`]) | `POST /v1/messages` | `anthropic/` |
//! | Gemini ([`gemini`]) | — | `gemini/` |
//!
//! # The codec contract
//!
//! Every codec module is data in, data out: no I/O, no clock, no panics. It offers the
//! functions below for the sides it serves (client side: decode the request, encode the
//! answer, the stream and errors; provider side: encode the request, decode the answer, the
//! stream and errors):
//!
//! ```text
//! decode_request(&Map<String, Value>) -> Result<ChatRequest, Invalid>          client side
//! encode_response(&ChatResponse) -> Value                                      client side
//! StreamEncoder::new(..), .event(&StreamEvent, &mut Vec<u8>), .end(complete, &mut Vec<u8>)
//! encode_error(status, &ProviderError) -> Value                                client side
//! encode_request(&ChatRequest, provider_model) -> Result<Value, Unsupported>   provider side
//! decode_response(&[u8]) -> Result<ChatResponse, Malformed>                    provider side
//! StreamDecoder::new(), .event(&SseEvent) -> Result<Vec<StreamEvent>, Malformed>, .end()
//! decode_error(&[u8]) -> Option<ProviderError>                                 provider side
//! ```
//!
//! When the client and the deployment speak the same protocol, none of this runs: the body
//! goes through with only `model` replaced, and the answer comes back byte for byte (see
//! `request.rs` and `meter.rs`). Translation is for crossing protocols only.

pub mod anthropic;
pub mod canon;
pub mod gemini;
pub mod openai_chat;
pub mod openai_responses;
pub mod sse;
pub mod transcode;

pub use canon::{
    ChatRequest, ChatResponse, Image, Invalid, Malformed, Message, Part, Protocol, ProviderError,
    Reasoning, ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolCall, ToolChoice,
    ToolResult, Unsupported,
};
