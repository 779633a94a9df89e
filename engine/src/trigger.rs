//! From an Alertmanager webhook notification (payload version 4) to the runs it asks for: which
//! runbooks each alert starts, with which parameters, under which de-duplication key. Pure — plain
//! data in, plain data out — so `runbook serve` journals and acts on the answer, and these rules are
//! tested without a server.
//!
//! Label values are data: a mapped parameter takes the label's text as a value (converted and
//! checked like `--param`), never as a template.

use crate::run::event::Trigger;
use crate::runbook::load::coerce_param;
use crate::runbook::model::Runbook;
use runbook_steps::alertmanager::matchers::parse_matchers;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The webhook's body, as Alertmanager sends it (`version: "4"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    /// When it stopped firing (`0001-01-01T00:00:00Z` while it fires).
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert for one runbook: start a run (firing) or tell the run of that key (resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub runbook: String,
    pub status: AlertStatus,
    /// The parameters its labels fill (the runbook's defaults apply to the rest).
    pub params: Map<String, Value>,
    /// At most one active run per (runbook, key): the group key and the mapped parameters.
    pub key: String,
    pub fingerprint: String,
    /// Which of the notification's alerts this is.
    pub alert: usize,
}

/// An alert a runbook answers by name but cannot take, and why (journaled, not acted on).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub runbook: String,
    pub fingerprint: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NotificationError {
    #[error("not an Alertmanager webhook notification: {0}")]
    Malformed(String),
    #[error("Alertmanager webhook payload version `{0}` is not supported (version 4 is)")]
    Version(String),
}

/// Parses a webhook body, refusing other payload versions.
pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
    if n.version != "4" {
        return Err(NotificationError::Version(n.version));
    }
    Ok(n)
}

/// Every (alert, runbook) pair the notification asks for, and the alerts that were refused.
pub fn route(n: &Notification, runbooks: &[&Runbook]) -> (Vec<Routed>, Vec<Refused>) {
    let mut routed = Vec::new();
    let mut refused = Vec::new();
    for (index, alert) in n.alerts.iter().enumerate() {
        let Some(name) = alert.labels.get("alertname") else {
            continue;
        };
        for rb in runbooks.iter().filter(|rb| rb.alerts.contains(name)) {
            if !labels_match(rb, alert) {
                continue;
            }
            match params_of(rb, alert) {
                Ok(params) => routed.push(Routed {
                    runbook: rb.name.clone(),
                    status: alert.status,
                    key: key(&n.group_key, &params),
                    params,
                    fingerprint: alert.fingerprint.clone(),
                    alert: index,
                }),
                Err(reason) => refused.push(Refused {
                    runbook: rb.name.clone(),
                    fingerprint: alert.fingerprint.clone(),
                    reason,
                }),
            }
        }
    }
    (routed, refused)
}

impl Notification {
    /// What a run started for `r` journals as its trigger: the alert as Alertmanager sent it.
    pub fn trigger(&self, r: &Routed) -> Trigger {
        let alert = self.alerts.get(r.alert);
        let label = |name: &str| {
            alert
                .and_then(|a| a.labels.get(name).cloned())
                .unwrap_or_default()
        };
        Trigger::Alert {
            alertname: label("alertname"),
            status: r.status.as_str().to_string(),
            receiver: self.receiver.clone(),
            group_key: self.group_key.clone(),
            key: r.key.clone(),
            fingerprint: r.fingerprint.clone(),
            starts_at: alert.map(|a| a.starts_at.clone()).unwrap_or_default(),
            labels: alert.map(|a| a.labels.clone()).unwrap_or_default(),
            annotations: alert.map(|a| a.annotations.clone()).unwrap_or_default(),
        }
    }

