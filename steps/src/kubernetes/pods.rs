//! Which pods a step means: `pod/NAME` (or a bare name), a workload (`deployment/NAME`, as in
//! `kubectl exec deployment/x`), or a label selector (as in `kubectl logs -l`); and which of them is
//! ready and which container to use.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use super::Kube;
use crate::{ErrorKind, StepError};

/// The workloads whose pods a target may name, as (names kubectl takes, plural, kind).
const WORKLOADS: [(&[&str], &str, &str); 4] = [
    (
        &["deployment", "deployments", "deploy"],
        "deployments",
        "Deployment",
    ),
    (
        &["statefulset", "statefulsets", "sts"],
        "statefulsets",
        "StatefulSet",
    ),
    (
        &["daemonset", "daemonsets", "ds"],
        "daemonsets",
        "DaemonSet",
    ),
    (
        &["replicaset", "replicasets", "rs"],
        "replicasets",
        "ReplicaSet",
    ),
];

/// What a step's `target` or `selector` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Pod(String),
    /// A workload of `apps/v1`: its plural and name.
    Workload {
        kind: &'static str,
        plural: &'static str,
        name: String,
    },
    Selector(String),
}

impl Target {
    /// `target` (`pod/NAME`, `NAME`, `deployment/NAME`, ...) or `selector`, exactly one.
    pub(crate) fn of(target: Option<&str>, selector: Option<&str>) -> Result<Target, StepError> {
        let input = |m: String| StepError::new(ErrorKind::Input, m);
        match (target, selector) {
            (Some(_), Some(_)) => Err(input("give either `target` or `selector`, not both".into())),
            (None, None) => Err(input(
                "give `target` (e.g. `deployment/NAME`) or `selector`".into(),
            )),
            (None, Some(s)) if s.trim().is_empty() => Err(input("`selector` is empty".into())),
            (None, Some(s)) => Ok(Target::Selector(s.trim().to_string())),
            (Some(t), None) => {
                let t = t.trim();
                let (kind, name) = t.split_once('/').unwrap_or(("pod", t));
                if name.is_empty() || name.contains('/') {
                    return Err(input(format!(
                        "target `{t}`: write `pod/NAME`, `deployment/NAME` or a pod's name"
                    )));
                }
                let kind = kind.to_ascii_lowercase();
                if matches!(kind.as_str(), "pod" | "pods" | "po") {
                    return Ok(Target::Pod(name.to_string()));
                }
                let (_, plural, kind_name) = WORKLOADS
                    .iter()
                    .find(|(names, _, _)| names.contains(&kind.as_str()))
                    .ok_or_else(|| {
                        input(format!(
                            "target `{t}`: `{kind}` has no pods to pick; use pod, deployment, statefulset, daemonset or replicaset"
                        ))
                    })?;
                Ok(Target::Workload {
                    kind: kind_name,
                    plural,
                    name: name.to_string(),
                })
            }
        }
    }

    /// How messages name it.
    pub(crate) fn shown(&self, namespace: &str) -> String {
        match self {
            Target::Pod(n) => format!("pod `{n}` in namespace `{namespace}`"),
            Target::Workload { plural, name, .. } => {
                format!(
                    "{} `{name}` in namespace `{namespace}`",
                    &plural[..plural.len() - 1]
                )
            }
            Target::Selector(s) => format!("pods matching `{s}` in namespace `{namespace}`"),
        }
    }
}

/// The pods a target stands for (a named pod, or every pod its selector matches), sorted by name.
pub(crate) async fn matching(
    kube: &Kube,
    namespace: &str,
    target: &Target,
) -> Result<Vec<Pod>, StepError> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), namespace);
    let selector = match target {
        Target::Pod(name) => {
            let pod = pods
                .get(name)
                .await
                .map_err(|e| kube.error(&format!("get {}", target.shown(namespace)), e))?;
            return Ok(vec![pod]);
        }
        Target::Selector(s) => s.clone(),
        Target::Workload { kind, plural, name } => {
            let ar = ApiResource {
                group: "apps".into(),
                version: "v1".into(),
                api_version: "apps/v1".into(),
                kind: (*kind).into(),
                plural: (*plural).into(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), namespace, &ar);
            let what = target.shown(namespace);
            let obj = api
                .get(name)
                .await
                .map_err(|e| kube.error(&format!("get {what}"), e))?;
            let sel = obj.data.pointer("/spec/selector").unwrap_or(&Value::Null);
            selector_text(sel).ok_or_else(|| {
                StepError::new(
                    ErrorKind::Other,
                    format!("{what} has no usable `spec.selector`: {sel}"),
                )
            })?
        }
    };
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            kube.error(
                &format!("list pods matching `{selector}` in namespace `{namespace}`"),
                e,
            )
        })?;
    let mut items = list.items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if items.is_empty() {
        return Err(StepError::new(
            ErrorKind::Condition,
            format!("{}: no pod matches `{selector}`", target.shown(namespace)),
        ));
    }
    Ok(items)
}

/// The pod an exec goes to: a ready one (running, Ready, not being deleted), the longest-running
/// first, as kubectl prefers. None ready is a `condition` error listing each pod's state.
pub(crate) fn ready_one(pods: Vec<Pod>, what: &str) -> Result<Pod, StepError> {
    let states: Vec<String> = pods
        .iter()
        .map(|p| format!("{} ({})", name(p), state(p)))
        .collect();
    pods.into_iter()
        .filter(is_ready)
        .min_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
        .ok_or_else(|| {
            StepError::new(
                ErrorKind::Condition,
                format!("{what}: no ready pod: {}", states.join(", ")),
            )
        })
}

pub(crate) fn is_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    p.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn state(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "terminating".into();
    }
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "no phase".into());
    if phase == "Running" && !is_ready(p) {
        "Running, not Ready".into()
    } else {
        phase
    }
}

pub(crate) fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// The container a step uses: the one it names (which must exist), else the pod's
/// `kubectl.kubernetes.io/default-container`, else its first, as kubectl picks.
pub(crate) fn container(
    p: &Pod,
    wanted: Option<&str>,
    namespace: &str,
) -> Result<String, StepError> {
    let names: Vec<&str> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    if let Some(w) = wanted {
        return if names.contains(&w) {
            Ok(w.to_string())
        } else {
            Err(StepError::new(
                ErrorKind::Input,
                format!(
                    "pod `{}` in namespace `{namespace}` has no container `{w}` (it has: {})",
                    name(p),
                    names.join(", ")
                ),
            ))
        };
    }
    let annotated = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .filter(|c| names.contains(&c.as_str()));
    annotated
        .map(String::to_string)
        .or_else(|| names.first().map(|c| c.to_string()))
        .ok_or_else(|| {
            StepError::new(
                ErrorKind::Other,
                format!(
                    "pod `{}` in namespace `{namespace}` has no containers",
                    name(p)
                ),
            )
        })
}

/// A `LabelSelector` (`matchLabels`, `matchExpressions`) as selector text, or `None` when it is not
/// one or selects everything.
pub(crate) fn selector_text(sel: &Value) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str()?));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key")?.as_str()?;
            let values = || -> Option<String> {
                let vs: Option<Vec<&str>> = e
                    .get("values")?
                    .as_array()?
                    .iter()
                    .map(Value::as_str)
                    .collect();
                Some(vs?.join(","))
            };
            parts.push(match e.get("operator")?.as_str()? {
                "In" => format!("{key} in ({})", values()?),
                "NotIn" => format!("{key} notin ({})", values()?),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => return None,
            });
        }
    }
    (!parts.is_empty()).then(|| parts.join(","))
}
