//! The oracles behind detour's fuzz targets: each target in `fuzz_targets/` decodes its
//! input and calls one function here, which runs the core and panics when an invariant
//! breaks. Kept in a library (wasmtime's layout) so the targets stay one line each.

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use detour_core::budget;
use detour_core::classify;
use detour_core::config::{self, Config};
use detour_core::flow::{Answer, Flow, Reason, Step, Verdict};
use detour_core::price;
use detour_core::request::ParsedRequest;
use detour_core::retry_after;
use detour_core::store::MemoryStore;
use detour_core::usage::{self, SseUsage, Usage, MAX_HELD_BYTES};
use detour_core::UnixMillis;

/// Every `os.environ/NAME` resolves, except names starting with `MISSING`.
fn env(name: &str) -> Option<String> {
    (!name.starts_with("MISSING")).then(|| format!("sk-fuzz-{}", name.len()))
}

/// The fixed config the `request` and `flow` targets run against: paid, cheap and free
/// groups with fallbacks, retries, a breaker, RPM/TPM, a context window, and budgets in
/// every scope kind small enough that a few requests exhaust them.
pub const FLOW_CONFIG: &str = r#"
model_list:
  - model_name: paid
    litellm_params: {model: openai/p1, api_base: "http://127.0.0.1:1/a/v1", api_key: os.environ/K, input_cost_per_token: 0.0001, output_cost_per_token: 0.0002, order: 1, rpm: 3, tpm: 2000}
    model_info: {id: p1}
  - model_name: paid
    litellm_params: {model: anthropic/p2, api_base: "http://127.0.0.1:1/b", api_key: os.environ/K, input_cost_per_token: 0.0001, output_cost_per_token: 0.0002, order: 2, max_input_tokens: 5}
    model_info: {id: p2}
  - model_name: cheap
    litellm_params: {model: gemini/c1, api_base: "http://127.0.0.1:1/c", api_key: os.environ/K, input_cost_per_token: 0.00001, output_cost_per_token: 0.00002}
    model_info: {id: c1}
  - model_name: free
    litellm_params: {model: hosted_vllm/f1, api_base: "http://127.0.0.1:1/f/v1", input_cost_per_token: 0, output_cost_per_token: 0}
    model_info: {id: f1}
router_settings:
  num_retries: 2
  allowed_fails: 1
  cooldown_time: 5
  request_timeout: 3
  fallbacks: [{paid: [cheap, free]}, {cheap: [free]}]
  context_window_fallbacks: [{paid: [free]}]
  content_policy_fallbacks: [{paid: [cheap]}]
detour:
  stages: {Spec: paid, Build: cheap}
  backoff_base: 1s
  max_attempts: 6
  request_deadline: 60s
  budgets:
    period: 1h
    default_max_tokens: 16
    total: 0.05
    groups: {paid: 0.02, cheap: 0.005}
    tags: {Spec: 0.01}
    tag_overrun: {Spec: cheap}
"#;

/// [`FLOW_CONFIG`], loaded.
pub fn flow_config() -> Config {
    match config::load(FLOW_CONFIG, &env) {
        Ok(loaded) => loaded.config,
        Err(err) => panic!("the fuzz config does not load: {:?}", err.errors),
    }
}

/// `config` target: loading never panics, and a loaded config's chains name only
/// deployments it has.
pub fn config(text: &str) {
    let Ok(loaded) = config::load(text, &env) else {
        return;
    };
    let config = loaded.config;
    for group in config.groups.values() {
        for idx in &group.deployments {
            assert!(
                config.deployment(*idx).is_some(),
                "group {} names a missing deployment",
                group.name
            );
        }
    }
}

/// `request` target: parsing arbitrary bytes on every client protocol's endpoint never
/// panics; an accepted request is rewritten (or refused as untranslatable) for every
/// deployment of every protocol. Input: byte 0 picks the endpoint, the rest is the body.
pub fn request(input: &[u8]) {
    thread_local! {
        static CONFIG: Config = flow_config();
    }
    let Some((&which, body)) = input.split_first() else {
        return;
    };
    let path = match which % 3 {
        0 => "/v1/chat/completions",
        1 => "/v1/messages",
        _ => "/v1/responses",
    };
    CONFIG.with(|config| {
        let Ok(parsed) = ParsedRequest::parse(config, "POST", path, body) else {
            return;
        };
        for deployment in &config.deployments {
            if let Ok(outgoing) = parsed.attempt_for(deployment) {
                assert!(!outgoing.body.is_empty());
                assert!(outgoing.path.starts_with('/'));
            }
        }
        let _ = parsed.output_estimate(config.budgets.default_max_tokens);
    });
}

