//! Crash and resume: the real CLI is killed with SIGKILL mid-run and resumed from its journal.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn json(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

fn step<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id}"))
}

fn lines(sb: &Sandbox, file: &str) -> usize {
    std::fs::read_to_string(sb.path().join(file)).map_or(0, |s| s.lines().count())
}

/// Waits (bounded) until `cond` holds; the conditions are things the run itself makes true.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the run's journal has an event of type `kind`, and returns its numeric `field`.
fn journaled(sb: &Sandbox, run: &str, kind: &str, field: &str) -> i64 {
    let mut value = 0;
    until(&format!("{kind}.{field} to be journaled"), || {
        let o = sb.run(&["show", run, "--events", "-o", "json"]);
        value = serde_json::from_str::<Value>(&stdout(&o))
            .ok()
            .and_then(|v| {
                v["events"]
                    .as_array()?
                    .iter()
                    .find(|e| e["event"]["type"] == kind)?["event"][field]
                    .as_i64()
            })
            .unwrap_or(0);
        value > 0
    });
    value
}

fn start(sb: &Sandbox, file: &str) -> Child {
    sb.cmd(&["run", file, "--quiet"]).spawn().expect("spawn")
}

fn the_run(sb: &Sandbox) -> String {
    let mut id = String::new();
    until("the run to be recorded", || {
        let o = sb.run(&["runs", "-o", "json"]);
        id = serde_json::from_str::<Value>(&stdout(&o))
            .ok()
            .and_then(|v| v[0]["id"].as_str().map(str::to_string))
            .unwrap_or_default();
        !id.is_empty()
    });
    id
}

