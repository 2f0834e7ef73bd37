//! The runtime against purpose-built guests (`tests/guests/*.wat`) and, when it has been
//! built, the real filter (`target/detour.wasm`), with an in-memory embedding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detour_host::{
    BufferType, CallError, Clock, Engine, HeaderMap, HttpCallRequest, HttpCalls, HttpStreams,
    Limits, LocalResponse, Log, LogLevel, MapType, PluginConfig, Properties, QueueReady, Shared,
    Status, StreamType, Timers, Vm, VmError,
};

/// An embedding that keeps everything in memory and records what the guest did.
#[derive(Default)]
struct Fake {
    maps: HashMap<(u32, u8), HeaderMap>,
    bodies: HashMap<(u32, u8), Vec<u8>>,
    replies: Vec<(u32, LocalResponse)>,
    logs: Vec<(LogLevel, String)>,
    calls: Vec<(u32, HttpCallRequest)>,
    tick: Option<Duration>,
}

fn map_key(map: MapType) -> u8 {
    match map {
        MapType::HttpRequestHeaders => 0,
        MapType::HttpRequestTrailers => 1,
        MapType::HttpResponseHeaders => 2,
        MapType::HttpResponseTrailers => 3,
        _ => 9,
    }
}

impl HttpStreams for Fake {
    fn with_header_map<R>(
        &mut self,
        ctx: u32,
        map: MapType,
        f: impl FnOnce(&mut HeaderMap) -> R,
    ) -> Option<R> {
        self.maps.get_mut(&(ctx, map_key(map))).map(f)
    }
    fn with_body<R>(
        &mut self,
        ctx: u32,
        buffer: BufferType,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Option<R> {
        let key = if buffer == BufferType::HttpRequestBody {
            0
        } else {
            1
        };
        self.bodies.get_mut(&(ctx, key)).map(f)
    }
    fn send_local_response(&mut self, ctx: u32, response: LocalResponse) -> Status {
        self.replies.push((ctx, response));
        Status::Ok
    }
    fn continue_stream(&mut self, _ctx: u32, _stream: StreamType) -> Status {
        Status::Ok
    }
    fn close_stream(&mut self, _ctx: u32, _stream: StreamType) -> Status {
        Status::Ok
    }
}

impl HttpCalls for Fake {
    fn http_call(
        &mut self,
        _root: u32,
        token: u32,
        request: HttpCallRequest,
    ) -> Result<(), Status> {
        if request.upstream != "known" {
            return Err(Status::BadArgument);
        }
        self.calls.push((token, request));
        Ok(())
    }
}

impl Clock for Fake {
    fn wall_time_nanos(&self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn monotonic_nanos(&self) -> u64 {
        42
    }
}

impl Timers for Fake {
    fn set_tick_period(&mut self, _root: u32, period: Option<Duration>) {
        self.tick = period;
    }
}

impl Log for Fake {
    fn log(&mut self, level: LogLevel, _ctx: u32, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }
}

impl Properties for Fake {
    fn property(&mut self, _ctx: u32, path: &[&[u8]]) -> Result<Option<Vec<u8>>, Status> {
        Ok(match path {
            [b"response", b"code_details"] => Some(b"via_upstream".to_vec()),
            _ => None,
        })
    }
}

impl QueueReady for Fake {}

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/guests")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn plugin(configuration: &str, limits: Limits) -> Arc<PluginConfig> {
    Arc::new(PluginConfig {
        name: "detour".into(),
        root_id: "detour".into(),
        vm_id: "detour".into(),
        configuration: configuration.as_bytes().to_vec(),
        vm_configuration: Vec::new(),
        environment: vec![("DETOUR_TEST_KEY".into(), "sk-test".into())],
        limits,
    })
}

fn start(
    engine: &Engine,
    wasm: &[u8],
    config: &str,
    limits: Limits,
    shared: &Shared,
) -> Result<Vm<Fake>, VmError> {
    let module = engine.compile(wasm)?;
    Vm::start(
        engine,
        &module,
        plugin(config, limits),
        shared.clone(),
        Fake::default(),
    )
    .map_err(|(e, _)| e)
}

/// A stream whose request headers carry `x-probe: mode` (or nothing).
fn stream(vm: &mut Vm<Fake>, probe: Option<&str>) -> u32 {
    let ctx = vm.create_stream().unwrap();
    let mut headers = HeaderMap::from_pairs([(":method", "GET"), (":path", "/")]);
    if let Some(probe) = probe {
        headers.add(b"x-probe", probe.as_bytes());
    }
    vm.embedding_mut().maps.insert((ctx, 0), headers);
    ctx
}

fn body_of(reply: &LocalResponse) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[test]
fn shared_data_cas_semantics_match_cpp_host_through_the_abi() {
    let engine = Engine::new().unwrap();
    let shared = Shared::default();
    let mut vm = start(
        &engine,
        &guest("cas_probe.wat"),
        "",
        Limits::default(),
        &shared,
    )
    .unwrap();
    let ctx = stream(&mut vm, None);
    vm.on_request_headers(ctx, 2, true).unwrap();
    let (_, reply) = vm.embedding().replies.last().unwrap();
    assert_eq!(body_of(reply), "cas-probe 1001800100011");
    // The store is process-wide: a second VM (another worker) sees the same keys.
    let mut other = start(
        &engine,
        &guest("cas_probe.wat"),
        "",
        Limits::default(),
        &shared,
    )
    .unwrap();
    let ctx = stream(&mut other, None);
    other.on_request_headers(ctx, 2, true).unwrap();
    let (_, reply) = other.embedding().replies.last().unwrap();
    assert!(
        body_of(reply).starts_with("cas-probe 0"),
        "{}",
        body_of(reply)
    );
}

#[test]
fn a_trap_fails_the_vm_and_nothing_runs_on_it_again() {
    let engine = Engine::new().unwrap();
    let shared = Shared::default();
    let mut vm = start(
        &engine,
        &guest("misbehave.wat"),
        "",
        Limits::default(),
        &shared,
    )
    .unwrap();
    let ok = stream(&mut vm, None);
    vm.on_request_headers(ok, 2, true).unwrap();
    assert_eq!(
        body_of(&vm.embedding().replies[0].1),
        "requests on this VM: 1"
    );
    let bad = stream(&mut vm, Some("trap"));
    match vm.on_request_headers(bad, 3, true) {
        Err(CallError::Trap(message)) => {
            assert!(message.contains("proxy_on_request_headers"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(vm.failure().is_some());
    assert_eq!(vm.on_request_headers(ok, 2, true), Err(CallError::Failed));
    assert_eq!(vm.create_stream(), Err(CallError::Failed));
    assert!(vm
        .embedding()
        .logs
        .iter()
        .any(|(level, _)| *level == LogLevel::Critical));
    // A fresh VM from the same module starts over.
    let mut fresh = start(
        &engine,
        &guest("misbehave.wat"),
        "",
        Limits::default(),
        &shared,
    )
    .unwrap();
    let ctx = stream(&mut fresh, None);
    fresh.on_request_headers(ctx, 2, true).unwrap();
    assert_eq!(
        body_of(&fresh.embedding().replies[0].1),
        "requests on this VM: 1"
    );
}

#[test]
fn a_runaway_guest_is_stopped_at_its_deadline() {
    let engine = Arc::new(Engine::new().unwrap());
    let limits = Limits {
        callback_deadline_ticks: 3,
        ..Limits::default()
    };
    let mut vm = start(
        &engine,
        &guest("misbehave.wat"),
        "",
        limits,
        &Shared::default(),
    )
    .unwrap();
    let ctx = stream(&mut vm, Some("loop"));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(10));
                engine.increment_epoch();
            }
        })
    };
    let result = vm.on_request_headers(ctx, 3, true);
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    match result {
        Err(CallError::Trap(message)) => {
            assert!(message.to_lowercase().contains("interrupt"), "{message}")
        }
        other => panic!("expected an interrupt, got {other:?}"),
    }
}

