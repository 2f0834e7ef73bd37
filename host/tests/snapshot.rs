//! The rendered bootstrap of one small config, compared as text with the file in
//! `tests/snapshots/`. After an intended change, regenerate it and review the diff:
//!
//!     DETOUR_BLESS=1 cargo test -p detour --test snapshot
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;

use std::path::Path;

use common::*;

#[test]
fn small_config_bootstrap_matches_the_snapshot() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let text = std::fs::read_to_string(tests.join("fixtures/small.yaml")).unwrap();
    let mut o = opts();
    o.source = "host/tests/fixtures/small.yaml".into();
    let rendered = render_text(&text, &o).yaml;
    let snapshot = tests.join("snapshots/small.envoy.yaml");

    if std::env::var_os("DETOUR_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&snapshot, &rendered).unwrap();
        eprintln!("note: wrote {}", snapshot.display());
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nrun DETOUR_BLESS=1 cargo test -p detour --test snapshot",
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
            "the rendered bootstrap differs from {}; {line}\nif the change is intended: DETOUR_BLESS=1 cargo test -p detour --test snapshot",
            snapshot.display()
        );
    }
}
