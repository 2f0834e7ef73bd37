//! The rules `detour check` applies: the seed's V-2201..V-2204 made concrete.
//!
//! [`check`] is a pure function of a loaded [`Config`]: it reads no files, no clock and no
//! environment, so every rule is tested here on configs written inline.
//!
//! The seed's policy (which stage tags exist, which groups form which tier, each tier's
//! fallback chain, the budget-overrun targets) is data: [`Policy::SEED`]. The config
//! schema has no `detour.policy` section yet; when it gets one, it fills a [`Policy`]
//! and nothing here changes.
//!
//! ## How a chain is computed
//!
//! Exactly as `detour_core::flow` lays it out: the group's own deployments by `order`
//! (equal orders are shuffled by `weight` at run time, so they are treated as one *slot*),
//! then the deployments of each group in the group's `fallbacks` entry (or the `"*"`
//! entry), in that order. Fallbacks do not nest. The context-window and content-policy
//! chains (when their tables exist) are the group plus that table's targets; a stage tag's
//! budget-overrun chain is the overrun group plus *its* fallbacks.
//!
//! ## Tiers
//!
//! A group belongs to a tier when its name contains the tier's keyword (ignoring case,
//! `-`, `_` and spaces: `high-precision`, `implementation`, `economy`) or when one of the
//! tier's stage tags maps to it in `detour.stages` (Spec/Design/Review, Build/Fix,
//! Verify/Release/Operate).
//!
//! ## Last resort
//!
//! A deployment is a *last resort* when it is free: its price is 0 (input and output), or
//! no price is known and its `api_base` host is local: `localhost` (or `*.localhost`), a
//! loopback, private (10/8, 172.16/12, 192.168/16), link-local or unique-local (fc00::/7)
//! address, a one-label name (`ollama`, a Compose service) or a name under `.local`,
//! `.internal` or `.svc` / `.cluster.local` (a Kubernetes service). A priced model behind a
//! private gateway is not a last resort.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use detour_core::config::{Config, Deployment, DeploymentIdx, FallbackKind, Scope};
use serde::Serialize;

/// Which of the seed's verification items a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Item {
    /// Routing rules followed (R-2201).
    #[serde(rename = "V-2201")]
    V2201,
    /// Budgets, alerts and auto-stop enabled (R-2202).
    #[serde(rename = "V-2202")]
    V2202,
    /// Fallback order compliant (R-2204).
    #[serde(rename = "V-2203")]
    V2203,
    /// Auto-recovery enabled (R-2205); warnings only.
    #[serde(rename = "V-2204")]
    V2204,
}

impl Item {
    /// Every item, in order.
    pub const ALL: [Item; 4] = [Item::V2201, Item::V2202, Item::V2203, Item::V2204];

    /// `V-2201` …
    pub fn id(self) -> &'static str {
        match self {
            Item::V2201 => "V-2201",
            Item::V2202 => "V-2202",
            Item::V2203 => "V-2203",
            Item::V2204 => "V-2204",
        }
    }

    /// What the item verifies.
    pub fn title(self) -> &'static str {
        match self {
            Item::V2201 => "routing rules followed",
            Item::V2202 => "budgets, alerts and auto-stop enabled",
            Item::V2203 => "fallback order follows the declared policy",
            Item::V2204 => "automatic recovery enabled (warnings only)",
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The rule holds.
    Pass,
    /// Worth a look; does not fail the check.
    Warn,
    /// The config violates the policy: `detour check` exits non-zero.
    Fail,
}

impl Level {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One result of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The verification item.
    pub item: Item,
    /// The rule's name (see [`RULES`]).
    pub rule: &'static str,
    /// Pass, warn or fail.
    pub level: Level,
    /// What it is about: a group, a tag, a deployment, or `config`.
    pub subject: String,
    /// Why, in one sentence.
    pub message: String,
}

/// A rule: its item, name, what it verifies and the level of a violation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// The verification item.
    pub item: Item,
    /// Short name, unique.
    pub name: &'static str,
    /// What a violation is.
    pub severity: &'static str,
    /// What the rule verifies.
    pub description: &'static str,
}

/// Every rule, in the order findings are reported.
pub const RULES: [Rule; 21] = [
    Rule {
        item: Item::V2201,
        name: "stage-tags",
        severity: "FAIL",
        description: "Every stage tag of the seed (Spec, Design, Build, Review, Fix, Verify, Release, Operate) maps to an existing route group.",
    },
    Rule {
        item: Item::V2201,
        name: "tier-conflict",
        severity: "FAIL",
        description: "No route group belongs to two tiers (by name or by the stage tags that map to it): chores, build work and high-precision work never share a first choice.",
    },
    Rule {
        item: Item::V2201,
        name: "economy-models",
        severity: "FAIL",
        description: "No chain of an economy group (general, context-window, content-policy, and the budget-overrun chains of its stage tags) reaches a model that is a high-precision group's own deployment.",
    },
    Rule {
        item: Item::V2201,
        name: "economy-price",
        severity: "FAIL (WARN when a price is unknown)",
        description: "No deployment in an economy group's chains costs more per input or output token than the group's own first choice.",
    },
    Rule {
        item: Item::V2201,
        name: "last-resort",
        severity: "FAIL for groups stage tags map to; WARN for budget-overrun chains and groups only named directly",
        description: "Every chain ends with a last resort: a deployment that is free (price 0), or unpriced on a local endpoint (R-2201, MISSION §7: the local model keeps work going when every cloud model failed).",
    },
    Rule {
        item: Item::V2201,
        name: "no-duplicates",
        severity: "FAIL (WARN when only the \"*\" entry repeats the group, or two ids share one model and endpoint)",
        description: "No chain holds the same deployment twice.",
    },
    Rule {
        item: Item::V2202,
        name: "budget-coverage",
        severity: "FAIL",
        description: "Every deployment that costs money (or whose price is unknown) is under at least one budget: the total, its group, its model or itself (stage-tag budgets cover only tagged requests).",
    },
    Rule {
        item: Item::V2202,
        name: "total-halt",
        severity: "FAIL (WARN when the halt is not at 110 %)",
        description: "A total budget exists and halts all traffic at 110 % until a human resumes it (R-2202, 6.1.1).",
    },
    Rule {
        item: Item::V2202,
        name: "model-budgets",
        severity: "WARN",
        description: "Every paid deployment has a budget of its own (model, deployment or group) that stops it at 100 % before the total does.",
    },
    Rule {
        item: Item::V2202,
        name: "tag-budgets",
        severity: "WARN",
        description: "Every stage tag that maps to a group has a budget.",
    },
    Rule {
        item: Item::V2202,
        name: "alerts",
        severity: "always PASS",
        description: "The 80 % and 90 % alerts (budget_alert events), the 100 % stop and the halt are built into every budget; they cannot be switched off.",
    },
    Rule {
        item: Item::V2202,
        name: "human-gate",
        severity: "WARN",
        description: "detour.admin is configured, so a halt can be lifted (HumanGate, R-2206) with POST /detour/admin/resume instead of a config change.",
    },
    Rule {
        item: Item::V2202,
        name: "fleet",
        severity: "WARN",
        description: "Budgets and RPM/TPM hold for the whole deployment: with more than one replica (`--replicas N`), fleet mode (detour.fleet) keeps them in one ledger; without it each replica spends each whole budget and admits each whole RPM/TPM.",
    },
    Rule {
        item: Item::V2203,
        name: "fallback-targets",
        severity: "FAIL",
        description: "Every fallback table entry names existing groups, none twice, and never the group itself.",
    },
    Rule {
        item: Item::V2203,
        name: "fallback-cycles",
        severity: "WARN",
        description: "No two groups fall back to each other (harmless in detour, where fallbacks do not nest, but a sign the chains were not written from the policy).",
    },
    Rule {
        item: Item::V2203,
        name: "seed-order",
        severity: "FAIL (WARN for a skipped step or an unusual first choice)",
        description: "The general chain of a high-precision, implementation or economy group follows the seed's order (Part21 R-2102), matching models by name: high-precision opus → sonnet → gemini-3 pro → flash/GLM → local; implementation gpt-5/codex → sonnet → gemini-3 pro → flash/GLM → local; economy flash/GLM → local. Every model must match a step, steps never go backwards, and deployments of equal order (shuffled by weight) share one step.",
    },
    Rule {
        item: Item::V2203,
        name: "tag-overrun",
        severity: "WARN",
        description: "Every stage tag with a budget has a budget-overrun group, and its first choice is the seed's (Spec/Design → sonnet, Build/Review → gemini-3 pro, Fix → flash/GLM, Verify/Release/Operate → local).",
    },
    Rule {
        item: Item::V2204,
        name: "cooldowns",
        severity: "WARN",
        description: "Cooldowns are enabled with cooldown_time > 0: a 429'd or broken deployment is set aside, then probed back (half-open) and recorded as a recovery event.",
    },
    Rule {
        item: Item::V2204,
        name: "breaker",
        severity: "WARN",
        description: "allowed_fails is at least 1 and failure_window is at least 1 s, so one stray error does not open the breaker.",
    },
    Rule {
        item: Item::V2204,
        name: "health-checks",
        severity: "WARN",
        description: "Active health checks run at least every 5 minutes (R-2205); without them recovery is passive only (the next real request after cooldown_time probes).",
    },
    Rule {
        item: Item::V2204,
        name: "recovery-records",
        severity: "always PASS",
        description: "Every recovery is recorded as a `recovery` event (half_open or health_check).",
    },
];

