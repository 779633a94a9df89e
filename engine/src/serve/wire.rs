//! What the API answers, as types both sides use: the server serialises them, and the CLI's
//! `--server` client (`cli/remote.rs`) reads them back, so the two cannot drift apart.

use crate::run::event::{Record, RunStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What `POST /api/v1/runs` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Started {
    pub run: String,
    /// `parked`, due now: the first free worker drives it.
    pub status: RunStatus,
    /// False when an earlier request with the same Idempotency-Key created the run.
    pub created: bool,
}

/// A page of a run's journal, as `GET /api/v1/runs/{run}/events` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Events {
    pub run: String,
    /// Each event as stored: `data` is the exact JSON text its `hash` covers, chained by
    /// `prev_hash` (check with `runbook audit verify`).
    pub events: Vec<EventRecord>,
    /// The `after` of the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// One event of a page: the stored record less its run, which the page names once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    pub step: Option<String>,
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<Record> for EventRecord {
    fn from(r: Record) -> EventRecord {
        EventRecord {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            kind: r.kind,
            step: r.step,
            data: r.data,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl EventRecord {
    /// The stored record again, with the run the page names.
    pub fn into_record(self, run_id: &str) -> Record {
        Record {
            run_id: run_id.to_string(),
            seq: self.seq,
            at_ms: self.at_ms,
            actor: self.actor,
            kind: self.kind,
            step: self.step,
            data: self.data,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// What the approve and deny routes answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnswerResult {
    pub run: String,
    /// False when another answer to the same request came first.
    pub recorded: bool,
    pub status: RunStatus,
    /// Whether a process drives the run now (it takes the answer within a second); otherwise a
    /// worker claims the run, which the answer made due.
    pub driven: bool,
}
