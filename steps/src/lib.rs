//! Step plugins for `runbook`.
//!
//! Each plugin is one file: a typed input (`serde`, `deny_unknown_fields`), the declared [`Field`]s that
//! the engine's validator checks a runbook's `with:` against before anything runs, a side-effect class,
//! and the behaviour. This crate is a leaf: it knows nothing of the DAG, the journal or the database.
//!
//! `flow.branch`, `flow.assert`, `flow.wait_until` and `flow.sleep` are declared here (so validation and
//! the reference docs treat them like every other plugin) but executed by the engine, because they
//! evaluate conditions over the run's state or keep durable deadlines.

pub mod alertmanager;
pub mod connection;
pub mod context;
pub mod duration;
pub mod flow;
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod mlflow;
#[cfg(feature = "mongodb")]
pub mod mongodb;
pub mod notify;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod schema;
pub mod shell;
pub mod testkit;
pub mod web;

use std::future::Future;
use std::pin::Pin;

pub use context::{OutputSink, StepContext};
pub use duration::parse_duration;
pub use registry::{Builtin, Duplicate, FAMILIES, Family, NotInBuild, Registry, Runner};
pub use schema::{Field, FieldType};

/// What repeating a step may do. The engine uses it for crash recovery and for how much durability to
/// spend before the step acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideEffect {
    /// No side effect; safe to repeat.
    Read,
    /// A side effect with the same result if repeated.
    Idempotent,
    /// Repeating may do harm or twice the work.
    Unsafe,
}

impl SideEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            SideEffect::Read => "read",
            SideEffect::Idempotent => "idempotent",
            SideEffect::Unsafe => "unsafe",
        }
    }

    pub fn parse(s: &str) -> Option<SideEffect> {
        match s {
            "read" => Some(SideEffect::Read),
            "idempotent" => Some(SideEffect::Idempotent),
            "unsafe" => Some(SideEffect::Unsafe),
            _ => None,
        }
    }
}

/// Why a step failed, in the terms a runbook's `retry.on` list uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The rendered input does not fit the plugin (never retried).
    Input,
    /// The step ran past its `timeout`.
    Timeout,
    /// Could not reach the other side (DNS, refused connection, TLS, broken transfer).
    Connect,
    /// The other side answered with a status the step did not expect (HTTP status, exit code).
    Status,
    /// The answer could not be parsed (e.g. JSON was asked for and not given).
    Parse,
    /// A `flow.assert` or `flow.wait_until` condition did not hold, or a requirement a step stated
    /// (a query's `require_result`).
    Condition,
    /// An approval was refused or could not be asked.
    Approval,
    /// The run was cancelled while the step ran (`runbook cancel`, the HTTP API): the engine stopped
    /// it. Never retried: a cancelled run starts nothing more.
    Cancelled,
    /// Anything else the plugin reports.
    Other,
}

impl ErrorKind {
    pub const ALL: &'static [(&'static str, ErrorKind)] = &[
        ("input", ErrorKind::Input),
        ("timeout", ErrorKind::Timeout),
        ("connect", ErrorKind::Connect),
        ("status", ErrorKind::Status),
        ("parse", ErrorKind::Parse),
        ("condition", ErrorKind::Condition),
        ("approval", ErrorKind::Approval),
        ("cancelled", ErrorKind::Cancelled),
        ("other", ErrorKind::Other),
    ];

    pub fn as_str(self) -> &'static str {
        ErrorKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("other", |(n, _)| n)
    }

    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, k)| *k)
    }

    /// The kinds a runbook's `retry.on` may list: all but `cancelled`, which ends the run.
    pub fn retry_kinds() -> impl Iterator<Item = (&'static str, ErrorKind)> {
        ErrorKind::ALL
            .iter()
            .copied()
            .filter(|(_, k)| *k != ErrorKind::Cancelled)
    }

    /// Whether a step failing this way is retried when the runbook's `retry.on` does not say.
    pub fn retryable_by_default(self) -> bool {
        !matches!(
            self,
            ErrorKind::Input | ErrorKind::Approval | ErrorKind::Condition | ErrorKind::Cancelled
        )
    }
}

