//! `pods/NAME/log` and `pods/NAME/exec` (WebSocket, `v5.channel.k8s.io` / `v4.channel.k8s.io`).
//!
//! Pod annotations that give pods behaviour (for a deployment's pods: on its pod template):
//! - `fake-kube/logs` (every container) or `fake-kube/logs.CONTAINER`: the log, one line each,
//!   `TIMESTAMP MESSAGE`, TIMESTAMP being RFC 3339 or relative to the fake's start (`-90s`, `-5m`,
//!   `-2h`); a line without one is stamped with the start.
//! - `fake-kube/log-cut-after: "N"`: the log stream breaks off (no final chunk) after N lines.
//! - `fake-kube/exec` or `fake-kube/exec.CONTAINER`: a shell script that handles every exec, run as
//!   `sh -c SCRIPT fake-kube-exec COMMAND...` (the requested command is in `"$@"`). Without it the
//!   requested command itself runs. Either runs in the fake's `--workdir`, with `FAKE_KUBE_NAMESPACE`,
//!   `FAKE_KUBE_POD`, `FAKE_KUBE_CONTAINER` set.
//!
//! Exec over SPDY (what kubectl before 1.30 uses) is not supported: such a request gets a 400
//! `Status` saying so.

use crate::status::ApiError;
use crate::workload::annotation;
use crate::{App, Query};
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The container a request names, or the pod's only one.
fn container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str()).collect())
        .unwrap_or_default();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    match requested {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// A per-container annotation (`KEY.CONTAINER`), else the pod-wide one (`KEY`).
fn per_container<'a>(pod: &'a Value, key: &str, container: &str) -> Option<&'a str> {
    annotation(pod, &format!("{key}.{container}")).or_else(|| annotation(pod, key))
}

fn parse_stamp(token: &str, start: Timestamp) -> Option<Timestamp> {
    if let Some(rel) = token.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit())?);
        let n: i64 = num.parse().ok()?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            _ => return None,
        };
        return start.checked_sub(SignedDuration::from_secs(secs)).ok();
    }
    token.parse().ok()
}

/// The configured log of one container: (time, message) per line.
fn log_lines(pod: &Value, container: &str, start: Timestamp) -> Vec<(Timestamp, String)> {
    let text = per_container(pod, "fake-kube/logs", container).unwrap_or_default();
    text.lines()
        .map(|line| match line.split_once(' ') {
            Some((t, msg)) => match parse_stamp(t, start) {
                Some(ts) => (ts, msg.to_string()),
                None => (start, line.to_string()),
            },
            None => match parse_stamp(line, start) {
                Some(ts) => (ts, String::new()),
                None => (start, line.to_string()),
            },
        })
        .collect()
}

fn int_param(q: &Query, name: &str) -> Result<Option<i64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name}: invalid value {v:?}")))
        })
        .transpose()
}

