//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, served by tonic without
//! generated code: [`RlsServer`] is the `tower::Service` that `tonic-build` would have
//! generated, routing the one method to a unary handler with [`ProstCodec`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use detour_core::ledger::LedgerError;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;

use super::codec::ProstCodec;
use super::limits::RateLimits;
use super::proto::{
    Code, DescriptorStatus, Duration, RateLimit, RateLimitRequest, RateLimitResponse,
};
use super::window::{Check, RateWindows};
use crate::clock::now_ms;

/// The gRPC path of the one method.
pub const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The rate limit service: limits from the config, counters on Redis.
#[derive(Debug)]
pub struct RateLimitService {
    limits: RateLimits,
    windows: RateWindows,
}

impl RateLimitService {
    /// A service checking `limits` against `windows`.
    pub fn new(limits: RateLimits, windows: RateWindows) -> RateLimitService {
        RateLimitService { limits, windows }
    }

    /// Answers one request at `now`. Redis trouble is `UNAVAILABLE`: Envoy's
    /// `failure_mode_deny` then decides between letting traffic through and refusing it.
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
        now: u64,
    ) -> Result<RateLimitResponse, Status> {
        let default_hits = u64::from(request.hits_addend.max(1));
        // Descriptors with a limit, with their position in the request.
        let mut checks = Vec::new();
        let mut resolved = Vec::new();
        for (i, descriptor) in request.descriptors.iter().enumerate() {
            if let Some(r) = self.limits.resolve(descriptor) {
                let hits = descriptor
                    .hits_addend
                    .as_ref()
                    .map_or(default_hits, |h| h.value);
                checks.push(Check {
                    counter: format!("{}:{}", request.domain, r.counter),
                    limit: r.limit,
                    hits,
                    window_ms: r.window_ms,
                });
                resolved.push((i, r));
            }
        }
        let verdicts = self
            .windows
            .check(&checks, now)
            .await
            .map_err(unavailable)?;
        let mut statuses = vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: None,
            };
            request.descriptors.len()
        ];
        let mut overall = Code::Ok;
        for ((i, r), verdict) in resolved.into_iter().zip(verdicts) {
            if verdict.over {
                overall = Code::OverLimit;
            }
            let Some(status) = statuses.get_mut(i) else {
                continue;
            };
            let reset_ms = verdict.window_end.saturating_sub(now);
            *status = DescriptorStatus {
                code: if verdict.over {
                    Code::OverLimit
                } else {
                    Code::Ok
                } as i32,
                current_limit: Some(RateLimit {
                    name: r.name,
                    requests_per_unit: u32::try_from(r.limit).unwrap_or(u32::MAX),
                    unit: r.unit as i32,
                }),
                limit_remaining: u32::try_from(r.limit.saturating_sub(verdict.used))
                    .unwrap_or(u32::MAX),
                duration_until_reset: Some(Duration {
                    seconds: i64::try_from(reset_ms / 1000).unwrap_or(i64::MAX),
                    nanos: i32::try_from((reset_ms % 1000).saturating_mul(1_000_000)).unwrap_or(0),
                }),
            };
        }
        Ok(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
        })
    }
}

fn unavailable(err: LedgerError) -> Status {
    match err {
        LedgerError::Backend {
            transient: true,
            message,
        } => Status::unavailable(message),
        other => Status::internal(other.to_string()),
    }
}

/// The `tower::Service` tonic's server runs: one route, everything else `UNIMPLEMENTED`.
#[derive(Debug, Clone)]
pub struct RlsServer {
    inner: Arc<RateLimitService>,
}

impl RlsServer {
    /// Serves `service`.
    pub fn new(service: Arc<RateLimitService>) -> RlsServer {
        RlsServer { inner: service }
    }
}

impl NamedService for RlsServer {
    const NAME: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The unary handler tonic's `Grpc::unary` drives.
struct ShouldRateLimit(Arc<RateLimitService>);

impl UnaryService<RateLimitRequest> for ShouldRateLimit {
    type Response = RateLimitResponse;
    type Future = BoxFuture<tonic::Response<RateLimitResponse>, Status>;

    fn call(&mut self, request: tonic::Request<RateLimitRequest>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move {
            let answer = service
                .should_rate_limit(request.get_ref(), now_ms())
                .await?;
            Ok(tonic::Response::new(answer))
        })
    }
}

impl<B> tower_service::Service<http::Request<B>> for RlsServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == SHOULD_RATE_LIMIT {
            let method = ShouldRateLimit(Arc::clone(&self.inner));
            return Box::pin(async move {
                let mut grpc =
                    Grpc::new(ProstCodec::<RateLimitResponse, RateLimitRequest>::default());
                Ok(grpc.unary(method, request).await)
            });
        }
        Box::pin(async move {
            Ok(Status::unimplemented(format!("no method {}", request.uri().path())).into_http())
        })
    }
}
