//! The configuration model: what a loaded `config.yaml` means to detour.
//!
//! [`load`] turns the user's text (LiteLLM's `config.yaml`, YAML or JSON, plus a
//! `detour:` section) into a [`Config`] or a list of errors naming field paths. Everything
//! is validated here, once, when the plugin is configured: a request never meets a config
//! problem.

mod budgets;
mod duration;
mod fleet;
mod load;
mod providers;
mod walk;

use std::collections::BTreeMap;
use std::fmt;

pub use load::{load, LoadError, Loaded};
pub use walk::Diagnostic;

pub use crate::budget::{Limit, Scope};
use crate::cluster::Upstream;
use crate::price::Price;
pub use crate::probe::{HealthChecks, ProbeKind};
pub use crate::webhook::{Format as WebhookFormat, Webhook};

/// Index of a deployment in [`Config::deployments`].
pub type DeploymentIdx = usize;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every `model_list` entry, in file order.
    pub deployments: Vec<Deployment>,
    /// Route groups by name (`model_name`), each with its deployments in try order.
    pub groups: BTreeMap<String, Group>,
    /// Other names for groups (`model_group_alias`).
    pub aliases: BTreeMap<String, Alias>,
    /// Group-to-group fallbacks.
    pub fallbacks: Fallbacks,
    /// Retry, timeout and cooldown settings.
    pub settings: Settings,
    /// Stage tag (`x-detour-stage`) to route group.
    pub stages: BTreeMap<String, String>,
    /// Budgets and their thresholds.
    pub budgets: Budgets,
    /// The admin API, when a token is configured.
    pub admin: Option<Admin>,
    /// Active health checks.
    pub health_checks: HealthChecks,
    /// Where events are posted, if anywhere.
    pub webhook: Option<Webhook>,
    /// Fleet mode: budgets and RPM/TPM shared by every process through one ledger.
    pub fleet: Option<crate::fleet::Fleet>,
}

/// Every configured budget.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    /// One entry per budgeted scope.
    pub limits: Vec<Limit>,
    /// Output tokens assumed for an estimate when a request sets no `max_tokens`
    /// (`detour.budgets.default_max_tokens`, 1024).
    pub default_max_tokens: u64,
    /// Stage tag → the group its requests use once the tag's budget is used up.
    pub tag_overrun: BTreeMap<String, String>,
}

impl Budgets {
    /// The limits that apply to an attempt on `deployment` for a request tagged `tag`:
    /// (index into `limits`, enforced). A tag in overrun is charged but not enforced.
    pub fn applicable(
        &self,
        deployment: &Deployment,
        tag: Option<&str>,
        tag_overrun: bool,
    ) -> Vec<(usize, bool)> {
        self.limits
            .iter()
            .enumerate()
            .filter_map(|(idx, limit)| {
                let applies = match &limit.scope {
                    Scope::Total => true,
                    Scope::Group(name) => *name == deployment.group,
                    Scope::Model(name) => {
                        *name == deployment.model || *name == deployment.provider_model
                    }
                    Scope::Deployment(id) => *id == deployment.id,
                    Scope::Tag(name) => tag.is_some_and(|t| t.eq_ignore_ascii_case(name)),
                };
                let enforced = !(tag_overrun && matches!(limit.scope, Scope::Tag(_)));
                applies.then_some((idx, enforced))
            })
            .collect()
    }

    /// The limit of a stage tag, if it has one.
    pub fn tag_limit(&self, tag: &str) -> Option<&Limit> {
        self.limits
            .iter()
            .find(|l| matches!(&l.scope, Scope::Tag(name) if name.eq_ignore_ascii_case(tag)))
    }
}

/// The admin API (`/detour/admin/…` by default), protected by a bearer token.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token clients must send as `authorization: Bearer <token>`.
    pub token: Secret,
    /// Path prefix the filter answers itself.
    pub path_prefix: String,
}