#[test]
fn memory_beyond_the_cap_is_refused_and_the_guest_aborts() {
    let engine = Engine::new().unwrap();
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let mut vm = start(
        &engine,
        &guest("misbehave.wat"),
        "",
        limits,
        &Shared::default(),
    )
    .unwrap();
    let ctx = stream(&mut vm, Some("memory"));
    assert!(matches!(
        vm.on_request_headers(ctx, 3, true),
        Err(CallError::Trap(_))
    ));
    assert!(vm.memory_bytes() <= 64 << 20);
    // With room to grow, the same request succeeds.
    let roomy = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let mut vm = start(
        &engine,
        &guest("misbehave.wat"),
        "",
        roomy,
        &Shared::default(),
    )
    .unwrap();
    let ctx = stream(&mut vm, Some("memory"));
    vm.on_request_headers(ctx, 3, true).unwrap();
    assert!(vm.memory_bytes() > 128 << 20);
}

#[test]
fn modules_that_are_not_proxy_wasm_are_refused() {
    let engine = Engine::new().unwrap();
    let err = engine
        .compile(b"(module (memory (export \"memory\") 1))")
        .unwrap_err();
    assert!(matches!(err, VmError::Compile(m) if m.contains("proxy_abi_version")));
    let missing_import = br#"(module
        (import "env" "proxy_no_such_call" (func))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#;
    let module = engine.compile(missing_import).unwrap();
    let err = Vm::start(
        &engine,
        &module,
        plugin("", Limits::default()),
        Shared::default(),
        Fake::default(),
    )
    .map(|_| ())
    .unwrap_err()
    .0;
    assert!(matches!(err, VmError::Link(_)), "{err:?}");
}

