//! Fleet mode, natively: several processes (each its own shared data) lease from one
//! ledger (`LedgerOnStore`, the backend the Redis scripts are conformance-tested against),
//! with injected time, calls carried out through their JSON bodies as the glue sends them.
//! What must hold: the fleet never commits past the limit beyond the documented bound,
//! and every spend reaches the ledger exactly once, through outages and a dead process.

#![cfg(test)]

use detour_core::budget::{self, Refusal, Reservation};
use detour_core::config::Config;
use detour_core::fleet::sync::{self, Answer, Call, Pass};
use detour_core::ledger::{Ledger, LedgerOnStore, ScopeLimit};
use detour_core::store::MemoryStore;
use serde_json::{json, Value};

mod common;

const NOW: u64 = 1_795_460_787_000;
const LIMIT: u64 = 10_000_000; // $0.01
const ESTIMATE: u64 = 50_000;

fn config(extra: &str) -> Config {
    common::load_ok(&format!(
        r#"
model_list:
  - model_name: g
    litellm_params:
      model: openai/m
      api_base: http://127.0.0.1:9/v1
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
detour:
  budgets: {{total: 0.01}}
  fleet:
    state: http://127.0.0.1:8081
    lease_fraction: 0.05
    sync_interval: 1s
    lease_ttl: 60s
    call_timeout: 1s
{extra}
"#
    ))
    .config
}

/// One deployment with `rpm` and fleet mode, no budget.
fn rpm_config(rpm: u64) -> Config {
    common::load_ok(&format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/m, api_base: 'http://127.0.0.1:9/v1', rpm: {rpm}}}
detour:
  fleet: {{state: 'http://127.0.0.1:8081', sync_interval: 1s, lease_ttl: 60s, call_timeout: 1s}}
"#
    ))
    .config
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// One process: its shared data and the requests it has in flight.
struct Process {
    store: MemoryStore,
    holder: String,
    in_flight: Vec<(Reservation, u64, u64)>, // (reservation, actual cost, ends at)
    settled: u64,
    alive: bool,
}

struct Fleet {
    config: Config,
    ledger: LedgerOnStore<MemoryStore>,
    processes: Vec<Process>,
    reachable: bool,
    overshoot: u64,
    /// Events the ticks reported (alerts, halts).
    events: Vec<detour_core::event::Event>,
    /// Every answer costs exactly its estimate (the overspend bound is then 0).
    exact: bool,
    /// What dead processes took with them: spend they never reported and answers in
    /// flight (the documented loss of a killed replica; their leases expire).
    lost: u64,
}

impl Fleet {
    fn new(config: Config, n: usize) -> Fleet {
        let processes = (0..n)
            .map(|i| {
                let mut store = MemoryStore::default();
                budget::ensure_accounts(&mut store, &config.budgets.limits, NOW);
                sync::ensure_slots(&mut store, &config, NOW);
                Process {
                    store,
                    holder: format!("p{i}"),
                    in_flight: Vec::new(),
                    settled: 0,
                    alive: true,
                }
            })
            .collect();
        Fleet {
            config,
            ledger: LedgerOnStore::new(MemoryStore::default()).unwrap(),
            processes,
            reachable: true,
            overshoot: 0,
            events: Vec::new(),
            exact: false,
            lost: 0,
        }
    }

