//! End-to-end runs of the real CLI against a real SQLite file.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;
use std::time::{Duration, Instant};

fn json(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(o),
            stderr(o)
        )
    })
}

fn step<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {shown:#}"))
}

/// Runs a runbook with `-o json`; returns (exit code, the run as `show -o json` prints it).
fn run_json(sb: &Sandbox, file: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["run", file, "-o", "json", "--quiet"];
    args.extend_from_slice(extra);
    let o = sb.run(&args);
    (o.status.code().unwrap_or(-1), json(&o))
}

#[test]
fn shipped_example_runs_and_records_its_decision() {
    let sb = Sandbox::new();
    let example = crate::common::repo().join("runbooks/examples/service-health.yaml");
    let o = sb.run(&[
        "run",
        example.to_str().expect("utf-8 path"),
        "-o",
        "json",
        "--param",
        "url=http://127.0.0.1:1/health",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr:\n{}", stderr(&o));
    let shown = json(&o);
    assert_eq!(shown["run"]["status"], "succeeded");
    assert_eq!(step(&shown, "probe")["status"], "failed");
    assert_eq!(step(&shown, "probe")["attempts"], 2);
    let decision = &step(&shown, "choose")["decision"];
    assert_eq!(decision["taken"], serde_json::json!(["report_down"]));
    assert_eq!(decision["values"]["steps.probe.status"], "failed");
    assert_eq!(step(&shown, "clean_tmp")["status"], "skipped");
    assert_eq!(step(&shown, "report_down")["status"], "succeeded");
    assert_eq!(shown["run"]["actor"], "tester");
}

#[test]
fn independent_steps_run_in_parallel() {
    // Each step creates its own file, then waits for the other's. Run one after the other, the first
    // would wait for ever; the 3s timeout turns that into a failure instead of a hang.
    let sb = Sandbox::new();
    let f = sb.write(
        "par.yaml",
        r#"
name: par
steps:
  - id: a
    uses: shell.run
    timeout: 3s
    with: { shell: "touch a; while [ ! -e b ]; do sleep 0.01; done" }
  - id: b
    uses: shell.run
    timeout: 3s
    with: { shell: "touch b; while [ ! -e a ]; do sleep 0.01; done" }
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(step(&shown, "a")["status"], "succeeded");
    assert_eq!(step(&shown, "b")["status"], "succeeded");
    // With --max-parallel 1 the same runbook cannot finish: the bound is real.
    let sb2 = Sandbox::new();
    let f2 = sb2.write("par.yaml", &std::fs::read_to_string(&f).expect("read"));
    let (code, shown) = run_json(&sb2, f2.to_str().expect("path"), &["--max-parallel", "1"]);
    assert_eq!(code, 1);
    assert_eq!(step(&shown, "a")["error_kind"], "timeout");
}

#[test]
fn retries_with_backoff_until_success() {
    let sb = Sandbox::new();
    let f = sb.write(
        "retry.yaml",
        r#"
name: retry
steps:
  - id: flaky
    uses: shell.run
    retry: { attempts: 4, backoff: { initial: 10ms, factor: 2, max: 50ms }, on: [status] }
    with: { shell: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ]" }
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(step(&shown, "flaky")["attempts"], 3);
    assert_eq!(
        std::fs::read_to_string(sb.path().join("n"))
            .expect("n")
            .trim(),
        "3"
    );
}

#[test]
fn retry_stops_at_attempts_and_only_for_listed_kinds() {
    let sb = Sandbox::new();
    let f = sb.write(
        "retry2.yaml",
        r#"
name: retry2
steps:
  - id: always
    uses: shell.run
    retry: { attempts: 3, backoff: { initial: 1ms } }
    with: { shell: "echo x >> tries; exit 4" }
  - id: not_listed
    uses: shell.run
    on_failure: continue
    retry: { attempts: 3, backoff: { initial: 1ms }, on: [timeout] }
    with: { shell: "echo x >> tries2; exit 4" }
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 1);
    assert_eq!(step(&shown, "always")["attempts"], 3);
    assert_eq!(step(&shown, "always")["error_kind"], "status");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("tries"))
            .expect("tries")
            .lines()
            .count(),
        3
    );
    assert_eq!(step(&shown, "not_listed")["attempts"], 1);
}

#[test]
fn timeout_kills_the_step_and_fails_it() {
    let sb = Sandbox::new();
    let f = sb.write(
        "to.yaml",
        r#"
name: to
steps:
  - id: slow
    uses: shell.run
    timeout: 300ms
    with: { argv: [sleep, "30"] }
"#,
    );
    let t = Instant::now();
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 1);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the step"
    );
    assert_eq!(step(&shown, "slow")["error_kind"], "timeout");
    assert_eq!(shown["run"]["status"], "failed");
}

