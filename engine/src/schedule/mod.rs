//! Scheduled runs (`triggers.schedule`): when a cron expression fires, in its time zone, and which
//! fire is due. Pure — instants are epoch milliseconds passed in, nothing reads the clock — so the
//! rules are tested on plain data; [`tick`] is what a server calls to act on them.
//!
//! The rules:
//! - A schedule is a standard 5-field cron expression (minute, hour, day of month, month, day of
//!   week; Vixie cron's syntax and its day-of-month/day-of-week rule, via the `cronexpr` crate),
//!   or one of `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`,
//!   read in an IANA time zone (default UTC).
//! - A fire is due when its instant is after the last recorded fire and not after now. When
//!   several were missed (no server ran), only the latest is due: a missed schedule runs once.
//! - A schedule never seen before has no last fire: it fires nothing for the past and records now
//!   as the instant it counts from.
//! - Daylight saving time, as the crate walks wall-clock time: a time that does not exist on the
//!   day clocks spring forward (02:30 in Europe/Berlin on the last Sunday of March) does not fire
//!   that day; a time that occurs twice on the day clocks fall back fires at both instants.

pub mod tick;

use cronexpr::jiff::Timestamp;
use cronexpr::jiff::tz::TimeZone;

/// The time zone of a schedule without `timezone:`.
pub const DEFAULT_ZONE: &str = "UTC";

/// A checked schedule: the expression and zone as written, and the parsed form.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    timezone: String,
    tz: TimeZone,
    cron: cronexpr::Crontab,
}

/// What part of a schedule is wrong, why, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub part: Part,
    pub message: String,
    pub help: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Expression,
    TimeZone,
}

/// What to do about a schedule at an instant, given its last recorded fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Never seen: record now as the instant it counts from; fire nothing.
    Baseline,
    /// Fire once, for this instant (the latest one due).
    Fire(i64),
    /// Nothing is due.
    Wait,
}

const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

const MACROS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// A reference instant for checking at load time that a schedule ever fires (2000-01-01 UTC): a
/// constant, so validation does not depend on the clock.
const CHECK_FROM_MS: i64 = 946_684_800_000;

/// Looks an IANA time zone name up (the system database, else the copy built in).
pub fn zone(name: &str) -> Result<TimeZone, Invalid> {
    TimeZone::get(name).map_err(|_| {
        let names: Vec<String> = cronexpr::jiff::tz::db()
            .available()
            .map(|n| n.as_str().to_string())
            .collect();
        let help = match crate::diag::suggest(name, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "use an IANA time zone name, e.g. `Europe/Berlin`, `America/New_York` or `UTC`"
                .to_string(),
        };
        Invalid {
            part: Part::TimeZone,
            message: format!("`{name}` is not a time zone"),
            help: Some(help),
        }
    })
}

