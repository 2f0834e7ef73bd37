//! One conformance suite for the budget ledger, run against every backend (the pattern of
//! limitador's `test_with_all_storage_impls!`):
//!
//! - `memory`: `LedgerOnStore` on the core's `MemoryStore` (proxy-wasm's CAS semantics);
//! - `serve_shared_data`: `LedgerOnStore` on `detour serve`'s `SharedData`;
//! - `redis`: the Lua scripts on a private `redis-server`, through `BlockingLedger`.
//!
//! Every case is written once against the `Ledger` trait. Concurrency cases give each
//! thread its own handle (its own Redis connection, its own view of the store), as
//! replicas and workers have.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests that wait for real processes need a clock and a sleep"
)]

mod support;

use std::sync::Arc;
use std::thread;

use detour_core::budget::{Limit, Scope};
use detour_core::ledger::{Ending, Ledger, LedgerError, LedgerOnStore, Reserve, ScopeLimit};
use detour_core::period::Period;
use detour_host::shared_data::SharedData;
use detour_state::{BlockingLedger, Redis, RedisLedger};
use support::redis_server::RedisServer;
use support::{Locked, ServeStore};

/// 2026-11-23T19:13:07Z.
const NOW: u64 = 1_795_460_787_000;
const TTL: u64 = 60_000;

/// A backend: hands out ledgers that all see the same state.
trait Backend: Sync {
    type L: Ledger + Send;
    fn ledger(&self) -> Self::L;
}

struct MemoryBackend(Locked);

impl MemoryBackend {
    fn new() -> Self {
        let store = Locked::default();
        LedgerOnStore::new(store.clone()).unwrap();
        MemoryBackend(store)
    }
}

impl Backend for MemoryBackend {
    type L = LedgerOnStore<Locked>;
    fn ledger(&self) -> Self::L {
        LedgerOnStore::attach(self.0.clone())
    }
}

struct ServeBackend(ServeStore);

impl ServeBackend {
    fn new() -> Self {
        let store = ServeStore {
            data: Arc::new(SharedData::new()),
            vm_id: "detour".into(),
        };
        LedgerOnStore::new(store.clone()).unwrap();
        ServeBackend(store)
    }
}

impl Backend for ServeBackend {
    type L = LedgerOnStore<ServeStore>;
    fn ledger(&self) -> Self::L {
        LedgerOnStore::attach(self.0.clone())
    }
}

struct RedisBackend {
    server: RedisServer,
}

impl RedisBackend {
    fn start() -> Option<Self> {
        RedisServer::start().map(|server| RedisBackend { server })
    }

    /// The same scripts through the cluster client, on a one-node Redis Cluster.
    fn start_cluster() -> Option<Self> {
        RedisServer::start_cluster().map(|server| RedisBackend { server })
    }

    /// The same scripts on the master a Redis Sentinel names.
    fn start_sentinel() -> Option<Self> {
        RedisServer::start_sentinel().map(|server| RedisBackend { server })
    }
}

impl Backend for RedisBackend {
    type L = BlockingLedger;
    fn ledger(&self) -> Self::L {
        let redis = Redis::open(&self.server.url(), std::time::Duration::from_secs(5)).unwrap();
        BlockingLedger::new(RedisLedger::new(Arc::new(redis), "conformance")).unwrap()
    }
}

fn scope(key: &str, limit: u64) -> ScopeLimit {
    ScopeLimit {
        key: key.into(),
        limit_nanos: limit,
    }
}

fn spent_reserved(ledger: &impl Ledger, key: &str) -> (u64, u64) {
    let a = ledger.account(key).unwrap();
    (a.spent, a.reserved)
}

// --- the cases -------------------------------------------------------------------------

fn all_or_nothing_across_scopes<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 100), scope("tag/Spec", 50)];
    assert_eq!(
        l.reserve("r1", &scopes, 40, NOW, TTL).unwrap(),
        Reserve::Reserved
    );
    // The tag has 10 left: refused, and the total is not touched either.
    assert_eq!(
        l.reserve("r2", &scopes, 20, NOW, TTL).unwrap(),
        Reserve::Refused {
            scope: "tag/Spec".into()
        }
    );
    assert_eq!(spent_reserved(&l, "total"), (0, 40));
    assert_eq!(spent_reserved(&l, "tag/Spec"), (0, 40));
    // The refused id was never held: nothing to settle.
    assert_eq!(l.settle("r2", 5, NOW).unwrap(), Ending::Unknown);
    assert_eq!(
        l.reserve("r3", &scopes, 10, NOW, TTL).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(spent_reserved(&l, "tag/Spec"), (0, 50));
    // A scope never used reads as zero.
    assert_eq!(spent_reserved(&l, "never"), (0, 0));
}

