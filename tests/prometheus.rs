//! Prometheus and Alertmanager end to end: runbooks with `connections:` of both kinds, run by the real
//! CLI against the real servers `dev/services` starts (their addresses from its env file).

use crate::common::{Sandbox, stderr, stdout};
use runbook_steps::testkit::{CountingProxy, service, silent_server};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn json(o: &Output) -> Value {
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

/// The real servers: Prometheus, the end of its backfilled history, Alertmanager.
fn servers() -> Option<(String, String, String)> {
    Some((
        service("RUNBOOK_TEST_PROMETHEUS_URL")?,
        service("RUNBOOK_TEST_PROMETHEUS_HISTORY_END")?,
        service("RUNBOOK_TEST_ALERTMANAGER_URL")?,
    ))
}

/// `runbook run FILE -o json` with the connections' addresses from the environment, as a profile or
/// a deployment would give them.
fn run(sb: &Sandbox, file: &str, prom: &str, am: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["run", file, "-o", "json", "--quiet"];
    args.extend_from_slice(extra);
    let o = sb
        .cmd(&args)
        .env("RUNBOOK_CONNECTION_PROM_URL", prom)
        .env("RUNBOOK_CONNECTION_AM_URL", am)
        .output()
        .expect("spawn runbook");
    (o.status.code().unwrap_or(-1), json(&o))
}

const DEGRADED: &str = r#"
name: f1_degraded
params:
  at: { type: number, required: true }
  threshold: { type: number, default: 0.7 }
connections:
  prom: { kind: prometheus }
  am: { kind: alertmanager }
steps:
  - id: f1
    uses: prometheus.query
    with:
      query: runbook_fixture_gauge
      time: "{{ params.at }}"
      require_result: true
    outputs:
      by_type: "{{ by_label(result.samples | selectattr('value', 'defined'), 'specialist_type') }}"
      lowest: "{{ result.samples | selectattr('value', 'defined') | min_value }}"
      nan: "{{ result.non_finite }}"
  - id: firing
    uses: flow.wait_until
    with:
      probe:
        uses: alertmanager.alerts
        with: { matchers: ['alertname="RunbookFixtureAlwaysFiring"'], silenced: false }
      until: result.count > 0
      interval: 500ms
      deadline: 30s
  - id: choose
    uses: flow.branch
    needs: [f1, firing]
    with:
      cases:
        - when: steps.f1.lowest < params.threshold and steps.firing.result.result.count > 0
          then: degraded
      default: healthy
  - id: degraded
    uses: flow.noop
    with: { value: "{{ steps.f1.by_type.churn }}" }
  - id: healthy
    uses: flow.noop
"#;

#[test]
fn a_branch_is_decided_on_a_prometheus_value() {
    let Some((prom, end, am)) = servers() else {
        return;
    };
    let sb = Sandbox::new();
    let f = sb.write("degraded.yaml", DEGRADED);
    let file = f.to_str().expect("path");
    let at = format!("at={end}");

    let (code, shown) = run(&sb, file, &prom, &am, &["-p", &at]);
    assert_eq!(code, 0, "{shown:#}");
    let decision = &step(&shown, "choose")["decision"];
    assert_eq!(
        decision["taken"],
        serde_json::json!(["degraded"]),
        "{shown:#}"
    );
    assert_eq!(decision["values"]["steps.f1.lowest"], 0.62);
    assert_eq!(step(&shown, "degraded")["status"], "succeeded");
    assert_eq!(step(&shown, "healthy")["status"], "skipped");

    // Below every specialist's F1, the same data takes the other branch.
    let (code, shown) = run(&sb, file, &prom, &am, &["-p", &at, "-p", "threshold=0.5"]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(
        step(&shown, "choose")["decision"]["taken"],
        serde_json::json!(["healthy"])
    );
    assert_eq!(step(&shown, "degraded")["status"], "skipped");
}

#[test]
fn a_condition_over_a_nan_sample_fails_instead_of_deciding() {
    let Some((prom, end, am)) = servers() else {
        return;
    };
    let sb = Sandbox::new();
    let f = sb.write(
        "nan.yaml",
        r#"
name: nan_guard
params:
  at: { type: number, required: true }
connections:
  prom: { kind: prometheus }
steps:
  - id: q
    uses: prometheus.query
    with: { query: 'runbook_fixture_gauge{specialist_type="nan"}', time: "{{ params.at }}" }
  - id: act
    uses: flow.noop
    needs: q
    when: steps.q.result.samples[0].value < 0.7
"#,
    );
    let (code, shown) = run(
        &sb,
        f.to_str().expect("path"),
        &prom,
        &am,
        &["-p", &format!("at={end}")],
    );
    assert_eq!(code, 1, "{shown:#}");
    let act = step(&shown, "act");
    assert_eq!(act["status"], "failed", "{act:#}");
    assert_eq!(act["error_kind"], "input", "{act:#}");
    let error = act["error"].as_str().expect("a message");
    assert!(
        error.contains("`steps.q.result.samples[0].value` is undefined")
            && error.contains(r#""value_text":"NaN""#),
        "{error}"
    );
}

#[test]
fn a_prometheus_that_never_answers_times_the_step_out_and_is_hung_up_on() {
    let sb = Sandbox::new();
    let (url, seen) = silent_server();
    let f = sb.write(
        "slow.yaml",
        "name: slow\nconnections:\n  prom: { kind: prometheus }\nsteps:\n  - id: q\n    uses: prometheus.query\n    timeout: 1s\n    with: { query: up }\n",
    );
    let (code, shown) = run(
        &sb,
        f.to_str().expect("path"),
        &url,
        "http://127.0.0.1:1",
        &[],
    );
    assert_eq!(code, 1, "{shown:#}");
    let q = step(&shown, "q");
    assert_eq!(q["error_kind"], "timeout", "{q:#}");
    assert!(
        seen.recv_timeout(Duration::from_secs(10))
            .is_ok_and(|h| h.starts_with("GET /api/v1/query?query=up ")),
        "the request did not arrive"
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("closed")
    );
}

#[test]
fn twenty_steps_through_one_connection_open_one_tcp_connection() {
    let Some((prom, end, am)) = servers() else {
        return;
    };
    let sb = Sandbox::new();
    let proxy = CountingProxy::start(prom.trim_start_matches("http://").trim_end_matches('/'));
    let mut yaml =
        String::from("name: twenty\nconnections:\n  prom: { kind: prometheus }\nsteps:\n");
    for i in 0..20 {
        // A chain, so the steps run one after the other and could each take a fresh connection.
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: q{}", i - 1)
        };
        yaml.push_str(&format!(
            "  - {{ id: q{i}, uses: prometheus.query{needs}, with: {{ query: 'sum(runbook_fixture_counter)', time: {} }} }}\n",
            end.parse::<i64>().expect("seconds") - 60 * i
        ));
    }
    let f = sb.write("twenty.yaml", &yaml);
    let (code, shown) = run(&sb, f.to_str().expect("path"), &proxy.url, &am, &[]);
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(step(&shown, "q19")["status"], "succeeded");
    eprintln!(
        "20 steps, {} TCP connection(s) to Prometheus",
        proxy.accepted()
    );
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn a_silence_is_planned_without_being_made_then_made_once() {
    let Some((prom, _, am)) = servers() else {
        return;
    };
    let sb = Sandbox::new();
    let probe = format!(
        "e2e{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    );
    let f = sb.write(
        "silence.yaml",
        &format!(
            "name: quiet\nconnections:\n  am: {{ kind: alertmanager }}\nsteps:\n  - id: mute\n    uses: alertmanager.silence\n    with:\n      matchers: ['alertname=\"RunbookSilenceProbe\"', 'probe=\"{probe}\"']\n      duration: 5m\n      comment: e2e {probe}\n    outputs: {{ id: \"{{{{ result.id }}}}\", created: \"{{{{ result.created }}}}\" }}\n"
        ),
    );
    let file = f.to_str().expect("path");
    let o = sb
        .cmd(&["plan", file, "-o", "json", "--quiet"])
        .env("RUNBOOK_CONNECTION_AM_URL", &am)
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let planned = json(&o).to_string();
    assert!(
        planned.contains(&format!(
            r#"would silence {{alertname=\"RunbookSilenceProbe\", probe=\"{probe}\"}} for 5m00s"#
        )),
        "{planned}"
    );
    assert!(
        planned.contains(&format!("signed tester: e2e {probe}")),
        "{planned}"
    );

    // Had the plan made it, this run would find it rather than create it.
    let (code, first) = run(&sb, file, &prom, &am, &[]);
    assert_eq!(code, 0, "{first:#}");
    let first = &step(&first, "mute")["outputs"];
    assert_eq!(first["created"], true, "{first:#}");
    let (code, again) = run(&sb, file, &prom, &am, &[]);
    assert_eq!(code, 0, "{again:#}");
    let again = &step(&again, "mute")["outputs"];
    assert_eq!(
        (&again["created"], &again["id"]),
        (&Value::Bool(false), &first["id"])
    );
}
