//! The pure parts: resolving kinds, the touched fields, merge patches, selectors, targets, the exec
//! Status frame. The plugins against an API server are in `live.rs`.

use serde_json::json;

use super::pods::{Target, selector_text};
use super::{Resource, changes, find_resource, merge_patch, touched};
use crate::ErrorKind;
use kube::discovery::ApiResource;

fn res(group: &str, version: &str, kind: &str, plural: &str, short: &[&str]) -> Resource {
    Resource {
        api: ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        },
        namespaced: true,
        singular: plural.trim_end_matches('s').into(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        verbs: vec!["get".into(), "list".into()],
    }
}

#[test]
fn a_kind_is_found_by_any_name_kubectl_takes() {
    let all = [
        res("", "v1", "Pod", "pods", &["po"]),
        res("apps", "v1", "Deployment", "deployments", &["deploy"]),
        res("batch", "v1", "CronJob", "cronjobs", &["cj"]),
        res("example.com", "v1", "CronJob", "cronjobs", &[]),
    ];
    for name in [
        "cronjob",
        "CronJobs",
        "cj",
        "CronJob",
        "cronjobs.batch",
        "cronjobs.v1.batch",
    ] {
        let r = find_resource(&all, name, None).expect(name);
        assert_eq!(r.api.api_version, "batch/v1", "{name}");
    }
    let r = find_resource(&all, "cronjobs.example.com", None).expect("qualified");
    assert_eq!(r.api.group, "example.com");
    let r = find_resource(&all, "CronJob", Some("example.com/v1")).expect("pinned");
    assert_eq!(r.api.group, "example.com");
    assert_eq!(
        find_resource(&all, "deploy", None)
            .map(|r| r.shown())
            .ok()
            .as_deref(),
        Some("deployments.apps")
    );
    assert_eq!(
        find_resource(&all, "po", None)
            .map(|r| r.shown())
            .ok()
            .as_deref(),
        Some("pods")
    );
    assert!(
        find_resource(&all, "widgets", None)
            .expect_err("unknown")
            .contains("no such resource")
    );
    assert!(
        find_resource(&all, "pods", Some("apps/v1"))
            .expect_err("wrong group")
            .contains("`apps/v1`")
    );
    assert!(find_resource(&all, " ", None).is_err());
}

#[test]
fn changes_list_each_changed_leaf_with_its_path() {
    let before = json!({"data": {"ML_CONFIDENCE_THRESHOLD": "0.90", "SAME": "x", "NEW": null}});
    let after = json!({"data": {"ML_CONFIDENCE_THRESHOLD": "0.65", "SAME": "x", "NEW": "y"}});
    assert_eq!(
        changes(&before, &after),
        [
            r#"data.ML_CONFIDENCE_THRESHOLD: "0.90" → "0.65""#,
            r#"data.NEW: null → "y""#
        ]
    );
    assert!(changes(&after, &after).is_empty());
    let long = json!({"spec": {"x": "a".repeat(200)}});
    let line = &changes(&json!({"spec": {"x": null}}), &long)[0];
    assert!(
        line.starts_with("spec.x: null → \"aaa") && line.ends_with("..."),
        "{line}"
    );
    assert!(line.chars().count() < 100, "{line}");
}

#[test]
fn touched_shows_only_what_the_patch_names() {
    let obj = json!({
        "metadata": {"name": "cfg", "labels": {"a": "1"}},
        "data": {"ML_CONFIDENCE_THRESHOLD": "0.7", "OTHER": "x"},
    });
    let patch = json!({"data": {"ML_CONFIDENCE_THRESHOLD": "0.65", "NEW": "y"}});
    assert_eq!(
        touched(&obj, &patch),
        json!({"data": {"ML_CONFIDENCE_THRESHOLD": "0.7", "NEW": null}})
    );
    // A patch value that is not a mapping takes the whole value, whatever its shape.
    assert_eq!(
        touched(&obj, &json!({"metadata": {"labels": null}})),
        json!({"metadata": {"labels": {"a": "1"}}})
    );
    assert_eq!(
        touched(&json!({"spec": 3}), &json!({"spec": {"x": 1}})),
        json!({"spec": 3})
    );
}

