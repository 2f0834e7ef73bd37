//! Usage from answers: JSON bodies, and SSE streams cut into chunks every possible way.
//!
//! The stream properties: whatever the chunking, the client receives exactly the provider's
//! bytes (minus the usage-only chunk when detour asked for usage itself), the usage is found,
//! and no more than `MAX_HELD_BYTES` are ever held back.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

use detour_core::usage::{self, SseUsage, Usage, MAX_HELD_BYTES};

/// A small deterministic PRNG (SplitMix64): reproducible cases, no extra crates, no clock.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: 0,
    }
}

/// A recorded stream, what the client must get when the usage chunk is stripped, and the
/// usage in it.
struct Case {
    name: &'static str,
    input: &'static [u8],
    stripped: &'static [u8],
    usage: Option<Usage>,
}

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $path
        ))
    };
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "chat with include_usage (LF)",
            input: fixture!("sse/chat_include_usage.sse"),
            stripped: fixture!("sse/chat_include_usage.stripped.sse"),
            usage: Some(usage(19, 10, 0)),
        },
        Case {
            name: "chat without usage",
            input: fixture!("sse/chat_no_usage.sse"),
            stripped: fixture!("sse/chat_no_usage.sse"),
            usage: None,
        },
        Case {
            name: "CRLF with keep-alive comments and cached tokens",
            input: fixture!("sse/chat_crlf_keepalive.sse"),
            stripped: fixture!("sse/chat_crlf_keepalive.stripped.sse"),
            usage: Some(usage(2006, 300, 1920)),
        },
        Case {
            name: "CR-only line endings",
            input: fixture!("sse/chat_cr_only.sse"),
            stripped: fixture!("sse/chat_cr_only.stripped.sse"),
            usage: Some(usage(2006, 300, 1920)),
        },
        Case {
            name: "truncated in the middle of the usage chunk",
            input: fixture!("sse/chat_truncated.sse"),
            stripped: fixture!("sse/chat_truncated.sse"),
            usage: None,
        },
        Case {
            name: "multi-line data, other fields, non-JSON events",
            input: fixture!("sse/chat_multiline.sse"),
            stripped: fixture!("sse/chat_multiline.stripped.sse"),
            usage: Some(usage(7, 11, 0)),
        },
        Case {
            name: "text_completion with include_usage",
            input: fixture!("sse/text_completion_usage.sse"),
            stripped: fixture!("sse/text_completion_usage.stripped.sse"),
            usage: Some(usage(5, 3, 0)),
        },
        Case {
            name: "usage on the last content chunk",
            input: fixture!("sse/usage_on_last_content_chunk.sse"),
            stripped: fixture!("sse/usage_on_last_content_chunk.sse"),
            usage: Some(usage(4, 2, 0)),
        },
    ]
}

/// Feeds `input` cut at `cuts` (sorted offsets) and returns (everything forwarded, usage).
/// Checks on the way that no more than `MAX_HELD_BYTES` are held back beyond what was
/// stripped.
fn run(input: &[u8], cuts: &[usize], strip: bool) -> (Vec<u8>, Option<Usage>) {
    let mut sse = SseUsage::new(strip);
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        out.extend(sse.push(&input[from..cut]));
        from = cut;
        if !strip {
            assert!(
                from - out.len() <= MAX_HELD_BYTES,
                "holding {} bytes",
                from - out.len()
            );
        }
    }
    out.extend(sse.finish());
    (out, sse.usage())
}

