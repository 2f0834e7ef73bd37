//! Budget periods, computed from time on every read: a new period starts by itself because
//! its counters live under a key that names the period's start. No reset job to miss.

use std::fmt;

use crate::UnixMillis;

const DAY_MS: u64 = 86_400_000;

/// How long a budget lasts before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar month in UTC (the default).
    Month,
    /// Calendar week in UTC, starting on Monday.
    Week,
    /// Calendar day in UTC.
    Day,
    /// Fixed windows of this many milliseconds, counted from the Unix epoch (LiteLLM-style
    /// `budget_duration: 30d`).
    Every(u64),
}

impl Period {
    /// Parses `month`, `week`, `day`, or a duration such as `30d`, `12h`, `1mo`.
    pub fn parse(text: &str) -> Result<Period, String> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "month" | "monthly" | "mo" | "1mo" => return Ok(Period::Month),
            "week" | "weekly" | "1w" => return Ok(Period::Week),
            "day" | "daily" => return Ok(Period::Day),
            _ => {}
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|_| {
            format!("{text:?} is not a period (month, week, day, or e.g. 30d, 12h)")
        })?;
        let unit_ms: u64 = match unit {
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => DAY_MS,
            "w" => 7 * DAY_MS,
            "mo" if n == 1 => return Ok(Period::Month),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit (use s, m, h, d, w, or month/week/day)"
                ))
            }
        };
        match n.checked_mul(unit_ms) {
            Some(0) | None => Err(format!("{text:?} must be a positive duration")),
            Some(ms) => Ok(Period::Every(ms)),
        }
    }

    /// When the period containing `now` started.
    pub fn start(self, now: UnixMillis) -> UnixMillis {
        // Every result is at most `now` (a start never lies in the future), so the
        // saturating operations below never actually saturate.
        let days = now / DAY_MS;
        match self {
            Period::Day => days.saturating_mul(DAY_MS),
            // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) % 7.
            Period::Week => days
                .saturating_sub(days.saturating_add(3) % 7)
                .saturating_mul(DAY_MS),
            Period::Month => {
                let (year, month, _) = civil_from_days(days);
                days_from_civil(year, month, 1).saturating_mul(DAY_MS)
            }
            Period::Every(ms) => now.saturating_sub(now.checked_rem(ms).unwrap_or(0)),
        }
    }

    /// When the period containing `now` ends (the next one starts).
    pub fn end(self, now: UnixMillis) -> UnixMillis {
        let start = self.start(now);
        match self {
            Period::Day => start.saturating_add(DAY_MS),
            Period::Week => start.saturating_add(7 * DAY_MS),
            Period::Month => {
                let (year, month, _) = civil_from_days(start / DAY_MS);
                let (year, month) = if month == 12 {
                    (year.saturating_add(1), 1)
                } else {
                    (year, month.saturating_add(1))
                };
                days_from_civil(year, month, 1).saturating_mul(DAY_MS)
            }
            Period::Every(ms) => start.saturating_add(ms.max(1)),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Month => write!(f, "month"),
            Period::Week => write!(f, "week"),
            Period::Day => write!(f, "day"),
            Period::Every(ms) if ms % DAY_MS == 0 => write!(f, "{}d", ms / DAY_MS),
            Period::Every(ms) if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            Period::Every(ms) => write!(f, "{}s", ms / 1000),
        }
    }
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
///
/// The arithmetic saturates: for any day a `u64` of milliseconds can name the values stay
/// far from the limits, and an absurd input gives an absurd date, never a panic.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = doe
        .saturating_sub(doe / 1460)
        .saturating_add(doe / 36_524)
        .saturating_sub(doe / 146_096)
        / 365; // year of era, 0..=399
    let doy = doe.saturating_sub(
        yoe.saturating_mul(365)
            .saturating_add(yoe / 4)
            .saturating_sub(yoe / 100),
    ); // day of year, 0..=365
    let mp = doy.saturating_mul(5).saturating_add(2) / 153; // 0..=11
    let day = doy
        .saturating_sub(mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(1);
    let month = if mp < 10 {
        mp.saturating_add(3)
    } else {
        mp.saturating_sub(9)
    };
    let year = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(u64::from(month <= 2));
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (years ≥ 1970).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 {
        year.saturating_sub(1)
    } else {
        year
    };
    let era = y / 400;
    let yoe = y % 400;
    let mp = month.saturating_add(9) % 12;
    let doy = (mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(day)
        .saturating_sub(1);
    let doe = yoe
        .saturating_mul(365)
        .saturating_add(yoe / 4)
        .saturating_sub(yoe / 100)
        .saturating_add(doy);
    era.saturating_mul(146_097)
        .saturating_add(doe)
        .saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23T19:13:07Z (a Monday)
    const NOW: u64 = 1_795_460_787_000;

    #[test]
    fn calendar_periods() {
        assert_eq!(civil_from_days(NOW / DAY_MS), (2026, 11, 23));
        assert_eq!(
            Period::Day.start(NOW),
            days_from_civil(2026, 11, 23) * DAY_MS
        );
        assert_eq!(
            Period::Week.start(NOW),
            days_from_civil(2026, 11, 23) * DAY_MS
        );
        assert_eq!(
            Period::Week.start(NOW + 6 * DAY_MS),
            days_from_civil(2026, 11, 23) * DAY_MS
        );
        assert_eq!(
            Period::Week.start(NOW + 7 * DAY_MS),
            days_from_civil(2026, 11, 30) * DAY_MS
        );
        assert_eq!(
            Period::Month.start(NOW),
            days_from_civil(2026, 11, 1) * DAY_MS
        );
        assert_eq!(
            Period::Month.end(NOW),
            days_from_civil(2026, 12, 1) * DAY_MS
        );
        let dec = days_from_civil(2026, 12, 31) * DAY_MS + 5;
        assert_eq!(Period::Month.end(dec), days_from_civil(2027, 1, 1) * DAY_MS);
        // Leap day.
        let feb29 = days_from_civil(2028, 2, 29) * DAY_MS;
        assert_eq!(
            Period::Month.start(feb29),
            days_from_civil(2028, 2, 1) * DAY_MS
        );
        assert_eq!(
            Period::Month.end(feb29),
            days_from_civil(2028, 3, 1) * DAY_MS
        );
    }

    #[test]
    fn every_instant_belongs_to_exactly_one_period() {
        for period in [
            Period::Month,
            Period::Week,
            Period::Day,
            Period::Every(30 * DAY_MS),
            Period::Every(3_600_000),
        ] {
            let mut t = NOW - 400 * DAY_MS;
            while t < NOW + 400 * DAY_MS {
                let (start, end) = (period.start(t), period.end(t));
                assert!(start <= t && t < end, "{period:?} at {t}");
                assert_eq!(
                    period.start(end),
                    end,
                    "{period:?}: the next period starts where this ends"
                );
                assert_eq!(period.start(end - 1), start);
                t += 7_919_993; // an odd step that lands on all hours and days
            }
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(Period::parse("month"), Ok(Period::Month));
        assert_eq!(Period::parse("1mo"), Ok(Period::Month));
        assert_eq!(Period::parse("Week"), Ok(Period::Week));
        assert_eq!(Period::parse("30d"), Ok(Period::Every(30 * DAY_MS)));
        assert_eq!(Period::parse("12h"), Ok(Period::Every(12 * 3_600_000)));
        assert!(Period::parse("0d").is_err());
        assert!(Period::parse("fortnight").is_err());
        assert!(Period::parse("3mo").is_err());
        assert_eq!(Period::Every(30 * DAY_MS).to_string(), "30d");
    }
}
