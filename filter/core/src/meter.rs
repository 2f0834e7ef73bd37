//! Metering a delivered answer as it passes: the usage it reports, and (for a stream
//! whose usage detour asked for on the client's behalf) the usage chunk taken out.

use crate::usage::{self, SseUsage, Usage};

/// How much of a non-streamed body is kept to find its `usage`. Larger bodies are charged
/// at their estimate (never as free).
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// A delivered answer being metered.
#[derive(Debug)]
pub enum Meter {
    /// Server-sent events: parsed incrementally, possibly rewritten.
    Sse(SseUsage),
    /// Any other body: a copy of its first bytes, parsed at the end.
    Json {
        /// The bytes kept so far.
        body: Vec<u8>,
        /// More than [`MAX_JSON_BODY`] arrived.
        overflow: bool,
    },
}

impl Meter {
    /// Picks the meter from the answer's `content-type`. `strip_usage_chunk`: the client
    /// did not ask for stream usage.
    pub fn for_response(content_type: Option<&str>, strip_usage_chunk: bool) -> Meter {
        let is_sse = content_type.is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
        if is_sse {
            Meter::Sse(SseUsage::new(strip_usage_chunk))
        } else {
            Meter::Json {
                body: Vec::new(),
                overflow: false,
            }
        }
    }

    /// Whether the meter may change the bytes (then the glue replaces each chunk with what
    /// [`Meter::push`] returns, and drops `content-length`).
    pub fn rewrites(&self) -> bool {
        matches!(self, Meter::Sse(_))
    }

    /// Feeds one chunk; returns the bytes to forward in its place.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Meter::Sse(sse) => sse.push(chunk),
            Meter::Json { body, overflow } => {
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
            Meter::Json { body, overflow } => {
                let usage = if *overflow {
                    None
                } else {
                    usage::from_json_body(body)
                };
                (Vec::new(), usage)
            }
        }
    }
}

/// A whole buffered answer (a dispatched attempt): the body to send and its usage.
pub fn whole(
    content_type: Option<&str>,
    body: &[u8],
    strip_usage_chunk: bool,
) -> (Vec<u8>, Option<Usage>) {
    let mut meter = Meter::for_response(content_type, strip_usage_chunk);
    let mut out = meter.push(body);
    let (tail, usage) = meter.finish();
    out.extend_from_slice(&tail);
    (out, usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn a_stream_is_metered_and_its_usage_chunk_stripped_on_request() {
        let (out, usage) = whole(
            Some("text/event-stream; charset=utf-8"),
            STREAM.as_bytes(),
            true,
        );
        assert_eq!(
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((7, 3))
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("prompt_tokens") && text.contains("[DONE]") && text.contains("\"hi\"")
        );
        let (out, _) = whole(Some("text/event-stream"), STREAM.as_bytes(), false);
        assert_eq!(out, STREAM.as_bytes());
    }

    #[test]
    fn a_json_body_is_metered_whole_or_not_at_all() {
        let body =
            br#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        let mut meter = Meter::for_response(Some("application/json"), true);
        let (first, second) = body.split_at(20);
        assert_eq!(meter.push(first), first);
        assert_eq!(meter.push(second), second);
        assert_eq!(meter.finish().1.map(|u| u.completion_tokens), Some(2));

        let mut big = Meter::for_response(None, false);
        big.push(&vec![b' '; MAX_JSON_BODY]);
        big.push(body);
        assert_eq!(
            big.finish().1,
            None,
            "too large to parse: charged at the estimate"
        );
    }
}
