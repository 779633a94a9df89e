//! The MongoDB plugins through the engine: the seed runbook's "monitor feedback" check, with the
//! cutoff written as `ago('1h')`, counts positive and negative feedback of the last hour, groups the
//! last day's by type, and branches on what it found. Against the real server that `dev/services`
//! starts (`RUNBOOK_TEST_MONGODB_URI`).

use crate::common::{Sandbox, stderr};
use runbook_steps::mongodb::fixture;
use runbook_steps::testkit::service;
use serde_json::{Value, json};

const RUNBOOK: &str = r#"
name: feedback-check
connections:
  feedback: { kind: mongodb }
steps:
  - id: positive
    uses: mongodb.count
    with:
      collection: ml_feedback
      filter: { feedback_type: positive, created_at: { $gte: "{{ ago('1h') }}" } }
    outputs: { n: "{{ result.count }}" }
  - id: negative
    uses: mongodb.count
    with:
      collection: ml_feedback
      filter: { feedback_type: negative, created_at: { $gte: "{{ ago('1h') }}" } }
    outputs: { n: "{{ result.count }}" }
  - id: by_type
    uses: mongodb.aggregate
    with:
      collection: ml_feedback
      pipeline:
        - $match: { created_at: { $gte: "{{ ago('24h') }}" } }
        - $group: { _id: $feedback_type, count: { $sum: 1 } }
        - $sort: { _id: 1 }
    outputs: { groups: "{{ result.documents }}" }
  - id: choose
    uses: flow.branch
    needs: [positive, negative, by_type]
    with:
      cases:
        - { when: "steps.negative.n > steps.positive.n", then: degraded }
      default: healthy
  - { id: degraded, uses: flow.noop }
  - { id: healthy, uses: flow.noop }
"#;

#[test]
fn a_runbook_counts_the_last_hours_feedback_and_branches_on_it() {
    let Some(uri) = service("RUNBOOK_TEST_MONGODB_URI") else {
        return;
    };
    let now = jiff::Timestamp::now();
    let at = |mins: i64| json!({ "$date": format!("{:.3}", now - jiff::SignedDuration::from_mins(mins)) });
    let mut docs = Vec::new();
    // The last hour: 3 negative, 1 positive. Earlier today: 4 positive. Yesterday: 2 negative.
    for (kind, mins, n) in [
        ("negative", 5, 3),
        ("positive", 20, 1),
        ("positive", 300, 4),
        ("negative", 30 * 60, 2),
    ] {
        for _ in 0..n {
            docs.push(json!({ "feedback_type": kind, "created_at": at(mins) }));
        }
    }
    let db = fixture::unique_db("rb_e2e");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(fixture::insert(&uri, &db, "ml_feedback", &docs))
        .expect("insert the feedback");

    let sb = Sandbox::new();
    let f = sb.write("feedback.yaml", RUNBOOK);
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "-o", "json", "--quiet"])
        .env("RUNBOOK_CONNECTION_FEEDBACK_URI", &uri)
        .env("RUNBOOK_CONNECTION_FEEDBACK_DATABASE", &db)
        .output()
        .expect("spawn runbook");
    let _ = rt.block_on(fixture::drop_db(&uri, &db));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let step = |id: &str| {
        shown["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no step {id}: {shown}"))
    };
    assert_eq!(step("positive")["outputs"], json!({ "n": 1 }), "{shown}");
    assert_eq!(step("negative")["outputs"], json!({ "n": 3 }), "{shown}");
    assert_eq!(
        step("by_type")["outputs"]["groups"],
        json!([{ "_id": "negative", "count": 3 }, { "_id": "positive", "count": 5 }]),
        "{shown}"
    );
    assert_eq!(step("degraded")["status"], "succeeded", "{shown}");
    assert_eq!(step("healthy")["status"], "skipped", "{shown}");
}
