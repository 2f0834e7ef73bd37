//! The embedding: what the hostcalls of one worker's VM reach (the
//! [`detour_host::context`] traits), backed by that worker's stream table, upstream
//! client, tick timer and logger.
//!
//! Stream actions a guest asks for (`send_local_response`, `continue_stream`,
//! `close_stream`) are sent to the stream's driver as [`StreamEvent`]s. The driver
//! runs on the same thread and reads them only after the current VM call returned,
//! which is exactly Envoy's "deferred until the VM call returns".

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use detour_host::shared_data::QueueNotifier;
use detour_host::{
    BufferType, Clock, HeaderMap, HttpCallRequest, HttpCalls, HttpStreams, LocalResponse, Log,
    LogLevel, MapType, Properties, QueueReady, Status, StreamType, Timers,
};
use tokio::sync::{mpsc, Notify};

use super::fleet::FleetRoute;
use super::log::Logger;
use super::router::{self, Clusters, UpstreamClient};
use super::worker::{VmHandle, WorkerMsg};

/// What a guest asked a stream to do (delivered after the VM call returns).
#[derive(Debug)]
pub enum StreamEvent {
    /// `proxy_send_local_response`.
    LocalReply(LocalResponse),
    /// `proxy_continue_stream(HTTP_REQUEST)`.
    ContinueRequest,
    /// `proxy_continue_stream(HTTP_RESPONSE)`.
    ContinueResponse,
    /// `proxy_close_stream(HTTP_*)`.
    Close,
    /// The VM failed while this stream was in flight.
    VmFailed,
}

/// What the properties of a stream are made of.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// `request.time`, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// The original request headers (`request.headers`, `request.path`, …).
    pub request_headers: HeaderMap,
    /// `request.protocol`: `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// `request.id` (`x-request-id`).
    pub request_id: String,
    /// `source.address`.
    pub source: Option<SocketAddr>,
    /// `destination.address`.
    pub destination: Option<SocketAddr>,
    /// `connection.id`.
    pub connection_id: u64,
    /// `request.size`: body bytes received so far.
    pub request_size: u64,
    /// `response.code`.
    pub response_code: Option<u16>,
    /// `response.code_details` (`via_upstream`, `upstream_per_try_timeout`, …).
    pub code_details: Option<String>,
    /// `response.size`: body bytes sent so far.
    pub response_size: u64,
    /// `xds.cluster_name`: the cluster the router chose.
    pub cluster: Option<String>,
    /// `upstream.address`.
    pub upstream: Option<String>,
    /// Set with `proxy_set_property` (Envoy: filter state `wasm.<path>`).
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
}

/// One in-flight HTTP stream as the hostcalls see it.
#[derive(Debug)]
pub struct StreamRecord {
    /// Where stream actions go.
    pub events: mpsc::UnboundedSender<StreamEvent>,
    /// Request headers: `Some` while the filter holds them; `None` once forwarded.
    pub request_headers: Option<HeaderMap>,
    /// Request trailers, when the client sent some.
    pub request_trailers: Option<HeaderMap>,
    /// The request body buffered so far (during request body callbacks).
    pub request_body: Option<Vec<u8>>,
    /// Response headers: `Some` from the response's arrival until sent downstream.
    pub response_headers: Option<HeaderMap>,
    /// Response trailers.
    pub response_trailers: Option<HeaderMap>,
    /// The response body buffered so far (during response body callbacks).
    pub response_body: Option<Vec<u8>>,
    /// Properties.
    pub info: StreamInfo,
}

/// A VM's streams by context id.
pub type Streams = Rc<RefCell<HashMap<u32, StreamRecord>>>;

/// The root context's tick period, watched by the tick task.
#[derive(Debug, Default)]
pub struct TickCell {
    /// The period; `None`: no ticks.
    pub period: Cell<Option<Duration>>,
    /// Woken when the period changes.
    pub changed: Notify,
}

