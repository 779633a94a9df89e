//! The commit floor: what one SQLite commit costs on this machine, right now, through the same sqlx
//! setup the store uses. bench/run.sh compares the engine's per-step overhead with it, because
//! absolute times drift from day to day and only a floor timed in the same session means anything.
//!
//!   cargo run --release --example commit_floor -p runbook-engine -- DIR [COMMITS]
//!
//! Times COMMITS (default 2,000) single-row INSERT commits at synchronous=NORMAL (the floor), a
//! tenth as many at synchronous=FULL (an fsync each, what a side effect's intent costs), and COMMITS
//! pool-acquire + BEGIN/INSERT/COMMIT transactions (the shape of a store append). Each line starts
//! with a tag that bench/run.sh reads: `normal-insert`, `full-insert`, `normal-tx`.

use anyhow::{Context, Result, bail};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Commits before the timed ones: the first ones pay for growing the file and the WAL.
const WARM_UP: usize = 100;
/// Roughly the size of one journaled event (JSON body plus hashes).
const ROW_BYTES: usize = 300;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), count) = (args.next(), args.next()) else {
        bail!("usage: commit_floor DIR [COMMITS]  (DIR: where the scratch database goes)");
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let commits = match count {
        None => 2_000,
        Some(s) => {
            let s = s.to_string_lossy();
            match s.parse::<usize>() {
                Ok(n) if (10..=1_000_000).contains(&n) => n,
                _ => bail!("COMMITS must be a whole number from 10 to 1000000, not {s:?}"),
            }
        }
    };
    // The same runtime shape as the `runbook` binary (engine/src/main.rs).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let path = dir.join(format!("commit_floor-{}.db", std::process::id()));
    let result = rt.block_on(measure(&path, commits));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}

async fn measure(path: &Path, commits: usize) -> Result<()> {
    let pool = open(path).await?;
    writeln!(
        std::io::stdout(),
        "# fresh SQLite file in WAL mode, one connection, opened as engine/src/store/sqlite.rs does ({})",
        path.display()
    )?;
    let row = Row {
        sql: "INSERT INTO t (run, body) VALUES (?, ?)",
        body: "x".repeat(ROW_BYTES),
    };

    // The floor proper: one INSERT on a connection held throughout, so each commit is one round trip
    // to sqlx's SQLite worker thread and nothing else.
    let mut conn = pool.acquire().await?;
    let mut times = Vec::new();
    for _ in 0..WARM_UP + commits {
        let t0 = Instant::now();
        row.insert(&mut conn).await?;
        times.push(t0.elapsed());
    }
    report("normal-insert", "synchronous=NORMAL, one INSERT", times)?;

    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await?;
    let mut times = Vec::new();
    for _ in 0..WARM_UP + (commits / 10).max(10) {
        let t0 = Instant::now();
        row.insert(&mut conn).await?;
        times.push(t0.elapsed());
    }
    report("full-insert", "synchronous=FULL (fsync), one INSERT", times)?;
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await?;
    drop(conn);

    // The shape of a store append: a connection from the pool, then a transaction.
    let mut times = Vec::new();
    for _ in 0..WARM_UP + commits {
        let t0 = Instant::now();
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        row.insert(&mut tx).await?;
        tx.commit().await?;
        drop(conn);
        times.push(t0.elapsed());
    }
    report(
        "normal-tx",
        "synchronous=NORMAL, pool acquire + BEGIN/INSERT/COMMIT",
        times,
    )?;
    pool.close().await;
    Ok(())
}

struct Row {
    sql: &'static str,
    body: String,
}

impl Row {
    async fn insert(&self, conn: &mut SqliteConnection) -> Result<()> {
        sqlx::query(self.sql)
            .bind("run")
            .bind(&self.body)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The store's connect options (WAL, synchronous=NORMAL, one connection); kept in step with
/// `SqliteStore::open` by hand, since the floor must not include the engine's own work.
async fn open(path: &Path) -> Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, run TEXT NOT NULL, body TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// Prints the median and mean of the timed commits, leaving out the warm-up. A closed stdout is an
/// error like any other (`println!` would panic).
fn report(tag: &str, what: &str, mut times: Vec<Duration>) -> Result<()> {
    let mut sorted = times.split_off(WARM_UP.min(times.len()));
    sorted.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = us(sorted[sorted.len() / 2]);
    let mean = sorted.iter().map(|d| us(*d)).sum::<f64>() / sorted.len() as f64;
    writeln!(
        std::io::stdout(),
        "{tag:<14} {:>6} commits  median {median:>8.1} µs  mean {mean:>8.1} µs  ({what})",
        sorted.len()
    )?;
    Ok(())
}
