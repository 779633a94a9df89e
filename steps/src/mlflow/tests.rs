//! Against the real MLflow that `dev/services` starts (`RUNBOOK_TEST_MLFLOW_URL`): each test
//! registers models of its own. Failures MLflow cannot be made to produce (a dead port, a 500 page,
//! broken JSON, a server that never answers) come from a tiny local TCP server.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::fixture::{self, Seeded};
use super::{LatestVersions, ModelVersion, Rollback, RunMetrics, SetAlias};
use crate::connection::{Connection, kind};
use crate::testkit::{Harness, err, ok, service};
use crate::{ErrorKind, Plugin, StepError};

fn mlflow() -> Option<String> {
    service("RUNBOOK_TEST_MLFLOW_URL")
}

fn connection(url: &str, token: Option<&str>) -> Connection {
    let mut fields = serde_json::Map::new();
    fields.insert("url".into(), json!(url));
    if let Some(t) = token {
        fields.insert("token".into(), json!(t));
    }
    Connection::new("registry", kind("mlflow").expect("declared kind"), fields)
}

fn harness(url: &str) -> Harness {
    Harness::new("mlflow").with_connection(connection(url, None))
}

async fn call(url: &str, plugin: &dyn Plugin, input: Value) -> Result<Value, StepError> {
    harness(url).call(plugin, input).await
}

/// `plugin.plan`, as `runbook plan` calls it.
async fn plan(url: &str, plugin: &dyn Plugin, input: Value) -> Result<Value, StepError> {
    let h = harness(url);
    let fut = plugin.plan(input, &h.ctx).expect("the plugin plans");
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("plan returned")
}

/// A model with versions whose runs logged these F1 scores.
async fn seeded(url: &str, prefix: &str, f1: &[f64]) -> Seeded {
    fixture::register(url, &fixture::unique(prefix), f1)
        .await
        .expect("register the model")
}

async fn stages(url: &str, model: &str) -> Vec<(u64, String)> {
    fixture::stages(url, model).await.expect("read stages")
}

fn st(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(v, s)| (*v, s.to_string())).collect()
}