/// `GET .../pods/NAME/log`: `container`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
/// `limitBytes`, `follow` (the stream then stays open until the client goes).
pub fn logs(app: &App, pod: &Value, q: &Query) -> Result<Response, ApiError> {
    let c = container(pod, q.get("container"))?;
    let mut lines = log_lines(pod, &c, app.started);
    if let Some(s) = int_param(q, "sinceSeconds")? {
        let from = Timestamp::now() - SignedDuration::from_secs(s.max(0));
        lines.retain(|(t, _)| *t >= from);
    }
    if let Some(s) = q.get("sinceTime") {
        let from: Timestamp = s
            .parse()
            .map_err(|e| ApiError::bad_request(format!("sinceTime: {e}")))?;
        lines.retain(|(t, _)| *t >= from);
    }
    if let Some(n) = int_param(q, "tailLines")? {
        let keep = usize::try_from(n.max(0)).unwrap_or(0);
        lines.drain(..lines.len().saturating_sub(keep));
    }
    let stamps = q.get("timestamps") == Some("true");
    let mut chunks: Vec<Bytes> = lines
        .into_iter()
        .map(|(t, msg)| {
            Bytes::from(if stamps {
                // RFC 3339 with as many fraction digits as needed: Go's RFC3339Nano, as kubelet writes.
                format!("{t} {msg}\n")
            } else {
                format!("{msg}\n")
            })
        })
        .collect();
    if let Some(limit) = int_param(q, "limitBytes")? {
        let mut left = usize::try_from(limit.max(0)).unwrap_or(0);
        for chunk in &mut chunks {
            let take = chunk.len().min(left);
            *chunk = chunk.slice(..take);
            left -= take;
        }
        chunks.retain(|c| !c.is_empty());
    }
    let cut = annotation(pod, "fake-kube/log-cut-after").and_then(|n| n.parse::<usize>().ok());
    let follow = q.get("follow") == Some("true");
    type Item = Result<Bytes, std::io::Error>;
    let head =
        futures_util::stream::iter(chunks.into_iter().take(cut.unwrap_or(usize::MAX)).map(Ok));
    let tail: futures_util::stream::BoxStream<'static, Item> = match cut {
        // The break comes after one pending poll, on which hyper flushes the lines before it with
        // the headers: the client sees them, then a connection closed without the final chunk.
        Some(_) => Box::pin(futures_util::stream::once(async {
            tokio::task::yield_now().await;
            Err(std::io::Error::other(
                "fake-kube: log stream cut (fake-kube/log-cut-after)",
            ))
        })),
        None if follow => Box::pin(futures_util::stream::pending()),
        None => Box::pin(futures_util::stream::empty()),
    };
    let body = Body::from_stream(futures_util::StreamExt::chain(head, tail));
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// `pods/NAME/exec`: checks the request, then upgrades to a WebSocket and runs the command.
pub fn exec(
    app: Arc<App>,
    pod: &Value,
    q: &Query,
    ws: Option<WebSocketUpgrade>,
) -> Result<Response, ApiError> {
    let c = container(pod, q.get("container"))?;
    let command: Vec<String> = q.all("command").map(str::to_string).collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let Some(ws) = ws else {
        return Err(ApiError::bad_request(
            "fake-kube: exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not supported",
        ));
    };
    let script = per_container(pod, "fake-kube/exec", &c).map(str::to_string);
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut cmd = match &script {
        Some(s) => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c").arg(s).arg("fake-kube-exec").args(&command);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..]);
            cmd
        }
    };
    cmd.current_dir(&app.config.workdir)
        .env("FAKE_KUBE_NAMESPACE", ns)
        .env("FAKE_KUBE_POD", pod_name)
        .env("FAKE_KUBE_CONTAINER", &c)
        .stdin(if q.get("stdin") == Some("true") {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a client that goes away takes the command and whatever it
        // started with it (`GroupKill`).
        .process_group(0)
        .kill_on_drop(true);
    let v5 = ws
        .requested_protocols()
        .any(|p| p.as_bytes() == b"v5.channel.k8s.io");
    Ok(ws
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| run(socket, cmd, command, v5)))
}

/// Kills an exec'd command's process group when dropped: when the command ended (leftover
/// background processes) or the client went away (the connection's task is dropped).
struct GroupKill(i32);

impl Drop for GroupKill {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0);
        // ESRCH: the group is gone already, which is the point.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

async fn run(
    mut socket: WebSocket,
    mut cmd: tokio::process::Command,
    command: Vec<String>,
    v5: bool,
) {
    let status = match cmd.spawn() {
        Ok(mut child) => {
            let _group = child.id().and_then(|id| i32::try_from(id).ok()).map(GroupKill);
            pump(&mut socket, &mut child, v5).await
        }
        .map(|code| match code {
            Some(0) => json!({ "metadata": {}, "status": "Success" }),
            code => {
                let code = code.map_or_else(|| "signal".to_string(), |c| c.to_string());
                json!({
                    "metadata": {}, "status": "Failure",
                    "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
                    "reason": "NonZeroExitCode",
                    "details": { "causes": [{ "reason": "ExitCode", "message": code }] },
                })
            }
        }),
        Err(e) => Some(json!({
            "metadata": {}, "status": "Failure", "code": 500, "reason": "InternalError",
            "message": format!("failed to exec in container: starting container process caused: exec: {:?}: {e}", command[0]),
        })),
    };
    if let Some(status) = status {
        let _ = socket.send(frame(3, status.to_string().as_bytes())).await;
        // A normal closure (1000): kubectl treats a close without a code as a broken stream.
        let close = CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        };
        let _ = socket.send(Message::Close(Some(close))).await;
    }
}

/// Relays stdin, stdout and stderr until the command's output ends; its exit code, or `None` when
/// the client went away (the command is killed when dropped).
async fn pump(
    socket: &mut WebSocket,
    child: &mut tokio::process::Child,
    v5: bool,
) -> Option<Option<i32>> {
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => socket.send(frame(1, &out_buf[..n])).await.ok()?,
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => socket.send(frame(2, &err_buf[..n])).await.ok()?,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(0) => {
                        if let Some(w) = stdin.as_mut()
                            && w.write_all(&b[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    // v5: the client closed a stream; for stdin the command sees end of file.
                    Some(255) if v5 && b.get(1) == Some(&0) => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin);
    let status = child.wait().await.ok()?;
    Some(status.code())
}