impl Schedule {
    /// Checks `expression` (5 fields or an `@` macro) read in the IANA zone `timezone`.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, Invalid> {
        let tz = zone(timezone)?;
        let fields = fields(expression)?;
        let input = format!("{} {timezone}", fields.join(" "));
        let cron = cronexpr::parse_crontab(&input).map_err(|e| cron_error(&e, &fields))?;
        let s = Schedule {
            expression: expression.to_string(),
            timezone: timezone.to_string(),
            tz,
            cron,
        };
        if s.next_after(CHECK_FROM_MS).is_none() {
            return Err(invalid(
                format!("`{expression}` never fires"),
                "the day of month does not occur in the months given (e.g. `30 2` is the 30th of February)",
            ));
        }
        Ok(s)
    }

    /// The expression as written: with the runbook's name, what a schedule's last fire is kept by.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The first fire strictly after `after_ms`; none past what the crate searches (four years)
    /// or the representable range.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let ts = Timestamp::from_millisecond(after_ms).ok()?;
        let next = self.cron.find_next(cronexpr::MakeTimestamp(ts)).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The latest fire `f` with `last_fired < f <= now_ms`, if any: however many fires were
    /// missed, one is due.
    pub fn due(&self, last_fired: i64, now_ms: i64) -> Option<i64> {
        if now_ms <= last_fired {
            return None;
        }
        // Look back from now over a window that doubles until it holds a fire (or reaches the last
        // one), then walk forward inside it: a month of missed minutes costs a few dozen steps,
        // not forty thousand.
        let mut window: i64 = 60_000;
        loop {
            let from = now_ms.saturating_sub(window).max(last_fired);
            if let Some(first) = self.next_after(from).filter(|f| *f <= now_ms) {
                let mut latest = first;
                while let Some(n) = self.next_after(latest).filter(|n| *n <= now_ms) {
                    latest = n;
                }
                return Some(latest);
            }
            if from == last_fired {
                return None;
            }
            window = window.saturating_mul(2);
        }
    }

    /// What to do at `now_ms` given the last recorded fire (none: never seen).
    pub fn decide(&self, last_fired: Option<i64>, now_ms: i64) -> Decision {
        match last_fired {
            None => Decision::Baseline,
            Some(last) => self
                .due(last, now_ms)
                .map_or(Decision::Wait, Decision::Fire),
        }
    }

    /// An instant as wall-clock time in this schedule's zone: `2026-03-30 02:30 CEST`.
    pub fn local(&self, ms: i64) -> String {
        let Ok(ts) = Timestamp::from_millisecond(ms) else {
            return ms.to_string();
        };
        ts.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?} {})", self.expression, self.timezone)
    }
}

/// Two schedules are the same when written the same (the parsed form follows from the text).
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expression == other.expression && self.timezone == other.timezone
    }
}

fn invalid(message: impl Into<String>, help: impl Into<String>) -> Invalid {
    Invalid {
        part: Part::Expression,
        message: message.into(),
        help: Some(help.into()),
    }
}

/// The five fields of `expression` (a macro expanded), or why it does not have them.
fn fields(expression: &str) -> Result<Vec<String>, Invalid> {
    let text = expression.trim();
    if text.starts_with('@') {
        return match MACROS.iter().find(|(m, _)| m.eq_ignore_ascii_case(text)) {
            Some((_, five)) => Ok(five.split(' ').map(str::to_string).collect()),
            None => Err(invalid(
                format!("`{text}` is not a schedule"),
                "the shorthands are @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually)",
            )),
        };
    }
    let fields: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if fields.len() == 5 {
        return Ok(fields);
    }
    let help = match fields.len() {
        6 if fields[5].contains('/') || fields[5].eq_ignore_ascii_case("utc") => {
            "write the time zone under `timezone:`, not in the expression".to_string()
        }
        6 | 7 => "seconds (and years) are not supported: a schedule fires at most once a minute"
            .to_string(),
        _ => format!(
            "five fields: {}; e.g. `0 3 * * 1` is 03:00 every Monday",
            FIELDS.join(", ")
        ),
    };
    Err(invalid(
        format!(
            "a schedule has 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ),
        help,
    ))
}

/// The crate's message as one line naming the field, when its layout is the one known (a caret
/// under the input, then the reason); its whole text otherwise.
fn cron_error(e: &cronexpr::Error, fields: &[String]) -> Invalid {
    let text = e.to_string();
    let help = "fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT (0 and 7 are Sunday); `*`, lists `1,15`, ranges `1-5`, steps `*/10`";
    let last = text.lines().last().unwrap_or_default();
    let caret = last.len() - last.trim_start().len();
    if let Some(reason) = last.trim_start().strip_prefix("^ ") {
        // The input was the fields joined by single spaces: the caret's column names the field.
        let mut start = 0;
        for (name, field) in FIELDS.iter().zip(fields) {
            if caret < start + field.len() + 1 {
                return invalid(format!("{name} `{field}`: {reason}"), help);
            }
            start += field.len() + 1;
        }
        return invalid(reason.to_string(), help);
    }
    invalid(text.replace('\n', " "), help)
}

#[cfg(test)]
mod tests;
