//! Times for audit output and the `--since`/`--until`/`--older-than` arguments: instants as RFC 3339
//! or local time, ages (`24h`, `7d`), and points in time given as either.

use std::time::Duration;

/// An instant as RFC 3339 in UTC with milliseconds, e.g. `2025-03-01T09:30:00.120Z`.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// An instant in the local time zone, with its offset, for people.
pub fn local(ms: i64, with_offset: bool) -> String {
    let fmt = if with_offset {
        "%Y-%m-%d %H:%M:%S%.3f %:z"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f"
    };
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime(fmt)
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// An age: what runbook durations accept (`30s`, `90m`, `24h`, `1h30m`, bare seconds) plus days and
/// weeks of 24 hours (`7d`, `2w`, `1w 3d 12h`).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    if let Ok(d) = runbook_steps::duration::parse_duration(s) {
        return Ok(d);
    }
    let bad = || format!("`{s}` is not an age (write e.g. `24h`, `7d`, `2w`, `90m`)");
    let span: jiff::Span = s.trim().parse().map_err(|_| bad())?;
    if span.is_negative() {
        return Err(format!("`{s}` is negative"));
    }
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "`{s}`: months and years vary in length; write days (`90d`) or weeks (`13w`)"
        ));
    }
    let ms = span
        .total((
            jiff::Unit::Millisecond,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|_| bad())?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// A point in time: an age before `now` (`24h`, `7d`) or an RFC 3339 timestamp
/// (`2025-03-01T00:00:00Z`). Returns epoch milliseconds.
pub fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = s.trim().parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let age = parse_age(s).map_err(|_| {
        format!(
            "`{s}` is neither an age (`24h`, `7d`) nor an RFC 3339 time (`2025-03-01T00:00:00Z`)"
        )
    })?;
    let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Ok(now.saturating_sub(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_days_and_weeks() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("1d 12h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age("30"), Ok(Duration::from_secs(30)));
        assert!(parse_age("3 months").is_err());
        assert!(parse_age("-7d").is_err());
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn when_is_an_age_ago_or_a_timestamp() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_when("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_when("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_when("2025-03-01T00:00:00Z", now),
            Ok(1_740_787_200_000)
        );
        assert_eq!(
            parse_when("2025-03-01T01:00:00+01:00", now),
            Ok(1_740_787_200_000)
        );
        assert!(parse_when("yesterday", now).is_err());
    }
}
