//! Loading objects from YAML manifests (several documents per file, `kind: List` too).

use crate::discovery::{self, Resource};
use crate::{App, Error, workload};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let io = |source| Error::Io {
            path: p.clone(),
            source,
        };
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            std::fs::metadata(p).map_err(io)?;
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The objects of one file, each with the resource it belongs to.
fn parse(path: &Path, text: &str) -> Result<Vec<(&'static Resource, Value)>, Error> {
    let bad = |message: String| Error::Manifest {
        path: path.to_path_buf(),
        message,
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    let mut queue: Vec<Value> = docs.into_iter().rev().collect();
    while let Some(doc) = queue.pop() {
        if doc.is_null() {
            continue;
        }
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind == "List" {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            queue.extend(items.into_iter().rev());
            continue;
        }
        let res = discovery::by_kind(api_version, kind).ok_or_else(|| {
            bad(format!(
                "apiVersion {api_version:?} kind {kind:?} is not a resource fake-kube serves"
            ))
        })?;
        if doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(bad(format!("a {kind} without metadata.name")));
        }
        out.push((res, doc));
    }
    Ok(out)
}

/// Loads every manifest into the store: namespaces first (every one an object uses exists), then
/// the rest; deployments get their pods.
pub fn load(app: &std::sync::Arc<App>) -> Result<(), Error> {
    let mut objects = Vec::new();
    for f in files(&app.config.manifests)? {
        let text = std::fs::read_to_string(&f).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
        objects.extend(parse(&f, &text)?);
    }
    let default_ns = app.config.namespace.clone();
    let ns_of = |obj: &Value| {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(&default_ns)
            .to_string()
    };
    let ns_res = discovery::by_plural("", "namespaces").expect("namespaces are a served resource");
    let mut namespaces: Vec<String> = vec!["default".into(), default_ns.clone()];
    namespaces.extend(
        objects
            .iter()
            .filter(|(r, _)| r.namespaced)
            .map(|(_, o)| ns_of(o)),
    );
    let mut store = app.store();
    for (res, obj) in objects.iter().filter(|(r, _)| r.plural == "namespaces") {
        store
            .create(res, "", obj.clone())
            .map_err(|e| Error::Manifest {
                path: PathBuf::from("namespaces"),
                message: e.message,
            })?;
    }
    for ns in namespaces {
        if store.get(ns_res, "", &ns).is_err() {
            let obj = json!({ "metadata": { "name": ns }, "status": { "phase": "Active" } });
            let _ = store.create(ns_res, "", obj);
        }
    }
    for (res, mut obj) in objects
        .into_iter()
        .filter(|(r, _)| r.plural != "namespaces")
    {
        let ns = ns_of(&obj);
        if res.plural == "pods" {
            workload::fill_pod(&mut obj);
        }
        let stored = store.create(res, &ns, obj).map_err(|e| Error::Manifest {
            path: PathBuf::from(format!("{}/{ns}", res.plural)),
            message: e.message,
        })?;
        if res.plural == "deployments" {
            workload::sync_pods(&mut store, &stored);
            let name = stored["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            store.set_status(res, &ns, &name, workload::settled_status(&stored));
        }
    }
    Ok(())
}
