//! Worker threads: each owns its VMs and serves the connections handed to it, so a
//! request (and every callback of its filter context) stays on one thread, as in
//! Envoy.
//!
//! A worker runs a current-thread tokio runtime with a `LocalSet`; the VM sits in an
//! `Rc<VmHandle>` shared by the stream drivers, the tick task and the HTTP-call tasks
//! of that worker. Nothing here is `Send` and nothing needs to be.
//!
//! VM life (Envoy's `FAIL_RELOAD` with `reload_config.backoff` 1 s):
//! - a trap in any callback marks the VM failed; every stream in flight on it is failed
//!   at once (503 `wasm_fail_stream`, or a reset once its response started);
//! - the next new request starts a fresh VM from the same compiled module (shared data
//!   is kept), unless the previous reload was less than the backoff ago: then that
//!   request gets 503 `wasm_fail_stream`;
//! - a configuration reload (SIGHUP) starts a new VM for new requests; streams in flight
//!   finish on the VM they started on, which is dropped after the last one.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detour_host::{
    CallError, Engine, HttpCallResponse, LogLevel, Module, PluginConfig, Shared, Vm, VmError,
};
use tokio::sync::mpsc;

use super::fleet::FleetRoute;
use super::host::{StreamEvent, Streams, TickCell, WorkerHost};
use super::log::Logger;
use super::router::{Clusters, UpstreamClient};

/// Base interval between VM reloads after failures (Envoy `reload_config.backoff`).
pub const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

/// A loaded plugin: compiled module, configuration, and the clusters it may route to.
pub struct Plugin {
    /// The compiled filter.
    pub module: Module,
    /// Name, ids, configuration, environment, limits.
    pub config: Arc<PluginConfig>,
    /// The upstream clusters derived from the same config file.
    pub clusters: Arc<Clusters>,
    /// Fleet mode with a Redis: the state service answered in-process.
    pub fleet: Option<Arc<FleetRoute>>,
}

/// Counters the admin endpoint shows (process-wide).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Responses sent, by class: 1xx..5xx at index 1..5.
    pub responses: [AtomicU64; 6],
    /// VM callbacks that trapped.
    pub vm_failures: AtomicU64,
    /// VMs started after a failure.
    pub vm_reloads: AtomicU64,
    /// VM starts after a failure that failed.
    pub vm_reload_failures: AtomicU64,
    /// Requests failed because no VM was usable (backing off).
    pub vm_reload_backoff: AtomicU64,
    /// Configuration reloads (SIGHUP) applied.
    pub config_reloads: AtomicU64,
    /// Streams in flight.
    pub active_streams: AtomicU64,
}

