//! What the events say, worked out once for every output: fallback periods, recoveries,
//! budget state per scope, the seed's log patterns and per-hour series.

use std::collections::{BTreeMap, BTreeSet};

use detour_core::config::Config;

use super::events::{Kind, Read};

/// One hour, in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
/// One minute, in milliseconds.
pub const MINUTE_MS: u64 = 60_000;

/// Fallback reasons that set a deployment aside (the others belong to one request: its
/// prompt did not fit, or its content was refused).
const SETS_ASIDE: [&str; 4] = ["rate_limit", "failure", "budget", "rate_limit_local"];

/// A seed threshold: breaker trips above this many per hour are an emergency.
pub const BREAKER_TRIPS_PER_HOUR: u64 = 3;
/// Fallback rate warning (5 %) and alert (10 %), in percent.
pub const FALLBACK_RATE_WARN: u64 = 5;
/// See [`FALLBACK_RATE_WARN`].
pub const FALLBACK_RATE_ALERT: u64 = 10;
/// HTTP 429s (cooldown events) per minute that mean "rate limit near".
pub const RATE_LIMITS_PER_MINUTE: u64 = 5;
/// Fallbacks away from one deployment within [`REPEAT_WINDOW_MS`] that count as repeated.
pub const REPEATED_FALLBACKS: usize = 3;
/// See [`REPEATED_FALLBACKS`].
pub const REPEAT_WINDOW_MS: u64 = 10 * MINUTE_MS;

/// How a fallback period ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A `recovery` event.
    Recovered {
        /// When.
        ts: u64,
        /// `half_open` or `health_check`.
        via: String,
    },
    /// No event says so: the deployment was last set aside until then (its cooldown's
    /// end, or its last fallback), and no breaker was open.
    Lapsed(u64),
    /// Still set aside (a breaker open, or a cooldown running) at the end of the input.
    Open,
}

/// A span of time in which a deployment was set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The deployment.
    pub deployment: String,
    /// The first event that set it aside.
    pub start: u64,
    /// How it ended.
    pub end: End,
    /// Fallbacks away from it, by reason.
    pub reasons: BTreeMap<String, u64>,
    /// 429 cooldowns in the period.
    pub cooldowns: u64,
    /// Breaker openings in the period.
    pub trips: u64,
    /// The last time anything set it aside (fallback ts, cooldown or breaker `until`).
    last_away: u64,
    /// The latest cooldown or breaker `until`.
    until: u64,
    /// A breaker opened and no recovery came yet.
    breaker_open: bool,
    /// A budget refused it: it stays refused until its budget's period ends or the
    /// budget is raised, neither of which an event records.
    budget: bool,
}

impl Period {
    /// When it ended (`None`: still open).
    pub fn end_ts(&self) -> Option<u64> {
        match self.end {
            End::Recovered { ts, .. } => Some(ts),
            End::Lapsed(ts) => Some(ts),
            End::Open => None,
        }
    }

    /// Fallbacks away from the deployment in the period.
    pub fn fallbacks(&self) -> u64 {
        self.reasons.values().sum()
    }
}

/// A fallback, as the history lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// When.
    pub ts: u64,
    /// Route group.
    pub group: String,
    /// Stage tag.
    pub stage: Option<String>,
    /// From deployment.
    pub from: String,
    /// To deployment.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// A recovery with what preceded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// When.
    pub ts: u64,
    /// The deployment.
    pub deployment: String,
    /// `half_open` or `health_check`.
    pub via: String,
    /// The start of the period it ends, if the input saw it begin.
    pub down_since: Option<u64>,
    /// Breaker openings in that period.
    pub trips: u64,
    /// Cooldowns in that period.
    pub cooldowns: u64,
}

/// A budget threshold crossing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// When.
    pub ts: u64,
    /// Scope.
    pub scope: String,
    /// Period start.
    pub period_start: u64,
    /// Threshold.
    pub percent: u32,
    /// Spend then, nano-dollars.
    pub spent: u64,
    /// Limit, nano-dollars.
    pub limit: u64,
}

