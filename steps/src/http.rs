//! `http.request`: one HTTP request with an expected status and a parsed JSON body.

pub(crate) mod client;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use client::Client;

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::web::{cause_chain, describe_status, head_chars, redacted};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

static INFO: PluginInfo = PluginInfo {
    name: "http.request",
    summary: "Send one HTTP request. The side-effect class follows the method: GET and HEAD are \
              `read`, PUT and DELETE `idempotent`, POST and PATCH `unsafe`.",
    class: SideEffect::Read,
    fields: &[
        Field::req(
            "url",
            FieldType::String,
            "Absolute http:// or https:// URL, or a path joined to the `base_url` of the step's connection.",
        ),
        Field::opt(
            "method",
            FieldType::Enum(&METHODS),
            "HTTP method (default GET).",
        ),
        Field::opt(
            "headers",
            FieldType::Map(&FieldType::String),
            "Request headers; they replace the connection's of the same name (an `Authorization` \
             replaces the connection's credentials).",
        ),
        Field::opt(
            "query",
            FieldType::Map(&FieldType::Any),
            "Query-string parameters, appended to the URL (values are URL-encoded).",
        ),
        Field::opt(
            "json",
            FieldType::Any,
            "A JSON request body (sets Content-Type: application/json).",
        ),
        Field::opt("body", FieldType::String, "A raw text request body."),
        Field::opt(
            "expect_status",
            FieldType::List(&FieldType::Integer),
            "Statuses that count as success (default: any 2xx); others fail the step, kind `status`.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ status: integer, headers: { name: value }, body: string, json: value or null (when the body is JSON) }",
    example: "url: \"http://127.0.0.1:9090/api/v1/query\"\nquery: { query: up }",
    connection: Some("http"),
};

/// The response body keeps at most this many bytes; the rest is not downloaded.
const BODY_LIMIT: usize = 1 << 20;

/// How much of the body an unexpected-status message quotes; the whole body is in the detail.
const MESSAGE_BODY: usize = 300;

#[derive(Default)]
pub struct HttpRequest {
    /// For requests without a connection (a connection keeps its own, see [`Connection::client`]):
    /// built on first use and shared by every such request, so connections are pooled across steps.
    /// Lazy because building it needs the TLS provider installed and may fail (no usable system
    /// roots), which should fail a step, not the registry.
    plain: OnceLock<Arc<Client>>,
}

/// The `with:` block of `http.request`. Every field is an `Option` so that a template rendering to
/// `null` reads as "not given".
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    url: String,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    query: Option<BTreeMap<String, Value>>,
    json: Option<Value>,
    body: Option<String>,
    expect_status: Option<Vec<u16>>,
}

fn parse_input(value: Value) -> Result<Input, StepError> {
    serde_json::from_value(value).map_err(StepError::input)
}

impl HttpRequest {
    /// The connection's client (its headers and credentials), or the shared plain one.
    fn client(&self, conn: Option<&Connection>) -> Result<Arc<Client>, StepError> {
        if let Some(conn) = conn {
            return conn.client(Client::of);
        }
        if let Some(client) = self.plain.get() {
            return Ok(Arc::clone(client));
        }
        let built = Arc::new(Client::plain()?);
        // Two steps racing here both build a client and one is thrown away, which is harmless.
        Ok(Arc::clone(self.plain.get_or_init(|| built)))
    }

    async fn request(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        let input = parse_input(input)?;
        let method = parse_method(input.method.as_deref())?;
        let conn = ctx.connection.as_deref();
        let url = target(&input, conn)?;
        let shown = redacted(&url);

        let mut builder =
            self.client(conn)?
                .request(method.clone(), url, input.headers.as_ref())?;
        match (input.json, input.body) {
            (Some(_), Some(_)) => {
                return Err(StepError::new(
                    ErrorKind::Input,
                    "give either `json` or `body`, not both",
                ));
            }
            (Some(j), None) => builder = builder.json(&j),
            (None, Some(b)) => builder = builder.body(b),
            (None, None) => {}
        }

        let mut response = builder
            .send()
            .await
            .map_err(|e| send_error(&method, &shown, &e))?;

        let status = response.status();
        let headers = response_headers(response.headers());
        let content_length = response.content_length();
        let mut kept: Vec<u8> = Vec::new();
        let mut cut = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| send_error(&method, &shown, &e))?
        {
            let take = chunk.len().min(BODY_LIMIT - kept.len());
            kept.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                // Stop downloading: the rest would be thrown away, and a streaming endpoint might
                // never end.
                cut = true;
                break;
            }
        }
        let json_body = parse_json_body(&kept);
        let mut body = String::from_utf8_lossy(&kept).into_owned();
        if cut {
            match content_length {
                Some(total) => body.push_str(&format!(
                    "\n[... truncated {} bytes]",
                    total.saturating_sub(kept.len() as u64)
                )),
                None => body.push_str("\n[... truncated: the body is longer than 1 MiB]"),
            }
        }

        let result = json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": body,
            "json": json_body,
        });
        let expected = match &input.expect_status {
            Some(list) => list.contains(&status.as_u16()),
            None => status.is_success(),
        };
        if !expected {
            let quoted = match body.trim() {
                "" => "; the body is empty".to_owned(),
                text => format!("; body: {}", head_chars(text, MESSAGE_BODY)),
            };
            let message = format!(
                "{method} {shown} answered {} (expected {}){quoted}",
                describe_status(status),
                describe_expected(input.expect_status.as_deref()),
            );
            return Err(StepError::new(ErrorKind::Status, message).with_detail(result));
        }
        Ok(result)
    }
}

