//! Answers across protocols: a provider's answer, stream or error, in the client's
//! protocol.
//!
//! Streams are translated event by event as they pass ([`StreamTranscoder`]): nothing
//! waits for the whole answer. A same-protocol Anthropic stream is not translated but
//! watched ([`StreamTranscoder::watching`]): its bytes pass unchanged while its usage is
//! read.

use serde_json::Value;

use super::sse::{SseEvent, SseParser};
use super::{
    anthropic, gemini, openai_chat, openai_responses, ChatResponse, Malformed, Protocol,
    ProviderError, StreamEvent,
};
use crate::usage::Usage;

/// How an answer reaches the client: from which protocol into which, and whether the
/// client asked for stream usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerPlan {
    /// The protocol the client speaks.
    pub client: Protocol,
    /// The protocol of the deployment that answers.
    pub provider: Protocol,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for usage in its (OpenAI) stream.
    pub client_wants_usage: bool,
}

impl AnswerPlan {
    /// Whether the answer must be translated.
    pub fn translates(&self) -> bool {
        self.client != self.provider
    }
}

/// A provider-side stream decoder.
#[derive(Debug)]
enum Decoder {
    OpenAiChat(openai_chat::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
}

impl Decoder {
    fn new(protocol: Protocol) -> Option<Self> {
        match protocol {
            Protocol::OpenAiChat => Some(Decoder::OpenAiChat(openai_chat::StreamDecoder::new())),
            Protocol::Anthropic => Some(Decoder::Anthropic(anthropic::StreamDecoder::new())),
            Protocol::Gemini => Some(Decoder::Gemini(gemini::StreamDecoder::new())),
            Protocol::OpenAiResponses => None,
        }
    }

    fn event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, Malformed> {
        match self {
            Decoder::OpenAiChat(d) => d.event(event),
            Decoder::Anthropic(d) => d.event(event),
            Decoder::Gemini(d) => d.event(event),
        }
    }

    fn end(&mut self) -> Result<Vec<StreamEvent>, Malformed> {
        match self {
            Decoder::OpenAiChat(d) => d.end(),
            Decoder::Anthropic(d) => d.end(),
            Decoder::Gemini(d) => d.end(),
        }
    }
}

/// A client-side stream encoder.
#[derive(Debug)]
enum Encoder {
    OpenAiChat(openai_chat::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    Responses(openai_responses::StreamEncoder),
}

impl Encoder {
    fn new(plan: &AnswerPlan) -> Option<Self> {
        match plan.client {
            Protocol::OpenAiChat => Some(Encoder::OpenAiChat(openai_chat::StreamEncoder::new(
                plan.client_wants_usage,
            ))),
            Protocol::Anthropic => Some(Encoder::Anthropic(anthropic::StreamEncoder::new())),
            Protocol::OpenAiResponses => {
                Some(Encoder::Responses(openai_responses::StreamEncoder::new()))
            }
            Protocol::Gemini => None,
        }
    }

    fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAiChat(e) => e.event(event, out),
            Encoder::Anthropic(e) => e.event(event, out),
            Encoder::Responses(e) => e.event(event, out),
        }
    }

    fn end(&mut self, complete: bool, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAiChat(e) => e.end(complete, out),
            Encoder::Anthropic(e) => e.end(complete, out),
            Encoder::Responses(e) => e.end(complete, out),
        }
    }
}

/// A streamed answer on its way from the provider's protocol to the client's.
#[derive(Debug)]
pub struct StreamTranscoder {
    parser: SseParser,
    decoder: Decoder,
    /// `None`: watching only (same protocol), bytes pass unchanged.
    encoder: Option<Encoder>,
    usage: Option<Usage>,
    /// The stream broke (bad SSE, bad event, provider error event): nothing more is
    /// decoded, and the client got the protocol's error event.
    failed: Option<Malformed>,
    ended: bool,
}

impl StreamTranscoder {
    /// A transcoder for a plan that translates; `None` when the plan's protocols have no
    /// stream codec on that side.
    pub fn translating(plan: &AnswerPlan) -> Option<Self> {
        Some(StreamTranscoder {
            parser: SseParser::new(),
            decoder: Decoder::new(plan.provider)?,
            encoder: Some(Encoder::new(plan)?),
            usage: None,
            failed: None,
            ended: false,
        })
    }

    /// A watcher: reads usage from a stream that passes untranslated.
    pub fn watching(protocol: Protocol) -> Option<Self> {
        Some(StreamTranscoder {
            parser: SseParser::new(),
            decoder: Decoder::new(protocol)?,
            encoder: None,
            usage: None,
            failed: None,
            ended: false,
        })
    }

    /// Whether the bytes change on the way (then the glue replaces each chunk).
    pub fn rewrites(&self) -> bool {
        self.encoder.is_some()
    }

