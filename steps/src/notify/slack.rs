//! `notify.slack`: one message to a Slack incoming webhook, as `text` (the notification line) plus
//! Block Kit `blocks` carrying what the run found, what it decided and why, a few facts and a link.
//!
//! The webhook URL is the credential: it is never put into a message, an error, a progress line or a
//! result (reqwest's errors carry the URL, so they are stripped of it).

use std::collections::BTreeMap;

use reqwest::Url;
use serde_json::{Value, json};

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::web::{cause_chain, client as build_client, describe_status, head_chars};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static LINK: &[Field] = &[
    Field::req("url", FieldType::String, "Where it points."),
    Field::opt(
        "text",
        FieldType::String,
        "What it reads (default: the URL).",
    ),
];

static INFO: PluginInfo = PluginInfo {
    name: "notify.slack",
    summary: "Post a message to Slack through an incoming webhook: a line of text, and blocks with \
              what the run found, what was decided and why, a few facts and a link.",
    class: SideEffect::Unsafe,
    fields: &[
        Field::req(
            "text",
            FieldType::String,
            "The message: the notification line, and all that clients without blocks show. Slack \
             mrkdwn (`*bold*`, `<https://...|links>`, `<@U123>`); other `<`, `>`, `&` are escaped.",
        ),
        Field::opt(
            "title",
            FieldType::String,
            "A header above the message (plain text; up to 150 characters).",
        ),
        Field::opt("summary", FieldType::String, "What the run found (mrkdwn)."),
        Field::opt(
            "decision",
            FieldType::String,
            "What was decided or done, e.g. the branch a `flow.branch` took (mrkdwn).",
        ),
        Field::opt(
            "reason",
            FieldType::String,
            "Why: the values the decision read (mrkdwn).",
        ),
        Field::opt(
            "fields",
            FieldType::Map(&FieldType::Any),
            "Facts shown two by two, name -> value (e.g. `f1: 0.61`), in name order; values are shown as text.",
        ),
        Field::opt(
            "link",
            FieldType::Object(LINK),
            "A link to more, e.g. a dashboard: `{ url, text }`.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ status: integer, response: text (Slack answers `ok`) }",
    example: "text: \"fraud_specialist degraded: rolled back to version 6\"\n\
              title: Model degraded\n\
              decision: rollback\n\
              reason: \"F1 0.61 < 0.72 since the deploy of version 7\"\n\
              fields: { model: fraud_specialist, f1: 0.61 }\n\
              link: { url: \"https://grafana.example/d/ml\", text: Dashboard }",
    connection: Some("slack"),
};

/// Slack's limits (Block Kit): a longer text fails the whole message with `invalid_blocks`, so texts
/// are cut to them instead.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;

/// How much of Slack's answer is kept; it answers a word (`ok`, `invalid_payload`, `no_service`).
const ANSWER_LIMIT: usize = 16 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    title: Option<String>,
    summary: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    fields: Option<BTreeMap<String, Value>>,
    link: Option<Link>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    url: String,
    text: Option<String>,
}

pub struct Slack;

/// A connection's webhook: the URL, read once (it is a secret), and the client posting to it.
struct Webhook {
    http: reqwest::Client,
    url: Url,
}

fn webhook(conn: &Connection) -> Result<std::sync::Arc<Webhook>, StepError> {
    conn.client(|c| {
        let Some(url) = c.secret("webhook_url")? else {
            return Err(c.error("`webhook_url` is not set"));
        };
        // The URL is not quoted: it is the credential.
        let url = Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| c.error("`webhook_url` is not an http(s) URL"))?;
        Ok(Webhook {
            http: build_client()?,
            url,
        })
    })
}

impl Plugin for Slack {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: Input = serde_json::from_value(input).map_err(StepError::input)?;
            let conn = ctx.connection("slack")?;
            let body = payload(&i, ctx)?;
            let hook = webhook(conn)?;
            ctx.progress(format!("posting to Slack (connection `{}`)", conn.name));
            super::until_cancelled(ctx, post(&hook, &conn.name, &body)).await
        })
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let i: Input = serde_json::from_value(input).map_err(StepError::input)?;
            let conn = ctx.connection("slack")?;
            Ok(json!({
                "summary": format!(
                    "would post to Slack (connection `{}`): {}",
                    conn.name,
                    head_chars(&i.text, 120)
                ),
                "payload": payload(&i, ctx)?,
            }))
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

