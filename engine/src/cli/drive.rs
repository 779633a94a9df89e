//! `run`, `plan`, `rerun`, `resume`, `approve` and `deny`: thin shells over the library's
//! [`launch`](crate::run::launch) and [`approval`](crate::run::approval), adding the live view,
//! Ctrl-C, and the summary a person or a script reads at the end.

use super::{
    AnswerArgs, DriveArgs, Failure, Format, Global, PlanArgs, RerunArgs, ResumeArgs, RunArgs,
    actor, display_path, exit, load_plan, open_store, parse_params, progress, show,
};
use crate::run::approval::Answered;
use crate::run::driver::{Answer, CrashPoint, DriverError, Hooks, RunOptions, RunOutcome};
use crate::run::event::RunStatus;
use crate::run::launch::{self, Source};
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub(super) fn driver_failure(e: DriverError) -> Failure {
    match e {
        DriverError::Store(s) => Failure::from(s),
        DriverError::Setup(m) | DriverError::Refused(m) => Failure::invalid(m),
    }
}

/// Options and hooks for driving a run from this terminal: Ctrl-C cancels it, the live view watches
/// it and answers its approval requests (prompt or `--yes`).
fn terminal(g: &Global, d: &DriveArgs) -> Result<(RunOptions, Hooks), Failure> {
    let actor = actor(g);
    let mut opts = RunOptions::new(&actor);
    opts.profile = crate::run::connections::load_profile(g.config.as_deref(), g.profile.as_deref())
        .map_err(Failure::invalid)?;
    opts.max_parallel = usize::from(d.max_parallel);
    opts.detach = d.detach;
    opts.crash = std::env::var("RUNBOOK_TEST_CRASH")
        .ok()
        .and_then(|v| CrashPoint::parse(&v));
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let live = progress::Live::new(&actor, d.yes, d.quiet, d.detach, tx);
    Ok((
        opts,
        Hooks {
            observer: Box::new(live),
            answers: Some(rx),
        },
    ))
}

/// A runbook named on the command line, checked, with its parameters: what `run` and `plan` start.
type Started = (
    crate::runbook::plan::Plan,
    Source,
    serde_json::Map<String, serde_json::Value>,
);

fn from_file(runbook: &str, params: &[String], engine: &crate::Engine) -> Result<Started, Failure> {
    let (path, text, plan) = load_plan(runbook, &engine.registry, &engine.expr)?;
    let params = parse_params(&plan, params)?;
    let source = Source {
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        text,
        path: Some(display_path(&path)),
        rerun: None,
    };
    Ok((plan, source, params))
}

pub async fn run(g: &Global, args: RunArgs, engine: crate::Engine) -> Result<i32, Failure> {
    if args.idempotency_key.is_some() {
        return Err(Failure::invalid(
            "--idempotency-key is for a run started through a server (--server URL)",
        ));
    }
    let (plan, source, params) = from_file(&args.runbook, &args.params, &engine)?;
    let store = open_store(g).await?;
    if args.queue {
        let opts = RunOptions {
            profile: crate::run::connections::load_profile(
                g.config.as_deref(),
                g.profile.as_deref(),
            )
            .map_err(Failure::invalid)?,
            ..RunOptions::new(&actor(g))
        };
        let id = launch::enqueue(
            Arc::new(plan),
            store.as_ref(),
            &engine,
            source,
            params,
            &opts,
            launch::Queued::default(),
        )
        .await
        .map_err(driver_failure)?;
        print_queued(g.output, &id, RunStatus::Parked, true);
        return Ok(exit::OK);
    }
    start_here(g, &args.drive, store, &engine, plan, source, params).await
}

/// What `run --queue` (and `run --server`) prints: the run's id for scripts, or JSON. `created` is
/// false when a server returned the run an earlier request with the same Idempotency-Key made.
pub fn print_queued(format: Format, run: &str, status: RunStatus, created: bool) {
    if format == Format::Json {
        show::print_json(
            &serde_json::json!({"run": run, "status": status.as_str(), "created": created}),
        );
    } else {
        if !created {
            eprintln!(
                "run {run} was started earlier with this --idempotency-key; it is {}",
                status.as_str()
            );
        }
        println!("{run}");
    }
}

