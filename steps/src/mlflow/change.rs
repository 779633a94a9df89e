//! The plugins that change the registry: `mlflow.set_alias` and `mlflow.rollback`. Each reads the
//! live registry first, so the result and `runbook plan` say what was there before.
//!
//! MLflow offers no compare-and-set: between the read and the write another client may move the
//! same alias or stage. The result records what this step read and what it set.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, Stage, Version, quoted, refused};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static SET_ALIAS: PluginInfo = PluginInfo {
    name: "mlflow.set_alias",
    summary: "Point a registered model's alias at a version (e.g. `champion`). Sets nothing when \
              it points there already.",
    class: SideEffect::Idempotent,
    fields: &[
        Field::req("model", FieldType::String, "Registered model name."),
        Field::req(
            "alias",
            FieldType::String,
            "The alias to set, e.g. `champion`.",
        ),
        Field::req(
            "version",
            FieldType::Integer,
            "The version it points at afterwards.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ model, alias, version: integer, before: integer or null, changed: boolean }",
    example: "model: fraud_specialist\nalias: champion\nversion: 7",
    connection: Some("mlflow"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasInput {
    model: String,
    alias: String,
    version: u64,
}

pub struct SetAlias;

impl Plugin for SetAlias {
    fn info(&self) -> &'static PluginInfo {
        &SET_ALIAS
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: AliasInput = serde_json::from_value(input).map_err(StepError::input)?;
            let api = Api::of(ctx)?;
            let before = api.aliases(&i.model).await?.get(&i.alias).copied();
            let changed = before != Some(i.version);
            if changed {
                point(&api, &i.model, &i.alias, i.version).await?;
            }
            Ok(json!({
                "model": i.model,
                "alias": i.alias,
                "version": i.version,
                "before": before,
                "changed": changed,
            }))
        })
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let i: AliasInput = serde_json::from_value(input).map_err(StepError::input)?;
            let api = Api::of(ctx)?;
            let before = api.aliases(&i.model).await?.get(&i.alias).copied();
            let target = format!("{}@{}", i.model, i.alias);
            let summary = match before {
                Some(v) if v == i.version => {
                    format!("{target} points at version {v} already: nothing to change")
                }
                Some(v) => format!("would point {target} at version {} (now {v})", i.version),
                None => format!("would point {target} at version {} (now unset)", i.version),
            };
            Ok(json!({ "summary": summary, "before": before, "after": i.version }))
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<AliasInput>(input)
    }
}

/// `registered-models/alias` (POST). MLflow refuses a version that does not exist (its 404, quoted).
async fn point(api: &Api<'_>, model: &str, alias: &str, version: u64) -> Result<(), StepError> {
    api.ctx
        .progress(format!("pointing {model}@{alias} at version {version}"));
    api.post(
        "registered-models/alias",
        json!({ "name": model, "alias": alias, "version": version.to_string() }),
    )
    .await
    .map(drop)
}

const ROLLBACK_STAGES: [&str; 2] = ["Production", "Staging"];

