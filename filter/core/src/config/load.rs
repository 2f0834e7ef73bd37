//! Loading LiteLLM's `config.yaml` (plus detour's own `detour:` section).
//!
//! Policy, in one place:
//! - a value detour relies on that is missing or wrong is an **error** naming its path, and
//!   the whole load fails (the filter refuses to start rather than run a misread config);
//! - a LiteLLM key detour does not implement is a **warning**, never silence;
//! - an unknown key inside `detour:` is an error (our own schema: a typo must not pass).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::budgets;
use super::providers;
use super::walk::{index, join, Diagnostic, Diags, Section};
use super::{
    Alias, Config, Deployment, Fallbacks, Group, HealthChecks, ProbeKind, Secret, Settings,
    Webhook, WebhookFormat, DEFAULT_STAGES,
};
use crate::cluster::Upstream;

/// A configuration that loaded, and what the user should hear about it.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// LiteLLM keys detour ignores, risky choices, and other non-fatal remarks.
    pub warnings: Vec<Diagnostic>,
}

/// A configuration that did not load.
#[derive(Debug)]
pub struct LoadError {
    /// Every error found (at least one).
    pub errors: Vec<Diagnostic>,
    /// Warnings found along the way.
    pub warnings: Vec<Diagnostic>,
}

const TOP_LEVEL: [&str; 6] = [
    "model_list",
    "litellm_settings",
    "router_settings",
    "general_settings",
    "environment_variables",
    "detour",
];

/// Settings keys detour implements, valid in `litellm_settings` and `router_settings`.
const SETTINGS_KEYS: [&str; 14] = [
    "model_group_alias",
    "max_budget",
    "budget_duration",
    "num_retries",
    "request_timeout",
    "timeout",
    "stream_timeout",
    "allowed_fails",
    "cooldown_time",
    "disable_cooldowns",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
];

/// LiteLLM settings detour accepts silently because it always behaves that way.
const SETTINGS_ALWAYS_ON: [(&str, &str); 2] = [
    // detour always skips deployments whose context window is too small.
    ("enable_pre_call_checks", "true"),
    // detour tries deployments of a group by `order`, then weighted: simple-shuffle.
    ("routing_strategy", "simple-shuffle"),
];

const DEPLOYMENT_KEYS: [&str; 3] = ["model_name", "litellm_params", "model_info"];

const PARAMS_KEYS: [&str; 14] = [
    "max_budget",
    "budget_duration",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "model",
    "api_base",
    "api_key",
    "rpm",
    "tpm",
    "input_cost_per_token",
    "output_cost_per_token",
    "max_input_tokens",
    "order",
    "weight",
];

const MODEL_INFO_KEYS: [&str; 7] = [
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "id",
    "max_input_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "max_output_tokens",
];

const DETOUR_KEYS: [&str; 14] = [
    "events",
    "fleet",
    "health_checks",
    "budgets",
    "admin",
    "stages",
    "failure_window",
    "backoff_base",
    "retry_after_cap",
    "max_cooldown",
    "max_attempts",
    "request_deadline",
    "max_request_body_bytes",
    "num_retries_per_request",
];

