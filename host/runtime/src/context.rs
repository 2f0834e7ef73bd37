//! What the embedding implements: the proxy behind the hostcalls.
//!
//! The ABI layer ([`crate::abi`]) translates guest memory and statuses and then asks
//! these traits; it never decides anything about HTTP itself. Each trait is one
//! hostcall group; [`Embedding`] is all of them together. Context ids are the ABI's
//! (the root is 1, streams 2, 3, … per VM); "context" below means the *effective*
//! context of the call (`proxy_set_effective_context`), already resolved.
//!
//! Every method documents the ABI contract it serves. Methods with a default body are
//! features an embedding may leave out: the default answers with the status Envoy uses
//! when the thing does not exist, never a trap.

use std::time::Duration;

use crate::shared_data::QueueNotifier;
use crate::types::{BufferType, HeaderMap, LogLevel, MapType, Status, StreamType};

/// A local reply asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Response-code details (Envoy replaces whitespace with `_`); empty when the guest
    /// gave none.
    pub details: String,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers, names lower-cased; each replaces a header of the same name.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// gRPC status, when in 0..=16 (the SDK passes −1 for "none").
    pub grpc_status: Option<u32>,
}

/// HTTP streams: header maps, bodies and stream control (ABI: `proxy_*_header_map_*`
/// for maps 0–3, `proxy_*_buffer_*` for buffers 0–1, `proxy_continue_stream`,
/// `proxy_close_stream`, `proxy_send_local_response`).
pub trait HttpStreams {
    /// Runs `f` on a header map of stream `context_id`. `None` when the map is not
    /// available now (Envoy: response headers before the response, request headers
    /// after they were forwarded): map reads and writes then answer `BadArgument`, and
    /// `get_header_map_pairs` answers an empty map.
    fn with_header_map<R>(
        &mut self,
        context_id: u32,
        map: MapType,
        f: impl FnOnce(&mut HeaderMap) -> R,
    ) -> Option<R>;

    /// Runs `f` on a body buffer of stream `context_id`: during a body callback, all that
    /// is buffered so far. `None` when there is none (`get_buffer_bytes` then answers
    /// `NotFound`, `set_buffer_bytes` `BadArgument`).
    fn with_body<R>(
        &mut self,
        context_id: u32,
        buffer: BufferType,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Option<R>;

    /// Answers stream `context_id` with a local reply once the current VM call returns
    /// (the callback's own return value is then overridden to "stop"). From a root
    /// context there is no stream: `Ok` and nothing happens, as in Envoy.
    fn send_local_response(&mut self, context_id: u32, response: LocalResponse) -> Status;

    /// Resumes a paused direction after the current VM call returns. `Ok` even when
    /// nothing was paused.
    fn continue_stream(&mut self, context_id: u32, stream: StreamType) -> Status;

    /// Resets a direction after the current VM call returns (details
    /// `wasm_close_stream`).
    fn close_stream(&mut self, context_id: u32, stream: StreamType) -> Status;
}

/// An HTTP call the guest asked for (`proxy_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallRequest {
    /// The upstream (an Envoy cluster name).
    pub upstream: String,
    /// Request headers, with `:method`, `:path` and `:authority`.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// For the whole exchange; `None` means no timeout (the guest passed 0).
    pub timeout: Option<Duration>,
}

/// The answer to an HTTP call, delivered with [`crate::vm::Vm::on_http_call_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Response headers with `:status`; empty means the call failed (reset, overflow).
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// Outgoing HTTP calls (ABI: `proxy_http_call`; the answer comes back through
/// [`crate::vm::Vm::on_http_call_response`]).
pub trait HttpCalls {
    /// Starts a call owned by root context `root_context_id` with id `token` (allocated
    /// by the runtime, unique while outstanding). Statuses as in Envoy: an unknown
    /// upstream is `BadArgument`; a call the client refuses at once is
    /// `InternalFailure`. Failures after this returns `Ok` arrive as responses.
    fn http_call(
        &mut self,
        root_context_id: u32,
        token: u32,
        request: HttpCallRequest,
    ) -> Result<(), Status>;
}

/// Time (ABI: `proxy_get_current_time_nanoseconds`, WASI `clock_time_get`).
pub trait Clock {
    /// Wall-clock time, Unix nanoseconds.
    fn wall_time_nanos(&self) -> u64;
    /// A monotonic clock, nanoseconds from an arbitrary origin.
    fn monotonic_nanos(&self) -> u64;
}

/// Timers (ABI: `proxy_set_tick_period_milliseconds`).
pub trait Timers {
    /// Sets root context `root_context_id`'s tick period; `None` cancels. The first tick
    /// comes one period later; the embedding calls [`crate::vm::Vm::on_tick`].
    fn set_tick_period(&mut self, root_context_id: u32, period: Option<Duration>);
}

/// Logging (ABI: `proxy_log`, `proxy_get_log_level`, WASI `fd_write` to 1 and 2).
pub trait Log {
    /// One log line from context `context_id` (0: the VM itself, e.g. WASI output
    /// during start-up).
    fn log(&mut self, level: LogLevel, context_id: u32, message: &str);
    /// The level below which the host drops lines (the SDK may skip formatting them).
    fn log_level(&self) -> LogLevel;
}

/// Properties (ABI: `proxy_get_property`, `proxy_set_property`). Paths are the
/// NUL-separated segments. `plugin_name`, `plugin_root_id` and `plugin_vm_id` are
/// answered by the runtime itself.
pub trait Properties {
    /// The value of `path` for context `context_id`, encoded as Envoy does (strings raw,
    /// integers 8-byte little-endian). `Ok(None)` when unknown.
    fn property(&mut self, context_id: u32, path: &[&[u8]]) -> Result<Option<Vec<u8>>, Status>;

    /// Stores `value` at `path` for stream `context_id` (Envoy: filter state
    /// `wasm.<path>`, readable back with `property`). From a root context: `NotFound`.
    fn set_property(&mut self, context_id: u32, path: &[&[u8]], value: &[u8]) -> Status {
        let _ = (context_id, path, value);
        Status::NotFound
    }
}

/// Shared-queue notifications (ABI: `proxy_register_shared_queue` and
/// `proxy_on_queue_ready`). The queues themselves live in the runtime.
pub trait QueueReady {
    /// A notifier that makes the embedding call [`crate::vm::Vm::on_queue_ready`] for
    /// `root_context_id` on this VM's worker. `None`: registrants are not notified.
    fn queue_notifier(&mut self, root_context_id: u32) -> Option<QueueNotifier> {
        let _ = root_context_id;
        None
    }
}

/// Everything an embedding provides.
pub trait Embedding:
    HttpStreams + HttpCalls + Clock + Timers + Log + Properties + QueueReady + 'static
{
}

impl<T> Embedding for T where
    T: HttpStreams + HttpCalls + Clock + Timers + Log + Properties + QueueReady + 'static
{
}
