//! The context every step of a run shares — params, vars, connections, the run, and the environment
//! if anything reads it — and the connections a run resolves from its runbook, profile and
//! environment.

use super::driver::DriverError;
use crate::expr::Expr;
use crate::runbook::plan::Plan;
use serde_json::{Map, Value};

fn env_map() -> Value {
    Value::Object(
        std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// A JSON object: the shared context, or the run's vars.
type Json = Map<String, Value>;

/// Replaces each masked field of the recorded connections with the same field of `fresh` (what this
/// resume's runbook, profile and environment give, [`super::connections::layer`]), and returns the
/// (connection, field path) pairs it could not fill.
pub(super) fn fill_masked(
    recorded: &mut Map<String, Value>,
    fresh: &Map<String, Value>,
) -> Vec<(String, String)> {
    fn fill(path: String, v: &mut Value, fresh: Option<&Value>, missing: &mut Vec<String>) {
        match v {
            Value::String(t) if t == super::redact::MASK => match fresh {
                Some(f) if !super::redact::has_mask(f) => *v = f.clone(),
                _ => missing.push(path),
            },
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    fill(p, x, fresh.and_then(|f| f.get(k)), missing);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (name, conn) in recorded.iter_mut() {
        let mut fields = Vec::new();
        fill(String::new(), conn, fresh.get(name), &mut fields);
        missing.extend(fields.into_iter().map(|f| (name.clone(), f)));
    }
    missing
}

/// The runbook's connections as rendered into `base`, merged with the profile and the environment
/// without the required-field check: what a resume takes masked credentials from again.
pub(super) fn layer_connections(
    plan: &Plan,
    base: &Map<String, Value>,
    profile: Option<&super::connections::Profile>,
) -> Result<Map<String, Value>, DriverError> {
    let rendered = match base.get("connections") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    super::connections::layer(plan, &rendered, profile, |k| std::env::var(k).ok())
}

/// Merges the rendered `connections` of `base` with the profile and the environment, puts the result
/// back into `base` (what templates read) and returns it (what is journaled and built).
pub(super) fn resolve_connections(
    plan: &Plan,
    base: &mut Map<String, Value>,
    profile: Option<&super::connections::Profile>,
) -> Result<Map<String, Value>, DriverError> {
    let rendered = match base.get("connections") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let resolved =
        super::connections::resolve(plan, &rendered, profile, |k| std::env::var(k).ok())?;
    base.insert("connections".into(), Value::Object(resolved.clone()));
    Ok(resolved)
}

/// The context every step of a run shares. Vars are rendered once, when the run starts, and journaled;
/// a resumed run passes the recorded ones so nothing is re-decided. Connections (which may hold
/// secrets from the environment) are never journaled, so they are rendered each time.
pub(super) fn base_context(
    plan: &Plan,
    expr: &Expr,
    params: &Map<String, Value>,
    recorded_vars: Option<&Map<String, Value>>,
    run_info: Value,
) -> Result<(Json, Json), DriverError> {
    let mut base = Map::new();
    base.insert("params".into(), Value::Object(params.clone()));
    if plan.vars_read_env || plan.steps.iter().any(|s| s.reads_env) {
        base.insert("env".into(), env_map());
    }
    let vars = match recorded_vars {
        Some(v) => v.clone(),
        None => {
            // Vars may read params, env and the vars above them.
            let mut vars = Map::new();
            base.insert("vars".into(), Value::Object(Map::new()));
            for (name, node) in &plan.runbook.vars {
                let ctx = minijinja::Value::from(minijinja::value::Serde(&base));
                let v = expr
                    .render_value(&node.to_json(), &ctx)
                    .map_err(|e| DriverError::Setup(format!("var `{}`: {e}", name.name)))?;
                vars.insert(name.name.clone(), v);
                base.insert("vars".into(), Value::Object(vars.clone()));
            }
            vars
        }
    };
    base.insert("vars".into(), Value::Object(vars.clone()));
    let mut conns = Map::new();
    for (name, node) in &plan.runbook.connections {
        let ctx = minijinja::Value::from(minijinja::value::Serde(&base));
        let v = expr
            .render_value(&node.to_json(), &ctx)
            .map_err(|e| DriverError::Setup(format!("connection `{}`: {e}", name.name)))?;
        conns.insert(name.name.clone(), v);
    }
    base.insert("connections".into(), Value::Object(conns));
    base.insert("run".into(), run_info);
    Ok((base, vars))
}