impl Stats {
    /// Counts one response by status class.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        if let Some(counter) = self.responses.get(class) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One VM with the streams in flight on it.
pub struct VmHandle {
    /// Distinguishes VMs of one worker (reloads).
    pub generation: u64,
    vm: RefCell<Vm<WorkerHost>>,
    /// The streams in flight, by context id.
    pub streams: Streams,
    /// What the VM runs.
    pub plugin: Arc<Plugin>,
    failed: Cell<bool>,
    log: Logger,
    stats: Arc<Stats>,
}

impl VmHandle {
    /// Runs one VM call. A trap fails the VM and every stream in flight on it.
    pub fn call<R>(
        &self,
        f: impl FnOnce(&mut Vm<WorkerHost>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        if self.failed.get() {
            return Err(CallError::Failed);
        }
        let result = match self.vm.try_borrow_mut() {
            Ok(mut vm) => f(&mut vm),
            Err(_) => {
                self.log.error("internal: re-entrant VM call refused");
                return Err(CallError::Failed);
            }
        };
        if let Err(CallError::Trap(message)) = &result {
            self.on_failure(message);
        }
        result
    }

    fn on_failure(&self, message: &str) {
        if self.failed.replace(true) {
            return;
        }
        self.stats.vm_failures.fetch_add(1, Ordering::Relaxed);
        self.log.log(
            LogLevel::Error,
            "wasm",
            &format!("VM generation {} failed; its streams fail, the next request gets a fresh VM: {message}", self.generation),
        );
        for record in self.streams.borrow().values() {
            let _ = record.events.send(StreamEvent::VmFailed);
        }
    }

    /// Whether the VM has failed.
    pub fn is_failed(&self) -> bool {
        self.failed.get()
    }

    /// Delivers an HTTP call's answer to the VM.
    pub fn deliver_call(&self, token: u32, response: HttpCallResponse) {
        let _ = self.call(|vm| vm.on_http_call_response(token, response));
    }

    fn tick(&self) {
        let _ = self.call(|vm| {
            let root = vm.root_context_id();
            vm.on_tick(root)
        });
    }
}

/// Messages to a worker thread.
pub enum WorkerMsg {
    /// A new downstream connection.
    Connection {
        /// The accepted socket (non-blocking).
        stream: std::net::TcpStream,
        /// The client's address.
        peer: std::net::SocketAddr,
        /// The listener's address.
        local: std::net::SocketAddr,
        /// Process-wide connection id.
        id: u64,
    },
    /// Start a VM for a new plugin (SIGHUP); the reply says whether it started.
    Reload(Arc<Plugin>, std::sync::mpsc::Sender<Result<(), String>>),
    /// Stop accepting, drain, exit.
    Shutdown,
    /// An item was enqueued on a shared queue a VM of this worker registered: deliver
    /// `proxy_on_queue_ready` to that VM (if it is still the current one).
    QueueReady {
        /// The registering VM.
        generation: u64,
        /// The queue.
        token: u32,
    },
}

/// Limits and switches of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Request headers larger than this get the 431 JSON reply (Envoy
    /// `max_request_headers_kb: 96`).
    pub max_request_headers_bytes: usize,
    /// A body buffered while the filter holds it may not exceed this (Envoy
    /// `per_connection_buffer_limit_bytes`): 413 for requests, 500 for responses.
    pub buffer_limit_bytes: usize,
    /// How long a draining shutdown waits for streams in flight.
    pub drain_timeout: Duration,
}

/// What every worker shares with the others.
#[derive(Clone)]
pub struct Common {
    /// The engine (compiled code, epoch).
    pub engine: Arc<Engine>,
    /// Shared data, queues and guest metrics.
    pub shared: Shared,
    /// Process-wide counters.
    pub stats: Arc<Stats>,
    /// HTTP limits.
    pub settings: Arc<HttpSettings>,
    /// The event file, if `--events` names one.
    pub events: Option<crate::serve::log::EventSink>,
}

/// One worker thread's state.
pub struct Worker {
    /// Index (the `worker_N` in log lines).
    pub index: usize,
    /// Its logger.
    pub log: Logger,
    engine: Arc<Engine>,
    shared: Shared,
    /// Its upstream client (connection pool).
    pub client: UpstreamClient,
    plugin: RefCell<Arc<Plugin>>,
    current: RefCell<Option<Rc<VmHandle>>>,
    last_reload: Cell<Option<tokio::time::Instant>>,
    next_generation: Cell<u64>,
    /// Process-wide counters.
    pub stats: Arc<Stats>,
    /// HTTP limits.
    pub settings: Arc<HttpSettings>,
    /// This worker's own inbox (shared-queue notifications come back through it).
    inbox: mpsc::UnboundedSender<WorkerMsg>,
}

impl Worker {
    /// A worker with no VM yet.
    pub fn new(
        index: usize,
        log: Logger,
        common: Common,
        client: UpstreamClient,
        plugin: Arc<Plugin>,
        inbox: mpsc::UnboundedSender<WorkerMsg>,
    ) -> Rc<Self> {
        Rc::new(Worker {
            index,
            log,
            engine: common.engine,
            shared: common.shared,
            client,
            plugin: RefCell::new(plugin),
            current: RefCell::new(None),
            last_reload: Cell::new(None),
            next_generation: Cell::new(0),
            stats: common.stats,
            settings: common.settings,
            inbox,
        })
    }

