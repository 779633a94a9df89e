//! For tests (this crate's and the engine's end-to-end tests): a database of a test's own in a real
//! MongoDB server, filled through the driver the way an application would. Nothing in the plugins
//! uses it.

use bson::Document;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};

/// A database name no other test (or earlier test run against the same server) has used.
pub fn unique_db(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // MongoDB database names are at most 63 bytes and may not hold `.`.
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    name.chars().take(63).collect()
}

/// A client for `uri`.
pub async fn client(uri: &str) -> Result<mongodb::Client, String> {
    crate::init_tls();
    mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| format!("connect to {uri}: {e}"))
}

/// Inserts `docs` (Extended JSON mappings: `{"$date": ...}` for a date) into `db.collection`.
pub async fn insert(uri: &str, db: &str, collection: &str, docs: &[Value]) -> Result<(), String> {
    let docs = docs
        .iter()
        .map(|d| match d {
            Value::Object(m) => Document::try_from(m.clone()).map_err(|e| format!("{d}: {e}")),
            other => Err(format!("not a document: {other}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    client(uri)
        .await?
        .database(db)
        .collection::<Document>(collection)
        .insert_many(docs)
        .await
        .map(drop)
        .map_err(|e| format!("insert into {db}.{collection}: {e}"))
}

/// Drops the database (a test's cleanup; a leftover one is harmless and named as a test's).
pub async fn drop_db(uri: &str, db: &str) -> Result<(), String> {
    client(uri)
        .await?
        .database(db)
        .drop()
        .await
        .map_err(|e| format!("drop {db}: {e}"))
}
