use super::*;

/// An RFC 3339 instant as epoch ms.
fn at(s: &str) -> i64 {
    s.parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

fn utc(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn schedule(expr: &str, tz: &str) -> Schedule {
    Schedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr} ({tz}): {e:?}"))
}

fn error(expr: &str, tz: &str) -> Invalid {
    match Schedule::parse(expr, tz) {
        Ok(s) => panic!("{s:?} parsed"),
        Err(e) => e,
    }
}

#[test]
fn next_after_is_strictly_after_and_on_the_minute() {
    let s = schedule("0 3 * * 1", "UTC");
    // 2026-01-01 is a Thursday: the next Monday is the 5th.
    let next = s.next_after(at("2026-01-01T10:00:00Z"));
    assert_eq!(next.map(utc).as_deref(), Some("2026-01-05T03:00:00Z"));
    // From the fire itself, the next one is a week later, not the same instant.
    let fire = at("2026-01-05T03:00:00Z");
    assert_eq!(s.next_after(fire), Some(fire + 7 * 86_400_000));
    // A millisecond before the fire finds the fire.
    assert_eq!(s.next_after(fire - 1), Some(fire));
}

#[test]
fn the_time_zone_moves_the_instant_with_its_offset() {
    let s = schedule("0 3 * * *", "Europe/Berlin");
    // Winter: 03:00 CET is 02:00 UTC; summer: 03:00 CEST is 01:00 UTC.
    assert_eq!(
        s.next_after(at("2026-01-10T12:00:00Z")).map(utc).as_deref(),
        Some("2026-01-11T02:00:00Z")
    );
    assert_eq!(
        s.next_after(at("2026-07-10T12:00:00Z")).map(utc).as_deref(),
        Some("2026-07-11T01:00:00Z")
    );
    assert_eq!(s.local(at("2026-07-11T01:00:00Z")), "2026-07-11 03:00 CEST");
}

#[test]
fn missed_fires_are_due_once_for_the_latest() {
    let s = schedule("*/15 * * * *", "UTC");
    let last = at("2026-02-01T00:00:00Z");
    // Three days without a server: 288 fires missed, the latest one is due.
    let now = at("2026-02-04T10:07:30Z");
    assert_eq!(
        s.due(last, now).map(utc).as_deref(),
        Some("2026-02-04T10:00:00Z")
    );
    assert_eq!(
        s.decide(Some(last), now),
        Decision::Fire(at("2026-02-04T10:00:00Z"))
    );
    // Once that fire is recorded, nothing more is due until the next instant.
    let fired = at("2026-02-04T10:00:00Z");
    assert_eq!(s.due(fired, now), None);
    assert_eq!(s.decide(Some(fired), now), Decision::Wait);
    assert_eq!(
        s.due(fired, at("2026-02-04T10:15:00Z")),
        Some(at("2026-02-04T10:15:00Z"))
    );
}

#[test]
fn a_fire_is_due_at_its_instant_not_before_and_not_twice() {
    let s = schedule("0 3 * * 1", "UTC");
    let last = at("2026-01-05T03:00:00Z");
    let next = at("2026-01-12T03:00:00Z");
    assert_eq!(s.due(last, next - 1), None);
    assert_eq!(s.due(last, next), Some(next), "due at the instant itself");
    assert_eq!(s.due(next, next), None);
    // A last fire in the future (a server whose clock runs ahead recorded it) makes nothing due.
    assert_eq!(s.due(next, last), None);
}

#[test]
fn fifty_years_of_missed_minutes_are_one_fire() {
    // 26 million missed fires: walking them one by one would not finish; looking back from now
    // takes a few dozen steps.
    let s = schedule("* * * * *", "UTC");
    let last = at("1976-01-01T00:00:00Z");
    let now = at("2026-01-01T00:00:59.999Z");
    assert_eq!(s.due(last, now), Some(at("2026-01-01T00:00:00Z")));
}

#[test]
fn a_schedule_never_seen_records_a_baseline_and_fires_nothing_for_the_past() {
    let s = schedule("* * * * *", "UTC");
    assert_eq!(
        s.decide(None, at("2026-02-04T10:07:30Z")),
        Decision::Baseline
    );
}

#[test]
fn spring_forward_skips_a_time_that_does_not_exist_that_day() {
    // Europe/Berlin, 2026-03-29: clocks go from 02:00 CET to 03:00 CEST; 02:30 never happens.
    let s = schedule("30 2 * * *", "Europe/Berlin");
    let saturday = at("2026-03-28T01:30:00Z"); // 02:30 CET
    assert_eq!(s.next_after(saturday - 1), Some(saturday));
    let monday = at("2026-03-30T00:30:00Z"); // 02:30 CEST
    assert_eq!(s.next_after(saturday), Some(monday));
    assert_eq!(s.local(monday), "2026-03-30 02:30 CEST");
    // On the Sunday itself, nothing is due all day.
    assert_eq!(s.due(saturday, at("2026-03-29T22:00:00Z")), None);
}

#[test]
fn fall_back_fires_at_both_instants_of_a_repeated_time() {
    // Europe/Berlin, 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    let s = schedule("30 2 * * *", "Europe/Berlin");
    let fires: Vec<String> = std::iter::successors(s.next_after(at("2026-10-24T12:00:00Z")), |f| {
        s.next_after(*f)
    })
    .take(3)
    .map(|f| s.local(f) + " = " + &utc(f))
    .collect();
    assert_eq!(
        fires,
        [
            "2026-10-25 02:30 CEST = 2026-10-25T00:30:00Z",
            "2026-10-25 02:30 CET = 2026-10-25T01:30:00Z",
            "2026-10-26 02:30 CET = 2026-10-26T01:30:00Z",
        ]
    );
}

#[test]
fn shorthands_expand_to_five_fields() {
    let daily = schedule("@daily", "UTC");
    assert_eq!(
        daily
            .next_after(at("2026-01-01T10:00:00Z"))
            .map(utc)
            .as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
    assert_eq!(daily.expression(), "@daily", "kept as written");
    let weekly = schedule("@WEEKLY", "UTC");
    assert_eq!(
        weekly
            .next_after(at("2026-01-01T10:00:00Z"))
            .map(utc)
            .as_deref(),
        Some("2026-01-04T00:00:00Z"),
        "Sunday midnight"
    );
}

#[test]
fn bad_expressions_say_what_is_wrong_and_how_to_fix_it() {
    let e = error("61 3 * * *", "UTC");
    assert_eq!(e.part, Part::Expression);
    assert!(e.message.starts_with("minute `61`: "), "{e:?}");
    assert!(e.message.contains("59"), "{e:?}");

    let e = error("0 3 * * 8", "UTC");
    assert!(e.message.starts_with("day of week `8`: "), "{e:?}");

    let e = error("0 3 * FOO *", "UTC");
    assert!(e.message.starts_with("month `FOO`: "), "{e:?}");

    let e = error("0 3 * *", "UTC");
    assert!(e.message.contains("found 4"), "{e:?}");

    let e = error("0 3 * * 1 Europe/Berlin", "UTC");
    assert!(
        e.help.as_deref().is_some_and(|h| h.contains("timezone:")),
        "{e:?}"
    );

    let e = error("0 0 3 * * 1", "UTC");
    assert!(
        e.help.as_deref().is_some_and(|h| h.contains("seconds")),
        "{e:?}"
    );

    let e = error("@reboot", "UTC");
    assert!(e.message.contains("@reboot"), "{e:?}");

    let e = error("0 0 30 2 *", "UTC");
    assert!(e.message.contains("never fires"), "{e:?}");

    assert!(error("", "UTC").message.contains("found 0"));
}

#[test]
fn an_unknown_time_zone_suggests_the_nearest_name() {
    let e = error("0 3 * * *", "Europe/Berln");
    assert_eq!(e.part, Part::TimeZone);
    assert_eq!(e.message, "`Europe/Berln` is not a time zone");
    assert_eq!(e.help.as_deref(), Some("did you mean `Europe/Berlin`?"));
    let e = error("0 3 * * *", "+02:00");
    assert!(
        e.help.as_deref().is_some_and(|h| h.contains("IANA")),
        "{e:?}"
    );
}

#[test]
fn schedules_are_equal_when_written_the_same() {
    assert_eq!(schedule("0 3 * * 1", "UTC"), schedule("0 3 * * 1", "UTC"));
    assert_ne!(
        schedule("0 3 * * 1", "UTC"),
        schedule("0 3 * * 1", "Europe/Berlin")
    );
}

#[test]
fn the_time_zone_database_is_built_in_for_machines_without_one() {
    // The system's /usr/share/zoneinfo is preferred (it gets updates); this copy serves a slim
    // container without it, so a runbook valid on a laptop stays valid there.
    let bundled = cronexpr::jiff::tz::TimeZoneDatabase::bundled();
    assert!(bundled.get("Europe/Berlin").is_ok());
    assert!(bundled.get("America/New_York").is_ok());
}
