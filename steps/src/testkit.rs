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

/// The URL of a port on 127.0.0.1 where nothing listens: bound a moment ago and released.
pub fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    format!("http://127.0.0.1:{port}")
}

/// Reads an HTTP request's head (up to the blank line) and returns it; `None` when the peer closed
/// the connection first.
fn read_head(stream: &std::net::TcpStream) -> Option<String> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" => return Some(head),
            Ok(_) => head.push_str(&line),
        }
    }
}

/// A server on 127.0.0.1 that answers every request with the raw HTTP `response` and closes the
/// connection; each request's head is sent to the receiver. Failure injection (a crashed backend,
/// a proxy's error page), not a stand-in for a real server.
pub fn canned_server(response: String) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some(head) = read_head(&stream) {
                let _ = stream.write_all(response.as_bytes());
                if tx.send(head).is_err() {
                    return;
                }
            }
        }
    });
    (url, rx)
}

/// A raw HTTP response with this status line, content type and body.
pub fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A server on 127.0.0.1 that accepts connections, reads the request and never answers. The
/// receiver gets the request's head, then `"closed"` when the client hangs up: how a test sees that
/// a cancelled call left nothing open.
pub fn silent_server() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Some(head) = read_head(&stream) else {
                    return;
                };
                let _ = tx.send(head);
                // Blocks until the client closes its end (read returns 0) or resets it.
                let mut buf = [0u8; 512];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send("closed".to_string());
            });
        }
    });
    (url, rx)
}

/// A TCP proxy on 127.0.0.1 to `target` (`host:port`) that counts the connections it accepts: how a
/// test measures connection reuse for real.
pub struct CountingProxy {
    pub url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    pub fn start(target: &str) -> CountingProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    pipe(client, s2);
                    pipe(server, c2);
                }
            }
        });
        CountingProxy { url, accepted }
    }

    /// How many TCP connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
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
