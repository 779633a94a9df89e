//! `prometheus.query` and `prometheus.query_range`: PromQL through the HTTP API v1, answered as typed
//! samples and series.
//!
//! Values are numbers. NaN and ±Inf, which JSON cannot carry, are kept as Prometheus wrote them in
//! `value_text` ("NaN", "+Inf", "-Inf") and such a sample or point has **no** `value`: minijinja orders
//! a string or `null` against a number without complaint (`"NaN" > 0.7` and `none < 0.7` are both
//! true), while a missing value is an error under the engine's strict undefined. So
//! `samples[0].value < 0.7` over NaN fails the condition instead of quietly deciding it.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{Map, Number, Value, json};

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::web::{Answer, Api, describe_status, head_chars};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

const SERVICE: &str = "Prometheus";

const REQUIRE_RESULT: Field = Field::opt(
    "require_result",
    FieldType::Bool,
    "Fail (kind `condition`) when the answer has no samples or series; by default an empty answer \
     is a result (`samples: []`).",
);

static QUERY: PluginInfo = PluginInfo {
    name: "prometheus.query",
    summary: "Evaluate a PromQL expression at one instant (now, or `time`). Values are numbers; a \
              NaN or ±Inf sample has no `value`, only `value_text`, so a condition over it fails \
              instead of deciding on it.",
    class: SideEffect::Read,
    fields: &[
        Field::req(
            "query",
            FieldType::String,
            "The PromQL expression, e.g. `min by (specialist_type) (neural_hive_mlflow_model_f1)`.",
        ),
        Field::opt(
            "time",
            FieldType::Any,
            "Evaluation instant: RFC 3339 (`2026-11-30T10:00:00Z`) or Unix seconds (default: now). \
             At now, only samples of the last 5 minutes count.",
        ),
        REQUIRE_RESULT,
    ],
    exactly_one_of: &[],
    output: "{ result_type: vector | scalar | string | matrix, samples: [{ labels, t, value or \
             value_text }] (vector), series (matrix, from a range selector), value or value_text \
             and t (scalar, string), non_finite: number of NaN/±Inf values, warnings: [text] }",
    example: "query: runbook_fixture_gauge\ntime: \"2026-11-30T10:00:00Z\"",
    connection: Some("prometheus"),
};

static QUERY_RANGE: PluginInfo = PluginInfo {
    name: "prometheus.query_range",
    summary: "Evaluate a PromQL expression over a time range, one point every `step`. A NaN or ±Inf \
              point has no `value`, only `value_text`.",
    class: SideEffect::Read,
    fields: &[
        Field::req("query", FieldType::String, "The PromQL expression."),
        Field::opt(
            "start",
            FieldType::Any,
            "First instant: RFC 3339 or Unix seconds. Exactly one of `start` and `range`.",
        ),
        Field::opt(
            "range",
            FieldType::Duration,
            "How far back from `end` to start, e.g. `1h`. Exactly one of `start` and `range`.",
        ),
        Field::opt(
            "end",
            FieldType::Any,
            "Last instant: RFC 3339 or Unix seconds (default: now).",
        ),
        Field::req(
            "step",
            FieldType::Duration,
            "Time between points, e.g. `1m` (Prometheus allows 11,000 points per series).",
        ),
        REQUIRE_RESULT,
    ],
    exactly_one_of: &[&["start", "range"]],
    output: "{ result_type: matrix, series: [{ labels, points: [{ t, value or value_text }] }], \
             non_finite: number of NaN/±Inf points, warnings: [text] }",
    example: "query: rate(http_requests_total[5m])\nrange: 1h\nstep: 1m",
    connection: Some("prometheus"),
};

/// The `with:` block of `prometheus.query`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryInput {
    query: String,
    time: Option<Value>,
    require_result: Option<bool>,
}

/// The `with:` block of `prometheus.query_range`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeInput {
    query: String,
    start: Option<Value>,
    range: Option<Value>,
    end: Option<Value>,
    step: Value,
    require_result: Option<bool>,
}

