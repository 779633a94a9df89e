//! `kubernetes.get`: one object by name, or a list with label and field selectors, of any kind the
//! server has (found by discovery, as kubectl finds it).

use kube::api::ListParams;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kube, NAMESPACE, parse, trimmed};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

/// A list asks for this many objects a page, as kubectl does.
const PAGE: u32 = 500;

pub(crate) const KIND: Field = Field::req(
    "kind",
    FieldType::String,
    "What to get, as kubectl takes it: `cronjob`, `cronjobs`, `cj`, `CronJob`, `deployments.apps`.",
);
pub(crate) const API_VERSION: Field = Field::opt(
    "api_version",
    FieldType::String,
    "Only the resource in this `apiVersion` (e.g. `batch/v1`), when a kind is in several groups.",
);

static INFO: PluginInfo = PluginInfo {
    name: "kubernetes.get",
    summary: "Get one object by name, or list objects of any kind with label and field selectors.",
    class: SideEffect::Read,
    fields: &[
        KIND,
        Field::opt(
            "name",
            FieldType::String,
            "One object by name (default: list).",
        ),
        NAMESPACE,
        API_VERSION,
        Field::opt(
            "labels",
            FieldType::String,
            "Label selector of a list, e.g. `app=orchestrator,tier!=canary`.",
        ),
        Field::opt(
            "fields",
            FieldType::String,
            "Field selector of a list, e.g. `status.phase=Running`.",
        ),
        Field::opt(
            "all_namespaces",
            FieldType::Bool,
            "List in every namespace (default false).",
        ),
        Field::opt(
            "missing_ok",
            FieldType::Bool,
            "With `name`: an object that does not exist gives `object: null` instead of failing.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ kind, api_version, namespace, items: [object], names: [string], count: integer, \
             object: object or null (with `name`) }; objects as the API sends them, without \
             metadata.managedFields",
    example: "kind: cronjob\nnamespace: neural-hive-orchestration\nlabels: app=model-monitor",
    connection: Some("kubernetes"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    kind: String,
    name: Option<String>,
    namespace: Option<String>,
    api_version: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
    all_namespaces: Option<bool>,
    missing_ok: Option<bool>,
}

pub struct Get;

impl Plugin for Get {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(get(input, ctx))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

async fn get(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let i: Input = parse(input)?;
    let kube = Kube::of(ctx).await?;
    let r = kube.resource(&i.kind, i.api_version.as_deref()).await?;
    let all = i.all_namespaces.unwrap_or(false);
    let ns = kube.namespace(i.namespace.as_deref());
    let where_ = if !r.namespaced {
        "the cluster".to_string()
    } else if all {
        "every namespace".to_string()
    } else {
        format!("namespace `{ns}`")
    };
    let mut out = json!({
        "kind": r.api.kind,
        "api_version": r.api.api_version,
        "namespace": if r.namespaced && !all { Value::String(ns.clone()) } else { Value::Null },
    });

    if let Some(name) = &i.name {
        if all || i.labels.is_some() || i.fields.is_some() {
            return Err(StepError::new(
                ErrorKind::Input,
                "`name` gets one object: `labels`, `fields` and `all_namespaces` are for lists",
            ));
        }
        ctx.progress(format!("get {} `{name}` in {where_}", r.shown()));
        let api = kube.dynamic(&r, &ns);
        let found = if i.missing_ok.unwrap_or(false) {
            api.get_opt(name).await
        } else {
            api.get(name).await.map(Some)
        };
        let obj =
            found.map_err(|e| kube.error(&format!("get {} `{name}` in {where_}", r.shown()), e))?;
        let obj = obj
            .map(|o| serde_json::to_value(o).map(trimmed))
            .transpose()
            .map_err(|e| {
                StepError::new(ErrorKind::Parse, format!("{} `{name}`: {e}", r.shown()))
            })?;
        out["count"] = json!(usize::from(obj.is_some()));
        out["names"] = json!(obj.as_ref().map(|_| name).into_iter().collect::<Vec<_>>());
        out["items"] = json!(obj.iter().collect::<Vec<_>>());
        out["object"] = obj.unwrap_or(Value::Null);
        return Ok(out);
    }
    if i.missing_ok == Some(true) {
        return Err(StepError::new(
            ErrorKind::Input,
            "`missing_ok` is for getting one object by `name`",
        ));
    }

    let api = if all && r.namespaced {
        kube::Api::all_with(kube.client.clone(), &r.api)
    } else {
        kube.dynamic(&r, &ns)
    };
    let mut lp = ListParams::default().limit(PAGE);
    if let Some(l) = &i.labels {
        lp = lp.labels(l);
    }
    if let Some(f) = &i.fields {
        lp = lp.fields(f);
    }
    let what = format!("list {} in {where_}", r.shown());
    ctx.progress(what.clone());
    let mut items = Vec::new();
    loop {
        let page = api.list(&lp).await.map_err(|e| kube.error(&what, e))?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        for o in page.items {
            let v = serde_json::to_value(o)
                .map_err(|e| StepError::new(ErrorKind::Parse, format!("{what}: {e}")))?;
            items.push(trimmed(v));
        }
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    let names: Vec<Value> = items
        .iter()
        .map(|o| o.pointer("/metadata/name").cloned().unwrap_or(Value::Null))
        .collect();
    out["count"] = json!(items.len());
    out["names"] = Value::Array(names);
    out["items"] = Value::Array(items);
    Ok(out)
}