fn exact_limit_under_concurrency<B: Backend>(b: &B) {
    const LIMIT: u64 = 1_000;
    const ESTIMATE: u64 = 7;
    let scopes = [scope("total", LIMIT), scope("group/fast", 1_000_000)];
    let successes: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..12)
            .map(|t| {
                let mut l = b.ledger();
                let scopes = &scopes;
                s.spawn(move || {
                    let mut won = 0;
                    for i in 0..20 {
                        match l
                            .reserve(&format!("t{t}-{i}"), scopes, ESTIMATE, NOW, TTL)
                            .unwrap()
                        {
                            Reserve::Reserved => won += 1,
                            Reserve::Refused { scope } => assert_eq!(scope, "total"),
                        }
                    }
                    won
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let fit = (LIMIT / ESTIMATE) as usize; // 142 of 240 attempts
    assert_eq!(successes, fit, "exactly the reservations that fit succeed");
    let l = b.ledger();
    let (spent, reserved) = spent_reserved(&l, "total");
    assert_eq!(reserved, fit as u64 * ESTIMATE);
    assert!(spent + reserved <= LIMIT);
    // All or nothing under concurrency: the other scope holds exactly the same.
    assert_eq!(spent_reserved(&l, "group/fast"), (0, fit as u64 * ESTIMATE));
}

fn settle_is_idempotent<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 1_000)];
    l.reserve("r", &scopes, 100, NOW, TTL).unwrap();
    assert_eq!(l.settle("r", 60, NOW).unwrap(), Ending::Applied);
    assert_eq!(l.settle("r", 60, NOW).unwrap(), Ending::Repeated);
    assert_eq!(l.release("r", NOW).unwrap(), Ending::Repeated);
    assert_eq!(spent_reserved(&l, "total"), (60, 0));
    // A second handle (another replica) sees the same: twice is once.
    let mut other = b.ledger();
    assert_eq!(other.settle("r", 60, NOW).unwrap(), Ending::Repeated);
    assert_eq!(spent_reserved(&other, "total"), (60, 0));
    // Ids are single-use.
    assert_eq!(
        l.reserve("r", &scopes, 1, NOW, TTL),
        Err(LedgerError::IdReused("r".into()))
    );
    assert_eq!(l.settle("never-reserved", 5, NOW).unwrap(), Ending::Unknown);
    assert_eq!(spent_reserved(&l, "total"), (60, 0));
}

fn repeated_reserve_holds_once<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 1_000)];
    assert_eq!(
        l.reserve("r", &scopes, 300, NOW, TTL).unwrap(),
        Reserve::Reserved
    );
    // A retried call (the answer was lost): still held once.
    assert_eq!(
        l.reserve("r", &scopes, 300, NOW, TTL).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(spent_reserved(&l, "total"), (0, 300));
}

fn settle_above_estimate_is_recorded<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 100), scope("model/x", 1_000)];
    l.reserve("r", &scopes, 50, NOW, TTL).unwrap();
    assert_eq!(l.settle("r", 180, NOW).unwrap(), Ending::Applied);
    // Past the limit: recorded, never clipped, in every scope.
    assert_eq!(spent_reserved(&l, "total"), (180, 0));
    assert_eq!(spent_reserved(&l, "model/x"), (180, 0));
    // An overspent scope refuses everything, even a zero estimate.
    assert!(matches!(
        l.reserve("next", &scopes, 0, NOW, TTL).unwrap(),
        Reserve::Refused { .. }
    ));
    assert_eq!(
        l.lease("h", &scopes, 10, NOW, TTL).unwrap().granted_nanos,
        0
    );
}

