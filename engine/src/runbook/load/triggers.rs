//! `triggers:`: the alerts a runbook answers and how an alert becomes a run (`runbook serve`).

use super::Loader;
use crate::diag::suggest;
use crate::runbook::model::{Named, OnResolved, Runbook, TriggerRules};
use crate::runbook::node::Node;
use runbook_steps::alertmanager::matchers::parse_matchers;

const KEYS: &[&str] = &["alerts", "labels", "params", "cooldown", "on_resolved"];

/// Alertmanager's label names: what an alert can carry, so what a mapping may name.
fn valid_label(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl Loader {
    pub(super) fn triggers(&mut self, v: &Node) -> (Vec<String>, TriggerRules) {
        let mut alerts = Vec::new();
        let mut rules = TriggerRules::default();
        let Some(entries) = self.map(v, "triggers", Some(KEYS)) else {
            return (alerts, rules);
        };
        for (key, _, node) in entries {
            match key {
                "alerts" => alerts = self.strings(node, "triggers.alerts", "alert names"),
                "labels" => {
                    for (text, item) in self.strings_at(node, "triggers.labels", "label matchers") {
                        match parse_matchers(&text) {
                            Ok(ms) => {
                                if let Some(e) = ms.iter().find_map(|m| m.regex().err()) {
                                    self.err(item.pos, format!("triggers.labels: {e}"));
                                } else {
                                    rules.labels.push(text);
                                }
                            }
                            Err(why) => self.err_help(
                                item.pos,
                                format!("triggers.labels: `{text}` {why}"),
                                "write a matcher as Alertmanager does, e.g. `severity=~\"warning|critical\"`",
                            ),
                        }
                    }
                }
                "params" => {
                    let Some(pairs) = self.map(node, "triggers.params", None) else {
                        continue;
                    };
                    for (param, ppos, label) in pairs {
                        let Some(label_name) = self.string(label, "a label name") else {
                            continue;
                        };
                        if !valid_label(&label_name) {
                            self.err_help(
                                label.pos,
                                format!("`{label_name}` is not a label name"),
                                "label names are letters, digits and `_`, not starting with a digit",
                            );
                            continue;
                        }
                        rules.params.push((
                            Named {
                                name: param.to_string(),
                                pos: ppos,
                            },
                            label_name,
                        ));
                    }
                }
                "cooldown" => rules.cooldown = self.duration(node, "triggers.cooldown"),
                "on_resolved" => match node.as_str() {
                    Some("record") => rules.on_resolved = OnResolved::Record,
                    Some("cancel") => rules.on_resolved = OnResolved::Cancel,
                    other => self.err_help(
                        node.pos,
                        format!(
                            "triggers.on_resolved must be `record` or `cancel`, found {}",
                            other.map_or_else(|| node.kind().to_string(), |s| format!("`{s}`"))
                        ),
                        "`record` journals the resolution on the run; `cancel` also stops a run still diagnosing",
                    ),
                },
                _ => {}
            }
        }
        if alerts.is_empty() && (!rules.params.is_empty() || !rules.labels.is_empty()) {
            self.err_help(
                v.pos,
                "triggers maps labels, but names no alert",
                "add `alerts: [AlertName, ...]`",
            );
        }
        (alerts, rules)
    }

    /// A label can only fill a parameter the runbook declares (checked once all keys are read).
    pub(super) fn trigger_params_are_declared(&mut self, rb: &Runbook) {
        for (param, label) in &rb.trigger.params {
            if rb.params.iter().any(|p| p.name.name == param.name) {
                continue;
            }
            let help = match suggest(&param.name, rb.params.iter().map(|p| p.name.name.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "declare it under `params:`".to_string(),
            };
            self.err_help(
                param.pos,
                format!("triggers.params fills `{}` from the label `{label}`, but there is no such parameter", param.name),
                help,
            );
        }
    }

    fn strings(&mut self, node: &Node, what: &str, items: &str) -> Vec<String> {
        self.strings_at(node, what, items)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    fn strings_at<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        items: &str,
    ) -> Vec<(String, &'n Node)> {
        match node.as_seq() {
            Some(list) => list
                .iter()
                .filter_map(|it| self.string(it, what).map(|s| (s, it)))
                .collect(),
            None => {
                self.err(
                    node.pos,
                    format!("{what} must be a list of {items}, found {}", node.kind()),
                );
                Vec::new()
            }
        }
    }
}
