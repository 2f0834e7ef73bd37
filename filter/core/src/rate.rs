//! RPM/TPM per deployment, checked before sending: a sliding window over shared data.
//!
//! Each deployment has one record with the current and the previous minute's counts. The
//! rate at `now` is `previous × (part of the previous minute still inside the last 60 s) +
//! current`, the sliding-window counter many rate limiters use: exact at minute
//! boundaries, smooth in between, two counters per limit. Tokens are taken at their
//! estimate before sending and reconciled to the reported usage afterwards.

use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

const MINUTE_MS: u64 = 60_000;

/// The shared-data key of a deployment's rate window.
pub fn key(deployment_id: &str) -> String {
    format!("detour/v1/rate/{deployment_id}")
}

/// Two adjacent one-minute windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Start of the current minute.
    pub start: UnixMillis,
    /// Requests in the current minute.
    pub requests: u64,
    /// Requests in the previous minute.
    pub prev_requests: u64,
    /// Tokens in the current minute.
    pub tokens: u64,
    /// Tokens in the previous minute.
    pub prev_tokens: u64,
}

const VERSION: u8 = 1;
const ENCODED_LEN: usize = 41;

impl Window {
    /// Fixed-size little-endian encoding, versioned.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        for v in [
            self.start,
            self.requests,
            self.prev_requests,
            self.tokens,
            self.prev_tokens,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes a window; absent or unreadable bytes read as empty.
    pub fn decode(bytes: Option<&[u8]>) -> Window {
        let Some(bytes) = bytes.filter(|b| b.len() == ENCODED_LEN && b.first() == Some(&VERSION))
        else {
            return Window::default();
        };
        let at = |i: usize| {
            let start = i.saturating_mul(8).saturating_add(1);
            bytes
                .get(start..start.saturating_add(8))
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        Window {
            start: at(0),
            requests: at(1),
            prev_requests: at(2),
            tokens: at(3),
            prev_tokens: at(4),
        }
    }

    /// The window as seen at `now`: rolled forward to the minute containing it.
    pub fn at(self, now: UnixMillis) -> Window {
        let minute = now.saturating_sub(now % MINUTE_MS);
        if self.start == minute {
            self
        } else if self.start.saturating_add(MINUTE_MS) == minute {
            Window {
                start: minute,
                requests: 0,
                prev_requests: self.requests,
                tokens: 0,
                prev_tokens: self.tokens,
            }
        } else {
            // Idle for more than a minute (or the clock stepped back): nothing counts.
            Window {
                start: minute,
                ..Window::default()
            }
        }
    }

    /// Requests and tokens in the last 60 s at `now` (the window must be rolled to `now`).
    pub fn rate(&self, now: UnixMillis) -> (u64, u64) {
        let remaining = MINUTE_MS.saturating_sub(now.saturating_sub(self.start));
        // Rounded up: the limiter errs on the side of the provider's limit.
        // remaining ≤ MINUTE_MS, so the result is at most `prev`: it fits in u64.
        let weigh = |prev: u64| {
            ceil_div_u64(
                u128::from(prev).saturating_mul(u128::from(remaining)),
                u128::from(MINUTE_MS),
            )
        };
        (
            weigh(self.prev_requests).saturating_add(self.requests),
            weigh(self.prev_tokens).saturating_add(self.tokens),
        )
    }
}

/// The limits to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// Counts one request of `tokens` (estimated) if it fits both limits; otherwise says when
/// it would fit (the soonest capacity).
pub fn take<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
    now: UnixMillis,
    limits: Limits,
    tokens: u64,
) -> Result<Result<(), UnixMillis>, StoreError> {
    update(store, &key(deployment_id), |bytes| {
        let window = Window::decode(bytes).at(now);
        let (requests, used_tokens) = window.rate(now);
        let over_rpm = limits
            .rpm
            .is_some_and(|rpm| requests.saturating_add(1) > rpm);
        let over_tpm = limits
            .tpm
            .is_some_and(|tpm| used_tokens.saturating_add(tokens) > tpm && used_tokens > 0);
        if over_rpm || over_tpm {
            let mut at = now.saturating_add(1);
            if let Some(rpm) = limits.rpm.filter(|_| over_rpm) {
                at = at.max(fits_at(&window, now, rpm, 1, |w| {
                    (w.prev_requests, w.requests)
                }));
            }
            if let Some(tpm) = limits.tpm.filter(|_| over_tpm) {
                at = at.max(fits_at(&window, now, tpm, tokens.min(tpm), |w| {
                    (w.prev_tokens, w.tokens)
                }));
            }
            return (None, Err(at));
        }
        let mut window = window;
        window.requests = window.requests.saturating_add(1);
        window.tokens = window.tokens.saturating_add(tokens);
        (Some(window.encode()), Ok(()))
    })
}

/// Creates a deployment's window record if it has none (see `budget::ensure_accounts`
/// for why records are created ahead of use).
pub fn ensure<S: Store + ?Sized>(store: &mut S, deployment_id: &str) {
    let key = key(deployment_id);
    if let Ok(None) = store.get(&key) {
        let _ = store.set(&key, &Window::default().encode(), None);
    }
}

/// Corrects the tokens taken at `estimate` to `actual` once the usage is known.
pub fn reconcile<S: Store + ?Sized>(
    store: &mut S,
    deployment_id: &str,
    now: UnixMillis,
    estimate: u64,
    actual: u64,
) -> Result<(), StoreError> {
    if estimate == actual {
        return Ok(());
    }
    update(store, &key(deployment_id), |bytes| {
        let mut window = Window::decode(bytes).at(now);
        window.tokens = if actual > estimate {
            window
                .tokens
                .saturating_add(actual.saturating_sub(estimate))
        } else {
            window
                .tokens
                .saturating_sub(estimate.saturating_sub(actual))
        };
        (Some(window.encode()), ())
    })
}

