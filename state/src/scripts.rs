//! The Lua scripts, each one atomic change of Redis (EVALSHA through `redis::Script`,
//! which loads a script once per server and falls back to EVAL-by-load on `NOSCRIPT`).
//!
//! Scripts, not MULTI/EXEC: a script reads, decides and writes in one step, and Redis
//! never expires a key in the middle of a script (Kuadrant/limitador made the same
//! choice for the same reason). Every ledger script starts with `lua/sweep.lua`, so
//! expired holds return on the next call of anyone, without a reaper process.

use std::sync::LazyLock;

use redis::Script;

macro_rules! ledger_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/sweep.lua"),
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

/// Hold an estimate in every scope or none (`lua/reserve.lua`).
pub(crate) static RESERVE: LazyLock<Script> = ledger_script!("reserve.lua");
/// Settle or release a hold (`lua/finish.lua`).
pub(crate) static FINISH: LazyLock<Script> = ledger_script!("finish.lua");
/// Grant a lease (`lua/lease.lua`).
pub(crate) static LEASE: LazyLock<Script> = ledger_script!("lease.lua");
/// Only the sweep (`lua/expire.lua`).
pub(crate) static EXPIRE: LazyLock<Script> = ledger_script!("expire.lua");
/// RLS sliding windows, all descriptors or none (`lua/rls.lua`).
pub(crate) static RLS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/rls.lua")));
