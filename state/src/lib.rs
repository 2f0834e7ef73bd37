//! `detour-state`: detour's fleet state engine, the part that lives outside the filter.
//!
//! Proxy-wasm shared data is per process, so N Envoy replicas would each spend the whole
//! budget. This crate keeps budgets and RPM/TPM for the whole fleet in Redis:
//!
//! - [`redis_ledger`]: the core's [`detour_core::ledger`] contract on Redis, every change
//!   one Lua script over every scope of the request (`src/lua/*.lua`);
//! - [`rls`]: Envoy's rate limit service API v3 over sliding windows in Redis, so the
//!   stock rate-limit filter enforces the config's `rpm`/`tpm` fleet-wide;
//! - [`http`]: the JSON API the filter reaches with `dispatch_http_call` (HTTP only);
//! - [`server`]: both behind `detour state`, stateless, any number of replicas;
//! - [`blocking`]: the Redis ledger behind the core's synchronous trait, so one
//!   conformance suite (`tests/conformance.rs`) runs on every backend.

pub mod blocking;
pub mod clock;
pub mod conn;
pub mod http;
pub mod redis_ledger;
pub mod rls;
mod scripts;
pub mod server;

pub use blocking::BlockingLedger;
pub use conn::Redis;
pub use redis_ledger::RedisLedger;
pub use server::{Options, Running, StartError};
