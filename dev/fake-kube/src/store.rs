//! The objects, their `resourceVersion`s, and the change feed watches read.

use crate::discovery::Resource;
use crate::selector::Selector;
use crate::status::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::sync::broadcast;

/// (group, plural, namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String, String, String);

pub fn key(res: &Resource, ns: &str, name: &str) -> Key {
    let ns = if res.namespaced { ns } else { "" };
    (res.group.into(), res.plural.into(), ns.into(), name.into())
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub group: String,
    pub plural: String,
    pub object: Value,
}

pub struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    changes: broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: 1000,
            uid: 0,
            objects: BTreeMap::new(),
            changes: broadcast::channel(1024).0,
        }
    }
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

impl Store {
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(res, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res.group, res.plural, name))
    }

    /// Objects of `res` in `ns` (every namespace when `None`) matching both selectors, by name.
    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                g == res.group
                    && p == res.plural
                    && (ns.is_none_or(|ns| !res.namespaced || n == ns))
            })
            .map(|(_, v)| v)
            .filter(|v| labels.matches(|k| crate::selector::label(v, k)))
            .filter(|v| fields.matches(|k| crate::selector::field(v, k)))
            .cloned()
            .collect()
    }

    /// Stores a new object, filling in what the API server would (uid, creation time, version).
    pub fn create(&mut self, res: &Resource, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} is invalid: metadata.name: Required value: name is required",
                        res.kind
                    ),
                )
            })?
            .to_string();
        let k = key(res, ns, &name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::already_exists(res.group, res.plural, &name));
        }
        self.uid += 1;
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        let meta = &mut obj["metadata"];
        if res.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        if res.plural == "deployments" {
            meta["generation"] = json!(1);
        }
        self.write(res, k, obj, "ADDED")
    }

    /// Replaces a stored object; a `metadata.resourceVersion` in `obj` must be the current one.
    pub fn update(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let old = self
            .objects
            .get(&k)
            .ok_or_else(|| ApiError::not_found(res.group, res.plural, name))?;
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
        if meta_str(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&obj, "name").unwrap_or_default()
            )));
        }
        // What a client cannot change: identity and server-kept fields.
        let meta_old = old["metadata"].clone();
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            match meta_old.get(f) {
                Some(v) => obj["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        // Status has its own subresource: a write to the object leaves it alone.
        if res.subresources.iter().any(|(s, _, _)| *s == "status") {
            match old.get("status") {
                Some(st) => obj["status"] = st.clone(),
                None => drop(obj.as_object_mut().and_then(|m| m.remove("status"))),
            }
        }
        if res.plural == "deployments" && old.get("spec") != obj.get("spec") {
            let g = meta_old
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        self.write(res, k, obj, "MODIFIED")
    }

    pub fn delete(&mut self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let mut obj = self
            .objects
            .remove(&k)
            .ok_or_else(|| ApiError::not_found(res.group, res.plural, name))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let _ = self.changes.send(Change {
            kind: "DELETED",
            group: res.group.into(),
            plural: res.plural.into(),
            object: obj.clone(),
        });
        Ok(obj)
    }

    fn write(
        &mut self,
        res: &Resource,
        k: Key,
        mut obj: Value,
        kind: &'static str,
    ) -> Result<Value, ApiError> {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(k, obj.clone());
        // No receiver is not an error: nobody watches.
        let _ = self.changes.send(Change {
            kind,
            group: res.group.into(),
            plural: res.plural.into(),
            object: obj.clone(),
        });
        Ok(obj)
    }

    /// Sets `status` without touching the rest (the controllers' writes), bumping the version.
    pub fn set_status(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Option<Value> {
        let k = key(res, ns, name);
        let mut obj = self.objects.get(&k)?.clone();
        obj["status"] = status;
        self.write(res, k, obj, "MODIFIED").ok()
    }
}
