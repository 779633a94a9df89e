//! `runbook audit`: what the journal says happened, for a person reviewing a run (a timeline or a
//! Markdown report), for a SIEM (JSON Lines across runs), and whether the journal can be trusted.

use super::show::{Table, print_json, read_values, step_views};
use super::{Failure, Format, exit};
use crate::expr::Expr;
use crate::run::event::{Event, OperatorAction, Record, Recovery, now_ms};
use crate::runbook::plan::Plan;
use crate::store::{EventKey, RunRow, Store};
use runbook_steps::{Registry, SideEffect};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// How `runbook audit RUN` prints a run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    /// A timeline of every event.
    Text,
    /// A report for review: summary, decisions, side effects, interventions, failures, integrity.
    Markdown,
    /// Everything, structured (the same as `-o json`).
    Json,
}

/// Why a run does not verify, if it does not: `(first bad event, reason)`.
type Problem = (Option<i64>, String);

fn check_records(run: &RunRow, records: &[Record]) -> Option<Problem> {
    crate::run::integrity::verify(run, records)
        .err()
        .map(|b| (b.seq, b.reason))
}

async fn check(store: &dyn Store, run: &RunRow) -> Result<(usize, Option<Problem>), Failure> {
    let records = store.events(&run.id).await?;
    Ok((records.len(), check_records(run, &records)))
}

pub async fn verify(
    store: &dyn Store,
    run: Option<&str>,
    all: bool,
    format: Format,
) -> Result<i32, Failure> {
    let runs = if all {
        store.runs(i64::MAX).await?
    } else {
        vec![store.run(run.unwrap_or_default()).await?]
    };
    let mut broken = 0;
    let mut report = Vec::new();
    for r in &runs {
        let (events, problem) = check(store, r).await?;
        if problem.is_some() {
            broken += 1;
        }
        if format == Format::Text {
            match &problem {
                None => println!("ok      {}  {} ({events} events)", r.id, r.runbook),
                Some((Some(seq), why)) => {
                    println!("BROKEN  {}  {}: event {seq}: {why}", r.id, r.runbook)
                }
                Some((None, why)) => println!("BROKEN  {}  {}: {why}", r.id, r.runbook),
            }
        }
        report.push(json!({
            "run": r.id,
            "runbook": r.runbook,
            "events": events,
            "ok": problem.is_none(),
            "first_bad_event": problem.as_ref().and_then(|p| p.0),
            "reason": problem.as_ref().map(|p| p.1.clone()),
        }));
    }
    if format == Format::Json {
        print_json(&report);
    } else if runs.len() > 1 || broken > 0 {
        eprintln!("{} of {} runs verify", runs.len() - broken, runs.len());
    }
    Ok(if broken == 0 {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}

// ---------------------------------------------------------------------------------------------
// Times and durations

/// An instant as RFC 3339 in UTC with milliseconds, e.g. `2025-03-01T09:30:00.120Z`.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// An instant in the local time zone, with its offset, for people.
fn local(ms: i64, with_offset: bool) -> String {
    let fmt = if with_offset {
        "%Y-%m-%d %H:%M:%S%.3f %:z"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f"
    };
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime(fmt)
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// An age: what runbook durations accept (`30s`, `90m`, `24h`, `1h30m`, bare seconds) plus days and
/// weeks of 24 hours (`7d`, `2w`, `1w 3d 12h`).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    if let Ok(d) = runbook_steps::duration::parse_duration(s) {
        return Ok(d);
    }
    let bad = || format!("`{s}` is not an age (write e.g. `24h`, `7d`, `2w`, `90m`)");
    let span: jiff::Span = s.trim().parse().map_err(|_| bad())?;
    if span.is_negative() {
        return Err(format!("`{s}` is negative"));
    }
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "`{s}`: months and years vary in length; write days (`90d`) or weeks (`13w`)"
        ));
    }
    let ms = span
        .total((
            jiff::Unit::Millisecond,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|_| bad())?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// A point in time: an age before `now` (`24h`, `7d`) or an RFC 3339 timestamp
/// (`2025-03-01T00:00:00Z`). Returns epoch milliseconds.
pub fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = s.trim().parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let age = parse_age(s).map_err(|_| {
        format!(
            "`{s}` is neither an age (`24h`, `7d`) nor an RFC 3339 time (`2025-03-01T00:00:00Z`)"
        )
    })?;
    let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Ok(now.saturating_sub(ms))
}

