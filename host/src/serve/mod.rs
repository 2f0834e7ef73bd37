//! `detour serve`: the filter on our own proxy-wasm host (`detour-host`) behind a hyper
//! server, with the Envoy behaviour detour relies on.
//!
//! Layers (each knows only the one below):
//! - [`mod@self`] (this module): files, listeners, worker threads, signals, the admin
//!   listener, the epoch ticker;
//! - [`worker`]: one thread each, owning its VMs (FAIL_RELOAD, SIGHUP reloads, ticks);
//! - [`stream`]: one request through the filter and the router, Envoy's semantics;
//! - [`router`]: clusters, upstream client, Envoy's synthetic answers, HTTP calls;
//! - [`fleet`]: the state service's calls answered in-process on Redis (fleet mode);
//! - [`host`]: the `detour-host` context traits, implemented for one worker's VM.
//!
//! **Architecture invariant:** hyper and tokio stop here; `detour-host` never sees them.
//! **Architecture invariant:** a connection (and so every callback of its requests)
//! stays on the worker that accepted it, as in Envoy.

pub mod admin;
pub mod body;
pub mod fleet;
pub mod host;
pub mod log;
pub mod router;
pub mod stream;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detour_host::{Engine, Limits, LogLevel, PluginConfig, Shared, VmError};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::mpsc;

use crate::cmd::envoy::bootstrap::PLUGIN_NAME;
use crate::config_file::{env_names, env_refs, NO_ENV_PLACEHOLDER};
use fleet::FleetRoute;
use log::Logger;
use router::Clusters;
use worker::{Common, HttpSettings, Plugin, Stats, Worker, WorkerMsg};

/// How often the epoch advances: a callback's deadline is counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Everything `detour serve` needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config file (LiteLLM `config.yaml` + `detour:`), the filter's configuration.
    pub config: PathBuf,
    /// The filter module (`.wasm`, or `.wat` text).
    pub wasm: PathBuf,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener (loopback only).
    pub admin: SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// Written once both listeners are bound and every worker's VM started:
    /// `{"listen": "127.0.0.1:PORT", "admin": "127.0.0.1:PORT", "workers": N, "pid": PID}`.
    pub ready_file: Option<PathBuf>,
    /// VM limits (memory cap, per-callback deadline in epoch ticks).
    pub limits: Limits,
    /// Least log level.
    pub log_level: LogLevel,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Appends every `detour-event` JSON line here (the log `detour report` reads).
    pub events_file: Option<PathBuf>,
}

/// How `detour serve` ended.
#[derive(Debug)]
pub enum ServeError {
    /// A file could not be read.
    Io(String),
    /// The filter refused its configuration (`on_configure` returned false).
    ConfigRejected,
    /// The VM could not start (compile, link, start trap).
    Start(String),
    /// A listener could not be bound.
    Bind(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Io(m) | ServeError::Start(m) | ServeError::Bind(m) => write!(f, "{m}"),
            ServeError::ConfigRejected => write!(
                f,
                "the filter rejected the configuration (see its log lines above)"
            ),
        }
    }
}

