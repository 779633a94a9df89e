//! A worker: claims due runs from the store and drives each as its own task, through the same code
//! as `runbook resume`, until told to stop. Any number of workers (processes, or `serve`) may share
//! one database; the claim makes sure two never get the same run, and the lease of a worker that
//! dies expires, so another claims its runs and continues them by the recovery rules of a resume.
//!
//! A worker never prompts: a run that comes to an approval, a timer or a retry's backoff parks
//! (releasing its lease) and becomes due again at its journaled instant or when the approval is
//! answered; a run whose unsafe step's outcome is unknown waits for an operator.

use super::driver::{DriverError, Hooks, RunOptions, RunOutcome};
use super::event::{RunStatus, now_ms};
use super::lease::{self, Holder};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Makes the observer of each run a worker drives (a server times steps for `/metrics`).
pub type ObserverFactory = Arc<dyn Fn() -> Box<dyn super::options::Observer> + Send + Sync>;

/// How a worker behaves.
#[derive(Clone)]
pub struct Config {
    /// How many runs it drives at once.
    pub concurrency: usize,
    /// How often it looks for due runs while it has room for more (it also looks each time a run
    /// it drives parks or ends).
    pub poll: Duration,
    /// How long, once told to stop, its runs may take to reach a park or their end; after that they
    /// are stopped where they are and left to another worker (as if this one had died).
    pub grace: Duration,
    /// Recorded with every event it journals.
    pub actor: String,
    pub profile: Option<super::connections::Profile>,
    /// How many independent steps of one run may run at once.
    pub max_parallel: usize,
    /// Watches each driven run (none: nothing watches).
    pub observer: Option<ObserverFactory>,
    /// Told when this process made a run due (a server queued one, or an answer woke one): the
    /// worker looks at once instead of at its next poll.
    pub nudge: Option<Arc<tokio::sync::Notify>>,
}

/// Where a worker's progress goes: one line per claim, park, end, and problem.
pub trait Log: Send + Sync {
    fn line(&self, event: &str, fields: &[(&str, &str)]);
}

/// Progress as logfmt lines on stderr: `ts=... worker=... event=claim run=... runbook=...`.
pub struct Stderr {
    pub worker: String,
}

impl Log for Stderr {
    fn line(&self, event: &str, fields: &[(&str, &str)]) {
        let mut line = format!(
            "ts={} worker={} event={event}",
            now_ms(),
            logfmt(&self.worker)
        );
        for (k, v) in fields {
            line.push_str(&format!(" {k}={}", logfmt(v)));
        }
        eprintln!("{line}");
    }
}

