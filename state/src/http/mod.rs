//! The HTTP/1.1 JSON API on hyper (routes in [`api`]).

pub mod api;
pub mod json;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::redis_ledger::RedisLedger;
use json::Problem;

/// Every answer's type.
pub type Reply = Response<Full<Bytes>>;

/// The largest request body accepted (a reservation with a few dozen scopes is ~2 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown` completes; each connection is
/// served on its own task.
pub async fn serve(listener: TcpListener, ledger: RedisLedger, shutdown: impl Future<Output = ()>) {
    let ledger = Arc::new(ledger);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ledger = Arc::clone(&ledger);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let ledger = Arc::clone(&ledger);
                async move { Ok::<_, Infallible>(handle(&ledger, request).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(ledger: &RedisLedger, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
            .into_reply()
        }
    };
    api::route(
        ledger,
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &bytes,
    )
    .await
}
