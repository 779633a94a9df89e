//! `runbook audit RUN -o json`: the whole model, structured.

use super::model::Audited;
use serde_json::{Value, json};

pub fn render(a: &Audited) -> Value {
    let v = &a.loaded.view;
    json!({
        "run": v.run,
        "duration_ms": v.run.duration_ms,
        "engine_version": v.run.engine_version,
        "integrity": a.integrity(),
        "timeline": a.timeline(),
        "steps": v.steps,
        "resumes": v.resumes,
        "decisions": a.decisions(),
        "actions": a.actions(),
        "interventions": a.interventions(),
        "failures": a.failures(),
    })
}
