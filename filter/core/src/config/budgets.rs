//! Loading budgets (`detour.budgets`, plus LiteLLM's `max_budget`/`budget_duration`) and
//! the admin API (`detour.admin`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::walk::{join, Diags, Section};
use super::{Admin, Budgets, Deployment, Group};
use crate::budget::{Limit, Scope};
use crate::period::Period;
use crate::price;

const BUDGET_KEYS: [&str; 9] = [
    "period",
    "default_max_tokens",
    "total",
    "groups",
    "models",
    "deployments",
    "tags",
    "tag_overrun",
    "halt_at",
];

const LIMIT_KEYS: [&str; 3] = ["limit", "period", "halt_at"];

/// Reads every budget. `litellm_total` is LiteLLM's `litellm_settings.max_budget` +
/// `budget_duration`, used when `detour.budgets.total` is absent.
pub(crate) fn read_budgets(
    detour: Option<&Section<'_>>,
    litellm_total: Option<(f64, Option<String>, String)>,
    deployment_budgets: &[(usize, f64, Option<String>, String)],
    deployments: &[Deployment],
    groups: &BTreeMap<String, Group>,
    stages: &BTreeMap<String, String>,
    diags: &mut Diags,
) -> Budgets {
    let mut budgets = Budgets {
        default_max_tokens: 1024,
        ..Budgets::default()
    };
    let section = detour.and_then(|d| {
        d.get("budgets")
            .and_then(|v| Section::of(v, d.path_of("budgets"), diags))
    });
    let mut default_period = Period::Month;
    let mut total_halt_at = Some(110);
    if let Some(section) = &section {
        for key in section.unknown_keys(&BUDGET_KEYS) {
            diags.error(
                &section.path_of(key),
                format!("unknown budget setting (known: {})", BUDGET_KEYS.join(", ")),
            );
        }
        if let Some(text) = section.string("period", diags) {
            match Period::parse(&text) {
                Ok(p) => default_period = p,
                Err(reason) => diags.error(&section.path_of("period"), reason),
            }
        }
        if let Some(n) = section.u64("default_max_tokens", diags) {
            budgets.default_max_tokens = n;
        }
        if let Some(value) = section.get("halt_at") {
            total_halt_at = read_percent(value, &section.path_of("halt_at"), diags);
        }
        if let Some(value) = section.get("total") {
            if let Some(limit) = read_limit(
                value,
                &section.path_of("total"),
                Scope::Total,
                default_period,
                total_halt_at,
                diags,
            ) {
                budgets.limits.push(limit);
            }
        }
        type MakeScope = fn(String) -> Scope;
        let tables: [(&str, MakeScope); 4] = [
            ("groups", Scope::Group),
            ("models", Scope::Model),
            ("deployments", Scope::Deployment),
            ("tags", Scope::Tag),
        ];
        for (key, make) in tables {
            let Some(table) = section
                .get(key)
                .and_then(|v| Section::of(v, section.path_of(key), diags))
            else {
                continue;
            };
            for (name, value) in table.map {
                let path = table.path_of(name);
                let known = match key {
                    "groups" => groups.contains_key(name),
                    "models" => deployments
                        .iter()
                        .any(|d| d.model == *name || d.provider_model == *name),
                    "deployments" => deployments.iter().any(|d| d.id == *name),
                    _ => stages.keys().any(|s| s.eq_ignore_ascii_case(name)),
                };
                if !known {
                    diags.error(
                        &path,
                        format!("names no {} in this config", key.trim_end_matches('s')),
                    );
                    continue;
                }
                if let Some(limit) = read_limit(
                    value,
                    &path,
                    make(name.clone()),
                    default_period,
                    None,
                    diags,
                ) {
                    budgets.limits.push(limit);
                }
            }
        }
        if let Some(table) = section
            .get("tag_overrun")
            .and_then(|v| Section::of(v, section.path_of("tag_overrun"), diags))
        {
            for (tag, group) in table.map {
                let path = table.path_of(tag);
                match group {
                    Value::String(group) if groups.contains_key(group) => {
                        budgets.tag_overrun.insert(tag.clone(), group.clone());
                    }
                    Value::String(group) => {
                        diags.error(&path, format!("names unknown group {group:?}"))
                    }
                    _ => diags.error(&path, "must be a group name"),
                }
            }
        }
    }
    if !budgets.limits.iter().any(|l| l.scope == Scope::Total) {
        if let Some((dollars, duration, path)) = litellm_total {
            if let Some(limit) =
                limit_from_litellm(dollars, duration, &path, Scope::Total, total_halt_at, diags)
            {
                budgets.limits.push(limit);
            }
        }
    }
    for (idx, dollars, duration, path) in deployment_budgets {
        let Some(deployment) = deployments.get(*idx) else {
            continue;
        };
        let scope = Scope::Deployment(deployment.id.clone());
        if budgets.limits.iter().any(|l| l.scope == scope) {
            diags.error(
                path,
                "this deployment also has a budget under detour.budgets.deployments; keep one",
            );
            continue;
        }
        if let Some(limit) =
            limit_from_litellm(*dollars, duration.clone(), path, scope, None, diags)
        {
            budgets.limits.push(limit);
        }
    }
    require_prices(&budgets, deployments, diags);
    budgets
}

