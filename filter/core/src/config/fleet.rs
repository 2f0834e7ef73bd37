//! `detour.fleet` and LiteLLM's `redis_*` router settings: where the fleet ledger is and
//! how this process leases from it.

use serde_json::Value;

use super::load::resolve_secret_ref;
use super::walk::{Diags, Section};
use super::Secret;
use crate::cluster::Upstream;
use crate::fleet::{FailMode, Fleet, DEFAULT_STATE_URL};

const FLEET_KEYS: [&str; 10] = [
    "state",
    "redis",
    "lease_fraction",
    "lease_ttl",
    "sync_interval",
    "on_unreachable",
    "local_cap",
    "call_timeout",
    "namespace",
    "enabled",
];

/// LiteLLM's Router keys for a shared Redis (`router_settings` or `litellm_settings`).
pub(super) const LITELLM_REDIS_KEYS: [&str; 4] =
    ["redis_host", "redis_port", "redis_password", "redis_url"];

/// The Redis URL from LiteLLM's router settings, if they name one, and the path of the
/// key that named it.
fn litellm_redis(
    sections: &[&Section<'_>],
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<(Secret, String)> {
    // The last section wins, as router_settings does over litellm_settings.
    for section in sections.iter().rev() {
        if let Some(raw) = section.string("redis_url", diags) {
            let path = section.path_of("redis_url");
            return resolve_secret_ref(&raw, &path, env, diags).map(|url| (url, path));
        }
        let Some(host) = section.string("redis_host", diags) else {
            continue;
        };
        let host = resolve_secret_ref(&host, &section.path_of("redis_host"), env, diags)?;
        let port = match section.get("redis_port") {
            Some(Value::String(s)) => {
                let resolved = resolve_secret_ref(s, &section.path_of("redis_port"), env, diags)?;
                match resolved.expose().trim().parse::<u16>() {
                    Ok(port) => port,
                    Err(_) => {
                        diags.error(&section.path_of("redis_port"), "must be a port number");
                        return None;
                    }
                }
            }
            Some(_) => match section.u64("redis_port", diags).map(u16::try_from) {
                Some(Ok(port)) => port,
                Some(Err(_)) => {
                    diags.error(&section.path_of("redis_port"), "must be a port number");
                    return None;
                }
                None => return None,
            },
            None => 6379,
        };
        let password = match section.string("redis_password", diags) {
            Some(raw) => Some(resolve_secret_ref(
                &raw,
                &section.path_of("redis_password"),
                env,
                diags,
            )?),
            None => None,
        };
        let auth = password
            .as_ref()
            .map(|p| format!(":{}@", p.expose()))
            .unwrap_or_default();
        let source = password
            .as_ref()
            .map(|p| p.source.clone())
            .unwrap_or_else(|| host.source.clone());
        return Some((
            Secret::new(format!("redis://{auth}{}:{port}/0", host.expose()), source),
            section.path_of("redis_host"),
        ));
    }
    None
}

/// Reads fleet mode: on when `detour.fleet` is present (and not `enabled: false`) or when
/// LiteLLM's settings name a Redis.
pub(super) fn read_fleet(
    detour: Option<&Section<'_>>,
    litellm: &[&Section<'_>],
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<Fleet> {
    let litellm_redis = litellm_redis(litellm, env, diags);
    let section = detour.and_then(|d| {
        d.get("fleet")
            .and_then(|v| Section::of(v, d.path_of("fleet"), diags))
    });
    let Some(section) = section else {
        // A LiteLLM user with a Redis gets one fleet, as LiteLLM shares its limits there.
        return litellm_redis.map(|(redis, path)| {
            diags.warn(
                &path,
                "turns fleet mode on: detour serve keeps budgets in this Redis; Envoy needs \
                 detour.fleet.state (the `detour state` service) to reach it",
            );
            Fleet::new(default_state(), false, Some(redis))
        });
    };
    for key in section.unknown_keys(&FLEET_KEYS) {
        diags.error(
            &section.path_of(key),
            format!("unknown fleet setting (known: {})", FLEET_KEYS.join(", ")),
        );
    }
    if section.bool("enabled", diags) == Some(false) {
        return None;
    }
    let (state, state_configured) = match section.string("state", diags) {
        Some(url) => match Upstream::parse(url.trim_end_matches('/')) {
            Ok(up) if up.path_prefix.is_empty() => (up, true),
            Ok(_) => {
                diags.error(
                    &section.path_of("state"),
                    "must be a base URL without a path (http://detour-state:8081)",
                );
                return None;
            }
            Err(reason) => {
                diags.error(
                    &section.path_of("state"),
                    format!("is not a URL: it {reason}"),
                );
                return None;
            }
        },
        None => (default_state(), false),
    };
    let redis = match section.string("redis", diags) {
        Some(raw) => resolve_secret_ref(&raw, &section.path_of("redis"), env, diags),
        None => litellm_redis.map(|(url, _)| url),
    };
    if let Some(url) = &redis {
        let text = url.expose();
        let schemes = ["redis://", "redis+cluster://", "redis+sentinel://"];
        if !schemes.iter().any(|scheme| text.starts_with(scheme)) {
            // The URL may hold a password: name the field only.
            diags.error(
                &section.path_of("redis"),
                "must be a redis://, redis+cluster:// or redis+sentinel:// URL (TLS, rediss://, is not supported)",
            );
        }
    }
    if !state_configured && redis.is_none() {
        diags.error(
            &section.path_of("state"),
            "is required unless `redis` is set (Envoy reaches the fleet through the state service)",
        );
        return None;
    }
    let mut fleet = Fleet::new(state, state_configured, redis);
    if let Some(fraction) = section.f64("lease_fraction", diags) {
        if fraction <= 0.0 || fraction > 1.0 {
            diags.error(
                &section.path_of("lease_fraction"),
                "must be above 0 and at most 1",
            );
        } else {
            fleet.lease_permille = permille(fraction);
        }
    }
    if let Some(cap) = section.f64("local_cap", diags) {
        if cap > 1.0 {
            diags.error(&section.path_of("local_cap"), "must be at most 1");
        } else {
            fleet.local_cap_permille = permille(cap);
        }
    }
    for (key, slot, min) in [
        ("lease_ttl", &mut fleet.lease_ttl_ms, 10_000u64),
        ("sync_interval", &mut fleet.sync_interval_ms, 100),
        ("call_timeout", &mut fleet.call_timeout_ms, 100),
    ] {
        if let Some(ms) = section.duration_ms(key, diags) {
            if ms < min {
                diags.error(&section.path_of(key), format!("must be at least {min} ms"));
            } else {
                *slot = ms;
            }
        }
    }
    if fleet.lease_ttl_ms < fleet.sync_interval_ms.saturating_mul(5) {
        diags.error(
            &section.path_of("lease_ttl"),
            "must be at least five sync intervals, or leases expire while in use",
        );
    }
    if let Some(ns) = section.string("namespace", diags) {
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            diags.error(
                &section.path_of("namespace"),
                "must be letters, digits, - or _",
            );
        } else {
            fleet.namespace = ns;
        }
    }
    if let Some(modes) = section
        .get("on_unreachable")
        .and_then(|v| Section::of(v, section.path_of("on_unreachable"), diags))
    {
        for key in modes.unknown_keys(&["budgets", "rates"]) {
            diags.error(&modes.path_of(key), "unknown kind (known: budgets, rates)");
        }
        for (key, slot) in [
            ("budgets", &mut fleet.budgets_unreachable),
            ("rates", &mut fleet.rates_unreachable),
        ] {
            match modes.string(key, diags).as_deref() {
                None => {}
                Some("closed") => *slot = FailMode::Closed,
                Some("open") => *slot = FailMode::Open,
                Some(other) => diags.error(
                    &modes.path_of(key),
                    format!("{other:?} is not a mode (closed or open)"),
                ),
            }
        }
    }
    Some(fleet)
}

fn default_state() -> Upstream {
    // A constant URL: parsing cannot fail, but the config must not panic if it did.
    Upstream::parse(DEFAULT_STATE_URL).unwrap_or_else(|_| Upstream {
        scheme: crate::cluster::Scheme::Http,
        host: "detour-state".into(),
        port: 8081,
        path_prefix: String::new(),
        cluster: crate::cluster::cluster_name(crate::cluster::Scheme::Http, "detour-state", 8081),
    })
}

fn permille(fraction: f64) -> u32 {
    // 0 ≤ fraction ≤ 1 here: the product fits.
    u32::try_from(crate::num::round_f64_to_u64(fraction * 1000.0).min(1000)).unwrap_or(1000)
}