// ---------------------------------------------------------------------------------------------
// Reading a run back

struct Audited {
    run: RunRow,
    records: Vec<Record>,
    /// Each record's event, or why it cannot be read.
    events: Vec<Result<Event, String>>,
    problem: Option<Problem>,
    plan: Option<Plan>,
}

impl Audited {
    async fn load(store: &dyn Store, id: &str) -> Result<Audited, Failure> {
        let run = store.run(id).await?;
        let records = store.events(&run.id).await?;
        let events = records
            .iter()
            .map(|r| r.event().map_err(|e| e.to_string()))
            .collect();
        let problem = check_records(&run, &records);
        let plan = crate::runbook::validate::check(
            "stored",
            &run.runbook_text,
            &Registry::builtin(),
            &Expr::new(),
        )
        .ok();
        Ok(Audited {
            run,
            records,
            events,
            problem,
            plan,
        })
    }

    fn readable(&self) -> impl Iterator<Item = (&Record, &Event)> {
        self.records
            .iter()
            .zip(&self.events)
            .filter_map(|(r, e)| e.as_ref().ok().map(|e| (r, e)))
    }

    fn step_def(&self, step: &str) -> Option<&crate::runbook::Step> {
        self.plan.as_ref().and_then(|p| {
            p.steps
                .iter()
                .find(|s| s.def.id.name == step)
                .map(|s| &s.def)
        })
    }

    fn uses(&self, step: &str) -> Option<String> {
        self.step_def(step).map(|d| d.uses.name.clone())
    }

    /// The first event that is not covered by a verified chain, if any.
    fn first_unverified(&self) -> Option<i64> {
        self.problem.as_ref().and_then(|p| p.0)
    }

    fn integrity_line(&self) -> String {
        let n = self.records.len();
        match &self.problem {
            None => format!("hash chain verified: {n} events"),
            Some((Some(seq), why)) => {
                format!("hash chain BROKEN at event {seq} of {n}: {why}")
            }
            Some((None, why)) => {
                format!("hash chain verified: {n} events, BUT {why}")
            }
        }
    }

    fn integrity_json(&self) -> Value {
        json!({
            "ok": self.problem.is_none(),
            "events": self.records.len(),
            "first_bad_event": self.first_unverified(),
            "reason": self.problem.as_ref().map(|p| p.1.clone()),
            "line": self.integrity_line(),
        })
    }

    fn duration(&self) -> Option<Duration> {
        self.run
            .finished_at
            .map(|f| Duration::from_millis(u64::try_from(f - self.run.started_at).unwrap_or(0)))
    }

    fn engine_version(&self) -> Option<&str> {
        self.readable().find_map(|(_, e)| match e {
            Event::RunStarted { engine_version, .. } => Some(engine_version.as_str()),
            _ => None,
        })
    }
}

fn operator_word(a: OperatorAction) -> &'static str {
    match a {
        OperatorAction::Retry => "retry",
        OperatorAction::MarkDone => "mark done",
        OperatorAction::MarkFailed => "mark failed",
    }
}

