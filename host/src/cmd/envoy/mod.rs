//! `detour envoy CONFIG`: render the complete Envoy bootstrap that runs detour.
//!
//! The bootstrap is generated, never hand-written: the filter's configuration is the
//! config file itself, and the clusters must be exactly the ones the filter will name in
//! `x-detour-cluster` (both sides use [`detour_core::cluster::cluster_name`]).

pub mod bootstrap;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use detour_core::config::Diagnostic;

pub use bootstrap::{render, RenderOptions, Rendered};

use crate::config_file::{self, env_refs, EnvMode, Outcome};
use crate::error::{stream_error, CliError};
use crate::exit_codes;

/// Where the filter is looked for when `--wasm` is not given, relative to the current
/// directory (scripts/build-wasm.sh puts it there).
pub const DEFAULT_WASM: &str = "target/detour.wasm";

/// Arguments of `detour envoy`.
#[derive(Debug, Clone, Args)]
pub struct EnvoyArgs {
    /// The config file; it is embedded in the bootstrap byte for byte.
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,

    /// Address the proxy listens on (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10000")]
    pub listen: SocketAddr,

    /// Address of Envoy's admin interface (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,

    /// The filter module [default: ./target/detour.wasm]; written as an absolute path.
    #[arg(long, value_name = "PATH")]
    pub wasm: Option<PathBuf>,

    /// Worker threads to suggest in the "how to run" comment (envoy --concurrency).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency_hint: u32,

    /// Write the bootstrap to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Do not read the environment (see `detour validate --no-env`). An `api_base` taken
    /// from `os.environ/NAME` cannot be rendered this way: its cluster needs the value.
    #[arg(long)]
    pub no_env: bool,
}

/// Loads the config, renders the bootstrap, writes it to `-o FILE` or `out`.
pub fn run(args: &EnvoyArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let env = EnvMode::from_no_env(args.no_env);
    let (text, loaded) = match config_file::read_and_load(&args.config, env, err)? {
        Outcome::Valid { text, loaded } => (text, loaded),
        Outcome::Invalid { errors } => return invalid(err, errors),
    };

    // Clusters are named from api_base at render time; one taken from the environment
    // must have its real value now and the same value when Envoy runs.
    let base_refs: Vec<_> = env_refs(&text)
        .into_iter()
        .filter(|r| {
            r.path.starts_with("model_list[") && r.path.ends_with("].litellm_params.api_base")
        })
        .collect();
    if env == EnvMode::Placeholder && !base_refs.is_empty() {
        let errors: Vec<Diagnostic> = base_refs
            .iter()
            .map(|r| Diagnostic {
                path: r.path.clone(),
                message: format!(
                    "comes from os.environ/{}, which --no-env does not read; its Envoy cluster is named from the real value, so render without --no-env",
                    r.name
                ),
            })
            .collect();
        print_errors(err, &errors)?;
        return invalid(err, errors.len());
    }
    for r in &base_refs {
        writeln!(
            err,
            "note: {}: the cluster is rendered from the current value of {}; Envoy must run with the same value",
            r.path, r.name
        )
        .map_err(stream_error("stderr"))?;
    }

    let wasm = wasm_path(args.wasm.as_deref())?;
    if let Some(output) = &args.output {
        if same_file(output, &args.config) {
            return Err(CliError::Usage(format!(
                "-o {} would overwrite the config file",
                output.display()
            )));
        }
    }
    let opts = RenderOptions {
        source: args.config.display().to_string(),
        output: args.output.as_ref().map(|p| p.display().to_string()),
        listen: args.listen,
        admin: args.admin,
        wasm: wasm.clone(),
        concurrency: args.concurrency_hint,
        no_env: args.no_env,
    };
    let rendered = match render(&text, &loaded.config, &opts) {
        Ok(rendered) => rendered,
        Err(errors) => {
            print_errors(err, &errors)?;
            return invalid(err, errors.len());
        }
    };

    match &args.output {
        Some(path) => {
            std::fs::write(path, &rendered.yaml)
                .map_err(|e| CliError::io_path("write", path, e))?;
            writeln!(
                out,
                "wrote {}: {} cluster(s), host_env_keys [{}]",
                path.display(),
                rendered.clusters.len(),
                rendered.host_env_keys.join(", ")
            )
            .map_err(stream_error("stdout"))?;
        }
        None => out
            .write_all(rendered.yaml.as_bytes())
            .map_err(stream_error("stdout"))?,
    }
    if !Path::new(&wasm).is_file() {
        writeln!(
            err,
            "note: {wasm} does not exist yet: build it (scripts/build-wasm.sh) before starting Envoy"
        )
        .map_err(stream_error("stderr"))?;
    }
    Ok(exit_codes::OK)
}

fn invalid(err: &mut dyn Write, errors: usize) -> Result<u8, CliError> {
    writeln!(
        err,
        "config invalid: {errors} errors; no bootstrap rendered"
    )
    .map_err(stream_error("stderr"))?;
    Ok(exit_codes::CONFIG_INVALID)
}

fn print_errors(err: &mut dyn Write, errors: &[Diagnostic]) -> Result<(), CliError> {
    for error in errors {
        writeln!(err, "error: {error}").map_err(stream_error("stderr"))?;
    }
    Ok(())
}

/// `--wasm` (or the default) as an absolute, UTF-8 path.
fn wasm_path(given: Option<&Path>) -> Result<String, CliError> {
    let given = given.unwrap_or(Path::new(DEFAULT_WASM));
    let absolute = std::path::absolute(given).map_err(|e| CliError::Io {
        context: format!("cannot make {} absolute", given.display()),
        source: e,
    })?;
    absolute.to_str().map(str::to_string).ok_or_else(|| {
        CliError::Usage(format!(
            "--wasm {} is not valid UTF-8; Envoy's config needs a UTF-8 path",
            absolute.display()
        ))
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
