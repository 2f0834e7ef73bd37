//! `detour report` end to end on `tests/fixtures/events.jsonl`, a hand-written day of
//! the seed config: an Anthropic 429 storm (cooldowns, fallbacks), a gpt-5.2 outage
//! (retries, breaker, failed half-open probe, health-check recovery), four breaker trips
//! in one hour, budget alerts at 80/90/100/110 %, a tag overrun, budget fallbacks, a
//! halt and its resume.
//!
//! The three Markdown files are compared as text with `tests/snapshots/report/`. After an
//! intended change, regenerate them and review the diff:
//!
//!     DETOUR_BLESS=1 cargo test -p detour --test report
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
use detour::{exit_codes, Cli, CliError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Run {
    code: Result<ExitCode, CliError>,
    out: String,
    err: String,
}

fn report(args: &[&str]) -> Run {
    let cli = Cli::try_parse_from(
        std::iter::once("detour")
            .chain(std::iter::once("report"))
            .chain(args.iter().copied()),
    )
    .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = detour::run(cli, &mut out, &mut err);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn ok(r: &Run) {
    match &r.code {
        Ok(code) => assert_eq!(
            *code,
            ExitCode::from(exit_codes::OK),
            "{}\n{}",
            r.out,
            r.err
        ),
        Err(e) => panic!("{e}\n{}", r.err),
    }
}

/// Runs the fixture with the seed config into a fresh directory.
fn fixture_report(name: &str) -> PathBuf {
    let out = scratch_dir(name);
    let seed = repo_root().join("examples/configs/seed.yaml");
    let r = report(&[
        fixture("events.jsonl").to_str().unwrap(),
        "--config",
        seed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&r);
    assert!(r.err.is_empty(), "{}", r.err);
    assert!(
        r.out.contains(
            "73 events: 27 fallbacks, 3 recoveries, 6 breaker trips, 11 budget alerts, 1 halts"
        ),
        "{}",
        r.out
    );
    out
}

fn compare(rendered: &str, snapshot: &Path) {
    if std::env::var_os("DETOUR_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(snapshot, rendered).unwrap();
        eprintln!("note: wrote {}", snapshot.display());
        return;
    }
    let expected = std::fs::read_to_string(snapshot).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nrun DETOUR_BLESS=1 cargo test -p detour --test report",
            snapshot.display()
        )
    });
    if rendered != expected {
        let line = rendered
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || {
                    format!(
                        "lengths differ ({} vs {} lines)",
                        rendered.lines().count(),
                        expected.lines().count()
                    )
                },
                |idx| {
                    format!(
                        "first difference at line {}:\n  rendered: {:?}\n  snapshot: {:?}",
                        idx + 1,
                        rendered.lines().nth(idx).unwrap_or_default(),
                        expected.lines().nth(idx).unwrap_or_default()
                    )
                },
            );
        panic!(
            "the report differs from {}; {line}\nif the change is intended: DETOUR_BLESS=1 cargo test -p detour --test report",
            snapshot.display()
        );
    }
}

#[test]
fn markdown_evidence_matches_the_snapshots() {
    let out = fixture_report("report-snap");
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/report");
    for (file, snapshot) in [
        (
            "budget/20260302_budget_consumption.md",
            "budget_consumption.md",
        ),
        (
            "fallback/20260302_fallback_history.md",
            "fallback_history.md",
        ),
        (
            "recovery/20260302_recovery_history.md",
            "recovery_history.md",
        ),
    ] {
        let rendered = std::fs::read_to_string(out.join(file))
            .unwrap_or_else(|e| panic!("{file} was not written: {e}"));
        compare(&rendered, &snapshots.join(snapshot));
    }
}