/// Reads the config and module and builds the plugin the workers run.
pub fn load_plugin(engine: &Engine, opts: &ServeOptions) -> Result<Arc<Plugin>, ServeError> {
    let text = std::fs::read_to_string(&opts.config)
        .map_err(|e| ServeError::Io(format!("cannot read {}: {e}", opts.config.display())))?;
    let bytes = std::fs::read(&opts.wasm)
        .map_err(|e| ServeError::Io(format!("cannot read {}: {e}", opts.wasm.display())))?;
    let module = engine
        .compile(&bytes)
        .map_err(|e| ServeError::Start(format!("{}: {e}", opts.wasm.display())))?;
    // Envoy's `host_env_keys`: every os.environ/NAME the file names, if set.
    let environment = env_names(&env_refs(&text))
        .into_iter()
        .filter_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
        .collect();
    // Clusters come from the same file, named as `detour envoy` names them. A key that
    // is not set cannot name a cluster; the filter itself reports it and refuses.
    let loaded = detour_core::config::load(&text, &|name| {
        std::env::var(name)
            .ok()
            .or_else(|| Some(NO_ENV_PLACEHOLDER.to_string()))
    })
    .ok();
    let clusters = loaded
        .as_ref()
        .map(|loaded| Clusters::from_config(&loaded.config))
        .unwrap_or_default();
    // Fleet mode with a Redis: the state service's calls are answered in-process, on
    // the runtime loading the config (the main thread's; see `fleet`). A Redis named by
    // an unset variable is left to the filter, which reports it and refuses.
    let fleet = loaded
        .as_ref()
        .and_then(|l| l.config.fleet.as_ref())
        .filter(|f| {
            !f.redis
                .as_ref()
                .is_some_and(|url| url.expose().contains(NO_ENV_PLACEHOLDER))
        });
    let fleet = match fleet {
        Some(fleet) => FleetRoute::from_fleet(fleet)
            .map_err(ServeError::Start)?
            .map(|route| match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Arc::new(route.on_runtime(runtime)),
                Err(_) => Arc::new(route),
            }),
        None => None,
    };
    Ok(Arc::new(Plugin {
        module,
        config: Arc::new(PluginConfig {
            name: PLUGIN_NAME.into(),
            root_id: PLUGIN_NAME.into(),
            vm_id: PLUGIN_NAME.into(),
            configuration: text.into_bytes(),
            vm_configuration: Vec::new(),
            environment,
            limits: opts.limits,
        }),
        clusters: Arc::new(clusters),
        fleet,
    }))
}

/// A hyper executor for `!Send` futures on the worker's `LocalSet` (HTTP/2 streams).
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// The connection settings: HTTP/1.1 and h2c (prior knowledge) on one port, header
/// limits above Envoy's 96 KiB so that the 431 is ours (JSON), timers from tokio.
fn connection_builder() -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(1 << 20)
        .max_headers(1000);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(1 << 20);
    builder
}

struct WorkerThread {
    inbox: mpsc::UnboundedSender<WorkerMsg>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts worker `index`; its boot result comes back on `booted`.
fn spawn_worker(
    index: usize,
    opts: &ServeOptions,
    common: Common,
    plugin: Arc<Plugin>,
    booted: std::sync::mpsc::Sender<(usize, Result<(), VmError>)>,
) -> Result<WorkerThread, ServeError> {
    let (tx, mut inbox) = mpsc::unbounded_channel::<WorkerMsg>();
    let own_inbox = tx.clone();
    let log =
        Logger::new(format!("worker_{index}"), opts.log_level).with_events(common.events.clone());
    let drain = opts.drain_timeout;
    let thread = std::thread::Builder::new()
        .name(format!("worker_{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = booted.send((index, Err(VmError::StartFailed(format!("tokio: {e}")))));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let client = match router::new_client() {
                    Ok(client) => client,
                    Err(e) => {
                        let _ = booted.send((index, Err(VmError::StartFailed(e))));
                        return;
                    }
                };
                let worker = Worker::new(index, log, common, client, plugin, own_inbox);
                if let Err(e) = worker.boot() {
                    let _ = booted.send((index, Err(e)));
                    return;
                }
                let _ = booted.send((index, Ok(())));
                worker_loop(&worker, &mut inbox, drain).await;
            });
        })
        .map_err(|e| ServeError::Start(format!("cannot start a worker thread: {e}")))?;
    Ok(WorkerThread { inbox: tx, thread })
}

async fn worker_loop(
    worker: &Rc<Worker>,
    inbox: &mut mpsc::UnboundedReceiver<WorkerMsg>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some(msg) = inbox.recv().await {
        match msg {
            WorkerMsg::Connection {
                stream,
                peer,
                local,
                id,
            } => {
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let downstream = stream::Downstream { peer, local, id };
                let worker = worker.clone();
                let watcher = graceful.watcher();
                tokio::task::spawn_local(async move {
                    let service =
                        service_fn(move |req| stream::handle(worker.clone(), downstream, req));
                    let builder = connection_builder();
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                });
            }
            WorkerMsg::Reload(plugin, reply) => {
                let _ = reply.send(worker.reload(plugin));
            }
            WorkerMsg::QueueReady { generation, token } => worker.queue_ready(generation, token),
            WorkerMsg::Shutdown => break,
        }
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        worker
            .log
            .warn("drain timeout: closing connections with requests in flight");
    }
}

