//! The service's one clock read. The ledger and windows take `now` as an argument (see
//! `redis_ledger.rs` for why); this is where the service gets it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
#[expect(
    clippy::disallowed_methods,
    reason = "the service's one clock read; everything below takes `now`"
)]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
