//! The HTTP side: routing of API paths, the request log, injected faults, and the verbs.

use crate::discovery::{self, Resource};
use crate::selector::Selector;
use crate::status::ApiError;
use crate::store::Change;
use crate::{App, Query, lock, patch, pods, workload};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// One API request as the client sent it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string (`""` when there is none).
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// The body as text (lossy UTF-8); empty when there is none.
    pub body: String,
}

/// Makes requests fail: those whose path starts with `path` (and whose method is `method`, if
/// given) get `code` with a `Status` body, `times` times (always when absent).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Fault {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    pub code: u16,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub times: Option<u32>,
}

/// Annotation on an object: the verbs (`get`, `patch`, `update`, `delete`, `log`, `exec`) that
/// answer 403 Forbidden for it.
pub const FORBIDDEN: &str = "fake-kube/forbidden";

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_fake/requests", get(list_requests).delete(clear_requests))
        .route(
            "/_fake/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/exec", any(exec))
        .fallback(api)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), record))
        .with_state(app)
}

async fn list_requests(State(app): State<Arc<App>>) -> Response {
    axum::Json(lock(&app.requests).clone()).into_response()
}

async fn clear_requests(State(app): State<Arc<App>>) -> StatusCode {
    lock(&app.requests).clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(lock(&app.faults).clone()).into_response()
}

async fn add_fault(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => {
            lock(&app.faults).push(f);
            StatusCode::CREATED.into_response()
        }
        Err(e) => ApiError::bad_request(format!("fault: {e}")).into_response(),
    }
}

async fn clear_faults(State(app): State<Arc<App>>) -> StatusCode {
    lock(&app.faults).clear();
    StatusCode::NO_CONTENT
}

fn header_text(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Records every API request, then answers it with an injected fault if one matches.
async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // Its own endpoints and the health probes (dev/services polls /readyz) are not API traffic.
    if path.starts_with("/_fake/") || matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return ApiError::new(413, "RequestEntityTooLarge", "request body too large")
            .into_response();
    };
    lock(&app.requests).push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        accept: header_text(&parts.headers, header::ACCEPT),
        user_agent: header_text(&parts.headers, header::USER_AGENT),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    if let Some(err) = take_fault(&app, &parts.method, &path) {
        return err.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn take_fault(app: &App, method: &Method, path: &str) -> Option<ApiError> {
    let mut faults = lock(&app.faults);
    let i = faults.iter().position(|f| {
        path.starts_with(&f.path)
            && f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
    })?;
    let f = faults[i].clone();
    match f.times {
        Some(1) => drop(faults.remove(i)),
        Some(n) => faults[i].times = Some(n - 1),
        None => {}
    }
    let reason = match f.code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        500..=599 => "InternalError",
        _ => "BadRequest",
    };
    let message = f
        .message
        .unwrap_or_else(|| format!("fake-kube: injected {} for {path}", f.code));
    Some(ApiError::new(f.code, reason, message))
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn forbid(obj: &Value, verb: &str, res: &Resource, ns: &str) -> Result<(), ApiError> {
    let denied = workload::annotation(obj, FORBIDDEN)
        .is_some_and(|v| v.split(',').any(|x| x.trim() == verb));
    if denied {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::forbidden(verb, res.group, res.plural, name, ns));
    }
    Ok(())
}

