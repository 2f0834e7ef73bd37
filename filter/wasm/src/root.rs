//! The root context: loads the configuration, serves backoff deadlines on its tick, and
//! takes answers to calls made from the tick.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use detour_core::config::{self, Config};
use detour_core::health;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::host::{self, SharedData};
use crate::http::DetourHttp;
use crate::registry::Registry;
use crate::run::{Phase, RequestState};

/// How often the tick looks for due backoff deadlines. Backoffs are seconds long; 50 ms
/// keeps them accurate to a few percent at negligible cost.
const TICK: Duration = Duration::from_millis(50);

pub(crate) struct DetourRoot {
    context_id: u32,
    config: Option<Rc<Config>>,
    registry: Rc<RefCell<Registry>>,
}

impl DetourRoot {
    pub(crate) fn new(context_id: u32) -> Self {
        DetourRoot {
            context_id,
            config: None,
            registry: Rc::new(RefCell::new(Registry::default())),
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

impl RootContext for DetourRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("detour: cannot read the plugin configuration: {status:?}");
                return false;
            }
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
                self.config = Some(Rc::new(loaded.config));
                if let Err(status) = hostcalls::set_tick_period(TICK) {
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
        let due = self.registry.borrow_mut().take_due(host::now_ms());
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
