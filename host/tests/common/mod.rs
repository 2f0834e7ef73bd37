//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(
    dead_code,
    unreachable_pub,
    reason = "a module of each test binary; each uses a different subset of the helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use detour::cmd::envoy::{render, RenderOptions, Rendered};
use serde_yaml::Value;

/// The repository root (host/..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("detour-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A process a test started (`detour`, Envoy); killed by its PID and reaped when dropped.
pub struct Proc {
    pub child: Child,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` every `every` until it gives a value; `Err` with the exit status if
    /// the process exits first. Panics, with the log, when `limit` passes first.
    #[allow(
        clippy::disallowed_methods,
        reason = "a test waiting for a real process: it needs a clock and a sleep"
    )]
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        every: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Result<T, ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = ready() {
                return Ok(value);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(every);
        }
    }
}

/// Runs `detour <args> --ready-file DIR/NAME.ready.json` (stderr to `DIR/NAME.log`):
/// the process with the ready file's JSON, or the process (exited) with `None`.
pub fn start_detour(dir: &Path, name: &str, args: &[&str]) -> (Proc, Option<serde_json::Value>) {
    let ready = dir.join(format!("{name}.ready.json"));
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_detour"))
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc { child, log };
    let value = proc
        .wait_until(
            name,
            Duration::from_secs(60),
            Duration::from_millis(20),
            || {
                let text = std::fs::read_to_string(&ready).ok()?;
                serde_json::from_str(&text).ok()
            },
        )
        .ok();
    (proc, value)
}

/// `detour serve` on `wasm` and `config_text` (written to `DIR/NAME.yaml`), on free
/// 127.0.0.1 ports, with two workers unless `extra` says otherwise: the process with its
/// listener address, or the process (exited) with `None`.
pub fn start_serve(
    dir: &Path,
    name: &str,
    wasm: &Path,
    config_text: &str,
    extra: &[&str],
) -> (Proc, Option<String>) {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, config_text).unwrap();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--wasm",
        wasm.to_str().unwrap(),
    ];
    if !extra.contains(&"--workers") {
        args.extend(["--workers", "2"]);
    }
    args.extend(extra);
    let (proc, ready) = start_detour(dir, name, &args);
    let listen = ready.map(|r| r["listen"].as_str().unwrap().to_string());
    (proc, listen)
}

/// Runs `envoy -c BOOTSTRAP` (one worker, no hot restart, `extra` arguments, its log in
/// `DIR/envoy.log`) and waits for its admin address: the process with that address.
pub fn start_envoy(envoy: &Path, dir: &Path, bootstrap: &Path, extra: &[&str]) -> (Proc, String) {
    let admin_file = dir.join("admin.txt");
    let log = dir.join("envoy.log");
    let child = Command::new(envoy)
        .arg("-c")
        .arg(bootstrap)
        .arg("--admin-address-path")
        .arg(&admin_file)
        .args(["--concurrency", "1", "--disable-hot-restart"])
        .args(extra)
        .args(["-l", "warning"])
        .arg("--log-path")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc { child, log };
    let admin = proc.wait_until(
        "envoy",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let address = std::fs::read_to_string(&admin_file).ok()?;
            Some(address.trim().to_string()).filter(|a| !a.is_empty())
        },
    );
    match admin {
        Ok(admin) => (proc, admin),
        Err(status) => panic!("envoy exited with {status}:\n{}", proc.log_text()),
    }
}

/// `GET <path>` on a fresh connection, with extra header lines (each ending in CRLF):
/// (status, body), or `(0, "")` when nothing listens.
pub fn http_get(address: &str, path: &str, headers: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: detour\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Options with fixed, machine-independent values.
pub fn opts() -> RenderOptions {
    RenderOptions {
        source: "config.yaml".into(),
        output: Some("envoy.yaml".into()),
        listen: "127.0.0.1:10000".parse().unwrap(),
        admin: "127.0.0.1:9901".parse().unwrap(),
        wasm: "/opt/detour/detour.wasm".into(),
        concurrency: 2,
        no_env: true,
    }
}

/// Every `os.environ/NAME` resolves to a dummy key.
pub fn fake_env(_name: &str) -> Option<String> {
    Some("sk-test-value-for-every-env-var".into())
}

/// Loads `text` (env: [`fake_env`]) and renders it.
pub fn render_text(text: &str, opts: &RenderOptions) -> Rendered {
    let loaded = match detour_core::config::load(text, &fake_env) {
        Ok(loaded) => loaded,
        Err(e) => panic!("config does not load: {:?}\n{text}", e.errors),
    };
    match render(text, &loaded.config, opts) {
        Ok(rendered) => rendered,
        Err(errors) => panic!("render failed: {errors:?}"),
    }
}

/// Parses rendered YAML back.
pub fn parse(yaml: &str) -> Value {
    serde_yaml::from_str(yaml)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"))
}

/// Follows a path of mapping keys and sequence indices (`"static_resources.clusters.0"`).
pub fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for part in path.split('.') {
        current = match part.parse::<usize>() {
            Ok(idx) => current
                .get(idx)
                .unwrap_or_else(|| panic!("no index {idx} in {path}")),
            Err(_) => current
                .get(part)
                .unwrap_or_else(|| panic!("no key {part:?} in {path}")),
        };
    }
    current
}

/// `at(..).as_str()`, panicking if it is not a string.
pub fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// The wasm filter's `config` (the PluginConfig) in a parsed bootstrap.
pub fn plugin_config(bootstrap: &Value) -> &Value {
    at(
        bootstrap,
        "static_resources.listeners.0.filter_chains.0.filters.0.typed_config.http_filters.0.typed_config.config",
    )
}

/// The clusters of a parsed bootstrap, by name.
pub fn clusters(bootstrap: &Value) -> Vec<&Value> {
    at(bootstrap, "static_resources.clusters")
        .as_sequence()
        .unwrap()
        .iter()
        .collect()
}

/// The named cluster.
pub fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    clusters(bootstrap)
        .into_iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// The smallest module Envoy accepts as a proxy-wasm plugin: it exports the ABI version
/// marker, memory, an allocator and `proxy_on_vm_start` / `proxy_on_configure` /
/// `proxy_on_context_create` that succeed and do nothing. Envoy's `--mode validate`
/// loads and starts the VM, so the real filter (built later in the suite) cannot be
/// assumed; this stand-in checks everything else.
pub fn stub_proxy_wasm() -> Vec<u8> {
    fn leb(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
    fn vec_of(items: &[Vec<u8>]) -> Vec<u8> {
        let mut out = leb(items.len());
        for item in items {
            out.extend_from_slice(item);
        }
        out
    }
    fn name(text: &str) -> Vec<u8> {
        let mut out = leb(text.len());
        out.extend_from_slice(text.as_bytes());
        out
    }
    fn section(id: u8, contents: Vec<u8>) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(leb(contents.len()));
        out.extend(contents);
        out
    }
    const I32: u8 = 0x7f;
    let functype = |params: &[u8], results: &[u8]| {
        let mut t = vec![0x60];
        t.extend(leb(params.len()));
        t.extend_from_slice(params);
        t.extend(leb(results.len()));
        t.extend_from_slice(results);
        t
    };
    let types = [
        functype(&[], &[]),
        functype(&[I32], &[I32]),
        functype(&[I32, I32], &[I32]),
        functype(&[I32, I32], &[]),
    ];
    // (export name, type index, body instructions before `end`)
    let funcs: [(&str, usize, &[u8]); 5] = [
        ("proxy_abi_version_0_2_1", 0, &[]),
        ("proxy_on_memory_allocate", 1, &[0x41, 0x80, 0x08]), // i32.const 1024
        ("proxy_on_vm_start", 2, &[0x41, 0x01]),              // i32.const 1
        ("proxy_on_configure", 2, &[0x41, 0x01]),
        ("proxy_on_context_create", 3, &[]),
    ];
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(1, vec_of(&types)));
    let type_indices: Vec<Vec<u8>> = funcs.iter().map(|(_, t, _)| leb(*t)).collect();
    module.extend(section(3, vec_of(&type_indices)));
    module.extend(section(5, vec_of(&[vec![0x00, 0x01]]))); // memory: min 1 page
    let mut exports = vec![[name("memory"), vec![0x02, 0x00]].concat()];
    for (idx, (export, _, _)) in funcs.iter().enumerate() {
        exports.push([name(export), vec![0x00], leb(idx)].concat());
    }
    module.extend(section(7, vec_of(&exports)));
    let bodies: Vec<Vec<u8>> = funcs
        .iter()
        .map(|(_, _, code)| {
            let body = [vec![0x00], code.to_vec(), vec![0x0b]].concat(); // no locals
            [leb(body.len()), body].concat()
        })
        .collect();
    module.extend(section(10, vec_of(&bodies)));
    module
}

/// Small configs covering the upstream shapes: http, https, IPv6, shared authority.
pub const HTTP_ONLY: &str = "\
model_list:
  - model_name: fast
    litellm_params:
      model: openai/mock-fast
      api_base: http://127.0.0.1:18001/v1
";

pub const HTTPS_ENV_KEYS: &str = "\
model_list:
  - model_name: smart
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: smart
    litellm_params:
      model: groq/llama-3.3-70b-versatile
      api_key: os.environ/GROQ_API_KEY
  - model_name: cheap
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
router_settings:
  fallbacks:
    - smart: [cheap]
";

pub const IPV6: &str = "\
model_list:
  - model_name: local
    litellm_params:
      model: openai/llama
      api_base: http://[::1]:9000/v1
  - model_name: local
    litellm_params:
      model: openai/llama-tls
      api_base: https://[2001:db8::1]/v1
";

pub const SHARED_AUTHORITY: &str = "\
model_list:
  - model_name: a
    litellm_params:
      model: openai/m1
      api_base: http://LocalHost:8080/dep-a/v1
  - model_name: a
    litellm_params:
      model: openai/m2
      api_base: http://localhost:8080/dep-b/v1/
  - model_name: b
    litellm_params:
      model: openai/m3
      api_base: http://localhost:8081/v1
detour:
  max_request_body_bytes: 33554432
";
