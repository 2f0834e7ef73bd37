//! The admin listener (127.0.0.1 only): `/ready`, `/metrics` (Prometheus text; also at
//! `/stats/prometheus`, Envoy's path) and `/stats` (`name: value` lines, Envoy-style).
//! Guest metrics appear without a prefix, as Envoy shows `wasmcustom.*` stats in
//! Prometheus output.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use detour_host::metrics::{MetricValue, HISTOGRAM_BUCKETS};
use detour_host::Shared;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::worker::Stats;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Process-wide counters.
    pub stats: Arc<Stats>,
    /// Shared data and guest metrics.
    pub shared: Shared,
    /// The plugin's `vm_id` (for the shared-data key count).
    pub vm_id: String,
    /// Worker threads.
    pub workers: usize,
}

/// Serves the admin listener until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(state: &AdminState, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/ready" => (200, "text/plain", "LIVE\n".to_string()),
        "/metrics" | "/stats/prometheus" => (200, "text/plain; version=0.0.4", prometheus(state)),
        "/stats" => (200, "text/plain", stats_text(state)),
        _ => (
            404,
            "text/plain",
            "admin endpoints: /ready /metrics /stats/prometheus /stats\n".to_string(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The host's own counters, as (name, kind, value).
fn host_metrics(state: &AdminState) -> Vec<(String, &'static str, u64)> {
    let s = &state.stats;
    let mut out = vec![
        (
            "detour_serve_requests_total".to_string(),
            "counter",
            s.requests.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_vm_failures_total".into(),
            "counter",
            s.vm_failures.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_vm_reloads_total".into(),
            "counter",
            s.vm_reloads.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_vm_reload_failures_total".into(),
            "counter",
            s.vm_reload_failures.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_vm_reload_backoff_total".into(),
            "counter",
            s.vm_reload_backoff.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_config_reloads_total".into(),
            "counter",
            s.config_reloads.load(Ordering::Relaxed),
        ),
        (
            "detour_serve_active_streams".into(),
            "gauge",
            s.active_streams.load(Ordering::Relaxed),
        ),
        ("detour_serve_workers".into(), "gauge", state.workers as u64),
        (
            "detour_serve_shared_data_keys".into(),
            "gauge",
            state.shared.data.len(&state.vm_id) as u64,
        ),
    ];
    for (class, counter) in s.responses.iter().enumerate().skip(1) {
        out.push((
            format!("detour_serve_responses_total{{class=\"{class}xx\"}}"),
            "counter",
            counter.load(Ordering::Relaxed),
        ));
    }
    out
}

fn prometheus(state: &AdminState) -> String {
    let mut out = String::new();
    let mut typed = std::collections::BTreeSet::new();
    for (name, kind, value) in host_metrics(state) {
        let base = name.split('{').next().unwrap_or(&name).to_string();
        if typed.insert(base.clone()) {
            let _ = writeln!(out, "# TYPE {base} {kind}");
        }
        let _ = writeln!(out, "{name} {value}");
    }
    for (full_name, value) in state.shared.metrics.snapshot() {
        let (base, labels) = split_tags(&full_name);
        let name = sanitize(&base);
        let (kind, lines) = match value {
            MetricValue::Counter(v) => (
                "counter",
                vec![format!("{name}{} {v}", label_text(&labels, None))],
            ),
            MetricValue::Gauge(v) => (
                "gauge",
                vec![format!("{name}{} {v}", label_text(&labels, None))],
            ),
            MetricValue::Histogram {
                count,
                sum,
                buckets,
            } => {
                let mut lines: Vec<String> = HISTOGRAM_BUCKETS
                    .iter()
                    .zip(&buckets)
                    .map(|(bound, n)| {
                        let le = bound.to_string();
                        format!("{name}_bucket{} {n}", label_text(&labels, Some(&le)))
                    })
                    .collect();
                lines.push(format!(
                    "{name}_bucket{} {count}",
                    label_text(&labels, Some("+Inf"))
                ));
                lines.push(format!("{name}_sum{} {sum}", label_text(&labels, None)));
                lines.push(format!("{name}_count{} {count}", label_text(&labels, None)));
                ("histogram", lines)
            }
        };
        if typed.insert(name.clone()) {
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Envoy's tag syntax in a stat name (`base.key=.=value;.;key2=.=value2;.;`, what
/// `stats_config.stats_tags` extracts in the rendered bootstrap) as a base name and
/// labels. A name without tags is its own base.
pub fn split_tags(name: &str) -> (String, Vec<(String, String)>) {
    let Some(first) = name.find("=.=") else {
        return (name.to_string(), Vec::new());
    };
    let Some(dot) = name.get(..first).and_then(|head| head.rfind('.')) else {
        return (name.to_string(), Vec::new());
    };
    let base = name.get(..dot).unwrap_or(name).to_string();
    let mut labels = Vec::new();
    let mut rest = name.get(dot + 1..).unwrap_or("");
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once("=.=") else {
            return (name.to_string(), Vec::new());
        };
        let (value, after) = after.split_once(";.;").unwrap_or((after, ""));
        labels.push((key.to_string(), value.to_string()));
        rest = after.strip_prefix('.').unwrap_or(after);
    }
    (base, labels)
}

fn label_text(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{}=\"{v}\"", sanitize(k))
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn stats_text(state: &AdminState) -> String {
    let mut out = String::new();
    for (name, _, value) in host_metrics(state) {
        let _ = writeln!(out, "{name}: {value}");
    }
    for (name, value) in state.shared.metrics.snapshot() {
        let _ = match value {
            MetricValue::Counter(v) => writeln!(out, "wasmcustom.{name}: {v}"),
            MetricValue::Gauge(v) => writeln!(out, "wasmcustom.{name}: {v}"),
            MetricValue::Histogram { count, sum, .. } => {
                writeln!(out, "wasmcustom.{name}: count={count} sum={sum}")
            }
        };
    }
    out
}

/// A Prometheus-safe metric name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_tag_syntax_becomes_labels() {
        let (base, labels) =
            split_tags("detour_requests_total.group=.=g;.;deployment=.=g/openai/m;.;");
        assert_eq!(base, "detour_requests_total");
        assert_eq!(
            labels,
            vec![
                ("group".into(), "g".into()),
                ("deployment".into(), "g/openai/m".into())
            ]
        );
        assert_eq!(split_tags("plain.name").0, "plain.name");
        assert_eq!(
            label_text(&labels, Some("+Inf")),
            r#"{group="g",deployment="g/openai/m",le="+Inf"}"#
        );
    }
}
