//! [`BlockingLedger`]: the Redis ledger behind the core's synchronous
//! [`detour_core::ledger::Ledger`] trait, on a private current-thread runtime. It lets
//! sync callers (the conformance suite, tools) use the same scripts as the service.

use detour_core::ledger::{
    Ending, Lease, Ledger, LedgerError, Reserve, Returned, ScopeAccount, ScopeLimit,
};
use detour_core::UnixMillis;
use tokio::runtime::{Builder, Runtime};

use crate::redis_ledger::RedisLedger;

/// A [`RedisLedger`] with its own runtime. Not for use inside another tokio runtime.
#[derive(Debug)]
pub struct BlockingLedger {
    runtime: Runtime,
    ledger: RedisLedger,
}

impl BlockingLedger {
    /// Wraps `ledger`. Its connection is dialled on this runtime, on first use.
    pub fn new(ledger: RedisLedger) -> Result<BlockingLedger, LedgerError> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Backend {
                message: format!("cannot start a runtime: {e}"),
                transient: false,
            })?;
        Ok(BlockingLedger { runtime, ledger })
    }
}

impl Ledger for BlockingLedger {
    fn reserve(
        &mut self,
        request_id: &str,
        scopes: &[ScopeLimit],
        estimate_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Reserve, LedgerError> {
        self.runtime.block_on(self.ledger.reserve(
            request_id,
            scopes,
            estimate_nanos,
            now_ms,
            ttl_ms,
        ))
    }

    fn settle(
        &mut self,
        request_id: &str,
        actual_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Ending, LedgerError> {
        self.runtime
            .block_on(self.ledger.settle(request_id, actual_nanos, now_ms))
    }

    fn release(&mut self, request_id: &str, now_ms: UnixMillis) -> Result<Ending, LedgerError> {
        self.runtime
            .block_on(self.ledger.release(request_id, now_ms))
    }

    fn expire(&mut self, now_ms: UnixMillis) -> Result<Vec<String>, LedgerError> {
        // The script expires a bounded batch; the trait promises every due hold.
        let mut all = Vec::new();
        loop {
            let batch = self.runtime.block_on(self.ledger.expire(now_ms))?;
            if batch.is_empty() {
                return Ok(all);
            }
            all.extend(batch);
        }
    }

    fn account(&self, scope_key: &str) -> Result<ScopeAccount, LedgerError> {
        self.runtime.block_on(self.ledger.account(scope_key))
    }

    fn lease(
        &mut self,
        holder_id: &str,
        scopes: &[ScopeLimit],
        want_nanos: u64,
        now_ms: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Lease, LedgerError> {
        self.runtime.block_on(
            self.ledger
                .lease(holder_id, scopes, want_nanos, now_ms, ttl_ms),
        )
    }

    fn return_lease(
        &mut self,
        lease_id: &str,
        used_nanos: u64,
        now_ms: UnixMillis,
    ) -> Result<Returned, LedgerError> {
        self.runtime
            .block_on(self.ledger.return_lease(lease_id, used_nanos, now_ms))
    }
}
