//! Rendered bootstraps against the real Envoy binary named by `ENVOY_BIN`
//! (scripts/test.sh sets it; without it these tests print a note and pass).
//!
//! The real filter is built later in the suite than `cargo test` runs, and Envoy's
//! `--mode validate` does load and start the wasm VM, so these use a stand-in module
//! ([`common::stub_proxy_wasm`]) that exports the proxy-wasm ABI and does nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use detour::cmd::envoy::RenderOptions;

/// `ENVOY_BIN`, checked: set but unusable fails the test rather than skipping it.
fn envoy_bin() -> Option<PathBuf> {
    let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) else {
        eprintln!(
            "note: ENVOY_BIN is not set; skipping the real-Envoy check (scripts/test.sh sets it)"
        );
        return None;
    };
    let bin = PathBuf::from(bin);
    assert!(bin.is_file(), "ENVOY_BIN={} is not a file", bin.display());
    Some(bin)
}

fn stub_wasm(dir: &Path) -> String {
    let path = dir.join("stub.wasm");
    std::fs::write(&path, stub_proxy_wasm()).unwrap();
    path.to_str().unwrap().to_string()
}

fn configs() -> Vec<(String, String)> {
    let mut configs: Vec<(String, String)> = [
        ("http", HTTP_ONLY),
        ("https", HTTPS_ENV_KEYS),
        ("ipv6", IPV6),
        ("shared-authority", SHARED_AUTHORITY),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.yaml");
    configs.push(("fixture".into(), std::fs::read_to_string(fixture).unwrap()));
    if let Ok(entries) = std::fs::read_dir(repo_root().join("examples/configs")) {
        for entry in entries {
            let path = entry.unwrap().path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                configs.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    configs
}

#[test]
fn rendered_bootstraps_pass_envoy_validate() {
    let Some(envoy) = envoy_bin() else { return };
    let dir = scratch_dir("envoy-validate");
    let mut o = opts();
    o.wasm = stub_wasm(&dir);
    for (name, text) in configs() {
        let path = dir.join(format!("{name}.envoy.yaml"));
        std::fs::write(&path, render_text(&text, &o).yaml).unwrap();
        let output = Command::new(&envoy)
            .args(["--mode", "validate", "-l", "warning", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && log.contains("OK"),
            "envoy --mode validate rejected {name} ({}):\n{log}",
            path.display()
        );
        assert!(
            !log.to_lowercase().contains("deprecated"),
            "{name}: Envoy warns about deprecated fields:\n{log}"
        );
    }
}

#[test]
fn envoy_validate_catches_a_broken_bootstrap() {
    // Guards the test above: validate mode must actually fail on a bad file.
    let Some(envoy) = envoy_bin() else { return };
    let dir = scratch_dir("envoy-validate-bad");
    let mut o = opts();
    o.wasm = dir.join("missing.wasm").to_str().unwrap().to_string();
    let path = dir.join("bad.envoy.yaml");
    std::fs::write(&path, render_text(HTTP_ONLY, &o).yaml).unwrap();
    let status = Command::new(&envoy)
        .args(["--mode", "validate", "-l", "critical", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "a missing wasm file must fail validation"
    );
}

fn http_get_json(address: &str, path: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("admin {path}: {e}"))
}

/// Decodes an HTTP/1.1 chunked body (Envoy's admin streams large responses). Works on
/// bytes: a chunk boundary may fall inside a UTF-8 character.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_line = std::str::from_utf8(&rest[..line_end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        let data = &rest[line_end + 2..];
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap();
    }
}

/// Envoy parses YAML with yaml-cpp, not the libyaml that wrote it: run Envoy for real
/// and read the configuration back from its admin `config_dump`.
#[test]
fn envoy_sees_the_embedded_configuration_byte_for_byte() {
    let Some(envoy) = envoy_bin() else { return };
    let variants = [
        ("plain", HTTPS_ENV_KEYS.to_string()),
        (
            "crlf-unicode-no-final-newline",
            format!("# détour → 路由 🚦 \"q\" 'q' \\\n{}", HTTP_ONLY.trim_end())
                .replace('\n', "\r\n"),
        ),
        (
            "indented-trailing-space-blank-lines",
            format!(
                "\n{}\n\n",
                HTTP_ONLY
                    .lines()
                    .map(|l| format!("  {l}  \n"))
                    .collect::<String>()
            ),
        ),
        ("markers-and-tab", format!("---\n#\tcomment\n{IPV6}...\n")),
    ];
    for (name, text) in variants {
        let dir = scratch_dir(&format!("envoy-live-{name}"));
        let o = RenderOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            wasm: stub_wasm(&dir),
            ..opts()
        };
        let rendered = render_text(&text, &o);
        let bootstrap = dir.join("envoy.yaml");
        std::fs::write(&bootstrap, &rendered.yaml).unwrap();
        let (process, admin) = start_envoy(&envoy, &dir, &bootstrap, &[]);

        let dump = http_get_json(&admin, "/config_dump");
        let configs = dump["configs"].as_array().unwrap();
        let listeners = configs
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("ListenersConfigDump"))
            })
            .unwrap();
        let value = listeners.pointer(
            "/static_listeners/0/listener/filter_chains/0/filters/0/typed_config/http_filters/0/typed_config/config/configuration/value",
        );
        assert_eq!(
            value.and_then(|v| v.as_str()),
            Some(text.as_str()),
            "{name}: Envoy's view of the embedded config differs\n{}",
            process.log_text()
        );

        let clusters = configs
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("ClustersConfigDump"))
            })
            .unwrap();
        let mut names: Vec<&str> = clusters["static_clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cluster"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, rendered.clusters, "{name}");
        drop(process);
    }
}
