//! One request's way through its chain: a sans-IO state machine.
//!
//! # Driving contract
//!
//! The glue owns the I/O; the flow owns every decision.
//! 1. [`Flow::start`] with the parsed request, its stage tag, `now` and a random seed.
//! 2. Call [`Flow::poll`] and carry out the [`Step`]:
//!    - `Send`: send the request to that deployment (the first through Envoy's router, so it
//!      streams; later ones by `dispatch_http_call`), then feed the answer to
//!      [`Flow::on_answer`];
//!    - `Wait(t)`: call `poll` again at or after `t` (backoff before a retry);
//!    - `Respond`: send that response; the flow is finished.
//! 3. [`Flow::on_answer`] returns `Deliver` (give the client this answer, with the listed
//!    headers added) or `Next` (call `poll` again).
//! 4. After every call, drain [`Flow::take_events`] into the log.
//!
//! Shared health (cooldowns, breakers) is read and written through the [`Store`] passed
//! into `poll` and `on_answer`; a store that fails is treated as "healthy" (fail open for
//! routing: a broken counter must not stop traffic).

mod accounting;

use std::collections::VecDeque;

use serde::Serialize;

use crate::backoff;
use crate::classify::{self, Class};
use crate::config::{Config, DeploymentIdx, FallbackKind};
use crate::event::{Event, FallbackReason};
use crate::health::{self, Availability, Failure, Transition};
use crate::protocol::transcode::AnswerPlan;
use crate::protocol::Protocol;
use crate::request::ParsedRequest;
use crate::respond::{self, Response};
use crate::retry_after;
use crate::store::Store;
use crate::UnixMillis;

/// What happened to one deployment of the chain: an attempt sent, or a skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A 2xx.
    Ok,
    /// 429.
    RateLimited,
    /// A 5xx from the provider.
    ServerError,
    /// No answer in time (or 408/504).
    Timeout,
    /// The connection could not be made.
    ConnectionFailure,
    /// The connection broke before a complete answer.
    Reset,
    /// 401 or 403: the deployment's key is wrong.
    AuthError,
    /// 404: the provider does not know the model or path.
    NotFound,
    /// The prompt is too long for the deployment.
    ContextWindow,
    /// The provider refused the content.
    ContentPolicy,
    /// A 4xx the client caused; returned untouched.
    ClientError,
    /// Skipped: cooling down after a 429.
    CoolingDown,
    /// Skipped: its breaker is open.
    CircuitOpen,
    /// Skipped: another request is probing its half-open breaker.
    ProbeInFlight,
    /// Skipped: the estimated prompt exceeds its `max_input_tokens`.
    ContextTooLarge,
    /// Not tried: the request's deadline passed.
    DeadlineExceeded,
    /// Not tried: the request used `max_attempts`.
    AttemptCapReached,
    /// Skipped: a budget scope had no room for the attempt's estimated cost.
    BudgetExhausted,
    /// Skipped: fleet mode, the ledger is unreachable and this process's leases do not
    /// cover the attempt (the scope fails closed).
    FleetUnreachable,
    /// Skipped: the deployment is at its configured `rpm`/`tpm`.
    LocalRateLimit,
    /// Skipped: the deployment's protocol cannot express the request (the record's
    /// `detail` says what).
    Untranslatable,
    /// The answer did not parse in the deployment's protocol (garbage, or another
    /// protocol's shape): a failure of the deployment, never a success passed on.
    InvalidAnswer,
}

impl Reason {
    /// Whether the deployment was skipped without sending it anything.
    pub fn is_skip(&self) -> bool {
        matches!(
            self,
            Reason::CoolingDown
                | Reason::CircuitOpen
                | Reason::ProbeInFlight
                | Reason::ContextTooLarge
                | Reason::DeadlineExceeded
                | Reason::AttemptCapReached
                | Reason::BudgetExhausted
                | Reason::FleetUnreachable
                | Reason::LocalRateLimit
                | Reason::Untranslatable
        )
    }

