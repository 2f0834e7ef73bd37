//! `detour check` end to end: the seed config passes (with warnings); each rule a loaded
//! config can break fails with its own FAIL line and exit status 6; rules the loader
//! already enforces (fallback targets, duplicate fallbacks) make the config invalid
//! (exit 3). The rules themselves are unit-tested in `src/cmd/check/rules.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;
use common::*;
use detour::{exit_codes, Cli};

fn seed_path() -> PathBuf {
    repo_root().join("examples/configs/seed.yaml")
}

fn seed_text() -> String {
    std::fs::read_to_string(seed_path()).unwrap()
}

struct Run {
    code: ExitCode,
    out: String,
    err: String,
    report: String,
}

impl Run {
    /// The first line of the output that starts with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in\n{}", self.out))
    }
}

/// `detour check CONFIG --no-env --report DIR/report.<ext> [extra…]`.
fn check(dir: &Path, config: &Path, extra: &[&str]) -> Run {
    let json = extra.contains(&"json");
    let report = dir.join(if json { "report.json" } else { "report.md" });
    let mut args = vec![
        "detour".to_string(),
        "check".into(),
        config.to_str().unwrap().into(),
        "--no-env".into(),
        "--report".into(),
        report.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(&args).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = detour::run(cli, &mut out, &mut err).unwrap();
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
        report: std::fs::read_to_string(&report).unwrap_or_default(),
    }
}

