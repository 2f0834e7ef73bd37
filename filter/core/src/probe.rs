//! Active health checks: once per interval, one worker (whichever claims the round in
//! shared data first) probes every deployment that is cooling down or whose breaker is
//! open, with a cheap request. A passing probe closes the breaker and ends the cooldown:
//! the next request uses that deployment again, and a `recovery` event records it.
//!
//! Passive recovery (the half-open probe a real request makes after `cooldown_time`) works
//! without this; active checks find a healed deployment without spending a user's
//! request on it, and within one interval.

use crate::config::{Config, DeploymentIdx};
use crate::event::Event;
use crate::health::{self, Health};
use crate::store::{update, Store, StoreError};
use crate::UnixMillis;

/// The shared-data key that says when the next round may start.
pub const ROUND_KEY: &str = "detour/v1/health-check-round";

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A one-token chat completion (costs a token; proves the model answers).
    Completion,
    /// `GET {api_base}/models` (free; proves the endpoint and key work).
    Models,
}

/// `detour.health_checks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChecks {
    /// Whether rounds run at all.
    pub enabled: bool,
    /// Time between rounds (`health_check_interval`, 300 s).
    pub interval_ms: u64,
    /// The probe request.
    pub kind: ProbeKind,
    /// A probe that has not answered by then failed.
    pub timeout_ms: u64,
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks {
            enabled: true,
            interval_ms: 300_000,
            kind: ProbeKind::Completion,
            timeout_ms: 10_000,
        }
    }
}

/// Claims the round due at `now`, if no other worker has: returns true for exactly one
/// claimant per interval across all workers.
pub fn claim_round<S: Store + ?Sized>(
    store: &mut S,
    now: UnixMillis,
    interval_ms: u64,
) -> Result<bool, StoreError> {
    claim_round_at(store, ROUND_KEY, now, interval_ms)
}

/// [`claim_round`] on any round record (the fleet sync has its own).
pub fn claim_round_at<S: Store + ?Sized>(
    store: &mut S,
    key: &str,
    now: UnixMillis,
    interval_ms: u64,
) -> Result<bool, StoreError> {
    update(store, key, |bytes| {
        let next_round_at = bytes
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        if now < next_round_at {
            return (None, false);
        }
        let next = now.saturating_add(interval_ms.max(1));
        (Some(next.to_le_bytes().to_vec()), true)
    })
}

/// Gives the round back (the claimant could not send its probes), so another worker
/// takes it on its next tick.
pub fn release_round<S: Store + ?Sized>(store: &mut S, now: UnixMillis) -> Result<(), StoreError> {
    store.set(ROUND_KEY, &now.to_le_bytes(), None)
}

/// The deployments to probe: cooling down or with an open (or half-open) breaker.
pub fn targets<S: Store + ?Sized>(
    config: &Config,
    store: &S,
    now: UnixMillis,
) -> Vec<DeploymentIdx> {
    config
        .deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            let record = store.get(&health::key(&d.id)).ok().flatten();
            let h = Health::decode(record.as_ref().map(|(b, _)| b.as_slice()));
            h.open_until != 0 || h.cooldown_until > now
        })
        .map(|(idx, _)| idx)
        .collect()
}

/// One probe request, ready to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Which deployment.
    pub deployment: DeploymentIdx,
    /// The Envoy cluster.
    pub cluster: String,
    /// Headers, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `Models`).
    pub body: Vec<u8>,
    /// How long to wait.
    pub timeout_ms: u64,
}

/// The probe for a deployment.
pub fn probe_for(config: &Config, checks: &HealthChecks, idx: DeploymentIdx) -> Option<Probe> {
    let d = config.deployment(idx)?;
    let (method, suffix, body) = match checks.kind {
        ProbeKind::Completion => (
            "POST",
            "/chat/completions",
            serde_json::to_vec(&serde_json::json!({
                "model": d.provider_model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            }))
            .unwrap_or_default(),
        ),
        ProbeKind::Models => ("GET", "/models", Vec::new()),
    };
    let mut headers = vec![
        (":method".to_string(), method.to_string()),
        (
            ":path".to_string(),
            format!("{}{suffix}", d.upstream.path_prefix),
        ),
        (":authority".to_string(), d.upstream.authority()),
    ];
    if !body.is_empty() {
        headers.push(("content-type".to_string(), "application/json".to_string()));
    }
    if let Some(key) = &d.api_key {
        headers.push((
            "authorization".to_string(),
            format!("Bearer {}", key.expose()),
        ));
    }
    Some(Probe {
        deployment: idx,
        cluster: d.upstream.cluster.clone(),
        headers,
        body,
        timeout_ms: checks.timeout_ms,
    })
}