#[test]
fn a_timed_out_step_keeps_the_output_it_had_produced() {
    let sb = Sandbox::new();
    let f = sb.write(
        "partial.yaml",
        r#"
name: partial
steps:
  - id: tail_logs
    uses: shell.run
    side_effect: read
    timeout: 500ms
    with: { shell: "echo first line; echo second line >&2; exec sleep 30" }
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 1);
    assert_eq!(step(&shown, "tail_logs")["error_kind"], "timeout");
    let id = shown["run"]["id"].as_str().expect("run id");
    let events: Value =
        serde_json::from_str(&stdout(&sb.run(&["show", id, "--events", "-o", "json"])))
            .expect("json");
    let failed = events["events"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["event"]["type"] == "step_failed"))
        .expect("a step_failed event");
    let partial = failed["event"]["detail"]["partial_output"]
        .as_str()
        .unwrap_or_else(|| panic!("no partial output: {failed:#}"));
    assert!(
        partial.contains("first line") && partial.contains("second line"),
        "{partial}"
    );
}

const APPROVE: &str = r#"
name: approve
steps:
  - id: risky
    uses: shell.run
    approval: required
    with: { argv: [touch, did-it] }
"#;

#[test]
fn approval_with_yes_is_recorded_with_who_and_how() {
    let sb = Sandbox::new();
    let f = sb.write("approve.yaml", APPROVE);
    let (code, shown) = run_json(
        &sb,
        f.to_str().expect("path"),
        &["--yes", "--actor", "alice"],
    );
    assert_eq!(code, 0, "{shown:#}");
    let a = &step(&shown, "risky")["approval"];
    assert_eq!(a["by"], "alice");
    assert_eq!(a["how"], "--yes");
    assert!(sb.path().join("did-it").exists());
}

const PARAMS: &str = r#"
name: params
params:
  level: { type: string, enum: [low, high], default: low }
  count: { type: number, required: true }
  dry: { type: bool, default: true }
steps:
  - id: show
    uses: flow.noop
    with: { value: "{{ params.level }}-{{ params.count * 2 }}-{{ params.dry }}" }
    outputs:
      v: "{{ result.value }}"
"#;

#[test]
fn params_are_typed_defaulted_and_checked() {
    let sb = Sandbox::new();
    let f = sb.write("params.yaml", PARAMS);
    let p = f.to_str().expect("path");
    let (code, shown) = run_json(&sb, p, &["--param", "count=21", "-p", "dry=false"]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(step(&shown, "show")["outputs"]["v"], "low-42-false");

    for (args, needle) in [
        (vec!["-p", "count=many"], "not a number"),
        (
            vec!["-p", "count=1", "-p", "level=extreme"],
            "not one of: low, high",
        ),
        (
            vec!["-p", "count=1", "-p", "levl=low"],
            "did you mean `level`",
        ),
        (vec![], "missing required parameter `count`"),
        (vec!["-p", "count"], "NAME=VALUE"),
    ] {
        let mut a = vec!["run", p];
        a.extend(args.iter().copied());
        let o = sb.run(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: expected `{needle}` in:\n{}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"));
    }
    // Nothing was recorded for the rejected runs.
    let o = sb.run(&["runs", "-o", "json"]);
    assert_eq!(json(&o).as_array().map(Vec::len), Some(1));
}

#[test]
fn a_missing_database_directory_is_a_clear_error() {
    let sb = Sandbox::new();
    let f = sb.write("params.yaml", PARAMS);
    let db = sb.path().join("no/such/dir/runs.db");
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "-p", "count=1"])
        .env("RUNBOOK_DB", &db)
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(stderr(&o).contains("no/such/dir"), "{}", stderr(&o));
}

