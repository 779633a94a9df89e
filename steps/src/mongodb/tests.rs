//! Against the real MongoDB wire-protocol server that `dev/services` starts
//! (`RUNBOOK_TEST_MONGODB_URI`): each test fills a database of its own and checks the plugins'
//! answers against values it computes itself from the documents it inserted.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::fixture;
use super::{Aggregate, Count, Find};
use crate::connection::{Connection, kind};
use crate::testkit::{Harness, err, ok, service};
use crate::{ErrorKind, Plugin, StepError};

fn mongo() -> Option<String> {
    service("RUNBOOK_TEST_MONGODB_URI")
}

fn connection(uri: &str, database: Option<&str>) -> Connection {
    let mut fields = serde_json::Map::new();
    fields.insert("uri".into(), json!(uri));
    if let Some(d) = database {
        fields.insert("database".into(), json!(d));
    }
    Connection::new("ops", kind("mongodb").expect("declared kind"), fields)
}

async fn call(uri: &str, db: &str, plugin: &dyn Plugin, input: Value) -> Result<Value, StepError> {
    Harness::new("mongo")
        .with_connection(connection(uri, Some(db)))
        .call(plugin, input)
        .await
}

/// A database of the test's own, filled with `docs` in `collection`.
async fn seeded(uri: &str, prefix: &str, collection: &str, docs: &[Value]) -> String {
    let db = fixture::unique_db(prefix);
    fixture::insert(uri, &db, collection, docs)
        .await
        .expect("insert the test documents");
    db
}

/// RFC 3339 with milliseconds, as `ago()` writes it.
fn rfc3339(t: jiff::Timestamp) -> String {
    format!("{t:.3}")
}

/// Feedback documents: specialist × feedback type, spread over the last 48 hours (one every 37
/// minutes), so some are older than a day and a few are within the last hour.
fn feedback(now: jiff::Timestamp) -> Vec<(String, String, jiff::Timestamp)> {
    let specialists = ["technical", "security", "business"];
    let kinds = ["positive", "negative", "neutral", "positive", "negative"];
    (0..78)
        .map(|i| {
            let at = now - jiff::SignedDuration::from_mins(37 * i);
            (
                specialists[(i as usize * 7) % 3].to_string(),
                kinds[(i as usize) % 5].to_string(),
                at,
            )
        })
        .collect()
}

fn feedback_docs(rows: &[(String, String, jiff::Timestamp)]) -> Vec<Value> {
    rows.iter()
        .map(|(s, k, at)| {
            json!({ "specialist_type": s, "feedback_type": k, "created_at": { "$date": rfc3339(*at) } })
        })
        .collect()
}

