//! Engines, compiled modules, and VMs: one instance per worker thread.
//!
//! - [`Engine`]: one per process. Cranelift, epoch interruption on, and a module cache
//!   keyed by the module's bytes (a reload with an unchanged `.wasm` does not recompile).
//! - [`Vm`]: one instance of a plugin with its own `Store`, memory cap and context table,
//!   owned by one thread. It runs the start sequence (`_initialize`, root context,
//!   `proxy_on_vm_start`, `proxy_on_configure`) and then every callback, each under an
//!   epoch deadline.
//! - Failure follows cpp-host's `FailState`: any trap (guest panic, runaway loop past its
//!   deadline, memory cap hit and the guest aborting) marks the VM failed for good; the
//!   embedding drops it and starts a fresh one from the same module (`FAIL_RELOAD`).
//!   Shared data lives outside the VM and survives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{
    AsContextMut, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc, WasmParams, WasmResults,
};

use crate::context::{Embedding, HttpCallResponse};
use crate::metrics::{MetricIds, Metrics};
use crate::shared_data::{SharedData, SharedQueues};
use crate::types::{Action, LogLevel};

/// How a VM failed (cpp-host's `FailState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmError {
    /// The module does not compile or is not a proxy-wasm module.
    Compile(String),
    /// Instantiation failed (a missing import, a limit).
    Link(String),
    /// A required export is missing (memory, allocator).
    MissingFunction(String),
    /// `_initialize`/`_start` trapped, or `proxy_on_vm_start` returned false.
    StartFailed(String),
    /// `proxy_on_configure` returned false (the plugin refuses its configuration).
    ConfigureFailed,
    /// A callback trapped; the VM must not be used again.
    RuntimeError(String),
}

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmError::Compile(m) => write!(f, "cannot compile the module: {m}"),
            VmError::Link(m) => write!(f, "cannot instantiate the module: {m}"),
            VmError::MissingFunction(m) => write!(f, "the module lacks {m}"),
            VmError::StartFailed(m) => write!(f, "the VM failed to start: {m}"),
            VmError::ConfigureFailed => write!(
                f,
                "the plugin rejected its configuration (proxy_on_configure returned false)"
            ),
            VmError::RuntimeError(m) => write!(f, "the VM failed: {m}"),
        }
    }
}

impl std::error::Error for VmError {}

/// Resource limits of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory the guest may grow to (a failed grow returns −1; a Rust
    /// guest then aborts, which is a trap).
    pub memory_bytes: usize,
    /// Epoch ticks one callback may run (the embedding increments the epoch
    /// periodically; see [`Engine::increment_epoch`]).
    pub callback_deadline_ticks: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            callback_deadline_ticks: 100,
        }
    }
}

/// What a plugin is: Envoy's `PluginConfig` + `VmConfig`, minus the code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginConfig {
    /// `plugin_name` property; prefixes log lines.
    pub name: String,
    /// `plugin_root_id` property.
    pub root_id: String,
    /// Shared data and queue namespace; `plugin_vm_id` property.
    pub vm_id: String,
    /// The plugin configuration (`PLUGIN_CONFIGURATION`, only during `on_configure`).
    pub configuration: Vec<u8>,
    /// The VM configuration (`VM_CONFIGURATION`, always readable).
    pub vm_configuration: Vec<u8>,
    /// What WASI `environ_get` shows (never the whole process environment).
    pub environment: Vec<(String, String)>,
    /// Memory cap and callback deadline.
    pub limits: Limits,
}

/// The process-wide state every VM of the process sees.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// Shared data (CAS store).
    pub data: Arc<SharedData>,
    /// Shared queues.
    pub queues: Arc<SharedQueues>,
    /// Metrics defined by guests.
    pub metrics: Arc<Metrics>,
}