#[test]
fn the_evidence_tells_the_story() {
    let out = fixture_report("report-story");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let budget = read("budget/20260302_budget_consumption.md");
    assert!(
        budget.contains("| total | $100.00 | month | 110 %: halted | $110.00 | at most $0.00 |")
    );
    assert!(budget.contains("| tag/Spec | $15.00 | month | 100 %: stopped |"));
    // Configured limits without an alert are listed too.
    assert!(budget
        .contains("| tag/Verify | $5.00 | month | below 80 % (no alert) | - | more than $1.00 |"));
    assert!(budget.contains("| Spec | high-precision | claude-sonnet |"));
    assert!(budget.contains("| admin | 25 min 00 s |"));
    let fallback = read("fallback/20260302_fallback_history.md");
    assert!(fallback.contains(
        "| gpt-5.2 (implementation) | 2026-03-02 09:10:14 | 2026-03-02 09:15:00 | recovery (an active health check) | 4 min 46 s | 4 (failure: 4) | 0 | 2 |"
    ));
    assert!(fallback.contains("| HTTP 429 five or more times in a minute | 1 |"));
    assert!(fallback.contains("| more than 3 breaker trips per hour | 1 |"));
    let recovery = read("recovery/20260302_recovery_history.md");
    assert!(recovery.contains("| 2026-03-02 10:08:10 | claude-opus (claude-opus-4-5, high-precision) | a real request after the cooldown (half-open probe) | 2026-03-02 10:06:00 | 2 min 10 s | 2 | 0 |"));
    assert!(recovery.contains("| local (llama3.1:8b, local) | 2026-03-02 10:41:00 | 1 | 0 |"));
}

#[test]
fn the_html_page_is_self_contained_with_its_charts_and_thresholds() {
    let out = fixture_report("report-html");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Self-contained: no script, no external resource.
    for forbidden in [
        "<script", "src=", "href=", "http://", "https://", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "the page contains {forbidden:?}");
    }
    // 4 spend charts (total, opus, gpt-5.2, Spec), fallbacks, breaker trips, timeline.
    assert_eq!(html.matches("<svg ").count(), 7);
    assert_eq!(html.matches("</svg>").count(), 7);
    assert_eq!(html.matches("<polyline class=\"spend\"").count(), 4);
    // Threshold lines: budget limits, the halt, the breaker's 3 per hour.
    assert_eq!(html.matches("data-threshold=\"100 % limit\"").count(), 4);
    assert_eq!(html.matches("data-threshold=\"110 % halt\"").count(), 1);
    assert_eq!(html.matches("data-threshold=\"3 per hour\"").count(), 1);
    // No request events in the fixture: no rate chart, and the page says why.
    assert!(!html.contains("data-threshold=\"5 % warn\""));
    assert!(html.contains("needs the number of requests"));
    // Fallback bars by reason, breaker bars, periods and recovery marks.
    assert!(html.matches("<rect class=\"bar\"").count() >= 8);
    assert_eq!(html.matches("<rect class=\"period\"").count(), 13);
    assert!(html.contains("<title>recovered 2026-03-02 09:15:00 (an active health check)</title>"));
}

