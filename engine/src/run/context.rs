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

/// Replaces each masked field of the recorded connections with the value this resume gives it, by
/// the usual precedence (the environment's `RUNBOOK_CONNECTION_<CONN>_<FIELD>`, then the profile),
/// and returns the (connection, field) pairs nothing gave again.
pub(super) fn fill_masked(
    recorded: &mut Map<String, Value>,
    profile: Option<&super::connections::Profile>,
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    fn fill(
        path: &[&str],
        v: &mut Value,
        conn: &str,
        given: &dyn Fn(&str, &[&str]) -> Option<Value>,
        missing: &mut Vec<(String, String)>,
    ) {
        match v {
            Value::String(t) if t == super::redact::MASK => match given(conn, path) {
                Some(f) if !super::redact::has_mask(&f) => *v = f,
                _ => missing.push((conn.to_string(), path.join("."))),
            },
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let mut p = path.to_vec();
                    p.push(k);
                    fill(&p, x, conn, given, missing);
                }
            }
            _ => {}
        }
    }
    let given = |conn: &str, path: &[&str]| -> Option<Value> {
        // Only a top-level text field can come from the environment (connections.md).
        if let [field] = path
            && let Some(v) = env(&super::connections::env_key(conn, field))
        {
            return Some(Value::String(v));
        }
        let mut at = profile?.connections.get(conn)?;
        for k in path {
            at = at.get(*k)?;
        }
        Some(at.clone())
    };
    let mut missing = Vec::new();
    for (name, conn) in recorded.iter_mut() {
        fill(&[], conn, name, &given, &mut missing);
    }
    missing
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