#[test]
fn wait_until_polls_until_the_condition_holds_and_records_its_deadline() {
    let sb = Sandbox::new();
    let f = sb.write(
        "wait.yaml",
        r#"
name: wait
steps:
  - id: settle
    uses: flow.wait_until
    with:
      probe:
        uses: shell.run
        side_effect: read
        with: { shell: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo $n" }
      until: result.stdout | trim | int >= 3
      interval: 20ms
      deadline: 30s
  - id: never
    uses: flow.wait_until
    needs: settle
    with:
      probe: { uses: flow.noop, with: { value: 1 } }
      until: result.value == 2
      interval: 20ms
      deadline: 200ms
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &["--max-parallel", "1"]);
    assert_eq!(code, 1, "{shown:#}");
    assert_eq!(step(&shown, "settle")["status"], "succeeded");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("n"))
            .expect("n")
            .trim(),
        "3"
    );
    let never = step(&shown, "never");
    assert_eq!(never["error_kind"], "timeout");
    assert!(
        never["error"]
            .as_str()
            .is_some_and(|e| e.contains("result.value == 2")),
        "{never:#}"
    );
    let id = shown["run"]["id"].as_str().expect("id");
    let o = sb.run(&["show", id, "--events", "-o", "json"]);
    let events = json(&o)["events"].as_array().cloned().unwrap_or_default();
    let waits: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"]["type"] == "wait_started")
        .collect();
    assert_eq!(waits.len(), 2);
    assert!(waits.iter().all(|w| {
        w["event"]["deadline_ms"]
            .as_i64()
            .is_some_and(|d| d > w["at"].as_i64().unwrap_or(i64::MAX))
    }));
}

#[test]
fn ctrl_c_stops_the_run_and_records_it_as_interrupted() {
    let sb = Sandbox::new();
    let f = sb.write(
        "long.yaml",
        r#"
name: long
steps:
  - id: hang
    uses: shell.run
    timeout: 60s
    with: { shell: "touch started; sleep 60" }
  - { id: after, uses: flow.noop, needs: hang }
"#,
    );
    let mut child = sb
        .cmd(&["run", f.to_str().expect("path"), "--quiet"])
        .spawn()
        .expect("spawn");
    // Wait (bounded) for the step to be running, observed through the file it creates.
    let t = Instant::now();
    while !sb.path().join("started").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the step never started"
        );
        std::thread::yield_now();
    }
    let pid = i32::try_from(child.id()).expect("pid");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let o = sb.run(&["runs", "-o", "json"]);
    let runs = json(&o);
    assert_eq!(runs[0]["status"], "interrupted");
    let id = runs[0]["id"].as_str().expect("id");
    let shown = json(&sb.run(&["show", id, "-o", "json"]));
    assert_eq!(step(&shown, "hang")["status"], "running");
    assert_eq!(step(&shown, "after")["status"], "pending");
}

