//! Times, durations and money as the reports print them (UTC, no clock read).

use detour_core::period::civil_from_days;

const DAY_MS: u64 = 86_400_000;

/// `2026-03-02 09:00:05` (UTC).
pub fn time(ms: u64) -> String {
    let (y, mo, d) = civil_from_days(ms / DAY_MS);
    let secs = (ms % DAY_MS) / 1000;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `2026-03-02` (UTC).
pub fn day(ms: u64) -> String {
    let (y, mo, d) = civil_from_days(ms / DAY_MS);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// `20260302` (UTC): the evidence files' date prefix.
pub fn yyyymmdd(ms: u64) -> String {
    day(ms).replace('-', "")
}

/// `09:00` (UTC), with the date when `with_date`.
pub fn clock(ms: u64, with_date: bool) -> String {
    let t = time(ms);
    let hm = t.get(11..16).unwrap_or_default();
    if with_date {
        format!("{} {hm}", t.get(5..10).unwrap_or_default())
    } else {
        hm.to_string()
    }
}

/// Whether `text` is a real date written `YYYYMMDD`.
pub fn valid_yyyymmdd(text: &str) -> bool {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u64>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(4..6), num(6..8)) else {
        return false;
    };
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1970 && (1..=days_in_month).contains(&d)
}

/// `45 s`, `12 min 05 s`, `3 h 07 min`, `2 d 4 h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s / 60) % 60)
    } else {
        format!("{} d {} h", s / 86_400, (s / 3600) % 24)
    }
}

/// `$12.34` (cents, truncated: never more than there was).
pub fn money(nanos: u64) -> String {
    let cents = nanos / 10_000_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// `$12.35` (cents, rounded up: for upper bounds).
pub fn money_up(nanos: u64) -> String {
    let cents = nanos.div_ceil(10_000_000);
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// `2026-03-02` for `20260302` (anything else as it is).
pub fn pretty_date(yyyymmdd: &str) -> String {
    match (yyyymmdd.get(0..4), yyyymmdd.get(4..6), yyyymmdd.get(6..8)) {
        (Some(y), Some(m), Some(d)) if valid_yyyymmdd(yyyymmdd) => format!("{y}-{m}-{d}"),
        _ => yyyymmdd.to_string(),
    }
}

/// `$12.345678`, as the events write it.
pub fn money_exact(nanos: u64) -> String {
    detour_core::price::format_dollars(nanos)
}

/// Text made safe for one Markdown table cell.
pub fn cell(text: &str) -> String {
    crate::cmd::check::cell(text)
}

/// Text made safe for HTML (element content and quoted attributes).
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        // 2026-03-02 09:00:05 UTC
        let t = 1_772_442_005_000;
        assert_eq!(time(t), "2026-03-02 09:00:05");
        assert_eq!(yyyymmdd(t), "20260302");
        assert_eq!(clock(t, true), "03-02 09:00");
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(725_000), "12 min 05 s");
        assert_eq!(duration(3 * 3_600_000 + 7 * 60_000), "3 h 07 min");
        assert_eq!(money(12_345_678_901), "$12.34");
        assert_eq!(
            html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(valid_yyyymmdd("20240229"));
        assert!(!valid_yyyymmdd("20230229"));
        assert!(!valid_yyyymmdd("2024-02-2"));
        assert!(!valid_yyyymmdd("20241301"));
    }
}
