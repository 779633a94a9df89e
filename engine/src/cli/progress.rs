//! The live view of a run: a line per finished step, a spinner per running step on a terminal, plain
//! timestamped lines otherwise (CI logs, pipes). Also answers approval requests.

use crate::run::driver::{Answer, Observer};
use crate::run::event::{Event, Record};
use crate::run::view::{Act, RunView, Why};
use crate::runbook::plan::Plan;
use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runbook_steps::duration::human;
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

pub struct Live {
    fancy: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    /// The run as the journal tells it so far: attempt reasons and durations come from here.
    view: Option<RunView>,
    actor: String,
    yes: bool,
    quiet: bool,
    /// The run parks instead of asking.
    detach: bool,
    /// Where this terminal's answers to approval requests go.
    answers: tokio::sync::mpsc::UnboundedSender<Answer>,
}

impl Live {
    pub fn new(
        actor: &str,
        yes: bool,
        quiet: bool,
        detach: bool,
        answers: tokio::sync::mpsc::UnboundedSender<Answer>,
    ) -> Live {
        let fancy = std::io::stderr().is_terminal() && !quiet;
        let multi = MultiProgress::with_draw_target(if fancy {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Live {
            fancy,
            multi,
            bars: HashMap::new(),
            view: None,
            actor: actor.to_string(),
            yes,
            quiet,
            detach,
            answers,
        }
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        if self.fancy {
            // Printing through the MultiProgress keeps the spinners below the log.
            let _ = self.multi.println(text);
        } else {
            let t = jiff::Zoned::now().strftime("%H:%M:%S");
            eprintln!("[{t}] {text}");
        }
    }

    /// How long the step's current attempt took, by the journal's clock.
    fn elapsed(view: Option<&RunView>, step: &str, now: i64) -> String {
        view.and_then(|v| v.step(step))
            .and_then(|s| s.tries.last())
            .map(|t| super::show::took(now - t.at))
            .unwrap_or_default()
    }

    /// A step asks for approval: `--yes` answers at once; a terminal gets a prompt on its own thread
    /// (the driver goes on renewing its lease and hearing answers from elsewhere meanwhile); otherwise
    /// the line says how to answer from anywhere.
    fn approval_requested(&mut self, run_id: &str, plan: &Plan, request: &Event) {
        let Event::ApprovalRequested {
            step,
            attempt,
            class,
            inputs,
            plan: evidence,
            ..
        } = request
        else {
            return;
        };
        let (attempt, class) = (*attempt, *class);
        let would = evidence.as_ref().and_then(|p| p["summary"].as_str());
        let answer = |approve: bool, by: &str, how: &str| Answer {
            step: step.to_string(),
            attempt: Some(attempt),
            approve,
            by: by.to_string(),
            how: how.to_string(),
            comment: None,
        };
        if self.yes {
            // The receiver lives as long as the driver; a closed channel means the run is over.
            let _ = self.answers.send(answer(true, &self.actor, "--yes"));
            return;
        }
        let short = &run_id[..12.min(run_id.len())];
        self.line(format!(
            "  {} {step} waits for approval — from anywhere: runbook approve {short} {step}   (or: runbook deny {short} {step} --reason ...)",
            style("?").yellow().bold(),
        ));
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if self.detach || !interactive || self.quiet {
            return;
        }
        let uses = plan
            .step(step)
            .map_or("", |s| s.def.uses.name.as_str())
            .to_string();
        let rendered = serde_json::to_string_pretty(inputs).unwrap_or_default();
        let would = would.map(|w| format!("It {w}.\n")).unwrap_or_default();
        let multi = self.multi.clone();
        let tx = self.answers.clone();
        let (yes, no) = (
            answer(true, &self.actor, "terminal"),
            answer(false, &self.actor, "terminal"),
        );
        let step = step.to_string();
        // A plain thread: reading stdin blocks, and must block neither the driver nor the runtime.
        std::thread::spawn(move || {
            // Spinners would redraw over the prompt; hide them while a person reads.
            multi.set_draw_target(ProgressDrawTarget::hidden());
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "\n{} step {} ({uses}, {}) wants to run with:\n{rendered}\n{would}",
                style("?").yellow().bold(),
                style(&step).bold(),
                class.as_str(),
            );
            let _ = write!(err, "Approve? [y/N] ");
            let _ = err.flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            multi.set_draw_target(ProgressDrawTarget::stderr());
            let line = line.trim().to_ascii_lowercase();
            let mut a = if line == "y" || line == "yes" {
                yes
            } else {
                no
            };
            if !a.approve {
                a.comment = Some("refused at the terminal".to_string());
            }
            let _ = tx.send(a);
        });
    }

    fn end_bar(&mut self, step: &str) {
        if let Some(b) = self.bars.remove(step) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
    }
}

impl Live {
    /// One event, as the lines and spinners it makes; `view` already includes it.
    fn render(&mut self, plan: &Plan, rec: &Record, event: &Event, view: &RunView) {
        let view = Some(view);
        match event {
            Event::RunStarted { runbook, .. } => {
                self.line(format!("{} {}", style("▶").cyan(), style(runbook).bold()));
            }
            Event::RunResumed { .. } => {
                // This process sees the journal from the resume on, so it cannot say how long the
                // run was down; `runbook show` can.
                self.line(format!("{} resumed", style("▶").cyan()));
            }
            Event::StepStarted { step, attempt, .. } => {
                let uses = plan.step(step).map_or("", |s| s.def.uses.name.as_str());
                let why = view
                    .and_then(|v| v.step(step))
                    .and_then(|s| s.tries.last())
                    .map(|t| match t.why {
                        Why::First => "",
                        Why::Retry => ", retry",
                        Why::CrashRerun => ", re-run after a crash",
                        Why::OperatorRetry => ", retried by an operator",
                    })
                    .unwrap_or_default();
                let label = if *attempt > 1 || !why.is_empty() {
                    format!("{step} ({uses}, attempt {attempt}{why})")
                } else {
                    format!("{step} ({uses})")
                };
                if self.fancy {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  {spinner:.cyan} {prefix} {elapsed:.dim} {wide_msg:.dim}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(label);
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bars.insert(step.clone(), bar);
                } else if plan.step(step).is_some_and(|s| {
                    s.def.timeout.is_some()
                        || matches!(
                            s.kind,
                            crate::runbook::plan::StepKind::Sleep { .. }
                                | crate::runbook::plan::StepKind::WaitUntil { .. }
                        )
                }) || *attempt > 1
                {
                    self.line(format!("  … {label} started"));
                }
            }
            Event::ApprovalRequested { .. } => self.approval_requested(&rec.run_id, plan, event),
            Event::ApprovalGranted { step, by, how, .. } => {
                self.line(format!(
                    "  {} {step} approved by {by} ({how})",
                    style("✔").green()
                ));
            }
            Event::ApprovalDenied {
                step, by, reason, ..
            } => {
                self.line(format!(
                    "  {} {step} denied by {by}: {reason}",
                    style("✗").red()
                ));
            }
            Event::DecisionTaken {
                step,
                condition,
                taken,
                values,
                ..
            } => {
                let why = match condition {
                    Some(c) => format!("`{c}`"),
                    None => "default".to_string(),
                };
                let read = if values.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", super::show::read_values(values))
                };
                self.line(format!(
                    "  {} {step}: {why} → {}{}",
                    style("◆").magenta(),
                    if taken.is_empty() {
                        "nothing".to_string()
                    } else {
                        taken.join(", ")
                    },
                    style(read).dim()
                ));
            }
            Event::StepSucceeded { step, .. } => {
                self.end_bar(step);
                let took = Self::elapsed(view, step, rec.at_ms);
                let is_branch = plan.step(step).is_some_and(|s| {
                    matches!(s.kind, crate::runbook::plan::StepKind::Branch { .. })
                });
                if !is_branch {
                    self.line(format!(
                        "  {} {step} {}",
                        style("✓").green(),
                        style(took).dim()
                    ));
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
                self.end_bar(step);
                let refused = view
                    .and_then(|v| v.interventions.last())
                    .is_some_and(|i| i.seq == rec.seq && matches!(i.what, Act::Refusal { .. }));
                if refused {
                    self.line(format!(
                        "  {} {step} not run: approval refused: {error}",
                        style("✗").red(),
                    ));
                    return;
                }
                let took = Self::elapsed(view, step, rec.at_ms);
                let retry = match retry_at_ms {
                    Some(at) => format!(
                        " — retrying in {}",
                        human(Duration::from_millis(
                            u64::try_from(at - crate::run::event::now_ms()).unwrap_or(0)
                        ))
                    ),
                    None => String::new(),
                };
                self.line(format!(
                    "  {} {step} failed (attempt {attempt}, {}) {}: {error}{retry}",
                    style("✗").red(),
                    kind.as_str(),
                    style(took).dim()
                ));
            }
            Event::StepPlanned { step, plan } => {
                self.end_bar(step);
                let summary = plan["summary"].as_str().unwrap_or("planned");
                self.line(format!("  {} {step}: {summary}", style("~").cyan()));
            }
            Event::StepSkipped { step, reason } => {
                self.line(format!(
                    "  {} {step} skipped: {}",
                    style("⊘").dim(),
                    style(reason).dim()
                ));
            }
            Event::RunInterrupted { reason } => {
                for (_, b) in self.bars.drain() {
                    b.finish_and_clear();
                }
                self.line(format!("{} {reason}", style("■").yellow()));
            }
            Event::RunCancelled {
                by, how, reason, ..
            } => {
                for (_, b) in self.bars.drain() {
                    b.finish_and_clear();
                }
                self.line(format!(
                    "{} cancelled by {by} ({how}): {reason}",
                    style("■").red()
                ));
            }
            Event::CancelRefused { by, why, .. } => {
                self.line(format!(
                    "  {} cancel asked by {by} refused: {why}",
                    style("!").yellow()
                ));
            }
            Event::RunNoted { note, .. } => {
                self.line(format!(
                    "  {} {}: {}",
                    style("✉").cyan(),
                    note.source,
                    note.summary
                ));
            }
            _ => {}
        }
    }
}

impl Observer for Live {
    fn on_event(&mut self, plan: &Plan, rec: &Record, event: &Event) {
        if self.quiet {
            // Nothing is shown, so nothing is folded; only requests need an answer (`--yes`).
            if let Event::ApprovalRequested { .. } = event {
                self.approval_requested(&rec.run_id, plan, event);
            }
            return;
        }
        let mut view = self.view.take().unwrap_or_else(|| RunView::new(Some(plan)));
        view.apply_event(rec, event);
        self.render(plan, rec, event, &view);
        self.view = Some(view);
    }

    fn on_progress(&mut self, step: &str, line: &str) {
        if let Some(b) = self.bars.get(step) {
            b.set_message(line.chars().take(120).collect::<String>());
        }
    }
}
