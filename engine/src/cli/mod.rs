//! The `runbook` command line.

pub mod audit;
pub mod cancel;
pub mod drive;
use crate::runbook::find;
pub mod graph;
pub mod plugins;
pub mod progress;
pub mod prune;
pub mod remote;
pub mod schedules;
pub mod schema;
pub mod serve;
pub mod show;
pub mod worker;

use crate::diag::Report;
use crate::expr::Expr;
use crate::runbook::plan::Plan;
use crate::runbook::validate::check;
use crate::store::{self, Store};
use clap::{Args, Parser, Subcommand, ValueEnum};
use runbook_steps::Registry;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUN_FAILED: i32 = 1;
    pub const INVALID: i32 = 2;
    pub const ENVIRONMENT: i32 = 3;
    pub const WAITING: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

const AFTER_HELP: &str = "\
Examples:
  runbook validate runbooks/examples/service-health.yaml
  runbook run service-health --param disk_path=/var --param disk_max_pct=80
  runbook runs
  runbook show 01a20e91cbf5
  runbook graph service-health --format mermaid
  RUNBOOK_TOKEN=... runbook runs --server https://runbook.internal:8080

Runbooks are found by NAME in ./runbooks (and its subdirectories) and in RUNBOOK_PATH, or given as a file.
Runs are recorded in SQLite at --db (default: $XDG_STATE_HOME/runbook/runbook.db), or in PostgreSQL
with --db postgres://USER@HOST/DATABASE. With --server URL (or RUNBOOK_SERVER), `runs`, `show`,
`run`, `approve` and `deny` go through a `runbook serve` instead, with the bearer token in
RUNBOOK_TOKEN or a --token-file; the other commands that read runs need the database.

Exit codes:
  0    success (the run succeeded; the runbooks are valid)
  1    the run failed (a step failed and the run stopped or ended failed)
  2    invalid input: a bad runbook, parameter or command line
  3    environment: the database cannot be opened or written; the server (--server) cannot be
       reached, fails, or refuses the token
  4    the run waits for an operator (a step's outcome is unknown after a crash; see `runbook resume`)
  130  interrupted (Ctrl-C); the run is recorded as interrupted";

#[derive(Parser, Debug)]
#[command(
    name = "runbook",
    version,
    about = "Run operations runbooks written as declarative YAML DAGs, durably and auditably.",
    long_about = "Run operations runbooks written as declarative YAML DAGs: diagnose, branch on what the diagnosis found, resolve, verify. Every step is run by a typed plugin; every run is journaled (hash-chained) in SQLite so it can be reviewed afterwards.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
    /// The ids of the arguments typed on the command line, as opposed to taken from the
    /// environment or defaults: `--server` refuses some flags, but not the same settings in the
    /// environment, which serve the local commands.
    #[arg(skip)]
    pub typed: BTreeSet<String>,
}

impl Cli {
    /// Parses the process's arguments (exiting with clap's message when they are wrong), noting
    /// which were typed.
    pub fn from_args() -> Cli {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let matches = cmd.get_matches_mut();
        let mut cli =
            <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.typed = typed(&matches);
        // Left for the process's exit to free: dropping clap's tree of every command was ~3% of a
        // one-step run's instructions.
        std::mem::forget(cmd);
        cli
    }
}

fn typed(m: &clap::ArgMatches) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = m
        .ids()
        .filter(|id| {
            matches!(
                m.value_source(id.as_str()),
                Some(clap::parser::ValueSource::CommandLine)
            )
        })
        .map(|id| id.to_string())
        .collect();
    if let Some((_, sub)) = m.subcommand() {
        out.extend(typed(sub));
    }
    out
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where runs are recorded: a SQLite file path, or a PostgreSQL URL
    /// (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE).
    #[arg(long, global = true, env = "RUNBOOK_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Who is acting, recorded with every event (default: the OS user).
    #[arg(long, global = true, env = "RUNBOOK_ACTOR")]
    pub actor: Option<String>,
    /// Connection settings to use: a profile of the profile file (`[profiles.NAME.connections.CONN]`),
    /// overriding the runbook's `connections:` field by field.
    #[arg(long, global = true, env = "RUNBOOK_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// The profile file (default: ./runbook.toml, else runbook.toml in the user config directory).
    #[arg(long, global = true, env = "RUNBOOK_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Go through the `runbook serve` at this URL instead of the database: `runs`, `show`, `run`,
    /// `approve` and `deny` call its API. The bearer token comes from RUNBOOK_TOKEN or --token-file.
    #[arg(long, global = true, env = "RUNBOOK_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// With --server: the file that holds the bearer token (default: the RUNBOOK_TOKEN environment
    /// variable). No flag takes the token itself: `ps` would show it to every user.
    #[arg(long, global = true, env = "RUNBOOK_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format: human-readable text, or JSON on stdout for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one typed (clap's `defer`): building
