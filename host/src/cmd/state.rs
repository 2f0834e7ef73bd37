//! `detour state`: the fleet state service (crate `detour-state`): the budget ledger's
//! HTTP JSON API and Envoy's rate limit service v3, both on one Redis. This module is
//! only its command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use detour_state::rls::RateLimits;
use detour_state::{Options, StartError};

use crate::config_file::{self, EnvMode, Outcome};
use crate::error::{stream_error, CliError};
use crate::exit_codes;

/// Arguments of `detour state`.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The Redis holding all fleet state: `redis://[:password@]host:port/db`,
    /// `redis+cluster://[:password@]host:port,host:port` (Redis Cluster) or
    /// `redis+sentinel://[:password@]host:port,host:port/master-name[/db]`. From the
    /// environment when not given, so a password stays out of the process list.
    #[arg(
        long,
        value_name = "URL",
        env = "DETOUR_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis: String,

    /// Address of the HTTP JSON API (/v1/reserve, /v1/settle, …, /healthz).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Also serve Envoy's rate limit service API v3 (gRPC) here.
    #[arg(long, value_name = "IP:PORT")]
    pub grpc: Option<SocketAddr>,

    /// The LiteLLM config whose deployments' `rpm`/`tpm` become rate-limit descriptors
    /// (`deployment=<id>`, `rate=rpm|tpm`). Provider keys are not needed.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Key namespace in Redis: several fleets can share one Redis.
    #[arg(long, value_name = "NAME", default_value = "detour")]
    pub namespace: String,

    /// The time limit of one Redis call, dialling included; past it the API answers 503.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// Once listening, write {"listen", "grpc", "pid"} as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Runs the service until SIGTERM/SIGINT.
pub fn run(args: &StateArgs, _out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let limits = match &args.config {
        None => RateLimits::default(),
        Some(path) => match config_file::read_and_load(path, EnvMode::Placeholder, err)? {
            Outcome::Valid { loaded, .. } => RateLimits::from_config(&loaded.config),
            Outcome::Invalid { .. } => return Ok(exit_codes::CONFIG_INVALID),
        },
    };
    let options = Options {
        redis_url: args.redis.clone(),
        listen: args.listen,
        grpc: args.grpc,
        namespace: args.namespace.clone(),
        redis_timeout: Duration::from_millis(args.redis_timeout_ms),
        limits,
    };
    let mut ready_error = None;
    let result = detour_state::server::run(options, |running| {
        let ready = serde_json::json!({
            "listen": running.http.to_string(),
            "grpc": running.grpc.map(|a| a.to_string()),
            "pid": std::process::id(),
        });
        if let Some(path) = &args.ready_file {
            if let Err(e) = std::fs::write(path, ready.to_string()) {
                ready_error = Some(CliError::io_path("write", path, e));
            }
        }
    });
    if let Some(e) = ready_error {
        return Err(e);
    }
    match result {
        Ok(()) => Ok(exit_codes::OK),
        Err(e) => {
            writeln!(err, "error: {e}").map_err(stream_error("stderr"))?;
            Ok(match e {
                StartError::Redis(_) => exit_codes::USAGE,
                StartError::Bind(..) | StartError::Runtime(_) => exit_codes::SERVE_FAILED,
            })
        }
    }
}