pub struct Query;

pub struct QueryRange;

impl Plugin for Query {
    fn info(&self) -> &'static PluginInfo {
        &QUERY
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: QueryInput = serde_json::from_value(input).map_err(StepError::input)?;
            let mut params = vec![("query", i.query.clone())];
            if let Some(t) = &i.time {
                params.push(("time", seconds(instant("time", t)?)));
            }
            let data = call(ctx, &["api", "v1", "query"], &params, &i.query).await?;
            typed(&i.query, &data, i.require_result.unwrap_or(false))
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<QueryInput>(input)
    }
}

impl Plugin for QueryRange {
    fn info(&self) -> &'static PluginInfo {
        &QUERY_RANGE
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: RangeInput = serde_json::from_value(input).map_err(StepError::input)?;
            let end = match &i.end {
                Some(e) => instant("end", e)?,
                None => jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
            };
            let start = match (&i.start, &i.range) {
                (Some(s), None) => instant("start", s)?,
                (None, Some(r)) => end - duration("range", r)?.as_secs_f64(),
                _ => {
                    return Err(StepError::new(
                        ErrorKind::Input,
                        "give exactly one of `start` and `range`",
                    ));
                }
            };
            let step = duration("step", &i.step)?;
            if step.is_zero() {
                return Err(StepError::new(
                    ErrorKind::Input,
                    "`step` must be longer than zero",
                ));
            }
            let params = [
                ("query", i.query.clone()),
                ("start", seconds(start)),
                ("end", seconds(end)),
                ("step", seconds(step.as_secs_f64())),
            ];
            let data = call(ctx, &["api", "v1", "query_range"], &params, &i.query).await?;
            typed(&i.query, &data, i.require_result.unwrap_or(false))
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<RangeInput>(input)
    }
}

/// Asks Prometheus and returns the answer's `data`, or the error Prometheus gave, in its words.
async fn call(
    ctx: &StepContext,
    path: &[&str],
    params: &[(&str, String)],
    query: &str,
) -> Result<Value, StepError> {
    let conn: &Connection = ctx.connection("prometheus")?;
    let api = Api::of(conn, SERVICE)?;
    let mut url: Url = api.endpoint(path);
    url.query_pairs_mut()
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    let answer = api
        .send(ctx, conn, Method::GET, url, None, &head_chars(query, 80))
        .await?;
    data_of(&answer)
}

/// The `data` of a successful answer; otherwise a step error quoting Prometheus's `errorType` and
/// `error`, or its status and body when it did not answer as the API does (a proxy, a crash).
fn data_of(answer: &Answer) -> Result<Value, StepError> {
    let parsed: Result<Value, _> = serde_json::from_slice(&answer.body);
    let status = describe_status(answer.status);
    let at = &answer.url;
    match parsed {
        Ok(mut v) if v.get("status").and_then(Value::as_str) == Some("success") => {
            Ok(v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
        }
        Ok(v) if v.get("status").and_then(Value::as_str) == Some("error") => {
            let error_type = v.get("errorType").and_then(Value::as_str).unwrap_or("");
            let error = v.get("error").and_then(Value::as_str).unwrap_or("");
            // A query Prometheus cannot parse stays wrong on a retry; its own timeout may not.
            let kind = match error_type {
                "bad_data" => ErrorKind::Input,
                "timeout" => ErrorKind::Timeout,
                _ => ErrorKind::Status,
            };
            Err(StepError::new(
                kind,
                format!("{SERVICE} at {at} answered {status}: {error_type}: {error}"),
            )
            .with_detail(json!({
                "status": answer.status.as_u16(),
                "error_type": error_type,
                "error": error,
            })))
        }
        _ if !answer.status.is_success() => Err(StepError::new(
            ErrorKind::Status,
            format!("{SERVICE} at {at} answered {status}; {}", answer.quoted()),
        )
        .with_detail(json!({ "status": answer.status.as_u16(), "body": answer.text() }))),
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(_) => "no `status` field".to_owned(),
            };
            Err(StepError::new(
                ErrorKind::Parse,
                format!(
                    "{SERVICE} at {at} answered {status} but not with the API's JSON ({why}); {}",
                    answer.quoted()
                ),
            )
            .with_detail(json!({ "status": answer.status.as_u16(), "body": answer.text() })))
        }
    }
}

