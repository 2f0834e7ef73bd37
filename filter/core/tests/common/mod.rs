//! Shared by the integration tests: a config builder, request helpers and a tiny driver
//! that runs a [`Flow`] against scripted provider answers on a virtual clock.
//!
//! Every test binary uses a different part of this module.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by several test binaries, each using part of it"
)]

pub mod canon;

use std::collections::{BTreeMap, VecDeque};

use detour_core::config::{self, Config, LoadError, Loaded};
use detour_core::event::Event;
use detour_core::flow::{Answer, AttemptRecord, Flow, Send, Step, Verdict};
use detour_core::request::ParsedRequest;
use detour_core::respond::Response;
use detour_core::store::Store;
use detour_core::UnixMillis;
use serde_json::{json, Value};

/// A realistic "now": 2023-11-14T22:13:20Z.
pub const T0: UnixMillis = 1_700_000_000_000;

/// The value every `os.environ/DETOUR_TEST_KEY` resolves to.
pub const TEST_KEY: &str = "sk-test-0123456789";

/// The fake environment the fixtures load with: `DETOUR_TEST_KEY`, `DETOUR_ADMIN_TOKEN`
/// and `*_API_KEY` exist.
pub fn fake_env(name: &str) -> Option<String> {
    match name {
        "DETOUR_TEST_KEY" => Some(TEST_KEY.to_string()),
        "DETOUR_ADMIN_TOKEN" => Some("admin-token-0123456789".to_string()),
        n if n.ends_with("_API_KEY") => Some(format!("sk-fake-{}", n.to_lowercase())),
        _ => None,
    }
}

/// Loads `text` with [`fake_env`].
pub fn load(text: &str) -> Result<Loaded, LoadError> {
    config::load(text, &fake_env)
}

/// Loads `text` and fails the test, listing the errors, if it does not load.
pub fn load_ok(text: &str) -> Loaded {
    match load(text) {
        Ok(loaded) => loaded,
        Err(err) => panic!(
            "config did not load: {:#?}\n--- config ---\n{text}",
            err.errors
        ),
    }
}

/// Loads `text` and fails the test if it loads.
pub fn load_err(text: &str) -> LoadError {
    match load(text) {
        Ok(_) => panic!("config loaded but should not have:\n{text}"),
        Err(err) => err,
    }
}

/// Builds a LiteLLM `config.yaml` one deployment at a time.
///
/// Deployment `id` becomes `model_info.id`, its model `openai/<id>-model`, its `api_base`
/// `http://127.0.0.1:18001/<id>/v1`, its key `os.environ/DETOUR_TEST_KEY`.
#[derive(Debug, Default, Clone)]
pub struct Fixture {
    model_list: Vec<String>,
    router: Vec<String>,
    detour: Vec<String>,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture::default()
    }

    /// A deployment `id` in route group `group`.
    pub fn deployment(self, group: &str, id: &str) -> Self {
        self.deployment_with(group, id, &[])
    }

    /// A deployment with extra `litellm_params` lines such as `"order: 2"`.
    pub fn deployment_with(mut self, group: &str, id: &str, params: &[&str]) -> Self {
        let mut entry = format!(
            "  - model_name: {group}\n    litellm_params:\n      model: openai/{id}-model\n      \
             api_base: http://127.0.0.1:18001/{id}/v1\n      api_key: os.environ/DETOUR_TEST_KEY\n"
        );
        for line in params {
            entry.push_str(&format!("      {line}\n"));
        }
        entry.push_str(&format!("    model_info:\n      id: {id}\n"));
        self.model_list.push(entry);
        self
    }

    /// A `router_settings` line such as `"num_retries: 0"` or `"fallbacks: [{g: [h]}]"`.
    pub fn router(mut self, line: &str) -> Self {
        self.router.push(line.to_string());
        self
    }

    /// A `detour:` line such as `"max_attempts: 3"`.
    pub fn detour(mut self, line: &str) -> Self {
        self.detour.push(line.to_string());
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut out = String::from("model_list:\n");
        for entry in &self.model_list {
            out.push_str(entry);
        }
        for (name, lines) in [("router_settings", &self.router), ("detour", &self.detour)] {
            if !lines.is_empty() {
                out.push_str(&format!("{name}:\n"));
                for line in lines {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        out
    }

    /// The loaded configuration (the test fails if it has errors).
    pub fn build(&self) -> Config {
        load_ok(&self.yaml()).config
    }
}

/// A chat request naming `model` (or none), with one short message.
pub fn chat(config: &Config, model: Option<&str>) -> ParsedRequest {
    let body = match model {
        Some(model) => json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        None => json!({"messages": [{"role": "user", "content": "hi"}]}),
    };
    request(config, &body)
}

/// A chat request with the given body.
pub fn request(config: &Config, body: &Value) -> ParsedRequest {
    let bytes = serde_json::to_vec(body).unwrap();
    match ParsedRequest::parse(config, "POST", "/v1/chat/completions", &bytes) {
        Ok(request) => request,
        Err(response) => panic!("request rejected: {}", body_text(&response)),
    }
}

/// A response body as text.
pub fn body_text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// A response body as JSON.
pub fn body_json(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

/// A response header's value.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One scripted upstream answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub retry_after_ms: Option<String>,
    pub body: Vec<u8>,
    /// How long the provider takes to answer (virtual time).
    pub latency_ms: u64,
}

impl Reply {
    /// A 200 chat completion.
    pub fn ok() -> Reply {
        Reply::status(200).body(
            r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#,
        )
    }

    /// An answer with this status and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status: Some(status),
            retry_after: None,
            retry_after_ms: None,
            body: Vec::new(),
            latency_ms: 0,
        }
    }

    /// No answer: the connection was reset.
    pub fn reset() -> Reply {
        Reply {
            status: None,
            ..Reply::status(0)
        }
    }

    /// OpenAI's 400 for a prompt that is too long.
    pub fn context_length() -> Reply {
        Reply::status(400).body(
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        )
    }

    /// OpenAI's 400 for refused content.
    pub fn content_policy() -> Reply {
        Reply::status(400).body(
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","code":"content_policy_violation"}}"#,
        )
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.as_bytes().to_vec();
        self
    }

    pub fn retry_after(mut self, value: &str) -> Reply {
        self.retry_after = Some(value.to_string());
        self
    }

    pub fn retry_after_ms(mut self, value: &str) -> Reply {
        self.retry_after_ms = Some(value.to_string());
        self
    }

    /// The provider answers after `ms` of virtual time.
    pub fn after(mut self, ms: u64) -> Reply {
        self.latency_ms = ms;
        self
    }

    fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.status,
            retry_after: self.retry_after.as_deref(),
            retry_after_ms: self.retry_after_ms.as_deref(),
            body: &self.body,
            transport_failure: None,
        }
    }
}

