//! The root context: loads the configuration, serves backoff deadlines on its tick, and
//! takes answers to calls made from the tick.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use detour_core::budget;
use detour_core::config::DeploymentIdx;
use detour_core::config::{self, Config};
use detour_core::health;
use detour_core::probe;
use detour_core::rate;
use detour_core::telemetry;
use detour_core::UnixMillis;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, MapType};

use crate::fleet::{self, FleetSync};
use crate::host::{self, SharedData};
use crate::http::DetourHttp;
use crate::metrics;
use crate::registry::Registry;
use crate::run::{log_event, Phase, RequestState};
use crate::webhook;

/// How often the tick looks for due backoff deadlines. Backoffs are seconds long; 50 ms
/// keeps them accurate to a few percent at negligible cost.
const TICK_MS: u32 = 50;

/// How often a worker looks at the shared round record (one shared-data read).
const ROUND_POLL_MS: u64 = 1_000;

/// How often the breaker and budget gauges are refreshed.
const STATE_PUBLISH_MS: u64 = 5_000;

pub(crate) struct DetourRoot {
    context_id: u32,
    config: Option<Rc<Config>>,
    registry: Rc<RefCell<Registry>>,
    /// Health-check probes in flight: call token → deployment.
    probes: HashMap<u32, DeploymentIdx>,
    /// This worker looks for a due health-check round at most this often.
    next_round_check: UnixMillis,
    /// When to publish the state gauges next.
    next_state_publish: UnixMillis,
    /// When to post queued events next.
    next_webhook_post: UnixMillis,
    /// Webhook posts in flight.
    webhook_calls: HashSet<u32>,
    /// Fleet mode's calls to the ledger.
    fleet: FleetSync,
}

impl DetourRoot {
    pub(crate) fn new(context_id: u32) -> Self {
        DetourRoot {
            context_id,
            config: None,
            registry: Rc::new(RefCell::new(Registry::default())),
            probes: HashMap::new(),
            next_round_check: 0,
            next_state_publish: 0,
            next_webhook_post: 0,
            webhook_calls: HashSet::new(),
            fleet: FleetSync::default(),
        }
    }

    /// Runs a health-check round when one is due and no other worker claimed it.
    fn health_check_round(&mut self, now: UnixMillis) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let checks = config.health_checks;
        if !checks.enabled || now < self.next_round_check {
            return;
        }
        self.next_round_check = now.saturating_add(ROUND_POLL_MS);
        if !probe::claim_round(&mut SharedData, now, checks.interval_ms).unwrap_or(false) {
            return;
        }
        for idx in probe::targets(&config, &SharedData, now) {
            let Some(probe) = probe::probe_for(&config, &checks, idx) else {
                continue;
            };
            match host::dispatch(
                &probe.cluster,
                &probe.headers,
                &probe.body,
                probe.timeout_ms,
            ) {
                Ok(token) => {
                    self.probes.insert(token, idx);
                }
                Err(status) => {
                    // This thread cannot call out (e.g. Envoy's main thread): let a worker
                    // take the round on its next tick.
                    log::debug!("detour: health-check probe not sent ({status:?}); round released");
                    let _ = probe::release_round(&mut SharedData, now);
                    return;
                }
            }
        }
    }
}

impl Context for DetourRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(idx) = self.probes.remove(&token_id) {
            self.on_probe_answer(idx, num_headers);
            return;
        }
        if let Some(config) = self.config.clone() {
            if self
                .fleet
                .on_answer(&config, token_id, num_headers, body_size)
            {
                return;
            }
        }
        if self.webhook_calls.remove(&token_id) {
            let status = host::header(MapType::HttpCallResponseHeaders, ":status");
            if !status.as_deref().is_some_and(|s| s.starts_with('2')) {
                // The URL may hold a token: name the status only.
                log::warn!(
                    "detour: the events webhook answered {}",
                    status.as_deref().unwrap_or("nothing")
                );
            }
            return;
        }
        // A call the tick made on behalf of a request: hand the answer to that request.
        let Some(context_id) = self.registry.borrow_mut().take_call(token_id) else {
            return;
        };
        let Some(state) = self.registry.borrow().request(context_id) else {
            return;
        };
        if !host::set_effective_context(context_id) {
            return;
        }
        let mut state = state.borrow_mut();
        if state.phase == Phase::Replacing {
            state.on_call_answer(&self.registry, num_headers, body_size);
        }
    }
}