/// One `model_list` entry: a model at a provider.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Stable id: `model_info.id`, else `<model_name>/<litellm_params.model>` (suffixed
    /// `#2`, `#3` … when repeated). Used in events, errors, headers and shared-data keys.
    pub id: String,
    /// The route group (`model_name`) it belongs to.
    pub group: String,
    /// `litellm_params.model` as written (`openai/gpt-4o`).
    pub model: String,
    /// The model name the provider expects (`gpt-4o`): in the request body, or in the
    /// path for Gemini.
    pub provider_model: String,
    /// The protocol the deployment speaks, from the provider prefix.
    pub protocol: crate::protocol::Protocol,
    /// Where requests go.
    pub upstream: Upstream,
    /// The provider key, if any. Never printed.
    pub api_key: Option<Secret>,
    /// Requests per minute the provider allows (enforced by the budgets issue).
    pub rpm: Option<u64>,
    /// Tokens per minute the provider allows (enforced by the budgets issue).
    pub tpm: Option<u64>,
    /// Price of one input token in dollars.
    pub input_cost_per_token: Option<f64>,
    /// Price of one output token in dollars.
    pub output_cost_per_token: Option<f64>,
    /// Context window: requests estimated larger than this skip the deployment.
    pub max_input_tokens: Option<u64>,
    /// Lower `order` is tried first within the group (LiteLLM's `order`).
    pub order: i64,
    /// Relative share among deployments of the same `order` (LiteLLM's `weight`).
    pub weight: u32,
    /// Prices per token: the config's, else the built-in table's; `None` when unknown
    /// (allowed only outside every budget).
    pub price: Option<Price>,
}

/// A route group: the deployments that share one `model_name`.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name as clients send it in `model`.
    pub name: String,
    /// Deployment indices, sorted by `order` (stable for equal orders).
    pub deployments: Vec<DeploymentIdx>,
}

/// Why the chain moves to another group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    /// Any failure that is not one of the two below (`fallbacks`).
    General,
    /// The prompt did not fit (`context_window_fallbacks`).
    ContextWindow,
    /// The provider refused the content (`content_policy_fallbacks`).
    ContentPolicy,
}

/// The three fallback tables. `"*"` is the default entry of a table.
#[derive(Debug, Clone, Default)]
pub struct Fallbacks {
    /// `fallbacks` (plus `default_fallbacks` as the `"*"` entry).
    pub general: BTreeMap<String, Vec<String>>,
    /// `context_window_fallbacks`; `None` when the key is absent (then `general` applies).
    pub context_window: Option<BTreeMap<String, Vec<String>>>,
    /// `content_policy_fallbacks`; `None` when the key is absent (then `general` applies).
    pub content_policy: Option<BTreeMap<String, Vec<String>>>,
}

