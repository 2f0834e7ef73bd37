//! Reading detour's events: JSON lines (`{"event": "...", "ts": …}`), or Envoy (or
//! `detour serve`) log lines that carry them after the `detour-event ` marker.
//!
//! Reading streams line by line and never fails on content: a line that is not an event
//! (other log output, blank) is counted as ignored; a line that should be one but is not
//! (bad JSON, a known event without its fields, not UTF-8, longer than
//! [`MAX_LINE_BYTES`]) is counted as malformed and the first [`MAX_SAMPLES`] are kept
//! with their file and line number. An event name this version does not know is counted
//! by name and otherwise skipped.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::Value;

/// The marker the filter logs before each event.
pub const MARKER: &str = "detour-event ";

/// Longer lines are malformed (and skipped without being held in memory).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many malformed lines are kept as examples.
pub const MAX_SAMPLES: usize = 50;

/// One event, as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix milliseconds.
    pub ts: u64,
    /// What happened.
    pub kind: Kind,
}

/// The events of `detour_core::event::Event`, plus the per-request event the report
/// would like (see [`Kind::Request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A retry on the same deployment.
    Retry {
        /// Route group.
        group: String,
        /// Deployment retried.
        deployment: String,
        /// What failed.
        reason: String,
        /// Status of the failed attempt.
        status: Option<u16>,
    },
    /// The chain moved on.
    Fallback {
        /// Route group.
        group: String,
        /// Stage tag.
        stage: Option<String>,
        /// Deployment left.
        from: String,
        /// Deployment tried next.
        to: String,
        /// `rate_limit`, `failure`, `budget`, …
        reason: String,
    },
    /// A 429 cooled a deployment down.
    Cooldown {
        /// Deployment.
        deployment: String,
        /// Until (Unix ms).
        until: u64,
    },
    /// A breaker opened.
    BreakerOpened {
        /// Deployment.
        deployment: String,
        /// Until (Unix ms).
        until: u64,
        /// After a failed half-open probe.
        probe_failed: bool,
    },
    /// A deployment is back.
    Recovery {
        /// Deployment.
        deployment: String,
        /// `half_open` or `health_check`.
        via: String,
    },
    /// A budget threshold crossed.
    BudgetAlert {
        /// `total`, `model/…`, `tag/…` …
        scope: String,
        /// Period start (Unix ms).
        period_start: u64,
        /// 80, 90, 100, 110 …
        percent: u32,
        /// Spend at the crossing, nano-dollars.
        spent: u64,
        /// The limit, nano-dollars.
        limit: u64,
    },
    /// A tag's requests moved to its overrun group.
    TagOverrun {
        /// Stage tag.
        tag: String,
        /// Group it would have used.
        from_group: String,
        /// Overrun group.
        to_group: String,
    },
    /// All traffic halted.
    Halt {
        /// Scope or `manual`.
        scope: String,
        /// Why.
        reason: String,
    },
    /// Traffic resumed.
    Resume {
        /// `admin` or `config`.
        by: String,
    },
    /// Every deployment failed.
    AllFailed {
        /// Route group.
        group: String,
        /// Stage tag.
        stage: Option<String>,
        /// Attempts sent.
        attempts: u32,
        /// Status the client got.
        status: u16,
    },
    /// One finished request (not emitted by this version of the filter; the report uses
    /// it as the fallback rate's denominator when a log has it): `{"event": "request",
    /// "ts": …, "fallbacks": n}` (`fallbacks` optional).
    Request {
        /// How many fallbacks the request took, if the event says.
        fallbacks: Option<u32>,
    },
}

/// What went wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The file, as named on the command line.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Why it was not read.
    pub reason: String,
}

/// Counts for one input file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// The file's name (without directories, so reports do not depend on where it was).
    pub name: String,
    /// Lines read.
    pub lines: u64,
    /// Events taken.
    pub events: u64,
    /// Lines that carry no event (blank lines, other log output).
    pub ignored: u64,
    /// Lines that should have been events but could not be read.
    pub malformed: u64,
}

/// Everything read from the inputs.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Events, sorted by time (stable: equal times keep input order).
    pub events: Vec<Event>,
    /// Per input file.
    pub files: Vec<FileStats>,
    /// The first [`MAX_SAMPLES`] malformed lines.
    pub samples: Vec<Malformed>,
    /// Events of names this version does not know, by name.
    pub unknown: BTreeMap<String, u64>,
}

impl Read {
    /// Total malformed lines.
    pub fn malformed(&self) -> u64 {
        self.files.iter().map(|f| f.malformed).sum()
    }

