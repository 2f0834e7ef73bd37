//! Budget arithmetic under interleavings, period rollover, and the human gate, natively.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

use detour_core::budget::{self, Limit, Reservation, Scope};
use detour_core::halt::{self, Halt};
use detour_core::period::Period;
use detour_core::store::MemoryStore;

mod common;

const NOW: u64 = 1_795_460_787_000;

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn limits(limit: u64) -> Vec<Limit> {
    vec![
        Limit {
            scope: Scope::Total,
            limit_nanos: limit,
            period: Period::Month,
            halt_at_percent: Some(110),
        },
        Limit {
            scope: Scope::Group("g".into()),
            limit_nanos: limit / 2,
            period: Period::Day,
            halt_at_percent: None,
        },
    ]
}

#[test]
fn interleaved_workers_never_commit_past_any_limit_when_costs_stay_within_estimates() {
    for seed in 1..200 {
        let mut rng = Rng(seed);
        let all = limits(10_000 + rng.below(50_000));
        let mut store = MemoryStore::default();
        let mut in_flight: Vec<(Reservation, u64)> = Vec::new();
        let mut settled_costs = 0u64;
        for _ in 0..300 {
            if rng.below(3) > 0 {
                let estimate = 1 + rng.below(3_000);
                if let Ok(r) =
                    budget::reserve(&mut store, &all, &[(0, true), (1, true)], NOW, estimate)
                {
                    let actual = rng.below(estimate + 1);
                    in_flight.push((r, actual));
                }
            } else if !in_flight.is_empty() {
                let idx = rng.below(in_flight.len() as u64) as usize;
                let (r, actual) = in_flight.swap_remove(idx);
                if rng.below(4) == 0 {
                    budget::release(&mut store, &r);
                } else {
                    budget::settle(&mut store, &all, &r, actual);
                    settled_costs += actual;
                }
            }
            for limit in &all {
                let a = budget::account(&store, limit, NOW).unwrap();
                assert!(
                    a.spent + a.reserved <= limit.limit_nanos,
                    "seed {seed}: {limit:?} {a:?}"
                );
            }
        }
        for (r, actual) in in_flight.drain(..) {
            budget::settle(&mut store, &all, &r, actual);
            settled_costs += actual;
        }
        for limit in &all {
            let a = budget::account(&store, limit, NOW).unwrap();
            // To the nano-dollar: what was settled is what is recorded, nothing is held.
            assert_eq!((a.spent, a.reserved), (settled_costs, 0), "seed {seed}");
        }
    }
}

#[test]
fn overshoot_is_bounded_by_costs_beyond_their_estimates() {
    let all = limits(1_000);
    let mut store = MemoryStore::default();
    let held: Vec<_> = (0..4)
        .map(|_| budget::reserve(&mut store, &all, &[(0, true)], NOW, 250).unwrap())
        .collect();
    assert!(budget::reserve(&mut store, &all, &[(0, true)], NOW, 1).is_err());
    // Each answer costs 100 more than its estimate: the overshoot is 4 × 100.
    for r in &held {
        budget::settle(&mut store, &all, r, 350);
    }
    assert_eq!(
        budget::account(&store, &all[0], NOW).unwrap().spent,
        1_000 + 4 * 100
    );
}

#[test]
fn a_new_period_starts_with_fresh_counters_and_alerts() {
    let all = limits(1_000);
    let mut store = MemoryStore::default();
    let r = budget::reserve(&mut store, &all, &[(1, true)], NOW, 500).unwrap();
    let crossings = budget::settle(&mut store, &all, &r, 500);
    assert_eq!(
        crossings.iter().map(|c| c.percent).collect::<Vec<_>>(),
        vec![80, 90, 100]
    );
    assert!(budget::reserve(&mut store, &all, &[(1, true)], NOW, 1).is_err());
    let tomorrow = Period::Day.end(NOW);
    let r = budget::reserve(&mut store, &all, &[(1, true)], tomorrow, 450).unwrap();
    let crossings = budget::settle(&mut store, &all, &r, 450);
    assert_eq!(
        crossings.iter().map(|c| c.percent).collect::<Vec<_>>(),
        vec![80, 90]
    );
    // Yesterday's account is untouched.
    assert_eq!(budget::account(&store, &all[1], NOW).unwrap().spent, 500);
}