// all twenty of them, and copying the global flags into each, was 0.7 M of a one-step run's 4.8 M
// instructions. Help and completion build what they show.
#[command(defer = true)]
pub enum Command {
    /// Check runbooks without running anything; prints every problem with its location.
    #[command(
        after_help = "Examples:\n  runbook validate runbooks/examples/*.yaml\n  runbook validate service-health\n\nExit code 0 when every runbook is valid, 2 otherwise."
    )]
    Validate {
        /// Runbook files or names.
        #[arg(required = true, value_name = "NAME|FILE")]
        runbooks: Vec<String>,
    },
    /// Run a runbook and record the run.
    #[command(
        after_help = "Examples:\n  runbook run service-health\n  runbook run service-health --param disk_max_pct=95 --yes\n  runbook run ./my-runbook.yaml -o json\n  runbook run model-degraded -p specialist_type=technical --idempotency-key deploy-42 \\\n    --server https://runbook.internal:8080 --token-file ~/.config/runbook/token\n\nSteps marked `approval: required` ask y/N on the terminal; --yes approves them unattended.\nAny other terminal or script may answer too: runbook approve RUN STEP / runbook deny RUN STEP.\nWithout a terminal the run waits for such an answer (or parks at once with --detach).\nCtrl-C stops the run; it is recorded as interrupted.\n\nWith --server, NAME is a runbook the server serves: the run is queued there (as --queue does\nhere), driven by the server's workers with the server's connections, and its id is printed.\nThe token needs the operator role; its subject is the run's actor. --idempotency-key makes a\nretried command return the run the first one started. --yes, --detach, --max-parallel, --actor\nand --profile are refused with --server."
    )]
    Run(RunArgs),
    /// Show what a run would change, without changing anything: reads run for real, branches decide
    /// on real data, every step that would act says what it would do instead.
    #[command(
        after_help = "Examples:\n  runbook plan service-health\n  runbook plan model-degraded --profile prod -p specialist_type=technical\n\n`read` steps run (they change nothing); `idempotent` and `unsafe` steps ask their plugin what\nthey would change (a command line, a request, before -> after) and do not act; waits are not\nwaited; steps after a planned change are planned too. Nothing asks for approval. The plan is\nrecorded as a run of kind `plan` (runbook show / audit), which is never resumed.\n\nExit code 0 when the plan is complete, 1 when a read step failed."
    )]
    Plan(PlanArgs),
    /// List the runbooks found in ./runbooks and RUNBOOK_PATH.
    List,
    /// List recent runs.
    #[command(
        after_help = "Examples:\n  runbook runs -n 50\n  runbook runs --resumable\n  runbook runs --server https://runbook.internal:8080 --token-file ~/.config/runbook/token\n\nWith --server the runs come from the server's database, rendered the same way (any token\nrole may read; at most 1000 at once); --resumable needs the database itself."
    )]
    Runs {
        /// How many runs to show.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: i64,
        /// Only runs that can be resumed: interrupted, waiting for an operator, or left running by a
        /// process that stopped.
        #[arg(long)]
        resumable: bool,
    },
    /// Show one run: its steps with status, attempts, durations, decisions and errors.
    #[command(
        after_help = "RUN is a run id or a unique prefix of one (see `runbook runs`).\n\nExamples:\n  runbook show 01a20e91cbf5\n  runbook show 01a20e91cbf5 --events -o json\n  runbook show 01a20e91cbf5 --server https://runbook.internal:8080 --token-file ~/.config/runbook/token\n\nWith --server the run is read through the server's API and shown exactly as it is here."
    )]
    Show {
        /// Run id or unique id prefix.
        run: String,
        /// Also list every journal event.
        #[arg(long)]
        events: bool,
    },
    /// Print a runbook's DAG as Mermaid or Graphviz dot.
    Graph {
        #[arg(value_name = "NAME|FILE")]
        runbook: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the runbook format, for editor completion and checking as you type.
    #[command(after_help = schema::AFTER_HELP)]
    Schema {
        /// Write the schema to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the plugins (`uses:`) this build knows, or describe one.
    Plugins {
        /// A plugin name, e.g. shell.run.
        name: Option<String>,
        /// Print the whole reference as Markdown (every plugin and connection kind): the source of
        /// docs/plugins.md.
        #[arg(long, conflicts_with = "name")]
        markdown: bool,
    },
    /// Start a new run that re-runs an earlier one from a step, reusing what came before it.
    #[command(
        after_help = "Steps that are neither STEP nor downstream of it are not run again when, in the earlier run,\nthey succeeded, were skipped, or failed with `on_failure: continue` (a failure the runbook lets\nthe run go past): their outcomes, results, outputs and branch choices are reused (and shown as\nreused). Any other step runs. The earlier run's journal must verify (see `runbook audit verify`).\nThe new run records which run it re-runs. Parameters are the earlier run's; --param overrides.\n\nExample:\n  runbook rerun 01a20e91cbf5 --from verify_load"
    )]
    Rerun(RerunArgs),
    /// Continue a run that stopped (crash, Ctrl-C) or waits for an operator.
    #[command(
        after_help = "Completed steps are never run again and recorded decisions stand. A `read` or `idempotent`\nstep that was running when the run stopped is run again; an `unsafe` one becomes `unknown` and\nthe run waits until you say what happened:\n  runbook resume 01a20e91cbf5 --mark-done restart   # it did act\n  runbook resume 01a20e91cbf5 --retry restart       # run it again\n  runbook resume 01a20e91cbf5 --mark-failed restart # treat it as failed\nEach decision is journaled with who made it (--actor).\n\nExit codes as for `run`, plus 4: the run waits for an operator."
    )]
    Resume(ResumeArgs),
    /// Approve a step that waits for approval, from any terminal or script.
    #[command(
        after_help = "Examples:\n  runbook approve 01a20e91cbf5 restart_pods --comment \"checked the dashboards\"\n  RUNBOOK_SERVER=https://runbook.internal:8080 RUNBOOK_TOKEN_FILE=~/.config/runbook/token \\\n    runbook approve 01a20e91cbf5 restart_pods\n\nThe answer is recorded with who gave it (--actor, else the OS user); the runbook may limit who\nmay answer (`approval: { approvers: [...], distinct_from_initiator: true }`). The first answer\nto a request wins. A run driven by a process picks the answer up within a second; a parked run\ngoes on with `runbook resume RUN`.\n\nWith --server the answer goes through the server: it is recorded as the token's subject, which\nneeds the approver role, and the server's workers continue a parked run."
    )]
    Approve {
        #[command(flatten)]
        target: AnswerArgs,
        /// A note kept with the approval.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a step that waits for approval: it fails (kind `approval`) with your reason.
    #[command(
        after_help = "Examples:\n  runbook deny 01a20e91cbf5 restart_pods --reason \"traffic peak, retry after 18:00\"\n  runbook deny 01a20e91cbf5 restart_pods --reason \"not now\" --server https://runbook.internal:8080\n\nWith --server the denial is recorded as the token's subject (RUNBOOK_TOKEN or --token-file),\nwhich needs the approver role."
    )]
    Deny {
        #[command(flatten)]
        target: AnswerArgs,
        /// Why, recorded in the journal and shown in the step's failure.
        #[arg(long, required = true)]
        reason: String,
    },
    /// Cancel a run, wherever it is driven: what runs is stopped, nothing more starts, the run fails.
    #[command(after_help = cancel::AFTER_HELP)]
    Cancel(cancel::CancelArgs),
    /// Review what a run did, from its journal: a timeline or a report; verify journals; export them.
    #[command(
        args_conflicts_with_subcommands = true,
        arg_required_else_help = true,
        after_help = "Examples:\n  runbook audit 01a20e91cbf5                     # every event: when, who, what\n  runbook audit 01a20e91cbf5 --format markdown   # a report for review\n  runbook audit 01a20e91cbf5 -o json\n  runbook audit verify --all\n  runbook audit export --since 24h > events.jsonl\n\nExit code 0 when the run's journal verifies, 1 when it does not (the timeline is printed either way)."
    )]
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        /// Run id or unique id prefix.
        run: Option<String>,
        /// text: a timeline of every event; markdown: a report for review; json: both, structured.
        #[arg(long, value_enum, default_value_t = audit::AuditFormat::Text)]
        format: audit::AuditFormat,
    },
    /// Claim and drive runs that are due, alongside any number of other workers on one database.
    #[command(after_help = worker::AFTER_HELP)]
    Worker(worker::WorkerArgs),
    /// Serve the Alertmanager webhook and the HTTP API, with a worker driving the runs.
    #[command(after_help = serve::AFTER_HELP)]
    Serve(serve::ServeArgs),
    /// List the scheduled runbooks (`triggers.schedule`): last fire, the run it started, next fire.
    #[command(after_help = schedules::AFTER_HELP)]
    Schedules,
    /// Delete runs that finished (succeeded or failed) long ago, with their journals.
    #[command(
        after_help = "Examples:\n  runbook prune --older-than 90d --dry-run\n  runbook prune --older-than 13w\n\nA run is deleted whole (its row, every event, its lease) or not at all, so every journal left\nstill verifies. Running, waiting and interrupted runs are never deleted, however old.\nAGE: 90d, 2w, 36h, 1h30m; days and weeks count 24 hours."
    )]
    Prune {
        /// Delete runs that finished more than this long ago.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct RerunArgs {
    /// Run id or unique id prefix.
    pub run: String,
    /// The step to start again from.
    #[arg(long, value_name = "STEP")]
    pub from: String,
    /// Override a parameter, as name=value (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub drive: DriveArgs,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// Run id or unique id prefix.
    pub run: String,
    /// Run this unknown step again.
    #[arg(long, value_name = "STEP")]
    pub retry: Vec<String>,
    /// Record this unknown step as done (it acted) without running it.
    #[arg(long, value_name = "STEP")]
    pub mark_done: Vec<String>,
    /// Record this unknown step as failed.
    #[arg(long, value_name = "STEP")]
    pub mark_failed: Vec<String>,
    /// Continue with the runbook file as it is now, if it changed since the run started (the
    /// default is the exact text stored with the run). The switch and the new text are journaled.
    #[arg(long)]
    pub use_current: bool,
    #[command(flatten)]
    pub drive: DriveArgs,
}