async fn exec(
    State(app): State<Arc<App>>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
    uri: axum::http::Uri,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let res = discovery::by_plural("", "pods").expect("pods are a served resource");
    let q = Query::parse(uri.query());
    let pod = app.store().get(res, &ns, &name);
    let answer = pod
        .and_then(|pod| forbid(&pod, "exec", res, &ns).map(|()| pod))
        .and_then(|pod| pods::exec(Arc::clone(&app), &pod, &q, ws.ok()));
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn api(
    State(app): State<Arc<App>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = Query::parse(uri.query());
    dispatch(&app, &method, uri.path(), &q, &headers, &body)
        .unwrap_or_else(IntoResponse::into_response)
}

fn dispatch(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Ok(ok(&discovery::version())),
        ["healthz" | "readyz" | "livez"] => Ok("ok".into_response()),
        ["api"] => Ok(ok(&discovery::core_versions(&app.addr.to_string()))),
        ["apis"] => Ok(ok(&discovery::groups())),
        ["api", "v1"] => Ok(ok(&discovery::resource_list("").ok_or_else(not_found)?)),
        ["apis", g, "v1"] => Ok(ok(&discovery::resource_list(g).ok_or_else(not_found)?)),
        ["api", "v1", rest @ ..] => resource(app, method, "", rest, q, headers, body),
        ["apis", g, "v1", rest @ ..] => resource(app, method, g, rest, q, headers, body),
        _ => Err(not_found()),
    }
}

fn resource(
    app: &Arc<App>,
    method: &Method,
    group: &str,
    rest: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let (res, ns, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            let res = discovery::by_plural(group, plural)
                .filter(|r| r.namespaced)
                .ok_or_else(not_found)?;
            (res, Some(*ns), tail)
        }
        [plural, tail @ ..] => (
            discovery::by_plural(group, plural).ok_or_else(not_found)?,
            None,
            tail,
        ),
        [] => return Err(not_found()),
    };
    let ns_name = ns.unwrap_or("");
    match (tail, method.as_str()) {
        ([], "GET") if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(app, res, ns, q)
        }
        ([], "GET") => list(app, res, ns, q),
        ([], "POST") => create(app, res, ns_name, body),
        ([name], "GET") => {
            let obj = app.store().get(res, ns_name, name)?;
            forbid(&obj, "get", res, ns_name)?;
            Ok(ok(&obj))
        }
        ([name], "PUT") => write(app, res, ns_name, name, "update", |_| parse_body(body)),
        ([name], "PATCH") => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let p = parse_body(body)?;
            write(app, res, ns_name, name, "patch", |old| {
                patch::apply(&ct, old, &p)
            })
        }
        ([name], "DELETE") => delete(app, res, ns_name, name),
        ([name, "log"], "GET") if res.plural == "pods" => {
            let pod = app.store().get(res, ns_name, name)?;
            forbid(&pod, "log", res, ns_name)?;
            pods::logs(app, &pod, q)
        }
        ([name, "status"], "GET") if has_status(res) => {
            Ok(ok(&app.store().get(res, ns_name, name)?))
        }
        ([name, "status"], "PATCH") if has_status(res) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let p = parse_body(body)?;
            let mut store = app.store();
            let old = store.get(res, ns_name, name)?;
            let new = patch::apply(&ct, &old, &p)?;
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            let stored = store
                .set_status(res, ns_name, name, status)
                .ok_or_else(|| ApiError::not_found(res.group, res.plural, name))?;
            Ok(ok(&stored))
        }
        ([_, ..], _) | ([], _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {})",
                res.plural
            ),
        )),
    }
}

fn has_status(res: &Resource) -> bool {
    res.subresources.iter().any(|(s, _, _)| *s == "status")
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
}

fn selectors(res: &Resource, q: &Query) -> Result<(Selector, Selector), ApiError> {
    let labels = Selector::labels(q.get("labelSelector").unwrap_or_default())?;
    let supported: &[&str] = match res.plural {
        "pods" => &[
            "metadata.name",
            "metadata.namespace",
            "status.phase",
            "spec.nodeName",
            "spec.restartPolicy",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    };
    let fields = Selector::fields(q.get("fieldSelector").unwrap_or_default(), supported)?;
    Ok((labels, fields))
}

/// Items of a list lack `kind` and `apiVersion`, as the API server sends them.
fn as_item(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

fn list(app: &App, res: &Resource, ns: Option<&str>, q: &Query) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(res, q)?;
    let store = app.store();
    let items: Vec<Value> = store
        .list(res, ns, &labels, &fields)
        .into_iter()
        .map(as_item)
        .collect();
    Ok(ok(&json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": { "resourceVersion": store.resource_version().to_string() },
        "items": items,
    })))
}

