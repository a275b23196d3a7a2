//! Durations (`500ms`, `30s`, `10m`, `1h`, `1h30m`) and sizes (`64KiB`, `16MiB`,
//! `1024`). Public because other parts of wsgate take the same notation (the
//! `wsgate token --ttl` flag).

use std::time::Duration;

/// Why a duration or size could not be parsed. The messages name the accepted
/// forms but never echo the input (it may have come from the environment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty value; expected {0}")]
    Empty(&'static str),
    #[error("a number is missing its unit; write it as {0}")]
    MissingUnit(&'static str),
    #[error("unknown unit `{unit}`; expected {expected}")]
    UnknownUnit {
        unit: String,
        expected: &'static str,
    },
    #[error("expected a whole number followed by a unit, as in {0}")]
    Malformed(&'static str),
    #[error("value is too large")]
    Overflow,
}

const DURATION_FORMS: &str = "a duration like 500ms, 30s, 10m or 1h";
const SIZE_FORMS: &str = "a size like 1024, 64KiB, 16MiB or 1GiB";

/// Parses `500ms`, `30s`, `10m`, `1h`, or a sum such as `1h30m`. A bare `0` is
/// allowed (it needs no unit); any other bare number is an error, because
/// guessing between seconds and milliseconds would be a silent bug.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty(DURATION_FORMS));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(UnitError::Malformed(DURATION_FORMS));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(unit_len);
        let n: u64 = number.parse().map_err(|_| UnitError::Overflow)?;
        let part = match unit {
            // `1.5s`: no fractions, so `1500ms` is the way to write it.
            "" if !after.is_empty() => return Err(UnitError::Malformed(DURATION_FORMS)),
            "" => return Err(UnitError::MissingUnit(DURATION_FORMS)),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or(UnitError::Overflow)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or(UnitError::Overflow)?),
            other => {
                return Err(UnitError::UnknownUnit {
                    unit: other.to_owned(),
                    expected: "ms, s, m or h",
                })
            }
        };
        total = total.checked_add(part).ok_or(UnitError::Overflow)?;
        rest = after;
    }
    Ok(total)
}

/// Parses a byte size: a plain number of bytes (`1024`), binary units
/// (`KiB`, `MiB`, `GiB`) or decimal ones (`KB`, `MB`, `GB`); `B` is accepted too.
/// Units are matched case-insensitively, so `16mib` is 16 MiB.
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty(SIZE_FORMS));
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(UnitError::Malformed(SIZE_FORMS));
    }
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| UnitError::Overflow)?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                unit: unit.trim_start().to_owned(),
                expected: "B, KiB, MiB, GiB, KB, MB or GB",
            })
        }
    };
    let bytes = n.checked_mul(multiplier).ok_or(UnitError::Overflow)?;
    usize::try_from(bytes).map_err(|_| UnitError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations() {
        assert!(matches!(parse_duration(""), Err(UnitError::Empty(_))));
        assert!(matches!(
            parse_duration("30"),
            Err(UnitError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("1d"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(UnitError::Malformed(_))
        ));
        assert!(matches!(parse_duration("s"), Err(UnitError::Malformed(_))));
        assert!(matches!(
            parse_duration("-1s"),
            Err(UnitError::Malformed(_))
        ));
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(UnitError::Overflow)
        );
        assert_eq!(
            parse_duration("9999999999999999999h"),
            Err(UnitError::Overflow)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("16 mib"), Ok(16 << 20));
        assert_eq!(parse_size("10B"), Ok(10));
    }

    #[test]
    fn bad_sizes() {
        assert!(matches!(parse_size(""), Err(UnitError::Empty(_))));
        assert!(matches!(parse_size("MiB"), Err(UnitError::Malformed(_))));
        assert!(matches!(
            parse_size("16M"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert_eq!(parse_size("99999999999GiB"), Err(UnitError::Overflow));
    }
}