/// What is known about one budget scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `total`, `model/…` …
    pub scope: String,
    /// The limit (from the latest alert, else the config).
    pub limit: Option<u64>,
    /// The config's period (`month`, `week`, `30d` …), if a config was given.
    pub period: Option<String>,
    /// The halt threshold, if any (config).
    pub halt_at: Option<u32>,
    /// The latest period the events saw alerts in.
    pub period_start: Option<u64>,
    /// The highest threshold crossed in that period.
    pub highest: Option<u32>,
    /// The highest spend an alert reported in that period (spend is at least this).
    pub spent_at_least: Option<u64>,
    /// Alerts of this scope in the input, all periods.
    pub alerts: usize,
}

impl Scope {
    /// What the scope's state means.
    pub fn status(&self) -> String {
        match self.highest {
            None => "below 80 % (no alert)".into(),
            Some(p) if self.halt_at.is_some_and(|h| p >= h) => format!("{p} %: halted"),
            Some(p) if p >= 100 => format!("{p} %: stopped"),
            Some(p) if p >= 90 => format!("{p} %: critical"),
            Some(p) => format!("{p} %: warning"),
        }
    }

    /// What is left, as far as the events tell.
    pub fn remaining(&self) -> Option<Remaining> {
        let limit = self.limit?;
        Some(match self.spent_at_least {
            Some(spent) => Remaining::AtMost(limit.saturating_sub(spent)),
            // No alert: under 80 %, so more than 20 % is left.
            None => Remaining::MoreThan(limit / 5),
        })
    }
}

/// Remaining budget, bounded from one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    /// Spend is known to be at least limit − this.
    AtMost(u64),
    /// No alert: spend is below 80 %.
    MoreThan(u64),
}

/// A halt and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// When.
    pub ts: u64,
    /// The scope, or `manual`.
    pub scope: String,
    /// Why.
    pub reason: String,
    /// When and by whom it was lifted.
    pub resumed: Option<(u64, String)>,
}

/// A tag's requests moving to its overrun group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrun {
    /// Stage tag.
    pub tag: String,
    /// From group.
    pub from_group: String,
    /// To group.
    pub to_group: String,
    /// First seen.
    pub first: u64,
    /// Last seen.
    pub last: u64,
    /// Requests.
    pub requests: u64,
}

/// A breaker opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// When.
    pub ts: u64,
    /// Deployment.
    pub deployment: String,
    /// Open until.
    pub until: u64,
    /// After a failed half-open probe.
    pub probe_failed: bool,
}

/// A request that got no answer from any deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllFailed {
    /// When.
    pub ts: u64,
    /// Route group.
    pub group: String,
    /// Stage tag.
    pub stage: Option<String>,
    /// Attempts sent.
    pub attempts: u32,
    /// Status the client got.
    pub status: u16,
}

/// One time bin of the per-hour (or per-day) series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bin {
    /// Start of the bin (Unix ms).
    pub start: u64,
    /// Fallbacks by reason.
    pub fallbacks: BTreeMap<String, u64>,
    /// Breaker openings.
    pub trips: u64,
    /// `request` events (0 when the input has none).
    pub requests: u64,
    /// `request` events that fell back (or, without their `fallbacks` field, fallbacks).
    pub fell_back: u64,
}

/// A pattern from the seed's log table (6.1.4) that showed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The seed's log pattern.
    pub pattern: &'static str,
    /// What it means and what to do (the seed's words).
    pub action: &'static str,
    /// Each occurrence: when and what.
    pub seen: Vec<(u64, String)>,
}

/// Everything the reports show.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// First and last event time.
    pub span: Option<(u64, u64)>,
    /// Every fallback, in time order.
    pub fallbacks: Vec<Fallback>,
    /// Fallback periods, by start.
    pub periods: Vec<Period>,
    /// Recoveries, in time order.
    pub recoveries: Vec<Recovery>,
    /// Breaker openings, in time order.
    pub trips: Vec<Trip>,
    /// Cooldowns per deployment: (count, first, last).
    pub cooldowns: BTreeMap<String, (u64, u64, u64)>,
    /// Every cooldown (deployment, ts), in time order.
    pub cooldown_list: Vec<(String, u64)>,
    /// Retries per (deployment, reason).
    pub retries: BTreeMap<(String, String), u64>,
    /// Requests every deployment failed.
    pub all_failed: Vec<AllFailed>,
    /// Budget alerts, in time order.
    pub alerts: Vec<Alert>,
    /// Budget scopes: configured ones and alerted ones.
    pub scopes: Vec<Scope>,
    /// Halts.
    pub halts: Vec<Halt>,
    /// Resumes with no halt before them in the input.
    pub lone_resumes: Vec<(u64, String)>,
    /// Tag overruns, aggregated.
    pub overruns: Vec<Overrun>,
    /// Bin width of [`Analysis::bins`] (an hour, or a day for long inputs).
    pub bin_ms: u64,
    /// Per-bin series.
    pub bins: Vec<Bin>,
    /// Whether the input had `request` events (so a fallback rate exists).
    pub has_requests: bool,
    /// The seed's log patterns.
    pub patterns: Vec<Pattern>,
    /// Deployment id → "model (group)" from the config.
    pub deployments: BTreeMap<String, (String, String)>,
}

