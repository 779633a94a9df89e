//! Claiming due runs (`Store::claim`), on a real SQLite file and a real PostgreSQL database: what is
//! due and what is not, expired leases, approval answers, per-runbook concurrency, and concurrent
//! claimers never getting the same run. Times are explicit arguments, so nothing here waits.

use runbook_engine::run::driver::Answer;
use runbook_engine::run::event::{Chain, Event, Record, RunStatus};
use runbook_engine::store::{
    Durability, RunKind, RunRow, Store, StoredAnswer, postgres::PgStore, sqlite::SqliteStore,
};
use serde_json::Map;
use std::collections::BTreeSet;
use std::sync::Arc;

const LEASE: i64 = 10_000;

struct Runs {
    n: u32,
    /// Create plans (`runbook plan`) rather than runs.
    plans: bool,
    chains: std::collections::HashMap<String, Chain>,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            n: 0,
            plans: false,
            chains: Default::default(),
        }
    }

    /// A new run of `runbook` created at `at`: parked and due at `wake` (`Some(None)`: waiting only
    /// for an approval), or running (`None`).
    async fn create(
        &mut self,
        store: &dyn Store,
        runbook: &str,
        concurrency: Option<u32>,
        at: i64,
        wake: Option<Option<i64>>,
    ) -> String {
        self.n += 1;
        let id = format!("{:032x}", 0xc1a1_0000_u64 + u64::from(self.n));
        let mut chain = Chain::new(&id);
        let mut records = vec![chain.seal(at, "t", &started(runbook))];
        if let Some(wake_at_ms) = wake {
            records.push(chain.seal(
                at,
                "t",
                &Event::RunDetached {
                    wake_at_ms,
                    approvals: if wake_at_ms.is_none() {
                        vec!["ask".into()]
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
        let row = RunRow {
            status: if wake.is_some() {
                RunStatus::Parked
            } else {
                RunStatus::Running
            },
            kind: if self.plans {
                RunKind::Plan
            } else {
                RunKind::Run
            },
            concurrency,
            ..crate::common::run_row(&id, runbook, at)
        };
        store.create_run(&row, &records).await.expect("create");
        self.chains.insert(id.clone(), chain);
        id
    }

    async fn append(&mut self, store: &dyn Store, id: &str, at: i64, events: &[Event]) {
        let chain = self.chains.get_mut(id).expect("known run");
        let records: Vec<Record> = events.iter().map(|e| chain.seal(at, "t", e)).collect();
        store
            .append(&records, Durability::Process)
            .await
            .expect("append");
    }
}

fn started(runbook: &str) -> Event {
    Event::RunStarted {
        runbook: runbook.into(),
        runbook_sha256: "ab".repeat(32),
        params: Map::new(),
        vars: Map::new(),
        engine_version: "test".into(),
    }
}

fn detached(wake_at_ms: Option<i64>, approvals: &[&str]) -> Event {
    Event::RunDetached {
        wake_at_ms,
        approvals: approvals.iter().map(|s| s.to_string()).collect(),
    }
}

fn resumed() -> Event {
    Event::RunResumed {
        runbook_sha256: "ab".repeat(32),
        runbook_text: None,
    }
}

fn finished() -> Event {
    Event::RunFinished {
        status: RunStatus::Succeeded,
        error: None,
    }
}

async fn ids(store: &dyn Store, holder: &str, now: i64, limit: i64) -> Vec<String> {
    store
        .claim(holder, now, LEASE, limit)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run_id)
        .collect()
}

fn answer(step: &str, at: i64) -> StoredAnswer {
    StoredAnswer {
        answer: Answer {
            step: step.into(),
            attempt: Some(1),
            approve: true,
            by: "carol".into(),
            how: "cli".into(),
            comment: None,
        },
        attempt: 1,
        at,
    }
}

/// The suite both stores must pass.
async fn claims(store: &dyn Store) {
    let mut runs = Runs::new();
    let soon = runs
        .create(store, "demo", None, 100, Some(Some(1_000)))
        .await;
    let later = runs
        .create(store, "demo", None, 100, Some(Some(5_000)))
        .await;
    let asking = runs.create(store, "demo", None, 100, Some(None)).await;

    // Only what is due, and each run once while its lease lives.
    assert_eq!(ids(store, "w1", 500, 10).await, Vec::<String>::new());
    assert_eq!(ids(store, "w1", 2_000, 10).await, vec![soon.clone()]);
    assert_eq!(ids(store, "w2", 2_000, 10).await, Vec::<String>::new());
    let lease = store.lease(&soon).await.expect("lease");
    assert_eq!(lease, Some(("w1".to_string(), 2_000 + LEASE)));
    // The limit holds; the earliest due comes first.
    let more = runs
        .create(store, "demo", None, 100, Some(Some(4_000)))
        .await;
    assert_eq!(ids(store, "w2", 6_000, 1).await, vec![more.clone()]);
    assert_eq!(ids(store, "w2", 6_000, 5).await, vec![later.clone()]);

    // A claim changes no status: the driver's `run_resumed` clears the wake-up, its park sets it.
    runs.append(store, &soon, 2_100, &[resumed()]).await;
    runs.append(store, &soon, 2_200, &[detached(Some(30_000), &[])])
        .await;
    // The park let the lease go in its own commit: the driver's release finds nothing to do.
    assert_eq!(store.lease(&soon).await.expect("lease"), None);
    store.release_lease(&soon, "w1").await.expect("release");
    assert_eq!(ids(store, "w3", 15_000, 10).await, Vec::<String>::new());
    assert_eq!(
        store.run(&soon).await.expect("row").status,
        RunStatus::Parked
    );

    // A run waiting only for an approval is due once it is answered.
    assert!(
        store
            .answer_approval(&asking, &answer("ask", 7_000))
            .await
            .expect("answer")
    );
    assert_eq!(ids(store, "w3", 7_000, 10).await, vec![asking.clone()]);

    // An answer given while a driver holds the run survives the park that follows it.
    runs.append(store, &asking, 7_100, &[resumed()]).await;
    assert!(
        store
            .answer_approval(&asking, &answer("other", 7_200))
            .await
            .expect("answer")
    );
    runs.append(store, &asking, 7_300, &[detached(None, &["other"])])
        .await;
    store.release_lease(&asking, "w3").await.expect("release");
    assert_eq!(ids(store, "w4", 7_400, 10).await, vec![asking.clone()]);
    // ... but one noted before the driver's own resume in the same batch does not.
    let fresh = runs.create(store, "demo", None, 100, Some(None)).await;
    assert!(
        store
            .answer_approval(&fresh, &answer("ask", 7_500))
            .await
            .expect("answer")
    );
    runs.append(store, &fresh, 7_600, &[resumed(), detached(None, &["ask"])])
        .await;
    assert!(!ids(store, "w4", 8_000, 10).await.contains(&fresh));

    // A running run whose lease expired is an orphan: taken over, and said so.
    let orphan = runs.create(store, "demo", None, 8_000, None).await;
    assert_eq!(
        store
            .acquire_lease(&orphan, "dead", 8_000, 9_000, None)
            .await
            .expect("lease"),
        None
    );
    assert_eq!(ids(store, "w5", 8_500, 10).await, Vec::<String>::new());
    let took = store.claim("w5", 9_500, LEASE, 10).await.expect("claim");
    assert_eq!(took.len(), 1);
    assert_eq!(took[0].run_id, orphan);
    assert!(took[0].took_over);
    // A running run with no lease at all is left alone while it could be one just being started.
    let starting = runs.create(store, "demo", None, 20_000, None).await;
    assert!(
        !ids(store, "w5", 20_000 + LEASE - 1, 10)
            .await
            .contains(&starting)
    );
    assert!(
        ids(store, "w5", 20_000 + LEASE, 10)
            .await
            .contains(&starting)
    );

    // The leases of a holder known to be dead end at once, and its runs are orphans to claim.
    let held = runs.create(store, "demo", None, 50_000, None).await;
    assert_eq!(
        store
            .acquire_lease(&held, "gone", 50_000, 90_000, None)
            .await
            .expect("lease"),
        None
    );
    assert!(
        store
            .lease_holders(60_000)
            .await
            .expect("holders")
            .contains(&"gone".to_string())
    );
    assert!(!ids(store, "w6", 60_000, 100).await.contains(&held));
    assert_eq!(store.expire_leases_of("gone").await.expect("expire"), 1);
    assert!(
        !store
            .lease_holders(60_000)
            .await
            .expect("holders")
            .contains(&"gone".to_string())
    );
    let took = store.claim("w6", 60_000, LEASE, 100).await.expect("claim");
    assert!(took.iter().any(|c| c.run_id == held && c.took_over));
    // Orphans are taken before runs that were only due, whenever those became due (everything
    // claimable so far is taken first, so that only the runs made here are left).
    ids(store, "w7", 61_000, 100).await;
    let queued = runs
        .create(store, "demo", None, 61_000, Some(Some(61_000)))
        .await;
    let second = runs
        .create(store, "demo", None, 61_000, Some(Some(61_000)))
        .await;
    let abandoned = runs.create(store, "demo", None, 61_000, None).await;
    assert_eq!(
        store
            .acquire_lease(&abandoned, "dead", 61_000, 61_500, None)
            .await
            .expect("lease"),
        None
    );
    assert_eq!(
        ids(store, "w8", 62_000, 2).await,
        vec![abandoned.clone(), queued]
    );
    assert_eq!(ids(store, "w8", 62_000, 2).await, vec![second]);
    // A run's end lets its lease go with it.
    runs.append(store, &abandoned, 62_100, &[finished()]).await;
    assert_eq!(store.lease(&abandoned).await.expect("lease"), None);

    // Finished runs and plans are never claimed.
    runs.append(store, &later, 40_000, &[resumed(), finished()])
        .await;
    assert_eq!(
        store.run(&later).await.expect("row").status,
        RunStatus::Succeeded
    );
    store.release_lease(&later, "w2").await.expect("release");
    runs.plans = true;
    let plan = runs.create(store, "demo", None, 100, Some(Some(100))).await;
    let claimed = ids(store, "w6", 1_000_000, 100).await;
    assert!(!claimed.contains(&later));
    assert!(!claimed.contains(&plan));
    assert!(
        claimed.contains(&soon),
        "a control: due runs are claimed here"
    );
}

/// A runbook with `concurrency: 2` has at most two runs with a live lease at once.
async fn concurrency(store: &dyn Store) {
    let mut runs = Runs::new();
    let mut solo = Vec::new();
    for _ in 0..4 {
        solo.push(
            runs.create(store, "solo", Some(2), 100, Some(Some(200)))
                .await,
        );
    }
    let free = runs.create(store, "free", None, 100, Some(Some(300))).await;
    let first = ids(store, "w1", 1_000, 10).await;
    assert_eq!(first, vec![solo[0].clone(), solo[1].clone(), free.clone()]);
    assert_eq!(ids(store, "w2", 1_000, 10).await, Vec::<String>::new());
    // One ends and lets its lease go: one more may start.
    runs.append(store, &solo[0], 1_100, &[resumed(), finished()])
        .await;
    store.release_lease(&solo[0], "w1").await.expect("release");
    assert_eq!(ids(store, "w2", 1_200, 10).await, vec![solo[2].clone()]);
    // A lease that expires frees its place: that run is due again, and takes it.
    assert_eq!(
        ids(store, "w3", 1_000 + LEASE + 1, 10).await,
        vec![solo[1].clone(), free.clone()]
    );
}

#[tokio::test]
async fn sqlite_claims_due_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8"), false)
        .await
        .expect("open");
    claims(&store).await;
    let path = dir.path().join("c2.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8"), false)
        .await
        .expect("open");
    concurrency(&store).await;
}

#[tokio::test]
async fn postgres_claims_due_runs() {
    let db = crate::common::PgDb::new().await;
    let store = PgStore::open(&db.url).await.expect("open");
    claims(&store).await;
    let db2 = crate::common::PgDb::new().await;
    let store = PgStore::open(&db2.url).await.expect("open");
    concurrency(&store).await;
}

/// Many claimers at once, each with its own pool: every due run is claimed by exactly one of them,
/// and a runbook's concurrency holds across all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_claimers_never_share_a_run() {
    let db = crate::common::PgDb::new().await;
    let setup = PgStore::open(&db.url).await.expect("open");
    let mut runs = Runs::new();
    let mut due = BTreeSet::new();
    for i in 0..200 {
        due.insert(
            runs.create(&setup, "many", None, 100, Some(Some(100 + i)))
                .await,
        );
    }
    for _ in 0..20 {
        runs.create(&setup, "one", Some(1), 100, Some(Some(150)))
            .await;
    }
    let mut claimers = Vec::new();
    for w in 0..8 {
        let url = db.url.clone();
        claimers.push(tokio::spawn(async move {
            let store: Arc<dyn Store> = Arc::new(PgStore::open(&url).await.expect("open"));
            let holder = format!("w{w}");
            let mut got = Vec::new();
            loop {
                let batch = store.claim(&holder, 1_000, LEASE, 7).await.expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch);
            }
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("claimer"));
    }
    let many: Vec<&String> = all
        .iter()
        .filter(|c| c.runbook == "many")
        .map(|c| &c.run_id)
        .collect();
    let distinct: BTreeSet<String> = many.iter().map(|s| s.to_string()).collect();
    assert_eq!(many.len(), distinct.len(), "a run was claimed twice");
    assert_eq!(distinct, due, "every due run is claimed");
    let one = all.iter().filter(|c| c.runbook == "one").count();
    assert_eq!(one, 1, "`concurrency: 1` holds across claimers");
}