    /// What a run of `r`'s key is told of this alert (`run_noted`), above all its resolution.
    pub fn note(&self, r: &Routed) -> crate::run::event::Note {
        let alert = self.alerts.get(r.alert);
        let status = r.status.as_str();
        let name = alert
            .and_then(|a| a.labels.get("alertname").cloned())
            .unwrap_or_default();
        let mut summary = format!("alert {name} {status}");
        if let Some(end) = alert.map(|a| a.ends_at.as_str()).filter(|e| {
            r.status == AlertStatus::Resolved && !e.is_empty() && !e.starts_with("0001")
        }) {
            summary.push_str(&format!(" at {end}"));
        }
        crate::run::event::Note {
            source: "alertmanager".to_string(),
            status: status.to_string(),
            summary,
            detail: serde_json::json!({
                "alertname": name,
                "receiver": self.receiver,
                "group_key": self.group_key,
                "key": r.key,
                "fingerprint": r.fingerprint,
                "starts_at": alert.map(|a| a.starts_at.clone()).unwrap_or_default(),
                "ends_at": alert.map(|a| a.ends_at.clone()).unwrap_or_default(),
                "labels": alert.map(|a| a.labels.clone()).unwrap_or_default(),
                "annotations": alert.map(|a| a.annotations.clone()).unwrap_or_default(),
            }),
        }
    }
}

/// Whether the alert satisfies every `triggers.labels` matcher (validated when the runbook loaded;
/// one that no longer parses matches nothing).
fn labels_match(rb: &Runbook, alert: &Alert) -> bool {
    rb.trigger
        .labels
        .iter()
        .all(|text| match parse_matchers(text) {
            Ok(ms) => ms
                .iter()
                .all(|m| m.matches(|l| alert.labels.get(l).cloned())),
            Err(_) => false,
        })
}

fn params_of(rb: &Runbook, alert: &Alert) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (param, label) in &rb.trigger.params {
        let Some(decl) = rb.params.iter().find(|p| p.name.name == param.name) else {
            continue; // refused when the runbook loaded
        };
        let Some(text) = alert.labels.get(label) else {
            if decl.required && decl.default.is_none() {
                return Err(format!(
                    "the alert has no label `{label}`, which fills the required parameter `{}`",
                    param.name
                ));
            }
            continue;
        };
        let v = coerce_param(
            decl.ty,
            decl.choices.as_deref(),
            &Value::String(text.clone()),
        )
        .map_err(|e| format!("label `{label}` for parameter `{}`: {e}", param.name))?;
        out.insert(param.name.clone(), v);
    }
    Ok(out)
}

