//! For tests (this crate's and the engine's end-to-end tests): a namespace of its own on the fake
//! API server `dev/services` runs (`dev/fake-kube`), holding a copy of sample objects, so that tests
//! running at once never see each other's objects, requests or injected faults. Nothing in the
//! plugins uses it.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};

/// A namespace on the fake, and how to reach the fake.
pub struct Namespace {
    pub name: String,
    kubeconfig: String,
    url: String,
    http: reqwest::Client,
}

impl Namespace {
    /// Creates a namespace named after `prefix` (and this process, and the time) holding the objects
    /// of `sample` (YAML documents, as `dev/kube/sample.yaml`; their namespace is replaced, a
    /// `Namespace` document is skipped), on the server of the kubeconfig at `kubeconfig`.
    pub async fn create(kubeconfig: &str, prefix: &str, sample: &str) -> Result<Namespace, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
        let url = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .ok_or_else(|| format!("{kubeconfig}: no cluster server"))?
            .trim_end_matches('/')
            .to_string();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "{prefix}-{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Namespace {
            name,
            kubeconfig: kubeconfig.to_string(),
            url,
            http: crate::web::client().map_err(|e| e.message)?,
        };
        ns.post("/api/v1/namespaces", json!({"metadata": {"name": ns.name}}))
            .await?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(sample).map_err(|e| e.to_string())?;
        for mut doc in docs {
            let (Some(api_version), Some(kind)) =
                (doc["apiVersion"].as_str(), doc["kind"].as_str())
            else {
                continue;
            };
            if kind == "Namespace" {
                continue;
            }
            let base = if api_version.contains('/') {
                format!("/apis/{api_version}")
            } else {
                format!("/api/{api_version}")
            };
            // The sample's kinds all make their plural with an `s`.
            let path = format!(
                "{base}/namespaces/{}/{}s",
                ns.name,
                kind.to_ascii_lowercase()
            );
            doc["metadata"]["namespace"] = json!(ns.name);
            ns.post(&path, doc).await?;
        }
        Ok(ns)
    }

    /// POSTs `body` to `path` of the fake, which must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Result<(), String> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {path}: {status}: {text}"))
        }
    }

    /// The next `method` request to `path` (`NS` stands for this namespace) fails with `code` and
    /// `message`, once.
    pub async fn fault(
        &self,
        path: &str,
        method: &str,
        code: u16,
        message: &str,
    ) -> Result<(), String> {
        let fault = json!({"path": path.replace("NS", &self.name), "method": method, "code": code,
                           "message": message, "times": 1});
        self.post("/_fake/faults", fault).await
    }

    /// The API requests that named this namespace, oldest first, as the fake logs them
    /// (`{method, path, query, content_type, accept, user_agent, body}`).
    pub async fn requests(&self) -> Result<Vec<Value>, String> {
        let all: Vec<Value> = self.get("/_fake/requests").await?;
        let mark = format!("/namespaces/{}/", self.name);
        Ok(all
            .into_iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(&mark)))
            .collect())
    }

    /// The object at `path` (`NS` stands for this namespace), as the API sends it.
    pub async fn object(&self, path: &str) -> Result<Value, String> {
        self.get(&path.replace("NS", &self.name)).await
    }

    /// A `kubernetes` connection's fields for this namespace: the fake's kubeconfig and it.
    pub fn connection_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kubeconfig".into(), json!(self.kubeconfig));
        m.insert("namespace".into(), json!(self.name));
        m
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }
}
