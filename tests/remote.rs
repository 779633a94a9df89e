//! The CLI through a server (`--server URL`): `runs`, `show`, `run`, `approve` and `deny` against a
//! real `runbook serve`, their output compared with the same commands run on the same database,
//! and what each way of failing says (no token, a refused token, a missing role, a server that is
//! down or is not a runbook server). Waits poll the server against a deadline.

use crate::common::{PgDb, Sandbox, stderr, stdout};
use crate::serve::{ALICE, OPERATOR, Server, VIEWER};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

/// Runs `runbook ARGS` against the sandbox's runs: the database `db` (the sandbox's SQLite file
/// when `None`), or `server` with `token` when given.
struct Cli<'a> {
    sb: &'a Sandbox,
    db: Option<String>,
}

impl Cli<'_> {
    fn local(&self, args: &[&str]) -> Output {
        let mut c = self.sb.cmd(args);
        if let Some(db) = &self.db {
            c.env("RUNBOOK_DB", db);
        }
        c.output().expect("spawn runbook")
    }

    fn remote(&self, server: &str, token: Option<&str>, args: &[&str]) -> Output {
        let mut c = self.sb.cmd(args);
        // The database and the actor of the environment stay there: --server does not use them.
        c.env("RUNBOOK_SERVER", server);
        if let Some(t) = token {
            c.env("RUNBOOK_TOKEN", t);
        }
        c.output().expect("spawn runbook")
    }

    /// `show RUN -o json` through the server until `done` holds, or a failure after 30 s.
    fn wait(&self, server: &str, run: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = self.remote(server, Some(VIEWER), &["show", run, "-o", "json"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let v: Value = serde_json::from_slice(&o.stdout).expect("show -o json");
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "run {run} never {what}: {v:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts that `args` print the same (stdout, exit code) locally and through the server.
    fn same(&self, server: &str, args: &[&str]) -> String {
        let here = self.local(args);
        let there = self.remote(server, Some(VIEWER), args);
        assert!(here.status.success(), "{args:?} locally: {}", stderr(&here));
        assert_eq!(
            stdout(&there),
            stdout(&here),
            "{args:?} through the server (stderr: {})",
            stderr(&there)
        );
        assert_eq!(there.status.code(), here.status.code());
        stdout(&here)
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn failed(o: &Output, code: i32, says: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(stderr(o).contains(says), "`{says}` not in: {}", stderr(o));
}

/// A run driven here, beside the server's.
const NOTE: &str = r#"
name: note
params:
  text: { type: string, required: true }
steps:
  - id: write
    uses: shell.run
    side_effect: read
    with: { argv: ["sh", "-c", "printf %s \"$T\" > note.txt"], env: { T: "{{ params.text }}" } }
"#;

fn story(sb: &Sandbox, server: &Server, db: Option<String>) {
    let cli = Cli { sb, db };
    let url = server.base.as_str();
    // A run started through the server, twice with one key: one run.
    let args = [
        "run",
        "gated",
        "-p",
        "target=api",
        "--idempotency-key",
        "deploy-7",
    ];
    let first = ok(&cli.remote(url, Some(OPERATOR), &args));
    let run = first.trim().to_string();
    assert_eq!(run.len(), 32, "a run id on stdout: {first}");
    let again = cli.remote(url, Some(OPERATOR), &args);
    assert_eq!(ok(&again).trim(), run);
    assert!(
        stderr(&again).contains("started earlier"),
        "{}",
        stderr(&again)
    );
    // And one run started here, on the same database.
    sb.write("note.yaml", NOTE);
    ok(&cli.local(&["run", "note.yaml", "-q", "-p", "text=hello"]));
    cli.wait(url, &run, "parked at its approval", |v| {
        v["run"]["status"] == "parked" && v["steps"][0]["status"] == "awaiting-approval"
    });
    let table = cli.same(url, &["runs"]);
    assert_eq!(table.lines().count(), 3, "a header and two runs: {table}");
    assert!(table.contains("gated") && table.contains("note"), "{table}");
    cli.same(url, &["runs", "-n", "1"]);
    cli.same(url, &["runs", "-o", "json"]);
    let shown = cli.same(url, &["show", &run]);
    assert!(shown.contains("awaiting-approval"), "{shown}");
    // A unique prefix is resolved by the server as by the database.
    cli.same(url, &["show", &run[..20], "--events"]);
    cli.same(url, &["show", &run, "--events", "-o", "json"]);
    // A viewer may not answer; alice may.
    let refused = cli.remote(url, Some(VIEWER), &["approve", &run, "restart"]);
    failed(&refused, 3, "it needs the approver role");
    failed(&refused, 3, &format!("the server at {url}/ refused (403)"));
    let approved = cli.remote(
        url,
        Some(ALICE),
        &[
            "approve",
            &run,
            "restart",
            "--comment",
            "dashboards are green",
        ],
    );
    ok(&approved);
    assert!(
        stderr(&approved).contains("step `restart` approved"),
        "{}",
        stderr(&approved)
    );
    cli.wait(url, &run, "succeeded", |v| {
        v["run"]["status"] == "succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(sb.path().join("restarted")).unwrap_or_default(),
        "api\n"
    );
    let shown = cli.same(url, &["show", &run]);
    assert!(shown.contains("approved by alice (api)"), "{shown}");
    cli.same(url, &["show", &run, "--events"]);
    cli.same(url, &["show", &run, "-o", "json"]);
    // The same no such run, said the same way.
    let here = cli.local(&["show", "ffffffff"]);
    let there = cli.remote(url, Some(VIEWER), &["show", "ffffffff"]);
    assert_eq!(here.status.code(), Some(2), "{}", stderr(&here));
    assert_eq!(there.status.code(), Some(2));
    assert_eq!(stderr(&there), stderr(&here));
}

#[test]
fn through_a_server_the_cli_prints_what_it_prints_on_the_database() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    story(&sb, &server, None);
    assert!(server.stop().success());
}

#[tokio::test]
async fn through_a_server_on_postgres_the_cli_prints_what_it_prints_on_the_database() {
    let db = PgDb::new().await;
    let sb = Sandbox::new();
    let server = Server::start(&sb, Some(&db.url));
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        story(&sb, &server, Some(url));
        assert!(server.stop().success());
    })
    .await
    .expect("the story");
}

/// More runs than the server lists at once, most started in one millisecond: `runs` through the
/// server pages on (started_at, id) and lists each run once, as the database does.
#[tokio::test]
async fn through_a_server_runs_pages_past_a_thousand_without_skipping_a_millisecond() {
    use crate::common::{run_row, run_started};
    use runbook_engine::store::{Store, postgres::PgStore};
    let db = PgDb::new().await;
    let store = PgStore::open(&db.url).await.expect("open");
    const MANY: u64 = 1_005;
    for n in 0..MANY {
        let id = format!("{:032x}", 0x9a9e_0000_u64 + n);
        // 990 runs in the first millisecond, so the first page of 1,000 ends inside the second.
        let at = 1_700_000_000_000 + i64::from(n >= 990) + i64::from(n >= 1_002);
        let records = [run_started(&id, "many", at)];
        let row = run_row(&id, "many", at);
        store.create_run(&row, &records).await.expect("create");
    }
    let sb = Sandbox::new();
    let server = Server::start(&sb, Some(&db.url));
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let cli = Cli {
            sb: &sb,
            db: Some(url),
        };
        let all = cli.same(&server.base, &["runs", "-n", "2000", "-o", "json"]);
        let runs: Vec<Value> = serde_json::from_str(&all).expect("runs -o json");
        let ids: std::collections::BTreeSet<&str> =
            runs.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!((runs.len(), ids.len()), (MANY as usize, MANY as usize));
        // And a limit that ends inside a page.
        let some = cli.same(&server.base, &["runs", "-n", "1001", "-o", "json"]);
        let some: Vec<Value> = serde_json::from_str(&some).expect("runs -o json");
        assert_eq!(some.len(), 1001);
        assert!(server.stop().success());
    })
    .await
    .expect("the pages");
}

