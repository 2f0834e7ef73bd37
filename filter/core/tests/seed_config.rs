//! `examples/configs/seed.yaml`, the seed's three route groups, loads cleanly and routes
//! every stage along the chain the seed prescribes.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;

use common::{chat, run, Provider, Reply, T0};
use detour_core::config::{self, Config};
use detour_core::store::MemoryStore;

const SEED: &str = include_str!("../../../examples/configs/seed.yaml");

fn seed() -> Config {
    let loaded = common::load_ok(SEED);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    loaded.config
}

/// The deployments a request tries when every one of them fails at once (401).
fn chain_for(config: &Config, model: Option<&str>, stage: Option<&str>) -> Vec<String> {
    let mut provider = Provider::new();
    for d in &config.deployments {
        provider = provider.always(&d.id, Reply::status(401));
    }
    let trace = run(
        config,
        &mut MemoryStore::default(),
        &mut provider,
        chat(config, model),
        stage,
        T0,
        0,
    );
    assert_eq!(trace.response().status, 502);
    trace.sent_ids().iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_seed_config_loads_without_errors_or_warnings() {
    let asked = RefCell::new(BTreeSet::new());
    let env = |name: &str| {
        asked.borrow_mut().insert(name.to_string());
        common::fake_env(name)
    };
    let loaded = match config::load(SEED, &env) {
        Ok(loaded) => loaded,
        Err(err) => panic!("{:#?}", err.errors),
    };
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    assert_eq!(
        asked.into_inner().into_iter().collect::<Vec<_>>(),
        [
            "ANTHROPIC_API_KEY",
            "DETOUR_ADMIN_TOKEN",
            "GEMINI_API_KEY",
            "OPENAI_API_KEY"
        ]
    );
    assert_eq!(loaded.config.deployments.len(), 7);
}

#[test]
fn the_seed_budgets_are_per_model_per_tag_and_in_total() {
    use detour_core::budget::Scope;
    let budgets = seed().budgets;
    let dollars = |scope: Scope| {
        budgets
            .limits
            .iter()
            .find(|l| l.scope == scope)
            .map(|l| l.limit_nanos / 1_000_000_000)
    };
    assert_eq!(dollars(Scope::Total), Some(100));
    assert_eq!(dollars(Scope::Model("claude-opus-4-5".into())), Some(50));
    assert_eq!(dollars(Scope::Model("gpt-5.2".into())), Some(30));
    assert_eq!(dollars(Scope::Tag("Build".into())), Some(20));
    assert_eq!(dollars(Scope::Tag("Operate".into())), Some(5));
    let total = budgets
        .limits
        .iter()
        .find(|l| l.scope == Scope::Total)
        .unwrap();
    assert_eq!(total.halt_at_percent, Some(110));
    assert_eq!(budgets.tag_overrun["Spec"], "claude-sonnet");
    assert_eq!(budgets.tag_overrun["Verify"], "local");
}

#[test]
fn the_seed_config_uses_the_seed_defaults() {
    let s = seed().settings;
    assert_eq!(s.num_retries, 3);
    assert_eq!(s.request_timeout_ms, 10_000);
    assert_eq!(s.allowed_fails, 3);
    assert_eq!(s.cooldown_ms, 30_000);
}

#[test]
fn every_cloud_deployment_has_a_key_a_price_and_a_context_window() {
    let config = seed();
    for d in &config.deployments {
        assert!(d.input_cost_per_token.is_some(), "{}", d.id);
        assert!(d.output_cost_per_token.is_some(), "{}", d.id);
        assert!(d.max_input_tokens.is_some(), "{}", d.id);
        assert_eq!(d.api_key.is_some(), d.id != "local", "{}", d.id);
    }
}

#[test]
fn high_precision_falls_back_opus_sonnet_gemini_pro_flash_local() {
    let config = seed();
    assert_eq!(
        chain_for(&config, Some("high-precision"), None),
        [
            "claude-opus",
            "claude-sonnet",
            "gemini-3-pro",
            "gemini-flash",
            "local"
        ]
    );
}

#[test]
fn implementation_falls_back_gpt_sonnet_gemini_pro_flash_local() {
    let config = seed();
    assert_eq!(
        chain_for(&config, Some("implementation"), None),
        [
            "gpt-5.2",
            "claude-sonnet",
            "gemini-3-pro",
            "gemini-flash",
            "local"
        ]
    );
}

#[test]
fn economy_falls_back_flash_local_and_never_uses_a_high_precision_model() {
    let config = seed();
    let chain = chain_for(&config, Some("economy"), None);
    assert_eq!(chain, ["economy-gemini-flash", "local"]);
    assert!(!chain.iter().any(|id| id.starts_with("claude")));
}

#[test]
fn each_stage_tag_routes_to_its_purpose_group() {
    let config = seed();
    for (stage, first) in [
        ("Spec", "claude-opus"),
        ("Design", "claude-opus"),
        ("Review", "claude-opus"),
        ("Build", "gpt-5.2"),
        ("Fix", "gpt-5.2"),
        ("Verify", "economy-gemini-flash"),
        ("Release", "economy-gemini-flash"),
        ("Operate", "economy-gemini-flash"),
    ] {
        let chain = chain_for(&config, None, Some(stage));
        assert_eq!(chain[0], first, "stage {stage}");
    }
}

#[test]
fn requests_reach_each_provider_in_its_own_protocol() {
    let config = seed();
    let mut provider = Provider::new();
    for d in &config.deployments {
        provider = provider.always(&d.id, Reply::status(401));
    }
    let trace = run(
        &config,
        &mut MemoryStore::default(),
        &mut provider,
        chat(&config, Some("high-precision")),
        None,
        T0,
        0,
    );
    let sent: Vec<(String, String, String)> = trace
        .sent
        .iter()
        .map(|s| {
            let body: serde_json::Value = serde_json::from_slice(&s.send.body).unwrap();
            (
                s.send.authority.clone(),
                s.send.path.clone(),
                // Gemini names the model in the path, not the body.
                body["model"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let expected = [
        ("api.anthropic.com", "/v1/messages", "claude-opus-4-5"),
        ("api.anthropic.com", "/v1/messages", "claude-sonnet-4-5"),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-3-pro-preview:generateContent",
            "-",
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "-",
        ),
        ("127.0.0.1:11434", "/v1/chat/completions", "llama3.1:8b"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, p, m)| (a.to_string(), p.to_string(), m.to_string()))
        .collect();
    assert_eq!(sent, expected);
}
