//! The MLflow model registry and tracking server, through its REST API 2.0: reads of a model's
//! versions and of the metrics of the run behind one (`read.rs`), and the two changes an incident
//! needs, moving an alias and rolling a model back (`change.rs`).
//!
//! One client per connection (`Connection::client`), built like `http.request`'s; the bearer token
//! is read at each call, so it never sits in an input or an event. MLflow answers an error with an
//! HTTP 4xx/5xx and JSON `{error_code, message}`; a step's error quotes both.

mod change;
pub mod fixture;
mod read;

pub use change::{Rollback, SetAlias};
pub use read::{LatestVersions, ModelVersion, RunMetrics};

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::connection::Connection;
use crate::http::send_error;
use crate::web::{client as build_client, describe_status, head_chars, redacted};
use crate::{ErrorKind, StepContext, StepError};

/// An answer keeps at most this many bytes: a registry's answers are small, and a server that
/// streams without end must not exhaust memory.
const ANSWER_LIMIT: usize = 8 << 20;

/// How much of a body a message quotes; the journal's detail keeps more.
const QUOTED: usize = 300;

/// A page of `model-versions/search`.
const PAGE: &str = "1000";

/// The stages of MLflow's (deprecated, still served) stage workflow.
pub(crate) const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Stage {
    #[serde(rename = "None")]
    Unassigned,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Unassigned => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

/// One connection's client, shared by every MLflow step of a run.
struct Client {
    http: reqwest::Client,
    /// `<url>/api/2.0/mlflow/`: endpoint names are joined under it.
    api: Url,
}

impl Client {
    fn new(conn: &Connection) -> Result<Client, StepError> {
        let bad = |why: String| {
            StepError::new(
                ErrorKind::Input,
                format!("connection `{}` (mlflow): {why}", conn.name),
            )
        };
        let url = conn
            .str("url")
            .ok_or_else(|| bad("`url` is not set".into()))?;
        let mut base = Url::parse(url).map_err(|e| bad(format!("invalid url `{url}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!(
                "invalid url `{url}`: the scheme must be http or https"
            )));
        }
        // A server behind a path prefix (`https://host/mlflow`) keeps it: without the trailing
        // slash, joining would replace its last segment.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let api = base
            .join("api/2.0/mlflow/")
            .map_err(|e| bad(format!("invalid url `{url}`: {e}")))?;
        Ok(Client {
            http: build_client()?,
            api,
        })
    }
}

/// What a step talks to MLflow through: its connection's client, the connection (for the token)
/// and the step's context (for the progress line).
pub(crate) struct Api<'a> {
    client: Arc<Client>,
    conn: &'a Connection,
    ctx: &'a StepContext,
}