static ROLLBACK: PluginInfo = PluginInfo {
    name: "mlflow.rollback",
    summary: "Roll a registered model back to its previous version: move the stage (`method: \
              stage`, archiving what was in it) or the alias (`method: alias`) that serves it. \
              The previous version is the highest-numbered version below the current one whose \
              status is READY (deleted versions no longer exist), unless `to_version` names one. \
              Refuses (kind `condition`) when there is no current or no previous version.",
    class: SideEffect::Unsafe,
    fields: &[
        Field::req("model", FieldType::String, "Registered model name."),
        Field::req(
            "method",
            FieldType::Enum(&["stage", "alias"]),
            "`stage`: transition the previous version to `stage`, archiving the versions in it; \
             `alias`: point `alias` at the previous version.",
        ),
        Field::opt(
            "stage",
            FieldType::Enum(&ROLLBACK_STAGES),
            "With `method: stage`: the stage rolled back (default `Production`).",
        ),
        Field::opt(
            "alias",
            FieldType::String,
            "With `method: alias`: the alias moved (default `champion`).",
        ),
        Field::opt(
            "to_version",
            FieldType::Integer,
            "Roll back to this version instead of the previous one.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ model, method, stage or alias, from_version: integer, to_version: integer, \
             archived: [integer] (method stage: the versions that were in the stage) }",
    example: "model: fraud_specialist\nmethod: alias\nalias: champion",
    connection: Some("mlflow"),
};

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Method {
    Stage,
    Alias,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackInput {
    model: String,
    method: Method,
    stage: Option<Stage>,
    alias: Option<String>,
    to_version: Option<u64>,
}

/// What a rollback moves: a stage or an alias.
enum Serving {
    Stage(Stage),
    Alias(String),
}

impl RollbackInput {
    fn serving(&self) -> Result<Serving, StepError> {
        let wrong = |field: &str, method: &str| {
            StepError::new(
                ErrorKind::Input,
                format!("`{field}` goes with `method: {method}`"),
            )
        };
        match self.method {
            Method::Stage => {
                if self.alias.is_some() {
                    return Err(wrong("alias", "alias"));
                }
                match self.stage.unwrap_or(Stage::Production) {
                    s @ (Stage::Production | Stage::Staging) => Ok(Serving::Stage(s)),
                    s => Err(StepError::new(
                        ErrorKind::Input,
                        format!(
                            "cannot roll back stage {}: use one of {}",
                            s.as_str(),
                            ROLLBACK_STAGES.join(", ")
                        ),
                    )),
                }
            }
            Method::Alias => {
                if self.stage.is_some() {
                    return Err(wrong("stage", "stage"));
                }
                Ok(Serving::Alias(
                    self.alias.clone().unwrap_or_else(|| "champion".into()),
                ))
            }
        }
    }
}

/// A rollback worked out from the live registry, before it acts.
struct Move {
    model: String,
    serving: Serving,
    from: u64,
    to: u64,
    /// Method stage: the versions in the stage now, which MLflow archives.
    archived: Vec<u64>,
}

impl Move {
    async fn work_out(api: &Api<'_>, i: &RollbackInput) -> Result<Move, StepError> {
        let serving = i.serving()?;
        let model = i.model.as_str();
        // The search below cannot name every model: say so before anything is asked.
        quoted(model)?;
        // Asked first: for a model that does not exist, this is MLflow's 404 (search answers none).
        let aliases = api.aliases(model).await?;
        let versions = api.all_versions(model).await?;
        let (from, archived) = match &serving {
            Serving::Stage(stage) => {
                let in_stage: Vec<u64> = versions
                    .iter()
                    .filter(|v| v.stage == stage.as_str())
                    .map(|v| v.version)
                    .collect();
                let Some(&from) = in_stage.iter().max() else {
                    return Err(refused(format!(
                        "no version of model `{model}` is in stage {}: nothing to roll back",
                        stage.as_str()
                    )));
                };
                (from, in_stage)
            }
            Serving::Alias(alias) => match aliases.get(alias) {
                Some(&v) => (v, Vec::new()),
                None => {
                    return Err(refused(format!(
                        "model `{model}` has no alias `{alias}`: nothing to roll back"
                    )));
                }
            },
        };
        let to = match i.to_version {
            Some(n) => chosen(model, &versions, from, n)?,
            None => previous(model, &versions, from)?,
        };
        Ok(Move {
            model: model.to_string(),
            serving,
            from,
            to,
            archived: archived.into_iter().filter(|v| *v != to).collect(),
        })
    }

    fn what(&self) -> String {
        match &self.serving {
            Serving::Stage(s) => format!("{} in {}", self.model, s.as_str()),
            Serving::Alias(a) => format!("{}@{a}", self.model),
        }
    }

    fn archiving(&self) -> String {
        match self.archived.as_slice() {
            [] => String::new(),
            vs => format!(
                ", archiving {}",
                vs.iter()
                    .map(|v| format!("version {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn record(&self) -> Value {
        let mut out = json!({
            "model": self.model,
            "from_version": self.from,
            "to_version": self.to,
        });
        match &self.serving {
            Serving::Stage(s) => {
                out["method"] = json!("stage");
                out["stage"] = json!(s.as_str());
                out["archived"] = json!(self.archived);
            }
            Serving::Alias(a) => {
                out["method"] = json!("alias");
                out["alias"] = json!(a);
            }
        }
        out
    }
}

/// The previous version: the highest-numbered READY version below `from`.
fn previous(model: &str, versions: &[Version], from: u64) -> Result<u64, StepError> {
    versions
        .iter()
        .filter(|v| v.version < from && v.ready())
        .map(|v| v.version)
        .max()
        .ok_or_else(|| {
            refused(format!(
                "model `{model}` has no READY version below version {from}: nothing to roll back to (versions: {})",
                listed(versions)
            ))
        })
}

/// `to_version`, when it exists, is READY and is not what serves now.
fn chosen(model: &str, versions: &[Version], from: u64, n: u64) -> Result<u64, StepError> {
    let Some(v) = versions.iter().find(|v| v.version == n) else {
        return Err(refused(format!(
            "model `{model}` has no version {n} (versions: {})",
            listed(versions)
        )));
    };
    if n == from {
        return Err(refused(format!(
            "version {n} of model `{model}` is the one serving now: nothing to roll back"
        )));
    }
    if !v.ready() {
        return Err(refused(format!(
            "version {n} of model `{model}` is {}, not READY",
            v.status
        )));
    }
    Ok(n)
}

fn listed(versions: &[Version]) -> String {
    if versions.is_empty() {
        return "none".into();
    }
    versions
        .iter()
        .map(|v| format!("{} {}", v.version, v.status))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct Rollback;

impl Plugin for Rollback {
    fn info(&self) -> &'static PluginInfo {
        &ROLLBACK
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: RollbackInput = serde_json::from_value(input).map_err(StepError::input)?;
            let api = Api::of(ctx)?;
            let m = Move::work_out(&api, &i).await?;
            ctx.progress(format!(
                "rolling {} back from version {} to version {}",
                m.what(),
                m.from,
                m.to
            ));
            match &m.serving {
                Serving::Stage(stage) => {
                    let what = "model-versions/transition-stage";
                    let a = api
                        .post(
                            what,
                            json!({
                                "name": m.model,
                                "version": m.to.to_string(),
                                "stage": stage.as_str(),
                                "archive_existing_versions": true,
                            }),
                        )
                        .await?;
                    let now = Version::from_answer(&a, what)?;
                    if now.stage != stage.as_str() {
                        return Err(StepError::new(
                            ErrorKind::Other,
                            format!(
                                "MLflow answered {what} with version {} in stage {}, not {}",
                                now.version,
                                now.stage,
                                stage.as_str()
                            ),
                        )
                        .with_detail(m.record()));
                    }
                }
                Serving::Alias(alias) => point(&api, &m.model, alias, m.to).await?,
            }
            Ok(m.record())
        })
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let i: RollbackInput = serde_json::from_value(input).map_err(StepError::input)?;
            let api = Api::of(ctx)?;
            let m = Move::work_out(&api, &i).await?;
            let mut out = m.record();
            out["summary"] = json!(format!(
                "would roll {} back from version {} to version {}{}",
                m.what(),
                m.from,
                m.to,
                m.archiving()
            ));
            Ok(out)
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<RollbackInput>(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, status: &str) -> Version {
        Version {
            model: "m".into(),
            version,
            stage: "None".into(),
            status: status.into(),
            run_id: None,
            json: Value::Null,
        }
    }

    #[test]
    fn the_previous_version_is_the_highest_ready_one_below_the_current() {
        let vs = [
            v(1, "READY"),
            v(2, "READY"),
            v(4, "PENDING_REGISTRATION"),
            v(5, "READY"),
        ];
        assert_eq!(
            previous("m", &vs, 5).ok(),
            Some(2),
            "4 is not READY, 3 is gone"
        );
        assert_eq!(previous("m", &vs, 2).ok(), Some(1));
        let e = previous("m", &vs, 1).expect_err("nothing below 1");
        assert_eq!(e.kind, ErrorKind::Condition);
        assert_eq!(
            e.message,
            "model `m` has no READY version below version 1: nothing to roll back to (versions: 1 READY, 2 READY, 4 PENDING_REGISTRATION, 5 READY)"
        );
    }

    #[test]
    fn an_explicit_target_must_exist_be_ready_and_differ_from_the_current() {
        let vs = [v(1, "READY"), v(2, "FAILED_REGISTRATION"), v(3, "READY")];
        assert_eq!(chosen("m", &vs, 1, 3).ok(), Some(3), "any READY version");
        for (to, why) in [
            (
                2,
                "version 2 of model `m` is FAILED_REGISTRATION, not READY",
            ),
            (
                1,
                "version 1 of model `m` is the one serving now: nothing to roll back",
            ),
            (
                9,
                "model `m` has no version 9 (versions: 1 READY, 2 FAILED_REGISTRATION, 3 READY)",
            ),
        ] {
            let e = chosen("m", &vs, 1, to).expect_err("refused");
            assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Condition, why));
        }
    }
}