    /// The ledger as the state service answers it: the call's own JSON body in, JSON out.
    fn serve(&mut self, path: &str, body: &[u8], now: u64) -> (Option<u16>, Vec<u8>) {
        if !self.reachable {
            return (None, Vec::new());
        }
        let req: Value = serde_json::from_slice(body).unwrap();
        let answer = match path {
            "/v1/lease" => {
                let scope = &req["scopes"][0];
                let lease = self
                    .ledger
                    .lease(
                        req["holder_id"].as_str().unwrap(),
                        &[ScopeLimit {
                            key: scope["key"].as_str().unwrap().into(),
                            limit_nanos: scope["limit_nanos"].as_u64().unwrap(),
                        }],
                        req["want_nanos"].as_u64().unwrap(),
                        now,
                        req["ttl_ms"].as_u64().unwrap(),
                    )
                    .unwrap();
                json!({"lease_id": lease.id, "granted_nanos": lease.granted_nanos,
                       "room_nanos": lease.room_nanos})
            }
            "/v1/lease/return" => {
                let returned = self
                    .ledger
                    .return_lease(
                        req["lease_id"].as_str().unwrap(),
                        req["used_nanos"].as_u64().unwrap(),
                        now,
                    )
                    .unwrap();
                json!({"ending": returned.ending, "spent_nanos": returned.spent_nanos})
            }
            other => panic!("unexpected path {other}"),
        };
        (Some(200), serde_json::to_vec(&answer).unwrap())
    }

    /// The 50 ms tick of process `p` at `now`: a full round once a second (staggered
    /// between processes, as workers claim rounds at their own times), else urgent.
    fn tick_at(&mut self, p: usize, now: u64) {
        let round = (now + p as u64 * 333) % 1000 < 50;
        self.tick(p, now, if round { Pass::Round } else { Pass::Urgent });
    }

    /// One tick of process `p`: plan, send, answer, and the follow-up the glue makes.
    fn tick(&mut self, p: usize, now: u64, pass: Pass) {
        let fleet = self.config.fleet.clone().unwrap();
        if pass == Pass::Round {
            // As the glue does on the round: next periods' records made ready.
            sync::ensure_slots(&mut self.processes[p].store, &self.config, now);
        }
        if pass == Pass::Urgent && sync::unreachable(&self.processes[p].store) {
            return;
        }
        for spec in sync::slots(&self.config, now) {
            let mut pass = pass;
            for _ in 0..4 {
                let store = &mut self.processes[p].store;
                // As the glue does: the round refreshes, a tick between rounds only reads.
                let (slot, account) = if pass == Pass::Round {
                    sync::refresh(store, &fleet, &spec, now).unwrap()
                } else {
                    (
                        sync::read_slot(store, &spec),
                        sync::read_account(store, &spec),
                    )
                };
                let Some(call) = sync::plan(&fleet, &spec, &slot, &account, now, pass) else {
                    break;
                };
                assert!(sync::begin(store, &fleet, &spec, &call, now).unwrap());
                let holder = self.processes[p].holder.clone();
                let (path, body) = call.request(&spec, &fleet, &holder);
                let (status, answer_body) = self.serve(&path, &body, now);
                let answer = sync::parse_answer(&call, status, &answer_body);
                let store = &mut self.processes[p].store;
                let reach = sync::on_answer(store, &fleet, &spec, &call, &answer, now).unwrap();
                sync::note_reach(store, &fleet, reach, now);
                let reported = sync::on_report(store, &self.config, &spec, &call, &answer, now);
                self.events.extend(reported);
                if answer == Answer::Failed {
                    break;
                }
                pass = Pass::Round;
            }
        }
    }

    fn admit(&mut self, p: usize, now: u64, actual: u64, ends_at: u64) -> Result<(), Refusal> {
        let all = self.config.budgets.limits.clone();
        let process = &mut self.processes[p];
        let reservation =
            budget::reserve_in(&mut process.store, &all, &[(0, true)], now, ESTIMATE, true)?;
        process.in_flight.push((reservation, actual, ends_at));
        Ok(())
    }

    fn finish_due(&mut self, p: usize, now: u64) {
        let all = self.config.budgets.limits.clone();
        let process = &mut self.processes[p];
        let (due, rest): (Vec<_>, Vec<_>) = process
            .in_flight
            .drain(..)
            .partition(|(_, _, ends)| *ends <= now);
        process.in_flight = rest;
        for (reservation, actual, _) in due {
            budget::settle(&mut process.store, &all, &reservation, actual);
            process.settled += actual;
            self.overshoot += actual.saturating_sub(ESTIMATE);
        }
    }

