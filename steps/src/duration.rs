//! Durations as runbooks write them: `30s`, `5m`, `1h30m`, `250ms`, or a bare number of seconds.

use std::time::Duration;

/// The longest duration a runbook may write (`timeout`, backoff, `flow.sleep`, `flow.wait_until`):
/// 365 days. Every duration is bounded here, once, so that no caller has to guard the arithmetic it
/// does with one (deadlines in epoch milliseconds, `Duration::from_secs_f64`, timers): a longer wait is
/// a typo, and a value like `1e308` would otherwise overflow them.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// [`MAX_DURATION`] as people read it, for messages and docs.
pub const MAX_DURATION_TEXT: &str = "365 days";

/// Parses a runbook duration. Accepts what jiff's friendly format accepts (`1h 30m`, `2m30s`, `250ms`)
/// and bare seconds (`90`, `1.5`). Rejects negative values, NaN and anything above [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_nan() {
            return Err(format!("`{s}` is not a number of seconds"));
        }
        if secs < 0.0 {
            return Err(format!("`{s}` is negative"));
        }
        // Compared as seconds before converting: `from_secs_f64` panics on values that do not fit.
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(s));
        }
        return Duration::try_from_secs_f64(secs).map_err(|_| too_long(s));
    }
    let d: jiff::SignedDuration = t.parse().map_err(|_| {
        format!("`{s}` is not a duration (write e.g. `30s`, `5m`, `1h30m`, `250ms`)")
    })?;
    if d.is_negative() {
        return Err(format!("`{s}` is negative"));
    }
    let d = d.unsigned_abs();
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

fn too_long(s: &str) -> String {
    format!("`{s}` is longer than the longest duration allowed, {MAX_DURATION_TEXT}")
}

/// Formats a duration compactly for people: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_runbooks_use() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_nonsense_and_negatives() {
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bounds_every_form_at_the_maximum() {
        assert_eq!(parse_duration("31536000"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for huge in [
            "31536000.001",
            "8761h",
            "1e308",
            "18446744073709551615",
            "1e400",
            "inf",
            "infinity",
            "99999999999999h",
        ] {
            let e = parse_duration(huge).expect_err(huge);
            assert!(e.contains("365 days"), "{huge}: {e}");
        }
        for nan in ["NaN", "nan", "-nan"] {
            let e = parse_duration(nan).expect_err(nan);
            assert!(e.contains("not a number"), "{nan}: {e}");
        }
        let e = parse_duration("-inf").expect_err("-inf");
        assert!(e.contains("negative"), "{e}");
        assert_eq!(parse_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1e-300"), Ok(Duration::ZERO));
    }

    #[test]
    fn human_is_compact() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_secs(7800)), "2h10m");
    }
}
