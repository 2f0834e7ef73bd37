//! The HTTP context: one per request. It reads the request, routes the first attempt
//! through Envoy's router, and judges the router's answer.

use std::cell::RefCell;
use std::rc::Rc;

use detour_core::admin;
use detour_core::classify::{self, MAX_CLASSIFY_BODY};
use detour_core::flow::{Answer, Flow, Reason, Step, Verdict};
use detour_core::meter::{self, Meter, MAX_JSON_BODY};
use detour_core::protocol::{transcode, Protocol};
use detour_core::request::{self, ParsedRequest};
use detour_core::respond;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::host::{self, SharedData};
use crate::registry::{Registry, SharedState};
use crate::run::{log_event, log_events, Phase};

/// The request header that carries the stage tag.
pub(crate) const STAGE_HEADER: &str = "x-detour-stage";
/// The request header Envoy's `cluster_header` route reads.
pub(crate) const CLUSTER_HEADER: &str = "x-detour-cluster";
/// Client headers that belong to one protocol (the attempt's own headers replace them,
/// or they are removed).
const PROTOCOL_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];
/// The per-try timeout Envoy's router honours when a filter sets it.
const PER_TRY_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-per-try-timeout-ms";

/// Client headers never forwarded to a provider: credentials (the provider gets the
/// deployment's key instead) and anything that would steer detour or Envoy.
fn is_stripped_request_header(name: &str) -> bool {
    const CREDENTIALS: [&str; 6] = [
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "proxy-authorization",
    ];
    let name = name.to_ascii_lowercase();
    CREDENTIALS.contains(&name.as_str())
        || name.starts_with("x-detour-")
        || name == "content-length"
        // detour reads every answer (usage, translation): it must arrive uncompressed.
        || name == "accept-encoding"
}

/// What Envoy's router meant by a synthetic answer, from `response.code_details`
/// (e.g. `upstream_reset_before_response_started{remote_connection_failure}`).
fn transport_failure(details: &str) -> Option<Reason> {
    if details.contains("timeout") {
        Some(Reason::Timeout)
    } else if details.contains("connection_failure") {
        Some(Reason::ConnectionFailure)
    } else if details.starts_with("upstream_reset") {
        Some(Reason::Reset)
    } else {
        None
    }
}

pub(crate) struct DetourHttp {
    state: SharedState,
    registry: Rc<RefCell<Registry>>,
}

impl DetourHttp {
    pub(crate) fn new(state: SharedState, registry: Rc<RefCell<Registry>>) -> Self {
        DetourHttp { state, registry }
    }