#[test]
fn a_denial_through_a_server_fails_the_step_with_the_reason() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let cli = Cli { sb: &sb, db: None };
    let url = server.base.as_str();
    let run = ok(&cli.remote(
        url,
        Some(OPERATOR),
        &["run", "gated", "-p", "target=x", "-o", "json"],
    ));
    let started: Value = serde_json::from_str(&run).expect("json");
    assert_eq!(started["status"], "parked", "{started}");
    assert_eq!(started["created"], true);
    let run = started["run"].as_str().expect("run").to_string();
    cli.wait(url, &run, "asked for approval", |v| {
        v["run"]["status"] == "parked" && v["steps"][0]["status"] == "awaiting-approval"
    });
    let denied = cli.remote(
        url,
        Some(ALICE),
        &[
            "deny",
            &run,
            "restart",
            "--reason",
            "traffic peak",
            "-o",
            "json",
        ],
    );
    let answer: Value = serde_json::from_str(&ok(&denied)).expect("json");
    assert_eq!(answer["answer"], "denied", "{answer}");
    assert_eq!(answer["recorded"], true);
    assert_eq!(answer["step"], "restart");
    cli.wait(url, &run, "failed", |v| v["run"]["status"] == "failed");
    let shown = ok(&cli.local(&["show", &run]));
    assert!(shown.contains("traffic peak"), "{shown}");
    assert!(!sb.path().join("restarted").exists());
    // Too late for a second answer.
    let late = cli.remote(url, Some(ALICE), &["approve", &run, "restart"]);
    assert_eq!(late.status.code(), Some(2), "{}", stderr(&late));
    assert!(server.stop().success());
}