/// Runs the server until SIGTERM/SIGINT. Startup failures come back as errors (after
/// the filter's own log lines were printed).
pub fn run(opts: &ServeOptions) -> Result<(), ServeError> {
    let log = Logger::new("main", opts.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Start(format!("tokio: {e}")))?;
    runtime.block_on(serve(opts, log))
}

async fn serve(opts: &ServeOptions, log: Logger) -> Result<(), ServeError> {
    let engine = Arc::new(Engine::new().map_err(|e| ServeError::Start(e.to_string()))?);
    // Runaway guests: every callback has a deadline in epoch ticks.
    let ticker_engine = engine.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(EPOCH_TICK);
        loop {
            interval.tick().await;
            ticker_engine.increment_epoch();
        }
    });
    let result = serve_with_engine(opts, &log, engine).await;
    ticker.abort();
    result
}

async fn serve_with_engine(
    opts: &ServeOptions,
    log: &Logger,
    engine: Arc<Engine>,
) -> Result<(), ServeError> {
    let plugin = load_plugin(&engine, opts)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServeError::Bind(format!("cannot listen on {}: {e}", opts.listen)))?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin)
        .await
        .map_err(|e| ServeError::Bind(format!("cannot listen on {} (admin): {e}", opts.admin)))?;
    let listen_addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(e.to_string()))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| ServeError::Bind(e.to_string()))?;

    let events = match &opts.events_file {
        Some(path) => Some(Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    ServeError::Io(format!(
                        "cannot open the event file {}: {e}",
                        path.display()
                    ))
                })?,
        ))),
        None => None,
    };
    let shared = Shared::default();
    let stats = Arc::new(Stats::default());
    let settings = Arc::new(HttpSettings {
        max_request_headers_bytes: 96 * 1024,
        buffer_limit_bytes: buffer_limit(&plugin),
        drain_timeout: opts.drain_timeout,
    });
    let (booted_tx, booted_rx) = std::sync::mpsc::channel();
    let mut workers = Vec::new();
    for index in 0..opts.workers.max(1) {
        let common = Common {
            engine: engine.clone(),
            shared: shared.clone(),
            stats: stats.clone(),
            settings: settings.clone(),
            events: events.clone(),
        };
        workers.push(spawn_worker(
            index,
            opts,
            common,
            plugin.clone(),
            booted_tx.clone(),
        )?);
    }
    drop(booted_tx);
    // Wait for every worker's VM (on a blocking thread: the std channel blocks).
    let n_workers = workers.len();
    let boot = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        while results.len() < n_workers {
            match booted_rx.recv() {
                Ok(result) => results.push(result),
                Err(_) => break,
            }
        }
        results
    })
    .await
    .unwrap_or_default();
    let failure = boot.iter().find_map(|(_, r)| r.as_ref().err().cloned());
    if failure.is_some() || boot.len() < workers.len() {
        stop_workers(workers).await;
        return Err(match failure {
            Some(VmError::ConfigureFailed) => ServeError::ConfigRejected,
            Some(e) => ServeError::Start(e.to_string()),
            None => ServeError::Start("a worker thread died while starting".into()),
        });
    }

    let admin = tokio::spawn(admin::serve(
        admin_listener,
        admin::AdminState {
            stats: stats.clone(),
            shared: shared.clone(),
            vm_id: plugin.config.vm_id.clone(),
            workers: workers.len(),
        },
    ));
    log.info(&format!(
        "detour serve: listening on {listen_addr} (admin {admin_addr}), {} worker(s), clusters [{}]",
        workers.len(),
        plugin.clusters.names().join(", ")
    ));
    log_fleet(log, &plugin);
    if let Some(path) = &opts.ready_file {
        write_ready_file(path, listen_addr, admin_addr, workers.len())?;
    }

    let (mut term, mut int, mut hup) = signals()?;
    let next_id = AtomicU64::new(1);
    let mut turn = 0_usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Ok(stream) = stream.into_std() else { continue };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                if let Some(worker) = workers.get(turn % workers.len()) {
                    let _ = worker.inbox.send(WorkerMsg::Connection { stream, peer, local: listen_addr, id });
                }
                turn = turn.wrapping_add(1);
            }
            _ = term.recv() => { log.info("SIGTERM: draining"); break; }
            _ = int.recv() => { log.info("SIGINT: draining"); break; }
            _ = hup.recv() => reload(opts, log, &engine, &workers, &stats).await,
        }
    }
    drop(listener);
    admin.abort();
    stop_workers(workers).await;
    log.info("detour serve: stopped");
    Ok(())
}

