//! Typed connections: the systems a run talks to (`kind: prometheus | kubernetes | ...`), each with
//! declared fields, validated like a plugin's `with:`. A run resolves its connections once (runbook,
//! profile, environment), and every step that uses one shares it and the clients built from it.
//!
//! A secret is never a value here: a field written `secret("NAME")` stays a reference, resolved by
//! the plugin when it calls [`Connection::secret`], so it never enters a rendered input, an event or a
//! printout.

use crate::schema::{Field, FieldType};
use crate::{ErrorKind, StepError};
use serde_json::{Map, Value};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A kind of connection and the fields it takes.
#[derive(Debug)]
pub struct ConnectionKind {
    pub name: &'static str,
    pub summary: &'static str,
    pub fields: &'static [Field],
}

const URL: FieldType = FieldType::String;

/// Every kind this build knows (a plugin family names one).
pub static KINDS: &[ConnectionKind] = &[
    ConnectionKind {
        name: "http",
        summary: "Any HTTP service: a base URL that relative `url`s are joined to, headers sent with every request.",
        fields: &[
            Field::opt(
                "base_url",
                URL,
                "Joined with a relative `url` of an `http.request` step.",
            ),
            Field::opt(
                "headers",
                FieldType::Map(&FieldType::String),
                "Sent with every request (a step's own headers win).",
            ),
            Field::opt(
                "bearer_token",
                FieldType::String,
                "Sent as `Authorization: Bearer ...`; write `secret(\"NAME\")`.",
            )
            .secret(),
            Field::opt(
                "basic_auth",
                FieldType::Object(BASIC_AUTH),
                "HTTP basic authentication, instead of `bearer_token`.",
            ),
        ],
    },
    ConnectionKind {
        name: "prometheus",
        summary: "A Prometheus server (HTTP API v1).",
        fields: &[
            Field::req(
                "url",
                URL,
                "Base URL, e.g. `http://prometheus.monitoring:9090`.",
            ),
            Field::opt(
                "bearer_token",
                FieldType::String,
                "Write `secret(\"NAME\")`.",
            )
            .secret(),
        ],
    },
    ConnectionKind {
        name: "alertmanager",
        summary: "An Alertmanager (API v2).",
        fields: &[
            Field::req(
                "url",
                URL,
                "Base URL, e.g. `http://alertmanager.monitoring:9093`.",
            ),
            Field::opt(
                "bearer_token",
                FieldType::String,
                "Write `secret(\"NAME\")`.",
            )
            .secret(),
        ],
    },
    ConnectionKind {
        name: "mlflow",
        summary: "An MLflow tracking server and model registry (REST API 2.0).",
        fields: &[
            Field::req("url", URL, "Base URL of the tracking server."),
            Field::opt("token", FieldType::String, "Write `secret(\"NAME\")`.").secret(),
        ],
    },
    ConnectionKind {
        name: "kubernetes",
        summary: "A Kubernetes API server, through a kubeconfig context (or, with no kubeconfig, the service account of the pod the engine runs in).",
        fields: &[
            Field::opt(
                "context",
                FieldType::String,
                "The kubeconfig context (default: the current one).",
            ),
            Field::opt(
                "namespace",
                FieldType::String,
                "The default namespace of the steps that use it (default: the context's, else `default`).",
            ),
            Field::opt(
                "kubeconfig",
                FieldType::String,
                "Path of the kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the pod's service account).",
            ),
        ],
    },
    ConnectionKind {
        name: "mongodb",
        summary: "A MongoDB server or replica set.",
        fields: &[
            Field::req(
                "uri",
                FieldType::String,
                "Connection string; with credentials, write `secret(\"NAME\")`.",
            ),
            Field::opt("database", FieldType::String, "The default database."),
        ],
    },
    ConnectionKind {
        name: "smtp",
        summary: "An SMTP server for `notify.email`.",
        fields: &[
            Field::req("host", FieldType::String, "Host name."),
            Field::opt(
                "port",
                FieldType::Integer,
                "Default 587 with `starttls`, 465 with `tls`, 25 with `none`.",
            ),
            Field::opt(
                "tls",
                FieldType::Enum(&["starttls", "tls", "none"]),
                "`starttls` (the default: plain, then upgraded; refused if the server cannot), `tls` (TLS from the start), or `none` (plain text: a local relay).",
            ),
            Field::opt(
                "username",
                FieldType::String,
                "Login name (AUTH PLAIN or LOGIN).",
            ),
            Field::opt("password", FieldType::String, "Write `secret(\"NAME\")`.").secret(),
            Field::req(
                "from",
                FieldType::String,
                "Sender address: `ops@example.com` or `Runbook <ops@example.com>`.",
            ),
        ],
    },
    ConnectionKind {
        name: "slack",
        summary: "A Slack incoming webhook.",
        fields: &[Field::req(
            "webhook_url",
            FieldType::String,
            "The webhook URL: it is a credential, write `secret(\"NAME\")`.",
        )
        .secret()],
    },
];

