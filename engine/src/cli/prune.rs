//! `runbook prune`: deleting old finished runs, whole.

use super::audit::{parse_age, rfc3339};
use super::show::print_json;
use super::{Failure, Format, exit};
use crate::run::event::now_ms;
use crate::store::Store;
use serde_json::json;

pub async fn prune(
    store: &dyn Store,
    older_than: &str,
    dry_run: bool,
    format: Format,
) -> Result<i32, Failure> {
    let age = parse_age(older_than).map_err(|e| Failure::invalid(format!("--older-than {e}")))?;
    let cutoff = now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let done = store.prune(cutoff, dry_run).await?;
    if format == Format::Json {
        print_json(&json!({
            "dry_run": dry_run,
            "finished_before_ms": cutoff,
            "finished_before": rfc3339(cutoff),
            "runs": done.runs,
            "events": done.events,
        }));
    } else {
        let runs = if done.runs == 1 { "run" } else { "runs" };
        let events = if done.events == 1 { "event" } else { "events" };
        let verb = if dry_run { "would delete" } else { "deleted" };
        println!(
            "{verb} {} {runs} ({} {events}) that finished before {}{}",
            done.runs,
            done.events,
            rfc3339(cutoff),
            if dry_run {
                "; nothing was deleted (--dry-run)"
            } else {
                ""
            }
        );
    }
    Ok(exit::OK)
}
