//! Hostile input end to end: huge numbers, bytes that are not UTF-8, a directory or a FIFO where a
//! runbook file is expected. Each must give a located, worded error and never a panic or a run left
//! `running`.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;

/// A runbook with one step, `body` being that step's lines after `- id: s`.
fn one_step(body: &str) -> String {
    format!(
        "apiVersion: runbook/v1\nname: huge\nparams:\n  secs: {{ type: string, default: \"1\" }}\nsteps:\n  - id: s\n{body}"
    )
}

fn assert_no_panic(o: &std::process::Output) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && o.status.code() != Some(101),
        "the binary panicked:\n{err}"
    );
}

/// `runbook validate FILE` on a runbook with this step; it must be rejected with exit 2, the error
/// located at `line:col` of the offending value and naming the limit.
fn rejected_at(step: &str, line_col: &str) {
    let sb = Sandbox::new();
    sb.write("huge.yaml", &one_step(step));
    let o = sb.run(&["validate", "huge.yaml"]);
    assert_no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains(&format!("--> huge.yaml:{line_col}\n")),
        "expected the error at huge.yaml:{line_col}:\n{err}"
    );
    assert!(err.contains("365 days"), "the limit is not named:\n{err}");
}

#[test]
fn a_literal_huge_timeout_is_rejected_at_its_value() {
    rejected_at(
        "    uses: shell.run\n    timeout: 1e308\n    with: { argv: [\"true\"] }\n",
        "8:14",
    );
    rejected_at(
        "    uses: shell.run\n    timeout: 18446744073709551615\n    with: { argv: [\"true\"] }\n",
        "8:14",
    );
    rejected_at(
        "    uses: shell.run\n    timeout: 999999999h\n    with: { argv: [\"true\"] }\n",
        "8:14",
    );
}

#[test]
fn a_literal_huge_backoff_is_rejected_at_its_value() {
    rejected_at(
        "    uses: shell.run\n    retry: { backoff: { initial: 1e308 } }\n    with: { argv: [\"true\"] }\n",
        "8:34",
    );
    rejected_at(
        "    uses: shell.run\n    retry: { backoff: { max: 1e308 } }\n    with: { argv: [\"true\"] }\n",
        "8:30",
    );
}

#[test]
fn a_literal_huge_sleep_or_deadline_is_rejected_at_its_value() {
    rejected_at("    uses: flow.sleep\n    with: { for: 1e308 }\n", "8:18");
    rejected_at(
        "    uses: flow.sleep\n    with: { for: \"1e308\" }\n",
        "8:18",
    );
    rejected_at(
        "    uses: flow.wait_until\n    with:\n      deadline: 1e308\n      probe: { uses: shell.run, side_effect: read, with: { argv: [\"true\"] } }\n      until: \"true\"\n",
        "9:17",
    );
}