/// The fields of an `http` connection's `basic_auth`.
static BASIC_AUTH: &[Field] = &[
    Field::req("username", FieldType::String, "Login name."),
    Field::req("password", FieldType::String, "Write `secret(\"NAME\")`.").secret(),
];

pub fn kind(name: &str) -> Option<&'static ConnectionKind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The name of the secret a field value refers to: `secret("NAME")` (or with single quotes).
pub fn secret_ref(value: &str) -> Option<&str> {
    let inner = value
        .trim()
        .strip_prefix("secret(")?
        .strip_suffix(')')?
        .trim();
    let name = inner
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    ok.then_some(name)
}

/// Reads secret `name` now: the environment variable `NAME`, else the file named by `NAME_FILE`, else
/// the file `NAME` in `RUNBOOK_SECRETS_DIR` (a mounted secrets volume). A trailing newline of a file
/// is dropped.
pub fn read_secret(name: &str) -> Result<String, StepError> {
    read_secret_from(name, |k| std::env::var(k).ok())
}

fn read_secret_from(name: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, StepError> {
    if let Some(v) = env(name) {
        return Ok(v);
    }
    let file = env(&format!("{name}_FILE"))
        .map(std::path::PathBuf::from)
        .or_else(|| env("RUNBOOK_SECRETS_DIR").map(|d| std::path::Path::new(&d).join(name)));
    if let Some(path) = file {
        return match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.strip_suffix('\n').unwrap_or(&s).to_string()),
            Err(e) => Err(StepError::new(
                ErrorKind::Input,
                format!("secret `{name}`: cannot read {}: {e}", path.display()),
            )),
        };
    }
    Err(StepError::new(
        ErrorKind::Input,
        format!(
            "secret `{name}` is not set: set the environment variable {name}, or {name}_FILE to a file holding it, or put a file {name} in RUNBOOK_SECRETS_DIR"
        ),
    ))
}

