//! The budget ledger on Redis: every change is one Lua script (`scripts.rs`) that touches
//! every scope of the request at once.
//!
//! Layout, all under one hash tag so a script's keys share a Redis Cluster slot
//! (`{ns}` below; `ns` is [`RedisLedger::new`]'s namespace):
//!
//! | key | type | what |
//! |---|---|---|
//! | `{ns}:acct:<scope key>` | hash `spent`, `reserved` | a scope's counters, nano-dollars (int64, `HINCRBY`) |
//! | `{ns}:hold:<id>` | hash `state`, `amount`, `expires`, `scopes` | a hold; `state` is `held`, `expired`, `settled` or `released` |
//! | `{ns}:held` | zset id → expiry (ms) | holds still held, swept at the start of every script |
//! | `{ns}:seq` | counter | lease ids (`lease/<holder>/<n>`) |
//!
//! A hold's record lives `ttl + done_ttl` while held and `done_ttl` once it ended, so a
//! repeated settle or release inside that time is recognised (`repeated`), and one after
//! it finds nothing (`unknown`): neither ever counts twice.
//!
//! **Time is passed in, not read with `TIME`.** Every caller (the state service, a test)
//! passes `now`, as everywhere in detour's core: tests run hours of expiry in
//! microseconds, and the ledger agrees with the other backends on what "expired" means.
//! Replicas of the service read their own clocks, so a hold may expire early or late by
//! their clock skew (milliseconds under NTP) against ttls of seconds; periods are in the
//! scope keys the caller computed, so the script never needs a calendar. Only `PEXPIRE`
//! (a relative duration) uses Redis's clock, for forgetting ended records.
//!
//! **Integers.** Redis keeps counters as int64 and `HINCRBY` is exact; Lua compares them
//! as doubles, which is exact below 2^53. So amounts and limits above [`MAX_NANOS`]
//! (2^53 − 1 nano-dollars, about $9 million) are refused as invalid rather than compared
//! wrongly. Past 2^53 a sum only rounds to values above every allowed limit, so a refusal
//! stays a refusal.

use std::sync::Arc;

use detour_core::ledger::{
    validate, Ending, Lease, LedgerError, Reserve, Returned, ScopeAccount, ScopeLimit,
    DEFAULT_DONE_TTL_MS,
};
use detour_core::UnixMillis;
use redis::Value;

use crate::conn::Redis;
use crate::scripts::{EXPIRE, FINISH, LEASE, RESERVE};

/// The largest amount or limit the Redis ledger accepts: Lua compares exactly below 2^53.
pub const MAX_NANOS: u64 = (1 << 53) - 1;

/// How many due holds one script expires at most (the rest on the next call).
const SWEEP_MAX: u32 = 64;

/// The longest id or scope key accepted (they become Redis keys).
const MAX_KEY_LEN: usize = 512;

/// The ledger on Redis. Cheap to clone; every clone shares the connection.
#[derive(Debug, Clone)]
pub struct RedisLedger {
    redis: Arc<Redis>,
    prefix: String,
    done_ttl_ms: u64,
}

impl RedisLedger {
    /// A ledger in namespace `ns` (keys `{ns}:…`).
    pub fn new(redis: Arc<Redis>, ns: &str) -> RedisLedger {
        RedisLedger {
            redis,
            prefix: format!("{{{ns}}}:"),
            done_ttl_ms: DEFAULT_DONE_TTL_MS,
        }
    }

    /// How long an ended hold is remembered (repeats recognised, late settles recorded).
    pub fn with_done_ttl(mut self, done_ttl_ms: u64) -> Self {
        self.done_ttl_ms = done_ttl_ms.max(1);
        self
    }

