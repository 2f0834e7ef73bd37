//! Loading LiteLLM's `config.yaml`: what is read, the defaults, what is refused (with the
//! field path and the reason), what only warns, and that keys never print.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

mod common;

use common::{fake_env, load_err, load_ok, Fixture, TEST_KEY};
use detour_core::cluster::Scheme;
use detour_core::config::{self, Diagnostic, FallbackKind, Settings};

const FULL: &str = r#"
model_list:
  - model_name: smart
    litellm_params:
      model: openai/gpt-4o
      api_base: https://api.openai.com/v1
      api_key: os.environ/OPENAI_API_KEY
      rpm: 500
      tpm: 90000
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
      order: 1
      weight: 3
    model_info:
      id: gpt-4o-primary
      max_input_tokens: 128000
  - model_name: smart
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
      order: 2
  - model_name: cheap
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://10.0.0.7:8000/v1
      max_input_tokens: 32768
  - model_name: big
    litellm_params:
      model: openai/gpt-4.1
      api_base: os.environ/BIG_API_BASE
      api_key: os.environ/OPENAI_API_KEY
litellm_settings:
  num_retries: 5
  request_timeout: 20
  allowed_fails: 2
router_settings:
  num_retries: 1
  cooldown_time: 45
  fallbacks: [{smart: [cheap]}]
  context_window_fallbacks: [{smart: [big]}]
  content_policy_fallbacks: [{smart: [cheap]}]
  default_fallbacks: [cheap]
detour:
  stages: {Build: smart, Verify: cheap}
  failure_window: 2m
  backoff_base: 500ms
  retry_after_cap: 20
  max_cooldown: 10m
  max_attempts: 7
  request_deadline: 90s
"#;

fn env_with_base(name: &str) -> Option<String> {
    match name {
        "BIG_API_BASE" => Some("https://big.example.com/openai/v1".into()),
        _ => fake_env(name),
    }
}

fn load_full() -> config::Config {
    match config::load(FULL, &env_with_base) {
        Ok(loaded) => loaded.config,
        Err(err) => panic!("{:#?}", err.errors),
    }
}

fn has_error(errors: &[Diagnostic], path: &str, words: &str) -> bool {
    errors
        .iter()
        .any(|d| d.path == path && d.message.contains(words))
}

#[track_caller]
fn assert_error(text: &str, path: &str, words: &str) {
    let err = load_err(text);
    assert!(
        has_error(&err.errors, path, words),
        "expected an error at {path:?} saying {words:?}; got {:#?}",
        err.errors
    );
}

#[track_caller]
fn assert_warning(text: &str, path: &str) {
    let loaded = load_ok(text);
    assert!(
        loaded.warnings.iter().any(|d| d.path == path),
        "expected a warning at {path:?}; got {:#?}",
        loaded.warnings
    );
}

fn one_deployment() -> Fixture {
    Fixture::new().deployment("g", "a")
}

// ---------------------------------------------------------------------------------------
// What is read

