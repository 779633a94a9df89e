//! The plugins against a real API server: the fake one `dev/services` runs (`RUNBOOK_TEST_KUBECONFIG`).
//! Every test works in a namespace of its own, made from `dev/kube/sample.yaml`, so tests running at
//! once (and the fake's other users) never see each other's objects, requests or faults.

use std::time::Duration;

use serde_json::{Value, json};

use super::fixture::Namespace;
use super::{Exec, Get, Logs, Patch, RolloutRestart};
use crate::connection::{Connection, kind};
use crate::testkit::{Harness, err, ok, service};
use crate::{ErrorKind, Plugin};

/// The objects the fake serves in namespace `shop`; each test makes its own copy.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/kube/sample.yaml");

/// What a test polls for may take this long: a guard against hanging, not a measure.
const PATIENCE: Duration = Duration::from_secs(20);

/// A namespace of the fake's holding the sample objects, as a test uses it.
pub(super) struct Fake {
    pub(super) ns: String,
    space: Namespace,
}

impl Fake {
    /// A fresh namespace holding the sample objects, or `None` (the test returns) when no fake runs.
    pub(super) async fn new(test: &str) -> Option<Fake> {
        let kubeconfig = service("RUNBOOK_TEST_KUBECONFIG")?;
        let sample = std::fs::read_to_string(SAMPLE).expect("dev/kube/sample.yaml");
        let space = Namespace::create(&kubeconfig, test, &sample)
            .await
            .expect("a namespace of sample objects");
        Some(Fake {
            ns: space.name.clone(),
            space,
        })
    }

    pub(super) async fn post(&self, path: &str, body: Value) {
        self.space.post(path, body).await.expect("created");
    }

    pub(super) async fn fault(&self, path: &str, method: &str, code: u16, message: &str) {
        self.space
            .fault(path, method, code, message)
            .await
            .expect("a fault");
    }

    pub(super) async fn requests(&self) -> Vec<Value> {
        self.space.requests().await.expect("the request log")
    }

    pub(super) fn harness(&self) -> Harness {
        Harness::new("k8s").with_connection(Connection::new(
            "k8s",
            kind("kubernetes").expect("a kind"),
            self.space.connection_fields(),
        ))
    }

    async fn object(&self, path: &str) -> Value {
        self.space.object(path).await.expect("the object")
    }
}

async fn run(h: &Harness, plugin: &dyn Plugin, input: Value) -> Result<Value, crate::StepError> {
    h.call(plugin, input).await
}

