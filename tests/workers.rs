//! `runbook worker` processes sharing one PostgreSQL database (a fresh one per test): hundreds of
//! queued runs driven by three workers while one is SIGKILLed, a parked run woken on time by a
//! worker that did not park it, and an approval given with `runbook approve` continued by whichever
//! worker claims the run. Every wait polls the database (or the workers' logs) against a deadline.

use crate::common::{PgDb, Sandbox, stderr, stdout};
use runbook_engine::run::driver::RunOptions;
use runbook_engine::run::launch::{self, Source};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A read, an unsafe step that logs its effect under the run's id, and a check.
const SHORT: &str = r#"
name: short
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { shell: "echo 5" }
    outputs: { n: "{{ result.stdout | trim | int }}" }
  - id: act
    uses: shell.run
    needs: look
    with: { shell: "sleep 0.03; echo {{ run.id }} >> effects.log" }
  - id: check
    uses: flow.assert
    needs: act
    with: { that: "steps.look.n == 5" }
"#;

const NAP: &str = r#"
name: nap
steps:
  - id: nap
    uses: flow.sleep
    with: { for: 2s }
  - id: after
    uses: shell.run
    needs: nap
    with: { shell: "echo {{ run.id }} >> effects.log" }
"#;

const ASK: &str = r#"
name: ask
steps:
  - id: gate
    uses: shell.run
    approval: { required: true, approvers: [carol] }
    with: { shell: "echo {{ run.id }} >> effects.log" }
"#;

pub(crate) struct Worker {
    pub(crate) child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    pub(crate) fn start(sb: &Sandbox, db: &str, name: &str) -> Worker {
        Worker::start_with(sb, db, name, "20s")
    }

