//! The MLflow plugins through the engine: a runbook reads the training F1 of what serves in
//! Production, branches on it and rolls the model back; `plan` says what would move without moving
//! it, and `show` and `audit` name the versions from and to. Against the real MLflow
//! (`RUNBOOK_TEST_MLFLOW_URL`); the timeout case needs only a silent local port.

use crate::common::{Sandbox, stderr, stdout};
use runbook_steps::mlflow::fixture;
use runbook_steps::testkit::service;
use serde_json::Value;
use std::time::{Duration, Instant};

const RUNBOOK: &str = r#"
name: model-rollback
params:
  model: { type: string, required: true }
  min_f1: { type: number, default: 0.7 }
connections:
  registry: { kind: mlflow }
steps:
  - id: live
    uses: mlflow.run_metrics
    with: { model: "{{ params.model }}", stage: Production, metrics: [f1_score] }
    outputs:
      version: "{{ result.version }}"
      f1: "{{ result.metrics.f1_score }}"
  - id: choose
    uses: flow.branch
    needs: live
    with:
      cases:
        - { when: "steps.live.f1 < params.min_f1", then: rollback }
      default: healthy
  - id: rollback
    uses: mlflow.rollback
    with: { model: "{{ params.model }}", method: stage }
    outputs:
      from: "{{ result.from_version }}"
      to: "{{ result.to_version }}"
  - id: verify
    uses: mlflow.run_metrics
    needs: rollback
    with: { model: "{{ params.model }}", stage: Production, metrics: [f1_score] }
    outputs: { f1: "{{ result.metrics.f1_score }}" }
  - { id: healthy, uses: flow.noop }
"#;

/// `runbook ARGS` with the registry's address given the way an operator would.
fn runbook(sb: &Sandbox, url: &str, args: &[&str]) -> std::process::Output {
    sb.cmd(args)
        .env("RUNBOOK_CONNECTION_REGISTRY_URL", url)
        .output()
        .expect("spawn runbook")
}

fn stages(rt: &tokio::runtime::Runtime, url: &str, model: &str) -> Vec<(u64, String)> {
    rt.block_on(fixture::stages(url, model))
        .expect("read the registry")
}

fn st(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(v, s)| (*v, s.to_string())).collect()
}

#[test]
fn a_runbook_reads_the_f1_branches_and_rolls_production_back() {
    let Some(url) = service("RUNBOOK_TEST_MLFLOW_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let model = fixture::unique("rb-e2e");
    rt.block_on(async {
        fixture::register(&url, &model, &[0.91, 0.62]).await?;
        // Version 1 served, then version 2 replaced it.
        fixture::transition(&url, &model, 1, "Production").await?;
        fixture::transition(&url, &model, 2, "Production").await
    })
    .expect("seed the registry");
    let before = st(&[(1, "Archived"), (2, "Production")]);
    assert_eq!(stages(&rt, &url, &model), before);

    let sb = Sandbox::new();
    let f = sb.write("rollback.yaml", RUNBOOK);
    let file = f.to_str().expect("path");
    let param = format!("model={model}");

    let o = runbook(&sb, &url, &["plan", file, "-p", &param]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(
        plan.contains("choose: `steps.live.f1 < params.min_f1` → rollback"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "rollback (mlflow.rollback, unsafe): would roll {model} in Production back from version 2 to version 1, archiving version 2"
        )),
        "{plan}"
    );
    assert_eq!(
        stages(&rt, &url, &model),
        before,
        "the plan changed the registry"
    );

    let o = runbook(
        &sb,
        &url,
        &["run", file, "-p", &param, "-o", "json", "--quiet"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stages(&rt, &url, &model),
        st(&[(1, "Production"), (2, "Archived")])
    );
    let shown: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let id = shown["run"]["id"].as_str().expect("run id").to_string();

    let show = stdout(&sb.run(&["show", &id]));
    let row = |id: &str| {
        show.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_else(|| panic!("no row {id}: {show}"))
            .to_string()
    };
    assert!(row("rollback").ends_with("from=2 to=1"), "{show}");
    assert!(row("verify").ends_with("f1=0.91"), "the F1 after: {show}");
    let audit = stdout(&sb.run(&["audit", &id]));
    for needle in [
        "choose: decided rollback because `steps.live.f1 < params.min_f1` holds; read params.min_f1=0.7, steps.live.f1=0.62".to_string(),
        "rollback: started (unsafe, attempt 1)".to_string(),
        "rollback: succeeded (attempt 1); outputs from=2, to=1".to_string(),
    ] {
        assert!(audit.contains(&needle), "{needle}\n{audit}");
    }

    // Run again: version 1 serves, its F1 is fine, and nothing is rolled back.
    let o = runbook(
        &sb,
        &url,
        &["run", file, "-p", &param, "-o", "json", "--quiet"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let status = |step: &str| {
        again["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == step))
            .map(|s| s["status"].clone())
    };
    assert_eq!(status("rollback"), Some("skipped".into()), "{again}");
    assert_eq!(status("healthy"), Some("succeeded".into()), "{again}");
    assert_eq!(
        stages(&rt, &url, &model),
        st(&[(1, "Production"), (2, "Archived")])
    );
}

#[test]
fn a_registry_that_never_answers_fails_the_step_at_its_timeout() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let sb = Sandbox::new();
    let f = sb.write(
        "slow.yaml",
        "name: slow\nconnections:\n  registry: { kind: mlflow }\nsteps:\n  - id: look\n    uses: mlflow.model_version\n    timeout: 500ms\n    with: { model: m, alias: champion }\n",
    );
    let started = Instant::now();
    let o = runbook(
        &sb,
        &url,
        &["run", f.to_str().expect("path"), "-o", "json", "--quiet"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let shown: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let look = &shown["steps"][0];
    assert_eq!(look["error_kind"], "timeout", "{shown}");
}