#[tokio::test]
async fn get_reads_an_object_or_a_list_by_any_kind_name() {
    let Some(f) = Fake::new("get").await else {
        return;
    };
    let h = f.harness();
    let pod = ok(run(&h, &Get, json!({"kind": "pod", "name": "toolbox"})).await);
    assert_eq!(pod["object"]["metadata"]["name"], "toolbox");
    assert_eq!(
        (pod["count"].clone(), pod["kind"].clone()),
        (json!(1), json!("Pod"))
    );
    assert!(pod["object"]["metadata"].get("managedFields").is_none());

    let deploys = ok(run(&h, &Get, json!({"kind": "deploy"})).await);
    assert_eq!(deploys["names"], json!(["checkout", "fraud-scorer"]));
    assert_eq!(deploys["api_version"], "apps/v1");
    let cj = ok(run(&h, &Get, json!({"kind": "cj", "namespace": f.ns})).await);
    assert_eq!(cj["names"], json!(["nightly-retrain"]));
    let labelled = ok(run(&h, &Get, json!({"kind": "pods", "labels": "app=checkout"})).await);
    assert_eq!(labelled["count"], 2, "{labelled}");
    let fields = json!({"kind": "pods", "fields": "status.phase=Running,metadata.name=toolbox"});
    assert_eq!(ok(run(&h, &Get, fields).await)["names"], json!(["toolbox"]));

    let e = err(run(&h, &Get, json!({"kind": "configmap", "name": "nope"})).await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.starts_with(&format!(
            "get configmaps `nope` in namespace `{}`: the API server answered 404 NotFound: ",
            f.ns
        )) && e.message.contains("\"nope\" not found"),
        "{}",
        e.message
    );
    let missing = json!({"kind": "configmap", "name": "nope", "missing_ok": true});
    let r = ok(run(&h, &Get, missing).await);
    assert_eq!(
        (r["object"].clone(), r["count"].clone()),
        (Value::Null, json!(0))
    );

    let e = err(run(&h, &Get, json!({"kind": "widgets"})).await);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(
        e.message
            .starts_with("kind `widgets`: the server has no such resource"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn patch_shows_before_and_after_and_plan_changes_nothing() {
    let Some(f) = Fake::new("patch").await else {
        return;
    };
    let h = f.harness();
    let input = json!({"kind": "configmap", "name": "checkout-config",
                       "patch": {"data": {"LOG_LEVEL": "debug", "NEW": "1"}}});
    let plan = Patch
        .plan(input.clone(), &h.ctx)
        .expect("a plan")
        .await
        .expect("planned");
    assert_eq!(
        plan["before"],
        json!({"data": {"LOG_LEVEL": "info", "NEW": null}})
    );
    assert_eq!(
        plan["after"],
        json!({"data": {"LOG_LEVEL": "debug", "NEW": "1"}})
    );
    assert!(
        plan["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("would merge patch configmaps `checkout-config`")),
        "{plan}"
    );
    assert_eq!(
        f.object("/api/v1/namespaces/NS/configmaps/checkout-config")
            .await["data"]["LOG_LEVEL"],
        "info"
    );
    assert!(
        f.requests().await.iter().all(|r| r["method"] != "PATCH"),
        "a plan only reads"
    );

    let r = ok(run(&h, &Patch, input.clone()).await);
    assert_eq!(
        (r["before"].clone(), r["after"].clone()),
        (plan["before"].clone(), plan["after"].clone())
    );
    assert_eq!(r["changed"], true);
    assert_eq!(
        f.object("/api/v1/namespaces/NS/configmaps/checkout-config")
            .await["data"]["LOG_LEVEL"],
        "debug"
    );
    let again = ok(run(&h, &Patch, input).await);
    assert_eq!(
        again["changed"], false,
        "the same patch twice changes nothing more"
    );

    // Strategic: the container list merges by name.
    let image = json!({"kind": "deployment", "name": "checkout", "type": "strategic",
        "patch": {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/checkout:1.4.3"}]}}}}});
    let r = ok(run(&h, &Patch, image).await);
    assert_eq!(
        r["after"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/checkout:1.4.3"
    );

    let locked =
        json!({"kind": "cm", "name": "locked-config", "patch": {"data": {"MODE": "thawed"}}});
    let e = err(run(&h, &Patch, locked).await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.contains("configmaps `locked-config`") && e.message.contains("403 Forbidden"),
        "{}",
        e.message
    );
    f.fault(
        "/api/v1/namespaces/NS/configmaps/checkout-config",
        "PATCH",
        409,
        "the object has been modified",
    )
    .await;
    let e = err(run(
        &h,
        &Patch,
        json!({"kind": "configmap", "name": "checkout-config", "patch": {"data": {"A": "b"}}}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.contains("409") && e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    let e = err(run(
        &h,
        &Patch,
        json!({"kind": "configmap", "name": "gone", "patch": {}}),
    )
    .await);
    assert!(
        e.message.starts_with(&format!(
            "get configmaps `gone` in namespace `{}`: the API server answered 404",
            f.ns
        )),
        "{}",
        e.message
    );
    let e = err(run(
        &h,
        &Patch,
        json!({"kind": "configmap", "name": "x", "patch": [1]}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Input);
}

#[tokio::test]
async fn rollout_restart_waits_for_the_rollout_and_plan_names_the_generation() {
    let Some(f) = Fake::new("rollout").await else {
        return;
    };
    let mut h = f.harness();
    let plan = RolloutRestart
        .plan(json!({"deployment": "deployment/checkout"}), &h.ctx)
        .expect("a plan")
        .await
        .expect("planned");
    let summary = plan["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with(&format!("would restart deployment `checkout` in namespace `{}` (generation 1, 2 of 2 replicas ready)", f.ns)), "{summary}");
    let before = f
        .object("/apis/apps/v1/namespaces/NS/deployments/checkout")
        .await;
    assert!(
        before
            .pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .is_none()
    );

    let r = ok(run(
        &h,
        &RolloutRestart,
        json!({"deployment": "checkout", "wait": "30s"}),
    )
    .await);
    assert_eq!(r["rollout"]["complete"], true, "{r}");
    assert_eq!(r["generation"], 2);
    let after = f
        .object("/apis/apps/v1/namespaces/NS/deployments/checkout")
        .await;
    assert_eq!(
        after.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt"),
        Some(&r["restarted_at"])
    );
    assert!(h.progress.has_changed().expect("sender alive"));
    assert!(
        h.progress
            .borrow_and_update()
            .contains("successfully rolled out")
    );

    // A deployment whose pods never become ready: the wait ends at its deadline.
    let e = err(run(
        &h,
        &RolloutRestart,
        json!({"deployment": "fraud-scorer", "wait": "2s"}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message.starts_with(&format!(
            "deployment `fraud-scorer` in namespace `{}`: the rollout did not complete within 2s",
            f.ns
        )),
        "{}",
        e.message
    );
    let e = err(run(&h, &RolloutRestart, json!({"deployment": "nope"})).await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.contains("deployment `nope`") && e.message.contains("404"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn logs_read_every_matching_pod_and_keep_the_matched_lines() {
    let Some(f) = Fake::new("logs").await else {
        return;
    };
    let h = f.harness();
    let r = ok(run(
        &h,
        &Logs,
        json!({"selector": "app=checkout", "match": "error|TIMEOUT", "ignore_case": true}),
    )
    .await);
    let pods = r["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 2, "{r}");
    for p in pods {
        assert_eq!(
            (
                p["container"].clone(),
                p["lines"].clone(),
                p["matched"].clone()
            ),
            (json!("app"), json!(5), json!(1)),
            "{p}"
        );
        assert!(
            p["kept"][0]
                .as_str()
                .is_some_and(|l| l.ends_with("ERROR payment gateway timeout after 5000ms")),
            "{p}"
        );
    }
    assert_eq!(r["matched"], 2);
    let out = h.output().expect("matched lines were written");
    assert_eq!(out.lines().count(), 2, "{out}");
    let case_sensitive = ok(run(
        &f.harness(),
        &Logs,
        json!({"selector": "app=checkout", "match": "TIMEOUT"}),
    )
    .await);
    assert_eq!(case_sensitive["matched"], 0);
    let tail = ok(run(
        &f.harness(),
        &Logs,
        json!({"target": "toolbox", "container": "sidecar", "tail": 1}),
    )
    .await);
    assert_eq!(tail["pods"][0]["container"], "sidecar");

    // A stream that breaks: what came before is kept.
    f.post(&format!("/api/v1/namespaces/{}/pods", f.ns), json!({
        "metadata": {"name": "flaky", "annotations": {"fake-kube/logs": "-3s one\n-2s two\n-1s three", "fake-kube/log-cut-after": "2"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    })).await;
    let h = f.harness();
    let e = err(run(&h, &Logs, json!({"target": "pod/flaky"})).await);
    assert_eq!(e.kind, ErrorKind::Connect);
    assert!(e.message.starts_with(&format!("reading the log of pod `flaky` (container `c`) in namespace `{}`: the stream broke after 2 lines", f.ns)), "{}", e.message);
    assert_eq!(h.output().as_deref().map(|o| o.lines().count()), Some(2));
    let e = err(run(&h, &Logs, json!({"selector": "app=nothing"})).await);
    assert_eq!(e.kind, ErrorKind::Condition);
    assert!(
        e.message.contains("no pod matches `app=nothing`"),
        "{}",
        e.message
    );
    let e = err(run(&h, &Logs, json!({"target": "toolbox", "container": "nope"})).await);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(
        e.message
            .contains("has no container `nope` (it has: main, sidecar)"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn exec_runs_in_a_ready_pod_and_reports_the_exit_status() {
    let Some(f) = Fake::new("exec").await else {
        return;
    };
    let h = f.harness();
    let r = ok(run(
        &h,
        &Exec,
        json!({"target": "deployment/checkout", "command": ["status", "--verbose"]}),
    )
    .await);
    assert_eq!(r["exit_code"], 0);
    let pod = r["pod"].as_str().expect("a pod");
    assert!(pod.starts_with("checkout-"), "{r}");
    assert_eq!(
        r["stdout"],
        format!("exec in {pod}/app: status --verbose\n")
    );

    let script = json!({"target": "toolbox", "container": "main", "command": ["sh", "-c", "echo '{\"f1\": 0.91}'"], "json": true});
    assert_eq!(
        ok(run(&h, &Exec, script).await)["json"],
        json!({"f1": 0.91})
    );
    let not_json = json!({"target": "toolbox", "command": ["echo", "hello"], "json": true});
    assert_eq!(err(run(&h, &Exec, not_json).await).kind, ErrorKind::Parse);

    let h = f.harness();
    let failing = json!({"target": "toolbox", "container": "main", "command": ["sh", "-c", "echo out; echo err >&2; exit 3"]});
    let e = err(run(&h, &Exec, failing).await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(e.message.ends_with(&format!("in pod `toolbox` (container `main`) in namespace `{}` exited with status 3; stderr: err", f.ns)), "{}", e.message);
    let detail = e.detail.expect("the result");
    assert_eq!(
        (detail["stdout"].clone(), detail["exit_code"].clone()),
        (json!("out\n"), json!(3))
    );
    let out = h.output().expect("output");
    assert!(out.contains("out\n") && out.contains("err\n"), "{out}");

    let e = err(run(
        &h,
        &Exec,
        json!({"target": "toolbox", "command": ["no-such-command-here"]}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.contains("the command failed to run"),
        "{}",
        e.message
    );
    let e = err(run(
        &h,
        &Exec,
        json!({"target": "deployment/fraud-scorer", "command": ["true"]}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Condition);
    assert!(
        e.message.starts_with(&format!(
            "deployment `fraud-scorer` in namespace `{}`: no ready pod: fraud-scorer-",
            f.ns
        )) && e.message.contains("Running, not Ready"),
        "{}",
        e.message
    );
    let e = err(run(
        &h,
        &Exec,
        json!({"target": "pod/nope", "command": ["true"]}),
    )
    .await);
    assert_eq!(e.kind, ErrorKind::Status);
    assert!(
        e.message.contains("pod `nope`") && e.message.contains("404 NotFound"),
        "{}",
        e.message
    );
    f.fault(
        "/api/v1/namespaces/NS/pods/toolbox",
        "GET",
        403,
        "pods \"toolbox\" is forbidden: User cannot get",
    )
    .await;
    let e = err(run(&h, &Exec, json!({"target": "toolbox", "command": ["true"]})).await);
    assert!(
        e.message.contains("403") && e.message.contains("User cannot get"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_cancelled_exec_closes_its_stream_and_keeps_the_output() {
    let Some(f) = Fake::new("exec-cancel").await else {
        return;
    };
    let h = f.harness();
    let input = json!({"target": "toolbox", "container": "main", "command": ["sh", "-c", "echo started; exec sleep 30"]});
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(run(&h, &Exec, input), async {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !h.output().is_some_and(|o| o.contains("started")) {
            assert!(
                std::time::Instant::now() < deadline,
                "no output within {PATIENCE:?}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.ctx.cancel.cancel();
    });
    let e = err(result);
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the 30 s command was not waited for"
    );
    assert_eq!(h.output().as_deref(), Some("started\n"));
}

#[tokio::test]
async fn connection_problems_name_the_config_and_the_server() {
    let dir = std::env::temp_dir().join(format!("runbook-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let server = crate::testkit::closed_port_url();
    let path = dir.join("config");
    std::fs::write(&path, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n\
         contexts: [{{name: ctx, context: {{cluster: c, user: u, namespace: ns1}}}}]\ncurrent-context: ctx\nusers: [{{name: u, user: {{}}}}]\n"
    )).expect("written");
    let conn = |fields: Value| {
        Connection::new(
            "k8s",
            kind("kubernetes").expect("a kind"),
            fields.as_object().cloned().unwrap_or_default(),
        )
    };
    let h = Harness::new("s").with_connection(conn(json!({"kubeconfig": path})));
    let e = err(h.call(&Get, json!({"kind": "pods"})).await);
    assert_eq!(e.kind, ErrorKind::Connect, "{}", e.message);
    assert!(
        e.message.contains(&format!(
            "{server}/ at kubeconfig {}, context `ctx`",
            path.display()
        )) && e.message.to_lowercase().contains("connection refused"),
        "{}",
        e.message
    );
    let h =
        Harness::new("s").with_connection(conn(json!({"kubeconfig": path, "context": "other"})));
    let e = err(h.call(&Get, json!({"kind": "pods"})).await);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(e.message.starts_with(&format!("connection `k8s` (kubernetes): kubeconfig {} (the connection's `kubeconfig`), context `other`: ", path.display())), "{}", e.message);
    let gone = dir.join("missing");
    let h = Harness::new("s").with_connection(conn(json!({"kubeconfig": gone})));
    let e = err(h.call(&Get, json!({"kind": "pods"})).await);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(
        e.message.contains(&format!(
            "kubeconfig {} (the connection's `kubeconfig`)",
            gone.display()
        )),
        "{}",
        e.message
    );
    let e = err(Harness::new("s").call(&Get, json!({"kind": "pods"})).await);
    assert!(
        e.message.contains("needs a `kubernetes` connection"),
        "{}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}