/// Parses and validates a configuration.
///
/// `env` resolves `os.environ/NAME` references; the core never reads the environment
/// itself (in Envoy the variables come from `vm_config.environment_variables`).
pub fn load(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, LoadError> {
    let mut diags = Diags::default();
    let config = parse(text, env, &mut diags);
    match config {
        Some(config) if diags.errors.is_empty() => Ok(Loaded {
            config,
            warnings: diags.warnings,
        }),
        _ => {
            if diags.errors.is_empty() {
                diags.error("", "configuration is invalid");
            }
            Err(LoadError {
                errors: diags.errors,
                warnings: diags.warnings,
            })
        }
    }
}

fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diags) -> Option<Config> {
    if text.trim().is_empty() {
        diags.error("", "configuration is empty");
        return None;
    }
    // JSON is (nearly) a subset of YAML, so one parser reads both.
    let root: Value = match serde_yaml::from_str(text) {
        Ok(root) => root,
        Err(err) => {
            diags.error("", format!("not valid YAML or JSON: {err}"));
            return None;
        }
    };
    let top = Section::of(&root, String::new(), diags)?;
    for key in top.unknown_keys(&TOP_LEVEL) {
        diags.warn(key, "is not a LiteLLM section detour implements; ignored");
    }
    warn_ignored_sections(&top, diags);

    let mut settings = Settings::default();
    let mut fallback_sources: Vec<Section<'_>> = Vec::new();
    let mut litellm_total = None;
    // router_settings is read last so it wins, as Router kwargs do in LiteLLM.
    for name in ["litellm_settings", "router_settings"] {
        if let Some(section) = top
            .get(name)
            .and_then(|v| Section::of(v, name.to_string(), diags))
        {
            read_settings(&section, &mut settings, diags);
            if let Some(dollars) = section.f64("max_budget", diags) {
                let duration = section.string("budget_duration", diags);
                litellm_total = Some((dollars, duration, section.path_of("max_budget")));
            }
            fallback_sources.push(section);
        }
    }
    let detour = top
        .get("detour")
        .and_then(|v| Section::of(v, "detour".to_string(), diags));
    if let Some(detour) = &detour {
        read_detour_settings(detour, &mut settings, diags);
    }

    let (deployments, deployment_budgets) = read_model_list(&top, env, diags);
    let groups = build_groups(&deployments);
    let mut fallbacks = Fallbacks::default();
    let mut aliases = BTreeMap::new();
    for section in &fallback_sources {
        read_fallbacks(section, &groups, &mut fallbacks, diags);
        read_aliases(section, &groups, &mut aliases, diags);
    }
    let stages = read_stages(detour.as_ref(), &groups, diags);
    let budgets = budgets::read_budgets(
        detour.as_ref(),
        litellm_total,
        &deployment_budgets,
        &deployments,
        &groups,
        &stages,
        diags,
    );
    let mut resolve =
        |raw: &str, path: &str, diags: &mut Diags| resolve_secret_ref(raw, path, env, diags);
    let admin = budgets::read_admin(detour.as_ref(), &mut resolve, diags);
    let health_checks = read_health_checks(&top, detour.as_ref(), diags);
    let webhook = read_webhook(detour.as_ref(), env, diags);
    let litellm: Vec<&Section<'_>> = fallback_sources.iter().collect();
    let fleet = super::fleet::read_fleet(detour.as_ref(), &litellm, env, diags);
    // `read_webhook` has reported an `events` that is not a mapping.
    if let Some(Value::Object(events)) = detour.as_ref().and_then(|d| d.get("events")) {
        let events = Section {
            path: join("detour", "events"),
            map: events,
        };
        if let Some(requests) = events.bool("requests", diags) {
            settings.request_events = requests;
        }
    }

    Some(Config {
        deployments,
        groups,
        aliases,
        fallbacks,
        settings,
        stages,
        budgets,
        admin,
        health_checks,
        webhook,
        fleet,
    })
}