/// A fake provider: scripted answers per deployment id, in order. A deployment with no
/// (more) script answers [`Reply::ok`].
#[derive(Debug, Default, Clone)]
pub struct Provider {
    scripts: BTreeMap<String, VecDeque<Reply>>,
}

impl Provider {
    pub fn new() -> Self {
        Provider::default()
    }

    /// `deployment` answers these, one per attempt, then 200s.
    pub fn script(mut self, deployment: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.scripts
            .entry(deployment.to_string())
            .or_default()
            .extend(replies);
        self
    }

    /// `deployment` always answers this.
    pub fn always(self, deployment: &str, reply: Reply) -> Self {
        self.script(deployment, std::iter::repeat_n(reply, 100))
    }

    /// The next answer of `deployment`.
    pub fn next(&mut self, deployment: &str) -> Reply {
        self.scripts
            .get_mut(deployment)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(Reply::ok)
    }
}

/// One attempt the flow sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was sent (virtual time).
    pub at: UnixMillis,
    /// The status the fake provider answered.
    pub status: Option<u16>,
    pub send: Send,
}

/// One `Step::Wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    pub at: UnixMillis,
    pub until: UnixMillis,
}

impl Waited {
    pub fn ms(&self) -> u64 {
        self.until - self.at
    }
}

/// How the request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A provider's answer was delivered (`Verdict::Deliver`).
    Delivered {
        deployment: String,
        status: Option<u16>,
        headers: Vec<(String, String)>,
    },
    /// detour answered itself (`Step::Respond`, or `Flow::start` refused the request).
    Responded(Response),
}

/// Everything that happened to one request.
#[derive(Debug, Clone)]
pub struct Trace {
    pub group: Option<String>,
    pub sent: Vec<Sent>,
    pub waits: Vec<Waited>,
    pub outcome: Outcome,
    pub events: Vec<Event>,
    pub attempts: Vec<AttemptRecord>,
    /// The virtual clock when the request ended.
    pub end: UnixMillis,
}

impl Trace {
    /// The deployments sent to, in order (retries repeat).
    pub fn sent_ids(&self) -> Vec<&str> {
        self.sent
            .iter()
            .map(|s| s.send.deployment_id.as_str())
            .collect()
    }

    /// The length of each wait, in order.
    pub fn wait_ms(&self) -> Vec<u64> {
        self.waits.iter().map(Waited::ms).collect()
    }