type Clients = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// A connection as a run resolved it. Plain fields are values; secret fields stay references until
/// a plugin asks for them. Clients built from it are kept for the run's other steps.
pub struct Connection {
    pub name: String,
    pub kind: &'static ConnectionKind,
    /// Every field as resolved; a secret field holds its `secret("NAME")` text.
    fields: Map<String, Value>,
    clients: Mutex<Clients>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("kind", &self.kind.name)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        name: &str,
        kind: &'static ConnectionKind,
        fields: Map<String, Value>,
    ) -> Connection {
        Connection {
            name: name.to_string(),
            kind,
            fields,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A plain field's value. A secret field reads as its reference; ask [`Connection::secret`].
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }

    /// A field that may be a secret, read now: a `secret("NAME")` reference is resolved (see
    /// [`read_secret`]); a plain string is returned as it is.
    pub fn secret(&self, field: &str) -> Result<Option<String>, StepError> {
        self.str(field).map(|v| self.reveal(v)).transpose()
    }

    /// A value of this connection that may be a `secret("NAME")` reference (a nested field, such as
    /// `basic_auth.password`), read now.
    pub fn reveal(&self, value: &str) -> Result<String, StepError> {
        match secret_ref(value) {
            Some(name) => read_secret(name)
                .map_err(|e| StepError::new(e.kind, format!("connection `{}`: {e}", self.name))),
            None => Ok(value.to_string()),
        }
    }

    /// An `input` failure about this connection, e.g. a field of the wrong shape.
    pub fn error(&self, message: impl std::fmt::Display) -> StepError {
        StepError::new(
            ErrorKind::Input,
            format!("connection `{}`: {message}", self.name),
        )
    }

    /// The fields, as they may be shown and journaled (secrets as their references).
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The client of type `T` for this connection, built by `make` the first time a step of the run
    /// asks, and shared by every later one.
    pub fn client<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce(&Connection) -> Result<T, StepError>,
    ) -> Result<Arc<T>, StepError> {
        let id = TypeId::of::<T>();
        let kept = self.lock().get(&id).cloned();
        if let Some(Ok(t)) = kept.map(|c| c.downcast::<T>()) {
            return Ok(t);
        }
        // Built outside the lock: a client may take time to make, and two steps racing to make the
        // first one only costs a spare client.
        let made: Arc<T> = Arc::new(make(self)?);
        let mut clients = self.lock();
        let kept = clients
            .entry(id)
            .or_insert_with(|| made.clone() as Arc<dyn Any + Send + Sync>)
            .clone();
        Ok(kept.downcast::<T>().unwrap_or(made))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        // The map only ever holds complete entries; a panic elsewhere cannot leave it half-written.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_are_recognised_and_nothing_else() {
        assert_eq!(
            secret_ref("secret(\"SMTP_PASSWORD\")"),
            Some("SMTP_PASSWORD")
        );
        assert_eq!(secret_ref(" secret( 'a.b-c' ) "), Some("a.b-c"));
        assert_eq!(secret_ref("secret(NAME)"), None);
        assert_eq!(secret_ref("secret(\"\")"), None);
        assert_eq!(secret_ref("secret(\"a b\")"), None);
        assert_eq!(secret_ref("hunter2"), None);
    }

    #[test]
    fn a_secret_comes_from_the_environment_a_named_file_or_the_secrets_dir() {
        let dir = std::env::temp_dir().join(format!("runbook-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("PW"), "from-dir\n").expect("write");
        std::fs::write(dir.join("other"), "from-file\n").expect("write");
        let d = dir.to_string_lossy().into_owned();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let val = |e| read_secret_from("PW", e).map_err(|e: StepError| e.message);
        assert_eq!(val(env(vec![("PW", "plain".into())])), Ok("plain".into()));
        let named = format!("{d}/other");
        assert_eq!(val(env(vec![("PW_FILE", named)])), Ok("from-file".into()));
        assert_eq!(
            val(env(vec![("RUNBOOK_SECRETS_DIR", d.clone())])),
            Ok("from-dir".into())
        );
        let missing = val(env(vec![])).expect_err("not set");
        assert!(
            missing.contains("PW_FILE") && missing.contains("RUNBOOK_SECRETS_DIR"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_connection_shows_a_secret_as_its_reference() {
        let mut fields = Map::new();
        fields.insert(
            "password".into(),
            Value::String("secret(\"SMTP_PW\")".into()),
        );
        fields.insert("host".into(), Value::String("mail".into()));
        let c = Connection::new("mail", kind("smtp").expect("kind"), fields);
        assert_eq!(c.secret("host").expect("plain"), Some("mail".into()));
        assert_eq!(c.str("password"), Some("secret(\"SMTP_PW\")"));
        assert!(!format!("{c:?}").contains("hunter"));
    }

    #[test]
    fn a_client_is_built_once_and_shared() {
        let c = Connection::new("p", kind("prometheus").expect("kind"), Map::new());
        let mut made = 0;
        let a = c
            .client(|_| {
                made += 1;
                Ok(String::from("client"))
            })
            .expect("made");
        let b = c.client::<String>(|_| panic!("built twice")).expect("kept");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(made, 1);
    }
}