#[tokio::test]
async fn latest_versions_and_model_version_read_the_registry() {
    let Some(url) = mlflow() else { return };
    let s = seeded(&url, "rb-read", &[0.91, 0.62]).await;
    let m = s.model.as_str();
    fixture::transition(&url, m, 1, "Staging")
        .await
        .expect("stage");
    fixture::transition(&url, m, 2, "Production")
        .await
        .expect("stage");
    fixture::set_alias(&url, m, "champion", 2)
        .await
        .expect("alias");

    let r = ok(call(&url, &LatestVersions, json!({ "model": m })).await);
    assert_eq!(r["by_stage"], json!({ "Staging": 1, "Production": 2 }));
    assert_eq!(r["versions"][1]["run_id"], json!(s.runs[1]));
    assert_eq!(r["versions"][1]["aliases"], json!(["champion"]));
    let r = ok(call(
        &url,
        &LatestVersions,
        json!({ "model": m, "stages": ["Production"] }),
    )
    .await);
    assert_eq!(r["by_stage"], json!({ "Production": 2 }));
    assert_eq!(r["versions"].as_array().map(Vec::len), Some(1));

    let by_alias = ok(call(
        &url,
        &ModelVersion,
        json!({ "model": m, "alias": "champion" }),
    )
    .await);
    assert_eq!(by_alias["version"], 2);
    assert_eq!(by_alias["stage"], "Production");
    assert_eq!(by_alias["status"], "READY");
    assert_eq!(by_alias["source"], format!("runs:/{}/model", s.runs[1]));
    let by_number = ok(call(&url, &ModelVersion, json!({ "model": m, "version": 1 })).await);
    assert_eq!(
        (&by_number["version"], &by_number["stage"]),
        (&json!(1), &json!("Staging"))
    );
    let by_stage = ok(call(
        &url,
        &ModelVersion,
        json!({ "model": m, "stage": "Production" }),
    )
    .await);
    assert_eq!(by_stage["version"], 2);

    let e = err(call(
        &url,
        &ModelVersion,
        json!({ "model": m, "stage": "Archived" }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Condition, "{}", e.message);
    assert_eq!(
        e.message,
        format!("no version of model `{m}` is in stage Archived")
    );
}

#[tokio::test]
async fn run_metrics_returns_the_f1_the_run_logged() {
    let Some(url) = mlflow() else { return };
    let s = seeded(&url, "rb-metrics", &[0.91, 0.62]).await;
    let m = s.model.as_str();
    fixture::transition(&url, m, 2, "Production")
        .await
        .expect("stage");
    // A later step's value is the latest, whatever its timestamp: MLflow's own rule.
    fixture::post(
        &url,
        "runs/log-metric",
        json!({ "run_id": s.runs[0], "key": "f1_score", "value": 0.88, "timestamp": 0, "step": 1 }),
    )
    .await
    .expect("log");
    fixture::post(
        &url,
        "runs/log-metric",
        json!({ "run_id": s.runs[1], "key": "loss", "value": "NaN", "timestamp": 0, "step": 0 }),
    )
    .await
    .expect("log");

    let h = harness(&url);
    let mut progress = h.progress.clone();
    let live = ok(h
        .call(&RunMetrics, json!({ "model": m, "stage": "Production" }))
        .await);
    assert_eq!(
        live,
        json!({ "model": m, "version": 2, "run_id": s.runs[1],
                "metrics": { "f1_score": 0.62 }, "non_finite": { "loss": "NaN" } })
    );
    assert!(progress.has_changed().expect("sender alive"));
    assert_eq!(
        *progress.borrow_and_update(),
        "waiting for MLflow: GET runs/get"
    );

    let v1 = ok(call(
        &url,
        &RunMetrics,
        json!({ "model": m, "version": 1, "metrics": ["f1_score"] }),
    )
    .await);
    assert_eq!(v1["metrics"], json!({ "f1_score": 0.88 }));

    let e = err(call(
        &url,
        &RunMetrics,
        json!({ "model": m, "version": 1, "metrics": ["f1_score", "recall"] }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Condition);
    assert_eq!(
        e.message,
        format!(
            "run {} logged no metric `recall`; it has: f1_score",
            s.runs[0]
        )
    );
}

#[tokio::test]
async fn rollback_by_stage_moves_production_to_the_previous_live_version() {
    let Some(url) = mlflow() else { return };
    let s = seeded(&url, "rb-stage", &[0.91, 0.85, 0.62]).await;
    let m = s.model.as_str();
    fixture::transition(&url, m, 3, "Production")
        .await
        .expect("stage");
    // Deleted versions are not candidates: the previous one of 3 is 1.
    fixture::delete_version(&url, m, 2).await.expect("delete");
    let input = json!({ "model": m, "method": "stage" });
    let before = st(&[(1, "None"), (3, "Production")]);

    let p = ok(plan(&url, &Rollback, input.clone()).await);
    assert_eq!(
        p["summary"],
        format!(
            "would roll {m} in Production back from version 3 to version 1, archiving version 3"
        )
    );
    assert_eq!(
        (&p["from_version"], &p["to_version"]),
        (&json!(3), &json!(1))
    );
    assert_eq!(
        stages(&url, m).await,
        before,
        "the plan changed the registry"
    );

    let r = ok(call(&url, &Rollback, input.clone()).await);
    assert_eq!(
        r,
        json!({ "model": m, "method": "stage", "stage": "Production",
                "from_version": 3, "to_version": 1, "archived": [3] })
    );
    assert_eq!(
        stages(&url, m).await,
        st(&[(1, "Production"), (3, "Archived")])
    );

    // Version 1 serves now and nothing is below it: refused, in plan and run alike, and nothing moves.
    for result in [
        plan(&url, &Rollback, input.clone()).await,
        call(&url, &Rollback, input.clone()).await,
    ] {
        let e = err(result);
        assert_eq!(e.kind, ErrorKind::Condition, "{}", e.message);
        assert_eq!(
            e.message,
            format!(
                "model `{m}` has no READY version below version 1: nothing to roll back to (versions: 1 READY, 3 READY)"
            )
        );
    }
    assert_eq!(
        stages(&url, m).await,
        st(&[(1, "Production"), (3, "Archived")])
    );

    // Staging holds nothing: nothing to roll back.
    let e = err(call(
        &url,
        &Rollback,
        json!({ "model": m, "method": "stage", "stage": "Staging" }),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Condition);
    assert!(e.message.contains("is in stage Staging"), "{}", e.message);
}

#[tokio::test]
async fn rollback_by_alias_repoints_champion() {
    let Some(url) = mlflow() else { return };
    let s = seeded(&url, "rb-alias", &[0.9, 0.8, 0.4]).await;
    let m = s.model.as_str();
    fixture::set_alias(&url, m, "champion", 3)
        .await
        .expect("alias");
    let input = json!({ "model": m, "method": "alias" });

    let p = ok(plan(&url, &Rollback, input.clone()).await);
    assert_eq!(
        p["summary"],
        format!("would roll {m}@champion back from version 3 to version 2")
    );
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        Some(3),
        "the plan moved the alias"
    );

    let r = ok(call(&url, &Rollback, input.clone()).await);
    assert_eq!(
        r,
        json!({ "model": m, "method": "alias", "alias": "champion",
                "from_version": 3, "to_version": 2 })
    );
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        Some(2)
    );
    assert_eq!(
        stages(&url, m).await,
        st(&[(1, "None"), (2, "None"), (3, "None")]),
        "an alias rollback leaves stages alone"
    );

    let r = ok(call(
        &url,
        &Rollback,
        json!({ "model": m, "method": "alias", "alias": "champion", "to_version": 3 }),
    )
    .await);
    assert_eq!(
        (&r["from_version"], &r["to_version"]),
        (&json!(2), &json!(3))
    );

    for (input, needle) in [
        (
            json!({ "model": m, "method": "alias", "alias": "challenger" }),
            format!("model `{m}` has no alias `challenger`: nothing to roll back"),
        ),
        (
            json!({ "model": m, "method": "alias", "to_version": 3 }),
            format!("version 3 of model `{m}` is the one serving now: nothing to roll back"),
        ),
        (
            json!({ "model": m, "method": "alias", "to_version": 7 }),
            format!("model `{m}` has no version 7 (versions: 1 READY, 2 READY, 3 READY)"),
        ),
    ] {
        let e = err(call(&url, &Rollback, input).await);
        assert_eq!((e.kind, e.message), (ErrorKind::Condition, needle));
    }
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        Some(3)
    );
}

#[tokio::test]
async fn set_alias_sets_once_and_plans_from_the_live_registry() {
    let Some(url) = mlflow() else { return };
    let s = seeded(&url, "rb-set", &[0.9, 0.8]).await;
    let m = s.model.as_str();
    let to = |v: u64| json!({ "model": m, "alias": "champion", "version": v });

    let p = ok(plan(&url, &SetAlias, to(1)).await);
    assert_eq!(
        p["summary"],
        format!("would point {m}@champion at version 1 (now unset)")
    );
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        None
    );

    let r = ok(call(&url, &SetAlias, to(1)).await);
    assert_eq!(
        r,
        json!({ "model": m, "alias": "champion", "version": 1, "before": null, "changed": true })
    );
    let r = ok(call(&url, &SetAlias, to(1)).await);
    assert_eq!((&r["before"], &r["changed"]), (&json!(1), &json!(false)));

    let p = ok(plan(&url, &SetAlias, to(2)).await);
    assert_eq!(
        p["summary"],
        format!("would point {m}@champion at version 2 (now 1)")
    );
    let p = ok(plan(&url, &SetAlias, to(1)).await);
    assert_eq!(
        p["summary"],
        format!("{m}@champion points at version 1 already: nothing to change")
    );
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        Some(1)
    );

    let e = err(call(&url, &SetAlias, to(9)).await);
    assert_eq!(e.kind, ErrorKind::Status, "{}", e.message);
    assert!(
        e.message
            .contains("answered 404 Not Found: RESOURCE_DOES_NOT_EXIST: Model Version")
            && e.message.contains("version=9) not found"),
        "{}",
        e.message
    );
    assert_eq!(
        fixture::alias(&url, m, "champion").await.expect("read"),
        Some(1)
    );
}