    /// The body is complete: parse it, start the flow, route the first attempt.
    fn on_request_complete(&mut self, body_size: usize) -> Action {
        let mut state = self.state.borrow_mut();
        let Some(config) = state.config.clone() else {
            state.respond(&respond::internal_error(
                "detour: the filter has no valid configuration",
            ));
            return Action::Pause;
        };
        let limit = usize::try_from(config.settings.max_request_body_bytes).unwrap_or(usize::MAX);
        if body_size > limit {
            state.respond(&request::body_too_large(&config));
            return Action::Pause;
        }
        let body = host::buffer(BufferType::HttpRequestBody, body_size, limit);
        let parsed = match ParsedRequest::parse(&config, &state.method, &state.path, &body) {
            Ok(parsed) => parsed.with_anthropic_beta(state.anthropic_beta.clone()),
            Err(response) => {
                state.respond(&response);
                return Action::Pause;
            }
        };
        let now = host::now_ms();
        let seed =
            host::now_nanos() ^ u64::from(state.context_id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut flow = match Flow::start(&config, parsed, state.stage.as_deref(), now, seed) {
            Ok(flow) => flow,
            Err(response) => {
                state.respond(&response);
                return Action::Pause;
            }
        };
        let step = flow.poll(&config, &mut SharedData, now);
        log_events(&mut flow);
        state.flow = Some(flow);
        match step {
            Step::Send(send) => {
                // The first attempt rides the request itself through Envoy's router.
                host::set_header(
                    MapType::HttpRequestHeaders,
                    CLUSTER_HEADER,
                    Some(&send.cluster),
                );
                host::set_header(MapType::HttpRequestHeaders, ":path", Some(&send.path));
                host::set_header(
                    MapType::HttpRequestHeaders,
                    ":authority",
                    Some(&send.authority),
                );
                let timeout = send.first_byte_timeout_ms.to_string();
                host::set_header(
                    MapType::HttpRequestHeaders,
                    PER_TRY_TIMEOUT_HEADER,
                    Some(&timeout),
                );
                for (name, value) in &send.headers {
                    host::set_header(MapType::HttpRequestHeaders, name, Some(value));
                }
                // The client's protocol headers are for its own protocol's deployments:
                // a translated attempt goes without them (removed only when sent, to spare
                // the hostcalls on the common path).
                if state.protocol_headers {
                    for name in PROTOCOL_HEADERS {
                        if !send.headers.iter().any(|(n, _)| n == name) {
                            host::set_header(MapType::HttpRequestHeaders, name, None);
                        }
                    }
                }
                host::set_buffer(BufferType::HttpRequestBody, body_size, &send.body);
                state.phase = Phase::Routed;
                Action::Continue
            }
            Step::Wait(at) => {
                self.registry.borrow_mut().add_wait(at, state.context_id);
                state.phase = Phase::Replacing;
                Action::Pause
            }
            Step::Respond(response) => {
                state.respond(&response);
                Action::Pause
            }
        }
    }

    /// Feeds the router's answer to the flow; `true` when it goes to the client.
    fn judge_router_answer(
        &mut self,
        status: u16,
        retry_after: Option<&str>,
        retry_after_ms: Option<&str>,
        body: &[u8],
        transport_failure: Option<Reason>,
    ) -> Option<Vec<(String, String)>> {
        let mut state = self.state.borrow_mut();
        let config = state.config.clone()?;
        let flow = state.flow.as_mut()?;
        let answer = Answer {
            status: Some(status),
            retry_after,
            retry_after_ms,
            body,
            transport_failure,
        };
        let verdict = flow.on_answer(&config, &mut SharedData, host::now_ms(), answer);
        log_events(flow);
        match verdict {
            Verdict::Deliver(headers) => {
                state.phase = Phase::Passing;
                Some(headers)
            }
            Verdict::Next => {
                state.phase = Phase::Replacing;
                state.drive(&self.registry);
                None
            }
        }
    }
}

impl DetourHttp {
    /// A successful answer starts through the router: meter it on its way to the client.
    fn start_metering(&mut self, end_of_stream: bool) {
        let mut state = self.state.borrow_mut();
        let Some(flow) = state.flow.as_ref() else {
            return;
        };
        if !flow.awaiting_settlement() {
            return;
        }
        let Some(config) = state.config.clone() else {
            return;
        };
        let plan = flow.answer_plan(&config);
        let content_type = host::header(MapType::HttpResponseHeaders, "content-type");
        let meter = Meter::for_answer(content_type.as_deref(), &plan);
        if meter.rewrites() {
            // Chunks may change length once the usage chunk is taken out.
            host::set_header(MapType::HttpResponseHeaders, "content-length", None);
        }
        state.meter = Some(meter);
        drop(state);
        if end_of_stream {
            self.meter_chunk(0, true);
        }
    }

