//! Templates and conditions: each one compiles, and reads only what its place allows (declared
//! params/vars/connections, `steps.ID` of upstream steps and their declared outputs).

use super::graph::Ancestry;
use super::{Scope, StepRefs, Validator, merge};
use crate::diag::{Diagnostic, suggest};
use crate::expr::is_template;
use crate::runbook::load::{strip_braces, valid_ident};
use crate::runbook::model::Step;
use crate::runbook::node::{Node, Pos, Value};
use runbook_steps::{Builtin, Field, FieldType, Runner};

impl Validator<'_> {
    /// Compiles every template and condition of a step and checks what they read.
    pub(super) fn step_templates(
        &mut self,
        i: usize,
        s: &Step,
        upstream: Option<&Ancestry>,
    ) -> StepRefs {
        let mut acc = StepRefs::default();
        let ctx = StepCtx { step: i, upstream };
        let runner = self.registry.get(&s.uses.name);
        let plugin_fields: Option<&[Field]> = runner.map(|r| r.info().fields);
        let builtin = runner.and_then(Runner::builtin);
        if let Some(w) = &s.with {
            // Conditions and the wait_until `until` are expressions, not templates.
            if let (Some(entries), Some(fields)) = (w.as_map(), plugin_fields) {
                for (k, v) in entries {
                    let field = fields.iter().find(|f| Some(f.name) == k.as_str());
                    let r = match field.map(|f| f.ty) {
                        Some(FieldType::Condition) => {
                            let scope = if builtin == Some(Builtin::WaitUntil) {
                                Scope::WithResult
                            } else {
                                Scope::Step
                            };
                            self.condition(v, scope, Some(&ctx))
                        }
                        Some(FieldType::List(FieldType::Object(case_fields)))
                            if builtin == Some(Builtin::Branch) =>
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

    pub(super) fn condition(
        &mut self,
        node: &Node,
        scope: Scope,
        ctx: Option<&StepCtx>,
    ) -> StepRefs {
        let text = match &node.value {
            Value::Str(s) => strip_braces(s).to_string(),
            Value::Bool(_) => {
                return StepRefs {
                    any: true,
                    ..StepRefs::default()
                };
            }
            _ => return StepRefs::default(),
        };
        match self.expr.condition_refs(&text) {
            Ok(paths) if self.not_checkable(&text, &paths, node.pos) => StepRefs::default(),
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

    pub(super) fn templates_in(
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
                    Ok(paths) if self.not_checkable(s, &paths, node.pos) => {}
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

    /// Whether the references of `text` cannot be checked meaningfully, having reported why if that
    /// is new: an operator where a value should be (minijinja reads `x and and` as `x and (a variable
    /// named and)`), or a step id that was already reported as invalid (`steps.check-disk.x` would
    /// otherwise give errors about `check` and `disk.x`).
    fn not_checkable(&mut self, text: &str, paths: &[String], pos: Pos) -> bool {
        const OPERATORS: &[&str] = &["and", "or", "not", "in", "is", "if", "else"];
        if let Some(op) = paths
            .iter()
            .map(|p| p.split('.').next().unwrap_or(p))
            .find(|root| OPERATORS.contains(root))
        {
            self.err(
                Diagnostic::new(pos, format!("syntax error: `{op}` stands where a value is expected"))
                    .help(format!("`{op}` is an operator: check what is on either side of it, e.g. `a and b`, `not a`, `x in [1, 2]`")),
            );
            return true;
        }
        self.rb
            .steps
            .iter()
            .any(|s| !valid_ident(&s.id.name) && text.contains(&format!("steps.{}", s.id.name)))
    }

    pub(super) fn check_refs(
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
}

pub(super) struct StepCtx<'u> {
    step: usize,
    upstream: Option<&'u Ancestry>,
}