/// The typed result of an answer's `data`.
fn typed(query: &str, data: &Value, require_result: bool) -> Result<Value, StepError> {
    let bad = |why: String| {
        StepError::new(
            ErrorKind::Parse,
            format!("{SERVICE} answered `{query}` with data this step cannot read: {why}"),
        )
        .with_detail(data.clone())
    };
    let result_type = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `resultType`".into()))?;
    let result = data.get("result").unwrap_or(&Value::Null);
    let mut non_finite = 0;
    let mut out = Map::new();
    out.insert("result_type".into(), json!(result_type));
    let found = match result_type {
        "vector" => {
            let samples = list(result)
                .ok_or_else(|| bad("`result` is not a list".into()))?
                .iter()
                .map(|s| {
                    let mut sample = point(s.get("value"), &mut non_finite)
                        .ok_or_else(|| bad(format!("a sample without a value: {s}")))?;
                    sample.insert("labels".into(), labels(s));
                    Ok(Value::Object(sample))
                })
                .collect::<Result<Vec<_>, StepError>>()?;
            let n = samples.len();
            out.insert("samples".into(), Value::Array(samples));
            n
        }
        "matrix" => {
            let series = list(result)
                .ok_or_else(|| bad("`result` is not a list".into()))?
                .iter()
                .map(|s| {
                    let points = list(s.get("values").unwrap_or(&Value::Null))
                        .ok_or_else(|| bad(format!("a series without values: {s}")))?
                        .iter()
                        .map(|p| {
                            point(Some(p), &mut non_finite)
                                .map(Value::Object)
                                .ok_or_else(|| bad(format!("a point that is not [t, value]: {p}")))
                        })
                        .collect::<Result<Vec<_>, StepError>>()?;
                    Ok(json!({ "labels": labels(s), "points": points }))
                })
                .collect::<Result<Vec<_>, StepError>>()?;
            let n = series.len();
            out.insert("series".into(), Value::Array(series));
            n
        }
        "scalar" => {
            let p = point(Some(result), &mut non_finite)
                .ok_or_else(|| bad(format!("a scalar that is not [t, value]: {result}")))?;
            out.extend(p);
            1
        }
        "string" => {
            let (t, text) = pair(result)
                .ok_or_else(|| bad(format!("a string that is not [t, text]: {result}")))?;
            out.insert("t".into(), t);
            out.insert("value".into(), json!(text));
            1
        }
        other => return Err(bad(format!("unknown resultType `{other}`"))),
    };
    if require_result && found == 0 {
        return Err(StepError::new(
            ErrorKind::Condition,
            format!("`{query}` has no samples (require_result is true)"),
        ));
    }
    out.insert("non_finite".into(), json!(non_finite));
    let warnings = data.get("warnings").cloned().unwrap_or_else(|| json!([]));
    out.insert("warnings".into(), warnings);
    Ok(Value::Object(out))
}

fn list(v: &Value) -> Option<&[Value]> {
    v.as_array().map(Vec::as_slice)
}

