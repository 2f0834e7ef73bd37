//! `Retry-After` (seconds or an HTTP date) and OpenAI's `retry-after-ms`.

use crate::period;
use crate::UnixMillis;

/// How long the provider asks us to wait, in milliseconds from `now`.
///
/// `retry_after_ms` (OpenAI's header) wins when both are present. Unparseable values are
/// ignored rather than guessed at.
pub fn parse(
    now: UnixMillis,
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
) -> Option<u64> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        if (0.0..1e12).contains(&ms) {
            return Some(crate::num::round_f64_to_u64(ms));
        }
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if (0.0..1e9).contains(&secs) {
            return Some(crate::num::round_f64_to_u64(secs * 1000.0));
        }
        return None;
    }
    http_date_ms(value).map(|at| at.saturating_sub(now))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires.
fn http_date_ms(value: &str) -> Option<UnixMillis> {
    let mut parts = value.split_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let hour: u64 = hms.next()?.parse().ok()?;
    let minute: u64 = hms.next()?.parse().ok()?;
    let second: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT"
        || !(1970..=9999).contains(&year)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Years ≤ 9999 keep every product far below u64::MAX; saturating anyway.
    let seconds = period::days_from_civil(year, month, day)
        .saturating_mul(86_400)
        .saturating_add(hour.saturating_mul(3_600))
        .saturating_add(minute.saturating_mul(60))
        .saturating_add(second);
    Some(seconds.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(0, Some("2"), None), Some(2000));
        assert_eq!(parse(0, Some(" 1.5 "), None), Some(1500));
        assert_eq!(parse(0, Some("2"), Some("250")), Some(250));
        assert_eq!(parse(0, Some("soon"), None), None);
        assert_eq!(parse(0, Some("-3"), None), None);
        assert_eq!(parse(0, None, None), None);
        // 1994-11-06T08:49:37Z = 784111777 s
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        let now = 784_111_770_000;
        assert_eq!(
            parse(now, Some("Sun, 06 Nov 1994 08:49:37 GMT"), None),
            Some(7000)
        );
        // A date in the past means "now".
        assert_eq!(
            parse(now + 60_000, Some("Sun, 06 Nov 1994 08:49:37 GMT"), None),
            Some(0)
        );
    }
}
