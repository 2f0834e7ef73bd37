//! Durations as LiteLLM users write them: a number of seconds, or `500ms`, `30s`, `5m`, `2h`, `1d`.

/// Parses a duration into milliseconds.
pub(crate) fn parse_duration_ms(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::Number(n) => {
            let secs = n.as_f64().ok_or("is not a number")?;
            seconds_to_ms(secs)
        }
        serde_json::Value::String(text) => parse_text(text.trim()),
        _ => Err("must be a number of seconds or a string such as \"30s\"".into()),
    }
}

fn parse_text(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. \"30s\", \"5m\")"))?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    seconds_to_ms(number * factor)
}

fn seconds_to_ms(secs: f64) -> Result<u64, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err("must be a non-negative duration".into());
    }
    let ms = (secs * 1000.0).round();
    if ms > 1e15 {
        return Err("is too large".into());
    }
    // In range and non-negative: the cast cannot truncate.
    Ok(crate::num::round_f64_to_u64(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units() {
        assert_eq!(parse_duration_ms(&json!(10)), Ok(10_000));
        assert_eq!(parse_duration_ms(&json!(0.5)), Ok(500));
        assert_eq!(parse_duration_ms(&json!("250ms")), Ok(250));
        assert_eq!(parse_duration_ms(&json!("30s")), Ok(30_000));
        assert_eq!(parse_duration_ms(&json!("5m")), Ok(300_000));
        assert_eq!(parse_duration_ms(&json!("2h")), Ok(7_200_000));
        assert_eq!(parse_duration_ms(&json!("1d")), Ok(86_400_000));
        assert!(parse_duration_ms(&json!(-1)).is_err());
        assert!(parse_duration_ms(&json!("5 fortnights")).is_err());
        assert!(parse_duration_ms(&json!(true)).is_err());
    }
}
