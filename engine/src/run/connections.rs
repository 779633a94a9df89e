//! Where a run's connections come from, in this order (later wins, field by field):
//!
//! 1. the runbook's `connections:` (templates rendered once, at run start);
//! 2. the chosen profile of the profile file (`--profile NAME` / `RUNBOOK_PROFILE`; the file is
//!    `--config PATH` / `RUNBOOK_CONFIG`, else `./runbook.toml`, else `$XDG_CONFIG_HOME/runbook/runbook.toml`):
//!    `[profiles.NAME.connections.CONN]` tables of fields;
//! 3. the environment: `RUNBOOK_CONNECTION_<CONN>_<FIELD>` (upper case, `-` as `_`).
//!
//! Secrets stay `secret("NAME")` references throughout; plugins read them at call time. The merged
//! fields are journaled with the run (a `connections_resolved` event), so an audit says which systems a
//! run talked to, and a resumed run talks to the same ones.

use super::driver::DriverError;
use crate::runbook::plan::Plan;
use crate::runbook::validate::connections::kind_of;
use runbook_steps::connection::Connection;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The connections of one run, built once and shared by its steps (with the clients made from them).
pub type Connections = HashMap<String, Arc<Connection>>;

/// A profile: one named section of the profile file.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    pub connections: Map<String, Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, ProfileSection>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSection {
    #[serde(default)]
    connections: Map<String, Value>,
}

/// The profile file to read: the one given, else `./runbook.toml`, else the user's config directory's.
pub fn profile_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let here = PathBuf::from("runbook.toml");
    if here.is_file() {
        return Some(here);
    }
    directories::ProjectDirs::from("", "", "runbook")
        .map(|d| d.config_dir().join("runbook.toml"))
        .filter(|p| p.is_file())
}