    /// The connection underneath (for health checks).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn hold_key(&self, id: &str) -> String {
        format!("{}hold:{id}", self.prefix)
    }

    fn acct_key(&self, scope: &str) -> String {
        format!("{}acct:{scope}", self.prefix)
    }

    /// ARGV[1..4], shared by every ledger script (`lua/sweep.lua`).
    fn head(&self, now: UnixMillis) -> [String; 4] {
        [
            self.prefix.clone(),
            now.to_string(),
            self.done_ttl_ms.to_string(),
            SWEEP_MAX.to_string(),
        ]
    }

    /// See [`detour_core::ledger::Ledger::reserve`].
    pub async fn reserve(
        &self,
        request_id: &str,
        scopes: &[ScopeLimit],
        estimate_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Reserve, LedgerError> {
        check_hold(request_id, scopes)?;
        check_amount("estimate_nanos", estimate_nanos)?;
        let mut call = RESERVE.prepare_invoke();
        call.key(self.hold_key(request_id));
        for scope in scopes {
            call.key(self.acct_key(&scope.key));
        }
        call.arg(&self.head(now_ms))
            .arg(request_id)
            .arg(estimate_nanos)
            .arg(now_ms.saturating_add(ttl_ms))
            .arg(ttl_ms.saturating_add(self.done_ttl_ms).max(1));
        for scope in scopes {
            call.arg(scope.limit_nanos);
        }
        for scope in scopes {
            call.arg(&scope.key);
        }
        let (code, detail): (i64, String) = self
            .redis
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        match code {
            1 => Ok(Reserve::Reserved),
            2 => Ok(Reserve::Refused { scope: detail }),
            3 => Err(LedgerError::IdReused(request_id.to_string())),
            other => Err(unexpected("reserve", other)),
        }
    }

    /// See [`detour_core::ledger::Ledger::settle`].
    pub async fn settle(
        &self,
        request_id: &str,
        actual_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Ending, LedgerError> {
        check_amount("actual_nanos", actual_nanos)?;
        Ok(self
            .finish(request_id, Some(actual_nanos), now_ms)
            .await?
            .ending)
    }

    /// See [`detour_core::ledger::Ledger::release`].
    pub async fn release(
        &self,
        request_id: &str,
        now_ms: UnixMillis,
    ) -> Result<Ending, LedgerError> {
        Ok(self.finish(request_id, None, now_ms).await?.ending)
    }

    /// See [`detour_core::ledger::Ledger::return_lease`].
    pub async fn return_lease(
        &self,
        lease_id: &str,
        used_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Returned, LedgerError> {
        check_amount("used_nanos", used_nanos)?;
        self.finish(lease_id, Some(used_nanos), now_ms).await
    }

    async fn finish(
        &self,
        id: &str,
        actual: Option<u64>,
        now_ms: UnixMillis,
    ) -> Result<Returned, LedgerError> {
        check_id(id)?;
        let mut call = FINISH.prepare_invoke();
        call.key(self.hold_key(id))
            .arg(&self.head(now_ms))
            .arg(id)
            .arg(if actual.is_some() {
                "settle"
            } else {
                "release"
            })
            .arg(actual.unwrap_or(0));
        let (ending, spent): (String, i64) = self
            .redis
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let ending = match ending.as_str() {
            "applied" => Ending::Applied,
            "after_expiry" => Ending::AfterExpiry,
            "repeated" => Ending::Repeated,
            "unknown" => Ending::Unknown,
            _ => {
                return Err(LedgerError::Backend {
                    message: format!("finish script answered {ending:?}"),
                    transient: false,
                })
            }
        };
        Ok(Returned {
            ending,
            spent_nanos: u64::try_from(spent).unwrap_or(0),
        })
    }

    /// See [`detour_core::ledger::Ledger::expire`] (at most a few dozen per call; call
    /// again while it returns a full batch).
    pub async fn expire(&self, now_ms: UnixMillis) -> Result<Vec<String>, LedgerError> {
        let mut call = EXPIRE.prepare_invoke();
        call.arg(&self.head(now_ms));
        self.redis
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await
    }

    /// See [`detour_core::ledger::Ledger::account`].
    pub async fn account(&self, scope_key: &str) -> Result<ScopeAccount, LedgerError> {
        let key = self.acct_key(scope_key);
        let (spent, reserved): (Option<i64>, Option<i64>) = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("spent")
                    .arg("reserved")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        // Negative values cannot occur (every decrement follows its increment); clamp.
        let clamp = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        Ok(ScopeAccount {
            spent: clamp(spent),
            reserved: clamp(reserved),
        })
    }

    /// See [`detour_core::ledger::Ledger::lease`].
    pub async fn lease(
        &self,
        holder_id: &str,
        scopes: &[ScopeLimit],
        want_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Lease, LedgerError> {
        check_hold(holder_id, scopes)?;
        check_amount("want_nanos", want_nanos)?;
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let mut call = LEASE.prepare_invoke();
        for scope in scopes {
            call.key(self.acct_key(&scope.key));
        }
        call.arg(&self.head(now_ms))
            .arg(holder_id)
            .arg(want_nanos)
            .arg(expires_at_ms)
            .arg(ttl_ms.saturating_add(self.done_ttl_ms).max(1));
        for scope in scopes {
            call.arg(scope.limit_nanos);
        }
        for scope in scopes {
            call.arg(&scope.key);
        }
        let (granted, id, room): (String, String, String) = self
            .redis
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let number = |what: &str, text: &str| {
            text.parse::<u64>().map_err(|_| LedgerError::Backend {
                message: format!("lease script answered {what} {text:?}"),
                transient: false,
            })
        };
        if id.is_empty() {
            return Err(LedgerError::Backend {
                message: "lease script answered no id".into(),
                transient: false,
            });
        }
        Ok(Lease {
            granted_nanos: number("granted", &granted)?,
            room_nanos: number("room", &room)?,
            id,
            expires_at_ms,
        })
    }

    /// Whether Redis answers `PING` within the time limit.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        let pong: Value = self
            .redis
            .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        match pong {
            Value::SimpleString(_) | Value::BulkString(_) | Value::Okay => Ok(()),
            other => Err(LedgerError::Backend {
                message: format!("PING answered {other:?}"),
                transient: true,
            }),
        }
    }
}

fn check_id(id: &str) -> Result<(), LedgerError> {
    if id.is_empty() || id.len() > MAX_KEY_LEN {
        return Err(LedgerError::Invalid(format!(
            "an id must have 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_hold(id: &str, scopes: &[ScopeLimit]) -> Result<(), LedgerError> {
    validate(id, scopes)?;
    check_id(id)?;
    for scope in scopes {
        if scope.key.len() > MAX_KEY_LEN {
            return Err(LedgerError::Invalid(format!(
                "scope key longer than {MAX_KEY_LEN} bytes"
            )));
        }
        check_amount("limit_nanos", scope.limit_nanos)?;
    }
    Ok(())
}

fn check_amount(field: &str, value: u64) -> Result<(), LedgerError> {
    if value > MAX_NANOS {
        return Err(LedgerError::Invalid(format!(
            "{field}: {value} is above {MAX_NANOS} (2^53 - 1), the largest amount the Redis ledger compares exactly"
        )));
    }
    Ok(())
}

fn unexpected(script: &str, code: i64) -> LedgerError {
    LedgerError::Backend {
        message: format!("{script} script answered code {code}"),
        transient: false,
    }
}