// How a run is driven and watched: `run`, `rerun` and `resume` take the same flags. Not a doc
// comment: with deferred subcommands, a flattened struct's doc would replace the command's about.
#[derive(Args, Debug, Clone)]
pub struct DriveArgs {
    /// Approve every step that requires approval, unattended (recorded as approved by --actor).
    #[arg(long)]
    pub yes: bool,
    /// Park the run as soon as it only waits (a timer, a poll's next probe, a retry's backoff, an
    /// approval) and exit with code 4; `runbook resume RUN` continues it later, from any process.
    #[arg(long)]
    pub detach: bool,
    /// How many independent steps may run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_parallel: u16,
    /// No live progress on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// Run id or unique id prefix.
    pub run: String,
    /// The step whose approval request to answer.
    pub step: String,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum AuditCommand {
    /// Recompute runs' hash chains and runbook hashes; names the first event that does not verify.
    #[command(
        after_help = "Examples:\n  runbook audit verify 01a20e91cbf5\n  runbook audit verify --all\n\nExit code 0 when everything verifies, 1 when a run does not."
    )]
    Verify {
        /// Run id or unique id prefix (or --all).
        #[arg(conflicts_with = "all")]
        run: Option<String>,
        /// Every run in the database.
        #[arg(long)]
        all: bool,
    },
    /// Every event of every run in a time window, as JSON Lines on stdout (for a SIEM).
    #[command(
        after_help = "Examples:\n  runbook audit export --since 24h\n  runbook audit export --since 7d --until 1d\n  runbook audit export --since 2025-03-01T00:00:00Z --until 2025-04-01T00:00:00Z\n\nWHEN is an age (24h, 7d, 2w) before now or an RFC 3339 time; --since is inclusive, --until\nexclusive. Without --since, from the first event. One object per line, ordered by time:\n  run, runbook, seq, at_ms, at (RFC 3339), actor, kind, step, prev_hash, hash, data\n`data` is the event exactly as hashed: hash = sha256 over prev_hash, run, seq, at_ms, actor and\ndata, each followed by a NUL byte. Event times are the writer's clock and a batch is committed\nafter it is timed, so overlap consecutive windows a little and drop duplicates by (run, seq)."
    )]
    Export {
        /// From this time on (inclusive).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Up to this time (exclusive).
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Runbook name (looked up in ./runbooks and RUNBOOK_PATH) or file.
    #[arg(value_name = "NAME|FILE")]
    pub runbook: String,
    /// A parameter, as name=value (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Do not drive the run here: record it, due at once, for a `runbook worker` to claim, and
    /// print its id.
    #[arg(long, conflicts_with_all = ["yes", "detach"])]
    pub queue: bool,
    /// With --server: a key that makes a retried request return the run the first one started
    /// instead of starting another (the API's Idempotency-Key header), e.g. a deploy's id.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub drive: DriveArgs,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Runbook name (looked up in ./runbooks and RUNBOOK_PATH) or file.
    #[arg(value_name = "NAME|FILE")]
    pub runbook: String,
    /// A parameter, as name=value (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// How many independent steps may run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_parallel: u16,
    /// No live progress on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// An error that has already decided its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn invalid(m: impl Into<String>) -> Failure {
        Failure {
            code: exit::INVALID,
            message: m.into(),
        }
    }
    fn env(m: impl std::fmt::Display) -> Failure {
        Failure {
            code: exit::ENVIRONMENT,
            message: m.to_string(),
        }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Failure {
        match e {
            store::StoreError::NoSuchRun(_) | store::StoreError::Ambiguous { .. } => {
                Failure::invalid(e.to_string())
            }
            other => Failure::env(other),
        }
    }
}

