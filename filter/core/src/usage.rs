//! What the provider reported: token usage from a JSON answer or from a streamed (SSE) one.
//!
//! Spend is real usage × price (R-2202), so usage must be read from every answer that
//! carries it, including streams passing through the proxy chunk by chunk. For streams
//! detour may have asked for usage itself (`stream_options.include_usage`), in which case
//! the usage-only chunk the provider adds at the end is not the client's to see and is cut
//! out, the way LiteLLM's proxy does it.
//!
//! The stream handling never changes a byte the client is meant to see: complete events
//! are forwarded exactly as received (except a stripped usage chunk), an incomplete event
//! is held only until it completes, and a held event that grows past [`MAX_HELD_BYTES`] is
//! forwarded unparsed rather than kept. Garbage in means garbage out, never a panic.

use std::borrow::Cow;

use serde_json::Value;

/// Token counts a provider reported for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `usage.prompt_tokens`: every input token, cached ones included.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens` (reasoning tokens included, as OpenAI counts them); 0 for
    /// embeddings, which report none.
    pub completion_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`: the part of `prompt_tokens` served from
    /// the provider's prompt cache (billed cheaper). 0 when not reported.
    pub cached_prompt_tokens: u64,
    /// The part of `prompt_tokens` written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, billed dearer). 0 when not reported.
    pub cache_write_tokens: u64,
}

/// Largest token count believed: anything above is a provider bug or garbage, and pricing it
/// would poison spend history (LiteLLM #20615 shows how long that lasts).
const MAX_TOKENS: u64 = 1_000_000_000_000;

/// Most bytes of one incomplete SSE event held back. Usage chunks are a few hundred bytes;
/// an event this large is forwarded unparsed so that memory stays bounded per stream.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// Usage of a whole non-streamed JSON answer (`chat.completion`, `text_completion`,
/// embeddings — embeddings report `prompt_tokens` and `total_tokens` only).
///
/// `None` when the body is not JSON, has no `usage` object, or reports nonsense (a count
/// that is negative, fractional, not a number, or above 10^12).
pub fn from_json_body(body: &[u8]) -> Option<Usage> {
    let value: Value = serde_json::from_slice(body).ok()?;
    parse_usage(value.get("usage")?)
}

/// Reads an OpenAI `usage` object. Needs at least one of `prompt_tokens` and
/// `completion_tokens`; every count present must be sane, else nothing is believed.
pub(crate) fn parse_usage(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let prompt = token_count(usage.get("prompt_tokens"))?;
    let completion = token_count(usage.get("completion_tokens"))?;
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let cached = match usage.get("prompt_tokens_details") {
        None | Some(Value::Null) => None,
        Some(Value::Object(details)) => token_count(details.get("cached_tokens"))?,
        Some(_) => return None,
    };
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_prompt_tokens: cached.unwrap_or(0),
        cache_write_tokens: 0,
    })
}

/// A token count: `Some(None)` when absent or null, `None` when present but nonsensical
/// (negative, fractional, not a number, above 10^12). Every protocol's usage is read with
/// it, so one rule decides what detour believes.
///
/// Whole-valued floats (`12.0`) are accepted: some OpenAI-compatible servers emit them.
pub(crate) fn token_count(value: Option<&Value>) -> Option<Option<u64>> {
    let value = match value {
        None | Some(Value::Null) => return Some(None),
        Some(value) => value,
    };
    let n = if let Some(n) = value.as_u64() {
        n
    } else {
        let f = value.as_f64()?;
        if !(0.0..=MAX_TOKENS as f64).contains(&f) || f.fract() != 0.0 {
            return None;
        }
        crate::num::round_f64_to_u64(f)
    };
    (n <= MAX_TOKENS).then_some(Some(n))
}

/// Incremental SSE handling for a streamed answer passing through chunk by chunk.
///
/// Events end at a blank line; lines end in `\n`, `\r\n` or `\r` (the SSE rules), so the
/// separators `\n\n`, `\r\n\r\n` and `\r\r` (and mixtures) all work, wherever the chunks
/// are cut. Each byte is scanned for boundaries once (never the whole held buffer again on
/// every push), and only events that may carry a non-null `usage` are parsed as JSON.
#[derive(Debug)]
pub struct SseUsage {
    strip_usage_chunk: bool,
    /// The start of the current, incomplete event (bytes from earlier chunks).
    held: Vec<u8>,
    /// The current event outgrew [`MAX_HELD_BYTES`]: its bytes are forwarded as they come
    /// until it ends, and it is not parsed.
    passthrough: bool,
    /// Nothing is on the current line yet.
    at_line_start: bool,
    /// The last byte was a `\r` ending a line: a `\n` right after it belongs to it.
    after_cr: bool,
    /// That `\r` also ended an event, which was stripped (`Some(true)`) or forwarded: the
    /// `\n` completing it goes the same way.
    cr_ended_event: Option<bool>,
    usage: Option<Usage>,
}

impl SseUsage {
    /// `strip_usage_chunk`: the client did not ask for usage (detour added
    /// `stream_options.include_usage` itself), so the usage-only chunk (`"choices": []`
    /// with a non-null `usage`) must not reach the client.
    pub fn new(strip_usage_chunk: bool) -> Self {
        SseUsage {
            strip_usage_chunk,
            held: Vec::new(),
            passthrough: false,
            at_line_start: true,
            after_cr: false,
            cr_ended_event: None,
            usage: None,
        }
    }

    /// Feeds one chunk as it arrives; returns the bytes to forward now.
    ///
    /// Complete events pass byte-exact (except a stripped usage chunk); a trailing
    /// incomplete event is held until it completes, or forwarded unparsed once it is
    /// larger than [`MAX_HELD_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        // Start, in `chunk`, of the current event's bytes not yet forwarded or held.
        let mut start = 0;
        let mut i = 0;
        while let Some(&byte) = chunk.get(i) {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    // The second half of a `\r\n` line ending.
                    if let Some(stripped) = self.cr_ended_event.take() {
                        // It completes the event already handed on: same fate.
                        if !stripped {
                            out.push(byte);
                        }
                        start = i.saturating_add(1);
                    }
                    i = i.saturating_add(1);
                    continue;
                }
            }
            self.cr_ended_event = None;
            if byte != b'\r' && byte != b'\n' {
                self.at_line_start = false;
                // Fast path: skip the rest of the line's content at once.
                let rest = chunk.get(i..).unwrap_or_default();
                // `i` < `chunk.len()`: the sum is at most `chunk.len()`.
                i = i.saturating_add(
                    rest.iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(rest.len()),
                );
                continue;
            }
            self.after_cr = byte == b'\r';
            if !self.at_line_start {
                // The end of a non-empty line.
                self.at_line_start = true;
                i = i.saturating_add(1);
                continue;
            }
            // An empty line: the event ends with this byte.
            let end = i.saturating_add(1);
            let tail = chunk.get(start..end).unwrap_or_default();
            let stripped = if self.passthrough {
                self.passthrough = false;
                out.extend_from_slice(tail);
                false
            } else if self.held.len().saturating_add(tail.len()) > MAX_HELD_BYTES {
                // Too large to be a usage chunk: forwarded unparsed, as if it had been
                // cut off while held.
                out.append(&mut self.held);
                out.extend_from_slice(tail);
                false
            } else if self.held.is_empty() {
                self.complete_event(tail, &mut out)
            } else {
                let mut event = std::mem::take(&mut self.held);
                event.extend_from_slice(tail);
                let stripped = self.complete_event(&event, &mut out);
                event.clear();
                self.held = event;
                stripped
            };
            if self.after_cr {
                self.cr_ended_event = Some(stripped);
            }
            start = end;
            i = end;
        }
        let rest = chunk.get(start..).unwrap_or_default();
        if self.passthrough {
            out.extend_from_slice(rest);
        } else if self.held.len().saturating_add(rest.len()) > MAX_HELD_BYTES {
            // Never hold unboundedly: forward what we have and the rest of this event.
            out.append(&mut self.held);
            out.extend_from_slice(rest);
            self.passthrough = true;
        } else {
            self.held.extend_from_slice(rest);
        }
        out
    }

    /// End of stream: the held remainder, forwarded as is.
    ///
    /// An unterminated last event is not an event to an SSE client, but the provider billed
    /// it: if it is a complete usage chunk its usage is still counted. It is never stripped.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        if !self.passthrough {
            if let Some(usage) = event_usage(&held).and_then(|(usage, _)| usage) {
                self.usage = Some(usage);
            }
        }
        self.passthrough = false;
        self.at_line_start = true;
        self.after_cr = false;
        self.cr_ended_event = None;
        held
    }

    /// The usage seen so far: the last sane, non-null `usage` object in any `data:` event.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// A whole event arrived: records its usage and forwards it unless it is the usage
    /// chunk to strip. Returns whether it was stripped.
    fn complete_event(&mut self, event: &[u8], out: &mut Vec<u8>) -> bool {
        let mut strip = false;
        if let Some((usage, usage_only)) = event_usage(event) {
            if usage.is_some() {
                self.usage = usage;
            }
            strip = usage_only && self.strip_usage_chunk;
        }
        if !strip {
            out.extend_from_slice(event);
        }
        strip
    }
}

