//! `runbook graph`: a runbook's DAG as Mermaid or Graphviz dot.

use super::GraphFormat;
use crate::runbook::plan::{Plan, PlanStep, StepKind};
use crate::runbook::{OnFailure, Phase};

/// The steps of each phase, in the phases' order, then those without one (`None`): a phase is drawn
/// as a box around its steps, so a reader sees diagnose → decide → resolve → verify at a glance.
fn by_phase(plan: &Plan) -> Vec<(Option<Phase>, Vec<&PlanStep>)> {
    let mut groups: Vec<(Option<Phase>, Vec<&PlanStep>)> = Phase::ALL
        .iter()
        .map(|(_, p)| Some(*p))
        .chain([None])
        .map(|p| (p, plan.steps.iter().filter(|s| s.def.phase == p).collect()))
        .collect();
    groups.retain(|(_, steps)| !steps.is_empty());
    groups
}

/// The DAG's edges, once for every output format: (from, to, label, dashed).
fn graph_edges(plan: &Plan) -> Vec<(&str, &str, Option<String>, bool)> {
    let mut edges = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        for &d in &s.needs {
            edges.push((plan.id(d), plan.id(i), None, false));
        }
        if let StepKind::Branch { cases, default } = &s.kind {
            for c in cases {
                for &t in &c.then {
                    edges.push((plan.id(i), plan.id(t), Some(c.when.clone()), false));
                }
            }
            for &t in default {
                edges.push((plan.id(i), plan.id(t), Some("default".to_string()), false));
            }
        }
        if let OnFailure::Goto(h) = &s.def.on_failure {
            edges.push((
                plan.id(i),
                h.name.as_str(),
                Some("on failure".to_string()),
                true,
            ));
        }
    }
    edges
}

pub fn graph(plan: &Plan, format: GraphFormat) -> String {
    let esc = |s: &str| s.replace('"', "'");
    let is_branch = |s: &PlanStep| matches!(s.kind, StepKind::Branch { .. });
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (phase, steps) in by_phase(plan) {
                let indent = if let Some(p) = phase {
                    out.push_str(&format!("    subgraph phase_{0}[\"{0}\"]\n", p.as_str()));
                    "        "
                } else {
                    "    "
                };
                for s in steps {
                    let (open, close) = if is_branch(s) { ("{", "}") } else { ("[", "]") };
                    let (id, uses) = (&s.def.id.name, &s.def.uses.name);
                    out.push_str(&format!(
                        "{indent}{id}{open}\"{}<br/><small>{}</small>\"{close}\n",
                        esc(id),
                        esc(uses)
                    ));
                }
                if phase.is_some() {
                    out.push_str("    end\n");
                }
            }
            for (from, to, label, dashed) in graph_edges(plan) {
                out.push_str(&match (label, dashed) {
                    (None, _) => format!("    {from} --> {to}\n"),
                    (Some(l), false) => format!("    {from} -- \"{}\" --> {to}\n", esc(&l)),
                    (Some(l), true) => format!("    {from} -. \"{}\" .-> {to}\n", esc(&l)),
                });
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n    rankdir=TB;\n    node [shape=box, fontname=\"sans-serif\"];\n",
                esc(&plan.runbook.name)
            ));
            for (phase, steps) in by_phase(plan) {
                let indent = if let Some(p) = phase {
                    out.push_str(&format!(
                        "    subgraph \"cluster_{0}\" {{\n        label=\"{0}\";\n        style=rounded;\n",
                        p.as_str()
                    ));
                    "        "
                } else {
                    "    "
                };
                for s in steps {
                    let shape = if is_branch(s) { ", shape=diamond" } else { "" };
                    let (id, uses) = (&s.def.id.name, &s.def.uses.name);
                    out.push_str(&format!(
                        "{indent}\"{id}\" [label=\"{}\\n{}\"{shape}];\n",
                        esc(id),
                        esc(uses)
                    ));
                }
                if phase.is_some() {
                    out.push_str("    }\n");
                }
            }
            for (from, to, label, dashed) in graph_edges(plan) {
                let mut attrs = Vec::new();
                if dashed {
                    attrs.push("style=dashed".to_string());
                }
                if let Some(l) = label {
                    attrs.push(format!("label=\"{}\"", esc(&l)));
                }
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", attrs.join(", "))
                };
                out.push_str(&format!("    \"{from}\" -> \"{to}\"{attrs};\n"));
            }
            out.push_str("}\n");
        }
    }
    out
}
