//! The whole alert path with real servers: a Prometheus rule fires, a real Alertmanager groups it
//! and calls `runbook serve`'s webhook with a bearer token, over and over (group_interval and
//! repeat_interval of a second), and exactly one run is started for the group. The Prometheus and
//! Alertmanager binaries are the ones dev/services installs; this test starts its own instances,
//! configured to call the server it starts.

use crate::common::Sandbox;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNBOOK: &str = r#"
name: degraded
triggers:
  alerts: [MLModelDegraded]
  labels: ['severity="warning"']
  params: { specialist_type: specialist_type }
  cooldown: 1h
params:
  specialist_type: { type: string, enum: [all, technical, security, business], default: all }
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { argv: ["sh", "-c", "echo {{ params.specialist_type }} >> looked"] }
"#;

const TOKEN: &str = "alertmanager-token-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn installed(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of a counter line of `/metrics` (0 when absent).
fn counter(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_prometheus_rule_through_alertmanager_starts_exactly_one_run() {
    for bin in ["prometheus", "prometheus-alertmanager", "curl"] {
        if !installed(bin) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{bin} is required in CI (dev/services installs it)"
            );
            eprintln!("skipped: {bin} is not installed (dev/services installs it)");
            return;
        }
    }
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("dir");
    sb.write("runbooks/degraded.yaml", RUNBOOK);
    sb.write(
        "tokens.toml",
        "[[token]]\nsubject = \"am\"\nroles = [\"operator\", \"viewer\"]\ntoken = 'secret(\"AM_TOKEN\")'\n",
    );
    let serve_port = free_port();
    let server = Killed(
        sb.cmd(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{serve_port}"),
            "--tokens",
            "tokens.toml",
            "--poll",
            "50ms",
        ])
        .env("AM_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sb.path().join("serve.log")).expect("log"))
        .spawn()
        .expect("serve"),
    );
    let serve = format!("http://127.0.0.1:{serve_port}");
    wait_for("runbook serve", Duration::from_secs(30), || {
        get(&format!("{serve}/readyz")).is_some()
    });

    let am_port = free_port();
    sb.write(
        "am.yml",
        &format!(
            "route:\n  receiver: runbook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1s\n\
             receivers:\n  - name: runbook\n    webhook_configs:\n      - url: {serve}/hooks/alertmanager\n        send_resolved: true\n\
             \x20       http_config:\n          authorization: {{ type: Bearer, credentials: {TOKEN} }}\n"
        ),
    );
    std::fs::create_dir_all(sb.path().join("am-data")).expect("dir");
    let _am = Killed(
        Command::new("prometheus-alertmanager")
            .current_dir(sb.path())
            .args([
                "--config.file=am.yml",
                "--storage.path=am-data",
                &format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sb.path().join("am.log")).expect("log"))
            .spawn()
            .expect("alertmanager"),
    );
    wait_for("alertmanager", Duration::from_secs(30), || {
        get(&format!("http://127.0.0.1:{am_port}/-/ready")).is_some()
    });

    let prom_port = free_port();
    sb.write(
        "rules.yml",
        "groups:\n  - name: ml\n    rules:\n      - alert: MLModelDegraded\n        expr: vector(1)\n\
         \x20       labels: { severity: warning, specialist_type: technical }\n",
    );
    sb.write(
        "prom.yml",
        &format!(
            "global: {{ evaluation_interval: 1s }}\nrule_files: [rules.yml]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{ targets: [\"127.0.0.1:{am_port}\"] }}]\n"
        ),
    );
    let _prom = Killed(
        Command::new("prometheus")
            .current_dir(sb.path())
            .args([
                "--config.file=prom.yml",
                "--storage.tsdb.path=prom-data",
                &format!("--web.listen-address=127.0.0.1:{prom_port}"),
                "--rules.alert.resend-delay=1s",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sb.path().join("prom.log")).expect("log"))
            .spawn()
            .expect("prometheus"),
    );

    // Alertmanager keeps calling (repeat_interval 1s): wait for the first call and three more.
    let metrics = || get(&format!("{serve}/metrics")).unwrap_or_default();
    let prefix =
        |o: &str| format!("runbook_alerts_received_total{{outcome=\"{o}\",runbook=\"degraded\"}}");
    wait_for("four notifications", Duration::from_secs(60), || {
        let m = metrics();
        counter(&m, &prefix("started"))
            + counter(&m, &prefix("deduplicated"))
            + counter(&m, &prefix("cooling_down"))
            >= 4
    });
    let m = metrics();
    assert_eq!(counter(&m, &prefix("started")), 1, "{m}");

    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{serve}/api/v1/runs?runbook=degraded"),
        ])
        .output()
        .expect("curl");
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
    let runs = runs.as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["params"]["specialist_type"], "technical");
    assert_eq!(runs[0]["actor"], "alertmanager:am");
    assert!(
        runs[0]["trigger_key"]
            .as_str()
            .is_some_and(|k| k.contains("alertname=\\\"MLModelDegraded\\\"")
                || k.contains("MLModelDegraded")),
        "{runs:?}"
    );
    let run = runs[0]["id"].as_str().unwrap_or_default().to_string();
    wait_for("the run to succeed", Duration::from_secs(30), || {
        get(&format!("{serve}/metrics"))
            .is_some_and(|m| m.contains("runbook_runs{status=\"succeeded\"} 1"))
    });
    let looked = std::fs::read_to_string(sb.path().join("looked")).unwrap_or_default();
    assert_eq!(looked, "technical\n", "run {run}");
    drop(server);
}