/// One compiled engine for the process, with a module cache.
pub struct Engine {
    engine: wasmtime::Engine,
    modules: Mutex<Vec<(Vec<u8>, Module)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Cranelift with epoch interruption (runaway guests are stopped at their deadline).
    pub fn new() -> Result<Self, VmError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| VmError::Compile(format!("{e}")))?;
        Ok(Engine {
            engine,
            modules: Mutex::new(Vec::new()),
        })
    }

    /// Compiles a module (binary or WAT text), or returns the cached one for the same
    /// bytes. It must export a proxy-wasm ABI version marker (0.2.0 or 0.2.1).
    pub fn compile(&self, bytes: &[u8]) -> Result<Module, VmError> {
        let mut cache = self
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, module)) = cache.iter().find(|(b, _)| b.as_slice() == bytes) {
            return Ok(module.clone());
        }
        let module =
            Module::new(&self.engine, bytes).map_err(|e| VmError::Compile(format!("{e:?}")))?;
        let abi = module.exports().any(|e| {
            matches!(
                e.name(),
                "proxy_abi_version_0_2_0" | "proxy_abi_version_0_2_1"
            )
        });
        if !abi {
            return Err(VmError::Compile(
                "not a proxy-wasm ABI 0.2.x module (no proxy_abi_version_0_2_0/_0_2_1 export)"
                    .into(),
            ));
        }
        // Keep the last few versions only (reloads with a changed .wasm).
        if cache.len() >= 4 {
            cache.remove(0);
        }
        cache.push((bytes.to_vec(), module.clone()));
        Ok(module)
    }

    /// Advances the epoch: every VM's running callback gets one tick closer to its
    /// deadline. The embedding calls this periodically (e.g. every 10 ms).
    pub fn increment_epoch(&self) {
        self.engine.increment_epoch();
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }
}

/// What a context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Root,
    Stream { root: u32 },
}

/// The runtime's own per-VM state (not the embedding's).
#[derive(Debug)]
pub(crate) struct AbiState {
    /// The context the host called into.
    pub(crate) current_context: u32,
    /// Set by `proxy_set_effective_context` for the rest of the current call.
    pub(crate) effective_context: Option<u32>,
    pub(crate) contexts: HashMap<u32, ContextKind>,
    pub(crate) next_context_id: u32,
    next_call_seq: u32,
    /// Outstanding HTTP calls: token → owning root context.
    pub(crate) calls: HashMap<u32, u32>,
    /// The answer being delivered by `proxy_on_http_call_response`.
    pub(crate) call_response: Option<HttpCallResponse>,
    /// `PLUGIN_CONFIGURATION` is readable (during `on_configure`).
    pub(crate) configuring: bool,
    pub(crate) plugin: Arc<PluginConfig>,
    /// `proxy_get_status`: code and message of the last HTTP call answer.
    pub(crate) status: (u32, String),
    pub(crate) metric_ids: MetricIds,
}

impl AbiState {
    /// The context hostcalls act on now.
    pub(crate) fn effective(&self) -> u32 {
        self.effective_context
            .filter(|id| self.contexts.contains_key(id))
            .unwrap_or(self.current_context)
    }

    /// The root context of `context_id` (itself for a root; 0 if unknown).
    pub(crate) fn root_of(&self, context_id: u32) -> u32 {
        match self.contexts.get(&context_id) {
            Some(ContextKind::Root) => context_id,
            Some(ContextKind::Stream { root }) => *root,
            None => 0,
        }
    }

    pub(crate) fn is_root(&self, context_id: u32) -> bool {
        matches!(self.contexts.get(&context_id), Some(ContextKind::Root))
    }

    /// A call id unique among outstanding calls: 4, 8, 12, … (low bits 0 = HTTP).
    pub(crate) fn next_call_token(&mut self) -> u32 {
        loop {
            self.next_call_seq = self.next_call_seq.wrapping_add(1);
            let token = self.next_call_seq.wrapping_shl(2);
            if token != 0 && !self.calls.contains_key(&token) {
                return token;
            }
        }
    }
}

/// The `Store` data of a VM: the runtime's state plus the embedding.
pub struct HostState<E> {
    pub(crate) abi: AbiState,
    pub(crate) limits: StoreLimits,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    pub(crate) shared: Shared,
    pub(crate) embedding: E,
}

impl<E> HostState<E> {
    /// The embedding.
    pub fn embedding(&self) -> &E {
        &self.embedding
    }
}

/// An error from a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The VM had already failed; nothing was called.
    Failed,
    /// This call trapped (the message says why); the VM is now failed.
    Trap(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Failed => write!(f, "the VM has failed"),
            CallError::Trap(m) => write!(f, "{m}"),
        }
    }
}

/// One instance of a plugin, owned by one thread.
pub struct Vm<E: Embedding> {
    store: Store<HostState<E>>,
    instance: Instance,
    root_context_id: u32,
    failed: Option<String>,
}

