//! Cancelling runs and telling them things from outside: `runbook cancel` against a run another
//! process drives (its command is gone afterwards), an interrupted run and one waiting for an
//! operator (no worker: the command takes the run over), a finished run (refused, nothing recorded),
//! a cancel that only stops a run before it changes anything; and the library calls `runbook serve`
//! makes — a cancel and a note left for a parked run that a worker takes, a note taken by the process
//! driving the run. SQLite and PostgreSQL where the store is concerned. Every wait polls the journal
//! against a deadline; every journal verifies afterwards.

use crate::common::{PgDb, Sandbox, stderr, stdout};
use crate::workers::{Worker, block, queue, until};
use runbook_engine::run::cancel;
use runbook_engine::run::event::{Chain, Event, RunStatus};
use runbook_engine::runbook::model::OnResolved;
use runbook_engine::store::{Asked, Durability, RunRequest, RunRow, Store};
use serde_json::Value;
use std::process::{Child, Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A read, then an unsafe command that starts a background child and waits; then a last step.
const LONG: &str = r#"
name: long
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { shell: "echo looked" }
  - id: work
    uses: shell.run
    needs: look
    with: { shell: "sleep 600 & echo $! > bg.pid; echo $$ > pid; wait" }
  - { id: after, uses: flow.noop, needs: work }
"#;

/// A read, then an idempotent step; each holds until its gate file exists.
const GATED: &str = r#"
name: gated
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { shell: "echo $$ > look.pid; while [ ! -e go-look ]; do sleep 0.01; done" }
  - id: tweak
    uses: shell.run
    side_effect: idempotent
    needs: look
    with: { shell: "echo $$ > tweak.pid; while [ ! -e go-tweak ]; do sleep 0.01; done" }
"#;

/// A read, then a step that waits for approval and logs its effect.
const ASK: &str = r#"
name: ask
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { shell: "echo looked" }
  - id: gate
    uses: shell.run
    needs: look
    approval: required
    with: { shell: "echo {{ run.id }} >> effects.log" }
"#;

/// `runbook` in the sandbox, against database `db` (a SQLite path or a PostgreSQL URL).
fn cmd(sb: &Sandbox, db: &str, args: &[&str]) -> Command {
    let mut c = sb.cmd(args);
    c.env("RUNBOOK_DB", db);
    c
}

fn run(sb: &Sandbox, db: &str, args: &[&str]) -> Output {
    cmd(sb, db, args).output().expect("spawn runbook")
}

fn start(sb: &Sandbox, db: &str, name: &str, text: &str) -> Child {
    let f = sb.write(name, text);
    cmd(sb, db, &["run", f.to_str().expect("path"), "--quiet"])
        .spawn()
        .expect("spawn run")
}

/// A new sandbox with `gated.yaml` running in a child process, its first step (`look`) started:
/// the sandbox, its database, the child and the run's id.
fn looking() -> (Sandbox, String, Child, String) {
    let sb = Sandbox::new();
    let db = sb.db().display().to_string();
    let child = start(&sb, &db, "gated.yaml", GATED);
    let run_id = the_run(&sb, &db);
    pid_in(&sb, "look.pid");
    (sb, db, child, run_id)
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout(o))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

fn shown(sb: &Sandbox, db: &str, run_id: &str) -> Value {
    json(&run(sb, db, &["show", run_id, "-o", "json"]))
}

fn step<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {shown}"))
}