    /// A few words for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::RateLimited => "rate limited",
            Reason::ServerError => "server error",
            Reason::Timeout => "timeout",
            Reason::ConnectionFailure => "connection failure",
            Reason::Reset => "connection reset",
            Reason::AuthError => "authentication error",
            Reason::NotFound => "not found",
            Reason::ContextWindow => "context window exceeded",
            Reason::ContentPolicy => "content policy refusal",
            Reason::ClientError => "client error",
            Reason::CoolingDown => "skipped: cooling down after a rate limit",
            Reason::CircuitOpen => "skipped: circuit breaker open",
            Reason::ProbeInFlight => "skipped: recovery probe in flight",
            Reason::ContextTooLarge => "skipped: prompt larger than its context window",
            Reason::DeadlineExceeded => "not tried: request deadline exceeded",
            Reason::AttemptCapReached => "not tried: attempt cap reached",
            Reason::BudgetExhausted => "skipped: budget exhausted",
            Reason::FleetUnreachable => "skipped: the fleet budget ledger is unreachable",
            Reason::LocalRateLimit => "skipped: at its rpm/tpm limit",
            Reason::Untranslatable => "skipped: its protocol cannot express the request",
            Reason::InvalidAnswer => "answer not valid in its protocol",
        }
    }
}

/// One line of the "every attempt" list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// Deployment id.
    pub deployment: String,
    /// Its route group.
    pub group: String,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// What happened.
    pub reason: Reason,
    /// How long the attempt took (0 for skips).
    pub duration_ms: u64,
    /// More about the reason, when there is more to say (what could not be translated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the glue must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send the request to a deployment.
    Send(Send),
    /// Come back at this time (a backoff before a retry).
    Wait(UnixMillis),
    /// Answer the client with this; the flow is over.
    Respond(Response),
}

/// One attempt to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// Which deployment.
    pub deployment: DeploymentIdx,
    /// Its id, for logs and headers.
    pub deployment_id: String,
    /// 1 for the request's first attempt, then 2, 3 …
    pub attempt: u32,
    /// The Envoy cluster (route with `cluster_header`, or dispatch target).
    pub cluster: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Headers to set: content type and the provider's auth.
    pub headers: Vec<(String, String)>,
    /// The rewritten body.
    pub body: Vec<u8>,
    /// How long to wait for the response to start (router path).
    pub first_byte_timeout_ms: u64,
    /// How long the whole response may take (dispatch path: it is buffered).
    pub total_timeout_ms: u64,
}

/// An upstream answer, as much of it as the glue has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer<'a> {
    /// `None` when no response arrived.
    pub status: Option<u16>,
    /// The `retry-after` header.
    pub retry_after: Option<&'a str>,
    /// OpenAI's `retry-after-ms` header.
    pub retry_after_ms: Option<&'a str>,
    /// The body, or its first bytes (needed when [`classify::needs_body`] says so).
    pub body: &'a [u8],
    /// What the glue found that the status does not say, deciding class and reason when
    /// present: a transport failure behind a synthetic status (Envoy's router answers a
    /// refused connection with 503 and a timeout with 504: `Timeout`, `ConnectionFailure`,
    /// `Reset`), an answer that does not parse in its protocol (`InvalidAnswer`), or a 2xx
    /// that is a refusal (`ContentPolicy`).
    pub transport_failure: Option<Reason>,
}

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Give the client this answer, adding these headers.
    Deliver(Vec<(String, String)>),
    /// Ask [`Flow::poll`] what comes next.
    Next,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    deployment: DeploymentIdx,
    /// Attempts sent to this deployment so far.
    tries: u32,
    /// A retry is due at this time.
    retry_at: Option<UnixMillis>,
    /// When the attempt in flight was sent.
    sent_at: Option<UnixMillis>,
    /// This attempt holds the half-open probe lease.
    probe: bool,
}

/// One request's state. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Flow {
    request: ParsedRequest,
    group: String,
    stage: Option<String>,
    seed: u64,
    deadline: UnixMillis,
    queue: VecDeque<DeploymentIdx>,
    visited: Vec<DeploymentIdx>,
    current: Option<Current>,
    left: Option<(DeploymentIdx, FallbackReason)>,
    attempts: Vec<AttemptRecord>,
    events: Vec<Event>,
    n_sent: u32,
    soonest_available: Option<UnixMillis>,
    /// Fleet mode: the attempt found no leased room; wait until this time for the next
    /// lease instead of skipping the deployment (`accounting::admit`).
    lease_wait: Option<UnixMillis>,
    /// Fleet mode: waiting for leases ends here; then an uncovered estimate is refused.
    lease_wait_ends: Option<UnixMillis>,
    /// The special chain (context window or content policy) the queue holds, once taken.
    following: Option<FallbackKind>,
    finished: bool,
    /// The first poll's checks (halt, tag overrun) are done.
    started: bool,
    /// The stage tag's budget is used up and its overrun group serves the request.
    tag_overrun: bool,
    /// Budget and rate held for the attempt in flight (or delivered, until settled).
    pending: Option<accounting::Pending>,
    /// How the request ended, for metrics (`success`, `provider_error`, `failed`, …).
    outcome: Option<&'static str>,
    /// The deployment whose answer the client got.
    served: Option<DeploymentIdx>,
    /// Usage of the settled answer, for token metrics.
    settled_usage: Option<crate::usage::Usage>,
    /// What the settled answer cost (nano-dollars).
    settled_cost: Option<u64>,
    /// Fallbacks taken so far.
    n_fallbacks: u32,
}

