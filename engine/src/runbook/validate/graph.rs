//! The graph of steps: ids, `needs`, branch and `on_failure` edges, cycles (petgraph SCCs, each
//! reported as an ordered loop), the topological order, and steps that can never run.

use super::Validator;
use crate::diag::{Diagnostic, suggest};
use crate::runbook::model::{OnFailure, Step};
use crate::runbook::node::{Node, Pos};
use crate::runbook::plan::{self, StepKind};
use petgraph::graph::{DiGraph, NodeIndex};
use runbook_steps::Builtin;
use std::collections::{HashMap, HashSet};

impl Validator<'_> {
    pub(super) fn check_edges(&mut self, s: &Step) {
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
                    Diagnostic::new(
                        h.pos,
                        format!("step `{}` names itself as its failure handler", s.id.name),
                    )
                    .label("the step's own id")
                    .help("`on_failure` names another step to run when this one fails; to try this one again, use `retry:`"),
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
    pub(super) fn edges(&self) -> Vec<(usize, usize, Pos, &'static str)> {
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
            if self.registry.builtin_of(&s.uses.name) == Some(Builtin::Branch) {
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
    pub(super) fn graph(&mut self) -> Option<Vec<usize>> {
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
    pub(super) fn ancestry(&self, order: &[usize]) -> Ancestry {
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

    /// A step is unreachable when every way to it passes through a branch case that can never be taken
    /// (a case after a literal `true`, or a literal `false`).
    pub(super) fn reachability(&mut self, order: &[usize]) {
        let rb = self.rb;
        let n = rb.steps.len();
        let idx: HashMap<String, usize> = self
            .index
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let kinds: Vec<StepKind> = rb
            .steps
            .iter()
            .map(|s| plan::step_kind(s, self.registry, &idx))
            .collect();
        // live[b] = targets of branch b that some live case can choose.
        let mut live_targets: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        // branch -> the literal-`true` case that shadows the cases (and default) after it.
        let mut always: HashMap<usize, usize> = HashMap::new();
        for (b, k) in kinds.iter().enumerate() {
            if let StepKind::Branch { cases, default } = k {
                let mut live = HashSet::new();
                let mut all = HashSet::new();
                let mut dead_after = false;
                for (ci, c) in cases.iter().enumerate() {
                    all.extend(c.then.iter().copied());
                    let lit = c.when.trim();
                    if !dead_after && lit != "false" {
                        live.extend(c.then.iter().copied());
                    }
                    if lit == "true" && !dead_after {
                        dead_after = true;
                        if ci + 1 < cases.len() || !default.is_empty() {
                            always.insert(b, ci);
                        }
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
            // A step naming itself as handler is reported as that, not also as unreachable.
            if let OnFailure::Goto(h) = &o.on_failure
                && let Some(&t) = self.index.get(h.name.as_str())
                && t != j
            {
                handled_by[t].push(j);
            }
        }
        let mut reach = vec![false; n];
        let mut shadowed: HashMap<usize, Vec<usize>> = HashMap::new();
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
            // Shadowed by an always-true case: reported once, at that case.
            if !by_branch
                && let Some(&b) = parents[i].iter().find(|b| always.contains_key(*b))
                && parents[i]
                    .iter()
                    .all(|p| always.contains_key(p) || !reach[*p])
            {
                shadowed.entry(b).or_default().push(i);
                continue;
            }
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
        let mut always: Vec<(usize, usize)> = always.into_iter().collect();
        always.sort_unstable();
        for (b, ci) in always {
            let branch = &rb.steps[b];
            let case = branch
                .with
                .as_ref()
                .and_then(|w| w.get("cases"))
                .and_then(Node::as_seq)
                .and_then(|c| c.get(ci));
            let pos = case
                .and_then(|c| c.get("when"))
                .or(case)
                .map_or(branch.id.pos, |n| n.pos);
            let fix = "put this case last, or make its target the `default`";
            let help = match shadowed.get(&b) {
                Some(steps) => {
                    let names: Vec<String> = steps
                        .iter()
                        .map(|&i| format!("`{}`", rb.steps[i].id.name))
                        .collect();
                    format!("so {} can never run; {fix}", names.join(", "))
                }
                None => fix.to_string(),
            };
            self.err(
                Diagnostic::new(
                    pos,
                    format!(
                        "this case of `{}` is always true: the cases and default after it are never taken",
                        branch.id.name
                    ),
                )
                .label("always true")
                .help(help),
            );
        }
    }
}

/// Predecessors and topological ranks of the steps, for "is this step upstream" queries.
pub(super) struct Ancestry {
    preds: Vec<Vec<usize>>,
    rank: Vec<usize>,
}

impl Ancestry {
    /// Whether `target` always finishes before `step`: a walk back from `step` that never goes
    /// below `target`'s topological rank, so the common case (reading a direct parent) is one hop.
    pub(super) fn is_upstream(&self, target: usize, step: usize) -> bool {
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