#[test]
fn a_halt_holds_until_its_budget_is_raised_and_a_manual_one_until_resumed() {
    let yaml = |total: u32| {
        format!(
            "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/m, api_base: http://127.0.0.1:1/v1, input_cost_per_token: 0, output_cost_per_token: 0}}\n\
             detour:\n  budgets: {{total: {total}}}\n"
        )
    };
    let at_100 = common::load_ok(&yaml(100)).config;
    let at_200 = common::load_ok(&yaml(200)).config;
    let budget_halt = Halt {
        scope: "total".into(),
        limit_nanos: 100_000_000_000,
        since: NOW,
        reason: "spend reached 110%".into(),
    };
    assert!(halt::holds(&budget_halt, &at_100));
    assert!(
        !halt::holds(&budget_halt, &at_200),
        "raising the budget and reloading releases it"
    );
    let manual = Halt {
        scope: "manual".into(),
        limit_nanos: 0,
        since: NOW,
        reason: "operator".into(),
    };
    assert!(halt::holds(&manual, &at_200));

    let mut store = MemoryStore::default();
    assert!(halt::set(&mut store, &budget_halt).unwrap());
    assert!(
        !halt::set(&mut store, &manual).unwrap(),
        "the first halt stays"
    );
    assert_eq!(halt::read(&store).unwrap(), Some(budget_halt));
    assert!(halt::clear(&mut store).unwrap());
    assert_eq!(halt::read(&store).unwrap(), None);
    assert!(!halt::clear(&mut store).unwrap());
}

/// One request through the flow, settled with `usage`: (deployment sent to, or the refusal status).
fn serve_once(
    config: &detour_core::config::Config,
    store: &mut MemoryStore,
    stage: &str,
    usage: detour_core::usage::Usage,
) -> Result<String, u16> {
    use detour_core::flow::{Answer, Flow, Step, Verdict};
    let request = common::chat(config, None);
    let mut flow = Flow::start(config, request, Some(stage), NOW, 1).unwrap();
    match flow.poll(config, store, NOW) {
        Step::Send(send) => {
            let answer = Answer {
                status: Some(200),
                ..Answer::default()
            };
            assert!(matches!(
                flow.on_answer(config, store, NOW, answer),
                Verdict::Deliver(_)
            ));
            flow.settle(config, store, NOW, Some(usage));
            Ok(send.deployment_id)
        }
        Step::Respond(response) => Err(response.status),
        Step::Wait(_) => panic!("no waits expected"),
    }
}

#[test]
fn a_tag_at_100_percent_uses_its_overrun_group_and_is_still_charged() {
    let config = common::load_ok(
        "model_list:\n\
         \x20 - model_name: g\n    litellm_params: {model: openai/a, api_base: http://127.0.0.1:1/a/v1, input_cost_per_token: 0.001, output_cost_per_token: 0.001}\n\
         \x20 - model_name: cheap\n    litellm_params: {model: openai/b, api_base: http://127.0.0.1:1/b/v1, input_cost_per_token: 0, output_cost_per_token: 0}\n\
         detour:\n  stages: {Spec: g}\n  budgets:\n    default_max_tokens: 1\n    tags: {Spec: 0.1}\n    tag_overrun: {Spec: cheap}\n",
    )
    .config;
    let mut store = MemoryStore::default();
    let big = detour_core::usage::Usage {
        prompt_tokens: 100,
        completion_tokens: 0,
        cached_prompt_tokens: 0,
        cache_write_tokens: 0,
    };
    // $0.10 of $0.10: the tag is used up ...
    assert_eq!(
        serve_once(&config, &mut store, "Spec", big),
        Ok("g/openai/a".to_string())
    );
    // ... so Spec requests go to the overrun group instead of failing.
    assert_eq!(
        serve_once(&config, &mut store, "Spec", big),
        Ok("cheap/openai/b".to_string())
    );
    let tag = config.budgets.tag_limit("Spec").unwrap();
    assert_eq!(
        budget::account(&store, tag, NOW).unwrap().spent,
        100_000_000
    );
}