/// One event, said in a sentence.
fn summary(ev: &Event, run_sha: &str) -> String {
    let short = |h: &str| h[..12.min(h.len())].to_string();
    match ev {
        Event::RunStarted {
            runbook,
            runbook_sha256,
            params,
            engine_version,
            ..
        } => {
            let params = if params.is_empty() {
                "no params".to_string()
            } else {
                format!("params {}", read_values(params))
            };
            format!(
                "run started: {runbook} (sha256 {}), {params}; engine {engine_version}",
                short(runbook_sha256)
            )
        }
        Event::StepStarted {
            step,
            attempt,
            class,
            inputs,
            ..
        } => {
            let with = if inputs.is_null() {
                String::new()
            } else {
                format!(" with inputs {inputs}")
            };
            format!(
                "{step}: started ({}, attempt {attempt}){with}",
                class.as_str()
            )
        }
        Event::ApprovalGranted { step, by, how } => format!("{step}: approved by {by} ({how})"),
        Event::GuardEvaluated {
            step,
            condition,
            holds,
            values,
        } => {
            let read = if values.is_empty() {
                String::new()
            } else {
                format!("; read {}", read_values(values))
            };
            format!("{step}: guard `{condition}` is {holds}{read}")
        }
        Event::DecisionTaken {
            step,
            condition,
            values,
            taken,
            not_taken,
            ..
        } => {
            let why = match condition {
                Some(c) => format!("because `{c}` holds"),
                None => "by default (no case holds)".to_string(),
            };
            let chose = if taken.is_empty() {
                "nothing".to_string()
            } else {
                taken.join(", ")
            };
            let mut s = format!("{step}: decided {chose} {why}");
            if !values.is_empty() {
                s.push_str(&format!("; read {}", read_values(values)));
            }
            if !not_taken.is_empty() {
                s.push_str(&format!("; not taken: {}", not_taken.join(", ")));
            }
            s
        }
        Event::WaitStarted { step, deadline_ms } => {
            format!("{step}: waits until {}", local(*deadline_ms, false))
        }
        Event::StepSucceeded {
            step,
            attempt,
            outputs,
            ..
        } => {
            if outputs.is_empty() {
                format!("{step}: succeeded (attempt {attempt})")
            } else {
                format!(
                    "{step}: succeeded (attempt {attempt}); outputs {}",
                    read_values(outputs)
                )
            }
        }
        Event::StepFailed {
            step,
            attempt,
            kind,
            error,
            retry_at_ms,
            ..
        } => {
            let retry = retry_at_ms
                .map(|t| format!("; retry at {}", local(t, false)))
                .unwrap_or_default();
            format!(
                "{step}: failed (attempt {attempt}): {}: {error}{retry}",
                kind.as_str()
            )
        }
        Event::StepSkipped { step, reason } => format!("{step}: skipped: {reason}"),
        Event::RunFinished { status, error } => match error {
            Some(e) => format!("run finished: {}: {e}", status.as_str()),
            None => format!("run finished: {}", status.as_str()),
        },
        Event::RunInterrupted { reason } => format!("run interrupted: {reason}"),
        Event::RunResumed { runbook_sha256, .. } => {
            if runbook_sha256 == run_sha {
                "run resumed".to_string()
            } else {
                format!(
                    "run resumed with a CHANGED runbook (sha256 {}, started with {})",
                    short(runbook_sha256),
                    short(run_sha)
                )
            }
        }
        Event::StepRecovered {
            step,
            attempt,
            outcome,
        } => match outcome {
            Recovery::Rerun => format!(
                "{step}: was running (attempt {attempt}) when the run stopped; it is run again"
            ),
            Recovery::Unknown => format!(
                "{step}: was running (attempt {attempt}) when the run stopped; outcome UNKNOWN, waits for an operator"
            ),
        },
        Event::OperatorDecided { step, action, by } => {
            format!("{step}: operator {by} decided: {}", operator_word(*action))
        }
        Event::RunParked { waiting_for } => format!(
            "run parked: waits for an operator to settle {}",
            waiting_for.join(", ")
        ),
        Event::RerunOf {
            parent_run,
            from_step,
        } => format!("re-run of {parent_run} from step {from_step}"),
        Event::StepReused {
            step,
            from_run,
            status,
            ..
        } => format!("{step}: {status} in {from_run}, reused (not run again)"),
    }
}