#[test]
fn model_list_entries_become_deployments_with_their_litellm_params() {
    let config = load_full();
    assert_eq!(config.deployments.len(), 4);

    let d = &config.deployments[0];
    assert_eq!(d.id, "gpt-4o-primary");
    assert_eq!(d.group, "smart");
    assert_eq!(d.model, "openai/gpt-4o");
    assert_eq!(d.provider_model, "gpt-4o");
    assert_eq!(d.upstream.scheme, Scheme::Https);
    assert_eq!(d.upstream.host, "api.openai.com");
    assert_eq!(d.upstream.port, 443);
    assert_eq!(d.upstream.path_prefix, "/v1");
    assert_eq!(d.rpm, Some(500));
    assert_eq!(d.tpm, Some(90_000));
    assert_eq!(d.input_cost_per_token, Some(0.0000025));
    assert_eq!(d.output_cost_per_token, Some(0.00001));
    assert_eq!(d.max_input_tokens, Some(128_000));
    assert_eq!((d.order, d.weight), (1, 3));
    let key = d.api_key.as_ref().unwrap();
    assert_eq!(key.expose(), "sk-fake-openai_api_key");
    assert_eq!(key.source, "os.environ/OPENAI_API_KEY");

    // No id: `<model_name>/<model>`; no api_base: the provider's public endpoint.
    let mini = &config.deployments[1];
    assert_eq!(mini.id, "smart/openai/gpt-4o-mini");
    assert_eq!(mini.upstream.base_url(), "https://api.openai.com/v1");
    assert_eq!((mini.order, mini.weight), (2, 1));

    // An OpenAI-compatible server; max_input_tokens straight in litellm_params; no key.
    let vllm = &config.deployments[2];
    assert_eq!(vllm.provider_model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(vllm.upstream.authority(), "10.0.0.7:8000");
    assert_eq!(vllm.max_input_tokens, Some(32_768));
    assert!(vllm.api_key.is_none());
}

#[test]
fn api_base_may_come_from_the_environment() {
    let config = load_full();
    let big = &config.deployments[3];
    assert_eq!(big.upstream.base_url(), "https://big.example.com/openai/v1");
}

#[test]
fn deployments_of_one_model_name_form_a_group_sorted_by_order() {
    let config = Fixture::new()
        .deployment_with("g", "late", &["order: 3"])
        .deployment_with("g", "early", &["order: 1"])
        .deployment_with("g", "middle", &["order: 2"])
        .deployment("h", "other")
        .build();
    let ids: Vec<&str> = config.groups["g"]
        .deployments
        .iter()
        .map(|i| config.deployments[*i].id.as_str())
        .collect();
    assert_eq!(ids, ["early", "middle", "late"]);
    assert_eq!(config.groups.len(), 2);
}

#[test]
fn repeated_deployment_ids_are_made_unique() {
    let text = "model_list:\n\
        - {model_name: g, litellm_params: {model: openai/m, api_base: 'http://h/v1'}}\n\
        - {model_name: g, litellm_params: {model: openai/m, api_base: 'http://h2/v1'}}\n";
    let config = load_ok(text).config;
    let ids: Vec<&str> = config.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["g/openai/m", "g/openai/m#2"]);
}

#[test]
fn defaults_are_the_seeds_retry_timeout_and_cooldown_settings() {
    let config = one_deployment().build();
    let s = &config.settings;
    assert_eq!(s.num_retries, 3);
    assert_eq!(s.request_timeout_ms, 10_000);
    assert_eq!(s.allowed_fails, 3);
    assert_eq!(s.cooldown_ms, 30_000);
    assert_eq!(*s, Settings::default());
}

#[test]
fn router_settings_win_over_litellm_settings() {
    let s = load_full().settings;
    assert_eq!(s.num_retries, 1, "router_settings.num_retries wins");
    assert_eq!(s.request_timeout_ms, 20_000, "only in litellm_settings");
    assert_eq!(s.allowed_fails, 2, "only in litellm_settings");
    assert_eq!(s.cooldown_ms, 45_000, "only in router_settings");
}

#[test]
fn the_detour_section_sets_detours_own_settings() {
    let config = load_full();
    let s = &config.settings;
    assert_eq!(s.failure_window_ms, 120_000);
    assert_eq!(s.backoff_base_ms, 500);
    assert_eq!(s.retry_after_cap_ms, 20_000);
    assert_eq!(s.max_cooldown_ms, 600_000);
    assert_eq!(s.max_attempts, 7);
    assert_eq!(s.request_deadline_ms, 90_000);
    assert_eq!(config.stages.len(), 2);
    assert_eq!(config.stages["Build"], "smart");
    assert_eq!(config.stages["Verify"], "cheap");
}