impl Fallbacks {
    /// The groups to fall back to from `group` for a failure of `kind`, in order.
    ///
    /// Like LiteLLM: a context-window or content-policy table that exists but has no entry
    /// for the group means "no fallback" (the error goes back to the client); a table that
    /// is absent defers to the general one.
    pub fn targets(&self, group: &str, kind: FallbackKind) -> &[String] {
        let table = match kind {
            FallbackKind::General => Some(&self.general),
            FallbackKind::ContextWindow => self.context_window.as_ref(),
            FallbackKind::ContentPolicy => self.content_policy.as_ref(),
        };
        let table = table.unwrap_or(&self.general);
        table
            .get(group)
            .or_else(|| table.get("*"))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Router settings, with the seed's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Retries on the same deployment after a transient failure (`num_retries`, 3).
    pub num_retries: u32,
    /// Per-attempt timeout until the response starts (`request_timeout`, 10 s).
    pub request_timeout_ms: u64,
    /// Whole-response timeout of a streamed attempt sent by dispatch (`stream_timeout`, 300 s).
    pub stream_timeout_ms: u64,
    /// Failures tolerated within `failure_window_ms` before the breaker opens (`allowed_fails`, 3).
    pub allowed_fails: u32,
    /// How long a 429'd deployment cools down and an open breaker stays open (`cooldown_time`, 30 s).
    pub cooldown_ms: u64,
    /// `disable_cooldowns`: no 429 cooldowns and no breaker.
    pub cooldowns_disabled: bool,
    /// Window in which failures are counted for the breaker (`detour.failure_window`, 60 s).
    pub failure_window_ms: u64,
    /// First backoff; doubles on each retry (`detour.backoff_base`, 2 s → 2, 4, 8 s).
    pub backoff_base_ms: u64,
    /// Longest `Retry-After` honoured before a retry; longer ones move on (`detour.retry_after_cap`, 60 s).
    pub retry_after_cap_ms: u64,
    /// Longest cooldown a provider's `Retry-After` can impose (`detour.max_cooldown`, 1 h).
    pub max_cooldown_ms: u64,
    /// Attempts per request, retries and fallbacks together (`detour.max_attempts`, 20).
    pub max_attempts: u32,
    /// Overall budget of time for one request to find an answer (`detour.request_deadline`, 600 s).
    pub request_deadline_ms: u64,
    /// Largest request body accepted (`detour.max_request_body_bytes`, 10 MiB).
    pub max_request_body_bytes: u64,
    /// Log one `request` event per request (`detour.events.requests`, off): what
    /// `detour report` uses for exact spend and fallback rates. Off by default, as Envoy
    /// writes no per-request line to its main log (access logs are for that), and the
    /// line costs about a tenth of the filter's CPU per request.
    pub request_events: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            num_retries: 3,
            request_timeout_ms: 10_000,
            stream_timeout_ms: 300_000,
            allowed_fails: 3,
            cooldown_ms: 30_000,
            cooldowns_disabled: false,
            failure_window_ms: 60_000,
            backoff_base_ms: 2_000,
            retry_after_cap_ms: 60_000,
            max_cooldown_ms: 3_600_000,
            max_attempts: 20,
            request_deadline_ms: 600_000,
            max_request_body_bytes: 10 * 1024 * 1024,
            request_events: false,
        }
    }
}

/// The stage tags the seeds define, with the route groups they map to by default.
pub const DEFAULT_STAGES: [(&str, &str); 8] = [
    ("Spec", "high-precision"),
    ("Design", "high-precision"),
    ("Review", "high-precision"),
    ("Build", "implementation"),
    ("Fix", "implementation"),
    ("Verify", "economy"),
    ("Release", "economy"),
    ("Operate", "economy"),
];

impl Config {
    /// The group a request goes to: the `model` it names, else its stage tag's group.
    pub fn resolve_group(
        &self,
        model: Option<&str>,
        stage: Option<&str>,
    ) -> Result<&Group, RouteError> {
        if let Some(group) = model.and_then(|m| self.groups.get(m)) {
            return Ok(group);
        }
        if let Some(group) = model
            .and_then(|m| self.aliases.get(m))
            .and_then(|alias| self.groups.get(&alias.group))
        {
            return Ok(group);
        }
        if let Some(stage) = stage {
            let Some(name) = self
                .stages
                .iter()
                .find(|(tag, _)| tag.eq_ignore_ascii_case(stage))
                .map(|(_, group)| group)
            else {
                return Err(RouteError::UnknownStage(stage.to_string()));
            };
            return self
                .groups
                .get(name)
                .ok_or_else(|| RouteError::UnknownGroup(name.clone()));
        }
        match model {
            Some(model) => Err(RouteError::UnknownGroup(model.to_string())),
            None => Err(RouteError::NoModel),
        }
    }

    /// The deployment at `idx`, if any.
    pub fn deployment(&self, idx: DeploymentIdx) -> Option<&Deployment> {
        self.deployments.get(idx)
    }
}

/// Another name for a route group (`model_group_alias`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The group it means.
    pub group: String,
    /// Routed to, but not listed by `/v1/models`.
    pub hidden: bool,
}

/// Why a request could not be given a route group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Neither `model` nor a stage tag.
    NoModel,
    /// `model` names no group (and there is no stage tag to fall back on).
    UnknownGroup(String),
    /// The stage tag is not in the mapping.
    UnknownStage(String),
}

/// A secret such as a provider API key. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Where it came from, safe to print: `os.environ/NAME` or `literal`.
    pub source: String,
}

impl Secret {
    /// Wraps a resolved secret.
    pub fn new(value: String, source: String) -> Self {
        Secret { value, source }
    }

    /// The secret itself, for the one place that sends it: the upstream auth header.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted>, from {})", self.source)
    }
}