impl Analysis {
    /// `id` with its model and group when the config names them.
    pub fn deployment_label(&self, id: &str) -> String {
        match self.deployments.get(id) {
            Some((model, group)) if model != id => format!("{id} ({model}, {group})"),
            Some((_, group)) => format!("{id} ({group})"),
            None => id.to_string(),
        }
    }

    /// Breaker trip threshold for one bin.
    pub fn trips_threshold(&self) -> u64 {
        BREAKER_TRIPS_PER_HOUR * (self.bin_ms / HOUR_MS).max(1)
    }
}

/// Works out everything from the events (sorted by time) and, optionally, the config.
pub fn analyse(read: &Read, config: Option<&Config>) -> Analysis {
    let mut a = Analysis {
        span: read
            .events
            .first()
            .zip(read.events.last())
            .map(|(f, l)| (f.ts, l.ts)),
        ..Analysis::default()
    };
    let quiet_ms = config
        .map(|c| c.settings.failure_window_ms)
        .unwrap_or(60_000)
        .max(MINUTE_MS);
    if let Some(config) = config {
        for d in &config.deployments {
            a.deployments
                .insert(d.id.clone(), (d.provider_model.clone(), d.group.clone()));
        }
    }
    let mut open: BTreeMap<String, Period> = BTreeMap::new();
    let mut overruns: BTreeMap<(String, String, String), Overrun> = BTreeMap::new();
    for event in &read.events {
        let ts = event.ts;
        match &event.kind {
            Kind::Fallback {
                group,
                stage,
                from,
                to,
                reason,
            } => {
                a.fallbacks.push(Fallback {
                    ts,
                    group: group.clone(),
                    stage: stage.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    reason: reason.clone(),
                });
                if SETS_ASIDE.contains(&reason.as_str()) {
                    let p = period_for(&mut open, &mut a.periods, from, ts, quiet_ms);
                    *p.reasons.entry(reason.clone()).or_default() += 1;
                    p.last_away = p.last_away.max(ts);
                    p.budget |= reason == "budget";
                }
            }
            Kind::Cooldown { deployment, until } => {
                let entry = a.cooldowns.entry(deployment.clone()).or_insert((0, ts, ts));
                entry.0 += 1;
                entry.2 = ts;
                a.cooldown_list.push((deployment.clone(), ts));
                let p = period_for(&mut open, &mut a.periods, deployment, ts, quiet_ms);
                p.cooldowns += 1;
                p.until = p.until.max(*until);
                p.last_away = p.last_away.max(ts);
            }
            Kind::BreakerOpened {
                deployment,
                until,
                probe_failed,
            } => {
                a.trips.push(Trip {
                    ts,
                    deployment: deployment.clone(),
                    until: *until,
                    probe_failed: *probe_failed,
                });
                let p = period_for(&mut open, &mut a.periods, deployment, ts, quiet_ms);
                p.trips += 1;
                p.breaker_open = true;
                p.until = p.until.max(*until);
                p.last_away = p.last_away.max(ts);
            }
            Kind::Recovery { deployment, via } => {
                let mut recovery = Recovery {
                    ts,
                    deployment: deployment.clone(),
                    via: via.clone(),
                    down_since: None,
                    trips: 0,
                    cooldowns: 0,
                };
                if let Some(mut p) = open.remove(deployment) {
                    recovery.down_since = Some(p.start);
                    recovery.trips = p.trips;
                    recovery.cooldowns = p.cooldowns;
                    p.end = End::Recovered {
                        ts,
                        via: via.clone(),
                    };
                    a.periods.push(p);
                }
                a.recoveries.push(recovery);
            }
            Kind::Retry {
                deployment, reason, ..
            } => {
                *a.retries
                    .entry((deployment.clone(), reason.clone()))
                    .or_default() += 1;
            }
            Kind::BudgetAlert {
                scope,
                period_start,
                percent,
                spent,
                limit,
            } => a.alerts.push(Alert {
                ts,
                scope: scope.clone(),
                period_start: *period_start,
                percent: *percent,
                spent: *spent,
                limit: *limit,
            }),
            Kind::TagOverrun {
                tag,
                from_group,
                to_group,
            } => {
                let o = overruns
                    .entry((tag.clone(), from_group.clone(), to_group.clone()))
                    .or_insert_with(|| Overrun {
                        tag: tag.clone(),
                        from_group: from_group.clone(),
                        to_group: to_group.clone(),
                        first: ts,
                        last: ts,
                        requests: 0,
                    });
                o.requests += 1;
                o.last = ts;
            }
            Kind::Halt { scope, reason } => {
                let still_halted = a.halts.last().is_some_and(|h| h.resumed.is_none());
                if !still_halted {
                    a.halts.push(Halt {
                        ts,
                        scope: scope.clone(),
                        reason: reason.clone(),
                        resumed: None,
                    });
                }
            }
            Kind::Resume { by } => match a.halts.last_mut() {
                Some(h) if h.resumed.is_none() => h.resumed = Some((ts, by.clone())),
                _ => a.lone_resumes.push((ts, by.clone())),
            },
            Kind::AllFailed {
                group,
                stage,
                attempts,
                status,
            } => a.all_failed.push(AllFailed {
                ts,
                group: group.clone(),
                stage: stage.clone(),
                attempts: *attempts,
                status: *status,
            }),
            Kind::Request { .. } => a.has_requests = true,
        }
    }
    let end_of_input = a.span.map_or(0, |(_, last)| last);
    for (_, mut p) in open {
        p.end = close(&p, end_of_input);
        a.periods.push(p);
    }
    a.periods
        .sort_by(|x, y| (x.start, &x.deployment).cmp(&(y.start, &y.deployment)));
    a.overruns = overruns.into_values().collect();
    a.overruns.sort_by_key(|o| (o.first, o.tag.clone()));
    a.scopes = scopes(&a.alerts, config);
    bins(&mut a, read);
    a.patterns = patterns(&a);
    a
}

