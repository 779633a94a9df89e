//! What the CLI says in the corners: resumable runs, verify without a run, help texts, unknown
//! plugins, and how `show` tells a resumed run's story.

use crate::common::{Sandbox, stderr, stdout};
use runbook_engine::run::event::{Chain, Event, RunStatus, now_ms};
use runbook_engine::store::{Durability, RunRow, Store, sqlite::SqliteStore};
use runbook_steps::{ErrorKind, SideEffect};
use serde_json::Value;

fn sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn open(sb: &Sandbox) -> SqliteStore {
    SqliteStore::open(sb.db().to_str().expect("utf-8"), true)
        .await
        .expect("open")
}

/// A run of `text` written through the store, started at `start`, with `events` after its start.
async fn seed(sb: &Sandbox, id: &str, text: &str, start: i64, events: Vec<(i64, Event)>) {
    let store = open(sb).await;
    let mut chain = Chain::new(id);
    let first = chain.seal(
        start,
        "seeder",
        &Event::RunStarted {
            runbook: "seeded".into(),
            runbook_sha256: sha256(text),
            params: serde_json::Map::new(),
            vars: serde_json::Map::new(),
            engine_version: "test".into(),
        },
    );
    let row = RunRow {
        runbook_sha256: sha256(text),
        runbook_text: text.into(),
        actor: "seeder".into(),
        ..crate::common::run_row(id, "seeded", start)
    };
    store.create_run(&row, &[first]).await.expect("create");
    let recs: Vec<_> = events
        .iter()
        .map(|(at, e)| chain.seal(*at, "seeder", e))
        .collect();
    store
        .append(&recs, Durability::Process)
        .await
        .expect("append");
}

const EMPTY: &str = "name: seeded\nsteps: []\n";

