//! The RLS v3 service over gRPC with a tonic client, and the sliding window's boundary
//! behaviour with a virtual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests that wait for real processes need a clock and a sleep"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::transport::Channel;

use detour_state::rls::codec::ProstCodec;
use detour_state::rls::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, UInt64Value, Unit,
};
use detour_state::rls::service::SHOULD_RATE_LIMIT;
use detour_state::rls::window::{Check, RateWindows};
use detour_state::rls::{DeploymentRates, RateLimits};
use detour_state::{Options, Redis};
use support::redis_server::RedisServer;

fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        limit: None,
        hits_addend: hits.map(|value| UInt64Value { value }),
    }
}

async fn ask(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static(SHOULD_RATE_LIMIT),
        ProstCodec::<RateLimitRequest, RateLimitResponse>::default(),
    )
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn should_rate_limit_counts_all_descriptors_or_none() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut limits = RateLimits::default();
    limits.insert(
        "fast/openai/gpt-4o",
        DeploymentRates {
            rpm: Some(3),
            tpm: Some(100),
        },
    );
    let running = detour_state::server::start(Options {
        redis_url: redis.url(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        namespace: "rls-test".into(),
        redis_timeout: Duration::from_millis(500),
        limits,
    })
    .await
    .unwrap();
    let channel = Channel::from_shared(format!("http://{}", running.grpc.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let rpm = descriptor(
        &[("deployment", "fast/openai/gpt-4o"), ("rate", "rpm")],
        None,
    );
    let tpm = |tokens| {
        descriptor(
            &[("deployment", "fast/openai/gpt-4o"), ("rate", "tpm")],
            Some(tokens),
        )
    };
    let both = |tokens| RateLimitRequest {
        domain: "detour".into(),
        descriptors: vec![rpm.clone(), tpm(tokens)],
        hits_addend: 0,
    };

    let first = ask(&mut grpc, both(60)).await;
    assert_eq!(first.overall_code, Code::Ok as i32);
    assert_eq!(first.statuses.len(), 2);
    assert_eq!(first.statuses[0].limit_remaining, 2);
    assert_eq!(first.statuses[1].limit_remaining, 40);
    let limit = first.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (100, Unit::Minute as i32)
    );

    // 60 more tokens do not fit: over, and the request counts nowhere (rpm stays at 1).
    let second = ask(&mut grpc, both(60)).await;
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    assert_eq!(second.statuses[0].code, Code::Ok as i32);
    assert_eq!(second.statuses[1].code, Code::OverLimit as i32);

    let only_rpm = |hits| RateLimitRequest {
        domain: "detour".into(),
        descriptors: vec![rpm.clone()],
        hits_addend: hits,
    };
    let third = ask(&mut grpc, only_rpm(0)).await; // 0 means 1
    assert_eq!(
        (third.overall_code, third.statuses[0].limit_remaining),
        (Code::Ok as i32, 1)
    );
    let fourth = ask(&mut grpc, only_rpm(1)).await;
    assert_eq!(
        (fourth.overall_code, fourth.statuses[0].limit_remaining),
        (Code::Ok as i32, 0)
    );
    let fifth = ask(&mut grpc, only_rpm(1)).await;
    assert_eq!(fifth.overall_code, Code::OverLimit as i32);
    assert!(fifth.statuses[0].duration_until_reset.is_some());

    // A descriptor without a limit is answered OK and never counted.
    let other = ask(
        &mut grpc,
        RateLimitRequest {
            domain: "detour".into(),
            descriptors: vec![descriptor(&[("user", "x")], None)],
            hits_addend: 1,
        },
    )
    .await;
    assert_eq!(other.overall_code, Code::Ok as i32);
    assert!(other.statuses[0].current_limit.is_none());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_has_no_boundary_burst() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let windows = RateWindows::new(
        Arc::new(Redis::open(&redis.url(), Duration::from_secs(2)).unwrap()),
        "window-test",
    );
    let check = |hits| Check {
        counter: "d".into(),
        limit: 10,
        hits,
        window_ms: 60_000,
    };
    let minute = 1_795_460_760_000; // a minute boundary
                                    // 10 at the end of one minute ...
    assert!(!windows.check(&[check(10)], minute + 59_000).await.unwrap()[0].over);
    // ... leave no room just after the boundary (a fixed window would allow 10 more) ...
    let just_after = windows.check(&[check(1)], minute + 60_001).await.unwrap();
    assert!(just_after[0].over);
    assert_eq!(just_after[0].used, 10);
    // ... and half the room half a minute later.
    for _ in 0..5 {
        assert!(!windows.check(&[check(1)], minute + 90_000).await.unwrap()[0].over);
    }
    assert!(windows.check(&[check(1)], minute + 90_000).await.unwrap()[0].over);
    // Two minutes of quiet: everything is forgotten.
    assert!(!windows.check(&[check(10)], minute + 181_000).await.unwrap()[0].over);
    // A single request larger than the limit passes an empty window (as rate.rs does).
    assert!(
        !windows
            .check(
                &[Check {
                    counter: "big".into(),
                    limit: 10,
                    hits: 50,
                    window_ms: 60_000
                }],
                minute
            )
            .await
            .unwrap()[0]
            .over
    );
}