    fn ledger_account(&self, now: u64) -> (u64, u64) {
        let Some(limit) = self.config.budgets.limits.first() else {
            return (0, 0);
        };
        let key = format!("budget/{}/{}", limit.scope, limit.period.start(now));
        let a = self.ledger.account(&key).unwrap();
        (a.spent, a.reserved)
    }

    /// Runs `ms` of traffic: every 10 ms each live process may start a request; ticks
    /// every 50 ms, full rounds every second (staggered per process).
    fn run(&mut self, rng: &mut Rng, start: u64, ms: u64, traffic: bool) -> (u64, u64) {
        let (mut admitted, mut refused) = (0, 0);
        let mut now = start;
        while now < start + ms {
            for p in 0..self.processes.len() {
                if !self.processes[p].alive {
                    continue;
                }
                self.finish_due(p, now);
                if traffic && rng.below(3) == 0 {
                    // Mostly under the estimate, now and then 20 % over it.
                    let actual = if self.exact {
                        ESTIMATE
                    } else {
                        ESTIMATE / 2 + rng.below(ESTIMATE * 7 / 10)
                    };
                    let ends = now + 20 + rng.below(400);
                    match self.admit(p, now, actual, ends) {
                        Ok(()) => admitted += 1,
                        Err(_) => refused += 1,
                    }
                }
                if now % 50 == 0 {
                    self.tick_at(p, now);
                }
            }
            let (spent, _) = self.ledger_account(now);
            // What the fleet really committed (answers settled, estimates in flight)
            // never passes the limit but by what answers cost above their estimates; the
            // ledger's spend trails it (reported each interval), never ahead of it.
            let settled = self.settled();
            let in_flight: u64 = self
                .processes
                .iter()
                .map(|p| p.in_flight.len() as u64 * ESTIMATE)
                .sum();
            if !self.config.budgets.limits.is_empty() {
                assert!(
                    settled + in_flight <= LIMIT + self.overshoot + self.lost,
                    "fleet committed {} > {LIMIT} + {} + {}",
                    settled + in_flight,
                    self.overshoot,
                    self.lost
                );
            }
            assert!(
                spent <= settled,
                "the ledger counted {spent} of {settled} settled"
            );
            now += 10;
        }
        (admitted, refused)
    }

    fn settled(&self) -> u64 {
        self.processes.iter().map(|p| p.settled).sum()
    }
}

#[test]
fn three_processes_share_one_budget_and_every_spend_arrives_once() {
    for seed in 1..6 {
        let mut rng = Rng(seed);
        let mut fleet = Fleet::new(config(""), 3);
        let (admitted, refused) = fleet.run(&mut rng, NOW, 30_000, true);
        assert!(refused > 0, "the budget was reached");
        // Drain: no new traffic, answers complete, rounds report the rest.
        fleet.run(&mut rng, NOW + 30_000, 5_000, false);
        let (spent, _) = fleet.ledger_account(NOW + 35_000);
        assert_eq!(spent, fleet.settled(), "seed {seed}: every spend once");
        assert!(spent <= LIMIT + fleet.overshoot);
        // The end of the budget is reached, not refused early: within a few estimates.
        assert!(
            spent + 4 * ESTIMATE >= LIMIT,
            "seed {seed}: spent {spent} of {LIMIT} ({admitted} admitted)"
        );
        // Thresholds are judged on the fleet's spend, each by exactly one process.
        let fired = |percent: u32| {
            fleet
                .events
                .iter()
                .filter(|e| matches!(e, detour_core::event::Event::BudgetAlert { percent: p, .. } if *p == percent))
                .count()
        };
        assert_eq!((fired(80), fired(90)), (1, 1), "seed {seed}");
        assert_eq!(fired(100), usize::from(spent >= LIMIT), "seed {seed}");
    }
}