#[test]
fn show_runs_list_and_graph_read_back_what_happened() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("mkdir");
    std::fs::write(sb.path().join("runbooks/params.yaml"), PARAMS).expect("write");
    let o = sb.run(&["run", "params", "-p", "count=2", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = sb.run(&["list"]);
    assert!(stdout(&o).contains("params"), "{}", stdout(&o));
    let o = sb.run(&["runs"]);
    let out = stdout(&o);
    assert!(out.contains("params") && out.contains("succeeded"), "{out}");
    let id = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("an id");
    let o = sb.run(&["show", &id[..10]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("v=low-4-true"), "{}", stdout(&o));
    let o = sb.run(&["show", "ffffffff"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run matches"), "{}", stderr(&o));
    let o = sb.run(&["graph", "params", "--format", "dot"]);
    assert!(stdout(&o).starts_with("digraph"), "{}", stdout(&o));
}

#[test]
fn graph_shows_branch_edges_with_their_conditions() {
    let sb = Sandbox::new();
    let example = crate::common::repo().join("runbooks/examples/service-health.yaml");
    let o = sb.run(&["graph", example.to_str().expect("path")]);
    let out = stdout(&o);
    assert!(out.starts_with("flowchart TD"), "{out}");
    assert!(
        out.contains("choose -- \"steps.probe.status == 'failed'\" --> report_down"),
        "{out}"
    );
    assert!(out.contains("disk --> choose"), "{out}");
    // Each phase is a box around its steps, in the phases' order.
    let diagnose = out
        .find("subgraph phase_diagnose[\"diagnose\"]")
        .expect(&out);
    let decide = out.find("subgraph phase_decide[\"decide\"]").expect(&out);
    assert!(diagnose < decide, "{out}");
    let inside = &out[diagnose..decide];
    assert!(
        inside.contains("probe[") && inside.contains("\n    end\n"),
        "{out}"
    );
    let o = sb.run(&["graph", example.to_str().expect("path"), "--format", "dot"]);
    let dot = stdout(&o);
    assert!(
        dot.contains("subgraph \"cluster_diagnose\" {\n        label=\"diagnose\";"),
        "{dot}"
    );
}

#[test]
fn the_intent_of_an_unsafe_step_is_committed_before_it_acts() {
    // The step itself reads the journal from another process (the real CLI) while it runs: its own
    // `step_started` must already be there, or it exits 7 and the run fails.
    let sb = Sandbox::new();
    let f = sb.write(
        "intent.yaml",
        r#"
name: intent
steps:
  - id: act
    uses: shell.run
    with:
      shell: >-
        "$RB" show {{ run.id }} --events -o json > seen.json &&
        grep -q '"type": "step_started"' seen.json || exit 7
      env: { RB: "{{ env.RUNBOOK_BIN }}" }
"#,
    );
    let o = sb
        .cmd(&["run", f.to_str().expect("path"), "--quiet"])
        .env("RUNBOOK_BIN", crate::common::bin())
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path().join("seen.json")).expect("seen"))
            .expect("json");
    let started = seen["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["event"]["type"] == "step_started"))
        .expect("intent visible to another process");
    assert_eq!(started["event"]["class"], "unsafe");
    assert_eq!(started["event"]["step"], "act");
}

#[test]
fn an_abort_ends_pending_retries_as_failures_and_starts_nothing_new() {
    let sb = Sandbox::new();
    let f = sb.write(
        "abort.yaml",
        r#"
name: abort
steps:
  - id: slow_retry
    uses: shell.run
    retry: { attempts: 5, backoff: { initial: 30s } }
    with: { argv: ["false"] }
  - id: boom
    uses: shell.run
    with: { argv: ["false"] }
  - id: guarded
    uses: shell.run
    on_failure: continue
    when: "steps.boom.status == 'succeeded'"
    needs: boom
    with: { argv: [touch, guarded-ran] }
"#,
    );
    let t = Instant::now();
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 1, "{shown:#}");
    // The 30s backoff is not waited out once the run has failed.
    assert!(t.elapsed() < Duration::from_secs(20));
    let s = step(&shown, "slow_retry");
    assert_eq!(s["status"], "failed", "{s:#}");
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("run was aborted")),
        "{s:#}"
    );
    assert!(!sb.path().join("guarded-ran").exists());
}

/// Whether a process is gone (or only a zombie waiting to be reaped).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

#[test]
fn a_timed_out_shell_step_takes_its_children_with_it() {
    let sb = Sandbox::new();
    let f = sb.write(
        "orphan.yaml",
        r#"
name: orphan
steps:
  - id: spawn
    uses: shell.run
    timeout: 1s
    with: { shell: "sleep 300 & echo $! > child.pid; wait" }
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 1, "{shown:#}");
    assert_eq!(step(&shown, "spawn")["error_kind"], "timeout");
    let pid = std::fs::read_to_string(sb.path().join("child.pid")).expect("pid");
    let pid = pid.trim();
    // SIGKILL is delivered before killpg returns; allow only for the kernel to finish the exit.
    let t = Instant::now();
    while !dead(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "background child {pid} outlived its step"
        );
        std::thread::yield_now();
    }
}

