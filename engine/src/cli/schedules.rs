//! `runbook schedules`: every scheduled runbook found, with its last fire (from the database) and
//! its next.

use super::audit::rfc3339;
use super::show::{Table, print_json};
use super::{Failure, Format, exit};
use crate::run::event::now_ms;
use crate::runbook::catalog::Catalog;
use crate::schedule::Decision;
use crate::store::{ScheduleRow, Store};
use serde::Serialize;

pub const AFTER_HELP: &str = "\
Examples:
  runbook schedules
  runbook schedules -o json
  runbook --db postgres://runbook@db/runbook schedules   # as the servers recorded

Lists each runbook in ./runbooks and RUNBOOK_PATH that has `triggers.schedule`: the expression, its
time zone, the last fire recorded in the database and the run it started, and the next fire.
Times are shown in the schedule's time zone.

Schedules fire under `runbook serve` (this command starts nothing). A schedule a server has never
seen fires nothing for the past: the server records that moment and counts from it (LAST FIRE
shows `never (seen TIME)` until the first fire). Fires missed while no server ran start one run, for the latest, on the next tick:
such a schedule shows `due`. Servers sharing a database start one run per fire between them.";

/// One schedule of one runbook, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub runbook: String,
    pub file: String,
    pub expression: String,
    pub timezone: String,
    /// Epoch ms of the last fire (or of the first sighting), none when no server has seen it.
    pub last_fire_ms: Option<i64>,
    pub last_fire: Option<String>,
    pub last_run: Option<String>,
    pub last_error: Option<String>,
    /// A fire is due now (missed while no server ran, or not yet taken by a server's tick).
    pub due: bool,
    pub next_fire_ms: Option<i64>,
    pub next_fire: Option<String>,
}

/// The listing at `now`: the catalog's schedules in order, each with its record, if any.
pub fn listing(catalog: &Catalog, records: &[ScheduleRow], now: i64) -> Vec<Listed> {
    let mut out = Vec::new();
    for entry in &catalog.entries {
        for s in &entry.plan.runbook.trigger.schedules {
            let record = records
                .iter()
                .find(|r| r.runbook == entry.name() && r.expression == s.expression());
            let last = record.map(|r| r.last_fire);
            let next = s.next_after(now);
            out.push(Listed {
                runbook: entry.name().to_string(),
                file: entry.path.display().to_string(),
                expression: s.expression().to_string(),
                timezone: s.timezone().to_string(),
                last_fire_ms: last,
                last_fire: last.map(rfc3339),
                last_run: record.and_then(|r| r.last_run.clone()),
                last_error: record.and_then(|r| r.last_error.clone()),
                due: matches!(s.decide(last, now), Decision::Fire(_)),
                next_fire_ms: next,
                next_fire: next.map(rfc3339),
            });
        }
    }
    out
}

pub async fn schedules(
    store: &dyn Store,
    engine: &crate::Engine,
    format: Format,
) -> Result<i32, Failure> {
    let catalog = Catalog::load(engine);
    for r in &catalog.refused {
        eprintln!(
            "warning: {} is not listed: it does not validate (runbook validate {})",
            r.path, r.path
        );
    }
    let now = now_ms();
    let rows = listing(&catalog, &store.schedules().await?, now);
    if format == Format::Json {
        print_json(&rows);
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!(
            "no scheduled runbook found in {} (a runbook is scheduled by `triggers.schedule`)",
            crate::runbook::find::search_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(exit::OK);
    }
    let mut t = Table::new(&[
        "RUNBOOK",
        "SCHEDULE",
        "ZONE",
        "LAST FIRE",
        "RUN",
        "NEXT FIRE",
    ]);
    for r in &rows {
        let Some(s) = catalog.get(&r.runbook).and_then(|e| {
            e.plan
                .runbook
                .trigger
                .schedules
                .iter()
                .find(|s| s.expression() == r.expression)
        }) else {
            continue;
        };
        let last = match (r.last_fire_ms, r.last_run.is_some()) {
            (None, _) => "never".to_string(),
            // A first sighting records its moment with no run; so does a fire that failed.
            (Some(ms), false) if r.last_error.is_none() => format!("never (seen {})", s.local(ms)),
            (Some(ms), _) => s.local(ms),
        };
        let run = match (&r.last_run, &r.last_error) {
            (Some(id), _) => id.chars().take(12).collect(),
            (None, Some(e)) => format!("none: {e}"),
            (None, None) => "-".to_string(),
        };
        let next = match (r.due, r.next_fire_ms) {
            (true, _) => "due".to_string(),
            (false, Some(ms)) => s.local(ms),
            (false, None) => "-".to_string(),
        };
        t.row(vec![
            r.runbook.clone(),
            r.expression.clone(),
            r.timezone.clone(),
            last,
            run,
            next,
        ]);
    }
    print!("{}", t.render());
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::catalog::Entry;
    use std::sync::Arc;

    fn catalog(yaml: &str) -> Catalog {
        let engine = crate::Engine::new();
        let plan = crate::runbook::validate::check("s.yaml", yaml, &engine.registry, &engine.expr)
            .map_err(|r| r.render(false))
            .expect("valid");
        Catalog {
            entries: vec![Entry {
                plan: Arc::new(plan),
                text: yaml.into(),
                sha256: String::new(),
                path: "runbooks/s.yaml".into(),
            }],
            refused: Vec::new(),
        }
    }

    const NIGHTLY: &str = "name: nightly\ntriggers: { schedule: [\"0 3 * * *\", \"@weekly\"] }\nsteps:\n  - { id: a, uses: flow.noop, with: { value: 1 } }\n";

    #[test]
    fn each_schedule_is_listed_with_its_record_and_next_fire() {
        let c = catalog(NIGHTLY);
        let now = 1_767_268_800_000; // 2026-01-01T12:00:00Z, a Thursday
        let records = vec![ScheduleRow {
            runbook: "nightly".into(),
            expression: "0 3 * * *".into(),
            last_fire: now - 9 * 3_600_000, // 03:00 today
            last_run: Some("0123456789abcdef".into()),
            last_error: None,
        }];
        let rows = listing(&c, &records, now);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].expression, "0 3 * * *");
        assert_eq!(rows[0].last_run.as_deref(), Some("0123456789abcdef"));
        assert!(!rows[0].due);
        assert_eq!(
            rows[0].next_fire.as_deref(),
            Some("2026-01-02T03:00:00.000Z")
        );
        // Never seen by a server: no last fire, nothing due (it will count from its first tick).
        assert_eq!(rows[1].expression, "@weekly");
        assert_eq!(rows[1].last_fire_ms, None);
        assert!(!rows[1].due);
        assert_eq!(
            rows[1].next_fire.as_deref(),
            Some("2026-01-04T00:00:00.000Z")
        );
        // A week without a server: a fire is due.
        let later = listing(&c, &records, now + 7 * 86_400_000);
        assert!(later[0].due);
    }
}
