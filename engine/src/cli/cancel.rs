//! `runbook cancel`: a thin shell over [`crate::run::cancel`]. The request is recorded, then seen
//! through: journaled here when no process drives the run, else by the process that does.

use super::{Failure, Format, Global, actor, exit, open_store, show};
use crate::run::cancel::{self, Cancel, Outcome};
use clap::Args;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
Examples:
  runbook cancel 01a20e91cbf5 --reason \"false alarm: the dashboard was stale\"
  runbook cancel 01a20e91cbf5 --reason \"alert resolved\" --only-before-changes
  runbook cancel 01a20e91cbf5 --reason \"wrong cluster\" -o json

What a cancel does: the steps running are stopped (their commands' process groups killed, plugins
asked to stop their work on the far side), each is recorded as failed with kind `cancelled` (an
unsafe one says its effect is unknown: it may or may not have acted), steps waiting for approval
are denied, nothing more starts, and the run ends `failed`. Who cancelled it (--actor), how and
why are journaled, and `runbook show` / `runbook audit` say so.

Wherever the run is: a process driving it (`runbook run` in another terminal, a `runbook worker`,
`runbook serve`) takes the cancel within a second and this command waits for it; a run no process
drives (parked, interrupted, waiting for an operator, or left by a process that died) is taken
over and cancelled by this command at once, with no worker needed. A finished run is refused and
nothing is recorded.

--only-before-changes cancels only while no step other than a `read` one has started (what a
runbook's `triggers.on_resolved: cancel` asks when its alert resolves); otherwise the refusal,
naming the step that acted, is journaled and the run goes on.

Exit codes: 0 the run is cancelled (or, if the process driving it has not taken the request
within 30s, it is recorded and will be); 2 the cancel was refused (a finished run, a plan, a
change already started with --only-before-changes); 3 the database cannot be opened or written.";

/// How long `cancel` waits for the process driving a run to take the request.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Run id or unique id prefix.
    pub run: String,
    /// Why: journaled with the cancel, shown by `show` and `audit`.
    #[arg(long, required = true)]
    pub reason: String,
    /// Cancel only if no step with side effects (other than `read`) has started yet.
    #[arg(long)]
    pub only_before_changes: bool,
}

pub async fn cancel(g: &Global, args: CancelArgs, engine: crate::Engine) -> Result<i32, Failure> {
    let store = open_store(g).await?;
    let by = actor(g);
    let c = Cancel {
        by: by.clone(),
        how: "cli".to_string(),
        reason: args.reason,
        only_before_changes: args.only_before_changes,
    };
    let requested = cancel::request(store.as_ref(), &args.run, &c)
        .await
        .map_err(super::drive::driver_failure)?;
    let outcome = cancel::settle(store.as_ref(), &engine, &requested, &by, WAIT)
        .await
        .map_err(super::drive::driver_failure)?;
    let run = &requested.run_id;
    let short = &run[..12.min(run.len())];
    if g.output == Format::Json {
        let mut out = serde_json::to_value(&outcome).unwrap_or_default();
        out["run"] = run.as_str().into();
        out["request"] = requested.request.as_str().into();
        show::print_json(&out);
    } else {
        match &outcome {
            Outcome::Cancelled => {
                eprintln!("run {short} cancelled — details: runbook show {short}")
            }
            Outcome::Refused { why } => {
                eprintln!("run {short} refused the cancel and goes on: {why}");
            }
            Outcome::Pending { driven: true } => eprintln!(
                "cancel of run {short} recorded; the process driving it has not taken it yet and \
                 will (see runbook show {short})"
            ),
            Outcome::Pending { driven: false } => eprintln!(
                "cancel of run {short} recorded; it is taken when the run is continued \
                 (runbook resume {short})"
            ),
            Outcome::Ended { status } => {
                eprintln!("run {short} {status} before the cancel was taken: nothing was cancelled")
            }
            Outcome::Noted => {}
        }
    }
    Ok(match outcome {
        Outcome::Cancelled | Outcome::Pending { .. } | Outcome::Noted => exit::OK,
        Outcome::Refused { .. } | Outcome::Ended { .. } => exit::INVALID,
    })
}
