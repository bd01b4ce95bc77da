//! Text forms several layers read: names (a vendor, a feature, a cluster)
//! and durations (the commands' `--hold`, `--timeout` and `--duration`,
//! the chaos harness's `--duration`). A leaf: it imports nothing of the
//! crate, so any layer may use it.

use std::time::Duration;

/// Whether `text` is a name: one to `bytes_max` of `[A-Za-z0-9_.-]`
/// (`usize::MAX`: no limit beyond the text's own).
pub fn is_name(text: &str, bytes_max: usize) -> bool {
    !text.is_empty()
        && text.len() <= bytes_max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Longest duration accepted (100 years), so a deadline never overflows: a
/// `--hold`, `--timeout` or `--duration` longer than this is refused.
pub const DURATION_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration: one or more `NUMBER UNIT` parts, units `ms`, `s`, `m`,
/// `h`, `d` (e.g. `30s`, `5m`, `1h30m`), or a bare number of seconds
/// (`45`), at most [`DURATION_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("\"{text}\" is not a duration: write e.g. 30s, 5m, 2h, 1h30m or forever");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let bare_seconds = rest.bytes().all(|b| b.is_ascii_digit());
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "" if bare_seconds => 1_000,
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    if total > DURATION_MAX {
        return Err(format!("\"{text}\" is longer than 100 years; use forever"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The limit applies only when asked for; the alphabet always.
    #[test]
    fn names_keep_to_their_alphabet_and_limit() {
        assert!(is_name("acme.v2_x-1", usize::MAX));
        assert!(is_name(&"a".repeat(255), 255));
        assert!(!is_name(&"a".repeat(256), 255));
        assert!(is_name(&"a".repeat(256), usize::MAX));
        for text in ["", "a b", "a/b", "é", "a:b"] {
            assert!(!is_name(text, usize::MAX), "{text:?}");
        }
    }

    // Both forms the two old grammars took: unit parts, and bare seconds.
    #[test]
    fn durations_take_parts_or_bare_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 45 "), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d1h"), Ok(Duration::from_secs(90_000)));
        for text in ["", "ten", "1h30", "30 s", "-5", "5sec"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        assert!(parse_duration(&(DURATION_MAX.as_secs() + 1).to_string()).is_err());
    }
}
