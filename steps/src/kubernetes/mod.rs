//! The Kubernetes plugins (`kubernetes.*`, cargo feature `kubernetes`), through the `kube` crate:
//! `get` (any kind, found by discovery), `patch`, `rollout_restart`, `logs` and `exec`.
//!
//! This module is what they share: one client per connection (kubeconfig file and context, or the
//! pod's service account), the namespace a step works in, resolving a kind the way kubectl does
//! (`cronjob`, `cronjobs`, `cj`, `deployments.apps`), choosing pods, and turning the API server's
//! answers into step errors that name the resource and quote the server's own message.

mod exec;
pub mod fixture;
mod get;
mod logs;
mod patch;
mod pods;
mod rollout;

pub use exec::Exec;
pub use get::Get;
pub use logs::Logs;
pub use patch::Patch;
pub use rollout::RolloutRestart;

use std::path::PathBuf;
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, StepContext, StepError};

/// The field every namespaced plugin takes.
pub(crate) const NAMESPACE: Field = Field::opt(
    "namespace",
    FieldType::String,
    "The namespace (default: the connection's `namespace`, else the kubeconfig context's, else `default`).",
);

/// One connection's client, shared by every Kubernetes step of a run.
pub(crate) struct Kube {
    pub(crate) client: kube::Client,
    /// The namespace a step without `namespace:` works in.
    namespace: String,
    /// Where the configuration came from, for messages: `kubeconfig /p (context c)`, ...
    source: String,
    /// The API server's resources, read on first need (discovery is a dozen requests).
    resources: OnceCell<Vec<Resource>>,
}

/// What `Connection::client` keeps: the client is made asynchronously (a kubeconfig may name files
/// to read), so the connection holds a cell and the first step fills it.
#[derive(Default)]
struct Slot(OnceCell<Arc<Kube>>);

/// A resource as discovery lists it, with the names kubectl accepts for it.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(crate) api: ApiResource,
    pub(crate) namespaced: bool,
    singular: String,
    short_names: Vec<String>,
    verbs: Vec<String>,
}

impl Kube {
    /// The client of the step's connection, made the first time a step of the run needs it.
    pub(crate) async fn of(ctx: &StepContext) -> Result<Arc<Kube>, StepError> {
        let conn = ctx.connection("kubernetes")?;
        let slot = conn.client(|_| Ok(Slot::default()))?;
        slot.0
            .get_or_try_init(|| async { connect(conn).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The namespace of a step: its own, else the connection's default.
    pub(crate) fn namespace(&self, own: Option<&str>) -> String {
        own.filter(|n| !n.is_empty())
            .unwrap_or(&self.namespace)
            .to_string()
    }

    /// The resource `kind` names, as kubectl resolves it: a kind (`CronJob`), a plural (`cronjobs`),
    /// a singular (`cronjob`) or a short name (`cj`), case-insensitive, optionally qualified with a
    /// group (`deployments.apps`) or written `apiVersion`-first via `api_version`.
    pub(crate) async fn resource(
        &self,
        kind: &str,
        api_version: Option<&str>,
    ) -> Result<Resource, StepError> {
        let all = self
            .resources
            .get_or_try_init(|| discover(&self.client))
            .await
            .map_err(|e| self.error("discover the API server's resources", e))?;
        find_resource(all, kind, api_version).map_err(|why| {
            StepError::new(
                ErrorKind::Input,
                format!("kind `{kind}`: {why} (on {})", self.source),
            )
        })
    }

    /// A namespaced resource's API, or the cluster's for a cluster-scoped one.
    pub(crate) fn dynamic(&self, r: &Resource, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api)
        } else {
            Api::all_with(self.client.clone(), &r.api)
        }
    }

    /// A failed call as a step error: `what` says what was attempted, on which resource.
    pub(crate) fn error(&self, what: &str, err: kube::Error) -> StepError {
        api_error(what, &self.source, err)
    }
}

/// What failed, and why, with the server's own words for an API error.
fn api_error(what: &str, source: &str, err: kube::Error) -> StepError {
    match err {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", status.reason)
            };
            StepError::new(
                ErrorKind::Status,
                format!(
                    "{what}: the API server answered {}{reason}: {}",
                    status.code, status.message
                ),
            )
            .with_detail(json!({
                "code": status.code, "reason": status.reason, "message": status.message,
            }))
        }
        kube::Error::SerdeError(e) => StepError::new(
            ErrorKind::Parse,
            format!("{what}: the API server's answer is not what Kubernetes sends: {e}"),
        ),
        e @ (kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::UpgradeConnection(_)
        | kube::Error::ReadEvents(_)) => StepError::new(
            ErrorKind::Connect,
            format!(
                "{what}: cannot talk to the API server ({source}): {}",
                chain(&e)
            ),
        ),
        e => StepError::new(ErrorKind::Other, format!("{what}: {}", chain(&e))),
    }
}