fn timeline(a: &Audited) -> Vec<Value> {
    let bad = a.first_unverified();
    a.records
        .iter()
        .zip(&a.events)
        .map(|(r, e)| {
            let (summary, event) = match e {
                Ok(ev) => (
                    summary(ev, &a.run.runbook_sha256),
                    serde_json::to_value(ev).unwrap_or(Value::Null),
                ),
                Err(why) => (
                    format!("unreadable event: {why}"),
                    Value::String(r.data.clone()),
                ),
            };
            json!({
                "seq": r.seq,
                "at_ms": r.at_ms,
                "at": rfc3339(r.at_ms),
                "actor": r.actor,
                "kind": r.kind,
                "step": r.step,
                "summary": summary,
                "verified": bad.is_none_or(|b| r.seq < b),
                "event": event,
            })
        })
        .collect()
}

/// The review sections, derived from the journal once for Markdown and JSON.
#[derive(Default)]
struct Sections {
    decisions: Vec<Value>,
    actions: Vec<Value>,
    interventions: Vec<Value>,
    failures: Vec<Value>,
}

fn sections(a: &Audited) -> Sections {
    let mut s = Sections::default();
    let mut approvals: HashMap<&str, Value> = HashMap::new();
    // Actions whose outcome is still to come, by step.
    let mut open: HashMap<String, usize> = HashMap::new();
    // Adds an outcome to the step's open action; `close` when no more outcomes are to come.
    fn settle(
        s: &mut Sections,
        open: &mut HashMap<String, usize>,
        step: &str,
        outcome: Value,
        close: bool,
    ) {
        let idx = if close {
            open.remove(step)
        } else {
            open.get(step).copied()
        };
        if let Some(list) = idx
            .and_then(|i| s.actions.get_mut(i))
            .and_then(|a| a["outcome"].as_array_mut())
        {
            list.push(outcome);
        }
    }
    let base = |r: &Record| json!({"seq": r.seq, "at_ms": r.at_ms, "at": rfc3339(r.at_ms), "actor": r.actor});
    let with = |mut v: Value, extra: Value| {
        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        v
    };
    for (r, ev) in a.readable() {
        match ev {
            Event::DecisionTaken {
                step,
                case,
                condition,
                values,
                taken,
                not_taken,
            } => s.decisions.push(with(
                base(r),
                json!({"kind": "branch", "step": step, "case": case, "condition": condition,
                       "values": values, "taken": taken, "not_taken": not_taken}),
            )),
            Event::GuardEvaluated {
                step,
                condition,
                holds,
                values,
            } => s.decisions.push(with(
                base(r),
                json!({"kind": "guard", "step": step, "condition": condition,
                       "values": values, "holds": holds}),
            )),
            Event::ApprovalGranted { step, by, how } => {
                let approval = json!({"by": by, "how": how, "at": rfc3339(r.at_ms)});
                approvals.insert(step, approval);
                s.interventions.push(with(
                    base(r),
                    json!({"kind": "approval", "step": step, "by": by, "how": how,
                           "what": format!("approved `{step}` ({how})")}),
                ));
            }
            Event::StepStarted {
                step,
                attempt,
                class,
                inputs,
                ..
            } => {
                let approval = approvals.remove(step.as_str());
                if *class != SideEffect::Read {
                    // An earlier attempt left without an outcome is superseded.
                    settle(&mut s, &mut open, step, json!({"status": "superseded"}), true);
                    s.actions.push(with(
                        base(r),
                        json!({"step": step, "uses": a.uses(step), "class": class.as_str(),
                               "attempt": attempt, "inputs": inputs, "approval": approval,
                               "approval_required": a.step_def(step).map(|d| d.approval),
                               "outcome": []}),
                    ));
                    open.insert(step.clone(), s.actions.len() - 1);
                }
            }
            Event::StepSucceeded {
                step,
                attempt,
                outputs,
                ..
            } => settle(
                &mut s,
                &mut open,
                step,
                json!({"status": "succeeded", "attempt": attempt, "outputs": outputs, "at": rfc3339(r.at_ms)}),
                true,
            ),
            Event::StepFailed {
                step,
                attempt,
                kind,
                error,
                retry_at_ms,
                ..
            } => {
                let failure = json!({"status": "failed", "attempt": attempt, "kind": kind.as_str(),
                                     "error": error, "retry_at": retry_at_ms.map(rfc3339),
                                     "at": rfc3339(r.at_ms)});
                settle(&mut s, &mut open, step, failure.clone(), true);
                s.failures.push(with(base(r), with(json!({"step": step}), failure)));
            }
            Event::StepRecovered { step, outcome, .. } => match outcome {
                Recovery::Rerun => settle(
                    &mut s,
                    &mut open,
                    step,
                    json!({"status": "interrupted", "note": "was running when the run stopped; run again on resume"}),
                    true,
                ),
                Recovery::Unknown => settle(
                    &mut s,
                    &mut open,
                    step,
                    json!({"status": "unknown", "note": "was running when the run stopped; it may or may not have acted"}),
                    false,
                ),
            },
            Event::OperatorDecided { step, action, by } => {
                let word = operator_word(*action);
                settle(
                    &mut s,
                    &mut open,
                    step,
                    json!({"status": match action {
                        OperatorAction::Retry => "retry",
                        OperatorAction::MarkDone => "succeeded",
                        OperatorAction::MarkFailed => "failed",
                    }, "note": format!("operator {by}: {word}"), "at": rfc3339(r.at_ms)}),
                    true,
                );
                s.interventions.push(with(
                    base(r),
                    json!({"kind": "operator_decision", "step": step, "by": by,
                           "action": word, "what": format!("{word} `{step}`")}),
                ));
            }
            Event::RunResumed { runbook_sha256, .. } => s.interventions.push(with(
                base(r),
                json!({"kind": "resume", "runbook_sha256": runbook_sha256,
                       "what": summary(ev, &a.run.runbook_sha256)}),
            )),
            Event::RunInterrupted { reason } => s.interventions.push(with(
                base(r),
                json!({"kind": "interrupt", "reason": reason, "what": summary(ev, &a.run.runbook_sha256)}),
            )),
            Event::RunParked { waiting_for } => s.interventions.push(with(
                base(r),
                json!({"kind": "park", "waiting_for": waiting_for, "what": summary(ev, &a.run.runbook_sha256)}),
            )),
            Event::RunFinished {
                status,
                error: Some(e),
            } => s.failures.push(with(
                base(r),
                json!({"step": null, "status": status.as_str(), "error": e}),
            )),
            _ => {}
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// `runbook audit RUN`

pub async fn report(
    store: &dyn Store,
    run: &str,
    format: AuditFormat,
    output: Format,
) -> Result<i32, Failure> {
    let format = match (format, output) {
        (AuditFormat::Markdown, Format::Json) => {
            return Err(Failure::invalid(
                "--format markdown and -o json ask for different outputs; choose one",
            ));
        }
        (_, Format::Json) => AuditFormat::Json,
        (f, Format::Text) => f,
    };
    let a = Audited::load(store, run).await?;
    match format {
        AuditFormat::Json => {
            let s = sections(&a);
            print_json(&json!({
                "run": a.run,
                "duration_ms": a.duration().map(|d| d.as_millis()),
                "engine_version": a.engine_version(),
                "integrity": a.integrity_json(),
                "timeline": timeline(&a),
                "decisions": s.decisions,
                "actions": s.actions,
                "interventions": s.interventions,
                "failures": s.failures,
            }));
        }
        AuditFormat::Text => print!("{}", text(&a)),
        AuditFormat::Markdown => print!("{}", markdown(&a)),
    }
    Ok(if a.problem.is_none() {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}

fn text(a: &Audited) -> String {
    let run = &a.run;
    let mut out = format!("run {}  {}  {}\n", run.id, run.runbook, run.status);
    if let Some(t) = &run.title {
        out.push_str(&format!("  {t}\n"));
    }
    out.push_str(&format!(
        "  started {} by {}, took {}\n  runbook {} (sha256 {})\n",
        local(run.started_at, true),
        run.actor,
        a.duration()
            .map_or("-".to_string(), runbook_steps::duration::human),
        run.source_path.as_deref().unwrap_or("-"),
        run.runbook_sha256
    ));
    if let Some(p) = &a.problem {
        out.push_str(&format!(
            "  WARNING: the journal does not verify{}: {}\n",
            p.0.map(|s| format!(" from event {s} on"))
                .unwrap_or_default(),
            p.1
        ));
    }
    out.push('\n');
    let bad = a.first_unverified();
    let mut t = Table::new(&["#", "TIME", "WHO", "WHAT"]);
    for v in timeline(a) {
        let seq = v["seq"].as_i64().unwrap_or_default();
        let mark = if bad == Some(seq) { "!" } else { "" };
        t.row(vec![
            format!("{mark}{seq}"),
            local(v["at_ms"].as_i64().unwrap_or_default(), false),
            v["actor"].as_str().unwrap_or_default().to_string(),
            v["summary"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out.push_str(&a.integrity_line());
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown

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

fn values_md(values: &Value) -> String {
    match values.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{} = {}", code(k), code(&v.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "nothing".to_string(),
    }
}

fn markdown(a: &Audited) -> String {
    let run = &a.run;
    let s = sections(a);
    let at = |v: &Value| local(v["at_ms"].as_i64().unwrap_or_default(), true);
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out = format!("# Audit report: {} run {}\n\n", run.runbook, code(&run.id));
    if let Some(t) = &run.title {
        out.push_str(&format!("_{}_\n\n", cell(t)));
    }
    if let Some(p) = &a.problem {
        out.push_str(&format!(
            "> **Warning: this run's journal does not verify{}.** {}. What follows is what the database holds now, not necessarily what happened.\n\n",
            p.0.map(|s| format!(" from event {s} on"))
                .unwrap_or_default(),
            cell(&p.1)
        ));
    }

    out.push_str("## Summary\n\n| | |\n|---|---|\n");
    let params = match run.params.as_object() {
        Some(m) if !m.is_empty() => values_md(&run.params),
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
            a.duration()
                .map_or("-".to_string(), runbook_steps::duration::human),
        ),
        ("Events", a.records.len().to_string()),
    ];
    if let Some(v) = a.engine_version() {
        rows.push(("Engine", cell(v)));
    }
    if let Some(p) = &run.parent_run {
        rows.push(("Parent run", code(p)));
    }
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }

    // The steps at a glance, folded from the journal the way `runbook show` does.
    let readable: Vec<(Record, Event)> =
        a.readable().map(|(r, e)| (r.clone(), e.clone())).collect();
    let steps = step_views(a.plan.as_ref(), &readable);
    if !steps.is_empty() {
        out.push_str("\n## Steps\n\n| Step | Uses | Side effect | Status | Attempts |\n|---|---|---|---|---|\n");
        for v in &steps {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&v.id),
                if v.uses.is_empty() {
                    "-".to_string()
                } else {
                    code(&v.uses)
                },
                v.class.as_deref().unwrap_or("-"),
                v.status,
                if v.attempts == 0 {
                    "-".to_string()
                } else {
                    v.attempts.to_string()
                },
            ));
        }
    }

    out.push_str("\n## Decisions\n\n");
    if s.decisions.is_empty() {
        out.push_str("No decisions were taken.\n");
    }
    for d in &s.decisions {
        let step = code(&str_of(&d["step"]));
        if d["kind"] == "guard" {
            let holds = d["holds"] == true;
            out.push_str(&format!(
                "- {} — {step}: guard {} was **{holds}**, so the step {}. Values read: {}.\n",
                at(d),
                code(&str_of(&d["condition"])),
                if holds { "ran" } else { "was skipped" },
                values_md(&d["values"]),
            ));
        } else {
            let names = |v: &Value| -> String {
                let list: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).map(code).collect())
                    .unwrap_or_default();
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(", ")
                }
            };
            let why = match d["condition"].as_str() {
                Some(c) => format!("because {} held", code(c)),
                None => "by default: no case held".to_string(),
            };
            out.push_str(&format!(
                "- {} — {step} chose {} {why}. Values read: {}. Not taken: {}.\n",
                at(d),
                names(&d["taken"]),
                values_md(&d["values"]),
                names(&d["not_taken"]),
            ));
        }
    }

    out.push_str("\n## Actions with side effects\n\n");
    if s.actions.is_empty() {
        out.push_str("This run started no step with side effects (`idempotent` or `unsafe`).\n");
    }
    for act in &s.actions {
        let uses = act["uses"]
            .as_str()
            .map(|u| format!(" ({})", code(u)))
            .unwrap_or_default();
        out.push_str(&format!(
            "- **{}**{uses}, {}, attempt {} — started {} by {}\n",
            cell(&str_of(&act["step"])),
            str_of(&act["class"]),
            act["attempt"],
            at(act),
            cell(&str_of(&act["actor"])),
        ));
        let approval = match act["approval"].as_object() {
            Some(ap) => format!(
                "approved by {} ({})",
                cell(ap.get("by").and_then(Value::as_str).unwrap_or("?")),
                cell(ap.get("how").and_then(Value::as_str).unwrap_or("?"))
            ),
            None => match act["approval_required"].as_bool() {
                Some(true) => "**required by the runbook, but none recorded**".to_string(),
                Some(false) => "not required".to_string(),
                None => "none recorded".to_string(),
            },
        };
        out.push_str(&format!("  - Approval: {approval}\n"));
        let outcomes: Vec<String> = act["outcome"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|o| {
                        let mut w = format!("**{}**", str_of(&o["status"]));
                        if let Some(e) = o["error"].as_str() {
                            w.push_str(&format!(" ({}): {}", str_of(&o["kind"]), cell(e)));
                        }
                        if let Some(n) = o["note"].as_str() {
                            w.push_str(&format!(": {}", cell(n)));
                        }
                        if let Some(t) = o["retry_at"].as_str() {
                            w.push_str(&format!("; retried at {t}"));
                        }
                        w
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "  - Outcome: {}\n",
            if outcomes.is_empty() {
                "none recorded (the run stopped or is still going)".to_string()
            } else {
                outcomes.join("; then ")
            }
        ));
        let inputs = serde_json::to_string_pretty(&act["inputs"]).unwrap_or_default();
        out.push_str("  - Inputs:\n\n");
        for line in fenced("json", &inputs).lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }

    out.push_str("\n## Operator interventions\n\n");
    if s.interventions.is_empty() {
        out.push_str("None: no approvals, interruptions, resumes or operator decisions.\n");
    }
    for i in &s.interventions {
        out.push_str(&format!(
            "- {} — {}: {}\n",
            at(i),
            cell(&str_of(&i["actor"])),
            cell(&str_of(&i["what"]))
        ));
    }

    out.push_str("\n## Failures\n\n");
    if s.failures.is_empty() {
        out.push_str("None.\n");
    }
    for f in &s.failures {
        match f["step"].as_str() {
            Some(step) => {
                let retry = f["retry_at"]
                    .as_str()
                    .map(|_| " (retried)")
                    .unwrap_or(" (final)");
                out.push_str(&format!(
                    "- {} — {}, attempt {}{retry}: {}: {}\n",
                    at(f),
                    code(step),
                    f["attempt"],
                    str_of(&f["kind"]),
                    cell(&str_of(&f["error"]))
                ));
            }
            None => out.push_str(&format!(
                "- {} — the run ended {}: {}\n",
                at(f),
                str_of(&f["status"]),
                cell(&str_of(&f["error"]))
            )),
        }
    }

    out.push_str(&format!("\n## Integrity\n\n{}\n", a.integrity_line()));
    out
}

// ---------------------------------------------------------------------------------------------
// `runbook audit export`

/// Events fetched per store call.
const EXPORT_PAGE: i64 = 1000;

/// One event as a JSON Lines object. `data` is the event exactly as stored and hashed, so a consumer
/// can recompute `hash` from `prev_hash`, `run`, `seq`, `at_ms`, `actor` and `data`; an event whose
/// stored text is not one line of JSON (only possible after tampering) is given as a string.
pub fn export_line(r: &Record, runbook: &str) -> String {
    let head = json!({
        "run": r.run_id,
        "runbook": runbook,
        "seq": r.seq,
        "at_ms": r.at_ms,
        "at": rfc3339(r.at_ms),
        "actor": r.actor,
        "kind": r.kind,
        "step": r.step,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
    .to_string();
    let verbatim = !r.data.contains(['\n', '\r'])
        && serde_json::from_str::<serde::de::IgnoredAny>(&r.data).is_ok();
    let data = if verbatim {
        r.data.clone()
    } else {
        Value::String(r.data.clone()).to_string()
    };
    let body = head.strip_suffix('}').unwrap_or(&head);
    format!("{body},\"data\":{data}}}")
}

pub async fn export(
    store: &dyn Store,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<i32, Failure> {
    let now = now_ms();
    let since = match since {
        Some(s) => parse_when(s, now).map_err(|e| Failure::invalid(format!("--since {e}")))?,
        None => i64::MIN,
    };
    let until = match until {
        Some(s) => parse_when(s, now).map_err(|e| Failure::invalid(format!("--until {e}")))?,
        None => i64::MAX,
    };
    if until <= since {
        return Err(Failure::invalid("--until must be later than --since"));
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last: Option<(i64, String, i64)> = None;
    loop {
        let after = last.as_ref().map(|(at, run_id, seq)| EventKey {
            at: *at,
            run_id,
            seq: *seq,
        });
        let page = store
            .events_between(since, until, after, EXPORT_PAGE)
            .await?;
        for r in &page {
            if !names.contains_key(&r.run_id) {
                let name = match store.run(&r.run_id).await {
                    Ok(run) => run.runbook,
                    Err(crate::store::StoreError::NoSuchRun(_)) => String::new(),
                    Err(e) => return Err(e.into()),
                };
                names.insert(r.run_id.clone(), name);
            }
            let runbook = names.get(&r.run_id).map_or("", String::as_str);
            if let Err(e) = writeln!(out, "{}", export_line(r, runbook)) {
                return written(e);
            }
        }
        match page.last() {
            Some(r) if i64::try_from(page.len()).unwrap_or(0) == EXPORT_PAGE => {
                last = Some((r.at_ms, r.run_id.clone(), r.seq));
            }
            _ => break,
        }
    }
    match out.flush() {
        Ok(()) => Ok(exit::OK),
        Err(e) => written(e),
    }
}

/// A reader that went away (`| head`) is not an error; anything else is.
fn written(e: std::io::Error) -> Result<i32, Failure> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(exit::OK)
    } else {
        Err(Failure::env(format!("cannot write to stdout: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_days_and_weeks() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("1d 12h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age("30"), Ok(Duration::from_secs(30)));
        assert!(parse_age("3 months").is_err());
        assert!(parse_age("-7d").is_err());
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn when_is_an_age_ago_or_a_timestamp() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_when("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_when("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_when("2025-03-01T00:00:00Z", now),
            Ok(1_740_787_200_000)
        );
        assert_eq!(
            parse_when("2025-03-01T01:00:00+01:00", now),
            Ok(1_740_787_200_000)
        );
        assert!(parse_when("yesterday", now).is_err());
    }

    #[test]
    fn markdown_code_survives_backticks() {
        assert_eq!(code("a == 'b'"), "`a == 'b'`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(cell("a|b\nc"), "a\\|b<br>c");
        assert!(fenced("json", "```\n").starts_with("````json\n"));
    }

    #[test]
    fn export_lines_keep_the_hashed_bytes() {
        let mut chain = crate::run::event::Chain::new("r1");
        let rec = chain.seal(
            5,
            "me",
            &Event::StepSkipped {
                step: "s".into(),
                reason: "why".into(),
            },
        );
        let line = export_line(&rec, "demo");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["data"]["reason"], "why");
        assert_eq!(v["runbook"], "demo");
        assert_eq!(v["at"], "1970-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(1_740_787_200_020), "2025-03-01T00:00:00.020Z");
        assert!(line.ends_with(&format!(",\"data\":{}}}", rec.data)));
        let mut odd = rec.clone();
        odd.data = "{\"a\":\n1}".into();
        let v: Value = serde_json::from_str(&export_line(&odd, "demo")).expect("json");
        assert_eq!(v["data"], "{\"a\":\n1}");
    }
}