#[tokio::test]
async fn an_unknown_model_is_a_status_error_quoting_mlflow() {
    let Some(url) = mlflow() else { return };
    let m = fixture::unique("rb-missing");
    let cases: [(&dyn Plugin, Value); 5] = [
        (&LatestVersions, json!({ "model": m })),
        (&ModelVersion, json!({ "model": m, "version": 1 })),
        (&RunMetrics, json!({ "model": m, "stage": "Production" })),
        (&Rollback, json!({ "model": m, "method": "stage" })),
        (
            &SetAlias,
            json!({ "model": m, "alias": "champion", "version": 1 }),
        ),
    ];
    for (plugin, input) in cases {
        let name = plugin.info().name;
        let e = err(call(&url, plugin, input).await);
        assert_eq!(e.kind, ErrorKind::Status, "{name}: {}", e.message);
        assert!(
            e.message.starts_with("MLflow: ")
                && e.message
                    .contains("answered 404 Not Found: RESOURCE_DOES_NOT_EXIST: ")
                && e.message.contains(&format!("name={m}")),
            "{name}: {}",
            e.message
        );
        let d = e.detail.expect("detail");
        assert_eq!(
            (&d["status"], &d["error_code"]),
            (&json!(404), &json!("RESOURCE_DOES_NOT_EXIST")),
            "{name}"
        );
    }
}