/// Reads profile `name` from the profile file; `None` when no profile is asked for.
pub fn load_profile(file: Option<&Path>, name: Option<&str>) -> Result<Option<Profile>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    let Some(path) = profile_path(file) else {
        return Err(format!(
            "profile `{name}`: no profile file (looked for ./runbook.toml and the user config directory; or give --config PATH)"
        ));
    };
    let text = crate::runbook::source::read(&path).map_err(|r| r.render(false))?;
    let parsed: ProfileFile = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let names: Vec<&str> = parsed.profiles.keys().map(String::as_str).collect();
    let Some(section) = parsed.profiles.get(name) else {
        let hint = crate::diag::suggest(name, names.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(format!(
            "{}: no profile `{name}`; {hint}profiles there: {}",
            path.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    Ok(Some(Profile {
        name: name.to_string(),
        file: path,
        connections: section.connections.clone(),
    }))
}

pub fn env_key(conn: &str, field: &str) -> String {
    format!("RUNBOOK_CONNECTION_{conn}_{field}")
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Merges the runbook's rendered connections with the profile and the environment, and checks that
/// every field a kind requires is there. The result is what gets journaled and built.
pub fn resolve(
    plan: &Plan,
    rendered: &Map<String, Value>,
    profile: Option<&Profile>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Map<String, Value>, DriverError> {
    let out = layer(plan, rendered, profile, env)?;
    for (name, node) in &plan.runbook.connections {
        let (Some(kind), Some(Value::Object(fields))) = (kind_of(node), out.get(&name.name)) else {
            continue;
        };
        let missing = kind
            .fields
            .iter()
            .find(|f| f.required && fields.get(f.name).is_none_or(Value::is_null));
        if let Some(field) = missing {
            return Err(DriverError::Refused(format!(
                "connection `{}` ({}) needs `{}`: write it in the runbook, in a profile (--profile), or set {}",
                name.name,
                kind.name,
                field.name,
                env_key(&name.name, field.name)
            )));
        }
    }
    Ok(out)
}

/// Each connection's fields, later sources winning field by field: the runbook's rendered ones, the
/// profile's, the environment's (`RUNBOOK_CONNECTION_<CONN>_<FIELD>`). A profile field the kind does
/// not have is refused; required fields are not checked (a resume re-reading credentials needs only
/// some).
pub fn layer(
    plan: &Plan,
    rendered: &Map<String, Value>,
    profile: Option<&Profile>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Map<String, Value>, DriverError> {
    let mut out = Map::new();
    for (name, node) in &plan.runbook.connections {
        let Some(kind) = kind_of(node) else {
            continue;
        };
        let mut fields = match rendered.get(&name.name) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if let Some(Value::Object(extra)) = profile.and_then(|p| p.connections.get(&name.name)) {
            for (k, v) in extra {
                if k != "kind" && !kind.fields.iter().any(|f| f.name == k) {
                    let p = profile
                        .map(|p| p.file.display().to_string())
                        .unwrap_or_default();
                    return Err(DriverError::Refused(format!(
                        "{p}: connection `{}` ({}) has no field `{k}`; its fields: {}",
                        name.name,
                        kind.name,
                        kind.fields
                            .iter()
                            .map(|f| f.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                fields.insert(k.clone(), v.clone());
            }
        }
        for f in kind.fields {
            if let Some(v) = env(&env_key(&name.name, f.name)) {
                fields.insert(f.name.to_string(), Value::String(v));
            }
        }
        fields.insert("kind".into(), Value::String(kind.name.to_string()));
        out.insert(name.name.clone(), Value::Object(fields));
    }
    Ok(out)
}

/// Builds the run's connections from resolved (or journaled) fields.
pub fn build(plan: &Plan, resolved: &Map<String, Value>) -> Connections {
    plan.runbook
        .connections
        .iter()
        .filter_map(|(name, node)| {
            let kind = kind_of(node)?;
            let fields = match resolved.get(&name.name) {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            Some((
                name.name.clone(),
                Arc::new(Connection::new(&name.name, kind, fields)),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;
    use crate::runbook::validate::check;
    use runbook_steps::Registry;
    use serde_json::json;

    fn plan(yaml: &str) -> Plan {
        match check("t.yaml", yaml, &Registry::builtin(), &Expr::new()) {
            Ok(p) => p,
            Err(r) => panic!("invalid test runbook:\n{}", r.render(false)),
        }
    }

    const RB: &str = "
name: c
connections:
  prom: { kind: prometheus }
  api: { kind: http, base_url: 'http://runbook.example', headers: { A: '1' } }
steps:
  - { id: a, uses: http.request, connection: api, with: { url: /x } }
";

    #[test]
    fn later_sources_win_field_by_field_and_required_fields_are_demanded() {
        let p = plan(RB);
        let rendered = json!({"prom": {"kind": "prometheus"}, "api": {"kind": "http", "base_url": "http://runbook.example", "headers": {"A": "1"}}});
        let rendered = rendered.as_object().expect("object");
        let none = |_: &str| None;
        let e = resolve(&p, rendered, None, none).expect_err("prom has no url");
        assert!(e.to_string().contains("RUNBOOK_CONNECTION_PROM_URL"), "{e}");

        let profile = Profile {
            name: "sandbox".into(),
            file: "runbook.toml".into(),
            connections: json!({"prom": {"url": "http://127.0.0.1:9090"}, "api": {"base_url": "http://127.0.0.1:8080"}})
                .as_object()
                .expect("object")
                .clone(),
        };
        let env = |k: &str| {
            (k == "RUNBOOK_CONNECTION_PROM_URL").then(|| "http://from-env:9090".to_string())
        };
        let r = resolve(&p, rendered, Some(&profile), env).expect("resolved");
        assert_eq!(r["prom"]["url"], "http://from-env:9090");
        assert_eq!(r["api"]["base_url"], "http://127.0.0.1:8080");
        assert_eq!(
            r["api"]["headers"]["A"], "1",
            "fields the profile leaves alone stay"
        );
        let built = build(&p, &r);
        assert_eq!(built["api"].str("base_url"), Some("http://127.0.0.1:8080"));
        assert_eq!(built["prom"].kind.name, "prometheus");
    }

    #[test]
    fn a_profile_field_the_kind_does_not_have_is_refused() {
        let p = plan(RB);
        let profile = Profile {
            name: "x".into(),
            file: "runbook.toml".into(),
            connections: json!({"prom": {"url": "u", "uri": "typo"}})
                .as_object()
                .expect("o")
                .clone(),
        };
        let e = resolve(&p, &Map::new(), Some(&profile), |_| None).expect_err("unknown field");
        assert!(e.to_string().contains("no field `uri`"), "{e}");
    }
}