/// How a step of a declared chain recognises a deployment.
#[derive(Debug, Clone, Copy)]
pub enum Matcher {
    /// `provider_model` (lower case) contains every substring of one of the alternatives.
    Models(&'static [&'static [&'static str]]),
    /// The deployment is free or local (see the module doc).
    LastResort,
}

/// One step of a declared fallback chain.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// How reports name the step.
    pub label: &'static str,
    /// How a deployment is recognised as this step.
    pub matcher: Matcher,
}

/// A purpose tier: its groups and its declared chain.
#[derive(Debug, Clone, Copy)]
pub struct Tier {
    /// `high-precision`, `implementation`, `economy`.
    pub name: &'static str,
    /// A group whose name contains this (ignoring case, `-`, `_`, spaces) is in the tier.
    pub keyword: &'static str,
    /// A group one of these stage tags maps to is in the tier.
    pub stages: &'static [&'static str],
    /// The declared chain, in order.
    pub chain: &'static [Step],
    /// Indices into `chain` the seed accepts as a first choice.
    pub first_choices: &'static [usize],
}

/// The policy `detour check` verifies a config against.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The stage tags every config must route.
    pub stages: &'static [&'static str],
    /// The purpose tiers.
    pub tiers: &'static [Tier],
    /// The tier whose chains must stay cheap.
    pub economy: &'static str,
    /// The tier whose own models the economy tier must never reach.
    pub high_precision: &'static str,
    /// Stage tag → the step its budget-overrun group's first choice must match.
    pub overrun: &'static [(&'static str, Step)],
    /// The total budget's halt threshold the seed declares (110 %).
    pub total_halt_percent: u32,
    /// The longest health-check interval the seed accepts (5 minutes).
    pub max_health_check_interval_ms: u64,
}

const OPUS: Step = Step {
    label: "claude-opus",
    matcher: Matcher::Models(&[&["opus"]]),
};
const SONNET: Step = Step {
    label: "claude-sonnet",
    matcher: Matcher::Models(&[&["sonnet"]]),
};
const GEMINI_PRO: Step = Step {
    label: "gemini-3-pro",
    matcher: Matcher::Models(&[&["gemini-3", "pro"]]),
};
const FLASH_GLM: Step = Step {
    label: "gemini-flash/GLM",
    matcher: Matcher::Models(&[&["flash"], &["glm"]]),
};
const CODEX: Step = Step {
    label: "gpt-5.2 (Codex)",
    matcher: Matcher::Models(&[&["gpt-5"], &["codex"]]),
};
const LOCAL: Step = Step {
    label: "local",
    matcher: Matcher::LastResort,
};

impl Policy {
    /// The seed's policy (Part22 R-2201/R-2204, Part21 R-2102, 6.1.3).
    pub const SEED: Policy = Policy {
        stages: &[
            "Spec", "Design", "Build", "Review", "Fix", "Verify", "Release", "Operate",
        ],
        tiers: &[
            Tier {
                name: "high-precision",
                keyword: "highprecision",
                stages: &["Spec", "Design", "Review"],
                chain: &[OPUS, SONNET, GEMINI_PRO, FLASH_GLM, LOCAL],
                first_choices: &[0, 2],
            },
            Tier {
                name: "implementation",
                keyword: "implementation",
                stages: &["Build", "Fix"],
                chain: &[CODEX, SONNET, GEMINI_PRO, FLASH_GLM, LOCAL],
                first_choices: &[0, 1],
            },
            Tier {
                name: "economy",
                keyword: "economy",
                stages: &["Verify", "Release", "Operate"],
                chain: &[FLASH_GLM, LOCAL],
                first_choices: &[0],
            },
        ],
        economy: "economy",
        high_precision: "high-precision",
        overrun: &[
            ("Spec", SONNET),
            ("Design", SONNET),
            ("Build", GEMINI_PRO),
            ("Review", GEMINI_PRO),
            ("Fix", FLASH_GLM),
            ("Verify", LOCAL),
            ("Release", LOCAL),
            ("Operate", LOCAL),
        ],
        total_halt_percent: 110,
        max_health_check_interval_ms: 300_000,
    };
}

/// Checks `config` against the seed's policy.
pub fn check(config: &Config) -> Vec<Finding> {
    check_with(config, &Policy::SEED)
}

/// Checks `config` against `policy` for one replica: every rule of [`RULES`] yields at
/// least one finding (a PASS when nothing is wrong), in [`RULES`] order.
pub fn check_with(config: &Config, policy: &Policy) -> Vec<Finding> {
    check_with_replicas(config, policy, 1)
}

/// As [`check_with`], for a deployment of `replicas` processes (Envoy replicas, sidecars
/// or `detour serve` instances) running `config`.
pub fn check_with_replicas(config: &Config, policy: &Policy, replicas: u32) -> Vec<Finding> {
    let mut ctx = Ctx::new(config, policy);
    ctx.replicas = replicas.max(1);
    let mut findings = Vec::new();
    for rule in RULES {
        let (mut found, pass) = match rule.name {
            "stage-tags" => ctx.stage_tags(),
            "tier-conflict" => ctx.tier_conflict(),
            "economy-models" => ctx.economy_models(),
            "economy-price" => ctx.economy_price(),
            "last-resort" => ctx.last_resort(),
            "no-duplicates" => ctx.no_duplicates(),
            "budget-coverage" => ctx.budget_coverage(),
            "total-halt" => ctx.total_halt(),
            "model-budgets" => ctx.model_budgets(),
            "tag-budgets" => ctx.tag_budgets(),
            "alerts" => (
                Vec::new(),
                "80/90/100/110 % alerts and the 100 % stop are built into every budget".into(),
            ),
            "human-gate" => ctx.human_gate(),
            "fleet" => ctx.fleet(),
            "fallback-targets" => ctx.fallback_targets(),
            "fallback-cycles" => ctx.fallback_cycles(),
            "seed-order" => ctx.seed_order(),
            "tag-overrun" => ctx.tag_overrun(),
            "cooldowns" => ctx.cooldowns(),
            "breaker" => ctx.breaker(),
            "health-checks" => ctx.health_checks(),
            _ => (
                Vec::new(),
                "recovery events record every return (half_open or health_check)".into(),
            ),
        };
        // V-2204 is warnings only, whatever a rule says.
        if rule.item == Item::V2204 {
            for (level, _, _) in &mut found {
                *level = (*level).min(Level::Warn);
            }
        }
        if found.is_empty() {
            findings.push(Finding {
                item: rule.item,
                rule: rule.name,
                level: Level::Pass,
                subject: "config".into(),
                message: pass,
            });
        }
        for (level, subject, message) in found {
            findings.push(Finding {
                item: rule.item,
                rule: rule.name,
                level,
                subject,
                message,
            });
        }
    }
    findings
}

/// Where fleet mode is explained.
const FLEET_DOCS: &str = "envoy/kubernetes/README.md, \"Fleet mode\"";

/// What a rule found: (level, subject, message) per finding, and the PASS message used
/// when it found nothing.
type Found = (Vec<(Level, String, String)>, String);

/// Which chain of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChainKind {
    General,
    ContextWindow,
    ContentPolicy,
    /// The budget-overrun chain of a stage tag.
    Overrun(String),
}

/// One chain: the groups it walks and its deployments in slots of equal order.
#[derive(Debug, Clone)]
struct Chain {
    /// The group a request names (for overrun chains: the group the tag maps to).
    group: String,
    kind: ChainKind,
    /// The groups walked, in order.
    groups: Vec<String>,
    /// Deployments in try order; each inner list is one slot (equal `order` in one group).
    slots: Vec<Vec<DeploymentIdx>>,
}

impl Chain {
    fn deployments(&self) -> impl Iterator<Item = DeploymentIdx> + '_ {
        self.slots.iter().flatten().copied()
    }

    fn describe(&self) -> String {
        match &self.kind {
            ChainKind::General => format!("{}'s chain", self.group),
            ChainKind::ContextWindow => format!("{}'s context-window chain", self.group),
            ChainKind::ContentPolicy => format!("{}'s content-policy chain", self.group),
            ChainKind::Overrun(tag) => format!("tag {tag}'s budget-overrun chain"),
        }
    }

    fn subject(&self) -> String {
        match &self.kind {
            ChainKind::Overrun(tag) => format!("tag {tag}"),
            _ => self.group.clone(),
        }
    }
}

