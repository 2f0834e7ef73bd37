//! One downstream request through the filter and the router, with Envoy's semantics for
//! everything detour relies on (the HTTP connection manager with one wasm filter,
//! `allow_on_headers_stop_iteration: true`, then the router):
//!
//! - **Request.** `on_request_headers`, then one `on_request_body` per client frame with
//!   the cumulative size of what is buffered. `Pause` holds the request (headers and
//!   body); `Continue` from any request callback, or `continue_stream(HTTP_REQUEST)`
//!   from any later callback, releases the headers and everything buffered to the
//!   router; later frames stream through. A held body over the buffer limit gets 413.
//! - **Router.** `x-detour-cluster` picks the cluster (and is removed);
//!   `x-envoy-upstream-rq-per-try-timeout-ms` bounds the wait for response headers
//!   (504 `upstream_per_try_timeout`); transport failures become Envoy's synthetic
//!   answers ([`super::router`]). Those go through the filter like upstream answers.
//! - **Response.** `on_response_headers`; `Pause` holds the headers while body callbacks
//!   keep coming with the cumulative buffered size (the filter may drain the buffer);
//!   `Continue` from a response callback or `continue_stream(HTTP_RESPONSE)` sends
//!   headers and buffer on. Once headers went downstream the body streams chunk by chunk.
//! - **Local replies** (`send_local_response`) are applied after the VM call that asked
//!   for them: before the response started they replace whatever was held (the upstream
//!   exchange is abandoned) and pass through the filter's response callbacks like any
//!   answer; after it started they reset the stream (Envoy cuts it).
//! - **End.** `on_log`, `on_done`, `on_delete` (Envoy's HTTP order), when the response
//!   completed or the client went away.
//! - **VM failure.** A trap in any callback fails the VM: the stream gets 503 with
//!   details `wasm_fail_stream` (not through the dead filter), or a reset once its
//!   response started.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use detour_host::{CallError, HeaderMap, LocalResponse};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

use super::body::{ChannelBody, FrameResult, StreamReset};
use super::host::{wall_time_nanos, StreamEvent, StreamInfo, StreamRecord};
use super::router::{self, RouterReply, CLUSTER_HEADER, HOP_BY_HOP, PER_TRY_TIMEOUT_HEADER};
use super::worker::{VmHandle, Worker};

/// What we know about the downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address.
    pub local: SocketAddr,
    /// Process-wide connection id.
    pub id: u64,
}

/// Frames buffered towards hyper before the driver waits for the client.
const CHANNEL_FRAMES: usize = 16;

type UpstreamFuture = Pin<Box<dyn Future<Output = Result<hyper::Response<Incoming>, RouterReply>>>>;

/// The answer hyper gets for a request: the response, or a reset.
pub type Answer = Result<hyper::Response<ChannelBody>, StreamReset>;

/// Entry point for hyper: runs the request's driver on this worker and waits for the
/// response head (the body follows through a channel).
pub async fn handle(
    worker: Rc<Worker>,
    downstream: Downstream,
    request: hyper::Request<Incoming>,
) -> Answer {
    worker.stats.requests.fetch_add(1, Ordering::Relaxed);
    if header_bytes(&request) > worker.settings.max_request_headers_bytes {
        worker.stats.response(431);
        return Ok(headers_too_large());
    }
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_local(drive(worker.clone(), downstream, request, tx));
    let answer = rx.await.unwrap_or(Err(StreamReset));
    if let Ok(response) = &answer {
        worker.stats.response(response.status().as_u16());
    }
    answer
}

/// The size of the request head as Envoy counts it against `max_request_headers_kb`.
fn header_bytes<B>(request: &hyper::Request<B>) -> usize {
    let head = request.uri().to_string().len() + request.method().as_str().len();
    head + request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum::<usize>()
}

/// Envoy's 431 for oversized request headers, with the bootstrap's `local_reply_config`
/// (OpenAI-shaped JSON). It never reaches the filter, as in Envoy (the codec rejects it
/// before any filter runs).
fn headers_too_large() -> hyper::Response<ChannelBody> {
    let body = serde_json::json!({
        "error": {
            "message": "Request Header Fields Too Large",
            "type": "invalid_request_error",
            "code": "request_header_fields_too_large",
            "param": null,
        }
    });
    // Envoy's `json_format` ends the body with a newline.
    let body = format!("{body}\n");
    let mut response = hyper::Response::new(ChannelBody::full(body));
    *response.status_mut() = hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    headers.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static(SERVER),
    );
    response
}