#[test]
fn an_idle_process_gives_its_leases_back() {
    let mut rng = Rng(7);
    let mut fleet = Fleet::new(config(""), 2);
    fleet.run(&mut rng, NOW, 3_000, true);
    fleet.run(&mut rng, NOW + 3_000, 30_000, false);
    let (spent, reserved) = fleet.ledger_account(NOW + 33_000);
    assert_eq!(reserved, 0, "idle processes hold nothing");
    assert_eq!(spent, fleet.settled());
}

#[test]
fn an_outage_fails_closed_then_reconciles_exactly() {
    let mut rng = Rng(11);
    let mut fleet = Fleet::new(config(""), 3);
    fleet.run(&mut rng, NOW, 3_000, true);
    fleet.reachable = false;
    let (admitted, refused) = fleet.run(&mut rng, NOW + 3_000, 10_000, true);
    // Closed: only the leases held before the outage are spent.
    assert!(refused > admitted, "{admitted} admitted, {refused} refused");
    for p in &fleet.processes {
        assert!(sync::unreachable(&p.store));
    }
    fleet.reachable = true;
    fleet.run(&mut rng, NOW + 13_000, 5_000, true);
    fleet.run(&mut rng, NOW + 18_000, 5_000, false);
    for p in &fleet.processes {
        assert!(!sync::unreachable(&p.store));
    }
    let (spent, _) = fleet.ledger_account(NOW + 23_000);
    assert_eq!(spent, fleet.settled(), "nothing lost, nothing twice");
}

#[test]
fn an_outage_fails_open_within_the_local_cap() {
    let mut rng = Rng(13);
    let mut fleet = Fleet::new(
        config("    on_unreachable: {budgets: open}\n    local_cap: 0.1"),
        2,
    );
    fleet.run(&mut rng, NOW, 2_000, true);
    let before: Vec<u64> = fleet.processes.iter().map(|p| p.settled).collect();
    fleet.reachable = false;
    fleet.run(&mut rng, NOW + 2_000, 20_000, true);
    for (p, before) in fleet.processes.iter().zip(before) {
        // Each process may spend its leases plus 10 % of the limit beyond them.
        let during = p.settled - before;
        assert!(during <= LIMIT / 10 + LIMIT / 2, "{during}");
        assert!(during > 0);
    }
    fleet.reachable = true;
    fleet.run(&mut rng, NOW + 22_000, 5_000, false);
    let (spent, _) = fleet.ledger_account(NOW + 27_000);
    assert_eq!(spent, fleet.settled());
}

#[test]
fn a_dead_process_leases_expire_and_the_others_go_on() {
    let mut rng = Rng(17);
    let mut fleet = Fleet::new(config(""), 3);
    fleet.run(&mut rng, NOW, 2_000, true);
    // Process 0 dies: its requests never settle, its leases are never returned.
    fleet.processes[0].alive = false;
    let unreported = {
        let p = &fleet.processes[0];
        let spec = &sync::slots(&fleet.config, NOW)[0];
        let account = sync::read_account(&p.store, spec);
        account.spent - sync::read_slot(&p.store, spec).flushed
    };
    fleet.lost = unreported + fleet.processes[0].in_flight.len() as u64 * ESTIMATE;
    fleet.run(&mut rng, NOW + 2_000, 70_000, false);
    // The ledger expires holds at the start of every call (no reaper); the live
    // processes are idle by now, so make the call they would make next.
    fleet.ledger.expire(NOW + 72_000).unwrap();
    let (spent, reserved) = fleet.ledger_account(NOW + 72_000);
    assert_eq!(reserved, 0, "the dead process's leases expired");
    // The dead process's spend since its last report is the only loss.
    assert_eq!(spent + unreported, fleet.settled());
    // The others use the room it held.
    let (admitted, refused) = fleet.run(&mut rng, NOW + 72_000, 3_000, true);
    assert!(admitted > 0, "spent {spent}, refused {refused}");
}

