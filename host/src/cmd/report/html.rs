//! `report.html`: one self-contained page (inline CSS, inline SVG, no script) with the
//! charts and the key tables of the three evidence files.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::analysis::{Analysis, End, Remaining, FALLBACK_RATE_ALERT, FALLBACK_RATE_WARN, HOUR_MS};
use super::fmt::{clock, day, duration, html, money, money_up, pretty_date, time};
use super::markdown::via_text;
use super::Context;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;background:#f6f7f9;margin:0}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px}
p.note,.note{color:#5a6372;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:16px 0}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:8px 12px;min-width:96px}
.card b{display:block;font-size:20px}
.card span{color:#5a6372;font-size:12px}
.card.bad b{color:#b42318}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #e1e4ea;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef0f4}
.chart{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:8px;margin:8px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
svg{display:block;width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#3b4452}
svg .axis{stroke:#9aa3b2;stroke-width:1}
svg .gridline{stroke:#eceef2;stroke-width:1}
svg .threshold{stroke-width:1.5}
.seen{color:#b42318;font-weight:600}
.ok{color:#1f7a3d}
";

/// The whole page.
pub fn page(ctx: &Context<'_>) -> String {
    let a = ctx.analysis;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>detour report {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        html(ctx.date)
    );
    let _ = writeln!(
        h,
        "<h1>detour report: {}</h1>",
        html(&pretty_date(ctx.date))
    );
    let files: Vec<String> = ctx.read.files.iter().map(|f| html(&f.name)).collect();
    let _ = writeln!(
        h,
        "<p class=\"note\">{} events from {}{}; times are UTC. Limits {}.</p>",
        ctx.read.events.len(),
        files.join(", "),
        a.span.map_or(String::new(), |(f, l)| format!(
            ", {} to {}",
            time(f),
            time(l)
        )),
        ctx.config_name.map_or_else(
            || "from the alerts only (no --config)".to_string(),
            |n| format!("from {}", html(n))
        )
    );
    cards(&mut h, ctx);
    patterns(&mut h, a);

    let _ = writeln!(h, "<h2>Spend against budget</h2>");
    spend_charts(&mut h, a);

    let unit = if a.bin_ms == HOUR_MS { "hour" } else { "day" };
    let _ = writeln!(h, "<h2>Fallbacks per {unit}</h2>");
    fallback_chart(&mut h, a);
    if a.has_requests {
        let _ = writeln!(h, "<h3>Fallback rate per {unit}</h3>");
        rate_chart(&mut h, a);
    } else {
        let _ = writeln!(
            h,
            "<p class=\"note\">The fallback <em>rate</em> (warn above {FALLBACK_RATE_WARN} %, alert above {FALLBACK_RATE_ALERT} %) needs the number of requests, which detour's events do not carry yet. \
             This chart counts fallback events; the request count is in the <code>detour_requests_total</code> metric. \
             A log with per-request <code>request</code> events gets a rate chart with both lines here.</p>"
        );
    }

    let _ = writeln!(h, "<h2>Breaker trips per {unit}</h2>");
    trips_chart(&mut h, a);

    let _ = writeln!(h, "<h2>Deployments set aside</h2>");
    timeline(&mut h, a);

    tables(&mut h, a);
    let _ = writeln!(
        h,
        "<h2>What the events cannot tell</h2>\n<ul class=\"note\">\
         <li>Spend is recorded only when a budget scope crosses 80, 90, 100 or 110 %: the spend lines join those crossings, and a scope without an alert is below 80 %.</li>\
         <li>Requests are not counted by the events, so the fallback rate needs <code>request</code> events or the metrics.</li>\
         <li>A 429 cooldown ends silently; only breaker recoveries have an event.</li></ul>"
    );
    let _ = writeln!(h, "</main>\n</body>\n</html>");
    h
}

fn cards(h: &mut String, ctx: &Context<'_>) {
    let a = ctx.analysis;
    let open = a.periods.iter().filter(|p| p.end == End::Open).count();
    let items: [(&str, usize, bool); 9] = [
        ("fallbacks", a.fallbacks.len(), false),
        ("all failed", a.all_failed.len(), !a.all_failed.is_empty()),
        ("breaker trips", a.trips.len(), false),
        ("recoveries", a.recoveries.len(), false),
        ("still set aside", open, open > 0),
        ("budget alerts", a.alerts.len(), false),
        ("halts", a.halts.len(), !a.halts.is_empty()),
        (
            "tag overruns",
            a.overruns.iter().map(|o| o.requests as usize).sum(),
            false,
        ),
        (
            "malformed lines",
            usize::try_from(ctx.read.malformed()).unwrap_or(usize::MAX),
            ctx.read.malformed() > 0,
        ),
    ];
    let _ = write!(h, "<div class=\"cards\">");
    for (label, n, bad) in items {
        let _ = write!(
            h,
            "<div class=\"card{}\"><b>{n}</b><span>{label}</span></div>",
            if bad { " bad" } else { "" }
        );
    }
    let _ = writeln!(h, "</div>");
}

fn patterns(h: &mut String, a: &Analysis) {
    let _ = writeln!(h, "<h2>Patterns to act on</h2>");
    let _ = writeln!(
        h,
        "<table><tr><th>pattern (Part22 6.1.4)</th><th>seen</th><th>first</th><th>what to do</th></tr>"
    );
    for p in &a.patterns {
        let seen = if p.seen.is_empty() {
            "<span class=\"ok\">0</span>".to_string()
        } else {
            format!("<span class=\"seen\">{}</span>", p.seen.len())
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{seen}</td><td>{}</td><td>{}</td></tr>",
            html(p.pattern),
            p.seen.first().map_or("-".into(), |(ts, what)| format!(
                "{}<br><span class=\"note\">{}</span>",
                time(*ts),
                html(what)
            )),
            html(p.action)
        );
    }
    let _ = writeln!(h, "</table>");
}

/// Maps time and value to SVG coordinates.
struct Frame {
    width: f64,
    right: f64,
    height: f64,
    t0: u64,
    t1: u64,
    y_max: f64,
}

impl Frame {
    fn new(height: f64, t0: u64, t1: u64, y_max: f64) -> Self {
        Frame {
            width: WIDTH,
            right: RIGHT,
            height,
            t0,
            t1: t1.max(t0.saturating_add(1)),
            y_max: if y_max > 0.0 { y_max } else { 1.0 },
        }
    }

    /// A half-width chart (two per row), drawn at the same text size.
    fn half(mut self) -> Self {
        self.width = WIDTH / 2.0;
        self.right = 78.0;
        self
    }

    fn x(&self, t: u64) -> f64 {
        let span = (self.t1 - self.t0) as f64;
        LEFT + (t.clamp(self.t0, self.t1) - self.t0) as f64 / span
            * (self.width - LEFT - self.right)
    }

    fn y(&self, v: f64) -> f64 {
        let plot = self.height - TOP - BOTTOM;
        TOP + plot - (v.max(0.0) / self.y_max).min(1.0) * plot
    }

    fn bottom(&self) -> f64 {
        self.height - BOTTOM
    }

    fn open(&self, h: &mut String, label: &str) {
        let _ = write!(
            h,
            "<div class=\"chart\"><svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">",
            self.width,
            self.height,
            html(label)
        );
    }

    fn close(h: &mut String) {
        let _ = writeln!(h, "</svg></div>");
    }

    /// Grid, axes, time ticks and value ticks (`fmt` labels a value).
    fn axes(&self, h: &mut String, fmt: &dyn Fn(f64) -> String) {
        let step = nice_step(self.y_max / 4.0);
        let mut v = 0.0;
        while v <= self.y_max * 1.0001 {
            let y = self.y(v);
            let _ = write!(
                h,
                "<line class=\"gridline\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.width - self.right,
                LEFT - 6.0,
                y + 4.0,
                html(&fmt(v))
            );
            v += step;
        }
        let b = self.bottom();
        let _ = write!(
            h,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{b}\" x2=\"{:.1}\" y2=\"{b}\"/><line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/>",
            self.width - self.right
        );
        let tick = time_step(self.t1 - self.t0, if self.width < WIDTH { 5 } else { 8 });
        let mut t = self.t0.div_ceil(tick).saturating_mul(tick);
        let mut last_day = None;
        while t <= self.t1 {
            let x = self.x(t);
            let d = day(t);
            let label = clock(t, last_day.as_ref() != Some(&d));
            last_day = Some(d);
            let _ = write!(
                h,
                "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{b}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                b + 4.0,
                b + 17.0
            );
            let Some(next) = t.checked_add(tick) else {
                break;
            };
            t = next;
        }
    }

    /// A horizontal threshold line with its label right of the plot.
    fn threshold(&self, h: &mut String, v: f64, label: &str, color: &str, dashed: bool) {
        let y = self.y(v);
        let _ = write!(
            h,
            "<line class=\"threshold\" data-threshold=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\"{}/><text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{color}\">{}</text>",
            html(label),
            self.width - self.right,
            if dashed { " stroke-dasharray=\"6 4\"" } else { "" },
            self.width - self.right + 6.0,
            y + 4.0,
            html(label)
        );
    }
}

/// 1, 2 or 5 × a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A time tick step giving at most `max_ticks` ticks (about).
fn time_step(span: u64, max_ticks: u64) -> u64 {
    const MIN: u64 = 60_000;
    const STEPS: [u64; 14] = [
        MIN,
        5 * MIN,
        10 * MIN,
        15 * MIN,
        30 * MIN,
        60 * MIN,
        120 * MIN,
        180 * MIN,
        360 * MIN,
        720 * MIN,
        1440 * MIN,
        2 * 1440 * MIN,
        7 * 1440 * MIN,
        30 * 1440 * MIN,
    ];
    STEPS
        .into_iter()
        .find(|s| span / s <= max_ticks)
        .unwrap_or_else(|| span.div_ceil(max_ticks.max(1)).max(MIN))
}

fn integer(v: f64) -> String {
    format!("{}", v.round() as i64)
}

fn dollars(v: f64) -> String {
    if v >= 10.0 || v.fract() == 0.0 {
        format!("${v:.0}")
    } else {
        format!("${v:.2}")
    }
}

fn reason_color(reason: &str) -> &'static str {
    match reason {
        "rate_limit" => "#e8912d",
        "failure" => "#d64545",
        "budget" => "#7b5ea7",
        "rate_limit_local" => "#c9b037",
        "context_window" => "#3d8fd6",
        "content_policy" => "#3fa38a",
        _ => "#8a93a3",
    }
}

fn legend(h: &mut String, items: &[(String, &str)], y0: f64) {
    for (i, (label, color)) in items.iter().enumerate() {
        let y = y0 + i as f64 * 16.0;
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            WIDTH - RIGHT + 8.0,
            y,
            WIDTH - RIGHT + 22.0,
            y + 9.0,
            html(label)
        );
    }
}

fn spend_charts(h: &mut String, a: &Analysis) {
    let Some((first, last)) = a.span else {
        let _ = writeln!(h, "<p class=\"note\">No events.</p>");
        return;
    };
    let charted: Vec<_> = a.scopes.iter().filter(|s| s.alerts > 0).collect();
    let quiet: Vec<String> = a
        .scopes
        .iter()
        .filter(|s| s.alerts == 0)
        .map(|s| format!("{} ({})", s.scope, s.limit.map_or("?".into(), money)))
        .collect();
    if charted.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\">No budget alert in the input: every budget stayed below 80 %.</p>"
        );
    } else {
        let _ = writeln!(
            h,
            "<p class=\"note\">Spend is known at each alert (80, 90, 100, 110 % crossings, the dots); the line joins them. Thin dashed lines: 80 % and 90 %; solid: the limit; red dashed: the halt threshold.</p>\n<div class=\"grid\">"
        );
    }
    let any_charted = !charted.is_empty();
    let t0 = first;
    let t1 = last.max(first.saturating_add(60_000));
    for scope in charted {
        let alerts: Vec<_> = a
            .alerts
            .iter()
            .filter(|al| al.scope == scope.scope)
            .collect();
        let limit = scope.limit.unwrap_or(0) as f64 / 1e9;
        // Without a config, the total's halt is the default 110 %.
        let halt = match scope.halt_at {
            Some(p) => Some(p),
            None if scope.period.is_none() && scope.scope == "total" => Some(110),
            None => None,
        };
        let top_percent = f64::from(halt.unwrap_or(100).max(100));
        let max_spent = alerts
            .iter()
            .map(|al| al.spent as f64 / 1e9)
            .fold(0.0, f64::max);
        let frame = Frame::new(
            230.0,
            t0,
            t1,
            (limit * top_percent / 100.0).max(max_spent) * 1.08,
        )
        .half();
        frame.open(h, &format!("spend of {} against its budget", scope.scope));
        let _ = write!(
            h,
            "<text x=\"{LEFT}\" y=\"12\" style=\"font-weight:600\">{}</text>",
            html(&format!(
                "{}: limit {}{}",
                scope.scope,
                money(scope.limit.unwrap_or(0)),
                match scope.remaining() {
                    Some(Remaining::AtMost(r)) => format!(", at most {} left", money_up(r)),
                    _ => String::new(),
                }
            ))
        );
        frame.axes(h, &dollars);
        frame.threshold(h, limit * 0.8, "80 %", "#9aa3b2", true);
        frame.threshold(h, limit * 0.9, "90 %", "#e8912d", true);
        frame.threshold(h, limit, "100 % limit", "#b42318", false);
        if let Some(p) = halt {
            frame.threshold(
                h,
                limit * f64::from(p) / 100.0,
                &format!("{p} % halt"),
                "#7a0b0b",
                true,
            );
        }
        let periods: BTreeSet<u64> = alerts.iter().map(|al| al.period_start).collect();
        for period in periods {
            let points: Vec<String> = alerts
                .iter()
                .filter(|al| al.period_start == period)
                .map(|al| {
                    format!(
                        "{:.1},{:.1}",
                        frame.x(al.ts),
                        frame.y(al.spent as f64 / 1e9)
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<polyline class=\"spend\" points=\"{}\" fill=\"none\" stroke=\"#2f6fdf\" stroke-width=\"2\"/>",
                points.join(" ")
            );
        }
        for al in &alerts {
            let _ = write!(
                h,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#2f6fdf\"><title>{} {} %: {}</title></circle>",
                frame.x(al.ts),
                frame.y(al.spent as f64 / 1e9),
                time(al.ts),
                al.percent,
                money(al.spent)
            );
        }
        Frame::close(h);
    }
    if any_charted {
        let _ = writeln!(h, "</div>");
    }
    if !quiet.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\">Below 80 % (no alert): {}.</p>",
            html(&quiet.join(", "))
        );
    }
}

fn bin_frame(a: &Analysis, height: f64, y_max: f64) -> Option<Frame> {
    let first = a.bins.first()?;
    let last = a.bins.last()?;
    Some(Frame::new(
        height,
        first.start,
        last.start.saturating_add(a.bin_ms),
        y_max,
    ))
}

/// One bar of a binned chart: from `y0` to `y1` over the bin starting at `start`.
fn bar(
    h: &mut String,
    frame: &Frame,
    bin: (u64, u64),
    (y0, y1): (f64, f64),
    color: &str,
    title: &str,
) {
    let (start, bin_ms) = bin;
    let x = frame.x(start);
    let w = (frame.x(start.saturating_add(bin_ms)) - x) * 0.8;
    let _ = write!(
        h,
        "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}</title></rect>",
        x + w * 0.125,
        frame.y(y1),
        w,
        (frame.y(y0) - frame.y(y1)).max(0.0),
        html(title)
    );
}

fn fallback_chart(h: &mut String, a: &Analysis) {
    let max = a
        .bins
        .iter()
        .map(|b| b.fallbacks.values().sum::<u64>())
        .max()
        .unwrap_or(0);
    let Some(frame) = bin_frame(a, 240.0, (max as f64 * 1.15).max(4.0)) else {
        let _ = writeln!(h, "<p class=\"note\">No events.</p>");
        return;
    };
    frame.open(h, "fallbacks per hour by reason");
    frame.axes(h, &integer);
    let mut reasons = BTreeSet::new();
    for b in &a.bins {
        let mut y = 0.0;
        for (reason, n) in &b.fallbacks {
            reasons.insert(reason.clone());
            let top = y + *n as f64;
            bar(
                h,
                &frame,
                (b.start, a.bin_ms),
                (y, top),
                reason_color(reason),
                &format!("{}: {n} {reason}", time(b.start)),
            );
            y = top;
        }
    }
    let items: Vec<(String, &str)> = reasons
        .iter()
        .map(|r| (r.clone(), reason_color(r)))
        .collect();
    legend(h, &items, TOP);
    Frame::close(h);
}

fn rate_chart(h: &mut String, a: &Analysis) {
    let max = a
        .bins
        .iter()
        .filter(|b| b.requests > 0)
        .map(|b| b.fell_back as f64 * 100.0 / b.requests as f64)
        .fold(0.0, f64::max);
    let Some(frame) = bin_frame(a, 220.0, (max * 1.15).max(FALLBACK_RATE_ALERT as f64 * 1.5))
    else {
        return;
    };
    frame.open(h, "fallback rate per hour");
    frame.axes(h, &|v| format!("{v:.0} %"));
    for b in a.bins.iter().filter(|b| b.requests > 0) {
        let rate = b.fell_back as f64 * 100.0 / b.requests as f64;
        let color = if rate > FALLBACK_RATE_ALERT as f64 {
            "#b42318"
        } else if rate > FALLBACK_RATE_WARN as f64 {
            "#e8912d"
        } else {
            "#2f6fdf"
        };
        bar(
            h,
            &frame,
            (b.start, a.bin_ms),
            (0.0, rate),
            color,
            &format!(
                "{}: {} of {} requests ({rate:.1} %)",
                time(b.start),
                b.fell_back,
                b.requests
            ),
        );
    }
    frame.threshold(h, FALLBACK_RATE_WARN as f64, "5 % warn", "#e8912d", true);
    frame.threshold(h, FALLBACK_RATE_ALERT as f64, "10 % alert", "#b42318", true);
    Frame::close(h);
}

fn trips_chart(h: &mut String, a: &Analysis) {
    let threshold = a.trips_threshold();
    let max = a.bins.iter().map(|b| b.trips).max().unwrap_or(0);
    let Some(frame) = bin_frame(a, 200.0, (max.max(threshold + 1) as f64) * 1.15) else {
        let _ = writeln!(h, "<p class=\"note\">No events.</p>");
        return;
    };
    frame.open(h, "breaker trips per hour");
    frame.axes(h, &integer);
    for b in a.bins.iter().filter(|b| b.trips > 0) {
        let color = if b.trips > threshold {
            "#b42318"
        } else {
            "#d9822b"
        };
        bar(
            h,
            &frame,
            (b.start, a.bin_ms),
            (0.0, b.trips as f64),
            color,
            &format!("{}: {} breaker trips", time(b.start), b.trips),
        );
    }
    let unit = if a.bin_ms == HOUR_MS { "hour" } else { "day" };
    frame.threshold(
        h,
        threshold as f64,
        &format!("{threshold} per {unit}"),
        "#b42318",
        true,
    );
    Frame::close(h);
}

fn timeline(h: &mut String, a: &Analysis) {
    let Some((first, last)) = a.span else {
        let _ = writeln!(h, "<p class=\"note\">No events.</p>");
        return;
    };
    let mut rows: Vec<&str> = Vec::new();
    for name in a
        .periods
        .iter()
        .map(|p| p.deployment.as_str())
        .chain(a.recoveries.iter().map(|r| r.deployment.as_str()))
    {
        if !rows.contains(&name) {
            rows.push(name);
        }
    }
    if rows.is_empty() {
        let _ = writeln!(h, "<p class=\"note\">No deployment was set aside.</p>");
        return;
    }
    let row_h = 26.0;
    let height = TOP + BOTTOM + row_h * rows.len() as f64 + 8.0;
    let frame = Frame::new(height, first, last.max(first.saturating_add(60_000)), 1.0);
    let label_x = LEFT + 150.0;
    // Shift the plot right to make room for the names: a frame of its own.
    let plot =
        |t: u64| label_x + (frame.x(t) - LEFT) * (WIDTH - RIGHT - label_x) / (WIDTH - RIGHT - LEFT);
    let _ = writeln!(
        h,
        "<p class=\"note\">Each bar is a fallback period: from the first event that set the deployment aside to its recovery (green mark). Red ticks: breaker openings. A bar without an end reaches the end of the input.</p>"
    );
    frame.open(h, "deployments set aside over time");
    let b = frame.bottom();
    let tick = time_step(frame.t1 - frame.t0, 8);
    let mut t = frame.t0.div_ceil(tick).saturating_mul(tick);
    let mut last_day = None;
    while t <= frame.t1 {
        let x = plot(t);
        let d = day(t);
        let label = clock(t, last_day.as_ref() != Some(&d));
        last_day = Some(d);
        let _ = write!(
            h,
            "<line class=\"gridline\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{b}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            b + 17.0
        );
        let Some(next) = t.checked_add(tick) else {
            break;
        };
        t = next;
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{label_x}\" y1=\"{b}\" x2=\"{:.1}\" y2=\"{b}\"/>",
        WIDTH - RIGHT
    );
    for (i, name) in rows.iter().enumerate() {
        let y = TOP + 4.0 + row_h * i as f64;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_x - 8.0,
            y + 13.0,
            html(name)
        );
        for p in a.periods.iter().filter(|p| p.deployment == *name) {
            let end = p.end_ts().unwrap_or(last);
            let x0 = plot(p.start);
            let x1 = plot(end).max(x0 + 3.0);
            let color = if p.trips > 0 {
                "#d64545"
            } else if p.reasons.contains_key("budget") {
                "#7b5ea7"
            } else {
                "#e8912d"
            };
            let how = match &p.end {
                End::Recovered { via, .. } => format!("recovered: {}", via_text(via)),
                End::Lapsed(_) => "lapsed".into(),
                End::Open => "still set aside".into(),
            };
            let _ = write!(
                h,
                "<rect class=\"period\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" rx=\"3\" fill=\"{color}\" fill-opacity=\"{}\"><title>{}</title></rect>",
                y + 2.0,
                x1 - x0,
                if p.end == End::Open { "0.45" } else { "0.8" },
                html(&format!(
                    "{name}: {} to {} ({}), {how}",
                    time(p.start),
                    p.end_ts().map_or("end of input".into(), time),
                    duration(end.saturating_sub(p.start))
                ))
            );
        }
        for t in a.trips.iter().filter(|t| t.deployment == *name) {
            let x = plot(t.ts);
            let _ = write!(
                h,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#7a0b0b\" stroke-width=\"2\"><title>breaker opened {}</title></line>",
                y,
                y + 18.0,
                time(t.ts)
            );
        }
        for r in a.recoveries.iter().filter(|r| r.deployment == *name) {
            let x = plot(r.ts);
            let cy = y + 9.0;
            let _ = write!(
                h,
                "<path d=\"M{x:.1} {:.1} L{:.1} {cy:.1} L{x:.1} {:.1} L{:.1} {cy:.1} Z\" fill=\"#1f9d55\"><title>recovered {} ({})</title></path>",
                cy - 7.0,
                x + 6.0,
                cy + 7.0,
                x - 6.0,
                time(r.ts),
                html(&via_text(&r.via))
            );
        }
    }
    legend(
        h,
        &[
            ("breaker opened".to_string(), "#d64545"),
            ("429s, failures".to_string(), "#e8912d"),
            ("budget".to_string(), "#7b5ea7"),
            ("recovery".to_string(), "#1f9d55"),
        ],
        TOP,
    );
    Frame::close(h);
}

fn tables(h: &mut String, a: &Analysis) {
    let _ = writeln!(h, "<h2>Recoveries</h2>");
    if a.recoveries.is_empty() {
        let _ = writeln!(h, "<p class=\"note\">No recovery in the input.</p>");
    } else {
        let _ = writeln!(
            h,
            "<table><tr><th>recovered</th><th>deployment</th><th>confirmed by</th><th>down since</th><th>down for</th></tr>"
        );
        for r in &a.recoveries {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(r.ts),
                html(&a.deployment_label(&r.deployment)),
                html(&via_text(&r.via)),
                r.down_since.map_or("(before the input)".into(), time),
                r.down_since
                    .map_or("?".into(), |t| duration(r.ts.saturating_sub(t)))
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(h, "<h2>Budget alerts</h2>");
    if a.alerts.is_empty() {
        let _ = writeln!(h, "<p class=\"note\">No budget alert in the input.</p>");
    } else {
        let _ = writeln!(
            h,
            "<table><tr><th>time</th><th>scope</th><th>threshold</th><th>spent</th><th>limit</th></tr>"
        );
        for al in &a.alerts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{}</td></tr>",
                time(al.ts),
                html(&al.scope),
                al.percent,
                money(al.spent),
                money(al.limit)
            );
        }
        let _ = writeln!(h, "</table>");
    }
    if !a.halts.is_empty() {
        let _ = writeln!(h, "<h2>Halts</h2>");
        let _ = writeln!(
            h,
            "<table><tr><th>halted</th><th>scope</th><th>reason</th><th>resumed</th></tr>"
        );
        for halt in &a.halts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(halt.ts),
                html(&halt.scope),
                html(&halt.reason),
                halt.resumed
                    .as_ref()
                    .map_or("not yet".into(), |(ts, by)| format!(
                        "{} by {} after {}",
                        time(*ts),
                        html(by),
                        duration(ts.saturating_sub(halt.ts))
                    ))
            );
        }
        let _ = writeln!(h, "</table>");
    }
}
