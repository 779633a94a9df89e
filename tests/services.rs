//! The servers `dev/services` starts, reached the way the plugins' tests reach them: through the
//! addresses in its env file. Proves the env file's Prometheus is ours, with the contract's
//! backfilled history, by running the real CLI against it.

use crate::common::{Sandbox, stderr, stdout};
use runbook_steps::testkit::service;
use serde_json::Value;

#[test]
fn the_env_files_prometheus_serves_the_backfilled_history() {
    let (Some(url), Some(end)) = (
        service("RUNBOOK_TEST_PROMETHEUS_URL"),
        service("RUNBOOK_TEST_PROMETHEUS_HISTORY_END"),
    ) else {
        return;
    };
    let end: i64 = end.parse().expect("HISTORY_END is unix seconds");
    let sb = Sandbox::new();
    let f = sb.write(
        "history.yaml",
        r#"
name: history
params:
  prom: { type: string }
  at: { type: string }
steps:
  - id: query
    uses: http.request
    timeout: 10s
    with:
      url: "{{ params.prom }}/api/v1/query"
      query: { query: 'runbook_fixture_counter{series="b"}', time: "{{ params.at }}" }
    outputs:
      value: "{{ result.json.data.result[0].value[1] }}"
      samples: "{{ result.json.data.result | length }}"
"#,
    );
    // An hour before the end, series b is 2 * 60 minutes into its history.
    let at = format!("at={}", end - 3600);
    let prom = format!("prom={url}");
    let o = sb.run(&[
        "run",
        f.to_str().expect("utf-8 path"),
        "-o",
        "json",
        "--quiet",
        "-p",
        &prom,
        "-p",
        &at,
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr:\n{}", stderr(&o));
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("JSON summary");
    let step = &shown["steps"][0];
    assert_eq!(step["outputs"]["value"], "120", "{shown:#}");
    assert_eq!(step["outputs"]["samples"], 1, "{shown:#}");
}