/// The group key, then each mapped parameter in name order: readable in the journal, and equal for
/// Alertmanager's re-sends of the same group.
fn key(group_key: &str, params: &Map<String, Value>) -> String {
    let mut k = group_key.to_string();
    let sorted: BTreeMap<&String, &Value> = params.iter().collect();
    for (name, v) in sorted {
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        k.push_str(&format!("|{name}={text}"));
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    fn runbook(yaml: &str) -> Runbook {
        match crate::runbook::load::load(yaml) {
            (Some(rb), d) if d.is_empty() => rb,
            (_, d) => panic!("not a valid runbook: {d:?}"),
        }
    }

    const MODEL: &str = r#"
name: model-degraded
triggers:
  alerts: [MLModelDegraded, MLModelLowF1Score]
  labels: ['severity=~"warning|critical"']
  params: { specialist_type: specialist_type }
params:
  specialist_type: { type: enum, enum: [all, technical, security, business], default: all }
steps:
  - { id: a, uses: flow.noop, with: { value: 1 } }
"#;

    fn notification(alerts: serde_json::Value) -> Notification {
        let body = serde_json::json!({
            "version": "4", "groupKey": "{}:{alertname=\"MLModelDegraded\"}", "status": "firing",
            "receiver": "runbook", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "truncatedAlerts": 0, "alerts": alerts,
        });
        parse(body.to_string().as_bytes()).expect("a v4 payload")
    }

    fn alert(status: &str, labels: serde_json::Value, fp: &str) -> serde_json::Value {
        serde_json::json!({"status": status, "labels": labels, "annotations": {},
            "startsAt": "2026-11-30T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": fp})
    }

    #[test]
    fn a_firing_alert_fills_the_mapped_parameter_and_keys_the_run_by_group_and_params() {
        let rb = runbook(MODEL);
        let n = notification(serde_json::json!([
            alert(
                "firing",
                serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": "technical"}),
                "f1"
            ),
            alert(
                "firing",
                serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": "security"}),
                "f2"
            ),
        ]));
        let (routed, refused) = route(&n, &[&rb]);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(routed.len(), 2);
        assert_eq!(routed[0].params["specialist_type"], "technical");
        assert_eq!(
            routed[0].key,
            "{}:{alertname=\"MLModelDegraded\"}|specialist_type=technical"
        );
        assert_ne!(routed[0].key, routed[1].key, "two specialists, two runs");
        // Alertmanager's re-send of the same group gives the same keys.
        assert_eq!(route(&n, &[&rb]).0, routed);
    }

    #[test]
    fn other_alerts_and_unmatched_labels_start_nothing() {
        let rb = runbook(MODEL);
        let n = notification(serde_json::json!([
            alert(
                "firing",
                serde_json::json!({"alertname": "DiskFull", "severity": "warning"}),
                "a"
            ),
            alert(
                "firing",
                serde_json::json!({"alertname": "MLModelDegraded", "severity": "info", "specialist_type": "technical"}),
                "b"
            ),
            alert("firing", serde_json::json!({"severity": "warning"}), "c"),
        ]));
        assert_eq!(route(&n, &[&rb]), (vec![], vec![]));
    }

    #[test]
    fn a_label_value_is_data_checked_like_a_param_never_a_template() {
        let rb = runbook(MODEL);
        for evil in [
            "{{ env.HOME }}",
            "technical; rm -rf /",
            "' or 1=1 --",
            "$(reboot)",
        ] {
            let n = notification(serde_json::json!([alert(
                "firing",
                serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": evil}),
                "x"
            )]));
            let (routed, refused) = route(&n, &[&rb]);
            assert!(routed.is_empty(), "{evil}: {routed:?}");
            assert_eq!(refused.len(), 1);
            assert!(
                refused[0].reason.contains("is not one of: all, technical"),
                "{evil}: {}",
                refused[0].reason
            );
            assert!(
                refused[0].reason.contains(evil),
                "the reason quotes the value as text"
            );
        }
        // A free-text parameter takes the text as it is.
        let free = runbook(&MODEL.replace(
            "{ type: enum, enum: [all, technical, security, business], default: all }",
            "{ type: string, default: all }",
        ));
        let n = notification(serde_json::json!([alert(
            "firing",
            serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": "{{ 7 * 7 }}"}),
            "x"
        )]));
        assert_eq!(
            route(&n, &[&free]).0[0].params["specialist_type"],
            "{{ 7 * 7 }}"
        );
    }

    #[test]
    fn a_resolved_alert_routes_to_the_same_key() {
        let rb = runbook(MODEL);
        let labels = serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": "business"});
        let fired = route(
            &notification(serde_json::json!([alert("firing", labels.clone(), "f")])),
            &[&rb],
        )
        .0;
        let resolved = route(
            &notification(serde_json::json!([alert("resolved", labels, "f")])),
            &[&rb],
        )
        .0;
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].key, fired[0].key);
        // What the run of that key is told: the resolution, with the alert's own words kept.
        let mut labels_end = serde_json::json!([alert(
            "resolved",
            serde_json::json!({"alertname": "MLModelDegraded", "severity": "warning", "specialist_type": "business"}),
            "f"
        )]);
        labels_end[0]["endsAt"] = serde_json::json!("2026-11-30T10:20:00Z");
        let n = notification(labels_end);
        let note = n.note(&route(&n, &[&rb]).0[0]);
        assert_eq!(note.source, "alertmanager");
        assert_eq!(note.status, "resolved");
        assert_eq!(
            note.summary,
            "alert MLModelDegraded resolved at 2026-11-30T10:20:00Z"
        );
        assert_eq!(note.detail["labels"]["specialist_type"], "business");
        assert_eq!(note.detail["key"], resolved[0].key.as_str());
    }

    #[test]
    fn other_payload_versions_and_garbage_are_refused_with_the_reason() {
        assert_eq!(
            parse(br#"{"version":"3","groupKey":"g","alerts":[]}"#).err(),
            Some(NotificationError::Version("3".into()))
        );
        assert!(matches!(
            parse(b"\xff\xfe"),
            Err(NotificationError::Malformed(_))
        ));
        assert!(matches!(parse(b"{}"), Err(NotificationError::Malformed(_))));
    }
}
