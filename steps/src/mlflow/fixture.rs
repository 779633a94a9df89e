//! For tests (this crate's and the engine's end-to-end tests): registers a model in a real MLflow
//! through its REST API, the way a training pipeline would, and reads the registry back. Nothing in
//! the plugins uses it.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};

/// A model registered by [`register`].
#[derive(Debug, Clone)]
pub struct Seeded {
    pub model: String,
    /// The run behind each version: `runs[0]` is version 1's.
    pub runs: Vec<String>,
}

/// A model name no other test (or earlier test run against the same server) has used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Registers `model` with one version per entry of `f1`, in order: each from a run of its own (in an
/// experiment named after the model) that logged `f1_score`.
pub async fn register(url: &str, model: &str, f1: &[f64]) -> Result<Seeded, String> {
    let exp = post(url, "experiments/create", json!({ "name": model })).await?;
    let exp = text(&exp, "experiment_id")?;
    post(url, "registered-models/create", json!({ "name": model })).await?;
    let mut runs = Vec::new();
    for (i, score) in f1.iter().enumerate() {
        let run = post(
            url,
            "runs/create",
            json!({ "experiment_id": exp, "start_time": 0, "run_name": format!("v{}", i + 1) }),
        )
        .await?;
        let run_id = text(&run["run"]["info"], "run_id")?;
        post(
            url,
            "runs/log-metric",
            json!({ "run_id": run_id, "key": "f1_score", "value": score, "timestamp": 0, "step": 0 }),
        )
        .await?;
        post(
            url,
            "model-versions/create",
            json!({ "name": model, "source": format!("runs:/{run_id}/model"), "run_id": run_id }),
        )
        .await?;
        runs.push(run_id);
    }
    Ok(Seeded {
        model: model.to_string(),
        runs,
    })
}

/// Moves `version` of `model` to `stage`, archiving what was there.
pub async fn transition(url: &str, model: &str, version: u64, stage: &str) -> Result<(), String> {
    post(
        url,
        "model-versions/transition-stage",
        json!({ "name": model, "version": version.to_string(), "stage": stage,
                "archive_existing_versions": true }),
    )
    .await
    .map(drop)
}

/// Points `alias` of `model` at `version`.
pub async fn set_alias(url: &str, model: &str, alias: &str, version: u64) -> Result<(), String> {
    post(
        url,
        "registered-models/alias",
        json!({ "name": model, "alias": alias, "version": version.to_string() }),
    )
    .await
    .map(drop)
}

/// Deletes `version` of `model` (MLflow's DELETE takes a JSON body).
pub async fn delete_version(url: &str, model: &str, version: u64) -> Result<(), String> {
    let req = client()?
        .delete(endpoint_url(url, "model-versions/delete"))
        .json(&json!({ "name": model, "version": version.to_string() }));
    reply(req, "model-versions/delete").await.map(drop)
}

/// The stage of each version, in version order: `[(1, "Archived"), (2, "Production")]`.
pub async fn stages(url: &str, model: &str) -> Result<Vec<(u64, String)>, String> {
    let filter = format!("name = '{model}'");
    let a = get(url, "model-versions/search", &[("filter", &filter)]).await?;
    let mut out = Vec::new();
    for v in a["model_versions"].as_array().cloned().unwrap_or_default() {
        let n = text(&v, "version")?
            .parse()
            .map_err(|e| format!("version of {v}: {e}"))?;
        out.push((n, text(&v, "current_stage")?));
    }
    out.sort();
    Ok(out)
}

/// The version `alias` points at, `None` when it is not set.
pub async fn alias(url: &str, model: &str, alias: &str) -> Result<Option<u64>, String> {
    let a = get(url, "registered-models/get", &[("name", model)]).await?;
    let found = a["registered_model"]["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["alias"] == alias);
    match found {
        None => Ok(None),
        Some(x) => text(x, "version")?
            .parse()
            .map(Some)
            .map_err(|e| format!("alias {x}: {e}")),
    }
}

pub async fn post(url: &str, endpoint: &str, body: Value) -> Result<Value, String> {
    let req = client()?.post(endpoint_url(url, endpoint)).json(&body);
    reply(req, endpoint).await
}

pub async fn get(url: &str, endpoint: &str, query: &[(&str, &str)]) -> Result<Value, String> {
    let mut at = reqwest::Url::parse(&endpoint_url(url, endpoint))
        .map_err(|e| format!("{endpoint}: {e}"))?;
    at.query_pairs_mut().extend_pairs(query);
    reply(client()?.get(at), endpoint).await
}

fn client() -> Result<reqwest::Client, String> {
    crate::web::client().map_err(|e| e.message)
}

fn endpoint_url(url: &str, endpoint: &str) -> String {
    format!("{}/api/2.0/mlflow/{endpoint}", url.trim_end_matches('/'))
}

async fn reply(req: reqwest::RequestBuilder, endpoint: &str) -> Result<Value, String> {
    let r = req.send().await.map_err(|e| format!("{endpoint}: {e}"))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| format!("{endpoint}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{endpoint} answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{endpoint}: {e}: {body}"))
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    v[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no `{key}` in {v}"))
}