/// How a period without a recovery ends, judged at `now` (the end of the input): still
/// open while a breaker is open, a cooldown runs or a budget refused it, else lapsed when
/// it was last set aside.
fn close(p: &Period, now: u64) -> End {
    if p.breaker_open || p.budget || now < p.until {
        End::Open
    } else {
        End::Lapsed(p.until.max(p.last_away))
    }
}

/// The open period of `deployment`, started at `ts` if there is none; a period that
/// lapsed before `ts` (no breaker open, no budget refusal, its cooldown over and quiet for
/// `quiet_ms`) is closed first.
fn period_for<'a>(
    open: &'a mut BTreeMap<String, Period>,
    done: &mut Vec<Period>,
    deployment: &str,
    ts: u64,
    quiet_ms: u64,
) -> &'a mut Period {
    let lapsed = open.get(deployment).is_some_and(|p| {
        !p.breaker_open && !p.budget && ts > p.last_away.max(p.until).saturating_add(quiet_ms)
    });
    if lapsed {
        if let Some(mut p) = open.remove(deployment) {
            p.end = End::Lapsed(p.until.max(p.last_away));
            done.push(p);
        }
    }
    open.entry(deployment.to_string())
        .or_insert_with(|| Period {
            deployment: deployment.to_string(),
            start: ts,
            end: End::Open,
            reasons: BTreeMap::new(),
            cooldowns: 0,
            trips: 0,
            last_away: ts,
            until: 0,
            breaker_open: false,
            budget: false,
        })
}

