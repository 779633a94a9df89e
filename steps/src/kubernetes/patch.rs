//! `kubernetes.patch`: a merge patch (or a strategic merge patch, for the built-in kinds) of any
//! object, as `kubectl patch --type merge|strategic` sends it; the result shows the patched fields
//! before and after.

use kube::api::{Patch as KubePatch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::get::{API_VERSION, KIND};
use super::{Kube, NAMESPACE, Resource, changes, merge_patch, parse, touched};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

/// The field manager kubectl's `patch` writes under, so that the object's managed fields read the
/// same whether an operator or a runbook patched it.
const FIELD_MANAGER: &str = "kubectl-patch";

static INFO: PluginInfo = PluginInfo {
    name: "kubernetes.patch",
    summary: "Patch any object (merge patch, or strategic merge for built-in kinds), as \
              `kubectl patch` does; the result shows the patched fields before and after.",
    class: SideEffect::Idempotent,
    fields: &[
        KIND,
        Field::req("name", FieldType::String, "The object's name."),
        NAMESPACE,
        API_VERSION,
        Field::req(
            "patch",
            FieldType::Any,
            "The patch, a mapping, e.g. `{data: {ML_CONFIDENCE_THRESHOLD: \"0.65\"}}`; `null` deletes a key.",
        ),
        Field::opt(
            "type",
            FieldType::Enum(&["merge", "strategic"]),
            "`merge` (RFC 7386, the default) or `strategic` (built-in kinds only: lists merge by key).",
        ),
    ],
    exactly_one_of: &[],
    output: "{ kind, api_version, name, namespace, type, before: {patched fields}, after: {patched \
             fields}, changed: bool, resource_version }",
    example: "kind: configmap\nname: orchestrator-config\nnamespace: neural-hive-orchestration\npatch: { data: { ML_CONFIDENCE_THRESHOLD: \"0.65\" } }",
    connection: Some("kubernetes"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    kind: String,
    name: String,
    namespace: Option<String>,
    api_version: Option<String>,
    patch: Value,
    #[serde(rename = "type")]
    kind_of_patch: Option<PatchType>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PatchType {
    Merge,
    Strategic,
}

impl PatchType {
    fn as_str(self) -> &'static str {
        match self {
            PatchType::Merge => "merge",
            PatchType::Strategic => "strategic",
        }
    }
}

pub struct Patch;

impl Plugin for Patch {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(patch(input, ctx, false))
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(patch(input, ctx, true)))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

struct Call {
    kube: std::sync::Arc<Kube>,
    r: Resource,
    ns: String,
    what: String,
}

async fn prepare(i: &Input, ctx: &StepContext) -> Result<Call, StepError> {
    if !i.patch.is_object() {
        return Err(StepError::new(
            ErrorKind::Input,
            format!("`patch` must be a mapping, not {}", i.patch),
        ));
    }
    let kube = Kube::of(ctx).await?;
    let r = kube.resource(&i.kind, i.api_version.as_deref()).await?;
    if !r.supports("patch") {
        return Err(StepError::new(
            ErrorKind::Input,
            format!(
                "{} cannot be patched (the server lists no `patch` verb)",
                r.shown()
            ),
        ));
    }
    let ns = kube.namespace(i.namespace.as_deref());
    let what = if r.namespaced {
        format!("{} `{}` in namespace `{ns}`", r.shown(), i.name)
    } else {
        format!("{} `{}`", r.shown(), i.name)
    };
    Ok(Call { kube, r, ns, what })
}

async fn patch(input: Value, ctx: &StepContext, planning: bool) -> Result<Value, StepError> {
    let i: Input = parse(input)?;
    let ty = i.kind_of_patch.unwrap_or(PatchType::Merge);
    let c = prepare(&i, ctx).await?;
    let api = c.kube.dynamic(&c.r, &c.ns);
    ctx.progress(format!("get {}", c.what));
    let live = api
        .get(&i.name)
        .await
        .map_err(|e| c.kube.error(&format!("get {}", c.what), e))?;
    let live = serde_json::to_value(&live)
        .map_err(|e| StepError::new(ErrorKind::Parse, format!("{}: {e}", c.what)))?;
    let before = touched(&live, &i.patch);
    let mut out = json!({
        "kind": c.r.api.kind,
        "api_version": c.r.api.api_version,
        "name": i.name,
        "namespace": if c.r.namespaced { Value::String(c.ns.clone()) } else { Value::Null },
        "type": ty.as_str(),
        "before": before,
    });

    if planning {
        // What a merge patch makes of the live object; a strategic patch merges keyed lists
        // differently, which only the server knows, so the plan says so.
        let mut after_obj = live.clone();
        merge_patch(&mut after_obj, &i.patch);
        let after = touched(&after_obj, &i.patch);
        let changed = after != out["before"];
        let mut summary = if changed {
            format!(
                "would {} patch {}: {}",
                ty.as_str(),
                c.what,
                changes(&out["before"], &after).join(", ")
            )
        } else {
            format!(
                "would {} patch {}: it has these values already",
                ty.as_str(),
                c.what
            )
        };
        if ty == PatchType::Strategic {
            summary.push_str(" (after computed as a merge patch; lists may merge by key instead)");
        }
        out["after"] = after;
        out["changed"] = json!(changed);
        out["summary"] = json!(summary);
        return Ok(out);
    }

    let body = match ty {
        PatchType::Merge => KubePatch::Merge(&i.patch),
        PatchType::Strategic => KubePatch::Strategic(&i.patch),
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    ctx.progress(format!("{} patch {}", ty.as_str(), c.what));
    let patched = api.patch(&i.name, &params, &body).await.map_err(|e| {
        let mut err = c
            .kube
            .error(&format!("{} patch {}", ty.as_str(), c.what), e);
        if ty == PatchType::Strategic && err.message.contains(" 415") {
            err.message
                .push_str(" (custom resources take `type: merge` only)");
        }
        err
    })?;
    let patched = serde_json::to_value(&patched)
        .map_err(|e| StepError::new(ErrorKind::Parse, format!("{}: {e}", c.what)))?;
    let after = touched(&patched, &i.patch);
    out["changed"] = json!(after != out["before"]);
    out["after"] = after;
    out["resource_version"] = patched
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(out)
}
