//! Metering a delivered answer as it passes: the usage it reports, and (for a stream
//! whose usage detour asked for on the client's behalf) the usage chunk taken out; and,
//! when the client speaks another protocol than the deployment, the translation.

use crate::protocol::transcode::{self, AnswerPlan, StreamTranscoder};
use crate::protocol::{Malformed, Part, Protocol, StopReason};
use crate::usage::{self, SseUsage, Usage};

/// How much of a non-streamed body is kept to find its `usage`. Larger bodies are charged
/// at their estimate (never as free).
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// A delivered answer being metered.
#[derive(Debug)]
pub enum Meter {
    /// An OpenAI stream to an OpenAI client: parsed incrementally, possibly rewritten.
    Sse(SseUsage),
    /// Any other stream: translated event by event, or (same protocol) watched.
    Stream(Box<StreamTranscoder>),
    /// Any other body: a copy of its first bytes, parsed at the end.
    Json {
        /// The protocol whose `usage` fields to read.
        protocol: Protocol,
        /// The bytes kept so far.
        body: Vec<u8>,
        /// More than [`MAX_JSON_BODY`] arrived.
        overflow: bool,
    },
}

impl Meter {
    /// Picks the meter for an answer that passes chunk by chunk, from its `content-type`
    /// and the plan. (A non-streamed answer that must be translated or validated is
    /// collected whole instead: see [`needs_whole_body`] and [`whole`].)
    pub fn for_answer(content_type: Option<&str>, plan: &AnswerPlan) -> Meter {
        if is_sse(content_type) {
            let stream = if plan.translates() {
                StreamTranscoder::translating(plan)
            } else if plan.provider != Protocol::OpenAiChat {
                StreamTranscoder::watching(plan.provider)
            } else {
                None
            };
            match stream {
                Some(stream) => Meter::Stream(Box::new(stream)),
                None => Meter::Sse(SseUsage::new(!plan.client_wants_usage)),
            }
        } else {
            Meter::Json {
                protocol: plan.provider,
                body: Vec::new(),
                overflow: false,
            }
        }
    }

    /// Whether the meter may change the bytes (then the glue replaces each chunk with what
    /// [`Meter::push`] returns, and drops `content-length`).
    pub fn rewrites(&self) -> bool {
        match self {
            Meter::Sse(_) => true,
            Meter::Stream(stream) => stream.rewrites(),
            Meter::Json { .. } => false,
        }
    }

    /// Feeds one chunk; returns the bytes to forward in its place.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Meter::Sse(sse) => sse.push(chunk),
            Meter::Stream(stream) => stream.push(chunk),
            Meter::Json { body, overflow, .. } => {
                let room = MAX_JSON_BODY.saturating_sub(body.len());
                if chunk.len() > room {
                    *overflow = true;
                }
                body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                chunk.to_vec()
            }
        }
    }

    /// End of the answer: bytes still to forward, and the usage found.
    pub fn finish(&mut self) -> (Vec<u8>, Option<Usage>) {
        match self {
            Meter::Sse(sse) => {
                let tail = sse.finish();
                (tail, sse.usage())
            }
            Meter::Stream(stream) => {
                let tail = stream.finish();
                (tail, stream.usage())
            }
            Meter::Json {
                protocol,
                body,
                overflow,
            } => {
                let usage = if *overflow {
                    None
                } else if *protocol == Protocol::OpenAiChat {
                    usage::from_json_body(body)
                } else {
                    transcode::decode_answer(*protocol, body)
                        .ok()
                        .and_then(|answer| answer.usage)
                };
                (Vec::new(), usage)
            }
        }
    }
}

/// Whether the content type announces server-sent events.
pub fn is_sse(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    })
}

/// Whether a successful non-streamed answer must be held whole before the client sees it:
/// to translate it, or to check that it is valid in its protocol (every protocol but
/// OpenAI's, whose answers pass as they come, as they always did).
pub fn needs_whole_body(content_type: Option<&str>, plan: &AnswerPlan) -> bool {
    !is_sse(content_type) && (plan.translates() || plan.provider != Protocol::OpenAiChat)
}

/// A whole answer, ready for the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Whole {
    /// The bytes to send (translated when the plan says so).
    pub body: Vec<u8>,
    /// The usage the provider reported.
    pub usage: Option<Usage>,
    /// A 2xx that is a refusal: the provider's safety system blocked the prompt or the
    /// answer and nothing was produced (Gemini's `promptFeedback.blockReason`, Anthropic's
    /// `stop_reason: refusal`). Like a content-policy 400, it follows
    /// `content_policy_fallbacks` (LiteLLM does the same).
    pub refused: bool,
}

/// A whole buffered answer (a dispatched attempt, or a collected one): the body to send
/// and its usage; `Malformed` when it does not parse in the deployment's protocol (checked
/// for every answer that is translated or not OpenAI's).
pub fn whole(
    plan: &AnswerPlan,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Whole, Malformed> {
    if is_sse(content_type) {
        let (body, usage) = if plan.translates() || plan.provider != Protocol::OpenAiChat {
            transcode::whole_stream(plan, body)?
        } else {
            usage::from_sse_body(body, !plan.client_wants_usage)
        };
        return Ok(Whole {
            body,
            usage,
            refused: false,
        });
    }
    if !plan.translates() && plan.provider == Protocol::OpenAiChat {
        return Ok(Whole {
            body: body.to_vec(),
            usage: usage::from_json_body(body),
            refused: false,
        });
    }
    let answer = transcode::decode_answer(plan.provider, body)?;
    let refused = answer.stop == StopReason::ContentFilter
        && !answer.content.iter().any(|part| match part {
            Part::Text(text) => !text.trim().is_empty(),
            Part::ToolCall(_) => true,
            _ => false,
        });
    let out = if plan.translates() {
        transcode::encode_answer(plan.client, &answer)
    } else {
        body.to_vec()
    };
    Ok(Whole {
        body: out,
        usage: answer.usage,
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n\
data: [DONE]\n\n";

    fn plan(client_wants_usage: bool) -> AnswerPlan {
        AnswerPlan {
            client: Protocol::OpenAiChat,
            provider: Protocol::OpenAiChat,
            stream: true,
            client_wants_usage,
        }
    }

    #[test]
    fn a_stream_is_metered_and_its_usage_chunk_stripped_on_request() {
        let Whole {
            body: out, usage, ..
        } = whole(
            &plan(false),
            Some("text/event-stream; charset=utf-8"),
            STREAM.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((7, 3))
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("prompt_tokens") && text.contains("[DONE]") && text.contains("\"hi\"")
        );
        let out = whole(&plan(true), Some("text/event-stream"), STREAM.as_bytes())
            .unwrap()
            .body;
        assert_eq!(out, STREAM.as_bytes());
    }

    #[test]
    fn a_json_body_is_metered_whole_or_not_at_all() {
        let body =
            br#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        let mut meter = Meter::for_answer(Some("application/json"), &plan(false));
        let (first, second) = body.split_at(20);
        assert_eq!(meter.push(first), first);
        assert_eq!(meter.push(second), second);
        assert_eq!(meter.finish().1.map(|u| u.completion_tokens), Some(2));

        let mut big = Meter::for_answer(None, &plan(true));
        big.push(&vec![b' '; MAX_JSON_BODY]);
        big.push(body);
        assert_eq!(
            big.finish().1,
            None,
            "too large to parse: charged at the estimate"
        );
    }
}
