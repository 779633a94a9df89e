//! `runbook audit`: checking the journal.

use super::show::print_json;
use super::{Failure, Format, exit};
use crate::run::event::{Event, verify_chain};
use crate::store::{RunRow, Store};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Why a run does not verify, if it does not: the chain first, then the stored runbook against its
/// hash and against the hash the chain recorded when the run started.
async fn check(
    store: &dyn Store,
    run: &RunRow,
) -> Result<(usize, Option<(Option<i64>, String)>), Failure> {
    let records = store.events(&run.id).await?;
    let n = records.len();
    if let Err(b) = verify_chain(&records) {
        return Ok((n, Some((Some(b.seq), b.reason))));
    }
    let text_hash = hex::encode(Sha256::digest(run.runbook_text.as_bytes()));
    if text_hash != run.runbook_sha256 {
        return Ok((
            n,
            Some((
                None,
                "the stored runbook text does not match its sha256".to_string(),
            )),
        ));
    }
    match records.first().map(|r| r.event()) {
        Some(Ok(Event::RunStarted { runbook_sha256, .. }))
            if runbook_sha256 == run.runbook_sha256 =>
        {
            Ok((n, None))
        }
        Some(Ok(Event::RunStarted { .. })) => Ok((
            n,
            Some((
                Some(1),
                "the run's runbook hash differs from the one its first event recorded".to_string(),
            )),
        )),
        _ => Ok((
            n,
            Some((
                Some(1),
                "the journal does not start with run_started".to_string(),
            )),
        )),
    }
}

pub async fn verify(
    store: &dyn Store,
    run: Option<&str>,
    all: bool,
    format: Format,
) -> Result<i32, Failure> {
    let runs = if all {
        store.runs(i64::MAX).await?
    } else {
        vec![store.run(run.unwrap_or_default()).await?]
    };
    let mut broken = 0;
    let mut report = Vec::new();
    for r in &runs {
        let (events, problem) = check(store, r).await?;
        if problem.is_some() {
            broken += 1;
        }
        if format == Format::Text {
            match &problem {
                None => println!("ok      {}  {} ({events} events)", r.id, r.runbook),
                Some((Some(seq), why)) => {
                    println!("BROKEN  {}  {}: event {seq}: {why}", r.id, r.runbook)
                }
                Some((None, why)) => println!("BROKEN  {}  {}: {why}", r.id, r.runbook),
            }
        }
        report.push(json!({
            "run": r.id,
            "runbook": r.runbook,
            "events": events,
            "ok": problem.is_none(),
            "first_bad_event": problem.as_ref().and_then(|p| p.0),
            "reason": problem.as_ref().map(|p| p.1.clone()),
        }));
    }
    if format == Format::Json {
        print_json(&report);
    } else if runs.len() > 1 || broken > 0 {
        eprintln!("{} of {} runs verify", runs.len() - broken, runs.len());
    }
    Ok(if broken == 0 {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}