#[test]
fn request_events_give_a_fallback_rate_with_the_5_and_10_percent_lines() {
    let dir = scratch_dir("report-rate");
    let mut text = String::new();
    // 09:00: 40 requests, 1 fell back (2.5 %); 10:00: 20 requests, 3 fell back (15 %).
    let base = 1_772_442_000_000u64;
    for i in 0..40u64 {
        let fallbacks = u32::from(i == 0);
        text.push_str(&format!(
            "{{\"event\":\"request\",\"ts\":{},\"fallbacks\":{fallbacks}}}\n",
            base + i * 1000
        ));
    }
    for i in 0..20u64 {
        let fallbacks = u32::from(i < 3);
        text.push_str(&format!(
            "{{\"event\":\"request\",\"ts\":{},\"fallbacks\":{fallbacks}}}\n",
            base + 3_600_000 + i * 1000
        ));
    }
    text.push_str(&format!(
        "{{\"event\":\"fallback\",\"ts\":{base},\"group\":\"g\",\"stage\":null,\"from\":\"a\",\"to\":\"b\",\"reason\":\"failure\"}}\n"
    ));
    let events = dir.join("requests.jsonl");
    std::fs::write(&events, text).unwrap();
    let out = dir.join("out");
    let r = report(&[events.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    ok(&r);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("data-threshold=\"5 % warn\"").count(), 1);
    assert_eq!(html.matches("data-threshold=\"10 % alert\"").count(), 1);
    assert!(html.contains("3 of 20 requests (15.0 %)"));
    let fallback =
        std::fs::read_to_string(out.join("fallback/20260302_fallback_history.md")).unwrap();
    assert!(
        fallback.contains("| fallback rate above 5 % (alert above 10 %) | 1 |"),
        "{fallback}"
    );
    assert!(fallback.contains("| 40 | 2.5 % |"), "{fallback}");
}

#[test]
fn envoy_logs_are_read_and_bad_lines_counted() {
    let dir = scratch_dir("report-envoy");
    let r = report(&[
        fixture("envoy.log").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--date",
        "20260303",
    ]);
    ok(&r);
    assert!(
        r.out
            .contains("4 events: 1 fallbacks, 1 recoveries, 1 breaker trips"),
        "{}",
        r.out
    );
    assert!(
        r.err.contains("warning: 1 malformed lines skipped"),
        "{}",
        r.err
    );
    assert!(r.err.contains("envoy.log:4: not JSON"), "{}", r.err);
    let recovery =
        std::fs::read_to_string(dir.join("recovery/20260303_recovery_history.md")).unwrap();
    assert!(recovery.starts_with("# Recovery history: 2026-03-03\n"));
    assert!(
        recovery.contains("| envoy.log | 7 | 4 | 2 | 1 |"),
        "{recovery}"
    );
    assert!(recovery.contains("- envoy.log:4: not JSON"), "{recovery}");
}

#[test]
fn several_files_are_merged_in_time_order() {
    let dir = scratch_dir("report-merge");
    let r = report(&[
        fixture("envoy.log").to_str().unwrap(),
        fixture("events.jsonl").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    ok(&r);
    assert!(r.out.contains("77 events"), "{}", r.out);
    let fallback =
        std::fs::read_to_string(dir.join("fallback/20260302_fallback_history.md")).unwrap();
    assert!(fallback.contains("- Input: 77 events from envoy.log, events.jsonl, 2026-03-02 09:00:12 to 2026-03-02 13:52:00"));
}

#[test]
fn garbage_never_panics() {
    let dir = scratch_dir("report-garbage");
    let mut bytes = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..20_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        bytes.push((x >> 16) as u8);
    }
    bytes.extend_from_slice(b"\n{\"event\":\"budget_alert\",\"ts\":1,\"scope\":\"total\",\"period_start\":0,\"percent\":4294967296,\"spent\":\"$1\",\"limit\":\"$1\"}\n");
    bytes.extend_from_slice(b"{\"event\":\"resume\",\"ts\":1,\"by\":\"x\"}\n");
    bytes.extend_from_slice(b"{\"event\":\"fallback\",\"ts\":18446744073709551615,\"group\":\"<g>\",\"stage\":null,\"from\":\"<i>a|b\",\"to\":\"<script>\",\"reason\":\"failure\"}\n");
    let events = dir.join("garbage.bin");
    std::fs::write(&events, bytes).unwrap();
    let out = dir.join("out");
    let r = report(&[
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--date",
        "20260101",
    ]);
    ok(&r);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("<i>"));
    assert!(html.contains("&lt;i&gt;a|b"));
    let fallback =
        std::fs::read_to_string(out.join("fallback/20260101_fallback_history.md")).unwrap();
    assert!(
        fallback.contains("| &lt;i&gt;a\\|b | &lt;script&gt; | failure |"),
        "{fallback}"
    );
}

#[test]
fn usage_and_file_errors() {
    let dir = scratch_dir("report-errors");
    let events = fixture("events.jsonl");
    let r = report(&[
        events.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--date",
        "2026-03-02",
    ]);
    assert_eq!(r.code.unwrap_err().exit_status(), exit_codes::USAGE);
    let missing = dir.join("missing.jsonl");
    let r = report(&[missing.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_eq!(r.code.unwrap_err().exit_status(), exit_codes::IO);
    let bad_config = dir.join("bad.yaml");
    std::fs::write(&bad_config, "model_list: 3\n").unwrap();
    let r = report(&[
        events.to_str().unwrap(),
        "--config",
        bad_config.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code.unwrap(), ExitCode::from(exit_codes::CONFIG_INVALID));
    // The binary: no events file is a usage error.
    let output = Command::new(env!("CARGO_BIN_EXE_detour"))
        .args(["report"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit_codes::USAGE)));
}
