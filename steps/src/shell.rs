//! `shell.run`: run a program (argv, no shell) or, when asked for explicitly, a `sh -c` command line.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static INFO: PluginInfo = PluginInfo {
    name: "shell.run",
    summary: "Run a program and capture its exit code, stdout and stderr. `argv` runs the program \
              directly (no shell, no quoting surprises); `shell` runs a command line with `/bin/sh -c` \
              and must be asked for by name. Unsafe unless the step says otherwise (`side_effect:`).",
    class: SideEffect::Unsafe,
    fields: &[
        Field::opt(
            "argv",
            FieldType::List(&FieldType::String),
            "Program and arguments, e.g. `[kubectl, get, pods]`. Looked up on PATH.",
        ),
        Field::opt(
            "shell",
            FieldType::String,
            "A command line for `/bin/sh -c`, when you need pipes, globs or redirections.",
        ),
        Field::opt(
            "env",
            FieldType::Map(&FieldType::String),
            "Extra environment variables (added to the engine's environment).",
        ),
        Field::opt("cwd", FieldType::String, "Working directory."),
        Field::opt(
            "stdin",
            FieldType::String,
            "Text written to the program's stdin.",
        ),
        Field::opt(
            "parse_json",
            FieldType::Bool,
            "Parse stdout as JSON into `result.json` (a parse failure fails the step, kind `parse`).",
        ),
        Field::opt(
            "ok_codes",
            FieldType::List(&FieldType::Integer),
            "Exit codes that count as success (default `[0]`); others fail the step, kind `status`.",
        ),
    ],
    exactly_one_of: &[&["argv", "shell"]],
    output: "{ exit_code: integer, stdout: string, stderr: string, json: value (with parse_json) }",
    example: "argv: [sh, -c, \"echo '{\\\"ok\\\": true}'\"]\nparse_json: true",
    connection: None,
};

/// Each captured stream keeps at most this many bytes: enough for any sane command's output, bounded
/// so that a runaway `cat` cannot fill the engine's memory or the journal.
const CAPTURE_LIMIT: usize = 1 << 20;

/// A progress line longer than this is cut: the live view shows one line, not a blob.
const PROGRESS_LIMIT: usize = 512;

/// How much of stderr (or stdout) a failure message quotes; the full text is in the error's detail.
const MESSAGE_TAIL: usize = 500;

pub struct ShellRun;

/// The `with:` block of `shell.run`. Every field is an `Option` so that a template rendering to
/// `null` reads as "not given" rather than as a type error.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default, deserialize_with = "scalar_list")]
    argv: Option<Vec<String>>,
    shell: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    stdin: Option<String>,
    parse_json: Option<bool>,
    ok_codes: Option<Vec<i32>>,
}

/// A scalar as the text a program receives. `{{ params.replicas }}` renders to a number, and an
/// argument list must take it as `3`, not fail.
fn scalar_text<E: serde::de::Error>(v: Value) -> Result<String, E> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(E::custom(format!(
            "expected a string, number or boolean, found {other}"
        ))),
    }
}

fn scalar_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let items: Option<Vec<Value>> = serde::Deserialize::deserialize(d)?;
    items
        .map(|v| v.into_iter().map(scalar_text).collect())
        .transpose()
}

fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let items: Option<BTreeMap<String, Value>> = serde::Deserialize::deserialize(d)?;
    items
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| scalar_text(v).map(|t| (k, t)))
                .collect()
        })
        .transpose()
}

