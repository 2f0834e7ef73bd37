//! detour's proxy-wasm glue: the only code that makes hostcalls.
//!
//! It feeds the policy core (`detour-core`) with what the host tells it (headers, bodies,
//! answers, time) and carries out the core's [`detour_core::flow::Step`]s with hostcalls.
//! The design (ARCHITECTURE.md, "design B"):
//!
//! - the request is held (`allow_on_headers_stop_iteration`) until its body is complete;
//! - the **first attempt** goes through Envoy's router (`x-detour-cluster` +
//!   `cluster_header` route), so a successful answer streams straight to the client;
//! - when that answer is a failure the response is held, and **later attempts** go out by
//!   `dispatch_http_call`; the winner replaces the failed answer with `send_http_response`;
//! - backoff waits are deadlines served by the root context's tick, which switches to the
//!   request with `set_effective_context`.
//!
//! **Architecture invariant:** no policy here. Every "what next" is the core's decision;
//! this crate only translates. The Rust SDK's trait helpers `unwrap()` hostcall results
//! and its `proxy_wasm::hostcalls` wrappers panic on statuses they do not expect, so the
//! glue makes every hostcall through its own bindings (`abi.rs`) behind `host.rs`, and
//! `tests/tidy.rs` keeps it that way.

// Arithmetic that can overflow is a panic in debug builds and a silent wrap in release:
// money and counters saturate, hashing wraps, and every choice is explicit.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![warn(clippy::cast_possible_truncation)]

mod abi;
mod fleet;
mod host;
mod http;
mod metrics;
mod registry;
mod root;
mod run;
mod webhook;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::DetourRoot::new(context_id)));
}}
