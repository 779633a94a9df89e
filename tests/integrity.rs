//! `resume` and `rerun` act on a run's stored runbook text; a text edited behind the engine's back
//! must stop them before anything runs or is journaled.

use crate::common::{Sandbox, stderr, stdout};
use runbook_engine::run::event::{Chain, Event, now_ms};
use runbook_engine::store::{RunRow, Store, sqlite::SqliteStore};

const TEXT: &str =
    "name: acts\nsteps:\n  - id: act\n    uses: shell.run\n    with: { argv: [touch, ran] }\n";

fn sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn open(sb: &Sandbox) -> SqliteStore {
    SqliteStore::open(sb.db().to_str().expect("utf-8"), true)
        .await
        .expect("open")
}

/// A run of `TEXT` that stopped before its step ran (as after a crash right after it started), so
/// `resume` would run the step.
async fn stopped_run(sb: &Sandbox, id: &str) {
    let store = open(sb).await;
    let start = now_ms();
    let mut chain = Chain::new(id);
    let first = chain.seal(
        start,
        "seeder",
        &Event::RunStarted {
            runbook: "acts".into(),
            runbook_sha256: sha256(TEXT),
            params: serde_json::Map::new(),
            vars: serde_json::Map::new(),
            engine_version: "test".into(),
        },
    );
    let row = RunRow {
        runbook_sha256: sha256(TEXT),
        runbook_text: TEXT.into(),
        actor: "seeder".into(),
        ..crate::common::run_row(id, "acts", start)
    };
    store.create_run(&row, &[first]).await.expect("create");
}

/// Rewrites the run's stored runbook so its step touches `evil` instead of `ran`.
async fn edit_runbook(sb: &Sandbox, id: &str) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE runs SET runbook_text = replace(runbook_text, 'touch, ran', 'touch, evil') WHERE id = '{id}'"
    )))
    .execute(&pool)
    .await
    .expect("edit");
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;
}

async fn event_count(sb: &Sandbox, id: &str) -> usize {
    open(sb).await.events(id).await.expect("events").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_refuses_a_run_whose_stored_runbook_was_edited() {
    let sb = Sandbox::new();
    let (intact, edited) = (
        "0000000000000000000000000000000a",
        "0000000000000000000000000000000b",
    );
    stopped_run(&sb, intact).await;
    stopped_run(&sb, edited).await;
    edit_runbook(&sb, edited).await;

    let o = sb.run(&["resume", edited, "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the stored runbook text does not match its sha256"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(edited), "{}", stderr(&o));
    assert!(!sb.path().join("evil").exists(), "the edited step ran");
    assert_eq!(event_count(&sb, edited).await, 1, "something was journaled");

    // The same run untouched resumes and runs its step: the refusal above is the edit's doing.
    let o = sb.run(&["resume", intact, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(sb.path().join("ran").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn rerun_refuses_a_run_whose_stored_runbook_was_edited() {
    let sb = Sandbox::new();
    let f = sb.write("acts.yaml", TEXT);
    let o = sb.run(&["run", f.to_str().expect("path"), "-o", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let id = v["run"]["id"].as_str().expect("id").to_string();
    std::fs::remove_file(sb.path().join("ran")).expect("rm");
    edit_runbook(&sb, &id).await;
    let before = event_count(&sb, &id).await;

    let o = sb.run(&["rerun", &id, "--from", "act", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the stored runbook text does not match its sha256"),
        "{}",
        stderr(&o)
    );
    assert!(!sb.path().join("evil").exists(), "the edited step ran");
    assert!(!sb.path().join("ran").exists());
    assert_eq!(event_count(&sb, &id).await, before);
    let runs: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).expect("json");
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "no new run: {runs:#}"
    );
}
