//! `detour serve` as a process, with purpose-built guests (`tests/guests/*.wat`):
//! a guest cannot take the host down, and the hostcalls detour relies on behave as in
//! Envoy (checked against the real Envoy named by `ENVOY_BIN`, when it is set).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests that wait for real processes need a clock and a sleep"
)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn guest(name: &str) -> PathBuf {
    repo_root().join("tests/guests").join(name)
}

/// A config whose one upstream nobody listens on: these guests answer locally.
const CONFIG: &str = "model_list:\n  - model_name: g\n    litellm_params: {model: openai/m, api_base: \"http://127.0.0.1:9/v1\", api_key: sk-inline}\n";

/// Starts `detour serve` (two workers unless `extra` says otherwise) and returns it with
/// its listener address.
fn serve(dir: &Path, wasm: &Path, extra: &[&str]) -> (Proc, String) {
    serve_config(dir, wasm, CONFIG, extra)
}

/// [`serve`] with a config of its own.
fn serve_config(dir: &Path, wasm: &Path, config_text: &str, extra: &[&str]) -> (Proc, String) {
    let (mut proc, listen) = start_serve(dir, "serve", wasm, config_text, extra);
    let Some(listen) = listen else {
        let status = proc.child.wait().unwrap();
        panic!("detour serve exited with {status}:\n{}", proc.log_text());
    };
    (proc, listen)
}

/// `GET /` on a fresh connection, with `x-probe: PROBE` if given: (status, body).
fn get(address: &str, probe: Option<&str>) -> (u16, String) {
    let probe = probe
        .map(|p| format!("x-probe: {p}\r\n"))
        .unwrap_or_default();
    http_get(address, "/", &probe)
}

#[test]
fn a_trapping_guest_fails_one_request_and_its_worker_gets_a_fresh_vm() {
    let dir = scratch_dir("serve-trap");
    let (proc, address) = serve(&dir, &guest("misbehave.wat"), &[]);
    // Connections go to the workers in turn: 0, 1, 0, 1, …
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into())); // worker 0
    assert_eq!(get(&address, Some("trap")).0, 503); // worker 1 traps
    assert_eq!(get(&address, None), (200, "requests on this VM: 2".into())); // worker 0 untouched
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into())); // worker 1: fresh VM
    let log = proc.log_text();
    assert!(
        log.contains("failed") && log.contains("started a fresh VM"),
        "{log}"
    );
}

#[test]
fn a_runaway_guest_is_stopped_and_the_host_keeps_serving() {
    let dir = scratch_dir("serve-loop");
    let (_proc, address) = serve(
        &dir,
        &guest("misbehave.wat"),
        &["--callback-timeout-ms", "200"],
    );
    let started = Instant::now();
    assert_eq!(get(&address, Some("loop")).0, 503); // worker 0 spins, is stopped
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into())); // worker 1
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into())); // worker 0, fresh
}

#[test]
fn a_guest_growing_past_its_memory_cap_fails_alone() {
    let dir = scratch_dir("serve-memory");
    let (_proc, address) = serve(&dir, &guest("misbehave.wat"), &["--vm-memory-mib", "64"]);
    assert_eq!(get(&address, Some("memory")).0, 503);
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into()));
    assert_eq!(get(&address, None), (200, "requests on this VM: 1".into()));
}

#[test]
fn serve_refuses_a_module_that_is_not_proxy_wasm() {
    let dir = scratch_dir("serve-bad-module");
    let wasm = dir.join("bad.wat");
    std::fs::write(&wasm, "(module)").unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_detour"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--wasm")
        .arg(&wasm)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(i32::from(detour::exit_codes::SERVE_FAILED))
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("proxy_abi_version"));
}

#[test]
fn serve_refuses_a_non_loopback_admin_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_detour"))
        .args(["serve", "--config", "x.yaml", "--admin", "0.0.0.0:9902"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(i32::from(detour::exit_codes::USAGE))
    );
}

// ---- conformance with Envoy ---------------------------------------------------------

fn envoy_bin() -> Option<PathBuf> {
    let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) else {
        eprintln!("note: ENVOY_BIN is not set; comparing with detour serve's expectations only");
        return None;
    };
    Some(PathBuf::from(bin))
}

/// Runs the probe guest in real Envoy (one worker) and returns its answer.
fn envoy_answer(envoy: &Path, dir: &Path, wasm: &Path) -> (u16, String) {
    let (_envoy, listen) = envoy_start(envoy, dir, wasm, CONFIG);
    get(&listen, None)
}

/// Starts real Envoy (one worker) on the bootstrap `detour envoy` renders for
/// `config` with `wasm` as the filter; returns it with its listener address.
fn envoy_start(envoy: &Path, dir: &Path, wasm: &Path, config: &str) -> (Proc, String) {
    let mut o = opts();
    o.wasm = wasm.to_str().unwrap().to_string();
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.admin = "127.0.0.1:0".parse().unwrap();
    let bootstrap = dir.join("envoy.yaml");
    std::fs::write(&bootstrap, render_text(config, &o).yaml).unwrap();
    let (mut proc, admin) = start_envoy(envoy, dir, &bootstrap, &["--use-dynamic-base-id"]);
    let listen = proc.wait_until(
        "envoy's listener",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            // Text form: `detour::127.0.0.1:PORT` once the listener is up.
            let (status, body) = http_get(&admin, "/listeners", "");
            let bound = body
                .split_once("::")
                .and_then(|(_, a)| a.split_whitespace().next())
                .map(str::to_string)
                .filter(|a| !a.ends_with(":0") && a.starts_with("127.0.0.1:"));
            bound.filter(|_| status == 200)
        },
    );
    match listen {
        Ok(listen) => (proc, listen),
        Err(status) => panic!("envoy exited with {status}:\n{}", proc.log_text()),
    }
}