impl<'a> Api<'a> {
    pub(crate) fn of(ctx: &'a StepContext) -> Result<Api<'a>, StepError> {
        let conn = ctx.connection("mlflow")?;
        let client = conn.client(Client::new)?;
        Ok(Api { client, conn, ctx })
    }

    pub(crate) async fn get(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, StepError> {
        let mut url = self.url(endpoint)?;
        url.query_pairs_mut().extend_pairs(query);
        self.send(Method::GET, endpoint, url, None).await
    }

    pub(crate) async fn post(&self, endpoint: &str, body: Value) -> Result<Value, StepError> {
        let url = self.url(endpoint)?;
        self.send(Method::POST, endpoint, url, Some(body)).await
    }

    fn url(&self, endpoint: &str) -> Result<Url, StepError> {
        self.client.api.join(endpoint).map_err(|e| {
            StepError::new(
                ErrorKind::Other,
                format!("MLflow endpoint `{endpoint}`: {e}"),
            )
        })
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        url: Url,
        body: Option<Value>,
    ) -> Result<Value, StepError> {
        let shown = redacted(&url);
        let mut req = self.client.http.request(method.clone(), url);
        if let Some(token) = self.conn.secret("token")? {
            req = req.bearer_auth(token);
        }
        if let Some(body) = &body {
            req = req.json(body);
        }
        self.ctx
            .progress(format!("waiting for MLflow: {method} {endpoint}"));
        let mut response = req
            .send()
            .await
            .map_err(|e| send_error(&method, &shown, &e))?;
        let status = response.status();
        let mut kept = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| send_error(&method, &shown, &e))?
        {
            if kept.len() + chunk.len() > ANSWER_LIMIT {
                return Err(StepError::new(
                    ErrorKind::Parse,
                    format!(
                        "MLflow: {method} {shown} answered more than {} MiB",
                        ANSWER_LIMIT >> 20
                    ),
                ));
            }
            kept.extend_from_slice(&chunk);
        }
        answer(&format!("{method} {shown}"), status, &kept)
    }

    /// `model-versions/get`.
    pub(crate) async fn version(&self, model: &str, version: u64) -> Result<Version, StepError> {
        let n = version.to_string();
        let a = self
            .get("model-versions/get", &[("name", model), ("version", &n)])
            .await?;
        Version::from_answer(&a, "model-versions/get")
    }

    /// `registered-models/alias` (GET): the version an alias points at.
    pub(crate) async fn alias(&self, model: &str, alias: &str) -> Result<Version, StepError> {
        let a = self
            .get(
                "registered-models/alias",
                &[("name", model), ("alias", alias)],
            )
            .await?;
        Version::from_answer(&a, "registered-models/alias")
    }

    /// `registered-models/get`: the model's aliases, alias → version. Also how a step learns that
    /// the model does not exist (MLflow's 404, quoted).
    pub(crate) async fn aliases(&self, model: &str) -> Result<BTreeMap<String, u64>, StepError> {
        #[derive(Deserialize)]
        struct Registered {
            #[serde(default)]
            aliases: Vec<Alias>,
        }
        #[derive(Deserialize)]
        struct Alias {
            alias: String,
            version: String,
        }
        let what = "registered-models/get";
        let a = self.get(what, &[("name", model)]).await?;
        let r: Registered = field(&a, "registered_model", what)?;
        r.aliases
            .into_iter()
            .map(|a| Ok((a.alias, version_number(&a.version, what)?)))
            .collect()
    }

    /// `registered-models/get-latest-versions`: the latest version in each of `stages` (every stage
    /// when empty), in version order.
    pub(crate) async fn latest(
        &self,
        model: &str,
        stages: &[Stage],
    ) -> Result<Vec<Version>, StepError> {
        let what = "registered-models/get-latest-versions";
        let stages: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
        let a = self
            .post(what, json!({ "name": model, "stages": stages }))
            .await?;
        Version::list(&a, what)
    }

    /// Every version of the model that is not deleted (`model-versions/search`, all pages), in
    /// version order. Search answers no aliases: ask [`Api::aliases`].
    pub(crate) async fn all_versions(&self, model: &str) -> Result<Vec<Version>, StepError> {
        let what = "model-versions/search";
        let filter = format!("name = {}", quoted(model)?);
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", PAGE)];
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let a = self.get(what, &query).await?;
            all.extend(Version::list(&a, what)?);
            match a["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => break,
            }
        }
        all.sort_by_key(|v| v.version);
        Ok(all)
    }
}

/// A 2xx answer's JSON, or the step error that says what MLflow answered instead.
fn answer(call: &str, status: StatusCode, body: &[u8]) -> Result<Value, StepError> {
    let text = String::from_utf8_lossy(body);
    let quote = || match text.trim() {
        "" => "; the body is empty".to_string(),
        t => format!("; body: {}", head_chars(t, QUOTED)),
    };
    let parsed = serde_json::from_slice::<Value>(body);
    if status.is_success() {
        return parsed.map_err(|e| {
            StepError::new(
                ErrorKind::Parse,
                format!(
                    "MLflow: {call} answered JSON that does not parse ({e}){}",
                    quote()
                ),
            )
            .with_detail(json!({ "status": status.as_u16(), "body": head_chars(&text, 4096) }))
        });
    }
    let said = parsed.ok().filter(|v| v["error_code"].is_string());
    let (said_text, detail) = match &said {
        Some(v) => {
            let code = v["error_code"].as_str().unwrap_or_default();
            let message = v["message"].as_str().unwrap_or_default();
            (
                format!(": {code}: {message}"),
                json!({ "status": status.as_u16(), "error_code": code, "message": message }),
            )
        }
        None => (
            quote(),
            json!({ "status": status.as_u16(), "body": head_chars(&text, 4096) }),
        ),
    };
    Err(StepError::new(
        ErrorKind::Status,
        format!(
            "MLflow: {call} answered {}{said_text}",
            describe_status(status)
        ),
    )
    .with_detail(detail))
}

/// `answer[key]` as a `T`, or a `parse` error saying what MLflow's answer lacked.
fn field<T: DeserializeOwned>(answer: &Value, key: &str, what: &str) -> Result<T, StepError> {
    let value = answer.get(key).ok_or_else(|| {
        StepError::new(
            ErrorKind::Parse,
            format!("MLflow's answer to {what} has no `{key}`: {answer}"),
        )
    })?;
    T::deserialize(value).map_err(|e| {
        StepError::new(
            ErrorKind::Parse,
            format!("MLflow's answer to {what} has an unexpected `{key}`: {e}"),
        )
    })
}

/// MLflow sends version numbers as text.
fn version_number(text: &str, what: &str) -> Result<u64, StepError> {
    text.parse().map_err(|_| {
        StepError::new(
            ErrorKind::Parse,
            format!("MLflow's answer to {what} has a version that is not a number: `{text}`"),
        )
    })
}