impl DetourRoot {
    /// Breaker and budget gauges, every few seconds (gauges are process-wide: whichever
    /// worker publishes last is as right as any).
    fn publish_state(&mut self, now: UnixMillis) {
        if now < self.next_state_publish {
            return;
        }
        self.next_state_publish = now.saturating_add(STATE_PUBLISH_MS);
        if let Some(config) = &self.config {
            metrics::emit(&telemetry::for_state(config, &SharedData, now));
            // The next period's budget accounts, created long before its first request.
            budget::ensure_accounts(&mut SharedData, &config.budgets.limits, now);
        }
    }

    /// Posts waiting events to the webhook, one batch per flush interval.
    fn post_events(&mut self, now: UnixMillis) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(hook) = &config.webhook else {
            return;
        };
        if now < self.next_webhook_post || self.webhook_calls.len() >= 4 {
            return;
        }
        self.next_webhook_post = now.saturating_add(hook.flush_interval_ms);
        let Some(body) = webhook::next_batch(hook) else {
            return;
        };
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), hook.path.expose().to_string()),
            (":authority".to_string(), hook.upstream.authority()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        match host::dispatch(&hook.upstream.cluster, &headers, &body, 10_000) {
            Ok(token) => {
                self.webhook_calls.insert(token);
            }
            Err(status) => log::warn!("detour: cannot post events to the webhook ({status:?})"),
        }
    }

    fn on_probe_answer(&mut self, idx: DeploymentIdx, num_headers: usize) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let status = if num_headers > 0 {
            host::header(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.trim().parse::<u16>().ok())
        } else {
            None
        };
        if let Some(event) = probe::on_result(&mut SharedData, &config, idx, host::now_ms(), status)
        {
            log_event(&event);
        }
    }
}

impl RootContext for DetourRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(bytes) = host::plugin_configuration(plugin_configuration_size) else {
            return false;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            log::error!("detour: the plugin configuration is not UTF-8 text; refusing to start");
            return false;
        };
        match config::load(&text, &|name| std::env::var(name).ok()) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    log::warn!("detour config warning: {warning}");
                }
                log::info!(
                    "detour: configured {} deployments in {} groups (root context {})",
                    loaded.config.deployments.len(),
                    loaded.config.groups.len(),
                    self.context_id
                );
                // Create every health record now, before workers race to create them.
                for deployment in &loaded.config.deployments {
                    if let Err(err) = health::ensure_record(&mut SharedData, &deployment.id) {
                        log::warn!(
                            "detour: cannot create the health record of {}: {err:?}",
                            deployment.id
                        );
                    }
                }
                // And every record budgets and rate limits will write: a first write cannot
                // be made conditional, so it must not race with traffic.
                for deployment in loaded
                    .config
                    .deployments
                    .iter()
                    .filter(|d| d.rpm.is_some() || d.tpm.is_some())
                {
                    rate::ensure(&mut SharedData, &deployment.id);
                }
                budget::ensure_accounts(
                    &mut SharedData,
                    &loaded.config.budgets.limits,
                    host::now_ms(),
                );
                fleet::prepare(&loaded.config, host::now_ms());
                webhook::enable(loaded.config.webhook.is_some());
                self.config = Some(Rc::new(loaded.config));
                if let Err(status) = host::set_tick_period_ms(TICK_MS) {
                    log::error!("detour: cannot set the tick period: {status:?}");
                    return false;
                }
                true
            }
            Err(err) => {
                for warning in &err.warnings {
                    log::warn!("detour config warning: {warning}");
                }
                for error in &err.errors {
                    log::error!("detour config error: {error}");
                }
                log::error!("detour: refusing to start with an invalid configuration");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = host::now_ms();
        self.health_check_round(now);
        if let Some(config) = self.config.clone() {
            self.fleet.tick(&config, now);
        }
        self.publish_state(now);
        self.post_events(now);
        let due = self.registry.borrow_mut().take_due(now);
        for context_id in due {
            let Some(state) = self.registry.borrow().request(context_id) else {
                continue;
            };
            if !host::set_effective_context(context_id) {
                self.registry.borrow_mut().remove_request(context_id);
                continue;
            }
            let mut state = state.borrow_mut();
            if state.phase == Phase::Replacing {
                state.drive(&self.registry);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); without a config it answers 500.
        let state = Rc::new(RefCell::new(RequestState::new(
            context_id,
            self.config.clone(),
        )));
        self.registry
            .borrow_mut()
            .add_request(context_id, state.clone());
        Some(Box::new(DetourHttp::new(state, self.registry.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