/// Kills the child's whole process group when dropped before the child was waited for: a `shell:`
/// step's `/bin/sh` is not the only process a timeout or Ctrl-C must stop.
struct GroupGuard(Option<nix::unistd::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group may be gone already; nothing else to do then.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn parse_input(value: Value) -> Result<Input, StepError> {
    serde_json::from_value(value).map_err(StepError::input)
}

impl Plugin for ShellRun {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(run(input, ctx))
    }

    fn plan<'a>(&'a self, input: Value, _ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move { plan(input) }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

/// The program and its arguments: `argv` as given, or `shell` run by `/bin/sh -c`.
fn command_line(input: &Input) -> Result<(String, Vec<String>), StepError> {
    Ok(match (input.argv.clone(), input.shell.clone()) {
        (Some(_), Some(_)) => {
            return Err(StepError::new(
                ErrorKind::Input,
                "give either `argv` or `shell`, not both",
            ));
        }
        (None, None) => {
            return Err(StepError::new(
                ErrorKind::Input,
                "one of `argv` (a program and its arguments) or `shell` (a command line) is required",
            ));
        }
        (Some(argv), None) => {
            let mut argv = argv.into_iter();
            match argv.next() {
                Some(program) if !program.is_empty() => (program, argv.collect::<Vec<_>>()),
                Some(_) => {
                    return Err(StepError::new(
                        ErrorKind::Input,
                        "`argv` starts with an empty program name",
                    ));
                }
                None => {
                    return Err(StepError::new(
                        ErrorKind::Input,
                        "`argv` is empty; it needs at least the program to run",
                    ));
                }
            }
        }
        (None, Some(line)) => ("/bin/sh".to_owned(), vec!["-c".to_owned(), line]),
    })
}

/// What `runbook plan` shows for a command: it is never run, so nothing on the host is read.
fn plan(input: Value) -> Result<Value, StepError> {
    let input = parse_input(input)?;
    let (program, args) = command_line(&input)?;
    let mut line = vec![program.clone()];
    line.extend(args.iter().cloned());
    let shown = line
        .iter()
        .map(|a| {
            if a.is_empty()
                || a.contains(|c: char| c.is_whitespace() || "'\"$`\\|&;<>()*?!#~".contains(c))
            {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = json!({
        "summary": format!("would run: {shown}"),
        "argv": line,
    });
    if let Some(env) = &input.env {
        out["env"] = json!(env);
    }
    if let Some(cwd) = &input.cwd {
        out["cwd"] = json!(cwd);
    }
    if let Some(stdin) = &input.stdin {
        out["stdin"] = json!(stdin);
    }
    Ok(out)
}

async fn run(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let input = parse_input(input)?;
    let (program, args) = command_line(&input)?;
    let ok_codes = input.ok_codes.unwrap_or_else(|| vec![0]);

    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .envs(input.env.unwrap_or_default())
        .stdin(if input.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The engine enforces timeouts and cancellation by dropping this future; the child must not
        // outlive it.
        .kill_on_drop(true)
        // Its own process group, so that everything it starts can be stopped with it.
        .process_group(0);
    if let Some(cwd) = &input.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| spawn_error(&program, input.cwd.as_deref(), &e))?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    if let Some(pid) = child.id() {
        ctx.report_process(pid);
    }

    let stdin_pipe = child.stdin.take();
    let stdin_text = input.stdin.unwrap_or_default();
    let write_stdin = async move {
        if let Some(mut pipe) = stdin_pipe {
            // A program may exit or close stdin without reading it all (`head`, `true`); the broken
            // pipe that follows is its choice, not a failure of the step. Dropping the pipe closes it
            // so that programs reading to EOF finish.
            let _ = pipe.write_all(stdin_text.as_bytes()).await;
        }
    };
    // All three pipes are served at once: a child blocked writing a full stderr pipe while we wait on
    // stdout (or on it reading stdin) would otherwise deadlock.
    let (stdout_pipe, stderr_pipe) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (_, out, err) = tokio::join!(
            write_stdin,
            capture(stdout_pipe, ctx),
            capture(stderr_pipe, ctx),
        );
        let out = out.map_err(|e| io_error(&program, "reading stdout of", &e))?;
        let err = err.map_err(|e| io_error(&program, "reading stderr of", &e))?;
        let status = child
            .wait()
            .await
            .map_err(|e| io_error(&program, "waiting for", &e))?;
        Ok::<_, StepError>((out, err, status))
    };
    let (out, err, status) = tokio::select! {
        r = finished => r?,
        // The guard kills the whole process group as this returns.
        () = ctx.cancel.cancelled() => {
            return Err(StepError::new(ErrorKind::Other, format!("`{program}` was stopped")));
        }
    };
    // Finished on its own: what it left running in the background is its business.
    guard.0 = None;

    let stdout = out.text();
    let stderr = err.text();
    let mut result = json!({
        "exit_code": status.code(),
        "stdout": stdout,
        "stderr": stderr,
    });

    match status.code() {
        Some(code) if ok_codes.contains(&code) => {}
        Some(code) => {
            let message = format!(
                "exit code {code} (expected {}){}",
                list_codes(&ok_codes),
                quote_output(&stdout, &stderr)
            );
            return Err(StepError::new(ErrorKind::Status, message).with_detail(result));
        }
        None => {
            let signal = status.signal();
            result["signal"] = json!(signal);
            let name = signal.map_or_else(|| "an unknown signal".to_owned(), describe_signal);
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            let message = format!("killed by {name}{core}{}", quote_output(&stdout, &stderr));
            return Err(StepError::new(ErrorKind::Status, message).with_detail(result));
        }
    }

    if input.parse_json.unwrap_or(false) {
        match serde_json::from_slice::<Value>(&out.kept) {
            Ok(v) => result["json"] = v,
            Err(e) => {
                let message = if out.dropped > 0 {
                    format!(
                        "stdout is not JSON: it was cut at {} bytes (of {}): {e}",
                        out.kept.len(),
                        out.kept.len() as u64 + out.dropped
                    )
                } else if stdout.trim().is_empty() {
                    "stdout is not JSON: it is empty".to_owned()
                } else {
                    format!(
                        "stdout is not JSON ({e}); it starts with: {}",
                        head_chars(stdout.trim_start(), 200)
                    )
                };
                return Err(StepError::new(ErrorKind::Parse, message).with_detail(result));
            }
        }
    }
    Ok(result)
}

/// One captured output stream: the head that was kept and how many bytes past it were discarded.
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

impl Captured {
    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[... truncated {} bytes]", self.dropped));
        }
        s
    }
}

/// Reads a pipe to EOF, keeping the first [`CAPTURE_LIMIT`] bytes and reporting the last non-empty
/// line of each read as progress. It works on buffered chunks rather than `read_line` so that output
/// without newlines (a binary blob, `head -c`) cannot grow an unbounded line buffer, and so that a
/// chatty program sends one progress message per read instead of one per line.
async fn capture<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    ctx: &StepContext,
) -> std::io::Result<Captured> {
    let mut captured = Captured {
        kept: Vec::new(),
        dropped: 0,
    };
    let Some(pipe) = pipe else {
        return Ok(captured);
    };
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    // The line being read, capped at PROGRESS_LIMIT; it continues across chunks.
    let mut line: Vec<u8> = Vec::new();
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        // Both streams, interleaved as they come: if the step is cut short, this is what it said.
        ctx.output.write(chunk);
        let take = n.min(CAPTURE_LIMIT - captured.kept.len());
        captured.kept.extend_from_slice(&chunk[..take]);
        captured.dropped += (n - take) as u64;

        let mut last_complete: Option<String> = None;
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let room = PROGRESS_LIMIT.saturating_sub(line.len());
            line.extend_from_slice(&piece[..piece.len().min(room)]);
            if piece.ends_with(b"\n") {
                if let Some(text) = progress_text(&line) {
                    last_complete = Some(text);
                }
                line.clear();
            }
        }
        if let Some(text) = last_complete {
            ctx.progress(text);
        }
        reader.consume(n);
    }
    // A last line without a trailing newline is still what the program said last.
    if let Some(text) = progress_text(&line) {
        ctx.progress(text);
    }
    Ok(captured)
}

