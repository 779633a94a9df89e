//! `runbook plan`: reads run for real and branches decide on real data, while every step that would
//! change something only says what it would do. Proven by a file that must not appear and a server
//! that must not be called.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;
use std::net::TcpListener;

fn runbook(port: u16) -> String {
    format!(
        r#"
name: plan-demo
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: {{ shell: "echo 7 > looked; echo 7" }}
    outputs: {{ n: "{{{{ result.stdout | trim | int }}}}" }}
  - id: choose
    uses: flow.branch
    needs: look
    with:
      cases:
        - {{ when: "steps.look.n > 5", then: fix }}
      default: nothing
  - id: fix
    uses: shell.run
    approval: required
    with: {{ argv: [touch, "mutated file"] }}
  - id: notify
    uses: http.request
    needs: fix
    with: {{ url: "http://127.0.0.1:{port}/hook", method: POST, json: {{ done: true }} }}
  - id: settle
    uses: flow.sleep
    needs: notify
    with: {{ for: 10m }}
  - {{ id: nothing, uses: flow.noop }}
"#
    )
}

#[test]
fn a_plan_reads_decides_and_describes_but_changes_nothing() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let f = sb.write("plan.yaml", &runbook(port));
    // No terminal and no --yes: a real run would wait for approval; a plan asks nobody.
    let o = sb.run(&["plan", f.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        sb.path().join("looked").exists(),
        "the read step ran for real"
    );
    assert!(
        !sb.path().join("mutated file").exists(),
        "the unsafe step acted"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the POST was sent"
    );
    assert!(text.contains("choose: `steps.look.n > 5` → fix"), "{text}");
    assert!(
        text.contains("fix (shell.run, unsafe): would run: touch 'mutated file' [needs approval]"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "notify (http.request, unsafe): would send POST http://127.0.0.1:{port}/hook"
        )),
        "{text}"
    );
    assert!(
        text.contains("settle (flow.sleep): would run after `notify`"),
        "{text}"
    );
    assert!(text.contains("nothing skipped"), "{text}");

    // Journaled as a run of kind `plan`, verifiable, never resumed or re-run.
    let runs: Value =
        serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).expect("json");
    assert_eq!(runs[0]["kind"], "plan");
    assert_eq!(runs[0]["status"], "succeeded");
    let id = runs[0]["id"].as_str().expect("id");
    assert_eq!(sb.run(&["audit", "verify", id]).status.code(), Some(0));
    let o = sb.run(&["resume", id]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is a plan"), "{}", stderr(&o));
    let o = sb.run(&["rerun", id, "--from", "fix"]);
    assert_eq!(o.status.code(), Some(2));
    let audit = stdout(&sb.run(&["audit", id]));
    assert!(audit.contains("fix: planned: would run: touch"), "{audit}");

    // The JSON form carries each plugin's detail.
    let o = sb.run(&["plan", f.to_str().expect("path"), "-o", "json", "--quiet"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let fix = v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "fix"))
        .expect("fix");
    assert_eq!(fix["status"], "planned");
    assert_eq!(fix["planned"]["argv"][1], "mutated file");
    assert!(!sb.path().join("mutated file").exists());
}
