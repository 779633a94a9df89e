//! `runbook audit`: what the journal says happened, for a person reviewing a run (a timeline or a
//! Markdown report), for a SIEM (JSON Lines across runs), and whether the journal can be trusted.
//!
//! The model ([`model::Audited`], over the run's [`crate::run::view::RunView`]) is derived once;
//! `text`, `markdown` and `json` render it; `export` streams raw events; `when` parses times.

mod export;
mod json;
mod markdown;
mod model;
mod text;
mod when;

pub use export::{export, export_line};
pub use when::{parse_age, parse_when, rfc3339};

use super::show::print_json;
use super::{Failure, Format, exit};
use crate::store::Store;
use serde_json::json;

/// How `runbook audit RUN` prints a run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    /// A timeline of every event.
    Text,
    /// A report for review: summary, decisions, side effects, interventions, failures, integrity.
    Markdown,
    /// Everything, structured (the same as `-o json`).
    Json,
}

pub async fn verify(
    store: &dyn Store,
    run: Option<&str>,
    all: bool,
    format: Format,
) -> Result<i32, Failure> {
    let runs = match (run, all) {
        (_, true) => store.runs(i64::MAX).await?,
        (Some(id), false) => vec![store.run(id).await?],
        (None, false) => {
            return Err(Failure::invalid(
                "give the run to verify (an id or unique prefix; see `runbook runs`), or --all to verify every run",
            ));
        }
    };
    let mut broken = 0;
    let mut report = Vec::new();
    for r in &runs {
        let records = store.events(&r.id).await?;
        let problem = crate::run::integrity::verify(r, &records).err();
        if problem.is_some() {
            broken += 1;
        }
        if format == Format::Text {
            match &problem {
                None => println!("ok      {}  {} ({} events)", r.id, r.runbook, records.len()),
                Some(b) => println!("BROKEN  {}  {}: {b}", r.id, r.runbook),
            }
        }
        report.push(json!({
            "run": r.id,
            "runbook": r.runbook,
            "events": records.len(),
            "ok": problem.is_none(),
            "first_bad_event": problem.as_ref().and_then(|p| p.seq),
            "reason": problem.as_ref().map(|p| p.reason.clone()),
        }));
    }
    if format == Format::Json {
        print_json(&report);
    } else if runs.is_empty() {
        eprintln!("no runs in the database; nothing to verify");
    } else if all || broken > 0 {
        eprintln!("{} of {} runs verify", runs.len() - broken, runs.len());
    }
    Ok(if broken == 0 {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}

/// `runbook audit RUN`.
pub async fn report(
    store: &dyn Store,
    run: &str,
    format: AuditFormat,
    output: Format,
) -> Result<i32, Failure> {
    let format = match (format, output) {
        (AuditFormat::Markdown, Format::Json) => {
            return Err(Failure::invalid(
                "--format markdown and -o json ask for different outputs; choose one",
            ));
        }
        (_, Format::Json) => AuditFormat::Json,
        (f, Format::Text) => f,
    };
    let a = model::Audited::load(store, run).await?;
    match format {
        AuditFormat::Json => print_json(&json::render(&a)),
        AuditFormat::Text => print!("{}", text::render(&a)),
        AuditFormat::Markdown => print!("{}", markdown::render(&a)),
    }
    Ok(if a.problem.is_none() {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}