async fn post(hook: &Webhook, conn: &str, body: &Value) -> Result<Value, StepError> {
    let failed = |e: reqwest::Error| {
        let kind = if e.is_builder() {
            ErrorKind::Input
        } else {
            ErrorKind::Connect
        };
        StepError::new(
            kind,
            format!(
                "posting to the Slack webhook of connection `{conn}`: {}",
                cause_chain(&e.without_url())
            ),
        )
    };
    let mut response = hook
        .http
        .post(hook.url.clone())
        .json(body)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    let mut kept = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        kept.extend_from_slice(&chunk[..chunk.len().min(ANSWER_LIMIT - kept.len())]);
        if kept.len() == ANSWER_LIMIT {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&kept).trim().to_string();
    let result = json!({ "status": status.as_u16(), "response": answer });
    if !status.is_success() {
        let said = match answer.as_str() {
            "" => "nothing".to_string(),
            text => head_chars(text, 300),
        };
        return Err(StepError::new(
            ErrorKind::Status,
            format!(
                "the Slack webhook of connection `{conn}` answered {}: {said}",
                describe_status(status)
            ),
        )
        .with_detail(result));
    }
    Ok(result)
}

/// The message as Slack receives it: `text`, and the blocks that show it with its parts.
fn payload(i: &Input, ctx: &StepContext) -> Result<Value, StepError> {
    let link = match &i.link {
        None => None,
        Some(l) => Some((link_url(&l.url)?, l)),
    };
    let mut blocks = Vec::new();
    if let Some(title) = &i.title {
        blocks.push(json!({
            "type": "header",
            "text": { "type": "plain_text", "text": cut(title, HEADER_MAX), "emoji": true },
        }));
    }
    let text = mrkdwn(&i.text);
    blocks.push(section(&text));
    if let Some(summary) = &i.summary {
        blocks.push(section(&mrkdwn(summary)));
    }
    let why = [("Decision", &i.decision), ("Why", &i.reason)]
        .into_iter()
        .filter_map(|(label, v)| v.as_ref().map(|v| format!("*{label}:* {}", mrkdwn(v))))
        .collect::<Vec<_>>();
    if !why.is_empty() {
        blocks.push(section(&why.join("\n")));
    }
    let facts: Vec<Value> = i
        .fields
        .iter()
        .flatten()
        .map(|(name, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let text = format!("*{}*\n{}", escape(name), escape(&value));
            json!({ "type": "mrkdwn", "text": cut(&text, FIELD_MAX) })
        })
        .collect();
    for chunk in facts.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({ "type": "section", "fields": chunk }));
    }
    let mut footer = Vec::new();
    if let Some((url, link)) = link {
        let text = link.text.as_deref().unwrap_or(&link.url);
        // `|` ends the URL part of a Slack link; in its text it would end nothing, but be eaten.
        let url = url.as_str().replace('|', "%7C");
        footer.push(format!("<{url}|{}>", escape(text).replace('|', "¦")));
    }
    if !ctx.run_id.is_empty() {
        footer.push(format!(
            "runbook run `{}`, step `{}`",
            ctx.run_id, ctx.step_id
        ));
    }
    if !footer.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": cut(&footer.join("  ·  "), SECTION_MAX) }],
        }));
    }
    Ok(json!({ "text": text, "blocks": blocks }))
}

fn link_url(url: &str) -> Result<Url, StepError> {
    Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https" | "mailto"))
        .ok_or_else(|| {
            StepError::new(
                ErrorKind::Input,
                format!("`link.url`: `{url}` is not an http(s) or mailto URL"),
            )
        })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(text, SECTION_MAX) } })
}

/// Text written as mrkdwn, made safe for Slack: its links and mentions (`<https://...|text>`,
/// `<@U123>`, `<!here>`) are kept, and every other `<`, `>` and `&` (a threshold, `F1 < 0.72`) is
/// escaped, as Slack requires, instead of being taken for markup.
fn mrkdwn(text: &str) -> String {
    const MARKUP: [&str; 6] = ["http://", "https://", "mailto:", "@", "#", "!"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let token = (c == '<')
            .then(|| rest.find(['>', '\n']))
            .flatten()
            .filter(|&end| rest[end..].starts_with('>'))
            .filter(|&end| MARKUP.iter().any(|m| rest[1..end].starts_with(m)));
        if let Some(end) = token {
            out.push_str(&rest[..=end]);
            rest = &rest[end + 1..];
            continue;
        }
        let entity = ["&amp;", "&lt;", "&gt;"]
            .iter()
            .find(|e| rest.starts_with(**e));
        match (c, entity) {
            ('&', Some(e)) => out.push_str(e),
            _ => out.push_str(&escape(&rest[..c.len_utf8()])),
        }
        rest = &rest[entity.map_or(c.len_utf8(), |e| e.len())..];
    }
    out
}

