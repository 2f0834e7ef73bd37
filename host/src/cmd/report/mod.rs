//! `detour report EVENTS_FILE...`: the seed's evidence from detour's events.
//!
//! Reads event JSON lines (or Envoy / `detour serve` logs with `detour-event {json}`
//! lines; `-` is stdin), and writes, under `--out` (default `evidence`):
//!
//! - `budget/YYYYMMDD_budget_consumption.md`: spend by model and tag, remaining budget,
//!   alert history, halts (Part22 E-2202);
//! - `fallback/YYYYMMDD_fallback_history.md`: every fallback, the fallback periods per
//!   deployment, the seed's log patterns (E-2203);
//! - `recovery/YYYYMMDD_recovery_history.md`: recoveries and what preceded them (E-2204);
//! - `report.html`: one self-contained page with inline SVG charts.
//!
//! `YYYYMMDD` is `--date`, else the UTC date of the latest event, else today.
//! `--config` adds every configured limit (not only those that alerted) and names each
//! deployment's model and group.

pub mod analysis;
pub mod events;
pub mod fmt;
pub mod html;
pub mod markdown;

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config_file::{self, EnvMode, Outcome};
use crate::error::{stream_error, CliError};
use crate::exit_codes;

pub use analysis::Analysis;
pub use events::Read;

/// Arguments of `detour report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Event files: JSON lines, or Envoy logs with `detour-event {json}` lines (`-`: stdin).
    #[arg(value_name = "EVENTS_FILE", required = true)]
    pub events: Vec<PathBuf>,

    /// The config the events came from: adds every budget limit and names deployments.
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Where the evidence goes (`budget/`, `fallback/`, `recovery/`, `report.html`).
    #[arg(long, value_name = "DIR", default_value = "evidence")]
    pub out: PathBuf,

    /// The date in the file names, YYYYMMDD (default: the UTC date of the latest event).
    #[arg(long, value_name = "YYYYMMDD")]
    pub date: Option<String>,
}

/// What every writer needs.
pub struct Context<'a> {
    /// `YYYYMMDD`.
    pub date: &'a str,
    /// The input.
    pub read: &'a Read,
    /// What it means.
    pub analysis: &'a Analysis,
    /// The config's file name, if one was given.
    pub config_name: Option<&'a str>,
}

/// The four outputs, as text.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `budget/<date>_budget_consumption.md`.
    pub budget: String,
    /// `fallback/<date>_fallback_history.md`.
    pub fallback: String,
    /// `recovery/<date>_recovery_history.md`.
    pub recovery: String,
    /// `report.html`.
    pub html: String,
}

impl Outputs {
    /// Renders everything.
    pub fn render(ctx: &Context<'_>) -> Self {
        Outputs {
            budget: markdown::budget(ctx),
            fallback: markdown::fallback(ctx),
            recovery: markdown::recovery(ctx),
            html: html::page(ctx),
        }
    }

    /// (relative path, text) of each file for `date`.
    pub fn files(&self, date: &str) -> [(String, &str); 4] {
        [
            (
                format!("budget/{date}_budget_consumption.md"),
                self.budget.as_str(),
            ),
            (
                format!("fallback/{date}_fallback_history.md"),
                self.fallback.as_str(),
            ),
            (
                format!("recovery/{date}_recovery_history.md"),
                self.recovery.as_str(),
            ),
            ("report.html".to_string(), self.html.as_str()),
        ]
    }
}

/// Reads, works out, writes, and prints where everything went.
pub fn run(args: &ReportArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    if let Some(date) = &args.date {
        if !fmt::valid_yyyymmdd(date) {
            return Err(CliError::Usage(format!(
                "--date {date:?} is not a date written YYYYMMDD"
            )));
        }
    }
    let config = match &args.config {
        None => None,
        // The report needs no keys: read the config without the environment.
        Some(path) => match config_file::read_and_load(path, EnvMode::Placeholder, err)? {
            Outcome::Valid { loaded, .. } => Some(loaded),
            Outcome::Invalid { errors } => {
                writeln!(out, "config invalid: {errors} errors; nothing written")
                    .map_err(stream_error("stdout"))?;
                return Ok(exit_codes::CONFIG_INVALID);
            }
        },
    };
    let mut read = Read::default();
    for path in &args.events {
        let display = path.display().to_string();
        if display == "-" {
            let stdin = std::io::stdin();
            read.add("stdin", "stdin", stdin.lock())
                .map_err(|e| CliError::io_path("read", Path::new("stdin"), e))?;
            continue;
        }
        let file = std::fs::File::open(path).map_err(|e| CliError::io_path("read", path, e))?;
        let name = path
            .file_name()
            .map_or_else(|| display.clone(), |n| n.to_string_lossy().into_owned());
        read.add(&name, &display, BufReader::new(file))
            .map_err(|e| CliError::io_path("read", path, e))?;
    }
    read.finish();
    let analysis = analysis::analyse(&read, config.as_ref().map(|l| &l.config));
    let date = match &args.date {
        Some(date) => date.clone(),
        None => match analysis.span {
            Some((_, last)) => fmt::yyyymmdd(last),
            None => fmt::yyyymmdd(today_ms()),
        },
    };
    let config_name = args.config.as_ref().map(|p| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let ctx = Context {
        date: &date,
        read: &read,
        analysis: &analysis,
        config_name: config_name.as_deref(),
    };
    let outputs = Outputs::render(&ctx);
    for (relative, text) in outputs.files(&date) {
        let path = args.out.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CliError::io_path("create", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| CliError::io_path("write", &path, e))?;
        writeln!(out, "wrote {}", path.display()).map_err(stream_error("stdout"))?;
    }
    writeln!(
        out,
        "{} events: {} fallbacks, {} recoveries, {} breaker trips, {} budget alerts, {} halts",
        read.events.len(),
        analysis.fallbacks.len(),
        analysis.recoveries.len(),
        analysis.trips.len(),
        analysis.alerts.len(),
        analysis.halts.len()
    )
    .map_err(stream_error("stdout"))?;
    if read.malformed() > 0 {
        writeln!(
            err,
            "warning: {} malformed lines skipped (listed in each report's Input section)",
            read.malformed()
        )
        .map_err(stream_error("stderr"))?;
        for m in read.samples.iter().take(5) {
            writeln!(err, "warning: {}:{}: {}", m.file, m.line, m.reason)
                .map_err(stream_error("stderr"))?;
        }
    }
    if read.events.is_empty() {
        writeln!(err, "warning: no detour events in the input").map_err(stream_error("stderr"))?;
    }
    Ok(exit_codes::OK)
}

/// Now, for the default `--date` of an input without events (the only clock read).
#[expect(
    clippy::disallowed_methods,
    reason = "the CLI's default file date when the events give none; the policy core never reads a clock"
)]
fn today_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
