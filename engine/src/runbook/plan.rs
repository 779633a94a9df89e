//! The compiled form of a valid runbook: steps by index, their edges, and what each builtin does.

use super::model::{OnFailure, Runbook, Step};
use super::node::{Node, Pos};
use runbook_steps::{Builtin, Registry, SideEffect};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Case {
    pub when: String,
    pub pos: Pos,
    pub then: Vec<usize>,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Plugin,
    Branch {
        cases: Vec<Case>,
        default: Vec<usize>,
    },
    Assert {
        that: String,
        message: Option<serde_json::Value>,
    },
    Sleep {
        duration: serde_json::Value,
    },
    WaitUntil {
        probe_uses: String,
        probe_with: serde_json::Value,
        until: String,
        deadline: serde_json::Value,
        interval: Option<serde_json::Value>,
        hold: Option<serde_json::Value>,
    },
}

#[derive(Debug, Clone)]
pub struct PlanStep {
    pub def: Step,
    pub kind: StepKind,
    /// Steps this one `needs`.
    pub needs: Vec<usize>,
    /// Branch steps that name this one as a target.
    pub branch_parents: Vec<usize>,
    /// Steps whose `on_failure` jumps here.
    pub handler_of: Vec<usize>,
    /// Every step that must be finished before this one is considered.
    pub preds: Vec<usize>,
    /// The steps that have this one in their `preds`.
    pub succs: Vec<usize>,
    /// Steps whose values this one's templates and conditions read.
    pub reads_steps: Vec<usize>,
    /// Whether any template or condition reads `env`.
    pub reads_env: bool,
    /// Whether the step has anything to render or evaluate at all (the fast path skips the context).
    pub has_templates: bool,
    /// The static class: the step's `side_effect:` override, or the plugin's default.
    pub class: SideEffect,
    /// The connection its plugin (or a wait's probe) talks through: named, or the family's default.
    pub connection: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub runbook: Arc<Runbook>,
    pub steps: Vec<PlanStep>,
    pub index: HashMap<String, usize>,
    /// Steps in a topological order (ties in file order).
    pub order: Vec<usize>,
    /// Each step's position in `order`.
    pub rank: Vec<usize>,
    /// Whether any var or connection reads `env`.
    pub vars_read_env: bool,
    /// What validation warns about in a valid runbook (printed by `validate`, `run` and `plan`).
    pub warnings: Vec<crate::diag::Diagnostic>,
}

impl Plan {
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    pub fn id(&self, i: usize) -> &str {
        &self.steps[i].def.id.name
    }
}

/// Helpers shared by validation and planning.
pub(crate) fn with_field<'a>(step: &'a Step, name: &str) -> Option<&'a Node> {
    step.with.as_ref().and_then(|w| w.get(name))
}

