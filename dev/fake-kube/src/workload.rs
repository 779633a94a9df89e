//! What the controllers and kubelet would do: pod status, the pods of a deployment, and a rollout
//! whose status converges over a short time, so `rollout status`-style waits can be tested.
//!
//! Annotations that give objects behaviour (on a Pod, or on a Deployment for `ready` and
//! `rollout-seconds`):
//! - `fake-kube/ready: "false"`: pods run but are not ready (CrashLoopBackOff); a deployment never
//!   becomes available.
//! - `fake-kube/rollout-seconds: "N"`: how long this deployment's rollouts take (else the server's
//!   `--rollout-seconds`).

use crate::App;
use crate::discovery::{self, Resource};
use crate::selector::{Selector, from_match_labels};
use crate::store::{Store, now_rfc3339};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const READY: &str = "fake-kube/ready";
pub const ROLLOUT_SECONDS: &str = "fake-kube/rollout-seconds";

fn pods() -> &'static Resource {
    discovery::by_plural("", "pods").expect("pods are a served resource")
}

fn deployments() -> &'static Resource {
    discovery::by_plural("apps", "deployments").expect("deployments are a served resource")
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn is_ready(obj: &Value) -> bool {
    annotation(obj, READY) != Some("false")
}

/// The status a kubelet would report for a pod of `spec`, running, ready or crash-looping.
pub fn pod_status(spec: &Value, ready: bool, started: &str, index: usize) -> Value {
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let state = if ready {
                json!({ "running": { "startedAt": started } })
            } else {
                json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container" } })
            };
            json!({
                "name": c.get("name").cloned().unwrap_or(json!("main")),
                "image": c.get("image").cloned().unwrap_or(json!("")),
                "imageID": "", "containerID": "fake://container",
                "ready": ready, "started": ready, "restartCount": if ready { 0 } else { 3 },
                "state": state,
            })
        })
        .collect();
    let cond = if ready { "True" } else { "False" };
    json!({
        "phase": "Running",
        "podIP": format!("10.0.0.{}", 10 + index % 240),
        "hostIP": "10.0.0.1",
        "startTime": started,
        "conditions": [
            { "type": "Initialized", "status": "True" },
            { "type": "Ready", "status": cond },
            { "type": "ContainersReady", "status": cond },
            { "type": "PodScheduled", "status": "True" },
        ],
        "containerStatuses": statuses,
    })
}

/// Fills a manifest pod's status and node when it has none.
pub fn fill_pod(pod: &mut Value) {
    if pod.get("status").is_none_or(Value::is_null) {
        let started = now_rfc3339();
        pod["status"] = pod_status(&pod["spec"], is_ready(pod), &started, 0);
    }
    if pod.pointer("/spec/nodeName").is_none() && pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"]["nodeName"] = json!("fake-node");
    }
}

/// `v` as text with object keys sorted, whatever order serde_json keeps them in (its
/// `preserve_order` feature may be on in one build and off in another).
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for x in a {
                canonical(x, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A short stable hash of a pod template, in the alphabet Kubernetes uses for generated names: the
/// same template gives the same pod names on every run, so tests and golden files can name them.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut text = String::new();
    canonical(template, &mut text);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn replicas(deploy: &Value) -> u64 {
    deploy
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

fn ns_name(obj: &Value) -> (String, String) {
    let s = |f: &str| obj["metadata"][f].as_str().unwrap_or_default().to_string();
    (s("namespace"), s("name"))
}

/// Makes the deployment's pods those of its current template: pods of another template hash go,
/// missing ones are created (ready or not, per the deployment's annotation).
pub fn sync_pods(store: &mut Store, deploy: &Value) {
    let (ns, name) = ns_name(deploy);
    let template = deploy
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let hash = template_hash(&template);
    let selector = from_match_labels(
        deploy
            .pointer("/spec/selector/matchLabels")
            .unwrap_or(&Value::Null),
    );
    let pods_res = pods();
    for pod in store.list(pods_res, Some(&ns), &selector, &Selector::default()) {
        if crate::selector::label(&pod, "pod-template-hash").as_deref() != Some(&hash) {
            let (_, pod_name) = ns_name(&pod);
            let _ = store.delete(pods_res, &ns, &pod_name);
        }
    }
    let ready = is_ready(deploy);
    let started = now_rfc3339();
    for i in 0..replicas(deploy) as usize {
        let suffix = template_hash(&json!([hash, i]));
        let pod_name = format!("{name}-{hash}-{}", &suffix[..5]);
        if store.get(pods_res, &ns, &pod_name).is_ok() {
            continue;
        }
        let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
        meta["name"] = json!(pod_name);
        meta["labels"]["pod-template-hash"] = json!(hash);
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"),
            "uid": "00000000-0000-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true,
        }]);
        let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
        spec["nodeName"] = json!("fake-node");
        let status = pod_status(&spec, ready, &started, i);
        let pod = json!({ "metadata": meta, "spec": spec, "status": status });
        let _ = store.create(pods_res, &ns, pod);
    }
}