fn progress_text(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn spawn_error(program: &str, cwd: Option<&str>, err: &std::io::Error) -> StepError {
    // A missing working directory makes spawn fail with the same ENOENT as a missing program; look
    // at the directory so the message blames the right one.
    if let Some(cwd) = cwd {
        let problem = match std::fs::metadata(cwd) {
            Err(e) => Some(e.to_string()),
            Ok(m) if !m.is_dir() => Some("not a directory".to_owned()),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return StepError::new(
                ErrorKind::Other,
                format!("cannot run `{program}`: working directory `{cwd}`: {problem}"),
            );
        }
    }
    StepError::new(ErrorKind::Other, format!("cannot run `{program}`: {err}"))
}

fn io_error(program: &str, doing: &str, err: &std::io::Error) -> StepError {
    StepError::new(ErrorKind::Other, format!("{doing} `{program}`: {err}"))
}

fn list_codes(codes: &[i32]) -> String {
    match codes {
        [] => "none".to_owned(),
        [one] => one.to_string(),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("one of {}", all.join(", "))
        }
    }
}

/// The end of stderr for a failure message: that is where programs explain why they failed. Falls
/// back to stdout, since some tools report errors there.
fn quote_output(stdout: &str, stderr: &str) -> String {
    let (name, text) = if !stderr.trim().is_empty() {
        ("stderr", stderr)
    } else if !stdout.trim().is_empty() {
        ("stdout", stdout)
    } else {
        return "; no output".to_owned();
    };
    format!("; {name}: {}", tail_lines(text.trim(), MESSAGE_TAIL))
}