impl<E: Embedding> std::fmt::Debug for Vm<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("root_context_id", &self.root_context_id)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<E: Embedding> Vm<E> {
    /// Instantiates `module` and runs the start sequence: `_initialize` (then `main` if
    /// exported) or `_start`; root context 1 created; `proxy_on_vm_start`;
    /// `proxy_on_configure`. On failure the embedding is handed back with the error.
    pub fn start(
        engine: &Engine,
        module: &Module,
        plugin: Arc<PluginConfig>,
        shared: Shared,
        embedding: E,
    ) -> Result<Self, (VmError, E)> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.limits.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(16)
            .table_elements(1 << 20)
            .trap_on_grow_failure(false)
            .build();
        let deadline = plugin.limits.callback_deadline_ticks;
        let state = HostState {
            abi: AbiState {
                current_context: 0,
                effective_context: None,
                contexts: HashMap::new(),
                next_context_id: 1,
                next_call_seq: 0,
                calls: HashMap::new(),
                call_response: None,
                configuring: false,
                plugin,
                status: (0, String::new()),
                metric_ids: MetricIds::default(),
            },
            limits,
            memory: None,
            alloc: None,
            shared,
            embedding,
        };
        let mut store = Store::new(engine.wasmtime(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(deadline);

        let instance = match Self::instantiate(engine, module, &mut store) {
            Ok(instance) => instance,
            Err(e) => return Err((e, store.into_data().embedding)),
        };
        let mut vm = Vm {
            store,
            instance,
            root_context_id: 0,
            failed: None,
        };
        match vm.boot() {
            Ok(()) => Ok(vm),
            Err(e) => Err((e, vm.store.into_data().embedding)),
        }
    }

    fn instantiate(
        engine: &Engine,
        module: &Module,
        store: &mut Store<HostState<E>>,
    ) -> Result<Instance, VmError> {
        let mut linker = Linker::new(engine.wasmtime());
        crate::abi::add_to_linker(&mut linker).map_err(|e| VmError::Link(format!("{e}")))?;
        let instance = linker
            .instantiate(&mut *store, module)
            .map_err(|e| VmError::Link(format!("{e:?}")))?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| VmError::MissingFunction("an exported memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<i32, i32>(&mut *store, "proxy_on_memory_allocate")
            })
            .map_err(|_| {
                VmError::MissingFunction("an allocator (proxy_on_memory_allocate or malloc)".into())
            })?;
        let data = store.data_mut();
        data.memory = Some(memory);
        data.alloc = Some(alloc);
        Ok(instance)
    }

    fn boot(&mut self) -> Result<(), VmError> {
        let start_failed = |e: CallError| VmError::StartFailed(e.to_string());
        if self
            .instance
            .get_func(&mut self.store, "_initialize")
            .is_some()
        {
            self.invoke::<(), ()>(0, "_initialize", ())
                .map_err(start_failed)?;
            if self
                .instance
                .get_typed_func::<(i32, i32), i32>(&mut self.store, "main")
                .is_ok()
            {
                self.invoke::<(i32, i32), i32>(0, "main", (0, 0))
                    .map_err(start_failed)?;
            }
        } else if self.instance.get_func(&mut self.store, "_start").is_some() {
            self.invoke::<(), ()>(0, "_start", ())
                .map_err(start_failed)?;
        }
        let root = self.allocate_context(ContextKind::Root);
        self.root_context_id = root;
        self.invoke::<(i32, i32), ()>(root, "proxy_on_context_create", (root as i32, 0))
            .map_err(start_failed)?;
        let vm_config_len = self.store.data().abi.plugin.vm_configuration.len();
        let started = self
            .invoke::<(i32, i32), i32>(
                root,
                "proxy_on_vm_start",
                (root as i32, len32(vm_config_len)),
            )
            .map_err(start_failed)?;
        if started == Some(0) {
            return Err(VmError::StartFailed(
                "proxy_on_vm_start returned false".into(),
            ));
        }
        let config_len = self.store.data().abi.plugin.configuration.len();
        self.store.data_mut().abi.configuring = true;
        let configured = self.invoke::<(i32, i32), i32>(
            root,
            "proxy_on_configure",
            (root as i32, len32(config_len)),
        );
        self.store.data_mut().abi.configuring = false;
        match configured {
            Ok(Some(0)) => Err(VmError::ConfigureFailed),
            Ok(_) => Ok(()),
            Err(e) => Err(VmError::StartFailed(e.to_string())),
        }
    }

