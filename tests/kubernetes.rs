//! The Kubernetes plugins through the engine, on the seed's model-degraded path: a read-only
//! monitor script run in a pod, the error lines of the app's logs, a branch on the F1 it printed,
//! then a ConfigMap patch and a restart that waits for the rollout. `plan` shows the patch's before
//! and after and the restart without changing anything. Against the fake API server
//! (`RUNBOOK_TEST_KUBECONFIG`), in a namespace of the test's own.

use crate::common::{Sandbox, repo, stderr, stdout};
use runbook_steps::kubernetes::fixture::Namespace;
use runbook_steps::testkit::service;
use serde_json::Value;

const RUNBOOK: &str = r#"
name: model-degraded
params:
  min_f1: { type: number, default: 0.65 }
connections:
  k8s: { kind: kubernetes }
steps:
  - id: monitor
    uses: kubernetes.exec
    side_effect: read
    with:
      target: pod/toolbox
      container: main
      command: [sh, -c, "echo '{\"specialist\": \"fraud\", \"f1\": 0.61}'"]
      json: true
    outputs: { f1: "{{ result.json.f1 }}" }
  - id: errors
    uses: kubernetes.logs
    with: { selector: app=checkout, match: "error|exception|failed", ignore_case: true }
    outputs: { count: "{{ result.matched }}" }
  - id: choose
    uses: flow.branch
    needs: [monitor, errors]
    with:
      cases:
        - { when: "steps.monitor.f1 < params.min_f1", then: fallback }
      default: healthy
  - id: fallback
    uses: kubernetes.patch
    with:
      kind: configmap
      name: checkout-config
      patch: { data: { ML_FALLBACK_ENABLED: "true", ML_FALLBACK_THRESHOLD: "0.65" } }
  - id: restart
    uses: kubernetes.rollout_restart
    needs: fallback
    with: { deployment: deployment/checkout, wait: 30s }
    outputs: { done: "{{ result.rollout.complete }}" }
  - id: monitoring_scheduled
    uses: kubernetes.get
    needs: restart
    with: { kind: cj }
    outputs: { names: "{{ result.names | join(',') }}" }
  - { id: healthy, uses: flow.noop }
"#;

fn runbook(sb: &Sandbox, kubeconfig: &str, ns: &str, args: &[&str]) -> std::process::Output {
    sb.cmd(args)
        .env("RUNBOOK_CONNECTION_K8S_KUBECONFIG", kubeconfig)
        .env("RUNBOOK_CONNECTION_K8S_NAMESPACE", ns)
        .output()
        .expect("spawn runbook")
}

#[test]
fn a_runbook_diagnoses_in_pods_patches_and_restarts_and_plan_changes_nothing() {
    let Some(kubeconfig) = service("RUNBOOK_TEST_KUBECONFIG") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sample = std::fs::read_to_string(repo().join("dev/kube/sample.yaml")).expect("the sample");
    let ns = rt
        .block_on(Namespace::create(&kubeconfig, "e2e", &sample))
        .expect("a namespace of sample objects");
    let config = || {
        rt.block_on(ns.object("/api/v1/namespaces/NS/configmaps/checkout-config"))
            .expect("the configmap")
    };
    let deployment = || {
        rt.block_on(ns.object("/apis/apps/v1/namespaces/NS/deployments/checkout"))
            .expect("the deployment")
    };
    let before = config();
    let sb = Sandbox::new();
    let f = sb.write("model-degraded.yaml", RUNBOOK);
    let file = f.to_str().expect("path");

    let o = runbook(&sb, &kubeconfig, &ns.name, &["plan", file]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = stdout(&o);
    for line in [
        "choose: `steps.monitor.f1 < params.min_f1` → fallback".to_string(),
        format!(
            "fallback (kubernetes.patch, idempotent): would merge patch configmaps `checkout-config` in namespace `{}`",
            ns.name
        ),
        format!(
            "restart (kubernetes.rollout_restart, unsafe): would restart deployment `checkout` in namespace `{}` (generation 1, 2 of 2 replicas ready), waiting up to 30s for the rollout",
            ns.name
        ),
    ] {
        assert!(plan.contains(&line), "{line}\n{plan}");
    }
    assert_eq!(config(), before, "the plan changed the configmap");
    assert_eq!(deployment()["metadata"]["generation"], 1);

    let o = runbook(
        &sb,
        &kubeconfig,
        &ns.name,
        &["run", file, "-o", "json", "--quiet"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let data = &config()["data"];
    assert_eq!(
        (
            data["ML_FALLBACK_ENABLED"].clone(),
            data["LOG_LEVEL"].clone()
        ),
        ("true".into(), "info".into())
    );
    let d = deployment();
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        d.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .is_some_and(Value::is_string),
        "{d}"
    );

    let shown: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let id = shown["run"]["id"].as_str().expect("run id").to_string();
    let o = sb.run(&["show", &id, "-o", "json"]);
    let text = stdout(&o);
    for needle in [
        "\"f1\":0.61",
        "\"done\":true",
        "\"names\":\"nightly-retrain\"",
        "\"count\":2",
    ] {
        assert!(text.replace(' ', "").contains(needle), "{needle}: {text}");
    }
}