#[test]
fn numbers_from_templates_reach_argv_as_text() {
    let sb = Sandbox::new();
    let f = sb.write(
        "num.yaml",
        r#"
name: num
params:
  replicas: { type: number, default: 3 }
steps:
  - id: echo
    uses: shell.run
    side_effect: read
    with:
      argv: [echo, --replicas, "{{ params.replicas }}", "{{ params.replicas > 2 }}"]
      env: { N: "{{ params.replicas }}" }
    outputs:
      out: "{{ result.stdout | trim }}"
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(step(&shown, "echo")["outputs"]["out"], "--replicas 3 true");
}

#[test]
fn sleep_waits_its_time_and_journals_the_wake_up_time() {
    let sb = Sandbox::new();
    let f = sb.write(
        "sleep.yaml",
        r#"
name: nap
steps:
  - id: nap
    uses: flow.sleep
    with: { for: 300ms }
    outputs:
      slept: "{{ result.slept_ms }}"
"#,
    );
    let (code, shown) = run_json(&sb, f.to_str().expect("path"), &[]);
    assert_eq!(code, 0, "{shown:#}");
    let slept = step(&shown, "nap")["outputs"]["slept"]
        .as_i64()
        .expect("slept_ms");
    assert!(slept >= 300, "woke after {slept} ms");
    let id = shown["run"]["id"].as_str().expect("id");
    let events = json(&sb.run(&["show", id, "--events", "-o", "json"]))["events"].clone();
    let wait = events
        .as_array()
        .and_then(|e| e.iter().find(|e| e["event"]["type"] == "wait_started"))
        .cloned()
        .expect("wait_started journaled");
    let at = wait["at"].as_i64().expect("at");
    let deadline = wait["event"]["deadline_ms"].as_i64().expect("deadline");
    assert!(
        (300..1_000).contains(&(deadline - at)),
        "deadline {deadline} at {at}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_run_is_recorded_in_postgresql() {
    let db = crate::common::PgDb::new().await;
    let sb = Sandbox::new();
    let example = crate::common::repo().join("runbooks/examples/service-health.yaml");
    let url = db.url.clone();
    let path = example.to_str().expect("path").to_string();
    let (o, shown) = tokio::task::spawn_blocking({
        let sb_path = sb.path().to_path_buf();
        move || {
            let run = |args: &[&str]| {
                std::process::Command::new(crate::common::bin())
                    .args(args)
                    .current_dir(&sb_path)
                    .env("RUNBOOK_DB", &url)
                    .env("RUNBOOK_ACTOR", "tester")
                    .env("NO_COLOR", "1")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("spawn")
            };
            let o = run(&[
                "run",
                &path,
                "-o",
                "json",
                "--quiet",
                "-p",
                "url=http://127.0.0.1:1/",
            ]);
            let id = json(&o)["run"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let shown = run(&["show", &id[..12.min(id.len())], "-o", "json"]);
            (o, shown)
        }
    })
    .await
    .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = json(&shown);
    assert_eq!(shown["run"]["status"], "succeeded");
    assert_eq!(
        step(&shown, "choose")["decision"]["taken"],
        serde_json::json!(["report_down"])
    );
    assert_eq!(step(&shown, "probe")["attempts"], 2);
}

#[test]
fn secrets_never_reach_the_database() {
    let sb = Sandbox::new();
    let secret = "s3cr3t-0f-the-0n-call";
    let f = sb.write(
        "secret.yaml",
        r#"
name: secret
params:
  api_token: { type: string, required: true }
connections:
  vault: { kind: http, base_url: "http://127.0.0.1:1", bearer_token: 'secret("DEPLOY_TOKEN")' }
steps:
  - id: use
    uses: shell.run
    side_effect: read
    with:
      shell: 'echo "using $T and {{ env.DEPLOY_TOKEN }}"'
      env: { T: "{{ env.DEPLOY_TOKEN }}" }
    outputs:
      said: "{{ result.stdout | trim }}"
  - id: call
    uses: http.request
    on_failure: continue
    needs: use
    with:
      url: /v1/x
      headers: { Authorization: "Bearer {{ env.DEPLOY_TOKEN }}" }
"#,
    );
    let o = sb
        .cmd(&[
            "run",
            f.to_str().expect("path"),
            "-o",
            "json",
            "--quiet",
            "-p",
            "api_token=param-secret-value",
        ])
        .env("DEPLOY_TOKEN", secret)
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = json(&o);
    assert_eq!(step(&shown, "use")["outputs"]["said"], "using *** and ***");
    // Nothing written anywhere in the database files (main file and WAL) contains a secret.
    for entry in std::fs::read_dir(sb.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("runs.db") {
            let bytes = std::fs::read(&path).expect("read db file");
            for needle in [secret, "param-secret-value", "Bearer s3cr3t"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} found in {}",
                    path.display()
                );
            }
        }
    }
    let events = json(&sb.run(&[
        "show",
        shown["run"]["id"].as_str().expect("id"),
        "--events",
        "-o",
        "json",
    ]));
    let text = events.to_string();
    assert!(
        text.contains("\"Authorization\":\"***\""),
        "the header key stays, its value is masked"
    );
    // The journal says where the connection's secret comes from, not what it is.
    assert!(
        text.contains(r#"secret(\"DEPLOY_TOKEN\")"#),
        "the secret reference is journaled: {text}"
    );
}