/// The last whole lines of `text` that fit in about `max` characters (a single longer last line is
/// cut at the front).
fn tail_lines(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let skip = text
        .char_indices()
        .nth(count - max)
        .map_or(text.len(), |(i, _)| i);
    let window = &text[skip..];
    // Start at a line boundary when the window holds one, so the quote does not open mid-word.
    let window = match window.find('\n') {
        Some(i) if i + 1 < window.len() => &window[i + 1..],
        _ => window,
    };
    format!("...{window}")
}

fn head_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// Names the common signals; `ExitStatusExt` only gives the number. The numbers are the same on
/// Linux and the BSDs for these.
fn describe_signal(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::ShellRun;
    use crate::testkit::{Harness, call, err, ok};
    use crate::{ErrorKind, Plugin, StepContext, StepError};

    async fn run(input: Value) -> Result<Value, StepError> {
        call(&ShellRun, input).await
    }

    #[tokio::test]
    async fn argv_runs_the_program_without_a_shell() {
        let r = ok(run(json!({ "argv": ["echo", "hello", "$HOME | wc"] })).await);
        assert_eq!(
            r,
            json!({ "exit_code": 0, "stdout": "hello $HOME | wc\n", "stderr": "" })
        );
    }

    #[tokio::test]
    async fn shell_runs_a_pipeline() {
        let r = ok(run(json!({ "shell": "printf 'a\\nb\\nc\\n' | wc -l | tr -d ' '" })).await);
        assert_eq!(r["stdout"], "3\n");
        assert_eq!(r["exit_code"], 0);
    }

    #[tokio::test]
    async fn env_is_added_to_the_inherited_environment_and_cwd_is_used() {
        let r = ok(run(json!({
            "argv": ["sh", "-c", "printf '%s|%s|%s' \"$RB_TEST_VAR\" \"$(pwd)\" \"${PATH:+has-path}\""],
            "env": { "RB_TEST_VAR": "v a l" },
            "cwd": "/",
        }))
        .await);
        assert_eq!(r["stdout"], "v a l|/|has-path");
    }

    #[tokio::test]
    async fn stdin_is_written_and_closed() {
        let r = ok(run(json!({ "argv": ["tr", "a-z", "A-Z"], "stdin": "hello\n" })).await);
        assert_eq!(r["stdout"], "HELLO\n");
    }

    #[tokio::test]
    async fn without_stdin_the_program_reads_eof() {
        // With an inherited stdin, `cat` would wait on the terminal forever.
        let r = ok(run(json!({ "argv": ["cat"] })).await);
        assert_eq!(r["stdout"], "");
    }

    #[tokio::test]
    async fn parse_json_puts_stdout_into_json() {
        let r = ok(run(json!({ "shell": "echo '{\"a\": [1, 2]}'", "parse_json": true })).await);
        assert_eq!(r["json"], json!({ "a": [1, 2] }));
        assert_eq!(r["stdout"], "{\"a\": [1, 2]}\n");
    }

    #[tokio::test]
    async fn parse_json_failure_is_a_parse_error_quoting_stdout() {
        let e = err(run(json!({ "argv": ["echo", "not json at all"], "parse_json": true })).await);
        assert_eq!(e.kind, ErrorKind::Parse);
        assert!(e.message.contains("not json at all"), "{}", e.message);
        assert!(
            e.message.contains("expected"),
            "serde's reason: {}",
            e.message
        );
        let detail = e.detail.expect("detail keeps the output");
        assert_eq!(detail["stdout"], "not json at all\n");
    }

    #[tokio::test]
    async fn ok_codes_accept_other_exit_codes() {
        let r = ok(run(json!({ "shell": "exit 3", "ok_codes": [0, 3] })).await);
        assert_eq!(r["exit_code"], 3);
        let e = err(run(json!({ "shell": "exit 0", "ok_codes": [1] })).await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert!(
            e.message.starts_with("exit code 0 (expected 1)"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_status_error_quoting_stderr() {
        let e = err(run(json!({
            "shell": "echo working; echo 'first problem' >&2; echo 'fatal: disk full' >&2; exit 3",
        }))
        .await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert_eq!(
            e.message,
            "exit code 3 (expected 0); stderr: first problem\nfatal: disk full"
        );
        assert_eq!(
            e.detail,
            Some(json!({
                "exit_code": 3,
                "stdout": "working\n",
                "stderr": "first problem\nfatal: disk full\n",
            }))
        );
    }

    #[tokio::test]
    async fn a_long_stderr_is_quoted_by_its_last_lines() {
        let e = err(run(json!({
            "shell": "i=0; while [ $i -lt 200 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1",
        }))
        .await);
        assert!(e.message.len() < 600, "{} chars", e.message.len());
        assert!(e.message.ends_with("line 199"), "{}", e.message);
        assert!(!e.message.contains("line 0\n"), "{}", e.message);
        let detail = e.detail.expect("detail");
        let stderr = detail["stderr"].as_str().expect("stderr is a string");
        assert!(stderr.starts_with("line 0\n"));
    }

    #[tokio::test]
    async fn death_by_signal_names_the_signal() {
        let e = err(run(json!({ "shell": "kill -9 $$" })).await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert!(e.message.contains("SIGKILL"), "{}", e.message);
        let detail = e.detail.expect("detail");
        assert_eq!(detail["exit_code"], Value::Null);
        assert_eq!(detail["signal"], 9);
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let e = err(run(json!({ "argv": ["runbook-no-such-program", "x"] })).await);
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(
            e.message
                .starts_with("cannot run `runbook-no-such-program`: "),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("No such file or directory"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_missing_cwd_is_named_instead_of_the_program() {
        let e = err(run(json!({ "argv": ["true"], "cwd": "/runbook/no/such/dir" })).await);
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(
            e.message
                .contains("working directory `/runbook/no/such/dir`: No such file"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn big_output_on_both_streams_is_truncated_without_deadlock() {
        // stderr is filled first: reading stdout to the end before touching stderr would deadlock.
        let e = err(run(json!({
            "shell": "head -c 3145728 /dev/zero >&2; head -c 3145728 /dev/zero; exit 1",
        }))
        .await);
        let detail = e.detail.expect("detail");
        let marker = "\n[... truncated 2097152 bytes]";
        for stream in ["stdout", "stderr"] {
            let text = detail[stream].as_str().expect("a string");
            assert_eq!(text.len(), (1 << 20) + marker.len(), "{stream}");
            assert!(text.ends_with(marker), "{stream}");
            assert!(
                text.as_bytes()[..1 << 20].iter().all(|b| *b == 0),
                "{stream}"
            );
        }
    }

    #[tokio::test]
    async fn big_stdin_is_written_while_stdout_is_read() {
        // `cat` stops reading stdin once its stdout pipe is full; writing all of stdin before
        // reading stdout would deadlock.
        let input = "x".repeat(2 << 20);
        let r = ok(run(json!({ "argv": ["cat"], "stdin": input })).await);
        let stdout = r["stdout"].as_str().expect("a string");
        assert!(stdout.ends_with("\n[... truncated 1048576 bytes]"));
        assert!(stdout.starts_with(&"x".repeat(1 << 20)));
    }

    #[tokio::test]
    async fn non_utf8_output_is_converted_lossily() {
        let r = ok(run(json!({ "shell": "printf 'a\\377b'" })).await);
        assert_eq!(r["stdout"], "a\u{FFFD}b");
    }

    #[tokio::test]
    async fn argv_and_shell_are_exclusive_and_argv_needs_a_program() {
        let e = err(run(json!({ "argv": ["true"], "shell": "true" })).await);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.message.contains("not both"), "{}", e.message);

        let e = err(run(json!({ "env": { "A": "b" } })).await);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(
            e.message.contains("`argv`") && e.message.contains("`shell`"),
            "{}",
            e.message
        );

        let e = err(run(json!({ "argv": [] })).await);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.message.contains("empty"), "{}", e.message);
    }

    #[tokio::test]
    async fn unknown_and_mistyped_fields_are_input_errors() {
        let e = err(run(json!({ "argv": ["true"], "timeout": "5s" })).await);
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(
            e.message.contains("unknown field `timeout`"),
            "{}",
            e.message
        );

        let e = err(run(json!({ "argv": "true" })).await);
        assert_eq!(e.kind, ErrorKind::Input);
    }

    #[tokio::test]
    async fn progress_reports_the_last_non_empty_line_and_the_sink_keeps_the_output() {
        let mut h = Harness::new("deploy");
        let input = json!({ "shell": "printf 'one\\ntwo\\n\\n  \\nthree'; echo oops >&2" });
        ok(h.call(&ShellRun, input).await);
        assert!(h.progress.has_changed().expect("sender alive"));
        let last = h.progress.borrow_and_update().clone();
        assert!(last == "three" || last == "oops", "{last}");
        let out = h.output().expect("output kept");
        assert!(
            out.contains("one\ntwo") && out.contains("three") && out.contains("oops"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn cancelling_the_token_stops_the_process_group_and_returns() {
        let ctx = StepContext::default();
        let mut rx = ctx.watch_progress();
        let input = json!({ "shell": "sleep 600 & echo \"ready $!\"; wait" });
        let fut = ShellRun.run(input, &ctx);
        tokio::pin!(fut);
        let pid = loop {
            tokio::select! {
                r = &mut fut => panic!("ended on its own: {:?}", r.map_err(|e| e.message)),
                changed = rx.changed() => {
                    changed.expect("progress sender alive");
                    let line = rx.borrow_and_update().clone();
                    if let Some(pid) = line.strip_prefix("ready ") {
                        break pid.trim().parse::<i32>().expect("a pid");
                    }
                }
            }
        };
        ctx.cancel.cancel();
        let e = err(fut.await);
        assert!(e.message.contains("was stopped"), "{}", e.message);
        // The background child of the shell went with its group (a zombie counts as dead).
        // SIGKILL is delivered asynchronously: poll (bounded) until the process is gone.
        let dead = |pid: i32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            matches!(state, None | Some("Z") | Some("X"))
        };
        let mut tries = 0;
        while !dead(pid) && tries < 500 {
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            dead(pid),
            "the group's sleep {pid} survived the cancellation"
        );
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_child() {
        // The child holds a FIFO open for writing; our reader sees EOF only once it is dead.
        let dir = std::env::temp_dir().join(format!("runbook-steps-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buf = Vec::new();
                std::fs::File::open(&fifo)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .map(|_| buf)
            })
        };

        let ctx = StepContext::default();
        let mut rx = ctx.watch_progress();
        let input = json!({
            "shell": "exec 3>\"$FIFO\"; echo \"ready $$\"; exec sleep 600",
            "env": { "FIFO": fifo.to_string_lossy() },
        });
        let pid = {
            let mut fut = ShellRun.run(input, &ctx);
            loop {
                tokio::select! {
                    r = &mut fut => panic!("the step ended on its own: {:?}", r.map_err(|e| e.message)),
                    changed = rx.changed() => {
                        changed.expect("progress sender alive");
                        let line = rx.borrow_and_update().clone();
                        if let Some(pid) = line.strip_prefix("ready ") {
                            break pid.to_owned();
                        }
                    }
                }
            }
            // `fut` is dropped here, as the engine does on timeout.
        };
        let read = match tokio::time::timeout(Duration::from_secs(30), reader).await {
            Ok(joined) => joined.expect("reader task").expect("reading the FIFO"),
            Err(_) => {
                // Kill it ourselves so the blocked reader (which the runtime waits for on shutdown)
                // ends and the failure is reported instead of hanging the suite.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("child {pid} still held the FIFO 30s after the future was dropped");
            }
        };
        assert!(read.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