#[test]
fn the_four_fallback_tables_are_read() {
    let f = load_full().fallbacks;
    assert_eq!(f.targets("smart", FallbackKind::General), ["cheap"]);
    assert_eq!(f.targets("smart", FallbackKind::ContextWindow), ["big"]);
    assert_eq!(f.targets("smart", FallbackKind::ContentPolicy), ["cheap"]);
    // default_fallbacks is the "*" entry of the general table.
    assert_eq!(f.targets("big", FallbackKind::General), ["cheap"]);
    // A context-window table that has no entry for the group means "no fallback".
    assert!(f.targets("big", FallbackKind::ContextWindow).is_empty());
}

#[test]
fn fallback_targets_keep_the_order_written() {
    let config = Fixture::new()
        .deployment("g", "a")
        .deployment("zeta", "z")
        .deployment("alpha", "x")
        .deployment("mid", "m")
        .router("fallbacks: [{g: [zeta, alpha, mid]}]")
        .build();
    assert_eq!(
        config.fallbacks.targets("g", FallbackKind::General),
        ["zeta", "alpha", "mid"]
    );
}

#[test]
fn without_a_stages_mapping_the_seed_stages_map_to_the_groups_that_exist() {
    let config = Fixture::new()
        .deployment("high-precision", "opus")
        .deployment("economy", "flash")
        .build();
    assert_eq!(config.stages["Spec"], "high-precision");
    assert_eq!(config.stages["Design"], "high-precision");
    assert_eq!(config.stages["Review"], "high-precision");
    assert_eq!(config.stages["Verify"], "economy");
    assert_eq!(config.stages["Operate"], "economy");
    assert!(
        !config.stages.contains_key("Build"),
        "no implementation group here"
    );
}

#[test]
fn json_configs_load_like_yaml() {
    let json = r#"{
      "model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY", "rpm": 10}},
        {"model_name": "h", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9000/v1"}}
      ],
      "router_settings": {"num_retries": 0, "cooldown_time": "1m", "fallbacks": [{"g": ["h"]}]},
      "detour": {"max_attempts": 4}
    }"#;
    let config = load_ok(json).config;
    assert_eq!(config.deployments.len(), 2);
    assert_eq!(config.deployments[0].provider_model, "gpt-4o");
    assert_eq!(config.deployments[0].rpm, Some(10));
    assert_eq!(config.deployments[1].upstream.port, 9000);
    assert_eq!(config.settings.num_retries, 0);
    assert_eq!(config.settings.cooldown_ms, 60_000);
    assert_eq!(config.settings.max_attempts, 4);
    assert_eq!(config.fallbacks.targets("g", FallbackKind::General), ["h"]);
}

#[test]
fn durations_accept_seconds_and_units() {
    let config = one_deployment()
        .router("request_timeout: 2.5")
        .router("cooldown_time: 5m")
        .build();
    assert_eq!(config.settings.request_timeout_ms, 2_500);
    assert_eq!(config.settings.cooldown_ms, 300_000);
}

// ---------------------------------------------------------------------------------------
// What is refused

#[test]
fn a_missing_model_list_is_an_error() {
    assert_error(
        "router_settings: {num_retries: 2}\n",
        "model_list",
        "required",
    );
}

#[test]
fn an_empty_or_malformed_model_list_is_an_error() {
    assert_error("model_list: []\n", "model_list", "at least one");
    assert_error("model_list: {g: 1}\n", "model_list", "must be a list");
    assert_error(
        "model_list:\n  - model_name: g\n    litellm_params: openai/gpt-4o\n",
        "model_list[0].litellm_params",
        "must be a mapping",
    );
}

#[test]
fn an_empty_or_unparseable_document_is_an_error() {
    let err = load_err("   \n");
    assert!(err.errors[0].message.contains("empty"), "{:?}", err.errors);
    let err = load_err("model_list: [\n");
    assert!(
        err.errors[0].message.contains("not valid YAML or JSON"),
        "{:?}",
        err.errors
    );
}

#[test]
fn missing_model_name_and_model_are_errors() {
    assert_error(
        "model_list:\n  - litellm_params: {model: openai/gpt-4o}\n",
        "model_list[0].model_name",
        "required",
    );
    assert_error(
        "model_list:\n  - model_name: g\n    litellm_params: {api_base: 'http://h/v1'}\n",
        "model_list[0].litellm_params.model",
        "required",
    );
}