fn release_is_idempotent<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 100)];
    l.reserve("r", &scopes, 30, NOW, TTL).unwrap();
    assert_eq!(l.release("r", NOW).unwrap(), Ending::Applied);
    assert_eq!(l.release("r", NOW).unwrap(), Ending::Repeated);
    // A settle after the release changes nothing either.
    assert_eq!(l.settle("r", 30, NOW).unwrap(), Ending::Repeated);
    assert_eq!(spent_reserved(&l, "total"), (0, 0));
    assert_eq!(l.release("never", NOW).unwrap(), Ending::Unknown);
    // The room is back.
    assert_eq!(
        l.reserve("r2", &scopes, 100, NOW, TTL).unwrap(),
        Reserve::Reserved
    );
}

fn expiry_returns_holds<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 100)];
    // r1 belongs to a replica that crashes: nobody settles or releases it in time.
    l.reserve("r1", &scopes, 80, NOW, 1_000).unwrap();
    assert!(matches!(
        l.reserve("r2", &scopes, 50, NOW + 500, 1_000).unwrap(),
        Reserve::Refused { .. }
    ));
    // At its expiry the next reservation finds the room: no reaper was needed.
    assert_eq!(
        l.reserve("r3", &scopes, 50, NOW + 1_000, 1_000).unwrap(),
        Reserve::Reserved
    );
    assert_eq!(spent_reserved(&l, "total"), (0, 50));
    // expire() returns the holds it expired (r1 is already gone).
    assert_eq!(l.expire(NOW + 1_999).unwrap(), Vec::<String>::new());
    assert_eq!(l.expire(NOW + 2_000).unwrap(), vec!["r3".to_string()]);
    assert_eq!(spent_reserved(&l, "total"), (0, 0));
    // The crashed replica's answer arrives late: its spend is still recorded, once.
    assert_eq!(
        l.settle("r1", 30, NOW + 3_000).unwrap(),
        Ending::AfterExpiry
    );
    assert_eq!(l.settle("r1", 30, NOW + 3_000).unwrap(), Ending::Repeated);
    // Releasing an expired hold is a repeat: its estimate already came back.
    assert_eq!(l.release("r3", NOW + 3_000).unwrap(), Ending::Repeated);
    assert_eq!(spent_reserved(&l, "total"), (30, 0));
}

fn lease_grants_at_most_remaining<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 1_000), scope("tag/Build", 800)];
    l.reserve("r", &scopes, 300, NOW, TTL).unwrap();
    let first = l.lease("replica-a", &scopes, 400, NOW, TTL).unwrap();
    assert_eq!(first.granted_nanos, 400);
    assert!(!first.id.is_empty());
    assert_eq!(first.expires_at_ms, NOW + TTL);
    // Room after the grant: total 300, tag 100; the tightest answers.
    assert_eq!(first.room_nanos, 100);
    // The tag has 100 left, the tightest scope caps the grant.
    let second = l.lease("replica-b", &scopes, 400, NOW, TTL).unwrap();
    assert_eq!((second.granted_nanos, second.room_nanos), (100, 0));
    assert_ne!(first.id, second.id);
    // Full: 0 granted, yet a hold with an id of its own to report spend under.
    let none = l.lease("replica-c", &scopes, 1, NOW, TTL).unwrap();
    assert_eq!((none.granted_nanos, none.room_nanos), (0, 0));
    assert!(!none.id.is_empty());
    assert_ne!(none.id, first.id);
    assert_ne!(none.id, second.id);
    assert_eq!(none.expires_at_ms, NOW + TTL);
    assert_eq!(spent_reserved(&l, "tag/Build"), (0, 800));
    // Returning converts what was used into spend and frees the rest; once.
    assert_eq!(
        l.return_lease(&first.id, 120, NOW).unwrap().ending,
        Ending::Applied
    );
    assert_eq!(
        l.return_lease(&first.id, 120, NOW).unwrap().ending,
        Ending::Repeated
    );
    assert_eq!(spent_reserved(&l, "total"), (120, 400));
    assert_eq!(spent_reserved(&l, "tag/Build"), (120, 400));
    // Using more than the lease is recorded too.
    assert_eq!(
        l.return_lease(&second.id, 150, NOW).unwrap().ending,
        Ending::Applied
    );
    assert_eq!(spent_reserved(&l, "tag/Build"), (270, 300));
    // A lease expires like a reservation; a late return still records its use.
    let third = l.lease("replica-d", &scopes, 50, NOW, 1_000).unwrap();
    assert_eq!(third.granted_nanos, 50);
    assert_eq!(l.expire(NOW + 1_000).unwrap(), vec![third.id.clone()]);
    assert_eq!(
        l.return_lease(&third.id, 20, NOW + 2_000).unwrap().ending,
        Ending::AfterExpiry
    );
    assert_eq!(spent_reserved(&l, "tag/Build"), (290, 300));
    // The 0-granted lease: what its holder spent is recorded, in every scope, once.
    assert_eq!(
        l.return_lease(&none.id, 15, NOW + 2_000).unwrap().ending,
        Ending::Applied
    );
    assert_eq!(
        l.return_lease(&none.id, 15, NOW + 2_000).unwrap().ending,
        Ending::Repeated
    );
    assert_eq!(spent_reserved(&l, "tag/Build"), (305, 300));
    assert_eq!(spent_reserved(&l, "total"), (305, 300));
}