// ---- Failure injection: a local TCP server MLflow cannot be made to imitate. ----

/// Answers one request with `response` (a whole HTTP response) and hands back the request head.
async fn answering(response: String) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let head = read_head(&mut sock).await;
        let _ = sock.write_all(response.as_bytes()).await;
        let _ = sock.shutdown().await;
        let _ = tx.send(head);
    });
    (url, rx)
}

async fn read_head(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_token_and_a_path_prefix_reach_the_server_and_its_error_is_quoted() {
    let (base, head) = answering(response(
        "403 Forbidden",
        "application/json",
        r#"{"error_code": "PERMISSION_DENIED", "message": "User may not read model m"}"#,
    ))
    .await;
    let h =
        Harness::new("s").with_connection(connection(&format!("{base}/mlflow"), Some("tok-3e8a")));
    let e = err(h
        .call(&ModelVersion, json!({ "model": "m", "alias": "champion" }))
        .await);
    let head = head.await.expect("the server saw a request");
    assert!(
        head.starts_with(
            "GET /mlflow/api/2.0/mlflow/registered-models/alias?name=m&alias=champion HTTP/1.1"
        ),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer tok-3e8a"),
        "{head}"
    );
    assert_eq!(e.kind, ErrorKind::Status);
    assert_eq!(
        e.message,
        format!(
            "MLflow: GET {base}/mlflow/api/2.0/mlflow/registered-models/alias?name=m&alias=champion answered 403 Forbidden: PERMISSION_DENIED: User may not read model m"
        )
    );
}

#[tokio::test]
async fn a_500_page_and_broken_json_are_status_and_parse_errors() {
    let (url, _) = answering(response(
        "500 Internal Server Error",
        "text/html",
        "<html>worker crashed</html>",
    ))
    .await;
    let e = err(call(&url, &LatestVersions, json!({ "model": "m" })).await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert_eq!(
        e.message,
        format!(
            "MLflow: POST {url}/api/2.0/mlflow/registered-models/get-latest-versions answered 500 Internal Server Error; body: <html>worker crashed</html>"
        )
    );
    assert_eq!(
        e.detail.expect("detail")["body"],
        "<html>worker crashed</html>"
    );

    let (url, _) = answering(response(
        "200 OK",
        "application/json",
        r#"{"model_version": {"name": "m", "#,
    ))
    .await;
    let e = err(call(&url, &ModelVersion, json!({ "model": "m", "version": 1 })).await);
    assert_eq!(e.kind, ErrorKind::Parse);
    assert!(
        e.message.contains("answered JSON that does not parse")
            && e.message
                .ends_with(r#"; body: {"model_version": {"name": "m","#),
        "{}",
        e.message
    );

    // JSON, but not what MLflow answers: said, not guessed around.
    let (url, _) = answering(response(
        "200 OK",
        "application/json",
        r#"{"model_version": {"name": "m", "version": "one"}}"#,
    ))
    .await;
    let e = err(call(&url, &ModelVersion, json!({ "model": "m", "version": 1 })).await);
    assert_eq!(e.kind, ErrorKind::Parse);
    assert_eq!(
        e.message,
        "MLflow's answer to model-versions/get has a version that is not a number: `one`"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_left_with_nothing_when_the_call_is_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        read_head(&mut sock).await;
        // Never answer; report when the client hangs up.
        let mut rest = [0u8; 64];
        while !matches!(sock.read(&mut rest).await, Ok(0) | Err(_)) {}
        let _ = closed_tx.send(());
    });
    let h = harness(&url);
    let mut progress = h.progress.clone();
    let call = Rollback.run(json!({ "model": "m", "method": "alias" }), &h.ctx);
    // What the engine does at a step's timeout: the call is dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the silent server answered"
    );
    assert_eq!(
        *progress.borrow_and_update(),
        "waiting for MLflow: GET registered-models/get"
    );
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the connection was left open after the call was dropped")
        .expect("server task");
}

#[tokio::test]
async fn a_dead_port_is_a_connect_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = err(call(&url, &RunMetrics, json!({ "model": "m", "version": 1 })).await);
    assert_eq!(e.kind, ErrorKind::Connect);
    assert!(
        e.message.starts_with(&format!(
            "GET {url}/api/2.0/mlflow/model-versions/get?name=m&version=1: "
        )) && e.message.to_lowercase().contains("connection refused"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn bad_input_and_connections_are_input_errors_before_any_request() {
    // Port 9 (discard) is never asked: every case fails before a request.
    let url = "http://127.0.0.1:9";
    let cases: [(&dyn Plugin, Value, &str); 7] = [
        (
            &ModelVersion,
            json!({ "model": "m", "version": 1, "alias": "a" }),
            "give exactly one of `version`, `alias` and `stage`",
        ),
        (
            &RunMetrics,
            json!({ "model": "m" }),
            "give exactly one of `version`, `alias` and `stage`",
        ),
        (
            &Rollback,
            json!({ "model": "m", "method": "stage", "alias": "champion" }),
            "`alias` goes with `method: alias`",
        ),
        (
            &Rollback,
            json!({ "model": "m", "method": "stage", "stage": "Archived" }),
            "cannot roll back stage Archived: use one of Production, Staging",
        ),
        (
            &Rollback,
            json!({ "model": "it's \"odd\"", "method": "stage" }),
            "cannot be searched for",
        ),
        (
            &Rollback,
            json!({ "model": "m", "method": "revert" }),
            "unknown variant `revert`, expected `stage` or `alias`",
        ),
        (
            &SetAlias,
            json!({ "model": "m", "alias": "a", "version": "2" }),
            "invalid type: string \"2\", expected u64",
        ),
    ];
    for (plugin, input, needle) in cases {
        let e = err(call(url, plugin, input).await);
        assert_eq!(e.kind, ErrorKind::Input, "{needle}: {}", e.message);
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }

    for (conn_url, needle) in [
        (
            "ftp://host/",
            "connection `registry` (mlflow): invalid url `ftp://host/`: the scheme must be http or https",
        ),
        (
            "not a url",
            "connection `registry` (mlflow): invalid url `not a url`",
        ),
    ] {
        let e = err(call(
            conn_url,
            &ModelVersion,
            json!({ "model": "m", "version": 1 }),
        )
        .await);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.message.starts_with(needle), "{}", e.message);
    }
    let e = err(Harness::new("s")
        .call(&ModelVersion, json!({ "model": "m", "version": 1 }))
        .await);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(
        e.message.contains("needs a `mlflow` connection"),
        "{}",
        e.message
    );
}