fn scopes(alerts: &[Alert], config: Option<&Config>) -> Vec<Scope> {
    let mut out: BTreeMap<String, Scope> = BTreeMap::new();
    if let Some(config) = config {
        for limit in &config.budgets.limits {
            let name = limit.scope.to_string();
            out.insert(
                name.clone(),
                Scope {
                    scope: name,
                    limit: Some(limit.limit_nanos),
                    period: Some(limit.period.to_string()),
                    halt_at: limit.halt_at_percent,
                    period_start: None,
                    highest: None,
                    spent_at_least: None,
                    alerts: 0,
                },
            );
        }
    }
    for alert in alerts {
        let s = out.entry(alert.scope.clone()).or_insert_with(|| Scope {
            scope: alert.scope.clone(),
            limit: None,
            period: None,
            halt_at: None,
            period_start: None,
            highest: None,
            spent_at_least: None,
            alerts: 0,
        });
        s.alerts += 1;
        if s.period_start.is_none_or(|p| alert.period_start > p) {
            s.period_start = Some(alert.period_start);
            s.highest = None;
            s.spent_at_least = None;
        }
        if s.period_start == Some(alert.period_start) {
            s.highest = s.highest.max(Some(alert.percent));
            s.spent_at_least = s.spent_at_least.max(Some(alert.spent));
            s.limit = Some(alert.limit);
        }
    }
    let mut scopes: Vec<Scope> = out.into_values().collect();
    scopes.sort_by_key(|s| (scope_rank(&s.scope), s.scope.clone()));
    scopes
}

/// Report order: total, groups, models, deployments, tags, anything else.
pub fn scope_rank(scope: &str) -> u8 {
    match scope.split_once('/').map_or(scope, |(kind, _)| kind) {
        "total" => 0,
        "group" => 1,
        "model" => 2,
        "deployment" => 3,
        "tag" => 4,
        _ => 5,
    }
}

fn bins(a: &mut Analysis, read: &Read) {
    let Some((first, last)) = a.span else {
        a.bin_ms = HOUR_MS;
        return;
    };
    // Hours up to two weeks, days up to about five years, then coarser (a chart of
    // thousands of bars reads as noise, and the bins must stay few whatever the input).
    let span = last.saturating_sub(first);
    const DAY: u64 = 24 * HOUR_MS;
    a.bin_ms = if span <= 14 * DAY {
        HOUR_MS
    } else if span <= 2000 * DAY {
        DAY
    } else {
        span.div_ceil(2000).div_ceil(DAY).saturating_mul(DAY)
    };
    let start = first - first % a.bin_ms;
    let n = usize::try_from((last - start) / a.bin_ms)
        .unwrap_or(0)
        .saturating_add(1)
        .min(4000);
    a.bins = (0..n)
        .map(|i| Bin {
            start: start.saturating_add(a.bin_ms.saturating_mul(i as u64)),
            ..Bin::default()
        })
        .collect();
    let index = |ts: u64| usize::try_from((ts.saturating_sub(start)) / a.bin_ms).unwrap_or(0);
    let mut fallback_events = vec![0u64; n];
    let mut requests_with_count = vec![false; n];
    for event in &read.events {
        let i = index(event.ts);
        let Some(bin) = a.bins.get_mut(i) else {
            continue;
        };
        match &event.kind {
            Kind::Fallback { reason, .. } => {
                *bin.fallbacks.entry(reason.clone()).or_default() += 1;
                if let Some(c) = fallback_events.get_mut(i) {
                    *c += 1;
                }
            }
            Kind::BreakerOpened { .. } => bin.trips += 1,
            Kind::Request { fallbacks } => {
                bin.requests += 1;
                if let Some(n) = fallbacks {
                    if let Some(flag) = requests_with_count.get_mut(i) {
                        *flag = true;
                    }
                    bin.fell_back += u64::from(*n > 0);
                }
            }
            _ => {}
        }
    }
    for (i, bin) in a.bins.iter_mut().enumerate() {
        if !requests_with_count.get(i).copied().unwrap_or(false) {
            // Without per-request counts, each fallback counts as one request that fell
            // back (an upper bound when requests fall back more than once).
            bin.fell_back = fallback_events
                .get(i)
                .copied()
                .unwrap_or(0)
                .min(bin.requests);
        }
    }
}