    /// The deployment whose answer was delivered, if one was.
    pub fn delivered_from(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Delivered { deployment, .. } => Some(deployment),
            Outcome::Responded(_) => None,
        }
    }

    /// The response detour wrote itself; fails the test when an answer was delivered.
    pub fn response(&self) -> &Response {
        match &self.outcome {
            Outcome::Responded(response) => response,
            Outcome::Delivered { deployment, .. } => {
                panic!("expected detour's own response, but {deployment}'s answer was delivered")
            }
        }
    }

    /// The `error` object of detour's own response.
    pub fn error(&self) -> Value {
        body_json(self.response())["error"].clone()
    }

    /// Event names in order (`retry`, `fallback`, …).
    pub fn event_names(&self) -> Vec<String> {
        self.events.iter().map(event_name).collect()
    }

    /// Whether an event of this name (`breaker_opened`, `recovery`, …) was recorded.
    pub fn has_event(&self, name: &str) -> bool {
        self.events.iter().any(|e| event_name(e) == name)
    }
}

/// An event's `event` tag as it appears in the JSON line.
pub fn event_name(event: &Event) -> String {
    let value: Value = serde_json::from_str(&event.to_json()).unwrap();
    value["event"].as_str().unwrap_or_default().to_string()
}

/// Runs one request to its end: sends go to `provider`, waits advance the virtual clock.
pub fn run<S: Store + ?Sized>(
    config: &Config,
    store: &mut S,
    provider: &mut Provider,
    request: ParsedRequest,
    stage: Option<&str>,
    now: UnixMillis,
    seed: u64,
) -> Trace {
    let mut trace = Trace {
        group: None,
        sent: Vec::new(),
        waits: Vec::new(),
        outcome: Outcome::Responded(Response {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        }),
        events: Vec::new(),
        attempts: Vec::new(),
        end: now,
    };
    let mut flow = match Flow::start(config, request, stage, now, seed) {
        Ok(flow) => flow,
        Err(response) => {
            trace.outcome = Outcome::Responded(*response);
            return trace;
        }
    };
    trace.group = Some(flow.group().to_string());
    let mut now = now;
    for _ in 0..1000 {
        let step = flow.poll(config, store, now);
        trace.events.extend(flow.take_events());
        match step {
            Step::Send(send) => {
                let reply = provider.next(&send.deployment_id);
                trace.sent.push(Sent {
                    at: now,
                    status: reply.status,
                    send: send.clone(),
                });
                now += reply.latency_ms;
                let verdict = flow.on_answer(config, store, now, reply.answer());
                trace.events.extend(flow.take_events());
                if let Verdict::Deliver(headers) = verdict {
                    trace.outcome = Outcome::Delivered {
                        deployment: send.deployment_id,
                        status: reply.status,
                        headers,
                    };
                    break;
                }
            }
            Step::Wait(until) => {
                assert!(
                    until > now,
                    "Wait({until}) is not in the future (now {now})"
                );
                trace.waits.push(Waited { at: now, until });
                now = until;
            }
            Step::Respond(response) => {
                trace.outcome = Outcome::Responded(response);
                break;
            }
        }
    }
    assert!(
        !matches!(&trace.outcome, Outcome::Responded(r) if r.status == 0),
        "the flow did not finish within 1000 steps"
    );
    trace.attempts = flow.attempts().to_vec();
    trace.end = now;
    trace
}

/// [`run`] for a chat request naming `group`, no stage tag, seed 0.
pub fn run_chat<S: Store + ?Sized>(
    config: &Config,
    store: &mut S,
    provider: &mut Provider,
    group: &str,
    now: UnixMillis,
) -> Trace {
    run(
        config,
        store,
        provider,
        chat(config, Some(group)),
        None,
        now,
        0,
    )
}

/// Starts `n` flows for group `g` at `now` and polls each once, before any answer arrives,
/// as concurrent requests on several workers would. Returns the flows and where each sent.
pub fn concurrent_first_sends<S: Store + ?Sized>(
    config: &Config,
    store: &mut S,
    n: usize,
    now: UnixMillis,
) -> (Vec<Flow>, Vec<String>) {
    let mut flows = Vec::new();
    let mut targets = Vec::new();
    for seed in 0..n {
        let mut flow = match Flow::start(config, chat(config, Some("g")), None, now, seed as u64) {
            Ok(flow) => flow,
            Err(response) => panic!("flow {seed} refused: {}", body_text(&response)),
        };
        match flow.poll(config, store, now) {
            Step::Send(send) => targets.push(send.deployment_id),
            other => panic!("flow {seed}: {other:?}"),
        }
        flows.push(flow);
    }
    (flows, targets)
}
