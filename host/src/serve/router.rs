//! The part of Envoy's router detour relies on: the upstream clusters (one per
//! `api_base` authority, named exactly as `detour envoy` names them), one pooled
//! HTTP/1.1 client per worker (TLS with SNI through rustls and the bundled web PKI
//! roots), and Envoy's synthetic answers when an upstream cannot answer:
//!
//! | what happened | status | body | `response.code_details` |
//! |---|---|---|---|
//! | connection refused / unreachable | 503 | `upstream connect error or disconnect/reset before headers. reset reason: remote connection failure` | `upstream_reset_before_response_started{remote_connection_failure}` |
//! | connect timeout (5 s, the cluster's `connect_timeout`) | 503 | `… reset reason: connection timeout` | `…{connection_timeout}` |
//! | closed before the response headers | 503 | `… reset reason: connection termination` | `…{connection_termination}` |
//! | not HTTP | 503 | `… reset reason: protocol error` | `…{protocol_error}` |
//! | per-try timeout (until response headers) | 504 | `upstream request timeout` | `upstream_per_try_timeout` |
//! | unknown cluster | 503 | (empty) | `cluster_not_found` |
//!
//! Each synthetic answer has exactly three headers (`:status`, `content-length`,
//! `content-type: text/plain`), as Envoy's do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use detour_core::cluster::{Scheme, Upstream};
use detour_core::config::Config;
use detour_host::{HeaderMap, HttpCallRequest, HttpCallResponse};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ChannelBody;

/// The cluster's connect timeout (Envoy: `connect_timeout: 5s` in the rendered bootstrap).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer a `dispatch_http_call` accepts (Envoy's async-client limit).
pub const MAX_CALL_RESPONSE_BYTES: usize = 32 << 20;

/// The request header naming the cluster (`cluster_header` in the Envoy route).
pub const CLUSTER_HEADER: &str = "x-detour-cluster";

/// The per-try timeout header the router honours when a filter sets it.
pub const PER_TRY_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-per-try-timeout-ms";

/// `x-envoy-*` request headers the router consumes (and never forwards).
const ROUTER_HEADERS: [&str; 9] = [
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Hop-by-hop headers, never forwarded in either direction.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "http2-settings",
];

/// The upstream clusters by name.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    by_name: BTreeMap<String, Upstream>,
}

impl Clusters {
    /// One cluster per distinct upstream of the config (`detour_core::cluster` names),
    /// plus those the filter reaches with `dispatch_http_call`, as `detour envoy` renders
    /// them: the events webhook, and the fleet state service when `detour serve` does not
    /// answer it in-process (a fleet without `redis`; see [`super::fleet`]).
    pub fn from_config(config: &Config) -> Self {
        let mut by_name = BTreeMap::new();
        for deployment in &config.deployments {
            by_name
                .entry(deployment.upstream.cluster.clone())
                .or_insert_with(|| deployment.upstream.clone());
        }
        if let Some(webhook) = &config.webhook {
            by_name
                .entry(webhook.upstream.cluster.clone())
                .or_insert_with(|| webhook.upstream.clone());
        }
        if let Some(fleet) = config.fleet.as_ref().filter(|f| f.redis.is_none()) {
            by_name
                .entry(fleet.state.cluster.clone())
                .or_insert_with(|| fleet.state.clone());
        }
        Clusters { by_name }
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.by_name.get(name)
    }

    /// The cluster names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

/// One worker's upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ChannelBody>;

/// A pooled HTTP/1.1 client for http and https upstreams.
pub fn new_client() -> Result<UpstreamClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// A synthetic answer the router gives instead of an upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterReply {
    /// HTTP status.
    pub status: u16,
    /// Body (`text/plain`).
    pub body: &'static str,
    /// `response.code_details`.
    pub details: String,
}