fn expected(case: &Case, strip: bool) -> &'static [u8] {
    if strip {
        case.stripped
    } else {
        case.input
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

#[test]
fn fixtures_are_what_they_claim() {
    for case in cases() {
        assert!(case.stripped.len() <= case.input.len(), "{}", case.name);
    }
    let truncated = fixture!("sse/chat_truncated.sse");
    assert!(!truncated.ends_with(b"\n\n") && !truncated.ends_with(b"\n"));
    let crlf = fixture!("sse/chat_crlf_keepalive.sse");
    assert!(crlf.windows(4).any(|w| w == b"\r\n\r\n"));
    assert!(!crlf.windows(2).any(|w| w == b"\n\n"));
    assert!(!fixture!("sse/chat_cr_only.sse").contains(&b'\n'));
    // Multi-byte UTF-8 that a split can land in the middle of.
    assert!(std::str::from_utf8(fixture!("sse/chat_include_usage.sse"))
        .unwrap()
        .contains('🌍'));
}

#[test]
fn whole_bodies() {
    for case in cases() {
        for strip in [false, true] {
            let (out, got) = usage::from_sse_body(case.input, strip);
            assert_eq!(
                show(&out),
                show(expected(&case, strip)),
                "{} strip={strip}",
                case.name
            );
            assert_eq!(got, case.usage, "{} strip={strip}", case.name);
        }
    }
}

#[test]
fn complete_events_are_forwarded_without_waiting_for_more() {
    for case in cases() {
        if case.name == "truncated in the middle of the usage chunk" {
            continue;
        }
        for strip in [false, true] {
            let mut sse = SseUsage::new(strip);
            assert_eq!(
                show(&sse.push(case.input)),
                show(expected(&case, strip)),
                "{}",
                case.name
            );
            assert_eq!(sse.finish(), b"", "{}", case.name);
        }
    }
}

#[test]
fn every_single_split() {
    for case in cases() {
        for strip in [false, true] {
            for cut in 0..=case.input.len() {
                let (out, got) = run(case.input, &[cut], strip);
                assert!(
                    out == expected(&case, strip),
                    "{} strip={strip} cut={cut}: {}",
                    case.name,
                    show(&out)
                );
                assert_eq!(got, case.usage, "{} strip={strip} cut={cut}", case.name);
            }
        }
    }
}

#[test]
fn pairs_of_splits_in_the_small_fixtures() {
    for case in cases().into_iter().filter(|c| c.input.len() <= 650) {
        for strip in [false, true] {
            // Every first cut; the second one on a stride (all pairs take ~10 s in debug).
            for a in 0..=case.input.len() {
                for b in (a + a % 5..=case.input.len()).step_by(5) {
                    let (out, got) = run(case.input, &[a, b], strip);
                    assert!(
                        out == expected(&case, strip) && got == case.usage,
                        "{} strip={strip} cuts={a},{b}",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    for case in cases() {
        for strip in [false, true] {
            let cuts: Vec<usize> = (1..case.input.len()).collect();
            let (out, got) = run(case.input, &cuts, strip);
            assert_eq!(show(&out), show(expected(&case, strip)), "{}", case.name);
            assert_eq!(got, case.usage, "{}", case.name);
        }
    }
}

#[test]
fn random_multi_splits() {
    let mut rng = Rng(0x5eed_0001);
    for case in cases() {
        for round in 0..400 {
            let strip = round % 2 == 0;
            let mut cuts: Vec<usize> = (0..1 + rng.below(40))
                .map(|_| rng.below(case.input.len() + 1))
                .collect();
            cuts.sort_unstable();
            let (out, got) = run(case.input, &cuts, strip);
            assert_eq!(
                show(&out),
                show(expected(&case, strip)),
                "{} strip={strip} cuts={cuts:?}",
                case.name
            );
            assert_eq!(got, case.usage, "{} cuts={cuts:?}", case.name);
        }
    }
}

/// Every blank-line terminator made of two SSE line endings: `\n\n`, `\r\n\r\n`, `\r\r`,
/// and the mixtures (`\n\r\n`, `\r\r\n`, …). `\r` + `\n` is left out: that is one CRLF.
fn terminators() -> Vec<Vec<u8>> {
    let endings: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
    let mut all = Vec::new();
    for line in endings {
        for blank in endings {
            if line != b"\r" || blank != b"\n" {
                all.push([line, blank].concat());
            }
        }
    }
    all
}

#[test]
fn separator_mixtures() {
    let content = br#"data: {"choices":[{"delta":{"content":"x"}}],"usage":null}"#;
    let usage_chunk = br#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    for first in terminators() {
        for second in terminators() {
            let input = [
                &content[..],
                &first,
                usage_chunk,
                &second,
                b"data: [DONE]\n\n",
            ]
            .concat();
            let want = [&content[..], &first, b"data: [DONE]\n\n"].concat();
            for cut in 0..=input.len() {
                let (out, got) = run(&input, &[cut], true);
                assert_eq!(show(&out), show(&want), "{} cut={cut}", show(&second));
                assert_eq!(got, Some(usage(3, 1, 0)), "cut={cut}");
                let (out, _) = run(&input, &[cut], false);
                assert_eq!(out, input);
            }
        }
    }
}

#[test]
fn cr_then_lf_is_one_line_ending_not_a_blank_line() {
    // The content line and the usage line form one event (no blank line between them),
    // whose data is not JSON: nothing is stripped or counted, wherever the cut falls.
    let input = concat!(
        "data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\r\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\n\r\n",
    );
    for cut in 0..=input.len() {
        let (out, got) = run(input.as_bytes(), &[cut], true);
        assert_eq!(out, input.as_bytes(), "cut={cut}");
        assert_eq!(got, None, "cut={cut}");
    }
}

#[test]
fn stripping_removes_only_usage_only_chunks() {
    let stream = concat!(
        // Usage null everywhere: nothing to strip.
        "data: {\"choices\":[],\"usage\":null}\n\n",
        // Usage with content: counted, kept.
        "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
        // choices missing, not empty: kept.
        "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\n",
        // The usage-only chunk, even with nonsense counts: stripped, not counted.
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-5}}\n\n",
        "data: [DONE]\n\n",
    );
    let (out, got) = usage::from_sse_body(stream.as_bytes(), true);
    let want = stream.replace(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-5}}\n\n",
        "",
    );
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!(got, Some(usage(2, 2, 0)));
}

#[test]
fn the_last_usage_wins() {
    // Servers that report running totals (vLLM's continuous usage stats) send usage on
    // every chunk; the last one is the total.
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut sse = SseUsage::new(false);
    let mut seen = Vec::new();
    for event in stream.split_inclusive("\n\n") {
        sse.push(event.as_bytes());
        seen.push(sse.usage());
    }
    assert_eq!(
        seen,
        vec![
            Some(usage(5, 1, 0)),
            Some(usage(5, 2, 0)),
            Some(usage(5, 2, 4)),
            Some(usage(5, 2, 4)),
        ]
    );
}

#[test]
fn oversized_events_pass_unparsed_and_memory_stays_bounded() {
    let padding = "x".repeat(MAX_HELD_BYTES + 10);
    let big_usage = format!(
        "data: {{\"choices\":[],\"pad\":\"{padding}\",\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}}}}\n\n"
    );
    let after =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":9}}\n\n";
    let input = format!("{big_usage}{after}data: [DONE]\n\n");
    let want = format!("{big_usage}data: [DONE]\n\n");
    let mut rng = Rng(7);
    for _ in 0..30 {
        let mut cuts: Vec<usize> = (0..rng.below(12))
            .map(|_| rng.below(input.len() + 1))
            .collect();
        cuts.sort_unstable();
        // Strip: the oversized event is forwarded whole (never parsed), the next one stripped.
        let (out, got) = run(input.as_bytes(), &cuts, true);
        assert!(out == want.as_bytes(), "cuts={cuts:?}");
        assert_eq!(got, Some(usage(8, 9, 0)));
        let (out, got) = run(input.as_bytes(), &cuts, false);
        assert!(out == input.as_bytes(), "cuts={cuts:?}");
        assert_eq!(got, Some(usage(8, 9, 0)));
    }
}

#[test]
fn an_endless_event_is_never_held_whole() {
    // A provider streaming bytes without ever ending the event: forwarded as it comes once
    // the held part passes the bound (run() asserts the bound after every push).
    let mut rng = Rng(99);
    let mut input = b"data: ".to_vec();
    while input.len() < 3 * MAX_HELD_BYTES {
        input.push(b'a' + (rng.below(26) as u8));
    }
    let cuts: Vec<usize> = (1..input.len()).step_by(4096).collect();
    let (out, got) = run(&input, &cuts, true);
    assert!(out == input);
    assert_eq!(got, None);
}

#[test]
fn byte_at_a_time_through_a_large_event_is_linear() {
    // Quadratic re-scanning of the held bytes would take minutes here; a linear scan takes
    // milliseconds. (No clock: the test runner's patience is the measure.)
    let big = format!(
        "data: {{\"choices\":[],\"pad\":\"{}\",\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n\n",
        "y".repeat(MAX_HELD_BYTES - 200)
    );
    let mut sse = SseUsage::new(true);
    let mut out = Vec::new();
    for byte in big.as_bytes() {
        out.extend(sse.push(std::slice::from_ref(byte)));
    }
    out.extend(sse.finish());
    assert!(
        out.is_empty(),
        "a usage-only chunk under the bound is stripped"
    );
    assert_eq!(sse.usage(), Some(usage(1, 2, 0)));
}

/// Random input built from SSE-ish tokens, so that garbage still hits every branch.
fn garbage(rng: &mut Rng, len: usize) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"data: ",
        b"data:",
        b"data",
        b": keep-alive",
        b":",
        b"event: x",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b"\"usage\"",
        b":null",
        b"\"choices\":[]",
        br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        br#"{"choices":[{}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        b"[DONE]",
        "é日🌍".as_bytes(),
        b"\xff",
        b"\xe6\x97",
        b"\x00",
    ];
    let mut out = Vec::new();
    while out.len() < len {
        if rng.below(8) == 0 {
            out.push(rng.next() as u8);
        } else {
            out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
    }
    out
}

