//! The CLI through a server (`--server URL`): `runs`, `show`, `run`, `approve` and `deny` call a
//! `runbook serve`'s JSON API instead of opening the database, and print what they print locally —
//! through the same renderers, from the same read model.
//!
//! The token is the caller: the server records its subject as the actor, so `--actor` is refused,
//! and it is read from the environment or a file, never from the command line, where `ps` would
//! show it.

use super::{Cli, Command, Failure, Format, drive, exit, show};
use crate::run::approval::Answered;
use crate::run::event::Record;
use crate::run::view::RunView;
use crate::serve::error::ErrorBody;
use crate::serve::wire::{AnswerResult, Events, Started};
use crate::store::RunRow;
use reqwest::{Method, StatusCode, Url};
use runbook_steps::web;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// How long one call may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most an answer may be: a run's view with large outputs is a few MiB.
const ANSWER_LIMIT: usize = 64 << 20;
/// The most a token file may hold: a token is a line, not a document.
const TOKEN_FILE_LIMIT: u64 = 64 << 10;
/// The most runs or events the server gives in one page.
const PAGE: i64 = 1000;

/// Runs the command through the server at `url`, or `None` when it does not touch runs (`validate`,
/// `graph`, ...) and runs here as usual.
pub async fn command(cli: &Cli, url: &str) -> Option<Result<i32, Failure>> {
    let db_only = match &cli.command {
        Command::Validate { .. }
        | Command::List
        | Command::Graph { .. }
        | Command::Schema { .. }
        | Command::Plugins { .. } => return None,
        Command::Runs { .. }
        | Command::Show { .. }
        | Command::Run(_)
        | Command::Approve { .. }
        | Command::Deny { .. } => return Some(through(cli, url).await),
        Command::Plan(_) => "plan",
        Command::Rerun(_) => "rerun",
        Command::Resume(_) => "resume",
        Command::Cancel(_) => "cancel",
        Command::Audit { .. } => "audit",
        Command::Worker(_) => "worker",
        Command::Serve(_) => "serve",
        Command::Prune { .. } => "prune",
        Command::Schedules => "schedules",
    };
    Some(Err(Failure::invalid(format!(
        "`runbook {db_only}` works on the database only, not through a server; drop --server (or unset RUNBOOK_SERVER)"
    ))))
}

async fn through(cli: &Cli, url: &str) -> Result<i32, Failure> {
    refuse_typed(
        cli,
        &[
            (
                "db",
                "--db: --server reads and writes runs through the server, not a database; give one of them",
            ),
            (
                "actor",
                "--actor: through a server the actor is the token's subject, as the server's tokens file names it",
            ),
            (
                "profile",
                "--profile: through a server, runs use the server's connections and profile",
            ),
            (
                "config",
                "--config: through a server, runs use the server's connections and profile",
            ),
        ],
    )?;
    let server = Remote::new(url, cli.global.token_file.as_deref())?;
    let format = cli.global.output;
    match &cli.command {
        Command::Runs { limit, resumable } => {
            if *resumable {
                return Err(Failure::invalid(
                    "--resumable needs the database (it reads which runs a live process holds); through a server, look at STATUS in `runbook runs`",
                ));
            }
            runs(&server, *limit, format).await
        }
        Command::Show { run, events } => show(&server, run, *events, format).await,
        Command::Run(args) => {
            refuse_typed(
                cli,
                &[
                    (
                        "yes",
                        "--yes: a run started through a server is driven by its workers; approve its steps with `runbook approve --server`",
                    ),
                    (
                        "detach",
                        "--detach: a run started through a server is always handed to its workers (as with --queue)",
                    ),
                    (
                        "max_parallel",
                        "--max-parallel: the server's workers drive the run with their own settings",
                    ),
                ],
            )?;
            start(&server, args, format).await
        }
        Command::Approve { target, comment } => {
            let body = json!({ "comment": comment });
            answer(&server, &target.run, &target.step, true, body, format).await
        }
        Command::Deny { target, reason } => {
            let body = json!({ "reason": reason });
            answer(&server, &target.run, &target.step, false, body, format).await
        }
        // `command` sends only the five commands above here.
        _ => Err(Failure::invalid("this command has no --server form")),
    }
}

/// Refuses the flags of `refused` that were typed on the command line; the same settings in the
/// environment (`RUNBOOK_DB`, `RUNBOOK_ACTOR`, ...) are left to the local commands they serve.
fn refuse_typed(cli: &Cli, refused: &[(&str, &str)]) -> Result<(), Failure> {
    let errors: Vec<String> = refused
        .iter()
        .filter(|(id, _)| cli.typed.contains(*id))
        .map(|(_, why)| format!("error: {why}"))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::invalid(errors.join("\n")))
    }
}