fn watch(
    app: &App,
    res: &'static Resource,
    ns: Option<&str>,
    q: &Query,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(res, q)?;
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800u64);
    let (initial, rx) = {
        let store = app.store();
        let initial: Vec<Value> = store
            .list(res, ns, &labels, &fields)
            .into_iter()
            .filter(|o| rv_of(o) > since)
            .collect();
        (initial, store.subscribe())
    };
    let line = |kind: &str, object: &Value| {
        Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })))
    };
    let head: Vec<Result<Bytes, std::io::Error>> =
        initial.iter().map(|o| Ok(line("ADDED", o))).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let ns = ns.map(str::to_string);
    let matches = move |c: &Change| {
        c.group == res.group
            && c.plural == res.plural
            && ns
                .as_deref()
                .is_none_or(|ns| c.object["metadata"]["namespace"].as_str() == Some(ns))
            && labels.matches(|k| crate::selector::label(&c.object, k))
            && fields.matches(|k| crate::selector::field(&c.object, k))
    };
    let tail = futures_util::stream::unfold(rx, move |mut rx| {
        let matches = matches.clone();
        async move {
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(c)) if matches(&c) => {
                        return Some((Ok::<_, std::io::Error>(line(c.kind, &c.object)), rx));
                    }
                    Ok(Ok(_)) => {}
                    // Lagged, closed or timed out: the watch ends and the client lists again.
                    _ => return None,
                }
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(
        futures_util::stream::iter(head),
        tail,
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn rv_of(o: &Value) -> u64 {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn create(app: &Arc<App>, res: &Resource, ns: &str, body: &Bytes) -> Result<Response, ApiError> {
    let mut obj = parse_body(body)?;
    if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
        && res.namespaced
        && body_ns != ns
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({body_ns} != {ns})"
        )));
    }
    let stored = {
        let mut store = app.store();
        if res.namespaced {
            let ns_res =
                discovery::by_plural("", "namespaces").expect("namespaces are a served resource");
            store.get(ns_res, "", ns)?;
        }
        if res.plural == "pods" {
            workload::fill_pod(&mut obj);
        }
        store.create(res, ns, obj)?
    };
    if res.plural == "deployments" {
        workload::deployment_written(app, None, &stored);
    }
    let name = stored["metadata"]["name"].as_str().unwrap_or_default();
    let now = app.store().get(res, ns, name).unwrap_or(stored.clone());
    Ok(json_response(StatusCode::CREATED, &now))
}

/// PUT and PATCH: `change` makes the new object from the stored one.
fn write(
    app: &Arc<App>,
    res: &Resource,
    ns: &str,
    name: &str,
    verb: &str,
    change: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let (before, after) = {
        let mut store = app.store();
        let before = store.get(res, ns, name)?;
        forbid(&before, verb, res, ns)?;
        let new = change(&before)?;
        let after = store.update(res, ns, name, new)?;
        (before, after)
    };
    if res.plural == "deployments" {
        workload::deployment_written(app, Some(&before), &after);
    }
    Ok(ok(&after))
}

fn delete(app: &App, res: &Resource, ns: &str, name: &str) -> Result<Response, ApiError> {
    let mut store = app.store();
    let obj = store.get(res, ns, name)?;
    forbid(&obj, "delete", res, ns)?;
    let gone = store.delete(res, ns, name)?;
    if res.plural == "deployments" {
        // The garbage collector's part: the deployment's pods go with it.
        let pods = discovery::by_plural("", "pods").expect("pods are a served resource");
        let sel = crate::selector::from_match_labels(
            obj.pointer("/spec/selector/matchLabels")
                .unwrap_or(&Value::Null),
        );
        for pod in store.list(pods, Some(ns), &sel, &Selector::default()) {
            if let Some(n) = pod["metadata"]["name"].as_str() {
                let _ = store.delete(pods, ns, n);
            }
        }
    }
    Ok(ok(&gone))
}