fn status_of(sb: &Sandbox, run: &str, step_id: &str) -> String {
    let o = sb.run(&["show", run, "-o", "json"]);
    serde_json::from_str::<Value>(&stdout(&o))
        .ok()
        .map(|v| {
            step(&v, step_id)["status"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn kill9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

const READ_IN_FLIGHT: &str = r#"
name: crash-read
steps:
  - id: act
    uses: shell.run
    with: { shell: "echo x >> act.count" }
  - id: look
    uses: shell.run
    side_effect: read
    needs: act
    with: { shell: "echo x >> look.count; while [ ! -e go ]; do sleep 0.01; done" }
  - { id: after, uses: flow.noop, needs: look }
"#;

#[test]
fn a_read_step_in_flight_is_rerun_and_completed_steps_are_not() {
    let sb = Sandbox::new();
    let f = sb.write("r.yaml", READ_IN_FLIGHT);
    let child = start(&sb, f.to_str().expect("path"));
    let run = the_run(&sb);
    until("act to be journaled as done and look to be running", || {
        lines(&sb, "look.count") == 1 && status_of(&sb, &run, "act") == "succeeded"
    });
    kill9(child);
    std::fs::write(sb.path().join("go"), "").expect("go");
    let o = sb.run(&["runs", "--resumable", "-o", "json"]);
    assert_eq!(json(&o)[0]["id"], run.as_str());

    let o = sb.run(&["resume", &run[..12], "--quiet", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = json(&o);
    assert_eq!(shown["run"]["status"], "succeeded");
    assert_eq!(
        lines(&sb, "act.count"),
        1,
        "a completed unsafe step ran again"
    );
    assert_eq!(
        lines(&sb, "look.count"),
        2,
        "the read step in flight was not re-run"
    );
    assert_eq!(step(&shown, "look")["attempts"], 2);
    assert_eq!(step(&shown, "after")["status"], "succeeded");
    let o = sb.run(&["audit", "verify", &run]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the resumed chain must verify: {}",
        stdout(&o)
    );
    let o = sb.run(&["resume", &run]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already succeeded"), "{}", stderr(&o));
}

const UNSAFE_IN_FLIGHT: &str = r#"
name: crash-unsafe
steps:
  - id: restart
    uses: shell.run
    with: { shell: "echo x >> restart.count; while [ ! -e go ]; do sleep 0.01; done" }
  - { id: verify, uses: flow.noop, needs: restart }
"#;

fn crashed_in_unsafe_step(sb: &Sandbox) -> String {
    let f = sb.write("u.yaml", UNSAFE_IN_FLIGHT);
    let child = start(sb, f.to_str().expect("path"));
    // The intent is committed before the side effect, so once the step acts the journal knows.
    until("restart to act", || lines(sb, "restart.count") == 1);
    let run = the_run(sb);
    kill9(child);
    std::fs::write(sb.path().join("go"), "").expect("go");
    run
}

#[test]
fn an_unsafe_step_in_flight_waits_for_an_operator_who_marks_it_done() {
    let sb = Sandbox::new();
    let run = crashed_in_unsafe_step(&sb);
    let o = sb.run(&["resume", &run]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("--mark-done restart"), "{}", stderr(&o));
    assert_eq!(
        lines(&sb, "restart.count"),
        1,
        "an unsafe step was repeated without an operator"
    );
    let o = sb.run(&["runs", "--resumable", "-o", "json"]);
    assert_eq!(json(&o)[0]["status"], "waiting");

    let o = sb.run(&["resume", &run, "--retry", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not waiting for an operator (these are: restart)"),
        "{}",
        stderr(&o)
    );

    let o = sb
        .cmd(&[
            "resume",
            &run,
            "--mark-done",
            "restart",
            "-o",
            "json",
            "--quiet",
        ])
        .env("RUNBOOK_ACTOR", "ops-alice")
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = json(&o);
    assert_eq!(lines(&sb, "restart.count"), 1);
    assert_eq!(step(&shown, "restart")["operator"]["by"], "ops-alice");
    assert_eq!(step(&shown, "restart")["operator"]["action"], "marked done");
    assert_eq!(step(&shown, "verify")["status"], "succeeded");
}

#[test]
fn an_operator_can_retry_an_unknown_step() {
    let sb = Sandbox::new();
    let run = crashed_in_unsafe_step(&sb);
    let o = sb.run(&["resume", &run, "--retry", "restart", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(lines(&sb, "restart.count"), 2);
}

#[test]
fn a_resumed_sleep_keeps_its_original_wake_up_time() {
    let sb = Sandbox::new();
    let f = sb.write(
        "s.yaml",
        "name: nap\nsteps:\n  - { id: nap, uses: flow.sleep, with: { for: 3s } }\n",
    );
    let child = start(&sb, f.to_str().expect("path"));
    let run = the_run(&sb);
    let deadline = journaled(&sb, &run, "wait_started", "deadline_ms");
    kill9(child);
    let now = || jiff::Timestamp::now().as_millisecond();
    // Time itself is what is tested: resume with about a second of the three left.
    until("two seconds of the sleep to pass", || {
        now() >= deadline - 1_000
    });
    let resumed_at = now();
    let o = sb.run(&["resume", &run, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ended = now();
    assert!(ended >= deadline, "woke before its deadline");
    assert!(
        ended - resumed_at < 2_500,
        "slept {} ms after resuming: the deadline was not kept",
        ended - resumed_at
    );
}

#[test]
fn a_tampered_journal_is_not_resumed() {
    let sb = Sandbox::new();
    let run = crashed_in_unsafe_step(&sb);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sb.db().display()))
            .await
            .expect("db");
        sqlx::query("DROP TRIGGER events_append_only")
            .execute(&pool)
            .await
            .expect("drop");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE events SET actor = 'mallory' WHERE run_id = '{run}' AND seq = 2"
        )))
        .execute(&pool)
        .await
        .expect("tamper");
        pool.close().await;
    });
    let o = sb.run(&["resume", &run, "--mark-done", "restart"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("does not verify at event 2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(lines(&sb, "restart.count"), 1);
}

#[test]
fn a_run_being_driven_cannot_be_resumed_by_another_process() {
    let sb = Sandbox::new();
    let f = sb.write("u.yaml", UNSAFE_IN_FLIGHT);
    let child = start(&sb, f.to_str().expect("path"));
    until("restart to act", || lines(&sb, "restart.count") == 1);
    let run = the_run(&sb);
    let o = sb.run(&["resume", &run, "--mark-done", "restart"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is being driven by"), "{}", stderr(&o));
    std::fs::write(sb.path().join("go"), "").expect("go");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&sb, "restart.count"), 1);
    assert_eq!(status_of(&sb, &run, "verify"), "succeeded");
}

#[test]
fn a_changed_runbook_resumes_from_the_stored_text_unless_told_otherwise() {
    for use_current in [false, true] {
        let sb = Sandbox::new();
        let run = crashed_in_unsafe_step(&sb);
        let changed = format!(
            "{UNSAFE_IN_FLIGHT}  - {{ id: extra, uses: shell.run, side_effect: read, needs: verify, with: {{ argv: [touch, extra-ran] }} }}\n"
        );
        std::fs::write(sb.path().join("u.yaml"), changed).expect("edit runbook");
        let mut args = vec![
            "resume",
            run.as_str(),
            "--mark-done",
            "restart",
            "-o",
            "json",
            "--quiet",
        ];
        if use_current {
            args.push("--use-current");
        }
        let o = sb.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(sb.path().join("extra-ran").exists(), use_current);
        let events = json(&sb.run(&["show", &run, "--events", "-o", "json"]))["events"].clone();
        let resumed = events
            .as_array()
            .and_then(|e| e.iter().find(|e| e["event"]["type"] == "run_resumed"))
            .cloned()
            .expect("run_resumed journaled");
        assert_eq!(
            resumed["event"]["runbook_text"].is_string(),
            use_current,
            "{resumed:#}"
        );
        if !use_current {
            assert!(
                stderr(&o).contains("changed since the run started"),
                "{}",
                stderr(&o)
            );
        }
        let o = sb.run(&["audit", "verify", &run]);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    }
}

#[test]
fn rerun_from_a_step_reuses_what_came_before_it() {
    let sb = Sandbox::new();
    let f = sb.write(
        "re.yaml",
        r#"
name: re
params:
  level: { type: number, default: 7 }
steps:
  - id: measure
    uses: shell.run
    side_effect: read
    with: { shell: "echo x >> measure.count; echo {{ params.level }}" }
    outputs: { n: "{{ result.stdout | trim | int }}" }
  - id: flaky
    uses: shell.run
    on_failure: continue
    with: { shell: "echo x >> flaky.count; exit 3" }
  - id: choose
    uses: flow.branch
    needs: [measure, flaky]
    with:
      cases: [ { when: "steps.measure.n > 5", then: act } ]
      default: idle
  - id: act
    uses: shell.run
    with: { shell: "echo x >> act.count" }
  - { id: idle, uses: flow.noop }
  - id: report
    uses: shell.run
    needs: [act, idle]
    with: { shell: "echo {{ steps.measure.n }} >> report.log" }
"#,
    );
    let o = sb.run(&["run", f.to_str().expect("path"), "-o", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let parent = json(&o)["run"]["id"].as_str().expect("id").to_string();

    let o = sb.run(&[
        "rerun",
        &parent[..12],
        "--from",
        "act",
        "-o",
        "json",
        "--quiet",
        "-p",
        "level=1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = json(&o);
    assert_eq!(shown["run"]["parent_run"], parent.as_str());
    for (file, n) in [("measure.count", 1), ("flaky.count", 1), ("act.count", 2)] {
        assert_eq!(lines(&sb, file), n, "{file}");
    }
    // The reused measurement (7), not the new parameter (1), is what the re-run reads.
    assert_eq!(
        std::fs::read_to_string(sb.path().join("report.log")).expect("report"),
        "7\n7\n"
    );
    assert_eq!(step(&shown, "measure")["reused_from"], parent.as_str());
    assert_eq!(step(&shown, "flaky")["status"], "failed");
    assert_eq!(step(&shown, "idle")["status"], "skipped");

    let o = sb.run(&["rerun", &parent, "--from", "acts"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `act`"), "{}", stderr(&o));
}

#[test]
fn a_rerun_attempt_keeps_its_original_timeout_deadline() {
    let sb = Sandbox::new();
    let f = sb.write(
        "t.yaml",
        "name: t\nsteps:\n  - id: hang\n    uses: shell.run\n    side_effect: read\n    timeout: 3s\n    with: { shell: \"touch started; while [ -e started ] && [ ! -e never ]; do sleep 0.01; done\" }\n",
    );
    let child = start(&sb, f.to_str().expect("path"));
    until("the step to start", || sb.path().join("started").exists());
    let run = the_run(&sb);
    let deadline = journaled(&sb, &run, "step_started", "deadline_ms");
    kill9(child);
    let now = || jiff::Timestamp::now().as_millisecond();
    until("two of the three seconds to pass", || {
        now() >= deadline - 1_000
    });
    let resumed_at = now();
    let o = sb.run(&["resume", &run, "-o", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let took = now() - resumed_at;
    assert!(
        took < 2_500,
        "the re-run attempt got a fresh timeout ({took} ms)"
    );
    let shown = json(&o);
    assert_eq!(step(&shown, "hang")["error_kind"], "timeout");
    assert_eq!(step(&shown, "hang")["attempts"], 2);
}

#[test]
fn a_retry_backoff_keeps_its_wall_clock_time_across_a_crash() {
    let sb = Sandbox::new();
    let f = sb.write(
        "b.yaml",
        "name: b\nsteps:\n  - id: flaky\n    uses: shell.run\n    side_effect: read\n    retry: { attempts: 2, backoff: { initial: 3s } }\n    with: { shell: \"echo x >> tries; [ -e ok ]\" }\n",
    );
    let child = start(&sb, f.to_str().expect("path"));
    let run = the_run(&sb);
    let retry_at = journaled(&sb, &run, "step_failed", "retry_at_ms");
    kill9(child);
    std::fs::write(sb.path().join("ok"), "").expect("ok");
    let now = || jiff::Timestamp::now().as_millisecond();
    until("two of the three seconds of backoff to pass", || {
        now() >= retry_at - 1_000
    });
    let resumed_at = now();
    let o = sb.run(&["resume", &run, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ended = now();
    assert!(ended >= retry_at, "retried before its backoff was over");
    assert!(
        ended - resumed_at < 2_500,
        "the backoff started over after the crash ({} ms)",
        ended - resumed_at
    );
    assert_eq!(lines(&sb, "tries"), 2);
}

/// A step whose first copy keeps running (its PID in `pid`) and whose second copy finishes.
fn left_running(class: &str) -> String {
    format!(
        r#"
name: left-running
steps:
  - id: long
    uses: shell.run
    side_effect: {class}
    with: {{ shell: "if [ -e second ]; then echo second >> runs; else touch second; echo $$ > pid; exec sleep 600; fi" }}
"#
    )
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string));
    matches!(state.as_deref(), Some(s) if s != "Z" && s != "X")
}

fn crash_with_command_running(sb: &Sandbox, class: &str) -> (String, i32) {
    let f = sb.write("long.yaml", &left_running(class));
    let child = start(sb, f.to_str().expect("path"));
    let run = the_run(sb);
    until("the command to start", || sb.path().join("pid").exists());
    journaled(sb, &run, "step_process", "attempt");
    kill9(child);
    let pid: i32 = std::fs::read_to_string(sb.path().join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(pid), "the command outlived the killed engine");
    (run, pid)
}

#[test]
fn a_read_step_whose_command_outlived_the_engine_is_stopped_before_it_runs_again() {
    let sb = Sandbox::new();
    let (run, pid) = crash_with_command_running(&sb, "idempotent");
    let o = sb.run(&["resume", &run, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    until("the old copy to be gone", || !alive(pid));
    assert_eq!(lines(&sb, "runs"), 1, "the step ran once more, to its end");
    let audit = stdout(&sb.run(&["audit", &run]));
    assert!(
        audit.contains(&format!(
            "its process group {pid} was still running after the crash: terminated"
        )),
        "{audit}"
    );
}

#[test]
fn an_unsafe_step_whose_command_still_runs_is_reported_to_the_operator_not_stopped() {
    let sb = Sandbox::new();
    let (run, pid) = crash_with_command_running(&sb, "unsafe");
    let o = sb.run(&["resume", &run]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("STILL RUNNING as process group {pid}")),
        "{}",
        stderr(&o)
    );
    assert!(alive(pid), "the operator decides about an unsafe command");
    // `-s KILL --`: procps' kill reads `kill -KILL -PID` as "every process" (kill(-1)).
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status();
    until("the command to be gone", || !alive(pid));
}