    /// One chunk of the delivered answer: forward what the meter says; at the end, settle.
    fn meter_chunk(&mut self, body_size: usize, end_of_stream: bool) {
        let mut state = self.state.borrow_mut();
        if state.first_byte_at.is_none() && body_size > 0 {
            state.first_byte_at = Some(host::now_ms());
        }
        let Some(meter) = state.meter.as_mut() else {
            return;
        };
        let chunk = if body_size > 0 {
            host::buffer(BufferType::HttpResponseBody, body_size, usize::MAX)
        } else {
            Vec::new()
        };
        let mut out = meter.push(&chunk);
        let mut usage = None;
        if end_of_stream {
            let (tail, found) = meter.finish();
            out.extend_from_slice(&tail);
            usage = found;
        }
        if meter.rewrites() && out != chunk {
            host::set_buffer(BufferType::HttpResponseBody, body_size, &out);
        }
        if end_of_stream {
            state.meter = None;
            if let (Some(config), Some(flow)) = (state.config.clone(), state.flow.as_mut()) {
                flow.settle(&config, &mut SharedData, host::now_ms(), usage);
                log_events(flow);
            }
        }
    }

    /// Answers the admin API and `GET /v1/models` itself, before anything else sees the
    /// request.
    fn admin_request(&mut self, headers: &[(String, String)]) -> Option<Action> {
        let mut state = self.state.borrow_mut();
        let config = state.config.clone()?;
        if let Some(response) = request::models_answer(&config, &state.method, &state.path) {
            state.respond(&response);
            return Some(Action::Pause);
        }
        if !admin::is_admin_path(&config, &state.path) {
            return None;
        }
        let authorization = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        let (response, events) = admin::handle(
            &config,
            &mut SharedData,
            host::now_ms(),
            &state.method,
            &state.path,
            authorization,
        );
        for event in &events {
            log_event(event);
        }
        state.respond(&response);
        Some(Action::Pause)
    }
}

impl DetourHttp {
    /// Whether the router's successful answer must be read whole before the client sees
    /// it (to translate it, or to check it is valid in the deployment's protocol).
    fn needs_whole_body(&self) -> bool {
        let state = self.state.borrow();
        let (Some(config), Some(flow)) = (state.config.as_ref(), state.flow.as_ref()) else {
            return false;
        };
        let plan = flow.answer_plan(config);
        if !plan.translates() && plan.provider == Protocol::OpenAiChat {
            // The common path: no header read needed to know it passes as it comes.
            return false;
        }
        let content_type = host::header(MapType::HttpResponseHeaders, "content-type");
        meter::needs_whole_body(content_type.as_deref(), &plan)
    }

    /// A whole successful answer from the router: translated and delivered (`true`), or,
    /// when it does not parse in its protocol, judged a failure so the chain goes on.
    fn judge_whole(&mut self, status: u16, body: &[u8]) -> bool {
        let metered = {
            let state = self.state.borrow();
            let (Some(config), Some(flow)) = (state.config.as_ref(), state.flow.as_ref()) else {
                return false;
            };
            let content_type = host::header(MapType::HttpResponseHeaders, "content-type");
            meter::whole(&flow.answer_plan(config), content_type.as_deref(), body)
        };
        let judged = match &metered {
            Ok(whole) => whole.refused.then_some(Reason::ContentPolicy),
            Err(_) => Some(Reason::InvalidAnswer),
        };
        let Some(extra) = self.judge_router_answer(status, None, None, b"", judged) else {
            return false;
        };
        let meter::Whole {
            body: out, usage, ..
        } = metered.unwrap_or_default();
        for (name, value) in &extra {
            host::set_header(MapType::HttpResponseHeaders, name, Some(value));
        }
        host::set_header(MapType::HttpResponseHeaders, "content-length", None);
        host::set_buffer(BufferType::HttpResponseBody, body.len(), &out);
        let mut state = self.state.borrow_mut();
        state.first_byte_at = Some(host::now_ms());
        if let (Some(config), Some(flow)) = (state.config.clone(), state.flow.as_mut()) {
            flow.settle(&config, &mut SharedData, host::now_ms(), usage);
            log_events(flow);
        }
        true
    }