/// The embedding of one VM on one worker.
pub struct WorkerHost {
    pub(crate) streams: Streams,
    pub(crate) tick: Rc<TickCell>,
    pub(crate) client: UpstreamClient,
    pub(crate) clusters: Arc<Clusters>,
    /// Fleet mode with a Redis: calls to the state cluster are answered in-process.
    pub(crate) fleet: Option<Arc<FleetRoute>>,
    /// The VM this embedding belongs to, once it exists (HTTP-call answers go there).
    pub(crate) handle: Rc<OnceCell<Weak<VmHandle>>>,
    pub(crate) log: Logger,
    pub(crate) plugin_name: String,
    pub(crate) vm_id: String,
    pub(crate) monotonic_origin: tokio::time::Instant,
    /// Which VM of the worker this is (shared-queue notifications name it).
    pub(crate) generation: u64,
    /// The worker's inbox, for shared-queue notifications from any thread.
    pub(crate) inbox: mpsc::UnboundedSender<WorkerMsg>,
}

/// The host's wall clock in Unix nanoseconds: the one real clock read of the VM side.
pub fn wall_time_nanos() -> u64 {
    #[expect(
        clippy::disallowed_methods,
        reason = "proxy_get_current_time_nanoseconds is the wall clock by definition"
    )]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl HttpStreams for WorkerHost {
    fn with_header_map<R>(
        &mut self,
        context_id: u32,
        map: MapType,
        f: impl FnOnce(&mut HeaderMap) -> R,
    ) -> Option<R> {
        let mut streams = self.streams.borrow_mut();
        let record = streams.get_mut(&context_id)?;
        let map = match map {
            MapType::HttpRequestHeaders => record.request_headers.as_mut(),
            MapType::HttpRequestTrailers => record.request_trailers.as_mut(),
            MapType::HttpResponseHeaders => record.response_headers.as_mut(),
            MapType::HttpResponseTrailers => record.response_trailers.as_mut(),
            _ => None,
        }?;
        Some(f(map))
    }

    fn with_body<R>(
        &mut self,
        context_id: u32,
        buffer: BufferType,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Option<R> {
        let mut streams = self.streams.borrow_mut();
        let record = streams.get_mut(&context_id)?;
        let body = match buffer {
            BufferType::HttpRequestBody => record.request_body.as_mut(),
            BufferType::HttpResponseBody => record.response_body.as_mut(),
            _ => None,
        }?;
        Some(f(body))
    }

    fn send_local_response(&mut self, context_id: u32, response: LocalResponse) -> Status {
        self.event(context_id, StreamEvent::LocalReply(response));
        Status::Ok
    }

    fn continue_stream(&mut self, context_id: u32, stream: StreamType) -> Status {
        match stream {
            StreamType::HttpRequest => self.event(context_id, StreamEvent::ContinueRequest),
            StreamType::HttpResponse => self.event(context_id, StreamEvent::ContinueResponse),
            // No TCP streams in an HTTP host: nothing is paused there.
            StreamType::Downstream | StreamType::Upstream => {}
        }
        Status::Ok
    }

    fn close_stream(&mut self, context_id: u32, _stream: StreamType) -> Status {
        self.event(context_id, StreamEvent::Close);
        Status::Ok
    }
}

impl WorkerHost {
    fn event(&self, context_id: u32, event: StreamEvent) {
        if let Some(record) = self.streams.borrow().get(&context_id) {
            // A driver that is gone has nothing left to do with it.
            let _ = record.events.send(event);
        }
    }
}

impl HttpCalls for WorkerHost {
    fn http_call(
        &mut self,
        _root_context_id: u32,
        token: u32,
        request: HttpCallRequest,
    ) -> Result<(), Status> {
        // The state service of a fleet with a Redis: no HTTP hop (see `fleet`).
        if let Some(fleet) = self
            .fleet
            .as_ref()
            .filter(|f| f.cluster() == request.upstream)
        {
            let fleet = fleet.clone();
            let handle = self.handle.clone();
            tokio::task::spawn_local(async move {
                let response = fleet.call(request).await;
                if let Some(vm) = handle.get().and_then(Weak::upgrade) {
                    vm.deliver_call(token, response);
                }
            });
            return Ok(());
        }
        let Some(upstream) = self.clusters.get(&request.upstream).cloned() else {
            return Err(Status::BadArgument);
        };
        let client = self.client.clone();
        let handle = self.handle.clone();
        tokio::task::spawn_local(async move {
            let response = router::http_call(client, upstream, request).await;
            if let Some(vm) = handle.get().and_then(Weak::upgrade) {
                vm.deliver_call(token, response);
            }
        });
        Ok(())
    }
}

impl Clock for WorkerHost {
    fn wall_time_nanos(&self) -> u64 {
        wall_time_nanos()
    }

    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.monotonic_origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Timers for WorkerHost {
    fn set_tick_period(&mut self, _root_context_id: u32, period: Option<Duration>) {
        self.tick.period.set(period);
        self.tick.changed.notify_one();
    }
}

impl Log for WorkerHost {
    fn log(&mut self, level: LogLevel, _context_id: u32, message: &str) {
        self.log.record_event(message);
        self.log.log(
            level,
            "wasm",
            &format!("wasm log {} {}: {message}", self.plugin_name, self.vm_id),
        );
    }

    fn log_level(&self) -> LogLevel {
        self.log.level()
    }
}

impl QueueReady for WorkerHost {
    fn queue_notifier(&mut self, _root_context_id: u32) -> Option<QueueNotifier> {
        let (inbox, generation) = (self.inbox.clone(), self.generation);
        Some(Arc::new(move |token| {
            // A worker that is gone has nobody left to notify.
            let _ = inbox.send(WorkerMsg::QueueReady { generation, token });
        }))
    }
}

fn u64_le(n: u64) -> Option<Vec<u8>> {
    Some(n.to_le_bytes().to_vec())
}

fn text(s: impl AsRef<str>) -> Option<Vec<u8>> {
    let s = s.as_ref();
    (!s.is_empty()).then(|| s.as_bytes().to_vec())
}

impl Properties for WorkerHost {
    fn property(&mut self, context_id: u32, path: &[&[u8]]) -> Result<Option<Vec<u8>>, Status> {
        let streams = self.streams.borrow();
        let Some(record) = streams.get(&context_id) else {
            return Ok(None);
        };
        let info = &record.info;
        let req = &info.request_headers;
        let header = |name: &str| req.get(name.as_bytes()).map(<[u8]>::to_vec);
        let path_text = req.get_str(":path").unwrap_or("");
        let value = match path {
            [b"request", b"path"] => header(":path"),
            [b"request", b"url_path"] => text(path_text.split('?').next().unwrap_or("")),
            [b"request", b"query"] => path_text.split_once('?').and_then(|(_, q)| text(q)),
            [b"request", b"host"] => header(":authority"),
            [b"request", b"scheme"] => header(":scheme"),
            [b"request", b"method"] => header(":method"),
            [b"request", b"referer"] => header("referer"),
            [b"request", b"useragent"] => header("user-agent"),
            [b"request", b"id"] => text(&info.request_id),
            [b"request", b"protocol"] => text(info.protocol),
            [b"request", b"time"] => u64_le(info.start_unix_nanos),
            [b"request", b"size"] | [b"request", b"total_size"] => u64_le(info.request_size),
            [b"request", b"headers"] => Some(req.serialize()),
            [b"request", b"duration"] => {
                u64_le(wall_time_nanos().saturating_sub(info.start_unix_nanos))
            }
            [b"response", b"code"] => info.response_code.and_then(|c| u64_le(u64::from(c))),
            [b"response", b"code_details"] => info.code_details.as_deref().and_then(text),
            [b"response", b"flags"] => u64_le(0),
            [b"response", b"size"] | [b"response", b"total_size"] => u64_le(info.response_size),
            [b"response", b"headers"] => record.response_headers.as_ref().map(HeaderMap::serialize),
            [b"source", b"address"] => info.source.and_then(|a| text(a.to_string())),
            [b"source", b"port"] => info.source.and_then(|a| u64_le(u64::from(a.port()))),
            [b"destination", b"address"] => info.destination.and_then(|a| text(a.to_string())),
            [b"destination", b"port"] => info.destination.and_then(|a| u64_le(u64::from(a.port()))),
            [b"connection", b"id"] | [b"connection_id"] => u64_le(info.connection_id),
            [b"connection", b"mtls"] => Some(vec![0]),
            [b"upstream", b"address"] => info.upstream.as_deref().and_then(text),
            [b"xds", b"cluster_name"] | [b"cluster_name"] => info.cluster.as_deref().and_then(text),
            other => info.filter_state.get(&other.join(&b'.')).cloned(),
        };
        Ok(value)
    }

    fn set_property(&mut self, context_id: u32, path: &[&[u8]], value: &[u8]) -> Status {
        let mut streams = self.streams.borrow_mut();
        let Some(record) = streams.get_mut(&context_id) else {
            return Status::NotFound;
        };
        record
            .info
            .filter_state
            .insert(path.join(&b'.'), value.to_vec());
        Status::Ok
    }
}