/// An error and its sources, `: `-joined, skipping a source its parent already quotes.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    crate::error_chain(err.to_string(), err.source())
}

/// Makes the client: the kubeconfig the connection names, else `KUBECONFIG`, else `~/.kube/config`,
/// else the service account of the pod this runs in.
async fn connect(conn: &Connection) -> Result<Kube, StepError> {
    crate::init_tls();
    let bad = |why: String| {
        StepError::new(
            ErrorKind::Input,
            format!("connection `{}` (kubernetes): {why}", conn.name),
        )
    };
    let context = conn.str("context").filter(|c| !c.is_empty());
    let (config, source) = match kubeconfig_paths(conn) {
        Some((paths, from)) => {
            let shown = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let mut merged: Option<Kubeconfig> = None;
            for path in &paths {
                let one = Kubeconfig::read_from(path).map_err(|e| {
                    bad(format!(
                        "kubeconfig {} ({from}): {}",
                        path.display(),
                        chain(&e)
                    ))
                })?;
                merged = Some(match merged {
                    None => one,
                    Some(m) => m
                        .merge(one)
                        .map_err(|e| bad(format!("kubeconfig {shown} ({from}): {}", chain(&e))))?,
                });
            }
            let kc = merged.ok_or_else(|| bad(format!("{from} names no file")))?;
            let current = kc.current_context.clone();
            let options = KubeConfigOptions {
                context: context.map(str::to_string),
                ..Default::default()
            };
            let used = context
                .map(str::to_string)
                .or(current)
                .unwrap_or_else(|| "none".into());
            let config = kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| {
                    bad(format!(
                        "kubeconfig {shown} ({from}), context `{used}`: {}",
                        chain(&e)
                    ))
                })?;
            (config, format!("kubeconfig {shown}, context `{used}`"))
        }
        None => {
            let config = kube::Config::incluster().map_err(|e| {
                bad(format!(
                    "no kubeconfig (the connection's `kubeconfig` is not set, KUBECONFIG is not set, \
                     ~/.kube/config does not exist) and not in a pod with a service account: {}",
                    chain(&e)
                ))
            })?;
            if let Some(c) = context {
                return Err(bad(format!(
                    "context `{c}` is set, but there is no kubeconfig to take it from (using the pod's service account)"
                )));
            }
            (config, "the pod's service account".to_string())
        }
    };
    let source = format!("{} at {source}", config.cluster_url);
    let namespace = conn
        .str("namespace")
        .filter(|n| !n.is_empty())
        .map_or_else(|| config.default_namespace.clone(), str::to_string);
    let client = kube::Client::try_from(config).map_err(|e| {
        bad(format!(
            "cannot set up the client for {source}: {}",
            chain(&e)
        ))
    })?;
    Ok(Kube {
        client,
        namespace,
        source,
        resources: OnceCell::new(),
    })
}

/// The kubeconfig files to read and what named them; `None` when there is none.
fn kubeconfig_paths(conn: &Connection) -> Option<(Vec<PathBuf>, &'static str)> {
    if let Some(p) = conn.str("kubeconfig").filter(|p| !p.is_empty()) {
        return Some((vec![PathBuf::from(p)], "the connection's `kubeconfig`"));
    }
    if let Some(v) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Some((paths, "KUBECONFIG"));
        }
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let default = PathBuf::from(home).join(".kube").join("config");
    default
        .is_file()
        .then(|| (vec![default], "the default ~/.kube/config"))
}

/// Every resource the server lists (core `v1` and each group's preferred version first), as
/// kubectl's discovery reads them.
async fn discover(client: &kube::Client) -> Result<Vec<Resource>, kube::Error> {
    let mut out = Vec::new();
    let core = client.list_core_api_versions().await?;
    for v in &core.versions {
        let list = client.list_core_api_resources(v).await?;
        add_resources(&mut out, "", v, &list.resources);
    }
    let groups = client.list_api_groups().await?;
    for g in &groups.groups {
        // The preferred version first: for a bare kind name it is the one kubectl picks.
        let preferred = g.preferred_version.as_ref().map(|p| p.version.clone());
        let mut versions: Vec<&str> = g.versions.iter().map(|v| v.version.as_str()).collect();
        versions.sort_by_key(|v| Some(*v) != preferred.as_deref());
        for v in versions {
            let list = client
                .list_api_group_resources(&format!("{}/{v}", g.name))
                .await?;
            add_resources(&mut out, &g.name, v, &list.resources);
        }
    }
    Ok(out)
}

