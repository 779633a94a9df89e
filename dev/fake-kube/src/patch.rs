//! The three patch types a PATCH may carry.
//!
//! - `application/merge-patch+json`: RFC 7386.
//! - `application/strategic-merge-patch+json`: maps merge as in RFC 7386; a list whose patch items
//!   are all objects with a `name` (containers, env, volumes...) merges item by item on `name`, and an
//!   item `{"name": N, "$patch": "delete"}` removes one; every other list is replaced. Other `$`
//!   directives are not supported (they are rejected). This covers what kubectl sends for
//!   `rollout restart`, `set image`, `patch -p` on maps.
//! - `application/json-patch+json`: RFC 6902 `add`, `remove`, `replace`, `test`.

use crate::status::ApiError;
use serde_json::{Map, Value};

/// Applies a patch of the given content type to `target`.
pub fn apply(content_type: &str, target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/merge-patch+json" => Ok(merge(target, patch)),
        "application/strategic-merge-patch+json" => strategic(target, patch),
        "application/json-patch+json" => json_patch(target, patch),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ),
        )),
    }
}

/// RFC 7386 merge patch.
pub fn merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

fn strategic(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if k.starts_with('$') {
            return Err(ApiError::bad_request(format!(
                "fake-kube: strategic merge directive {k:?} is not supported"
            )));
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Array(old)), Value::Array(new)) if named_items(new) => {
                merge_named(old, new)?
            }
            (Some(old), Value::Object(_)) => strategic(old, v)?,
            (None, Value::Object(_)) => strategic(&Value::Null, v)?,
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(Value::Object(out))
}

fn named_items(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

fn merge_named(old: &[Value], new: &[Value]) -> Result<Value, ApiError> {
    let mut out: Vec<Value> = old.to_vec();
    for item in new {
        let name = item.get("name");
        let pos = out.iter().position(|o| o.get("name") == name);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic(&out[i], item)?,
            (None, false) => out.push(strategic(&Value::Null, item)?),
        }
    }
    Ok(Value::Array(out))
}

fn pointer_parts(path: &str) -> Result<Vec<String>, ApiError> {
    let rest = path.strip_prefix('/').ok_or_else(|| {
        ApiError::bad_request(format!("json patch path {path:?} must start with /"))
    })?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a json patch must be a list of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let parts = pointer_parts(path)?;
        let (last, parents) = parts
            .split_last()
            .ok_or_else(|| ApiError::bad_request("json patch path is empty"))?;
        let missing = || {
            ApiError::new(
                422,
                "Invalid",
                format!("json patch: path {path:?} does not exist"),
            )
        };
        let mut parent = &mut doc;
        for p in parents {
            parent = match parent {
                Value::Object(m) => m.get_mut(p).ok_or_else(missing)?,
                Value::Array(a) => p
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(missing)?,
                _ => return Err(missing()),
            };
        }
        let value = op.get("value").cloned();
        match (kind, parent) {
            ("add" | "replace", Value::Object(m)) => {
                if kind == "replace" && !m.contains_key(last) {
                    return Err(missing());
                }
                m.insert(last.clone(), value.ok_or_else(missing)?);
            }
            ("add", Value::Array(a)) => {
                let v = value.ok_or_else(missing)?;
                if last == "-" {
                    a.push(v);
                } else {
                    let i = last
                        .parse::<usize>()
                        .ok()
                        .filter(|i| *i <= a.len())
                        .ok_or_else(missing)?;
                    a.insert(i, v);
                }
            }
            ("replace", Value::Array(a)) => {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < a.len())
                    .ok_or_else(missing)?;
                a[i] = value.ok_or_else(missing)?;
            }
            ("remove", Value::Object(m)) => {
                m.remove(last).ok_or_else(missing)?;
            }
            ("remove", Value::Array(a)) => {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < a.len())
                    .ok_or_else(missing)?;
                a.remove(i);
            }
            ("test", p) => {
                let actual = match p {
                    Value::Object(m) => m.get(last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                if actual != value.as_ref() {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("json patch: test of {path:?} failed"),
                    ));
                }
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "json patch operation {other:?} at {path:?} is not supported"
                )));
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let p = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(merge(&t, &p), json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_maps_and_named_lists() {
        let t = json!({"spec": {"template": {"metadata": {"annotations": {"x": "1"}},
            "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]}}}});
        let p = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
            "spec": {"containers": [{"name": "app", "image": "a:2"}, {"name": "side", "$patch": "delete"}]}}}});
        let out = apply("application/strategic-merge-patch+json", &t, &p).expect("applies");
        assert_eq!(
            out,
            json!({"spec": {"template": {"metadata": {"annotations": {"x": "1", "kubectl.kubernetes.io/restartedAt": "now"}},
                "spec": {"containers": [{"name": "app", "image": "a:2"}]}}}})
        );
    }

    #[test]
    fn json_patch_ops_and_unknown_type() {
        let t = json!({"data": {"a": "1"}, "l": [1]});
        let p = json!([{"op": "replace", "path": "/data/a", "value": "2"},
                       {"op": "add", "path": "/l/-", "value": 2},
                       {"op": "test", "path": "/l/1", "value": 2}]);
        let out = apply("application/json-patch+json", &t, &p).expect("applies");
        assert_eq!(out, json!({"data": {"a": "2"}, "l": [1, 2]}));
        let bad = json!([{"op": "remove", "path": "/nope"}]);
        assert_eq!(
            apply("application/json-patch+json", &t, &bad)
                .expect_err("missing")
                .code,
            422
        );
        assert_eq!(
            apply("application/apply-patch+yaml", &t, &p)
                .expect_err("unknown")
                .code,
            415
        );
    }
}