    /// Reads one input. `name` is how reports call it; `display` how errors do.
    pub fn add<R: BufRead>(
        &mut self,
        name: &str,
        display: &str,
        mut input: R,
    ) -> std::io::Result<()> {
        let mut stats = FileStats {
            name: name.to_string(),
            ..FileStats::default()
        };
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let (n, complete) = read_line(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            stats.lines += 1;
            let line_no = stats.lines;
            let outcome = if complete {
                match std::str::from_utf8(&buf) {
                    Ok(text) => parse_line(text),
                    Err(_) => Line::Malformed("not UTF-8".into()),
                }
            } else {
                Line::Malformed(format!("longer than {MAX_LINE_BYTES} bytes"))
            };
            match outcome {
                Line::Ignored => stats.ignored += 1,
                Line::Event(event) => {
                    stats.events += 1;
                    self.events.push(event);
                }
                Line::Unknown(name) => {
                    stats.ignored += 1;
                    *self.unknown.entry(name).or_default() += 1;
                }
                Line::Malformed(reason) => {
                    stats.malformed += 1;
                    if self.samples.len() < MAX_SAMPLES {
                        self.samples.push(Malformed {
                            file: display.to_string(),
                            line: line_no,
                            reason,
                        });
                    }
                }
            }
        }
        self.files.push(stats);
        Ok(())
    }

    /// Sorts the events by time (call after the last [`Read::add`]).
    pub fn finish(&mut self) {
        self.events.sort_by_key(|e| e.ts);
    }
}

/// Reads one line into `buf` (without the line end), at most [`MAX_LINE_BYTES`] of it:
/// returns (bytes consumed, whether the line fit). The rest of a longer line is consumed
/// and dropped.
fn read_line<R: BufRead>(input: &mut R, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut complete = true;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (chunk, found_newline) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (available.get(..pos).unwrap_or_default(), true),
            None => (available, false),
        };
        if complete && buf.len() + chunk.len() <= MAX_LINE_BYTES {
            buf.extend_from_slice(chunk);
        } else {
            complete = false;
            buf.clear();
        }
        let used = chunk.len() + usize::from(found_newline);
        input.consume(used);
        consumed += used;
        if found_newline {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok((consumed, complete))
}

enum Line {
    Ignored,
    Event(Event),
    Unknown(String),
    Malformed(String),
}

fn parse_line(text: &str) -> Line {
    let trimmed = text.trim();
    let json = if let Some(pos) = trimmed.find(MARKER) {
        trimmed.get(pos + MARKER.len()..).unwrap_or_default().trim()
    } else if trimmed.starts_with('{') {
        trimmed
    } else {
        return Line::Ignored;
    };
    let value: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => return Line::Malformed(format!("not JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return Line::Malformed("not a JSON object".into());
    };
    let Some(name) = obj.get("event").and_then(Value::as_str) else {
        return Line::Malformed("no \"event\" name".into());
    };
    let Some(ts) = obj.get("ts").and_then(Value::as_u64) else {
        return Line::Malformed(format!("{name}: no \"ts\" (Unix milliseconds)"));
    };
    match kind(name, &value) {
        Ok(Some(kind)) => Line::Event(Event { ts, kind }),
        Ok(None) => Line::Unknown(name.to_string()),
        Err(field) => Line::Malformed(format!("{name}: missing or wrong \"{field}\"")),
    }
}

fn string(v: &Value, field: &'static str) -> Result<String, &'static str> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(field)
}

fn opt_string(v: &Value, field: &'static str) -> Result<Option<String>, &'static str> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field),
    }
}