#[test]
fn garbage_never_panics_never_loses_bytes_and_does_not_depend_on_chunking() {
    let mut rng = Rng(0xdead_beef);
    for round in 0..600 {
        let len = 1 + rng.below(if round % 50 == 0 { 4000 } else { 300 });
        let input = garbage(&mut rng, len);
        let (whole_plain, whole_usage) = usage::from_sse_body(&input, false);
        assert_eq!(whole_plain, input, "nothing is lost without stripping");
        let (whole_stripped, stripped_usage) = usage::from_sse_body(&input, true);
        assert_eq!(stripped_usage, whole_usage);
        assert!(whole_stripped.len() <= input.len());
        for _ in 0..10 {
            let mut cuts: Vec<usize> = (0..rng.below(20))
                .map(|_| rng.below(input.len() + 1))
                .collect();
            cuts.sort_unstable();
            let (out, got) = run(&input, &cuts, false);
            assert!(
                out == input,
                "round {round} cuts={cuts:?}: {}",
                show(&input)
            );
            assert_eq!(got, whole_usage, "round {round} cuts={cuts:?}");
            let (out, got) = run(&input, &cuts, true);
            assert!(
                out == whole_stripped,
                "round {round} cuts={cuts:?}: {}",
                show(&input)
            );
            assert_eq!(got, whole_usage, "round {round} cuts={cuts:?}");
        }
    }
}

