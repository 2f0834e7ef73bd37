//! The command line's shape (clap). Each subcommand's arguments live with its module.

use clap::{Parser, Subcommand};

use crate::cmd::check::CheckArgs;
use crate::cmd::report::ReportArgs;
use crate::cmd::state::StateArgs;
use crate::cmd::{envoy::EnvoyArgs, serve::ServeArgs, validate::ValidateArgs};

/// detour: LLM routing and fallback inside Envoy, configured by one LiteLLM-style file.
#[derive(Debug, Parser)]
#[command(name = "detour", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file the way the filter loads it; exit 3 if it is invalid.
    Validate(ValidateArgs),
    /// Render the complete Envoy bootstrap (YAML) that runs detour with a config file.
    Envoy(EnvoyArgs),
    /// Run the filter on detour's own proxy-wasm host (wasmtime) as an HTTP proxy.
    Serve(ServeArgs),
    /// Verify a config against the seed's policy (V-2201..V-2204) and write the report.
    Check(CheckArgs),
    /// Write the evidence (budget, fallback, recovery reports and an HTML page) from detour's events.
    Report(ReportArgs),
    /// Run the fleet state service: budgets (HTTP JSON) and Envoy RLS v3 (gRPC) on Redis.
    State(StateArgs),
}
