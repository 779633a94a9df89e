//! `alertmanager.alerts` and `alertmanager.silence`: read alerts and silence them through the
//! Alertmanager API v2, with matchers written as Prometheus writes them (`alertname=~"MLModel.*"`).

pub mod matchers;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::web::{Answer, Api, describe_status, head_chars};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};
use matchers::parse_all;
pub use matchers::{Matcher, parse_matchers};

const SERVICE: &str = "Alertmanager";

static ALERTS: PluginInfo = PluginInfo {
    name: "alertmanager.alerts",
    summary: "List the alerts Alertmanager holds, filtered by label matchers and state.",
    class: SideEffect::Read,
    fields: &[
        Field::opt(
            "matchers",
            FieldType::List(&FieldType::String),
            "Label matchers, all of which an alert matches: `name=\"v\"`, `name!=\"v\"`, \
             `name=~\"regex\"`, `name!~\"regex\"`; an item may hold several in braces, \
             `{alertname=~\"MLModel.*\", severity=\"warning\"}`.",
        ),
        Field::opt(
            "active",
            FieldType::Bool,
            "Include active alerts (default true).",
        ),
        Field::opt(
            "silenced",
            FieldType::Bool,
            "Include silenced alerts (default true).",
        ),
        Field::opt(
            "inhibited",
            FieldType::Bool,
            "Include inhibited alerts (default true).",
        ),
    ],
    exactly_one_of: &[],
    output: "{ alerts: [{ labels, annotations, starts_at, ends_at, status: active | suppressed | \
             unprocessed, silenced_by: [id], inhibited_by: [fingerprint], fingerprint, \
             generator_url }], count }",
    example: "matchers: ['alertname=~\"MLModel.*\"']\nsilenced: false\ninhibited: false",
    connection: Some("alertmanager"),
};

static SILENCE: PluginInfo = PluginInfo {
    name: "alertmanager.silence",
    summary: "Silence the alerts matching `matchers` for `duration`. Idempotent by matchers and \
              comment: when an active silence has both already, it is returned (`created: false`) \
              and nothing is created.",
    class: SideEffect::Idempotent,
    fields: &[
        Field::req(
            "matchers",
            FieldType::List(&FieldType::String),
            "Label matchers, as for `alertmanager.alerts` (at least one).",
        ),
        Field::req(
            "duration",
            FieldType::Duration,
            "How long from now, e.g. `2h`.",
        ),
        Field::req(
            "comment",
            FieldType::String,
            "Why; with the matchers, what makes two silences the same one.",
        ),
        Field::opt(
            "created_by",
            FieldType::String,
            "Who it is signed by (default: the run's actor).",
        ),
    ],
    exactly_one_of: &[],
    output: "{ id, created: boolean, matchers: [text], starts_at, ends_at, comment, created_by }",
    example: "matchers: ['alertname=\"MLModelDegraded\"', 'specialist_type=\"technical\"']\nduration: 2h\ncomment: rolled back to the previous model; watching F1",
    connection: Some("alertmanager"),
};

/// The `with:` block of `alertmanager.alerts`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsInput {
    matchers: Option<Vec<String>>,
    active: Option<bool>,
    silenced: Option<bool>,
    inhibited: Option<bool>,
}

/// The `with:` block of `alertmanager.silence`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceInput {
    matchers: Vec<String>,
    duration: Value,
    comment: String,
    created_by: Option<String>,
}

pub struct Alerts;

pub struct Silence;

impl Plugin for Alerts {
    fn info(&self) -> &'static PluginInfo {
        &ALERTS
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: AlertsInput = serde_json::from_value(input).map_err(StepError::input)?;
            let matchers = parse_all(i.matchers.as_deref().unwrap_or_default())?;
            let (conn, api) = api(ctx)?;
            let mut url = api.endpoint(&["api", "v2", "alerts"]);
            {
                let mut q = url.query_pairs_mut();
                for m in &matchers {
                    q.append_pair("filter", &m.to_string());
                }
                for (name, v) in [
                    ("active", i.active),
                    ("silenced", i.silenced),
                    ("inhibited", i.inhibited),
                ] {
                    if let Some(v) = v {
                        q.append_pair(name, if v { "true" } else { "false" });
                    }
                }
            }
            if url.query() == Some("") {
                url.set_query(None);
            }
            let what = format!("alerts {}", shown(&matchers));
            let answer = api.send(ctx, conn, Method::GET, url, None, &what).await?;
            let list = json_of(&answer)?;
            let alerts = list
                .as_array()
                .ok_or_else(|| unreadable(&answer, "not a list of alerts"))?
                .iter()
                .map(alert)
                .collect::<Vec<_>>();
            Ok(json!({ "count": alerts.len(), "alerts": alerts }))
        })
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<AlertsInput>(input)
    }
}

