//! The three evidence files (Part22 E-2202, E-2203, E-2204) as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::analysis::{self, Analysis, End, Remaining, Scope, HOUR_MS};
use super::events::Read;
use super::fmt::{cell, duration, money, money_exact, money_up, pretty_date, time};
use super::Context;

/// The budget consumption report.
pub fn budget(ctx: &Context<'_>) -> String {
    let a = ctx.analysis;
    let mut md = String::new();
    header(
        &mut md,
        ctx,
        "Budget consumption",
        "E-2202: spend by model and by stage tag, remaining budget, alert history",
    );
    let _ = writeln!(
        md,
        "- Limits: {}\n",
        match ctx.config_name {
            Some(name) => format!("from {}", cell(name)),
            None => "no config given: only scopes that alerted are listed (pass --config for every limit)".into(),
        }
    );
    let _ = writeln!(md, "## How to read this\n");
    let _ = writeln!(
        md,
        "detour records a scope's spend when it crosses 80, 90, 100 or 110 % of its limit (`budget_alert` events). \
         So *spent* below is the spend at the latest crossing in the scope's latest period (the real spend is at least that), \
         and *remaining* is at most the limit minus it. A scope without an alert is below 80 %, so more than 20 % of it is left. \
         At 100 % a scope stops (its deployments are skipped; a stage tag moves to its overrun group); at the halt threshold \
         (110 % of the total by default) all traffic stops until a human resumes it.\n"
    );
    let sections: [(&str, &[u8]); 4] = [
        ("Total and route groups", &[0, 1]),
        ("By model", &[2, 3]),
        ("By stage tag", &[4]),
        ("Other scopes", &[5]),
    ];
    for (title, ranks) in sections {
        let scopes: Vec<&Scope> = a
            .scopes
            .iter()
            .filter(|s| ranks.contains(&analysis::scope_rank(&s.scope)))
            .collect();
        if scopes.is_empty() && title == "Other scopes" {
            continue;
        }
        let _ = writeln!(md, "## {title}\n");
        if scopes.is_empty() {
            let _ = writeln!(md, "No budget of this kind in the config or the events.\n");
            continue;
        }
        let _ = writeln!(
            md,
            "| scope | limit | period | status | spent (at least) | remaining | period from | alerts |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for s in scopes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&s.scope),
                s.limit.map_or("?".into(), money),
                s.period.as_deref().unwrap_or("?"),
                s.status(),
                s.spent_at_least.map_or("-".into(), money),
                match s.remaining() {
                    Some(Remaining::AtMost(n)) => format!("at most {}", money_up(n)),
                    Some(Remaining::MoreThan(n)) => format!("more than {}", money(n)),
                    None => "?".into(),
                },
                s.period_start.map_or("-".into(), time),
                s.alerts
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Alert history\n");
    if a.alerts.is_empty() {
        let _ = writeln!(md, "No budget alert in the input.\n");
    } else {
        let _ = writeln!(
            md,
            "| time | scope | threshold | spent | limit | period from | what it means |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for al in &a.alerts {
            let meaning = match al.percent {
                p if p >= 110 => {
                    "emergency: the halt threshold of the total (or of a scope with halt_at)"
                }
                p if p >= 100 => {
                    "the scope stops: its deployments are skipped, a tag moves to its overrun group"
                }
                p if p >= 90 => "critical",
                _ => "warning",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} % | {} | {} | {} | {meaning} |",
                time(al.ts),
                cell(&al.scope),
                al.percent,
                money_exact(al.spent),
                money_exact(al.limit),
                time(al.period_start)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Halts (HumanGate)\n");
    if a.halts.is_empty() && a.lone_resumes.is_empty() {
        let _ = writeln!(md, "No halt in the input.\n");
    } else {
        let _ = writeln!(
            md,
            "| halted | scope | reason | resumed | by | halted for |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for h in &a.halts {
            let (resumed, by, length) = match &h.resumed {
                Some((ts, by)) => (time(*ts), by.clone(), duration(ts.saturating_sub(h.ts))),
                None => (
                    "not by the end of the input".into(),
                    "-".into(),
                    a.span.map_or("?".into(), |(_, last)| {
                        format!("at least {}", duration(last.saturating_sub(h.ts)))
                    }),
                ),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                time(h.ts),
                cell(&h.scope),
                cell(&h.reason),
                resumed,
                cell(&by),
                length
            );
        }
        for (ts, by) in &a.lone_resumes {
            let _ = writeln!(
                md,
                "| (before the input) | - | - | {} | {} | - |",
                time(*ts),
                cell(by)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Budget-overrun fallbacks\n");
    if a.overruns.is_empty() {
        let _ = writeln!(md, "No stage tag ran over its budget in the input.\n");
    } else {
        let _ = writeln!(
            md,
            "| stage tag | from group | to group | first | last | requests |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for o in &a.overruns {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&o.tag),
                cell(&o.from_group),
                cell(&o.to_group),
                time(o.first),
                time(o.last),
                o.requests
            );
        }
        md.push('\n');
    }
    let mut budget_skips: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for f in a.fallbacks.iter().filter(|f| f.reason == "budget") {
        let e = budget_skips
            .entry(f.from.as_str())
            .or_insert((0, f.ts, f.ts));
        e.0 += 1;
        e.2 = f.ts;
    }
    let _ = writeln!(md, "## Deployments skipped for budget\n");
    if budget_skips.is_empty() {
        let _ = writeln!(md, "No fallback for budget in the input.\n");
    } else {
        let _ = writeln!(
            md,
            "Fallbacks with reason `budget` (a scope had no room for the attempt's estimate; the event does not say which scope).\n"
        );
        let _ = writeln!(md, "| deployment | fallbacks | first | last |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (d, (n, first, last)) in budget_skips {
            let _ = writeln!(
                md,
                "| {} | {n} | {} | {} |",
                cell(&a.deployment_label(d)),
                time(first),
                time(last)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## What the events cannot tell\n");
    let _ = writeln!(
        md,
        "- Spend between alerts, spend of scopes that never reached 80 %, and spend per request: events carry spend only at threshold crossings. \
           The admin API (`GET /detour/admin/status`) and the `detour_budget_spent_microdollars` metric have the live counters.\n\
         - Which scope refused a `budget` fallback.\n\
         - Spend per model across scopes: a `model/…` row exists only for models with a budget of their own.\n"
    );
    input(&mut md, ctx.read);
    md
}

/// The fallback history.
pub fn fallback(ctx: &Context<'_>) -> String {
    let a = ctx.analysis;
    let mut md = String::new();
    header(
        &mut md,
        ctx,
        "Fallback history",
        "E-2203: when, from, to, why, for how long, and when the deployment came back",
    );
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &a.fallbacks {
        *by_reason.entry(f.reason.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        md,
        "- Fallbacks: {}{}",
        a.fallbacks.len(),
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                by_reason
                    .iter()
                    .map(|(r, n)| format!("{r}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        md,
        "- Requests every deployment failed: {}",
        a.all_failed.len()
    );
    let _ = writeln!(md, "- Breaker openings: {}\n", a.trips.len());

    let _ = writeln!(md, "## Patterns to act on (Part22 6.1.4)\n");
    let _ = writeln!(md, "| pattern | seen | first | what to do |");
    let _ = writeln!(md, "|---|---|---|---|");
    for p in &a.patterns {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            p.pattern,
            p.seen.len(),
            p.seen.first().map_or("-".into(), |(ts, _)| time(*ts)),
            p.action
        );
    }
    md.push('\n');
    for p in a.patterns.iter().filter(|p| !p.seen.is_empty()) {
        let _ = writeln!(md, "{}:\n", p.pattern);
        for (ts, what) in &p.seen {
            let _ = writeln!(md, "- {} {}", time(*ts), what);
        }
        md.push('\n');
    }
    if !a.has_requests {
        let _ = writeln!(
            md,
            "The fallback *rate* (warn above 5 %, alert above 10 %) needs the number of requests, which the events do not carry; \
             see `detour_requests_total` in the metrics, or the per-hour counts below.\n"
        );
    }

    let _ = writeln!(md, "## Fallback periods\n");
    let _ = writeln!(
        md,
        "A period starts when a deployment is first set aside: a fallback away from it for a rate limit, a failure, a budget or \
         its own RPM/TPM limit, a 429 cooldown, or a breaker opening. It ends with the deployment's `recovery` event. \
         Without one it has *lapsed* when nothing set the deployment aside any more and no breaker was open \
         (a cooldown ends silently; a failure that did not open the breaker sets nothing aside), or it is still open at the end of the input.\n"
    );
    if a.periods.is_empty() {
        let _ = writeln!(md, "No deployment was set aside.\n");
    } else {
        let _ = writeln!(
            md,
            "| deployment | set aside | back | how it ended | period | fallbacks away | cooldowns | breaker trips |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for p in &a.periods {
            let (back, how, length) = match &p.end {
                End::Recovered { ts, via } => (
                    time(*ts),
                    format!("recovery ({})", via_text(via)),
                    duration(ts.saturating_sub(p.start)),
                ),
                End::Lapsed(ts) => (
                    time(*ts),
                    "lapsed (no event records the return)".into(),
                    duration(ts.saturating_sub(p.start)),
                ),
                End::Open => (
                    "-".into(),
                    "still set aside at the end of the input".into(),
                    a.span.map_or("?".into(), |(_, last)| {
                        format!("at least {}", duration(last.saturating_sub(p.start)))
                    }),
                ),
            };
            let reasons = p
                .reasons
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                md,
                "| {} | {} | {back} | {how} | {length} | {} | {} | {} |",
                cell(&a.deployment_label(&p.deployment)),
                time(p.start),
                if reasons.is_empty() {
                    "0".into()
                } else {
                    format!("{} ({reasons})", p.fallbacks())
                },
                p.cooldowns,
                p.trips
            );
        }
        md.push('\n');
    }

    let unit = if a.bin_ms == HOUR_MS { "hour" } else { "day" };
    let _ = writeln!(md, "## Per {unit}\n");
    let busy: Vec<_> = a
        .bins
        .iter()
        .filter(|b| !b.fallbacks.is_empty() || b.trips > 0 || b.requests > 0)
        .collect();
    if busy.is_empty() {
        let _ = writeln!(md, "Nothing to count.\n");
    } else {
        let _ = writeln!(
            md,
            "| {unit} from | fallbacks | by reason | breaker trips (alert above {}) |{}",
            a.trips_threshold(),
            if a.has_requests {
                " requests | fallback rate |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|{}",
            if a.has_requests { "---|---|" } else { "" }
        );
        for b in busy {
            let total: u64 = b.fallbacks.values().sum();
            let reasons = b
                .fallbacks
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rate = if !a.has_requests {
                String::new()
            } else if b.requests == 0 {
                " 0 | - |".into()
            } else {
                format!(
                    " {} | {:.1} % |",
                    b.requests,
                    b.fell_back as f64 * 100.0 / b.requests as f64
                )
            };
            let _ = writeln!(
                md,
                "| {} | {total} | {} | {} |{rate}",
                time(b.start),
                if reasons.is_empty() {
                    "-".into()
                } else {
                    reasons
                },
                b.trips
            );
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Every fallback\n");
    if a.fallbacks.is_empty() {
        let _ = writeln!(md, "No fallback in the input.\n");
    } else {
        let _ = writeln!(md, "| time | group | stage | from | to | reason |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for f in &a.fallbacks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                time(f.ts),
                cell(&f.group),
                cell(f.stage.as_deref().unwrap_or("-")),
                cell(&f.from),
                cell(&f.to),
                cell(&f.reason)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Requests every deployment failed\n");
    if a.all_failed.is_empty() {
        let _ = writeln!(md, "None.\n");
    } else {
        let _ = writeln!(md, "| time | group | stage | attempts | client got |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for f in &a.all_failed {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                time(f.ts),
                cell(&f.group),
                cell(f.stage.as_deref().unwrap_or("-")),
                f.attempts,
                f.status
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Retries\n");
    if a.retries.is_empty() {
        let _ = writeln!(md, "No retry in the input.\n");
    } else {
        let _ = writeln!(md, "| deployment | reason | retries |");
        let _ = writeln!(md, "|---|---|---|");
        for ((d, reason), n) in &a.retries {
            let _ = writeln!(
                md,
                "| {} | {} | {n} |",
                cell(&a.deployment_label(d)),
                cell(reason)
            );
        }
        md.push('\n');
    }
    input(&mut md, ctx.read);
    md
}

/// The recovery history.
pub fn recovery(ctx: &Context<'_>) -> String {
    let a = ctx.analysis;
    let mut md = String::new();
    header(
        &mut md,
        ctx,
        "Recovery history",
        "E-2204: when each deployment came back, which one, and how the return was confirmed",
    );
    md.push('\n');
    let _ = writeln!(md, "## Recoveries\n");
    if a.recoveries.is_empty() {
        let _ = writeln!(md, "No recovery in the input.\n");
    } else {
        let _ = writeln!(
            md,
            "| recovered | deployment | confirmed by | set aside since | down for | breaker trips | cooldowns |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for r in &a.recoveries {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                time(r.ts),
                cell(&a.deployment_label(&r.deployment)),
                via_text(&r.via),
                r.down_since.map_or("(before the input)".into(), time),
                r.down_since
                    .map_or("?".into(), |t| duration(r.ts.saturating_sub(t))),
                r.trips,
                r.cooldowns
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Not recovered by the end of the input\n");
    let open: Vec<_> = a.periods.iter().filter(|p| p.end == End::Open).collect();
    if open.is_empty() {
        let _ = writeln!(
            md,
            "None: every deployment set aside came back or lapsed.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "| deployment | set aside since | breaker trips | cooldowns |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for p in open {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&a.deployment_label(&p.deployment)),
                time(p.start),
                p.trips,
                p.cooldowns
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Breaker openings\n");
    if a.trips.is_empty() {
        let _ = writeln!(md, "No breaker opened.\n");
    } else {
        let _ = writeln!(
            md,
            "| time | deployment | open until | after a failed half-open probe |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for t in &a.trips {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                time(t.ts),
                cell(&a.deployment_label(&t.deployment)),
                time(t.until),
                if t.probe_failed { "yes" } else { "no" }
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Cooldowns (HTTP 429)\n");
    if a.cooldowns.is_empty() {
        let _ = writeln!(md, "No cooldown.\n");
    } else {
        let _ = writeln!(
            md,
            "A cooldown ends by itself after `cooldown_time` (or the provider's Retry-After); no event records its end.\n"
        );
        let _ = writeln!(md, "| deployment | cooldowns | first | last |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (d, (n, first, last)) in &a.cooldowns {
            let _ = writeln!(
                md,
                "| {} | {n} | {} | {} |",
                cell(&a.deployment_label(d)),
                time(*first),
                time(*last)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Traffic resumed after a halt (HumanGate)\n");
    let resumed: Vec<_> = a.halts.iter().filter(|h| h.resumed.is_some()).collect();
    if resumed.is_empty() && a.lone_resumes.is_empty() {
        let _ = writeln!(md, "None.\n");
    } else {
        let _ = writeln!(md, "| resumed | by | halted since | scope |");
        let _ = writeln!(md, "|---|---|---|---|");
        for h in resumed {
            if let Some((ts, by)) = &h.resumed {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    time(*ts),
                    cell(by),
                    time(h.ts),
                    cell(&h.scope)
                );
            }
        }
        for (ts, by) in &a.lone_resumes {
            let _ = writeln!(
                md,
                "| {} | {} | (before the input) | - |",
                time(*ts),
                cell(by)
            );
        }
        md.push('\n');
    }
    input(&mut md, ctx.read);
    md
}

/// How a recovery was confirmed, in words.
pub fn via_text(via: &str) -> String {
    match via {
        "half_open" => "a real request after the cooldown (half-open probe)".into(),
        "health_check" => "an active health check".into(),
        other => cell(other),
    }
}

fn header(md: &mut String, ctx: &Context<'_>, title: &str, what: &str) {
    let a: &Analysis = ctx.analysis;
    let _ = writeln!(md, "# {title}: {}\n", pretty_date(ctx.date));
    let _ = writeln!(
        md,
        "Part22 evidence {what}. Written by `detour report` from detour's events; times are UTC.\n"
    );
    let files = ctx
        .read
        .files
        .iter()
        .map(|f| cell(&f.name))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        md,
        "- Input: {} events from {files}{}",
        ctx.read.events.len(),
        match a.span {
            Some((first, last)) => format!(", {} to {}", time(first), time(last)),
            None => String::new(),
        }
    );
}

fn input(md: &mut String, read: &Read) {
    let _ = writeln!(md, "## Input\n");
    let _ = writeln!(md, "| file | lines | events | other lines | malformed |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for f in &read.files {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(&f.name),
            f.lines,
            f.events,
            f.ignored,
            f.malformed
        );
    }
    if !read.unknown.is_empty() {
        let _ = writeln!(
            md,
            "\nEvents this version does not know (skipped): {}.",
            read.unknown
                .iter()
                .map(|(name, n)| format!("`{}` × {n}", cell(name)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !read.samples.is_empty() {
        let _ = writeln!(md, "\nMalformed lines (first {}):\n", read.samples.len());
        for m in &read.samples {
            let name = std::path::Path::new(&m.file)
                .file_name()
                .map_or_else(|| m.file.clone(), |n| n.to_string_lossy().into_owned());
            let _ = writeln!(md, "- {}:{}: {}", cell(&name), m.line, cell(&m.reason));
        }
    }
}
