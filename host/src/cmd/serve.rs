//! `detour serve CONFIG`: run the filter on detour's own proxy-wasm host (wasmtime)
//! behind an HTTP/1.1 + h2c server, with the Envoy behaviour the filter relies on.
//! The server itself is [`crate::serve`]; this module is its command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use detour_host::{Limits, LogLevel};

use crate::cmd::envoy::DEFAULT_WASM;
use crate::error::{stream_error, CliError};
use crate::exit_codes;
use crate::serve::{self, ServeError, ServeOptions, EPOCH_TICK};

/// Arguments of `detour serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The config file; it is the filter's configuration, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// Address the proxy listens on (port 0: any free port; see --ready-file).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the admin listener (/ready, /metrics); loopback only.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9902")]
    pub admin: SocketAddr,

    /// Worker threads, each with its own filter VM [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// The filter module (.wasm, or .wat text).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_WASM)]
    pub wasm: PathBuf,

    /// Once listening, write {"listen", "admin", "workers", "pid"} as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// Append every detour event (one JSON object per line) to FILE: the input of
    /// `detour report`. Events also go to the log either way.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Linear memory cap of each filter VM, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub vm_memory_mib: u32,

    /// The longest one filter callback may run before it is stopped (the VM is then
    /// replaced), milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub callback_timeout_ms: u64,

    /// Least log level: trace, debug, info, warning, error, critical.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: LogLevel,

    /// How long SIGTERM waits for requests in flight, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub drain_secs: u64,
}

fn parse_level(text: &str) -> Result<LogLevel, String> {
    Ok(match text {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "critical" => LogLevel::Critical,
        _ => return Err(format!("unknown log level {text:?}")),
    })
}

/// Runs the server until SIGTERM/SIGINT; startup failures map to exit statuses.
pub fn run(args: &ServeArgs, _out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    if !args.admin.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--admin {} must be a loopback address (the admin listener has no authentication)",
            args.admin
        )));
    }
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let opts = ServeOptions {
        config: args.config.clone(),
        wasm: args.wasm.clone(),
        listen: args.listen,
        admin: args.admin,
        workers,
        ready_file: args.ready_file.clone(),
        limits: Limits {
            memory_bytes: usize::try_from(args.vm_memory_mib).unwrap_or(64) << 20,
            callback_deadline_ticks: (args.callback_timeout_ms / EPOCH_TICK.as_millis() as u64)
                .max(1),
        },
        log_level: args.log_level,
        drain_timeout: Duration::from_secs(args.drain_secs),
        events_file: args.events.clone(),
    };
    match serve::run(&opts) {
        Ok(()) => Ok(exit_codes::OK),
        Err(e) => {
            writeln!(err, "error: {e}").map_err(stream_error("stderr"))?;
            Ok(match e {
                ServeError::Io(_) => exit_codes::IO,
                ServeError::ConfigRejected => exit_codes::CONFIG_INVALID,
                ServeError::Start(_) | ServeError::Bind(_) => exit_codes::SERVE_FAILED,
            })
        }
    }
}