fn zero_lease_records_spend_and_room_follows_the_tightest_scope<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 1_000), scope("model/x", 600)];
    // Nothing used yet: the model scope is the tightest (600 vs 1000).
    let a = l.lease("a", &scopes, 100, NOW, TTL).unwrap();
    assert_eq!((a.granted_nanos, a.room_nanos), (100, 500));
    // Spend elsewhere in the total (another model) makes the total the tightest.
    let other = [scope("total", 1_000), scope("model/y", 10_000)];
    l.reserve("big", &other, 750, NOW, TTL).unwrap();
    // total: 1000 - 100 - 750 = 150 left; model/x: 500 left.
    let b2 = l.lease("b", &scopes, 100, NOW, TTL).unwrap();
    assert_eq!((b2.granted_nanos, b2.room_nanos), (100, 50));
    // A want of 0 still holds and answers the room as it is.
    let zero = l.lease("c", &scopes, 0, NOW, TTL).unwrap();
    assert_eq!((zero.granted_nanos, zero.room_nanos), (0, 50));
    assert!(!zero.id.is_empty());
    let rest = l.lease("d", &scopes, 1_000, NOW, TTL).unwrap();
    assert_eq!((rest.granted_nanos, rest.room_nanos), (50, 0));
    assert_eq!(spent_reserved(&l, "total"), (0, 1_000));
    assert_eq!(spent_reserved(&l, "model/x"), (0, 250));
    // Full: the lease still has an id; its return with spend records the spend (past the
    // limit: recorded, never clipped), and the scope is overspent.
    let full = l.lease("e", &scopes, 10, NOW, 1_000).unwrap();
    assert_eq!((full.granted_nanos, full.room_nanos), (0, 0));
    assert!(!full.id.is_empty());
    assert_eq!(
        l.return_lease(&full.id, 40, NOW).unwrap().ending,
        Ending::Applied
    );
    assert_eq!(spent_reserved(&l, "total"), (40, 1_000));
    assert_eq!(spent_reserved(&l, "model/x"), (40, 250));
    // Overspent: 0 granted, room 0 (never a wrapped number).
    let over = l.lease("f", &scopes, 10, NOW, 1_000).unwrap();
    assert_eq!((over.granted_nanos, over.room_nanos), (0, 0));
    // A 0-granted lease expires like any other; a late return still records its spend.
    assert!(l.expire(NOW + 1_000).unwrap().contains(&over.id));
    assert_eq!(
        l.return_lease(&over.id, 5, NOW + 2_000).unwrap().ending,
        Ending::AfterExpiry
    );
    assert_eq!(spent_reserved(&l, "model/x"), (45, 250));
    assert_eq!(spent_reserved(&l, "total"), (45, 1_000));
}