#[test]
fn a_bad_api_base_is_an_error() {
    let yaml = one_deployment()
        .deployment_with("g", "b", &[])
        .yaml()
        .replace("http://127.0.0.1:18001/b/v1", "ftp://models.example.com/v1");
    assert_error(
        &yaml,
        "model_list[1].litellm_params.api_base",
        "must start with http:// or https://",
    );
    assert_error(
        "model_list:\n  - model_name: g\n    litellm_params: {model: openai/m, api_base: 'https://user:pw@h/v1'}\n",
        "model_list[0].litellm_params.api_base",
        "credentials",
    );
}

#[test]
fn an_openai_compatible_server_without_api_base_is_an_error() {
    assert_error(
        "model_list:\n  - model_name: g\n    litellm_params: {model: hosted_vllm/llama}\n",
        "model_list[0].litellm_params.api_base",
        "is required",
    );
}

#[test]
fn an_unknown_fallback_group_is_an_error() {
    let fixture = Fixture::new().deployment("g", "a").deployment("h", "b");
    let err = load_err(&fixture.clone().router("fallbacks: [{g: [h, nope]}]").yaml());
    assert!(
        has_error(
            &err.errors,
            "router_settings.fallbacks[0].g[1]",
            "unknown group \"nope\""
        ),
        "{:#?}",
        err.errors
    );
    assert_error(
        &fixture.clone().router("fallbacks: [{nope: [h]}]").yaml(),
        "router_settings.fallbacks[0].nope",
        "unknown group",
    );
    assert_error(
        &fixture
            .clone()
            .router("context_window_fallbacks: [{g: [huge]}]")
            .yaml(),
        "router_settings.context_window_fallbacks[0].g[0]",
        "unknown group",
    );
    assert_error(
        &fixture.clone().router("default_fallbacks: [ghost]").yaml(),
        "router_settings.default_fallbacks[0]",
        "unknown group",
    );
    assert_error(
        &fixture.router("fallbacks: [{g: [g]}]").yaml(),
        "router_settings.fallbacks[0].g[0]",
        "its own group",
    );
}

#[test]
fn a_missing_environment_variable_is_an_error_naming_it() {
    let yaml = one_deployment()
        .yaml()
        .replace("os.environ/DETOUR_TEST_KEY", "os.environ/NOT_SET_ANYWHERE");
    assert_error(
        &yaml,
        "model_list[0].litellm_params.api_key",
        "NOT_SET_ANYWHERE is not set",
    );
}

#[test]
fn an_empty_environment_variable_is_an_error() {
    let yaml = one_deployment().yaml();
    let empty = |name: &str| (name == "DETOUR_TEST_KEY").then(String::new);
    let err = config::load(&yaml, &empty).unwrap_err();
    assert!(
        has_error(
            &err.errors,
            "model_list[0].litellm_params.api_key",
            "is empty"
        ),
        "{:#?}",
        err.errors
    );
}