impl Plugin for HttpRequest {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn class_for(&self, input: &serde_json::Value) -> SideEffect {
        match input
            .get("method")
            .and_then(|m| m.as_str())
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("GET") | Some("HEAD") => SideEffect::Read,
            Some("PUT") | Some("DELETE") => SideEffect::Idempotent,
            _ => SideEffect::Unsafe,
        }
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(self.request(input, ctx))
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move { plan(input, ctx) }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

/// The URL a request goes to: its own, or joined to the connection's `base_url`, with `query` added.
fn target(input: &Input, conn: Option<&Connection>) -> Result<Url, StepError> {
    let base = conn.and_then(|c| c.str("base_url"));
    let parsed = match base {
        // A URL of its own wins; a relative one is joined to the connection's base.
        Some(base) if Url::parse(&input.url).is_err() => Url::parse(base)
            .map_err(|e| {
                StepError::new(ErrorKind::Input, format!("invalid base_url `{base}`: {e}"))
            })
            .and_then(|b| {
                b.join(&input.url)
                    .map_err(|e| StepError::new(ErrorKind::Input, e.to_string()))
            }),
        _ => Url::parse(&input.url).map_err(|e| StepError::new(ErrorKind::Input, e.to_string())),
    };
    let mut url = parsed.map_err(|e| {
        StepError::new(
            ErrorKind::Input,
            format!("invalid url `{}`: {}", input.url, e.message),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StepError::new(
            ErrorKind::Input,
            format!(
                "invalid url `{}`: the scheme must be http or https",
                input.url
            ),
        ));
    }
    if let Some(query) = input.query.as_ref().filter(|q| !q.is_empty()) {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            match value {
                Value::String(s) => pairs.append_pair(name, s),
                other => pairs.append_pair(name, &other.to_string()),
            };
        }
    }
    Ok(url)
}

/// What `runbook plan` shows for a request that would change something: method, URL, headers and
/// body. Nothing is sent.
fn plan(input: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let input = parse_input(input)?;
    let method = parse_method(input.method.as_deref())?;
    let url = target(&input, ctx.connection.as_deref())?;
    let shown = redacted(&url);
    let mut out = serde_json::json!({
        "summary": format!("would send {method} {shown}"),
        "method": method.as_str(),
        "url": shown,
    });
    if let Some(h) = &input.headers {
        out["headers"] = serde_json::json!(h);
    }
    if let Some(auth) = ctx.connection.as_deref().and_then(client::describe_auth) {
        out["auth"] = Value::String(auth);
    }
    if let Some(j) = &input.json {
        out["json"] = j.clone();
    }
    if let Some(b) = &input.body {
        out["body"] = Value::String(b.clone());
    }
    Ok(out)
}

fn parse_method(method: Option<&str>) -> Result<Method, StepError> {
    let Some(method) = method else {
        return Ok(Method::GET);
    };
    let upper = method.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(StepError::new(
            ErrorKind::Input,
            format!(
                "unsupported method `{method}` (use one of {})",
                METHODS.join(", ")
            ),
        ));
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|e| StepError::new(ErrorKind::Input, format!("invalid method `{method}`: {e}")))
}

/// A failure to get an answer at all, with the whole cause chain spelled out.
pub(crate) fn send_error(method: &Method, url: &str, err: &reqwest::Error) -> StepError {
    let kind = if err.is_builder() {
        ErrorKind::Input
    } else if err.is_redirect() {
        ErrorKind::Other
    } else {
        ErrorKind::Connect
    };
    StepError::new(kind, format!("{method} {url}: {}", cause_chain(err)))
}