/// A budget is only as good as its prices: a deployment under an enforced budget must have
/// one (set it to 0 for a free local model), or its spend would silently count as $0.
fn require_prices(budgets: &Budgets, deployments: &[Deployment], diags: &mut Diags) {
    for (idx, deployment) in deployments.iter().enumerate() {
        if deployment.price.is_some() {
            continue;
        }
        let covering: Vec<String> = budgets
            .limits
            .iter()
            .filter(|l| match &l.scope {
                Scope::Total | Scope::Tag(_) => true,
                Scope::Group(name) => *name == deployment.group,
                Scope::Model(name) => {
                    *name == deployment.model || *name == deployment.provider_model
                }
                Scope::Deployment(id) => *id == deployment.id,
            })
            .map(|l| l.scope.to_string())
            .collect();
        if !covering.is_empty() {
            diags.error(
                &format!("model_list[{idx}].litellm_params"),
                format!(
                    "no price is known for {:?}, which is under budget {}: set input_cost_per_token and output_cost_per_token (0 for a free model)",
                    deployment.model,
                    covering.join(", ")
                ),
            );
        }
    }
}

fn read_limit(
    value: &Value,
    path: &str,
    scope: Scope,
    default_period: Period,
    default_halt: Option<u32>,
    diags: &mut Diags,
) -> Option<Limit> {
    match value {
        Value::Number(_) | Value::String(_) => Some(Limit {
            scope,
            limit_nanos: dollars(value, path, diags)?,
            period: default_period,
            halt_at_percent: default_halt,
        }),
        Value::Object(map) => {
            let section = Section {
                path: path.to_string(),
                map,
            };
            for key in section.unknown_keys(&LIMIT_KEYS) {
                diags.error(
                    &section.path_of(key),
                    "unknown key (known: limit, period, halt_at)",
                );
            }
            let Some(limit_value) = section.get("limit") else {
                diags.error(
                    &section.path_of("limit"),
                    "is required (dollars per period)",
                );
                return None;
            };
            let limit_nanos = dollars(limit_value, &section.path_of("limit"), diags)?;
            let period = match section.string("period", diags) {
                Some(text) => match Period::parse(&text) {
                    Ok(p) => p,
                    Err(reason) => {
                        diags.error(&section.path_of("period"), reason);
                        return None;
                    }
                },
                None => default_period,
            };
            let halt_at_percent = match section.get("halt_at") {
                Some(v) => read_percent(v, &section.path_of("halt_at"), diags),
                None => default_halt,
            };
            Some(Limit {
                scope,
                limit_nanos,
                period,
                halt_at_percent,
            })
        }
        _ => {
            diags.error(
                path,
                "must be dollars per period, or {limit, period, halt_at}",
            );
            None
        }
    }
}

fn limit_from_litellm(
    dollars_value: f64,
    duration: Option<String>,
    path: &str,
    scope: Scope,
    halt: Option<u32>,
    diags: &mut Diags,
) -> Option<Limit> {
    let limit_nanos = dollars(&serde_json::json!(dollars_value), path, diags)?;
    let period = match duration {
        Some(text) => match Period::parse(&text) {
            Ok(p) => p,
            Err(reason) => {
                diags.error(
                    &join(
                        path.rsplit_once('.').map_or(path, |(p, _)| p),
                        "budget_duration",
                    ),
                    reason,
                );
                return None;
            }
        },
        None => Period::Month,
    };
    Some(Limit {
        scope,
        limit_nanos,
        period,
        halt_at_percent: halt,
    })
}