fn labels(item: &Value) -> Value {
    item.get("metric")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// `[t, "text"]`.
fn pair(v: &Value) -> Option<(Value, &str)> {
    match v.as_array()?.as_slice() {
        [t, Value::String(text)] if t.is_number() => Some((t.clone(), text)),
        _ => None,
    }
}

/// `{ t, value }` from `[t, "value"]`, or `{ t, value_text }` when the value is NaN or ±Inf.
fn point(v: Option<&Value>, non_finite: &mut usize) -> Option<Map<String, Value>> {
    let (t, text) = pair(v?)?;
    let x: f64 = text.parse().ok()?;
    let mut p = Map::new();
    p.insert("t".into(), t);
    if x.is_finite() {
        p.insert("value".into(), number(x));
    } else {
        *non_finite += 1;
        p.insert("value_text".into(), json!(text));
    }
    Some(p)
}

/// A whole number as an integer (`120`, not `120.0`, when a template prints it); others as floats.
fn number(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer up to here is exact in f64
    if x.fract() == 0.0 && x.abs() <= EXACT {
        json!(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// Unix seconds from `time`/`start`/`end`: a number of seconds, or RFC 3339 text.
fn instant(field: &str, v: &Value) -> Result<f64, StepError> {
    let bad = || {
        StepError::new(
            ErrorKind::Input,
            format!(
                "`{field}`: `{}` is neither RFC 3339 (`2026-11-30T10:00:00Z`) nor Unix seconds",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            ),
        )
    };
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) => Some(x),
            Err(_) => s
                .trim()
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond() as f64 / 1000.0),
        },
        _ => None,
    };
    secs.filter(|x| x.is_finite()).ok_or_else(bad)
}

/// A duration field: `5m`, or a number of seconds.
fn duration(field: &str, v: &Value) -> Result<Duration, StepError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    crate::parse_duration(&text)
        .map_err(|e| StepError::new(ErrorKind::Input, format!("`{field}`: {e}")))
}

