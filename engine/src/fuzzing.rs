//! The bodies of the fuzz targets in `fuzz/`. They live in the library so that a plain (stable) test
//! can run them over the seed corpus and the harness cannot rot while nobody runs the fuzzer.
//!
//! A body returns normally for any input; a panic, a hang or unbounded memory is a finding.

use crate::expr::Expr;
use crate::runbook::load::strip_braces;
use crate::runbook::validate::check;
use runbook_steps::Registry;
use std::sync::OnceLock;

fn engine() -> &'static (Registry, Expr) {
    static ENGINE: OnceLock<(Registry, Expr)> = OnceLock::new();
    ENGINE.get_or_init(|| (Registry::builtin(), Expr::new()))
}

/// Load, validate and (on failure) render the diagnostics of `data` as a runbook file, the way
/// `runbook validate` does.
pub fn validate_bytes(data: &[u8]) {
    // `runbook validate` reads files as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registry, expr) = engine();
    match check("fuzz.yaml", text, registry, expr) {
        Ok(plan) => {
            assert!(!plan.steps.is_empty(), "a valid runbook has steps");
        }
        Err(report) => {
            assert!(
                !report.diagnostics.is_empty(),
                "a rejected runbook says why"
            );
            for d in &report.diagnostics {
                if let Some(pos) = d.pos {
                    assert!(
                        pos.offset <= text.len(),
                        "diagnostic `{}` points past the end of the file",
                        d.message
                    );
                }
            }
            let rendered = report.render(false);
            assert!(rendered.contains("error"), "rendered: {rendered}");
        }
    }
}

/// The fixed context templates and conditions are evaluated against: the shapes a run has (params,
/// vars, steps with results and outputs, env, run).
fn context() -> &'static minijinja::Value {
    static CTX: OnceLock<minijinja::Value> = OnceLock::new();
    CTX.get_or_init(|| {
        let v = serde_json::json!({
            "params": { "url": "http://127.0.0.1:8080/healthz", "threshold": 90, "dry_run": true, "opt": null },
            "vars": { "limits": { "soft": 85, "hard": 95 }, "names": ["a", "b"], "f1_min": 0.72 },
            "connections": { "svc": { "base": "http://127.0.0.1:9" } },
            "env": { "USER": "fuzz" },
            "run": { "id": "01a20e91cbf5", "started_at": "2026-01-01T00:00:00Z", "actor": "fuzz" },
            "steps": {
                "probe": {
                    "status": "failed",
                    "error": { "kind": "connect", "message": "refused" },
                    "result": null,
                },
                "disk": {
                    "status": "succeeded",
                    "used_pct": 42,
                    "result": { "exit_code": 0, "stdout": "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 42 58 42% /\n", "stderr": "" },
                },
            },
            "result": { "status": 200, "json": { "data": { "result": [{ "value": [0, "0.8"] }] } }, "body": "ok" },
        });
        minijinja::Value::from(minijinja::value::Serde(&v))
    })
}

/// Compile, inspect, render and evaluate `data` as template and condition text.
pub fn template_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (_, expr) = engine();
    let ctx = context();
    // What validation does with a template and a condition.
    let _ = expr.template_refs(text);
    let _ = expr.condition_refs(strip_braces(text));
    // What a run does: `with` values are rendered (nested, as in a mapping), guards evaluated.
    let value = serde_json::json!({ "a": text, "b": [text] });
    if let Ok(rendered) = expr.render_value(&value, ctx) {
        assert!(
            rendered.is_object(),
            "rendering keeps the shape: {rendered}"
        );
    }
    if let Ok(decision) = expr.eval_condition(strip_braces(text), ctx) {
        // `values` is what the journal records a decision read; it must serialize.
        let _ = serde_json::to_string(&decision.values);
    }
}
