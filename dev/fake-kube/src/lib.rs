//! A fake Kubernetes API server for tests: it speaks the real protocol (discovery, Status errors,
//! resourceVersions, the three patch types, watches, pod logs, WebSocket exec) over plain HTTP on
//! 127.0.0.1, for pods, deployments, configmaps, secrets, services, events, jobs, cronjobs and
//! namespaces, loaded from YAML manifests. kubectl and the `kube` crate use it through the
//! kubeconfig it writes. Every API request is kept in a log (`GET /_fake/requests`) so a test can see
//! exactly what a client sent. See `README.md` next to this crate.

pub mod discovery;
mod handlers;
pub mod manifest;
pub mod patch;
mod pods;
pub mod selector;
pub mod status;
pub mod store;
pub mod workload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use handlers::{Fault, Recorded};
pub use store::Store;

/// What the fake serves and how it behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manifest files, or directories whose `*.yaml`/`*.yml`/`*.json` files are read (sorted).
    pub manifests: Vec<PathBuf>,
    /// The namespace of objects that name none, and the kubeconfig's namespace.
    pub namespace: String,
    /// Where exec'd commands run.
    pub workdir: PathBuf,
    /// How long a deployment rollout takes unless the deployment says (`fake-kube/rollout-seconds`).
    pub rollout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            manifests: Vec::new(),
            namespace: "default".into(),
            workdir: std::env::temp_dir(),
            rollout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The shared state every request sees.
pub struct App {
    store: Mutex<Store>,
    config: Config,
    /// When the fake started: relative log timestamps count back from it.
    started: jiff::Timestamp,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
    rollouts: Mutex<HashMap<(String, String), u64>>,
    addr: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the fake down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn next_rollout(&self, ns: &str, name: &str) -> u64 {
        let mut r = lock(&self.rollouts);
        let id = r.entry((ns.into(), name.into())).or_insert(0);
        *id += 1;
        *id
    }

    fn rollout_is_current(&self, ns: &str, name: &str, id: u64) -> bool {
        lock(&self.rollouts).get(&(ns.into(), name.into())) == Some(&id)
    }
}

/// A request's query, in order, repeated keys kept (`command=a&command=b`).
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .and_then(|q| {
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
                    &format!("/?{q}").parse().ok()?,
                )
                .ok()
            })
            .map(|q| q.0)
            .unwrap_or_default();
        Query(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake; dropping it stops the server.
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

/// Loads the manifests and serves them on `listen` (port 0: any free port).
pub async fn start(config: Config, listen: SocketAddr) -> Result<Server, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let app = Arc::new(App {
        store: Mutex::new(Store::default()),
        started: jiff::Timestamp::now(),
        requests: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        rollouts: Mutex::new(HashMap::new()),
        addr,
        config,
    });
    manifest::load(&app)?;
    let router = handlers::router(Arc::clone(&app));
    let task = tokio::spawn(async move {
        // The listener only fails when the process is going down anyway.
        let _ = axum::serve(listener, router).await;
    });
    Ok(Server { addr, app, task })
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context is this server (plain HTTP, no credentials) and namespace.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url(), &self.app.config.namespace)
    }

    /// Every API request so far (not those to `/_fake/`), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.app.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.app.requests).clear();
    }

    /// Makes matching requests fail (see [`Fault`]).
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.app.faults).push(fault);
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn kubeconfig(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-kube\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake-kube\n  context:\n    cluster: fake-kube\n    namespace: {namespace}\n    user: fake-kube\n\
         current-context: fake-kube\nusers:\n- name: fake-kube\n  user: {{}}\npreferences: {{}}\n"
    )
}