impl RouterReply {
    fn reset(reason: &str) -> Self {
        let body = match reason {
            "remote_connection_failure" => "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
            "connection_timeout" => "upstream connect error or disconnect/reset before headers. reset reason: connection timeout",
            "protocol_error" => "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            _ => "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        };
        RouterReply {
            status: 503,
            body,
            details: format!("upstream_reset_before_response_started{{{reason}}}"),
        }
    }

    /// The per-try timeout fired before the response headers.
    pub fn per_try_timeout() -> Self {
        RouterReply {
            status: 504,
            body: "upstream request timeout",
            details: "upstream_per_try_timeout".into(),
        }
    }

    /// The whole-request timeout of an HTTP call fired.
    pub fn response_timeout() -> Self {
        RouterReply {
            status: 504,
            body: "upstream request timeout",
            details: "upstream_response_timeout".into(),
        }
    }

    /// No cluster of that name (or no cluster header).
    pub fn cluster_not_found() -> Self {
        RouterReply {
            status: 503,
            body: "",
            details: "cluster_not_found".into(),
        }
    }

    /// The three headers Envoy gives a synthetic answer.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.add(b":status", self.status.to_string().as_bytes());
        headers.add(b"content-length", self.body.len().to_string().as_bytes());
        headers.add(b"content-type", b"text/plain");
        headers
    }
}

/// What a failed exchange means, in Envoy's reset-reason terms.
fn classify(err: &hyper_util::client::legacy::Error) -> RouterReply {
    if err.is_connect() {
        let timed_out = error_chain(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        }) || format!("{err:?}").contains("timed out");
        return RouterReply::reset(if timed_out {
            "connection_timeout"
        } else {
            "remote_connection_failure"
        });
    }
    let parse = error_chain(err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status() || h.is_parse_too_large())
    });
    RouterReply::reset(if parse {
        "protocol_error"
    } else {
        "connection_termination"
    })
}

fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// The URI the client connects to for `path` on `upstream`.
pub fn upstream_uri(upstream: &Upstream, path: &str) -> Result<hyper::Uri, String> {
    let host = if upstream.host.contains(':') {
        format!("[{}]", upstream.host)
    } else {
        upstream.host.clone()
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!(
        "{}://{host}:{}{path}",
        match upstream.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        },
        upstream.port
    )
    .parse::<hyper::Uri>()
    .map_err(|e| format!("bad upstream URI: {e}"))
}

/// Builds the upstream request from a (filter-modified) request header map: the
/// cluster header, router-consumed `x-envoy-*` headers and hop-by-hop headers are
/// removed (`suppress_envoy_headers`: nothing `x-envoy-*` is added); `:authority`
/// becomes `host`.
pub fn upstream_request(
    upstream: &Upstream,
    headers: &HeaderMap,
    body: ChannelBody,
) -> Result<hyper::Request<ChannelBody>, String> {
    let method = headers.get_str(":method").unwrap_or("GET");
    let path = headers.get_str(":path").unwrap_or("/");
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(upstream_uri(upstream, path)?);
    let authority = headers
        .get_str(":authority")
        .map(str::to_string)
        .unwrap_or_else(|| upstream.authority());
    builder = builder.header(hyper::header::HOST, authority);
    for (name, value) in headers.pairs() {
        let Ok(name_text) = std::str::from_utf8(name) else {
            continue;
        };
        if name_text.starts_with(':')
            || name_text == "host"
            || name_text == CLUSTER_HEADER
            || ROUTER_HEADERS.contains(&name_text)
            || HOP_BY_HOP.contains(&name_text)
        {
            continue;
        }
        builder = builder.header(name.as_slice(), value.as_slice());
    }
    builder.body(body).map_err(|e| format!("bad request: {e}"))
}

/// Sends a routed request; the per-try timeout runs until the response headers.
pub async fn forward(
    client: UpstreamClient,
    request: hyper::Request<ChannelBody>,
    per_try_timeout: Option<Duration>,
) -> Result<hyper::Response<Incoming>, RouterReply> {
    let exchange = client.request(request);
    let result = match per_try_timeout {
        Some(limit) => match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => return Err(RouterReply::per_try_timeout()),
        },
        None => exchange.await,
    };
    result.map_err(|e| classify(&e))
}

