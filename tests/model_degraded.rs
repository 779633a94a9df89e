//! The model-degraded runbook end to end, in `dev/sandbox`'s twin of the platform (real Prometheus,
//! Alertmanager, MLflow, MongoDB wire server, fake Kubernetes API, an orchestrator twin). For each
//! scenario the runbook must choose the resolution by itself, change what that resolution changes and
//! nothing else, and succeed only if the platform really recovered: the twin's numbers follow the
//! model that really serves and the config the pods really run with.
//!
//! The scenarios share one sandbox, so these tests run one at a time (`.config/nextest.toml`, group
//! `sandbox`). They need `RUNBOOK_TEST_SANDBOX` (dev/test.sh sets it); without it they skip, and fail
//! in CI.

use crate::common::{Sandbox, bin, repo, stderr, stdout};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Whether to drive the sandbox: these tests start and reset a whole set of servers, minutes in all,
/// so a developer's `cargo nextest run` leaves them out unless asked; CI must run them.
fn sandbox_wanted() -> bool {
    if std::env::var_os("RUNBOOK_TEST_SANDBOX").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let why = "`RUNBOOK_TEST_SANDBOX` is not set: these tests drive dev/sandbox (dev/test.sh sets it; \
               or export RUNBOOK_TEST_SANDBOX=1)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    false
}

fn sandbox_script() -> PathBuf {
    repo().join("dev/sandbox")
}

/// `dev/sandbox up SCENARIO`, then its state.
fn up(scenario: &str) -> Value {
    let o = Command::new(sandbox_script())
        .args(["up", scenario])
        .output()
        .expect("run dev/sandbox");
    assert!(
        o.status.success(),
        "dev/sandbox up {scenario} failed:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    state()
}

fn state() -> Value {
    let o = Command::new(sandbox_script())
        .args(["status", "--json"])
        .output()
        .expect("run dev/sandbox status");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}{}", stdout(&o), stderr(&o)))
}

