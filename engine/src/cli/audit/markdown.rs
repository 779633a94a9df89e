//! `runbook audit RUN --format markdown`: a report for review (summary, steps, decisions, side
//! effects, interventions, failures, integrity) that renders safely whatever the journal holds.

use super::model::{Audited, DecisionEntry, operator_word};
use super::when::local;
use crate::run::event::OperatorAction;
use crate::run::view::Outcome;
use serde_json::{Map, Value};

/// Inline code that survives backticks in its content.
fn code(s: &str) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// Text for a table cell or a list item: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

/// A fenced block whose fence is longer than any backtick run inside.
fn fenced(lang: &str, body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{lang}\n{}\n{fence}\n", body.trim_end())
}

fn values_md(values: &Map<String, Value>) -> String {
    if values.is_empty() {
        return "nothing".to_string();
    }
    values
        .iter()
        .map(|(k, v)| format!("{} = {}", code(k), code(&v.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "nothing".to_string()
    } else {
        list.iter().map(|s| code(s)).collect::<Vec<_>>().join(", ")
    }
}

/// Inputs as an indented fenced JSON block under a list item.
fn inputs_block(label: &str, inputs: &Value) -> String {
    let mut out = format!("  - {label}:\n\n");
    let pretty = serde_json::to_string_pretty(inputs).unwrap_or_default();
    for line in fenced("json", &pretty).lines() {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

fn outcome_md(o: &Outcome) -> String {
    match o {
        Outcome::Running => "**running**".to_string(),
        Outcome::Succeeded => "**succeeded**".to_string(),
        Outcome::Failed {
            kind,
            error,
            retry_at,
        } => {
            let mut w = format!("**failed** ({}): {}", kind.as_str(), cell(error));
            if let Some(t) = retry_at {
                w.push_str(&format!("; retried at {}", local(*t, true)));
            }
            w
        }
        Outcome::Interrupted => {
            "**interrupted**: was running when the run stopped; run again on resume".to_string()
        }
        Outcome::Unknown => {
            "**unknown**: was running when the run stopped; it may or may not have acted"
                .to_string()
        }
        Outcome::MarkedDone { by } => format!(
            "**succeeded**: operator {}: {}",
            cell(by),
            operator_word(OperatorAction::MarkDone)
        ),
        Outcome::MarkedFailed { by } => format!(
            "**failed**: operator {}: {}",
            cell(by),
            operator_word(OperatorAction::MarkFailed)
        ),
        Outcome::RetriedByOperator { by } => format!(
            "**retry**: operator {}: {}",
            cell(by),
            operator_word(OperatorAction::Retry)
        ),
        Outcome::Superseded => "**superseded** (a later attempt started)".to_string(),
    }
}

pub fn render(a: &Audited) -> String {
    let run = &a.loaded.run;
    let view = &a.loaded.view;
    let mut out = format!("# Audit report: {} run {}\n\n", run.runbook, code(&run.id));
    if let Some(t) = &run.title {
        out.push_str(&format!("_{}_\n\n", cell(t)));
    }
    if let Some(p) = &a.problem {
        out.push_str(&format!(
            "> **Warning: this run's journal does not verify{}.** {}. What follows is what the database holds now, not necessarily what happened.\n\n",
            p.seq.map(|s| format!(" from event {s} on")).unwrap_or_default(),
            cell(&p.reason)
        ));
    }

    out.push_str("## Summary\n\n| | |\n|---|---|\n");
    let params = match run.params.as_object() {
        Some(m) if !m.is_empty() => values_md(m),
        _ => "none".to_string(),
    };
    let mut rows = vec![
        (
            "Runbook",
            format!(
                "{} ({})",
                code(&run.runbook),
                cell(run.source_path.as_deref().unwrap_or("-"))
            ),
        ),
        ("Runbook sha256", code(&run.runbook_sha256)),
        ("Parameters", params),
        ("Started by", cell(&run.actor)),
        ("Started", local(run.started_at, true)),
        ("Status", format!("**{}**", run.status)),
        (
            "Finished",
            run.finished_at.map_or("-".to_string(), |f| local(f, true)),
        ),
        (
            "Duration",
            view.run
                .duration_ms
                .map_or("-".to_string(), crate::cli::show::took),
        ),
        ("Events", a.loaded.records.len().to_string()),
    ];
    for r in &view.resumes {
        rows.push((
            "Resumed",
            format!(
                "{} by {}{} ({})",
                local(r.at, true),
                cell(&r.by),
                r.down_ms
                    .map(|ms| format!(" after {} down", crate::cli::show::took(ms)))
                    .unwrap_or_default(),
                crate::cli::show::stop_words(r.after)
            ),
        ));
    }
    if let Some(v) = &view.run.engine_version {
        rows.push(("Engine", cell(v)));
    }
    if let Some(p) = &run.parent_run {
        rows.push(("Parent run", code(p)));
    }
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }

    if !view.steps.is_empty() {
        out.push_str("\n## Steps\n\n| Step | Uses | Side effect | Status | Attempts |\n|---|---|---|---|---|\n");
        for s in &view.steps {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&s.id),
                if s.uses.is_empty() {
                    "-".to_string()
                } else {
                    code(&s.uses)
                },
                s.class.map_or("-", |c| c.as_str()),
                s.status.as_str(),
                if s.attempts == 0 {
                    "-".to_string()
                } else {
                    s.attempts.to_string()
                },
            ));
        }
    }

    out.push_str("\n## Decisions\n\n");
    let decisions = a.decisions();
    if decisions.is_empty() {
        out.push_str("No decisions were taken.\n");
    }
    for d in &decisions {
        match d {
            DecisionEntry::Guard {
                at,
                step,
                condition,
                values,
                holds,
            } => out.push_str(&format!(
                "- {} — {}: guard {} was **{holds}**, so the step {}. Values read: {}.\n",
                local(at.at_ms, true),
                code(step),
                code(condition),
                if *holds { "ran" } else { "was skipped" },
                values_md(values),
            )),
            DecisionEntry::Branch {
                at,
                step,
                condition,
                values,
                taken,
                not_taken,
                ..
            } => {
                let why = match condition {
                    Some(c) => format!("because {} held", code(c)),
                    None => "by default: no case held".to_string(),
                };
                out.push_str(&format!(
                    "- {} — {} chose {} {why}. Values read: {}. Not taken: {}.\n",
                    local(at.at_ms, true),
                    code(step),
                    names(taken),
                    values_md(values),
                    names(not_taken),
                ));
            }
        }
    }

    out.push_str("\n## Actions with side effects\n\n");
    let actions = a.actions();
    if actions.is_empty() {
        out.push_str("This run started no step with side effects (`idempotent` or `unsafe`).\n");
    }
    for act in &actions {
        let uses = act
            .uses
            .as_deref()
            .map(|u| format!(" ({})", code(u)))
            .unwrap_or_default();
        out.push_str(&format!(
            "- **{}**{uses}, {}, attempt {} — started {} by {}\n",
            cell(&act.step),
            act.class.as_str(),
            act.attempt,
            local(act.at.at_ms, true),
            cell(&act.actor),
        ));
        let approval = match &act.approval {
            Some(ap) => format!("approved by {} ({})", cell(&ap.by), cell(&ap.how)),
            None => match act.approval_required {
                Some(true) => "**required by the runbook, but none recorded**".to_string(),
                Some(false) => "not required".to_string(),
                None => "none recorded".to_string(),
            },
        };
        out.push_str(&format!("  - Approval: {approval}\n"));
        let outcomes: Vec<String> = act.outcome.iter().map(outcome_md).collect();
        out.push_str(&format!(
            "  - Outcome: {}\n",
            if outcomes.is_empty() {
                "none recorded (the run stopped or is still going)".to_string()
            } else {
                outcomes.join("; then ")
            }
        ));
        out.push_str(&inputs_block("Inputs", &act.inputs));
    }

    out.push_str("\n## Operator interventions\n\n");
    let interventions = a.interventions();
    if interventions.is_empty() {
        out.push_str("None: no approvals, interruptions, resumes or operator decisions.\n");
    }
    for i in &interventions {
        out.push_str(&format!(
            "- {} — {}: {}\n",
            local(i.at.at_ms, true),
            cell(&i.actor),
            cell(&i.what)
        ));
        if let Some(asked) = &i.asked {
            out.push_str(&inputs_block(
                &format!("Asked for ({}), not run", asked.class.as_str()),
                &asked.inputs,
            ));
        }
    }

    out.push_str("\n## Failures\n\n");
    let failures = a.failures();
    if failures.is_empty() {
        out.push_str("None.\n");
    }
    for f in &failures {
        match &f.step {
            Some(step) => {
                let retry = if f.retry_at.is_some() {
                    " (retried)"
                } else {
                    " (final)"
                };
                out.push_str(&format!(
                    "- {} — {}, attempt {}{retry}: {}: {}\n",
                    local(f.at.at_ms, true),
                    code(step),
                    f.attempt.unwrap_or_default(),
                    f.kind.map_or("error", |k| k.as_str()),
                    cell(&f.error)
                ));
            }
            None => out.push_str(&format!(
                "- {} — the run ended {}: {}\n",
                local(f.at.at_ms, true),
                f.status.as_deref().unwrap_or("?"),
                cell(&f.error)
            )),
        }
    }

    out.push_str(&format!("\n## Integrity\n\n{}\n", a.integrity_line()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_code_survives_backticks() {
        assert_eq!(code("a == 'b'"), "`a == 'b'`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(cell("a|b\nc"), "a\\|b<br>c");
        assert!(fenced("json", "```\n").starts_with("````json\n"));
    }
}