#[test]
fn a_request_without_cover_is_uncovered_not_exhausted() {
    let config = config("");
    let mut store = MemoryStore::default();
    budget::ensure_accounts(&mut store, &config.budgets.limits, NOW);
    let refusal = budget::reserve_in(
        &mut store,
        &config.budgets.limits,
        &[(0, true)],
        NOW,
        ESTIMATE,
        true,
    );
    assert!(matches!(refusal, Err(Refusal::Uncovered(_))));
    let spec = &sync::slots(&config, NOW)[0];
    // The refused estimate is what the next (urgent) tick asks for at least.
    let account = sync::read_account(&store, spec);
    assert_eq!(account.wanted, ESTIMATE);
    let fleet = config.fleet.clone().unwrap();
    let slot = sync::read_slot(&store, spec);
    let call = sync::plan(&fleet, spec, &slot, &account, NOW, Pass::Urgent);
    assert!(matches!(call, Some(Call::Lease { want }) if want >= ESTIMATE));
    // Without fleet mode the same account has no cover to check.
    assert!(budget::reserve(
        &mut store,
        &config.budgets.limits,
        &[(0, true)],
        NOW,
        ESTIMATE
    )
    .is_ok());
}

#[test]
fn rpm_is_shared_by_the_fleet_per_minute() {
    use detour_core::fleet::rates;
    let config = rpm_config(100);
    let deployment = config.deployments[0].clone();
    let mut fleet = Fleet::new(config, 3);
    let minute = NOW - NOW % 60_000;
    let mut admitted_in: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut now = minute;
    while now < minute + 150_000 {
        for p in 0..3 {
            // Every process offers 5 requests a second: 900 a minute against 100.
            if now % 200 == 0 {
                let store = &mut fleet.processes[p].store;
                if rates::take(store, &deployment, now, 10).is_ok() {
                    *admitted_in.entry(now - now % 60_000).or_default() += 1;
                }
            }
            if now % 50 == 0 {
                fleet.tick_at(p, now);
            }
        }
        now += 10;
    }
    for (start, admitted) in &admitted_in {
        // A whole minute: the fleet's limit reached, never passed.
        if start + 60_000 <= minute + 150_000 {
            assert!(
                (90..=100).contains(admitted),
                "minute {start}: {admitted} admitted"
            );
        }
    }
    // And the ledger counted exactly what was admitted in the first minute.
    fleet.run(&mut Rng(1), now, 3_000, false);
    let key = format!("rate/{}/rpm/{minute}", deployment.id);
    assert_eq!(
        fleet.ledger.account(&key).unwrap().spent,
        admitted_in[&minute]
    );
}

#[test]
fn the_return_that_crosses_halt_at_halts_its_process() {
    let config = config("");
    let spec = &sync::slots(&config, NOW)[0];
    let mut store = MemoryStore::default();
    let call = Call::Return(sync::Returning {
        id: "lease/p0/1".into(),
        used: 2_000_000,
        freed: 0,
    });
    // 10.5 M → 12.5 M of a 10 M total: crosses 110 % (the total's default halt_at).
    let events = sync::on_report(
        &mut store,
        &config,
        spec,
        &call,
        &Answer::Returned { spent: 12_500_000 },
        NOW,
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, detour_core::event::Event::Halt { .. })));
    assert!(detour_core::halt::read(&store).unwrap().is_some());
    // A later return above it does not cross again: no second alert, no second halt.
    let later = sync::on_report(
        &mut MemoryStore::default(),
        &config,
        spec,
        &call,
        &Answer::Returned { spent: 14_600_000 },
        NOW,
    );
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn once_the_fleet_says_full_requests_are_refused_at_once_not_after_a_wait() {
    let mut rng = Rng(23);
    let mut fleet = Fleet::new(config(""), 2);
    fleet.run(&mut rng, NOW, 30_000, true);
    let all = fleet.config.budgets.limits.clone();
    let spec = &sync::slots(&fleet.config, NOW + 30_000)[0];
    let p = &mut fleet.processes[0];
    // Spend this process's own cover first, then ask once more: the ledger has said
    // there is no room, so the refusal is Exhausted (a 402 now), not Uncovered (a wait).
    let mut last = Ok(Reservation::default());
    for _ in 0..50 {
        last = budget::reserve_in(
            &mut p.store,
            &all,
            &[(0, true)],
            NOW + 30_000,
            ESTIMATE,
            true,
        );
        if last.is_err() {
            break;
        }
    }
    assert!(sync::read_account(&p.store, spec).full_since != 0);
    assert!(matches!(last, Err(Refusal::Exhausted(_))), "{last:?}");
}

