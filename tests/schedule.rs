//! Scheduled runs (`triggers.schedule`) against real stores: the compare-and-set that makes one run
//! per fire on SQLite and PostgreSQL (two tickers at once, as two servers sharing a database), a
//! tick that queues a run a worker claims and drives, a fire whose run cannot be created, and
//! `runbook schedules`. Instants given to `tick` are explicit; nothing here waits on the clock.

use crate::common::{PgDb, Sandbox, stderr, stdout};
use runbook_engine::run::event::{Event, RunStatus, Trigger, now_ms};
use runbook_engine::run::worker;
use runbook_engine::runbook::catalog::{Catalog, Entry};
use runbook_engine::schedule::tick::{Outcome, tick};
use runbook_engine::store::{
    Fire, RunRow, Store, StoreError, postgres::PgStore, sqlite::SqliteStore,
};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;

const MINUTE: i64 = 60_000;

const EVERY_MINUTE: &str = r#"
name: every-minute
triggers:
  schedule: "* * * * *"
params:
  level: { type: string, required: true, default: full }
steps:
  - { id: check, uses: flow.noop, with: { value: "{{ params.level }}" } }
"#;

fn catalog(texts: &[&str]) -> Catalog {
    let engine = runbook_engine::Engine::new();
    let entries = texts
        .iter()
        .map(|text| {
            let plan = runbook_engine::runbook::validate::check(
                "s.yaml",
                text,
                &engine.registry,
                &engine.expr,
            )
            .map_err(|r| r.render(false))
            .expect("valid runbook");
            Entry {
                plan: Arc::new(plan),
                text: (*text).into(),
                sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
                path: "runbooks/s.yaml".into(),
            }
        })
        .collect();
    Catalog {
        entries,
        refused: Vec::new(),
    }
}

fn row(id: &str) -> RunRow {
    RunRow {
        actor: "schedule".into(),
        ..crate::common::run_row(id, "every-minute", 1)
    }
}

fn started(id: &str) -> Vec<runbook_engine::run::event::Record> {
    vec![crate::common::run_started(id, "every-minute", 1)]
}

fn fire(previous: Option<i64>, at: i64) -> Fire {
    Fire {
        runbook: "every-minute".into(),
        expression: "* * * * *".into(),
        previous,
        at,
        error: None,
    }
}

/// The compare-and-set itself, step by step: a stale `previous` moves nothing and creates nothing.
async fn compare_and_set(store: &dyn Store) {
    assert!(
        store
            .fire_schedule(&fire(None, 1_000), None)
            .await
            .expect("first")
    );
    assert!(
        !store
            .fire_schedule(&fire(None, 2_000), None)
            .await
            .expect("again"),
        "a second first sighting loses"
    );
    let (a, b) = (
        "5c4ed0000000000000000000000000a1",
        "5c4ed0000000000000000000000000b2",
    );
    let won = store
        .fire_schedule(&fire(Some(1_000), 60_000), Some((&row(a), &started(a))))
        .await
        .expect("fire");
    assert!(won);
    // A second server read the same last fire: it loses, and its run is not created.
    let lost = store
        .fire_schedule(&fire(Some(1_000), 60_000), Some((&row(b), &started(b))))
        .await
        .expect("stale fire");
    assert!(!lost);
    assert!(matches!(store.run(b).await, Err(StoreError::NoSuchRun(_))));
    assert_eq!(store.run(a).await.expect("run a").id, a);
    let rows = store.schedules().await.expect("schedules");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].last_fire, 60_000);
    assert_eq!(rows[0].last_run.as_deref(), Some(a));
    // A fire whose run could not be created is recorded with the reason.
    let mut failed = fire(Some(60_000), 120_000);
    failed.error = Some("connection `prom` has no url".into());
    assert!(
        store
            .fire_schedule(&failed, None)
            .await
            .expect("failed fire")
    );
    let rows = store.schedules().await.expect("schedules");
    assert_eq!(rows[0].last_run, None);
    assert_eq!(rows[0].last_error, failed.error);
    // A run that cannot be inserted rolls the fire back: the schedule stays where it was.
    let dup = store
        .fire_schedule(&fire(Some(120_000), 180_000), Some((&row(a), &started(a))))
        .await;
    assert!(dup.is_err(), "run id taken");
    assert_eq!(
        store.schedules().await.expect("schedules")[0].last_fire,
        120_000
    );
}

