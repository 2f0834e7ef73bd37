//! Numeric conversions that cannot panic or wrap silently.

/// A non-negative float rounded to the nearest integer, as `u64`.
///
/// Every caller range-checks first (a price, a duration, a token count); this is the one
/// place the float-to-integer cast happens. Rust's float-to-integer `as` saturates (and
/// maps NaN to 0), so even an unchecked value cannot wrap or panic: it clamps.
#[expect(
    clippy::cast_possible_truncation,
    reason = "float-to-int `as` saturates at the bounds and maps NaN to 0, by definition"
)]
pub(crate) fn round_f64_to_u64(value: f64) -> u64 {
    value.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_and_clamps() {
        assert_eq!(round_f64_to_u64(1.4), 1);
        assert_eq!(round_f64_to_u64(1.5), 2);
        assert_eq!(round_f64_to_u64(-3.0), 0);
        assert_eq!(round_f64_to_u64(f64::NAN), 0);
        assert_eq!(round_f64_to_u64(1e30), u64::MAX);
    }
}