    fn allocate_context(&mut self, kind: ContextKind) -> u32 {
        let abi = &mut self.store.data_mut().abi;
        let id = abi.next_context_id;
        abi.next_context_id = abi.next_context_id.wrapping_add(1).max(1);
        abi.contexts.insert(id, kind);
        id
    }

    /// Calls export `name` with `context` as the current context. `Ok(None)` when the
    /// module does not export it (callbacks are optional). A trap fails the VM.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        context: u32,
        name: &str,
        params: P,
    ) -> Result<Option<R>, CallError> {
        if self.failed.is_some() {
            return Err(CallError::Failed);
        }
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let typed = match func.typed::<P, R>(&self.store) {
            Ok(typed) => typed,
            Err(e) => {
                let message = format!("Function: {name} has an unexpected signature: {e}");
                self.fail(context, &message);
                return Err(CallError::Trap(message));
            }
        };
        let deadline = self.store.data().abi.plugin.limits.callback_deadline_ticks;
        {
            let abi = &mut self.store.data_mut().abi;
            abi.current_context = context;
            abi.effective_context = None;
        }
        self.store.set_epoch_deadline(deadline);
        let result = typed.call(self.store.as_context_mut(), params);
        self.store.data_mut().abi.effective_context = None;
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                let message = format!("Function: {name} failed: {e:?}");
                self.fail(context, &message);
                Err(CallError::Trap(message))
            }
        }
    }

    fn fail(&mut self, context: u32, message: &str) {
        self.store
            .data_mut()
            .embedding
            .log(LogLevel::Critical, context, message);
        self.failed = Some(message.to_string());
    }

    /// Why the VM failed, if it did. A failed VM must be dropped and replaced.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The root context's id (1).
    pub fn root_context_id(&self) -> u32 {
        self.root_context_id
    }

    /// The embedding.
    pub fn embedding(&self) -> &E {
        &self.store.data().embedding
    }

    /// The embedding, mutably (between callbacks).
    pub fn embedding_mut(&mut self) -> &mut E {
        &mut self.store.data_mut().embedding
    }

    /// Whether `context_id` is live in this VM.
    pub fn has_context(&self, context_id: u32) -> bool {
        self.store.data().abi.contexts.contains_key(&context_id)
    }

    /// How much linear memory the guest has now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// Creates an HTTP stream context under the root (`proxy_on_context_create(id,
    /// root)`) and returns its id.
    pub fn create_stream(&mut self) -> Result<u32, CallError> {
        if self.failed.is_some() {
            return Err(CallError::Failed);
        }
        let root = self.root_context_id;
        let id = self.allocate_context(ContextKind::Stream { root });
        self.invoke::<(i32, i32), ()>(id, "proxy_on_context_create", (id as i32, root as i32))?;
        Ok(id)
    }

    fn action(
        &mut self,
        context: u32,
        name: &str,
        params: (i32, i32, i32),
    ) -> Result<Action, CallError> {
        Ok(self
            .invoke::<(i32, i32, i32), i32>(context, name, params)?
            .map_or(Action::Continue, Action::from_abi))
    }

    /// `proxy_on_request_headers(ctx, num_headers, end_of_stream)`.
    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        num_headers: usize,
        eos: bool,
    ) -> Result<Action, CallError> {
        self.action(
            ctx,
            "proxy_on_request_headers",
            (ctx as i32, len32(num_headers), i32::from(eos)),
        )
    }

    /// `proxy_on_request_body(ctx, body_size, end_of_stream)`.
    pub fn on_request_body(
        &mut self,
        ctx: u32,
        body_size: usize,
        eos: bool,
    ) -> Result<Action, CallError> {
        self.action(
            ctx,
            "proxy_on_request_body",
            (ctx as i32, len32(body_size), i32::from(eos)),
        )
    }

    /// `proxy_on_request_trailers(ctx, num_trailers)`.
    pub fn on_request_trailers(
        &mut self,
        ctx: u32,
        num_trailers: usize,
    ) -> Result<Action, CallError> {
        Ok(self
            .invoke::<(i32, i32), i32>(
                ctx,
                "proxy_on_request_trailers",
                (ctx as i32, len32(num_trailers)),
            )?
            .map_or(Action::Continue, Action::from_abi))
    }

    /// `proxy_on_response_headers(ctx, num_headers, end_of_stream)`.
    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        num_headers: usize,
        eos: bool,
    ) -> Result<Action, CallError> {
        self.action(
            ctx,
            "proxy_on_response_headers",
            (ctx as i32, len32(num_headers), i32::from(eos)),
        )
    }

    /// `proxy_on_response_body(ctx, body_size, end_of_stream)`.
    pub fn on_response_body(
        &mut self,
        ctx: u32,
        body_size: usize,
        eos: bool,
    ) -> Result<Action, CallError> {
        self.action(
            ctx,
            "proxy_on_response_body",
            (ctx as i32, len32(body_size), i32::from(eos)),
        )
    }

    /// `proxy_on_response_trailers(ctx, num_trailers)`.
    pub fn on_response_trailers(
        &mut self,
        ctx: u32,
        num_trailers: usize,
    ) -> Result<Action, CallError> {
        Ok(self
            .invoke::<(i32, i32), i32>(
                ctx,
                "proxy_on_response_trailers",
                (ctx as i32, len32(num_trailers)),
            )?
            .map_or(Action::Continue, Action::from_abi))
    }

    /// Ends a stream in Envoy's HTTP order: `proxy_on_log`, `proxy_on_done`,
    /// `proxy_on_delete`; the context is then forgotten. Unknown contexts are ignored.
    pub fn finish_stream(&mut self, ctx: u32) -> Result<(), CallError> {
        if !self.has_context(ctx) || self.store.data().abi.is_root(ctx) {
            return Ok(());
        }
        let result = self
            .invoke::<i32, ()>(ctx, "proxy_on_log", ctx as i32)
            .and_then(|_| self.invoke::<i32, i32>(ctx, "proxy_on_done", ctx as i32))
            .and_then(|_| self.invoke::<i32, ()>(ctx, "proxy_on_delete", ctx as i32));
        self.store.data_mut().abi.contexts.remove(&ctx);
        result.map(|_| ())
    }

    /// `proxy_on_tick(root)`.
    pub fn on_tick(&mut self, root: u32) -> Result<(), CallError> {
        if !self.store.data().abi.is_root(root) {
            return Ok(());
        }
        self.invoke::<i32, ()>(root, "proxy_on_tick", root as i32)
            .map(|_| ())
    }

    /// `proxy_on_queue_ready(root, token)`.
    pub fn on_queue_ready(&mut self, root: u32, token: u32) -> Result<(), CallError> {
        if !self.store.data().abi.is_root(root) {
            return Ok(());
        }
        self.invoke::<(i32, i32), ()>(root, "proxy_on_queue_ready", (root as i32, token as i32))
            .map(|_| ())
    }

    /// Delivers the answer to call `token`: `proxy_on_http_call_response(root, token,
    /// num_headers, body_size, num_trailers)`, with the answer readable (maps 6/7,
    /// buffer 4) during the callback only. A token this VM did not hand out (or already
    /// answered) is ignored: the Rust SDK panics on unknown tokens.
    pub fn on_http_call_response(
        &mut self,
        token: u32,
        response: HttpCallResponse,
    ) -> Result<bool, CallError> {
        let Some(root) = self.store.data_mut().abi.calls.remove(&token) else {
            return Ok(false);
        };
        let (n_headers, body_len, n_trailers) = (
            response.headers.len(),
            response.body.len(),
            response.trailers.len(),
        );
        {
            let abi = &mut self.store.data_mut().abi;
            abi.status = if n_headers == 0 {
                (11, "reset".to_string())
            } else {
                (0, String::new())
            };
            abi.call_response = Some(response);
        }
        let result = self.invoke::<(i32, i32, i32, i32, i32), ()>(
            root,
            "proxy_on_http_call_response",
            (
                root as i32,
                token as i32,
                len32(n_headers),
                len32(body_len),
                len32(n_trailers),
            ),
        );
        self.store.data_mut().abi.call_response = None;
        result.map(|_| true)
    }

    /// The tokens of calls still outstanding (the embedding cancels them on drop).
    pub fn outstanding_calls(&self) -> Vec<u32> {
        self.store.data().abi.calls.keys().copied().collect()
    }

    /// The VM's plugin configuration.
    pub fn plugin(&self) -> &PluginConfig {
        &self.store.data().abi.plugin
    }
}

fn len32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A tick period in the embedding's terms (0 ms cancels).
pub(crate) fn tick_period(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}