#[test]
fn a_merge_patch_follows_rfc_7386() {
    // The RFC's own example (appendix A, abridged).
    let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
    merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
    assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    let mut target = json!({"a": [1, 2]});
    merge_patch(&mut target, &json!({"a": [3], "b": {"c": 1}}));
    assert_eq!(target, json!({"a": [3], "b": {"c": 1}}));
    let mut target = json!({"a": 1});
    merge_patch(&mut target, &json!({"a": {"b": null, "c": 2}}));
    assert_eq!(target, json!({"a": {"c": 2}}));
}

#[test]
fn a_label_selector_becomes_selector_text() {
    let sel = json!({
        "matchLabels": {"app": "orchestrator", "tier": "ml"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "owner", "operator": "Exists"},
        ],
    });
    assert_eq!(
        selector_text(&sel).as_deref(),
        Some("app=orchestrator,tier=ml,env in (prod,staging),!canary,zone notin (b),owner")
    );
    assert_eq!(
        selector_text(&json!({})),
        None,
        "selects everything: refused"
    );
    assert_eq!(
        selector_text(
            &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
        ),
        None
    );
}

#[test]
fn a_target_names_a_pod_a_workload_or_a_selector() {
    assert_eq!(
        Target::of(Some("api-0"), None).ok(),
        Some(Target::Pod("api-0".into()))
    );
    assert_eq!(
        Target::of(Some("pod/api-0"), None).ok(),
        Some(Target::Pod("api-0".into()))
    );
    let w = Target::of(Some("deployment/orchestrator-dynamic"), None).expect("workload");
    assert_eq!(
        w.shown("ns"),
        "deployment `orchestrator-dynamic` in namespace `ns`"
    );
    assert!(matches!(
        Target::of(Some("sts/db"), None),
        Ok(Target::Workload {
            plural: "statefulsets",
            ..
        })
    ));
    assert_eq!(
        Target::of(None, Some("app=x")).ok(),
        Some(Target::Selector("app=x".into()))
    );
    for (t, s, needle) in [
        (Some("configmap/x"), None, "has no pods"),
        (Some("deployment/"), None, "write `pod/NAME`"),
        (Some("a"), Some("b=c"), "not both"),
        (None, None, "give `target`"),
        (None, Some(" "), "empty"),
    ] {
        let e = Target::of(t, s).expect_err(needle);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.message.contains(needle), "{}", e.message);
    }
}

#[test]
fn the_exit_status_comes_from_the_status_frame() {
    let status = |v: serde_json::Value| -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
        serde_json::from_value(v).expect("a Status")
    };
    assert_eq!(
        super::exec::exit_code(&status(json!({"status": "Success"}))),
        Ok(0)
    );
    let failed = status(json!({
        "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }));
    assert_eq!(super::exec::exit_code(&failed), Ok(3));
    let not_started = status(json!({
        "status": "Failure", "reason": "InternalError",
        "message": "exec: \"nope\": executable file not found in $PATH",
    }));
    let why = super::exec::exit_code(&not_started).expect_err("did not run");
    assert!(
        why.contains("executable file not found") && why.contains("InternalError"),
        "{why}"
    );
}

#[test]
fn the_log_filter_is_a_regex_optionally_case_insensitive() {
    let re = super::logs::filter(Some("(error|exception|failed|prediction)"), true)
        .expect("valid")
        .expect("given");
    assert!(re.is_match("2026-11-30 ERROR model timed out"));
    assert!(re.is_match("Prediction latency 40ms"));
    assert!(!re.is_match("all good"));
    let strict = super::logs::filter(Some("error"), false)
        .expect("valid")
        .expect("given");
    assert!(!strict.is_match("ERROR"));
    let e = super::logs::filter(Some("(unclosed"), false).expect_err("invalid");
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(e.message.starts_with("`match`:"), "{}", e.message);
    assert!(super::logs::filter(None, true).expect("valid").is_none());
}