pub async fn plan(g: &Global, args: PlanArgs, engine: crate::Engine) -> Result<i32, Failure> {
    let (plan, source, params) = from_file(&args.runbook, &args.params, &engine)?;
    let store = open_store(g).await?;
    let drive = DriveArgs {
        yes: false,
        detach: false,
        max_parallel: args.max_parallel,
        quiet: args.quiet,
    };
    let (mut opts, hooks) = terminal(g, &drive)?;
    opts.plan = true;
    let outcome = launch::start(
        Arc::new(plan),
        Arc::clone(&store),
        &engine,
        source,
        params,
        opts,
        hooks,
    )
    .await
    .map_err(driver_failure)?;
    let view = show::Loaded::load(store.as_ref(), &outcome.run_id)
        .await?
        .view;
    if g.output == Format::Json {
        show::print_json(&view);
    } else {
        print!("{}", show::plan_text(&view));
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Interrupted => exit::INTERRUPTED,
        _ => exit::RUN_FAILED,
    })
}

pub async fn rerun(g: &Global, args: RerunArgs, engine: crate::Engine) -> Result<i32, Failure> {
    let store = open_store(g).await?;
    let mut overrides = Vec::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Failure::invalid(format!("--param `{p}`: write NAME=VALUE")))?;
        overrides.push((k.trim().to_string(), v.to_string()));
    }
    let (plan, source, params) =
        launch::prepare_rerun(store.as_ref(), &engine, &args.run, &args.from, &overrides)
            .await
            .map_err(driver_failure)?;
    start_here(g, &args.drive, store, &engine, plan, source, params).await
}