/// Two tickers at each instant, as two servers on one database: one run per fire, never two.
async fn two_tickers(a: &dyn Store, b: &dyn Store) {
    let engine = runbook_engine::Engine::new();
    let c = catalog(&[EVERY_MINUTE]);
    let t0 = now_ms() - 30 * MINUTE;
    let (x, y) = tokio::join!(
        tick(a, &engine, &c, None, t0),
        tick(b, &engine, &c, None, t0)
    );
    let firsts: Vec<Outcome> = [x.expect("tick a"), y.expect("tick b")].concat();
    assert_eq!(
        firsts
            .iter()
            .filter(|o| matches!(o, Outcome::Baseline { .. }))
            .count(),
        1,
        "{firsts:?}"
    );
    const ROUNDS: i64 = 12;
    for round in 1..=ROUNDS {
        let now = t0 + round * MINUTE + 1_000;
        let (x, y) = tokio::join!(
            tick(a, &engine, &c, None, now),
            tick(b, &engine, &c, None, now)
        );
        let outcomes: Vec<Outcome> = [x.expect("tick a"), y.expect("tick b")].concat();
        let started = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Started { .. }))
            .count();
        assert_eq!(started, 1, "round {round}: {outcomes:?}");
        // The other ticker either lost the compare-and-set or read the fire already recorded.
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Started { .. } | Outcome::Taken { .. })),
            "{outcomes:?}"
        );
    }
    let runs = a.runs(100).await.expect("runs");
    assert_eq!(runs.len(), ROUNDS as usize, "one run per fire");
    let mut fires = Vec::new();
    for r in &runs {
        let events = a.events(&r.id).await.expect("events");
        let trigger = events.iter().find_map(|e| match e.event() {
            Ok(Event::RunTriggered {
                trigger: Trigger::Schedule { fire_at_ms, .. },
            }) => Some(fire_at_ms),
            _ => None,
        });
        fires.push(trigger.expect("a scheduled run journals its fire"));
        assert_eq!(r.actor, "schedule");
        assert_eq!(r.params, serde_json::json!({"level": "full"}), "defaults");
    }
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), ROUNDS as usize, "each fire once");
}

#[tokio::test]
async fn sqlite_schedule_compare_and_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(dir.path().join("s.db").to_str().expect("utf-8"), false)
        .await
        .expect("open");
    compare_and_set(&store).await;
}

