//! Whether a stored run can be trusted: its hash chain, and the runbook text it carries against the
//! hashes the chain recorded. `audit verify` reports it; `resume` and `rerun` refuse to act on a run
//! that fails it, because they would execute whatever text the database now holds.

use super::event::{Event, Record, verify_chain};
use crate::store::RunRow;
use sha2::{Digest, Sha256};

/// The first thing about a stored run that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{}{reason}", seq.map(|s| format!("event {s}: ")).unwrap_or_default())]
pub struct IntegrityBreak {
    /// The first event that cannot be trusted; none when the events verify but the run's stored
    /// runbook text does not.
    pub seq: Option<i64>,
    pub reason: String,
}

impl IntegrityBreak {
    fn at(seq: Option<i64>, reason: &str) -> IntegrityBreak {
        IntegrityBreak {
            seq,
            reason: reason.to_string(),
        }
    }
}

/// Why `resume` or `rerun` will not act on a run, one sentence for both.
pub fn refusal(run_id: &str, b: &IntegrityBreak) -> String {
    let what = match b.seq {
        Some(seq) => format!("the journal of run {run_id} does not verify at event {seq}"),
        None => format!("run {run_id} does not verify"),
    };
    format!(
        "{what} ({}); refusing to act on it (see `runbook audit verify {run_id}`)",
        b.reason
    )
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Checks a run's stored records (in `seq` order): the chain first, then the stored runbook text
/// against its hash and against the hash the first event recorded, then every runbook text a resume
/// switched to against the hash journaled with it.
pub fn verify(run: &RunRow, records: &[Record]) -> Result<(), IntegrityBreak> {
    verify_chain(records).map_err(|b| IntegrityBreak {
        seq: Some(b.seq),
        reason: b.reason,
    })?;
    match records.first().map(Record::event) {
        Some(Ok(Event::RunStarted { runbook_sha256, .. })) => {
            if runbook_sha256 != run.runbook_sha256 {
                return Err(IntegrityBreak::at(
                    Some(1),
                    "the run's runbook hash differs from the one its first event recorded",
                ));
            }
        }
        _ => {
            return Err(IntegrityBreak::at(
                Some(1),
                "the journal does not start with run_started",
            ));
        }
    }
    if sha256(&run.runbook_text) != run.runbook_sha256 {
        return Err(IntegrityBreak::at(
            None,
            "the stored runbook text does not match its sha256",
        ));
    }
    for r in records {
        if let Ok(Event::RunResumed {
            runbook_sha256,
            runbook_text: Some(text),
        }) = r.event()
            && sha256(&text) != runbook_sha256
        {
            return Err(IntegrityBreak::at(
                Some(r.seq),
                "the runbook text it switched to does not match its sha256",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::event::{Chain, RunStatus};
    use serde_json::Map;

    const TEXT: &str = "name: t\nsteps:\n  - { id: a, uses: flow.noop }\n";

    fn run_with(records: &mut Vec<Record>, text: &str) -> RunRow {
        let mut chain = Chain::new("r1");
        records.push(chain.seal(
            1,
            "me",
            &Event::RunStarted {
                runbook: "t".into(),
                runbook_sha256: sha256(TEXT),
                params: Map::new(),
                vars: Map::new(),
                engine_version: "0".into(),
            },
        ));
        records.push(chain.seal(
            2,
            "me",
            &Event::RunResumed {
                runbook_sha256: sha256("new"),
                runbook_text: Some("new".into()),
            },
        ));
        RunRow {
            id: "r1".into(),
            runbook: "t".into(),
            title: None,
            source_path: None,
            runbook_sha256: sha256(TEXT),
            runbook_text: text.into(),
            params: serde_json::Value::Null,
            status: RunStatus::Running,
            actor: "me".into(),
            started_at: 1,
            finished_at: None,
            parent_run: None,
            kind: crate::store::RunKind::Run,
            concurrency: None,
            trigger_key: None,
            request_key: None,
        }
    }

    #[test]
    fn an_intact_run_verifies() {
        let mut recs = Vec::new();
        let run = run_with(&mut recs, TEXT);
        assert_eq!(verify(&run, &recs), Ok(()));
    }

    #[test]
    fn an_edited_runbook_text_is_named() {
        let mut recs = Vec::new();
        let run = run_with(
            &mut recs,
            "name: t\nsteps:\n  - { id: a, uses: shell.run }\n",
        );
        let b = verify(&run, &recs).expect_err("edited text");
        assert_eq!(b.seq, None);
        assert!(b.to_string().contains("stored runbook text"), "{b}");
    }

    #[test]
    fn a_rehashed_runbook_is_caught_by_the_first_event() {
        let mut recs = Vec::new();
        let mut run = run_with(&mut recs, "evil");
        run.runbook_sha256 = sha256("evil");
        let b = verify(&run, &recs).expect_err("rehashed");
        assert_eq!(b.seq, Some(1));
    }

    #[test]
    fn an_edited_switched_text_and_an_empty_journal_are_caught() {
        let mut recs = Vec::new();
        let run = run_with(&mut recs, TEXT);
        let mut chain = Chain::new("r1");
        let first = recs[0].event().expect("event");
        let edited = vec![
            chain.seal(1, "me", &first),
            chain.seal(
                2,
                "me",
                &Event::RunResumed {
                    runbook_sha256: sha256("new"),
                    runbook_text: Some("evil".into()),
                },
            ),
        ];
        assert_eq!(verify(&run, &edited).map_err(|b| b.seq), Err(Some(2)));
        assert_eq!(verify(&run, &[]).map_err(|b| b.seq), Err(Some(1)));
    }
}