fn patterns(a: &Analysis) -> Vec<Pattern> {
    // ≥ 5 HTTP 429 in one minute: each 429 answer cools its deployment down.
    let mut per_minute: BTreeMap<u64, (u64, BTreeSet<String>)> = BTreeMap::new();
    for (deployment, ts) in &a.cooldown_list {
        let e = per_minute.entry(ts / MINUTE_MS).or_default();
        e.0 += 1;
        e.1.insert(deployment.clone());
    }
    let rate_limits = per_minute
        .into_iter()
        .filter(|(_, (n, _))| *n >= RATE_LIMITS_PER_MINUTE)
        .map(|(minute, (n, deps))| {
            (
                minute * MINUTE_MS,
                format!(
                    "{n} × 429 in one minute ({})",
                    deps.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
        .collect();

    // The same deployment left again and again.
    let mut by_from: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for f in &a.fallbacks {
        by_from.entry(f.from.as_str()).or_default().push(f.ts);
    }
    let mut repeated = Vec::new();
    for (from, times) in by_from {
        let mut best: Option<(usize, u64)> = None;
        let mut lo = 0;
        for (hi, t) in times.iter().enumerate() {
            while times
                .get(lo)
                .is_some_and(|start| t.saturating_sub(*start) > REPEAT_WINDOW_MS)
            {
                lo += 1;
            }
            let count = hi + 1 - lo;
            if count >= REPEATED_FALLBACKS && best.is_none_or(|(c, _)| count > c) {
                best = Some((count, times.get(lo).copied().unwrap_or(*t)));
            }
        }
        if let Some((count, start)) = best {
            repeated.push((
                start,
                format!(
                    "{} left {count} times within {} min",
                    a.deployment_label(from),
                    REPEAT_WINDOW_MS / MINUTE_MS
                ),
            ));
        }
    }
    repeated.sort();

    let budget = a
        .alerts
        .iter()
        .filter(|al| al.percent >= 100)
        .map(|al| (al.ts, format!("{} at {} %", al.scope, al.percent)))
        .collect();
    let all_failed = a
        .all_failed
        .iter()
        .map(|f| {
            (
                f.ts,
                format!(
                    "{}{}: {} attempts, answered {}",
                    f.group,
                    f.stage
                        .as_ref()
                        .map(|s| format!(" (stage {s})"))
                        .unwrap_or_default(),
                    f.attempts,
                    f.status
                ),
            )
        })
        .collect();
    let threshold = a.trips_threshold();
    let trips = a
        .bins
        .iter()
        .filter(|b| b.trips > threshold)
        .map(|b| {
            let deployments: BTreeSet<&str> = a
                .trips
                .iter()
                .filter(|t| t.ts >= b.start && t.ts < b.start.saturating_add(a.bin_ms))
                .map(|t| t.deployment.as_str())
                .collect();
            (
                b.start,
                format!(
                    "{} breaker trips in one {} ({})",
                    b.trips,
                    if a.bin_ms == HOUR_MS { "hour" } else { "day" },
                    deployments.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
        .collect();
    let mut out = vec![
        Pattern {
            pattern: "HTTP 429 five or more times in a minute",
            action: "rate limit near: check the deployments' RPM/TPM limits",
            seen: rate_limits,
        },
        Pattern {
            pattern: "fallback triggered repeatedly",
            action: "the deployment is unstable: consider disabling it for a while",
            seen: repeated,
        },
        Pattern {
            pattern: "budget 100 % reached",
            action: "budget exhausted: HumanGate decision",
            seen: budget,
        },
        Pattern {
            pattern: "all models failed",
            action: "every deployment down: keep work going on the local model and investigate",
            seen: all_failed,
        },
        Pattern {
            pattern: "more than 3 breaker trips per hour",
            action: "emergency: a provider is failing repeatedly",
            seen: trips,
        },
    ];
    if a.has_requests {
        let rate = a
            .bins
            .iter()
            .filter(|b| b.requests > 0 && b.fell_back * 100 > b.requests * FALLBACK_RATE_WARN)
            .map(|b| {
                (
                    b.start,
                    format!(
                        "{} of {} requests fell back ({:.1} %)",
                        b.fell_back,
                        b.requests,
                        b.fell_back as f64 * 100.0 / b.requests as f64
                    ),
                )
            })
            .collect();
        out.push(Pattern {
            pattern: "fallback rate above 5 % (alert above 10 %)",
            action: "silent quality loss: the primary's limits are too low; upgrade or spread load",
            seen: rate,
        });
    }
    out
}