#[test]
fn a_huge_retry_factor_is_accepted_and_capped_by_max() {
    // factor 1e308 overflows to infinity on the second retry; the wait must be `max`, not a panic and
    // not zero. `max: 1ms` keeps the run short.
    let sb = Sandbox::new();
    sb.write(
        "huge.yaml",
        &one_step(
            "    uses: shell.run\n    retry: { attempts: 4, backoff: { initial: 1ms, factor: 1e308, max: 1ms } }\n    with: { argv: [\"false\"] }\n",
        ),
    );
    let o = sb.run(&["run", "huge.yaml", "-o", "json", "--quiet"]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{}", stderr(&o));
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(shown["steps"][0]["attempts"], 4, "{shown:#}");
    assert_eq!(shown["steps"][0]["error_kind"], "status", "{shown:#}");
}

/// Runs a runbook with this step and `-p secs=VALUE`; the run must end `failed` (exit 1) with step `s`
/// failed of kind `input` naming `field`, and `runs`/`show` must show it finished.
fn templated_fails_as_input(step: &str, value: &str, field: &str) {
    let sb = Sandbox::new();
    sb.write("huge.yaml", &one_step(step));
    let v = sb.run(&["validate", "huge.yaml"]);
    assert_eq!(v.status.code(), Some(0), "must validate:\n{}", stderr(&v));

    let param = format!("secs={value}");
    let o = sb.run(&["run", "huge.yaml", "-p", &param, "--quiet"]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{}", stderr(&o));

    let runs: Value = serde_json::from_str(&stdout(&sb.run(&["runs", "-o", "json"])))
        .expect("runs -o json is JSON");
    let run = &runs[0];
    assert_eq!(run["status"], "failed", "{runs:#}");
    assert!(run["finished_at"].is_i64(), "not finished: {runs:#}");

    let id = run["id"].as_str().expect("run id");
    let shown: Value =
        serde_json::from_str(&stdout(&sb.run(&["show", id, "-o", "json"]))).expect("show json");
    let s = &shown["steps"][0];
    assert_eq!(s["status"], "failed", "{shown:#}");
    assert_eq!(s["error_kind"], "input", "{shown:#}");
    let msg = s["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("`{field}`")) && msg.contains("365 days"),
        "the error does not name the field and the limit: {msg}"
    );
}

const WAIT_UNTIL: &str = "    uses: flow.wait_until\n    with:\n      deadline: DEADLINE\n      interval: INTERVAL\n      probe: { uses: shell.run, side_effect: read, with: { argv: [\"true\"] } }\n      until: \"false\"\n";

#[test]
fn a_templated_huge_sleep_fails_the_step_as_input() {
    let step = "    uses: flow.sleep\n    with: { for: \"{{ params.secs }}\" }\n";
    templated_fails_as_input(step, "1e308", "for");
    templated_fails_as_input(step, "18446744073709551615", "for");
    templated_fails_as_input(step, "9999999h", "for");
}

#[test]
fn a_templated_huge_wait_fails_the_step_as_input() {
    let deadline = WAIT_UNTIL
        .replace("DEADLINE", "\"{{ params.secs }}\"")
        .replace("INTERVAL", "1s");
    templated_fails_as_input(&deadline, "1e308", "deadline");
    let interval = WAIT_UNTIL
        .replace("DEADLINE", "1s")
        .replace("INTERVAL", "\"{{ params.secs }}\"");
    templated_fails_as_input(&interval, "1e308", "interval");
}

#[test]
fn a_templated_nan_duration_fails_the_step_as_input() {
    let step = "    uses: flow.sleep\n    with: { for: \"{{ params.secs }}\" }\n";
    let sb = Sandbox::new();
    sb.write("huge.yaml", &one_step(step));
    let o = sb.run(&[
        "run",
        "huge.yaml",
        "-p",
        "secs=NaN",
        "-o",
        "json",
        "--quiet",
    ]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{}", stderr(&o));
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(shown["steps"][0]["error_kind"], "input", "{shown:#}");
    assert!(
        shown["steps"][0]["error"]
            .as_str()
            .is_some_and(|m| m.contains("not a number")),
        "{shown:#}"
    );
}

/// `runbook validate PATH` and `runbook run PATH` must both refuse `path` with exit 2 and `message`,
/// and must return (a FIFO must not be opened, or the command would block for ever).
fn refused(sb: &Sandbox, path: &str, message: &str) {
    for cmd in ["validate", "run"] {
        let o = sb.run(&[cmd, path]);
        assert_no_panic(&o);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd} {path}:\n{err}");
        assert!(
            err.contains(message),
            "{cmd} {path}: expected `{message}` in:\n{err}"
        );
        assert!(
            !err.contains("no such file") || message.contains("no such file"),
            "{err}"
        );
    }
}

#[test]
fn a_directory_is_not_no_such_file() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("dir.yaml")).expect("mkdir");
    refused(&sb, "dir.yaml", "this is a directory, not a runbook file");
    refused(&sb, "./dir.yaml", "this is a directory, not a runbook file");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let sb = Sandbox::new();
    let fifo = sb.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("spawn mkfifo");
    assert!(made.success(), "mkfifo failed");
    // Nobody ever writes to the FIFO: reading it would block, so returning at all proves the type
    // was checked before opening.
    refused(&sb, "pipe.yaml", "this is a FIFO, not a runbook file");
}

#[test]
fn a_device_is_refused() {
    let sb = Sandbox::new();
    refused(&sb, "/dev/null", "this is a device, not a runbook file");
    refused(&sb, "/dev/zero", "this is a device, not a runbook file");
}

#[test]
fn a_missing_file_says_so() {
    let sb = Sandbox::new();
    refused(&sb, "missing.yaml", "no such file");
}

#[test]
fn not_utf8_is_located_for_run_too() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("latin.yaml"),
        b"name: latin\nsteps:\n  - id: a\n    title: caf\xe9\n    uses: flow.noop\n",
    )
    .expect("write");
    refused(&sb, "latin.yaml", "the file is not UTF-8 text (byte 0xe9)");
    let o = sb.run(&["run", "latin.yaml"]);
    assert!(stderr(&o).contains("--> latin.yaml:4:15"), "{}", stderr(&o));
}

#[test]
fn a_file_above_the_size_limit_is_refused_unread() {
    let sb = Sandbox::new();
    let f = std::fs::File::create(sb.path().join("big.yaml")).expect("create");
    // Sparse: the size is what is checked, so nothing needs to be written.
    f.set_len(runbook_engine::runbook::source::MAX_SOURCE_BYTES + 1)
        .expect("set_len");
    refused(&sb, "big.yaml", "a runbook file may be at most 16 MiB");
}

#[test]
fn list_reports_an_unreadable_runbook_as_invalid() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("runbooks")).expect("mkdir");
    std::fs::write(sb.path().join("runbooks/latin.yaml"), b"name: l\xe9\n").expect("write");
    let o = sb.run(&["list", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(rows[0]["name"], "latin", "{rows:#}");
    assert_eq!(rows[0]["valid"], false, "{rows:#}");
}
