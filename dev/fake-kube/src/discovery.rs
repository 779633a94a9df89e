//! The resources the fake serves and the discovery documents kubectl reads to map `deploy`, `cm`,
//! `cj` to them.

use serde_json::{Value, json};

/// One resource type the fake stores.
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources listed in discovery: (name, kind, verbs).
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".into()
        } else {
            format!("{}/v1", self.group)
        }
    }
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Every served resource; all are version `v1` of their group.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        short_names: &["po"],
        namespaced: true,
        subresources: &[
            ("log", "Pod", &["get"]),
            ("exec", "PodExecOptions", &["create", "get"]),
            ("status", "Pod", &["get", "patch", "update"]),
        ],
    },
    Resource {
        group: "",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        short_names: &["cm"],
        namespaced: true,
        subresources: &[],
    },
    Resource {
        group: "",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        short_names: &[],
        namespaced: true,
        subresources: &[],
    },
    Resource {
        group: "",
        plural: "services",
        singular: "service",
        kind: "Service",
        short_names: &["svc"],
        namespaced: true,
        subresources: &[],
    },
    Resource {
        group: "",
        plural: "events",
        singular: "event",
        kind: "Event",
        short_names: &["ev"],
        namespaced: true,
        subresources: &[],
    },
    Resource {
        group: "",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        short_names: &["ns"],
        namespaced: false,
        subresources: &[],
    },
    Resource {
        group: "apps",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        short_names: &["deploy"],
        namespaced: true,
        subresources: &[("status", "Deployment", &["get", "patch", "update"])],
    },
    Resource {
        group: "batch",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        short_names: &[],
        namespaced: true,
        subresources: &[],
    },
    Resource {
        group: "batch",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        short_names: &["cj"],
        namespaced: true,
        subresources: &[],
    },
];

pub fn by_plural(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// The resource an object of this `apiVersion` and `kind` belongs to.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

const GROUPS: &[&str] = &["apps", "batch"];

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "30", "gitVersion": "v1.30.0-fake-kube",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the legacy core group's versions.
pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server }],
    })
}

/// `/apis`: the named groups.
pub fn groups() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|g| {
            let gv = json!({ "groupVersion": format!("{g}/v1"), "version": "v1" });
            json!({ "name": g, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/api/v1`, `/apis/GROUP/v1`: the resource list, or `None` for a group the fake lacks.
pub fn resource_list(group: &str) -> Option<Value> {
    if !group.is_empty() && !GROUPS.contains(&group) {
        return None;
    }
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if matches!(
            r.plural,
            "pods" | "deployments" | "services" | "jobs" | "cronjobs"
        ) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for (sub, kind, verbs) in r.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}
