//! `detour-host`: a proxy-wasm ABI 0.2.1 host on wasmtime.
//!
//! It runs proxy-wasm filters (Rust SDK 0.2.x, and anything else that speaks ABI
//! 0.2.0/0.2.1) the way Envoy's proxy-wasm-cpp-host does, in three layers:
//!
//! - [`abi`]: one module per hostcall group; guest-memory translation and status codes
//!   only, registered on a wasmtime `Linker` with `add_to_linker`;
//! - [`context`]: the traits an embedding implements (HTTP streams, HTTP calls, clock,
//!   timers, log, properties, queue notifications): the proxy behind the hostcalls;
//! - [`vm`]: the engine, module cache, one instance per worker thread, the start
//!   sequence, per-callback deadlines, memory caps and the fail state;
//!
//! plus the process-wide state guests share: [`shared_data`] (CAS store and queues,
//! namespaced by `vm_id`, with cpp-host's exact semantics) and [`metrics`].
//!
//! **Architecture invariant:** this crate knows nothing about HTTP servers, sockets or
//! async runtimes (no hyper, no tokio). Time comes from the embedding's [`context::Clock`];
//! the only other outside input is the OS random source behind WASI `random_get`.

pub mod abi;
pub mod context;
pub mod metrics;
pub mod shared_data;
pub mod types;
pub mod vm;

pub use context::{
    Clock, Embedding, HttpCallRequest, HttpCallResponse, HttpCalls, HttpStreams, LocalResponse,
    Log, Properties, QueueReady, Timers,
};
pub use types::{Action, BufferType, HeaderMap, LogLevel, MapType, Status, StreamType};
pub use vm::{CallError, Engine, Limits, PluginConfig, Shared, Vm, VmError};

/// The compiled-module type [`Engine::compile`] returns.
pub use wasmtime::Module;
