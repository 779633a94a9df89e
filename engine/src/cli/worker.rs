//! `runbook worker`: a long-lived process that claims due runs from a shared database and drives
//! them; `run --queue` puts a run there for it.

use super::{Failure, Global, actor, exit, open_store};
use crate::run::worker::{self, Config};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
A worker drives runs nobody is driving: runs queued with `runbook run NAME --queue` (or by a
server), parked runs whose timer is due or whose approval was just answered (`runbook approve`),
and runs whose driver died. Start as many workers as you like on one database (PostgreSQL, or
one SQLite file on one machine); each run is claimed by exactly one of them at a time:

  runbook --db postgres://runbook@db/runbook worker --concurrency 8
  runbook --db postgres://runbook@db/runbook run model-degraded --queue -p specialist_type=technical

How it works:
  claim   every --poll (and whenever a run it drives parks or ends), the worker claims due runs,
          up to --concurrency at once, by taking their lease (PostgreSQL: FOR UPDATE SKIP LOCKED).
  drive   each claimed run is continued exactly as `runbook resume` would, never prompting: a run
          that only waits (a timer, an approval, a retry's backoff) parks and lets its lease go;
          it is claimed again when it is due, by whichever worker is free.
  lease   while it drives a run, the worker renews the run's lease every 5 s (it lasts 15 s).
  death   when a worker dies, its leases expire (at once if another worker on its host sees the
          process is gone) and other workers claim its runs. Completed steps
          are never run again; `read` and `idempotent` steps that were in flight run again; an
          `unsafe` step in flight becomes `unknown` and the run waits for an operator
          (`runbook runs --resumable`, then `runbook resume RUN --mark-done|--retry|--mark-failed`).
  stop    on SIGTERM or Ctrl-C the worker claims nothing more; its runs finish their steps in
          flight and park (due at once, for another worker) or end; runs still busy after --grace
          are stopped and left to the other workers, as if this one had died.

A runbook with `concurrency: N` at its top has at most N runs driven at once across all workers.
Progress goes to stderr as one logfmt line per claim, park, end and problem:
  ts=1767000000000 worker=host/4242 event=claim run=0198... runbook=model-degraded why=due";

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// How many runs this worker drives at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,
    /// How often to look for due runs (e.g. 500ms, 2s).
    #[arg(long, default_value = "500ms", value_parser = duration)]
    pub poll: Duration,
    /// On SIGTERM or Ctrl-C, how long runs may take to park or end before they are left to others.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub grace: Duration,
    /// How many independent steps of one run may run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_parallel: u16,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = runbook_steps::parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{s}` is too short: at least 10ms"));
    }
    Ok(d)
}

pub async fn worker(g: &Global, args: WorkerArgs, engine: crate::Engine) -> Result<i32, Failure> {
    let store = open_store(g).await?;
    let profile = crate::run::connections::load_profile(g.config.as_deref(), g.profile.as_deref())
        .map_err(Failure::invalid)?;
    let cfg = Config {
        concurrency: usize::from(args.concurrency),
        poll: args.poll,
        grace: args.grace,
        actor: actor(g),
        profile,
        max_parallel: usize::from(args.max_parallel),
        observer: None,
        nudge: None,
    };
    let me = worker::holder();
    let log = Arc::new(worker::Stderr {
        worker: format!("{}/{}", me.host, me.pid),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        stop_signal().await;
        on_signal.cancel();
    });
    worker::run(Arc::clone(&store), engine, cfg, me, stop, log).await;
    Ok(exit::OK)
}

/// SIGTERM (what service managers send) or Ctrl-C.
pub(super) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
