//! Fleet mode: one budget and one RPM/TPM for many processes, kept in Redis behind
//! `detour state` (or, in `detour serve`, Redis itself).
//!
//! Proxy-wasm shared data is per process. Without fleet mode, N Envoy replicas each spend
//! the whole budget. With it, a process spends only what it **leased** from the fleet
//! ledger: each budget scope (and each rate-limited deployment's minute) has a [`Slot`] in
//! shared data that says how much of the fleet's limit this process holds. Admission stays
//! local (no network round trip on the request path); the root context's tick keeps the
//! slots topped up and reports the spend back ([`sync`]).
//!
//! Invariants (what the tests in `sync.rs` hold the code to):
//! - A process commits (spend + estimates in flight) at most `flushed + granted` of a
//!   scope, except where an answer costs more than its estimate.
//! - Spend reaches the fleet exactly once: it is reported as the `used` of a lease return,
//!   a return is retried with the same lease id and amount until it is acknowledged, and
//!   the ledger ignores a repeated return.
//! - A process that dies holds its last lease until `lease_ttl` ends; the ledger then
//!   gives the room back by itself.

pub mod rates;
pub mod sync;

use crate::cluster::Upstream;
use crate::config::Secret;

/// What a scope does while the fleet ledger cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse what the leases held so far do not cover (budgets' default: never overspend).
    Closed,
    /// Admit up to `local_cap` of each limit per process beyond the leases (rates' default:
    /// the provider still enforces its own limits).
    Open,
}

impl FailMode {
    /// `closed` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

/// `detour.fleet`.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The state service the filter calls (`detour.fleet.state`).
    pub state: Upstream,
    /// Whether `state` was written in the config (else the default name, which only a
    /// `detour serve` with `redis` answers).
    pub state_configured: bool,
    /// The Redis URL `detour serve` uses directly (`detour.fleet.redis`, else LiteLLM's
    /// `redis_url` or `redis_host`/`redis_port`/`redis_password`).
    pub redis: Option<Secret>,
    /// A lease asks for this share of the room left in its scope, in per mille.
    pub lease_permille: u32,
    /// A lease the holder does not renew comes back to the fleet after this long.
    pub lease_ttl_ms: u64,
    /// How often each process reports its spend and tops its leases up.
    pub sync_interval_ms: u64,
    /// Budgets while the ledger is unreachable.
    pub budgets_unreachable: FailMode,
    /// RPM/TPM while the ledger is unreachable.
    pub rates_unreachable: FailMode,
    /// `open`: the share of each limit a process may commit beyond its leases, per mille.
    pub local_cap_permille: u32,
    /// The time limit of one call to the state service.
    pub call_timeout_ms: u64,
    /// Key namespace in the ledger (several fleets can share one Redis).
    pub namespace: String,
}

/// The state service's address when the config names none.
pub const DEFAULT_STATE_URL: &str = "http://detour-state:8081";

impl Fleet {
    /// Defaults for everything but where the ledger is.
    pub fn new(state: Upstream, state_configured: bool, redis: Option<Secret>) -> Fleet {
        Fleet {
            state,
            state_configured,
            redis,
            lease_permille: 50,
            lease_ttl_ms: 300_000,
            sync_interval_ms: 1_000,
            budgets_unreachable: FailMode::Closed,
            rates_unreachable: FailMode::Open,
            local_cap_permille: 10,
            call_timeout_ms: 2_000,
            namespace: "detour".to_string(),
        }
    }
}