/// The run's events, as `show --events` gives them.
fn events(sb: &Sandbox, db: &str, run_id: &str) -> Vec<Value> {
    json(&run(sb, db, &["show", run_id, "--events", "-o", "json"]))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_event(sb: &Sandbox, db: &str, run_id: &str, kind: &str) -> bool {
    events(sb, db, run_id)
        .iter()
        .any(|e| e["event"]["type"] == kind)
}

fn status(sb: &Sandbox, db: &str, run_id: &str) -> String {
    shown(sb, db, run_id)["run"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The only run in the database, once it is recorded.
fn the_run(sb: &Sandbox, db: &str) -> String {
    let mut id = String::new();
    until("the run is recorded", LIMIT, || {
        let o = run(sb, db, &["runs", "-o", "json"]);
        id = serde_json::from_str::<Value>(&stdout(&o))
            .ok()
            .and_then(|v| v[0]["id"].as_str().map(str::to_string))
            .unwrap_or_default();
        !id.is_empty()
    });
    id
}

/// The PID a step wrote to `file`, once it has.
fn pid_in(sb: &Sandbox, file: &str) -> i32 {
    let mut pid = 0;
    until(&format!("{file} is written"), LIMIT, || {
        pid = std::fs::read_to_string(sb.path().join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string));
    matches!(state.as_deref(), Some(s) if s != "Z" && s != "X")
}

fn verifies(sb: &Sandbox, db: &str, run_id: &str) {
    let o = run(sb, db, &["audit", "verify", run_id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

fn exit_code(mut child: Child) -> Option<i32> {
    child.wait().expect("wait").code()
}

fn store(db: &str) -> Box<dyn Store> {
    block(runbook_engine::store::open(db, false)).expect("open store")
}

/// What the webhook journals on a run when its alert resolves.
fn resolved_note() -> runbook_engine::run::event::Note {
    let body = serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"MLModelDegraded\"}", "status": "resolved",
        "receiver": "runbook", "alerts": [{
            "status": "resolved",
            "labels": {"alertname": "MLModelDegraded", "specialist_type": "technical"},
            "annotations": {"summary": "F1 back above 0.72"},
            "startsAt": "2026-11-30T10:00:00Z", "endsAt": "2026-11-30T10:20:00Z",
            "fingerprint": "f00d"}],
    });
    let n = runbook_engine::trigger::parse(body.to_string().as_bytes()).expect("v4");
    let routed = runbook_engine::trigger::Routed {
        runbook: "ask".into(),
        status: runbook_engine::trigger::AlertStatus::Resolved,
        params: serde_json::Map::new(),
        key: "k".into(),
        fingerprint: "f00d".into(),
        alert: 0,
    };
    n.note(&routed)
}

fn on_postgres(test: fn(&Sandbox, &str)) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(PgDb::new());
    let sb = Sandbox::new();
    test(&sb, &db.url);
    drop(db);
}

fn on_sqlite(test: fn(&Sandbox, &str)) {
    let sb = Sandbox::new();
    let db = sb.db().display().to_string();
    test(&sb, &db);
}

fn driven_run_is_cancelled(sb: &Sandbox, db: &str) {
    let child = start(sb, db, "long.yaml", LONG);
    let run_id = the_run(sb, db);
    let (leader, background) = (pid_in(sb, "pid"), pid_in(sb, "bg.pid"));
    until("the command's process group is journaled", LIMIT, || {
        has_event(sb, db, &run_id, "step_process")
    });
    let o = cmd(sb, db, &["cancel", &run_id, "--reason", "false alarm"])
        .env("RUNBOOK_ACTOR", "bob")
        .output()
        .expect("cancel");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("cancelled"), "{}", stderr(&o));
    assert_eq!(exit_code(child), Some(1), "the run ends failed");
    for pid in [leader, background] {
        until(&format!("process {pid} is gone"), LIMIT, || !alive(pid));
    }
    let v = shown(sb, db, &run_id);
    assert_eq!(v["run"]["status"], "failed");
    assert_eq!(v["run"]["error"], "cancelled by bob (cli): false alarm");
    assert_eq!(step(&v, "look")["status"], "succeeded");
    let work = step(&v, "work");
    assert_eq!(work["status"], "failed");
    assert_eq!(work["error_kind"], "cancelled");
    let error = work["error"].as_str().unwrap_or_default();
    assert!(error.contains("its effect is unknown"), "{error}");
    assert_eq!(
        step(&v, "after")["status"],
        "pending",
        "nothing more started"
    );
    let cancel = v["interventions"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["kind"] == "cancel"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cancel["by"], "bob");
    assert_eq!(cancel["reason"], "false alarm");
    let text = stdout(&run(sb, db, &["show", &run_id]));
    assert!(text.contains("by bob (cli): false alarm"), "{text}");
    verifies(sb, db, &run_id);
}

#[test]
fn a_run_driven_by_another_process_is_cancelled_and_its_commands_are_gone() {
    on_sqlite(driven_run_is_cancelled);
}

#[test]
fn a_run_driven_by_another_process_is_cancelled_on_postgres() {
    on_postgres(driven_run_is_cancelled);
}

fn finished_run_is_refused(sb: &Sandbox, db: &str) {
    let f = sb.write(
        "quick.yaml",
        "name: quick\nsteps:\n  - { id: a, uses: flow.noop }\n",
    );
    let o = run(sb, db, &["run", f.to_str().expect("path"), "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run_id = the_run(sb, db);
    let before = events(sb, db, &run_id).len();
    let o = run(sb, db, &["cancel", &run_id[..12], "--reason", "too late"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "run {run_id} already succeeded: there is nothing to cancel"
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(events(sb, db, &run_id).len(), before, "nothing journaled");
    let s = store(db);
    assert_eq!(
        block(s.run_requests(&run_id)).expect("requests"),
        Vec::<RunRequest>::new(),
        "nothing recorded"
    );
    // No reason, no cancel.
    let o = run(sb, db, &["cancel", &run_id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    verifies(sb, db, &run_id);
}

#[test]
fn cancelling_a_finished_run_is_refused_and_records_nothing() {
    on_sqlite(finished_run_is_refused);
}

#[test]
fn cancelling_a_finished_run_is_refused_on_postgres() {
    on_postgres(finished_run_is_refused);
}

#[test]
fn an_interrupted_run_is_cancelled_with_no_worker() {
    let (sb, db, child, run_id) = looking();
    let sent = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()));
    assert_eq!(exit_code(child), Some(130));
    assert_eq!(status(&sb, &db, &run_id), "interrupted");
    let o = run(
        &sb,
        &db,
        &["cancel", &run_id, "--reason", "not needed any more"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = shown(&sb, &db, &run_id);
    assert_eq!(v["run"]["status"], "failed");
    let look = step(&v, "look");
    assert_eq!(look["error_kind"], "cancelled");
    assert_eq!(
        look["error"],
        "the run was cancelled by tester (cli) while this step ran: not needed any more; the step was stopped"
    );
    assert_eq!(step(&v, "tweak")["status"], "pending");
    let kinds: Vec<&str> = v["interventions"]
        .as_array()
        .map(|i| i.iter().filter_map(|i| i["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["interrupt", "cancel"]);
    let resumable = json(&run(&sb, &db, &["runs", "--resumable", "-o", "json"]));
    assert_eq!(resumable, Value::Array(vec![]), "nothing left to resume");
    verifies(&sb, &db, &run_id);
}

/// An unsafe step whose command outlived the killed engine: resumed, the run waits for an operator;
/// the cancel stops the command and settles the step.
const LEFT_RUNNING: &str = r#"
name: left-running
steps:
  - id: long
    uses: shell.run
    with: { shell: "echo $$ > pid; exec sleep 600" }
"#;

#[test]
fn a_run_waiting_for_an_operator_is_cancelled_and_a_command_left_running_is_stopped() {
    let sb = Sandbox::new();
    let db = sb.db().display().to_string();
    let mut child = start(&sb, &db, "left.yaml", LEFT_RUNNING);
    let run_id = the_run(&sb, &db);
    let pid = pid_in(&sb, "pid");
    until("the command's process group is journaled", LIMIT, || {
        has_event(&sb, &db, &run_id, "step_process")
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(alive(pid), "the command outlived the killed engine");
    let o = run(&sb, &db, &["resume", &run_id, "--quiet"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(status(&sb, &db, &run_id), "waiting");
    let o = run(&sb, &db, &["cancel", &run_id, "--reason", "giving up"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    until("the command is gone", LIMIT, || !alive(pid));
    let v = shown(&sb, &db, &run_id);
    assert_eq!(v["run"]["status"], "failed");
    let long = step(&v, "long");
    assert_eq!(long["error_kind"], "cancelled");
    let error = long["error"].as_str().unwrap_or_default();
    assert!(error.contains("outcome was unknown"), "{error}");
    let audit = stdout(&run(&sb, &db, &["audit", &run_id]));
    assert!(
        audit.contains(&format!(
            "its process group {pid} was still running after the crash"
        )),
        "{audit}"
    );
    assert!(audit.contains("the run being cancelled"), "{audit}");
    verifies(&sb, &db, &run_id);
}

#[test]
fn only_before_changes_stops_a_run_still_reading_and_is_refused_once_a_step_acts() {
    // Still reading: cancelled.
    let (sb, db, child, run_id) = looking();
    let o = run(
        &sb,
        &db,
        &[
            "cancel",
            &run_id,
            "--reason",
            "resolved",
            "--only-before-changes",
            "-o",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["outcome"], "cancelled");
    assert_eq!(exit_code(child), Some(1));
    verifies(&sb, &db, &run_id);

    // An idempotent step has started: refused, journaled, and the run goes on to succeed.
    let (sb, db, child, run_id) = looking();
    sb.write("go-look", "");
    pid_in(&sb, "tweak.pid");
    let o = run(
        &sb,
        &db,
        &[
            "cancel",
            &run_id,
            "--reason",
            "resolved",
            "--only-before-changes",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("refused the cancel and goes on: step `tweak` (idempotent) has started"),
        "{}",
        stderr(&o)
    );
    sb.write("go-tweak", "");
    assert_eq!(exit_code(child), Some(0), "the run goes on");
    let v = shown(&sb, &db, &run_id);
    assert_eq!(v["run"]["status"], "succeeded");
    let refused = v["interventions"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["kind"] == "cancel_refused"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(refused["by"], "tester");
    assert!(
        refused["why"]
            .as_str()
            .is_some_and(|w| w.contains("`tweak`")),
        "{refused}"
    );
    verifies(&sb, &db, &run_id);
}

#[test]
fn a_note_reaches_the_process_driving_the_run() {
    let (sb, db, child, run_id) = looking();
    let s = store(&db);
    let r = block(cancel::note(
        s.as_ref(),
        &run_id,
        "alertmanager",
        "alertmanager",
        resolved_note(),
    ))
    .expect("note");
    assert!(r.driven, "{r:?}");
    assert_eq!(r.status, RunStatus::Running);
    until("the note is journaled", LIMIT, || {
        has_event(&sb, &db, &run_id, "run_noted")
    });
    sb.write("go-look", "");
    sb.write("go-tweak", "");
    assert_eq!(exit_code(child), Some(0), "a note changes nothing");
    let v = shown(&sb, &db, &run_id);
    assert_eq!(v["run"]["status"], "succeeded");
    let note = &v["notes"][0];
    assert_eq!(note["source"], "alertmanager");
    assert_eq!(note["status"], "resolved");
    assert_eq!(
        note["summary"],
        "alert MLModelDegraded resolved at 2026-11-30T10:20:00Z"
    );
    assert_eq!(note["detail"]["labels"]["specialist_type"], "technical");
    assert_eq!(
        v["notes"].as_array().map(Vec::len),
        Some(1),
        "journaled once"
    );
    let text = stdout(&run(&sb, &db, &["show", &run_id]));
    assert!(
        text.contains("from alertmanager (alertmanager): alert MLModelDegraded resolved"),
        "{text}"
    );
    verifies(&sb, &db, &run_id);
}

/// A run a worker parked at its approval: the library calls `runbook serve` makes leave a note and
/// then a cancel (as `on_resolved: cancel` does); each makes the run due, and the worker that claims
/// it journals them.
#[tokio::test(flavor = "multi_thread")]
async fn a_note_and_a_cancel_left_for_a_parked_run_are_taken_by_a_worker() {
    let db = PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || parked_run_requests(&url))
        .await
        .expect("test");
}

fn parked_run_requests(url: &str) {
    let sb = Sandbox::new();
    let file = sb.write("ask.yaml", ASK).display().to_string();
    let mut w = Worker::start(&sb, url, "a");
    let run_id = queue(&sb, url, &file);
    let parks = |w: &Worker| w.log().matches(&format!("event=park run={run_id}")).count();
    until("the worker parks the run at its approval", LIMIT, || {
        parks(&w) == 1
    });
    let s = store(url);
    let r = block(cancel::note(
        s.as_ref(),
        &run_id,
        "alertmanager",
        "alertmanager",
        resolved_note(),
    ))
    .expect("note");
    // Whether it is driven is a moment's answer: a worker may claim the run as soon as it is due.
    assert_eq!(r.status, RunStatus::Parked);
    until(
        "a worker journals the note and parks the run again",
        LIMIT,
        || parks(&w) == 2,
    );
    assert!(has_event(&sb, url, &run_id, "run_noted"));
    assert_eq!(status(&sb, url, &run_id), "parked");

    // What the webhook does when the alert resolves and the runbook says `on_resolved: cancel`.
    let done = block(cancel::resolved(
        s.as_ref(),
        &run_id,
        OnResolved::Cancel,
        resolved_note(),
    ))
    .expect("resolved");
    assert_eq!(done.len(), 2, "a note and a cancel: {done:?}");
    assert_eq!(done[0].status, RunStatus::Parked);
    until("a worker cancels the run", LIMIT, || {
        status(&sb, url, &run_id) == "failed"
    });
    w.stop();
    // Claimed to start, for the first note, and for the resolution (once more if a worker came
    // between its note and its cancel).
    let claims = w
        .log()
        .matches(&format!("event=claim run={run_id}"))
        .count();
    assert!(claims >= 3, "claimed {claims} times: {}", w.log());
    let v = shown(&sb, url, &run_id);
    assert_eq!(
        v["run"]["error"],
        "cancelled by alertmanager (alertmanager): alert MLModelDegraded resolved at 2026-11-30T10:20:00Z"
    );
    assert_eq!(v["notes"].as_array().map(Vec::len), Some(2));
    assert_eq!(step(&v, "gate")["status"], "pending", "denied, never run");
    let journal = events(&sb, url, &run_id);
    assert!(
        journal
            .iter()
            .any(|e| e["event"]["type"] == "approval_denied" && e["event"]["by"] == "alertmanager")
    );
    assert!(journal.iter().any(
        |e| e["event"]["type"] == "run_cancelled" && e["event"]["only_before_changes"] == true
    ));
    assert!(
        !sb.path().join("effects.log").exists(),
        "the step that waited for approval never acted"
    );
    verifies(&sb, url, &run_id);
}

/// The inbox in the store: recording a request makes a parked run due, requests come back oldest
/// first, and pruning a run removes its requests with it.
async fn inbox_story(s: &dyn Store) {
    let id = "0c0c0c0c0c0c00000000000000000001";
    let mut chain = Chain::new(id);
    let first = chain.seal(
        1_000,
        "tester",
        &Event::RunStarted {
            runbook: "demo".into(),
            runbook_sha256: "ab".repeat(32),
            params: serde_json::Map::new(),
            vars: serde_json::Map::new(),
            engine_version: "test".into(),
        },
    );
    let parked = chain.seal(
        1_001,
        "tester",
        &Event::RunDetached {
            wake_at_ms: None,
            approvals: vec!["gate".into()],
        },
    );
    let row = RunRow {
        status: RunStatus::Parked,
        actor: "tester".into(),
        ..crate::common::run_row(id, "demo", 1_000)
    };
    s.create_run(&row, &[first, parked]).await.expect("create");
    assert!(
        s.claim("w", 5_000, 1_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "waiting only for an approval: not due"
    );
    let request = |id: &str, at: i64, asked: Asked| RunRequest {
        id: id.into(),
        by: "bob".into(),
        how: "api".into(),
        at,
        asked,
    };
    let note = request(
        "0198000000000000000000000000000b",
        6_000,
        Asked::Note(resolved_note()),
    );
    let cancel = request(
        "0198000000000000000000000000000a",
        6_500,
        Asked::Cancel {
            reason: "r".into(),
            only_before_changes: true,
        },
    );
    s.record_request(id, &note).await.expect("record note");
    s.record_request(id, &cancel).await.expect("record cancel");
    assert_eq!(
        s.run_requests(id).await.expect("requests"),
        [note.clone(), cancel.clone()],
        "oldest first"
    );
    let claimed = s.claim("w", 7_000, 1_000, 10).await.expect("claim");
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.run_id.as_str())
            .collect::<Vec<_>>(),
        [id],
        "a request makes a parked run due"
    );
    assert!(
        s.record_request(id, &note).await.is_err(),
        "a request is recorded once"
    );
    let end = chain.seal(
        8_000,
        "tester",
        &Event::RunFinished {
            status: RunStatus::Failed,
            error: None,
        },
    );
    s.append(&[end], Durability::Process).await.expect("end");
    let pruned = s.prune(9_000, false).await.expect("prune");
    assert_eq!(pruned.runs, 1);
    assert!(s.run_requests(id).await.expect("requests").is_empty());
}

#[tokio::test]
async fn the_request_inbox_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.db");
    let s = runbook_engine::store::sqlite::SqliteStore::open(path.to_str().expect("utf-8"), false)
        .await
        .expect("open");
    inbox_story(&s).await;
}

#[tokio::test]
async fn the_request_inbox_on_postgres() {
    let db = PgDb::new().await;
    let s = runbook_engine::store::postgres::PgStore::open(&db.url)
        .await
        .expect("open");
    inbox_story(&s).await;
}