/// Starts a new run driven by this process and watched from this terminal (`run`, `rerun`).
async fn start_here(
    g: &Global,
    drive: &DriveArgs,
    store: Arc<dyn Store>,
    engine: &crate::Engine,
    plan: crate::runbook::plan::Plan,
    source: Source,
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<i32, Failure> {
    let (opts, hooks) = terminal(g, drive)?;
    let outcome = launch::start(
        Arc::new(plan),
        Arc::clone(&store),
        engine,
        source,
        params,
        opts,
        hooks,
    )
    .await
    .map_err(driver_failure)?;
    finish(g, store.as_ref(), &outcome, drive.quiet).await
}

pub async fn resume(g: &Global, args: ResumeArgs, engine: crate::Engine) -> Result<i32, Failure> {
    use crate::run::event::OperatorAction;
    let store = open_store(g).await?;
    let mut decisions = Vec::new();
    for (steps, action) in [
        (&args.retry, OperatorAction::Retry),
        (&args.mark_done, OperatorAction::MarkDone),
        (&args.mark_failed, OperatorAction::MarkFailed),
    ] {
        for s in steps {
            if decisions.iter().any(|(d, _): &(String, _)| d == s) {
                return Err(Failure::invalid(format!(
                    "step `{s}` is given more than one decision"
                )));
            }
            decisions.push((s.clone(), action));
        }
    }
    let newer = changed_runbook(store.as_ref(), &args.run, args.use_current).await?;
    let (opts, hooks) = terminal(g, &args.drive)?;
    let outcome = launch::resume(
        Arc::clone(&store),
        &engine,
        &args.run,
        decisions,
        newer,
        opts,
        hooks,
    )
    .await
    .map_err(driver_failure)?;
    finish(g, store.as_ref(), &outcome, args.drive.quiet).await
}

/// `approve` and `deny`.
pub async fn answer(
    g: &Global,
    target: AnswerArgs,
    approve: bool,
    comment: Option<String>,
    engine: crate::Engine,
) -> Result<i32, Failure> {
    let store = open_store(g).await?;
    let a = Answer {
        step: target.step.clone(),
        attempt: None,
        approve,
        by: actor(g),
        how: "cli".to_string(),
        comment,
    };
    let done = crate::run::approval::answer(store.as_ref(), &engine, &target.run, a)
        .await
        .map_err(driver_failure)?;
    Ok(print_answer(g.output, &target.step, approve, &done, false))
}

/// What `approve` and `deny` say about an answer, given here or `through_server`; the exit code.
pub fn print_answer(
    format: Format,
    step: &str,
    approve: bool,
    done: &Answered,
    through_server: bool,
) -> i32 {
    let short = show::short_id(&done.run_id);
    let word = if approve { "approved" } else { "denied" };
    if format == Format::Json {
        show::print_json(&serde_json::json!({
            "run": done.run_id, "step": step, "answer": word,
            "recorded": done.recorded, "run_status": done.status.as_str(),
        }));
    } else if !done.recorded {
        eprintln!(
            "step `{step}` of run {short} was already answered; the first answer stands (see runbook show {short})"
        );
    } else if !done.driven && through_server && done.status == RunStatus::Parked {
        eprintln!(
            "step `{step}` {word}. The run is parked and now due: the server's workers continue it\n  runbook show {short} --server URL"
        );
    } else if !done.driven {
        let why = if done.status == RunStatus::Parked {
            // The answer made it due: a worker on this database claims it within its poll.
            "The run is parked and now due: a `runbook worker` on this database continues it, or"
        } else {
            "No process drives the run now: continue it with"
        };
        eprintln!("step `{step}` {word}. {why}\n  runbook resume {short}");
    } else {
        eprintln!(
            "step `{step}` {word}; the process driving run {short} picks it up within a second"
        );
    }
    if done.recorded {
        exit::OK
    } else {
        exit::INVALID
    }
}

/// The end of `run`, `rerun` and `resume`: the summary line (or JSON) and the exit code.
async fn finish(
    g: &Global,
    store: &dyn Store,
    outcome: &RunOutcome,
    quiet: bool,
) -> Result<i32, Failure> {
    use crate::run::state::Status;
    let short = &outcome.run_id[..12.min(outcome.run_id.len())];
    // The whole run is read back only when it is shown or has steps to name: a finished run's
    // summary line needs nothing from the store.
    let waits = matches!(outcome.status, RunStatus::Waiting | RunStatus::Parked);
    let view = if g.output == Format::Json || waits {
        Some(show::Loaded::load(store, &outcome.run_id).await?.view)
    } else {
        None
    };
    if let (Format::Json, Some(view)) = (g.output, &view) {
        show::print_json(view);
    } else if !quiet {
        let word = match outcome.status {
            RunStatus::Succeeded => console::style("succeeded").green().bold(),
            RunStatus::Failed => console::style("failed").red().bold(),
            RunStatus::Interrupted => console::style("interrupted").yellow().bold(),
            RunStatus::Running => console::style("running").bold(),
            RunStatus::Waiting => console::style("waiting for an operator").yellow().bold(),
            RunStatus::Parked => console::style("parked").yellow().bold(),
        };
        // The run's whole duration, from its first start: after a resume, not just this process's.
        let took = show::took(crate::run::event::now_ms() - outcome.started_at);
        eprintln!(
            "run {} {word} in {took} — details: runbook show {short}",
            outcome.run_id
        );
    }
    if let (Format::Text, Some(view)) = (g.output, &view) {
        let with = |status: Status| view.steps.iter().filter(move |s| s.status == status);
        if outcome.status == RunStatus::Waiting {
            for s in with(Status::Unknown) {
                let step = &s.id;
                let state = match s.still_running {
                    Some(pgid) => format!(
                        "it is STILL RUNNING as process group {pgid}: let it finish (or stop it: kill -s TERM -- -{pgid}), then decide"
                    ),
                    None => "it may or may not have acted".to_string(),
                };
                eprintln!(
                    "step `{step}` is unsafe and was running when the run stopped: {state}.\n  check, then: runbook resume {short} --mark-done {step}   (it did what it should)\n              runbook resume {short} --retry {step}       (run it again)\n              runbook resume {short} --mark-failed {step} (treat it as failed)"
                );
            }
        }
        if outcome.status == RunStatus::Parked {
            for step in with(Status::AwaitingApproval).map(|s| &s.id) {
                eprintln!(
                    "step `{step}` waits for approval:\n  runbook approve {short} {step}      (or: runbook deny {short} {step} --reason ...)"
                );
            }
            eprintln!("continue the run with:\n  runbook resume {short}");
        }
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Interrupted => exit::INTERRUPTED,
        RunStatus::Waiting | RunStatus::Parked => exit::WAITING,
        _ => exit::RUN_FAILED,
    })
}

/// The runbook file's text when it differs from what the run follows: returned with `--use-current`,
/// otherwise only mentioned.
async fn changed_runbook(
    store: &dyn Store,
    run: &str,
    use_current: bool,
) -> Result<Option<String>, Failure> {
    let stored = launch::StoredRun::load(store, run, false)
        .await
        .map_err(driver_failure)?;
    let followed = stored.text();
    let path = stored.row.source_path.clone().unwrap_or_default();
    let file = crate::runbook::source::read(std::path::Path::new(&path)).ok();
    match (file, use_current) {
        (Some(now), true) if now != followed => Ok(Some(now)),
        (Some(_), true) => Ok(None),
        (None, true) => Err(Failure::invalid(format!(
            "--use-current: cannot read the runbook file `{path}` the run was started from"
        ))),
        (Some(now), false) if now != followed => {
            eprintln!(
                "note: {path} changed since the run started; resuming with the version stored with the run (pass --use-current to switch)"
            );
            Ok(None)
        }
        _ => Ok(None),
    }
}
