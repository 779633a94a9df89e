//! Reading runs back: `runs`, `show`, plus `graph` and `plugins`.

use super::{Failure, Format, GraphFormat, exit};
use crate::expr::Expr;
use crate::run::event::{Event, Record, RunStatus};
use crate::runbook::OnFailure;
use crate::runbook::plan::{Plan, StepKind};
use crate::store::{RunRow, Store};
use console::style;
use runbook_steps::duration::human;
use runbook_steps::{FieldType, Registry};
use serde_json::{Value, json};
use std::time::Duration;

/// A plain text table with columns sized to their content.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }
    pub fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }
    pub fn render(&self) -> String {
        let n = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..n)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| console::measure_text_width(s)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&console::pad_str(
                        cell,
                        widths[c],
                        console::Alignment::Left,
                        None,
                    ));
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

fn span(from: i64, to: Option<i64>) -> String {
    match to {
        Some(to) => human(Duration::from_millis(u64::try_from(to - from).unwrap_or(0))),
        None => "-".to_string(),
    }
}

/// Values a condition read, as `k=v, k=v` with the values as JSON.
pub fn read_values(values: &serde_json::Map<String, Value>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a value to stdout as pretty JSON, for `-o json`.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn runs(
    store: &dyn Store,
    limit: i64,
    resumable: bool,
    format: Format,
) -> Result<i32, Failure> {
    let mut rows = store.runs(if resumable { i64::MAX } else { limit }).await?;
    if resumable {
        rows.retain(|r| {
            matches!(
                r.status,
                RunStatus::Running | RunStatus::Interrupted | RunStatus::Waiting
            )
        });
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    if format == Format::Json {
        print_json(&rows);
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!("no runs yet; start one with `runbook run NAME`");
        return Ok(exit::OK);
    }
    let mut t = Table::new(&["ID", "RUNBOOK", "STATUS", "STARTED", "DURATION", "BY"]);
    for r in rows {
        t.row(vec![
            r.id.clone(),
            r.runbook.clone(),
            status_word(r.status.as_str()),
            when(r.started_at),
            span(r.started_at, r.finished_at),
            r.actor.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(exit::OK)
}

fn status_word(s: &str) -> String {
    match s {
        "succeeded" => style(s).green().to_string(),
        "failed" => style(s).red().to_string(),
        "interrupted" | "waiting" => style(s).yellow().to_string(),
        _ => s.to_string(),
    }
}

/// One step's story, folded from the journal.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepView {
    pub id: String,
    pub uses: String,
    pub status: String,
    pub attempts: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub class: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub skip_reason: Option<String>,
    pub decision: Option<Value>,
    pub guard: Option<Value>,
    pub approval: Option<Value>,
    pub operator: Option<Value>,
    pub outputs: Option<Value>,
    /// The run whose outcome this step took over (re-runs).
    pub reused_from: Option<String>,
}

/// Folds a run's events into a view per step, in the runbook's order; steps that never ran are
/// listed as `not run`.
pub fn step_views(plan: Option<&Plan>, events: &[(Record, Event)]) -> Vec<StepView> {
    let mut views: Vec<StepView> = Vec::new();
    if let Some(plan) = plan {
        for s in &plan.steps {
            views.push(StepView {
                id: s.def.id.name.clone(),
                uses: s.def.uses.name.clone(),
                status: "not run".into(),
                ..StepView::default()
            });
        }
    }
    for (rec, ev) in events {
        let Some(step) = ev.step() else { continue };
        let i = match views.iter().position(|v| v.id == step) {
            Some(i) => i,
            None => {
                views.push(StepView {
                    id: step.to_string(),
                    uses: String::new(),
                    status: "not run".into(),
                    ..StepView::default()
                });
                views.len() - 1
            }
        };
        let v = &mut views[i];
        match ev {
            Event::StepStarted { attempt, class, .. } => {
                v.status = "running".into();
                v.attempts = *attempt;
                v.started_at.get_or_insert(rec.at_ms);
                v.class = Some(class.as_str().to_string());
            }
            Event::StepSucceeded { outputs, .. } => {
                v.status = "succeeded".into();
                v.finished_at = Some(rec.at_ms);
                v.error = None;
                v.error_kind = None;
                if !outputs.is_empty() {
                    v.outputs = Some(Value::Object(outputs.clone()));
                }
            }
            Event::StepFailed {
                kind,
                error,
                retry_at_ms,
                ..
            } => {
                v.status = if retry_at_ms.is_some() {
                    "retry-wait".into()
                } else {
                    "failed".into()
                };
                v.finished_at = Some(rec.at_ms);
                v.error = Some(error.clone());
                v.error_kind = Some(kind.as_str().to_string());
            }
            Event::StepSkipped { reason, .. } => {
                v.status = "skipped".into();
                v.skip_reason = Some(reason.clone());
            }
            Event::DecisionTaken {
                case,
                condition,
                values,
                taken,
                not_taken,
                ..
            } => {
                v.decision = Some(
                    json!({"case": case, "condition": condition, "values": values, "taken": taken, "not_taken": not_taken}),
                );
            }
            Event::GuardEvaluated {
                condition,
                holds,
                values,
                ..
            } => {
                v.guard = Some(json!({"condition": condition, "holds": holds, "values": values}));
            }
            Event::StepReused {
                from_run,
                status,
                outputs,
                chosen,
                reason,
                ..
            } => {
                v.status = status.clone();
                v.skip_reason = reason.clone();
                v.reused_from = Some(from_run.clone());
                if !outputs.is_empty() {
                    v.outputs = Some(Value::Object(outputs.clone()));
                }
                if let Some(c) = chosen {
                    v.decision =
                        Some(json!({"taken": c, "condition": null, "values": {}, "reused": true}));
                }
            }
            Event::StepRecovered { outcome, .. } => {
                v.status = match outcome {
                    crate::run::event::Recovery::Rerun => "pending".into(),
                    crate::run::event::Recovery::Unknown => "unknown".into(),
                };
            }
            Event::OperatorDecided { action, by, .. } => {
                use crate::run::event::OperatorAction as A;
                let (status, what) = match action {
                    A::Retry => ("pending", "retry"),
                    A::MarkDone => ("succeeded", "marked done"),
                    A::MarkFailed => ("failed", "marked failed"),
                };
                v.status = status.into();
                v.finished_at = Some(rec.at_ms);
                v.operator = Some(json!({"action": what, "by": by, "at": rec.at_ms}));
                if matches!(action, A::MarkFailed) {
                    v.error = Some(format!("{what} by {by}"));
                    v.error_kind = Some("other".into());
                }
            }
            Event::ApprovalGranted { by, how, .. } => {
                v.approval = Some(json!({"by": by, "how": how, "at": rec.at_ms}));
            }
            _ => {}
        }
    }
    views
}

async fn load(store: &dyn Store, id: &str) -> Result<(RunRow, Vec<(Record, Event)>), Failure> {
    let run = store.run(id).await?;
    let records = store.events(&run.id).await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let ev = r.event().map_err(|e| {
            Failure::env(format!(
                "event {} of run {} is unreadable: {e}",
                r.seq, run.id
            ))
        })?;
        out.push((r, ev));
    }
    Ok((run, out))
}

/// The plan of the runbook text the run follows (the stored one, or the one a resume switched to).
fn stored_plan(run: &RunRow, events: &[(Record, Event)]) -> Option<Plan> {
    let evs: Vec<Event> = events.iter().map(|(_, e)| e.clone()).collect();
    crate::runbook::validate::check(
        "stored",
        crate::run::event::current_text(&run.runbook_text, &evs),
        &Registry::builtin(),
        &Expr::new(),
    )
    .ok()
}

pub async fn run_json(store: &dyn Store, id: &str) -> Result<Value, Failure> {
    let (run, events) = load(store, id).await?;
    let plan = stored_plan(&run, &events);
    let steps = step_views(plan.as_ref(), &events);
    Ok(json!({"run": run, "steps": steps}))
}

pub async fn show(
    store: &dyn Store,
    id: &str,
    all_events: bool,
    format: Format,
    _registry: &Registry,
    _expr: &Expr,
) -> Result<i32, Failure> {
    let (run, events) = load(store, id).await?;
    let plan = stored_plan(&run, &events);
    let steps = step_views(plan.as_ref(), &events);
    if format == Format::Json {
        let mut v = json!({"run": run, "steps": steps});
        if all_events {
            v["events"] = Value::Array(events.iter().map(|(r, e)| json!({"seq": r.seq, "at": r.at_ms, "actor": r.actor, "event": e, "hash": r.hash})).collect());
        }
        print_json(&v);
        return Ok(exit::OK);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "run {}  {}  {}\n",
        style(&run.id).bold(),
        run.runbook,
        status_word(run.status.as_str())
    ));
    if let Some(t) = &run.title {
        out.push_str(&format!("  {t}\n"));
    }
    out.push_str(&format!(
        "  started {} by {}, took {}\n  runbook {} (sha256 {})\n",
        when(run.started_at),
        run.actor,
        span(run.started_at, run.finished_at),
        run.source_path.as_deref().unwrap_or("-"),
        &run.runbook_sha256[..12.min(run.runbook_sha256.len())]
    ));
    if run.params.as_object().is_some_and(|m| !m.is_empty()) {
        out.push_str(&format!("  params {}\n", run.params));
    }
    out.push('\n');
    let mut t = Table::new(&["", "STEP", "STATUS", "TRIES", "TOOK", "DETAIL"]);
    for v in &steps {
        let mark = match v.status.as_str() {
            "succeeded" => style("✓").green().to_string(),
            "failed" => style("✗").red().to_string(),
            "skipped" => style("⊘").dim().to_string(),
            "running" | "retry-wait" => style("…").yellow().to_string(),
            "unknown" => style("?").yellow().bold().to_string(),
            _ => style("·").dim().to_string(),
        };
        let mut detail = Vec::new();
        if let Some(d) = &v.decision {
            let why = match d["condition"].as_str() {
                Some(c) => format!("`{c}`"),
                None if d["reused"] == true => "the earlier run's decision".to_string(),
                None => "default".to_string(),
            };
            let taken: Vec<&str> = d["taken"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            detail.push(format!(
                "chose {} by {why}",
                if taken.is_empty() {
                    "nothing".to_string()
                } else {
                    taken.join(", ")
                }
            ));
            if let Some(vals) = d["values"].as_object().filter(|m| !m.is_empty()) {
                detail.push(format!("read {}", read_values(vals)));
            }
        }
        // A false guard is already the skip reason; show what it read.
        if let Some(g) = &v.guard
            && g["holds"] == false
            && let Some(vals) = g["values"].as_object().filter(|m| !m.is_empty())
        {
            detail.push(format!("read {}", read_values(vals)));
        }
        if let Some(r) = &v.reused_from {
            detail.push(format!("reused from {}", &r[..12.min(r.len())]));
        }
        if let Some(o) = &v.operator {
            detail.push(format!(
                "{} by {} (operator)",
                o["action"].as_str().unwrap_or("?"),
                o["by"].as_str().unwrap_or("?")
            ));
        }
        if let Some(a) = &v.approval {
            detail.push(format!(
                "approved by {} ({})",
                a["by"].as_str().unwrap_or("?"),
                a["how"].as_str().unwrap_or("?")
            ));
        }
        if let Some(r) = &v.skip_reason {
            detail.push(r.clone());
        }
        if let Some(e) = &v.error {
            detail.push(format!(
                "{}: {}",
                v.error_kind.as_deref().unwrap_or("error"),
                e
            ));
        }
        if let Some(o) = v.outputs.as_ref().and_then(Value::as_object) {
            detail.push(
                o.iter()
                    .map(|(k, v)| format!("{k}={}", short(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let took = match v.started_at {
            Some(s) => span(s, v.finished_at),
            None => "-".to_string(),
        };
        let tries = if v.attempts == 0 {
            "-".to_string()
        } else {
            v.attempts.to_string()
        };
        t.row(vec![
            mark,
            v.id.clone(),
            v.status.clone(),
            tries,
            took,
            detail.join("; "),
        ]);
    }
    out.push_str(&t.render());
    if all_events {
        out.push_str("\nevents:\n");
        for (r, e) in &events {
            out.push_str(&format!(
                "  {:>4}  {}  {:<16} {}\n",
                r.seq,
                when(r.at_ms),
                r.kind,
                serde_json::to_string(e).unwrap_or_default()
            ));
        }
    }
    print!("{out}");
    Ok(exit::OK)
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
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
    let is_branch = |s: &crate::runbook::plan::PlanStep| matches!(s.kind, StepKind::Branch { .. });
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for s in &plan.steps {
                let (open, close) = if is_branch(s) { ("{", "}") } else { ("[", "]") };
                let (id, uses) = (&s.def.id.name, &s.def.uses.name);
                out.push_str(&format!(
                    "    {id}{open}\"{}<br/><small>{}</small>\"{close}\n",
                    esc(id),
                    esc(uses)
                ));
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
            for s in &plan.steps {
                let shape = if is_branch(s) { ", shape=diamond" } else { "" };
                let (id, uses) = (&s.def.id.name, &s.def.uses.name);
                out.push_str(&format!(
                    "    \"{id}\" [label=\"{}\\n{}\"{shape}];\n",
                    esc(id),
                    esc(uses)
                ));
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

fn type_doc(t: &FieldType) -> String {
    t.describe()
}

pub fn plugins(registry: &Registry, name: Option<&str>, format: Format) -> Result<i32, Failure> {
    let describe = |info: &runbook_steps::PluginInfo| {
        json!({
            "name": info.name,
            "class": info.class.as_str(),
            "summary": info.summary,
            "fields": info.fields.iter().map(|f| json!({"name": f.name, "type": type_doc(&f.ty), "required": f.required, "doc": f.doc})).collect::<Vec<_>>(),
            "exactly_one_of": info.exactly_one_of,
            "result": info.output,
            "example": info.example,
        })
    };
    match name {
        None => {
            if format == Format::Json {
                let all: Vec<Value> = registry.iter().map(|r| describe(r.info())).collect();
                print_json(&all);
                return Ok(exit::OK);
            }
            let mut t = Table::new(&["PLUGIN", "CLASS", "SUMMARY"]);
            for r in registry.iter() {
                let i = r.info();
                let first = i
                    .summary
                    .split(". ")
                    .next()
                    .unwrap_or(i.summary)
                    .trim_end_matches('.');
                t.row(vec![
                    i.name.to_string(),
                    i.class.as_str().to_string(),
                    first.to_string(),
                ]);
            }
            print!("{}", t.render());
            println!("\n`runbook plugins NAME` describes one.");
            Ok(exit::OK)
        }
        Some(n) => {
            let Some(r) = registry.get(n) else {
                let hint = crate::diag::suggest(n, registry.names())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(Failure {
                    code: exit::INVALID,
                    message: format!("unknown plugin `{n}`{hint}"),
                });
            };
            let i = r.info();
            if format == Format::Json {
                print_json(&describe(i));
                return Ok(exit::OK);
            }
            println!(
                "{} ({})\n\n{}\n\nwith:",
                style(i.name).bold(),
                i.class.as_str(),
                i.summary
            );
            for f in i.fields {
                println!(
                    "  {}{}  {}\n      {}",
                    f.name,
                    if f.required { " (required)" } else { "" },
                    style(type_doc(&f.ty)).dim(),
                    f.doc
                );
            }
            for g in i.exactly_one_of {
                println!("  exactly one of: {}", g.join(", "));
            }
            println!(
                "\nresult: {}\n\nexample:\n{}",
                i.output,
                i.example
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(exit::OK)
        }
    }
}
