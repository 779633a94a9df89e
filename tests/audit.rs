//! `runbook audit verify` catches edits made behind the engine's back.

use crate::common::{Sandbox, stderr, stdout};

fn run_example(sb: &Sandbox) -> String {
    let example = crate::common::repo().join("runbooks/examples/service-health.yaml");
    let o = sb.run(&[
        "run",
        example.to_str().expect("path"),
        "-o",
        "json",
        "--quiet",
        "-p",
        "url=http://127.0.0.1:1/",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    v["run"]["id"].as_str().expect("id").to_string()
}

async fn sql(sb: &Sandbox, statements: &[&str]) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
        .await
        .expect("connect");
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&pool)
            .await
            .expect("sql");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_first_edited_event() {
    let sb = Sandbox::new();
    let id = run_example(&sb);
    let second = run_example(&sb);
    let o = sb.run(&["audit", "verify", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("ok"), "{}", stdout(&o));

    // Rewrite what a decision read, as someone covering their tracks might.
    sql(
        &sb,
        &[
            "DROP TRIGGER events_append_only",
            &format!("UPDATE events SET data = replace(data, '\"failed\"', '\"succeeded\"') WHERE run_id = '{id}' AND kind = 'decision_taken'"),
        ],
    )
    .await;
    let seq: i64 = {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
            .await
            .expect("connect");
        let s = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT seq FROM events WHERE run_id = '{id}' AND kind = 'decision_taken'"
        )))
        .fetch_one(&pool)
        .await
        .expect("seq");
        pool.close().await;
        s
    };
    let o = sb.run(&["audit", "verify", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("event {seq}:")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("does not match its hash"),
        "{}",
        stdout(&o)
    );

    // --all reports the broken run and the intact one.
    let o = sb.run(&["audit", "verify", "--all", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let by_id = |r: &str| {
        report
            .as_array()
            .and_then(|a| a.iter().find(|x| x["run"] == r))
            .cloned()
            .expect("in report")
    };
    assert_eq!(by_id(&id)["ok"], false);
    assert_eq!(by_id(&id)["first_bad_event"], seq);
    assert_eq!(by_id(&second)["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_a_deleted_event_and_an_edited_runbook() {
    let sb = Sandbox::new();
    let a = run_example(&sb);
    let b = run_example(&sb);
    sql(
        &sb,
        &[
            &format!("DELETE FROM events WHERE run_id = '{a}' AND seq = 3"),
            &format!(
                "UPDATE runs SET runbook_text = runbook_text || '# harmless?' WHERE id = '{b}'"
            ),
        ],
    )
    .await;
    let o = sb.run(&["audit", "verify", &a]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("event 4: expected event 3"),
        "{}",
        stdout(&o)
    );
    let o = sb.run(&["audit", "verify", &b]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("runbook text does not match"),
        "{}",
        stdout(&o)
    );
}
