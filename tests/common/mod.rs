//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `runbook` binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runbook"))
}

/// The repository root (tests run with the engine crate as working directory).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A scratch directory with its own database, removed when dropped.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("runs.db")
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// `runbook ARGS` with this sandbox's database, its directory as working directory, no terminal.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("RUNBOOK_DB", self.db())
            .env("RUNBOOK_ACTOR", "tester")
            .env_remove("RUNBOOK_PATH")
            // A developer's own server settings must not send a test's commands elsewhere.
            .env_remove("RUNBOOK_SERVER")
            .env_remove("RUNBOOK_TOKEN")
            .env_remove("RUNBOOK_TOKEN_FILE")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn runbook")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The PostgreSQL server the tests use: `RUNBOOK_TEST_PG`, or the local one `dev/test.sh` ensures.
pub fn pg_admin_url() -> String {
    std::env::var("RUNBOOK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped afterwards. A missing server fails the test: the
/// PostgreSQL half of the suite must not pass by skipping.
pub struct PgDb {
    pub url: String,
    name: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin} is required (dev/test.sh starts it): {e}")
            });
        let name = format!("rb_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Best effort from a synchronous drop: a leftover test database is harmless and named as such.
        let admin = pg_admin_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A run's row as the stores keep it, `running`, with a one-line runbook text: tests that write
/// runs straight into a store change what they need with `RunRow { .., ..run_row(..) }`.
pub fn run_row(id: &str, runbook: &str, started_at: i64) -> runbook_engine::store::RunRow {
    runbook_engine::store::RunRow {
        id: id.to_string(),
        runbook: runbook.into(),
        title: None,
        source_path: None,
        runbook_sha256: "ab".repeat(32),
        runbook_text: format!("name: {runbook}\nsteps: []\n"),
        params: serde_json::json!({}),
        status: runbook_engine::run::event::RunStatus::Running,
        actor: "t".into(),
        started_at,
        finished_at: None,
        parent_run: None,
        kind: runbook_engine::store::RunKind::Run,
        concurrency: None,
        trigger_key: None,
        request_key: None,
    }
}

/// The first record of run `id` of `runbook`: its `run_started`, sealed at `at`.
pub fn run_started(id: &str, runbook: &str, at: i64) -> runbook_engine::run::event::Record {
    use runbook_engine::run::event::{Chain, Event};
    let started = Event::RunStarted {
        runbook: runbook.into(),
        runbook_sha256: "ab".repeat(32),
        params: Default::default(),
        vars: Default::default(),
        engine_version: "test".into(),
    };
    Chain::new(id).seal(at, "t", &started)
}
