//! The store's behaviour, against a real SQLite file. The PostgreSQL store must pass the same suite.

use runbook_engine::run::event::{Chain, Event, RunStatus, verify_chain};
use runbook_engine::store::{
    Durability, RunRow, Store, StoreError, postgres::PgStore, sqlite::SqliteStore,
};
use serde_json::{Map, json};

fn row(id: &str, started_at: i64) -> RunRow {
    RunRow {
        id: id.to_string(),
        runbook: "demo".into(),
        title: Some("Demo".into()),
        source_path: Some("runbooks/demo.yaml".into()),
        runbook_sha256: "ab".repeat(32),
        runbook_text: "name: demo\nsteps: []\n".into(),
        params: json!({"p": 1}),
        status: "running".into(),
        actor: "tester".into(),
        started_at,
        finished_at: None,
        parent_run: None,
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
async fn story(store: &dyn Store, raw_sql: impl AsyncFnOnce(String)) {
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
    assert_eq!(run.status, "succeeded");
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
    assert!(matches!(
        store.run("ffff").await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(matches!(
        store.run("'; drop table runs; --").await,
        Err(StoreError::NoSuchRun(_))
    ));
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

    // Editing the journal behind the store's back is caught by the chain.
    raw_sql(format!(
        "UPDATE events SET data = replace(data, 's2', 's9') WHERE run_id = '{id}' AND seq = 4"
    ))
    .await;
    let tampered = store.events(id).await.expect("events");
    let broken = verify_chain(&tampered).expect_err("tampering must be detected");
    assert_eq!(broken.seq, 4, "{broken:?}");
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
        // The table refuses updates; a tamperer would drop the guard first.
        let refused = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await;
        assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
        sqlx::query("DROP TRIGGER events_append_only")
            .execute(&pool)
            .await
            .expect("drop trigger");
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
        let refused = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut c)
            .await;
        assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
        sqlx::query("DROP TRIGGER events_append_only ON events")
            .execute(&mut c)
            .await
            .expect("drop trigger");
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
