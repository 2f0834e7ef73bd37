//! detour's policy core.
//!
//! Everything detour decides lives here: the configuration model (LiteLLM's `config.yaml`
//! plus a `detour:` section), how a request picks its route group and chain, how an
//! upstream answer is classified, retries with backoff, 429 cooldowns, circuit breakers
//! with a half-open probe, and the error the client gets when everything failed.
//!
//! **Architecture invariant:** this crate performs no I/O, never reads a clock and does
//! not know proxy-wasm. Time comes in as `now` (Unix milliseconds) on every call that
//! depends on it; shared counters come in through the [`store::Store`] trait; randomness
//! comes in as a seed. The glue (`filter/wasm`) and our host feed it and carry out the
//! [`flow::Step`]s it returns.

// Arithmetic that can overflow is a panic in debug builds and a silent wrap in release:
// money and counters saturate, hashing wraps, and every choice is explicit.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![warn(clippy::cast_possible_truncation)]

pub mod admin;
pub mod backoff;
pub mod budget;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod event;
pub mod fleet;
pub mod flow;
pub mod halt;
pub mod health;
pub mod ledger;
pub mod meter;
mod num;
pub mod outgoing;
pub mod period;
pub mod price;
pub mod probe;
pub mod protocol;
pub mod rate;
pub mod request;
pub mod respond;
pub mod retry_after;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod webhook;

/// Wall-clock time in milliseconds since the Unix epoch, as the host reports it.
///
/// proxy-wasm only offers the wall clock, which can step; every comparison in the core
/// tolerates a clock that moves backwards (saturating arithmetic, no "elapsed" panics).
pub type UnixMillis = u64;
