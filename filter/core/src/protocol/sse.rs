//! Server-sent events for translated streams: an incremental parser that turns chunks cut
//! anywhere into whole events, and the writer every stream encoder uses.
//!
//! A stream passed through untranslated never goes through here (see `usage::SseUsage`,
//! which forwards bytes exactly); this parser is for streams detour re-encodes, where the
//! events are rebuilt anyway.

/// Most bytes one event may have. A provider event is at most a few kilobytes of JSON; an
/// event this large is garbage, and the stream is malformed rather than held without bound.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One event: its `event:` name (when given) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` field values joined by `\n` (empty when none).
    pub data: String,
}

/// Incremental parser: feed chunks, get the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The last byte was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
    /// Fields of the event being read.
    event: Option<String>,
    data: Option<String>,
    /// Bytes in the current event so far.
    size: usize,
    /// The first line has ended (a BOM opening the stream is dropped from it).
    started: bool,
}

/// The stream broke the SSE rules or the size bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseError(pub String);

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.end_line(&line)? {
                        events.push(event);
                    }
                }
                _ => {
                    self.size = self.size.saturating_add(1);
                    if self.size > MAX_EVENT_BYTES {
                        return Err(SseError(format!(
                            "an event is larger than {MAX_EVENT_BYTES} bytes"
                        )));
                    }
                    self.line.push(byte);
                }
            }
        }
        Ok(events)
    }

    /// End of stream: an event left without its blank line is dispatched anyway when it
    /// has data (providers that omit the last blank line still meant it).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            if let Some(event) = self.end_line(&line)? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    fn end_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        let line = if self.started {
            line
        } else {
            // A byte-order mark may open the stream (and may have come cut in pieces).
            self.started = true;
            line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line)
        };
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.first() == Some(&b':') {
            return Ok(None); // a comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (
                line.get(..colon).unwrap_or_default(),
                line.get(colon.saturating_add(1)..).unwrap_or_default(),
            ),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = std::str::from_utf8(value)
            .map_err(|_| SseError("an event field is not valid UTF-8".into()))?;
        match field {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            b"event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields: nothing detour needs
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.size = 0;
        let event = self.event.take();
        let data = self.data.take()?;
        Some(SseEvent { event, data })
    }
}

/// Appends one event: `event: <name>` when named, then `data: <data>` (one line per line
/// of `data`), then the blank line.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(parser.push(chunk).unwrap());
        }
        out.extend(parser.finish().unwrap());
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn events_survive_any_cut() {
        let stream = b"\xef\xbb\xbfevent: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\n";
        let want = vec![ev(Some("message_start"), "{\"a\":1}"), ev(None, "x\ny")];
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(all(&[a, b]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), want);
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(all(&[b"data: [DONE]"]), vec![ev(None, "[DONE]")]);
        assert_eq!(all(&[b"data: [DONE]\n"]), vec![ev(None, "[DONE]")]);
        assert_eq!(all(&[b"event: ping\n\n"]), vec![]);
    }

    #[test]
    fn oversized_and_non_utf8_events_are_errors() {
        let mut parser = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(parser.push(&big).is_err());
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: \xff\n\n").is_err());
    }

    #[test]
    fn written_events_parse_back() {
        let mut out = Vec::new();
        write_event(&mut out, Some("content_block_delta"), "{\"t\":\"a\"}");
        write_event(&mut out, None, "line1\nline2");
        assert_eq!(
            all(&[&out]),
            vec![
                ev(Some("content_block_delta"), "{\"t\":\"a\"}"),
                ev(None, "line1\nline2")
            ]
        );
    }
}