impl Flow {
    /// Resolves the route group and lays out the chain.
    pub fn start(
        config: &Config,
        request: ParsedRequest,
        stage: Option<&str>,
        now: UnixMillis,
        seed: u64,
    ) -> Result<Flow, Box<Response>> {
        let group = config
            .resolve_group(request.model.as_deref(), stage)
            .map_err(|err| Box::new(route_error(config, err)))?;
        let mut flow = Flow {
            group: group.name.clone(),
            stage: stage.map(str::to_string),
            seed,
            deadline: now.saturating_add(config.settings.request_deadline_ms),
            queue: VecDeque::new(),
            visited: Vec::new(),
            current: None,
            left: None,
            attempts: Vec::new(),
            events: Vec::new(),
            n_sent: 0,
            soonest_available: None,
            lease_wait: None,
            lease_wait_ends: None,
            following: None,
            finished: false,
            started: false,
            tag_overrun: false,
            pending: None,
            outcome: None,
            served: None,
            settled_usage: None,
            settled_cost: None,
            n_fallbacks: 0,
            request,
        };
        let mut groups = vec![flow.group.clone()];
        groups.extend(
            config
                .fallbacks
                .targets(&flow.group, FallbackKind::General)
                .iter()
                .cloned(),
        );
        flow.queue = chain(config, &groups, seed);
        Ok(flow)
    }

