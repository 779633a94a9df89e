//! `labelSelector` and `fieldSelector`, as the API server parses them.

use crate::status::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed label or field selector: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    reqs: Vec<Req>,
}

/// Splits on commas outside parentheses (`a in (x,y),b=c`).
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl Selector {
    /// A label selector: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`.
    pub fn labels(s: &str) -> Result<Selector, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let bad = || ApiError::bad_request(format!("unable to parse requirement: {part:?}"));
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Req::In(k.trim().into(), set(v).ok_or_else(bad)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Req::Absent(k.trim().into())
            } else if !part.contains(char::is_whitespace) {
                Req::Exists(part.into())
            } else {
                return Err(bad());
            };
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// A field selector over the fields the fake supports (`=`, `==`, `!=` only, like the server).
    pub fn fields(s: &str, supported: &[&str]) -> Result<Selector, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let (Req::Eq(k, _) | Req::Ne(k, _)) = &req else {
                unreachable!("only = and != are built above")
            };
            if !supported.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// Whether `lookup` (key -> value) satisfies every requirement.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => lookup(k).as_deref() == Some(v),
            Req::Ne(k, v) => lookup(k).as_deref() != Some(v),
            Req::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => lookup(k).is_some(),
            Req::Absent(k) => lookup(k).is_none(),
        })
    }
}

/// An object's label `key`.
pub fn label(obj: &Value, key: &str) -> Option<String> {
    obj.pointer("/metadata/labels")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// A dotted field path (`metadata.name`, `status.phase`) of an object, as text.
pub fn field(obj: &Value, path: &str) -> Option<String> {
    let mut v = obj;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A `matchLabels` map as a selector (what a deployment selects its pods with).
pub fn from_match_labels(labels: &Value) -> Selector {
    let reqs = labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| Req::Eq(k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Selector { reqs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}},
               "status": {"phase": "Running"}})
    }

    fn labels_match(s: &str) -> bool {
        let o = obj();
        Selector::labels(s)
            .expect("parses")
            .matches(|k| label(&o, k))
    }

    #[test]
    fn label_selectors() {
        assert!(labels_match("app=web"));
        assert!(labels_match("app==web,tier"));
        assert!(!labels_match("app!=web"));
        assert!(labels_match("app in (db, web),!missing"));
        assert!(!labels_match("app notin (web)"));
        assert!(!labels_match("missing"));
        assert!(Selector::labels("app in web").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj();
        let supported = ["metadata.name", "status.phase"];
        let s = Selector::fields("metadata.name=web-1,status.phase!=Pending", &supported)
            .expect("parses");
        assert!(s.matches(|k| field(&o, k)));
        let s = Selector::fields("status.phase=Pending", &supported).expect("parses");
        assert!(!s.matches(|k| field(&o, k)));
        let e = Selector::fields("spec.other=1", &supported).expect_err("unsupported field");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("spec.other"), "{}", e.message);
    }
}