/// The same for a whole buffered SSE body (a dispatched streaming attempt): the bytes to
/// send and the usage.
pub fn from_sse_body(body: &[u8], strip_usage_chunk: bool) -> (Vec<u8>, Option<Usage>) {
    let mut sse = SseUsage::new(strip_usage_chunk);
    let mut out = sse.push(body);
    out.extend(sse.finish());
    (out, sse.usage())
}

/// For an event whose data is a JSON object with a non-null `usage`: the usage if sane, and
/// whether it is the usage-only chunk (`"choices": []`). `None` for every other event.
fn event_usage(event: &[u8]) -> Option<(Option<Usage>, bool)> {
    if !may_have_usage(event) {
        return None;
    }
    let data = event_data(event)?;
    let value: Value = serde_json::from_slice(&data).ok()?;
    let usage = value.get("usage").filter(|u| !u.is_null())?;
    let usage_only = value
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    Some((parse_usage(usage), usage_only))
}

/// Whether the bytes contain `"usage"` as a key whose value is not `null`.
///
/// With `include_usage` every ordinary chunk carries `"usage": null`; this keeps them (and
/// everything else) away from the JSON parser. Inside a JSON string a quote is escaped, so
/// `"usage"` followed by `:` is a key, never text.
fn may_have_usage(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut rest = bytes;
    while let Some(at) = find(rest, KEY) {
        rest = rest.get(at.saturating_add(KEY.len())..).unwrap_or_default();
        let after = skip_whitespace(rest);
        let Some((&b':', value)) = after.split_first() else {
            continue;
        };
        if !skip_whitespace(value).starts_with(b"null") {
            return true;
        }
    }
    false
}