struct Ctx<'a> {
    config: &'a Config,
    policy: &'a Policy,
    /// Group name → tiers it belongs to, each with why.
    tiers: BTreeMap<String, Vec<(&'a Tier, String)>>,
    /// Every chain: general per group, special per group when the table exists, overrun
    /// per tag.
    chains: Vec<Chain>,
    /// How many processes run the config (`--replicas`).
    replicas: u32,
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I, sep: &str) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Slots of a group's own deployments (already sorted by `order`).
fn group_slots(config: &Config, group: &str) -> Vec<Vec<DeploymentIdx>> {
    let Some(group) = config.groups.get(group) else {
        return Vec::new();
    };
    let mut slots: Vec<Vec<DeploymentIdx>> = Vec::new();
    let mut last_order = None;
    for idx in &group.deployments {
        let order = config.deployment(*idx).map(|d| d.order);
        match slots.last_mut() {
            Some(slot) if order == last_order => slot.push(*idx),
            _ => slots.push(vec![*idx]),
        }
        last_order = order;
    }
    slots
}

fn chain_of(config: &Config, group: &str, kind: ChainKind, groups: Vec<String>) -> Chain {
    let slots = groups.iter().flat_map(|g| group_slots(config, g)).collect();
    Chain {
        group: group.to_string(),
        kind,
        groups,
        slots,
    }
}

/// Whether a deployment is free (price 0), or unpriced and served from a local endpoint.
pub fn is_last_resort(deployment: &Deployment) -> bool {
    match deployment.price {
        Some(_) => is_free(deployment),
        None => is_local_host(&deployment.upstream.host),
    }
}

fn is_free(deployment: &Deployment) -> bool {
    deployment
        .price
        .is_some_and(|p| p.input_nanos == 0 && p.output_nanos == 0)
}

/// Whether `host` (no brackets, no port) is a local or private endpoint.
pub fn is_local_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
            IpAddr::V6(v6) => {
                let first = v6.segments().first().copied().unwrap_or(0);
                v6.is_loopback()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_private())
            }
        };
    }
    host == "localhost"
        || !host.contains('.')
        || [
            ".localhost",
            ".local",
            ".internal",
            ".svc",
            ".cluster.local",
        ]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

fn matches(step: &Step, deployment: &Deployment) -> bool {
    match step.matcher {
        Matcher::LastResort => is_last_resort(deployment),
        Matcher::Models(alternatives) => {
            let name = deployment.provider_model.to_ascii_lowercase();
            alternatives
                .iter()
                .any(|all| all.iter().all(|part| name.contains(part)))
        }
    }
}

/// The step of `chain` a deployment matches: the first step whose names match, else the
/// last resort if it is one (so a self-hosted GLM is the flash/GLM step, and a free model
/// of any other name the local step).
fn step_of(chain: &[Step], deployment: &Deployment) -> Option<usize> {
    chain
        .iter()
        .position(|step| match step.matcher {
            Matcher::LastResort => false,
            Matcher::Models(_) => matches(step, deployment),
        })
        .or_else(|| {
            chain
                .iter()
                .position(|s| matches!(s.matcher, Matcher::LastResort))
                .filter(|_| is_last_resort(deployment))
        })
}

fn chain_text(chain: &[Step]) -> String {
    join(chain.iter().map(|s| s.label), " → ")
}

/// Per-token price in nano-dollars (input, output), if known.
fn price(deployment: &Deployment) -> Option<(u64, u64)> {
    deployment.price.map(|p| (p.input_nanos, p.output_nanos))
}

fn per_million(nanos: u64) -> String {
    // nano-dollars per token = milli-dollars per million tokens.
    let whole = nanos / 1000;
    let frac = nanos % 1000;
    if frac == 0 {
        format!("${whole}")
    } else {
        format!("${whole}.{frac:03}")
            .trim_end_matches('0')
            .to_string()
    }
}

impl<'a> Ctx<'a> {
    fn new(config: &'a Config, policy: &'a Policy) -> Self {
        let mut tiers: BTreeMap<String, Vec<(&'a Tier, String)>> = BTreeMap::new();
        for name in config.groups.keys() {
            for tier in policy.tiers {
                let mut why = Vec::new();
                if normalize(name).contains(tier.keyword) {
                    why.push("by name".to_string());
                }
                let tags: Vec<&str> = tier
                    .stages
                    .iter()
                    .copied()
                    .filter(|tag| {
                        config
                            .stages
                            .iter()
                            .any(|(t, g)| t.eq_ignore_ascii_case(tag) && g == name)
                    })
                    .collect();
                if !tags.is_empty() {
                    why.push(format!("by stage {}", tags.join("/")));
                }
                if !why.is_empty() {
                    tiers
                        .entry(name.clone())
                        .or_default()
                        .push((tier, why.join(", ")));
                }
            }
        }
        let mut chains = Vec::new();
        for name in config.groups.keys() {
            let kinds = [
                (ChainKind::General, FallbackKind::General, true),
                (
                    ChainKind::ContextWindow,
                    FallbackKind::ContextWindow,
                    config.fallbacks.context_window.is_some(),
                ),
                (
                    ChainKind::ContentPolicy,
                    FallbackKind::ContentPolicy,
                    config.fallbacks.content_policy.is_some(),
                ),
            ];
            for (kind, fallback_kind, exists) in kinds {
                if !exists {
                    continue;
                }
                let mut groups = vec![name.clone()];
                groups.extend(
                    config
                        .fallbacks
                        .targets(name, fallback_kind)
                        .iter()
                        .cloned(),
                );
                chains.push(chain_of(config, name, kind, groups));
            }
        }
        for (tag, overrun) in &config.budgets.tag_overrun {
            let from = config
                .stages
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(tag))
                .map(|(_, g)| g.clone())
                .unwrap_or_else(|| overrun.clone());
            let mut groups = vec![overrun.clone()];
            groups.extend(
                config
                    .fallbacks
                    .targets(overrun, FallbackKind::General)
                    .iter()
                    .cloned(),
            );
            chains.push(chain_of(
                config,
                &from,
                ChainKind::Overrun(tag.clone()),
                groups,
            ));
        }
        Ctx {
            config,
            policy,
            tiers,
            chains,
            replicas: 1,
        }
    }

