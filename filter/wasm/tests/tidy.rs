//! Tidy checks on the glue's source: hostcalls go through `src/abi.rs` only, and nothing
//! calls the Rust SDK's trait helpers (they `unwrap()` hostcall results, and the SDK's
//! own wrappers panic on statuses they do not expect: either is a trap in Envoy).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test's helpers: failing loudly is the point"
)]

use std::fs;
use std::path::{Path, PathBuf};

/// The one SDK hostcall wrapper the glue still uses, and only in `abi.rs`: the SDK's
/// dispatcher must register every HTTP call token (see `abi.rs`).
const ALLOWED_SDK_HOSTCALLS: &[&str] = &["dispatch_http_call"];

/// Every helper method `proxy_wasm::traits::{Context, RootContext, StreamContext,
/// HttpContext}` provides in proxy-wasm 0.2.5 (callbacks, `on_*`, are not helpers).
const SDK_TRAIT_HELPERS: &[&str] = &[
    "add_http_request_header",
    "add_http_request_header_bytes",
    "add_http_request_trailer",
    "add_http_request_trailer_bytes",
    "add_http_response_header",
    "add_http_response_header_bytes",
    "add_http_response_trailer",
    "add_http_response_trailer_bytes",
    "call_foreign_function",
    "cancel_grpc_call",
    "cancel_grpc_stream",
    "close_downstream",
    "close_grpc_stream",
    "close_upstream",
    "dequeue_shared_queue",
    "dispatch_grpc_call",
    "dispatch_http_call",
    "done",
    "enqueue_shared_queue",
    "get_current_time",
    "get_downstream_data",
    "get_grpc_call_response_body",
    "get_grpc_status",
    "get_grpc_stream_initial_metadata",
    "get_grpc_stream_initial_metadata_value",
    "get_grpc_stream_message",
    "get_grpc_stream_trailing_metadata",
    "get_grpc_stream_trailing_metadata_value",
    "get_http_call_response_body",
    "get_http_call_response_header",
    "get_http_call_response_header_bytes",
    "get_http_call_response_headers",
    "get_http_call_response_headers_bytes",
    "get_http_call_response_trailer",
    "get_http_call_response_trailer_bytes",
    "get_http_call_response_trailers",
    "get_http_call_response_trailers_bytes",
    "get_http_request_body",
    "get_http_request_header",
    "get_http_request_header_bytes",
    "get_http_request_headers",
    "get_http_request_headers_bytes",
    "get_http_request_trailer",
    "get_http_request_trailer_bytes",
    "get_http_request_trailers",
    "get_http_request_trailers_bytes",
    "get_http_response_body",
    "get_http_response_header",
    "get_http_response_header_bytes",
    "get_http_response_headers",
    "get_http_response_headers_bytes",
    "get_http_response_trailer",
    "get_http_response_trailer_bytes",
    "get_http_response_trailers",
    "get_http_response_trailers_bytes",
    "get_plugin_configuration",
    "get_property",
    "get_shared_data",
    "get_upstream_data",
    "get_vm_configuration",
    "open_grpc_stream",
    "register_shared_queue",
    "remove_http_request_header",
    "remove_http_request_trailer",
    "remove_http_response_header",
    "remove_http_response_trailer",
    "remove_shared_data",
    "reset_http_request",
    "reset_http_response",
    "resolve_shared_queue",
    "resume_downstream",
    "resume_http_request",
    "resume_http_response",
    "resume_upstream",
    "send_grpc_response",
    "send_grpc_stream_message",
    "send_http_response",
    "set_downstream_data",
    "set_http_request_body",
    "set_http_request_header",
    "set_http_request_header_bytes",
    "set_http_request_headers",
    "set_http_request_headers_bytes",
    "set_http_request_trailer",
    "set_http_request_trailer_bytes",
    "set_http_request_trailers",
    "set_http_request_trailers_bytes",
    "set_http_response_body",
    "set_http_response_header",
    "set_http_response_header_bytes",
    "set_http_response_headers",
    "set_http_response_headers_bytes",
    "set_http_response_trailer",
    "set_http_response_trailer_bytes",
    "set_http_response_trailers",
    "set_http_response_trailers_bytes",
    "set_property",
    "set_shared_data",
    "set_tick_period",
    "set_upstream_data",
];

fn sources() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    assert!(out.len() >= 5, "found too few sources: {out:?}");
    out
}

/// The code of a line: `//` comments (including doc comments) dropped.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap()
}

/// Identifiers that follow `needle` in `text` (`hostcalls::get_buffer` → `get_buffer`).
fn idents_after<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.match_indices(needle)
        .map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn hostcalls_only_through_abi() {
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let name = file_name(&path);
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            let at = format!("{}:{}", path.display(), n + 1);
            if name == "abi.rs" {
                for called in idents_after(line, "hostcalls::") {
                    if !ALLOWED_SDK_HOSTCALLS.contains(&called) {
                        problems.push(format!(
                            "{at}: SDK hostcall `{called}` (use an own binding)"
                        ));
                    }
                }
                continue;
            }
            if line.contains("hostcalls") {
                problems.push(format!("{at}: `hostcalls` outside abi.rs: {}", line.trim()));
            }
            if line.contains("extern \"C\"") || line.contains("unsafe") {
                problems.push(format!(
                    "{at}: FFI or unsafe outside abi.rs: {}",
                    line.trim()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_sdk_trait_helpers() {
    let mut problems = Vec::new();
    for (path, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            for called in idents_after(line, "self.") {
                if SDK_TRAIT_HELPERS.contains(&called) {
                    problems.push(format!(
                        "{}:{}: `self.{called}` is an SDK trait helper (it unwraps); use host.rs",
                        path.display(),
                        n + 1
                    ));
                }
            }
            // Called as a path (`Context::get_property(self, …)`, `HttpContext::…`).
            for prefix in [
                "Context::",
                "HttpContext::",
                "RootContext::",
                "StreamContext::",
            ] {
                for called in idents_after(line, prefix) {
                    if SDK_TRAIT_HELPERS.contains(&called) {
                        problems.push(format!(
                            "{}:{}: `{prefix}{called}` is an SDK trait helper",
                            path.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert_eq!(
        idents_after("let x = self.get_http_request_header(\"a\");", "self."),
        vec!["get_http_request_header"]
    );
    assert_eq!(
        idents_after("proxy_wasm::hostcalls::get_buffer(t, 0, n)", "hostcalls::"),
        vec!["get_buffer"]
    );
    assert_eq!(code("ok(); // self.get_property(x)"), "ok(); ");
}