/// Shared data through the ABI: a missing key, CAS 0, a stale CAS, the process-wide
/// counter, a CAS on a missing key, "remove" as an empty value. Both hosts must answer
/// exactly as cpp-host's semantics say.
#[test]
fn shared_data_cas_semantics_are_the_same_on_serve_and_envoy() {
    const EXPECTED: &str = "cas-probe 1001800100011";
    let dir = scratch_dir("conformance-cas");
    let wat = std::fs::read_to_string(guest("cas_probe.wat")).unwrap();
    let wasm = dir.join("cas_probe.wasm");
    std::fs::write(&wasm, wat::parse_str(&wat).unwrap()).unwrap();

    let (_serve, address) = serve(&dir, &wasm, &["--workers", "1"]);
    assert_eq!(
        get(&address, None),
        (200, EXPECTED.to_string()),
        "detour serve"
    );

    if let Some(envoy) = envoy_bin() {
        assert_eq!(
            envoy_answer(&envoy, &dir, &wasm),
            (200, EXPECTED.to_string()),
            "Envoy"
        );
    }
}

/// SIGHUP starts fresh VMs from the re-read config and module; shared data survives.
#[test]
fn sighup_reloads_the_filter_and_keeps_shared_data() {
    let dir = scratch_dir("serve-sighup");
    let (proc, address) = serve(&dir, &guest("cas_probe.wat"), &["--workers", "1"]);
    assert_eq!(get(&address, None), (200, "cas-probe 1001800100011".into()));
    let status = Command::new("kill")
        .args(["-HUP", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proc.log_text().contains("reload done") {
        assert!(Instant::now() < deadline, "no reload:\n{}", proc.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new VM (the probe runs its checks again) that finds the key already there.
    let (status, body) = get(&address, None);
    assert_eq!(status, 200);
    assert!(body.starts_with("cas-probe 0"), "{body}");
}

/// An upstream that answers 200 with `content-length: 100`, sends 10 bytes and closes:
/// a reset in the middle of the body.
fn spawn_mid_body_reset() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

/// `dispatch_http_call`'s failure shapes: an unknown cluster is refused at once; a
/// refused connection and a timeout come back as synthetic 503/504 answers with three
/// headers; a reset in the middle of the body comes back with no headers and no body.
/// Both hosts must give exactly the same answers.
#[test]
fn dispatch_failure_shapes_are_the_same_on_serve_and_envoy() {
    use detour_core::cluster::{cluster_name, Scheme};
    let dir = scratch_dir("conformance-dispatch");
    let wat = std::fs::read_to_string(guest("dispatch_probe.wat")).unwrap();
    let wasm = dir.join("dispatch_probe.wasm");
    std::fs::write(&wasm, wat::parse_str(&wat).unwrap()).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Accepts (the kernel does) and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let reset = spawn_mid_body_reset();
    let mut config = String::from("model_list:\n");
    for (group, port) in [("refused", closed), ("hole", hole_port), ("reset", reset)] {
        config.push_str(&format!(
            "  - model_name: {group}\n    litellm_params: {{model: openai/m, api_base: \"http://127.0.0.1:{port}/v1\", api_key: sk-inline}}\n"
        ));
    }
    let cluster = |port| cluster_name(Scheme::Http, "127.0.0.1", port);
    let expected = [
        ("no-such-cluster".to_string(), "dispatch=2".to_string()),
        (
            cluster(closed),
            "3;503;upstream connect error or disconnect/reset before headers. reset reason: remote connection failure".into(),
        ),
        (cluster(hole_port), "3;504;upstream request timeout".into()),
        (cluster(reset), "0;;".into()),
    ];
    let ask = |address: &str| -> Vec<String> {
        expected
            .iter()
            .map(|(cluster, _)| {
                let (status, body) =
                    http_get(address, "/", &format!("x-probe-cluster: {cluster}\r\n"));
                assert_eq!(status, 200, "{body}");
                body
            })
            .collect()
    };
    let want: Vec<String> = expected.iter().map(|(_, body)| body.clone()).collect();

    let (_serve, address) = serve_config(&dir, &wasm, &config, &["--workers", "1"]);
    assert_eq!(ask(&address), want, "detour serve");

    if let Some(envoy) = envoy_bin() {
        let (_envoy, listen) = envoy_start(&envoy, &dir, &wasm, &config);
        assert_eq!(ask(&listen), want, "Envoy");
    }
    drop(hole);
}

/// Shared queues: an enqueue (from any worker) notifies the registrant's root context
/// with `proxy_on_queue_ready` on the registrant's worker.
#[test]
fn an_enqueued_item_reaches_the_registrant_through_on_queue_ready() {
    let dir = scratch_dir("serve-queue");
    let (proc, address) = serve(&dir, &guest("queue_probe.wat"), &[]);
    assert_eq!(get(&address, None), (200, "queued".into()));
    assert_eq!(get(&address, None), (200, "queued".into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc.log_text().matches("queue-ready: item").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no notification:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