    fn deployment(&self, idx: DeploymentIdx) -> Option<&'a Deployment> {
        self.config.deployment(idx)
    }

    fn table_of(&self, kind: &ChainKind) -> Option<&'a BTreeMap<String, Vec<String>>> {
        let fallbacks = &self.config.fallbacks;
        match kind {
            ChainKind::General | ChainKind::Overrun(_) => Some(&fallbacks.general),
            ChainKind::ContextWindow => fallbacks.context_window.as_ref(),
            ChainKind::ContentPolicy => fallbacks.content_policy.as_ref(),
        }
    }

    fn label(&self, idx: DeploymentIdx) -> String {
        match self.deployment(idx) {
            Some(d) if d.id == d.provider_model => d.id.clone(),
            Some(d) => format!("{} ({})", d.id, d.provider_model),
            None => format!("#{idx}"),
        }
    }

    fn groups_in_tier(&self, tier: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        for name in self.config.groups.keys() {
            if self
                .tiers
                .get(name)
                .is_some_and(|ts| ts.iter().any(|(t, _)| t.name == tier))
            {
                out.push(name.as_str());
            }
        }
        out
    }

    fn tier_of(&self, group: &str, tier: &str) -> bool {
        self.tiers
            .get(group)
            .is_some_and(|ts| ts.iter().any(|(t, _)| t.name == tier))
    }

    fn stage_group(&self, tag: &str) -> Option<&'a String> {
        self.config
            .stages
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(tag))
            .map(|(_, g)| g)
    }

    // ---------------------------------------------------------------- V-2201

    fn stage_tags(&self) -> Found {
        let mut found = Vec::new();
        for tag in self.policy.stages {
            match self.stage_group(tag) {
                None => found.push((
                    Level::Fail,
                    format!("tag {tag}"),
                    format!("stage tag {tag} maps to no route group: requests tagged {tag} without a group in `model` get 400 (set detour.stages.{tag})"),
                )),
                Some(group) if !self.config.groups.contains_key(group) => found.push((
                    Level::Fail,
                    format!("tag {tag}"),
                    format!("stage tag {tag} maps to {group:?}, which is not a route group"),
                )),
                Some(_) => {}
            }
        }
        for (tag, group) in &self.config.stages {
            let seed_tag = self
                .policy
                .stages
                .iter()
                .any(|t| t.eq_ignore_ascii_case(tag));
            if !seed_tag && !self.config.groups.contains_key(group) {
                found.push((
                    Level::Fail,
                    format!("tag {tag}"),
                    format!("stage tag {tag} maps to {group:?}, which is not a route group"),
                ));
            }
        }
        let mapping = join(
            self.policy
                .stages
                .iter()
                .filter_map(|tag| self.stage_group(tag).map(|g| format!("{tag}→{g}"))),
            ", ",
        );
        (
            found,
            format!("every stage tag maps to a route group ({mapping})"),
        )
    }

    fn tier_conflict(&self) -> Found {
        let mut found = Vec::new();
        for (group, tiers) in &self.tiers {
            if tiers.len() > 1 {
                let why = join(
                    tiers.iter().map(|(t, why)| format!("{} ({why})", t.name)),
                    " and ",
                );
                found.push((
                    Level::Fail,
                    group.clone(),
                    format!("group {group} is in two tiers: {why}; each purpose needs its own group (R-2201)"),
                ));
            }
        }
        let summary = join(
            self.policy.tiers.iter().map(|t| {
                let groups = self.groups_in_tier(t.name);
                if groups.is_empty() {
                    format!("{}: none", t.name)
                } else {
                    format!("{}: {}", t.name, groups.join(", "))
                }
            }),
            "; ",
        );
        (found, format!("tiers are disjoint ({summary})"))
    }

    /// Chains an economy group can take: its own chains and the overrun chains of the
    /// stage tags that map to it.
    fn economy_chains(&self) -> Vec<&Chain> {
        self.chains
            .iter()
            .filter(|c| self.tier_of(&c.group, self.policy.economy))
            .collect()
    }

    fn economy_models(&self) -> Found {
        let mut found = Vec::new();
        let hp_groups = self.groups_in_tier(self.policy.high_precision);
        let mut hp_models: BTreeMap<String, (&str, DeploymentIdx)> = BTreeMap::new();
        for group in &hp_groups {
            if let Some(g) = self.config.groups.get(*group) {
                for idx in &g.deployments {
                    if let Some(d) = self.deployment(*idx) {
                        hp_models
                            .entry(d.provider_model.to_ascii_lowercase())
                            .or_insert((group, *idx));
                    }
                }
            }
        }
        let economy = self.economy_chains();
        for chain in &economy {
            let mut seen = BTreeSet::new();
            for idx in chain.deployments() {
                let Some(d) = self.deployment(idx) else {
                    continue;
                };
                let model = d.provider_model.to_ascii_lowercase();
                if let Some((hp_group, _)) = hp_models.get(&model) {
                    if seen.insert(model.clone()) {
                        found.push((
                            Level::Fail,
                            chain.subject(),
                            format!(
                                "{} reaches {}, a model of the high-precision group {hp_group}: chores must not use high-precision models (R-2201)",
                                chain.describe(),
                                self.label(idx)
                            ),
                        ));
                    }
                }
            }
        }
        let pass = if economy.is_empty() {
            "no economy group in this config (nothing to verify)".to_string()
        } else if hp_groups.is_empty() {
            "no high-precision group in this config (nothing to keep the economy chains away from)"
                .to_string()
        } else {
            format!(
                "economy chains ({}) reach no model of {}",
                join(
                    economy
                        .iter()
                        .map(|c| c.describe())
                        .collect::<BTreeSet<_>>(),
                    ", "
                ),
                hp_groups.join(", ")
            )
        };
        (found, pass)
    }

    fn economy_price(&self) -> Found {
        let mut found = Vec::new();
        let economy = self.economy_chains();
        for chain in &economy {
            let Some(group) = self.config.groups.get(&chain.group) else {
                continue;
            };
            let first_slot = group_slots(self.config, &chain.group)
                .into_iter()
                .next()
                .unwrap_or_default();
            // The dearest of the first choices (equal order: any of them may go first).
            let mut reference: Option<(u64, u64)> = Some((0, 0));
            for idx in &first_slot {
                reference = match (reference, self.deployment(*idx).and_then(price)) {
                    (Some((i, o)), Some((pi, po))) => Some((i.max(pi), o.max(po))),
                    _ => None,
                };
            }
            if first_slot.is_empty() || group.deployments.is_empty() {
                continue;
            }
            let Some((ref_in, ref_out)) = reference else {
                found.push((
                    Level::Warn,
                    chain.subject(),
                    format!(
                        "{}: the price of {}'s first choice is unknown, so the chain's prices cannot be compared",
                        chain.describe(),
                        chain.group
                    ),
                ));
                continue;
            };
            for idx in chain.deployments() {
                let Some(d) = self.deployment(idx) else {
                    continue;
                };
                match price(d) {
                    None => found.push((
                        Level::Warn,
                        chain.subject(),
                        format!(
                            "{} reaches {}, whose price is unknown",
                            chain.describe(),
                            self.label(idx)
                        ),
                    )),
                    Some((i, o)) if i > ref_in || o > ref_out => found.push((
                        Level::Fail,
                        chain.subject(),
                        format!(
                            "{} reaches {} at {} / {} per M tokens (in/out), dearer than {}'s first choice at {} / {}",
                            chain.describe(),
                            self.label(idx),
                            per_million(i),
                            per_million(o),
                            chain.group,
                            per_million(ref_in),
                            per_million(ref_out)
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        let pass = if economy.is_empty() {
            "no economy group in this config (nothing to verify)".to_string()
        } else {
            "no economy chain reaches a model dearer than its group's first choice".to_string()
        };
        (found, pass)
    }

    fn last_resort(&self) -> Found {
        let mut found = Vec::new();
        let staged: BTreeSet<&String> = self.config.stages.values().collect();
        let mut direct_only = Vec::new();
        for chain in &self.chains {
            let enforced = match &chain.kind {
                ChainKind::General => staged.contains(&chain.group),
                ChainKind::Overrun(_) => false,
                // Context-window and content-policy chains go to bigger or laxer models:
                // a local model is rarely the answer there.
                ChainKind::ContextWindow | ChainKind::ContentPolicy => continue,
            };
            let last = chain.deployments().last();
            let ok = last
                .and_then(|idx| self.deployment(idx))
                .is_some_and(is_last_resort);
            if ok {
                continue;
            }
            if chain.kind == ChainKind::General && !enforced {
                direct_only.push(chain.group.clone());
                continue;
            }
            let ends = last.map_or_else(|| "nothing".to_string(), |idx| self.label(idx));
            found.push((
                if enforced { Level::Fail } else { Level::Warn },
                chain.subject(),
                format!(
                    "{} ({}) ends with {ends}, which is neither free nor local: when every cloud model fails the request fails (add a local group to its fallbacks)",
                    chain.describe(),
                    chain.groups.join(" → ")
                ),
            ));
        }
        if !direct_only.is_empty() {
            found.push((
                Level::Warn,
                format!("groups {}", direct_only.join(", ")),
                format!(
                    "a request naming {} directly in `model` has no free or local last resort (no stage tag maps to these groups)",
                    direct_only.join(", ")
                ),
            ));
        }
        (
            found,
            "every chain ends with a free or local deployment".to_string(),
        )
    }

    fn no_duplicates(&self) -> Found {
        let mut found = Vec::new();
        for chain in &self.chains {
            // A group repeated by the "*" entry is skipped by the flow (each deployment is
            // visited once per request): worth a warning, not a failure.
            let star_repeat = chain.groups.first().is_some_and(|head| {
                chain.groups.iter().skip(1).any(|g| g == head)
                    && !self
                        .table_of(&chain.kind)
                        .is_some_and(|t| t.contains_key(head))
            });
            let mut seen: BTreeMap<DeploymentIdx, usize> = BTreeMap::new();
            let mut endpoints: BTreeMap<(String, String), DeploymentIdx> = BTreeMap::new();
            for idx in chain.deployments() {
                *seen.entry(idx).or_default() += 1;
                if let Some(d) = self.deployment(idx) {
                    let key = (
                        d.provider_model.to_ascii_lowercase(),
                        format!(
                            "{}:{}{}",
                            d.upstream.host, d.upstream.port, d.upstream.path_prefix
                        ),
                    );
                    match endpoints.get(&key) {
                        Some(first) if *first != idx => found.push((
                            Level::Warn,
                            chain.subject(),
                            format!(
                                "{} tries {} and {}, the same model at the same endpoint: a 429 or an outage hits both",
                                chain.describe(),
                                self.label(*first),
                                self.label(idx)
                            ),
                        )),
                        Some(_) => {}
                        None => {
                            endpoints.insert(key, idx);
                        }
                    }
                }
            }
            for (idx, count) in seen {
                if count > 1 {
                    let (level, why) = if star_repeat {
                        (
                            Level::Warn,
                            "the \"*\" fallback entry lists the group itself; the repeat is skipped at run time",
                        )
                    } else {
                        (Level::Fail, "each deployment belongs in a chain once")
                    };
                    found.push((
                        level,
                        chain.subject(),
                        format!(
                            "{} ({}) holds {} {count} times: {why}",
                            chain.describe(),
                            chain.groups.join(" → "),
                            self.label(idx)
                        ),
                    ));
                }
            }
        }
        (found, "no chain holds a deployment twice".to_string())
    }

    // ---------------------------------------------------------------- V-2202

    fn own_budgets(&self, d: &Deployment) -> Vec<String> {
        self.config
            .budgets
            .limits
            .iter()
            .filter(|l| match &l.scope {
                Scope::Group(name) => *name == d.group,
                Scope::Model(name) => *name == d.model || *name == d.provider_model,
                Scope::Deployment(id) => *id == d.id,
                Scope::Total | Scope::Tag(_) => false,
            })
            .map(|l| l.scope.to_string())
            .collect()
    }

    fn has_total(&self) -> bool {
        self.config
            .budgets
            .limits
            .iter()
            .any(|l| l.scope == Scope::Total)
    }

    fn budget_coverage(&self) -> Found {
        let mut found = Vec::new();
        let total = self.has_total();
        for (idx, d) in self.config.deployments.iter().enumerate() {
            if is_free(d) || total || !self.own_budgets(d).is_empty() {
                continue;
            }
            found.push((
                Level::Fail,
                d.id.clone(),
                format!(
                    "{} is under no budget (no total, group, model or deployment budget): its spend is never stopped",
                    self.label(idx)
                ),
            ));
        }
        let pass = if total {
            "the total budget covers every deployment".to_string()
        } else {
            "every paid deployment is under a group, model or deployment budget".to_string()
        };
        (found, pass)
    }

    fn total_halt(&self) -> Found {
        let mut found = Vec::new();
        let total = self
            .config
            .budgets
            .limits
            .iter()
            .find(|l| l.scope == Scope::Total);
        let want = self.policy.total_halt_percent;
        let pass = match total {
            None => {
                found.push((
                    Level::Fail,
                    "total".into(),
                    format!("no total budget (detour.budgets.total or litellm_settings.max_budget): nothing halts traffic at {want} % (R-2202)"),
                ));
                String::new()
            }
            Some(limit) => match limit.halt_at_percent {
                None => {
                    found.push((
                        Level::Fail,
                        "total".into(),
                        format!("the total budget never halts (halt_at: false): the {want} % emergency stop is off"),
                    ));
                    String::new()
                }
                Some(p) if p != want => {
                    found.push((
                        Level::Warn,
                        "total".into(),
                        format!(
                            "the total budget {} per {} halts at {p} %, not the seed's {want} %",
                            detour_core::price::format_dollars(limit.limit_nanos),
                            limit.period
                        ),
                    ));
                    String::new()
                }
                Some(p) => format!(
                    "total budget {} per {} halts all traffic at {p} %",
                    detour_core::price::format_dollars(limit.limit_nanos),
                    limit.period
                ),
            },
        };
        (found, pass)
    }

    fn model_budgets(&self) -> Found {
        let mut found = Vec::new();
        for (idx, d) in self.config.deployments.iter().enumerate() {
            if is_free(d) || !self.own_budgets(d).is_empty() {
                continue;
            }
            found.push((
                Level::Warn,
                d.id.clone(),
                format!(
                    "{} has no budget of its own (model/{}, deployment/{} or group/{}): only the total stops it",
                    self.label(idx),
                    d.provider_model,
                    d.id,
                    d.group
                ),
            ));
        }
        (
            found,
            "every paid deployment has its own model, deployment or group budget".into(),
        )
    }

    fn tag_budgets(&self) -> Found {
        let mut found = Vec::new();
        for tag in self.config.stages.keys() {
            if self.config.budgets.tag_limit(tag).is_none() {
                found.push((
                    Level::Warn,
                    format!("tag {tag}"),
                    format!("stage tag {tag} has no budget (detour.budgets.tags.{tag})"),
                ));
            }
        }
        (found, "every mapped stage tag has a budget".to_string())
    }

    fn human_gate(&self) -> Found {
        let mut found = Vec::new();
        if self.config.admin.is_none() {
            found.push((
                Level::Warn,
                "detour.admin".into(),
                "no admin token: after a halt, traffic resumes only by raising the budget and reloading the config (set detour.admin.token for POST /detour/admin/resume)".into(),
            ));
        }
        (
            found,
            "the admin API can resume a halt (HumanGate)".to_string(),
        )
    }

    fn fleet(&self) -> Found {
        if let Some(fleet) = &self.config.fleet {
            // The state service's authority only: never the Redis URL, which may carry a
            // password.
            let pass = if fleet.state_configured {
                format!(
                    "fleet mode: every replica shares the budgets and RPM/TPM through detour state at {}",
                    fleet.state.authority()
                )
            } else {
                "fleet mode: detour serve shares the budgets and RPM/TPM through Redis; Envoy also needs detour.fleet.state (`detour envoy` refuses without it)".to_string()
            };
            return (Vec::new(), pass);
        }
        let budgets = !self.config.budgets.limits.is_empty();
        let rates = self
            .config
            .deployments
            .iter()
            .any(|d| d.rpm.is_some() || d.tpm.is_some());
        let n = self.replicas;
        let mut found = Vec::new();
        if n > 1 && (budgets || rates) {
            let what = match (budgets, rates) {
                (true, false) => format!("budgets spend up to {n}× each budget"),
                (true, true) => format!(
                    "budgets spend up to {n}× each budget (and rpm/tpm admit up to {n}× each limit)"
                ),
                (false, _) => format!("rpm/tpm limits admit up to {n}× each limit"),
            };
            found.push((
                Level::Warn,
                "detour.fleet".into(),
                format!(
                    "{n} replicas with per-process {what}: set detour.fleet (see {FLEET_DOCS})"
                ),
            ));
        }
        let pass = if !budgets && !rates {
            "no budgets or rpm/tpm limits: nothing for replicas to share".to_string()
        } else {
            format!(
                "one replica: its per-process budgets and rpm/tpm are the whole limits (more replicas need detour.fleet: check with --replicas N; see {FLEET_DOCS})"
            )
        };
        (found, pass)
    }

    // ---------------------------------------------------------------- V-2203

    fn tables(&self) -> Vec<(&'static str, &'a BTreeMap<String, Vec<String>>)> {
        let mut tables = vec![("fallbacks", &self.config.fallbacks.general)];
        if let Some(t) = &self.config.fallbacks.context_window {
            tables.push(("context_window_fallbacks", t));
        }
        if let Some(t) = &self.config.fallbacks.content_policy {
            tables.push(("content_policy_fallbacks", t));
        }
        tables
    }

    fn fallback_targets(&self) -> Found {
        let mut found = Vec::new();
        for (name, table) in self.tables() {
            for (from, targets) in table {
                if from != "*" && !self.config.groups.contains_key(from) {
                    found.push((
                        Level::Fail,
                        from.clone(),
                        format!("{name}: entry {from:?} is not a route group"),
                    ));
                }
                let mut seen = BTreeSet::new();
                for target in targets {
                    if !self.config.groups.contains_key(target) {
                        found.push((
                            Level::Fail,
                            from.clone(),
                            format!("{name}: {from} falls back to {target:?}, which is not a route group"),
                        ));
                    } else if target == from {
                        found.push((
                            Level::Fail,
                            from.clone(),
                            format!("{name}: {from} falls back to itself"),
                        ));
                    } else if !seen.insert(target) {
                        found.push((
                            Level::Fail,
                            from.clone(),
                            format!("{name}: {from} lists {target} twice"),
                        ));
                    }
                }
            }
        }
        (
            found,
            "every fallback names an existing group, once, never its own".to_string(),
        )
    }

    fn fallback_cycles(&self) -> Found {
        let mut found = Vec::new();
        for (name, table) in self.tables() {
            let mut reported = BTreeSet::new();
            for (from, targets) in table {
                if from == "*" {
                    continue;
                }
                for target in targets {
                    let back = table
                        .get(target)
                        .is_some_and(|t| t.iter().any(|g| g == from));
                    let pair = if from < target {
                        (from.clone(), target.clone())
                    } else {
                        (target.clone(), from.clone())
                    };
                    if back && target != from && reported.insert(pair) {
                        found.push((
                            Level::Warn,
                            from.clone(),
                            format!("{name}: {from} and {target} fall back to each other; fallbacks do not nest in detour, so each chain is the group plus its own list, but a declared policy has one direction"),
                        ));
                    }
                }
            }
        }
        (found, "no two groups fall back to each other".to_string())
    }

    fn seed_order(&self) -> Found {
        let mut found = Vec::new();
        let mut checked = Vec::new();
        for chain in self.chains.iter().filter(|c| c.kind == ChainKind::General) {
            let Some(tiers) = self.tiers.get(&chain.group) else {
                continue;
            };
            for (tier, _) in tiers {
                checked.push(format!("{} as {}", chain.group, tier.name));
                self.order_against(chain, tier, &mut found);
            }
        }
        let pass = if checked.is_empty() {
            "no group of a seed tier in this config (nothing to compare)".to_string()
        } else {
            format!("chains follow the seed's order ({})", checked.join("; "))
        };
        (found, pass)
    }

    fn order_against(&self, chain: &Chain, tier: &Tier, found: &mut Vec<(Level, String, String)>) {
        let declared = chain_text(tier.chain);
        let subject = chain.group.clone();
        let mut highest: Option<(usize, DeploymentIdx)> = None;
        let mut seen_steps = BTreeSet::new();
        let mut first_step = None;
        for slot in &chain.slots {
            let mut slot_steps = BTreeSet::new();
            for idx in slot {
                let Some(d) = self.deployment(*idx) else {
                    continue;
                };
                match step_of(tier.chain, d) {
                    None => found.push((
                        Level::Fail,
                        subject.clone(),
                        format!(
                            "{} holds {}, which is no step of the seed's {} chain ({declared}): an improvised fallback (R-2204)",
                            chain.describe(),
                            self.label(*idx),
                            tier.name
                        ),
                    )),
                    Some(step) => {
                        slot_steps.insert(step);
                        seen_steps.insert(step);
                        if first_step.is_none() {
                            first_step = Some((step, *idx));
                        }
                        if let Some((high, high_idx)) = highest {
                            if step < high {
                                found.push((
                                    Level::Fail,
                                    subject.clone(),
                                    format!(
                                        "{} tries {} ({}) after {} ({}): the seed's {} order is {declared}",
                                        chain.describe(),
                                        self.label(*idx),
                                        tier.chain.get(step).map_or("?", |s| s.label),
                                        self.label(high_idx),
                                        tier.chain.get(high).map_or("?", |s| s.label),
                                        tier.name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            if slot_steps.len() > 1 {
                found.push((
                    Level::Fail,
                    subject.clone(),
                    format!(
                        "{}: {} share one `order`, so weights pick which goes first, but they are different steps of the seed's order ({declared})",
                        chain.describe(),
                        join(slot.iter().map(|i| self.label(*i)), ", ")
                    ),
                ));
            }
            if let Some(max) = slot_steps.iter().max() {
                let idx = slot.first().copied().unwrap_or_default();
                if highest.is_none_or(|(h, _)| *max > h) {
                    highest = Some((*max, idx));
                }
            }
        }
        if let Some((step, idx)) = first_step {
            if !tier.first_choices.contains(&step) {
                found.push((
                    Level::Warn,
                    subject.clone(),
                    format!(
                        "{}'s first choice {} is {}; the seed's {} first choices are {}",
                        chain.group,
                        self.label(idx),
                        tier.chain.get(step).map_or("?", |s| s.label),
                        tier.name,
                        join(
                            tier.first_choices
                                .iter()
                                .filter_map(|i| tier.chain.get(*i).map(|s| s.label)),
                            " or "
                        )
                    ),
                ));
            }
            let skipped: Vec<&str> = tier
                .chain
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    *i > step
                        && !seen_steps.contains(i)
                        && !matches!(s.matcher, Matcher::LastResort)
                })
                .map(|(_, s)| s.label)
                .collect();
            if !skipped.is_empty() {
                found.push((
                    Level::Warn,
                    subject,
                    format!(
                        "{} skips {} of the seed's {} order ({declared})",
                        chain.describe(),
                        skipped.join(", "),
                        tier.name
                    ),
                ));
            }
        }
    }

    fn tag_overrun(&self) -> Found {
        let mut found = Vec::new();
        for (tag, step) in self.policy.overrun {
            if self.config.budgets.tag_limit(tag).is_none() {
                continue;
            }
            let overrun = self
                .config
                .budgets
                .tag_overrun
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(tag))
                .map(|(_, g)| g);
            let Some(group) = overrun else {
                found.push((
                    Level::Warn,
                    format!("tag {tag}"),
                    format!("stage tag {tag} has a budget but no tag_overrun group: at 100 % its requests are refused (402) instead of moving to {} (6.1.3)", step.label),
                ));
                continue;
            };
            let first = self
                .config
                .groups
                .get(group)
                .and_then(|g| g.deployments.first())
                .copied();
            let ok = first
                .and_then(|idx| self.deployment(idx))
                .is_some_and(|d| matches(step, d));
            if !ok {
                found.push((
                    Level::Warn,
                    format!("tag {tag}"),
                    format!(
                        "stage tag {tag} overruns to {group}, whose first choice {} is not the seed's {}",
                        first.map_or_else(|| "(none)".to_string(), |i| self.label(i)),
                        step.label
                    ),
                ));
            }
        }
        (
            found,
            "every budgeted stage tag overruns to the seed's model".to_string(),
        )
    }

    // ---------------------------------------------------------------- V-2204

    fn cooldowns(&self) -> Found {
        let s = &self.config.settings;
        let mut found = Vec::new();
        if s.cooldowns_disabled {
            found.push((
                Level::Warn,
                "router_settings".into(),
                "disable_cooldowns is set: no 429 cooldown and no breaker, so a failing deployment is never set aside nor recovered".into(),
            ));
        } else if s.cooldown_ms == 0 {
            found.push((
                Level::Warn,
                "router_settings".into(),
                "cooldown_time is 0: a 429'd or broken deployment is retried at once".into(),
            ));
        }
        (
            found,
            format!(
                "429 cooldown and open breaker last {} s, then a half-open probe brings the deployment back",
                s.cooldown_ms / 1000
            ),
        )
    }

    fn breaker(&self) -> Found {
        let s = &self.config.settings;
        let mut found = Vec::new();
        if !s.cooldowns_disabled && s.allowed_fails == 0 {
            found.push((
                Level::Warn,
                "router_settings".into(),
                "allowed_fails is 0: a single failure opens the breaker".into(),
            ));
        }
        if !s.cooldowns_disabled && s.failure_window_ms < 1000 {
            found.push((
                Level::Warn,
                "detour.failure_window".into(),
                format!(
                    "failure_window is {} ms: failures are forgotten before they can add up",
                    s.failure_window_ms
                ),
            ));
        }
        (
            found,
            format!(
                "more than {} failures within {} s open the breaker",
                s.allowed_fails,
                s.failure_window_ms / 1000
            ),
        )
    }

    fn health_checks(&self) -> Found {
        let h = &self.config.health_checks;
        let mut found = Vec::new();
        let max = self.policy.max_health_check_interval_ms;
        if !h.enabled {
            found.push((
                Level::Warn,
                "detour.health_checks".into(),
                "active health checks are off: recovery is passive only (the first request after cooldown_time probes the deployment)".into(),
            ));
        } else if h.interval_ms > max {
            found.push((
                Level::Warn,
                "detour.health_checks".into(),
                format!(
                    "health checks run every {} s, less often than the seed's {} s",
                    h.interval_ms / 1000,
                    max / 1000
                ),
            ));
        }
        (
            found,
            format!(
                "active health checks probe unhealthy deployments every {} s",
                h.interval_ms / 1000
            ),
        )
    }
}

/// One chain as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// `high-precision's chain`, `tag Spec's budget-overrun chain` …
    pub name: String,
    /// The groups walked.
    pub groups: Vec<String>,
    /// The deployments in try order (`id (model)`), `[a | b]` for a slot whose order
    /// is left to weights.
    pub deployments: Vec<String>,
}

/// Every chain of `config` (general, context-window, content-policy, budget-overrun), as
/// the rules see them.
pub fn chains(config: &Config) -> Vec<ChainSummary> {
    let ctx = Ctx::new(config, &Policy::SEED);
    ctx.chains
        .iter()
        .map(|chain| ChainSummary {
            name: chain.describe(),
            groups: chain.groups.clone(),
            deployments: chain
                .slots
                .iter()
                .map(|slot| {
                    let labels: Vec<String> = slot.iter().map(|i| ctx.label(*i)).collect();
                    if labels.len() > 1 {
                        format!("[{}]", labels.join(" | "))
                    } else {
                        labels.concat()
                    }
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../../examples/configs/seed.yaml");

    fn load(text: &str) -> Config {
        match detour_core::config::load(text, &|_| Some("sk-test-key-0123456789".into())) {
            Ok(loaded) => loaded.config,
            Err(e) => panic!("config does not load: {:?}", e.errors),
        }
    }

    /// The seed with `from` replaced by `to` (which must occur).
    fn seed_with(from: &str, to: &str) -> Config {
        assert!(SEED.contains(from), "the seed has no {from:?}");
        load(&SEED.replace(from, to))
    }

    fn of<'a>(findings: &'a [Finding], rule: &str, level: Level) -> Vec<&'a Finding> {
        findings
            .iter()
            .filter(|f| f.rule == rule && f.level == level)
            .collect()
    }

    fn fails(findings: &[Finding]) -> Vec<(&'static str, String)> {
        findings
            .iter()
            .filter(|f| f.level == Level::Fail)
            .map(|f| (f.rule, f.message.clone()))
            .collect()
    }

    /// Exactly the given rule fails (possibly several times), and nothing else.
    fn only_fails(findings: &[Finding], rule: &str) -> Vec<String> {
        let failed = fails(findings);
        assert!(!failed.is_empty(), "nothing failed; wanted {rule}");
        for (r, message) in &failed {
            assert_eq!(*r, rule, "unexpected failure: {message}");
        }
        failed.into_iter().map(|(_, m)| m).collect()
    }

    #[test]
    fn the_seed_config_passes_with_known_warnings() {
        let findings = check(&load(SEED));
        assert!(fails(&findings).is_empty(), "{:?}", fails(&findings));
        // Every rule reports something, in RULES order.
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        let mut deduped = rules.clone();
        deduped.dedup();
        assert_eq!(deduped, RULES.map(|r| r.name).to_vec());
        // claude-sonnet has no model budget in the seed (the seed's own list has none).
        let model = of(&findings, "model-budgets", Level::Warn);
        assert_eq!(model.len(), 1);
        assert_eq!(model[0].subject, "claude-sonnet");
        // The overrun chains of Spec/Design/Build/Review/Fix end in a cloud model.
        let last = of(&findings, "last-resort", Level::Warn);
        let subjects: Vec<&str> = last.iter().map(|f| f.subject.as_str()).collect();
        assert!(subjects.contains(&"tag Spec"), "{subjects:?}");
        assert!(!subjects.contains(&"tag Verify"), "{subjects:?}");
        for rule in [
            "seed-order",
            "tag-overrun",
            "economy-models",
            "economy-price",
        ] {
            assert_eq!(of(&findings, rule, Level::Pass).len(), 1, "{rule}");
        }
    }

    #[test]
    fn v2201_unmapped_stage_tag_fails() {
        let text = SEED
            .replace("    Operate: economy\n", "")
            .replace(", Operate: 5}", "}")
            .replace("      Operate: local\n", "");
        let findings = check(&load(&text));
        let failed = only_fails(&findings, "stage-tags");
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("Operate"), "{failed:?}");
        // A mapping to a group that is gone (the loader refuses it; the rule still holds).
        let mut config = load(SEED);
        config.stages.insert("Verify".into(), "nope".into());
        let findings = check(&config);
        assert!(of(&findings, "stage-tags", Level::Fail)[0]
            .message
            .contains("\"nope\""));
    }

    #[test]
    fn v2201_a_group_in_two_tiers_fails() {
        let findings = check(&seed_with(
            "    Verify: economy\n",
            "    Verify: high-precision\n",
        ));
        let conflict = of(&findings, "tier-conflict", Level::Fail);
        assert_eq!(conflict.len(), 1);
        assert!(conflict[0].message.contains("economy (by stage Verify)"));
        // …and chores now reach opus.
        assert!(!of(&findings, "economy-models", Level::Fail).is_empty());
    }

    #[test]
    fn v2201_economy_reaching_a_high_precision_model_fails() {
        let findings = check(&seed_with(
            "- economy: [local]",
            "- economy: [high-precision, local]",
        ));
        let models = of(&findings, "economy-models", Level::Fail);
        assert_eq!(models.len(), 1);
        assert!(models[0].message.contains("claude-opus"));
        assert!(!of(&findings, "economy-price", Level::Fail).is_empty());
    }

    #[test]
    fn v2201_economy_reaching_a_dearer_model_fails() {
        let findings = check(&seed_with(
            "- economy: [local]",
            "- economy: [gemini-3-pro, local]",
        ));
        assert!(of(&findings, "economy-models", Level::Fail).is_empty());
        let price = of(&findings, "economy-price", Level::Fail);
        assert_eq!(price.len(), 1);
        assert!(
            price[0].message.contains("$2 / $12") && price[0].message.contains("$0.3 / $2.5"),
            "{}",
            price[0].message
        );
        // The seed's economy chain has no gemini-3-pro either.
        assert!(!of(&findings, "seed-order", Level::Fail).is_empty());
    }

    #[test]
    fn v2201_economy_overrun_chain_counts_too() {
        let findings = check(&seed_with(
            "      Verify: local\n",
            "      Verify: high-precision\n",
        ));
        let models = of(&findings, "economy-models", Level::Fail);
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].subject, "tag Verify");
    }

    #[test]
    fn v2201_chain_without_a_last_resort_fails() {
        let findings = check(&seed_with(
            "- implementation: [claude-sonnet, gemini-3-pro, gemini-flash, local]",
            "- implementation: [claude-sonnet, gemini-3-pro, gemini-flash]",
        ));
        let failed = only_fails(&findings, "last-resort");
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("implementation's chain"), "{failed:?}");
    }

    #[test]
    fn v2201_a_deployment_twice_fails_and_star_self_reference_warns() {
        let mut config = load(SEED);
        config.fallbacks.general.insert(
            "implementation".into(),
            vec!["local".into(), "claude-sonnet".into(), "local".into()],
        );
        let findings = check(&config);
        let dup = of(&findings, "no-duplicates", Level::Fail);
        assert_eq!(dup.len(), 1, "{findings:?}");
        assert!(dup[0].message.contains("local (llama3.1:8b) 2 times"));

        let text = "model_list:\n  - model_name: cloud\n    litellm_params: {model: openai/gpt-4o, api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000001}\n  - model_name: local\n    litellm_params: {model: openai/llama, api_base: 'http://127.0.0.1:11434/v1', input_cost_per_token: 0, output_cost_per_token: 0}\nrouter_settings:\n  default_fallbacks: [local]\n";
        let findings = check(&load(text));
        assert!(of(&findings, "no-duplicates", Level::Fail).is_empty());
        let warn = of(&findings, "no-duplicates", Level::Warn);
        assert_eq!(warn.len(), 1, "{findings:?}");
        assert!(warn[0].message.contains("\"*\""));
    }

    #[test]
    fn v2201_same_model_and_endpoint_twice_warns() {
        let findings = check(&seed_with(
            "- economy: [local]",
            "- economy: [gemini-flash, local]",
        ));
        let warn = of(&findings, "no-duplicates", Level::Warn);
        assert_eq!(warn.len(), 1);
        assert!(warn[0].message.contains("same model at the same endpoint"));
        assert!(fails(&findings).is_empty(), "{:?}", fails(&findings));
    }

    #[test]
    fn v2202_no_budget_at_all_fails_coverage_and_halt() {
        let start = SEED.find("  budgets:\n").unwrap();
        let end = SEED.find("  # Status, halt").unwrap();
        let text = format!("{}{}", &SEED[..start], &SEED[end..]);
        let findings = check(&load(&text));
        let coverage = of(&findings, "budget-coverage", Level::Fail);
        // Six paid deployments; the free local one needs no budget.
        assert_eq!(coverage.len(), 6);
        assert!(coverage.iter().all(|f| f.subject != "local"));
        assert_eq!(of(&findings, "total-halt", Level::Fail).len(), 1);
        assert_eq!(of(&findings, "model-budgets", Level::Warn).len(), 6);
        assert_eq!(of(&findings, "tag-budgets", Level::Warn).len(), 8);
        assert_eq!(of(&findings, "alerts", Level::Pass).len(), 1);
    }

    #[test]
    fn v2202_total_without_halt_fails_and_another_halt_warns() {
        let findings = check(&seed_with(
            "    total: 100 ",
            "    halt_at: false\n    total: 100 ",
        ));
        let failed = only_fails(&findings, "total-halt");
        assert!(failed[0].contains("never halts"));
        let findings = check(&seed_with(
            "    total: 100 ",
            "    halt_at: 120\n    total: 100 ",
        ));
        assert!(fails(&findings).is_empty());
        assert!(of(&findings, "total-halt", Level::Warn)[0]
            .message
            .contains("120 %"));
    }

    #[test]
    fn v2202_missing_tag_budget_and_admin_warn() {
        let findings = check(&seed_with(" Fix: 5,", ""));
        let warn = of(&findings, "tag-budgets", Level::Warn);
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].subject, "tag Fix");
        let findings = check(&seed_with(
            "  admin:\n    token: os.environ/DETOUR_ADMIN_TOKEN",
            "",
        ));
        assert_eq!(of(&findings, "human-gate", Level::Warn).len(), 1);
        assert!(fails(&findings).is_empty());
    }

    #[test]
    fn v2202_replicas_without_fleet_mode_warn() {
        let seed = load(SEED);
        let policy = Policy::SEED;
        // One replica: nothing to share.
        let findings = check(&seed);
        let pass = of(&findings, "fleet", Level::Pass);
        assert_eq!(pass.len(), 1);
        assert!(pass[0].message.starts_with("one replica"), "{pass:?}");
        // Three replicas with per-process budgets: a warning, and nothing fails.
        let findings = check_with_replicas(&seed, &policy, 3);
        let warn = of(&findings, "fleet", Level::Warn);
        assert_eq!(warn.len(), 1, "{findings:?}");
        assert_eq!(warn[0].item, Item::V2202);
        assert_eq!(warn[0].subject, "detour.fleet");
        assert!(
            warn[0].message.starts_with(
                "3 replicas with per-process budgets spend up to 3× each budget: set detour.fleet (see "
            ),
            "{}",
            warn[0].message
        );
        assert!(fails(&findings).is_empty());
        // rpm/tpm count too, with or without budgets.
        let rates = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: http://127.0.0.1:9/v1, rpm: 60}\n";
        let findings = check_with_replicas(&load(rates), &policy, 2);
        let warn = of(&findings, "fleet", Level::Warn);
        assert!(
            warn[0]
                .message
                .starts_with("2 replicas with per-process rpm/tpm limits admit up to 2×"),
            "{}",
            warn[0].message
        );
        let mut both = seed.clone();
        both.deployments[0].tpm = Some(1000);
        let warn = check_with_replicas(&both, &policy, 4);
        assert!(of(&warn, "fleet", Level::Warn)[0]
            .message
            .contains("4× each budget (and rpm/tpm admit up to 4× each limit)"));
        // Nothing to share: no warning however many replicas.
        let plain = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: http://127.0.0.1:9/v1}\n";
        let findings = check_with_replicas(&load(plain), &policy, 5);
        assert!(of(&findings, "fleet", Level::Warn).is_empty());
        assert!(of(&findings, "fleet", Level::Pass)[0]
            .message
            .starts_with("no budgets"));
    }

    #[test]
    fn v2202_fleet_mode_passes_and_names_the_state_host_only() {
        let fleet = seed_with(
            "detour:\n",
            "detour:\n  fleet:\n    state: http://detour-state.detour.svc.cluster.local:8081\n    redis: redis://:hunter2@redis.internal:6379/0\n",
        );
        let findings = check_with_replicas(&fleet, &Policy::SEED, 3);
        assert!(of(&findings, "fleet", Level::Warn).is_empty());
        let pass = of(&findings, "fleet", Level::Pass);
        assert_eq!(pass.len(), 1);
        assert_eq!(
            pass[0].message,
            "fleet mode: every replica shares the budgets and RPM/TPM through detour state at detour-state.detour.svc.cluster.local:8081"
        );
        for f in &findings {
            assert!(
                !f.message.contains("hunter2") && !f.message.contains("redis.internal"),
                "{f:?}"
            );
        }
        // Redis only (`detour serve`): still fleet mode, and still no Redis URL.
        let serve = seed_with(
            "detour:\n",
            "detour:\n  fleet:\n    redis: redis://:hunter2@redis.internal:6379/0\n",
        );
        let findings = check_with_replicas(&serve, &Policy::SEED, 3);
        let pass = of(&findings, "fleet", Level::Pass);
        assert!(pass[0].message.contains("detour.fleet.state"), "{pass:?}");
        for f in &findings {
            assert!(
                !f.message.contains("hunter2") && !f.message.contains("redis.internal"),
                "{f:?}"
            );
        }
    }

    #[test]
    fn v2203_unknown_and_self_targets_fail() {
        let mut config = load(SEED);
        config
            .fallbacks
            .general
            .insert("economy".into(), vec!["economy".into(), "ghost".into()]);
        let findings = check(&config);
        let failed = of(&findings, "fallback-targets", Level::Fail);
        assert_eq!(failed.len(), 2, "{failed:?}");
    }

    #[test]
    fn v2203_mutual_fallbacks_warn() {
        let findings = check(&seed_with(
            "    - economy: [local]\n",
            "    - economy: [local]\n    - claude-sonnet: [gemini-3-pro]\n    - gemini-3-pro: [claude-sonnet]\n",
        ));
        let warn = of(&findings, "fallback-cycles", Level::Warn);
        assert_eq!(warn.len(), 1);
    }

    #[test]
    fn v2203_order_against_the_seed() {
        // Backwards: gemini-3-pro before claude-sonnet.
        let findings = check(&seed_with(
            "- high-precision: [claude-sonnet, gemini-3-pro,",
            "- high-precision: [gemini-3-pro, claude-sonnet,",
        ));
        let failed = only_fails(&findings, "seed-order");
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("after gemini-3-pro"), "{failed:?}");

        // A skipped step only warns.
        let findings = check(&seed_with(
            "- high-precision: [claude-sonnet, gemini-3-pro,",
            "- high-precision: [claude-sonnet,",
        ));
        assert!(fails(&findings).is_empty());
        let warn = of(&findings, "seed-order", Level::Warn);
        assert!(warn[0].message.contains("skips gemini-3-pro"), "{warn:?}");

        // A model that is no step of the chain.
        let text = SEED
            .replace(
                "model_list:\n",
                "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o, api_key: k, input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}\n",
            )
            .replace(
                "- implementation: [claude-sonnet,",
                "- implementation: [gpt-4o, claude-sonnet,",
            );
        let findings = check(&load(&text));
        let failed = of(&findings, "seed-order", Level::Fail);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].message.contains("gpt-4o"));
    }

    #[test]
    fn v2203_equal_orders_of_different_steps_fail() {
        let text = SEED.replace(
            "model_list:\n",
            "model_list:\n  - model_name: high-precision\n    litellm_params: {model: openai/claude-sonnet-4-5, api_key: k, api_base: 'https://api.anthropic.com/v1/'}\n    model_info: {id: hp-sonnet}\n",
        );
        let findings = check(&load(&text));
        let failed: Vec<_> = of(&findings, "seed-order", Level::Fail)
            .into_iter()
            .filter(|f| f.message.contains("share one `order`"))
            .collect();
        assert_eq!(failed.len(), 1, "{findings:?}");
    }

    #[test]
    fn v2203_first_choice_and_overrun_targets() {
        let findings = check(&seed_with(
            "      Spec: claude-sonnet\n",
            "      Spec: gemini-flash\n",
        ));
        let warn = of(&findings, "tag-overrun", Level::Warn);
        assert_eq!(warn.len(), 1);
        assert!(warn[0].message.contains("not the seed's claude-sonnet"));
        let findings = check(&seed_with("      Fix: gemini-flash\n", ""));
        let warn = of(&findings, "tag-overrun", Level::Warn);
        assert!(warn[0].message.contains("no tag_overrun"));
        assert!(fails(&findings).is_empty());
    }

    #[test]
    fn v2204_only_ever_warns() {
        for (from, to) in [
            (
                "  cooldown_time: 30 ",
                "  disable_cooldowns: true\n  cooldown_time: 30 ",
            ),
            ("  allowed_fails: 3 ", "  allowed_fails: 0 "),
            ("detour:\n", "detour:\n  health_checks: {enabled: false}\n"),
            ("detour:\n", "detour:\n  health_checks: {interval: 10m}\n"),
        ] {
            let findings = check(&seed_with(from, to));
            assert!(fails(&findings).is_empty(), "{to}: {:?}", fails(&findings));
            let warned: Vec<_> = findings
                .iter()
                .filter(|f| f.item == Item::V2204 && f.level == Level::Warn)
                .collect();
            assert_eq!(warned.len(), 1, "{to}: {warned:?}");
        }
    }

    #[test]
    fn local_hosts() {
        for host in [
            "127.0.0.1",
            "localhost",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "::1",
            "fd00::1",
            "ollama",
            "vllm.default.svc.cluster.local",
            "box.local",
            "model.internal",
        ] {
            assert!(is_local_host(host), "{host}");
        }
        for host in [
            "api.openai.com",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "generativelanguage.googleapis.com",
        ] {
            assert!(!is_local_host(host), "{host}");
        }
    }

    #[test]
    fn a_priced_model_behind_a_private_gateway_is_no_last_resort() {
        let findings = check(&seed_with(
            "      api_base: http://127.0.0.1:11434/v1\n      input_cost_per_token: 0\n      output_cost_per_token: 0\n",
            "      api_base: http://10.0.0.5:4000/v1\n      input_cost_per_token: 0.000001\n      output_cost_per_token: 0.000001\n",
        ));
        let failed = of(&findings, "last-resort", Level::Fail);
        assert_eq!(failed.len(), 3, "{failed:?}");
        // Unpriced on a private address: a last resort.
        let text = "model_list:\n  - model_name: economy\n    litellm_params: {model: openai/llama, api_base: 'http://10.0.0.5:4000/v1'}\n";
        let config = load(text);
        assert!(config.deployments[0].price.is_none());
        assert!(is_last_resort(&config.deployments[0]));
    }

    #[test]
    fn model_steps_match_by_substring() {
        let config = load(SEED);
        let hp = Policy::SEED.tiers[0];
        let step = |id: &str| {
            let d = config.deployments.iter().find(|d| d.id == id).unwrap();
            step_of(hp.chain, d).map(|i| hp.chain[i].label)
        };
        assert_eq!(step("claude-opus"), Some("claude-opus"));
        assert_eq!(step("gemini-3-pro"), Some("gemini-3-pro"));
        assert_eq!(step("gemini-flash"), Some("gemini-flash/GLM"));
        assert_eq!(step("local"), Some("local"));
        assert_eq!(step("gpt-5.2"), None);
    }
}