/// An alert as the result shows it: Alertmanager's fields in snake case, the state flattened.
fn alert(a: &Value) -> Value {
    let field = |name: &str| a.get(name).cloned().unwrap_or(Value::Null);
    let status = a.get("status").unwrap_or(&Value::Null);
    let list = |name: &str| status.get(name).cloned().unwrap_or_else(|| json!([]));
    json!({
        "labels": a.get("labels").cloned().unwrap_or_else(|| json!({})),
        "annotations": a.get("annotations").cloned().unwrap_or_else(|| json!({})),
        "starts_at": field("startsAt"),
        "ends_at": field("endsAt"),
        "status": status.get("state").cloned().unwrap_or(Value::Null),
        "silenced_by": list("silencedBy"),
        "inhibited_by": list("inhibitedBy"),
        "fingerprint": field("fingerprint"),
        "generator_url": field("generatorURL"),
    })
}

impl Plugin for Silence {
    fn info(&self) -> &'static PluginInfo {
        &SILENCE
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let want = Wanted::of(input, ctx)?;
            let (conn, api) = api(ctx)?;
            if let Some(existing) = find(ctx, conn, &api, &want).await? {
                return Ok(existing);
            }
            let now = now();
            let ends = end_of(now, want.duration)?;
            let body = json!({
                "matchers": want.matchers.iter().map(Matcher::to_api).collect::<Vec<_>>(),
                "startsAt": now.to_string(),
                "endsAt": ends.to_string(),
                "createdBy": want.created_by,
                "comment": want.comment,
            });
            let url = api.endpoint(&["api", "v2", "silences"]);
            let what = format!("silence {}", shown(&want.matchers));
            let answer = api
                .send(ctx, conn, Method::POST, url, Some(&body), &what)
                .await?;
            let created = json_of(&answer)?;
            let id = created
                .get("silenceID")
                .and_then(Value::as_str)
                .ok_or_else(|| unreadable(&answer, "no `silenceID`"))?;
            Ok(json!({
                "id": id,
                "created": true,
                "matchers": want.matchers.iter().map(Matcher::to_string).collect::<Vec<_>>(),
                "starts_at": now.to_string(),
                "ends_at": ends.to_string(),
                "comment": want.comment,
                "created_by": want.created_by,
            }))
        })
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let want = Wanted::of(input, ctx)?;
            let (conn, api) = api(ctx)?;
            let matchers = shown(&want.matchers);
            if let Some(existing) = find(ctx, conn, &api, &want).await? {
                let id = existing["id"].as_str().unwrap_or_default();
                let until = existing["ends_at"].as_str().unwrap_or_default();
                return Ok(json!({
                    "summary": format!(
                        "a silence of {matchers} with this comment is active already ({id}, until {until}): nothing to do"
                    ),
                    "existing": existing,
                }));
            }
            let ends = end_of(now(), want.duration)?;
            Ok(json!({
                "summary": format!(
                    "would silence {matchers} for {} (until about {ends}), signed {}: {}",
                    crate::duration::human(want.duration),
                    want.created_by,
                    want.comment
                ),
                "matchers": want.matchers.iter().map(Matcher::to_string).collect::<Vec<_>>(),
                "duration_s": want.duration.as_secs_f64(),
                "comment": want.comment,
                "created_by": want.created_by,
            }))
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<SilenceInput>(input)
    }
}

/// A silence as asked for, checked.
struct Wanted {
    matchers: Vec<Matcher>,
    duration: Duration,
    comment: String,
    created_by: String,
}

