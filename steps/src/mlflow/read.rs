//! The read plugins: `mlflow.latest_versions`, `mlflow.model_version`, `mlflow.run_metrics`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Api, STAGES, Stage, Which, field, refused};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

const MODEL: Field = Field::req("model", FieldType::String, "Registered model name.");
const VERSION: Field = Field::opt("version", FieldType::Integer, "A version number.");
const ALIAS: Field = Field::opt(
    "alias",
    FieldType::String,
    "The version an alias points at, e.g. `champion`.",
);
const STAGE: Field = Field::opt(
    "stage",
    FieldType::Enum(&STAGES),
    "The latest version in a stage, e.g. `Production`.",
);

const VERSION_SHAPE: &str = "{ model, version: integer, stage, status, run_id: string or null, \
                             source, aliases: [string], description, created_ms, updated_ms, \
                             tags: { key: value } }";

static LATEST: PluginInfo = PluginInfo {
    name: "mlflow.latest_versions",
    summary: "The latest version of a registered model in each stage (or in the stages given).",
    class: SideEffect::Read,
    fields: &[
        MODEL,
        Field::opt(
            "stages",
            FieldType::List(&FieldType::Enum(&STAGES)),
            "Only these stages (default: every stage).",
        ),
    ],
    exactly_one_of: &[],
    output: "{ model, versions: [version, in version order], by_stage: { stage: version number } }; \
             a version is { model, version: integer, stage, status, run_id, source, aliases, \
             description, created_ms, updated_ms, tags }",
    example: "model: fraud_specialist\nstages: [Production, Staging]",
    connection: Some("mlflow"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatestInput {
    model: String,
    stages: Option<Vec<Stage>>,
}

pub struct LatestVersions;

impl Plugin for LatestVersions {
    fn info(&self) -> &'static PluginInfo {
        &LATEST
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: LatestInput = serde_json::from_value(input).map_err(StepError::input)?;
            let api = Api::of(ctx)?;
            let versions = api
                .latest(&i.model, i.stages.as_deref().unwrap_or_default())
                .await?;
            let by_stage: Map<String, Value> = versions
                .iter()
                .map(|v| (v.stage.clone(), json!(v.version)))
                .collect();
            Ok(json!({
                "model": i.model,
                "versions": versions.iter().map(|v| v.to_json()).collect::<Vec<_>>(),
                "by_stage": by_stage,
            }))
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<LatestInput>(input)
    }
}

static VERSION_INFO: PluginInfo = PluginInfo {
    name: "mlflow.model_version",
    summary: "One version of a registered model: by number, by alias, or the latest in a stage.",
    class: SideEffect::Read,
    fields: &[MODEL, VERSION, ALIAS, STAGE],
    exactly_one_of: &[&["version", "alias", "stage"]],
    output: VERSION_SHAPE,
    example: "model: fraud_specialist\nalias: champion",
    connection: Some("mlflow"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionInput {
    model: String,
    version: Option<u64>,
    alias: Option<String>,
    stage: Option<Stage>,
}

pub struct ModelVersion;

impl Plugin for ModelVersion {
    fn info(&self) -> &'static PluginInfo {
        &VERSION_INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: VersionInput = serde_json::from_value(input).map_err(StepError::input)?;
            let which = Which::of(i.version, i.alias, i.stage)?;
            let api = Api::of(ctx)?;
            Ok(which.resolve(&api, &i.model).await?.to_json())
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<VersionInput>(input)
    }
}

static METRICS: PluginInfo = PluginInfo {
    name: "mlflow.run_metrics",
    summary: "The metrics of the run behind a model version (e.g. the training F1 of what serves \
              in Production): the latest value of each, as MLflow defines latest (highest step, \
              then newest).",
    class: SideEffect::Read,
    fields: &[
        MODEL,
        VERSION,
        ALIAS,
        STAGE,
        Field::opt(
            "metrics",
            FieldType::List(&FieldType::String),
            "Only these metrics; one the run did not log fails the step (kind `condition`).",
        ),
    ],
    exactly_one_of: &[&["version", "alias", "stage"]],
    output: "{ model, version: integer, run_id, metrics: { name: number }, non_finite: { name: \
             \"NaN\" } (metrics MLflow sends as text: absent from `metrics`, so a condition over one \
             fails instead of deciding) }",
    example: "model: fraud_specialist\nstage: Production\nmetrics: [f1_score]",
    connection: Some("mlflow"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsInput {
    model: String,
    version: Option<u64>,
    alias: Option<String>,
    stage: Option<Stage>,
    metrics: Option<Vec<String>>,
}

pub struct RunMetrics;

impl Plugin for RunMetrics {
    fn info(&self) -> &'static PluginInfo {
        &METRICS
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: MetricsInput = serde_json::from_value(input).map_err(StepError::input)?;
            let which = Which::of(i.version, i.alias, i.stage)?;
            let api = Api::of(ctx)?;
            let v = which.resolve(&api, &i.model).await?;
            let Some(run_id) = v.run_id.clone() else {
                return Err(refused(format!(
                    "version {} of model `{}` has no run: it was not registered from one",
                    v.version, v.model
                )));
            };
            let logged = run_metrics(&api, &run_id).await?;
            let metrics = match &i.metrics {
                None => logged,
                Some(wanted) => pick(logged, wanted, &run_id)?,
            };
            // A NaN is kept apart, as prometheus.* keeps it: minijinja orders a string against a
            // number without complaint, so `metrics.f1 < 0.7` must find no value rather than "NaN".
            let (metrics, non_finite): (BTreeMap<_, _>, BTreeMap<_, _>) =
                metrics.into_iter().partition(|(_, v)| v.is_number());
            Ok(json!({
                "model": v.model,
                "version": v.version,
                "run_id": run_id,
                "metrics": metrics,
                "non_finite": non_finite,
            }))
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<MetricsInput>(input)
    }
}

/// The latest value of each metric of a run (`runs/get` answers only the latest). A value is a
/// number, or MLflow's text for one JSON cannot hold (`"NaN"`).
async fn run_metrics(api: &Api<'_>, run_id: &str) -> Result<BTreeMap<String, Value>, StepError> {
    #[derive(Deserialize)]
    struct Run {
        #[serde(default)]
        data: Data,
    }
    #[derive(Deserialize, Default)]
    struct Data {
        #[serde(default)]
        metrics: Vec<Metric>,
    }
    #[derive(Deserialize)]
    struct Metric {
        key: String,
        value: Value,
    }
    let what = "runs/get";
    let a = api.get(what, &[("run_id", run_id)]).await?;
    let run: Run = field(&a, "run", what)?;
    run.data
        .metrics
        .into_iter()
        .map(|m| match m.value {
            Value::Number(_) | Value::String(_) => Ok((m.key, m.value)),
            other => Err(StepError::new(
                ErrorKind::Parse,
                format!(
                    "MLflow's answer to {what} has metric `{}` valued {other}",
                    m.key
                ),
            )),
        })
        .collect()
}

/// The metrics asked for, all of them logged.
fn pick(
    mut logged: BTreeMap<String, Value>,
    wanted: &[String],
    run_id: &str,
) -> Result<BTreeMap<String, Value>, StepError> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !logged.contains_key(w.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let has: Vec<&str> = logged.keys().map(String::as_str).collect();
        return Err(refused(format!(
            "run {run_id} logged no metric {}; it has: {}",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if has.is_empty() {
                "none".to_string()
            } else {
                has.join(", ")
            }
        )));
    }
    Ok(wanted
        .iter()
        .filter_map(|w| logged.remove_entry(w.as_str()))
        .collect())
}