/// A logfmt value: bare when it can be, quoted otherwise.
fn logfmt(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=')
    {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

/// What a driver task gives back: the run, and how driving it ended.
type Driven = (String, Result<RunOutcome, DriverError>);

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub claimed: u64,
    pub finished: u64,
    pub parked: u64,
    /// Runs stopped at the end of the grace time, left for another worker.
    pub handed_over: u64,
}

/// The name this worker's leases are held under (also its `worker=` in log lines).
pub fn holder() -> Holder {
    Holder::this_process()
}

/// Claims and drives due runs until `stop` is cancelled; then stops claiming, lets the runs it
/// drives reach their next park or end (handing the others on, due at once) within the grace time,
/// and returns.
pub async fn run(
    store: Arc<dyn Store>,
    engine: crate::Engine,
    cfg: Config,
    me: Holder,
    stop: CancellationToken,
    log: Arc<dyn Log>,
) -> Summary {
    let name = me.encode();
    let drain = CancellationToken::new();
    let mut tasks: JoinSet<Driven> = JoinSet::new();
    let mut driving: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut sum = Summary::default();
    let concurrency = cfg.concurrency.max(1);
    log.line(
        "start",
        &[
            ("concurrency", &concurrency.to_string()),
            ("poll_ms", &cfg.poll.as_millis().to_string()),
        ],
    );
    let mut last_look = None;
    while !stop.is_cancelled() {
        let room = concurrency.saturating_sub(tasks.len());
        if room > 0 {
            let look = last_look.is_none_or(|t: tokio::time::Instant| t.elapsed() >= DEAD_LOOK);
            if look {
                last_look = Some(tokio::time::Instant::now());
                expire_the_dead(store.as_ref(), &me, log.as_ref()).await;
            }
            let limit = i64::try_from(room).unwrap_or(i64::MAX);
            let claimed_at = now_ms();
            match store.claim(&name, claimed_at, lease::TTL_MS, limit).await {
                Ok(claimed) => {
                    for c in claimed {
                        sum.claimed += 1;
                        let why = if c.took_over { "orphaned" } else { "due" };
                        log.line(
                            "claim",
                            &[("run", &c.run_id), ("runbook", &c.runbook), ("why", why)],
                        );
                        let drive = drive(
                            Arc::clone(&store),
                            engine.clone(),
                            &cfg,
                            me.clone(),
                            drain.clone(),
                            c.run_id.clone(),
                            claimed_at,
                        );
                        let handle = tasks.spawn(drive);
                        driving.insert(handle.id(), c.run_id);
                    }
                }
                Err(e) => log.line("error", &[("during", "claim"), ("error", &e.to_string())]),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                ended(joined, &mut driving, &mut sum, log.as_ref());
            }
            _ = tokio::time::sleep(cfg.poll) => {}
            _ = async { match &cfg.nudge { Some(n) => n.notified().await, None => std::future::pending().await } } => {}
        }
    }
    drain.cancel();
    log.line("stopping", &[("driving", &tasks.len().to_string())]);
    let deadline = tokio::time::Instant::now() + cfg.grace;
    loop {
        tokio::select! {
            joined = tasks.join_next_with_id() => match joined {
                Some(j) => ended(j, &mut driving, &mut sum, log.as_ref()),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Dropping a driver kills its steps' processes; what was in flight is in flight
                // in the journal, for the next claimer's recovery.
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                for run in driving.values() {
                    sum.handed_over += 1;
                    // Expired rather than released: a running run with an expired lease is an
                    // orphan to every claimer at once.
                    let _ = store.renew_lease(run, &name, 0).await;
                    log.line("handed_over", &[("run", run)]);
                }
                break;
            }
        }
    }
    log.line(
        "stopped",
        &[
            ("claimed", &sum.claimed.to_string()),
            ("finished", &sum.finished.to_string()),
            ("parked", &sum.parked.to_string()),
            ("handed_over", &sum.handed_over.to_string()),
        ],
    );
    sum
}

/// How often a worker looks for lease holders of its own host that died.
const DEAD_LOOK: Duration = Duration::from_secs(1);

/// Ends the leases of holders that are certainly dead processes of this host (another worker that
/// was killed, a `runbook run` that crashed), as `resume` would take them over, so their runs are
/// claimed now rather than when the leases expire. Holders elsewhere are waited out.
async fn expire_the_dead(store: &dyn Store, me: &Holder, log: &dyn Log) {
    let holders = match store.lease_holders(now_ms()).await {
        Ok(h) => h,
        Err(e) => {
            log.line("error", &[("during", "leases"), ("error", &e.to_string())]);
            return;
        }
    };
    for h in holders
        .iter()
        .filter(|h| lease::is_dead(me, h, lease::start_time))
    {
        match store.expire_leases_of(h).await {
            Ok(0) => {}
            Ok(n) => log.line(
                "dead_holder",
                &[("holder", &Holder::describe(h)), ("leases", &n.to_string())],
            ),
            Err(e) => log.line("error", &[("during", "leases"), ("error", &e.to_string())]),
        }
    }
}

/// Drives one claimed run, as `runbook resume` would, parking whenever it only waits.
fn drive(
    store: Arc<dyn Store>,
    engine: crate::Engine,
    cfg: &Config,
    me: Holder,
    drain: CancellationToken,
    run_id: String,
    claimed_at: i64,
) -> impl std::future::Future<Output = Driven> + Send + 'static {
    let mut opts = RunOptions::new(&cfg.actor);
    opts.detach = true;
    opts.holder = Some(me);
    opts.claimed_at_ms = Some(claimed_at);
    opts.drain = drain;
    opts.profile = cfg.profile.clone();
    opts.max_parallel = cfg.max_parallel;
    let hooks = match &cfg.observer {
        Some(make) => Hooks {
            observer: make(),
            answers: None,
        },
        None => Hooks::quiet(),
    };
    async move {
        let r = super::launch::resume(store, &engine, &run_id, Vec::new(), None, opts, hooks).await;
        (run_id, r)
    }
}

fn ended(
    joined: Result<(tokio::task::Id, Driven), tokio::task::JoinError>,
    driving: &mut HashMap<tokio::task::Id, String>,
    sum: &mut Summary,
    log: &dyn Log,
) {
    let (id, (run, result)) = match joined {
        Ok(done) => done,
        Err(e) => {
            let run = driving.remove(&e.id()).unwrap_or_default();
            log.line("error", &[("run", &run), ("error", &e.to_string())]);
            return;
        }
    };
    driving.remove(&id);
    match result {
        Ok(o) => {
            let event = match o.status {
                RunStatus::Parked | RunStatus::Waiting => {
                    sum.parked += 1;
                    "park"
                }
                _ => {
                    sum.finished += 1;
                    "finish"
                }
            };
            log.line(event, &[("run", &run), ("status", o.status.as_str())]);
        }
        // A run refused (its journal does not verify, its runbook no longer validates) keeps the
        // claim's lease until it expires: it is tried again then, not in a tight loop.
        Err(e) => log.line("error", &[("run", &run), ("error", &e.to_string())]),
    }
}

#[cfg(test)]
mod tests {
    use super::logfmt;

    #[test]
    fn log_values_are_quoted_only_when_they_must_be() {
        assert_eq!(logfmt("0198abc"), "0198abc");
        assert_eq!(logfmt("host/42"), "host/42");
        assert_eq!(logfmt(""), "\"\"");
        assert_eq!(logfmt("lost the lease"), "\"lost the lease\"");
        assert_eq!(logfmt("a=b"), "\"a=b\"");
        assert_eq!(logfmt("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }
}
