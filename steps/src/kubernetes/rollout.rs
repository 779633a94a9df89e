//! `kubernetes.rollout_restart`: the patch `kubectl rollout restart deployment/NAME` sends, and
//! optionally waiting for the rollout as `kubectl rollout status` judges it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kube, NAMESPACE, duration, parse};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

/// kubectl's field manager for `rollout restart`, and its annotation.
const FIELD_MANAGER: &str = "kubectl-rollout";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How often the Deployment's status is read while waiting.
const POLL: Duration = Duration::from_secs(1);

static INFO: PluginInfo = PluginInfo {
    name: "kubernetes.rollout_restart",
    summary: "Restart a Deployment's pods as `kubectl rollout restart` does, and optionally wait for \
              the rollout to complete.",
    class: SideEffect::Unsafe,
    fields: &[
        Field::req(
            "deployment",
            FieldType::String,
            "The Deployment: `NAME` or `deployment/NAME`.",
        ),
        NAMESPACE,
        Field::opt(
            "wait",
            FieldType::Duration,
            "Wait this long for the rollout to complete (as `kubectl rollout status`); a rollout \
             not complete by then fails the step, kind `timeout`. Default: do not wait.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ deployment, namespace, restarted_at, previously_restarted_at: string or null, generation, rollout: { complete: bool, message, \
             replicas, updated, ready, available } or null (without `wait`) }",
    example: "deployment: deployment/orchestrator-dynamic\nnamespace: neural-hive-orchestration\nwait: 5m",
    connection: Some("kubernetes"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    deployment: String,
    namespace: Option<String>,
    wait: Option<Value>,
}

pub struct RolloutRestart;

impl Plugin for RolloutRestart {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(restart(input, ctx))
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(plan(input, ctx)))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

struct Target {
    kube: std::sync::Arc<Kube>,
    api: Api<Deployment>,
    name: String,
    ns: String,
    what: String,
    wait: Option<Duration>,
}

async fn target(input: Value, ctx: &StepContext) -> Result<Target, StepError> {
    let i: Input = parse(input)?;
    let name = deployment_name(&i.deployment)?;
    let wait = i.wait.as_ref().map(|w| duration("wait", w)).transpose()?;
    let kube = Kube::of(ctx).await?;
    let ns = kube.namespace(i.namespace.as_deref());
    let api = Api::namespaced(kube.client.clone(), &ns);
    let what = format!("deployment `{name}` in namespace `{ns}`");
    Ok(Target {
        kube,
        api,
        name,
        ns,
        what,
        wait,
    })
}

/// `NAME` or `deployment/NAME` (`deploy/`, `deployments/`, `deployments.apps/`).
fn deployment_name(s: &str) -> Result<String, StepError> {
    let s = s.trim();
    let name = match s.split_once('/') {
        None => s,
        Some((kind, name))
            if matches!(
                kind.to_ascii_lowercase().as_str(),
                "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps"
            ) =>
        {
            name
        }
        Some((kind, _)) => {
            return Err(StepError::new(
                ErrorKind::Input,
                format!("`deployment: {s}`: only Deployments are restarted here, not `{kind}`"),
            ));
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(StepError::new(
            ErrorKind::Input,
            format!("`deployment: {s}`: write `NAME` or `deployment/NAME`"),
        ));
    }
    Ok(name.to_string())
}

async fn plan(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let t = target(input, ctx).await?;
    let d = t
        .api
        .get(&t.name)
        .await
        .map_err(|e| t.kube.error(&format!("get {}", t.what), e))?;
    let generation = d.metadata.generation;
    let s = Status::of(&d);
    Ok(json!({
        "summary": format!(
            "would restart {} (generation {}, {} of {} replicas ready){}",
            t.what,
            generation.map_or("unknown".into(), |g| g.to_string()),
            s.ready, s.desired,
            t.wait.map_or(String::new(), |w| format!(", waiting up to {w:?} for the rollout")),
        ),
        "deployment": t.name,
        "namespace": t.ns,
        "generation": generation,
        "rollout": s.json(),
    }))
}

async fn restart(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let t = target(input, ctx).await?;
    // Read first, as kubectl does: a missing deployment is named by a plain 404 on a GET, and the
    // result can say when it was last restarted.
    let current = t
        .api
        .get(&t.name)
        .await
        .map_err(|e| t.kube.error(&format!("get {}", t.what), e))?;
    let previous = current
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_AT))
        .cloned();
    // As kubectl: RFC 3339 to the second, in UTC.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    ctx.progress(format!("restart {}", t.what));
    let d = t
        .api
        .patch(&t.name, &params, &Patch::Strategic(&body))
        .await
        .map_err(|e| t.kube.error(&format!("restart {}", t.what), e))?;
    let generation = d.metadata.generation;
    let mut out = json!({
        "deployment": t.name,
        "namespace": t.ns,
        "restarted_at": now,
        "previously_restarted_at": previous,
        "generation": generation,
        "rollout": null,
    });
    let Some(limit) = t.wait else {
        return Ok(out);
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut d = d;
    loop {
        let s = Status::of(&d);
        ctx.progress(format!("{}: {}", t.what, s.message));
        out["rollout"] = s.json();
        if s.failed {
            return Err(
                StepError::new(ErrorKind::Status, format!("{}: {}", t.what, s.message))
                    .with_detail(out),
            );
        }
        if s.complete {
            return Ok(out);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(StepError::new(
                ErrorKind::Timeout,
                format!(
                    "{}: the rollout did not complete within {limit:?}: {}",
                    t.what, s.message
                ),
            )
            .with_detail(out));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = ctx.cancel.cancelled() => {
                return Err(StepError::new(
                    ErrorKind::Timeout,
                    format!("{}: stopped waiting for the rollout: {}", t.what, s.message),
                ).with_detail(out));
            }
        }
        d = t
            .api
            .get(&t.name)
            .await
            .map_err(|e| t.kube.error(&format!("get {}", t.what), e))?;
    }
}

/// A Deployment's rollout, judged as `kubectl rollout status` judges it.
#[derive(Debug, PartialEq)]
pub(crate) struct Status {
    pub(crate) complete: bool,
    pub(crate) failed: bool,
    pub(crate) message: String,
    pub(crate) desired: i32,
    pub(crate) replicas: i32,
    pub(crate) updated: i32,
    pub(crate) ready: i32,
    pub(crate) available: i32,
}

impl Status {
    pub(crate) fn of(d: &Deployment) -> Status {
        let st = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let replicas = st.replicas.unwrap_or(0);
        let updated = st.updated_replicas.unwrap_or(0);
        let ready = st.ready_replicas.unwrap_or(0);
        let available = st.available_replicas.unwrap_or(0);
        let name = d.metadata.name.as_deref().unwrap_or("");
        let mut s = Status {
            complete: false,
            failed: false,
            message: String::new(),
            desired,
            replicas,
            updated,
            ready,
            available,
        };
        let generation = d.metadata.generation.unwrap_or(0);
        if st.observed_generation.unwrap_or(0) < generation {
            s.message = "waiting for the deployment spec update to be observed".into();
            return s;
        }
        let deadline_exceeded = st.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        s.message = if deadline_exceeded {
            s.failed = true;
            format!("deployment {name:?} exceeded its progress deadline")
        } else if updated < desired {
            format!("{updated} out of {desired} new replicas have been updated")
        } else if replicas > updated {
            format!(
                "{} old replicas are pending termination",
                replicas - updated
            )
        } else if available < updated {
            format!("{available} of {updated} updated replicas are available")
        } else {
            s.complete = true;
            format!("deployment {name:?} successfully rolled out")
        };
        s
    }

    fn json(&self) -> Value {
        json!({
            "complete": self.complete,
            "message": self.message,
            "desired": self.desired,
            "replicas": self.replicas,
            "updated": self.updated,
            "ready": self.ready,
            "available": self.available,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v: Value) -> Deployment {
        serde_json::from_value(v).expect("a Deployment")
    }

    #[test]
    fn a_rollout_is_judged_like_kubectl_rollout_status() {
        let base = |status: Value| {
            deployment(json!({
                "metadata": {"name": "web", "generation": 4},
                "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": status,
            }))
        };
        let cases = [
            (
                json!({"observedGeneration": 3}),
                false,
                "waiting for the deployment spec update to be observed",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 1}),
                false,
                "1 out of 3 new replicas have been updated",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 3}),
                false,
                "1 old replicas are pending termination",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                false,
                "2 of 3 updated replicas are available",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                true,
                "deployment \"web\" successfully rolled out",
            ),
        ];
        for (status, complete, message) in cases {
            let s = Status::of(&base(status.clone()));
            assert_eq!(
                (s.complete, s.message.as_str()),
                (complete, message),
                "{status}"
            );
            assert!(!s.failed);
        }
        let stuck = Status::of(&base(json!({
            "observedGeneration": 4, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        })));
        assert!(stuck.failed && !stuck.complete, "{stuck:?}");
        assert_eq!(
            stuck.message,
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn the_deployment_is_named_or_kind_slash_named() {
        assert_eq!(deployment_name("web").ok().as_deref(), Some("web"));
        assert_eq!(
            deployment_name("deployment/web").ok().as_deref(),
            Some("web")
        );
        assert_eq!(deployment_name(" Deploy/web ").ok().as_deref(), Some("web"));
        for bad in ["statefulset/db", "deployment/", "a/b/c", ""] {
            let e = deployment_name(bad).expect_err(bad);
            assert_eq!(e.kind, ErrorKind::Input, "{bad}: {}", e.message);
        }
    }
}