#[test]
fn through_a_server_each_failure_says_what_to_fix() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let cli = Cli { sb: &sb, db: None };
    let base = server.base.clone();
    let url = base.as_str();
    // Nothing yet: said, not an error.
    let none = cli.remote(url, Some(VIEWER), &["runs"]);
    assert_eq!(ok(&none), "");
    assert!(
        stderr(&none).contains("no runs yet on"),
        "{}",
        stderr(&none)
    );
    // The token: none, a wrong one, from a file, from two places.
    failed(
        &cli.remote(url, None, &["runs"]),
        3,
        "wants a token: set RUNBOOK_TOKEN, or give --token-file FILE",
    );
    failed(
        &cli.remote(url, Some("not-a-token-it-knows-0123"), &["runs"]),
        3,
        "refused the token (401)",
    );
    sb.write("viewer.token", &format!("{VIEWER}\n"));
    ok(&cli.remote(url, None, &["runs", "--token-file", "viewer.token"]));
    failed(
        &cli.remote(url, Some(VIEWER), &["runs", "--token-file", "viewer.token"]),
        2,
        "both RUNBOOK_TOKEN and --token-file",
    );
    sb.write("empty.token", "\n");
    failed(
        &cli.remote(url, None, &["runs", "--token-file", "empty.token"]),
        2,
        "the token file empty.token is empty",
    );
    failed(
        &cli.remote(url, None, &["runs", "--token-file", "missing.token"]),
        2,
        "cannot read the token file missing.token",
    );
    // Roles: a viewer starts nothing.
    failed(
        &cli.remote(url, Some(VIEWER), &["run", "gated", "-p", "target=x"]),
        3,
        "it needs the operator role",
    );
    // The server's own checks of the request, as the CLI would say them.
    failed(
        &cli.remote(url, Some(OPERATOR), &["run", "gated", "-p", "targte=x"]),
        2,
        "did you mean `target`",
    );
    failed(
        &cli.remote(url, Some(OPERATOR), &["run", "nope"]),
        2,
        "this server serves no runbook `nope`",
    );
    // What makes no sense through a server is refused before anything is sent.
    for (args, says) in [
        (
            &["run", "gated", "--yes"][..],
            "--yes: a run started through a server",
        ),
        (&["run", "gated", "--detach"][..], "--detach"),
        (
            &["--actor", "mallory", "runs"][..],
            "the actor is the token's subject",
        ),
        (
            &["runs", "--resumable"][..],
            "--resumable needs the database",
        ),
        (&["runs", "-n", "0"][..], "--limit: at least 1 run"),
        (
            &["audit", "0"][..],
            "`runbook audit` works on the database only",
        ),
        (
            &["resume", "0"][..],
            "`runbook resume` works on the database only",
        ),
    ] {
        failed(&cli.remote(url, Some(OPERATOR), args), 2, says);
    }
    failed(
        &cli.local(&["run", "gated", "--idempotency-key", "k"]),
        2,
        "--idempotency-key is for a run started through a server",
    );
    failed(
        &cli.remote("ftp://example.com", Some(VIEWER), &["runs"]),
        2,
        "--server `ftp://example.com` is not an http:// or https:// URL",
    );
    // A server that is down.
    assert!(server.stop().success());
    failed(
        &cli.remote(url, Some(VIEWER), &["runs"]),
        3,
        &format!("cannot reach the server at {url}/"),
    );
}

#[test]
fn a_server_that_is_not_a_runbook_server_is_named() {
    let sb = Sandbox::new();
    let cli = Cli { sb: &sb, db: None };
    let page = runbook_steps::testkit::http_response("200 OK", "text/html", "<html>login</html>");
    let (url, heads) = runbook_steps::testkit::canned_server(page);
    let o = cli.remote(&url, Some(VIEWER), &["show", "0123"]);
    failed(
        &o,
        3,
        "answered 200 OK with something that is not JSON (text/html): `<html>login</html>`",
    );
    // The token went in the header, where `ps` does not show it.
    let head = heads
        .recv_timeout(Duration::from_secs(10))
        .expect("a request");
    assert!(head.starts_with("GET /api/v1/runs/0123 "), "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("authorization: bearer {}", VIEWER.to_lowercase())),
        "{head}"
    );
    // JSON, but not a run.
    let (url, _) = runbook_steps::testkit::canned_server(runbook_steps::testkit::http_response(
        "200 OK",
        "application/json",
        r#"{"hello": "world"}"#,
    ));
    failed(
        &cli.remote(&url, Some(VIEWER), &["show", "0123"]),
        3,
        "JSON that is not what a runbook server of this version sends",
    );
    // A proxy's error page.
    let (url, _) = runbook_steps::testkit::canned_server(runbook_steps::testkit::http_response(
        "502 Bad Gateway",
        "text/plain",
        "upstream down",
    ));
    failed(
        &cli.remote(&url, Some(VIEWER), &["runs"]),
        3,
        "answered 502 Bad Gateway with something that is not JSON (text/plain): `upstream down`",
    );
}
