//! `runbook serve`: an HTTP server over one database — the Alertmanager webhook that starts runs,
//! the JSON API (described at `/openapi.json`), health and `/metrics` — with a worker driving the
//! runs it queues (unless `--no-worker`: then other `runbook worker` processes do).
//!
//! The server holds no run state of its own: a request journals (a queued run, an approval answer,
//! a cancel request) and answers; workers, this one or others, drive. So a server can be stopped at
//! any moment, and several can share one PostgreSQL.

mod api;
pub mod auth;
pub mod error;
mod hooks;
pub mod metrics;
pub mod wire;

use crate::run::connections::Profile;
use crate::run::worker;
use crate::runbook::catalog::Catalog;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use api::openapi;

/// How a server behaves.
pub struct Config {
    pub listen: SocketAddr,
    pub auth: auth::Auth,
    /// The worker this process runs beside the server (`None`: `--no-worker`).
    pub worker: Option<worker::Config>,
    pub profile: Option<Profile>,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: crate::Engine,
    pub catalog: Arc<Catalog>,
    pub auth: Arc<auth::Auth>,
    pub metrics: Arc<metrics::Metrics>,
    pub profile: Option<Profile>,
    /// Wakes this server's worker when a request made a run due.
    pub nudge: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// A request made a run due: this server's worker (if any) looks now, not at its next poll.
    pub fn made_due(&self) {
        self.nudge.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until `stop` is cancelled; then stops taking requests, lets the ones in progress finish,
/// and drains its worker (its runs park or end, or are left to other workers after the grace time).
/// `ready` is told the address once the server listens (useful with port 0).
pub async fn serve(
    cfg: Config,
    store: Arc<dyn Store>,
    engine: crate::Engine,
    catalog: Catalog,
    stop: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Listen {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::new());
    let nudge = Arc::new(tokio::sync::Notify::new());
    for r in &catalog.refused {
        tracing::error!(file = %r.path, errors = %r.errors, "runbook not served: it does not validate");
    }
    tracing::info!(
        %addr,
        runbooks = catalog.entries.len(),
        refused = catalog.refused.len(),
        worker = cfg.worker.is_some(),
        "listening"
    );
    let state = AppState {
        store: Arc::clone(&store),
        engine: engine.clone(),
        catalog: Arc::new(catalog),
        auth: Arc::new(cfg.auth),
        metrics: Arc::clone(&metrics),
        profile: cfg.profile,
        nudge: Arc::clone(&nudge),
    };
    let worker_task = cfg.worker.map(|mut wcfg| {
        let m = Arc::clone(&metrics);
        wcfg.nudge = Some(Arc::clone(&nudge));
        wcfg.observer = Some(Arc::new(move || {
            Box::new(metrics::StepTimer::new(Arc::clone(&m)))
                as Box<dyn crate::run::options::Observer>
        }));
        let log = Arc::new(Log {
            metrics: Arc::clone(&metrics),
        });
        tokio::spawn(worker::run(
            Arc::clone(&store),
            engine.clone(),
            wcfg,
            worker::holder(),
            stop.clone(),
            log,
        ))
    });
    let scheduler = tokio::spawn(schedules(state.clone(), stop.clone()));
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let app = api::router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    let _ = scheduler.await;
    // The worker stops on the same token; its runs park within its grace time.
    if let Some(task) = worker_task {
        match task.await {
            Ok(sum) => tracing::info!(
                claimed = sum.claimed,
                finished = sum.finished,
                parked = sum.parked,
                handed_over = sum.handed_over,
                "worker stopped"
            ),
            Err(e) => tracing::error!(error = %e, "worker task failed"),
        }
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// The longest the scheduler sleeps: it also looks again this often, in case another server's
/// record of a fire changed what is due (and a fire is never later than this).
const SCHEDULE_LOOK: std::time::Duration = std::time::Duration::from_secs(5);

/// Fires the served runbooks' schedules as they come due, until `stop`.
async fn schedules(s: AppState, stop: CancellationToken) {
    use crate::schedule::tick::{Outcome, next_fire, tick};
    if next_fire(&s.catalog, crate::run::event::now_ms()).is_none() {
        return;
    }
    loop {
        match tick(
            s.store.as_ref(),
            &s.engine,
            &s.catalog,
            s.profile.as_ref(),
            crate::run::event::now_ms(),
        )
        .await
        {
            Ok(outcomes) => {
                for o in outcomes {
                    match &o {
                        Outcome::Started {
                            runbook,
                            expression,
                            run,
                            ..
                        } => {
                            tracing::info!(%runbook, %expression, %run, "schedule started a run");
                            s.made_due();
                        }
                        Outcome::Refused {
                            runbook,
                            expression,
                            reason,
                            ..
                        } => {
                            tracing::warn!(%runbook, %expression, %reason, "a scheduled run could not be created");
                        }
                        Outcome::Baseline {
                            runbook,
                            expression,
                            ..
                        } => {
                            tracing::info!(%runbook, %expression, "schedule seen for the first time: it counts from now");
                        }
                        Outcome::Taken {
                            runbook,
                            expression,
                            ..
                        } => {
                            tracing::debug!(%runbook, %expression, "another server fired this schedule");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "schedules: the database failed"),
        }
        let now = crate::run::event::now_ms();
        let until = next_fire(&s.catalog, now).map_or(SCHEDULE_LOOK, |at| {
            std::time::Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
                .min(SCHEDULE_LOOK)
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(until) => {}
        }
    }
}

/// The worker's lines as structured log events, counting lease takeovers.
struct Log {
    metrics: Arc<metrics::Metrics>,
}

impl worker::Log for Log {
    fn line(&self, event: &str, fields: &[(&str, &str)]) {
        let field = |k: &str| fields.iter().find(|(n, _)| *n == k).map_or("", |(_, v)| *v);
        if event == "claim" && field("why") == "orphaned" {
            self.metrics.takeovers.inc();
        }
        let rendered: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let detail = rendered.join(" ");
        match event {
            "error" => tracing::error!(target: "runbook::worker", "{event} {detail}"),
            "dead_holder" | "handed_over" => {
                tracing::warn!(target: "runbook::worker", "{event} {detail}")
            }
            _ => tracing::info!(target: "runbook::worker", "{event} {detail}"),
        }
    }
}