/// A model name as a string literal of MLflow's search filter, which has no escapes: a name holding
/// both kinds of quote cannot be written.
fn quoted(model: &str) -> Result<String, StepError> {
    if !model.contains('\'') {
        Ok(format!("'{model}'"))
    } else if !model.contains('"') {
        Ok(format!("\"{model}\""))
    } else {
        Err(StepError::new(
            ErrorKind::Input,
            format!(
                "model `{model}`: a name with both ' and \" cannot be searched for in MLflow's filter syntax"
            ),
        ))
    }
}

/// A condition of the registry that stops a step: it answered, but does not hold what the step
/// needs (nothing in the stage, no version to roll back to, a metric the run did not log).
pub(crate) fn refused(message: String) -> StepError {
    StepError::new(ErrorKind::Condition, message)
}

/// A model version as MLflow describes it (fields it adds later are ignored).
#[derive(Debug, Deserialize)]
struct RawVersion {
    name: String,
    version: String,
    #[serde(default)]
    current_stage: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    creation_timestamp: Option<i64>,
    #[serde(default)]
    last_updated_timestamp: Option<i64>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

/// A model version as the plugins return it: the version a number, the run `null` when there is
/// none, tags a mapping.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub model: String,
    pub version: u64,
    pub stage: String,
    pub status: String,
    pub run_id: Option<String>,
    json: Value,
}

impl Version {
    fn from_raw(raw: RawVersion, what: &str) -> Result<Version, StepError> {
        let version = version_number(&raw.version, what)?;
        let run_id = raw.run_id.filter(|r| !r.is_empty());
        let stage = raw.current_stage.unwrap_or_else(|| "None".into());
        let status = raw.status.unwrap_or_default();
        let tags: BTreeMap<String, String> =
            raw.tags.into_iter().map(|t| (t.key, t.value)).collect();
        let json = json!({
            "model": raw.name,
            "version": version,
            "stage": stage,
            "status": status,
            "run_id": run_id,
            "source": raw.source,
            "aliases": raw.aliases,
            "description": raw.description.unwrap_or_default(),
            "created_ms": raw.creation_timestamp,
            "updated_ms": raw.last_updated_timestamp,
            "tags": tags,
        });
        Ok(Version {
            model: raw.name,
            version,
            stage,
            status,
            run_id,
            json,
        })
    }

    /// The `model_version` of an answer.
    fn from_answer(answer: &Value, what: &str) -> Result<Version, StepError> {
        Version::from_raw(field(answer, "model_version", what)?, what)
    }

    /// The `model_versions` of an answer (MLflow leaves the key out when there are none), in
    /// version order.
    fn list(answer: &Value, what: &str) -> Result<Vec<Version>, StepError> {
        if answer.get("model_versions").is_none() {
            return Ok(Vec::new());
        }
        let raw: Vec<RawVersion> = field(answer, "model_versions", what)?;
        let mut versions = raw
            .into_iter()
            .map(|r| Version::from_raw(r, what))
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    pub(crate) fn ready(&self) -> bool {
        self.status == "READY"
    }

    pub(crate) fn to_json(&self) -> Value {
        self.json.clone()
    }
}

/// Which version of a model a step means: exactly one of a number, an alias or a stage (the latest
/// version in it).
pub(crate) enum Which {
    Number(u64),
    Alias(String),
    Stage(Stage),
}

impl Which {
    pub(crate) fn of(
        version: Option<u64>,
        alias: Option<String>,
        stage: Option<Stage>,
    ) -> Result<Which, StepError> {
        match (version, alias, stage) {
            (Some(v), None, None) => Ok(Which::Number(v)),
            (None, Some(a), None) => Ok(Which::Alias(a)),
            (None, None, Some(s)) => Ok(Which::Stage(s)),
            _ => Err(StepError::new(
                ErrorKind::Input,
                "give exactly one of `version`, `alias` and `stage`",
            )),
        }
    }

    pub(crate) async fn resolve(&self, api: &Api<'_>, model: &str) -> Result<Version, StepError> {
        match self {
            Which::Number(n) => api.version(model, *n).await,
            Which::Alias(a) => api.alias(model, a).await,
            Which::Stage(s) => api
                .latest(model, &[*s])
                .await?
                .into_iter()
                .max_by_key(|v| v.version)
                .ok_or_else(|| {
                    refused(format!(
                        "no version of model `{model}` is in stage {}",
                        s.as_str()
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_model_name_is_quoted_for_the_search_filter_when_it_can_be() {
        assert_eq!(quoted("fraud").ok().as_deref(), Some("'fraud'"));
        assert_eq!(quoted("o'brien").ok().as_deref(), Some("\"o'brien\""));
        assert_eq!(
            quoted("it's \"odd\"").map_err(|e| e.kind).err(),
            Some(ErrorKind::Input)
        );
    }
}
