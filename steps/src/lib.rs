//! Step plugins for `runbook`.
//!
//! Each plugin is one file: a typed input (`serde`, `deny_unknown_fields`), the declared [`Field`]s that
//! the engine's validator checks a runbook's `with:` against before anything runs, a side-effect class,
//! and the behaviour. This crate is a leaf: it knows nothing of the DAG, the journal or the database.
//!
//! `flow.branch`, `flow.assert`, `flow.wait_until` and `flow.sleep` are declared here (so validation and
//! the reference docs treat them like every other plugin) but executed by the engine, because they
//! evaluate conditions over the run's state or keep durable deadlines.

pub mod connection;
pub mod context;
pub mod duration;
pub mod flow;
pub mod http;
pub mod schema;
pub mod shell;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use context::{OutputSink, StepContext};
pub use duration::parse_duration;
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
    /// A `flow.assert` or `flow.wait_until` condition did not hold.
    Condition,
    /// An approval was refused or could not be asked.
    Approval,
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

    /// Whether a step failing this way is retried when the runbook's `retry.on` does not say.
    pub fn retryable_by_default(self) -> bool {
        !matches!(
            self,
            ErrorKind::Input | ErrorKind::Approval | ErrorKind::Condition
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

    /// Runs the step with its rendered input. Deadlines are enforced by the engine (the future is
    /// dropped), so a plugin must leave nothing behind when dropped.
    fn run<'a>(&'a self, input: serde_json::Value, ctx: &'a StepContext) -> StepFuture<'a>;
}

/// The steps the engine executes itself, because they evaluate conditions over the run's state or
/// keep durable deadlines. The engine matches on this instead of comparing `uses:` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Branch,
    Assert,
    Sleep,
    WaitUntil,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Branch,
        Builtin::Assert,
        Builtin::Sleep,
        Builtin::WaitUntil,
    ];

    pub fn info(self) -> &'static PluginInfo {
        match self {
            Builtin::Branch => &flow::BRANCH,
            Builtin::Assert => &flow::ASSERT,
            Builtin::Sleep => &flow::SLEEP,
            Builtin::WaitUntil => &flow::WAIT_UNTIL,
        }
    }

    /// Its `uses:` name, e.g. `flow.branch`.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

/// How the engine runs a step of a given `uses:`.
#[derive(Clone)]
pub enum Runner {
    /// Shared, so a server can hand the same plugin (and its connection pools) to many drivers.
    Plugin(Arc<dyn Plugin>),
    /// Executed by the engine itself.
    Builtin(Builtin),
}

impl Runner {
    pub fn info(&self) -> &'static PluginInfo {
        match self {
            Runner::Plugin(p) => p.info(),
            Runner::Builtin(b) => b.info(),
        }
    }

    pub fn builtin(&self) -> Option<Builtin> {
        match self {
            Runner::Plugin(_) => None,
            Runner::Builtin(b) => Some(*b),
        }
    }
}

/// Two plugins were registered under one `uses:` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a plugin named `{0}` is registered already")]
pub struct Duplicate(pub &'static str);

/// Every plugin this build knows, by `uses:` name.
#[derive(Clone)]
pub struct Registry {
    entries: Vec<Runner>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let mut r = Registry {
            entries: Vec::new(),
        };
        let plugins: [Arc<dyn Plugin>; 3] = [
            Arc::new(shell::ShellRun),
            Arc::new(http::HttpRequest::default()),
            Arc::new(flow::Noop),
        ];
        for p in plugins {
            // The built-in names are distinct; the registry tests hold them to it.
            let _ = r.register(p);
        }
        r.entries.extend(Builtin::ALL.map(Runner::Builtin));
        r
    }

    /// Adds a plugin; its name must not be taken.
    pub fn register(&mut self, plugin: Arc<dyn Plugin>) -> Result<(), Duplicate> {
        let name = plugin.info().name;
        if self.get(name).is_some() {
            return Err(Duplicate(name));
        }
        self.entries.push(Runner::Plugin(plugin));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Runner> {
        self.entries.iter().find(|r| r.info().name == name)
    }

    /// The ordinary plugin of that name, shared (built-ins have none: the engine runs them).
    pub fn plugin(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        match self.get(name)? {
            Runner::Plugin(p) => Some(Arc::clone(p)),
            Runner::Builtin(_) => None,
        }
    }

    /// The ordinary plugins, in registration order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.entries.iter().filter_map(|r| match r {
            Runner::Plugin(p) => Some(p),
            Runner::Builtin(_) => None,
        })
    }

    /// The built-in a `uses:` name stands for, if it is one.
    pub fn builtin_of(&self, name: &str) -> Option<Builtin> {
        self.get(name).and_then(Runner::builtin)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|r| r.info().name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Runner> {
        self.entries.iter()
    }
}

/// Installs the process-wide TLS provider (ring; no OpenSSL, no cmake). Call once at start; later calls
/// are no-ops.
pub fn init_tls() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn builtin_names_are_distinct_and_all_there() {
        let r = Registry::builtin();
        let names: Vec<&str> = r.names().collect();
        let distinct: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), distinct.len(), "{names:?}");
        for n in [
            "shell.run",
            "http.request",
            "flow.noop",
            "flow.branch",
            "flow.assert",
            "flow.sleep",
            "flow.wait_until",
        ] {
            assert!(r.get(n).is_some(), "{n} missing");
        }
        assert!(r.get("shell").is_none());
    }

    #[test]
    fn every_builtin_is_registered_under_its_own_name() {
        let r = Registry::builtin();
        for b in Builtin::ALL {
            assert_eq!(r.builtin_of(b.name()), Some(b), "{}", b.name());
            assert!(b.name().starts_with("flow."), "{}", b.name());
        }
        assert_eq!(
            r.builtin_of("flow.noop"),
            None,
            "noop is an ordinary plugin"
        );
        assert_eq!(r.builtin_of("shell.run"), None);
        assert_eq!(r.builtin_of("flow.nope"), None);
        assert_eq!(
            r.iter().filter_map(Runner::builtin).count(),
            Builtin::ALL.len()
        );
    }

    #[test]
    fn a_taken_name_is_refused_and_the_first_plugin_stays() {
        let mut r = Registry::builtin();
        let before = r.names().count();
        assert_eq!(
            r.register(Arc::new(flow::Noop)),
            Err(Duplicate("flow.noop"))
        );
        assert_eq!(r.names().count(), before);
    }

    #[test]
    fn plugins_are_shared_not_copied() {
        let r = Registry::builtin();
        let a = r.plugin("shell.run").expect("registered");
        let b = r.plugin("shell.run").expect("registered");
        assert!(Arc::ptr_eq(&a, &b));
        // Two registries (two drivers) can hold the same plugin.
        let mut other = Registry {
            entries: Vec::new(),
        };
        other.register(Arc::clone(&a)).expect("free name");
        assert!(Arc::ptr_eq(
            &other.plugin("shell.run").expect("registered"),
            &a
        ));
        assert!(
            r.plugin("flow.branch").is_none(),
            "built-ins run in the engine"
        );
        assert_eq!(r.plugins().count(), 3);
    }
}
