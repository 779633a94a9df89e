//! Notifications and credentials end to end: a run posts to Slack, mails through SMTP with a login,
//! and calls HTTP with bearer and basic credentials, all from `secret("...")` references, against the
//! dev/services sinks; no secret value may then be found in what the run left behind.

use crate::common::{Sandbox, stderr, stdout};
use runbook_steps::testkit::{file_in, marker, service};
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;

/// The request the webhook sink recorded at `path`.
fn hook_request(dir: &str, path: &str) -> Value {
    let needle = format!("\"path\": \"{path}\"");
    let compact = format!("\"path\":\"{path}\"");
    let text = file_in(std::path::Path::new(dir), |t| {
        t.contains(&needle) || t.contains(&compact)
    });
    serde_json::from_str(&text).expect("the sink writes JSON")
}

#[test]
fn secrets_reach_the_services_and_nothing_the_run_leaves_behind() {
    let (Some(hook), Some(hook_dir), Some(smtp), Some(maildir)) = (
        service("RUNBOOK_TEST_WEBHOOK_URL"),
        service("RUNBOOK_TEST_WEBHOOK_DIR"),
        service("RUNBOOK_TEST_SMTP_ADDR"),
        service("RUNBOOK_TEST_SMTP_MAILDIR"),
    ) else {
        return;
    };
    let (host, port) = smtp.rsplit_once(':').expect("host:port");
    let tag = marker("e2e");
    let bearer = marker("bearer-tok");
    let basic_pw = marker("basic-pw");
    let mail_pw = marker("mail-pw");
    let hook_token = marker("hook-tok");
    let slack_url = format!("{hook}/services/T0/B0/{hook_token}");
    let sb = Sandbox::new();
    let f = sb.write(
        "notify.yaml",
        &format!(
            r#"
name: notify-secrets
connections:
  api: {{ kind: http, base_url: "{hook}", bearer_token: 'secret("E2E_API_BEARER")' }}
  basic:
    kind: http
    base_url: "{hook}"
    basic_auth: {{ username: ops, password: 'secret("E2E_BASIC_PW")' }}
  mail:
    kind: smtp
    host: "{host}"
    port: {port}
    tls: none
    username: runbook
    password: 'secret("E2E_MAIL_PW")'
    from: "Runbook <runbook@example.test>"
  slack: {{ kind: slack, webhook_url: 'secret("E2E_SLACK_HOOK")' }}
steps:
  - id: echo
    uses: shell.run
    side_effect: read
    with: {{ shell: 'echo "$E2E_API_BEARER $E2E_BASIC_PW $E2E_MAIL_PW $E2E_SLACK_HOOK"' }}
    outputs: {{ said: "{{{{ result.stdout | trim }}}}" }}
  - id: call
    uses: http.request
    connection: api
    needs: echo
    with: {{ url: /api/{tag}, method: POST, json: {{ tag: "{tag}" }} }}
  - id: call_basic
    uses: http.request
    connection: basic
    needs: echo
    with: {{ url: /basic/{tag}, method: POST, body: "{tag}" }}
  - id: tell
    uses: notify.slack
    needs: [call, call_basic]
    with: {{ text: "{tag}: rolled back", decision: rollback, reason: "F1 < 0.72" }}
  - id: mail
    uses: notify.email
    needs: tell
    with: {{ to: [oncall@example.test], subject: "{tag}", body: "rolled back" }}
"#
        ),
    );
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "-o", "json"])
        .env("E2E_API_BEARER", &bearer)
        .env("E2E_BASIC_PW", &basic_pw)
        .env("E2E_MAIL_PW", &mail_pw)
        .env("E2E_SLACK_HOOK", &slack_url)
        .output()
        .expect("spawn");
    let run_err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{run_err}");
    let shown: Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let id = shown["run"]["id"].as_str().expect("run id").to_string();

    // The secrets were used: each service got its credential.
    let api = hook_request(&hook_dir, &format!("/api/{tag}"));
    assert_eq!(api["headers"]["authorization"], format!("Bearer {bearer}"));
    let basic = hook_request(&hook_dir, &format!("/basic/{tag}"));
    let expected = format!("ops:{basic_pw}");
    let authorization = basic["headers"]["authorization"].as_str().expect("sent");
    assert_eq!(
        authorization.strip_prefix("Basic ").map(decode_base64),
        Some(expected.into_bytes()),
        "{authorization}"
    );
    let slack = hook_request(&hook_dir, &format!("/services/T0/B0/{hook_token}"));
    let payload: Value = serde_json::from_str(slack["body"].as_str().expect("body")).expect("json");
    assert_eq!(payload["text"], format!("{tag}: rolled back"));
    let mail = file_in(&std::path::Path::new(&maildir).join("new"), |t| {
        t.contains(&format!("Subject: {tag}"))
    });
    assert!(mail.contains("To: oncall@example.test"), "{mail}");
    assert!(
        mail.contains("X-Auth-Login: runbook"),
        "the sink saw the login: {mail}"
    );

    // And they were in a command's output, which the journal keeps masked.
    let echo = shown["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "echo"))
        .expect("echo step");
    assert_eq!(echo["outputs"]["said"], "*** *** *** ***", "{echo}");

    let mut seen = vec![("stderr of the run".to_string(), run_err.into_bytes())];
    for args in [
        vec!["show", id.as_str()],
        vec!["show", id.as_str(), "--events", "-o", "json"],
        vec!["audit", id.as_str()],
        vec!["audit", id.as_str(), "--format", "markdown"],
        vec!["audit", id.as_str(), "--format", "json"],
    ] {
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let mut bytes = out.stdout;
        bytes.extend(out.stderr);
        seen.push((args.join(" "), bytes));
    }
    for entry in std::fs::read_dir(sb.path()).expect("sandbox") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("runs.db") {
            seen.push((
                path.display().to_string(),
                std::fs::read(&path).expect("read"),
            ));
        }
    }
    assert!(seen.len() >= 7, "the database file was read");
    let basic_header = authorization.trim_start_matches("Basic ").to_string();
    for (what, bytes) in &seen {
        for secret in [&bearer, &basic_pw, &mail_pw, &hook_token, &basic_header] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {what}"
            );
        }
    }
    // What the journal does say: where the secrets come from.
    let events = stdout(&sb.run(&["show", &id, "--events", "-o", "json"]));
    assert!(events.contains(r#"secret(\"E2E_MAIL_PW\")"#), "{events}");
}

/// Standard base64, for reading back a basic `Authorization` header.
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn a_webhook_that_does_not_answer_times_the_step_out() {
    let sb = Sandbox::new();
    // Accepts the request and holds it: never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            held.push(stream);
        }
    });
    let f = sb.write(
        "slow.yaml",
        r#"
name: slow-hook
connections:
  slack: { kind: slack, webhook_url: 'secret("E2E_SLOW_HOOK")' }
steps:
  - id: tell
    uses: notify.slack
    timeout: 1s
    with: { text: "anyone?" }
"#,
    );
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "-o", "json"])
        .env(
            "E2E_SLOW_HOOK",
            format!("http://127.0.0.1:{port}/services/SLOW-T0K3N"),
        )
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let shown: Value = serde_json::from_slice(&o.stdout).expect("json");
    let tell = &shown["steps"][0];
    assert_eq!(tell["error_kind"], "timeout", "{tell}");
    assert_eq!(tell["error"], "timed out after 1.0s", "{tell}");
    // The post gave up when cancelled, not after the engine's grace period (2 s more).
    let took = tell["finished_at"].as_i64().unwrap_or(0) - tell["started_at"].as_i64().unwrap_or(0);
    assert!(took < 2900, "the step took {took} ms");
    assert!(!stderr(&o).contains("SLOW-T0K3N"), "{}", stderr(&o));
}
