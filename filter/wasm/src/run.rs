//! Carrying out the core's steps for one request: dispatching attempts, parking waits,
//! answering. Used from the request's own HTTP context and from the root context (tick,
//! and answers to calls the tick made).

use std::cell::RefCell;
use std::rc::Rc;

use detour_core::config::Config;
use detour_core::event::Event;
use detour_core::flow::{Answer, Flow, Reason, Step, Verdict};
use detour_core::meter::{self, Meter};
use detour_core::protocol::transcode;
use detour_core::request::Endpoint;
use detour_core::respond::{self, Response};
use detour_core::telemetry;
use detour_core::UnixMillis;
use proxy_wasm::types::{BufferType, MapType};

use crate::host::{self, SharedData};
use crate::metrics;
use crate::registry::Registry;
use crate::webhook;

/// Where a request is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Buffering the request body.
    ReadingRequest,
    /// The first attempt went to Envoy's router; waiting for its response headers.
    Routed,
    /// The router's answer needs its body before it can be judged: a 4xx (to classify
    /// it), or (`whole`) a successful answer to translate or validate whole; buffering it.
    Judging {
        status: u16,
        retry_after: Option<String>,
        retry_after_ms: Option<String>,
        whole: bool,
    },
    /// The router's answer goes to the client as it is (success or pass-through).
    Passing,
    /// The router's answer failed: it is held (and drained) while later attempts run.
    Replacing,
    /// detour answered with a local response; let it through untouched.
    Done,
}

/// One request's state, shared between its HTTP context and the root (see `registry`).
pub(crate) struct RequestState {
    pub(crate) context_id: u32,
    pub(crate) config: Option<Rc<Config>>,
    pub(crate) phase: Phase,
    pub(crate) flow: Option<Flow>,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) stage: Option<String>,
    /// The client's `anthropic-beta` header: passed on to Anthropic deployments (on
    /// every attempt, dispatched ones included) when the client speaks Anthropic too.
    pub(crate) anthropic_beta: Option<String>,
    /// The client sent one of the headers of `http::PROTOCOL_HEADERS`.
    pub(crate) protocol_headers: bool,
    /// Meters the delivered answer of the router's attempt as it streams to the client.
    pub(crate) meter: Option<Meter>,
    /// When the request arrived, for the latency histogram.
    pub(crate) started_at: UnixMillis,
    /// When the first byte of the delivered answer arrived, for time to first token.
    pub(crate) first_byte_at: Option<UnixMillis>,
}

impl RequestState {
    pub(crate) fn new(context_id: u32, config: Option<Rc<Config>>) -> Self {
        RequestState {
            context_id,
            config,
            phase: Phase::ReadingRequest,
            flow: None,
            method: String::new(),
            path: String::new(),
            stage: None,
            anthropic_beta: None,
            protocol_headers: false,
            meter: None,
            started_at: host::now_ms(),
            first_byte_at: None,
        }
    }

    /// Answers the client with a response detour wrote, shaped for the client's protocol.
    pub(crate) fn respond(&mut self, response: &Response) {
        let protocol = Endpoint::protocol_of_path(&self.path);
        let response = respond::in_protocol(response.clone(), protocol);
        host::send_response(response.status, &response.headers, &response.body);
        self.phase = Phase::Done;
    }

    /// The request is over (its context is going away): settle or release what its flow
    /// still holds.
    pub(crate) fn abandon(&mut self) {
        let now = host::now_ms();
        let Some(config) = self.config.clone() else {
            return;
        };
        let duration_ms = now.saturating_sub(self.started_at);
        let ttft = self
            .first_byte_at
            .map(|t| t.saturating_sub(self.started_at));
        match self.flow.as_mut() {
            Some(flow) => {
                flow.abandon(&config, &mut SharedData, now);
                log_events(flow);
                let served = flow.served().and_then(|idx| config.deployment(idx));
                let outcome = flow.outcome().unwrap_or("abandoned");
                metrics::emit(&telemetry::for_request(
                    flow.group(),
                    served.map(|d| d.id.as_str()),
                    outcome,
                    duration_ms,
                    ttft,
                ));
                if let (Some(deployment), Some(usage)) = (served, flow.settled_usage()) {
                    metrics::emit(&telemetry::for_usage(&deployment.model, &usage));
                }
                if config.settings.request_events {
                    log_event(&flow.request_event(&config, now, duration_ms));
                }
            }
            // Refused before routing (bad input, admin): counted without a group.
            None => metrics::emit(&telemetry::for_request(
                "none",
                None,
                "invalid_request",
                duration_ms,
                None,
            )),
        }
    }