    /// Feeds one chunk of the provider's stream; returns the bytes for the client.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed.is_some() || self.ended {
            return if self.encoder.is_some() {
                out
            } else {
                chunk.to_vec()
            };
        }
        match self.parser.push(chunk) {
            Ok(events) => {
                for event in events {
                    self.feed(&event, &mut out);
                }
            }
            Err(err) => self.fail(Malformed(err.0), &mut out),
        }
        if self.encoder.is_none() {
            return chunk.to_vec();
        }
        out
    }

    /// End of the provider's stream: the client's closing events.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        if self.failed.is_none() {
            match self.parser.finish() {
                Ok(Some(event)) => self.feed(&event, &mut out),
                Ok(None) => {}
                Err(err) => self.fail(Malformed(err.0), &mut out),
            }
        }
        if self.failed.is_none() {
            match self.decoder.end() {
                Ok(events) => {
                    for event in &events {
                        self.emit(event, &mut out);
                    }
                    if let Some(encoder) = self.encoder.as_mut() {
                        encoder.end(true, &mut out);
                    }
                }
                Err(err) => self.fail(err, &mut out),
            }
        }
        self.ended = true;
        if self.encoder.is_none() {
            return Vec::new();
        }
        out
    }

    /// The usage seen so far (the provider's last totals).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<&Malformed> {
        self.failed.as_ref()
    }

    fn feed(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        match self.decoder.event(event) {
            Ok(events) => {
                for event in &events {
                    self.emit(event, out);
                }
            }
            Err(err) => self.fail(err, out),
        }
    }

    fn emit(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if let StreamEvent::Usage(usage) = event {
            self.usage = Some(*usage);
        }
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.event(event, out);
        }
    }

    fn fail(&mut self, err: Malformed, out: &mut Vec<u8>) {
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.end(false, out);
        }
        self.failed = Some(err);
        self.ended = true;
    }
}

/// A whole buffered stream (a dispatched attempt): the client's bytes and the usage, or
/// `Malformed` when the provider's stream is not valid in its protocol (the attempt then
/// fails and the chain goes on: nothing was sent yet).
pub fn whole_stream(plan: &AnswerPlan, body: &[u8]) -> Result<(Vec<u8>, Option<Usage>), Malformed> {
    let mut transcoder = if plan.translates() {
        StreamTranscoder::translating(plan)
    } else {
        StreamTranscoder::watching(plan.provider)
    }
    .ok_or_else(|| Malformed(format!("no stream codec for {}", plan.provider.name())))?;
    let mut out = transcoder.push(body);
    out.extend(transcoder.finish());
    if let Some(err) = transcoder.failure() {
        return Err(err.clone());
    }
    if !transcoder.rewrites() {
        out = body.to_vec();
    }
    Ok((out, transcoder.usage()))
}

/// A whole (non-streamed) answer, decoded in the provider's protocol.
pub fn decode_answer(provider: Protocol, body: &[u8]) -> Result<ChatResponse, Malformed> {
    match provider {
        Protocol::OpenAiChat => openai_chat::decode_response(body),
        Protocol::Anthropic => anthropic::decode_response(body),
        Protocol::Gemini => gemini::decode_response(body),
        Protocol::OpenAiResponses => Err(Malformed(
            "no deployment speaks the Responses protocol".into(),
        )),
    }
}

/// A canonical answer in the client's protocol.
pub fn encode_answer(client: Protocol, response: &ChatResponse) -> Vec<u8> {
    let value = match client {
        Protocol::Anthropic => anthropic::encode_response(response),
        Protocol::OpenAiResponses => openai_responses::encode_response(response),
        Protocol::OpenAiChat | Protocol::Gemini => openai_chat::encode_response(response),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A whole answer translated: the client's bytes and the provider's usage.
pub fn whole_answer(plan: &AnswerPlan, body: &[u8]) -> Result<(Vec<u8>, Option<Usage>), Malformed> {
    let response = decode_answer(plan.provider, body)?;
    Ok((encode_answer(plan.client, &response), response.usage))
}

/// A provider's error answer in the client's protocol. The provider's message is kept;
/// a body that is not the provider's error shape becomes a message quoting its start.
pub fn error_answer(plan: &AnswerPlan, status: u16, body: &[u8]) -> Vec<u8> {
    let error = decode_error(plan.provider, body).unwrap_or_else(|| ProviderError {
        kind: None,
        message: format!(
            "the provider answered {status}: {}",
            String::from_utf8_lossy(body.get(..body.len().min(500)).unwrap_or_default())
        ),
    });
    serde_json::to_vec(&encode_error(plan.client, status, &error)).unwrap_or_default()
}

/// A provider's error body, in its own protocol's shape.
pub fn decode_error(provider: Protocol, body: &[u8]) -> Option<ProviderError> {
    match provider {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => openai_chat::decode_error(body),
        Protocol::Anthropic => anthropic::decode_error(body),
        Protocol::Gemini => gemini::decode_error(body),
    }
}

/// An error in the client's protocol's shape.
pub fn encode_error(client: Protocol, status: u16, error: &ProviderError) -> Value {
    match client {
        Protocol::Anthropic => anthropic::encode_error(status, error),
        _ => openai_chat::encode_error(status, error),
    }
}