/// The status of a deployment whose rollout has finished.
pub fn settled_status(deploy: &Value) -> Value {
    let n = replicas(deploy);
    let ready = if is_ready(deploy) { n } else { 0 };
    let generation = deploy
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let now = now_rfc3339();
    let (avail_status, avail_reason) = if ready == n {
        ("True", "MinimumReplicasAvailable")
    } else {
        ("False", "MinimumReplicasUnavailable")
    };
    let mut status = json!({
        "observedGeneration": generation, "replicas": n, "updatedReplicas": n,
        "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [
            { "type": "Available", "status": avail_status, "reason": avail_reason,
              "lastUpdateTime": now, "lastTransitionTime": now },
            { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
              "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now, "lastTransitionTime": now },
        ],
    });
    if ready < n {
        status["unavailableReplicas"] = json!(n - ready);
    }
    status
}

/// Called after a deployment was written: a new one gets its pods at once; a changed template
/// starts a rollout that converges over the deployment's rollout time.
pub fn deployment_written(app: &Arc<App>, before: Option<&Value>, after: &Value) {
    let (ns, name) = ns_name(after);
    let generation = |v: &Value| {
        v.pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    };
    match before {
        None => {
            let mut store = app.store();
            sync_pods(&mut store, after);
            store.set_status(deployments(), &ns, &name, settled_status(after));
        }
        Some(b) if generation(b) != generation(after) => {
            let secs = annotation(after, ROLLOUT_SECONDS)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(app.config.rollout, Duration::from_secs_f64);
            let id = app.next_rollout(&ns, &name);
            let app = Arc::clone(app);
            tokio::spawn(async move { rollout(app, ns, name, id, secs).await });
        }
        Some(_) => {}
    }
}

/// Three steps, a third of `total` apart, each a status a real controller would report: the new
/// generation observed with one surge pod; all pods replaced, one not yet available; settled.
async fn rollout(app: Arc<App>, ns: String, name: String, id: u64, total: Duration) {
    let step = total / 3;
    for phase in 1..=3 {
        tokio::time::sleep(step).await;
        if !app.rollout_is_current(&ns, &name, id) {
            return; // a newer rollout took over
        }
        let mut store = app.store();
        let Ok(deploy) = store.get(deployments(), &ns, &name) else {
            return;
        };
        let n = replicas(&deploy);
        let generation = deploy
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let now = now_rfc3339();
        let progressing = json!({ "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "message": format!("ReplicaSet \"{name}\" is progressing."), "lastUpdateTime": now, "lastTransitionTime": now });
        let status = match phase {
            1 => json!({
                "observedGeneration": generation, "replicas": n + 1, "updatedReplicas": 1.min(n),
                "readyReplicas": n, "availableReplicas": n, "conditions": [progressing],
            }),
            2 => {
                sync_pods(&mut store, &deploy);
                let ready = if is_ready(&deploy) { n } else { 0 };
                json!({
                    "observedGeneration": generation, "replicas": n, "updatedReplicas": n,
                    "readyReplicas": ready, "availableReplicas": ready.saturating_sub(1),
                    "unavailableReplicas": n - ready.saturating_sub(1), "conditions": [progressing],
                })
            }
            _ => settled_status(&deploy),
        };
        store.set_status(deployments(), &ns, &name, status);
    }
}
