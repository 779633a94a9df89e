//! For tests of plugins (this crate's, and a plugin family's): a context whose progress line and
//! output the test reads, a call that turns a hang into a failure, and `ok`/`err` that say what
//! went wrong. Nothing in the engine uses it.

use crate::connection::Connection;
use crate::{Plugin, StepContext, StepError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a call may take before the test fails: a guard against a deadlock hanging the suite,
/// not a measure of anything.
const HANG: Duration = Duration::from_secs(60);

/// A step's context as a test sees it.
pub struct Harness {
    pub ctx: StepContext,
    /// The step's progress line, subscribed before the call so no update is missed.
    pub progress: watch::Receiver<String>,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new("step")
    }
}

impl Harness {
    pub fn new(step_id: &str) -> Harness {
        let ctx = StepContext::new("test-run", step_id);
        let progress = ctx.watch_progress();
        Harness { ctx, progress }
    }

    /// Gives the step a connection, as the engine does for `connection:`.
    pub fn with_connection(mut self, connection: Connection) -> Harness {
        self.ctx.connection = Some(Arc::new(connection));
        self
    }

    /// Runs `plugin` with `input` in this context.
    ///
    /// # Panics
    /// When the call has not returned within a minute: the plugin hangs.
    pub async fn call(&self, plugin: &dyn Plugin, input: Value) -> Result<Value, StepError> {
        let name = plugin.info().name;
        tokio::time::timeout(HANG, plugin.run(input, &self.ctx))
            .await
            .unwrap_or_else(|_| panic!("{name} did not return within {HANG:?}"))
    }

    /// What the step wrote to its output sink, if anything.
    pub fn output(&self) -> Option<String> {
        self.ctx.output.snapshot()
    }
}

/// Runs `plugin` with `input` in a fresh context.
pub async fn call(plugin: &dyn Plugin, input: Value) -> Result<Value, StepError> {
    Harness::default().call(plugin, input).await
}

/// The result of a call that must succeed.
///
/// # Panics
/// When it failed, with the failure's kind and message.
#[track_caller]
pub fn ok(result: Result<Value, StepError>) -> Value {
    match result {
        Ok(v) => v,
        Err(e) => panic!("step failed: {:?}: {}", e.kind, e.message),
    }
}

/// The failure of a call that must fail.
///
/// # Panics
/// When it succeeded, with its result.
#[track_caller]
pub fn err(result: Result<Value, StepError>) -> StepError {
    match result {
        Ok(v) => panic!("step succeeded unexpectedly: {v}"),
        Err(e) => e,
    }
}

/// The address of a real server that `dev/services` started, from the environment variable `var` (its
/// env file lists them). Unset: in CI (`CI` set) the test must not pass by skipping, so this panics;
/// elsewhere it says why and the test returns early.
///
/// # Panics
/// When `var` is unset and `CI` is set.
#[track_caller]
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let why = format!(
                "`{var}` is not set: run `dev/services start` and source its env file (dev/test.sh does both)"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A text no other test, run or process uses: how a test finds its own message among those a shared
/// sink (the webhook receiver, the SMTP Maildir) recorded.
pub fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{what}-{}-{nanos:x}", std::process::id())
}

/// The text of the first file in `dir` for which `wanted` holds, polled until one appears (a sink
/// may write it after answering).
///
/// # Panics
/// When none has appeared within 10 seconds.
#[track_caller]
pub fn file_in(dir: &std::path::Path, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path())
                && wanted(&text)
            {
                return text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no file in {} has what the test waits for",
            dir.display()
        );
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Noop;
    use crate::{ErrorKind, PluginInfo, StepFuture};
    use serde_json::json;

    /// Reports progress and output, then fails: what the harness must let a test see.
    struct Chatty;

    impl Plugin for Chatty {
        fn info(&self) -> &'static PluginInfo {
            Noop.info()
        }

        fn run<'a>(&'a self, _: Value, ctx: &'a StepContext) -> StepFuture<'a> {
            Box::pin(async move {
                ctx.progress("half way");
                ctx.output.write(b"some output");
                let base = ctx.connection("http")?.str("base_url").unwrap_or("");
                Err(StepError::new(
                    ErrorKind::Status,
                    format!("{} says no", base),
                ))
            })
        }
    }

    #[tokio::test]
    async fn the_harness_shows_progress_output_and_the_connection() {
        let kind = crate::connection::kind("http").expect("a declared kind");
        let fields = [("base_url".to_string(), json!("http://x"))];
        let conn = Connection::new("api", kind, fields.into_iter().collect());
        let mut h = Harness::new("s").with_connection(conn);
        let e = err(h.call(&Chatty, json!({})).await);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Status, "http://x says no")
        );
        assert!(h.progress.has_changed().expect("sender alive"));
        assert_eq!(*h.progress.borrow_and_update(), "half way");
        assert_eq!(h.output().as_deref(), Some("some output"));
        assert_eq!(h.ctx.step_id, "s");
    }

    #[tokio::test]
    async fn ok_and_err_hand_back_what_the_call_gave() {
        assert_eq!(
            ok(call(&Noop, json!({ "value": 3 })).await),
            json!({ "value": 3 })
        );
        let e = err(call(&Chatty, json!({})).await);
        assert_eq!(
            e.kind,
            ErrorKind::Input,
            "no connection given: {}",
            e.message
        );
    }

    #[test]
    #[should_panic(expected = "step succeeded unexpectedly")]
    fn err_of_a_success_fails_the_test() {
        err(Ok(json!(1)));
    }

    #[test]
    #[should_panic(expected = "step failed: Parse: bad")]
    fn ok_of_a_failure_fails_the_test() {
        ok(Err(StepError::new(ErrorKind::Parse, "bad")));
    }
}
