//! Validation: everything that can be known before a run starts is checked here, and every problem is
//! reported (not just the first) with the place in the YAML it comes from.

use super::load::{duration_text, load};
use super::model::*;
use super::node::{Node, Pos, Value};
use super::plan::{self, Plan, StepKind};
use crate::diag::{Diagnostic, Report, suggest};
use crate::expr::{Expr, is_template};
use petgraph::graph::{DiGraph, NodeIndex};
use runbook_steps::{Field, FieldType, Registry, Runner, SideEffect, parse_duration};
use std::collections::{HashMap, HashSet};
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
    Ok(plan::build(Arc::new(rb), registry, &refs, vars_env, order))
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
        for s in &rb.steps {
            self.check_uses_and_with(s);
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

    fn check_uses_and_with(&mut self, s: &Step) {
        let Some(runner) = self.registry.get(&s.uses.name) else {
            let help = match suggest(&s.uses.name, self.registry.names()) {
                Some(sug) => format!("did you mean `{sug}`? (`runbook plugins` lists them all)"),
                None => "`runbook plugins` lists the plugins this build knows".to_string(),
            };
            self.err(
                Diagnostic::new(s.uses.pos, format!("unknown plugin `{}`", s.uses.name)).help(help),
            );
            return;
        };
        let info = runner.info();
        if let Runner::Builtin(_) = runner {
            let ignored: Vec<&str> = [
                (s.approval, "approval"),
                (s.side_effect.is_some(), "side_effect"),
                (s.timeout.is_some(), "timeout"),
            ]
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, k)| *k)
            .collect();
            for key in ignored {
                let help = match (key, info.name) {
                    ("timeout", "flow.wait_until") => "a wait has its own `deadline` in `with`",
                    ("timeout", "flow.sleep") => "a sleep lasts exactly its `for`",
                    ("timeout", _) => "this step evaluates a condition and cannot hang",
                    _ => "flow steps change nothing, so there is nothing to approve or classify",
                };
                self.err(
                    Diagnostic::new(
                        s.uses.pos,
                        format!("`{key}` has no effect on a `{}` step", info.name),
                    )
                    .help(help),
                );
            }
        }
        match &s.with {
            Some(w) => self.check_object(
                w,
                info.fields,
                info.exactly_one_of,
                &format!("`with` of `{}`", info.name),
            ),
            None => {
                let required: Vec<&str> = info
                    .fields
                    .iter()
                    .filter(|f| f.required)
                    .map(|f| f.name)
                    .collect();
                if !required.is_empty() || !info.exactly_one_of.is_empty() {
                    let mut need: Vec<String> = required.iter().map(|r| format!("`{r}`")).collect();
                    for g in info.exactly_one_of {
                        need.push(
                            g.iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(" or "),
                        );
                    }
                    self.err(
                        Diagnostic::new(s.uses.pos, format!("step `{}` has no `with`", s.id.name))
                            .help(format!("`{}` needs {}", info.name, need.join(", "))),
                    );
                }
            }
        }
        if s.uses.name == "flow.wait_until"
            && let Some(probe) = s.with.as_ref().and_then(|w| w.get("probe"))
            && let Some(uses) = probe.get("uses")
            && let Some(name) = uses.as_str()
            && let Some(Runner::Plugin(p)) = self.registry.get(name)
            && let class = p.class_for(
                &probe
                    .get("with")
                    .map_or(serde_json::json!({}), Node::to_json),
            )
            && class != SideEffect::Read
            && probe.get("side_effect").and_then(Node::as_str) != Some("read")
        {
            self.err(
                Diagnostic::new(uses.pos, format!("this `{name}` call is `{}`, not `read`", class.as_str()))
                    .help("a wait_until probe is repeated many times, so it must be `read`; if this call changes nothing, say so with `side_effect: read` in the probe"),
            );
        }
    }

    fn check_object(&mut self, node: &Node, fields: &[Field], one_of: &[&[&str]], what: &str) {
        self.check_object_at(node, node.pos, fields, one_of, what);
    }

    /// Checks a mapping against declared fields; `anchor` is where errors about the mapping as a
    /// whole (a missing field) point, e.g. its `with:` key rather than its first entry.
    fn check_object_at(
        &mut self,
        node: &Node,
        anchor: Pos,
        fields: &[Field],
        one_of: &[&[&str]],
        what: &str,
    ) {
        let Some(entries) = node.as_map() else {
            self.err(Diagnostic::new(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
            ));
            return;
        };
        let mut present: Vec<&str> = Vec::new();
        let mut key_pos: HashMap<&str, Pos> = HashMap::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(Diagnostic::new(
                    k.pos,
                    format!("keys of {what} must be strings"),
                ));
                continue;
            };
            if present.contains(&key) {
                self.err(Diagnostic::new(
                    k.pos,
                    format!("duplicate key `{key}` in {what}"),
                ));
                continue;
            }
            present.push(key);
            key_pos.insert(key, k.pos);
            match fields.iter().find(|f| f.name == key) {
                Some(f) => self.check_type(v, &f.ty, &format!("`{key}`")),
                None => {
                    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
                    let help = match suggest(key, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if names.is_empty() => "it takes no fields".to_string(),
                        None => format!("it takes: {}", names.join(", ")),
                    };
                    self.err(
                        Diagnostic::new(k.pos, format!("unknown field `{key}` in {what}"))
                            .help(help),
                    );
                }
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if !present.contains(&f.name) {
                self.err(
                    Diagnostic::new(
                        node.pos,
                        format!("missing required field `{}` in {what}", f.name),
                    )
                    .help(format!(
                        "`{}`: {} — {}",
                        f.name,
                        f.ty.describe(),
                        f.doc
                    )),
                );
            }
        }
        for group in one_of {
            let given: Vec<&&str> = group.iter().filter(|g| present.contains(g)).collect();
            if given.len() != 1 {
                let names = group
                    .iter()
                    .map(|g| format!("`{g}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let (pos, msg) = if given.is_empty() {
                    (anchor, format!("{what} needs {names}"))
                } else {
                    let second = given
                        .get(1)
                        .and_then(|g| key_pos.get(**g))
                        .copied()
                        .unwrap_or(anchor);
                    (second, format!("{what} takes only one of {names}"))
                };
                self.err(Diagnostic::new(pos, msg));
            }
        }
    }

    /// Checks a literal against a field type. Templates defer the type check to run time (their
    /// references are checked with the step's other templates).
    fn check_type(&mut self, node: &Node, ty: &FieldType, what: &str) {
        if let Value::Str(s) = &node.value
            && is_template(s)
            && !matches!(ty, FieldType::Condition | FieldType::StepRefs)
        {
            return;
        }
        let mismatch = |this: &mut Self, expected: &str| {
            this.err(
                Diagnostic::new(
                    node.pos,
                    format!("{what} must be {expected}, found {}", node.kind()),
                )
                .label(format!("expected {expected}")),
            );
        };
        match ty {
            FieldType::String => {
                if !matches!(node.value, Value::Str(_)) {
                    mismatch(self, "a string");
                }
            }
            FieldType::Number => {
                if !matches!(node.value, Value::Int(_) | Value::Float(_)) {
                    mismatch(self, "a number");
                }
            }
            FieldType::Integer => {
                if !matches!(node.value, Value::Int(_)) {
                    mismatch(self, "a whole number");
                }
            }
            FieldType::Bool => {
                if !matches!(node.value, Value::Bool(_)) {
                    mismatch(self, "true or false");
                }
            }
            FieldType::Duration => match duration_text(node) {
                Some(text) => {
                    if let Err(e) = parse_duration(&text) {
                        self.err(Diagnostic::new(node.pos, format!("{what}: {e}")));
                    }
                }
                None => mismatch(self, "a duration (e.g. `30s`, `5m`)"),
            },
            FieldType::Enum(choices) => match node.as_str() {
                Some(s) if choices.contains(&s) => {}
                Some(s) => {
                    let help = match suggest(s, choices.iter().copied()) {
                        Some(sug) => format!("did you mean `{sug}`?"),
                        None => format!("choose one of: {}", choices.join(", ")),
                    };
                    self.err(
                        Diagnostic::new(node.pos, format!("{what}: `{s}` is not allowed"))
                            .help(help),
                    );
                }
                None => mismatch(self, &format!("one of {}", choices.join(", "))),
            },
            FieldType::List(inner) => match node.as_seq() {
                Some(items) => {
                    for it in items {
                        self.check_type(it, inner, &format!("an item of {what}"));
                    }
                }
                None => mismatch(self, "a list"),
            },
            FieldType::Map(inner) => match node.as_map() {
                Some(entries) => {
                    for (k, v) in entries {
                        if k.as_str().is_none() {
                            self.err(Diagnostic::new(
                                k.pos,
                                format!("keys of {what} must be strings"),
                            ));
                        }
                        self.check_type(v, inner, &format!("`{}` in {what}", k.key_text()));
                    }
                }
                None => mismatch(self, "a mapping"),
            },
            FieldType::Object(fields) => self.check_object(node, fields, &[], what),
            FieldType::Condition => match &node.value {
                Value::Str(_) | Value::Bool(_) => {}
                _ => mismatch(self, "an expression (a string)"),
            },
            FieldType::StepRefs => match &node.value {
                Value::Str(_) => self.check_step_ref(node),
                Value::Seq(items) => {
                    for it in items {
                        if it.as_str().is_some() {
                            self.check_step_ref(it);
                        } else {
                            self.err(
                                Diagnostic::new(
                                    it.pos,
                                    format!(
                                        "an item of {what} must be a step id, found {}",
                                        it.kind()
                                    ),
                                )
                                .label("expected a step id"),
                            );
                        }
                    }
                }
                _ => mismatch(self, "a step id or a list of step ids"),
            },
            FieldType::Probe => {
                let Some(_) = node.as_map() else {
                    mismatch(self, "a plugin call `{ uses: ..., with: ... }`");
                    return;
                };
                const CLASSES: &[&str] = &["read", "idempotent", "unsafe"];
                let probe_fields: &[Field] = &[
                    Field::req("uses", FieldType::String, "plugin"),
                    Field::opt("with", FieldType::Any, "input"),
                    Field::opt("side_effect", FieldType::Enum(CLASSES), "class override"),
                ];
                self.check_object(node, probe_fields, &[], what);
                if let Some(u) = node.get("uses")
                    && let Some(name) = u.as_str()
                {
                    match self.registry.get(name) {
                        Some(Runner::Plugin(p)) => {
                            let info = p.info();
                            match node.get("with") {
                                Some(w) => self.check_object(w, info.fields, info.exactly_one_of, &format!("`with` of `{name}`")),
                                None if info.fields.iter().any(|f| f.required) => self.err(
                                    Diagnostic::new(u.pos, format!("probe `{name}` has no `with`")),
                                ),
                                None => {}
                            }
                        }
                        Some(Runner::Builtin(_)) => self.err(
                            Diagnostic::new(u.pos, format!("`{name}` cannot be a probe"))
                                .help("a probe is an ordinary plugin such as `http.request` or `shell.run`"),
                        ),
                        None => {
                            let help = suggest(name, self.registry.names())
                                .map_or("`runbook plugins` lists them".to_string(), |s| format!("did you mean `{s}`?"));
                            self.err(Diagnostic::new(u.pos, format!("unknown plugin `{name}`")).help(help));
                        }
                    }
                }
            }
            FieldType::Any => {}
        }
    }

    fn check_step_ref(&mut self, node: &Node) {
        let Some(id) = node.as_str() else { return };
        if !self.index.contains_key(id) {
            self.unknown_step(node.pos, id);
        }
    }

    fn unknown_step(&mut self, pos: Pos, id: &str) {
        let help = match suggest(id, self.index.keys().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "no step has this id".to_string(),
        };
        self.err(Diagnostic::new(pos, format!("unknown step `{id}`")).help(help));
    }

    fn check_edges(&mut self, s: &Step) {
        if let OnFailure::Goto(h) = &s.on_failure
            && let Some(&hi) = self.index.get(h.name.as_str())
            && let Some(need) = self.rb.steps[hi].needs.iter().find(|n| n.name == s.id.name)
        {
            self.err(
                Diagnostic::new(need.pos, format!("`{}` handles the failure of `{}` but also needs it", h.name, s.id.name))
                    .help(format!("a step that needs `{0}` runs only if `{0}` succeeded, so as its failure handler it could never run; remove `{0}` from its `needs`", s.id.name)),
            );
        }
        for n in &s.needs {
            if n.name == s.id.name {
                self.err(Diagnostic::new(
                    n.pos,
                    format!("step `{}` needs itself", s.id.name),
                ));
            } else if !self.index.contains_key(n.name.as_str()) {
                self.unknown_step(n.pos, &n.name);
            }
        }
        if let OnFailure::Goto(h) = &s.on_failure {
            if h.name == s.id.name {
                self.err(
                    Diagnostic::new(h.pos, "a step cannot be its own failure handler")
                        .help("to try again, use `retry:`"),
                );
            } else if !self.index.contains_key(h.name.as_str()) {
                self.err(
                    Diagnostic::new(h.pos, format!("`on_failure: {}` names no step", h.name)).help(
                        match suggest(&h.name, self.index.keys().copied()) {
                            Some(sug) => format!("did you mean `{sug}`? (or `abort` / `continue`)"),
                            None => "write `abort`, `continue`, or the id of a step".to_string(),
                        },
                    ),
                );
            }
        }
    }

    /// Edges of every kind: `needs`, branch targets, failure handlers. Each edge keeps the position of
    /// the text that made it, for cycle reports.
    fn edges(&self) -> Vec<(usize, usize, Pos, &'static str)> {
        let mut out = Vec::new();
        for (i, s) in self.rb.steps.iter().enumerate() {
            if self.index.get(s.id.name.as_str()) != Some(&i) {
                continue;
            }
            for n in &s.needs {
                if let Some(&d) = self.index.get(n.name.as_str())
                    && d != i
                {
                    out.push((d, i, n.pos, "needs"));
                }
            }
            if let OnFailure::Goto(h) = &s.on_failure
                && let Some(&t) = self.index.get(h.name.as_str())
                && t != i
            {
                out.push((i, t, h.pos, "on_failure"));
            }
            if s.uses.name == "flow.branch" {
                let mut targets = Vec::new();
                if let Some(w) = &s.with {
                    for c in w.get("cases").and_then(Node::as_seq).unwrap_or_default() {
                        targets.extend(c.get("then").map(plan::step_refs).unwrap_or_default());
                    }
                    targets.extend(w.get("default").map(plan::step_refs).unwrap_or_default());
                }
                for (t, pos) in targets {
                    if let Some(&t) = self.index.get(t.as_str()) {
                        out.push((i, t, pos, "branch"));
                    }
                }
            }
        }
        out
    }

    /// Rejects cycles and branch targets shared between branches; returns a topological order.
    fn graph(&mut self) -> Option<Vec<usize>> {
        let n = self.rb.steps.len();
        let mut g: DiGraph<usize, Pos> = DiGraph::with_capacity(n, n);
        let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
        let edges = self.edges();
        let mut branch_parent: HashMap<usize, usize> = HashMap::new();
        for &(a, b, pos, kind) in &edges {
            g.update_edge(nodes[a], nodes[b], pos);
            if kind == "branch"
                && let Some(&other) = branch_parent.get(&b)
                && other != a
            {
                let (t, o, p) = (
                    self.rb.steps[b].id.name.clone(),
                    self.rb.steps[other].id.name.clone(),
                    self.rb.steps[a].id.name.clone(),
                );
                self.err(
                    Diagnostic::new(
                        pos,
                        format!("step `{t}` is a target of two branches, `{o}` and `{p}`"),
                    )
                    .help("a step can be chosen by one branch only; add a step per path"),
                );
            } else if kind == "branch" {
                branch_parent.insert(b, a);
            }
        }
        let mut cyclic = false;
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            cyclic = true;
            let members: HashSet<usize> = scc.iter().map(|&ni| g[ni]).collect();
            let cycle = cycle_through(&edges, &members);
            let step = |i: usize| format!("`{}`", self.rb.steps[i].id.name);
            let mut path: Vec<String> = cycle.iter().map(|e| step(e.0)).collect();
            if let Some(first) = cycle.first() {
                path.push(step(first.0));
            }
            let described: Vec<String> = cycle
                .iter()
                .map(|&(a, b, pos, kind)| match kind {
                    "needs" => format!("{} needs {} (line {})", step(b), step(a), pos.line),
                    "branch" => format!("{} branches to {} (line {})", step(a), step(b), pos.line),
                    _ => format!("{} fails over to {} (line {})", step(a), step(b), pos.line),
                })
                .collect();
            // The caret goes on the edge most likely to be the mistake: a branch or failure edge
            // that points back, else the edge that closes the loop.
            let culprit = cycle
                .iter()
                .find(|e| e.3 != "needs")
                .or(cycle.last())
                .map_or(
                    self.rb.steps[scc.iter().map(|&ni| g[ni]).min().unwrap_or(0)]
                        .id
                        .pos,
                    |e| e.2,
                );
            self.err(
                Diagnostic::new(
                    culprit,
                    format!("steps form a cycle: {}", path.join(" -> ")),
                )
                .label("this edge closes the cycle")
                .help(format!(
                    "runbooks are DAGs; the cycle is: {}. Remove one of these edges",
                    described.join("; ")
                )),
            );
        }
        if cyclic {
            return None;
        }
        // Kahn's algorithm with a min-heap keeps file order among independent steps.
        let mut indeg = vec![0usize; n];
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        for e in g.edge_indices() {
            if let Some((a, b)) = g.edge_endpoints(e) {
                succ[g[a]].push(g[b]);
                indeg[g[b]] += 1;
            }
        }
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| indeg[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(i)) = heap.pop() {
            order.push(i);
            for &s in &succ[i] {
                indeg[s] -= 1;
                if indeg[s] == 0 {
                    heap.push(std::cmp::Reverse(s));
                }
            }
        }
        Some(order)
    }

    /// Predecessors and topological ranks, for upstream queries.
    fn ancestry(&self, order: &[usize]) -> Ancestry {
        let n = self.rb.steps.len();
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, b, _, _) in self.edges() {
            preds[b].push(a);
        }
        let mut rank = vec![0usize; n];
        for &b in order {
            rank[b] = preds[b].iter().map(|&a| rank[a] + 1).max().unwrap_or(0);
        }
        Ancestry { preds, rank }
    }

    /// Compiles every template and condition of a step and checks what they read.
    fn step_templates(&mut self, i: usize, s: &Step, upstream: Option<&Ancestry>) -> StepRefs {
        let mut acc = StepRefs::default();
        let ctx = StepCtx { step: i, upstream };
        let plugin_fields: Option<&[Field]> =
            self.registry.get(&s.uses.name).map(|r| r.info().fields);
        if let Some(w) = &s.with {
            // Conditions and the wait_until `until` are expressions, not templates.
            if let (Some(entries), Some(fields)) = (w.as_map(), plugin_fields) {
                for (k, v) in entries {
                    let field = fields.iter().find(|f| Some(f.name) == k.as_str());
                    let r = match field.map(|f| f.ty) {
                        Some(FieldType::Condition) => {
                            let scope = if s.uses.name == "flow.wait_until" {
                                Scope::WithResult
                            } else {
                                Scope::Step
                            };
                            self.condition(v, scope, Some(&ctx))
                        }
                        Some(FieldType::List(FieldType::Object(case_fields)))
                            if s.uses.name == "flow.branch" =>
                        {
                            let mut r = StepRefs::default();
                            for c in v.as_seq().unwrap_or_default() {
                                for (ck, cv) in c.as_map().unwrap_or_default() {
                                    let is_cond = case_fields.iter().any(|f| {
                                        Some(f.name) == ck.as_str() && f.ty == FieldType::Condition
                                    });
                                    if is_cond {
                                        merge(&mut r, self.condition(cv, Scope::Step, Some(&ctx)));
                                    }
                                }
                            }
                            r
                        }
                        Some(FieldType::StepRefs) => StepRefs::default(),
                        _ => self.templates_in(v, Scope::Step, Some(&ctx), &[]),
                    };
                    merge(&mut acc, r);
                }
            }
        }
        if let Some((cond, pos)) = &s.when {
            let node = Node {
                value: Value::Str(cond.clone()),
                pos: *pos,
            };
            merge(&mut acc, self.condition(&node, Scope::Step, Some(&ctx)));
        }
        for o in &s.outputs {
            let node = Node {
                value: Value::Str(o.template.clone()),
                pos: o.pos,
            };
            merge(
                &mut acc,
                self.templates_in(&node, Scope::WithResult, Some(&ctx), &[]),
            );
            acc.any = true;
        }
        acc.steps.sort_unstable();
        acc.steps.dedup();
        acc
    }

    fn condition(&mut self, node: &Node, scope: Scope, ctx: Option<&StepCtx>) -> StepRefs {
        let text = match &node.value {
            Value::Str(s) => super::load::strip_braces(s).to_string(),
            Value::Bool(_) => {
                return StepRefs {
                    any: true,
                    ..StepRefs::default()
                };
            }
            _ => return StepRefs::default(),
        };
        match self.expr.condition_refs(&text) {
            Ok(paths) => {
                let mut r = self.check_refs(&paths, node.pos, scope, ctx, &[]);
                r.any = true;
                r
            }
            Err(e) => {
                let help = if text.contains("{{") {
                    "a condition is one bare expression: drop the `{{ }}`, e.g. `a and not b`"
                } else {
                    "conditions are minijinja expressions, e.g. `steps.check.result.exit_code == 0`"
                };
                self.err(
                    Diagnostic::new(node.pos, format!("condition does not compile: {e}"))
                        .help(help),
                );
                StepRefs::default()
            }
        }
    }

    fn templates_in(
        &mut self,
        node: &Node,
        scope: Scope,
        ctx: Option<&StepCtx>,
        vars_so_far: &[&str],
    ) -> StepRefs {
        let mut acc = StepRefs::default();
        match &node.value {
            Value::Str(s) if is_template(s) => {
                acc.any = true;
                match self.expr.template_refs(s) {
                    Ok(paths) => merge(&mut acc, self.check_refs(&paths, node.pos, scope, ctx, vars_so_far)),
                    Err(e) => self.err(
                        Diagnostic::new(node.pos, format!("template does not compile: {e}"))
                            .help("templates are minijinja: `{{ params.name }}`, `{{ steps.id.result.x | default(0) }}`"),
                    ),
                }
            }
            Value::Seq(items) => {
                for it in items {
                    let r = self.templates_in(it, scope, ctx, vars_so_far);
                    merge(&mut acc, r);
                }
            }
            Value::Map(entries) => {
                for (_, v) in entries {
                    let r = self.templates_in(v, scope, ctx, vars_so_far);
                    merge(&mut acc, r);
                }
            }
            _ => {}
        }
        acc
    }

    fn check_refs(
        &mut self,
        paths: &[String],
        pos: Pos,
        scope: Scope,
        ctx: Option<&StepCtx>,
        vars_so_far: &[&str],
    ) -> StepRefs {
        let mut acc = StepRefs::default();
        let rb = self.rb;
        for path in paths {
            let mut parts = path.split('.');
            let root = parts.next().unwrap_or_default();
            let second = parts.next();
            let third = parts.next();
            match root {
                "env" => acc.env = true,
                "params" => {
                    if let Some(p) = second
                        && !rb.params.iter().any(|x| x.name.name == p)
                    {
                        let help = match suggest(p, rb.params.iter().map(|x| x.name.name.as_str()))
                        {
                            Some(s) => format!("did you mean `params.{s}`?"),
                            None => "declare it under `params:`".to_string(),
                        };
                        self.err(
                            Diagnostic::new(
                                pos,
                                format!("`params.{p}` is not a declared parameter"),
                            )
                            .help(help),
                        );
                    }
                }
                "vars" => {
                    if let Some(v) = second {
                        let declared = rb.vars.iter().any(|(n, _)| n.name == v);
                        if scope == Scope::Vars && declared && !vars_so_far.contains(&v) {
                            self.err(
                                Diagnostic::new(pos, format!("`vars.{v}` is defined later"))
                                    .help("a var can read only the vars above it"),
                            );
                        } else if !declared {
                            let help =
                                match suggest(v, rb.vars.iter().map(|(n, _)| n.name.as_str())) {
                                    Some(s) => format!("did you mean `vars.{s}`?"),
                                    None => "declare it under `vars:`".to_string(),
                                };
                            self.err(
                                Diagnostic::new(pos, format!("`vars.{v}` is not a declared var"))
                                    .help(help),
                            );
                        }
                    }
                }
                "connections" if scope != Scope::Vars => {
                    if let Some(c) = second
                        && !rb.connections.iter().any(|(n, _)| n.name == c)
                    {
                        self.err(Diagnostic::new(
                            pos,
                            format!("`connections.{c}` is not a declared connection"),
                        ));
                    }
                }
                "run" if scope != Scope::Vars => {
                    if let Some(f) = second
                        && !["id", "runbook", "actor", "started_at"].contains(&f)
                    {
                        self.err(
                            Diagnostic::new(pos, format!("`run.{f}` does not exist"))
                                .help("`run` has: id, runbook, actor, started_at"),
                        );
                    }
                }
                "result" if scope == Scope::WithResult => {}
                "steps" if scope != Scope::Vars => {
                    let Some(ctx) = ctx else { continue };
                    let Some(id) = second else { continue };
                    let Some(&target) = self.index.get(id) else {
                        self.unknown_step(pos, id);
                        continue;
                    };
                    let me = &rb.steps[ctx.step].id.name;
                    if target == ctx.step {
                        self.err(
                            Diagnostic::new(pos, format!("step `{me}` reads its own values (`steps.{id}`)"))
                                .help("inside `outputs` (and a wait_until's `until`), the step's own result is `result`"),
                        );
                        continue;
                    }
                    if let Some(up) = ctx.upstream
                        && !up.is_upstream(target, ctx.step)
                    {
                        self.err(
                            Diagnostic::new(
                                pos,
                                format!(
                                    "step `{me}` reads `steps.{id}`, which is not upstream of it"
                                ),
                            )
                            .help(format!(
                                "add `{id}` to `needs:` of `{me}` so it has finished first"
                            )),
                        );
                        continue;
                    }
                    if let Some(field) = third {
                        let outputs = &rb.steps[target].outputs;
                        if !["result", "status", "error"].contains(&field)
                            && !outputs.iter().any(|o| o.name.name == field)
                        {
                            let mut known: Vec<&str> = vec!["result", "status", "error"];
                            known.extend(outputs.iter().map(|o| o.name.name.as_str()));
                            let help = match suggest(field, known.iter().copied()) {
                                Some(s) => format!("did you mean `steps.{id}.{s}`?"),
                                None => format!("`steps.{id}` has: {}", known.join(", ")),
                            };
                            self.err(
                                Diagnostic::new(
                                    pos,
                                    format!("step `{id}` has no output `{field}`"),
                                )
                                .help(help),
                            );
                            continue;
                        }
                    }
                    acc.steps.push(target);
                }
                _ => {
                    let allowed = match scope {
                        Scope::Vars => "params, vars (above this one), env",
                        Scope::Step => "params, vars, connections, env, run, steps",
                        Scope::WithResult => "result, params, vars, connections, env, run, steps",
                    };
                    let help = match suggest(
                        root,
                        [
                            "params",
                            "vars",
                            "steps",
                            "env",
                            "result",
                            "connections",
                            "run",
                        ],
                    ) {
                        Some(s) if s != root => {
                            format!("did you mean `{s}`? Templates here can read: {allowed}")
                        }
                        _ => format!("templates here can read: {allowed}"),
                    };
                    self.err(
                        Diagnostic::new(pos, format!("`{path}` is not defined here")).help(help),
                    );
                }
            }
        }
        acc
    }

    /// A step is unreachable when every way to it passes through a branch case that can never be taken
    /// (a case after a literal `true`, or a literal `false`).
    fn reachability(&mut self, order: &[usize]) {
        let rb = self.rb;
        let n = rb.steps.len();
        let idx: HashMap<String, usize> = self
            .index
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let kinds: Vec<StepKind> = rb.steps.iter().map(|s| plan::step_kind(s, &idx)).collect();
        // live[b] = targets of branch b that some live case can choose.
        let mut live_targets: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (b, k) in kinds.iter().enumerate() {
            if let StepKind::Branch { cases, default } = k {
                let mut live = HashSet::new();
                let mut all = HashSet::new();
                let mut dead_after = false;
                for c in cases {
                    all.extend(c.then.iter().copied());
                    let lit = c.when.trim();
                    if !dead_after && lit != "false" {
                        live.extend(c.then.iter().copied());
                    }
                    if lit == "true" {
                        dead_after = true;
                    }
                }
                all.extend(default.iter().copied());
                if !dead_after {
                    live.extend(default.iter().copied());
                }
                for t in all {
                    parents[t].push(b);
                }
                live_targets.insert(b, live);
            }
        }
        let mut handled_by: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (j, o) in rb.steps.iter().enumerate() {
            if let OnFailure::Goto(h) = &o.on_failure
                && let Some(&t) = self.index.get(h.name.as_str())
            {
                handled_by[t].push(j);
            }
        }
        let mut reach = vec![false; n];
        for &i in order {
            let s = &rb.steps[i];
            // A step needing itself is reported as such, not also as unreachable.
            let needs: Vec<usize> = s
                .needs
                .iter()
                .filter_map(|x| self.index.get(x.name.as_str()).copied())
                .filter(|&d| d != i)
                .collect();
            let by_branch = parents[i].is_empty()
                || parents[i]
                    .iter()
                    .any(|b| reach[*b] && live_targets.get(b).is_some_and(|l| l.contains(&i)));
            let by_needs = needs.is_empty() || needs.iter().any(|d| reach[*d]);
            let handlers = &handled_by[i];
            let by_failure = handlers.is_empty() || handlers.iter().any(|h| reach[*h]);
            reach[i] = by_branch && by_needs && by_failure;
            if !reach[i] {
                let why = if !by_branch {
                    "no branch case that can be taken leads to it"
                } else if !by_needs {
                    "every step it needs is unreachable"
                } else {
                    "every step that fails over to it is unreachable"
                };
                self.err(
                    Diagnostic::new(s.id.pos, format!("step `{}` can never run", s.id.name))
                        .label("unreachable")
                        .help(format!("{why}; remove it, or fix the branch conditions")),
                );
            }
        }
    }
}