#[test]
fn wrong_types_are_errors_naming_the_field() {
    let base = one_deployment();
    assert_error(
        &base.clone().router("num_retries: many").yaml(),
        "router_settings.num_retries",
        "whole number",
    );
    assert_error(
        &base.clone().router("allowed_fails: -1").yaml(),
        "router_settings.allowed_fails",
        "whole number",
    );
    assert_error(
        &base.clone().router("cooldown_time: soon").yaml(),
        "router_settings.cooldown_time",
        "not a duration",
    );
    assert_error(
        &base.clone().router("disable_cooldowns: maybe").yaml(),
        "router_settings.disable_cooldowns",
        "true or false",
    );
    assert_error(
        &base.clone().router("request_timeout: 0").yaml(),
        "router_settings.request_timeout",
        "greater than 0",
    );
    assert_error(
        &base.clone().router("fallbacks: {g: [h]}").yaml(),
        "router_settings.fallbacks",
        "must be a list",
    );
    assert_error(
        &Fixture::new()
            .deployment_with("g", "a", &["rpm: [1, 2]"])
            .yaml(),
        "model_list[0].litellm_params.rpm",
        "whole number",
    );
    assert_error(
        &Fixture::new()
            .deployment_with("g", "a", &["input_cost_per_token: cheap"])
            .yaml(),
        "model_list[0].litellm_params.input_cost_per_token",
        "non-negative number",
    );
    assert_error(
        &Fixture::new()
            .deployment_with("g", "a", &["weight: 0"])
            .yaml(),
        "model_list[0].litellm_params.weight",
        "at least 1",
    );
    assert_error(
        &base.clone().detour("max_attempts: 0").yaml(),
        "detour.max_attempts",
        "at least 1",
    );
    assert_error(
        "model_list:\n  - model_name: [g]\n    litellm_params: {model: openai/m}\n",
        "model_list[0].model_name",
        "must be a string",
    );
    assert_error(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/m}}\nrouter_settings: [1]\n",
        "router_settings",
        "must be a mapping",
    );
}

#[test]
fn an_unknown_detour_key_is_an_error() {
    assert_error(
        &one_deployment().detour("retries: 2").yaml(),
        "detour.retries",
        "unknown detour setting",
    );
}

#[test]
fn a_stage_mapped_to_an_unknown_group_is_an_error() {
    assert_error(
        &one_deployment().detour("stages: {Build: nope}").yaml(),
        "detour.stages.Build",
        "unknown group",
    );
}