#[tokio::test]
async fn postgres_schedule_compare_and_set() {
    let db = PgDb::new().await;
    let store = PgStore::open(&db.url).await.expect("open");
    compare_and_set(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_tickers_start_one_run_per_fire() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.db");
    let path = path.to_str().expect("utf-8");
    // Two stores, two connections to one file: two processes as far as SQLite can tell.
    let a = SqliteStore::open(path, false).await.expect("open a");
    let b = SqliteStore::open(path, false).await.expect("open b");
    two_tickers(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_tickers_start_one_run_per_fire() {
    let db = PgDb::new().await;
    let a = PgStore::open(&db.url).await.expect("open a");
    let b = PgStore::open(&db.url).await.expect("open b");
    two_tickers(&a, &b).await;
}

/// Tells the test when a worker finishes a run.
struct Finished(tokio::sync::mpsc::UnboundedSender<String>);

impl worker::Log for Finished {
    fn line(&self, event: &str, fields: &[(&str, &str)]) {
        if event == "finish"
            && let Some((_, run)) = fields.iter().find(|(k, _)| *k == "run")
        {
            let _ = self.0.send((*run).to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_schedule_runs_once_and_a_worker_drives_the_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("s.db").to_str().expect("utf-8"), false)
            .await
            .expect("open"),
    );
    let engine = runbook_engine::Engine::new();
    let c = catalog(&[EVERY_MINUTE]);
    let now = now_ms();
    // First seen two hours ago; then no server ran: 120 fires missed.
    let seen = now - 120 * MINUTE;
    let first = tick(store.as_ref(), &engine, &c, None, seen)
        .await
        .expect("tick");
    assert!(matches!(first[..], [Outcome::Baseline { at_ms, .. }] if at_ms == seen));
    let outcomes = tick(store.as_ref(), &engine, &c, None, now)
        .await
        .expect("tick");
    let [
        Outcome::Started {
            run, fire_at_ms, ..
        },
    ] = &outcomes[..]
    else {
        panic!("one run: {outcomes:?}");
    };
    assert_eq!(*fire_at_ms, now - now % MINUTE, "the latest missed fire");
    assert!(
        tick(store.as_ref(), &engine, &c, None, now)
            .await
            .expect("tick")
            .is_empty(),
        "nothing more is due"
    );
    assert_eq!(store.runs(10).await.expect("runs").len(), 1);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let cfg = worker::Config {
        concurrency: 2,
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(5),
        actor: "worker".into(),
        profile: None,
        max_parallel: 4,
        observer: None,
        nudge: None,
    };
    let w = tokio::spawn(worker::run(
        Arc::clone(&store),
        engine.clone(),
        cfg,
        worker::holder(),
        stop.clone(),
        Arc::new(Finished(tx)),
    ));
    let done = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the worker finishes the run within a minute");
    stop.cancel();
    let summary = w.await.expect("worker");
    assert_eq!(done.as_deref(), Some(run.as_str()));
    assert_eq!(summary.claimed, 1);
    let row = store.run(run).await.expect("run");
    assert_eq!(row.status, RunStatus::Succeeded);
    let events = store.events(run).await.expect("events");
    assert!(events.iter().any(|e| matches!(
        e.event(),
        Ok(Event::RunTriggered { trigger: Trigger::Schedule { ref expression, ref timezone, fire_at_ms } })
            if expression == "* * * * *" && timezone == "UTC" && fire_at_ms == now - now % MINUTE
    )));
}

#[tokio::test]
async fn a_fire_whose_run_cannot_be_created_is_recorded_once_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(dir.path().join("s.db").to_str().expect("utf-8"), false)
        .await
        .expect("open");
    let engine = runbook_engine::Engine::new();
    let text = r#"
name: needs-env
triggers: { schedule: "0 * * * *" }
vars:
  target: "{{ env.RUNBOOK_TEST_SCHEDULE_NEVER_SET }}"
steps:
  - { id: a, uses: flow.noop, with: { value: "{{ vars.target }}" } }
"#;
    let c = catalog(&[text]);
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    tick(&store, &engine, &c, None, t0 + 1)
        .await
        .expect("baseline");
    let outcomes = tick(&store, &engine, &c, None, t0 + 90 * MINUTE)
        .await
        .expect("tick");
    let [
        Outcome::Refused {
            reason, fire_at_ms, ..
        },
    ] = &outcomes[..]
    else {
        panic!("refused: {outcomes:?}");
    };
    assert_eq!(*fire_at_ms, t0 + 60 * MINUTE);
    assert!(reason.contains("target"), "{reason}");
    // Recorded: the next tick does not try again, and the reason is kept.
    assert!(
        tick(&store, &engine, &c, None, t0 + 91 * MINUTE)
            .await
            .expect("tick")
            .is_empty()
    );
    let rows = store.schedules().await.expect("schedules");
    assert_eq!(rows[0].last_error.as_deref(), Some(reason.as_str()));
    assert!(store.runs(10).await.expect("runs").is_empty());
}

#[test]
fn runbook_schedules_lists_last_and_next_fires() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("runbooks")).expect("mkdir");
    sb.write("runbooks/every-minute.yaml", EVERY_MINUTE);
    sb.write(
        "runbooks/weekly.yaml",
        "name: weekly\ntriggers: { schedule: \"0 3 * * 1\", timezone: Europe/Berlin }\nsteps:\n  - { id: a, uses: flow.noop, with: { value: 1 } }\n",
    );
    sb.write(
        "runbooks/unscheduled.yaml",
        "name: unscheduled\nsteps:\n  - { id: a, uses: flow.noop, with: { value: 1 } }\n",
    );
    let o = sb.run(&["schedules"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("RUNBOOK"), "{text}");
    assert!(
        text.contains("every-minute") && text.contains("* * * * *"),
        "{text}"
    );
    assert!(
        text.contains("0 3 * * 1") && text.contains("Europe/Berlin"),
        "{text}"
    );
    assert!(!text.contains("unscheduled"), "{text}");
    assert!(text.contains("never"), "no server has seen them: {text}");

    // A server's ticks, on the same database: a first sighting, then a fire.
    let run = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let store = SqliteStore::open(sb.db().to_str().expect("utf-8"), false)
                .await
                .expect("open");
            let engine = runbook_engine::Engine::new();
            let c = catalog(&[EVERY_MINUTE]);
            let now = now_ms();
            tick(&store, &engine, &c, None, now - 5 * MINUTE)
                .await
                .expect("tick");
            match &tick(&store, &engine, &c, None, now).await.expect("tick")[..] {
                [Outcome::Started { run, .. }] => run.clone(),
                other => panic!("{other:?}"),
            }
        });
    let o = sb.run(&["schedules", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    let every = rows
        .iter()
        .find(|r| r["runbook"] == "every-minute")
        .expect("listed");
    assert_eq!(every["last_run"], serde_json::json!(run));
    assert_eq!(every["timezone"], "UTC");
    assert!(every["next_fire_ms"].as_i64() > every["last_fire_ms"].as_i64());
    let weekly = rows
        .iter()
        .find(|r| r["runbook"] == "weekly")
        .expect("listed");
    assert_eq!(weekly["last_fire_ms"], serde_json::Value::Null);
    let o = sb.run(&["schedules"]);
    assert!(stdout(&o).contains(&run[..12]), "{}", stdout(&o));
}
