//! The cross-check: each plugin sends what kubectl sends for the same operation. kubectl's requests
//! are the golden files in `tests/golden/kube/` (one per kubectl version, recorded against the fake
//! from the same sample objects); this test runs the plugins against the fake, takes the requests it
//! logged, normalises them as those files are normalised, and compares.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Value, json};

use super::live::Fake;
use super::{Exec, Get, Logs, Patch, RolloutRestart};
use crate::Plugin;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/kube");

/// kubectl's operations and the plugin call that does the same. Left out: `get-missing` (after a
/// 404 kubectl also reads the namespace, to word its message), `logs-tail` (`kubectl logs
/// deployment/X` reads one pod; the plugin reads each pod of the deployment), and `rollout-status*`
/// (kubectl watches; the plugin reads the Deployment once a second).
fn operations() -> Vec<(&'static str, &'static dyn Plugin, Value)> {
    vec![
        ("get-pod", &Get, json!({"kind": "pod", "name": "toolbox"})),
        ("get-deploy-shortname", &Get, json!({"kind": "deploy"})),
        (
            "get-label-selector",
            &Get,
            json!({"kind": "pods", "labels": "app=checkout"}),
        ),
        (
            "get-field-selector",
            &Get,
            json!({"kind": "pods", "fields": "status.phase=Running,metadata.name=toolbox"}),
        ),
        ("get-cronjob-shortname", &Get, json!({"kind": "cj"})),
        (
            "logs-label-selector",
            &Logs,
            json!({"selector": "app=checkout", "tail": 1}),
        ),
        (
            "logs-since-timestamps",
            &Logs,
            json!({"target": "toolbox", "container": "sidecar", "since": "1m", "timestamps": true}),
        ),
        (
            "logs-since-old",
            &Logs,
            json!({"target": "toolbox", "container": "main", "since": "1h"}),
        ),
        (
            "patch-merge",
            &Patch,
            json!({"kind": "configmap", "name": "checkout-config", "type": "merge",
                   "patch": {"data": {"LOG_LEVEL": "debug"}}}),
        ),
        (
            "patch-forbidden",
            &Patch,
            json!({"kind": "cm", "name": "locked-config", "patch": {"data": {"MODE": "thawed"}}}),
        ),
        (
            "patch-strategic",
            &Patch,
            json!({"kind": "deployment", "name": "checkout", "type": "strategic",
                   "patch": {"spec": {"template": {"spec": {"containers": [
                       {"name": "app", "image": "registry.example/checkout:1.4.3"}]}}}}}),
        ),
        (
            "rollout-restart",
            &RolloutRestart,
            json!({"deployment": "deployment/checkout"}),
        ),
        (
            "exec-exit-code",
            &Exec,
            json!({"target": "toolbox", "container": "main",
                   "command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
        ),
        (
            "exec-deployment-script",
            &Exec,
            json!({"target": "deploy/checkout", "command": ["status", "--verbose"]}),
        ),
    ]
}

/// A logged request as the golden files write one (see `tests/golden/kube/README.md`).
fn normalised(r: &Value, ns: &str) -> Value {
    let pod = Regex::new(r"checkout-[a-z0-9]{10}-[a-z0-9]{5}").expect("a regex");
    let path = r["path"]
        .as_str()
        .unwrap_or_default()
        .replace(&format!("/namespaces/{ns}/"), "/namespaces/shop/");
    let path = pod.replace_all(&path, "checkout-<pod>").into_owned();
    let raw = r["query"].as_str().unwrap_or_default();
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let parsed = reqwest::Url::parse(&format!("http://x/?{raw}")).expect("a query");
    for (k, v) in parsed.query_pairs() {
        if k.is_empty() {
            continue;
        }
        let v = if matches!(k.as_ref(), "resourceVersion" | "timeoutSeconds") {
            "<n>".to_string()
        } else {
            v.into_owned()
        };
        query.entry(k.into_owned()).or_default().push(v);
    }
    let body = match r["body"].as_str().unwrap_or_default() {
        "" => Value::Null,
        text => serde_json::from_str(text).map_or_else(|_| json!(text), timestamps),
    };
    json!({
        "method": r["method"], "path": path, "query": query,
        "content_type": r["content_type"], "body": body,
    })
}

fn timestamps(v: Value) -> Value {
    let rfc3339 =
        Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$").expect("a regex");
    match v {
        Value::String(s) if rfc3339.is_match(&s) => json!("<RFC3339>"),
        Value::Array(a) => Value::Array(a.into_iter().map(timestamps).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, timestamps(v))).collect()),
        other => other,
    }
}

/// Consecutive pod-log requests sorted by path: several pods' logs are read at once.
fn sort_log_runs(requests: &mut [Value]) {
    let is_log = |r: &Value| r["path"].as_str().is_some_and(|p| p.ends_with("/log"));
    let mut i = 0;
    while i < requests.len() {
        let start = i;
        while i < requests.len() && is_log(&requests[i]) {
            i += 1;
        }
        requests[start..i].sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        i = i.max(start + 1);
    }
}

#[tokio::test]
async fn the_plugins_send_what_kubectl_sends() {
    let Some(probe) = Fake::new("golden").await else {
        return;
    };
    drop(probe);
    let mut ours: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (name, plugin, input) in operations() {
        // A namespace per operation: each starts from the sample objects, as kubectl's did.
        let f = Fake::new("golden").await.expect("the fake runs");
        let before = f.requests().await.len();
        // Some operations fail on purpose (403, exit status 3); the requests are what counts.
        let _ = f.harness().call(plugin, input).await;
        let mut sent: Vec<Value> = f.requests().await[before..]
            .iter()
            .map(|r| normalised(r, &f.ns))
            .collect();
        sort_log_runs(&mut sent);
        ours.insert(name, sent);
    }
    let mut files: Vec<_> = std::fs::read_dir(GOLDEN)
        .expect("tests/golden/kube")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    // By kubectl minor version: the newest must match in everything; older ones differ in what
    // newer kubectl changed (1.20 execs over SPDY and names no container when a pod has one), so
    // only their gets, patches and restart are held to it.
    let minor = |p: &std::path::PathBuf| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
        stem.and_then(|s| s.rsplit('.').next().and_then(|m| m.parse::<u32>().ok()))
    };
    files.sort_by_key(minor);
    assert!(!files.is_empty(), "no golden files in {GOLDEN}");
    let newest = files.last().cloned();
    let mut diffs = Vec::new();
    for file in &files {
        let all = Some(file) == newest.as_ref();
        let text = std::fs::read_to_string(file).expect("readable");
        let golden: Value = serde_json::from_str(&text).expect("JSON");
        let ops = golden["operations"].as_array().expect("operations");
        for (name, sent) in &ours {
            let stable = name.starts_with("get-")
                || name.starts_with("patch-")
                || *name == "rollout-restart";
            if !all && !stable {
                continue;
            }
            let op = ops.iter().find(|o| o["name"] == *name);
            let Some(op) = op else {
                diffs.push(format!("{}: no operation `{name}`", file.display()));
                continue;
            };
            let mut want = op["requests"].as_array().cloned().unwrap_or_default();
            sort_log_runs(&mut want);
            if *sent != want {
                diffs.push(format!(
                    "{} `{name}`:\n  kubectl: {}\n  plugin:  {}",
                    golden["kubectl"],
                    Value::Array(want),
                    Value::Array(sent.clone())
                ));
            }
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