    /// An error answer handed back to a client of another protocol: in its shape.
    fn translate_error_answer(&self, status: u16, body_size: usize, body: &[u8]) {
        let state = self.state.borrow();
        let (Some(config), Some(flow)) = (state.config.as_ref(), state.flow.as_ref()) else {
            return;
        };
        let plan = flow.answer_plan(config);
        if !plan.translates() || status < 300 {
            return;
        }
        let out = transcode::error_answer(&plan, status, body);
        host::set_header(MapType::HttpResponseHeaders, "content-length", None);
        host::set_header(
            MapType::HttpResponseHeaders,
            "content-type",
            Some("application/json"),
        );
        host::set_buffer(BufferType::HttpResponseBody, body_size, &out);
    }
}

impl Drop for DetourHttp {
    fn drop(&mut self) {
        // A stream cut short, a client gone: whatever the flow still holds is settled at
        // its estimate or released, never leaked.
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.abandon();
        }
        let context_id = self.state.borrow().context_id;
        self.registry.borrow_mut().remove_request(context_id);
    }
}

impl Context for DetourHttp {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.registry.borrow_mut().take_call(token_id);
        let mut state = self.state.borrow_mut();
        if state.phase == Phase::Replacing {
            state.on_call_answer(&self.registry, num_headers, body_size);
        }
    }
}