/// What Envoy's connection manager does to every response head after the filters:
/// the `server` header is overwritten (`server_header_transformation: OVERWRITE`; ours
/// says `detour`), and a response sent before the request was read to its end closes
/// the connection.
fn finish_head(headers: &mut http::HeaderMap, request_complete: bool) {
    headers.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static(SERVER),
    );
    if !request_complete {
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
}

/// The `server` header of every response.
pub const SERVER: &str = "detour";

/// A response straight from the host (no filter): `wasm_fail_stream` and the like.
fn plain_response(status: u16, body: &'static str) -> hyper::Response<ChannelBody> {
    let mut response = hyper::Response::new(ChannelBody::full(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    finish_head(response.headers_mut(), true);
    if !body.is_empty() {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
    }
    response
}

/// The request's header map as a filter sees it: pseudo-headers first (`:authority`
/// from the URI or `Host`), hop-by-hop headers removed, names lower-case, and the
/// headers Envoy's connection manager adds (`x-forwarded-proto`, `x-request-id`).
fn request_header_map(parts: &http::request::Parts, request_id: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    map.add(b":authority", authority.as_bytes());
    map.add(
        b":path",
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    map.add(b":method", parts.method.as_str().as_bytes());
    map.add(b":scheme", b"http");
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name == "host" || HOP_BY_HOP.contains(&name) {
            continue;
        }
        map.add(name.as_bytes(), value.as_bytes());
    }
    if map.get(b"x-forwarded-proto").is_none() {
        map.add(b"x-forwarded-proto", b"http");
    }
    if map.get(b"x-request-id").is_none() {
        map.add(b"x-request-id", request_id.as_bytes());
    }
    map
}

/// A random-enough request id (UUID-shaped).
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_time_nanos());
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Where the response body comes from.
enum Source {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl Source {
    async fn frame(&mut self) -> Option<Result<Frame<Bytes>, ()>> {
        match self {
            Source::Upstream(body) => body.frame().await.map(|r| r.map_err(|_| ())),
            Source::Local(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Upstream(body) => body.is_end_stream(),
            Source::Local(bytes) => bytes.is_none(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// The filter holds the request (or has not answered yet).
    Held,
    /// Headers (and what was buffered) went to the router.
    Released,
    /// A local reply ended the request side.
    Abandoned,
}

struct Driver {
    worker: Rc<Worker>,
    vm: Rc<VmHandle>,
    ctx: u32,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    pending: VecDeque<StreamEvent>,
    client_body: Option<Incoming>,
    client_eos: bool,
    request: Request,
    upstream_body: Option<mpsc::UnboundedSender<FrameResult>>,
    upstream: Option<UpstreamFuture>,
    source: Option<Source>,
    source_eos: bool,
    encoding: bool,
    response_paused: bool,
    response_tx: Option<oneshot::Sender<Answer>>,
    body_tx: Option<mpsc::Sender<FrameResult>>,
    headers_sent: bool,
    local_replies: u32,
    vm_alive: bool,
    done: bool,
}

async fn drive(
    worker: Rc<Worker>,
    downstream: Downstream,
    request: hyper::Request<Incoming>,
    response_tx: oneshot::Sender<Answer>,
) {
    let Some(vm) = worker.vm_for_new_stream() else {
        let _ = response_tx.send(Ok(plain_response(503, "")));
        return;
    };
    let ctx = match vm.call(|vm| vm.create_stream()) {
        Ok(ctx) => ctx,
        Err(_) => {
            let _ = response_tx.send(Ok(plain_response(503, "")));
            return;
        }
    };
    worker.stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let request_id = new_request_id();
    let headers = request_header_map(&parts, &request_id);
    let n_headers = headers.len();
    let (events_tx, events) = mpsc::unbounded_channel();
    let protocol = if parts.version == http::Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    };
    let record = StreamRecord {
        events: events_tx,
        request_headers: Some(headers.clone()),
        request_trailers: None,
        request_body: Some(Vec::new()),
        response_headers: None,
        response_trailers: None,
        response_body: None,
        info: StreamInfo {
            start_unix_nanos: wall_time_nanos(),
            request_id: headers
                .get_str("x-request-id")
                .unwrap_or(&request_id)
                .to_string(),
            request_headers: headers,
            protocol,
            source: Some(downstream.peer),
            destination: Some(downstream.local),
            connection_id: downstream.id,
            ..StreamInfo::default()
        },
    };
    vm.streams.borrow_mut().insert(ctx, record);
    let client_eos = body.is_end_stream();
    let mut driver = Driver {
        worker: worker.clone(),
        vm,
        ctx,
        events,
        pending: VecDeque::new(),
        client_body: (!client_eos).then_some(body),
        client_eos,
        request: Request::Held,
        upstream_body: None,
        upstream: None,
        source: None,
        source_eos: false,
        encoding: false,
        response_paused: false,
        response_tx: Some(response_tx),
        body_tx: None,
        headers_sent: false,
        local_replies: 0,
        vm_alive: true,
        done: false,
    };
    let action = driver.call(|vm, ctx| vm.on_request_headers(ctx, n_headers, client_eos));
    if let Some(action) = action {
        driver.after_request_callback(action).await;
    }
    driver.run().await;
    driver.finish();
    worker.stats.active_streams.fetch_sub(1, Ordering::Relaxed);
}

/// The next frame of an optional body; pending forever when there is none.
async fn next_client_frame(
    body: Option<&mut Incoming>,
) -> Option<Result<Frame<Bytes>, hyper::Error>> {
    match body {
        Some(body) => body.frame().await,
        None => std::future::pending().await,
    }
}

async fn next_source_frame(source: Option<&mut Source>) -> Option<Result<Frame<Bytes>, ()>> {
    match source {
        Some(source) => source.frame().await,
        None => std::future::pending().await,
    }
}

async fn upstream_answer(
    upstream: Option<&mut UpstreamFuture>,
) -> Result<hyper::Response<Incoming>, RouterReply> {
    match upstream {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client can no longer get the response.
async fn client_gone(
    response_tx: Option<&mut oneshot::Sender<Answer>>,
    body_tx: Option<&mpsc::Sender<FrameResult>>,
) {
    match (response_tx, body_tx) {
        (Some(tx), _) => tx.closed().await,
        (None, Some(tx)) => tx.closed().await,
        (None, None) => std::future::pending().await,
    }
}

impl Driver {
    /// One VM call on this stream's context. `None` when the VM failed (the stream has
    /// then been failed too).
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut detour_host::Vm<super::host::WorkerHost>, u32) -> Result<R, CallError>,
    ) -> Option<R> {
        if !self.vm_alive {
            return None;
        }
        let ctx = self.ctx;
        match self.vm.call(|vm| f(vm, ctx)) {
            Ok(value) => {
                while let Ok(event) = self.events.try_recv() {
                    self.pending.push_back(event);
                }
                Some(value)
            }
            Err(_) => {
                self.fail_stream();
                None
            }
        }
    }

    /// Whether a local reply or close asked for during the last call overrides its
    /// return value (Envoy forces "stop" after `send_local_response`).
    fn stopped(&self) -> bool {
        self.pending
            .iter()
            .any(|e| matches!(e, StreamEvent::LocalReply(_) | StreamEvent::Close))
    }

    fn with_record<R>(&self, f: impl FnOnce(&mut StreamRecord) -> R) -> Option<R> {
        self.vm.streams.borrow_mut().get_mut(&self.ctx).map(f)
    }

    async fn run(&mut self) {
        loop {
            while let Some(event) = self.pending.pop_front() {
                if self.done {
                    break;
                }
                self.on_event(event).await;
            }
            if self.done {
                return;
            }
            let pulling = self.source.is_some() && !self.source_eos;
            tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(event) => self.pending.push_back(event),
                    None => self.done = true,
                },
                () = client_gone(self.response_tx.as_mut(), self.body_tx.as_ref()) => {
                    self.done = true;
                }
                frame = next_client_frame(self.client_body.as_mut()) => {
                    self.on_client_frame(frame).await;
                }
                answer = upstream_answer(self.upstream.as_mut()) => {
                    self.upstream = None;
                    self.on_upstream_answer(answer);
                }
                frame = next_source_frame(if pulling { self.source.as_mut() } else { None }) => {
                    self.on_source_frame(frame).await;
                }
            }
        }
    }

    async fn on_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::LocalReply(response) => self.local_reply(response),
            StreamEvent::ContinueRequest => match self.request {
                Request::Held => self.release_request().await,
                Request::Released => self.forward_request_body().await,
                Request::Abandoned => {}
            },
            StreamEvent::ContinueResponse => {
                if self.encoding && self.response_paused {
                    self.response_paused = false;
                    self.flush_response().await;
                }
            }
            StreamEvent::Close => self.reset(),
            StreamEvent::VmFailed => self.fail_stream(),
        }
    }

    // ---- request side -------------------------------------------------------------

    async fn on_client_frame(&mut self, frame: Option<Result<Frame<Bytes>, hyper::Error>>) {
        match frame {
            None => {
                self.client_body = None;
                self.client_eos = true;
                self.request_body_callback().await;
            }
            Some(Err(_)) => {
                // The client went away mid-request.
                self.done = true;
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.with_record(|r| {
                        r.info.request_size = r.info.request_size.saturating_add(data.len() as u64);
                        r.request_body
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&data);
                    });
                    self.client_eos = self.client_body.as_ref().is_none_or(Body::is_end_stream);
                    if self.client_eos {
                        self.client_body = None;
                    }
                    self.request_body_callback().await;
                } else if let Some(trailers) = frame.trailers_ref() {
                    let map = HeaderMap::from_pairs(
                        trailers
                            .iter()
                            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
                    );
                    let n = map.len();
                    self.with_record(|r| r.request_trailers = Some(map));
                    self.client_body = None;
                    self.client_eos = true;
                    if let Some(action) = self.call(|vm, ctx| vm.on_request_trailers(ctx, n)) {
                        self.after_request_callback(action).await;
                    }
                }
            }
        }
    }

    /// `on_request_body` with everything buffered so far.
    async fn request_body_callback(&mut self) {
        if self.request == Request::Abandoned {
            return;
        }
        let buffered = self
            .with_record(|r| r.request_body.as_ref().map_or(0, Vec::len))
            .unwrap_or(0);
        if self.request == Request::Held && buffered > self.worker.settings.buffer_limit_bytes {
            self.local_reply(LocalResponse {
                status: 413,
                details: "request_payload_too_large".into(),
                body: b"Payload Too Large".to_vec(),
                headers: vec![(b"connection".to_vec(), b"close".to_vec())],
                grpc_status: None,
            });
            return;
        }
        let eos = self.client_eos;
        if let Some(action) = self.call(|vm, ctx| vm.on_request_body(ctx, buffered, eos)) {
            self.after_request_callback(action).await;
        }
    }

    async fn after_request_callback(&mut self, action: detour_host::Action) {
        if self.stopped() || action == detour_host::Action::Pause {
            return;
        }
        match self.request {
            Request::Held => self.release_request().await,
            Request::Released => self.forward_request_body().await,
            Request::Abandoned => {}
        }
    }

    /// Sends what is buffered to the upstream (the request was already released).
    async fn forward_request_body(&mut self) {
        let chunk = self
            .with_record(|r| r.request_body.as_mut().map(std::mem::take))
            .flatten()
            .unwrap_or_default();
        if let Some(tx) = &self.upstream_body {
            if !chunk.is_empty() && tx.send(Ok(Frame::data(Bytes::from(chunk)))).is_err() {
                self.upstream_body = None;
            }
        }
        if self.client_eos {
            self.upstream_body = None;
        }
    }

    /// The router: pick the cluster, strip routing headers, send upstream.
    async fn release_request(&mut self) {
        self.request = Request::Released;
        let taken = self.with_record(|r| {
            let headers = r.request_headers.take();
            let body = r.request_body.replace(Vec::new()).unwrap_or_default();
            (headers, body)
        });
        let Some((Some(headers), body)) = taken else {
            return;
        };
        let cluster = headers.get_str(CLUSTER_HEADER).unwrap_or("").to_string();
        let per_try = headers
            .get_str(PER_TRY_TIMEOUT_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let plugin = self.vm.plugin.clone();
        let Some(upstream) = plugin.clusters.get(&cluster) else {
            self.router_reply(&RouterReply::cluster_not_found());
            return;
        };
        self.with_record(|r| {
            r.info.cluster = Some(cluster.clone());
            r.info.upstream = Some(format!("{}:{}", upstream.host, upstream.port));
        });
        // As Envoy: a request that (still) says its length is sent with it; one whose
        // length the filter removed goes chunked.
        let has_length = headers.get(b"content-length").is_some();
        let body = if self.client_eos && has_length {
            ChannelBody::full(body)
        } else {
            let (tx, channel) = ChannelBody::unbounded();
            if !body.is_empty() {
                let _ = tx.send(Ok(Frame::data(Bytes::from(body))));
            }
            if !self.client_eos {
                self.upstream_body = Some(tx);
            }
            channel
        };
        match router::upstream_request(upstream, &headers, body) {
            Ok(request) => {
                let client = self.worker.client.clone();
                self.upstream = Some(Box::pin(router::forward(client, request, per_try)));
            }
            Err(message) => {
                self.worker
                    .log
                    .warn(&format!("cannot build the upstream request: {message}"));
                self.router_reply(&RouterReply::cluster_not_found());
            }
        }
    }

    // ---- response side ------------------------------------------------------------

    fn on_upstream_answer(&mut self, answer: Result<hyper::Response<Incoming>, RouterReply>) {
        match answer {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let headers = router::response_headers(&parts);
                let status = parts.status.as_u16();
                self.with_record(|r| {
                    r.info.response_code = Some(status);
                    r.info.code_details = Some("via_upstream".into());
                });
                let eos = body.is_end_stream();
                self.source = Some(Source::Upstream(body));
                self.begin_response(headers, eos);
            }
            Err(reply) => self.router_reply(&reply),
        }
    }

    /// A synthetic answer of the router: through the filter like an upstream's.
    fn router_reply(&mut self, reply: &RouterReply) {
        self.upstream = None;
        self.upstream_body = None;
        self.with_record(|r| {
            r.info.response_code = Some(reply.status);
            r.info.code_details = Some(reply.details.clone());
        });
        let body = Bytes::from_static(reply.body.as_bytes());
        let eos = body.is_empty();
        self.source = Some(Source::Local((!eos).then_some(body)));
        self.begin_response(reply.headers(), eos);
    }

    /// A local reply (the filter's, or the host's 413): replaces whatever response was
    /// held, or resets the stream if the response already started.
    fn local_reply(&mut self, response: LocalResponse) {
        if self.headers_sent {
            self.reset();
            return;
        }
        self.local_replies += 1;
        if self.local_replies > 4 {
            self.worker
                .log
                .warn("a filter kept replacing its own local reply; resetting the stream");
            self.reset();
            return;
        }
        // The upstream exchange (if any) is abandoned; the client's body is not read on.
        self.upstream = None;
        self.upstream_body = None;
        self.client_body = None;
        self.request = Request::Abandoned;
        let mut headers = HeaderMap::new();
        headers.add(b":status", response.status.to_string().as_bytes());
        headers.add(
            b"content-length",
            response.body.len().to_string().as_bytes(),
        );
        if !response.body.is_empty() {
            headers.add(b"content-type", b"text/plain");
        }
        for (name, value) in &response.headers {
            headers.replace(name, value);
        }
        if let Some(grpc) = response.grpc_status {
            headers.replace(b"grpc-status", grpc.to_string().as_bytes());
        }
        self.with_record(|r| {
            r.info.response_code = Some(response.status);
            r.info.code_details = Some(response.details.clone());
            r.request_headers = None;
            r.request_body = None;
        });
        let eos = response.body.is_empty();
        self.source = Some(Source::Local((!eos).then(|| Bytes::from(response.body))));
        self.begin_response(headers, eos);
    }

    /// `on_response_headers` for a new response (upstream, router or local).
    fn begin_response(&mut self, headers: HeaderMap, eos: bool) {
        self.encoding = true;
        self.response_paused = false;
        self.source_eos = eos;
        if eos {
            self.source = None;
        }
        let n = headers.len();
        self.with_record(|r| {
            r.response_headers = Some(headers);
            r.response_body = Some(Vec::new());
        });
        let Some(action) = self.call(|vm, ctx| vm.on_response_headers(ctx, n, eos)) else {
            return;
        };
        if self.stopped() {
            return;
        }
        if action == detour_host::Action::Pause {
            self.response_paused = true;
        } else if eos {
            self.send_complete_response();
        } else {
            self.send_response_head();
        }
    }

    async fn on_source_frame(&mut self, frame: Option<Result<Frame<Bytes>, ()>>) {
        match frame {
            None => {
                self.source = None;
                self.source_eos = true;
                self.response_body_callback().await;
            }
            Some(Err(())) => {
                self.source = None;
                self.source_eos = true;
                if self.headers_sent {
                    // Bytes already reached the client: the stream is cut.
                    self.reset();
                } else {
                    // Held headers, body reset: Envoy answers 502 itself, without
                    // the filter's callbacks.
                    self.with_record(|r| {
                        r.info.response_code = Some(502);
                        r.info.code_details = Some(
                            "upstream_reset_after_response_started{connection_termination}".into(),
                        );
                    });
                    self.respond_directly(
                        502,
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    );
                }
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    let held = self.with_record(|r| {
                        let body = r.response_body.get_or_insert_with(Vec::new);
                        body.extend_from_slice(&data);
                        body.len()
                    });
                    if self.source.as_ref().is_none_or(Source::is_end_stream) {
                        self.source = None;
                        self.source_eos = true;
                    }
                    let limit = self.worker.settings.buffer_limit_bytes;
                    if (!self.headers_sent || self.response_paused) && held.unwrap_or(0) > limit {
                        if self.headers_sent {
                            self.reset();
                        } else {
                            self.with_record(|r| {
                                r.info.response_code = Some(500);
                                r.info.code_details = Some("response_payload_too_large".into());
                            });
                            self.respond_directly(500, "Internal Server Error");
                        }
                        return;
                    }
                    self.response_body_callback().await;
                } else if let Some(trailers) = frame.trailers_ref() {
                    let map = HeaderMap::from_pairs(
                        trailers
                            .iter()
                            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
                    );
                    let n = map.len();
                    self.with_record(|r| r.response_trailers = Some(map));
                    self.source = None;
                    self.source_eos = true;
                    let Some(action) = self.call(|vm, ctx| vm.on_response_trailers(ctx, n)) else {
                        return;
                    };
                    if !self.stopped() && action == detour_host::Action::Continue {
                        self.response_paused = false;
                        self.flush_response().await;
                    }
                }
            }
        }
    }

    /// `on_response_body` with everything buffered so far.
    async fn response_body_callback(&mut self) {
        let size = self
            .with_record(|r| r.response_body.as_ref().map_or(0, Vec::len))
            .unwrap_or(0);
        let eos = self.source_eos;
        let Some(action) = self.call(|vm, ctx| vm.on_response_body(ctx, size, eos)) else {
            return;
        };
        if self.stopped() {
            return;
        }
        if action == detour_host::Action::Pause {
            self.response_paused = true;
        } else {
            self.response_paused = false;
            self.flush_response().await;
        }
    }

    /// Sends what the filter let through: the held head (if not sent yet) and the
    /// buffered body; ends the response at end of stream.
    async fn flush_response(&mut self) {
        if !self.headers_sent {
            if self.source_eos {
                self.send_complete_response();
                return;
            }
            self.send_response_head();
        }
        let chunk = self
            .with_record(|r| r.response_body.as_mut().map(std::mem::take))
            .flatten()
            .unwrap_or_default();
        self.with_record(|r| {
            r.info.response_size = r.info.response_size.saturating_add(chunk.len() as u64)
        });
        if let Some(tx) = &self.body_tx {
            if !chunk.is_empty() && tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                self.done = true;
                return;
            }
        }
        if self.source_eos {
            if let Some(trailers) = self.with_record(|r| r.response_trailers.clone()).flatten() {
                if let (Some(tx), Ok(map)) = (&self.body_tx, to_http_headers(&trailers)) {
                    let _ = tx.send(Ok(Frame::trailers(map))).await;
                }
            }
            self.body_tx = None;
            self.done = true;
        }
    }

    /// The held head with a channel body.
    fn send_response_head(&mut self) {
        let (tx, body) = ChannelBody::channel(CHANNEL_FRAMES);
        if self.send_head(body, None) {
            self.body_tx = Some(tx);
        }
    }

    /// The held head with the whole (buffered) body; the response is complete.
    fn send_complete_response(&mut self) {
        let body = self
            .with_record(|r| r.response_body.as_mut().map(std::mem::take))
            .flatten()
            .unwrap_or_default();
        let len = body.len();
        self.with_record(|r| {
            r.info.response_size = r.info.response_size.saturating_add(len as u64)
        });
        self.send_head(ChannelBody::full(body), Some(len));
        self.done = true;
    }

    fn send_head(&mut self, body: ChannelBody, complete_len: Option<usize>) -> bool {
        let headers = self
            .with_record(|r| r.response_headers.take())
            .flatten()
            .unwrap_or_default();
        let mut response = hyper::Response::new(body);
        let status = headers
            .get_str(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .and_then(|s| hyper::StatusCode::from_u16(s).ok())
            .unwrap_or(hyper::StatusCode::BAD_GATEWAY);
        *response.status_mut() = status;
        for (name, value) in headers.pairs() {
            if name.first() == Some(&b':')
                || HOP_BY_HOP.contains(&String::from_utf8_lossy(name).as_ref())
            {
                continue;
            }
            if complete_len.is_some() && name.as_slice() == b"content-length" {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name),
                hyper::header::HeaderValue::from_bytes(value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        if let Some(len) = complete_len {
            if let Ok(value) = hyper::header::HeaderValue::from_str(&len.to_string()) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_LENGTH, value);
            }
        }
        finish_head(response.headers_mut(), self.client_eos);
        // Keep the sent head readable for `on_log`.
        self.with_record(|r| r.info.response_code = Some(status.as_u16()));
        self.headers_sent = true;
        match self.response_tx.take() {
            Some(tx) => tx.send(Ok(response)).is_ok(),
            None => false,
        }
    }

    /// A response from the host itself, bypassing the filter.
    fn respond_directly(&mut self, status: u16, body: &'static str) {
        self.upstream = None;
        self.source = None;
        if let Some(tx) = self.response_tx.take() {
            let _ = tx.send(Ok(plain_response(status, body)));
        }
        self.headers_sent = true;
        self.done = true;
    }

    /// Cuts the stream: no response (or a truncated one) and a reset.
    fn reset(&mut self) {
        self.upstream = None;
        self.source = None;
        if let Some(tx) = self.response_tx.take() {
            let _ = tx.send(Err(StreamReset));
        }
        if let Some(tx) = self.body_tx.take() {
            let _ = tx.try_send(Err(StreamReset));
        }
        self.done = true;
    }

    /// The VM failed: 503 `wasm_fail_stream` (or a reset once the response started).
    fn fail_stream(&mut self) {
        self.vm_alive = false;
        if self.done {
            return;
        }
        if self.headers_sent {
            self.reset();
        } else {
            self.with_record(|r| {
                r.info.response_code = Some(503);
                r.info.code_details = Some("wasm_fail_stream".into());
            });
            self.respond_directly(503, "");
        }
    }

    /// `on_log`, `on_done`, `on_delete`, then the stream is forgotten.
    fn finish(&mut self) {
        self.upstream = None;
        self.source = None;
        self.with_record(|r| {
            if r.request_headers.is_none() {
                r.request_headers = Some(r.info.request_headers.clone());
            }
        });
        if self.vm_alive {
            let _ = self.vm.call(|vm| vm.finish_stream(self.ctx));
        }
        self.vm.streams.borrow_mut().remove(&self.ctx);
    }
}

fn to_http_headers(map: &HeaderMap) -> Result<http::HeaderMap, ()> {
    let mut out = http::HeaderMap::new();
    for (name, value) in map.pairs() {
        let name = hyper::header::HeaderName::from_bytes(name).map_err(|_| ())?;
        let value = hyper::header::HeaderValue::from_bytes(value).map_err(|_| ())?;
        out.append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_maps_have_pseudo_headers_first_and_no_host() {
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/v1/chat/completions?x=1")
            .header("Host", "example.test:8080")
            .header("Connection", "keep-alive")
            .header("Authorization", "Bearer t")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let map = request_header_map(&parts, "rid");
        let names: Vec<_> = map
            .pairs()
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(&names[..4], &[":authority", ":path", ":method", ":scheme"]);
        assert_eq!(map.get_str(":authority"), Some("example.test:8080"));
        assert_eq!(map.get_str(":path"), Some("/v1/chat/completions?x=1"));
        assert!(map.get(b"host").is_none() && map.get(b"connection").is_none());
        assert_eq!(map.get_str("x-request-id"), Some("rid"));
        assert_eq!(new_request_id().len(), 36);
    }
}