#[test]
fn admin_status_shows_each_slots_leases_and_never_the_redis_url() {
    let config = config("    redis: redis://:hunter2-secret@10.0.0.9:6379/0");
    let mut rng = Rng(29);
    let mut fleet = Fleet::new(config, 1);
    fleet.run(&mut rng, NOW, 2_000, true);
    let status = detour_core::admin::status(&fleet.config, &fleet.processes[0].store, NOW + 2_000);
    let text = status.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    let fleet_status = &status["fleet"];
    assert_eq!(fleet_status["state"], "127.0.0.1:8081");
    assert_eq!(fleet_status["reachable"], true);
    let slot = &fleet_status["slots"][0];
    assert!(slot["leases"].as_u64().unwrap() >= 1, "{slot}");
    assert!(slot["cover"].as_u64().unwrap() >= slot["spent"].as_u64().unwrap());
}

#[test]
fn rate_slots_reuse_a_ring_of_keys_and_start_each_minute_fresh() {
    use detour_core::fleet::rates;
    let config = rpm_config(20);
    let deployment = config.deployments[0].clone();
    let minute = NOW - NOW % 60_000;
    // Shared data cannot delete: minute m and m + 10 share one key.
    assert_eq!(
        rates::account_key(&deployment.id, "rpm", minute),
        rates::account_key(&deployment.id, "rpm", minute + 600_000)
    );
    let mut fleet = Fleet::new(config, 1);
    let mut admitted = [0u64; 2];
    let mut now = minute;
    while now < minute + 660_000 {
        // Traffic in the first minute and in the tenth after it, on the same key.
        let window = match now - minute {
            t if t < 60_000 => Some(0),
            t if t >= 600_000 => Some(1),
            _ => None,
        };
        if let Some(w) = window.filter(|_| now % 500 == 0) {
            if rates::take(&mut fleet.processes[0].store, &deployment, now, 1).is_ok() {
                admitted[w] += 1;
            }
        }
        if now % 50 == 0 {
            fleet.tick_at(0, now);
        }
        now += 10;
    }
    assert_eq!(
        admitted,
        [20, 20],
        "each minute starts with the whole limit"
    );
}

#[test]
fn with_exact_estimates_the_fleet_never_spends_a_nano_dollar_past_the_limit() {
    for seed in 1..8 {
        let mut rng = Rng(seed * 7919);
        let mut fleet = Fleet::new(config(""), 3);
        fleet.exact = true;
        fleet.run(&mut rng, NOW, 20_000, true);
        fleet.run(&mut rng, NOW + 20_000, 3_000, false);
        let (spent, _) = fleet.ledger_account(NOW + 23_000);
        assert_eq!(spent, fleet.settled(), "seed {seed}");
        assert!(spent <= LIMIT, "seed {seed}: {spent} > {LIMIT}");
        assert!(spent + 4 * ESTIMATE >= LIMIT, "seed {seed}: {spent}");
    }
}
