//! A real Alertmanager's webhook notification (dev/services' fixture alert, as its webhook sink
//! recorded it) routed to a runbook by its `triggers:`: the payload types match what Alertmanager
//! sends, not only what the unit tests write by hand.

use runbook_engine::trigger::{AlertStatus, parse, route};
use runbook_steps::testkit::service;
use std::time::{Duration, Instant};

const RUNBOOK: &str = r#"
name: fixture-answer
triggers:
  alerts: [RunbookFixtureAlwaysFiring]
  labels: ['fixture="yes"']
  params: { level: severity }
params:
  level: { type: enum, enum: [test, warning], default: warning }
steps:
  - { id: a, uses: flow.noop, with: { value: 1 } }
"#;

/// The body of the first notification Alertmanager posted about the fixture alert.
fn recorded_notification(dir: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let body = rec["body"].as_str().unwrap_or_default();
            if rec["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/alertmanager"))
                && body.contains("RunbookFixtureAlwaysFiring")
            {
                return body.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Alertmanager notification in {dir} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200)); // polling a directory a server writes to
    }
}

#[test]
fn a_real_alertmanager_notification_routes_to_the_runbook_its_labels_fill() {
    let Some(dir) = service("RUNBOOK_TEST_WEBHOOK_DIR") else {
        return;
    };
    let body = recorded_notification(&dir);
    let n = parse(body.as_bytes()).expect("Alertmanager's payload parses as version 4");
    let (Some(rb), diags) = runbook_engine::runbook::load::load(RUNBOOK) else {
        panic!("runbook");
    };
    assert!(diags.is_empty(), "{diags:?}");
    let (routed, refused) = route(&n, &[&rb]);
    assert!(refused.is_empty(), "{refused:?}");
    let r = routed
        .iter()
        .find(|r| r.status == AlertStatus::Firing)
        .unwrap_or_else(|| panic!("nothing routed from {body}"));
    assert_eq!(r.runbook, "fixture-answer");
    assert_eq!(
        r.params["level"], "test",
        "filled from the alert's severity label"
    );
    assert!(
        r.key.starts_with(&n.group_key) && r.key.ends_with("|level=test"),
        "{}",
        r.key
    );
    assert!(!r.fingerprint.is_empty());
}