/// A step's failure: a kind the engine can reason about, a message for people, and whatever partial
/// result the plugin had (an HTTP body, a process's stderr) so the journal keeps it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError {
            kind,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> StepError {
        self.detail = Some(detail);
        self
    }

    /// Turns a serde error on the rendered input into an `input` failure.
    pub fn input(err: impl std::fmt::Display) -> StepError {
        StepError::new(ErrorKind::Input, format!("invalid input: {err}"))
    }
}

pub type StepFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, StepError>> + Send + 'a>>;

/// Static description of a plugin: what it is called, what it takes, what it returns, what it risks.
#[derive(Debug)]
pub struct PluginInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Side-effect class when the input does not change it (see [`Plugin::class_for`]).
    pub class: SideEffect,
    pub fields: &'static [Field],
    /// Groups of fields of which exactly one must be given (e.g. `argv` or `shell`).
    pub exactly_one_of: &'static [&'static [&'static str]],
    /// The shape of `result`, for the reference docs.
    pub output: &'static str,
    /// A `with:` block that validates, for the reference docs and the schema self-test.
    pub example: &'static str,
    /// The kind of connection this plugin talks through (see [`connection::KINDS`]), if any: a step
    /// names one with `connection:`, or gets its family's default.
    pub connection: Option<&'static str>,
}

/// A plugin the engine runs as an ordinary step.
pub trait Plugin: Send + Sync {
    fn info(&self) -> &'static PluginInfo;

    /// The class of this particular call; `http.request` is `read` for GET and `unsafe` for POST.
    fn class_for(&self, _input: &serde_json::Value) -> SideEffect {
        self.info().class
    }

    /// Runs the step with its rendered input. At its deadline the engine cancels `ctx.cancel` and,
    /// after a short grace, drops the future, so a plugin must leave nothing behind when dropped.
    fn run<'a>(&'a self, input: serde_json::Value, ctx: &'a StepContext) -> StepFuture<'a>;

    /// For `runbook plan`: the change this call would make, without making it, read from the live
    /// system where the plugin can (before -> after). `None` when the plugin cannot describe its
    /// changes; the plan then says so. The result is `{ summary: text, ... }` with whatever detail
    /// helps a reviewer. Only `idempotent` and `unsafe` calls are planned; `read` calls run.
    fn plan<'a>(
        &'a self,
        _input: serde_json::Value,
        _ctx: &'a StepContext,
    ) -> Option<StepFuture<'a>> {
        None
    }

    /// Deserializes `input` into the plugin's typed input without acting (usually [`check_as`]). The
    /// schema self-test calls it on every registered plugin to keep the declared fields and the
    /// typed input in agreement; the default fails, so a plugin that does not say cannot pass it.
    fn check_input(&self, _input: &serde_json::Value) -> Result<(), StepError> {
        Err(StepError::new(
            ErrorKind::Other,
            format!(
                "`{}` does not implement `Plugin::check_input`",
                self.info().name
            ),
        ))
    }
}

/// Whether `input` deserializes into `T`, as an `input` failure if not: a plugin's `check_input`.
pub fn check_as<T: serde::de::DeserializeOwned>(
    input: &serde_json::Value,
) -> Result<(), StepError> {
    T::deserialize(input).map(drop).map_err(StepError::input)
}

/// An error and its sources as one line, each message once, joined with `: `: client libraries put
/// the useful part ("Connection refused", a certificate problem) down the chain.
pub fn error_chain(top: String, source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts = vec![top];
    let mut source = source;
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// Installs the process-wide TLS provider (ring; no OpenSSL, no cmake). Call once at start; later calls
/// are no-ops.
pub fn init_tls() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