fn dollars(value: &Value, path: &str, diags: &mut Diags) -> Option<u64> {
    let amount = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_start_matches('$').parse::<f64>().ok(),
        _ => None,
    };
    let nanos = amount
        .filter(|a| a.is_finite() && *a >= 0.0 && *a <= 1e9)
        .map(|a| crate::num::round_f64_to_u64(a * 1e9));
    if nanos.is_none() {
        diags.error(path, "must be an amount of dollars (e.g. 50 or 12.5)");
    }
    nanos
}

fn read_percent(value: &Value, path: &str, diags: &mut Diags) -> Option<u32> {
    match value {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::Number(n) => match n.as_u64() {
            Some(p) if (100..=1000).contains(&p) => u32::try_from(p).ok(),
            _ => {
                diags.error(path, "must be a percentage from 100 to 1000, or false");
                None
            }
        },
        _ => {
            diags.error(path, "must be a percentage from 100 to 1000, or false");
            None
        }
    }
}

/// Reads `detour.admin`: `{token: os.environ/NAME, path_prefix: /detour/admin}`.
pub(crate) fn read_admin(
    detour: Option<&Section<'_>>,
    resolve: &mut dyn FnMut(&str, &str, &mut Diags) -> Option<super::Secret>,
    diags: &mut Diags,
) -> Option<Admin> {
    let section = detour.and_then(|d| {
        d.get("admin")
            .and_then(|v| Section::of(v, d.path_of("admin"), diags))
    })?;
    for key in section.unknown_keys(&["token", "path_prefix"]) {
        diags.error(
            &section.path_of(key),
            "unknown admin setting (known: token, path_prefix)",
        );
    }
    let path_prefix = section
        .string("path_prefix", diags)
        .unwrap_or_else(|| "/detour/admin".to_string());
    if !path_prefix.starts_with('/') || path_prefix.len() < 2 {
        diags.error(
            &section.path_of("path_prefix"),
            "must be an absolute path such as /detour/admin",
        );
    }
    let Some(raw) = section.string("token", diags) else {
        diags.error(
            &section.path_of("token"),
            "is required: os.environ/NAME of the admin token",
        );
        return None;
    };
    let token = resolve(&raw, &section.path_of("token"), diags)?;
    if token.expose().len() < 16 {
        diags.error(
            &section.path_of("token"),
            "must be at least 16 characters long",
        );
        return None;
    }
    Some(Admin {
        token,
        path_prefix: path_prefix.trim_end_matches('/').to_string(),
    })
}

/// A deployment's prices as its config writes them, dollars per token.
pub(crate) struct ConfigPrices {
    /// `input_cost_per_token`.
    pub(crate) input: Option<f64>,
    /// `output_cost_per_token`.
    pub(crate) output: Option<f64>,
    /// `cache_read_input_token_cost`.
    pub(crate) cached: Option<f64>,
    /// `cache_creation_input_token_cost`.
    pub(crate) cache_write: Option<f64>,
}

/// The price of a deployment: the config's per-token prices, else the built-in table's.
pub(crate) fn resolve_price(
    prices: ConfigPrices,
    model: &str,
    provider_model: &str,
    path: &str,
    diags: &mut Diags,
) -> Option<price::Price> {
    let ConfigPrices {
        input,
        output,
        cached,
        cache_write,
    } = prices;
    match (input, output) {
        (Some(input), Some(output)) => {
            let nanos = |v: f64, key: &str, diags: &mut Diags| {
                let n = price::dollars_per_token_to_nanos(v);
                if n.is_none() {
                    diags.error(
                        &join(path, key),
                        "must be a price in dollars per token, at most $1",
                    );
                }
                n
            };
            let input_nanos = nanos(input, "input_cost_per_token", diags)?;
            let output_nanos = nanos(output, "output_cost_per_token", diags)?;
            let cached_input_nanos = match cached {
                Some(c) => nanos(c, "cache_read_input_token_cost", diags)?,
                None => input_nanos,
            };
            let cache_write_nanos = match cache_write {
                Some(c) => nanos(c, "cache_creation_input_token_cost", diags)?,
                None => input_nanos,
            };
            Some(price::Price {
                input_nanos,
                output_nanos,
                cached_input_nanos,
                cache_write_nanos,
            })
        }
        (None, None) => price::builtin(model).or_else(|| price::builtin(provider_model)),
        _ => {
            diags.error(
                path,
                "set both input_cost_per_token and output_cost_per_token, or neither",
            );
            None
        }
    }
}
