//! `runbook serve`: the HTTP server (Alertmanager webhook, JSON API, health, metrics) and, unless
//! `--no-worker`, a worker beside it.

use super::worker::{WorkerArgs, stop_signal};
use super::{Failure, Global, actor, exit, open_store};
use crate::run::worker::Config as WorkerConfig;
use crate::runbook::catalog::Catalog;
use crate::serve::{self, Config, auth::Auth, auth::Caller, auth::Role};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub const AFTER_HELP: &str = "\
Examples:
  runbook --db postgres://runbook@db/runbook serve --listen 0.0.0.0:8080 --tokens /etc/runbook/tokens.toml
  runbook serve --no-auth                      # on 127.0.0.1 only: every caller may do everything

Routes:
  POST /hooks/alertmanager   Alertmanager's webhook (payload version 4); operator role
  GET  /api/v1/runs ...      the JSON API, described at /openapi.json
  GET  /healthz  /readyz     alive; ready (the database answers)
  GET  /metrics              the engine's own metrics, for Prometheus

The tokens file lists who may call, with roles viewer (read), operator (start, cancel, resume,
plan; post alerts) and approver (approve, deny). It holds each token's SHA-256 or a reference to
where the token is (an environment variable or a file), never the token itself:

  [[token]]
  subject = \"alertmanager\"
  roles = [\"operator\"]
  token = 'secret(\"RUNBOOK_TOKEN_ALERTMANAGER\")'   # env var, or RUNBOOK_TOKEN_ALERTMANAGER_FILE

  [[token]]
  subject = \"alice\"
  roles = [\"viewer\", \"approver\"]
  sha256 = \"...\"                                    # printf %s TOKEN | sha256sum

The subject is recorded as the actor of everything a token does. Runbooks are read once at start
from ./runbooks and RUNBOOK_PATH; a file that does not validate is logged and not served.
On SIGTERM or Ctrl-C the server stops taking requests and its worker parks its runs (see
`runbook worker --help`); nothing in flight is lost. Logs go to stderr (RUNBOOK_LOG=debug for more).";

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "RUNBOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The tokens file (TOML): who may call, with which roles.
    #[arg(
        long,
        env = "RUNBOOK_TOKENS_FILE",
        value_name = "FILE",
        required_unless_present = "no_auth"
    )]
    pub tokens: Option<PathBuf>,
    /// Accept every request without a token, as one caller with every role. Only on a loopback
    /// address (127.0.0.1, ::1): for a laptop or a test, never for a shared server.
    #[arg(long, conflicts_with = "tokens")]
    pub no_auth: bool,
    /// Do not drive runs here; `runbook worker` processes on the same database do.
    #[arg(long)]
    pub no_worker: bool,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("RUNBOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    // A second initialisation (in tests that call this twice) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub async fn serve(g: &Global, args: ServeArgs, engine: crate::Engine) -> Result<i32, Failure> {
    let auth = match (&args.tokens, args.no_auth) {
        (Some(path), _) => Auth::load(path).map_err(|e| Failure::invalid(e.to_string()))?,
        (None, true) => {
            if !args.listen.ip().is_loopback() {
                return Err(Failure::invalid(format!(
                    "--no-auth is only allowed on a loopback address, not {}: give --tokens FILE",
                    args.listen
                )));
            }
            Auth::Open(Caller {
                subject: actor(g),
                roles: [Role::Viewer, Role::Operator, Role::Approver].into(),
            })
        }
        (None, false) => {
            return Err(Failure::invalid(
                "give --tokens FILE (who may call), or --no-auth on a loopback address",
            ));
        }
    };
    init_logs(args.log_format);
    let store = open_store(g).await?;
    let profile = crate::run::connections::load_profile(g.config.as_deref(), g.profile.as_deref())
        .map_err(Failure::invalid)?;
    let catalog = Catalog::load(&engine);
    if catalog.entries.is_empty() {
        tracing::warn!(
            dirs = ?crate::runbook::find::search_dirs(),
            "no runbook found to serve (set RUNBOOK_PATH)"
        );
    }
    let worker = (!args.no_worker).then(|| WorkerConfig {
        concurrency: usize::from(args.worker.concurrency),
        poll: args.worker.poll,
        grace: args.worker.grace,
        actor: actor(g),
        profile: profile.clone(),
        max_parallel: usize::from(args.worker.max_parallel),
        observer: None,
        nudge: None,
    });
    let cfg = Config {
        listen: args.listen,
        auth,
        worker,
        profile,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("stopping: no new requests; runs park");
        on_signal.cancel();
    });
    serve::serve(cfg, Arc::clone(&store), engine, catalog, stop, None)
        .await
        .map_err(|e| Failure {
            code: exit::ENVIRONMENT,
            message: e.to_string(),
        })?;
    Ok(exit::OK)
}
