//! `runbook audit verify` catches edits made behind the engine's back.

use crate::common::{Sandbox, stderr, stdout};

fn run_example(sb: &Sandbox) -> String {
    let example = crate::common::repo().join("runbooks/examples/service-health.yaml");
    let o = sb.run(&[
        "run",
        example.to_str().expect("path"),
        "-o",
        "json",
        "--quiet",
        "-p",
        "url=http://127.0.0.1:1/",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    v["run"]["id"].as_str().expect("id").to_string()
}

async fn sql(sb: &Sandbox, statements: &[&str]) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&pool)
            .await
            .expect("sql");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_first_edited_event() {
    let sb = Sandbox::new();
    let id = run_example(&sb);
    let second = run_example(&sb);
    let o = sb.run(&["audit", "verify", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("ok"), "{}", stdout(&o));

    // Rewrite what a decision read, as someone covering their tracks might.
    sql(
        &sb,
        &[
            "DROP TRIGGER events_append_only",
            &format!("UPDATE events SET data = replace(data, '\"failed\"', '\"succeeded\"') WHERE run_id = '{id}' AND kind = 'decision_taken'"),
        ],
    )
    .await;
    let seq: i64 = {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
            .await
            .expect("connect");
        let s = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT seq FROM events WHERE run_id = '{id}' AND kind = 'decision_taken'"
        )))
        .fetch_one(&pool)
        .await
        .expect("seq");
        pool.close().await;
        s
    };
    let o = sb.run(&["audit", "verify", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("event {seq}:")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("does not match its hash"),
        "{}",
        stdout(&o)
    );

    // --all reports the broken run and the intact one.
    let o = sb.run(&["audit", "verify", "--all", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let by_id = |r: &str| {
        report
            .as_array()
            .and_then(|a| a.iter().find(|x| x["run"] == r))
            .cloned()
            .expect("in report")
    };
    assert_eq!(by_id(&id)["ok"], false);
    assert_eq!(by_id(&id)["first_bad_event"], seq);
    assert_eq!(by_id(&second)["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_a_deleted_event_and_an_edited_runbook() {
    let sb = Sandbox::new();
    let a = run_example(&sb);
    let b = run_example(&sb);
    sql(
        &sb,
        &[
            &format!("DELETE FROM events WHERE run_id = '{a}' AND seq = 3"),
            &format!(
                "UPDATE runs SET runbook_text = runbook_text || '# harmless?' WHERE id = '{b}'"
            ),
        ],
    )
    .await;
    let o = sb.run(&["audit", "verify", &a]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("event 4: expected event 3"),
        "{}",
        stdout(&o)
    );
    let o = sb.run(&["audit", "verify", &b]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("runbook text does not match"),
        "{}",
        stdout(&o)
    );
}

/// The events of a run as the store has them.
async fn stored_events(sb: &Sandbox, id: &str) -> Vec<runbook_engine::run::event::Record> {
    use runbook_engine::store::Store;
    let store =
        runbook_engine::store::sqlite::SqliteStore::open(sb.db().to_str().expect("utf-8"), false)
            .await
            .expect("open");
    store.events(id).await.expect("events")
}

/// A run written straight through the store, with a valid chain, started `days_ago` with `text` as
/// its runbook; each further event is appended `offset` ms after the start. Returns its number of
/// events.
async fn seed_journal(
    sb: &Sandbox,
    id: &str,
    text: &str,
    days_ago: i64,
    events: Vec<(i64, &str, runbook_engine::run::event::Event)>,
) -> usize {
    use runbook_engine::run::event::{Chain, Event, now_ms};
    use runbook_engine::store::{Durability, RunRow, Store};
    let store =
        runbook_engine::store::sqlite::SqliteStore::open(sb.db().to_str().expect("utf-8"), false)
            .await
            .expect("open");
    let sha = sha256(text);
    let start = now_ms() - days_ago * 86_400_000;
    let mut chain = Chain::new(id);
    let first = chain.seal(
        start,
        "seeder",
        &Event::RunStarted {
            runbook: "seeded".into(),
            runbook_sha256: sha.clone(),
            params: serde_json::Map::new(),
            vars: serde_json::Map::new(),
            engine_version: "test".into(),
        },
    );
    let row = RunRow {
        runbook_sha256: sha,
        runbook_text: text.into(),
        actor: "seeder".into(),
        ..crate::common::run_row(id, "seeded", start)
    };
    store.create_run(&row, &[first]).await.expect("create");
    let n = events.len() + 1;
    for (offset, actor, event) in events {
        let rec = chain.seal(start + offset, actor, &event);
        store
            .append(&[rec], Durability::Process)
            .await
            .expect("append");
    }
    n
}

fn sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A seeded run of an empty runbook that ends with `end` an hour after it started, optionally
/// leaving a lease row behind.
async fn seed_run(
    sb: &Sandbox,
    id: &str,
    days_ago: i64,
    end: Option<runbook_engine::run::event::Event>,
    lease: bool,
) -> usize {
    use runbook_engine::store::Store;
    let events = end.map(|e| (3_600_000, "seeder", e)).into_iter().collect();
    let n = seed_journal(sb, id, "name: seeded\nsteps: []\n", days_ago, events).await;
    if lease {
        let store = runbook_engine::store::sqlite::SqliteStore::open(
            sb.db().to_str().expect("utf-8"),
            false,
        )
        .await
        .expect("open");
        store
            .acquire_lease(id, "someone", 0, 1, None)
            .await
            .expect("lease");
    }
    n
}

fn finished(status: runbook_engine::run::event::RunStatus) -> runbook_engine::run::event::Event {
    runbook_engine::run::event::Event::RunFinished {
        status,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_report_of_the_example_run_shows_decisions_actions_and_integrity() {
    let sb = Sandbox::new();
    let id = run_example(&sb);
    let n = stored_events(&sb, &id).await.len();
    let o = sb.run(&["audit", &id, "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(md.starts_with("# Audit report: service-health run"), "{md}");
    assert!(md.contains("| Started by | tester |"), "{md}");
    assert!(md.contains("| Status | **succeeded** |"), "{md}");
    assert!(
        md.contains("`url` = `\"http://127.0.0.1:1/\"`"),
        "params: {md}"
    );
    // The decision: its condition and the value it read, in the Decisions section.
    let section = |title: &str| -> String {
        let start = md
            .find(&format!("## {title}\n"))
            .unwrap_or_else(|| panic!("no section {title}: {md}"));
        let rest = &md[start + title.len() + 4..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let decisions = section("Decisions");
    assert!(
        decisions
            .contains("`choose` chose `report_down` because `steps.probe.status == 'failed'` held"),
        "{decisions}"
    );
    assert!(
        decisions.contains("Values read: `steps.probe.status` = `\"failed\"`"),
        "{decisions}"
    );
    // Every step of the example is declared `read` (report_down only echoes).
    let actions = section("Actions with side effects");
    assert!(
        actions.contains("This run started no step with side effects"),
        "{actions}"
    );
    let failures = section("Failures");
    assert!(
        failures.contains("`probe`, attempt 1 (retried): connect:"),
        "{failures}"
    );
    assert!(
        failures.contains("`probe`, attempt 2 (final): connect:"),
        "{failures}"
    );
    assert!(section("Operator interventions").contains("None"));
    assert!(
        section("Integrity").contains(&format!("hash chain verified: {n} events")),
        "{md}"
    );

    // The text timeline: one row per event, with who and what.
    let o = sb.run(&["audit", &id]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(
        text.contains("tester  choose: decided report_down because `steps.probe.status == 'failed'` holds; read steps.probe.status=\"failed\""),
        "{text}"
    );
    assert!(
        text.contains(
            "tester  report_down: started (read, attempt 1) with inputs {\"argv\":[\"echo\""
        ),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with(&format!("hash chain verified: {n} events"))
    );

    // JSON: the same, structured.
    let o = sb.run(&["audit", &id, "-o", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let timeline = v["timeline"].as_array().expect("timeline");
    assert_eq!(timeline.len(), n);
    assert!(
        timeline
            .iter()
            .all(|e| e["actor"] == "tester" && e["verified"] == true)
    );
    assert_eq!(timeline[0]["kind"], "run_started");
    assert_eq!(
        v["decisions"][0]["condition"],
        "steps.probe.status == 'failed'"
    );
    assert_eq!(v["decisions"][0]["values"]["steps.probe.status"], "failed");
    assert_eq!(v["actions"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["integrity"]["ok"], true);
    assert_eq!(v["integrity"]["events"], n);
    assert_eq!(v["run"]["actor"], "tester");
}

const APPROVED: &str = r#"
name: approved
params:
  restart: { type: boolean, default: false }
steps:
  - id: flush
    uses: shell.run
    side_effect: idempotent
    approval: required
    with: { argv: [echo, flushed] }
  - id: restart
    uses: shell.run
    needs: [flush]
    when: params.restart
    with: { argv: [echo, restarted] }
"#;

#[test]
fn approvals_and_guards_are_in_the_report() {
    let sb = Sandbox::new();
    let file = sb.write("approved.yaml", APPROVED);
    let o = sb.run(&[
        "run",
        file.to_str().expect("path"),
        "--yes",
        "--quiet",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let id = v["run"]["id"].as_str().expect("id").to_string();
    let o = sb.run(&["audit", &id, "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(
        md.contains("- **flush** (`shell.run`), idempotent, attempt 1"),
        "{md}"
    );
    assert!(
        md.contains("  - Approval: approved by tester (--yes)"),
        "{md}"
    );
    assert!(
        md.contains("tester: approved `flush` (--yes)"),
        "interventions: {md}"
    );
    assert!(
        md.contains("`restart`: guard `params.restart` was **false**, so the step was skipped. Values read: `params.restart` = `false`."),
        "{md}"
    );
    assert!(md.contains("  - Outcome: **succeeded**\n"), "{md}");
    assert!(md.contains("\"flushed\""), "inputs: {md}");

    let o = sb.run(&["audit", &id, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["actions"].as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(v["actions"][0]["outcome"][0]["status"], "succeeded");
    assert_eq!(v["actions"][0]["approval"]["granted"], true);
    assert_eq!(v["actions"][0]["approval"]["by"], "tester");
    assert_eq!(v["actions"][0]["why"], "first");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_of_a_tampered_run_reports_the_break() {
    let sb = Sandbox::new();
    let id = run_example(&sb);
    sql(
        &sb,
        &[
            "DROP TRIGGER events_append_only",
            &format!("UPDATE events SET actor = 'someone-else' WHERE run_id = '{id}' AND kind = 'decision_taken'"),
        ],
    )
    .await;
    let seq = stored_events(&sb, &id)
        .await
        .iter()
        .find(|r| r.kind == "decision_taken")
        .map(|r| r.seq)
        .expect("decision");
    let o = sb.run(&["audit", &id, "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(
        md.contains(&format!("hash chain BROKEN at event {seq} of")),
        "{md}"
    );
    assert!(md.contains("does not match its hash"), "{md}");
    assert!(
        md.contains(&format!(
            "**Warning: this run's journal does not verify from event {seq} on.**"
        )),
        "{md}"
    );
    assert!(!md.contains("hash chain verified"), "{md}");

    let o = sb.run(&["audit", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!("\n!{seq} ")),
        "the bad event is marked: {}",
        stdout(&o)
    );

    let o = sb.run(&["audit", &id, "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["integrity"]["ok"], false);
    assert_eq!(v["integrity"]["first_bad_event"], seq);
    let idx = usize::try_from(seq - 1).expect("index");
    assert_eq!(v["timeline"][idx]["actor"], "someone-else");
    assert_eq!(v["timeline"][idx]["verified"], false);
    assert_eq!(v["timeline"][idx - 1]["verified"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn export_since_gives_exactly_the_recent_events_as_json_lines() {
    let sb = Sandbox::new();
    let old = "0000000000000000000000000000a01d";
    let old_events = seed_run(
        &sb,
        old,
        10,
        Some(finished(runbook_engine::run::event::RunStatus::Succeeded)),
        false,
    )
    .await;
    let recent = run_example(&sb);
    let expected = stored_events(&sb, &recent).await;

    let o = sb.run(&["audit", "export", "--since", "24h"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (line, want) in lines.iter().zip(&expected) {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(v["run"], recent.as_str());
        assert_eq!(v["runbook"], "service-health");
        assert_eq!(v["seq"], want.seq);
        assert_eq!(v["at_ms"], want.at_ms);
        let at: jiff::Timestamp = v["at"].as_str().expect("at").parse().expect("RFC 3339");
        assert_eq!(at.as_millisecond(), want.at_ms);
        assert_eq!(v["actor"], "tester");
        assert_eq!(v["kind"], want.kind.as_str());
        assert_eq!(v["step"].as_str(), want.step.as_deref());
        assert_eq!(v["data"]["type"], want.kind.as_str());
        assert_eq!(v["prev_hash"], want.prev_hash.as_str());
        assert_eq!(v["hash"], want.hash.as_str());
        // `data` is the hashed text itself: the line alone is enough to check the hash.
        let data = &line[line.find(",\"data\":").expect("data") + 8..line.len() - 1];
        assert_eq!(
            runbook_engine::run::event::chain_hash(
                &want.prev_hash,
                &recent,
                want.seq,
                want.at_ms,
                "tester",
                data
            ),
            want.hash
        );
    }

    // A window in the past, by RFC 3339 and by age: only the old run.
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 11);
    let o = sb.run(&[
        "audit",
        "export",
        "--since",
        &since.to_string(),
        "--until",
        "1d",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["run"].as_str().expect("run").to_string()
        })
        .collect();
    assert_eq!(runs, vec![old.to_string(); old_events]);
    assert_eq!(
        stdout(&sb.run(&["audit", "export"])).lines().count(),
        old_events + expected.len()
    );

    let o = sb.run(&["audit", "export", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_only_old_finished_runs_and_every_kept_chain_verifies() {
    use runbook_engine::run::event::{Event, RunStatus};
    let sb = Sandbox::new();
    let recent = run_example(&sb);
    let old_ok = "0000000000000000000000000000000a";
    let old_failed = "0000000000000000000000000000000b";
    let old_interrupted = "0000000000000000000000000000000c";
    let old_waiting = "0000000000000000000000000000000d";
    let younger = "0000000000000000000000000000000e";
    let gone = seed_run(&sb, old_ok, 100, Some(finished(RunStatus::Succeeded)), true).await
        + seed_run(
            &sb,
            old_failed,
            95,
            Some(finished(RunStatus::Failed)),
            false,
        )
        .await;
    let interrupted = Event::RunInterrupted {
        reason: "test".into(),
    };
    seed_run(&sb, old_interrupted, 100, Some(interrupted), true).await;
    let parked = Event::RunParked {
        waiting_for: vec!["x".into()],
    };
    seed_run(&sb, old_waiting, 100, Some(parked), false).await;
    seed_run(
        &sb,
        younger,
        80,
        Some(finished(RunStatus::Succeeded)),
        false,
    )
    .await;
    let ids = |sb: &Sandbox| -> Vec<String> {
        let o = sb.run(&["runs", "-n", "100", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        let mut ids: Vec<String> = v
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&sb).len(), 6);

    let o = sb.run(&["prune", "--older-than", "90d", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("would delete 2 runs ({gone} events)")),
        "{}",
        stdout(&o)
    );
    assert_eq!(ids(&sb).len(), 6, "a dry run deletes nothing");

    let o = sb.run(&["prune", "--older-than", "90d", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["runs"], 2);
    assert_eq!(v["events"], gone);
    assert_eq!(v["dry_run"], false);
    let mut kept = vec![
        recent.clone(),
        old_interrupted.to_string(),
        old_waiting.to_string(),
        younger.to_string(),
    ];
    kept.sort();
    assert_eq!(ids(&sb), kept);
    assert!(stored_events(&sb, old_ok).await.is_empty());
    assert!(stored_events(&sb, old_failed).await.is_empty());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    let leases: Vec<String> = sqlx::query_scalar("SELECT run_id FROM leases ORDER BY run_id")
        .fetch_all(&pool)
        .await
        .expect("leases");
    pool.close().await;
    assert_eq!(
        leases,
        [old_interrupted],
        "the pruned run's lease went with it"
    );

    let o = sb.run(&["audit", "verify", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("4 of 4 runs verify"), "{}", stderr(&o));

    let o = sb.run(&["prune", "--older-than", "3 months"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("days"), "{}", stderr(&o));
}

const FIX: &str = "name: fix\nsteps:\n  - id: restart\n    uses: shell.run\n    with: { argv: [echo, restarted] }\n";

#[tokio::test(flavor = "multi_thread")]
async fn interventions_crash_recovery_and_a_changed_runbook_are_in_the_report() {
    use runbook_engine::run::event::{Event, OperatorAction, Recovery, RunStatus};
    use runbook_steps::SideEffect;
    let sb = Sandbox::new();
    let id = "00000000000000000000000000000f1c";
    let changed = format!("{FIX}# tuned\n");
    let resumed = |actor_sha: &str, text: Option<String>| Event::RunResumed {
        runbook_sha256: actor_sha.to_string(),
        runbook_text: text,
    };
    let n = seed_journal(
        &sb,
        id,
        FIX,
        0,
        vec![
            (
                10,
                "bob",
                Event::StepStarted {
                    step: "restart".into(),
                    attempt: 1,
                    class: SideEffect::Unsafe,
                    inputs: serde_json::json!({"argv": ["echo", "restarted"]}),
                    deadline_ms: None,
                },
            ),
            (
                20,
                "bob",
                Event::RunInterrupted {
                    reason: "SIGINT".into(),
                },
            ),
            (30, "carol", resumed(&sha256(FIX), None)),
            (
                40,
                "carol",
                Event::StepRecovered {
                    step: "restart".into(),
                    attempt: 1,
                    outcome: Recovery::Unknown,
                },
            ),
            (
                50,
                "carol",
                Event::RunParked {
                    waiting_for: vec!["restart".into()],
                },
            ),
            (
                60,
                "alice",
                resumed(&sha256(&changed), Some(changed.clone())),
            ),
            (
                70,
                "alice",
                Event::OperatorDecided {
                    step: "restart".into(),
                    action: OperatorAction::MarkDone,
                    by: "alice".into(),
                },
            ),
            (
                80,
                "alice",
                Event::RunFinished {
                    status: RunStatus::Succeeded,
                    error: None,
                },
            ),
        ],
    )
    .await;
    let o = sb.run(&["audit", id, "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let md = stdout(&o);
    assert!(
        md.contains("- **restart** (`shell.run`), unsafe, attempt 1"),
        "{md}"
    );
    assert!(
        md.contains("  - Outcome: **unknown**: was running when the run stopped; it may or may not have acted; then **succeeded**: operator alice: mark done\n"),
        "{md}"
    );
    for line in [
        "bob: run interrupted: SIGINT",
        "carol: run resumed\n",
        "carol: run parked: waits for an operator to settle restart",
        &format!(
            "alice: run resumed with a CHANGED runbook (sha256 {}, started with {})",
            &sha256(&changed)[..12],
            &sha256(FIX)[..12]
        ),
        "alice: mark done `restart`",
    ] {
        assert!(md.contains(line), "missing {line:?} in {md}");
    }
    assert!(
        md.contains("| `restart` | `shell.run` | unsafe | succeeded | 1 |"),
        "{md}"
    );
    assert!(
        md.contains(&format!("hash chain verified: {n} events")),
        "{md}"
    );

    // The timeline, with columns squeezed to single spaces.
    let o = sb.run(&["audit", id]);
    let rows: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "alice restart: operator alice decided: mark done",
        "carol restart: was running (attempt 1) when the run stopped; outcome UNKNOWN, waits for an operator",
        "bob restart: started (unsafe, attempt 1) with inputs {\"argv\":[\"echo\",\"restarted\"]}",
    ] {
        assert!(
            rows.iter().any(|r| r.ends_with(want)),
            "missing {want:?} in {rows:#?}"
        );
    }
}

#[test]
fn a_refused_approval_is_an_intervention_not_an_action_started() {
    let sb = Sandbox::new();
    let f = sb.write(
        "approve.yaml",
        "name: approve\nsteps:\n  - id: risky\n    uses: shell.run\n    approval: required\n    with: { argv: [touch, did-it] }\n",
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "--quiet", "--detach"]);
    assert_eq!(o.status.code(), Some(4), "parked: {}", stderr(&o));
    let runs: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).expect("json");
    let id = runs[0]["id"].as_str().expect("id");
    let o = sb.run(&["deny", id, "risky", "--reason", "not now"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = sb.run(&["resume", id, "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!sb.path().join("did-it").exists());
    let md = stdout(&sb.run(&["audit", id, "--format", "markdown"]));
    let section = |title: &str| -> String {
        let rest = md
            .split(&format!("## {title}\n"))
            .nth(1)
            .unwrap_or_default();
        rest.split("\n## ").next().unwrap_or_default().to_string()
    };
    let actions = section("Actions with side effects");
    assert!(
        !actions.contains("risky") && actions.contains("started no step with side effects"),
        "a refused step did not start: {md}"
    );
    // Who refused, why, and what was asked for are in the interventions.
    let interventions = section("Operator interventions");
    assert!(
        interventions.contains("tester: refused approval of `risky`: "),
        "{md}"
    );
    assert!(
        interventions.contains("Asked for (unsafe), not run"),
        "{md}"
    );
    assert!(
        interventions.contains("\"did-it\""),
        "the refused inputs are listed: {md}"
    );
    assert!(
        section("Failures").contains("`risky`, attempt 1 (final): approval:"),
        "{md}"
    );

    // The timeline says what the start event was: a request, refused.
    let text = stdout(&sb.run(&["audit", id]));
    assert!(
        text.contains("risky: asked for approval (unsafe, attempt 1)"),
        "{text}"
    );
    assert!(!text.contains("risky: started"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["audit", id, "-o", "json"]))).expect("json");
    assert_eq!(v["actions"].as_array().map(Vec::len), Some(0), "{v:#}");
    let refusal = v["interventions"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "refusal"))
        .unwrap_or_else(|| panic!("no refusal among the interventions: {v:#}"));
    assert_eq!(refusal["asked"]["inputs"]["argv"][1], "did-it");
}