    /// Polls the flow and carries out its steps until one has to wait for the host: a
    /// dispatched call, a backoff deadline, or the final answer.
    pub(crate) fn drive(&mut self, registry: &RefCell<Registry>) {
        let (Some(config), Some(flow)) = (self.config.clone(), self.flow.as_mut()) else {
            self.respond(&respond::internal_error(
                "detour: request has no flow to drive",
            ));
            return;
        };
        // Each turn either returns or feeds one answer, which the core bounds by the chain
        // length and max_attempts; the counter is a belt-and-braces guard.
        for _ in 0..=config
            .settings
            .max_attempts
            .saturating_add(u32::try_from(config.deployments.len()).unwrap_or(u32::MAX))
        {
            let now = host::now_ms();
            let step = flow.poll(&config, &mut SharedData, now);
            log_events(flow);
            match step {
                Step::Send(send) => {
                    let mut headers = vec![
                        (":method".to_string(), "POST".to_string()),
                        (":path".to_string(), send.path.clone()),
                        (":authority".to_string(), send.authority.clone()),
                    ];
                    headers.extend(send.headers.iter().cloned());
                    match host::dispatch(&send.cluster, &headers, &send.body, send.total_timeout_ms)
                    {
                        Ok(token) => {
                            registry.borrow_mut().add_call(token, self.context_id);
                            return;
                        }
                        Err(status) => {
                            log::warn!(
                                "detour: dispatch to cluster {} failed ({status:?}); is the Envoy bootstrap rendered from this config?",
                                send.cluster
                            );
                            flow.on_unreachable(&config, &mut SharedData, now);
                            log_events(flow);
                        }
                    }
                }
                Step::Wait(at) => {
                    registry.borrow_mut().add_wait(at, self.context_id);
                    return;
                }
                Step::Respond(response) => {
                    self.respond(&response);
                    return;
                }
            }
        }
        self.respond(&respond::internal_error(
            "detour: request flow did not settle",
        ));
    }

    /// Judges the answer to a dispatched attempt: deliver it, or go on.
    pub(crate) fn on_call_answer(
        &mut self,
        registry: &RefCell<Registry>,
        num_headers: usize,
        body_size: usize,
    ) {
        let (Some(config), Some(flow)) = (self.config.clone(), self.flow.as_mut()) else {
            return;
        };
        let headers = if num_headers > 0 {
            host::headers(MapType::HttpCallResponseHeaders)
        } else {
            Vec::new()
        };
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size, usize::MAX);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let status = find(":status").and_then(|s| s.trim().parse::<u16>().ok());
        let plan = flow.answer_plan(&config);
        // A successful answer is read whole first (translated into the client's protocol,
        // its usage found): one that does not parse in its protocol is a failure of the
        // deployment, and the chain goes on.
        let success = status.is_some_and(|s| (200..300).contains(&s));
        let (outcome, judged) = if success {
            match meter::whole(&plan, find("content-type"), &body) {
                Ok(whole) => {
                    let refused = whole.refused.then_some(Reason::ContentPolicy);
                    (Some(whole), refused)
                }
                Err(_) => (None, Some(Reason::InvalidAnswer)),
            }
        } else {
            (None, None)
        };
        let answer = Answer {
            status,
            retry_after: find("retry-after"),
            retry_after_ms: find("retry-after-ms"),
            body: &body,
            transport_failure: judged,
        };
        let verdict = flow.on_answer(&config, &mut SharedData, host::now_ms(), answer);
        log_events(flow);
        match (verdict, status) {
            (Verdict::Deliver(extra), Some(status)) => {
                let mut out = deliverable_headers(&headers);
                out.extend(extra);
                let (body, usage) = match outcome {
                    Some(whole) => (whole.body, whole.usage),
                    // An error answer handed back: in the client's protocol's shape.
                    None if plan.translates() => {
                        set_json_content_type(&mut out);
                        (transcode::error_answer(&plan, status, &body), None)
                    }
                    None => (body, None),
                };
                self.first_byte_at = Some(host::now_ms());
                host::send_response(status, &out, &body);
                flow.settle(&config, &mut SharedData, host::now_ms(), usage);
                log_events(flow);
                self.phase = Phase::Done;
            }
            _ => self.drive(registry),
        }
    }
}

/// Writes the flow's events to the host log as `detour-event {json}` lines, and counts them.
pub(crate) fn log_events(flow: &mut Flow) {
    for event in flow.take_events() {
        log_event(&event);
    }
}

/// One event: a log line and its counters.
pub(crate) fn log_event(event: &Event) {
    log::info!("detour-event {}", event.to_json());
    metrics::emit(&telemetry::for_event(event));
    // One line per request would flood a chat channel: the webhook gets the rest.
    if !matches!(event, Event::Request { .. }) {
        webhook::push(event);
    }
}

/// Replaces the content type with JSON (an error answer rewritten in another protocol).
pub(crate) fn set_json_content_type(headers: &mut Vec<(String, String)>) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    headers.push(("content-type".to_string(), "application/json".to_string()));
}

/// The headers of a dispatched answer that may go to the client: no pseudo-headers, no
/// hop-by-hop headers, no length (the host recomputes it), nothing Envoy-internal.
pub(crate) fn deliverable_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    const DROP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
        "date",
    ];
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !k.starts_with(':') && !k.starts_with("x-envoy-") && !DROP.contains(&k.as_str())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_end_to_end_headers_are_delivered() {
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        let got = deliverable_headers(&[
            h(":status", "200"),
            h("content-type", "text/event-stream"),
            h("Content-Length", "10"),
            h("transfer-encoding", "chunked"),
            h("x-envoy-upstream-service-time", "3"),
            h("x-request-id", "abc"),
        ]);
        assert_eq!(
            got,
            vec![
                h("content-type", "text/event-stream"),
                h("x-request-id", "abc")
            ]
        );
    }
}
