//! A step's `uses` and `with` against the plugin's declared fields: unknown and missing fields,
//! exactly-one-of groups, literal types, probes.

use super::Validator;
use crate::diag::{Diagnostic, suggest};
use crate::expr::is_template;
use crate::runbook::load::duration_text;
use crate::runbook::model::Step;
use crate::runbook::node::{Node, Pos, Value};
use runbook_steps::{Builtin, Field, FieldType, Runner, SideEffect, parse_duration};
use std::collections::HashMap;

impl Validator<'_> {
    pub(super) fn check_uses_and_with(&mut self, s: &Step) {
        let Some(runner) = self.registry.get(&s.uses.name) else {
            self.unknown_plugin(s.uses.pos, &s.uses.name);
            return;
        };
        let info = runner.info();
        if let Some(builtin) = runner.builtin() {
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
                let help = match (key, builtin) {
                    ("timeout", Builtin::WaitUntil) => "a wait has its own `deadline` in `with`",
                    ("timeout", Builtin::Sleep) => "a sleep lasts exactly its `for`",
                    ("timeout", _) => "this step evaluates a condition and cannot hang",
                    _ => "flow steps change nothing, so there is nothing to approve or classify",
                };
                let at = s
                    .keys
                    .iter()
                    .find(|(k, _)| **k == *key)
                    .map_or(s.uses.pos, |(_, p)| *p);
                self.err(
                    Diagnostic::new(
                        at,
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
        if runner.builtin() == Some(Builtin::WaitUntil)
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

    /// A `uses:` this build has no plugin for: one of a family it was built without (or that is not
    /// written yet), or a name nobody has, likely a typo.
    fn unknown_plugin(&mut self, at: Pos, name: &str) {
        let d = match self.registry.not_in_build(name) {
            Some(missing) => Diagnostic::new(at, missing.to_string()).help(missing.help()),
            None => {
                let help = match suggest(name, self.registry.known_names()) {
                    Some(sug) => {
                        format!("did you mean `{sug}`? (`runbook plugins` lists them all)")
                    }
                    None => "`runbook plugins` lists the plugins this build knows".to_string(),
                };
                Diagnostic::new(at, format!("unknown plugin `{name}`")).help(help)
            }
        };
        self.err(d);
    }

    pub(super) fn check_object(
        &mut self,
        node: &Node,
        fields: &[Field],
        one_of: &[&[&str]],
        what: &str,
    ) {
        self.check_object_at(node, node.pos, fields, one_of, what);
    }

    /// Checks a mapping against declared fields; `anchor` is where errors about the mapping as a
    /// whole (a missing field) point, e.g. its `with:` key rather than its first entry.
    pub(super) fn check_object_at(
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
    pub(super) fn check_type(&mut self, node: &Node, ty: &FieldType, what: &str) {
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
                        None => self.unknown_plugin(u.pos, name),
                    }
                }
            }
            FieldType::Any => {}
        }
    }

    pub(super) fn check_step_ref(&mut self, node: &Node) {
        let Some(id) = node.as_str() else { return };
        if !self.index.contains_key(id) {
            self.unknown_step(node.pos, id);
        }
    }
}
