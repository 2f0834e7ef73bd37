//! `detour validate CONFIG`: load the config as the filter will and report.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::config_file::{self, EnvMode, Outcome};
use crate::error::{stream_error, CliError};
use crate::exit_codes;

/// Arguments of `detour validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The config file (LiteLLM config.yaml plus a `detour:` section; YAML or JSON).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,

    /// Do not read the environment: every `os.environ/NAME` resolves to a placeholder,
    /// so a config can be checked without its keys (in CI).
    #[arg(long)]
    pub no_env: bool,
}

/// Prints warnings and errors to `err` and a one-line summary to `out`.
pub fn run(args: &ValidateArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let outcome = config_file::read_and_load(&args.config, EnvMode::from_no_env(args.no_env), err)?;
    match outcome {
        Outcome::Valid { loaded, .. } => {
            writeln!(
                out,
                "config ok: {} deployments in {} groups",
                loaded.config.deployments.len(),
                loaded.config.groups.len()
            )
            .map_err(stream_error("stdout"))?;
            Ok(exit_codes::OK)
        }
        Outcome::Invalid { errors } => {
            writeln!(out, "config invalid: {errors} errors").map_err(stream_error("stdout"))?;
            Ok(exit_codes::CONFIG_INVALID)
        }
    }
}
