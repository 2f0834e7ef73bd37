//! Exponential backoff for retries on the same deployment: 2 s, 4 s, 8 s … plus jitter.

use crate::config::Settings;

/// The wait before retry number `retry` (1 for the first retry), in milliseconds.
///
/// `base × 2^(retry-1)`, plus up to 10 % jitter drawn from `seed` so concurrent requests
/// that failed together do not retry together. A provider's `Retry-After` raises the wait
/// to what it asked for; [`Settings::retry_after_cap_ms`] is checked by the caller.
pub fn delay_ms(settings: &Settings, retry: u32, seed: u64, retry_after_ms: Option<u64>) -> u64 {
    let exponent = retry.saturating_sub(1).min(20);
    let base = settings.backoff_base_ms.saturating_mul(1u64 << exponent);
    let jitter_span = base / 10;
    let jitter = if jitter_span == 0 {
        0
    } else {
        mix(seed ^ u64::from(retry))
            .checked_rem(jitter_span.saturating_add(1))
            .unwrap_or(0)
    };
    let backoff = base.saturating_add(jitter);
    match retry_after_ms {
        Some(asked) => backoff.max(asked),
        None => backoff,
    }
}

/// SplitMix64's finaliser: a cheap, well-spread hash for jitter and weighted picks.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_bounded_jitter() {
        let settings = Settings::default();
        for seed in 0..200 {
            for (retry, base) in [(1, 2000), (2, 4000), (3, 8000)] {
                let d = delay_ms(&settings, retry, seed, None);
                assert!(d >= base && d <= base + base / 10, "retry {retry}: {d}");
            }
        }
        // Retry-After raises the wait, never lowers it.
        assert_eq!(delay_ms(&settings, 1, 7, Some(30_000)), 30_000);
        assert!(delay_ms(&settings, 3, 7, Some(10)) >= 8000);
        // Huge retry counts saturate instead of overflowing.
        assert!(delay_ms(&settings, u32::MAX, 1, None) > 0);
    }
}
