//! Architecture invariants of `detour-host`, checked as tests.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should fail the test loudly"
)]

use std::path::Path;

/// The ABI layer knows nothing about HTTP servers or async runtimes: no hyper, no
/// tokio (and nothing that would bring them) among its dependencies.
#[test]
fn the_runtime_depends_on_no_http_server_or_async_runtime() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut section = "";
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section.contains("dependencies") {
            for banned in [
                "hyper",
                "tokio",
                "http",
                "h2",
                "reqwest",
                "axum",
                "async-std",
            ] {
                let name = line.split(['=', ' ']).next().unwrap_or("");
                assert!(
                    name != banned && !name.starts_with(&format!("{banned}-")),
                    "host/runtime must not depend on {banned} ({line})"
                );
            }
        }
    }
}