/// The sandbox's env file (ports, kubeconfig, sink directories), as the variables it exports.
fn sandbox_env() -> HashMap<String, String> {
    let o = Command::new(sandbox_script())
        .arg("env")
        .output()
        .expect("run dev/sandbox env");
    assert!(o.status.success(), "{}", stderr(&o));
    let file = stdout(&o).trim().to_string();
    // The file is shell (quoted values): let a shell read it, with nothing else in its environment.
    let o = Command::new("bash")
        .args(["-c", r#"set -a; . "$1" && env -0"#, "env", &file])
        .env_clear()
        .output()
        .expect("read the sandbox env file");
    assert!(o.status.success(), "{}", stderr(&o));
    o.stdout
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `runbook ARGS` from the repository (its runbooks/ and runbook.toml), against the sandbox.
fn runbook(sb: &Sandbox, env: &HashMap<String, String>, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .envs(
            env.iter()
                .filter(|(k, _)| k.starts_with("RUNBOOK_CONNECTION_")),
        )
        .env("RUNBOOK_DB", sb.db())
        .env("RUNBOOK_ACTOR", "oncall-test")
        .env_remove("RUNBOOK_PROFILE")
        .env_remove("RUNBOOK_CONFIG")
        .output()
        .expect("run runbook")
}

/// Sandbox timings: recovery shows within seconds there, so the waits are short.
const FAST: &[&str] = &[
    "--profile",
    "sandbox",
    "--quiet",
    "-p",
    "watch_for=4s",
    "-p",
    "watch_every=1s",
    "-p",
    "feedback_window=15s",
    "-p",
    "recovery_deadline=40s",
];

struct Outcome {
    code: Option<i32>,
    log: String,
    run: Value,
    env: HashMap<String, String>,
    sb: Sandbox,
}

impl Outcome {
    fn step(&self, id: &str) -> &Value {
        self.run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("no step {id} in the run"))
    }
    fn status(&self, id: &str) -> &str {
        self.step(id)["status"].as_str().unwrap_or("?")
    }
    fn taken(&self) -> Vec<String> {
        self.step("choose")["decision"]["taken"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The Slack messages the run posted (the recorder's files, in arrival order).
    fn slack(&self) -> Vec<String> {
        files_in(&self.env["RUNBOOK_SANDBOX_SLACK_DIR"])
            .into_iter()
            .filter(|t| t.contains("\"/slack"))
            .collect()
    }
    fn mail(&self) -> Vec<String> {
        files_in(&format!("{}/new", self.env["RUNBOOK_SANDBOX_MAILDIR"]))
    }
    fn audit_markdown(&self) -> String {
        let id = self.run["run"]["id"].as_str().expect("run id");
        let o = runbook(&self.sb, &self.env, &["audit", id, "--format", "markdown"]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    }
}

fn files_in(dir: &str) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

fn run_scenario(scenario: &str, extra: &[&str]) -> Option<(Value, Outcome, Value)> {
    if !sandbox_wanted() {
        return None;
    }
    let before = up(scenario);
    let env = sandbox_env();
    let sb = Sandbox::new();
    let mut args = vec!["run", "model-degraded", "--yes"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let o = runbook(&sb, &env, &args);
    let out = last_run(sb, env, &o);
    Some((before, out, state()))
}

/// The newest run of this test's database, read back after the command `o` that ended it.
fn last_run(sb: Sandbox, env: HashMap<String, String>, o: &Output) -> Outcome {
    let log = format!("{}{}", stdout(o), stderr(o));
    let runs = runbook(&sb, &env, &["runs", "-o", "json"]);
    let id = serde_json::from_slice::<Value>(&runs.stdout)
        .ok()
        .and_then(|r| r[0]["id"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no run recorded:\n{log}"));
    let show = runbook(&sb, &env, &["show", &id, "-o", "json"]);
    let run: Value = serde_json::from_slice(&show.stdout).expect("show -o json");
    Outcome {
        code: o.status.code(),
        log,
        run,
        env,
        sb,
    }
}

fn production(state: &Value, specialist: &str) -> i64 {
    state["specialists"][specialist]["registry"]["production"]["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("no Production version of {specialist}: {state}"))
}

fn configmap(state: &Value, key: &str) -> String {
    state["config"]["configmap"][key]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn degraded(state: &Value) -> Vec<String> {
    serde_json::from_value(state["degraded"].clone()).unwrap_or_default()
}

#[test]
fn healthy_changes_nothing_and_succeeds() {
    let Some((before, out, after)) = run_scenario("healthy", &[]) else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["nothing_to_do"], "{}", out.log);
    for s in ["technical", "security", "business"] {
        assert_eq!(production(&before, s), production(&after, s));
    }
    assert_eq!(
        configmap(&before, "ML_CONFIDENCE_THRESHOLD"),
        configmap(&after, "ML_CONFIDENCE_THRESHOLD")
    );
    let slack = out.slack();
    assert!(
        slack.iter().any(|m| m.contains("nothing to do")),
        "{slack:?}"
    );
}

#[test]
fn gradual_retrains_only_the_degraded_specialists_and_proves_recovery() {
    let Some((before, out, after)) = run_scenario("gradual", &[]) else {
        return;
    };
    assert_eq!(degraded(&before), ["business", "technical"], "{before}");
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["retrain_chosen"], "{}", out.log);
    assert_eq!(out.status("retrain_technical"), "succeeded");
    assert_eq!(out.status("retrain_business"), "succeeded");
    assert_eq!(
        out.status("retrain_security"),
        "skipped",
        "security is healthy"
    );
    assert!(production(&after, "technical") > production(&before, "technical"));
    assert!(production(&after, "business") > production(&before, "business"));
    assert_eq!(
        production(&after, "security"),
        production(&before, "security")
    );
    assert!(degraded(&after).is_empty(), "{after}");
    for wait in [
        "f1_recovered",
        "score_recovered",
        "flag_cleared",
        "alerts_resolved",
        "feedback_watch",
    ] {
        assert_eq!(out.status(wait), "succeeded", "{wait}: {}", out.log);
    }
    let slack = out.slack();
    assert!(
        slack
            .iter()
            .any(|m| m.contains("recovered") && m.contains("retrain")),
        "{slack:?}"
    );
    let mail = out.mail();
    assert!(
        mail.iter()
            .any(|m| m.contains("technical_specialist Production: v")),
        "the e-mail lists the registry change: {mail:?}"
    );
    let audit = out.audit_markdown();
    assert!(audit.contains("retrain_technical"), "{audit}");
    assert!(
        audit.contains("oncall-test"),
        "the audit names who approved: {audit}"
    );
}

#[test]
fn sudden_degradation_after_a_deploy_rolls_back_that_model_only() {
    let Some((before, out, after)) = run_scenario("sudden-after-deploy", &[]) else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(
        out.taken(),
        [
            "rollback_technical",
            "rollback_security",
            "rollback_business"
        ],
        "{}",
        out.log
    );
    assert_eq!(out.status("rollback_security"), "succeeded");
    assert_eq!(out.status("rollback_technical"), "skipped");
    assert_eq!(out.status("rollback_business"), "skipped");
    assert_eq!(production(&before, "security"), 5);
    assert_eq!(
        production(&after, "security"),
        4,
        "rolled back to v4: {after}"
    );
    assert_eq!(
        production(&after, "technical"),
        production(&before, "technical")
    );
    assert!(degraded(&after).is_empty(), "{after}");
    let rollback = &out.step("rollback_security")["tries"][0];
    assert!(
        rollback.to_string().contains("\"to_version\":4"),
        "{rollback}"
    );
}

#[test]
fn severe_degradation_falls_back_to_heuristics_then_retrains() {
    let Some((before, out, after)) = run_scenario("severe", &[]) else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["enable_fallback"], "{}", out.log);
    assert_eq!(configmap(&before, "ML_FALLBACK_ENABLED"), "false");
    assert_eq!(configmap(&after, "ML_FALLBACK_ENABLED"), "true");
    assert_eq!(configmap(&after, "ML_FALLBACK_THRESHOLD"), "0.65");
    assert_eq!(out.status("restart_for_fallback"), "succeeded");
    assert_eq!(out.status("retrain_technical"), "succeeded");
    assert!(production(&after, "technical") > production(&before, "technical"));
    assert!(degraded(&after).is_empty(), "{after}");
}

#[test]
fn a_too_high_confidence_threshold_is_lowered_and_the_pods_restarted() {
    let Some((before, out, after)) = run_scenario("threshold-too-high", &[]) else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["lower_threshold"], "{}", out.log);
    assert_eq!(configmap(&before, "ML_CONFIDENCE_THRESHOLD"), "0.90");
    assert_eq!(configmap(&after, "ML_CONFIDENCE_THRESHOLD"), "0.65");
    assert_eq!(
        after["config"]["effective"]["ML_CONFIDENCE_THRESHOLD"], "0.65",
        "the restarted pods run with it: {after}"
    );
    for s in ["technical", "security", "business"] {
        assert_eq!(
            production(&before, s),
            production(&after, s),
            "no model changed"
        );
    }
    assert!(degraded(&after).is_empty(), "{after}");
}

#[test]
fn imbalanced_feedback_is_handed_to_people_without_any_change() {
    let Some((before, out, after)) = run_scenario("bad-training-data", &[]) else {
        return;
    };
    assert_ne!(
        out.code,
        Some(0),
        "the model is still degraded: {}",
        out.log
    );
    assert_eq!(out.taken(), ["training_data_report"], "{}", out.log);
    assert_eq!(out.status("handed_over"), "failed");
    for s in ["technical", "security", "business"] {
        assert_eq!(
            production(&before, s),
            production(&after, s),
            "no model changed"
        );
    }
    assert_eq!(
        configmap(&before, "ML_CONFIDENCE_THRESHOLD"),
        configmap(&after, "ML_CONFIDENCE_THRESHOLD")
    );
    let slack = out.slack();
    assert!(
        slack.iter().any(|m| m.contains("training data")),
        "{slack:?}"
    );
    assert!(out.mail().iter().any(|m| m.contains("training data")));
}

#[test]
fn a_fix_that_does_not_help_fails_the_run_and_escalates() {
    let Some((_, out, after)) = run_scenario("fix-does-not-help", &["-p", "recovery_deadline=15s"])
    else {
        return;
    };
    assert_ne!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["retrain_chosen"], "{}", out.log);
    assert_eq!(out.status("retrain_technical"), "succeeded");
    assert_eq!(out.status("f1_recovered"), "failed", "{}", out.log);
    assert_eq!(out.status("escalate"), "succeeded");
    assert_eq!(out.status("escalate_email"), "succeeded");
    assert_eq!(out.status("notify_slack"), "skipped");
    assert!(!degraded(&after).is_empty());
    let slack = out.slack();
    assert!(
        slack.iter().any(|m| m.contains("NOT recovered")),
        "{slack:?}"
    );
    assert!(out.mail().iter().any(|m| m.contains("NOT recovered")));
}

#[test]
fn plan_shows_the_rollback_it_would_make_and_changes_nothing() {
    if !sandbox_wanted() {
        return;
    }
    let before = up("sudden-after-deploy");
    let env = sandbox_env();
    let sb = Sandbox::new();
    let plan = ["plan", "model-degraded", "--profile", "sandbox"];
    let o = runbook(&sb, &env, &plan);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert!(
        out.contains(
            "rollback_security (mlflow.rollback, unsafe): would roll security_specialist in \
             Production back from version 5 to version 4"
        ),
        "{out}"
    );
    let after = state();
    assert_eq!(
        production(&after, "security"),
        production(&before, "security")
    );

    // A ConfigMap change is shown before → after, and not made.
    up("threshold-too-high");
    let o = runbook(&sb, &env, &plan);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(
            "lower_threshold (kubernetes.patch, idempotent): would merge patch configmaps \
             `orchestrator-config` in namespace `neural-hive-orchestration`: \
             data.ML_CONFIDENCE_THRESHOLD: \"0.90\" → \"0.65\""
        ),
        "{out}"
    );
    assert_eq!(configmap(&state(), "ML_CONFIDENCE_THRESHOLD"), "0.90");
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    if !sandbox_wanted() {
        return;
    }
    let rules = repo().join("deploy/prometheus-rules/ml-drift-alerts.yaml");
    let o = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package; dev/services installs it)");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("SUCCESS: 4 rules found"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_refused_change_is_not_made_and_escalates_naming_who_refused() {
    if !sandbox_wanted() {
        return;
    }
    let before = up("gradual");
    let env = sandbox_env();
    let sb = Sandbox::new();
    // Without --yes and without a terminal, --detach parks the run at the approvals it needs.
    let mut args = vec!["run", "model-degraded", "--detach"];
    args.extend_from_slice(FAST);
    let o = runbook(&sb, &env, &args);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let parked = stderr(&o);
    assert!(
        parked.contains("runbook approve") && parked.contains("retrain_technical"),
        "{parked}"
    );
    let runs = runbook(&sb, &env, &["runs", "-o", "json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).expect("runs -o json");
    let id = runs[0]["id"].as_str().expect("id").to_string();

    let o = runbook(
        &sb,
        &env,
        &[
            "deny",
            &id,
            "retrain_technical",
            "--reason",
            "wait for the data fix",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = runbook(&sb, &env, &["approve", &id, "retrain_business"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = runbook(&sb, &env, &["resume", &id, "--quiet"]);
    let out = last_run(sb, env, &o);
    assert_ne!(out.code, Some(0), "a refused change fails the run");

    let after = state();
    assert_eq!(
        production(&after, "technical"),
        production(&before, "technical"),
        "the refused retrain did not happen"
    );
    assert!(production(&after, "business") > production(&before, "business"));
    assert_eq!(out.step("retrain_technical")["error_kind"], "approval");
    assert_eq!(out.status("escalate"), "succeeded");
    let failed = out.step("escalation")["outputs"]["failed"].to_string();
    assert!(
        failed.contains("retrain_technical") && failed.contains("wait for the data fix"),
        "{failed}"
    );
    let slack = out.slack();
    assert!(
        slack
            .iter()
            .any(|m| m.contains("NOT recovered") && m.contains("oncall-test")),
        "the escalation names who refused: {slack:?}"
    );
}

#[test]
fn an_alert_about_one_specialist_touches_only_that_one() {
    let Some((before, out, after)) = run_scenario("gradual", &["-p", "specialist_type=technical"])
    else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.log);
    assert_eq!(out.taken(), ["retrain_chosen"], "{}", out.log);
    assert_eq!(out.status("retrain_technical"), "succeeded");
    assert_eq!(out.status("retrain_business"), "skipped");
    assert_eq!(
        out.status("registry_business"),
        "skipped",
        "out of scope: not even read"
    );
    assert!(production(&after, "technical") > production(&before, "technical"));
    assert_eq!(
        production(&after, "business"),
        production(&before, "business")
    );
    assert_eq!(
        degraded(&after),
        ["business"],
        "business is another alert's run: {after}"
    );
}