/// Seconds as Prometheus takes them, to the millisecond.
fn seconds(x: f64) -> String {
    format!("{x:.3}")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::{Query, QueryRange};
    use crate::connection::{Connection, kind};
    use crate::testkit::{
        CountingProxy, Harness, canned_server, closed_port_url, err, http_response, ok, service,
        silent_server,
    };
    use crate::{ErrorKind, Plugin};

    /// A step context whose `prometheus` connection points at `url`, with more fields if given.
    fn at(url: &str, more: &[(&str, &str)]) -> Harness {
        let mut fields = serde_json::Map::new();
        fields.insert("url".into(), json!(url));
        for (k, v) in more {
            fields.insert((*k).into(), json!(v));
        }
        let conn = Connection::new("prom", kind("prometheus").expect("a kind"), fields);
        Harness::new("q").with_connection(conn)
    }

    /// The real Prometheus of `dev/services` and the end of its backfilled history.
    fn fixture() -> Option<(String, i64)> {
        let url = service("RUNBOOK_TEST_PROMETHEUS_URL")?;
        let end = service("RUNBOOK_TEST_PROMETHEUS_HISTORY_END")?
            .parse()
            .expect("RUNBOOK_TEST_PROMETHEUS_HISTORY_END is Unix seconds");
        Some((url, end))
    }

    fn labels(name: &str, key: &str, value: &str) -> Value {
        json!({ "__name__": name, "job": "fixture", key: value })
    }

    #[tokio::test]
    async fn an_instant_query_at_a_past_time_gives_the_fixture_values_and_keeps_nan() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let rfc3339 = jiff::Timestamp::from_second(end)
            .expect("a time")
            .to_string();
        let r = ok(h
            .call(
                &Query,
                json!({ "query": "runbook_fixture_gauge", "time": rfc3339 }),
            )
            .await);
        let gauge = |t: &str| labels("runbook_fixture_gauge", "specialist_type", t);
        assert_eq!(
            r,
            json!({
                "result_type": "vector",
                "samples": [
                    { "labels": gauge("churn"), "t": end, "value": 0.62 },
                    { "labels": gauge("fraud"), "t": end, "value": 0.91 },
                    { "labels": gauge("nan"), "t": end, "value_text": "NaN" },
                ],
                "non_finite": 1,
                "warnings": [],
            })
        );

        // An hour before the end, as a number of seconds: series a is at (7200 - 3600) / 60.
        let r = ok(h
            .call(
                &Query,
                json!({ "query": "runbook_fixture_counter", "time": end - 3600 }),
            )
            .await);
        let counter = |s: &str| labels("runbook_fixture_counter", "series", s);
        assert_eq!(
            r["samples"],
            json!([
                { "labels": counter("a"), "t": end - 3600, "value": 60 },
                { "labels": counter("b"), "t": end - 3600, "value": 120 },
            ])
        );
    }

    #[tokio::test]
    async fn an_instant_query_now_is_evaluated_now() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let before = jiff::Timestamp::now().as_second();
        // `@` pins the selector to the history's end while the query itself is evaluated now.
        let r = ok(h
            .call(
                &Query,
                json!({ "query": format!("sum(runbook_fixture_counter @ {end})") }),
            )
            .await);
        let after = jiff::Timestamp::now().as_second();
        assert_eq!(r["samples"][0]["value"], json!(360), "{r}");
        assert_eq!(r["samples"][0]["labels"], json!({}));
        let t = r["samples"][0]["t"].as_f64().expect("t is a number");
        assert!(
            (before as f64 - 1.0..=after as f64 + 1.0).contains(&t),
            "evaluated at {t}, not between {before} and {after}"
        );
    }

    #[tokio::test]
    async fn scalars_strings_and_infinities_are_typed() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let q = |query: String| h.call(&Query, json!({ "query": query, "time": end }));
        let r = ok(q("scalar(sum(runbook_fixture_counter))".into()).await);
        assert_eq!(
            r,
            json!({ "result_type": "scalar", "t": end, "value": 360, "non_finite": 0, "warnings": [] })
        );
        let r = ok(q("1/0".into()).await);
        assert_eq!(
            (&r["value_text"], &r["non_finite"]),
            (&json!("+Inf"), &json!(1))
        );
        assert!(r.get("value").is_none(), "{r}");
        let r = ok(q("-1/0".into()).await);
        assert_eq!(r["value_text"], "-Inf");
        let r = ok(q("\"ok\"".into()).await);
        assert_eq!(
            (&r["result_type"], &r["value"]),
            (&json!("string"), &json!("ok"))
        );
        let r = ok(q("runbook_fixture_gauge{specialist_type=\"fraud\"} / 2".into()).await);
        assert_eq!(r["samples"][0]["value"], 0.455);
    }

    #[tokio::test]
    async fn a_range_query_gives_every_point_of_the_backfill() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let points = |first: i64, factor: i64| {
            (0..=5)
                .map(|i| json!({ "t": end - 300 + 60 * i, "value": factor * (first + i) }))
                .collect::<Vec<_>>()
        };
        let r = ok(h
            .call(
                &QueryRange,
                json!({ "query": "runbook_fixture_counter", "start": end - 300, "end": end, "step": "1m" }),
            )
            .await);
        assert_eq!(
            r,
            json!({
                "result_type": "matrix",
                "series": [
                    { "labels": labels("runbook_fixture_counter", "series", "a"), "points": points(115, 1) },
                    { "labels": labels("runbook_fixture_counter", "series", "b"), "points": points(115, 2) },
                ],
                "non_finite": 0,
                "warnings": [],
            })
        );
        // `range` counts back from `end`; the NaN series keeps its points as text.
        let r = ok(h
            .call(
                &QueryRange,
                json!({
                    "query": "runbook_fixture_gauge{specialist_type=\"nan\"}",
                    "range": "2m",
                    "end": end.to_string(),
                    "step": 60,
                }),
            )
            .await);
        assert_eq!(
            r["series"][0]["points"],
            json!([
                { "t": end - 120, "value_text": "NaN" },
                { "t": end - 60, "value_text": "NaN" },
                { "t": end, "value_text": "NaN" },
            ])
        );
        assert_eq!(r["non_finite"], 3);
    }

    #[tokio::test]
    async fn an_empty_answer_is_a_result_unless_one_is_required() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let input = json!({ "query": "runbook_fixture_absent_metric", "time": end });
        let r = ok(h.call(&Query, input.clone()).await);
        assert_eq!(r["samples"], json!([]));
        let mut required = input;
        required["require_result"] = json!(true);
        let e = err(h.call(&Query, required).await);
        assert_eq!(e.kind, ErrorKind::Condition);
        assert_eq!(
            e.message,
            "`runbook_fixture_absent_metric` has no samples (require_result is true)"
        );
        let e = err(h
            .call(
                &QueryRange,
                json!({ "query": "runbook_fixture_absent_metric", "range": "5m", "step": "1m", "require_result": true }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Condition);
    }

    #[tokio::test]
    async fn prometheus_errors_are_quoted_with_their_type() {
        let Some((url, end)) = fixture() else { return };
        let h = at(&url, &[]);
        let e = err(h.call(&Query, json!({ "query": "sum(rate(x[5m)" })).await);
        assert_eq!(e.kind, ErrorKind::Input, "{}", e.message);
        assert_eq!(
            e.message,
            format!(
                "Prometheus at {url}/api/v1/query?query=sum%28rate%28x%5B5m%29 answered 400 Bad Request: \
                 bad_data: invalid parameter \"query\": 1:14: parse error: unexpected \")\" in subquery \
                 or range, expected \":\" or \"]\""
            )
        );
        let detail = e.detail.expect("detail");
        assert_eq!(detail["error_type"], "bad_data");
        assert_eq!(detail["status"], 400);

        // Well-formed but not evaluable: 422, errorType `execution`.
        let e = err(h
            .call(
                &Query,
                json!({ "query": "runbook_fixture_counter + on(job) runbook_fixture_counter", "time": end }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert!(
            e.message
                .contains("answered 422 Unprocessable Entity: execution: found duplicate series")
                && e.message.contains("many-to-many matching not allowed"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn bad_inputs_fail_before_asking() {
        let h = at(&closed_port_url(), &[]);
        for (plugin, input, needle) in [
            (
                &Query as &dyn Plugin,
                json!({ "query": "up", "time": "yesterday" }),
                "`time`: `yesterday` is neither RFC 3339",
            ),
            (
                &QueryRange,
                json!({ "query": "up", "range": "1h", "start": 1, "step": "1m" }),
                "exactly one of `start` and `range`",
            ),
            (
                &QueryRange,
                json!({ "query": "up", "range": "1h", "step": "0s" }),
                "`step` must be longer than zero",
            ),
            (
                &QueryRange,
                json!({ "query": "up", "range": "soon", "step": "1m" }),
                "`range`: `soon` is not a duration",
            ),
            (
                &Query,
                json!({ "query": "up", "timeout": "5s" }),
                "unknown field `timeout`",
            ),
        ] {
            let e = err(h.call(plugin, input.clone()).await);
            assert_eq!(e.kind, ErrorKind::Input, "{input}: {}", e.message);
            assert!(e.message.contains(needle), "{input}: {}", e.message);
        }
        let e = err(crate::testkit::call(&Query, json!({ "query": "up" })).await);
        assert!(
            e.message.contains("needs a `prometheus` connection"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_a_connect_error_naming_the_url() {
        let url = closed_port_url();
        let e = err(at(&url, &[]).call(&Query, json!({ "query": "up" })).await);
        assert_eq!(e.kind, ErrorKind::Connect);
        assert!(
            e.message.starts_with(&format!(
                "Prometheus at {url}/api/v1/query?query=up: GET failed: "
            )),
            "{}",
            e.message
        );
        assert!(
            e.message.to_lowercase().contains("connection refused"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_broken_answer_is_a_status_or_parse_error_quoting_it() {
        let (url, _) = canned_server(http_response(
            "500 Internal Server Error",
            "text/plain",
            "upstream connect error",
        ));
        let e = err(at(&url, &[]).call(&Query, json!({ "query": "up" })).await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert_eq!(
            e.message,
            format!(
                "Prometheus at {url}/api/v1/query?query=up answered 500 Internal Server Error; body: upstream connect error"
            )
        );

        let (url, _) = canned_server(http_response(
            "200 OK",
            "application/json",
            "{\"status\": \"succ",
        ));
        let e = err(at(&url, &[]).call(&Query, json!({ "query": "up" })).await);
        assert_eq!(e.kind, ErrorKind::Parse);
        assert!(
            e.message
                .contains("answered 200 OK but not with the API's JSON (EOF while parsing")
                && e.message.ends_with("; body: {\"status\": \"succ"),
            "{}",
            e.message
        );

        // Prometheus's own error body behind a 503 (e.g. a query that was cancelled).
        let (url, _) = canned_server(http_response(
            "503 Service Unavailable",
            "application/json",
            r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
        ));
        let e = err(at(&url, &[]).call(&Query, json!({ "query": "up" })).await);
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(
            e.message.ends_with(
                "answered 503 Service Unavailable: timeout: query timed out in expression evaluation"
            ),
            "{}",
            e.message
        );

        let (url, _) = canned_server(http_response(
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        ));
        let e = err(at(&url, &[]).call(&Query, json!({ "query": "up" })).await);
        assert_eq!(e.kind, ErrorKind::Parse);
        assert!(
            e.message.contains("a sample without a value"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn the_bearer_token_is_sent_and_the_progress_line_names_the_query() {
        let (url, heads) = canned_server(http_response(
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        ));
        let mut h = at(&url, &[("bearer_token", "tok-1234")]);
        ok(h.call(&Query, json!({ "query": "up == 0" })).await);
        let head = heads.recv().expect("a request").to_ascii_lowercase();
        assert!(
            head.starts_with("get /api/v1/query?query=up+%3d%3d+0 "),
            "{head}"
        );
        assert!(head.contains("authorization: bearer tok-1234"), "{head}");
        assert_eq!(*h.progress.borrow_and_update(), "Prometheus: up == 0");
    }

    #[tokio::test]
    async fn a_cancelled_call_stops_at_once_and_closes_its_connection() {
        let (url, seen) = silent_server();
        let h = at(&url, &[]);
        let cancel = h.ctx.cancel.clone();
        let started = Instant::now();
        let call = h.call(&Query, json!({ "query": "up" }));
        let stopper = async {
            // The request reached the server: cancel now, as the engine does at the deadline.
            let head = tokio::task::spawn_blocking(move || {
                let head = seen.recv_timeout(Duration::from_secs(30));
                (head, seen)
            })
            .await
            .expect("join");
            cancel.cancel();
            head
        };
        let (r, (head, seen)) = tokio::join!(call, stopper);
        let e = err(r);
        assert!(
            head.expect("the request arrived")
                .starts_with("GET /api/v1/query")
        );
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.message.contains("stopped after"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(10));
        let closed =
            tokio::task::spawn_blocking(move || seen.recv_timeout(Duration::from_secs(10)))
                .await
                .expect("join");
        assert_eq!(
            closed.as_deref(),
            Ok("closed"),
            "the connection is left open"
        );
    }

    #[tokio::test]
    async fn twenty_queries_through_one_connection_use_one_tcp_connection() {
        let Some((url, end)) = fixture() else { return };
        let target = url.trim_start_matches("http://").trim_end_matches('/');
        let proxy = CountingProxy::start(target);
        let h = at(&proxy.url, &[]);
        for i in 0..20 {
            let r = ok(h
                .call(
                    &Query,
                    json!({ "query": "sum(runbook_fixture_counter)", "time": end - 60 * i }),
                )
                .await);
            assert_eq!(r["samples"][0]["value"], json!(3 * (120 - i)));
        }
        eprintln!("20 queries, {} TCP connection(s)", proxy.accepted());
        assert_eq!(proxy.accepted(), 1);
    }
}