    fn start_with(sb: &Sandbox, db: &str, name: &str, grace: &str) -> Worker {
        let log = sb.path().join(format!("worker-{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = sb
            .cmd(&[
                "worker",
                "--concurrency",
                "4",
                "--poll",
                "100ms",
                "--grace",
                grace,
            ])
            .env("RUNBOOK_DB", db)
            .env("RUNBOOK_ACTOR", format!("worker-{name}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn worker");
        Worker { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then its exit (bounded by the deadline of `until`).
    pub(crate) fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", "TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        until(
            "the worker exits after SIGTERM",
            Duration::from_secs(60),
            || self.child.try_wait().expect("wait").is_some(),
        );
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "worker exit: {status}\n{}", self.log());
        assert!(self.log().contains("event=stopped"), "{}", self.log());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `done` until it holds; fails the test at the deadline.
pub(crate) fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A run's status, read from a SQLite file.
fn sqlite_status(sb: &Sandbox, id: &str) -> String {
    let o = sb
        .cmd(&["runs", "-n", "100", "-o", "json"])
        .output()
        .expect("runs");
    let runs: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    runs.as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .and_then(|r| r["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Runs by status.
fn statuses(url: &str) -> BTreeMap<String, i64> {
    block(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                .fetch_all(&mut c)
                .await
                .expect("statuses");
        rows.into_iter().collect()
    })
}

fn ids_with_status(url: &str, status: &str) -> Vec<String> {
    block(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT id FROM runs WHERE status = $1 ORDER BY id")
            .bind(status)
            .fetch_all(&mut c)
            .await
            .expect("ids")
    })
}

fn status_of(url: &str, id: &str) -> String {
    block(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .expect("status")
    })
}

fn effects(sb: &Sandbox) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let text = std::fs::read_to_string(sb.path().join("effects.log")).unwrap_or_default();
    for line in text.lines() {
        *seen.entry(line.to_string()).or_default() += 1;
    }
    seen
}

/// Commands a killed worker started live on in their own process groups: an operator judges what
/// happened only once none works in the sandbox any more.
fn wait_for_orphans(sb: &Sandbox) {
    let dir = std::fs::canonicalize(sb.path()).expect("sandbox path");
    until(
        "no process works in the sandbox",
        Duration::from_secs(20),
        || {
            !std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir))
        },
    );
}

fn enqueue_many(url: &str, text: &str, n: usize) -> Vec<String> {
    block(async {
        let engine = runbook_engine::Engine::new();
        let plan = runbook_engine::runbook::validate::check(
            "short.yaml",
            text,
            &engine.registry,
            &engine.expr,
        )
        .map_err(|r| r.render(false))
        .expect("valid runbook");
        let plan = Arc::new(plan);
        let store = runbook_engine::store::open(url, false).await.expect("open");
        let mut ids = Vec::new();
        for _ in 0..n {
            let source = Source {
                text: text.to_string(),
                sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
                path: Some("short.yaml".into()),
                rerun: None,
            };
            let id = launch::enqueue(
                Arc::clone(&plan),
                store.as_ref(),
                &engine,
                source,
                serde_json::Map::new(),
                &RunOptions::new("tester"),
                launch::Queued::default(),
            )
            .await
            .expect("enqueue");
            ids.push(id);
        }
        ids
    })
}

pub(crate) fn queue(sb: &Sandbox, db: &str, file: &str) -> String {
    queue_with(sb, db, file, &[])
}

fn queue_with(sb: &Sandbox, db: &str, file: &str, params: &[&str]) -> String {
    let mut args = vec!["run", file, "--queue"];
    for p in params {
        args.extend(["-p", p]);
    }
    let o = sb.cmd(&args).env("RUNBOOK_DB", db).output().expect("spawn");
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 32, "prints the run id: {id}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_drive_300_runs_through_a_sigkill() {
    let db = PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || three_workers(&url))
        .await
        .expect("test");
}

fn three_workers(url: &str) {
    let sb = Sandbox::new();
    let ids = enqueue_many(url, SHORT, 300);
    assert_eq!(statuses(url).get("parked"), Some(&300));
    let began = Instant::now();
    let mut a = Worker::start(&sb, url, "a");
    let mut b = Worker::start(&sb, url, "b");
    let mut c = Worker::start(&sb, url, "c");
    until("100 runs succeeded", Duration::from_secs(180), || {
        statuses(url).get("succeeded").copied().unwrap_or(0) >= 100
    });
    a.child.kill().expect("SIGKILL worker a");
    a.child.wait().expect("reap worker a");
    let by_a = a.log().matches("event=claim").count();
    assert!(by_a > 0, "worker a drove runs before it died");
    // Its leases expire; b and c take its runs over.
    until(
        "every run succeeded or waits for an operator",
        Duration::from_secs(240),
        || {
            let s = statuses(url);
            s.get("succeeded").copied().unwrap_or(0) + s.get("waiting").copied().unwrap_or(0) == 300
        },
    );
    let took = began.elapsed();
    b.stop();
    c.stop();
    wait_for_orphans(&sb);
    // An unsafe step in flight at the kill is `unknown`, never run again by a worker: the operator
    // settles it from the effect log.
    let waiting = ids_with_status(url, "waiting");
    let seen = effects(&sb);
    for run in &waiting {
        let shown = sb
            .cmd(&["show", run, "-o", "json"])
            .env("RUNBOOK_DB", url)
            .output()
            .expect("show");
        let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
        let act = shown["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == "act"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(act["status"], "unknown", "{run}: {act}");
        let decision = if seen.contains_key(run) {
            "--mark-done"
        } else {
            "--retry"
        };
        let o = sb
            .cmd(&["resume", run, decision, "act", "-q"])
            .env("RUNBOOK_DB", url)
            .output()
            .expect("resume");
        assert!(o.status.success(), "{run}: {}", stderr(&o));
    }
    let s = statuses(url);
    assert_eq!(s.get("succeeded"), Some(&300), "no run lost: {s:?}");
    let seen = effects(&sb);
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "the effect of run {id} happened once"
        );
    }
    assert_eq!(seen.len(), 300, "no effect of an unknown run");
    // Workers b and c took over the runs a held when it died, or claimed them again once due.
    let taken = b.log().matches("why=orphaned").count() + c.log().matches("why=orphaned").count();
    eprintln!(
        "300 runs ended in {took:?}; worker a claimed {by_a} runs before SIGKILL; {taken} orphaned runs were taken over; {} waited for an operator",
        waiting.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_run_wakes_on_time_on_another_worker() {
    let db = PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || parked_wakes_elsewhere(&url))
        .await
        .expect("test");
}

fn parked_wakes_elsewhere(url: &str) {
    let sb = Sandbox::new();
    let file = sb.write("nap.yaml", NAP).display().to_string();
    let mut a = Worker::start(&sb, url, "a");
    let run = queue(&sb, url, &file);
    until(
        "worker a parks the run at its sleep",
        Duration::from_secs(60),
        || a.log().contains(&format!("event=park run={run}")),
    );
    a.stop();
    assert_eq!(status_of(url, &run), "parked");
    let mut b = Worker::start(&sb, url, "b");
    until("the run succeeds", Duration::from_secs(60), || {
        status_of(url, &run) == "succeeded"
    });
    b.stop();
    assert!(
        b.log().contains(&format!("event=claim run={run}")),
        "{}",
        b.log()
    );
    let shown = sb
        .cmd(&["show", &run, "--events", "-o", "json"])
        .env("RUNBOOK_DB", url)
        .output()
        .expect("show");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
    let events = shown["events"].as_array().cloned().unwrap_or_default();
    let deadline = events
        .iter()
        .find(|e| e["event"]["type"] == "wait_started")
        .and_then(|e| e["event"]["deadline_ms"].as_i64())
        .expect("the sleep's deadline is journaled");
    let woke = events
        .iter()
        .find(|e| e["event"]["type"] == "step_succeeded" && e["event"]["step"] == "nap")
        .and_then(|e| e["at"].as_i64())
        .expect("the sleep ended");
    assert!(
        woke >= deadline,
        "woke before its deadline: {woke} < {deadline}"
    );
    // On time: within a poll and a claim of the deadline, or of b's start if b came up later (the
    // bound is generous for a busy machine; a missed wake-up would never come at all).
    let b_started = b
        .log()
        .lines()
        .find(|l| l.contains("event=start"))
        .and_then(|l| l.strip_prefix("ts="))
        .and_then(|l| l.split(' ').next())
        .and_then(|t| t.parse::<i64>().ok())
        .expect("worker b logs its start");
    let due = deadline.max(b_started);
    assert!(
        woke - due < 5_000,
        "woke {} ms after it was due",
        woke - due
    );
    assert_eq!(effects(&sb).get(&run), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_lets_a_parked_run_continue_on_any_worker() {
    let db = PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || approval_continues(&url))
        .await
        .expect("test");
}

fn approval_continues(url: &str) {
    let sb = Sandbox::new();
    let file = sb.write("ask.yaml", ASK).display().to_string();
    let mut a = Worker::start(&sb, url, "a");
    let mut b = Worker::start(&sb, url, "b");
    let run = queue(&sb, url, &file);
    until(
        "a worker parks the run for its approval",
        Duration::from_secs(60),
        || {
            status_of(url, &run) == "parked"
                && (a.log() + &b.log()).contains(&format!("event=park run={run}"))
        },
    );
    assert!(effects(&sb).is_empty(), "nothing acted before the approval");
    let o = sb
        .cmd(&["approve", &run, "gate"])
        .env("RUNBOOK_DB", url)
        .env("RUNBOOK_ACTOR", "carol")
        .output()
        .expect("approve");
    assert!(o.status.success(), "{}", stderr(&o));
    until("the run succeeds", Duration::from_secs(60), || {
        status_of(url, &run) == "succeeded"
    });
    a.stop();
    b.stop();
    assert_eq!(effects(&sb).get(&run), Some(&1));
    let shown = sb
        .cmd(&["show", &run, "-o", "json"])
        .env("RUNBOOK_DB", url)
        .output()
        .expect("show");
    let text = stdout(&shown);
    assert!(text.contains("carol"), "approved by carol: {text}");
}

/// A step that logs that it started, then holds until its gate file exists.
const GATED: &str = r#"
name: gated
params:
  gate: { type: string }
steps:
  - id: first
    uses: shell.run
    side_effect: idempotent
    with:
      shell: "echo {{ run.id }} first >> effects.log; while [ ! -e {{ params.gate }} ]; do sleep 0.01; done"
  - id: second
    uses: shell.run
    needs: first
    with: { shell: "echo {{ run.id }} second >> effects.log" }
"#;

/// On SIGTERM a worker claims nothing more; a run whose step ends within the grace time parks, due
/// at once, before its next step; one still busy at the end of it is left to another worker as an
/// orphan. On SQLite.
#[test]
fn a_stopped_worker_hands_its_runs_on() {
    let sb = Sandbox::new();
    let db = sb.db().display().to_string();
    let file = sb.write("gated.yaml", GATED).display().to_string();
    // Long enough for the first run's step to end once its gate opens, on a busy machine too.
    let mut a = Worker::start_with(&sb, &db, "a", "10s");
    let soon = queue_with(&sb, &db, &file, &["gate=go"]);
    let late = queue_with(&sb, &db, &file, &["gate=late"]);
    until(
        "both runs are in their first step",
        Duration::from_secs(60),
        || {
            let seen = effects(&sb);
            seen.contains_key(&format!("{soon} first"))
                && seen.contains_key(&format!("{late} first"))
        },
    );
    let pid = a.child.id().to_string();
    let sent = Command::new("kill").args(["-s", "TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()));
    until("worker a stops claiming", Duration::from_secs(30), || {
        a.log().contains("event=stopping")
    });
    sb.write("go", "");
    until("worker a exits", Duration::from_secs(60), || {
        a.child.try_wait().expect("wait").is_some()
    });
    let log = a.log();
    assert!(
        log.contains(&format!("event=park run={soon} status=parked")),
        "{log}"
    );
    assert!(
        log.contains(&format!("event=handed_over run={late}")),
        "{log}"
    );
    assert_eq!(sqlite_status(&sb, &soon), "parked");
    assert_eq!(sqlite_status(&sb, &late), "running");
    assert!(!effects(&sb).contains_key(&format!("{soon} second")));

    sb.write("late", "");
    let mut b = Worker::start(&sb, &db, "b");
    until("both runs succeed", Duration::from_secs(60), || {
        sqlite_status(&sb, &soon) == "succeeded" && sqlite_status(&sb, &late) == "succeeded"
    });
    b.stop();
    let log = b.log();
    assert!(
        log.contains(&format!("event=claim run={soon} runbook=gated why=due")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "event=claim run={late} runbook=gated why=orphaned"
        )),
        "{log}"
    );
    let seen = effects(&sb);
    assert_eq!(seen.get(&format!("{soon} first")), Some(&1), "{seen:?}");
    assert_eq!(seen.get(&format!("{soon} second")), Some(&1), "{seen:?}");
    // The idempotent step in flight at the handover runs again, by the recovery rules.
    assert_eq!(seen.get(&format!("{late} first")), Some(&2), "{seen:?}");
    assert_eq!(seen.get(&format!("{late} second")), Some(&1), "{seen:?}");
}

const ONE_AT_A_TIME: &str = r#"
name: one-at-a-time
concurrency: 1
steps:
  - id: work
    uses: shell.run
    side_effect: idempotent
    with: { shell: "echo start >> turns.log; sleep 0.05; echo end >> turns.log" }
"#;

/// Two workers with room for four runs each still drive one run of a `concurrency: 1` runbook at a
/// time. On SQLite, with both workers claiming from one file.
#[test]
fn a_runbooks_concurrency_holds_across_workers() {
    let sb = Sandbox::new();
    let db = sb.db().display().to_string();
    let file = sb.write("one.yaml", ONE_AT_A_TIME).display().to_string();
    let ids: Vec<String> = (0..6).map(|_| queue(&sb, &db, &file)).collect();
    let mut a = Worker::start(&sb, &db, "a");
    let mut b = Worker::start(&sb, &db, "b");
    until("every run succeeds", Duration::from_secs(120), || {
        ids.iter().all(|id| sqlite_status(&sb, id) == "succeeded")
    });
    a.stop();
    b.stop();
    let turns = std::fs::read_to_string(sb.path().join("turns.log")).unwrap_or_default();
    assert_eq!(turns, "start\nend\n".repeat(6), "runs overlapped");
}

#[test]
fn worker_help_teaches_claims_leases_and_what_happens_when_one_dies() {
    let sb = Sandbox::new();
    let o = sb.run(&["worker", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    for needed in [
        "--concurrency",
        "--poll",
        "--grace",
        "run NAME --queue",
        "FOR UPDATE SKIP LOCKED",
        "renews the run's lease",
        "--mark-done",
        "SIGTERM",
        "concurrency: N",
        "event=claim",
    ] {
        assert!(help.contains(needed), "`{needed}` missing from:\n{help}");
    }
}

/// `run --queue` records the run parked and due, drives nothing, and says so as JSON for scripts;
/// it refuses `--detach`, which means driving it here.
#[test]
fn run_queue_records_a_due_run_without_driving_it() {
    let sb = Sandbox::new();
    let file = sb.write("nap.yaml", NAP).display().to_string();
    let o = sb.run(&["run", &file, "--queue", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let id = out["run"].as_str().unwrap_or_default().to_string();
    assert_eq!(out["status"], "parked");
    assert_eq!(sqlite_status(&sb, &id), "parked");
    let shown = sb.run(&["show", &id, "--events", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["event"]["type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(kinds, ["run_started", "run_detached"]);
    assert!(!sb.path().join("effects.log").exists(), "nothing ran");
    let refused = sb.run(&["run", &file, "--queue", "--detach"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}