/// The real filter, when `scripts/build-wasm.sh` has built it (the suite builds it after
/// `cargo test`; a fresh checkout has none and this test says so and passes).
fn real_filter() -> Option<Vec<u8>> {
    let path = std::env::var_os("DETOUR_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/detour.wasm")
        });
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!(
                "note: {} not built; skipping the real-filter checks",
                path.display()
            );
            None
        }
    }
}

const VALID: &str = "model_list:\n  - model_name: g\n    litellm_params: {model: openai/m, api_base: \"http://127.0.0.1:9/v1\", api_key: os.environ/DETOUR_TEST_KEY}\n";

#[test]
fn the_real_filter_links_starts_and_refuses_a_bad_config() {
    let Some(wasm) = real_filter() else { return };
    let engine = Engine::new().unwrap();
    // Every import the Rust SDK links exists (instantiation would fail otherwise).
    let vm = start(&engine, &wasm, VALID, Limits::default(), &Shared::default()).unwrap();
    assert!(
        vm.embedding().tick.is_some(),
        "the filter sets its tick in on_configure"
    );
    assert!(vm
        .embedding()
        .logs
        .iter()
        .any(|(_, m)| m.contains("configured 1 deployments")));
    let broken = VALID.replace(
        "os.environ/DETOUR_TEST_KEY",
        "os.environ/DETOUR_TEST_MISSING",
    );
    let err = start(
        &engine,
        &wasm,
        &broken,
        Limits::default(),
        &Shared::default(),
    )
    .unwrap_err();
    assert_eq!(err, VmError::ConfigureFailed);
}

#[test]
fn the_real_filter_routes_the_first_attempt_through_the_cluster_header() {
    let Some(wasm) = real_filter() else { return };
    let engine = Engine::new().unwrap();
    let mut vm = start(&engine, &wasm, VALID, Limits::default(), &Shared::default()).unwrap();
    let ctx = vm.create_stream().unwrap();
    let headers = HeaderMap::from_pairs([
        (":authority", "detour"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("authorization", "Bearer client"),
    ]);
    let body = br#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    vm.embedding_mut().maps.insert((ctx, 0), headers);
    vm.embedding_mut().bodies.insert((ctx, 0), body.clone());
    assert_eq!(
        vm.on_request_headers(ctx, 6, false),
        Ok(detour_host::Action::Pause)
    );
    assert_eq!(
        vm.on_request_body(ctx, body.len(), true),
        Ok(detour_host::Action::Continue)
    );
    let sent = &vm.embedding().maps[&(ctx, 0)];
    assert_eq!(
        sent.get_str("x-detour-cluster"),
        Some("detour_http_127.0.0.1_9")
    );
    assert_eq!(sent.get_str(":path"), Some("/v1/chat/completions"));
    assert_eq!(sent.get_str("authorization"), Some("Bearer sk-test"));
    assert!(sent
        .get_str("x-envoy-upstream-rq-per-try-timeout-ms")
        .is_some());
    let rewritten = String::from_utf8(vm.embedding().bodies[&(ctx, 0)].clone()).unwrap();
    assert!(rewritten.contains(r#""model":"m""#), "{rewritten}");
    vm.finish_stream(ctx).unwrap();
    assert!(!vm.has_context(ctx));
}
