//! `detour check CONFIG`: verify a config against the seed's policy (V-2201..V-2204) and
//! write the verification report.
//!
//! The rules are in [`rules`]; this module loads the config, prints one line per finding,
//! writes the report (Markdown, or JSON with `--format json`) and picks the exit status:
//! [`exit_codes::OK`] when nothing fails (warnings allowed), [`exit_codes::CHECK_FAILED`]
//! when a rule fails, [`exit_codes::CONFIG_INVALID`] when the config does not load.

pub mod rules;

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::config_file::{self, EnvMode, Outcome};
use crate::error::{stream_error, CliError};
use crate::exit_codes;
use rules::{ChainSummary, Finding, Item, Level, Rule, RULES};

/// Arguments of `detour check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The config file (LiteLLM config.yaml plus a `detour:` section; YAML or JSON).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,

    /// Where the verification report goes (default: detour-check-report.md, or .json
    /// with --format json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// The report's format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,

    /// Do not read the environment: every `os.environ/NAME` resolves to a placeholder.
    #[arg(long)]
    pub no_env: bool,

    /// How many processes run this config (Envoy replicas, sidecars, `detour serve`
    /// instances). Above 1, budgets and rpm/tpm need fleet mode (detour.fleet), or each
    /// replica spends each whole budget: the `fleet` rule warns.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,
}

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown, for people and evidence folders.
    Md,
    /// JSON, for machines.
    Json,
}

/// The outcome of the rules over one config.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The config file as named on the command line.
    pub config: String,
    /// How many processes run the config (`--replicas`).
    pub replicas: u32,
    /// `pass` or `fail`.
    pub result: &'static str,
    /// How many findings failed.
    pub failures: usize,
    /// How many findings warned.
    pub warnings: usize,
    /// Every finding, PASS ones included, in rule order.
    pub findings: Vec<Finding>,
    /// Every chain the rules looked at.
    pub chains: Vec<ChainSummary>,
    /// The rules, for the reader.
    pub rules: Vec<Rule>,
}

impl Report {
    /// Runs the rules over a loaded config run by `replicas` processes.
    pub fn new(config_name: String, config: &detour_core::config::Config, replicas: u32) -> Self {
        let findings = rules::check_with_replicas(config, &rules::Policy::SEED, replicas);
        let failures = findings.iter().filter(|f| f.level == Level::Fail).count();
        let warnings = findings.iter().filter(|f| f.level == Level::Warn).count();
        Report {
            config: config_name,
            replicas,
            result: if failures > 0 { "fail" } else { "pass" },
            failures,
            warnings,
            findings,
            chains: rules::chains(config),
            rules: RULES.to_vec(),
        }
    }

    /// One line per finding, grouped by item, then the verdict.
    pub fn summary(&self) -> String {
        let width = RULES.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for item in Item::ALL {
            let _ = writeln!(out, "{item} {}", item.title());
            for f in self.findings.iter().filter(|f| f.item == item) {
                let subject = if f.subject == "config" {
                    String::new()
                } else {
                    format!("{}: ", f.subject)
                };
                let _ = writeln!(
                    out,
                    "  {} {:width$}  {subject}{}",
                    f.level.label(),
                    f.rule,
                    f.message
                );
            }
        }
        out
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Verification report: {}\n", cell(&self.config));
        let _ = writeln!(
            md,
            "Result: **{}**: {} failed, {} warnings, {} passed.\n",
            self.result.to_ascii_uppercase(),
            self.failures,
            self.warnings,
            self.findings
                .iter()
                .filter(|f| f.level == Level::Pass)
                .count()
        );
        let _ = writeln!(
            md,
            "Checked by `detour check` against the seed's policy (Part22 V-2201..V-2204, Part21 R-2102). \
             A FAIL is a violation (`detour check` exits {}); a WARN is worth a look and does not fail the check; \
             V-2204 only ever warns. Checked for {} replica(s) (`--replicas`).\n",
            exit_codes::CHECK_FAILED,
            self.replicas
        );
        for item in Item::ALL {
            let _ = writeln!(md, "## {item}: {}\n", item.title());
            let _ = writeln!(md, "| result | rule | subject | finding |");
            let _ = writeln!(md, "|---|---|---|---|");
            for f in self.findings.iter().filter(|f| f.item == item) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    f.level.label(),
                    f.rule,
                    cell(&f.subject),
                    cell(&f.message)
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Chains\n");
        let _ = writeln!(
            md,
            "As the filter walks them: the group's deployments by `order` (`[a | b]`: equal order, shuffled by weight), then each fallback group's, in order.\n"
        );
        let _ = writeln!(md, "| chain | groups | deployments |");
        let _ = writeln!(md, "|---|---|---|");
        for chain in &self.chains {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                cell(&chain.name),
                cell(&chain.groups.join(" → ")),
                cell(&chain.deployments.join(" → "))
            );
        }
        let _ = writeln!(md, "\n## Rules\n");
        let _ = writeln!(md, "| item | rule | a violation is | what it verifies |");
        let _ = writeln!(md, "|---|---|---|---|");
        for rule in &self.rules {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                rule.item,
                rule.name,
                cell(rule.severity),
                cell(rule.description)
            );
        }
        md
    }
}

/// Text made safe for one Markdown table cell (no column breaks, no line breaks, no HTML
/// a Markdown viewer would render).
pub(crate) fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Loads the config, runs the rules, prints the summary, writes the report.
pub fn run(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let outcome = config_file::read_and_load(&args.config, EnvMode::from_no_env(args.no_env), err)?;
    let loaded = match outcome {
        Outcome::Valid { loaded, .. } => loaded,
        Outcome::Invalid { errors } => {
            writeln!(out, "config invalid: {errors} errors; nothing checked")
                .map_err(stream_error("stdout"))?;
            return Ok(exit_codes::CONFIG_INVALID);
        }
    };
    let report = Report::new(
        args.config.display().to_string(),
        &loaded.config,
        args.replicas,
    );
    let path = args.report.clone().unwrap_or_else(|| match args.format {
        Format::Md => PathBuf::from("detour-check-report.md"),
        Format::Json => PathBuf::from("detour-check-report.json"),
    });
    let text = match args.format {
        Format::Md => report.markdown(),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Unexpected(format!("cannot encode the report: {e}")))?;
            json.push('\n');
            json
        }
    };
    write_file(&path, &text)?;
    out.write_all(report.summary().as_bytes())
        .map_err(stream_error("stdout"))?;
    writeln!(
        out,
        "{}: {} failed, {} warnings; report: {}",
        if report.failures > 0 {
            "check FAILED"
        } else {
            "check passed"
        },
        report.failures,
        report.warnings,
        path.display()
    )
    .map_err(stream_error("stdout"))?;
    Ok(if report.failures > 0 {
        exit_codes::CHECK_FAILED
    } else {
        exit_codes::OK
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| CliError::io_path("create", parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| CliError::io_path("write", path, e))
}