/// The seed config with `from` replaced by `to`, written to `dir/name`.
fn broken(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = seed_text();
    for (from, to) in edits {
        assert!(text.contains(from), "the seed has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_seed_config_passes_with_warnings_and_writes_the_report() {
    let dir = scratch_dir("check-seed");
    let r = check(&dir, &seed_path(), &[]);
    assert_eq!(
        r.code,
        ExitCode::from(exit_codes::OK),
        "{}\n{}",
        r.out,
        r.err
    );
    assert!(r.out.contains("check passed: 0 failed"), "{}", r.out);
    for item in ["V-2201", "V-2202", "V-2203", "V-2204"] {
        assert!(r.out.contains(item), "{item} missing:\n{}", r.out);
        assert!(r.report.contains(&format!("## {item}: ")), "{item} missing");
    }
    assert!(r.out.contains("  WARN model-budgets"), "{}", r.out);
    assert!(r.out.contains("  PASS seed-order"), "{}", r.out);
    assert!(!r.out.contains("FAIL"), "{}", r.out);
    // The report lists the findings, the chains and the rules.
    assert!(r.report.starts_with("# Verification report: "));
    assert!(r.report.contains("Result: **PASS**"));
    assert!(r.report.contains("| high-precision's chain | high-precision → claude-sonnet → gemini-3-pro → gemini-flash → local |"));
    assert!(r.report.contains("| V-2204 | health-checks | WARN |"));
}

#[test]
fn json_report() {
    let dir = scratch_dir("check-json");
    let r = check(&dir, &seed_path(), &["--format", "json"]);
    assert_eq!(r.code, ExitCode::from(exit_codes::OK));
    let json: serde_json::Value = serde_json::from_str(&r.report).unwrap();
    assert_eq!(json["result"], "pass");
    assert_eq!(json["failures"], 0);
    let findings = json["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .any(|f| f["item"] == "V-2202" && f["rule"] == "model-budgets" && f["level"] == "warn"));
    assert_eq!(json["rules"].as_array().unwrap().len(), 21);
    assert_eq!(json["replicas"], 1);
}

#[test]
fn replicas_without_fleet_mode_warn() {
    let dir = scratch_dir("check-replicas");
    // One replica (the default): the per-process budgets are the whole budgets.
    let r = check(&dir, &seed_path(), &[]);
    assert!(r.out.contains("  PASS fleet"), "{}", r.out);
    assert!(!r.out.contains("  WARN fleet"), "{}", r.out);

    let r = check(&dir, &seed_path(), &["--replicas", "3"]);
    assert_eq!(r.code, ExitCode::from(exit_codes::OK), "{}", r.out);
    let line = r.line("  WARN fleet");
    assert!(
        line.contains(
            "detour.fleet: 3 replicas with per-process budgets spend up to 3× each budget: set detour.fleet (see "
        ),
        "{line}"
    );
    assert!(r
        .report
        .contains("| WARN | fleet | detour.fleet | 3 replicas with per-process budgets"));
    assert!(r.report.contains("Checked for 3 replica(s)"));

    let r = check(&dir, &seed_path(), &["--replicas", "3", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&r.report).unwrap();
    assert_eq!(json["replicas"], 3);
    assert!(json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "fleet" && f["level"] == "warn"));

    // Zero replicas is a usage error.
    let args = ["detour", "check", "config.yaml", "--replicas", "0"];
    assert!(Cli::try_parse_from(args).is_err());
}

#[test]
fn fleet_mode_is_reported_with_the_state_host_only() {
    let dir = scratch_dir("check-fleet");
    let config = broken(
        &dir,
        "fleet.yaml",
        &[(
            "detour:\n",
            "detour:\n  fleet:\n    state: http://detour-state.detour.svc.cluster.local:8081\n    redis: redis://:hunter2@redis.internal:6379/0\n",
        )],
    );
    for extra in [&[][..], &["--replicas", "3"][..]] {
        let r = check(&dir, &config, extra);
        assert_eq!(
            r.code,
            ExitCode::from(exit_codes::OK),
            "{}\n{}",
            r.out,
            r.err
        );
        let line = r.line("  PASS fleet ");
        assert!(
            line.ends_with(" fleet mode: every replica shares the budgets and RPM/TPM through detour state at detour-state.detour.svc.cluster.local:8081"),
            "{line}"
        );
        assert!(!r.out.contains("WARN fleet"), "{}", r.out);
        for text in [&r.out, &r.err, &r.report] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("redis.internal"), "{text}");
        }
    }
}

/// A broken config: its file name, the edits to the seed, the rule that must fail.
type Broken = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

/// Each broken config.
fn broken_configs() -> Vec<Broken> {
    vec![
        (
            // V-2201 (a): a seed stage tag routes nowhere.
            "unmapped-tag.yaml",
            vec![
                ("    Operate: economy\n", ""),
                (", Operate: 5}", "}"),
                ("      Operate: local\n", ""),
            ],
            "stage-tags",
        ),
        (
            // V-2201: chores share the high-precision group.
            "shared-group.yaml",
            vec![("    Verify: economy\n", "    Verify: high-precision\n")],
            "tier-conflict",
        ),
        (
            // V-2201 (b): economy falls back to high-precision's opus.
            "economy-to-opus.yaml",
            vec![("- economy: [local]", "- economy: [high-precision, local]")],
            "economy-models",
        ),
        (
            // V-2201 (b'): economy falls back to a dearer model.
            "economy-to-pro.yaml",
            vec![("- economy: [local]", "- economy: [gemini-3-pro, local]")],
            "economy-price",
        ),
        (
            // V-2201 (c): implementation's chain has no last resort.
            "no-last-resort.yaml",
            vec![(
                "- implementation: [claude-sonnet, gemini-3-pro, gemini-flash, local]",
                "- implementation: [claude-sonnet, gemini-3-pro, gemini-flash]",
            )],
            "last-resort",
        ),
        (
            // V-2202: no budget at all.
            "no-budgets.yaml",
            vec![(
                "    total: 100            # halts at 110 % (halt_at: 110 is the total's default)\n",
                "",
            )],
            "total-halt",
        ),
        (
            // V-2202: the total never halts.
            "no-halt.yaml",
            vec![("    total: 100 ", "    halt_at: false\n    total: 100 ")],
            "total-halt",
        ),
        (
            // V-2203: the high-precision chain goes backwards.
            "backwards.yaml",
            vec![(
                "- high-precision: [claude-sonnet, gemini-3-pro,",
                "- high-precision: [gemini-3-pro, claude-sonnet,",
            )],
            "seed-order",
        ),
    ]
}

#[test]
fn each_broken_rule_fails_with_its_own_line_and_exit_6() {
    let dir = scratch_dir("check-broken");
    for (name, edits, rule) in broken_configs() {
        let config = broken(&dir, name, &edits);
        let r = check(&dir, &config, &[]);
        assert_eq!(
            r.code,
            ExitCode::from(exit_codes::CHECK_FAILED),
            "{name}: {}\n{}",
            r.out,
            r.err
        );
        let fail_line = format!("  FAIL {rule}");
        assert!(
            r.out.contains(&fail_line),
            "{name}: no {fail_line:?} in\n{}",
            r.out
        );
        assert!(r.out.contains("check FAILED"), "{name}");
        assert!(r.report.contains("Result: **FAIL**"), "{name}");
        assert!(r.report.contains(&format!("| FAIL | {rule} |")), "{name}");
    }
}

#[test]
fn no_budget_at_all_fails_coverage_too() {
    let dir = scratch_dir("check-nobudget");
    let text = seed_text();
    let start = text.find("  budgets:\n").unwrap();
    let end = text.find("  # Status, halt").unwrap();
    let config = dir.join("none.yaml");
    std::fs::write(&config, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let r = check(&dir, &config, &[]);
    assert_eq!(r.code, ExitCode::from(exit_codes::CHECK_FAILED));
    assert!(r.out.contains("  FAIL budget-coverage"), "{}", r.out);
    assert!(r.out.contains("  FAIL total-halt"), "{}", r.out);
}

#[test]
fn v2204_problems_only_warn() {
    let dir = scratch_dir("check-v2204");
    let config = broken(
        &dir,
        "no-recovery.yaml",
        &[
            (
                "  cooldown_time: 30 ",
                "  disable_cooldowns: true\n  cooldown_time: 30 ",
            ),
            ("detour:\n", "detour:\n  health_checks: {enabled: false}\n"),
        ],
    );
    let r = check(&dir, &config, &[]);
    assert_eq!(r.code, ExitCode::from(exit_codes::OK), "{}", r.out);
    assert!(r.out.contains("  WARN cooldowns"), "{}", r.out);
    assert!(r.out.contains("  WARN health-checks"), "{}", r.out);
}

#[test]
fn what_the_loader_refuses_is_an_invalid_config() {
    // fallback-targets: an unknown group, the group itself, a group twice. The loader
    // rejects all three, so `check` never sees them: exit 3 and no report.
    let dir = scratch_dir("check-invalid");
    for (name, edit) in [
        ("ghost.yaml", "- economy: [ghost, local]"),
        ("self.yaml", "- economy: [economy, local]"),
        ("twice.yaml", "- economy: [local, local]"),
    ] {
        let config = broken(&dir, name, &[("- economy: [local]", edit)]);
        let r = check(&dir, &config, &[]);
        assert_eq!(r.code, ExitCode::from(exit_codes::CONFIG_INVALID), "{name}");
        assert!(
            r.err.contains("error: router_settings.fallbacks"),
            "{name}: {}",
            r.err
        );
        assert!(r.out.contains("nothing checked"));
        assert!(r.report.is_empty(), "{name}: a report was written");
    }
}

#[test]
fn binary_exit_statuses_and_the_default_report_path() {
    let dir = scratch_dir("check-bin");
    let seed = seed_path();
    let (name, edits, _) = broken_configs().remove(2);
    let bad = broken(&dir, name, &edits);
    let invalid = broken(
        &dir,
        "invalid.yaml",
        &[("- economy: [local]", "- economy: [ghost]")],
    );
    let missing = dir.join("missing.yaml");
    let cases: [(&Path, u8); 4] = [
        (&seed, exit_codes::OK),
        (&bad, exit_codes::CHECK_FAILED),
        (&invalid, exit_codes::CONFIG_INVALID),
        (&missing, exit_codes::IO),
    ];
    for (config, status) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_detour"))
            .args(["check", config.to_str().unwrap(), "--no-env"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(i32::from(status)),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Without --report the report lands in the working directory.
    let report = std::fs::read_to_string(dir.join("detour-check-report.md")).unwrap();
    assert!(report.contains("# Verification report: "));
}
