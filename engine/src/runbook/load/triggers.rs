//! `triggers:`: the alerts a runbook answers and how an alert becomes a run, and the schedules
//! that start runs by the clock (`runbook serve`).

use super::Loader;
use crate::diag::suggest;
use crate::runbook::model::{Named, OnResolved, Runbook, TriggerRules};
use crate::runbook::node::{Node, Pos};
use crate::schedule::{DEFAULT_ZONE, Part, Schedule};
use runbook_steps::alertmanager::matchers::parse_matchers;

const KEYS: &[&str] = &[
    "alerts",
    "labels",
    "params",
    "cooldown",
    "on_resolved",
    "schedule",
    "timezone",
];

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
        let mut expressions = Vec::new();
        let mut timezone = None;
        for (key, _, node) in entries {
            match key {
                "schedule" => {
                    rules.schedule_pos = Some(node.pos);
                    expressions = match node.as_seq() {
                        Some(_) => self.strings_at(node, "triggers.schedule", "cron expressions"),
                        None => self
                            .string(node, "triggers.schedule")
                            .map(|s| (s, node))
                            .into_iter()
                            .collect(),
                    };
                }
                "timezone" => {
                    timezone = self
                        .string(node, "triggers.timezone")
                        .map(|t| (t, node.pos));
                }
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
        rules.schedules = self.schedules(&expressions, timezone, rules.schedule_pos);
        if alerts.is_empty() && (!rules.params.is_empty() || !rules.labels.is_empty()) {
            self.err_help(
                v.pos,
                "triggers maps labels, but names no alert",
                "add `alerts: [AlertName, ...]`",
            );
        }
        (alerts, rules)
    }

    /// Each expression checked in the zone (UTC when none is given); the zone is reported once.
    fn schedules(
        &mut self,
        expressions: &[(String, &Node)],
        timezone: Option<(String, Pos)>,
        key: Option<Pos>,
    ) -> Vec<Schedule> {
        if key.is_none() {
            if let Some((_, pos)) = timezone {
                self.err_help(
                    pos,
                    "triggers.timezone is given, but there is no `schedule:` it would apply to",
                    "add `schedule: \"0 3 * * 1\"` (cron: minute hour day-of-month month day-of-week), or remove `timezone:`",
                );
            }
            return Vec::new();
        }
        if expressions.is_empty()
            && let Some(pos) = key
        {
            self.err(pos, "triggers.schedule is an empty list");
        }
        let zone = timezone.as_ref().map_or(DEFAULT_ZONE, |(t, _)| t.as_str());
        let mut out: Vec<Schedule> = Vec::new();
        for (text, node) in expressions {
            match Schedule::parse(text, zone) {
                Ok(_) if out.iter().any(|o| o.expression() == text) => {
                    self.err(node.pos, format!("triggers.schedule lists `{text}` twice"));
                }
                Ok(s) => out.push(s),
                Err(e) if e.part == Part::TimeZone => {
                    let pos = timezone.as_ref().map_or(node.pos, |(_, p)| *p);
                    self.err_maybe_help(pos, format!("triggers.timezone: {}", e.message), e.help);
                    // The zone is wrong for every expression: once is enough.
                    return Vec::new();
                }
                Err(e) => {
                    let message = format!("triggers.schedule: {}", e.message);
                    self.err_maybe_help(node.pos, message, e.help);
                }
            }
        }
        out
    }

    fn err_maybe_help(&mut self, pos: Pos, message: String, help: Option<String>) {
        match help {
            Some(h) => self.err_help(pos, message, h),
            None => self.err(pos, message),
        }
    }

    /// A scheduled run is given no parameters: each required one needs a default.
    pub(super) fn scheduled_params_have_defaults(&mut self, rb: &Runbook) {
        if rb.trigger.schedule_pos.is_none() {
            return;
        }
        for p in rb
            .params
            .iter()
            .filter(|p| p.required && p.default.is_none())
        {
            self.err_help(
                p.name.pos,
                format!(
                    "`{}` is required and has no default, but a scheduled run (triggers.schedule) takes the defaults",
                    p.name.name
                ),
                format!("give `{}` a `default:`, or make it optional", p.name.name),
            );
        }
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
