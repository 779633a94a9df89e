//! `kubernetes.exec`: a command in a container of a ready pod (picked from `deployment/NAME`, as
//! `kubectl exec deployment/NAME` does, or from a label selector), over the WebSocket exec stream.
//! stdout and stderr go to the step's output as they come; the exit status is the one the stream's
//! Status frame reports.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::pods::{self, Target};
use super::{Kube, NAMESPACE, chain, parse};
use crate::schema::{Field, FieldType};
use crate::web::head_chars;
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

/// stdout and stderr each keep at most this much in the result; the output sink has the tail.
const KEPT: usize = 4 << 20;

/// How much of stderr a failure's message quotes.
const QUOTED: usize = 300;

static INFO: PluginInfo = PluginInfo {
    name: "kubernetes.exec",
    summary: "Run a command in a container of a ready pod of a Deployment (or of a pod, or of the \
              pods a label selector matches). `unsafe` unless the step declares `side_effect: read`.",
    class: SideEffect::Unsafe,
    fields: &[
        Field::opt(
            "target",
            FieldType::String,
            "`deployment/NAME` (a ready pod of it; also statefulset, daemonset, replicaset), or \
             `pod/NAME`, or a pod's name.",
        ),
        Field::opt(
            "selector",
            FieldType::String,
            "Label selector: a ready pod among those it matches.",
        ),
        Field::req(
            "command",
            FieldType::List(&FieldType::String),
            "The command and its arguments (no shell unless you run one, e.g. `[sh, -c, ...]`).",
        ),
        NAMESPACE,
        Field::opt(
            "container",
            FieldType::String,
            "The container (default: the pod's `kubectl.kubernetes.io/default-container`, else its first).",
        ),
        Field::opt(
            "json",
            FieldType::Bool,
            "Parse stdout as JSON into `result.json`; stdout that is not JSON fails the step, kind `parse`.",
        ),
    ],
    exactly_one_of: &[&["target", "selector"]],
    output: "{ pod, container, namespace, exit_code: integer, stdout, stderr, json: value or null }",
    example: "target: deployment/orchestrator-dynamic\nnamespace: neural-hive-orchestration\ncommand: [python, ml_pipelines/monitoring/model_performance_monitor.py, --specialist-type, all, --output-format, json]\njson: true",
    connection: Some("kubernetes"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    target: Option<String>,
    selector: Option<String>,
    command: Vec<String>,
    namespace: Option<String>,
    container: Option<String>,
    json: Option<bool>,
}

pub struct Exec;

impl Plugin for Exec {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(exec(input, ctx))
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let (i, target) = input_of(input)?;
            let kube = Kube::of(ctx).await?;
            let ns = kube.namespace(i.namespace.as_deref());
            let what = target.shown(&ns);
            let pod = pods::ready_one(pods::matching(&kube, &ns, &target).await?, &what)?;
            let container = pods::container(&pod, i.container.as_deref(), &ns)?;
            Ok(json!({
                "summary": format!(
                    "would run `{}` in pod `{}` (container `{container}`) of {what}",
                    i.command.join(" "), pods::name(&pod)
                ),
                "pod": pods::name(&pod), "container": container, "namespace": ns,
                "command": i.command,
            }))
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

fn input_of(input: Value) -> Result<(Input, Target), StepError> {
    let i: Input = parse(input)?;
    if i.command.is_empty() {
        return Err(StepError::new(ErrorKind::Input, "`command` is empty"));
    }
    let target = Target::of(i.target.as_deref(), i.selector.as_deref())?;
    Ok((i, target))
}

async fn exec(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let (i, target) = input_of(input)?;
    let kube = Kube::of(ctx).await?;
    let ns = kube.namespace(i.namespace.as_deref());
    let what = target.shown(&ns);
    let pod = pods::ready_one(pods::matching(&kube, &ns, &target).await?, &what)?;
    let pod_name = pods::name(&pod).to_string();
    let container = pods::container(&pod, i.container.as_deref(), &ns)?;
    let where_ = format!("pod `{pod_name}` (container `{container}`) in namespace `{ns}`");
    ctx.progress(format!("exec in {where_}: {}", i.command.join(" ")));

    let api: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
    let params = AttachParams::default()
        .container(container.clone())
        .stdin(false)
        .stdout(true)
        .stderr(true);
    // Dropping `attached` (at cancellation, or when this future is dropped) aborts its stream task,
    // which closes the WebSocket: nothing is left running here.
    let mut attached = api
        .exec(&pod_name, i.command.clone(), &params)
        .await
        .map_err(|e| kube.error(&format!("exec in {where_}"), e))?;
    let (Some(stdout), Some(stderr), Some(status)) =
        (attached.stdout(), attached.stderr(), attached.take_status())
    else {
        return Err(StepError::new(
            ErrorKind::Other,
            format!("exec in {where_}: the stream has no stdout, stderr or status"),
        ));
    };
    let streams = async {
        let (out, err) = tokio::join!(drain(stdout, ctx), drain(stderr, ctx));
        (out, err, status.await)
    };
    let (stdout, stderr, status) = tokio::select! {
        r = streams => r,
        () = ctx.cancel.cancelled() => {
            drop(attached);
            return Err(StepError::new(
                ErrorKind::Timeout,
                format!("exec in {where_}: stopped; the stream is closed"),
            ));
        }
    };
    let stdout = stdout.map_err(|e| broken(&where_, &e))?;
    let stderr = stderr.map_err(|e| broken(&where_, &e))?;
    let mut result = json!({
        "pod": pod_name, "container": container, "namespace": ns,
        "exit_code": null, "stdout": stdout, "stderr": stderr, "json": null,
    });
    let Some(status) = status else {
        // No Status frame: the stream ended early. The task's own error says why.
        let why = match attached.join().await {
            Err(e) => chain(&e),
            Ok(()) => "it closed without one".into(),
        };
        return Err(StepError::new(
            ErrorKind::Connect,
            format!("exec in {where_}: the stream ended before the command's exit status: {why}"),
        )
        .with_detail(result));
    };
    let code = exit_code(&status).map_err(|why| {
        StepError::new(ErrorKind::Status, format!("exec in {where_}: {why}"))
            .with_detail(result.clone())
    })?;
    result["exit_code"] = json!(code);
    if code != 0 {
        let quoted = match stderr.trim() {
            "" => String::new(),
            s => format!("; stderr: {}", head_chars(s, QUOTED)),
        };
        return Err(StepError::new(
            ErrorKind::Status,
            format!(
                "`{}` in {where_} exited with status {code}{quoted}",
                i.command.join(" ")
            ),
        )
        .with_detail(result));
    }
    if i.json.unwrap_or(false) {
        match serde_json::from_str::<Value>(&stdout) {
            Ok(v) => result["json"] = v,
            Err(e) => {
                return Err(StepError::new(
                    ErrorKind::Parse,
                    format!(
                        "`{}` in {where_}: stdout is not JSON ({e}): {}",
                        i.command.join(" "),
                        head_chars(stdout.trim(), QUOTED)
                    ),
                )
                .with_detail(result));
            }
        }
    }
    Ok(result)
}

fn broken(where_: &str, e: &std::io::Error) -> StepError {
    StepError::new(
        ErrorKind::Connect,
        format!("exec in {where_}: reading the stream failed: {e}"),
    )
}

/// Reads one stream to its end, copying it to the step's output as it comes; keeps the first
/// [`KEPT`] bytes.
async fn drain(mut r: impl AsyncRead + Unpin, ctx: &StepContext) -> std::io::Result<String> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&kept).into_owned());
        }
        ctx.output.write(&buf[..n]);
        let room = KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// The command's exit status from the stream's Status frame: `Success` is 0; a failure with reason
/// `NonZeroExitCode` carries the code in a cause `ExitCode`; any other failure (the command could
/// not start) is the server's message.
pub(crate) fn exit_code(status: &Status) -> Result<i64, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let reason = status.reason.as_deref().unwrap_or("");
    if reason == "NonZeroExitCode" {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<i64>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(format!(
        "the command failed to run: {}{}",
        status.message.as_deref().unwrap_or("(no message)"),
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    ))
}
