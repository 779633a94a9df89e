//! Reading runs back: `runs` and `show`, and what they share with `audit` and `run`.

use super::{Failure, Format, exit};
use crate::run::event::Record;
use crate::run::event::RunStatus;
use crate::run::state::Status;
use crate::run::view::{Act, RunView, StepView, Stop, Why};
use crate::store::{RunRow, Store};
use console::style;
use runbook_steps::ErrorKind;
use runbook_steps::duration::human;
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
    let recorded = rows.len();
    if resumable {
        let now = crate::run::event::now_ms();
        let me = crate::run::lease::Holder::this_process();
        let mut kept = Vec::new();
        for r in rows {
            if !matches!(
                r.status,
                RunStatus::Running
                    | RunStatus::Interrupted
                    | RunStatus::Waiting
                    | RunStatus::Parked
            ) {
                continue;
            }
            // A live lease means a process is driving the run: resuming it would be refused.
            let driven = store.lease(&r.id).await?.is_some_and(|(holder, until)| {
                until > now
                    && !crate::run::lease::is_dead(&me, &holder, crate::run::lease::start_time)
            });
            if !driven {
                kept.push(r);
            }
        }
        rows = kept;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let none = if recorded == 0 {
        "no runs yet; start one with `runbook run NAME`".to_string()
    } else {
        format!(
            "no resumable runs among the {recorded} recorded: they finished, or a live process is driving them (see `runbook runs`)"
        )
    };
    print_runs(&rows, format, &none);
    Ok(exit::OK)
}