/// The response's headers as a proxy-wasm map: `:status` first, hop-by-hop removed.
pub fn response_headers(parts: &http::response::Parts) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.add(b":status", parts.status.as_str().as_bytes());
    for (name, value) in &parts.headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        map.add(name.as_str().as_bytes(), value.as_bytes());
    }
    map
}

/// Carries out a `dispatch_http_call` to `upstream`: the whole exchange (headers and
/// body) under the call's timeout, the body capped at 32 MiB. Failures come back in
/// Envoy's shapes: synthetic 503/504 answers, or no headers at all (reset after the
/// headers, or an answer over the cap).
pub async fn http_call(
    client: UpstreamClient,
    upstream: Upstream,
    call: HttpCallRequest,
) -> HttpCallResponse {
    let exchange = async {
        let body = ChannelBody::full(Bytes::from(call.body));
        // hyper sets the length of the complete body itself.
        let mut headers = call.headers;
        headers.remove(b"content-length");
        let request = match upstream_request(&upstream, &headers, body) {
            Ok(request) => request,
            Err(_) => return synthetic(&RouterReply::reset("protocol_error")),
        };
        let response = match client.request(request).await {
            Ok(response) => response,
            Err(e) => return synthetic(&classify(&e)),
        };
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_CALL_RESPONSE_BYTES);
        match limited.collect().await {
            Ok(collected) => {
                let trailers = collected
                    .trailers()
                    .map(|t| {
                        HeaderMap::from_pairs(
                            t.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
                        )
                    })
                    .unwrap_or_default();
                HttpCallResponse {
                    headers: response_headers(&parts),
                    body: collected.to_bytes().to_vec(),
                    trailers,
                }
            }
            // Reset in the middle of the body, or over the cap: all is lost.
            Err(_) => HttpCallResponse::default(),
        }
    };
    match call.timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| synthetic(&RouterReply::response_timeout())),
        None => exchange.await,
    }
}

/// An HTTP call's answer made of a synthetic router reply.
pub(crate) fn synthetic(reply: &RouterReply) -> HttpCallResponse {
    HttpCallResponse {
        headers: reply.headers(),
        body: reply.body.as_bytes().to_vec(),
        trailers: HeaderMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_answers_have_envoys_exact_shape() {
        let refused = RouterReply::reset("remote_connection_failure");
        assert_eq!(refused.body.len(), 98);
        assert_eq!(
            refused.details,
            "upstream_reset_before_response_started{remote_connection_failure}"
        );
        assert_eq!(RouterReply::reset("connection_termination").body.len(), 95);
        let timeout = RouterReply::per_try_timeout();
        assert_eq!((timeout.status, timeout.body.len()), (504, 24));
        assert_eq!(timeout.headers().len(), 3);
    }

    #[test]
    fn upstream_requests_drop_routing_and_hop_by_hop_headers() {
        let up = Upstream::parse("http://127.0.0.1:9/v1").unwrap();
        let headers = HeaderMap::from_pairs([
            (":method", "POST"),
            (":path", "/v1/chat"),
            (":authority", "127.0.0.1:9"),
            ("x-detour-cluster", "c"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "1000"),
            ("connection", "keep-alive"),
            ("authorization", "Bearer k"),
        ]);
        let req = upstream_request(&up, &headers, ChannelBody::full("x")).unwrap();
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:9/v1/chat");
        assert_eq!(req.headers()["host"], "127.0.0.1:9");
        assert_eq!(req.headers()["authorization"], "Bearer k");
        assert!(req.headers().get("x-detour-cluster").is_none());
        assert!(req.headers().get("connection").is_none());
        assert!(!req
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("x-envoy")));
    }
}