impl HttpContext for DetourHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = host::headers(MapType::HttpRequestHeaders);
        {
            let mut state = self.state.borrow_mut();
            for (name, value) in &headers {
                match name.as_str() {
                    ":method" => state.method = value.clone(),
                    ":path" => state.path = value.clone(),
                    STAGE_HEADER => {
                        state.stage = Some(value.trim().to_string()).filter(|s| !s.is_empty())
                    }
                    "anthropic-beta" => {
                        state.anthropic_beta = Some(value.clone());
                        state.protocol_headers = true;
                    }
                    "anthropic-version" => state.protocol_headers = true,
                    _ => {}
                }
            }
        }
        if let Some(action) = self.admin_request(&headers) {
            return action;
        }
        for (name, _) in headers
            .iter()
            .filter(|(name, _)| is_stripped_request_header(name))
        {
            host::set_header(MapType::HttpRequestHeaders, name, None);
        }
        if end_of_stream {
            // No body will come: answer now (pausing here would hang the request).
            let mut state = self.state.borrow_mut();
            let response = match state.config.clone() {
                Some(config) => {
                    match ParsedRequest::parse(&config, &state.method, &state.path, b"") {
                        Err(response) => *response,
                        Ok(_) => respond::client_error(
                            400,
                            "invalid_request_body",
                            "request body is empty",
                        ),
                    }
                }
                None => respond::internal_error("detour: the filter has no valid configuration"),
            };
            state.respond(&response);
            return Action::Pause;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let phase = self.state.borrow().phase.clone();
        if phase != Phase::ReadingRequest {
            return Action::Pause;
        }
        let limit = self
            .state
            .borrow()
            .config
            .as_ref()
            .map(|c| usize::try_from(c.settings.max_request_body_bytes).unwrap_or(usize::MAX))
            .unwrap_or(0);
        if !end_of_stream && body_size <= limit {
            return Action::Pause;
        }
        self.on_request_complete(body_size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let phase = self.state.borrow().phase.clone();
        if phase != Phase::Routed {
            // Our own local reply, or a response we already decided about.
            return Action::Continue;
        }
        let status = host::header(MapType::HttpResponseHeaders, ":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(0);
        let success = (200..300).contains(&status);
        // Retry hints matter only to a failure; a success skips the two hostcalls (the
        // common path: BENCHMARKS.md, "Profile").
        let (retry_after, retry_after_ms) = if success {
            (None, None)
        } else {
            (
                host::header(MapType::HttpResponseHeaders, "retry-after"),
                host::header(MapType::HttpResponseHeaders, "retry-after-ms"),
            )
        };
        let whole = success && self.needs_whole_body();
        if (classify::needs_body(status) || whole) && !end_of_stream {
            self.state.borrow_mut().phase = Phase::Judging {
                status,
                retry_after,
                retry_after_ms,
                whole,
            };
            return Action::Pause;
        }
        if whole {
            // A successful answer with no body at all: not valid in any protocol.
            return match self.judge_whole(status, &[]) {
                true => Action::Continue,
                false => Action::Pause,
            };
        }
        // Envoy's own answers to a transport failure are 503/504 (and 408 for a stream
        // idle timeout); only those need the router's details.
        let failure = if matches!(status, 408 | 503 | 504) {
            host::property(&["response", "code_details"]).and_then(|d| transport_failure(&d))
        } else {
            None
        };
        match self.judge_router_answer(
            status,
            retry_after.as_deref(),
            retry_after_ms.as_deref(),
            b"",
            failure,
        ) {
            Some(extra) => {
                for (name, value) in &extra {
                    host::set_header(MapType::HttpResponseHeaders, name, Some(value));
                }
                self.start_metering(end_of_stream);
                Action::Continue
            }
            None => Action::Pause,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let phase = self.state.borrow().phase.clone();
        match phase {
            Phase::Judging {
                status,
                retry_after,
                retry_after_ms,
                whole,
            } => {
                let limit = if whole {
                    MAX_JSON_BODY
                } else {
                    MAX_CLASSIFY_BODY
                };
                if !end_of_stream && body_size < limit {
                    // Hold it: the next call sees everything buffered so far.
                    return Action::Pause;
                }
                if whole {
                    let body = if end_of_stream {
                        host::buffer(BufferType::HttpResponseBody, body_size, limit)
                    } else {
                        // Larger than any answer detour translates: not believed.
                        Vec::new()
                    };
                    let delivered = self.judge_whole(status, &body);
                    if !delivered {
                        host::set_buffer(BufferType::HttpResponseBody, body_size, b"");
                        return Action::Pause;
                    }
                    return Action::Continue;
                }
                let body = host::buffer(BufferType::HttpResponseBody, body_size, MAX_CLASSIFY_BODY);
                match self.judge_router_answer(
                    status,
                    retry_after.as_deref(),
                    retry_after_ms.as_deref(),
                    &body,
                    None,
                ) {
                    // Headers are still held, so detour's headers can join them.
                    Some(extra) => {
                        for (name, value) in &extra {
                            host::set_header(MapType::HttpResponseHeaders, name, Some(value));
                        }
                        self.translate_error_answer(status, body_size, &body);
                        Action::Continue
                    }
                    None => {
                        host::set_buffer(BufferType::HttpResponseBody, body_size, b"");
                        Action::Pause
                    }
                }
            }
            Phase::Passing => {
                self.meter_chunk(body_size, end_of_stream);
                Action::Continue
            }
            Phase::Replacing => {
                // The failed answer's body is not wanted: drain it so it cannot fill the
                // buffer limit while later attempts run.
                host::set_buffer(BufferType::HttpResponseBody, body_size, b"");
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_details_name_the_transport_failure() {
        assert_eq!(
            transport_failure("upstream_response_timeout"),
            Some(Reason::Timeout)
        );
        assert_eq!(
            transport_failure("upstream_per_try_timeout"),
            Some(Reason::Timeout)
        );
        assert_eq!(
            transport_failure("upstream_reset_before_response_started{remote_connection_failure}"),
            Some(Reason::ConnectionFailure)
        );
        assert_eq!(
            transport_failure("upstream_reset_before_response_started{connection_termination}"),
            Some(Reason::Reset)
        );
        assert_eq!(transport_failure("via_upstream"), None);
    }

    #[test]
    fn strips_credentials_and_steering_headers() {
        for name in [
            "authorization",
            "Authorization",
            "x-api-key",
            "api-key",
            "cookie",
            "x-detour-cluster",
            "x-detour-stage",
            "content-length",
        ] {
            assert!(is_stripped_request_header(name), "{name}");
        }
        for name in ["content-type", "accept", "user-agent", "openai-beta"] {
            assert!(!is_stripped_request_header(name), "{name}");
        }
    }
}