fn number(v: &Value, field: &'static str) -> Result<u64, &'static str> {
    v.get(field).and_then(Value::as_u64).ok_or(field)
}

fn small<T: TryFrom<u64>>(v: &Value, field: &'static str) -> Result<T, &'static str> {
    T::try_from(number(v, field)?).map_err(|_| field)
}

fn kind(name: &str, v: &Value) -> Result<Option<Kind>, &'static str> {
    Ok(Some(match name {
        "retry" => Kind::Retry {
            group: string(v, "group")?,
            deployment: string(v, "deployment")?,
            reason: string(v, "reason")?,
            status: match v.get("status") {
                None | Some(Value::Null) => None,
                Some(_) => Some(small(v, "status")?),
            },
        },
        "fallback" => Kind::Fallback {
            group: string(v, "group")?,
            stage: opt_string(v, "stage")?,
            from: string(v, "from")?,
            to: string(v, "to")?,
            reason: string(v, "reason")?,
        },
        "cooldown" => Kind::Cooldown {
            deployment: string(v, "deployment")?,
            until: number(v, "until")?,
        },
        "breaker_opened" => Kind::BreakerOpened {
            deployment: string(v, "deployment")?,
            until: number(v, "until")?,
            probe_failed: v
                .get("probe_failed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "recovery" => Kind::Recovery {
            deployment: string(v, "deployment")?,
            via: opt_string(v, "via")?.unwrap_or_else(|| "unknown".into()),
        },
        "budget_alert" => Kind::BudgetAlert {
            scope: string(v, "scope")?,
            period_start: number(v, "period_start")?,
            percent: small(v, "percent")?,
            spent: dollars(&string(v, "spent")?).ok_or("spent")?,
            limit: dollars(&string(v, "limit")?).ok_or("limit")?,
        },
        "tag_overrun" => Kind::TagOverrun {
            tag: string(v, "tag")?,
            from_group: string(v, "from_group")?,
            to_group: string(v, "to_group")?,
        },
        "halt" => Kind::Halt {
            scope: string(v, "scope")?,
            reason: opt_string(v, "reason")?.unwrap_or_default(),
        },
        "resume" => Kind::Resume {
            by: opt_string(v, "by")?.unwrap_or_else(|| "unknown".into()),
        },
        "all_failed" => Kind::AllFailed {
            group: string(v, "group")?,
            stage: opt_string(v, "stage")?,
            attempts: small(v, "attempts")?,
            status: small(v, "status")?,
        },
        "request" => Kind::Request {
            fallbacks: match v.get("fallbacks") {
                None | Some(Value::Null) => None,
                Some(_) => Some(small(v, "fallbacks")?),
            },
        },
        _ => return Ok(None),
    }))
}

/// `"$12.345678"` (or without `$`) as nano-dollars, exactly.
pub fn dollars(text: &str) -> Option<u64> {
    let text = text.trim().trim_start_matches('$');
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    whole.checked_mul(1_000_000_000)?.checked_add(frac_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Read {
        let mut read = Read::default();
        read.add("events.jsonl", "dir/events.jsonl", text).unwrap();
        read.finish();
        read
    }

    #[test]
    fn json_lines_and_envoy_lines_are_both_read() {
        let text = br#"{"event":"cooldown","ts":2,"deployment":"a","until":30}
[2026-11-23 19:30:35.516][20238][info][wasm] [source/extensions/common/wasm/context.cc:1151] wasm log detour detour detour: detour-event {"event":"fallback","ts":1,"group":"g","stage":null,"from":"a","to":"b","reason":"rate_limit"}
[2026-11-23 19:30:35.516][20238][info][main] starting workers

"#;
        let read = read(text);
        assert_eq!(read.events.len(), 2);
        // Sorted by ts.
        assert!(matches!(read.events[0].kind, Kind::Fallback { .. }));
        assert_eq!(read.files[0].ignored, 2);
        assert_eq!(read.malformed(), 0);
    }

    #[test]
    fn malformed_lines_are_counted_never_fatal() {
        let mut text = Vec::new();
        text.extend_from_slice(b"{\"event\":\"cooldown\",\"ts\":1,\"deployment\":\"a\"\n"); // cut
        text.extend_from_slice(b"x detour-event {\"event\":\"recovery\"}\n"); // no ts
        text.extend_from_slice(b"{\"event\":\"fallback\",\"ts\":1,\"from\":\"a\"}\n"); // fields
        text.extend_from_slice(b"{\"ts\":1}\n");
        text.extend_from_slice(b"[1,2]\n");
        text.extend_from_slice(b"{\"event\":\"budget_alert\",\"ts\":1,\"scope\":\"total\",\"period_start\":0,\"percent\":80,\"spent\":\"lots\",\"limit\":\"$1\"}\n");
        text.extend_from_slice(b"\xff\xfe{\n");
        text.extend_from_slice(b"{\"event\":\"request_v9\",\"ts\":5}\n");
        text.extend_from_slice(&vec![b'{'; MAX_LINE_BYTES + 10]);
        text.extend_from_slice(b"\n{\"event\":\"resume\",\"ts\":9,\"by\":\"admin\"}");
        let read = read(&text);
        assert_eq!(read.events.len(), 1, "{:?}", read.samples);
        // `[1,2]` is no event line at all: ignored, like other log output.
        assert_eq!(read.malformed(), 7, "{:?}", read.samples);
        assert_eq!(read.files[0].ignored, 2);
        assert_eq!(read.unknown.get("request_v9"), Some(&1));
        assert_eq!(read.files[0].lines, 10);
        assert_eq!(read.samples[0].line, 1);
        assert_eq!(read.samples[0].file, "dir/events.jsonl");
        assert!(read.samples[2].reason.contains("\"group\""));
        assert!(read.samples[5].reason.contains("UTF-8"));
        assert!(read.samples[6].reason.contains("longer than"));
    }

    #[test]
    fn dollars_are_exact() {
        assert_eq!(dollars("$12.345678"), Some(12_345_678_000));
        assert_eq!(dollars("0.5"), Some(500_000_000));
        assert_eq!(dollars("$100"), Some(100_000_000_000));
        assert_eq!(dollars("$0.000000001"), Some(1));
        assert_eq!(dollars("$"), None);
        assert_eq!(dollars("-1"), None);
        assert_eq!(dollars("1e3"), None);
        assert_eq!(dollars("99999999999999999999"), None);
    }
}
