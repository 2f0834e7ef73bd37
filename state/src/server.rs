//! `detour state`: the HTTP JSON API and the RLS gRPC service, both on one Redis.
//!
//! Stateless: everything lives in Redis, so any number of replicas can run behind one
//! Kubernetes Service. Both listeners share one Redis connection and one time limit.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use detour_core::ledger::LedgerError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::Redis;
use crate::redis_ledger::RedisLedger;
use crate::rls::window::RateWindows;
use crate::rls::{RateLimitService, RateLimits, RlsServer};

/// What `detour state` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// The HTTP JSON API's address (port 0: any free port).
    pub listen: SocketAddr,
    /// The RLS gRPC address, if served.
    pub grpc: Option<SocketAddr>,
    /// Key namespace in Redis (`{ns}:…` for the ledger, `{ns-rl}:…` for rate windows).
    pub namespace: String,
    /// The time limit of one Redis call, dialling included.
    pub redis_timeout: Duration,
    /// RPM/TPM per deployment, for the RLS service.
    pub limits: RateLimits,
}

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The Redis URL does not parse.
    Redis(String),
    /// A listener could not be bound.
    Bind(SocketAddr, io::Error),
    /// The runtime could not start.
    Runtime(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Redis(why) => write!(f, "{why}"),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started service: its bound addresses, and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Where the RLS service listens.
    pub grpc: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting and waits for the listeners to close.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds both listeners and serves in the current tokio runtime.
pub async fn start(options: Options) -> Result<Running, StartError> {
    let redis = Arc::new(
        Redis::open(&options.redis_url, options.redis_timeout).map_err(|e| match e {
            LedgerError::Invalid(why) => StartError::Redis(why),
            other => StartError::Redis(other.to_string()),
        })?,
    );
    let ledger = RedisLedger::new(Arc::clone(&redis), &options.namespace);
    let http_listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| StartError::Bind(options.listen, e))?;
    let http = http_listener
        .local_addr()
        .map_err(|e| StartError::Bind(options.listen, e))?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::http::serve(
        http_listener,
        ledger,
        signalled(stopped.clone()),
    ));

    let mut grpc = None;
    if let Some(addr) = options.grpc {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Bind(addr, e))?;
        grpc = Some(
            listener
                .local_addr()
                .map_err(|e| StartError::Bind(addr, e))?,
        );
        let windows = RateWindows::new(redis, &options.namespace);
        let service = RlsServer::new(Arc::new(RateLimitService::new(options.limits, windows)));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let shutdown = signalled(stopped);
        tasks.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
        });
    }
    Ok(Running {
        http,
        grpc,
        stop,
        tasks,
    })
}

async fn signalled(mut stopped: watch::Receiver<bool>) {
    // A dropped sender also means "stop".
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Runs the service on its own multi-threaded runtime until SIGTERM or SIGINT.
/// `ready` is called once both listeners are bound.
pub fn run(options: Options, ready: impl FnOnce(&Running)) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(async {
        let running = start(options).await?;
        ready(&running);
        terminated().await;
        running.stop().await;
        Ok(())
    })
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