/// `usage_json` target: never panics; a believed usage prices without panicking.
pub fn usage_json(body: &[u8]) {
    if let Some(usage) = usage::from_json_body(body) {
        let price = price::Price {
            input_nanos: u64::MAX,
            cached_input_nanos: u64::MAX,
            cache_write_nanos: u64::MAX,
            output_nanos: u64::MAX,
        };
        let _ = price::cost_nanos(&price, &usage);
        assert!(usage.cached_prompt_tokens <= u64::MAX);
    }
}

/// `sse` target: the chunked result equals the whole-body result (output and usage),
/// however the stream is cut; without stripping the output is the input, byte for byte;
/// held bytes never exceed [`MAX_HELD_BYTES`].
///
/// Input: byte 0 bit 0 is "strip the usage chunk"; bytes 1–2 seed the chunk lengths
/// (1 to 256 bytes, or 1 to 16 when byte 0 bit 1 is set); the rest is the stream. The
/// seed corpus is SSE fixtures behind three such bytes.
pub fn sse(data: &[u8]) {
    let (header, stream) = data.split_at(data.len().min(3));
    let flags = header.first().copied().unwrap_or(0);
    let strip = flags & 1 == 1;
    let max_cut: u32 = if flags & 2 == 2 { 16 } else { 256 };
    let mut cut_seed = u32::from(header.get(1).copied().unwrap_or(0))
        | u32::from(header.get(2).copied().unwrap_or(0)) << 8;
    let mut sse = SseUsage::new(strip);
    let mut out = Vec::new();
    let mut fed = 0usize;
    let mut rest = stream;
    while !rest.is_empty() {
        cut_seed = cut_seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((cut_seed >> 16) % max_cut + 1) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        fed += chunk.len();
        out.extend_from_slice(&sse.push(chunk));
        assert!(out.len() <= fed, "more bytes out than in");
        if !strip {
            assert!(
                fed - out.len() <= MAX_HELD_BYTES,
                "held {} bytes",
                fed - out.len()
            );
        }
    }
    out.extend_from_slice(&sse.finish());
    let chunked_usage = sse.usage();
    if !strip {
        assert_eq!(out, stream, "without stripping, output must equal input");
    }
    let (whole, whole_usage) = usage::from_sse_body(stream, strip);
    assert_eq!(out, whole, "output depends on the chunk cuts");
    assert_eq!(
        chunked_usage, whole_usage,
        "usage depends on the chunk cuts"
    );
}

/// `classify` target: never panics; a missing answer is a transient reset.
pub fn classify(status: Option<u16>, body: &[u8]) {
    let _ = classify::needs_body(status.unwrap_or(0));
    let (_, reason) = classify::classify(status, body);
    if status.is_none() {
        assert_eq!(reason, Reason::Reset);
    }
}

/// `retry_after` target: never panics; a wait is at most the HTTP-date range (year 9999).
pub fn retry_after(now: UnixMillis, retry_after: Option<&str>, retry_after_ms: Option<&str>) {
    if let Some(ms) = retry_after::parse(now, retry_after, retry_after_ms) {
        assert!(ms <= 253_402_300_800_000, "{ms} ms");
    }
}

/// An upstream status, biased toward the ones that matter.
#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum UpstreamStatus {
    Ok,
    RateLimited,
    Unavailable,
    GatewayTimeout,
    Auth,
    BadRequest,
    Other(u16),
    NoAnswer,
}

/// An answer body.
#[derive(Debug, Arbitrary, Clone)]
pub enum Body {
    Empty,
    ContextWindow,
    ContentPolicy,
    Raw(Vec<u8>),
}