fn response_headers(headers: &reqwest::header::HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    // `HeaderName`s are lowercase already. A repeated header (set-cookie, via) keeps every value,
    // joined as HTTP allows for list-valued headers.
    for (name, value) in headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                out.insert(name.as_str().to_owned(), Value::String(text));
            }
        }
    }
    out
}

/// The body as JSON when it is JSON, else null. The content type is not consulted: servers often
/// label JSON `text/plain`, and a body that claims JSON but is not still deserves its raw text only.
fn parse_json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn describe_expected(expect: Option<&[u16]>) -> String {
    match expect {
        None => "2xx".to_owned(),
        Some([]) => "none".to_owned(),
        Some(list) => list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::extract::{Path, RawQuery};
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::routing::{any, get};
    use serde_json::{Value, json};

    use super::HttpRequest;
    use super::client::Client;
    use crate::connection::Connection;
    use crate::testkit::{Harness, call, err, ok};
    use crate::{ErrorKind, Plugin, SideEffect, StepError};

    /// Echoes what the request looked like, as JSON.
    async fn echo(
        method: Method,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
        body: String,
    ) -> axum::Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        axum::Json(json!({
            "method": method.as_str(),
            "query": query,
            "content_type": header("content-type"),
            "x_token": header("x-token"),
            "authorization": header("authorization"),
            "body": body,
        }))
    }

    async fn status(Path(code): Path<u16>) -> (StatusCode, String) {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        (
            code,
            format!("  status {} says: overloaded, try later\n", code.as_u16()),
        )
    }

    /// Serves the test routes on an ephemeral port and returns the base URL. The listener is bound
    /// before this returns, so requests queue in its backlog until the server task picks them up.
    async fn server() -> String {
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/status/{code}", get(status))
            .route("/big", get(|| async { "a".repeat((1 << 20) + 10) }))
            .route("/text", get(|| async { "plain words" }))
            .route("/json-as-text", get(|| async { "[1, 2]" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn run(plugin: &HttpRequest, input: Value) -> Result<Value, StepError> {
        call(plugin, input).await
    }

    #[tokio::test]
    async fn get_sends_query_params_and_parses_the_json_answer() {
        let base = server().await;
        let plugin = HttpRequest::default();
        let r = ok(run(
            &plugin,
            json!({
                "url": format!("{base}/echo"),
                "query": { "q": "up & down", "n": 5, "flag": true, "list": [1, "a"] },
            }),
        )
        .await);
        assert_eq!(r["status"], 200);
        assert_eq!(r["headers"]["content-type"], "application/json");
        assert_eq!(r["json"]["method"], "GET");
        assert_eq!(
            r["json"]["query"],
            "flag=true&list=%5B1%2C%22a%22%5D&n=5&q=up+%26+down"
        );
        let body: Value = serde_json::from_str(r["body"].as_str().expect("body is text"))
            .expect("body is the JSON text");
        assert_eq!(body, r["json"]);

        // The same plugin (and client) serves a second request.
        let r = ok(run(
            &plugin,
            json!({ "url": format!("{base}/echo?keep=1"), "query": { "k": "v" } }),
        )
        .await);
        assert_eq!(r["json"]["query"], "keep=1&k=v");
    }

    #[tokio::test]
    async fn post_sends_a_json_body_and_the_method_is_case_insensitive() {
        let base = server().await;
        let r = ok(run(
            &HttpRequest::default(),
            json!({ "url": format!("{base}/echo"), "method": "post", "json": { "replicas": 3 } }),
        )
        .await);
        assert_eq!(r["json"]["method"], "POST");
        assert_eq!(r["json"]["content_type"], "application/json");
        assert_eq!(r["json"]["body"], "{\"replicas\":3}");
    }

    #[tokio::test]
    async fn a_raw_body_and_headers_are_sent_as_given() {
        let base = server().await;
        let r = ok(run(
            &HttpRequest::default(),
            json!({
                "url": format!("{base}/echo"),
                "method": "PUT",
                "headers": { "Content-Type": "text/plain", "X-Token": "s3cret" },
                "body": "hello",
            }),
        )
        .await);
        assert_eq!(
            r["json"],
            json!({
                "method": "PUT",
                "query": null,
                "content_type": "text/plain",
                "x_token": "s3cret",
                "authorization": null,
                "body": "hello",
            })
        );
    }

    #[tokio::test]
    async fn an_unexpected_status_is_a_status_error_with_the_response() {
        let base = server().await;
        let url = format!("{base}/status/503");
        let e = err(run(&HttpRequest::default(), json!({ "url": url })).await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert_eq!(
            e.message,
            format!(
                "GET {url} answered 503 Service Unavailable (expected 2xx); body: status 503 says: overloaded, try later"
            )
        );
        let detail = e.detail.expect("detail keeps the response");
        assert_eq!(detail["status"], 503);
        assert_eq!(detail["body"], "  status 503 says: overloaded, try later\n");
        assert_eq!(detail["json"], Value::Null);
        assert!(detail["headers"]["content-type"].is_string());
    }

    #[tokio::test]
    async fn expect_status_decides_what_counts_as_success() {
        let base = server().await;
        let plugin = HttpRequest::default();
        let r = ok(run(
            &plugin,
            json!({ "url": format!("{base}/status/404"), "expect_status": [200, 404] }),
        )
        .await);
        assert_eq!(r["status"], 404);

        let e = err(run(
            &plugin,
            json!({ "url": format!("{base}/echo"), "expect_status": [201] }),
        )
        .await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert!(
            e.message.contains("answered 200 OK (expected 201)"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_url() {
        // Bind and drop a listener: the port was free a moment ago and nothing listens on it now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let url = format!("http://127.0.0.1:{port}/x");
        let e = err(run(&HttpRequest::default(), json!({ "url": url })).await);
        assert_eq!(e.kind, ErrorKind::Connect);
        assert!(
            e.message.starts_with(&format!("GET {url}: ")),
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
    async fn a_big_body_is_cut_at_one_mib() {
        let base = server().await;
        let r = ok(run(
            &HttpRequest::default(),
            json!({ "url": format!("{base}/big") }),
        )
        .await);
        let body = r["body"].as_str().expect("body is text");
        let marker = "\n[... truncated 10 bytes]";
        assert!(body.ends_with(marker), "{}", &body[body.len() - 40..]);
        assert_eq!(body.len(), (1 << 20) + marker.len());
        assert_eq!(r["json"], Value::Null);
    }

    #[tokio::test]
    async fn json_is_parsed_whatever_the_content_type_says() {
        let base = server().await;
        let plugin = HttpRequest::default();
        let r = ok(run(&plugin, json!({ "url": format!("{base}/json-as-text") })).await);
        assert!(
            r["headers"]["content-type"]
                .as_str()
                .is_some_and(|ct| ct.starts_with("text/plain"))
        );
        assert_eq!(r["json"], json!([1, 2]));
        let r = ok(run(&plugin, json!({ "url": format!("{base}/text") })).await);
        assert_eq!(r["body"], "plain words");
        assert_eq!(r["json"], Value::Null);
    }

    #[tokio::test]
    async fn bad_inputs_are_input_errors() {
        let plugin = HttpRequest::default();
        for (input, needle) in [
            (json!({ "url": "not a url" }), "invalid url `not a url`"),
            (json!({ "url": "ftp://example.com/f" }), "http or https"),
            (
                json!({ "url": "http://127.0.0.1/", "json": {}, "body": "x" }),
                "not both",
            ),
            (
                json!({ "url": "http://127.0.0.1/", "method": "FETCH" }),
                "unsupported method `FETCH`",
            ),
            (
                json!({ "url": "http://127.0.0.1/", "headers": { "bad header": "x" } }),
                "invalid header name `bad header`",
            ),
            (
                json!({ "url": "http://127.0.0.1/", "timeout": "5s" }),
                "unknown field `timeout`",
            ),
            (json!({ "method": "GET" }), "missing field `url`"),
        ] {
            let e = err(run(&plugin, input.clone()).await);
            assert_eq!(e.kind, ErrorKind::Input, "{input}: {}", e.message);
            assert!(e.message.contains(needle), "{input}: {}", e.message);
        }
    }

    #[test]
    fn the_class_follows_the_method() {
        let plugin = HttpRequest::default();
        for (method, class) in [
            (None, SideEffect::Read),
            (Some("GET"), SideEffect::Read),
            (Some("head"), SideEffect::Read),
            (Some("PUT"), SideEffect::Idempotent),
            (Some("delete"), SideEffect::Idempotent),
            (Some("POST"), SideEffect::Unsafe),
            (Some("patch"), SideEffect::Unsafe),
        ] {
            let mut input = json!({ "url": "http://127.0.0.1/" });
            if let Some(m) = method {
                input["method"] = json!(m);
            }
            assert_eq!(plugin.class_for(&input), class, "{method:?}");
        }
    }

    fn connection(fields: Value) -> Connection {
        let kind = crate::connection::kind("http").expect("a declared kind");
        let Value::Object(fields) = fields else {
            panic!("fields are a mapping")
        };
        Connection::new("api", kind, fields)
    }

    #[tokio::test]
    async fn a_connection_sends_its_headers_and_bearer_token_through_one_client() {
        let base = server().await;
        let plugin = HttpRequest::default();
        let h = Harness::default().with_connection(connection(json!({
            "base_url": base,
            "headers": { "X-Token": "from-connection", "Content-Type": "text/plain" },
            "bearer_token": "tok-1234",
        })));
        let r = ok(h
            .call(
                &plugin,
                json!({ "url": "/echo", "method": "POST", "body": "x",
                        "headers": { "content-type": "text/csv" } }),
            )
            .await);
        assert_eq!(r["json"]["authorization"], "Bearer tok-1234");
        assert_eq!(r["json"]["x_token"], "from-connection");
        // The step's header replaces the connection's whatever its case.
        assert_eq!(r["json"]["content_type"], "text/csv");

        // The client (with the token read once) is the connection's, kept for the next step.
        let conn = h.ctx.connection.as_deref().expect("given");
        let kept = conn.client::<Client>(|_| panic!("a second client was built"));
        assert!(kept.is_ok());
        let r = ok(h
            .call(
                &plugin,
                json!({ "url": "/echo", "headers": { "Authorization": "Token own" } }),
            )
            .await);
        assert_eq!(
            r["json"]["authorization"], "Token own",
            "a step's own Authorization replaces the connection's credentials"
        );
    }

    #[tokio::test]
    async fn basic_auth_comes_from_the_connection() {
        let base = server().await;
        let h = Harness::default().with_connection(connection(json!({
            "base_url": base,
            "basic_auth": { "username": "ops", "password": "pa55-w0rd" },
        })));
        let r = ok(h
            .call(&HttpRequest::default(), json!({ "url": "/echo" }))
            .await);
        assert_eq!(r["json"]["authorization"], "Basic b3BzOnBhNTUtdzByZA==");
    }

    #[tokio::test]
    async fn bad_credentials_in_a_connection_are_input_errors_naming_it() {
        for (fields, needle) in [
            (
                json!({ "bearer_token": "t0ken", "basic_auth": { "username": "u", "password": "p" } }),
                "connection `api`: give `bearer_token` or `basic_auth`, not both",
            ),
            (
                json!({ "basic_auth": { "username": "u" } }),
                "connection `api`: `basic_auth` needs `password`",
            ),
            (
                json!({ "basic_auth": "u:p" }),
                "connection `api`: `basic_auth` must be a mapping",
            ),
            (
                json!({ "bearer_token": "secret(\"RUNBOOK_TEST_UNSET_9A7B\")" }),
                "connection `api`: secret `RUNBOOK_TEST_UNSET_9A7B` is not set",
            ),
            (
                json!({ "headers": { "bad header": "x" } }),
                "connection `api`: invalid header name `bad header`",
            ),
        ] {
            let h = Harness::default().with_connection(connection(fields.clone()));
            let e = err(h
                .call(
                    &HttpRequest::default(),
                    json!({ "url": "http://127.0.0.1:1/" }),
                )
                .await);
            assert_eq!(e.kind, ErrorKind::Input, "{fields}: {}", e.message);
            assert!(e.message.starts_with(needle), "{fields}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn a_plan_names_the_credentials_without_revealing_them() {
        let h = Harness::default().with_connection(connection(json!({
            "base_url": "http://127.0.0.1:1",
            "basic_auth": { "username": "ops", "password": "pa55-w0rd" },
        })));
        let plugin = HttpRequest::default();
        let plan = plugin
            .plan(json!({ "url": "/x", "method": "POST" }), &h.ctx)
            .expect("http.request plans");
        let plan = ok(plan.await);
        assert_eq!(plan["summary"], "would send POST http://127.0.0.1:1/x");
        assert_eq!(plan["auth"], "basic as `ops` (connection `api`)");
        assert!(!plan.to_string().contains("pa55"), "{plan}");
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        let url = super::Url::parse("https://ops:hunter2@example.com/x").expect("valid url");
        assert_eq!(super::redacted(&url), "https://ops:***@example.com/x");
    }
}
