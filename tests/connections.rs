//! Typed connections end to end: fields from the runbook, a profile and the environment, a secret
//! read by the plugin at call time, and the journal that says which systems a run talked to.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// A one-request HTTP server on 127.0.0.1: answers `{"ok":true}` and hands back the request's head.
fn one_request_server() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let body = r#"{"ok":true}"#;
        let mut out = stream;
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tx.send(head);
    });
    (port, rx)
}

const RUNBOOK: &str = r#"
name: conn
connections:
  api:
    kind: http
    headers: { X-From: runbook }
steps:
  - id: call
    uses: http.request
    with: { url: /status }
    outputs:
      ok: "{{ result.json.ok }}"
"#;

#[test]
fn a_profile_supplies_the_address_and_the_plugin_reads_the_secret_at_call_time() {
    let sb = Sandbox::new();
    let (port, heads) = one_request_server();
    let f = sb.write("conn.yaml", RUNBOOK);
    sb.write(
        "runbook.toml",
        "[profiles.sandbox.connections.api]\nbase_url = \"http://127.0.0.1:1\"\nbearer_token = 'secret(\"API_TOKEN\")'\n\n[profiles.prod.connections.api]\nbase_url = \"https://api.example\"\n",
    );
    let token = "tok-9f8e7d6c5b4a";
    let o = sb
        .cmd(&[
            "run",
            f.to_str().expect("path"),
            "--profile",
            "sandbox",
            "-o",
            "json",
            "--quiet",
        ])
        .env("API_TOKEN", token)
        // The environment wins over the profile, field by field.
        .env(
            "RUNBOOK_CONNECTION_API_BASE_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let head = heads.recv().expect("the server saw a request");
    assert!(head.starts_with("GET /status "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("authorization: bearer {token}")),
        "{head}"
    );
    assert!(lower.contains("x-from: runbook"), "{head}");

    let shown: Value = serde_json::from_slice(&o.stdout).expect("json");
    let id = shown["run"]["id"].as_str().expect("id");
    let audit = stdout(&sb.run(&["audit", id]));
    assert!(
        audit.contains(&format!(
            "connections with profile `sandbox`: api (http http://127.0.0.1:{port})"
        )),
        "{audit}"
    );
    for entry in std::fs::read_dir(sb.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("runs.db") {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the token reached {}",
                path.display()
            );
        }
    }
}

#[test]
fn what_is_missing_or_misnamed_is_said_before_anything_runs() {
    let sb = Sandbox::new();
    let f = sb.write(
        "prom.yaml",
        "name: p\nconnections:\n  prom: { kind: prometheus }\nsteps:\n  - { id: a, uses: flow.noop }\n",
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("connection `prom` (prometheus) needs `url`")
            && stderr(&o).contains("RUNBOOK_CONNECTION_PROM_URL"),
        "{}",
        stderr(&o)
    );
    let runs = stdout(&sb.run(&["runs", "-o", "json"]));
    assert_eq!(runs.trim(), "[]", "no run is recorded");

    sb.write(
        "runbook.toml",
        "[profiles.sandbox.connections.prom]\nurl = \"http://127.0.0.1:9\"\n",
    );
    let o = sb.run(&[
        "run",
        f.to_str().expect("path"),
        "--quiet",
        "--profile",
        "sandbx",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean `sandbox`?"),
        "{}",
        stderr(&o)
    );
    let o = sb.run(&[
        "run",
        f.to_str().expect("path"),
        "--quiet",
        "--profile",
        "sandbox",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A runbook that naps, then calls `api` at /later: `run --detach` parks it at the nap. Returns the
/// parked run's id.
fn parked_call(sb: &Sandbox, connection: &str, env: &[(&str, String)]) -> String {
    let f = sb.write(
        "later.yaml",
        &format!(
            "name: later\nconnections:\n  api: {connection}\nsteps:\n  - {{ id: nap, uses: flow.sleep, with: {{ for: 10ms }} }}\n  - {{ id: call, uses: http.request, needs: nap, with: {{ url: /later }} }}\n"
        ),
    );
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "--detach", "--quiet"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let runs: Value =
        serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).expect("json");
    runs[0]["id"].as_str().expect("id").to_string()
}

#[test]
fn a_resumed_run_talks_to_the_systems_it_journaled() {
    let sb = Sandbox::new();
    let (port, heads) = one_request_server();
    let id = parked_call(
        &sb,
        "{ kind: http, base_url: \"http://127.0.0.1:1\" }",
        &[(
            "RUNBOOK_CONNECTION_API_BASE_URL",
            format!("http://127.0.0.1:{port}"),
        )],
    );
    // Resumed without the override: the run keeps the address it journaled when it started.
    let o = sb.run(&["resume", &id, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(heads.recv().expect("request").starts_with("GET /later "));
}

#[test]
fn a_credential_the_journal_masked_is_asked_for_again_on_resume() {
    let sb = Sandbox::new();
    let (port, heads) = one_request_server();
    // A plain token (from the environment here; a profile is the same): journaled as `***`.
    let id = parked_call(
        &sb,
        "{ kind: http }",
        &[
            (
                "RUNBOOK_CONNECTION_API_BASE_URL",
                format!("http://127.0.0.1:{port}"),
            ),
            (
                "RUNBOOK_CONNECTION_API_BEARER_TOKEN",
                "tok-first-4711".to_string(),
            ),
        ],
    );

    // Nothing gives it again: refused before anything runs, naming the field and the way to give it.
    let o = sb.run(&["resume", &id, "--quiet"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("`api.bearer_token`") && err.contains("RUNBOOK_CONNECTION_API_BEARER_TOKEN"),
        "{err}"
    );
    assert!(heads.try_recv().is_err(), "nothing was sent");

    // Given again: the call carries it.
    let o = sb
        .cmd(&["resume", &id, "--quiet"])
        .env("RUNBOOK_CONNECTION_API_BEARER_TOKEN", "tok-again-4711")
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let head = heads.recv().expect("request");
    assert!(head.starts_with("GET /later "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer tok-again-4711"),
        "{head}"
    );
}