/// One thing that happens to the requests sharing a store.
#[derive(Debug, Arbitrary, Clone)]
pub enum Op {
    /// A new request (group 0 paid, 1 cheap, 2 free, else unknown; stage 0 Spec, 1 Build).
    Start {
        group: u8,
        stage: u8,
        stream: bool,
        max_tokens: u8,
    },
    Poll {
        req: u8,
    },
    Answer {
        req: u8,
        status: UpstreamStatus,
        retry_after: Option<u16>,
        retry_after_ms: Option<u32>,
        body: Body,
    },
    TransportFailure {
        req: u8,
        kind: u8,
    },
    Unreachable {
        req: u8,
    },
    Advance {
        ms: u32,
    },
    /// The wall clock steps back.
    StepBack {
        ms: u16,
    },
    /// The delivered answer completes (usage tokens, at most the request's estimate).
    Settle {
        req: u8,
        usage: Option<(u8, u8)>,
    },
    /// The client goes away.
    Abandon {
        req: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ready,
    Sent,
    Delivered,
    Done,
}

struct Request {
    flow: Flow,
    phase: Phase,
    max_tokens: u64,
}

/// A realistic start: 2023-11-14T22:13:20Z.
const T0: UnixMillis = 1_700_000_000_000;
const MAX_REQUESTS: usize = 6;
/// 40 characters: an estimate of 10 prompt tokens.
const PROMPT: &str = "fuzzing the flow: forty characters long.";

struct World {
    config: Config,
    store: MemoryStore,
    now: UnixMillis,
    /// Every `now` seen, to check the accounts of every period touched.
    seen: BTreeSet<UnixMillis>,
    requests: Vec<Request>,
}

impl World {
    fn poll(&mut self, i: usize) -> Option<UnixMillis> {
        let now = self.now;
        let request = &mut self.requests[i];
        if request.phase != Phase::Ready {
            return None;
        }
        match request.flow.poll(&self.config, &mut self.store, now) {
            Step::Send(_) => request.phase = Phase::Sent,
            Step::Wait(at) => return Some(at),
            Step::Respond(_) => {
                request.flow.abandon(&self.config, &mut self.store, now);
                request.phase = Phase::Done;
            }
        }
        let _ = request.flow.take_events();
        None
    }

    fn answer(&mut self, i: usize, answer: Answer<'_>) {
        let now = self.now;
        let request = &mut self.requests[i];
        if request.phase != Phase::Sent {
            return;
        }
        request.phase = match request
            .flow
            .on_answer(&self.config, &mut self.store, now, answer)
        {
            Verdict::Deliver(_) => Phase::Delivered,
            Verdict::Next => Phase::Ready,
        };
        let _ = request.flow.take_events();
    }

