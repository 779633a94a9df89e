//! A run's parameters: values given (on the command line, in an API request, from an alert's labels)
//! checked against the runbook's declared `params:` and completed with their defaults. One check
//! for every way a run starts, so a value refused at a terminal is refused over HTTP too.

use super::Runbook;
use super::load::coerce_param;
use serde_json::{Map, Value};

/// How the values were given, for messages that say how to fix them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// `--param NAME=VALUE` on the command line.
    Flags,
    /// A JSON object `params: {NAME: VALUE}` (the HTTP API).
    Json,
}

impl Given {
    fn name(self, k: &str) -> String {
        match self {
            Given::Flags => format!("--param `{k}`"),
            Given::Json => format!("params.{k}"),
        }
    }

    fn how_to_pass(self, k: &str) -> String {
        match self {
            Given::Flags => format!("pass --param {k}=VALUE"),
            Given::Json => format!("set params.{k}"),
        }
    }
}

/// Checks `given` against `rb`'s parameters (converting strings where the type asks, e.g. `"3"` for
/// a number), fills defaults, and sets the rest to null; every problem is reported, not the first.
pub fn bind(
    rb: &Runbook,
    given: impl IntoIterator<Item = (String, Value)>,
    how: Given,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut checked = Map::new();
    let mut errors = Vec::new();
    for (k, v) in given {
        let k = k.trim().to_string();
        let Some(decl) = rb.params.iter().find(|d| d.name.name == k) else {
            let names: Vec<&str> = rb.params.iter().map(|d| d.name.name.as_str()).collect();
            let hint = match crate::diag::suggest(&k, names.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if names.is_empty() => "; it takes no parameters".to_string(),
                None => format!("; it takes: {}", names.join(", ")),
            };
            errors.push(format!(
                "{}: runbook `{}` has no such parameter{hint}",
                how.name(&k),
                rb.name
            ));
            continue;
        };
        match coerce_param(decl.ty, decl.choices.as_deref(), &v) {
            Ok(val) => {
                checked.insert(k, val);
            }
            Err(e) => errors.push(format!("{}: {e}", how.name(&k))),
        }
    }
    let mut out = Map::new();
    for d in &rb.params {
        match checked.remove(&d.name.name).or_else(|| d.default.clone()) {
            Some(v) => {
                out.insert(d.name.name.clone(), v);
            }
            None if d.required => errors.push(format!(
                "missing required parameter `{}` ({}){}: {}",
                d.name.name,
                d.ty.as_str(),
                d.description
                    .as_ref()
                    .map(|x| format!(", {x}"))
                    .unwrap_or_default(),
                how.how_to_pass(&d.name.name)
            )),
            None => {
                out.insert(d.name.name.clone(), Value::Null);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