/// Says where the fleet state service's calls go (never the Redis URL: it may hold a
/// password).
fn log_fleet(log: &Logger, plugin: &Plugin) {
    if let Some(fleet) = &plugin.fleet {
        log.info(&format!(
            "fleet mode: calls to the state cluster {} are answered in-process on Redis (namespace {})",
            fleet.cluster(),
            fleet.namespace()
        ));
    }
}

/// Envoy's `per_connection_buffer_limit_bytes` as `detour envoy` renders it.
fn buffer_limit(plugin: &Plugin) -> usize {
    let text = String::from_utf8_lossy(&plugin.config.configuration);
    let max_body = detour_core::config::load(&text, &|_| Some(NO_ENV_PLACEHOLDER.to_string()))
        .map(|l| l.config.settings.max_request_body_bytes)
        .unwrap_or(10 << 20);
    crate::cmd::envoy::bootstrap::buffer_limit_bytes(max_body)
        .map(|b| b as usize)
        .unwrap_or(usize::MAX)
}

type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn signals() -> Result<Signals, ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let make = |kind| signal(kind).map_err(|e| ServeError::Start(format!("signals: {e}")));
    Ok((
        make(SignalKind::terminate())?,
        make(SignalKind::interrupt())?,
        make(SignalKind::hangup())?,
    ))
}

/// SIGHUP: re-read the config and the module; every worker starts a VM of the new
/// plugin for new requests (shared data is kept). Any failure keeps the old plugin.
async fn reload(
    opts: &ServeOptions,
    log: &Logger,
    engine: &Engine,
    workers: &[WorkerThread],
    stats: &Stats,
) {
    log.info("SIGHUP: reloading the config and the filter");
    let plugin = match load_plugin(engine, opts) {
        Ok(plugin) => plugin,
        Err(e) => {
            log.error(&format!("reload failed, keeping the running config: {e}"));
            return;
        }
    };
    let mut replies = Vec::new();
    for worker in workers {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = worker.inbox.send(WorkerMsg::Reload(plugin.clone(), tx));
        replies.push(rx);
    }
    let results = tokio::task::spawn_blocking(move || {
        replies
            .into_iter()
            .map(|rx| rx.recv().unwrap_or_else(|_| Err("worker gone".into())))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        stats.config_reloads.fetch_add(1, Ordering::Relaxed);
        log.info("reload done: new requests run the new config; shared data kept");
        log_fleet(log, &plugin);
    } else {
        log.error(&format!(
            "reload failed on {} worker(s), they keep the running config: {}",
            failed.len(),
            failed.join("; ")
        ));
    }
}

async fn stop_workers(workers: Vec<WorkerThread>) {
    for worker in &workers {
        let _ = worker.inbox.send(WorkerMsg::Shutdown);
    }
    let _ = tokio::task::spawn_blocking(move || {
        for worker in workers {
            let _ = worker.thread.join();
        }
    })
    .await;
}

fn write_ready_file(
    path: &std::path::Path,
    listen: SocketAddr,
    admin: SocketAddr,
    workers: usize,
) -> Result<(), ServeError> {
    let text = serde_json::json!({
        "listen": listen.to_string(),
        "admin": admin.to_string(),
        "workers": workers,
        "pid": std::process::id(),
    })
    .to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ServeError::Io(format!("cannot write {}: {e}", path.display())))
}