    /// The route group the request resolved to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.request.stream
    }

    /// The protocol the client speaks.
    pub fn client_protocol(&self) -> Protocol {
        self.request.protocol()
    }

    /// How the answer of the attempt in flight (or, once delivered, of the deployment
    /// that served) reaches the client.
    pub fn answer_plan(&self, config: &Config) -> AnswerPlan {
        let provider = self
            .current
            .map(|c| c.deployment)
            .or(self.served)
            .and_then(|idx| config.deployment(idx))
            .map_or(self.request.protocol(), |d| d.protocol);
        AnswerPlan {
            client: self.request.protocol(),
            provider,
            stream: self.request.stream,
            client_wants_usage: self.request.client_wants_usage,
        }
    }

    /// Whether the client asked for usage in its stream (else detour strips the usage
    /// chunk it asked for on the client's behalf).
    pub fn client_wants_usage(&self) -> bool {
        self.request.client_wants_usage
    }

    /// How the request ended (`None` while it runs): `success`, `provider_error` (a 4xx
    /// handed back), `failed`, `rate_limited`, `budget`, `halted`, `client_error`.
    pub fn outcome(&self) -> Option<&'static str> {
        self.outcome
    }

    /// The deployment whose answer the client got.
    pub fn served(&self) -> Option<DeploymentIdx> {
        self.served
    }

    /// The usage of the settled answer, when the provider reported one.
    pub fn settled_usage(&self) -> Option<crate::usage::Usage> {
        self.settled_usage
    }

    /// The record of this request, for the event log (call once, when it ended).
    pub fn request_event(&self, config: &Config, now: UnixMillis, duration_ms: u64) -> Event {
        Event::Request {
            ts: now,
            group: self.group.clone(),
            stage: self.stage.clone(),
            deployment: self
                .served
                .and_then(|idx| config.deployment(idx))
                .map(|d| d.id.clone()),
            outcome: self.outcome.unwrap_or("abandoned").to_string(),
            attempts: self.n_sent,
            fallbacks: self.n_fallbacks,
            prompt_tokens: self.settled_usage.map(|u| u.prompt_tokens),
            completion_tokens: self.settled_usage.map(|u| u.completion_tokens),
            cost: self.settled_cost.map(crate::price::format_dollars),
            duration_ms,
        }
    }

    /// Attempts sent so far.
    pub fn n_sent(&self) -> u32 {
        self.n_sent
    }

    /// Every attempt and skip so far.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// Events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Decides the next step.
    pub fn poll<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
    ) -> Step {
        if self.finished {
            return Step::Respond(respond::internal_error(
                "detour: request flow polled after it finished",
            ));
        }
        if !self.started {
            self.started = true;
            if let Some(step) = self.begin(config, store, now) {
                return step;
            }
        }
        // A retry of the current deployment, when one is scheduled.
        if let Some(current) = self.current {
            match current.retry_at {
                Some(at) if at > now => return Step::Wait(at),
                Some(_) => {
                    if let Some(send) =
                        self.try_deployment(config, store, now, current.deployment, current.tries)
                    {
                        return Step::Send(send);
                    }
                    if let Some(at) = self.lease_wait.take() {
                        if let Some(current) = &mut self.current {
                            current.retry_at = Some(at);
                        }
                        return Step::Wait(at);
                    }
                    self.current = None;
                }
                // An attempt is in flight: the glue should have fed its answer first.
                None => self.current = None,
            }
        }
        while let Some(idx) = self.queue.pop_front() {
            if self.visited.contains(&idx) {
                continue;
            }
            self.visited.push(idx);
            if let Some(send) = self.try_deployment(config, store, now, idx, 0) {
                return Step::Send(send);
            }
            if let Some(at) = self.lease_wait.take() {
                // The same deployment again once the fleet lease has been topped up.
                self.visited.pop();
                self.queue.push_front(idx);
                return Step::Wait(at);
            }
        }
        self.finish(now)
    }

    /// Checks deadline, attempt cap, window and health, then builds the attempt, or
    /// records why the deployment is skipped.
    fn try_deployment<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
        idx: DeploymentIdx,
        tries: u32,
    ) -> Option<Send> {
        let deployment = config.deployment(idx)?;
        let skip = if now >= self.deadline {
            Some(Reason::DeadlineExceeded)
        } else if self.n_sent >= config.settings.max_attempts {
            Some(Reason::AttemptCapReached)
        } else if deployment
            .max_input_tokens
            .is_some_and(|max| self.request.estimated_input_tokens > max)
        {
            Some(Reason::ContextTooLarge)
        } else {
            None
        };
        if let Some(reason) = skip {
            let fallback = if reason == Reason::ContextTooLarge {
                FallbackReason::ContextWindow
            } else {
                FallbackReason::Failure
            };
            self.record_skip(config, idx, reason, fallback);
            if matches!(reason, Reason::DeadlineExceeded | Reason::AttemptCapReached) {
                // Nothing after this can be sent either.
                self.queue.clear();
            }
            return None;
        }
        let outgoing = match self.request.attempt_for(deployment) {
            Ok(outgoing) => outgoing,
            Err(unsupported) => {
                self.record_skip(config, idx, Reason::Untranslatable, FallbackReason::Failure);
                if let Some(record) = self.attempts.last_mut() {
                    record.detail = Some(unsupported.0);
                }
                return None;
            }
        };
        let remaining = self.deadline.saturating_sub(now);
        let total_timeout_ms = if self.request.stream {
            config.settings.stream_timeout_ms
        } else {
            config.settings.request_timeout_ms
        }
        .min(remaining)
        .max(1);
        let first_byte_timeout_ms = config.settings.request_timeout_ms.min(remaining).max(1);
        let lease = total_timeout_ms.saturating_add(1000);
        let availability = health::check_and_claim(store, &deployment.id, now, lease)
            .unwrap_or(Availability::Available);
        let (skip_reason, fallback_reason) = match availability {
            Availability::Available | Availability::Probe => (None, FallbackReason::Failure),
            Availability::CoolingDown(_) => (Some(Reason::CoolingDown), FallbackReason::RateLimit),
            Availability::Open(_) => (Some(Reason::CircuitOpen), FallbackReason::Failure),
            Availability::ProbeInFlight(_) => {
                (Some(Reason::ProbeInFlight), FallbackReason::Failure)
            }
        };
        if let Some(reason) = skip_reason {
            if let Some(until) = availability.until() {
                self.soonest_available =
                    Some(self.soonest_available.map_or(until, |s| s.min(until)));
            }
            self.record_skip(config, idx, reason, fallback_reason);
            return None;
        }
        let probe = availability == Availability::Probe;
        if let Err((reason, fallback_reason, until)) = self.admit(config, store, now, idx) {
            if probe {
                let _ = health::release_probe(store, &deployment.id);
            }
            if self.lease_wait.is_some() {
                return None;
            }
            if let Some(until) = until {
                self.soonest_available =
                    Some(self.soonest_available.map_or(until, |s| s.min(until)));
            }
            self.record_skip(config, idx, reason, fallback_reason);
            return None;
        }
        if let Some((from, reason)) = self.left.take() {
            if from != idx {
                self.n_fallbacks = self.n_fallbacks.saturating_add(1);
                self.events.push(Event::Fallback {
                    ts: now,
                    group: self.group.clone(),
                    stage: self.stage.clone(),
                    from: deployment_id(config, from),
                    to: deployment.id.clone(),
                    reason,
                });
            }
        }
        self.n_sent = self.n_sent.saturating_add(1);
        self.current = Some(Current {
            deployment: idx,
            tries: tries.saturating_add(1),
            retry_at: None,
            sent_at: Some(now),
            probe,
        });
        Some(Send {
            deployment: idx,
            deployment_id: deployment.id.clone(),
            attempt: self.n_sent,
            cluster: deployment.upstream.cluster.clone(),
            authority: deployment.upstream.authority(),
            path: outgoing.path,
            headers: outgoing.headers,
            body: outgoing.body,
            first_byte_timeout_ms,
            total_timeout_ms,
        })
    }

    fn record_skip(
        &mut self,
        config: &Config,
        idx: DeploymentIdx,
        reason: Reason,
        fallback: FallbackReason,
    ) {
        self.attempts.push(AttemptRecord {
            deployment: deployment_id(config, idx),
            group: config
                .deployment(idx)
                .map(|d| d.group.clone())
                .unwrap_or_default(),
            status: None,
            reason,
            duration_ms: 0,
            detail: None,
        });
        if self.left.is_none() {
            self.left = Some((idx, fallback));
        }
    }

    /// Feeds the answer to the attempt in flight.
    pub fn on_answer<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
        answer: Answer<'_>,
    ) -> Verdict {
        let (class, reason) = match answer.transport_failure {
            // A 2xx refusal (see `meter::Whole::refused`): the prompt is the problem.
            Some(Reason::ContentPolicy) => (Class::ContentPolicy, Reason::ContentPolicy),
            Some(reason) => (Class::Transient, reason),
            None => classify::classify(answer.status, answer.body),
        };
        self.judge(config, store, now, answer, class, reason)
    }

    /// The attempt could not even be started (the host refused the call, e.g. an unknown
    /// cluster): a connection failure that moves on at once, since retrying cannot help.
    pub fn on_unreachable<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
    ) -> Verdict {
        self.judge(
            config,
            store,
            now,
            Answer::default(),
            Class::Failed,
            Reason::ConnectionFailure,
        )
    }

    fn judge<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
        answer: Answer<'_>,
        class: Class,
        reason: Reason,
    ) -> Verdict {
        let Some(mut current) = self.current.take() else {
            // No attempt in flight: nothing to judge. Let the glue ask what is next.
            return Verdict::Next;
        };
        let Some(deployment) = config.deployment(current.deployment) else {
            return Verdict::Next;
        };
        let id = deployment.id.clone();
        let duration_ms = current.sent_at.map(|t| now.saturating_sub(t)).unwrap_or(0);
        self.attempts.push(AttemptRecord {
            deployment: id.clone(),
            group: deployment.group.clone(),
            status: answer.status,
            reason,
            duration_ms,
            detail: None,
        });
        current.sent_at = None;
        let settings = &config.settings;
        match class {
            Class::Success | Class::PassThrough => {
                // The deployment answered: for its health that is a success, whatever the
                // client did wrong.
                let transition = health::record_success(store, &id, current.probe)
                    .ok()
                    .flatten();
                self.push_transition(now, &id, transition);
                self.finished = true;
                self.served = Some(current.deployment);
                if class == Class::Success {
                    self.outcome = Some("success");
                    self.mark_delivered();
                } else {
                    self.outcome = Some("provider_error");
                    // An error answer carries no usage to bill.
                    self.release_pending(store);
                }
                Verdict::Deliver(self.delivery_headers(&id))
            }
            Class::RateLimited => {
                self.release_pending(store);
                let asked = retry_after::parse(now, answer.retry_after, answer.retry_after_ms);
                let cooldown_ms = asked
                    .unwrap_or(0)
                    .max(settings.cooldown_ms)
                    .min(settings.max_cooldown_ms.max(settings.cooldown_ms));
                let transition = health::record_failure(
                    store,
                    &id,
                    now,
                    settings,
                    Failure::RateLimited { cooldown_ms },
                    current.probe,
                )
                .ok()
                .flatten();
                self.push_transition(now, &id, transition);
                // When it is back: the Retry-After to give, should every deployment be limited.
                let back_at = now.saturating_add(if settings.cooldowns_disabled {
                    asked.unwrap_or(0)
                } else {
                    cooldown_ms
                });
                self.soonest_available =
                    Some(self.soonest_available.map_or(back_at, |s| s.min(back_at)));
                self.left = Some((current.deployment, FallbackReason::RateLimit));
                Verdict::Next
            }
            Class::Transient | Class::Failed => {
                self.release_pending(store);
                let transition = health::record_failure(
                    store,
                    &id,
                    now,
                    settings,
                    Failure::Error,
                    current.probe,
                )
                .ok()
                .flatten();
                let opened = matches!(
                    transition,
                    Some(Transition::Opened { .. } | Transition::Reopened { .. })
                );
                self.push_transition(now, &id, transition);
                if class == Class::Transient
                    && !opened
                    && !current.probe
                    && current.tries <= settings.num_retries
                    && self.n_sent < settings.max_attempts
                {
                    let asked = retry_after::parse(now, answer.retry_after, answer.retry_after_ms);
                    let asked_too_long = asked.is_some_and(|ms| ms > settings.retry_after_cap_ms);
                    let wait_ms = backoff::delay_ms(settings, current.tries, self.seed, asked);
                    let at = now.saturating_add(wait_ms);
                    if !asked_too_long && at < self.deadline {
                        self.events.push(Event::Retry {
                            ts: now,
                            group: self.group.clone(),
                            deployment: id,
                            retry: current.tries,
                            reason,
                            status: answer.status,
                            wait_ms,
                        });
                        current.retry_at = Some(at);
                        self.current = Some(current);
                        return Verdict::Next;
                    }
                }
                self.left = Some((current.deployment, FallbackReason::Failure));
                Verdict::Next
            }
            Class::ContextWindow | Class::ContentPolicy => {
                // The deployment is alive; the prompt is the problem. Release a probe lease.
                self.release_pending(store);
                let transition = health::record_success(store, &id, current.probe)
                    .ok()
                    .flatten();
                self.push_transition(now, &id, transition);
                let (kind, fallback) = if class == Class::ContextWindow {
                    (FallbackKind::ContextWindow, FallbackReason::ContextWindow)
                } else {
                    (FallbackKind::ContentPolicy, FallbackReason::ContentPolicy)
                };
                if self.following == Some(kind) {
                    // Already on this chain: go on with its next deployment.
                    self.left = Some((current.deployment, fallback));
                    return Verdict::Next;
                }
                let targets = config.fallbacks.targets(&deployment.group, kind).to_vec();
                if targets.is_empty() {
                    // No chain for this kind of error: the provider's answer is the best
                    // answer the client can get.
                    self.finished = true;
                    self.served = Some(current.deployment);
                    self.outcome = Some("provider_error");
                    self.mark_delivered();
                    return Verdict::Deliver(self.delivery_headers(&id));
                }
                self.queue = chain(config, &targets, self.seed);
                self.following = Some(kind);
                self.left = Some((current.deployment, fallback));
                Verdict::Next
            }
        }
    }

    fn delivery_headers(&self, deployment_id: &str) -> Vec<(String, String)> {
        vec![
            ("x-detour-group".to_string(), self.group.clone()),
            ("x-detour-deployment".to_string(), deployment_id.to_string()),
            ("x-detour-attempts".to_string(), self.n_sent.to_string()),
        ]
    }

    fn push_transition(
        &mut self,
        now: UnixMillis,
        deployment: &str,
        transition: Option<Transition>,
    ) {
        let deployment = deployment.to_string();
        let event = match transition {
            None => return,
            Some(Transition::CooledDown { until }) => Event::Cooldown {
                ts: now,
                deployment,
                until,
            },
            Some(Transition::Opened { until }) => Event::BreakerOpened {
                ts: now,
                deployment,
                until,
                probe_failed: false,
            },
            Some(Transition::Reopened { until }) => Event::BreakerOpened {
                ts: now,
                deployment,
                until,
                probe_failed: true,
            },
            Some(Transition::Closed) => Event::Recovery {
                ts: now,
                deployment,
                via: "half_open".into(),
            },
        };
        self.events.push(event);
    }

    fn finish(&mut self, now: UnixMillis) -> Step {
        self.finished = true;
        let response =
            respond::all_failed(now, &self.group, &self.attempts, self.soonest_available);
        self.outcome = Some(match response.status {
            429 => "rate_limited",
            402 => "budget",
            400 => "client_error",
            _ => "failed",
        });
        self.events.push(Event::AllFailed {
            ts: now,
            group: self.group.clone(),
            stage: self.stage.clone(),
            attempts: self.n_sent,
            status: response.status,
        });
        Step::Respond(response)
    }
}