fn leases_never_over_grant_under_concurrency<B: Backend>(b: &B) {
    const LIMIT: u64 = 10_000;
    let scopes = [scope("total", LIMIT)];
    let leases: Vec<(String, u64)> = thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let mut l = b.ledger();
                let scopes = &scopes;
                s.spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let lease = l
                            .lease(&format!("replica-{t}"), scopes, 700, NOW, TTL)
                            .unwrap();
                        assert!(!lease.id.is_empty());
                        if lease.granted_nanos == 0 {
                            assert_eq!(lease.room_nanos, 0, "0 is granted only when full");
                            return got;
                        }
                        assert!(lease.granted_nanos <= 700);
                        got.push((lease.id, lease.granted_nanos));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let granted: u64 = leases.iter().map(|(_, g)| g).sum();
    assert_eq!(granted, LIMIT, "every nano-dollar granted once, none twice");
    let mut ids: Vec<&String> = leases.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), leases.len(), "lease ids are unique");
    let mut l = b.ledger();
    assert_eq!(spent_reserved(&l, "total"), (0, LIMIT));
    for (id, g) in &leases {
        assert_eq!(
            l.return_lease(id, g / 2, NOW).unwrap().ending,
            Ending::Applied
        );
    }
    let half: u64 = leases.iter().map(|(_, g)| g / 2).sum();
    assert_eq!(spent_reserved(&l, "total"), (half, 0));
}

fn a_return_reports_the_first_scopes_spend_after_it<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let scopes = [scope("total", 1_000), scope("tag/x", 500)];
    let a = l.lease("a", &scopes, 300, NOW, TTL).unwrap();
    let c = l.lease("c", &scopes, 100, NOW, TTL).unwrap();
    let first = l.return_lease(&a.id, 250, NOW).unwrap();
    assert_eq!((first.ending, first.spent_nanos), (Ending::Applied, 250));
    let second = l.return_lease(&c.id, 90, NOW).unwrap();
    // 340 after, so 250 before: the one return that moved spend across 300 sees it.
    assert_eq!(second.spent_nanos, 340);
    // A repeat changes nothing and reports nothing.
    let again = l.return_lease(&c.id, 90, NOW).unwrap();
    assert_eq!((again.ending, again.spent_nanos), (Ending::Repeated, 0));
    let unknown = l.return_lease("lease/none/1", 5, NOW).unwrap();
    assert_eq!((unknown.ending, unknown.spent_nanos), (Ending::Unknown, 0));
}

fn period_keys_start_fresh<B: Backend>(b: &B) {
    let mut l = b.ledger();
    let monthly = Limit {
        scope: Scope::Total,
        limit_nanos: 100,
        period: Period::Month,
        halt_at_percent: None,
    };
    let november = ScopeLimit::for_budget(&monthly, NOW);
    assert_eq!(
        november.key,
        format!("detour/v1/budget/total/{}", Period::Month.start(NOW))
    );
    l.reserve("a", std::slice::from_ref(&november), 100, NOW, TTL)
        .unwrap();
    l.settle("a", 100, NOW).unwrap();
    assert!(matches!(
        l.reserve("b", std::slice::from_ref(&november), 1, NOW, TTL)
            .unwrap(),
        Reserve::Refused { .. }
    ));
    // December has its own key, so its own account.
    let december_now = Period::Month.end(NOW);
    let december = ScopeLimit::for_budget(&monthly, december_now);
    assert_ne!(december.key, november.key);
    assert_eq!(
        l.reserve("c", std::slice::from_ref(&december), 100, december_now, TTL)
            .unwrap(),
        Reserve::Reserved
    );
    assert_eq!(spent_reserved(&l, &november.key), (100, 0));
    assert_eq!(spent_reserved(&l, &december.key), (0, 100));
}

// --- every case on every backend ----------------------------------------------------------

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $case() { super::$case(&super::MemoryBackend::new()); } )*
        }
        mod serve_shared_data {
            $( #[test] fn $case() { super::$case(&super::ServeBackend::new()); } )*
        }
        mod redis {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = super::RedisBackend::start() else { return };
                    super::$case(&backend);
                }
            )*
        }
        mod redis_cluster {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = super::RedisBackend::start_cluster() else { return };
                    super::$case(&backend);
                }
            )*
        }
        mod redis_sentinel {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = super::RedisBackend::start_sentinel() else { return };
                    super::$case(&backend);
                }
            )*
        }
    };
}

on_every_backend!(
    all_or_nothing_across_scopes,
    exact_limit_under_concurrency,
    settle_is_idempotent,
    repeated_reserve_holds_once,
    settle_above_estimate_is_recorded,
    release_is_idempotent,
    expiry_returns_holds,
    lease_grants_at_most_remaining,
    zero_lease_records_spend_and_room_follows_the_tightest_scope,
    leases_never_over_grant_under_concurrency,
    a_return_reports_the_first_scopes_spend_after_it,
    period_keys_start_fresh,
);