/// Gives back a request taken for an attempt that was never sent.
pub fn untake<S: Store + ?Sized>(store: &mut S, deployment_id: &str, now: UnixMillis, tokens: u64) {
    let _ = update(store, &key(deployment_id), |bytes| {
        let mut window = Window::decode(bytes).at(now);
        window.requests = window.requests.saturating_sub(1);
        window.tokens = window.tokens.saturating_sub(tokens);
        (Some(window.encode()), ())
    });
}

/// The soonest time `need` more units fit under `limit`, assuming nothing else arrives.
fn fits_at(
    window: &Window,
    now: UnixMillis,
    limit: u64,
    need: u64,
    pick: impl Fn(&Window) -> (u64, u64),
) -> UnixMillis {
    let (prev, cur) = pick(window);
    let room = limit.saturating_sub(need);
    if cur <= room {
        // The previous minute's share has to decay: prev × (1 − f) ≤ room − cur.
        if prev == 0 {
            return now;
        }
        let allowed = room.saturating_sub(cur);
        let f_num = prev.saturating_sub(allowed); // f ≥ (prev − allowed) / prev
        let offset = ceil_div_u64(
            u128::from(f_num).saturating_mul(u128::from(MINUTE_MS)),
            u128::from(prev),
        );
        return window.start.saturating_add(offset).max(now);
    }
    // In the next minute this minute becomes "previous": cur × (1 − f) ≤ room.
    let next = window.start.saturating_add(MINUTE_MS);
    let f_num = cur.saturating_sub(room);
    let offset = ceil_div_u64(
        u128::from(f_num).saturating_mul(u128::from(MINUTE_MS)),
        u128::from(cur.max(1)),
    );
    next.saturating_add(offset)
}

/// `⌈num / den⌉` as a `u64`, saturating (a zero `den` reads as 1).
fn ceil_div_u64(num: u128, den: u128) -> u64 {
    u64::try_from(num.div_ceil(den.max(1))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const T: u64 = 1_795_460_760_000; // a minute boundary

    fn rpm(n: u64) -> Limits {
        Limits {
            rpm: Some(n),
            tpm: None,
        }
    }

    #[test]
    fn rpm_admits_exactly_the_limit_then_says_when() {
        let mut store = MemoryStore::default();
        for i in 0..3 {
            assert_eq!(take(&mut store, "d", T + i, rpm(3), 0).unwrap(), Ok(()));
        }
        let Err(at) = take(&mut store, "d", T + 10, rpm(3), 0).unwrap() else {
            panic!("should be limited")
        };
        // Three requests at the start of minute 0 only decay out during minute 1: the
        // first free slot is when 3 × (1 − f) ≤ 2, i.e. f = 1/3 into the next minute.
        assert_eq!(at, T + MINUTE_MS + 20_000);
        assert!(take(&mut store, "d", at - 1, rpm(3), 0).unwrap().is_err());
        assert_eq!(take(&mut store, "d", at, rpm(3), 0).unwrap(), Ok(()));
    }

    #[test]
    fn windows_roll_and_expire() {
        let w = Window {
            start: T,
            requests: 10,
            prev_requests: 4,
            tokens: 100,
            prev_tokens: 0,
        };
        let next = w.at(T + MINUTE_MS + 30_000);
        assert_eq!((next.prev_requests, next.requests), (10, 0));
        assert_eq!(next.rate(T + MINUTE_MS + 30_000).0, 5);
        let later = w.at(T + 5 * MINUTE_MS);
        assert_eq!(later.rate(T + 5 * MINUTE_MS), (0, 0));
        // A clock that steps back forgets rather than panics.
        assert_eq!(w.at(T - MINUTE_MS).rate(T - MINUTE_MS), (0, 0));
    }

    #[test]
    fn tpm_counts_estimates_then_reconciles() {
        let mut store = MemoryStore::default();
        let limits = Limits {
            rpm: None,
            tpm: Some(1000),
        };
        assert_eq!(take(&mut store, "d", T, limits, 600).unwrap(), Ok(()));
        assert!(take(&mut store, "d", T + 1, limits, 600).unwrap().is_err());
        reconcile(&mut store, "d", T + 2, 600, 100).unwrap();
        assert_eq!(take(&mut store, "d", T + 3, limits, 600).unwrap(), Ok(()));
        // A single request larger than the whole TPM is still let through on an idle
        // window (the provider decides); otherwise it could never be sent.
        let mut idle = MemoryStore::default();
        assert_eq!(take(&mut idle, "d", T, limits, 5000).unwrap(), Ok(()));
    }

    #[test]
    fn untake_gives_back_a_slot() {
        let mut store = MemoryStore::default();
        assert_eq!(take(&mut store, "d", T, rpm(1), 5).unwrap(), Ok(()));
        assert!(take(&mut store, "d", T, rpm(1), 5).unwrap().is_err());
        untake(&mut store, "d", T, 5);
        assert_eq!(take(&mut store, "d", T, rpm(1), 5).unwrap(), Ok(()));
    }

    #[test]
    fn encoding_round_trips() {
        let w = Window {
            start: 1,
            requests: 2,
            prev_requests: 3,
            tokens: u64::MAX,
            prev_tokens: 5,
        };
        assert_eq!(Window::decode(Some(&w.encode())), w);
        assert_eq!(Window::decode(Some(b"?")), Window::default());
    }
}