/// Data shown as text: Slack reads `<`, `>` and `&` as markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the last one an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use serde_json::{Value, json};

    use super::Slack;
    use crate::connection::{Connection, kind};
    use crate::testkit::{Harness, err, file_in, marker, ok, service};
    use crate::{ErrorKind, Plugin};

    fn hook(url: &str) -> Connection {
        let fields = [("webhook_url".to_string(), json!(url))];
        Connection::new(
            "hook",
            kind("slack").expect("kind"),
            fields.into_iter().collect(),
        )
    }

    /// The request the webhook sink recorded whose body contains `marker`.
    fn recorded(dir: &str, marker: &str) -> Value {
        let text = file_in(std::path::Path::new(dir), |t| t.contains(marker));
        serde_json::from_str(&text).expect("the sink writes JSON")
    }

    #[tokio::test]
    async fn the_payload_reaches_the_webhook_with_text_blocks_and_the_run() {
        let (Some(base), Some(dir)) = (
            service("RUNBOOK_TEST_WEBHOOK_URL"),
            service("RUNBOOK_TEST_WEBHOOK_DIR"),
        ) else {
            return;
        };
        let m = marker("slack");
        let url = format!("{base}/services/T0/B0/{m}");
        let h = Harness::new("tell").with_connection(hook(&url));
        let r = ok(h
            .call(
                &Slack,
                json!({
                    "text": format!("fraud_specialist rolled back {m}"),
                    "title": "Model degraded",
                    "summary": "F1 fell to 0.61 after version 7 was deployed",
                    "decision": "rollback to version 6",
                    "reason": "F1 0.61 < 0.72",
                    "fields": { "specialist": "fraud", "f1": 0.61, "note": "a < b & c" },
                    "link": { "url": "https://grafana.example/d/ml?x=1|2", "text": "Dashboard" },
                }),
            )
            .await);
        assert_eq!(r["status"], 200);
        assert!(
            r.to_string().len() < 200,
            "the result is the answer only: {r}"
        );

        let got = recorded(&dir, &m);
        assert_eq!(got["path"], format!("/services/T0/B0/{m}"));
        assert!(
            got["headers"]["content-type"]
                .as_str()
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{got}"
        );
        let body: Value =
            serde_json::from_str(got["body"].as_str().expect("body text")).expect("JSON body");
        assert_eq!(body["text"], format!("fraud_specialist rolled back {m}"));
        let blocks = body["blocks"].as_array().expect("blocks");
        let kinds: Vec<&str> = blocks.iter().filter_map(|b| b["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "header", "section", "section", "section", "section", "context"
            ]
        );
        assert_eq!(blocks[0]["text"]["text"], "Model degraded");
        assert_eq!(
            blocks[3]["text"]["text"],
            "*Decision:* rollback to version 6\n*Why:* F1 0.61 &lt; 0.72"
        );
        let facts: Vec<&str> = blocks[4]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["text"].as_str())
            .collect();
        assert_eq!(
            facts,
            [
                "*f1*\n0.61",
                "*note*\na &lt; b &amp; c",
                "*specialist*\nfraud"
            ]
        );
        assert_eq!(
            blocks[5]["elements"][0]["text"],
            "<https://grafana.example/d/ml?x=1%7C2|Dashboard>  ·  runbook run `test-run`, step `tell`"
        );
    }

    #[tokio::test]
    async fn plan_shows_the_exact_payload_and_sends_nothing() {
        // Nothing listens there: a plan that posted would fail.
        let h = Harness::new("tell").with_connection(hook("http://127.0.0.1:1/services/X"));
        let input = json!({ "text": "would say this", "summary": "s" });
        let plan = ok(Slack.plan(input, &h.ctx).expect("plans").await);
        assert_eq!(
            plan["summary"],
            "would post to Slack (connection `hook`): would say this"
        );
        assert_eq!(plan["payload"]["text"], "would say this");
        assert_eq!(plan["payload"]["blocks"][1]["text"]["text"], "s");
        assert!(!plan.to_string().contains("services/X"), "{plan}");
    }

    /// A webhook that never answers, and reports when a request came in: the failure the recording
    /// sink does not make.
    async fn hanging_webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hang/{token}",
            post(move || async move {
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test]
    async fn a_refusal_is_a_status_error_quoting_the_answer_and_never_the_url() {
        let Some(base) = service("RUNBOOK_TEST_WEBHOOK_URL") else {
            return;
        };
        // The sink answers a path /status/NNN with that status.
        let m = marker("refused");
        let h = Harness::default().with_connection(hook(&format!("{base}/status/500/{m}")));
        let e = err(h.call(&Slack, json!({ "text": "hi" })).await);
        assert_eq!(e.kind, ErrorKind::Status);
        let detail = e.detail.clone().expect("the answer is kept");
        assert_eq!(detail["status"], 500);
        let answer = detail["response"].as_str().expect("text").to_string();
        assert!(answer.contains("status 500"), "{answer}");
        assert_eq!(
            e.message,
            format!(
                "the Slack webhook of connection `hook` answered 500 Internal Server Error: {answer}"
            )
        );
        assert!(
            !e.message.contains(&m) && !e.message.contains(&base),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn an_unreachable_webhook_is_a_connect_error_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let url = format!("http://127.0.0.1:{port}/services/T0K3N");
        let mut h = Harness::default().with_connection(hook(&url));
        let e = err(h.call(&Slack, json!({ "text": "hi" })).await);
        assert_eq!(e.kind, ErrorKind::Connect);
        assert!(
            e.message.to_lowercase().contains("connection refused"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("T0K3N"), "{}", e.message);
        let progress = h.progress.borrow_and_update().clone();
        assert_eq!(progress, "posting to Slack (connection `hook`)");
    }

    #[tokio::test]
    async fn a_cancelled_post_stops_at_once() {
        let (base, mut arrived) = hanging_webhook().await;
        let h = Harness::default().with_connection(hook(&format!("{base}/hang/T0K3N")));
        let cancel = h.ctx.cancel.clone();
        tokio::spawn(async move {
            // Cancel once the server holds the request, as the engine does at the step's deadline.
            if arrived.recv().await.is_some() {
                cancel.cancel();
            }
        });
        let e = err(h.call(&Slack, json!({ "text": "hi" })).await);
        assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
    }

    #[tokio::test]
    async fn bad_input_and_a_bad_webhook_url_are_input_errors() {
        for (url, input, needle) in [
            (
                "http://127.0.0.1:1/x",
                json!({ "title": "no text" }),
                "missing field `text`",
            ),
            (
                "http://127.0.0.1:1/x",
                json!({ "text": "t", "link": { "url": "javascript:alert(1)" } }),
                "`link.url`: `javascript:alert(1)` is not an http(s) or mailto URL",
            ),
            (
                "hooks.slack.com/services/T0K3N",
                json!({ "text": "t" }),
                "connection `hook`: `webhook_url` is not an http(s) URL",
            ),
        ] {
            let h = Harness::default().with_connection(hook(url));
            let e = err(h.call(&Slack, input.clone()).await);
            assert_eq!(e.kind, ErrorKind::Input, "{input}: {}", e.message);
            assert!(e.message.contains(needle), "{input}: {}", e.message);
            assert!(!e.message.contains("T0K3N"), "{}", e.message);
        }
    }

    #[test]
    fn mrkdwn_keeps_links_and_mentions_and_escapes_the_rest() {
        for (written, sent) in [
            (
                "F1 0.61 < 0.72 & falling",
                "F1 0.61 &lt; 0.72 &amp; falling",
            ),
            (
                "see <https://x.example/a?b=1|the dashboard>, <@U123> <!here>",
                "see <https://x.example/a?b=1|the dashboard>, <@U123> <!here>",
            ),
            ("a <b> c -> d", "a &lt;b&gt; c -&gt; d"),
            ("<https://broken\n>", "&lt;https://broken\n&gt;"),
            (
                "already &lt;escaped&gt; &amp; é",
                "already &lt;escaped&gt; &amp; é",
            ),
        ] {
            assert_eq!(super::mrkdwn(written), sent, "{written}");
        }
    }

    #[test]
    fn long_texts_are_cut_to_slacks_limits() {
        let h = Harness::default();
        let i: super::Input = serde_json::from_value(json!({
            "text": "x".repeat(5000),
            "title": "é".repeat(200),
        }))
        .expect("input");
        let p = super::payload(&i, &h.ctx).expect("payload");
        let header = p["blocks"][0]["text"]["text"].as_str().expect("header");
        assert_eq!(header.chars().count(), 150);
        assert!(header.ends_with("é…"));
        let section = p["blocks"][1]["text"]["text"].as_str().expect("section");
        assert_eq!(section.chars().count(), 3000);
        assert_eq!(p["text"].as_str().map(str::len), Some(5000));
    }
}