struct StepCtx<'u> {
    step: usize,
    upstream: Option<&'u Ancestry>,
}

struct Ancestry {
    preds: Vec<Vec<usize>>,
    rank: Vec<usize>,
}

impl Ancestry {
    /// Whether `target` always finishes before `step`: a walk back from `step` that never goes
    /// below `target`'s topological rank, so the common case (reading a direct parent) is one hop.
    fn is_upstream(&self, target: usize, step: usize) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![step];
        while let Some(i) = stack.pop() {
            for &p in &self.preds[i] {
                if p == target {
                    return true;
                }
                if self.rank[p] > self.rank[target] && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        false
    }
}

fn merge(acc: &mut StepRefs, r: StepRefs) {
    acc.steps.extend(r.steps);
    acc.env |= r.env;
    acc.any |= r.any;
}

/// One cycle inside a strongly connected set of steps, as its edges in order: a breadth-first walk
/// from the member written first, so the loop reported is a shortest one.
fn cycle_through(
    edges: &[(usize, usize, Pos, &'static str)],
    members: &HashSet<usize>,
) -> Vec<(usize, usize, Pos, &'static str)> {
    let Some(&start) = members.iter().min() else {
        return Vec::new();
    };
    let inner: Vec<_> = edges
        .iter()
        .filter(|(a, b, _, _)| members.contains(a) && members.contains(b))
        .copied()
        .collect();
    let mut came_by: HashMap<usize, (usize, usize, Pos, &'static str)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = HashSet::from([start]);
    while let Some(n) = queue.pop_front() {
        for &e in inner.iter().filter(|e| e.0 == n) {
            if e.1 == start {
                let mut path = vec![e];
                let mut cur = n;
                while cur != start {
                    let Some(&prev) = came_by.get(&cur) else {
                        break;
                    };
                    path.push(prev);
                    cur = prev.0;
                }
                path.reverse();
                return path;
            }
            if seen.insert(e.1) {
                came_by.insert(e.1, e);
                queue.push_back(e.1);
            }
        }
    }
    Vec::new()
}