pub(crate) fn step_refs(node: &Node) -> Vec<(String, Pos)> {
    match &node.value {
        super::node::Value::Str(s) => vec![(s.clone(), node.pos)],
        super::node::Value::Seq(items) => items
            .iter()
            .filter_map(|n| n.as_str().map(|s| (s.to_string(), n.pos)))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn step_kind(
    step: &Step,
    registry: &Registry,
    index: &HashMap<String, usize>,
) -> StepKind {
    let ids = |n: Option<&Node>| -> Vec<usize> {
        n.map(step_refs)
            .unwrap_or_default()
            .iter()
            .filter_map(|(s, _)| index.get(s).copied())
            .collect()
    };
    let json = |n: Option<&Node>| n.map(Node::to_json);
    let cond = |n: Option<&Node>| -> String {
        match n.map(|n| &n.value) {
            Some(super::node::Value::Str(s)) => super::load::strip_braces(s).to_string(),
            Some(super::node::Value::Bool(b)) => b.to_string(),
            _ => "false".to_string(),
        }
    };
    let Some(builtin) = registry.builtin_of(&step.uses.name) else {
        return StepKind::Plugin;
    };
    match builtin {
        Builtin::Branch => StepKind::Branch {
            cases: with_field(step, "cases")
                .and_then(Node::as_seq)
                .unwrap_or_default()
                .iter()
                .map(|c| Case {
                    when: cond(c.get("when")),
                    pos: c.get("when").map_or(c.pos, |n| n.pos),
                    then: ids(c.get("then")),
                })
                .collect(),
            default: ids(with_field(step, "default")),
        },
        Builtin::Assert => StepKind::Assert {
            that: cond(with_field(step, "that")),
            message: json(with_field(step, "message")),
        },
        Builtin::Sleep => StepKind::Sleep {
            duration: json(with_field(step, "for")).unwrap_or_default(),
        },
        Builtin::WaitUntil => {
            let probe = with_field(step, "probe");
            StepKind::WaitUntil {
                probe_uses: probe
                    .and_then(|p| p.get("uses"))
                    .and_then(Node::as_str)
                    .unwrap_or_default()
                    .to_string(),
                probe_with: probe
                    .and_then(|p| p.get("with"))
                    .map_or(serde_json::json!({}), Node::to_json),
                until: cond(with_field(step, "until")),
                deadline: json(with_field(step, "deadline")).unwrap_or_default(),
                interval: json(with_field(step, "interval")),
                hold: json(with_field(step, "hold")),
            }
        }
    }
}

/// Builds the plan of a runbook that validated cleanly.
pub(crate) fn build(
    rb: Arc<Runbook>,
    registry: &Registry,
    refs: &[super::validate::StepRefs],
    vars_read_env: bool,
    order: Vec<usize>,
) -> Plan {
    let index: HashMap<String, usize> = rb
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.name.clone(), i))
        .collect();
    let mut steps: Vec<PlanStep> = rb
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let kind = step_kind(s, registry, &index);
            let talks = match &kind {
                StepKind::WaitUntil { probe_uses, .. } => probe_uses.as_str(),
                _ => s.uses.name.as_str(),
            };
            let family = registry.get(talks).and_then(|r| r.info().connection);
            let connection = match (&s.connection, family) {
                (Some(named), _) => Some(named.name.clone()),
                (None, Some(f)) => super::validate::connections::default_for(&rb, f)
                    .ok()
                    .flatten()
                    .map(str::to_string),
                (None, None) => None,
            };
            let class = s.side_effect.unwrap_or_else(|| {
                registry
                    .get(&s.uses.name)
                    .map_or(SideEffect::Unsafe, |r| r.info().class)
            });
            PlanStep {
                def: s.clone(),
                kind,
                needs: s
                    .needs
                    .iter()
                    .filter_map(|n| index.get(&n.name).copied())
                    .collect(),
                branch_parents: Vec::new(),
                handler_of: Vec::new(),
                preds: Vec::new(),
                succs: Vec::new(),
                reads_steps: refs[i].steps.clone(),
                reads_env: refs[i].env,
                has_templates: refs[i].any,
                class,
                connection,
            }
        })
        .collect();
    for i in 0..steps.len() {
        if let StepKind::Branch { cases, default } = &steps[i].kind {
            let mut targets: Vec<usize> = cases.iter().flat_map(|c| c.then.clone()).collect();
            targets.extend(default);
            targets.sort_unstable();
            targets.dedup();
            for t in targets {
                steps[t].branch_parents.push(i);
            }
        }
        if let OnFailure::Goto(h) = &steps[i].def.on_failure
            && let Some(&h) = index.get(&h.name)
        {
            steps[h].handler_of.push(i);
        }
    }
    for s in &mut steps {
        let mut preds: Vec<usize> = s
            .needs
            .iter()
            .chain(&s.branch_parents)
            .chain(&s.handler_of)
            .copied()
            .collect();
        preds.sort_unstable();
        preds.dedup();
        s.preds = preds;
    }
    for i in 0..steps.len() {
        for p in steps[i].preds.clone() {
            steps[p].succs.push(i);
        }
    }
    let mut rank = vec![0; steps.len()];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = pos;
    }
    Plan {
        runbook: rb,
        steps,
        index,
        order,
        rank,
        vars_read_env,
        warnings: Vec::new(),
    }
}
