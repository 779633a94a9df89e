//! Validation: everything that can be known before a run starts is checked here, and every problem is
//! reported (not just the first) with the place in the YAML it comes from.
//!
//! One [`Validator`] walks the loaded runbook; its checks live by subject:
//! - `fields`: `uses` and `with` against the plugin's declared fields;
//! - `graph`: step ids, `needs`/branch/`on_failure` edges, cycles, reachability;
//! - `refs`: templates and conditions, and what they may read given the DAG;
//! - `connections`: each connection's kind and fields, and which one each step uses.

pub mod connections;
mod fields;
mod graph;
mod refs;

use super::load::load;
use super::model::*;
use super::node::Pos;
use super::plan::{self, Plan};
use crate::diag::{Diagnostic, Report, suggest};
use crate::expr::Expr;
use runbook_steps::Registry;
use std::collections::HashMap;
use std::sync::Arc;

/// What one step's templates read, resolved to step indices.
#[derive(Debug, Clone, Default)]
pub struct StepRefs {
    pub steps: Vec<usize>,
    pub env: bool,
    pub any: bool,
}

/// Loads and validates a runbook; returns its plan, or every diagnostic.
pub fn check(file: &str, source: &str, registry: &Registry, expr: &Expr) -> Result<Plan, Report> {
    let report = |diagnostics| Report {
        file: file.to_string(),
        source: source.to_string(),
        diagnostics,
    };
    let (rb, mut diags) = load(source);
    let Some(rb) = rb else {
        return Err(report(diags));
    };
    let mut v = Validator {
        rb: &rb,
        registry,
        expr,
        diags: Vec::new(),
        index: HashMap::new(),
    };
    let result = v.run();
    diags.append(&mut v.diags);
    diags.sort_by_key(|d| d.pos.map(|p| p.offset));
    if !diags.is_empty() {
        return Err(report(diags));
    }
    let (refs, vars_env, order) = result;
    let warnings = alert_values_in_shell_lines(&rb, expr);
    let mut plan = plan::build(Arc::new(rb), registry, &refs, vars_env, order);
    plan.warnings = warnings;
    Ok(plan)
}

/// A parameter an alert's label fills (`triggers.params`) that a `shell.run` step pastes into its
/// `shell:` line: whoever can send an alert chooses that text, and the shell would run it. Passing
/// it through `env:` and quoting it (`"$X"`) keeps it data. A warning, since a param with an `enum`
/// cannot carry anything else, and an operator may have good reasons.
fn alert_values_in_shell_lines(rb: &Runbook, expr: &Expr) -> Vec<Diagnostic> {
    let filled: Vec<(&str, &str)> = rb
        .trigger
        .params
        .iter()
        .filter(|(p, _)| {
            rb.params
                .iter()
                .find(|d| d.name.name == p.name)
                .is_some_and(|d| d.choices.is_none())
        })
        .map(|(p, label)| (p.name.as_str(), label.as_str()))
        .collect();
    let mut out = Vec::new();
    if filled.is_empty() {
        return out;
    }
    for s in rb.steps.iter().filter(|s| s.uses.name == "shell.run") {
        let Some(shell) = s.with.as_ref().and_then(|w| w.get("shell")) else {
            continue;
        };
        let Some(text) = shell.as_str() else {
            continue;
        };
        let refs = expr.template_refs(text).unwrap_or_default();
        for (param, label) in &filled {
            let path = format!("params.{param}");
            if refs
                .iter()
                .any(|r| r == &path || r.starts_with(&format!("{path}.")))
            {
                out.push(
                    Diagnostic::new(
                        shell.pos,
                        format!(
                            "`{path}` is filled from the alert label `{label}` and pasted into a shell line: \
                             whoever sends the alert chooses what this shell runs"
                        ),
                    )
                    .help(format!(
                        "pass it through `env:` (e.g. `env: {{ VALUE: \"{{{{ {path} }}}}\" }}`) and write \"$VALUE\" \
                         in the line, or give the parameter an `enum:`"
                    ))
                    .warning(),
                );
            }
        }
    }
    out
}

/// Where a template sits, for the rules about what it may read.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// vars and connections: params, env, earlier vars.
    Vars,
    /// a step's `with`, `when`: params, vars, connections, env, run, upstream steps.
    Step,
    /// a step's `outputs` and `flow.wait_until`'s `until`: all of the above plus `result`.
    WithResult,
}

struct Validator<'a> {
    rb: &'a Runbook,
    registry: &'a Registry,
    expr: &'a Expr,
    diags: Vec<Diagnostic>,
    index: HashMap<&'a str, usize>,
}

impl<'a> Validator<'a> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn run(&mut self) -> (Vec<StepRefs>, bool, Vec<usize>) {
        let rb = self.rb;
        // Ids first: everything else refers to them.
        for (i, s) in rb.steps.iter().enumerate() {
            if let Some(&first) = self.index.get(s.id.name.as_str()) {
                let line = rb.steps[first].id.pos.line;
                self.err(
                    Diagnostic::new(s.id.pos, format!("duplicate step id `{}`", s.id.name))
                        .label("defined again here")
                        .help(format!(
                            "first defined on line {line}; step ids must be unique"
                        )),
                );
            } else {
                self.index.insert(&s.id.name, i);
            }
        }
        let mut vars_env = false;
        let mut seen_vars: Vec<&str> = Vec::new();
        for (name, node) in &rb.vars {
            vars_env |= self.templates_in(node, Scope::Vars, None, &seen_vars).env;
            seen_vars.push(&name.name);
        }
        for (_, node) in &rb.connections {
            vars_env |= self.templates_in(node, Scope::Vars, None, &seen_vars).env;
        }
        self.check_connections();
        for s in &rb.steps {
            self.check_uses_and_with(s);
            self.check_step_connection(s);
            self.check_edges(s);
        }
        let order = self.graph();
        let mut refs = Vec::with_capacity(rb.steps.len());
        let ancestry = order.as_ref().map(|o| self.ancestry(o));
        for (i, s) in rb.steps.iter().enumerate() {
            refs.push(self.step_templates(i, s, ancestry.as_ref()));
        }
        if let Some(order) = &order {
            self.reachability(order);
        }
        (refs, vars_env, order.unwrap_or_default())
    }

    fn unknown_step(&mut self, pos: Pos, id: &str) {
        let help = match suggest(id, self.index.keys().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "no step has this id".to_string(),
        };
        self.err(Diagnostic::new(pos, format!("unknown step `{id}`")).help(help));
    }
}

fn merge(acc: &mut StepRefs, r: StepRefs) {
    acc.steps.extend(r.steps);
    acc.env |= r.env;
    acc.any |= r.any;
}
