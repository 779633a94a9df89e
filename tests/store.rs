//! The store's behaviour, against a real SQLite file. The PostgreSQL store must pass the same suite.

use runbook_engine::run::event::{Chain, Event, RunStatus, verify_chain};
use runbook_engine::store::{
    Durability, EventKey, Pruned, RunRow, Store, StoreError, postgres::PgStore, sqlite::SqliteStore,
};
use serde_json::{Map, json};

fn row(id: &str, started_at: i64) -> RunRow {
    RunRow {
        title: Some("Demo".into()),
        source_path: Some("runbooks/demo.yaml".into()),
        params: json!({"p": 1}),
        actor: "tester".into(),
        ..crate::common::run_row(id, "demo", started_at)
    }
}

fn started() -> Event {
    Event::RunStarted {
        runbook: "demo".into(),
        runbook_sha256: "ab".repeat(32),
        params: Map::new(),
        vars: Map::new(),
        engine_version: "test".into(),
    }
}

fn skipped(step: &str) -> Event {
    Event::StepSkipped {
        step: step.into(),
        reason: "test".into(),
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("s.db").to_str().expect("utf-8"), false)
        .await
        .expect("open")
}

/// The suite every store implementation must pass.
async fn story(store: &dyn Store, raw_sql: impl AsyncFn(String)) {
    let id = "0a1b2c3d4e5f00000000000000000001";
    let mut chain = Chain::new(id);
    let first = chain.seal(1_000, "tester", &started());
    store
        .create_run(&row(id, 1_000), std::slice::from_ref(&first))
        .await
        .expect("create");
    let batch: Vec<_> = (0..5)
        .map(|n| chain.seal(1_001 + n, "tester", &skipped(&format!("s{n}"))))
        .collect();
    store
        .append(&batch, Durability::Process)
        .await
        .expect("append");
    let fin = chain.seal(
        2_000,
        "tester",
        &Event::RunFinished {
            status: RunStatus::Succeeded,
            error: None,
        },
    );
    store
        .append(std::slice::from_ref(&fin), Durability::Power)
        .await
        .expect("append durable");

    let events = store.events(id).await.expect("events");
    assert_eq!(events.len(), 7);
    assert_eq!(events[0], first);
    assert_eq!(events.last(), Some(&fin));
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(events[3].event().expect("parses"), skipped("s2"));
    verify_chain(&events).expect("chain verifies");

    let run = store.run(&id[..8]).await.expect("by prefix");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.finished_at, Some(2_000));
    assert_eq!(run.params, json!({"p": 1}));
    assert_eq!(run.runbook_text, "name: demo\nsteps: []\n");

    // A second run sharing the prefix makes the prefix ambiguous, not a coin toss.
    let id2 = "0a1b2c3d4e5f00000000000000000002";
    let mut c2 = Chain::new(id2);
    store
        .create_run(&row(id2, 3_000), &[c2.seal(3_000, "tester", &started())])
        .await
        .expect("create 2");
    assert!(matches!(
        store.run("0a1b2c3d").await,
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    // The prefix's range holds exactly the ids that start with it, whatever its length or case.
    assert_eq!(store.run(id2).await.expect("full id").id, id2);
    assert_eq!(store.run(&id.to_uppercase()).await.expect("upper").id, id);
    assert!(matches!(
        store.run(&id[..31]).await,
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    for none in ["0a1b2c3d4e5f00000000000000000003", "0a1b2c3e", "0a1b2c3c"] {
        assert!(
            matches!(store.run(none).await, Err(StoreError::NoSuchRun(_))),
            "{none}"
        );
    }
    assert!(matches!(
        store.run("ffff").await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(matches!(
        store.run("'; drop table runs; --").await,
        Err(StoreError::NoSuchRun(_))
    ));
    // Not id characters (once LIKE wildcards): `%` matches no run rather than every run.
    for wild in ["%", "_", "0a1b%"] {
        assert!(
            matches!(store.run(wild).await, Err(StoreError::NoSuchRun(_))),
            "{wild}"
        );
    }
    let listed = store.runs(10).await.expect("runs");
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [id2, id]
    );

    // The same sequence number twice is refused: the journal cannot fork.
    let dup = Chain::new(id).seal(5_000, "tester", &skipped("x"));
    assert!(store.append(&[dup], Durability::Process).await.is_err());
    assert_eq!(store.events(id).await.expect("events").len(), 7);

    // Leases: one driver at a time; expiry and a known-dead holder free it.
    assert_eq!(
        store
            .acquire_lease(id, "A", 10_000, 20_000, None)
            .await
            .expect("lease"),
        None
    );
    assert_eq!(
        store
            .acquire_lease(id, "B", 11_000, 21_000, None)
            .await
            .expect("lease"),
        Some(("A".to_string(), 20_000))
    );
    assert!(store.renew_lease(id, "A", 30_000).await.expect("renew"));
    assert_eq!(
        store
            .acquire_lease(id, "A", 12_000, 40_000, None)
            .await
            .expect("re-take"),
        None
    );
    assert_eq!(
        store
            .acquire_lease(id, "B", 40_001, 50_000, None)
            .await
            .expect("expired"),
        None
    );
    assert!(
        !store.renew_lease(id, "A", 60_000).await.expect("renew"),
        "A lost its lease"
    );
    assert_eq!(
        store
            .acquire_lease(id, "C", 41_000, 51_000, Some("B"))
            .await
            .expect("stale"),
        None
    );
    store
        .release_lease(id, "B")
        .await
        .expect("release by a non-holder is a no-op");
    assert_eq!(
        store.lease(id).await.expect("lease"),
        Some(("C".to_string(), 51_000))
    );
    store.release_lease(id, "C").await.expect("release");
    assert_eq!(store.lease(id).await.expect("lease"), None);

    // Two more runs: one interrupted long ago (resumable: never pruned), one that failed long ago and
    // still has a lease row (pruned whole). Their events interleave in time with the first run's.
    let id3 = "0a1b2c3d4e5f00000000000000000003";
    let mut c3 = Chain::new(id3);
    store
        .create_run(&row(id3, 1_003), &[c3.seal(1_003, "tester", &started())])
        .await
        .expect("create 3");
    let interrupted = Event::RunInterrupted {
        reason: "test".into(),
    };
    store
        .append(
            &[
                c3.seal(1_003, "other", &skipped("a")),
                c3.seal(1_500, "tester", &interrupted),
            ],
            Durability::Process,
        )
        .await
        .expect("append 3");
    let id4 = "0a1b2c3d4e5f00000000000000000004";
    let mut c4 = Chain::new(id4);
    store
        .create_run(&row(id4, 1_100), &[c4.seal(1_100, "tester", &started())])
        .await
        .expect("create 4");
    let failed = Event::RunFinished {
        status: RunStatus::Failed,
        error: Some("test".into()),
    };
    store
        .append(&[c4.seal(1_800, "tester", &failed)], Durability::Process)
        .await
        .expect("append 4");
    assert_eq!(
        store
            .acquire_lease(id4, "D", 1_100, 1_200, None)
            .await
            .expect("lease 4"),
        None
    );
    assert_eq!(
        store.run(id3).await.expect("run 3").finished_at,
        Some(1_500)
    );

    // Events across runs by time: since <= at < until, in (at, run, seq) order.
    let key = |r: &runbook_engine::run::event::Record| (r.at_ms, r.run_id.clone(), r.seq);
    let window = store
        .events_between(1_003, 1_100, None, 100)
        .await
        .expect("window");
    assert_eq!(
        window.iter().map(key).collect::<Vec<_>>(),
        [
            (1_003, id.to_string(), 4),
            (1_003, id3.to_string(), 1),
            (1_003, id3.to_string(), 2),
            (1_004, id.to_string(), 5),
            (1_005, id.to_string(), 6),
        ]
    );
    assert_eq!(window[2].actor, "other");
    assert_eq!(
        window[0],
        store.events(id).await.expect("events")[3],
        "whole records"
    );
    // Paging by key, two at a time, yields every event exactly once, in order.
    let mut everything = Vec::new();
    for r in [id, id2, id3, id4] {
        everything.extend(store.events(r).await.expect("events"));
    }
    everything.sort_by_key(key);
    let mut paged: Vec<runbook_engine::run::event::Record> = Vec::new();
    loop {
        let after = paged.last().map(|r| EventKey {
            at: r.at_ms,
            run_id: &r.run_id,
            seq: r.seq,
        });
        let page = store
            .events_between(i64::MIN, i64::MAX, after, 2)
            .await
            .expect("page");
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged.len(), 13);
    assert_eq!(paged, everything);

    // Pruning: whole runs that finished (succeeded or failed) strictly before the cutoff; a dry run
    // only counts. The first run finished at exactly 2_000 and stays.
    assert_eq!(
        store.prune(2_000, true).await.expect("dry run"),
        Pruned { runs: 1, events: 2 }
    );
    assert_eq!(store.events(id4).await.expect("events").len(), 2);
    assert!(store.lease(id4).await.expect("lease").is_some());
    assert_eq!(
        store.prune(2_000, false).await.expect("prune"),
        Pruned { runs: 1, events: 2 }
    );
    assert!(matches!(
        store.run(id4).await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(store.events(id4).await.expect("events").is_empty());
    assert_eq!(store.lease(id4).await.expect("lease"), None);
    for (r, n) in [(id, 7), (id2, 1), (id3, 3)] {
        let kept = store.events(r).await.expect("events");
        assert_eq!(kept.len(), n, "{r}");
        verify_chain(&kept).expect("kept chains verify");
    }
    // However old, running and interrupted runs are never pruned.
    assert_eq!(
        store.prune(i64::MAX, true).await.expect("dry run"),
        Pruned { runs: 1, events: 7 }
    );
    assert_eq!(
        store.prune(2_000, false).await.expect("again"),
        Pruned::default()
    );

    // Editing the journal behind the store's back is caught by the chain.
    raw_sql(format!(
        "UPDATE events SET data = replace(data, 's2', 's9') WHERE run_id = '{id}' AND seq = 4"
    ))
    .await;
    let tampered = store.events(id).await.expect("events");
    let broken = verify_chain(&tampered).expect_err("tampering must be detected");
    assert_eq!(broken.seq, 4, "{broken:?}");

    // A status this engine never writes is an error naming the run, wherever the row is read.
    raw_sql(format!(
        "UPDATE runs SET status = 'exploded' WHERE id = '{id}'"
    ))
    .await;
    for err in [
        store.run(id).await.map(|_| ()),
        store.runs(10).await.map(|_| ()),
    ] {
        let err = err.expect_err("unknown status");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(id), "{err}");
        assert!(err.to_string().contains("`exploded`"), "{err}");
    }

    // A run created with its lease: both in one transaction, or neither.
    let id5 = "0a1b2c3d4e5f00000000000000000005";
    let mut c5 = Chain::new(id5);
    let first = c5.seal(5_000, "tester", &started());
    store
        .create_run_leased(&row(id5, 5_000), std::slice::from_ref(&first), "E", 20_000)
        .await
        .expect("create leased");
    assert_eq!(
        store.lease(id5).await.expect("lease"),
        Some(("E".to_string(), 20_000))
    );
    store.release_lease(id5, "E").await.expect("release");
    store
        .create_run_leased(&row(id5, 5_000), &[first], "F", 30_000)
        .await
        .expect_err("the run exists");
    assert_eq!(
        store.lease(id5).await.expect("lease"),
        None,
        "nothing half-made"
    );
}

#[tokio::test]
async fn sqlite_store_story() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = sqlite(&dir).await;
    let path = dir.path().join("s.db");
    story(&store, async |sql: String| {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        if sql.starts_with("UPDATE events") {
            // The table refuses updates; a tamperer would drop the guard first.
            let refused = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await;
            assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
            sqlx::query("DROP TRIGGER events_append_only")
                .execute(&pool)
                .await
                .expect("drop trigger");
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("tamper");
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn sqlite_store_reopens_an_existing_database() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let store = sqlite(&dir).await;
        let mut c = Chain::new("00000000000000000000000000000abc");
        store
            .create_run(
                &row("00000000000000000000000000000abc", 1),
                &[c.seal(1, "t", &started())],
            )
            .await
            .expect("create");
    }
    let store = sqlite(&dir).await;
    assert_eq!(store.runs(5).await.expect("runs").len(), 1);
}

#[tokio::test]
async fn sqlite_open_errors_name_the_path_and_the_cause() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nope/x.db");
    let err = SqliteStore::open(missing.to_str().expect("utf-8"), false)
        .await
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("nope") && msg.contains("does not exist"),
        "{msg}"
    );
    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        "this is not sqlite, just text long enough to look like a header........",
    )
    .expect("write");
    let err = SqliteStore::open(junk.to_str().expect("utf-8"), false)
        .await
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("junk.db") || err.to_string().contains("not a database"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_store_story() {
    let db = crate::common::PgDb::new().await;
    let store = PgStore::open(&db.url).await.expect("open");
    let url = db.url.clone();
    story(&store, async |sql: String| {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        if sql.starts_with("UPDATE events") {
            let refused = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut c)
                .await;
            assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
            sqlx::query("DROP TRIGGER events_append_only ON events")
                .execute(&mut c)
                .await
                .expect("drop trigger");
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .expect("tamper");
    })
    .await;
}

#[tokio::test]
async fn postgres_store_reopens_and_migrations_are_idempotent() {
    let db = crate::common::PgDb::new().await;
    {
        let store = PgStore::open(&db.url).await.expect("open");
        let mut c = Chain::new("00000000000000000000000000000abc");
        store
            .create_run(
                &row("00000000000000000000000000000abc", 1),
                &[c.seal(1, "t", &started())],
            )
            .await
            .expect("create");
    }
    let store = PgStore::open(&db.url).await.expect("reopen");
    assert_eq!(store.runs(5).await.expect("runs").len(), 1);
}

#[tokio::test]
async fn postgres_open_errors_hide_the_password() {
    let err = PgStore::open("postgres://someone:s3cret@127.0.0.1:1/x")
        .await
        .err()
        .expect("nothing listens on port 1");
    let msg = err.to_string();
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
}

#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    // Several real processes race to create and migrate the same new file, round after round.
    let dir = tempfile::tempdir().expect("tmp");
    for round in 0..10 {
        let db = dir.path().join(format!("race{round}.db"));
        let spawned: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(crate::common::bin())
                    .args(["runs", "-o", "json"])
                    .env("RUNBOOK_DB", &db)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for c in spawned {
            let o = c.wait_with_output().expect("wait");
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
