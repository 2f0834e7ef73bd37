//! Which limit a rate-limit descriptor names: the deployments' `rpm`/`tpm` from the
//! LiteLLM config, or the descriptor's own override.
//!
//! **Descriptor keys.** A descriptor is counted against a deployment's limit when it has
//! the entries `deployment` = the deployment's id (as `detour validate` names it:
//! `model_info.id`, else `<model_name>/<litellm_params.model>`) and `rate` = `rpm` or
//! `tpm`, in any order, other entries allowed:
//!
//! ```yaml
//! rate_limits:
//!   - actions:
//!       - request_headers: {header_name: x-detour-deployment, descriptor_key: deployment}
//!       - generic_key: {descriptor_key: rate, descriptor_value: rpm}
//! ```
//!
//! `rpm` counts `hits_addend` requests (1 by default); `tpm` counts `hits_addend` tokens
//! (Envoy sets it from usage with `apply_on_stream_done`, or the caller from an estimate).
//! A descriptor with a `limit` override uses that limit and unit whatever its entries. A
//! descriptor that matches nothing is answered OK and not counted, as
//! envoyproxy/ratelimit answers descriptors it has no rule for.

use std::collections::BTreeMap;

use detour_core::config::Config;

use super::proto::{RateLimitDescriptor, Unit};

/// One deployment's limits per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeploymentRates {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// Every deployment's limits, by deployment id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    deployments: BTreeMap<String, DeploymentRates>,
}

/// The limit a descriptor is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The counter's identity (entries as `key=value`, joined by `|`).
    pub counter: String,
    /// Hits allowed per window.
    pub limit: u64,
    /// The unit reported to Envoy.
    pub unit: Unit,
    /// The window in milliseconds.
    pub window_ms: u64,
    /// A name for Envoy's logs: `<deployment>/rpm` or `override`.
    pub name: String,
}

impl RateLimits {
    /// The deployments of a loaded config that have an `rpm` or `tpm`.
    pub fn from_config(config: &Config) -> RateLimits {
        let mut limits = RateLimits::default();
        for deployment in &config.deployments {
            limits.insert(
                &deployment.id,
                DeploymentRates {
                    rpm: deployment.rpm,
                    tpm: deployment.tpm,
                },
            );
        }
        limits
    }

    /// Adds (or replaces) one deployment's limits; limits of `None` are not kept.
    pub fn insert(&mut self, deployment_id: &str, rates: DeploymentRates) {
        if rates.rpm.is_some() || rates.tpm.is_some() {
            self.deployments.insert(deployment_id.to_string(), rates);
        }
    }

    /// How many deployments have a limit.
    pub fn len(&self) -> usize {
        self.deployments.len()
    }

    /// Whether no deployment has a limit.
    pub fn is_empty(&self) -> bool {
        self.deployments.is_empty()
    }

    /// The limit `descriptor` is counted against, if any.
    pub fn resolve(&self, descriptor: &RateLimitDescriptor) -> Option<Resolved> {
        let counter = descriptor
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect::<Vec<_>>()
            .join("|");
        if let Some(over) = &descriptor.limit {
            let unit = Unit::try_from(over.unit).unwrap_or(Unit::Unknown);
            let window_ms = unit.window_ms()?;
            return Some(Resolved {
                counter,
                limit: u64::from(over.requests_per_unit),
                unit,
                window_ms,
                name: "override".into(),
            });
        }
        let entry = |key: &str| {
            descriptor
                .entries
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.as_str())
        };
        let deployment = entry("deployment")?;
        let rates = self.deployments.get(deployment)?;
        let (limit, rate) = match entry("rate")? {
            "rpm" => (rates.rpm?, "rpm"),
            "tpm" => (rates.tpm?, "tpm"),
            _ => return None,
        };
        Some(Resolved {
            // Keyed by the deployment and rate only, so extra entries cannot split a
            // deployment's limit into several counters.
            counter: format!("deployment={deployment}|rate={rate}"),
            limit,
            unit: Unit::Minute,
            window_ms: 60_000,
            name: format!("{deployment}/{rate}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Entry, RateLimitOverride};
    use super::*;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            limit: None,
            hits_addend: None,
        }
    }

    #[test]
    fn deployment_descriptors_resolve_to_their_limits() {
        let mut limits = RateLimits::default();
        limits.insert(
            "fast/openai/gpt-4o",
            DeploymentRates {
                rpm: Some(60),
                tpm: None,
            },
        );
        limits.insert("none", DeploymentRates::default());
        assert_eq!(limits.len(), 1);
        let rpm = limits
            .resolve(&descriptor(&[
                ("rate", "rpm"),
                ("deployment", "fast/openai/gpt-4o"),
                ("x", "y"),
            ]))
            .unwrap();
        assert_eq!(
            (rpm.limit, rpm.window_ms, rpm.unit),
            (60, 60_000, Unit::Minute)
        );
        assert_eq!(rpm.counter, "deployment=fast/openai/gpt-4o|rate=rpm");
        // No tpm configured, unknown deployment, unknown rate: not counted.
        assert!(limits
            .resolve(&descriptor(&[
                ("deployment", "fast/openai/gpt-4o"),
                ("rate", "tpm")
            ]))
            .is_none());
        assert!(limits
            .resolve(&descriptor(&[("deployment", "other"), ("rate", "rpm")]))
            .is_none());
        assert!(limits
            .resolve(&descriptor(&[
                ("deployment", "fast/openai/gpt-4o"),
                ("rate", "rph")
            ]))
            .is_none());
    }

    #[test]
    fn overrides_win_and_need_a_known_unit() {
        let limits = RateLimits::default();
        let mut d = descriptor(&[("user", "a")]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 5,
            unit: Unit::Second as i32,
        });
        let r = limits.resolve(&d).unwrap();
        assert_eq!(
            (r.limit, r.window_ms, r.counter.as_str()),
            (5, 1_000, "user=a")
        );
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 5,
            unit: 0,
        });
        assert!(limits.resolve(&d).is_none());
    }
}