impl Wanted {
    fn of(input: Value, ctx: &StepContext) -> Result<Wanted, StepError> {
        let i: SilenceInput = serde_json::from_value(input).map_err(StepError::input)?;
        let mut matchers = parse_all(&i.matchers)?;
        if matchers.is_empty() {
            return Err(StepError::new(
                ErrorKind::Input,
                "`matchers`: a silence needs at least one matcher",
            ));
        }
        matchers.sort();
        matchers.dedup();
        let text = match &i.duration {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let duration = crate::parse_duration(&text)
            .map_err(|e| StepError::new(ErrorKind::Input, format!("`duration`: {e}")))?;
        if duration.is_zero() {
            return Err(StepError::new(
                ErrorKind::Input,
                "`duration` must be longer than zero",
            ));
        }
        if i.comment.trim().is_empty() {
            return Err(StepError::new(
                ErrorKind::Input,
                "`comment` must not be empty: Alertmanager requires one, and it says why",
            ));
        }
        let created_by = i
            .created_by
            .filter(|c| !c.trim().is_empty())
            .or_else(|| ctx.actor.clone())
            .unwrap_or_else(|| "runbook".to_string());
        Ok(Wanted {
            matchers,
            duration,
            comment: i.comment,
            created_by,
        })
    }
}

/// Now, to the millisecond: what Alertmanager keeps, and what reads well in a summary.
fn now() -> jiff::Timestamp {
    let ms = jiff::Timestamp::now().as_millisecond();
    jiff::Timestamp::from_millisecond(ms).unwrap_or_else(|_| jiff::Timestamp::now())
}

fn end_of(now: jiff::Timestamp, d: Duration) -> Result<jiff::Timestamp, StepError> {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .ok_or_else(|| StepError::new(ErrorKind::Input, "`duration` is too long"))
}

/// The active silence with the same matchers (in any order) and comment, as the step's result.
async fn find(
    ctx: &StepContext,
    conn: &Connection,
    api: &Api,
    want: &Wanted,
) -> Result<Option<Value>, StepError> {
    let url = api.endpoint(&["api", "v2", "silences"]);
    let answer = api
        .send(ctx, conn, Method::GET, url, None, "silences")
        .await?;
    let list = json_of(&answer)?;
    let silences = list
        .as_array()
        .ok_or_else(|| unreadable(&answer, "not a list of silences"))?;
    for s in silences {
        let active = s.pointer("/status/state").and_then(Value::as_str) == Some("active");
        let same_comment = s.get("comment").and_then(Value::as_str) == Some(want.comment.as_str());
        if !(active && same_comment) {
            continue;
        }
        let Some(mut theirs) = s
            .get("matchers")
            .and_then(Value::as_array)
            .and_then(|ms| ms.iter().map(Matcher::from_api).collect::<Option<Vec<_>>>())
        else {
            continue;
        };
        theirs.sort();
        theirs.dedup();
        if theirs == want.matchers {
            let text = |name: &str| s.get(name).cloned().unwrap_or(Value::Null);
            return Ok(Some(json!({
                "id": text("id"),
                "created": false,
                "matchers": theirs.iter().map(Matcher::to_string).collect::<Vec<_>>(),
                "starts_at": text("startsAt"),
                "ends_at": text("endsAt"),
                "comment": text("comment"),
                "created_by": text("createdBy"),
            })));
        }
    }
    Ok(None)
}

fn api(ctx: &StepContext) -> Result<(&Connection, std::sync::Arc<Api>), StepError> {
    let conn = ctx.connection("alertmanager")?;
    Ok((conn, Api::of(conn, SERVICE)?))
}

/// The answer's JSON, or a step error quoting what Alertmanager said instead: its errors are a JSON
/// string (`"bad matcher format: ..."`) or `{code, message}`.
fn json_of(answer: &Answer) -> Result<Value, StepError> {
    let parsed: Result<Value, _> = serde_json::from_slice(&answer.body);
    if answer.status.is_success() {
        return parsed.map_err(|e| unreadable(answer, &e.to_string()));
    }
    let said = match &parsed {
        Ok(Value::String(s)) => Some(s.clone()),
        Ok(v) => v.get("message").and_then(Value::as_str).map(str::to_owned),
        Err(_) => None,
    };
    let message = match said {
        Some(s) => format!(": {}", head_chars(&s, 500)),
        None => format!("; {}", answer.quoted()),
    };
    // A request Alertmanager refuses as malformed stays malformed on a retry.
    let kind = match answer.status.as_u16() {
        400 | 422 => ErrorKind::Input,
        _ => ErrorKind::Status,
    };
    Err(StepError::new(
        kind,
        format!(
            "{SERVICE} at {} answered {}{message}",
            answer.url,
            describe_status(answer.status)
        ),
    )
    .with_detail(json!({ "status": answer.status.as_u16(), "body": answer.text() })))
}

fn unreadable(answer: &Answer, why: &str) -> StepError {
    StepError::new(
        ErrorKind::Parse,
        format!(
            "{SERVICE} at {} answered {} but not with the API's JSON ({why}); {}",
            answer.url,
            describe_status(answer.status),
            answer.quoted()
        ),
    )
    .with_detail(json!({ "status": answer.status.as_u16(), "body": answer.text() }))
}

fn shown(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::{Alerts, Silence};
    use crate::connection::{Connection, kind};
    use crate::testkit::{Harness, closed_port_url, err, ok, service};
    use crate::{ErrorKind, Plugin};

    fn at(url: &str) -> Harness {
        let mut fields = serde_json::Map::new();
        fields.insert("url".into(), json!(url));
        let conn = Connection::new("am", kind("alertmanager").expect("a kind"), fields);
        let mut h = Harness::new("am").with_connection(conn);
        h.ctx.actor = Some("tester".into());
        h
    }

    /// Calls `plugin` until `done` accepts its result or 30 s pass (Alertmanager hears of an alert
    /// within seconds).
    async fn poll(
        h: &Harness,
        plugin: &dyn Plugin,
        input: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = ok(h.call(plugin, input.clone()).await);
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "still not there after 30 s: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[tokio::test]
    async fn the_always_firing_fixture_alert_is_found_by_its_matchers() {
        let Some(url) = service("RUNBOOK_TEST_ALERTMANAGER_URL") else {
            return;
        };
        let h = at(&url);
        let r = poll(
            &h,
            &Alerts,
            json!({ "matchers": [r#"alertname=~"RunbookFixture.*""#, "{fixture=\"yes\", severity!=\"page\"}"] }),
            |r| r["count"] == 1,
        )
        .await;
        let a = &r["alerts"][0];
        assert_eq!(
            a["labels"],
            json!({ "alertname": "RunbookFixtureAlwaysFiring", "fixture": "yes", "severity": "test" })
        );
        assert!(
            a["fingerprint"].as_str().is_some_and(|f| !f.is_empty()),
            "{a}"
        );
        assert!(
            a["starts_at"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "{a}"
        );
        // dev/services gives the fixture rule a summary; annotations come through as a mapping.
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("Always firing")),
            "{a}"
        );
        // A matcher it fails excludes it.
        let r = ok(h
            .call(&Alerts, json!({ "matchers": [r#"alertname="RunbookFixtureAlwaysFiring""#, "severity!=test"] }))
            .await);
        assert_eq!(r, json!({ "count": 0, "alerts": [] }));
    }

    /// Alertmanager's API, called directly: what the tests check the plugins against.
    async fn raw(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let client = crate::web::client().expect("client");
        let mut req = client.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("Alertmanager answers");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn silences_with_comment(url: &str, comment: &str) -> Vec<Value> {
        let all = raw(reqwest::Method::GET, format!("{url}/api/v2/silences"), None).await;
        all.as_array()
            .expect("a list")
            .iter()
            .filter(|s| s["comment"] == comment && s["status"]["state"] == "active")
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn a_silence_is_planned_then_created_once_and_silences_its_alert() {
        let Some(url) = service("RUNBOOK_TEST_ALERTMANAGER_URL") else {
            return;
        };
        let h = at(&url);
        // Names its own alert (posted below), so it silences nothing another test watches.
        let probe = format!(
            "s{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let comment = format!("runbook test {probe}");
        let input = json!({
            "matchers": ["alertname=\"RunbookSilenceProbe\"", format!("probe=~\"{probe}\"")],
            "duration": "10m",
            "comment": comment,
        });

        let plan = Silence.plan(input.clone(), &h.ctx).expect("silence plans");
        let plan = ok(plan.await);
        let summary = plan["summary"].as_str().expect("summary");
        assert!(
            summary.starts_with(&format!(
                "would silence {{alertname=\"RunbookSilenceProbe\", probe=~\"{probe}\"}} for 10m00s (until about "
            )) && summary.ends_with(&format!("signed tester: {comment}")),
            "{summary}"
        );
        assert!(
            silences_with_comment(&url, &comment).await.is_empty(),
            "plan created one"
        );

        let first = ok(h.call(&Silence, input.clone()).await);
        assert_eq!(first["created"], true);
        assert_eq!(first["created_by"], "tester");
        let id = first["id"].as_str().expect("an id").to_string();
        let seen = silences_with_comment(&url, &comment).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["id"], id.as_str());
        assert_eq!(seen[0]["createdBy"], "tester");
        assert_eq!(
            seen[0]["matchers"],
            json!([
                { "name": "alertname", "value": "RunbookSilenceProbe", "isRegex": false, "isEqual": true },
                { "name": "probe", "value": probe, "isRegex": true, "isEqual": true },
            ])
        );
        // Alertmanager moves a start it receives in the past (by the request's transit) to its now.
        let lasts = |s: &Value| {
            let t = |k: &str| {
                s[k].as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .expect("a time")
            };
            t("endsAt").duration_since(t("startsAt")).as_secs_f64()
        };
        assert!((590.0..=600.0).contains(&lasts(&seen[0])), "{seen:?}");

        // The same matchers in another order and the same comment: the same silence.
        let mut again = input.clone();
        again["matchers"] = json!([format!(
            "{{probe=~\"{probe}\", alertname=\"RunbookSilenceProbe\"}}"
        )]);
        let second = ok(h.call(&Silence, again.clone()).await);
        assert_eq!(
            (&second["created"], &second["id"]),
            (&json!(false), &json!(id))
        );
        assert_eq!(silences_with_comment(&url, &comment).await.len(), 1);
        let plan = ok(Silence.plan(again, &h.ctx).expect("plans").await);
        assert!(
            plan["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("is active already ({id}, until "))),
            "{plan}"
        );

        // An alert it matches is silenced, and the plugin sees it so.
        let ends = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        raw(
            reqwest::Method::POST,
            format!("{url}/api/v2/alerts"),
            Some(json!([{ "labels": { "alertname": "RunbookSilenceProbe", "probe": probe }, "endsAt": ends.to_string() }])),
        )
        .await;
        let filter = json!({ "matchers": [format!("probe=\"{probe}\"")] });
        let r = poll(&h, &Alerts, filter.clone(), |r| {
            r["alerts"][0]["status"] == "suppressed"
        })
        .await;
        assert_eq!(r["alerts"][0]["silenced_by"], json!([id]));
        let mut unsilenced = filter;
        unsilenced["silenced"] = json!(false);
        assert_eq!(ok(h.call(&Alerts, unsilenced).await)["count"], 0);
    }

    #[tokio::test]
    async fn what_alertmanager_refuses_is_quoted() {
        let Some(url) = service("RUNBOOK_TEST_ALERTMANAGER_URL") else {
            return;
        };
        let h = at(&url);
        let e = err(h
            .call(
                &Silence,
                json!({ "matchers": ["alertname=~\"(\""], "duration": "1m", "comment": "bad regex" }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Input, "{}", e.message);
        assert_eq!(
            e.message,
            format!(
                "Alertmanager at {url}/api/v2/silences answered 400 Bad Request: silence invalid: invalid label \
                 matcher 0: invalid regular expression \"(\": error parsing regexp: missing closing ): `(`"
            )
        );
    }

    #[tokio::test]
    async fn bad_inputs_and_a_server_that_is_down() {
        let down = closed_port_url();
        let h = at(&down);
        for (plugin, input, needle) in [
            (
                &Silence as &dyn Plugin,
                json!({ "matchers": ["a=\"1\"", "b ~ 2"], "duration": "1h", "comment": "c" }),
                "`matchers[1]`: `b ~ 2` has no `=`, `!=`, `=~` or `!~` after `b`",
            ),
            (
                &Silence,
                json!({ "matchers": [], "duration": "1h", "comment": "c" }),
                "a silence needs at least one matcher",
            ),
            (
                &Silence,
                json!({ "matchers": ["a=1"], "duration": "0s", "comment": "c" }),
                "`duration` must be longer than zero",
            ),
            (
                &Silence,
                json!({ "matchers": ["a=1"], "duration": "1h", "comment": " " }),
                "`comment` must not be empty",
            ),
            (&Alerts, json!({ "matchers": ["{a=1"] }), "opens a `{`"),
            (
                &Alerts,
                json!({ "state": "active" }),
                "unknown field `state`",
            ),
        ] {
            let e = err(h.call(plugin, input.clone()).await);
            assert_eq!(e.kind, ErrorKind::Input, "{input}: {}", e.message);
            assert!(e.message.contains(needle), "{input}: {}", e.message);
        }
        let e = err(h.call(&Alerts, json!({})).await);
        assert_eq!(e.kind, ErrorKind::Connect);
        assert!(
            e.message.starts_with(&format!(
                "Alertmanager at {down}/api/v2/alerts: GET failed: "
            )),
            "{}",
            e.message
        );
    }
}