fn skip_whitespace(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    bytes.get(skip..).unwrap_or_default()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The event's data: its `data:` field values joined by `\n` (the SSE rules: one space after
/// the colon is dropped; comments and other fields are ignored). `None` without data.
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let event = event.strip_prefix("\u{feff}".as_bytes()).unwrap_or(event);
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\r' || b == b'\n') {
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (
                line.get(..colon).unwrap_or_default(),
                line.get(colon.saturating_add(1)..).unwrap_or_default(),
            ),
            None => (line, &[][..]),
        };
        if field != b"data" {
            continue;
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        data = Some(match data {
            None => Cow::Borrowed(value),
            Some(joined) => {
                let mut joined = joined.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: cached,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn json_body_usage() {
        let body = br#"{"object":"chat.completion","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        assert_eq!(from_json_body(body), Some(usage(12, 3, 0)));
        let cached = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920}}}"#;
        assert_eq!(from_json_body(cached), Some(usage(2006, 300, 1920)));
        let embeddings = br#"{"object":"list","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(from_json_body(embeddings), Some(usage(8, 0, 0)));
    }

    #[test]
    fn json_body_nulls_are_absent() {
        let body = br#"{"usage":{"prompt_tokens":5,"completion_tokens":null,"prompt_tokens_details":null}}"#;
        assert_eq!(from_json_body(body), Some(usage(5, 0, 0)));
        let body = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":null,"audio_tokens":0}}}"#;
        assert_eq!(from_json_body(body), Some(usage(5, 1, 0)));
        let whole_float = br#"{"usage":{"prompt_tokens":5.0,"completion_tokens":1}}"#;
        assert_eq!(from_json_body(whole_float), Some(usage(5, 1, 0)));
    }

    #[test]
    fn json_body_rejects_nonsense() {
        for body in [
            &br#"{"usage":{"prompt_tokens":-1,"completion_tokens":3}}"#[..],
            br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":"12","completion_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":1000000000001,"completion_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":1e13,"completion_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":-4}}}"#,
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":3,"prompt_tokens_details":7}}"#,
            br#"{"usage":{"total_tokens":8}}"#,
            br#"{"usage":{}}"#,
            br#"{"usage":null}"#,
            br#"{"usage":[1,2]}"#,
            br#"{"id":"x"}"#,
            br#"[{"usage":{"prompt_tokens":1}}]"#,
            b"not json",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(from_json_body(body), None, "{}", String::from_utf8_lossy(body));
        }
        let limit = br#"{"usage":{"prompt_tokens":1000000000000,"completion_tokens":0}}"#;
        assert_eq!(from_json_body(limit), Some(usage(1_000_000_000_000, 0, 0)));
    }

    #[test]
    fn usage_key_detection() {
        assert!(may_have_usage(br#"data: {"usage":{"prompt_tokens":1}}"#));
        assert!(may_have_usage(br#"data: {"usage" :  {"a":1}}"#));
        assert!(may_have_usage(br#"{"usage":null,"x":1,"usage":{}}"#));
        assert!(!may_have_usage(br#"data: {"usage":null}"#));
        assert!(!may_have_usage(br#"data: {"usage" : null}"#));
        assert!(!may_have_usage(br#"data: {"content":"my \"usage\": 5"}"#));
        assert!(!may_have_usage(br#"data: {"content":"usage"}"#));
        assert!(!may_have_usage(br#"data: {"content":"\"usage\""}"#));
        assert!(!may_have_usage(b"\"usage\""));
        assert!(!may_have_usage(b""));
    }

    #[test]
    fn event_data_follows_sse_field_rules() {
        let data = |e: &[u8]| event_data(e).map(|d| d.into_owned());
        assert_eq!(data(b"data: x\n\n"), Some(b"x".to_vec()));
        assert_eq!(data(b"data:x\n\n"), Some(b"x".to_vec()));
        assert_eq!(data(b"data:  x\n\n"), Some(b" x".to_vec()));
        assert_eq!(data(b"data\n\n"), Some(b"".to_vec()));
        assert_eq!(
            data(b": c\r\nevent: e\r\ndata: a\r\nid: 1\r\ndata: b\r\n\r\n"),
            Some(b"a\nb".to_vec())
        );
        assert_eq!(data(b"\xef\xbb\xbfdata: x\n\n"), Some(b"x".to_vec()));
        assert_eq!(data(b": only a comment\n\n"), None);
        assert_eq!(data(b"datum: x\n\n"), None);
    }

    #[test]
    fn stream_keeps_bytes_and_finds_usage() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let (out, got) = from_sse_body(stream.as_bytes(), false);
        assert_eq!(out, stream.as_bytes());
        assert_eq!(got, Some(usage(9, 2, 0)));
        let (out, got) = from_sse_body(stream.as_bytes(), true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
                "data: [DONE]\n\n",
            )
        );
        assert_eq!(got, Some(usage(9, 2, 0)));
    }

    #[test]
    fn cr_ended_stripped_event_swallows_its_lf_in_the_next_chunk() {
        let mut sse = SseUsage::new(true);
        let usage_chunk =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r";
        assert_eq!(sse.push(usage_chunk), b"");
        assert_eq!(sse.push(b"\ndata: [DONE]\r\n\r\n"), b"data: [DONE]\r\n\r\n");
        assert_eq!(sse.finish(), b"");
        assert_eq!(sse.usage(), Some(usage(1, 1, 0)));

        let mut sse = SseUsage::new(true);
        assert_eq!(sse.push(b"data: 1\r\n\r"), b"data: 1\r\n\r");
        assert_eq!(sse.push(b"\n"), b"\n");
        assert_eq!(sse.push(b"data: 2\r\r"), b"data: 2\r\r");
        assert_eq!(sse.push(b"data: 3\r\r"), b"data: 3\r\r");
    }

    #[test]
    fn held_bytes_stay_bounded() {
        let mut sse = SseUsage::new(true);
        let mut forwarded = 0;
        let piece = vec![b'x'; 64 * 1024];
        forwarded += sse.push(b"data: ").len();
        for _ in 0..20 {
            forwarded += sse.push(&piece).len();
            assert!(sse.held.len() <= MAX_HELD_BYTES);
        }
        assert!(sse.passthrough);
        // The oversized event ends; the next one is parsed again.
        let tail = b"\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}\n\n";
        let out = sse.push(tail);
        assert_eq!(out, b"\n\n");
        forwarded += out.len();
        assert_eq!(forwarded, 6 + 20 * piece.len() + 2);
        assert_eq!(sse.usage(), Some(usage(4, 5, 0)));
        assert!(!sse.passthrough);
        assert!(sse.held.is_empty());
    }

    #[test]
    fn finish_counts_an_unterminated_usage_chunk_without_stripping_it() {
        let mut sse = SseUsage::new(true);
        let tail =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n";
        assert_eq!(sse.push(tail), b"");
        assert_eq!(sse.finish(), tail);
        assert_eq!(sse.usage(), Some(usage(3, 4, 0)));
    }
}