#[tokio::test(flavor = "multi_thread")]
async fn runs_resumable_leaves_out_finished_and_live_runs_and_says_so() {
    let sb = Sandbox::new();
    let (done, driven, stale) = (
        "0000000000000000000000000000000d",
        "0000000000000000000000000000000e",
        "0000000000000000000000000000000f",
    );
    let now = now_ms();
    let finish = Event::RunFinished {
        status: RunStatus::Succeeded,
        error: None,
    };
    seed(&sb, done, EMPTY, now - 10_000, vec![(now - 9_000, finish)]).await;

    let o = sb.run(&["runs", "--resumable"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("no resumable runs"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no runs yet"), "{}", stderr(&o));

    // A running run whose driver holds a live lease is being driven, not resumable.
    seed(&sb, driven, EMPTY, now - 8_000, vec![]).await;
    let store = open(&sb).await;
    assert_eq!(
        store
            .acquire_lease(driven, "elsewhere:1:abc", now, now + 3_600_000, None)
            .await
            .expect("lease"),
        None
    );
    let o = sb.run(&["runs", "--resumable", "-o", "json"]);
    assert_eq!(stdout(&o).trim(), "[]", "{}", stdout(&o));

    // One whose lease ran out is.
    seed(&sb, stale, EMPTY, now - 7_000, vec![]).await;
    store
        .acquire_lease(stale, "elsewhere:2:abc", now - 60_000, now - 30_000, None)
        .await
        .expect("lease");
    let o = sb.run(&["runs", "--resumable", "-o", "json"]);
    let listed: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [stale]);
}

#[test]
fn an_empty_database_says_no_runs_yet() {
    let sb = Sandbox::new();
    let o = sb.run(&["runs", "--resumable"]);
    assert!(stderr(&o).contains("no runs yet"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_without_a_run_points_to_all_and_all_always_sums_up() {
    let sb = Sandbox::new();
    let o = sb.run(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--all"), "{}", stderr(&o));

    let o = sb.run(&["audit", "verify", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to verify"), "{}", stderr(&o));

    seed(
        &sb,
        "0000000000000000000000000000000a",
        EMPTY,
        1_000,
        vec![],
    )
    .await;
    let o = sb.run(&["audit", "verify", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 1 runs verify"), "{}", stderr(&o));
}

#[test]
fn help_names_postgres_urls_and_what_a_rerun_reuses() {
    let sb = Sandbox::new();
    let help = stdout(&sb.run(&["--help"]));
    assert!(help.contains("postgres://"), "{help}");
    let o = sb.run(&["runs", "--help"]);
    assert!(stdout(&o).contains("postgres://"), "{}", stdout(&o));
    let rerun = stdout(&sb.run(&["rerun", "--help"]));
    for word in ["succeeded", "skipped", "on_failure: continue"] {
        assert!(rerun.contains(word), "{word}: {rerun}");
    }
}

#[test]
fn an_unknown_plugin_gets_near_names() {
    let sb = Sandbox::new();
    for (asked, near) in [
        ("shell.rum", "`shell.run`"),
        ("run", "`shell.run`"),
        ("flow", "`flow."),
        ("http", "`http.request`"),
    ] {
        let o = sb.run(&["plugins", asked]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("did you mean") && stderr(&o).contains(near),
            "{asked}: {}",
            stderr(&o)
        );
    }
    // A family's plugin is described when the build has it, and said to be missing when not.
    let o = sb.run(&["plugins", "mongodb.count"]);
    if cfg!(feature = "mongodb") {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("mongodb.count (read)"),
            "{}",
            stdout(&o)
        );
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("`mongodb.count` is not in this build ("),
            "{}",
            stderr(&o)
        );
    }
    let o = sb.run(&["plugins", "zzzzzz"]);
    assert!(
        stderr(&o).contains("`runbook plugins` lists the"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_example_echo_step_is_a_read() {
    let text = std::fs::read_to_string(
        crate::common::repo().join("runbooks/examples/service-health.yaml"),
    )
    .expect("example");
    let step = text
        .split("  - id: report_down\n")
        .nth(1)
        .and_then(|s| s.split("\n  - id:").next())
        .expect("report_down");
    assert!(step.contains("side_effect: read"), "{step}");
}

const LOOK: &str = "name: look\nsteps:\n  - id: look\n    uses: shell.run\n    side_effect: read\n    retry: { attempts: 5 }\n    with: { argv: [touch, looked] }\n";

/// A run that started 3h30m ago, failed its first attempt, was retried, and died during the retry
/// 3h ago; resumed now, it re-runs the step.
#[tokio::test(flavor = "multi_thread")]
async fn show_tells_a_resume_its_down_time_and_a_crash_rerun_from_a_retry() {
    let sb = Sandbox::new();
    let id = "00000000000000000000000000000c0c";
    let now = now_ms();
    let t0 = now - 210 * 60_000;
    let started = |attempt: u32| Event::StepStarted {
        step: "look".into(),
        attempt,
        class: SideEffect::Read,
        inputs: serde_json::json!({"argv": ["touch", "looked"]}),
        deadline_ms: None,
    };
    seed(
        &sb,
        id,
        LOOK,
        t0,
        vec![
            (t0 + 1_000, started(1)),
            (
                t0 + 1_500,
                Event::StepFailed {
                    step: "look".into(),
                    attempt: 1,
                    kind: ErrorKind::Status,
                    error: "exit code 1".into(),
                    detail: None,
                    retry_at_ms: Some(t0 + 30 * 60_000),
                },
            ),
            (t0 + 30 * 60_000, started(2)),
        ],
    )
    .await;

    let o = sb.run(&["resume", id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(sb.path().join("looked").exists());
    // The whole run took 3h30m, not the moment this process ran.
    assert!(
        stderr(&o).contains(&format!("run {id} succeeded in 3h30m")),
        "{}",
        stderr(&o)
    );

    let text = stdout(&sb.run(&["show", id]));
    assert!(text.contains("took 3h30m"), "{text}");
    assert!(
        text.contains("by tester after 3h00m down (stopped without a word (killed or crashed))"),
        "{text}"
    );
    assert!(
        text.contains("retried once after a failure, re-run once after a crash"),
        "{text}"
    );

    let shown: Value =
        serde_json::from_str(&stdout(&sb.run(&["show", id, "-o", "json"]))).expect("json");
    let look = &shown["steps"][0];
    let why: Vec<&str> = look["tries"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["why"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(why, ["first", "retry", "crash_rerun"], "{look:#}");
    assert_eq!(look["attempts"], 3);
    assert_eq!(shown["resumes"][0]["by"], "tester");
    assert_eq!(shown["resumes"][0]["after"], "crashed");
    let down = shown["resumes"][0]["down_ms"].as_i64().unwrap_or_default();
    assert!((180 * 60_000..181 * 60_000).contains(&down), "{down}");
    let whole = shown["run"]["duration_ms"].as_i64().unwrap_or_default();
    assert!((210 * 60_000..211 * 60_000).contains(&whole), "{whole}");
}

#[test]
fn the_readme_puts_runbook_on_path_before_the_tour_and_lets_cargo_show_progress() {
    let readme = std::fs::read_to_string(crate::common::repo().join("README.md")).expect("README");
    assert!(
        !readme.contains("cargo run -q"),
        "a quiet first build looks like a hang"
    );
    assert!(readme.contains("cargo run -p runbook-engine -- run service-health"));
    let install = readme
        .find("cargo install --path engine --locked")
        .expect("install command");
    let first_use = readme.find("\nrunbook ").expect("the tour");
    assert!(install < first_use, "install comes after the tour uses it");
}

#[test]
fn the_format_reference_lists_every_status() {
    use runbook_engine::run::state::Status;
    let doc =
        std::fs::read_to_string(crate::common::repo().join("docs/runbook-format.md")).expect("doc");
    for s in [
        Status::Pending,
        Status::Running,
        Status::RetryWait,
        Status::Succeeded,
        Status::Failed,
        Status::Skipped,
        Status::Unknown,
    ] {
        assert!(
            doc.contains(&format!("| `{}` |", s.as_str())),
            "step status {}",
            s.as_str()
        );
    }
    let runs = doc
        .split("A **run** is")
        .nth(1)
        .and_then(|r| r.split("\n\n").next())
        .expect("the run statuses");
    for s in [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Waiting,
    ] {
        assert!(
            runs.contains(&format!("`{}`", s.as_str())),
            "run status {s}"
        );
    }
}

/// An event whose stored text is not JSON (written behind the engine's back) does not stop `show`
/// or `audit` from telling what the rest of the journal says.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_event_is_reported_not_a_crash() {
    let sb = Sandbox::new();
    let id = "00000000000000000000000000000bad";
    let started = Event::StepStarted {
        step: "look".into(),
        attempt: 1,
        class: SideEffect::Read,
        inputs: Value::Null,
        deadline_ms: None,
    };
    seed(&sb, id, LOOK, 1_000, vec![(2_000, started)]).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    for sql in [
        "DROP TRIGGER events_append_only".to_string(),
        format!("UPDATE events SET data = 'not json' WHERE run_id = '{id}' AND seq = 2"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("tamper");
    }
    pool.close().await;

    let o = sb.run(&["show", id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("events [2] are unreadable"),
        "{}",
        stdout(&o)
    );
    let o = sb.run(&["show", id, "-o", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["unreadable"], serde_json::json!([2]));
    assert_eq!(v["steps"][0]["status"], "pending");
    let o = sb.run(&["audit", id]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("unreadable event"), "{}", stdout(&o));
    let o = sb.run(&["resume", id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!sb.path().join("looked").exists());

    // Bytes that are not even text: an error naming the run and the cause, not a panic.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE events SET data = x'ff00' WHERE run_id = '{id}' AND seq = 2"
    )))
    .execute(&pool)
    .await
    .expect("tamper");
    pool.close().await;
    for args in [vec!["show", id], vec!["audit", id], vec!["resume", id]] {
        let o = sb.run(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("run {id} in the database is unreadable")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