/// Prints runs as `runbook runs` does, whether they were read from the database or from a server;
/// `none` is what it says when there are none.
pub fn print_runs(rows: &[RunRow], format: Format, none: &str) {
    if format == Format::Json {
        print_json(&rows);
        return;
    }
    if rows.is_empty() {
        eprintln!("{none}");
        return;
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
}

fn status_word(s: &str) -> String {
    match s {
        "succeeded" => style(s).green().to_string(),
        "failed" => style(s).red().to_string(),
        "interrupted" | "waiting" => style(s).yellow().to_string(),
        _ => s.to_string(),
    }
}

pub use crate::run::view::Loaded;

pub async fn run_json(store: &dyn Store, id: &str) -> Result<Value, Failure> {
    Ok(serde_json::to_value(&Loaded::load(store, id).await?.view).unwrap_or_default())
}

/// The first 12 characters of an id or a hash: enough to name it, short enough to type. Cut at a
/// character, since a view read from a server may hold anything.
pub fn short_id(s: &str) -> &str {
    s.char_indices().nth(12).map_or(s, |(i, _)| &s[..i])
}

/// A duration in milliseconds, for people.
pub fn took(ms: i64) -> String {
    human(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// How a run stopped before a resume, for people.
pub fn stop_words(s: Stop) -> &'static str {
    match s {
        Stop::Interrupted => "interrupted",
        Stop::Parked => "waiting for an operator",
        Stop::Detached => "parked",
        Stop::Crashed => "stopped without a word (killed or crashed)",
    }
}

/// The header lines `show` and `audit` share: status, who and when, resumes.
pub fn header(v: &RunView, timestamp: impl Fn(i64) -> String) -> String {
    let run = &v.run;
    let mut out = String::new();
    let status = run.status.map_or("?", RunStatus::as_str);
    out.push_str(&format!(
        "run {}  {}  {}\n",
        style(&run.id).bold(),
        run.runbook,
        status_word(status)
    ));
    if let Some(t) = &run.title {
        out.push_str(&format!("  {t}\n"));
    }
    out.push_str(&format!(
        "  started {} by {}, took {}\n",
        timestamp(run.started_at),
        run.actor,
        run.duration_ms.map_or("-".to_string(), took)
    ));
    if let Some(t) = &run.trigger {
        out.push_str(&format!("  started by {}\n", t.describe()));
    }
    for r in &v.resumes {
        let changed = r
            .changed_runbook
            .as_deref()
            .map(|h| format!(", with a CHANGED runbook (sha256 {})", short_id(h)))
            .unwrap_or_default();
        let down = r
            .down_ms
            .map(|ms| format!(" after {} down", took(ms)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  resumed {} by {}{down} ({}){changed}\n",
            timestamp(r.at),
            r.by,
            stop_words(r.after)
        ));
    }
    for i in &v.interventions {
        match &i.what {
            Act::Cancel { by, how, reason } => out.push_str(&format!(
                "  cancelled {} by {by} ({how}): {reason}\n",
                timestamp(i.at)
            )),
            Act::CancelRefused {
                by, reason, why, ..
            } => out.push_str(&format!(
                "  cancel asked {} by {by} ({reason}) was refused: {why}\n",
                timestamp(i.at)
            )),
            _ => {}
        }
    }
    for n in &v.notes {
        out.push_str(&format!(
            "  note {} from {} ({}): {}\n",
            timestamp(n.at),
            n.note.source,
            n.by,
            n.note.summary
        ));
    }
    if let Some(p) = &run.parent_run {
        out.push_str(&format!(
            "  re-run of {} from step {}\n",
            short_id(p),
            run.rerun_from.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// What `show` says about a step's attempts beyond their number: retries and crash re-runs.
fn tries_detail(v: &StepView) -> Option<String> {
    let count = |w: Why| v.tries.iter().filter(|t| t.why == w).count();
    let mut parts = Vec::new();
    for (why, one, many) in [
        (
            Why::Retry,
            "retried once after a failure",
            "retried {} times after failures",
        ),
        (
            Why::CrashRerun,
            "re-run once after a crash",
            "re-run {} times after crashes",
        ),
        (
            Why::OperatorRetry,
            "retried by an operator",
            "retried {} times by operators",
        ),
    ] {
        match count(why) {
            0 => {}
            1 => parts.push(one.to_string()),
            n => parts.push(many.replace("{}", &n.to_string())),
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub async fn show(
    store: &dyn Store,
    id: &str,
    all_events: bool,
    format: Format,
) -> Result<i32, Failure> {
    let loaded = Loaded::load(store, id).await?;
    print_show(
        &loaded.view,
        all_events.then_some(&loaded.records[..]),
        format,
    );
    Ok(exit::OK)
}

/// Prints a run as `runbook show` does, whether it was folded here or read from a server; with
/// `records`, every journal event too (`--events`).
pub fn print_show(v: &RunView, records: Option<&[Record]>, format: Format) {
    if format == Format::Json {
        let mut out = serde_json::to_value(v).unwrap_or_default();
        if let Some(records) = records {
            out["events"] = Value::Array(
                records
                    .iter()
                    .map(|r| {
                        let event = r.event().map_or_else(
                            |_| Value::String(r.data.clone()),
                            |e| serde_json::to_value(e).unwrap_or_default(),
                        );
                        json!({"seq": r.seq, "at": r.at_ms, "actor": r.actor, "event": event, "hash": r.hash})
                    })
                    .collect(),
            );
        }
        print_json(&out);
    } else {
        print!("{}", show_text(v, records, when));
    }
}

/// `runbook show`'s text: the header, a table of the steps, and the events when given.
pub fn show_text(
    v: &RunView,
    records: Option<&[Record]>,
    timestamp: impl Fn(i64) -> String,
) -> String {
    let run = &v.run;
    let mut out = header(v, &timestamp);
    out.push_str(&format!(
        "  runbook {} (sha256 {})\n",
        run.source_path.as_deref().unwrap_or("-"),
        short_id(&run.runbook_sha256)
    ));
    if run.params.as_object().is_some_and(|m| !m.is_empty()) {
        out.push_str(&format!("  params {}\n", run.params));
    }
    if !v.unreadable.is_empty() {
        out.push_str(&format!(
            "  WARNING: events {:?} are unreadable (see `runbook audit verify`)\n",
            v.unreadable
        ));
    }
    out.push('\n');
    let mut t = Table::new(&["", "STEP", "STATUS", "TRIES", "TOOK", "DETAIL"]);
    for s in &v.steps {
        let mark = match s.status {
            Status::Succeeded => style("✓").green().to_string(),
            Status::Failed => style("✗").red().to_string(),
            Status::Skipped => style("⊘").dim().to_string(),
            Status::Running | Status::RetryWait => style("…").yellow().to_string(),
            Status::Unknown | Status::AwaitingApproval => style("?").yellow().bold().to_string(),
            Status::Pending => style("·").dim().to_string(),
            Status::Planned => style("~").cyan().to_string(),
        };
        let mut detail = Vec::new();
        if let Some(d) = &s.decision {
            let why = match &d.condition {
                Some(c) => format!("`{c}`"),
                None if d.reused => "the earlier run's decision".to_string(),
                None => "default".to_string(),
            };
            detail.push(format!(
                "chose {} by {why}",
                if d.taken.is_empty() {
                    "nothing".to_string()
                } else {
                    d.taken.join(", ")
                }
            ));
            if !d.values.is_empty() {
                detail.push(format!("read {}", read_values(&d.values)));
            }
        }
        // A false guard is already the skip reason; show what it read.
        if let Some(g) = s.guards.last()
            && !g.holds
            && !g.values.is_empty()
        {
            detail.push(format!("read {}", read_values(&g.values)));
        }
        if let Some(r) = &s.reused_from {
            detail.push(format!("reused from {}", short_id(r)));
        }
        if let Some(tries) = tries_detail(s) {
            detail.push(tries);
        }
        if let Some(o) = &s.operator {
            detail.push(format!("{} by {} (operator)", o.action.words(), o.by));
        }
        // A refused approval is the step's error, shown below.
        if let Some(a) = s.approval.as_ref().filter(|a| a.granted) {
            detail.push(format!("approved by {} ({})", a.by, a.how));
        }
        if let Some(r) = &s.skip_reason {
            detail.push(r.clone());
        }
        if let Some(e) = &s.error {
            detail.push(format!(
                "{}: {}",
                s.error_kind.map_or("error", ErrorKind::as_str),
                e
            ));
        }
        if let Some(o) = &s.outputs {
            detail.push(
                o.iter()
                    .map(|(k, v)| format!("{k}={}", short(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let took = match s.started_at {
            Some(st) => span(st, s.finished_at),
            None => "-".to_string(),
        };
        let tries = if s.attempts == 0 {
            "-".to_string()
        } else {
            s.attempts.to_string()
        };
        t.row(vec![
            mark,
            s.id.clone(),
            s.status.as_str().to_string(),
            tries,
            took,
            detail.join("; "),
        ]);
    }
    out.push_str(&t.render());
    if let Some(records) = records {
        out.push_str("\nevents:\n");
        for r in records {
            out.push_str(&format!(
                "  {:>4}  {}  {:<16} {}\n",
                r.seq,
                timestamp(r.at_ms),
                r.kind,
                r.data
            ));
        }
    }
    out
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

/// A plan as a reviewer reads it: what ran (reads), what was decided, and what would change.
pub fn plan_text(v: &RunView) -> String {
    let mut out = String::new();
    let short = short_id(&v.run.id);
    let count = |st: Status| v.steps.iter().filter(|s| s.status == st).count();
    let changes = v
        .steps
        .iter()
        .filter(|s| {
            s.status == Status::Planned
                && s.class
                    .is_some_and(|c| c != runbook_steps::SideEffect::Read)
        })
        .count();
    out.push_str(&format!(
        "plan {short} of {}: {} step(s) ran, {changes} change(s) planned, {} skipped; nothing was changed\n",
        v.run.runbook,
        count(Status::Succeeded),
        count(Status::Skipped),
    ));
    for s in &v.steps {
        let line = match s.status {
            Status::Planned => {
                let summary = s
                    .planned
                    .as_ref()
                    .and_then(|p| p["summary"].as_str())
                    .unwrap_or("planned");
                let class = s
                    .class
                    .map(|c| format!(", {}", c.as_str()))
                    .unwrap_or_default();
                let approval = if s
                    .planned
                    .as_ref()
                    .is_some_and(|p| p["approval_required"] == true)
                {
                    " [needs approval]"
                } else {
                    ""
                };
                format!("  ~ {} ({}{class}): {summary}{approval}", s.id, s.uses)
            }
            Status::Succeeded => match &s.decision {
                Some(d) => format!(
                    "  ◆ {}: {} → {}",
                    s.id,
                    d.condition
                        .as_deref()
                        .map_or("default".to_string(), |c| format!("`{c}`")),
                    if d.taken.is_empty() {
                        "nothing".to_string()
                    } else {
                        d.taken.join(", ")
                    }
                ),
                None => format!("  ✓ {} ({}) ran", s.id, s.uses),
            },
            Status::Skipped => format!(
                "  ⊘ {} skipped: {}",
                s.id,
                s.skip_reason.as_deref().unwrap_or("")
            ),
            Status::Failed => format!("  ✗ {} failed: {}", s.id, s.error.as_deref().unwrap_or("")),
            other => format!("  · {} {}", s.id, other.as_str()),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("details: runbook show {short}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::event::{Chain, Event, OperatorAction, Recovery, Trigger};
    use crate::run::view::RunView;
    use runbook_steps::SideEffect;
    use serde_json::Map;

    fn started(step: &str, attempt: u32, class: SideEffect) -> Event {
        Event::StepStarted {
            step: step.into(),
            attempt,
            class,
            inputs: json!({"argv": ["x", step]}),
            deadline_ms: None,
        }
    }

    fn recovered(step: &str, attempt: u32, outcome: Recovery) -> Event {
        Event::StepRecovered {
            step: step.into(),
            attempt,
            outcome,
        }
    }

    fn decided(step: &str, action: OperatorAction) -> Event {
        Event::OperatorDecided {
            step: step.into(),
            action,
            by: "bob".into(),
        }
    }

    /// A run that went through nearly everything a view records: a trigger, a re-run's reused
    /// step, a retry, a guard, a decision, approvals given and refused, a crash with an unknown
    /// step settled each way, a superseded attempt, a step left running, an interruption, a park, a
    /// resume with a changed runbook, and an unreadable event.
    fn records() -> Vec<Record> {
        let mut chain = Chain::new("01a20e91cbf5d3e4");
        let values = |k: &str, v: Value| {
            let mut m = Map::new();
            m.insert(k.into(), v);
            m
        };
        let events = vec![
            Event::RunStarted {
                runbook: "model-degraded".into(),
                runbook_sha256: "ab".repeat(32),
                params: values("specialist_type", json!("technical")),
                vars: Map::new(),
                engine_version: "0.1.0".into(),
            },
            Event::RunTriggered {
                trigger: Trigger::Alert {
                    alertname: "MLModelDegraded".into(),
                    status: "firing".into(),
                    receiver: "runbook".into(),
                    group_key: "{}:{}".into(),
                    key: "k".into(),
                    fingerprint: "fp".into(),
                    starts_at: String::new(),
                    labels: [("severity".to_string(), "warning".to_string())].into(),
                    annotations: Default::default(),
                },
            },
            Event::RerunOf {
                parent_run: "0199aaaabbbbcccc".into(),
                from_step: "probe".into(),
            },
            Event::StepReused {
                step: "versions".into(),
                from_run: "0199aaaabbbbcccc".into(),
                status: "succeeded".into(),
                kind: None,
                result: None,
                outputs: values("hours", json!(3)),
                chosen: Some(vec!["rollback".into()]),
                reason: None,
            },
            started("probe", 1, SideEffect::Read),
            Event::StepFailed {
                step: "probe".into(),
                attempt: 1,
                kind: ErrorKind::Connect,
                error: "connection refused".into(),
                detail: None,
                retry_at_ms: Some(1_300),
            },
            started("probe", 2, SideEffect::Read),
            Event::StepSucceeded {
                step: "probe".into(),
                attempt: 2,
                result: json!({"v": 0.4}),
                outputs: values("f1", json!(0.61)),
            },
            Event::GuardEvaluated {
                step: "scale".into(),
                condition: "steps.probe.f1 > 0.9".into(),
                holds: false,
                values: values("steps.probe.f1", json!(0.61)),
            },
            Event::StepSkipped {
                step: "scale".into(),
                reason: "its `when:` is false".into(),
            },
            Event::DecisionTaken {
                step: "choose".into(),
                case: Some(0),
                condition: Some("steps.probe.f1 < 0.65".into()),
                values: values("steps.probe.f1", json!(0.61)),
                taken: vec!["restart".into()],
                not_taken: vec!["retrain".into()],
            },
            Event::ApprovalRequested {
                step: "restart".into(),
                attempt: 1,
                class: SideEffect::Unsafe,
                inputs: json!({}),
                approvers: vec!["alice".into()],
                distinct_from_initiator: false,
                expires_at_ms: None,
                plan: None,
            },
            Event::ApprovalGranted {
                step: "restart".into(),
                by: "alice".into(),
                how: "api".into(),
                comment: Some("checked".into()),
            },
            started("restart", 1, SideEffect::Unsafe),
            started("gate", 1, SideEffect::Unsafe),
            Event::StepFailed {
                step: "gate".into(),
                attempt: 1,
                kind: ErrorKind::Approval,
                error: "denied by carol: traffic peak".into(),
                detail: None,
                retry_at_ms: None,
            },
            started("left", 1, SideEffect::Unsafe),
            started("again", 1, SideEffect::Idempotent),
            started("twice", 1, SideEffect::Read),
            started("twice", 2, SideEffect::Read),
            Event::RunInterrupted {
                reason: "Ctrl-C".into(),
            },
            Event::RunResumed {
                runbook_sha256: "cd".repeat(32),
                runbook_text: None,
            },
            recovered("restart", 1, Recovery::Unknown),
            recovered("left", 1, Recovery::Unknown),
            recovered("again", 1, Recovery::Rerun),
            decided("restart", OperatorAction::MarkDone),
            decided("left", OperatorAction::MarkFailed),
            started("again", 2, SideEffect::Idempotent),
            Event::ProcessFound {
                step: "twice".into(),
                group: runbook_steps::process::Group {
                    pgid: 4242,
                    start: 1,
                    boot: "b".into(),
                },
                action: "left_running".into(),
                how: None,
            },
            Event::RunParked {
                waiting_for: vec!["twice".into()],
            },
            Event::RunResumed {
                runbook_sha256: "cd".repeat(32),
                runbook_text: None,
            },
            recovered("twice", 2, Recovery::Unknown),
            decided("twice", OperatorAction::Retry),
            Event::RunDetached {
                wake_at_ms: Some(9_000),
                approvals: vec![],
            },
            Event::RunResumed {
                runbook_sha256: "cd".repeat(32),
                runbook_text: None,
            },
            Event::RunFinished {
                status: RunStatus::Failed,
                error: Some("step `left` failed".into()),
            },
        ];
        let mut out: Vec<Record> = events
            .iter()
            .enumerate()
            .map(|(i, e)| chain.seal(1_000 + 100 * i64::try_from(i).unwrap_or(0), "tester", e))
            .collect();
        let mut bad = chain.seal(
            99_000,
            "tester",
            &Event::RunInterrupted { reason: "x".into() },
        );
        bad.data = "not an event".into();
        out.push(bad);
        out
    }

    #[test]
    fn a_view_read_back_from_its_json_renders_as_the_folded_one() {
        let records = records();
        let row = RunRow {
            id: "01a20e91cbf5d3e4".into(),
            runbook: "model-degraded".into(),
            title: Some("Model degraded".into()),
            source_path: Some("runbooks/model-degraded.yaml".into()),
            runbook_sha256: "ab".repeat(32),
            runbook_text: "name: model-degraded".into(),
            params: json!({"specialist_type": "technical"}),
            status: RunStatus::Failed,
            actor: "alertmanager:am".into(),
            started_at: 1_000,
            finished_at: Some(99_000),
            parent_run: Some("0199aaaabbbbcccc".into()),
            kind: crate::store::RunKind::Run,
            concurrency: Some(1),
            trigger_key: Some("k".into()),
            request_key: None,
        };
        let folded = RunView::of_run(&row, &records, None);
        let json = serde_json::to_value(&folded).expect("serialize");
        let back: RunView = serde_json::from_value(json.clone()).expect("deserialize");
        assert_eq!(serde_json::to_value(&back).expect("serialize"), json);
        // The index is rebuilt: steps are found by id.
        assert_eq!(back.step("left").map(|s| s.status), Some(Status::Failed));
        let stamp = |ms: i64| format!("t{ms}");
        let text = show_text(&folded, Some(&records), stamp);
        assert_eq!(show_text(&back, Some(&records), stamp), text);
        assert_eq!(
            show_text(&back, None, stamp),
            show_text(&folded, None, stamp)
        );
        // What makes the comparison worth something: the text shows what each part recorded.
        for want in [
            "chose restart by `steps.probe.f1 < 0.65`",
            "read steps.probe.f1=0.61",
            "retried once after a failure",
            "approved by alice (api)",
            "marked done by bob (operator)",
            "marked failed by bob (operator)",
            "reused from 0199aaaabbbb",
            "re-run of 0199aaaabbbb from step probe",
            "with a CHANGED runbook (sha256 cdcdcdcdcdcd)",
            "(interrupted)",
            "(waiting for an operator)",
            "(parked)",
            "WARNING: events [37] are unreadable",
            "approval: denied by carol: traffic peak",
            "not an event",
        ] {
            assert!(text.contains(want), "`{want}` not in:\n{text}");
        }
        let twice = back.step("twice").expect("twice");
        let outcomes: Vec<&str> = twice
            .tries
            .iter()
            .map(|t| match t.outcome() {
                crate::run::view::Outcome::Superseded => "superseded",
                crate::run::view::Outcome::RetriedByOperator { .. } => "retried",
                _ => "other",
            })
            .collect();
        assert_eq!(outcomes, ["superseded", "retried"]);
    }

    #[test]
    fn ids_are_shortened_at_a_character() {
        assert_eq!(short_id("01a20e91cbf5d3e4"), "01a20e91cbf5");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
    }
}