fn add_resources(
    out: &mut Vec<Resource>,
    group: &str,
    version: &str,
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource],
) {
    for r in list {
        // `pods/log`, `deployments/scale`: subresources are reached through their resource.
        if r.name.contains('/') {
            continue;
        }
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        out.push(Resource {
            api: ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version,
                kind: r.kind.clone(),
                plural: r.name.clone(),
            },
            namespaced: r.namespaced,
            singular: r.singular_name.clone(),
            short_names: r.short_names.clone().unwrap_or_default(),
            verbs: r.verbs.clone(),
        });
    }
}

impl Resource {
    pub(crate) fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `deployments.apps`, `pods`: how messages name it.
    pub(crate) fn shown(&self) -> String {
        if self.api.group.is_empty() {
            self.api.plural.clone()
        } else {
            format!("{}.{}", self.api.plural, self.api.group)
        }
    }

    fn named(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        self.api.kind.to_ascii_lowercase() == n
            || self.api.plural == n
            || self.singular == n
            || self.short_names.contains(&n)
    }
}

/// The first resource (in discovery's order: core, then each group's preferred version) that the
/// name stands for.
fn find_resource(
    all: &[Resource],
    kind: &str,
    api_version: Option<&str>,
) -> Result<Resource, String> {
    let kind = kind.trim();
    if kind.is_empty() {
        return Err("empty".into());
    }
    let matches = |r: &&Resource| match api_version {
        Some(av) => r.api.api_version == av && r.named(kind),
        // `deployments.apps` or `deployments.v1.apps`, as kubectl takes them.
        None => {
            r.named(kind)
                || kind.split_once('.').is_some_and(|(name, rest)| {
                    r.named(name)
                        && (rest == r.api.group
                            || rest == format!("{}.{}", r.api.version, r.api.group))
                })
        }
    };
    all.iter()
        .find(matches)
        .cloned()
        .ok_or_else(|| match api_version {
            Some(av) => format!("the server has no such resource in `{av}`"),
            None => {
                "the server has no such resource (as kind, plural, singular or short name)".into()
            }
        })
}

/// The parts of `object` the patch touches: for each key of the patch, the object's value there,
/// descending while both sides are mappings (`null` where the object has nothing). What a step shows
/// as `before` and `after` of a change, not the whole object.
pub(crate) fn touched(object: &Value, patch: &Value) -> Value {
    match (object, patch) {
        (Value::Object(o), Value::Object(p)) => Value::Object(
            p.iter()
                .map(|(k, pv)| {
                    let ov = o.get(k).unwrap_or(&Value::Null);
                    (k.clone(), touched(ov, pv))
                })
                .collect(),
        ),
        (o, _) => o.clone(),
    }
}

/// The leaves that differ between two `touched` projections, as `path: before → after` lines (values as
/// compact JSON, cut at 80 characters): what a plan prints so a reader sees the change itself.
pub(crate) fn changes(before: &Value, after: &Value) -> Vec<String> {
    fn walk(path: &str, b: &Value, a: &Value, out: &mut Vec<String>) {
        match (b, a) {
            (Value::Object(bo), Value::Object(ao)) => {
                for (k, av) in ao {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, bo.get(k).unwrap_or(&Value::Null), av, out);
                }
            }
            (b, a) if b != a => {
                let show = |v: &Value| crate::web::head_chars(&v.to_string(), 80);
                out.push(format!("{path}: {} → {}", show(b), show(a)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

/// RFC 7386 JSON merge patch: what the server makes of a merge patch, for `plan`.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// An object as a result shows it: `metadata.managedFields` is the server's bookkeeping, long and of
/// no use to a runbook.
pub(crate) fn trimmed(mut object: Value) -> Value {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    object
}

/// A duration field (`30s`, `5m`, or seconds as a number), an `input` error naming the field.
pub(crate) fn duration(field: &str, v: &Value) -> Result<std::time::Duration, StepError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    crate::parse_duration(&text)
        .map_err(|e| StepError::new(ErrorKind::Input, format!("`{field}`: {e}")))
}

/// A step's input as a typed value, an `input` error naming the plugin otherwise.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, StepError> {
    serde_json::from_value(input).map_err(StepError::input)
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod live;
#[cfg(test)]
mod tests;