/// Records a probe's answer: a 2xx clears the deployment's cooldown and closes its
/// breaker, and yields a `recovery` event; anything else leaves it as it is.
pub fn on_result<S: Store + ?Sized>(
    store: &mut S,
    config: &Config,
    idx: DeploymentIdx,
    now: UnixMillis,
    status: Option<u16>,
) -> Option<Event> {
    let d = config.deployment(idx)?;
    if !status.is_some_and(|s| (200..300).contains(&s)) {
        return None;
    }
    let cleared = health::clear(store, &d.id).ok()?;
    cleared.then(|| Event::Recovery {
        ts: now,
        deployment: d.id.clone(),
        via: "health_check".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::health::{check_and_claim, record_failure, Availability, Failure};
    use crate::store::MemoryStore;

    fn config() -> Config {
        let yaml = "model_list:\n  - model_name: g\n    litellm_params: {model: openai/a, api_base: http://127.0.0.1:9/a/v1, api_key: os.environ/K}\n  \
                    - model_name: g\n    litellm_params: {model: openai/b, api_base: http://127.0.0.1:9/b/v1}\n";
        match crate::config::load(yaml, &|_| Some("sk-secret".to_string())) {
            Ok(loaded) => loaded.config,
            Err(err) => panic!("{err:?}"),
        }
    }

    #[test]
    fn one_claimant_per_round_across_workers() {
        let mut store = MemoryStore::default();
        assert!(claim_round(&mut store, 1_000, 300_000).unwrap());
        assert!(
            !claim_round(&mut store, 1_001, 300_000).unwrap(),
            "another worker, same round"
        );
        assert!(!claim_round(&mut store, 300_999, 300_000).unwrap());
        assert!(
            claim_round(&mut store, 301_000, 300_000).unwrap(),
            "the next round"
        );
        release_round(&mut store, 301_500).unwrap();
        assert!(
            claim_round(&mut store, 301_500, 300_000).unwrap(),
            "a released round is taken again"
        );
    }

    #[test]
    fn probes_target_unhealthy_deployments_and_a_pass_recovers_them() {
        let config = config();
        let settings = Settings::default();
        let mut store = MemoryStore::default();
        assert!(targets(&config, &store, 10).is_empty());
        let a = &config.deployments[0].id;
        for t in 0..4 {
            record_failure(&mut store, a, 10 + t, &settings, Failure::Error, false).unwrap();
        }
        assert_eq!(targets(&config, &store, 20), vec![0]);

        let probe = probe_for(&config, &HealthChecks::default(), 0).unwrap();
        assert_eq!(probe.cluster, "detour_http_127.0.0.1_9");
        assert!(probe
            .headers
            .contains(&(":path".into(), "/a/v1/chat/completions".into())));
        assert!(probe
            .headers
            .contains(&("authorization".into(), "Bearer sk-secret".into())));
        let body: serde_json::Value = serde_json::from_slice(&probe.body).unwrap();
        assert_eq!(body["max_tokens"], 1);
        let models = probe_for(
            &config,
            &HealthChecks {
                kind: ProbeKind::Models,
                ..HealthChecks::default()
            },
            1,
        )
        .unwrap();
        assert!(
            models.headers.contains(&(":method".into(), "GET".into())) && models.body.is_empty()
        );

        assert_eq!(on_result(&mut store, &config, 0, 30, Some(503)), None);
        assert_eq!(
            check_and_claim(&mut store, a, 31, 1).unwrap(),
            Availability::Open(30_013)
        );
        let event = on_result(&mut store, &config, 0, 40, Some(200));
        assert!(matches!(event, Some(Event::Recovery { ref via, .. }) if via == "health_check"));
        assert_eq!(
            check_and_claim(&mut store, a, 41, 1).unwrap(),
            Availability::Available
        );
        assert!(targets(&config, &store, 41).is_empty());
        assert_eq!(
            on_result(&mut store, &config, 0, 50, Some(200)),
            None,
            "nothing to recover twice"
        );
    }
}