#[tokio::test]
async fn the_seed_feedback_pipeline_groups_and_sorts_like_the_data_says() {
    let Some(uri) = mongo() else { return };
    let now = jiff::Timestamp::now();
    let rows = feedback(now);
    let db = seeded(&uri, "rb_group", "ml_feedback", &feedback_docs(&rows)).await;
    let cutoff = now - jiff::SignedDuration::from_hours(24);

    let r = ok(call(
        &uri,
        &db,
        &Aggregate,
        json!({
            "collection": "ml_feedback",
            "pipeline": [
                { "$match": { "created_at": { "$gte": { "$date": rfc3339(cutoff) } } } },
                { "$group": {
                    "_id": { "specialist_type": "$specialist_type", "feedback_type": "$feedback_type" },
                    "count": { "$sum": 1 },
                } },
                { "$sort": [{ "_id.specialist_type": 1 }, { "_id.feedback_type": -1 }] },
            ],
        }),
    )
    .await);

    let mut expected: BTreeMap<(String, std::cmp::Reverse<String>), i64> = BTreeMap::new();
    for (s, k, at) in &rows {
        if *at >= cutoff {
            *expected
                .entry((s.clone(), std::cmp::Reverse(k.clone())))
                .or_default() += 1;
        }
    }
    let got: Vec<(String, String, i64)> = r["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| {
            (
                d["_id"]["specialist_type"].as_str().expect("s").to_string(),
                d["_id"]["feedback_type"].as_str().expect("k").to_string(),
                d["count"].as_i64().expect("an integer count"),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = expected
        .into_iter()
        .map(|((s, k), n)| (s, k.0, n))
        .collect();
    assert_eq!(got, want);
    assert_eq!(r["count"], json!(want.len()));
    assert!(want.len() >= 6, "the fixture spreads over groups: {want:?}");
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn the_seed_bucket_pipeline_counts_confidence_ranges_and_the_default() {
    let Some(uri) = mongo() else { return };
    let now = jiff::Timestamp::now();
    // 1.0 is past the last boundary's open end, -0.2 below the first, a string no number: all
    // three land in the default bucket, as does an opinion without a score.
    let scores: Vec<Value> = [
        json!(0.1),
        json!(0.49),
        json!(0.5),
        json!(0.69),
        json!(0.7),
        json!(0.84),
        json!(0.85),
        json!(0.99),
        json!(1.0),
        json!(-0.2),
        json!("high"),
        json!(0.6),
        json!(0.9),
        json!(0.3),
    ]
    .to_vec();
    let mut docs: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = now - jiff::SignedDuration::from_mins(10 * i as i64);
            json!({ "confidence_score": s, "timestamp": { "$date": rfc3339(at) } })
        })
        .collect();
    docs.push(json!({ "timestamp": { "$date": rfc3339(now) } }));
    // Older than the cutoff: not counted anywhere.
    docs.push(json!({ "confidence_score": 0.6, "timestamp": { "$date": rfc3339(now - jiff::SignedDuration::from_hours(30)) } }));
    let db = seeded(&uri, "rb_bucket", "specialist_opinions", &docs).await;

    let bounds = [0.0, 0.5, 0.7, 0.85, 1.0];
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for s in scores.iter().map(Value::as_f64).chain([None]) {
        let key = match s.and_then(|v| bounds.windows(2).find(|w| v >= w[0] && v < w[1])) {
            Some(w) => json!(w[0]).to_string(),
            None => "\"unknown\"".to_string(),
        };
        *expected.entry(key).or_default() += 1;
    }

    let cutoff = now - jiff::SignedDuration::from_hours(24);
    let r = ok(call(
        &uri,
        &db,
        &Aggregate,
        json!({
            "collection": "specialist_opinions",
            "pipeline": [
                { "$match": { "timestamp": { "$gte": { "$date": rfc3339(cutoff) } } } },
                { "$bucket": {
                    "groupBy": "$confidence_score",
                    "boundaries": [0, 0.5, 0.7, 0.85, 1.0],
                    "default": "unknown",
                    "output": { "count": { "$sum": 1 } },
                } },
            ],
        }),
    )
    .await);
    let got: BTreeMap<String, i64> = r["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| {
            // The boundaries come back as given: 0 an integer, 0.5 a double.
            let id = match &d["_id"] {
                Value::Number(n) => json!(n.as_f64().expect("a number")).to_string(),
                other => other.to_string(),
            };
            (id, d["count"].as_i64().expect("an integer count"))
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(expected.get("\"unknown\""), Some(&4));
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn count_gives_the_positive_and_negative_feedback_of_the_last_hour() {
    let Some(uri) = mongo() else { return };
    let now = jiff::Timestamp::now();
    let rows = feedback(now);
    let db = seeded(&uri, "rb_count", "ml_feedback", &feedback_docs(&rows)).await;
    let cutoff = now - jiff::SignedDuration::from_hours(1);
    for kind in ["positive", "negative"] {
        let want = rows
            .iter()
            .filter(|(_, k, at)| k == kind && *at >= cutoff)
            .count();
        let r = ok(call(
            &uri,
            &db,
            &Count,
            json!({
                "collection": "ml_feedback",
                "filter": { "created_at": { "$gte": { "$date": rfc3339(cutoff) } }, "feedback_type": kind },
            }),
        )
        .await);
        assert_eq!(r, json!({ "count": want }), "{kind}");
    }
    // Without a filter, everything; the step's `database` wins over the connection's.
    let r = ok(call(
        &uri,
        "not_this_one",
        &Count,
        json!({ "collection": "ml_feedback", "database": db }),
    )
    .await);
    assert_eq!(r["count"], json!(rows.len()));
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn find_maps_each_bson_type_predictably() {
    let Some(uri) = mongo() else { return };
    let docs = [json!({
        "_id": { "$oid": "65a1b2c3d4e5f60718293a4b" },
        "n": 1,
        "big": { "$numberLong": "9007199254740993" },
        "f1": 0.71,
        "nan": { "$numberDouble": "NaN" },
        "inf": { "$numberDouble": "-Infinity" },
        "price": { "$numberDecimal": "0.10" },
        "at": { "$date": "2026-11-30T10:15:00.123Z" },
        "ok": true,
        "none": null,
        "tags": ["a", { "k": 2 }],
        "bin": { "$binary": { "base64": "AQI=", "subType": "00" } },
    })];
    let db = seeded(&uri, "rb_types", "t", &docs).await;
    let r = ok(call(&uri, &db, &Find, json!({ "collection": "t" })).await);
    assert_eq!(
        r,
        json!({ "count": 1, "documents": [{
            "_id": "65a1b2c3d4e5f60718293a4b",
            "n": 1,
            "big": 9007199254740993_i64,
            "f1": 0.71,
            "nan": "NaN",
            "inf": "-Infinity",
            "price": "0.10",
            "at": "2026-11-30T10:15:00.123Z",
            "ok": true,
            "none": null,
            "tags": ["a", { "k": 2 }],
            "bin": { "$binary": { "base64": "AQI=", "subType": "00" } },
        }] })
    );
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn find_filters_projects_sorts_on_several_fields_and_limits() {
    let Some(uri) = mongo() else { return };
    let docs: Vec<Value> = (0..12)
        .map(|i| json!({ "group": i % 3, "n": i, "secret": "x" }))
        .collect();
    let db = seeded(&uri, "rb_find", "c", &docs).await;
    let r = ok(call(
        &uri,
        &db,
        &Find,
        json!({
            "collection": "c",
            "filter": { "n": { "$gte": 2 } },
            "projection": { "_id": 0, "group": 1, "n": 1 },
            "sort": [{ "group": -1 }, { "n": 1 }],
            "limit": 5,
        }),
    )
    .await);
    // group 2: n = 2, 5, 8, 11; then group 1: n = 4, ...
    let want: Vec<Value> = [(2, 2), (2, 5), (2, 8), (2, 11), (1, 4)]
        .iter()
        .map(|(g, n)| json!({ "group": g, "n": n }))
        .collect();
    assert_eq!(r, json!({ "count": 5, "documents": want }));
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn a_cursor_longer_than_one_batch_is_read_to_its_end_within_the_cap() {
    let Some(uri) = mongo() else { return };
    // The server's first batch holds 101 documents; the rest come with getMore.
    let docs: Vec<Value> = (0..250).map(|i| json!({ "i": i })).collect();
    let db = seeded(&uri, "rb_batches", "big", &docs).await;
    let r = ok(call(
        &uri,
        &db,
        &Find,
        json!({ "collection": "big", "sort": { "i": 1 }, "projection": { "_id": 0 } }),
    )
    .await);
    assert_eq!(r["count"], json!(250));
    let is: Vec<i64> = r["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(is, (0..250).collect::<Vec<i64>>());

    let r = ok(call(
        &uri,
        &db,
        &Aggregate,
        json!({ "collection": "big", "pipeline": [{ "$match": { "i": { "$gte": 10 } } }] }),
    )
    .await);
    assert_eq!(r["count"], json!(240));

    // Past the cap, the step fails instead of deciding on part of the answer.
    let e = err(call(
        &uri,
        &db,
        &Aggregate,
        json!({ "collection": "big", "pipeline": [{ "$match": {} }], "max_documents": 200 }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Condition, "{}", e.message);
    assert!(
        e.message.contains("more than 200 documents"),
        "{}",
        e.message
    );
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn a_bad_pipeline_quotes_the_servers_error() {
    let Some(uri) = mongo() else { return };
    let db = seeded(&uri, "rb_bad", "c", &[json!({ "a": 1 })]).await;
    let e = err(call(
        &uri,
        &db,
        &Aggregate,
        json!({ "collection": "c", "pipeline": [{ "$bogus": {} }] }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Status, "{}", e.message);
    assert!(
        e.message
            .starts_with(&format!("MongoDB: aggregate on {db}.c at "))
            && e.message
                .contains("Unrecognized pipeline stage name: '$bogus'"),
        "{}",
        e.message
    );
    let detail = e.detail.expect("the server's error");
    assert_eq!(detail["code"], json!(40324), "{detail}");
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn writing_pipelines_are_refused_before_the_server_sees_them() {
    let Some(uri) = mongo() else { return };
    let db = seeded(&uri, "rb_out", "c", &[json!({ "a": 1 })]).await;
    for stage in [
        json!({ "$out": "copy" }),
        json!({ "$merge": { "into": "copy" } }),
        json!({ "$facet": { "x": [{ "$out": "copy" }] } }),
    ] {
        let input = json!({ "collection": "c", "pipeline": [{ "$match": {} }, stage] });
        let e = err(call(&uri, &db, &Aggregate, input.clone()).await);
        assert_eq!(e.kind, ErrorKind::Input, "{}", e.message);
        assert!(
            e.message.starts_with("`pipeline[1]` uses `$") && e.message.contains("only reads"),
            "{}",
            e.message
        );
        assert_eq!(
            Aggregate.check_input(&input).map_err(|e| e.kind),
            Err(ErrorKind::Input)
        );
    }
    let r = ok(call(&uri, &db, &Count, json!({ "collection": "copy" })).await);
    assert_eq!(r["count"], json!(0), "nothing was written");
    let _ = fixture::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connect_error_naming_the_host() {
    // Bind and drop a listener: the port was free a moment ago and nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let uri =
        format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=500");
    let e = err(call(&uri, "ops", &Count, json!({ "collection": "c" })).await);
    assert_eq!(e.kind, ErrorKind::Connect, "{}", e.message);
    assert!(
        e.message.starts_with(&format!(
            "MongoDB: count on ops.c at 127.0.0.1:{port}: no server could be reached"
        )),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn wrong_credentials_are_a_status_error_that_does_not_show_the_password() {
    let Some(uri) = mongo() else { return };
    let Some(rest) = uri.strip_prefix("mongodb://") else {
        panic!("RUNBOOK_TEST_MONGODB_URI is not a mongodb:// URI: {uri}");
    };
    let bad = format!("mongodb://nobody:hunter2@{rest}");
    let e = err(call(&bad, "ops", &Count, json!({ "collection": "c" })).await);
    assert_eq!(e.kind, ErrorKind::Status, "{}", e.message);
    assert!(e.message.contains("authentication failed"), "{}", e.message);
    assert!(!e.message.contains("hunter2"), "{}", e.message);
}

#[tokio::test]
async fn inputs_are_checked_before_anything_is_sent() {
    // No server at all: each of these fails on its input alone.
    let uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100";
    for (plugin, input, needle) in [
        (
            &Find as &dyn Plugin,
            json!({ "collection": "c", "sort": { "a": 1, "b": -1 } }),
            "in one mapping, whose key order a runbook does not keep",
        ),
        (
            &Aggregate,
            json!({ "collection": "c", "pipeline": [{ "$sort": { "a": 1, "b": 1 } }] }),
            "`pipeline[0].$sort` sorts on several fields",
        ),
        (
            &Aggregate,
            json!({ "collection": "c", "pipeline": [{ "$match": {}, "$limit": 1 }] }),
            "`pipeline[0]` must have exactly one key",
        ),
        (
            &Aggregate,
            json!({ "collection": "c", "pipeline": [{ "match": {} }] }),
            "`match` is not a stage",
        ),
        (
            &Aggregate,
            json!({ "collection": "c", "pipeline": [] }),
            "`pipeline` is empty",
        ),
        (
            &Count,
            json!({ "collection": "c", "filter": { "_id": { "$oid": "xyz" } } }),
            "`filter` is not valid Extended JSON",
        ),
        (
            &Find,
            json!({ "collection": "c", "limit": 0 }),
            "`limit` is 0",
        ),
        (
            &Find,
            json!({ "collection": "c", "max_documents": 1_000_000 }),
            "`max_documents` is 1000000",
        ),
        (
            &Count,
            json!({ "collection": "c", "limit": 3 }),
            "unknown field `limit`",
        ),
    ] {
        let e = err(call(uri, "ops", plugin, input.clone()).await);
        assert_eq!(e.kind, ErrorKind::Input, "{input}: {}", e.message);
        assert!(e.message.contains(needle), "{input}: {}", e.message);
    }
    // A URI the driver cannot parse: its password stays out of the message.
    let e = err(call(
        "mongodb://ops:hunter2@127.0.0.1:notaport/",
        "ops",
        &Count,
        json!({ "collection": "c" }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Input, "{}", e.message);
    assert!(
        e.message
            .starts_with("connection `ops` (mongodb): invalid uri: ")
            && !e.message.contains("hunter2"),
        "{}",
        e.message
    );
    // Neither the step nor the connection names a database, and the URI has no path.
    let e = err(Harness::new("m")
        .with_connection(connection(uri, None))
        .call(&Count, json!({ "collection": "c" }))
        .await);
    assert_eq!(e.kind, ErrorKind::Input, "{}", e.message);
    assert!(e.message.starts_with("no database"), "{}", e.message);
}