async fn runs(server: &Remote, limit: i64, format: Format) -> Result<i32, Failure> {
    if limit < 1 {
        return Err(Failure::invalid(format!(
            "--limit: at least 1 run (not {limit})"
        )));
    }
    // A page at a time, each continuing after the last run of the one before.
    let mut rows: Vec<RunRow> = Vec::new();
    while let Ok(left @ 1..) = i64::try_from(rows.len()).map(|n| limit - n) {
        let want = left.min(PAGE);
        let mut query = vec![("limit", want.to_string())];
        if let Some(last) = rows.last() {
            query.push(("before", last.started_at.to_string()));
            query.push(("before_id", last.id.clone()));
        }
        let page: Vec<RunRow> = server.get(&["api", "v1", "runs"], &query).await?;
        let full = i64::try_from(page.len()).is_ok_and(|n| n == want);
        // A page that does not move on would be asked for forever.
        if let (Some(last), Some(first)) = (rows.last(), page.first())
            && (first.started_at, &first.id) >= (last.started_at, &last.id)
        {
            return Err(Failure::env(format!(
                "{}: the list of runs does not advance (run {} again); is it a runbook server?",
                server.shown, first.id
            )));
        }
        rows.extend(page);
        if !full {
            break;
        }
    }
    let none = format!(
        "no runs yet on {}; start one with `runbook run NAME --server URL`",
        server.shown
    );
    show::print_runs(&rows, format, &none);
    Ok(exit::OK)
}

async fn show(
    server: &Remote,
    run: &str,
    all_events: bool,
    format: Format,
) -> Result<i32, Failure> {
    let view: RunView = server.get(&["api", "v1", "runs", run], &[]).await?;
    let records = if all_events {
        Some(journal(server, &view.run.id).await?)
    } else {
        None
    };
    show::print_show(&view, records.as_deref(), format);
    Ok(exit::OK)
}

/// Every event of run `id`, a page at a time.
async fn journal(server: &Remote, id: &str) -> Result<Vec<Record>, Failure> {
    let mut all = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let page: Events = server
            .get(&["api", "v1", "runs", id, "events"], &query)
            .await?;
        all.extend(page.events.into_iter().map(|r| r.into_record(&page.run)));
        match page.next_after {
            None => return Ok(all),
            // A page that does not move on would be asked for forever.
            Some(next) if after.is_some_and(|a| next <= a) => {
                return Err(Failure::env(format!(
                    "{}: the journal's pages do not advance (after {next} again); is it a runbook server?",
                    server.shown
                )));
            }
            Some(next) => after = Some(next),
        }
    }
}