#[test]
fn a_provider_whose_native_protocol_detour_does_not_speak_is_an_error() {
    for model in ["bedrock/x", "vertex_ai/gemini-2.5-pro", "azure/gpt-4o"] {
        let text = format!(
            "model_list:\n  - model_name: g\n    litellm_params: {{model: {model}, api_key: os.environ/ANTHROPIC_API_KEY}}\n"
        );
        assert_error(
            &text,
            "model_list[0].litellm_params.model",
            "native protocol",
        );
    }
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = r#"
model_list:
  - model_name: g
    litellm_params: {model: bedrock/claude-sonnet-4-5}
  - model_name: h
    litellm_params: {model: openai/m, api_base: "ftp://x", api_key: os.environ/MISSING_KEY}
router_settings:
  num_retries: lots
detour:
  colour: blue
"#;
    let err = load_err(text);
    let paths: Vec<&str> = err.errors.iter().map(|d| d.path.as_str()).collect();
    for expected in [
        "model_list[0].litellm_params.model",
        "model_list[1].litellm_params.api_base",
        "model_list[1].litellm_params.api_key",
        "router_settings.num_retries",
        "detour.colour",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn diagnostics_print_as_path_then_reason() {
    let err = load_err(&one_deployment().detour("retries: 2").yaml());
    let printed = err.errors[0].to_string();
    assert!(
        printed.starts_with("detour.retries: unknown detour setting"),
        "{printed}"
    );
}

// ---------------------------------------------------------------------------------------
// What only warns

#[test]
fn litellm_router_settings_detour_does_not_implement_warn_with_their_path() {
    assert_warning(
        &one_deployment()
            .router("routing_strategy: least-busy")
            .yaml(),
        "router_settings.routing_strategy",
    );
    assert_warning(
        &one_deployment().router("retry_policy: {}").yaml(),
        "router_settings.retry_policy",
    );
    assert_warning(
        &one_deployment().router("redis_host: redis.local").yaml(),
        "router_settings.redis_host",
    );
}

#[test]
fn litellm_settings_and_params_detour_does_not_implement_warn_with_their_path() {
    let mut yaml = Fixture::new()
        .deployment_with("g", "a", &["max_parallel_requests: 4"])
        .yaml();
    yaml.push_str(
        "litellm_settings:\n  drop_params: true\n  success_callback: [langfuse]\n\
         general_settings:\n  master_key: sk-1234\n",
    );
    let loaded = load_ok(&yaml);
    let paths: Vec<&str> = loaded.warnings.iter().map(|d| d.path.as_str()).collect();
    for expected in [
        "model_list[0].litellm_params.max_parallel_requests",
        "litellm_settings.drop_params",
        "litellm_settings.success_callback",
        "general_settings.master_key",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn settings_detour_always_honours_load_silently() {
    let loaded = load_ok(
        &one_deployment()
            .router("routing_strategy: simple-shuffle")
            .router("enable_pre_call_checks: true")
            .yaml(),
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

#[test]
fn literal_keys_warn_and_rate_limits_do_not() {
    let yaml = Fixture::new()
        .deployment_with("g", "a", &["rpm: 60"])
        .yaml()
        .replace("os.environ/DETOUR_TEST_KEY", "sk-literal-in-file");
    let loaded = load_ok(&yaml);
    let paths: Vec<&str> = loaded.warnings.iter().map(|d| d.path.as_str()).collect();
    // rpm/tpm are enforced, so they are no longer worth a warning.
    assert!(!paths.contains(&"model_list"), "{paths:?}");
    assert!(
        paths.contains(&"model_list[0].litellm_params.api_key"),
        "{paths:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Secrets

#[test]
fn api_keys_never_appear_in_debug_output() {
    let mut yaml = Fixture::new()
        .deployment("g", "from-env")
        .deployment("g", "literal")
        .yaml();
    yaml = yaml.replacen(
        "os.environ/DETOUR_TEST_KEY\n    model_info:\n      id: literal",
        "sk-literal-SECRET-42\n    model_info:\n      id: literal",
        1,
    );
    // Make sure the replacement hit the second deployment.
    assert!(yaml.contains("sk-literal-SECRET-42"), "{yaml}");
    let loaded = load_ok(&yaml);
    assert_eq!(
        loaded.config.deployments[1]
            .api_key
            .as_ref()
            .unwrap()
            .expose(),
        "sk-literal-SECRET-42"
    );
    for printed in [
        format!("{:?}", loaded.config),
        format!("{:#?}", loaded.config),
        format!("{loaded:?}"),
    ] {
        assert!(!printed.contains(TEST_KEY), "env key leaked: {printed}");
        assert!(
            !printed.contains("sk-literal-SECRET-42"),
            "literal key leaked: {printed}"
        );
        assert!(printed.contains("redacted"));
    }
}

#[test]
fn api_keys_never_appear_in_load_errors() {
    let yaml = Fixture::new()
        .deployment("g", "a")
        .router("num_retries: nope")
        .yaml();
    let err = load_err(&yaml);
    let printed = format!("{err:?}");
    assert!(!printed.contains(TEST_KEY), "{printed}");
}

#[test]
fn model_group_alias_routes_other_names_to_a_group() {
    let text = r#"
model_list:
  - model_name: high-precision
    litellm_params: {model: anthropic/claude-opus-4-5, api_key: os.environ/ANTHROPIC_API_KEY}
router_settings:
  model_group_alias:
    claude-opus-4-5-20251101: high-precision
    claude-haiku-4-5: {model: high-precision, hidden: true}
"#;
    let config = load_ok(text).config;
    for name in [
        "claude-opus-4-5-20251101",
        "claude-haiku-4-5",
        "high-precision",
    ] {
        assert_eq!(
            config.resolve_group(Some(name), None).unwrap().name,
            "high-precision"
        );
    }
    let models = detour_core::request::models_answer(&config, "GET", "/v1/models").unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&models.body).unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["high-precision", "claude-opus-4-5-20251101"],
        "hidden aliases are not listed"
    );

    for (alias, problem) in [
        ("{x: nowhere}", "not a route group"),
        ("{high-precision: high-precision}", "already a route group"),
        ("{x: {hidden: true}}", "is required"),
        ("{x: 3}", "must be a group name"),
    ] {
        let text = format!(
            "model_list:\n  - model_name: high-precision\n    litellm_params: {{model: openai/m, api_key: os.environ/OPENAI_API_KEY}}\nrouter_settings:\n  model_group_alias: {alias}\n"
        );
        let err = load_err(&text);
        assert!(
            err.errors.iter().any(|d| d.message.contains(problem)),
            "{alias}: {:?}",
            err.errors
        );
    }
}

// ---------------------------------------------------------------------------------------
// Fleet mode

#[test]
fn fleet_section_reads_every_setting() {
    let config = load_ok(
        &one_deployment()
            .detour(
                "fleet: {state: 'http://detour-state.detour.svc:8081', lease_fraction: 0.1, \
                 lease_ttl: 2m, sync_interval: 500ms, call_timeout: 3s, local_cap: 0.02, \
                 namespace: team-a, on_unreachable: {budgets: open, rates: closed}}",
            )
            .yaml(),
    )
    .config;
    let fleet = config.fleet.expect("fleet mode");
    assert!(fleet.state_configured);
    assert_eq!(fleet.state.authority(), "detour-state.detour.svc:8081");
    assert_eq!((fleet.lease_permille, fleet.local_cap_permille), (100, 20));
    assert_eq!(
        (
            fleet.lease_ttl_ms,
            fleet.sync_interval_ms,
            fleet.call_timeout_ms
        ),
        (120_000, 500, 3_000)
    );
    assert_eq!(fleet.namespace, "team-a");
    assert_eq!(
        fleet.budgets_unreachable,
        detour_core::fleet::FailMode::Open
    );
    assert_eq!(
        fleet.rates_unreachable,
        detour_core::fleet::FailMode::Closed
    );
    assert!(fleet.redis.is_none());
}

#[test]
fn fleet_is_off_without_a_section_or_a_redis() {
    assert!(load_ok(&one_deployment().yaml()).config.fleet.is_none());
    assert!(load_ok(
        &one_deployment()
            .detour("fleet: {enabled: false, state: 'http://s:1'}")
            .yaml()
    )
    .config
    .fleet
    .is_none());
}

#[test]
fn litellm_redis_settings_turn_fleet_mode_on_without_leaking_the_password() {
    let loaded = load_ok(
        &one_deployment()
            .router("redis_host: redis.local")
            .router("redis_port: 6380")
            .router("redis_password: os.environ/DETOUR_TEST_KEY")
            .yaml(),
    );
    let fleet = loaded.config.fleet.expect("fleet mode");
    let url = fleet.redis.as_ref().expect("redis");
    assert_eq!(
        url.expose(),
        format!("redis://:{TEST_KEY}@redis.local:6380/0")
    );
    assert!(!fleet.state_configured);
    assert!(!format!("{fleet:?}").contains(TEST_KEY));
    assert!(loaded.warnings.iter().any(
        |w| w.path == "router_settings.redis_host" && w.message.contains("detour.fleet.state")
    ));
}

#[test]
fn fleet_mistakes_name_their_field() {
    assert_error(
        &one_deployment()
            .detour("fleet: {lease_fraction: 0.1}")
            .yaml(),
        "detour.fleet.state",
        "required",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1', lease_fraction: 1.5}")
            .yaml(),
        "detour.fleet.lease_fraction",
        "at most 1",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1', sync_interval: 10s, lease_ttl: 20s}")
            .yaml(),
        "detour.fleet.lease_ttl",
        "five sync intervals",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1', on_unreachable: {budgets: maybe}}")
            .yaml(),
        "detour.fleet.on_unreachable.budgets",
        "closed or open",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1/v1'}")
            .yaml(),
        "detour.fleet.state",
        "without a path",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1', redis: 'http://r:6379'}")
            .yaml(),
        "detour.fleet.redis",
        "redis://",
    );
    assert_error(
        &one_deployment()
            .detour("fleet: {state: 'http://s:1', leases: 3}")
            .yaml(),
        "detour.fleet.leases",
        "unknown fleet setting",
    );
}
