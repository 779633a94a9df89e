//! `kubernetes.logs`: the logs of every pod a selector matches (`kubectl logs -l`), or of a pod or
//! a workload's pods, filtered by a regular expression (`| grep -E ... -i`). Matched lines go to the
//! step's output as they come, so a timeout keeps what was found.

use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pods::{self, Target};
use super::{Kube, NAMESPACE, duration, parse};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

/// Pods read at once, as kubectl's `--max-log-requests` default.
const CONCURRENT: usize = 5;

/// Matched lines a result keeps per pod; the count says how many there were.
const KEPT: usize = 1000;

static INFO: PluginInfo = PluginInfo {
    name: "kubernetes.logs",
    summary: "Read the logs of the pods a label selector (or a pod or workload) names, keeping the \
              lines a regular expression matches.",
    class: SideEffect::Read,
    fields: &[
        Field::opt(
            "selector",
            FieldType::String,
            "Label selector: every pod it matches, as `kubectl logs -l`.",
        ),
        Field::opt(
            "target",
            FieldType::String,
            "`pod/NAME` (or a pod's name), or `deployment/NAME` (its pods).",
        ),
        NAMESPACE,
        Field::opt(
            "container",
            FieldType::String,
            "The container (default: the pod's `kubectl.kubernetes.io/default-container`, else its first).",
        ),
        Field::opt(
            "tail",
            FieldType::Integer,
            "Only the last N lines of each pod (default: the whole log).",
        ),
        Field::opt(
            "since",
            FieldType::Duration,
            "Only lines newer than this, e.g. `1h`.",
        ),
        Field::opt(
            "match",
            FieldType::String,
            "Keep only the lines this regular expression matches (Rust regex syntax, like `grep -E`).",
        ),
        Field::opt(
            "ignore_case",
            FieldType::Bool,
            "Match case-insensitively (`grep -i`; default false).",
        ),
        Field::opt(
            "timestamps",
            FieldType::Bool,
            "Prefix each line with the time the container wrote it (RFC 3339; default false).",
        ),
        Field::opt(
            "previous",
            FieldType::Bool,
            "The previous, terminated container's log (default false).",
        ),
    ],
    exactly_one_of: &[&["selector", "target"]],
    output: "{ namespace, pods: [{ pod, container, lines: integer, matched: integer, kept: [line] }], \
             lines: [\"POD: line\"] (every kept line, pod by pod), matched: integer }",
    example: "selector: app=orchestrator-dynamic\nnamespace: neural-hive-orchestration\ntail: 200\nmatch: \"error|exception|failed|prediction\"\nignore_case: true",
    connection: Some("kubernetes"),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    selector: Option<String>,
    target: Option<String>,
    namespace: Option<String>,
    container: Option<String>,
    tail: Option<i64>,
    since: Option<Value>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    ignore_case: Option<bool>,
    timestamps: Option<bool>,
    previous: Option<bool>,
}

pub struct Logs;

impl Plugin for Logs {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(logs(input, ctx))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

/// The filter a step's `match` and `ignore_case` make.
pub(crate) fn filter(pattern: Option<&str>, ignore_case: bool) -> Result<Option<Regex>, StepError> {
    pattern
        .map(|p| {
            RegexBuilder::new(p)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| StepError::new(ErrorKind::Input, format!("`match`: {e}")))
        })
        .transpose()
}

async fn logs(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let i: Input = parse(input)?;
    let target = Target::of(i.target.as_deref(), i.selector.as_deref())?;
    let re = filter(i.pattern.as_deref(), i.ignore_case.unwrap_or(false))?;
    let mut lp = LogParams {
        previous: i.previous.unwrap_or(false),
        timestamps: i.timestamps.unwrap_or(false),
        ..LogParams::default()
    };
    if let Some(t) = i.tail {
        if t < 0 {
            return Err(StepError::new(
                ErrorKind::Input,
                "`tail` must not be negative",
            ));
        }
        lp.tail_lines = Some(t);
    }
    if let Some(s) = &i.since {
        let d = duration("since", s)?;
        // The API counts whole seconds and refuses 0.
        lp.since_seconds = Some(i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX));
    }
    let kube = Kube::of(ctx).await?;
    let ns = kube.namespace(i.namespace.as_deref());
    let found = pods::matching(&kube, &ns, &target).await?;
    ctx.progress(format!("reading the logs of {} pod(s)", found.len()));
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
    let mut reads = Vec::new();
    for p in &found {
        let container = pods::container(p, i.container.as_deref(), &ns)?;
        let mut lp = lp.clone();
        lp.container = Some(container.clone());
        reads.push(read_one(
            &kube,
            &api,
            &ns,
            pods::name(p).to_string(),
            container,
            lp,
            re.as_ref(),
            ctx,
        ));
    }
    // In pod order, at most CONCURRENT at once; the first failure fails the step, with what the
    // others found in its detail.
    let per_pod: Vec<PodLog> = futures_util::stream::iter(reads)
        .buffered(CONCURRENT)
        .try_collect()
        .await?;
    let mut lines = Vec::new();
    let mut matched = 0;
    for p in &per_pod {
        matched += p.matched;
        lines.extend(p.kept.iter().map(|l| format!("{}: {l}", p.pod)));
    }
    Ok(json!({
        "namespace": ns,
        "pods": per_pod.iter().map(PodLog::json).collect::<Vec<_>>(),
        "lines": lines,
        "matched": matched,
    }))
}

struct PodLog {
    pod: String,
    container: String,
    lines: usize,
    matched: usize,
    kept: Vec<String>,
}

impl PodLog {
    fn json(&self) -> Value {
        json!({
            "pod": self.pod, "container": self.container, "lines": self.lines,
            "matched": self.matched, "kept": self.kept,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_one(
    kube: &Kube,
    api: &Api<Pod>,
    ns: &str,
    pod: String,
    container: String,
    lp: LogParams,
    re: Option<&Regex>,
    ctx: &StepContext,
) -> Result<PodLog, StepError> {
    let what = format!("the log of pod `{pod}` (container `{container}`) in namespace `{ns}`");
    let stream = api
        .log_stream(&pod, &lp)
        .await
        .map_err(|e| kube.error(&format!("read {what}"), e))?;
    let mut stream = std::pin::pin!(stream);
    let mut out = PodLog {
        pod,
        container,
        lines: 0,
        matched: 0,
        kept: Vec::new(),
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = tokio::select! {
            read = stream.read_until(b'\n', &mut buf) => read,
            () = ctx.cancel.cancelled() => {
                return Err(StepError::new(
                    ErrorKind::Timeout,
                    format!("stopped reading {what} after {} lines", out.lines),
                ));
            }
        };
        match read {
            Ok(0) => return Ok(out),
            Ok(_) => {}
            Err(e) => {
                return Err(StepError::new(
                    ErrorKind::Connect,
                    format!(
                        "reading {what}: the stream broke after {} lines: {e}",
                        out.lines
                    ),
                )
                .with_detail(out.json()));
            }
        }
        // A log line need not be UTF-8; a line of it still is worth reading.
        let text = String::from_utf8_lossy(&buf);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line).to_string();
        out.lines += 1;
        if re.is_none_or(|re| re.is_match(&line)) {
            out.matched += 1;
            ctx.output
                .write(format!("{}: {line}\n", out.pod).as_bytes());
            if out.kept.len() < KEPT {
                out.kept.push(line);
            }
        }
    }
}