fn deployment_id(config: &Config, idx: DeploymentIdx) -> String {
    config
        .deployment(idx)
        .map(|d| d.id.clone())
        .unwrap_or_default()
}

/// The deployments of `groups`, group by group in order; within a group by `order`, and
/// among equal orders by weighted random choice (seeded).
fn chain(config: &Config, groups: &[String], seed: u64) -> VecDeque<DeploymentIdx> {
    let mut out = VecDeque::new();
    for (group_idx, name) in groups.iter().enumerate() {
        let Some(group) = config.groups.get(name) else {
            continue;
        };
        let mut rest: &[DeploymentIdx] = &group.deployments;
        while let Some(first) = rest.first() {
            let order = config.deployment(*first).map(|d| d.order).unwrap_or(0);
            let n_same = rest
                .iter()
                .take_while(|idx| config.deployment(**idx).map(|d| d.order) == Some(order))
                .count()
                .max(1);
            let (same, tail) = rest.split_at(n_same.min(rest.len()));
            out.extend(weighted_order(
                config,
                same,
                backoff::mix(seed ^ (group_idx as u64) << 32 ^ order as u64),
            ));
            rest = tail;
        }
    }
    out
}

/// A weighted random permutation: each pick takes a deployment with probability
/// proportional to its weight among those left.
fn weighted_order(config: &Config, items: &[DeploymentIdx], mut seed: u64) -> Vec<DeploymentIdx> {
    let mut left: Vec<(DeploymentIdx, u64)> = items
        .iter()
        .map(|idx| {
            (
                *idx,
                config
                    .deployment(*idx)
                    .map(|d| u64::from(d.weight))
                    .unwrap_or(1),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left
            .iter()
            .fold(0u64, |sum, (_, w)| sum.saturating_add(*w))
            .max(1);
        seed = backoff::mix(seed);
        let mut point = seed.checked_rem(total).unwrap_or(0);
        let mut pick = 0;
        for (i, (_, w)) in left.iter().enumerate() {
            if point < *w {
                pick = i;
                break;
            }
            point = point.saturating_sub(*w);
        }
        out.push(left.remove(pick.min(left.len().saturating_sub(1))).0);
    }
    out
}

fn route_error(config: &Config, err: crate::config::RouteError) -> Response {
    use crate::config::RouteError;
    let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    match err {
        RouteError::NoModel => respond::client_error(
            400,
            "model_required",
            format!(
                "name a route group in `model` (one of: {}) or send an x-detour-stage header",
                groups.join(", ")
            ),
        ),
        RouteError::UnknownGroup(name) => respond::client_error(
            404,
            "model_not_found",
            format!(
                "model '{}' is not a route group here (groups: {})",
                name.chars().take(200).collect::<String>(),
                groups.join(", ")
            ),
        ),
        RouteError::UnknownStage(stage) => {
            let stages: Vec<&str> = config.stages.keys().map(String::as_str).collect();
            respond::client_error(
                400,
                "unknown_stage",
                format!(
                    "x-detour-stage '{}' is not mapped to a group (stages: {})",
                    stage.chars().take(100).collect::<String>(),
                    stages.join(", ")
                ),
            )
        }
    }
}
