//! Every wait is data: approvals answered from another process, runs that park (`--detach`) and are
//! continued by a later `resume`, and timers and probes that keep their journaled times.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;

const APPROVE: &str = r#"
name: approve
steps:
  - id: risky
    uses: shell.run
    approval: { required: true, distinct_from_initiator: true, approvers: [bob, carol] }
    with: { argv: [touch, did-it] }
"#;

fn show(sb: &Sandbox, id: &str) -> Value {
    serde_json::from_str(&stdout(&sb.run(&["show", id, "-o", "json"]))).expect("show json")
}

fn last_run(sb: &Sandbox) -> String {
    let runs: Value =
        serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).expect("runs json");
    runs[0]["id"].as_str().expect("a run").to_string()
}

fn step<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {shown:#}"))
}

fn events(sb: &Sandbox, id: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&stdout(&sb.run(&["show", id, "--events", "-o", "json"])))
        .expect("events json");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"]["type"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_detached_run_parks_at_an_approval_and_goes_on_once_another_person_approves() {
    let sb = Sandbox::new();
    let f = sb.write("approve.yaml", APPROVE);
    let o = sb.run(&[
        "run",
        f.to_str().expect("path"),
        "--detach",
        "--actor",
        "bob",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("runbook approve"), "{}", stderr(&o));
    let id = last_run(&sb);
    let shown = show(&sb, &id);
    assert_eq!(shown["run"]["status"], "parked", "{shown:#}");
    assert_eq!(step(&shown, "risky")["status"], "awaiting-approval");
    assert!(
        !sb.path().join("did-it").exists(),
        "nothing ran before approval"
    );

    // The initiator may not approve, nor may someone not listed; neither answer is recorded.
    let o = sb.run(&["approve", &id, "risky", "--actor", "bob"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("started this run"), "{}", stderr(&o));
    let o = sb.run(&["approve", &id, "risky", "--actor", "mallory"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not among the approvers"),
        "{}",
        stderr(&o)
    );
    // A step that does not wait is named as such.
    let o = sb.run(&["approve", &id, "riskyy", "--actor", "carol"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean `risky`"),
        "{}",
        stderr(&o)
    );

    let o = sb.run(&[
        "approve",
        &id,
        "risky",
        "--actor",
        "carol",
        "--comment",
        "ok",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("runbook resume"), "{}", stderr(&o));
    // The first answer wins.
    let o = sb.run(&["deny", &id, "risky", "--actor", "carol", "--reason", "late"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !sb.path().join("did-it").exists(),
        "an answer alone runs nothing"
    );

    let o = sb.run(&["resume", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(sb.path().join("did-it").exists());
    let shown = show(&sb, &id);
    assert_eq!(shown["run"]["status"], "succeeded");
    let kinds = events(&sb, &id);
    let at = |k: &str| kinds.iter().position(|e| e == k).unwrap_or(usize::MAX);
    assert!(at("approval_requested") < at("run_detached"), "{kinds:?}");
    assert!(at("run_resumed") < at("approval_granted"), "{kinds:?}");
    assert!(at("approval_granted") < at("step_started"), "{kinds:?}");
    let audit = stdout(&sb.run(&["audit", &id]));
    assert!(
        audit.contains("risky: approved by carol (cli): ok"),
        "{audit}"
    );
    // The request carried what the step would do, as its plugin describes it.
    assert!(audit.contains("; it would run: touch did-it"), "{audit}");
}

#[test]
fn a_denied_request_fails_the_step_with_the_reason_and_runs_nothing() {
    let sb = Sandbox::new();
    let f = sb.write("approve.yaml", APPROVE);
    let o = sb.run(&["run", f.to_str().expect("path"), "--detach", "--quiet"]);
    assert_eq!(o.status.code(), Some(4));
    let id = last_run(&sb);
    let o = sb.run(&[
        "deny",
        &id,
        "risky",
        "--actor",
        "carol",
        "--reason",
        "peak hours",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = sb.run(&["resume", &id, "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let shown = show(&sb, &id);
    let s = step(&shown, "risky");
    assert_eq!(s["error_kind"], "approval");
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("carol") && e.contains("peak hours")),
        "{s:#}"
    );
    assert!(!sb.path().join("did-it").exists());
}

#[test]
fn a_run_waiting_in_its_process_takes_an_answer_given_by_another_process() {
    let sb = Sandbox::new();
    let f = sb.write("approve.yaml", APPROVE);
    // No terminal and no --yes: the run waits for an answer from anywhere.
    let mut child = sb
        .cmd(&["run", f.to_str().expect("path"), "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn run");
    // Wait until the request is journaled (a poll of observable state, bounded).
    let mut id = None;
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before it was answered: {status}");
        }
        let runs: Value =
            serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"]))).unwrap_or(Value::Null);
        if let Some(r) = runs.as_array().and_then(|a| a.first()) {
            let rid = r["id"].as_str().unwrap_or_default().to_string();
            if events(&sb, &rid).iter().any(|k| k == "approval_requested") {
                id = Some(rid);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let id = id.expect("the approval request was journaled");
    let o = sb.run(&["approve", &id, "risky", "--actor", "carol"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status = child.wait().expect("run ends");
    assert_eq!(status.code(), Some(0));
    assert!(sb.path().join("did-it").exists());
    let shown = show(&sb, &id);
    assert_eq!(step(&shown, "risky")["approval"]["by"], "carol");
}

#[test]
fn a_detached_sleep_parks_with_its_wake_up_time_and_resume_keeps_it() {
    let sb = Sandbox::new();
    let f = sb.write(
        "nap.yaml",
        "name: nap\nsteps:\n  - { id: nap, uses: flow.sleep, with: { for: 1s } }\n  - { id: after, uses: flow.noop, needs: nap }\n",
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "--detach"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let id = last_run(&sb);
    assert_eq!(show(&sb, &id)["run"]["status"], "parked");
    let kinds = events(&sb, &id);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("run_detached"),
        "{kinds:?}"
    );
    // Resuming waits out what is left of the journaled time, then finishes the run.
    let o = sb.run(&["resume", &id, "-o", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(shown["run"]["status"], "succeeded");
    let runs = stdout(&sb.run(&["runs", "--resumable"]));
    assert!(!runs.contains(&id[..12]), "{runs}");
}

#[test]
fn each_probe_of_a_wait_until_is_journaled_with_its_next_time() {
    let sb = Sandbox::new();
    let f = sb.write(
        "poll.yaml",
        r#"
name: poll
steps:
  - id: until_file
    uses: flow.wait_until
    with:
      probe: { uses: shell.run, side_effect: read, with: { shell: "test -e flag && echo yes || echo no" } }
      until: "result.stdout.strip() == 'yes'"
      interval: 100ms
      deadline: 30s
  - id: make_flag
    uses: shell.run
    with: { argv: [touch, flag] }
"#,
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "-o", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = last_run(&sb);
    let kinds = events(&sb, &id);
    let started = kinds.iter().filter(|k| *k == "probe_started").count();
    let done = kinds.iter().filter(|k| *k == "probe_done").count();
    assert!(started >= 1 && started == done, "{kinds:?}");
}

#[test]
fn a_detached_resume_takes_an_answer_given_while_the_run_was_parked() {
    let sb = Sandbox::new();
    let f = sb.write(
        "approve-nap.yaml",
        r#"
name: approve_nap
steps:
  - id: risky
    uses: shell.run
    approval: { required: true, approvers: [carol] }
    with: { argv: [touch, did-it] }
  - { id: nap, uses: flow.sleep, needs: risky, with: { for: 1h } }
"#,
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "--detach", "--quiet"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let id = last_run(&sb);
    let o = sb.run(&["approve", &id, "risky", "--actor", "carol"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Resumed detached, the run takes the answer, acts, and parks at the next wait (the hour's sleep),
    // instead of parking again at the request it has an answer to.
    let o = sb.run(&["resume", &id, "--detach", "--quiet"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(sb.path().join("did-it").exists(), "the approved step ran");
    let shown = show(&sb, &id);
    assert_eq!(shown["run"]["status"], "parked");
    assert_eq!(step(&shown, "risky")["status"], "succeeded", "{shown:#}");
    assert_eq!(step(&shown, "risky")["approval"]["by"], "carol");
    assert_eq!(step(&shown, "nap")["status"], "running", "{shown:#}");
}
