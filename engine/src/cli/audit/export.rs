//! `runbook audit export`: every event of every run in a time window, as JSON Lines for a SIEM.

use super::when::{parse_when, rfc3339};
use crate::cli::{Failure, exit};
use crate::run::event::{Record, now_ms};
use crate::store::{EventKey, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;

/// Events fetched per store call.
const EXPORT_PAGE: i64 = 1000;

/// One event as a JSON Lines object. `data` is the event exactly as stored and hashed, so a consumer
/// can recompute `hash` from `prev_hash`, `run`, `seq`, `at_ms`, `actor` and `data`; an event whose
/// stored text is not one line of JSON (only possible after tampering) is given as a string.
pub fn export_line(r: &Record, runbook: &str) -> String {
    let head = json!({
        "run": r.run_id,
        "runbook": runbook,
        "seq": r.seq,
        "at_ms": r.at_ms,
        "at": rfc3339(r.at_ms),
        "actor": r.actor,
        "kind": r.kind,
        "step": r.step,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
    .to_string();
    let verbatim = !r.data.contains(['\n', '\r'])
        && serde_json::from_str::<serde::de::IgnoredAny>(&r.data).is_ok();
    let data = if verbatim {
        r.data.clone()
    } else {
        Value::String(r.data.clone()).to_string()
    };
    let body = head.strip_suffix('}').unwrap_or(&head);
    format!("{body},\"data\":{data}}}")
}

pub async fn export(
    store: &dyn Store,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<i32, Failure> {
    let now = now_ms();
    let since = match since {
        Some(s) => parse_when(s, now).map_err(|e| Failure::invalid(format!("--since {e}")))?,
        None => i64::MIN,
    };
    let until = match until {
        Some(s) => parse_when(s, now).map_err(|e| Failure::invalid(format!("--until {e}")))?,
        None => i64::MAX,
    };
    if until <= since {
        return Err(Failure::invalid("--until must be later than --since"));
    }
    let mut names: HashMap<String, String> = HashMap::new();
    // Not locked: the writer lives across awaits, on whichever worker runs the command.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut last: Option<(i64, String, i64)> = None;
    loop {
        let after = last.as_ref().map(|(at, run_id, seq)| EventKey {
            at: *at,
            run_id,
            seq: *seq,
        });
        let page = store
            .events_between(since, until, after, EXPORT_PAGE)
            .await?;
        for r in &page {
            if !names.contains_key(&r.run_id) {
                let name = match store.run(&r.run_id).await {
                    Ok(run) => run.runbook,
                    Err(crate::store::StoreError::NoSuchRun(_)) => String::new(),
                    Err(e) => return Err(e.into()),
                };
                names.insert(r.run_id.clone(), name);
            }
            let runbook = names.get(&r.run_id).map_or("", String::as_str);
            if let Err(e) = writeln!(out, "{}", export_line(r, runbook)) {
                return written(e);
            }
        }
        match page.last() {
            Some(r) if i64::try_from(page.len()).unwrap_or(0) == EXPORT_PAGE => {
                last = Some((r.at_ms, r.run_id.clone(), r.seq));
            }
            _ => break,
        }
    }
    match out.flush() {
        Ok(()) => Ok(exit::OK),
        Err(e) => written(e),
    }
}

/// A reader that went away (`| head`) is not an error; anything else is.
fn written(e: std::io::Error) -> Result<i32, Failure> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(exit::OK)
    } else {
        Err(Failure::env(format!("cannot write to stdout: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::event::Event;

    #[test]
    fn export_lines_keep_the_hashed_bytes() {
        let mut chain = crate::run::event::Chain::new("r1");
        let rec = chain.seal(
            5,
            "me",
            &Event::StepSkipped {
                step: "s".into(),
                reason: "why".into(),
            },
        );
        let line = export_line(&rec, "demo");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["data"]["reason"], "why");
        assert_eq!(v["runbook"], "demo");
        assert_eq!(v["at"], "1970-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(1_740_787_200_020), "2025-03-01T00:00:00.020Z");
        assert!(line.ends_with(&format!(",\"data\":{}}}", rec.data)));
        let mut odd = rec.clone();
        odd.data = "{\"a\":\n1}".into();
        let v: Value = serde_json::from_str(&export_line(&odd, "demo")).expect("json");
        assert_eq!(v["data"], "{\"a\":\n1}");
    }
}