async fn start(server: &Remote, args: &super::RunArgs, format: Format) -> Result<i32, Failure> {
    // As strings, as given: the server checks and converts them against the runbook it serves,
    // exactly as `--param` is checked here.
    let mut params = Map::new();
    let mut errors = Vec::new();
    for p in &args.params {
        match p.split_once('=') {
            Some((k, v)) => {
                params.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
            None => errors.push(format!("error: --param `{p}`: write NAME=VALUE")),
        }
    }
    if !errors.is_empty() {
        return Err(Failure::invalid(errors.join("\n")));
    }
    let body = json!({ "runbook": args.runbook, "params": params });
    let key = args
        .idempotency_key
        .as_deref()
        .map(|k| ("Idempotency-Key", k));
    let started: Started = server
        .post(&["api", "v1", "runs"], &body, key.as_slice())
        .await?;
    drive::print_queued(format, &started.run, started.status, started.created);
    Ok(exit::OK)
}

async fn answer(
    server: &Remote,
    run: &str,
    step: &str,
    approve: bool,
    body: Value,
    format: Format,
) -> Result<i32, Failure> {
    let verb = if approve { "approve" } else { "deny" };
    let a: AnswerResult = server
        .post(&["api", "v1", "runs", run, "steps", step, verb], &body, &[])
        .await?;
    let done = Answered {
        run_id: a.run,
        recorded: a.recorded,
        status: a.status,
        driven: a.driven,
    };
    Ok(drive::print_answer(format, step, approve, &done, true))
}

/// A `runbook serve` API: its base URL and the caller's token.
pub struct Remote {
    http: reqwest::Client,
    base: Url,
    /// The base URL as messages show it (a password masked).
    shown: String,
    token: Option<String>,
}

impl Remote {
    pub fn new(url: &str, token_file: Option<&Path>) -> Result<Remote, Failure> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "--server `{url}` is not an http:// or https:// URL (e.g. https://runbook.internal:8080)"
                ))
            })?;
        let http = web::client().map_err(|e| Failure::env(e.message))?;
        Ok(Remote {
            http,
            shown: web::redacted(&base),
            base,
            token: token(token_file)?,
        })
    }

    /// The URL of `path`'s segments (escaped: a run or step id is data) under the base URL, which
    /// may have a path prefix of its own (a server behind a proxy at `/runbook`).
    fn endpoint(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, Failure> {
        self.call(Method::GET, self.endpoint(path, query), None, &[])
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<T, Failure> {
        self.call(Method::POST, self.endpoint(path, &[]), Some(body), headers)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<T, Failure> {
        let mut request = self.http.request(method, url).timeout(CALL_TIMEOUT);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let unreachable = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::env(format!(
                    "the server at {} did not answer within {}s",
                    self.shown,
                    CALL_TIMEOUT.as_secs()
                ))
            } else {
                Failure::env(format!(
                    "cannot reach the server at {}: {}",
                    self.shown,
                    web::cause_chain(&e)
                ))
            }
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > ANSWER_LIMIT {
                return Err(Failure::env(format!(
                    "the server at {} answered with more than {} MiB; is it a runbook server?",
                    self.shown,
                    ANSWER_LIMIT >> 20
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| {
            let text = String::from_utf8_lossy(&bytes);
            let quoted = match text.trim() {
                "" => "an empty body".to_string(),
                t => format!("`{}`", web::head_chars(t, 200)),
            };
            Failure::env(format!(
                "the server at {} answered {} with something that is not JSON ({kind}): {quoted}; is it a runbook server?",
                self.shown,
                web::describe_status(status)
            ))
        })?;
        if !status.is_success() {
            return Err(self.refusal(status, json));
        }
        serde_json::from_value(json).map_err(|e| {
            Failure::env(format!(
                "the server at {} answered {} with JSON that is not what a runbook server of this version sends: {e}",
                self.shown,
                web::describe_status(status)
            ))
        })
    }

    /// The failure a refusal means, in the server's words where it gave some.
    fn refusal(&self, status: StatusCode, json: Value) -> Failure {
        let message = serde_json::from_value::<ErrorBody>(json.clone())
            .map(|b| b.message)
            .unwrap_or_else(|_| web::head_chars(&json.to_string(), 300));
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => Failure::env(format!(
                "the server at {} wants a token: set RUNBOOK_TOKEN, or give --token-file FILE",
                self.shown
            )),
            StatusCode::UNAUTHORIZED => Failure::env(format!(
                "the server at {} refused the token (401): {message}",
                self.shown
            )),
            StatusCode::FORBIDDEN => Failure::env(format!(
                "the server at {} refused (403): {message}",
                self.shown
            )),
            // The request's own problem (no such run, not waiting for approval, a bad
            // parameter): said as the database would say it.
            s if s.is_client_error() => Failure::invalid(message),
            s => Failure::env(format!(
                "the server at {} failed ({}): {message}",
                self.shown,
                web::describe_status(s)
            )),
        }
    }
}

/// The caller's token: from the file `--token-file` (or RUNBOOK_TOKEN_FILE) names, or from
/// RUNBOOK_TOKEN; none when neither is set (a `serve --no-auth` takes none).
fn token(file: Option<&Path>) -> Result<Option<String>, Failure> {
    let env = std::env::var("RUNBOOK_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (token, from) = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(Failure::invalid(
                "both RUNBOOK_TOKEN and --token-file (or RUNBOOK_TOKEN_FILE) give a token; keep one",
            ));
        }
        (None, None) => return Ok(None),
        (None, Some(t)) => (t, "RUNBOOK_TOKEN".to_string()),
        (Some(f), None) => (
            read_token_file(f)?,
            format!("the token file {}", f.display()),
        ),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(Failure::invalid(format!("{from} is empty")));
    }
    // A bearer token is one header value: printable ASCII, no spaces.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::invalid(format!(
            "{from} holds characters a bearer token cannot have (spaces, control or non-ASCII characters)"
        )));
    }
    Ok(Some(token.to_string()))
}

fn read_token_file(f: &Path) -> Result<String, Failure> {
    let cannot = |e: std::io::Error| {
        Failure::invalid(format!("cannot read the token file {}: {e}", f.display()))
    };
    let mut bytes = Vec::new();
    std::fs::File::open(f)
        .and_then(|file| file.take(TOKEN_FILE_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > TOKEN_FILE_LIMIT {
        return Err(Failure::invalid(format!(
            "the token file {} is larger than {} KiB: it should hold one token",
            f.display(),
            TOKEN_FILE_LIMIT >> 10
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        Failure::invalid(format!(
            "the token file {} is not text: it should hold one token",
            f.display()
        ))
    })
}