    /// Starts a VM for `plugin` and its tick task.
    pub fn start_vm(self: &Rc<Self>, plugin: Arc<Plugin>) -> Result<Rc<VmHandle>, VmError> {
        let generation = self.next_generation.get();
        self.next_generation.set(generation.wrapping_add(1));
        let streams: Streams = Rc::new(RefCell::new(HashMap::new()));
        let tick = Rc::new(TickCell::default());
        let slot = Rc::new(OnceCell::new());
        let embedding = WorkerHost {
            streams: streams.clone(),
            tick: tick.clone(),
            client: self.client.clone(),
            clusters: plugin.clusters.clone(),
            fleet: plugin.fleet.clone(),
            handle: slot.clone(),
            log: self.log.clone(),
            plugin_name: plugin.config.name.clone(),
            vm_id: plugin.config.vm_id.clone(),
            monotonic_origin: tokio::time::Instant::now(),
            generation,
            inbox: self.inbox.clone(),
        };
        let vm = Vm::start(
            &self.engine,
            &plugin.module,
            plugin.config.clone(),
            self.shared.clone(),
            embedding,
        )
        .map_err(|(e, _)| e)?;
        let handle = Rc::new(VmHandle {
            generation,
            vm: RefCell::new(vm),
            streams,
            plugin,
            failed: Cell::new(false),
            log: self.log.clone(),
            stats: self.stats.clone(),
        });
        let _ = slot.set(Rc::downgrade(&handle));
        tokio::task::spawn_local(tick_loop(Rc::downgrade(&handle), tick));
        Ok(handle)
    }

    /// Boots the first VM.
    pub fn boot(self: &Rc<Self>) -> Result<(), VmError> {
        let plugin = self.plugin.borrow().clone();
        let handle = self.start_vm(plugin)?;
        *self.current.borrow_mut() = Some(handle);
        Ok(())
    }

    /// Switches new requests to a VM of `plugin` (SIGHUP). On failure the current VM
    /// stays.
    pub fn reload(self: &Rc<Self>, plugin: Arc<Plugin>) -> Result<(), String> {
        let handle = self.start_vm(plugin.clone()).map_err(|e| e.to_string())?;
        *self.plugin.borrow_mut() = plugin;
        *self.current.borrow_mut() = Some(handle);
        Ok(())
    }

    /// The VM a new request runs on, reloading a failed one (`FAIL_RELOAD`). `None`:
    /// no usable VM now (the request gets 503 `wasm_fail_stream`).
    pub fn vm_for_new_stream(self: &Rc<Self>) -> Option<Rc<VmHandle>> {
        let current = self.current.borrow().clone();
        if let Some(handle) = current.filter(|h| !h.is_failed()) {
            return Some(handle);
        }
        let now = tokio::time::Instant::now();
        if let Some(last) = self.last_reload.get() {
            if now.duration_since(last) < RELOAD_BACKOFF {
                self.stats.vm_reload_backoff.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        self.last_reload.set(Some(now));
        let plugin = self.plugin.borrow().clone();
        match self.start_vm(plugin) {
            Ok(handle) => {
                self.stats.vm_reloads.fetch_add(1, Ordering::Relaxed);
                self.log.log(
                    LogLevel::Info,
                    "wasm",
                    &format!("started a fresh VM (generation {})", handle.generation),
                );
                *self.current.borrow_mut() = Some(handle.clone());
                Some(handle)
            }
            Err(e) => {
                self.stats
                    .vm_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.log.error(&format!("VM reload failed: {e}"));
                None
            }
        }
    }
}

impl Worker {
    /// `proxy_on_queue_ready` for the VM of `generation`, if it is still the current one.
    pub fn queue_ready(&self, generation: u64, token: u32) {
        let current = self.current.borrow().clone();
        if let Some(handle) = current.filter(|h| h.generation == generation) {
            let _ = handle.call(|vm| {
                let root = vm.root_context_id();
                vm.on_queue_ready(root, token)
            });
        }
    }
}

/// Calls `proxy_on_tick` every period while the VM lives (first tick one period after
/// `set_tick_period`, re-armed after each tick returns).
async fn tick_loop(handle: Weak<VmHandle>, tick: Rc<TickCell>) {
    loop {
        let period = tick.period.get();
        let wait = period.unwrap_or(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                let Some(vm) = handle.upgrade() else { return };
                if vm.is_failed() {
                    return;
                }
                if period.is_some() {
                    vm.tick();
                }
            }
            () = tick.changed.notified() => {}
        }
        if handle.strong_count() == 0 {
            return;
        }
    }
}

/// Where a worker thread's messages come from.
pub type WorkerInbox = mpsc::UnboundedReceiver<WorkerMsg>;