/// `detour.events.webhook: {url, format, batch_max, flush_interval, buffer_max}`.
fn read_webhook(
    detour: Option<&Section<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<Webhook> {
    let events = detour.and_then(|d| {
        d.get("events")
            .and_then(|v| Section::of(v, d.path_of("events"), diags))
    })?;
    for key in events.unknown_keys(&["webhook", "requests"]) {
        diags.error(
            &events.path_of(key),
            "unknown events setting (known: webhook, requests)",
        );
    }
    let hook = events
        .get("webhook")
        .and_then(|v| Section::of(v, events.path_of("webhook"), diags))?;
    let known = ["url", "format", "batch_max", "flush_interval", "buffer_max"];
    for key in hook.unknown_keys(&known) {
        diags.error(
            &hook.path_of(key),
            format!("unknown webhook setting (known: {})", known.join(", ")),
        );
    }
    let Some(raw) = hook.string("url", diags) else {
        diags.error(
            &hook.path_of("url"),
            "is required (os.environ/NAME keeps a Slack hook's token out of the file)",
        );
        return None;
    };
    let url = resolve_secret_ref(&raw, &hook.path_of("url"), env, diags)?;
    let text = url.expose();
    let path_at = text.find("://").and_then(|i| {
        let after = i.saturating_add(3);
        text.get(after..)
            .and_then(|rest| rest.find('/'))
            .map(|slash| after.saturating_add(slash))
    });
    let (base, path) = match path_at {
        Some(at) => text.split_at(at),
        None => (text, "/"),
    };
    let upstream = match Upstream::parse(base) {
        Ok(up) => up,
        Err(reason) => {
            // The URL may be secret: name the field, not the value.
            diags.error(
                &hook.path_of("url"),
                format!("is not a usable URL: it {reason}"),
            );
            return None;
        }
    };
    let format = match hook.string("format", diags).as_deref() {
        None | Some("json") => WebhookFormat::Json,
        Some("slack") => WebhookFormat::Slack,
        Some(other) => {
            diags.error(
                &hook.path_of("format"),
                format!("{other:?} is not a format (json or slack)"),
            );
            WebhookFormat::Json
        }
    };
    let batch_max = hook.u64("batch_max", diags).unwrap_or(50).clamp(1, 1000) as usize;
    let buffer_max = hook
        .u64("buffer_max", diags)
        .unwrap_or(1000)
        .clamp(1, 100_000) as usize;
    let flush_interval_ms = hook
        .duration_ms("flush_interval", diags)
        .unwrap_or(5_000)
        .max(100);
    Some(Webhook {
        upstream,
        path: Secret::new(path.to_string(), url.source.clone()),
        format,
        batch_max,
        flush_interval_ms,
        buffer_max,
    })
}

/// `detour.health_checks`, after LiteLLM's `general_settings.background_health_checks`
/// and `health_check_interval` (which detour honours).
fn read_health_checks(
    top: &Section<'_>,
    detour: Option<&Section<'_>>,
    diags: &mut Diags,
) -> HealthChecks {
    let mut checks = HealthChecks::default();
    if let Some(general) = top
        .get("general_settings")
        .and_then(|v| Section::of(v, "general_settings".to_string(), diags))
    {
        if let Some(enabled) = general.bool("background_health_checks", diags) {
            checks.enabled = enabled;
        }
        if let Some(ms) = general.duration_ms("health_check_interval", diags) {
            checks.interval_ms = ms.max(1000);
        }
    }
    let Some(section) = detour.and_then(|d| {
        d.get("health_checks")
            .and_then(|v| Section::of(v, d.path_of("health_checks"), diags))
    }) else {
        return checks;
    };
    for key in section.unknown_keys(&["enabled", "interval", "probe", "timeout"]) {
        diags.error(
            &section.path_of(key),
            "unknown health-check setting (known: enabled, interval, probe, timeout)",
        );
    }
    if let Some(enabled) = section.bool("enabled", diags) {
        checks.enabled = enabled;
    }
    if let Some(ms) = section.duration_ms("interval", diags) {
        if ms < 1000 {
            diags.error(&section.path_of("interval"), "must be at least 1s");
        } else {
            checks.interval_ms = ms;
        }
    }
    if let Some(ms) = section.duration_ms("timeout", diags) {
        checks.timeout_ms = ms.max(1);
    }
    match section.string("probe", diags).as_deref() {
        None | Some("completion") => {}
        Some("models") => checks.kind = ProbeKind::Models,
        Some(other) => diags.error(
            &section.path_of("probe"),
            format!("{other:?} is not a probe (completion: a 1-token completion; models: GET the models endpoint, free)"),
        ),
    }
    checks
}

fn warn_ignored_sections(top: &Section<'_>, diags: &mut Diags) {
    if let Some(Value::Object(map)) = top.get("general_settings") {
        let honoured = ["background_health_checks", "health_check_interval"];
        for key in map.keys().filter(|k| !honoured.contains(&k.as_str())) {
            diags.warn(
                &join("general_settings", key),
                "is a LiteLLM proxy setting detour does not implement; ignored",
            );
        }
    }
    if top.get("environment_variables").is_some() {
        diags.warn(
            "environment_variables",
            "is ignored: detour reads keys from its host's environment (Envoy: vm_config.environment_variables)",
        );
    }
}

fn read_settings(section: &Section<'_>, settings: &mut Settings, diags: &mut Diags) {
    if let Some(v) = section.u64("num_retries", diags) {
        settings.num_retries = clamp_u32(v);
    }
    for key in ["request_timeout", "timeout"] {
        if let Some(ms) = section.duration_ms(key, diags) {
            if ms == 0 {
                diags.error(&section.path_of(key), "must be greater than 0");
            } else {
                settings.request_timeout_ms = ms;
            }
        }
    }
    if let Some(ms) = section.duration_ms("stream_timeout", diags) {
        settings.stream_timeout_ms = ms.max(1);
    }
    if let Some(v) = section.u64("allowed_fails", diags) {
        settings.allowed_fails = clamp_u32(v);
    }
    if let Some(ms) = section.duration_ms("cooldown_time", diags) {
        settings.cooldown_ms = ms;
    }
    if let Some(disabled) = section.bool("disable_cooldowns", diags) {
        settings.cooldowns_disabled = disabled;
    }
    for key in section.unknown_keys(&SETTINGS_KEYS) {
        let path = section.path_of(key);
        match SETTINGS_ALWAYS_ON.iter().find(|(k, _)| k == key) {
            Some((_, expected)) => {
                let matches = section
                    .get(key)
                    .map(|v| value_text(v).eq_ignore_ascii_case(expected))
                    .unwrap_or(true);
                if !matches {
                    diags.warn(
                        &path,
                        format!("detour always behaves as {key}: {expected}; the value is ignored"),
                    );
                }
            }
            // Read by `fleet::read_fleet`.
            None if super::fleet::LITELLM_REDIS_KEYS.contains(&key.as_str()) => {}
            None => diags.warn(&path, "is not implemented by detour; ignored"),
        }
    }
}

fn read_detour_settings(section: &Section<'_>, settings: &mut Settings, diags: &mut Diags) {
    for key in section.unknown_keys(&DETOUR_KEYS) {
        diags.error(
            &section.path_of(key),
            format!("unknown detour setting (known: {})", DETOUR_KEYS.join(", ")),
        );
    }
    let durations: [(&str, &mut u64); 5] = [
        ("failure_window", &mut settings.failure_window_ms),
        ("backoff_base", &mut settings.backoff_base_ms),
        ("retry_after_cap", &mut settings.retry_after_cap_ms),
        ("max_cooldown", &mut settings.max_cooldown_ms),
        ("request_deadline", &mut settings.request_deadline_ms),
    ];
    for (key, slot) in durations {
        if let Some(ms) = section.duration_ms(key, diags) {
            *slot = ms;
        }
    }
    for key in ["max_attempts", "num_retries_per_request"] {
        if let Some(n) = section.u64(key, diags) {
            if n == 0 {
                diags.error(&section.path_of(key), "must be at least 1");
            } else {
                settings.max_attempts = clamp_u32(n);
            }
        }
    }
    if let Some(n) = section.u64("max_request_body_bytes", diags) {
        if n < 1024 {
            diags.error(
                &section.path_of("max_request_body_bytes"),
                "must be at least 1024",
            );
        } else {
            settings.max_request_body_bytes = n;
        }
    }
    if settings.request_deadline_ms == 0 {
        diags.error(
            &section.path_of("request_deadline"),
            "must be greater than 0",
        );
    }
}

/// A LiteLLM per-deployment budget: (deployment index, dollars, budget_duration, path).
type DeploymentBudget = (usize, f64, Option<String>, String);
/// LiteLLM's `max_budget` + `budget_duration` and the path of `max_budget`.
type LitellmBudget = (f64, Option<String>, String);

fn read_model_list(
    top: &Section<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> (Vec<Deployment>, Vec<DeploymentBudget>) {
    let mut budgets: Vec<DeploymentBudget> = Vec::new();
    let Some(list) = top.get("model_list") else {
        diags.error(
            "model_list",
            "is required: list the deployments detour routes to",
        );
        return (Vec::new(), budgets);
    };
    let Value::Array(items) = list else {
        diags.error("model_list", "must be a list of deployments");
        return (Vec::new(), budgets);
    };
    if items.is_empty() {
        diags.error("model_list", "must list at least one deployment");
    }
    let mut deployments: Vec<Deployment> = Vec::new();
    let mut seen_ids: BTreeSet<String> = BTreeSet::new();
    for (idx, item) in items.iter().enumerate() {
        let path = index("model_list", idx);
        let Some(entry) = Section::of(item, path.clone(), diags) else {
            if item.is_null() {
                diags.error(&path, "is empty");
            }
            continue;
        };
        if let Some((mut deployment, budget)) = read_deployment(&entry, env, diags) {
            if let Some((dollars, duration, path)) = budget {
                budgets.push((deployments.len(), dollars, duration, path));
            }
            // Ids must be unique: they key shared state and appear in every record.
            let base = deployment.id.clone();
            let mut n: u32 = 1;
            while seen_ids.contains(&deployment.id) {
                n = n.saturating_add(1);
                deployment.id = format!("{base}#{n}");
            }
            seen_ids.insert(deployment.id.clone());
            deployments.push(deployment);
        }
    }
    (deployments, budgets)
}

fn read_deployment(
    entry: &Section<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<(Deployment, Option<LitellmBudget>)> {
    for key in entry.unknown_keys(&DEPLOYMENT_KEYS) {
        diags.warn(&entry.path_of(key), "is not implemented by detour; ignored");
    }
    let group = entry.string("model_name", diags);
    if group.is_none() && entry.get("model_name").is_none() {
        diags.error(
            &entry.path_of("model_name"),
            "is required: the route group clients name in `model`",
        );
    }
    let params = match entry.get("litellm_params") {
        Some(v) => Section::of(v, entry.path_of("litellm_params"), diags),
        None => {
            diags.error(&entry.path_of("litellm_params"), "is required");
            None
        }
    }?;
    let info = entry
        .get("model_info")
        .and_then(|v| Section::of(v, entry.path_of("model_info"), diags));
    for key in params.unknown_keys(&PARAMS_KEYS) {
        diags.warn(
            &params.path_of(key),
            "is not implemented by detour; ignored",
        );
    }
    if let Some(info) = &info {
        for key in info.unknown_keys(&MODEL_INFO_KEYS) {
            diags.warn(&info.path_of(key), "is not implemented by detour; ignored");
        }
    }

    let model = params.string("model", diags);
    if model.is_none() && params.get("model").is_none() {
        diags.error(&params.path_of("model"), "is required (e.g. openai/gpt-4o)");
    }
    let model = model?;
    let provider = match providers::resolve(&model) {
        Ok(p) => Some(p),
        Err(reason) => {
            diags.error(&params.path_of("model"), reason);
            None
        }
    }?;

    let api_base = match params.string("api_base", diags) {
        Some(base) => resolve_secret_ref(&base, &params.path_of("api_base"), env, diags)
            .map(|s| s.expose().to_string()),
        None => match provider.default_api_base {
            Some(base) => Some(base.to_string()),
            None => {
                diags.error(
                    &params.path_of("api_base"),
                    format!("is required for {model:?} (no public endpoint is known for it)"),
                );
                None
            }
        },
    };
    let upstream = api_base.and_then(|base| match Upstream::parse(&base) {
        Ok(up) => Some(up),
        Err(reason) => {
            diags.error(&params.path_of("api_base"), format!("{base:?} {reason}"));
            None
        }
    });

    let api_key = params.string("api_key", diags).and_then(|raw| {
        let path = params.path_of("api_key");
        if !raw.starts_with("os.environ/") {
            diags.warn(
                &path,
                "is written in the config file; prefer os.environ/NAME so the key stays out of it",
            );
        }
        resolve_secret_ref(&raw, &path, env, diags)
    });

    let pick_u64 = |key: &str, diags: &mut Diags| {
        params
            .u64(key, diags)
            .or_else(|| info.as_ref().and_then(|i| i.u64(key, diags)))
    };
    let pick_f64 = |key: &str, diags: &mut Diags| {
        params
            .f64(key, diags)
            .or_else(|| info.as_ref().and_then(|i| i.f64(key, diags)))
    };
    let rpm = params.u64("rpm", diags);
    let tpm = params.u64("tpm", diags);
    let input_cost_per_token = pick_f64("input_cost_per_token", diags);
    let output_cost_per_token = pick_f64("output_cost_per_token", diags);
    let max_input_tokens = pick_u64("max_input_tokens", diags);
    let cached_cost = pick_f64("cache_read_input_token_cost", diags);
    let cache_write_cost = pick_f64("cache_creation_input_token_cost", diags);
    let price = budgets::resolve_price(
        budgets::ConfigPrices {
            input: input_cost_per_token,
            output: output_cost_per_token,
            cached: cached_cost,
            cache_write: cache_write_cost,
        },
        &model,
        &provider.provider_model,
        &params.path,
        diags,
    );
    let budget = params.f64("max_budget", diags).map(|dollars| {
        (
            dollars,
            params.string("budget_duration", diags),
            params.path_of("max_budget"),
        )
    });
    let order = params.i64("order", diags).unwrap_or(0);
    let weight = match params.u64("weight", diags) {
        Some(0) => {
            diags.error(&params.path_of("weight"), "must be at least 1");
            1
        }
        Some(w) => clamp_u32(w),
        None => 1,
    };

    let group = group?;
    if group.trim().is_empty() || group == "*" {
        diags.error(
            &entry.path_of("model_name"),
            "must be a non-empty name other than \"*\"",
        );
    }
    let id = info
        .as_ref()
        .and_then(|i| i.string("id", diags))
        .unwrap_or_else(|| format!("{group}/{model}"));
    let deployment = Deployment {
        id,
        group,
        model,
        provider_model: provider.provider_model,
        protocol: provider.protocol,
        upstream: upstream?,
        api_key,
        rpm,
        tpm,
        input_cost_per_token,
        output_cost_per_token,
        max_input_tokens,
        order,
        weight,
        price,
    };
    Some((deployment, budget))
}

/// Resolves `os.environ/NAME` through `env`; other strings are literals.
pub(super) fn resolve_secret_ref(
    raw: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<Secret> {
    let Some(name) = raw.strip_prefix("os.environ/") else {
        return Some(Secret::new(raw.to_string(), "literal".into()));
    };
    if name.is_empty() {
        diags.error(path, "names no environment variable after os.environ/");
        return None;
    }
    match env(name) {
        Some(value) if !value.is_empty() => Some(Secret::new(value, format!("os.environ/{name}"))),
        Some(_) => {
            diags.error(path, format!("environment variable {name} is empty"));
            None
        }
        None => {
            diags.error(
                path,
                format!("environment variable {name} is not set (in Envoy, list it in vm_config.environment_variables.host_env_keys)"),
            );
            None
        }
    }
}

fn build_groups(deployments: &[Deployment]) -> BTreeMap<String, Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (idx, deployment) in deployments.iter().enumerate() {
        groups
            .entry(deployment.group.clone())
            .or_insert_with(|| Group {
                name: deployment.group.clone(),
                deployments: Vec::new(),
            })
            .deployments
            .push(idx);
    }
    for group in groups.values_mut() {
        // Stable sort: equal orders keep file order.
        group
            .deployments
            .sort_by_key(|idx| deployments.get(*idx).map(|d| d.order).unwrap_or(0));
    }
    groups
}

fn read_fallbacks(
    section: &Section<'_>,
    groups: &BTreeMap<String, Group>,
    fallbacks: &mut Fallbacks,
    diags: &mut Diags,
) {
    if let Some(value) = section.get("fallbacks") {
        let path = section.path_of("fallbacks");
        fallbacks
            .general
            .extend(read_fallback_table(value, &path, groups, diags));
    }
    if let Some(value) = section.get("default_fallbacks") {
        let path = section.path_of("default_fallbacks");
        match value {
            Value::Array(items) => {
                let targets = read_targets(items, &path, "*", groups, diags);
                fallbacks.general.insert("*".into(), targets);
            }
            _ => diags.error(&path, "must be a list of group names"),
        }
    }
    for (key, slot) in [
        ("context_window_fallbacks", &mut fallbacks.context_window),
        ("content_policy_fallbacks", &mut fallbacks.content_policy),
    ] {
        if let Some(value) = section.get(key) {
            let table = read_fallback_table(value, &section.path_of(key), groups, diags);
            slot.get_or_insert_with(BTreeMap::new).extend(table);
        }
    }
}

/// `model_group_alias: {name: group}` or `{name: {model: group, hidden: true}}`: another
/// name clients may send for a group (Claude Code asks for fixed model names such as
/// `claude-sonnet-4-5-20250929`). Hidden aliases route but are not listed by `/v1/models`.
fn read_aliases(
    section: &Section<'_>,
    groups: &BTreeMap<String, Group>,
    aliases: &mut BTreeMap<String, Alias>,
    diags: &mut Diags,
) {
    let Some(table) = section
        .get("model_group_alias")
        .and_then(|v| Section::of(v, section.path_of("model_group_alias"), diags))
    else {
        return;
    };
    for (name, value) in table.map {
        let path = table.path_of(name);
        let (group, hidden) = match value {
            Value::String(group) => (group.clone(), false),
            Value::Object(entry) => match entry.get("model").and_then(Value::as_str) {
                Some(group) => (
                    group.to_string(),
                    entry
                        .get("hidden")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
                None => {
                    diags.error(
                        &join(&path, "model"),
                        "is required: the group this name means",
                    );
                    continue;
                }
            },
            _ => {
                diags.error(
                    &path,
                    "must be a group name or {model: <group>, hidden: true}",
                );
                continue;
            }
        };
        if groups.contains_key(name) {
            diags.error(
                &path,
                "is already a route group's name; an alias cannot hide it",
            );
        } else if !groups.contains_key(&group) {
            diags.error(
                &path,
                format!("names {group:?}, which is not a route group"),
            );
        } else {
            aliases.insert(name.clone(), Alias { group, hidden });
        }
    }
}

/// LiteLLM's shape: a list of one-key mappings `[{group: [target, …]}, …]`.
fn read_fallback_table(
    value: &Value,
    path: &str,
    groups: &BTreeMap<String, Group>,
    diags: &mut Diags,
) -> BTreeMap<String, Vec<String>> {
    let mut table = BTreeMap::new();
    let Value::Array(entries) = value else {
        diags.error(
            path,
            "must be a list of {group: [fallback groups]} mappings",
        );
        return table;
    };
    for (idx, entry) in entries.iter().enumerate() {
        let entry_path = index(path, idx);
        let Value::Object(map) = entry else {
            diags.error(&entry_path, "must be a mapping {group: [fallback groups]}");
            continue;
        };
        for (from, targets) in map {
            let from_path = join(&entry_path, from);
            if from != "*" && !groups.contains_key(from) {
                diags.error(
                    &from_path,
                    format!("names unknown group {from:?} (groups: {})", names(groups)),
                );
            }
            let Value::Array(targets) = targets else {
                diags.error(&from_path, "must be a list of group names");
                continue;
            };
            if table.contains_key(from) {
                diags.error(&from_path, "is listed twice");
            }
            let targets = read_targets(targets, &from_path, from, groups, diags);
            table.insert(from.clone(), targets);
        }
    }
    table
}

fn read_targets(
    items: &[Value],
    path: &str,
    from: &str,
    groups: &BTreeMap<String, Group>,
    diags: &mut Diags,
) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for (idx, item) in items.iter().enumerate() {
        let item_path = index(path, idx);
        // LiteLLM also accepts {"model": name, …overrides}; detour takes the name and
        // refuses overrides rather than silently dropping them.
        let name = match item {
            Value::String(name) => name.clone(),
            Value::Object(map) => {
                if map.keys().any(|k| k != "model") {
                    diags.error(
                        &item_path,
                        "per-fallback parameter overrides are not supported; name the group only",
                    );
                }
                match map.get("model") {
                    Some(Value::String(name)) => name.clone(),
                    _ => {
                        diags.error(&item_path, "must name a group in `model`");
                        continue;
                    }
                }
            }
            _ => {
                diags.error(&item_path, "must be a group name");
                continue;
            }
        };
        if !groups.contains_key(&name) {
            diags.error(
                &item_path,
                format!("names unknown group {name:?} (groups: {})", names(groups)),
            );
        } else if name == from {
            diags.error(&item_path, "falls back to its own group");
        } else if targets.contains(&name) {
            diags.error(&item_path, format!("lists {name:?} twice"));
        } else {
            targets.push(name);
        }
    }
    targets
}

fn read_stages(
    detour: Option<&Section<'_>>,
    groups: &BTreeMap<String, Group>,
    diags: &mut Diags,
) -> BTreeMap<String, String> {
    let mut stages = BTreeMap::new();
    let explicit = detour.and_then(|d| d.get("stages").map(|v| (d.path_of("stages"), v)));
    let Some((path, value)) = explicit else {
        // The seed's mapping, for the groups this config has.
        for (stage, group) in DEFAULT_STAGES {
            if groups.contains_key(group) {
                stages.insert(stage.to_string(), group.to_string());
            }
        }
        return stages;
    };
    let Value::Object(map) = value else {
        diags.error(
            &path,
            "must map stage tags to groups, e.g. {Build: implementation}",
        );
        return stages;
    };
    for (stage, group) in map {
        let stage_path = join(&path, stage);
        match group {
            Value::String(group) if groups.contains_key(group) => {
                stages.insert(stage.clone(), group.clone());
            }
            Value::String(group) => diags.error(
                &stage_path,
                format!("names unknown group {group:?} (groups: {})", names(groups)),
            ),
            _ => diags.error(&stage_path, "must be a group name"),
        }
    }
    stages
}

fn names(groups: &BTreeMap<String, Group>) -> String {
    groups.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