#[test]
fn stripping_only_ever_removes_bytes() {
    // Whatever is stripped, the rest keeps its order: the output is a subsequence of the
    // input, and nothing is removed from input that has no usage-only chunk at all.
    let mut rng = Rng(42);
    for _ in 0..300 {
        let len = 1 + rng.below(400);
        let input = garbage(&mut rng, len);
        let (out, _) = usage::from_sse_body(&input, true);
        let mut remaining = out.iter().peekable();
        for byte in &input {
            if remaining.peek() == Some(&byte) {
                remaining.next();
            }
        }
        assert!(
            remaining.next().is_none(),
            "not a subsequence: {}",
            show(&input)
        );
        if !input.windows(14).any(|w| w == br#""choices":[],"#) {
            assert_eq!(out, input);
        }
    }
}

#[test]
fn json_fixtures() {
    let cases: [(&[u8], Option<Usage>); 6] = [
        (
            fixture!("json/chat_completion.json"),
            Some(usage(19, 10, 0)),
        ),
        (
            fixture!("json/chat_completion_cached.json"),
            Some(usage(2006, 300, 1920)),
        ),
        (fixture!("json/text_completion.json"), Some(usage(5, 7, 0))),
        (fixture!("json/embeddings.json"), Some(usage(8, 0, 0))),
        (fixture!("json/chat_completion_no_usage.json"), None),
        (fixture!("json/error.json"), None),
    ];
    for (body, want) in cases {
        assert_eq!(usage::from_json_body(body), want, "{}", show(body));
    }
    // An SSE body is not a JSON body.
    assert_eq!(
        usage::from_json_body(fixture!("sse/chat_include_usage.sse")),
        None
    );
}

#[test]
fn json_bodies_cut_short_or_garbled_give_none() {
    let body = fixture!("json/chat_completion_cached.json");
    for cut in 0..body.len().saturating_sub(2) {
        // Every strict prefix of the object is invalid JSON (the fixture ends "}\n").
        assert_eq!(usage::from_json_body(&body[..cut]), None, "cut={cut}");
    }
    let mut rng = Rng(3);
    for _ in 0..500 {
        let len = 1 + rng.below(200);
        let input = garbage(&mut rng, len);
        let _ = usage::from_json_body(&input);
    }
    // Deep nesting hits serde_json's recursion limit, not the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(usage::from_json_body(deep.as_bytes()), None);
}