    /// Every budget account of every period touched: never past its limit (the costs this
    /// oracle reports never exceed their estimates), and with `settled`, nothing reserved.
    fn check_budgets(&self, settled: bool) {
        for limit in &self.config.budgets.limits {
            let starts: BTreeSet<UnixMillis> =
                self.seen.iter().map(|&t| limit.period.start(t)).collect();
            for start in starts {
                let account = budget::account(&self.store, limit, start).unwrap_or_default();
                // A stage tag past its limit with a `tag_overrun` group keeps counting its
                // overrun answers without enforcing the limit (by design: the overrun group
                // is what the tag spends once its budget is gone), so a tag's account may
                // pass its limit. Every other scope is enforced on every reservation.
                let enforced = !matches!(limit.scope, budget::Scope::Tag(_));
                assert!(
                    !enforced
                        || account.spent.saturating_add(account.reserved) <= limit.limit_nanos,
                    "{} over its limit: {account:?} > {}",
                    limit.scope,
                    limit.limit_nanos
                );
                if settled {
                    assert_eq!(
                        account.reserved, 0,
                        "{} still reserves after every request ended",
                        limit.scope
                    );
                }
            }
        }
    }
}

/// `flow` target: requests sharing one store under arbitrary answers, clock moves,
/// settles and abandons. Never panics; budgets never commit past a limit; every request
/// ends within a bounded number of polls once answers keep coming; when every request
/// has ended, nothing is reserved.
pub fn flow(ops: &[Op]) {
    thread_local! {
        static CONFIG: Config = flow_config();
    }
    let config = CONFIG.with(Config::clone);
    let mut world = World {
        config,
        store: MemoryStore::default(),
        now: T0,
        seen: BTreeSet::from([T0]),
        requests: Vec::new(),
    };
    for op in ops.iter().take(256) {
        match op.clone() {
            Op::Start {
                group,
                stage,
                stream,
                max_tokens,
            } => {
                if world
                    .requests
                    .iter()
                    .filter(|r| r.phase != Phase::Done)
                    .count()
                    >= MAX_REQUESTS
                {
                    continue;
                }
                let model = ["paid", "cheap", "free"]
                    .get(usize::from(group))
                    .copied()
                    .unwrap_or("nope");
                let stage = ["Spec", "Build"].get(usize::from(stage)).copied();
                let max_tokens = u64::from(max_tokens % 32) + 1;
                let body = format!(
                    r#"{{"model":"{model}","stream":{stream},"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{PROMPT}"}}]}}"#
                );
                let Ok(parsed) = ParsedRequest::parse(
                    &world.config,
                    "POST",
                    "/v1/chat/completions",
                    body.as_bytes(),
                ) else {
                    continue;
                };
                let seed = world.now ^ (world.requests.len() as u64);
                if let Ok(flow) = Flow::start(&world.config, parsed, stage, world.now, seed) {
                    world.requests.push(Request {
                        flow,
                        phase: Phase::Ready,
                        max_tokens,
                    });
                }
            }
            Op::Poll { req } => {
                if let Some(i) = world.live_index(req) {
                    world.poll(i);
                }
            }
            Op::Answer {
                req,
                status,
                retry_after,
                retry_after_ms,
                body,
            } => {
                let Some(i) = world.live_index(req) else {
                    continue;
                };
                let status = match status {
                    UpstreamStatus::Ok => Some(200),
                    UpstreamStatus::RateLimited => Some(429),
                    UpstreamStatus::Unavailable => Some(503),
                    UpstreamStatus::GatewayTimeout => Some(504),
                    UpstreamStatus::Auth => Some(401),
                    UpstreamStatus::BadRequest => Some(400),
                    UpstreamStatus::Other(s) => Some(s),
                    UpstreamStatus::NoAnswer => None,
                };
                let body = match body {
                    Body::Empty => Vec::new(),
                    Body::ContextWindow => br#"{"error":{"code":"context_length_exceeded","message":"maximum context length"}}"#.to_vec(),
                    Body::ContentPolicy => br#"{"error":{"code":"content_filter","message":"content management policy"}}"#.to_vec(),
                    Body::Raw(bytes) => bytes,
                };
                let retry_after = retry_after.map(|s| s.to_string());
                let retry_after_ms = retry_after_ms.map(|s| s.to_string());
                world.answer(
                    i,
                    Answer {
                        status,
                        retry_after: retry_after.as_deref(),
                        retry_after_ms: retry_after_ms.as_deref(),
                        body: &body,
                        transport_failure: None,
                    },
                );
            }
            Op::TransportFailure { req, kind } => {
                let Some(i) = world.live_index(req) else {
                    continue;
                };
                let reason = [Reason::Timeout, Reason::ConnectionFailure, Reason::Reset]
                    [usize::from(kind % 3)];
                world.answer(
                    i,
                    Answer {
                        status: Some(503),
                        transport_failure: Some(reason),
                        ..Answer::default()
                    },
                );
            }
            Op::Unreachable { req } => {
                let Some(i) = world.live_index(req) else {
                    continue;
                };
                let now = world.now;
                let request = &mut world.requests[i];
                if request.phase == Phase::Sent {
                    request.phase =
                        match request
                            .flow
                            .on_unreachable(&world.config, &mut world.store, now)
                        {
                            Verdict::Deliver(_) => Phase::Delivered,
                            Verdict::Next => Phase::Ready,
                        };
                }
            }
            Op::Advance { ms } => world.now = world.now.saturating_add(u64::from(ms)),
            Op::StepBack { ms } => world.now = world.now.saturating_sub(u64::from(ms)),
            Op::Settle { req, usage } => {
                let Some(i) = world.live_index(req) else {
                    continue;
                };
                let now = world.now;
                let request = &mut world.requests[i];
                if request.phase == Phase::Delivered {
                    // At most the estimate: ≤ 10 prompt tokens (the prompt's estimate) and
                    // ≤ max_tokens completion tokens.
                    let usage = usage.map(|(p, c)| Usage {
                        prompt_tokens: u64::from(p % 11),
                        completion_tokens: u64::from(c) % (request.max_tokens + 1),
                        ..Usage::default()
                    });
                    request
                        .flow
                        .settle(&world.config, &mut world.store, now, usage);
                    request.flow.abandon(&world.config, &mut world.store, now);
                    request.phase = Phase::Done;
                }
            }
            Op::Abandon { req } => {
                let Some(i) = world.live_index(req) else {
                    continue;
                };
                let now = world.now;
                let request = &mut world.requests[i];
                request.flow.abandon(&world.config, &mut world.store, now);
                request.phase = Phase::Done;
            }
        }
        world.seen.insert(world.now);
        world.check_budgets(false);
    }

    // Every request still running must end: answer each attempt with a 503, serve each
    // wait when it is due, and settle what is delivered.
    let bound =
        8 * (world.config.settings.max_attempts as usize + world.config.deployments.len() + 2);
    for i in 0..world.requests.len() {
        let mut polls = 0;
        while world.requests[i].phase != Phase::Done {
            polls += 1;
            assert!(
                polls <= bound,
                "request {i} did not end within {bound} polls"
            );
            match world.requests[i].phase {
                Phase::Ready => {
                    if let Some(at) = world.poll(i) {
                        world.now = world.now.max(at);
                        world.seen.insert(world.now);
                    }
                }
                Phase::Sent => world.answer(
                    i,
                    Answer {
                        status: Some(503),
                        ..Answer::default()
                    },
                ),
                Phase::Delivered => {
                    let now = world.now;
                    let request = &mut world.requests[i];
                    request
                        .flow
                        .settle(&world.config, &mut world.store, now, None);
                    request.phase = Phase::Done;
                }
                Phase::Done => {}
            }
        }
    }
    world.check_budgets(true);
}

impl World {
    fn live_index(&self, req: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.requests.len())
            .filter(|&i| self.requests[i].phase != Phase::Done)
            .collect();
        live.get(usize::from(req) % live.len().max(1)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_config_loads_and_a_plain_flow_runs() {
        let _ = flow_config();
        flow(&[
            Op::Start {
                group: 0,
                stage: 0,
                stream: false,
                max_tokens: 8,
            },
            Op::Poll { req: 0 },
            Op::Answer {
                req: 0,
                status: UpstreamStatus::Ok,
                retry_after: None,
                retry_after_ms: None,
                body: Body::Empty,
            },
            Op::Settle {
                req: 0,
                usage: Some((10, 8)),
            },
        ]);
    }
}

/// `protocol` target: a provider's answer, stream or error in any protocol, translated for
/// any client protocol, never panics; a stream translated in arbitrary chunk splits gives
/// the same bytes and usage as the whole stream translated at once.
///
/// Input: byte 0 picks the provider (bits 0–1) and client (bits 2–3) protocols, byte 1
/// seeds the chunk lengths; the rest is the provider's body.
pub fn protocol(input: &[u8]) {
    use detour_core::protocol::transcode::{self, AnswerPlan, StreamTranscoder};
    use detour_core::protocol::Protocol;

    let [selector, seed, body @ ..] = input else {
        return;
    };
    let provider = [Protocol::OpenAiChat, Protocol::Anthropic, Protocol::Gemini]
        [usize::from(selector & 3) % 3];
    let client = [
        Protocol::OpenAiChat,
        Protocol::Anthropic,
        Protocol::OpenAiResponses,
    ][usize::from((selector >> 2) & 3) % 3];
    let plan = AnswerPlan {
        client,
        provider,
        stream: selector & 16 != 0,
        client_wants_usage: selector & 32 != 0,
    };
    let _ = transcode::whole_answer(&plan, body);
    let _ = transcode::error_answer(&plan, 400, body);
    let whole = transcode::whole_stream(&plan, body);
    if !plan.translates() {
        return;
    }
    let Some(mut chunked) = StreamTranscoder::translating(&plan) else {
        return;
    };
    let mut out = Vec::new();
    let mut rest = body;
    let mut step = usize::from(*seed).max(1);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        out.extend(chunked.push(chunk));
        rest = tail;
        step = (step * 7 + 3) % 61 + 1;
    }
    out.extend(chunked.finish());
    if let Ok((bytes, usage)) = whole {
        assert_eq!(out, bytes, "chunked and whole translation differ");
        assert_eq!(chunked.usage(), usage);
    } else {
        assert!(chunked.failure().is_some(), "whole failed but chunked did not");
    }
}
