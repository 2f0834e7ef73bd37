//! `detour`, the command line.
//!
//! One configuration file (LiteLLM's `config.yaml` plus a `detour:` section) drives
//! everything; this crate is what turns it into something that runs:
//!
//! - `detour validate CONFIG` loads it exactly as the filter will and prints what is wrong;
//! - `detour envoy CONFIG` renders the complete Envoy bootstrap that runs the filter;
//! - `detour serve --config CONFIG` runs the filter on detour's own proxy-wasm host
//!   ([`serve`], on the `detour-host` crate) with the Envoy behaviour it relies on.
//!
//! Each subcommand is a module under [`cmd`]. Output goes through the writers passed to
//! [`run`], never straight to the process's stdout, so tests capture it. Exit statuses
//! are the constants in [`exit_codes`].

pub mod cli;
pub mod cmd;
pub mod config_file;
pub mod error;
pub mod exit_codes;
pub mod serve;

use std::io::Write;
use std::process::ExitCode;

pub use cli::{Cli, Command};
pub use error::CliError;

/// Runs one parsed command line. `out` is stdout (results), `err` is stderr
/// (diagnostics). An invalid config is `Ok(CONFIG_INVALID)`, not an error.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<ExitCode, CliError> {
    let status = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args, out, err)?,
        Command::Envoy(args) => cmd::envoy::run(&args, out, err)?,
        Command::Check(args) => cmd::check::run(&args, out, err)?,
        Command::Report(args) => cmd::report::run(&args, out, err)?,
        Command::Serve(args) => cmd::serve::run(&args, out, err)?,
        Command::State(args) => cmd::state::run(&args, out, err)?,
    };
    Ok(ExitCode::from(status))
}