fn color() -> bool {
    std::io::stderr().is_terminal() && console::colors_enabled_stderr()
}

pub fn default_db() -> Result<PathBuf, Failure> {
    directories::ProjectDirs::from("", "", "runbook")
        .map(|d| {
            d.state_dir()
                .unwrap_or_else(|| d.data_local_dir())
                .join("runbook.db")
        })
        .ok_or_else(|| {
            Failure::env("cannot find a home directory for the default database; pass --db PATH")
        })
}

async fn open_store(g: &Global) -> Result<Arc<dyn Store>, Failure> {
    let (db, create) = match &g.db {
        Some(db) => (db.clone(), false),
        None => (default_db()?.display().to_string(), true),
    };
    Ok(Arc::from(store::open(&db, create).await?))
}

fn actor(g: &Global) -> String {
    g.actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| whoami::username().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Reads and validates a runbook; diagnostics are printed and turned into exit code 2.
fn load_plan(
    arg: &str,
    registry: &Registry,
    expr: &Expr,
) -> Result<(PathBuf, String, Plan), Failure> {
    let path = find::resolve(arg).map_err(Failure::invalid)?;
    let checked = crate::runbook::source::read(&path).and_then(|text| {
        check(&path.display().to_string(), &text, registry, expr).map(|p| (text, p))
    });
    match checked {
        Ok((text, plan)) => {
            print_warnings(&path.display().to_string(), &text, &plan);
            Ok((path, text, plan))
        }
        Err(report) => {
            eprint!("{}", report.render(color()));
            Err(Failure {
                code: exit::INVALID,
                message: String::new(),
            })
        }
    }
}

pub async fn main(cli: Cli) -> Result<i32, Failure> {
    runbook_steps::init_tls();
    if let Some(url) = cli.global.server.as_deref()
        && let Some(done) = remote::command(&cli, url).await
    {
        return done;
    }
    let registry = Arc::new(Registry::builtin());
    let expr = Arc::new(Expr::new());
    match cli.command {
        Command::Validate { runbooks } => validate(&runbooks, &registry, &expr, cli.global.output),
        Command::Run(args) => drive::run(&cli.global, args, crate::Engine { registry, expr }).await,
        Command::Plan(args) => {
            drive::plan(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::Resume(args) => {
            drive::resume(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::Rerun(args) => {
            drive::rerun(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::Approve { target, comment } => {
            let engine = crate::Engine { registry, expr };
            drive::answer(&cli.global, target, true, comment, engine).await
        }
        Command::Deny { target, reason } => {
            let engine = crate::Engine { registry, expr };
            drive::answer(&cli.global, target, false, Some(reason), engine).await
        }
        Command::Cancel(args) => {
            cancel::cancel(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::Worker(args) => {
            worker::worker(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::Serve(args) => {
            serve::serve(&cli.global, args, crate::Engine { registry, expr }).await
        }
        Command::List => list(&registry, &expr, cli.global.output),
        Command::Schedules => {
            let store = open_store(&cli.global).await?;
            let engine = crate::Engine { registry, expr };
            schedules::schedules(store.as_ref(), &engine, cli.global.output).await
        }
        Command::Runs { limit, resumable } => {
            let store = open_store(&cli.global).await?;
            show::runs(store.as_ref(), limit, resumable, cli.global.output).await
        }
        Command::Show { run, events } => {
            let store = open_store(&cli.global).await?;
            show::show(store.as_ref(), &run, events, cli.global.output).await
        }
        Command::Graph { runbook, format } => {
            let (_, _, plan) = load_plan(&runbook, &registry, &expr)?;
            print!("{}", graph::graph(&plan, format));
            Ok(exit::OK)
        }
        Command::Schema { out } => schema::schema(&registry, out.as_deref()),
        Command::Plugins { markdown: true, .. } => {
            print!("{}", crate::plugin_docs::reference(&registry));
            Ok(exit::OK)
        }
        Command::Plugins { name, .. } => {
            plugins::plugins(&registry, name.as_deref(), cli.global.output)
        }
        Command::Audit {
            command: Some(AuditCommand::Verify { run, all }),
            ..
        } => {
            let store = open_store(&cli.global).await?;
            audit::verify(store.as_ref(), run.as_deref(), all, cli.global.output).await
        }
        Command::Audit {
            command: Some(AuditCommand::Export { since, until }),
            ..
        } => {
            let store = open_store(&cli.global).await?;
            audit::export(store.as_ref(), since.as_deref(), until.as_deref()).await
        }
        Command::Audit {
            command: None,
            run,
            format,
        } => {
            let run = run.ok_or_else(|| {
                Failure::invalid("give a run id, or one of: verify, export (see --help)")
            })?;
            let store = open_store(&cli.global).await?;
            audit::report(store.as_ref(), &run, format, cli.global.output).await
        }
        Command::Prune {
            older_than,
            dry_run,
        } => {
            let store = open_store(&cli.global).await?;
            prune::prune(store.as_ref(), &older_than, dry_run, cli.global.output).await
        }
    }
}

fn validate(
    args: &[String],
    registry: &Registry,
    expr: &Expr,
    format: Format,
) -> Result<i32, Failure> {
    let mut bad = 0;
    let mut results = Vec::new();
    for arg in args {
        let path = match find::resolve(arg) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                results.push(serde_json::json!({"runbook": arg, "valid": false, "errors": [e]}));
                bad += 1;
                continue;
            }
        };
        let file = path.display().to_string();
        match crate::runbook::source::read(&path)
            .and_then(|text| check(&file, &text, registry, expr).map(|p| (text, p)))
        {
            Ok((text, plan)) => {
                print_warnings(&file, &text, &plan);
                if format == Format::Text {
                    println!("ok: {file} ({} steps)", plan.steps.len());
                }
                results.push(
                    serde_json::json!({"runbook": file, "valid": true, "steps": plan.steps.len()}),
                );
            }
            Err(report) => {
                bad += 1;
                eprint!("{}", report.render(color()));
                results.push(report_json(&report));
            }
        }
    }
    if format == Format::Json {
        show::print_json(&results);
    }
    Ok(if bad == 0 { exit::OK } else { exit::INVALID })
}

/// A valid runbook's warnings, on stderr, rendered like its errors would be.
fn print_warnings(file: &str, text: &str, plan: &Plan) {
    if plan.warnings.is_empty() {
        return;
    }
    let report = Report {
        file: file.to_string(),
        source: text.to_string(),
        diagnostics: plan.warnings.clone(),
    };
    eprint!("{}", report.render(color()));
}

fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "runbook": r.file,
        "valid": false,
        "errors": r.diagnostics.iter().map(|d| serde_json::json!({
            "message": d.message,
            "line": d.pos.map(|p| p.line),
            "column": d.pos.map(|p| p.col),
            "help": d.help,
        })).collect::<Vec<_>>(),
    })
}

fn list(registry: &Registry, expr: &Expr, format: Format) -> Result<i32, Failure> {
    let mut rows = Vec::new();
    for f in find::all_files() {
        let file = f.display().to_string();
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        match crate::runbook::source::read(&f).and_then(|text| check(&file, &text, registry, expr))
        {
            Ok(plan) => rows.push(serde_json::json!({
                "name": name,
                "title": plan.runbook.title,
                "triggers": plan.runbook.alerts,
                "file": file,
                "valid": true,
            })),
            Err(r) => rows.push(serde_json::json!({
                "name": name, "title": null, "triggers": [], "file": file, "valid": false,
                "errors": r.diagnostics.len(),
            })),
        }
    }
    if format == Format::Json {
        show::print_json(&rows);
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!(
            "no runbooks found in {} (set RUNBOOK_PATH)",
            find::search_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(exit::OK);
    }
    let mut t = show::Table::new(&["NAME", "TITLE", "TRIGGERS", "FILE"]);
    for r in rows {
        let title = if r["valid"] == true {
            r["title"].as_str().unwrap_or("").to_string()
        } else {
            format!("(invalid: {} errors; run `runbook validate`)", r["errors"])
        };
        let triggers: Vec<&str> = r["triggers"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        t.row(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            title,
            triggers.join(","),
            r["file"].as_str().unwrap_or("").to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(exit::OK)
}

/// `--param k=v` pairs checked against the runbook's declared parameters.
pub fn parse_params(
    plan: &Plan,
    raw: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    let mut given = Vec::new();
    let mut errors = Vec::new();
    for p in raw {
        match p.split_once('=') {
            Some((k, v)) => given.push((k.to_string(), serde_json::Value::String(v.to_string()))),
            None => errors.push(format!("--param `{p}`: write NAME=VALUE")),
        }
    }
    let bound =
        crate::runbook::params::bind(&plan.runbook, given, crate::runbook::params::Given::Flags);
    match bound {
        Ok(out) if errors.is_empty() => Ok(out),
        Ok(_) => Err(params_failure(errors)),
        Err(more) => {
            errors.extend(more);
            Err(params_failure(errors))
        }
    }
}

fn params_failure(errors: Vec<String>) -> Failure {
    Failure::invalid(
        errors
            .iter()
            .map(|e| format!("error: {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_once_every_deferred_subcommand_is_built() {
        // `defer` leaves each subcommand's arguments unbuilt until it is typed, so clap's own
        // checks (conflicting names, bad defaults) only see them here.
        let mut cmd = Cli::command();
        let listed: Vec<(String, Option<String>)> = cmd
            .get_subcommands()
            .map(|s| {
                (
                    s.get_name().to_string(),
                    s.get_about().map(|a| a.to_string()),
                )
            })
            .collect();
        cmd.build();
        cmd.clone().debug_assert();
        // What `runbook --help` lists for a command is what `runbook CMD --help` says it does: a
        // flattened struct's doc comment would otherwise take over once the command is built.
        for (name, about) in listed {
            let built = cmd.find_subcommand(&name).expect("listed");
            assert_eq!(
                built.get_about().map(|a| a.to_string()),
                about,
                "`runbook {name} --help` describes the command differently from `runbook --help`"
            );
            assert!(built.get_arguments().count() > 0, "{name} was not built");
        }
    }
}
