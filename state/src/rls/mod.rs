//! Envoy's rate limit service API v3 (`ShouldRateLimit` with `hits_addend`), so RPM/TPM
//! also work from Envoy's stock `envoy.filters.http.ratelimit` filter.

pub mod codec;
pub mod limits;
pub mod proto;
pub mod service;
pub mod window;

pub use limits::{DeploymentRates, RateLimits};
pub use service::{RateLimitService, RlsServer};
