//! The embedded store: one SQLite file in WAL mode.
//!
//! Commits run with synchronous=NORMAL, which survives a killed process; a commit that must survive
//! power loss (the intent of a step with side effects) switches that one commit to FULL, so the fsync
//! is paid only where it buys safety.

use super::{Durability, StoreError};
use crate::run::event::Record;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;

pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The schema the migrations make, as SQLite records it (`sqlite_master`, in creation order, with
/// the table in which sqlx records applied migrations). A new database is made from it in one pass
/// and every migration recorded as applied: replaying them one by one made SQLite re-parse the
/// whole schema at each `ALTER TABLE`, 5.7 M instructions of a one-step run's 10.4 M. A test keeps it equal to what the migrations make; after adding one, run
/// `UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine baseline`.
const BASELINE: &str = include_str!("../../../migrations/sqlite.baseline.sql");

impl SqliteStore {
    pub async fn open(path: &str, create_dir: bool) -> Result<SqliteStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_string(),
            reason,
        };
        if path != ":memory:" {
            let parent = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent
                && !dir.is_dir()
            {
                if create_dir {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        open_err(format!("cannot create directory {}: {e}", dir.display()))
                    })?;
                } else {
                    return Err(open_err(format!(
                        "directory {} does not exist (create it, or point --db / RUNBOOK_DB elsewhere)",
                        dir.display()
                    )));
                }
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| open_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        // Processes opening a new database at the same moment race to switch it to WAL and to
        // migrate it (sqlx takes no lock for SQLite migrations). The loser of either race gets
        // "locked" or a failed migration, and on retry finds the winner's work done.
        let mut attempt = 0;
        let pool = loop {
            match Self::connect_and_migrate(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 8 && is_open_race(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(StoreError::Db(e)) => return Err(open_err(e.to_string())),
                Err(e) => return Err(e),
            }
        };
        Ok(SqliteStore { pool })
    }

    async fn connect_and_migrate(opts: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
        // One connection: a run is written by one task, and the durability switch is per connection.
        // Not pinged before each use (sqlx's default): an embedded file's connection cannot have
        // been dropped by a server, and each ping was a round trip to SQLite's thread, 14 in a
        // one-step run.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        // One connection held through the checks: each use of the pool ends with sqlx pinging the
        // connection on its return, a round trip to SQLite's thread.
        let mut conn = pool.acquire().await?;
        // A database that these migrations brought up to date carries their mark, and is not
        // checked again: five statements and their round trips at every start. Any other database
        // (new, older, from another build) goes on, and the migrator refuses one whose applied
        // migrations differ from this build's.
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        if version == schema_mark() {
            drop(conn);
            return Ok(pool);
        }
        // Everything in one transaction: a failure leaves no half-made or half-migrated file.
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let fresh: bool = sqlx::query_scalar("SELECT COUNT(*) = 0 FROM sqlite_master")
            .fetch_one(&mut *tx)
            .await?;
        // A pragma's value cannot be a bound parameter; this one is a number made here.
        let mark = format!("PRAGMA user_version = {};", schema_mark());
        if fresh {
            // The schema, sqlx's table of applied migrations included, in one batch, and every
            // migration recorded as applied (with its checksum, `execution_time` -1 as sqlx
            // records a skipped one) in one insert: the migrator's own way took some twenty
            // statements, each a round trip.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{BASELINE}\n{mark}")))
                .execute(&mut *tx)
                .await?;
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) ",
            );
            insert.push_values(
                MIGRATOR
                    .iter()
                    .filter(|m| !m.migration_type.is_down_migration()),
                |mut row, m| {
                    row.push_bind(m.version)
                        .push_bind(&*m.description)
                        .push_bind(true)
                        .push_bind(&*m.checksum)
                        .push_bind(-1_i64);
                },
            );
            insert.build().execute(&mut *tx).await?;
        } else {
            // `run_direct` is `run` on a connection: `run(&mut *tx)` makes the caller's future
            // not provably `Send` (sqlx's `Acquire` is generic over the borrow; sqlx's own tests
            // use this). Pending migrations run nested in savepoints of this transaction.
            MIGRATOR.run_direct(None, &mut *tx, false).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(mark))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        drop(conn);
        Ok(pool)
    }

    /// Commits with synchronous=FULL (fsync) for a [`Durability::Power`] write and NORMAL otherwise;
    /// the pragma is per connection, so it is set around this one transaction.
    async fn append_durably(
        &self,
        events: &[Record],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if durability == Durability::Power {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            Self::append_in(&mut tx, events).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if durability == Durability::Power {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    const CANDIDATES: [&str; 2] = super::claim::CANDIDATES_SQLITE;

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A claim reads, then writes: taking the write lock first makes a claim by another process
    /// wait (busy_timeout) instead of failing to upgrade its read lock.
    async fn begin_claim(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The immediate transaction already serialises every claim.
    async fn lock_runbook(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _runbook: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite transactions are serializable already, and this store has one connection.
    async fn begin_prune(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

super::body::shared_body!(SqliteStore, sqlx::Sqlite);

/// What `PRAGMA user_version` holds in a database these migrations brought up to date: derived
/// from every migration's version and checksum, so a build with one more migration, or a changed
/// one, does not recognise it and runs the migrator. Positive and never 0, a new file's value.
fn schema_mark() -> i64 {
    use sha2::{Digest, Sha256};
    static MARK: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *MARK.get_or_init(|| {
        let mut h = Sha256::new();
        for m in MIGRATOR.iter() {
            h.update(m.version.to_le_bytes());
            h.update(&*m.checksum);
        }
        let d = h.finalize();
        i64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]]) >> 1) | 1
    })
}

fn is_open_race(e: &StoreError) -> bool {
    match e {
        StoreError::Migrate(_) => true,
        StoreError::Db(e) => {
            let m = e.to_string();
            m.contains("locked") || m.contains("busy")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{BASELINE, MIGRATOR};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    /// The schema of a database as statements that make it again: `sqlite_master` in creation
    /// order (sqlx's table of applied migrations included), less SQLite's own autoindexes.
    async fn schema(pool: &sqlx::SqlitePool) -> String {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
             ORDER BY rowid",
        )
        .fetch_all(pool)
        .await
        .expect("sqlite_master");
        rows.iter()
            .map(|sql| format!("{sql};\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn pool(path: &std::path::Path) -> sqlx::SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true),
            )
            .await
            .expect("open")
    }

    const HEADER: &str = "-- The schema that migrations/sqlite/ make, as SQLite records it: a new database is made from\n\
        -- it in one pass (engine/src/store/sqlite.rs). Written by a test; after adding a migration:\n\
        -- UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine baseline\n\n";

    #[tokio::test]
    async fn the_baseline_is_what_the_migrations_make() {
        let dir = tempfile::tempdir().expect("tmp");
        // The long way: every migration replayed.
        let replayed = pool(&dir.path().join("replayed.db")).await;
        MIGRATOR.run(&replayed).await.expect("migrate");
        let made = format!("{HEADER}{}", schema(&replayed).await);
        if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../migrations/sqlite.baseline.sql"
            );
            std::fs::write(path, &made).expect("write the baseline");
            return;
        }
        assert_eq!(
            BASELINE, made,
            "migrations/sqlite.baseline.sql is stale: run `UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine baseline`"
        );
        // The short way, as a new store is opened: the same schema, every migration recorded (a
        // second open finds nothing to do, and would refuse a checksum that differs).
        let path = dir.path().join("new.db");
        let store = super::SqliteStore::open(path.to_str().expect("utf-8"), false)
            .await
            .expect("open a new store");
        assert_eq!(format!("{HEADER}{}", schema(&store.pool).await), made);
        let applied: Vec<(i64, i64)> =
            sqlx::query_as("SELECT version, execution_time FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .expect("applied");
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(applied.iter().map(|a| a.0).collect::<Vec<_>>(), versions);
        // Recorded as sqlx records them, so that its migrator, run by a later build, agrees.
        type Row = (i64, String, bool, Vec<u8>);
        let rows =
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version";
        let recorded: Vec<Row> = sqlx::query_as(rows)
            .fetch_all(&store.pool)
            .await
            .expect("recorded");
        let by_sqlx: Vec<Row> = sqlx::query_as(rows)
            .fetch_all(&replayed)
            .await
            .expect("by sqlx");
        assert_eq!(recorded, by_sqlx);
        assert!(
            applied.iter().all(|a| a.1 == -1),
            "recorded, not replayed: {applied:?}"
        );
        drop(store);
        super::SqliteStore::open(path.to_str().expect("utf-8"), false)
            .await
            .expect("open it again");
    }

    async fn user_version(pool: &sqlx::SqlitePool) -> i64 {
        sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(pool)
            .await
            .expect("user_version")
    }

    #[tokio::test]
    async fn an_up_to_date_database_is_known_by_its_mark_and_any_other_goes_through_the_migrator() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("old.db");
        let path_str = path.to_str().expect("utf-8");
        // As a build before the mark left it: migrated, unmarked.
        let old = pool(&path).await;
        MIGRATOR.run(&old).await.expect("migrate");
        assert_eq!(user_version(&old).await, 0);
        drop(old);
        let store = super::SqliteStore::open(path_str, false)
            .await
            .expect("open");
        assert_eq!(user_version(&store.pool).await, super::schema_mark());
        // Marked: the migrator is not consulted again (without its table it would try to create
        // every table anew, and fail).
        sqlx::query("DROP TABLE _sqlx_migrations")
            .execute(&store.pool)
            .await
            .expect("drop");
        drop(store);
        super::SqliteStore::open(path_str, false)
            .await
            .expect("a marked database opens without the migrator");

        // A mark this build did not write (another set of migrations) sends the database through
        // the migrator, which still refuses a migration recorded with another checksum.
        let path = dir.path().join("other.db");
        let path_str = path.to_str().expect("utf-8");
        let store = super::SqliteStore::open(path_str, false)
            .await
            .expect("new");
        sqlx::raw_sql(
            "PRAGMA user_version = 5;
             UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = (SELECT MIN(version) FROM _sqlx_migrations);",
        )
        .execute(&store.pool)
        .await
        .expect("tamper");
        drop(store);
        let err = super::SqliteStore::open(path_str, false)
            .await
            .err()
            .expect("a changed migration is refused");
        assert!(err.to_string().contains("modified"), "{err}");
    }
}
