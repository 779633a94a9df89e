//! The JSON API and the server's other routes. Every view is one library call: the run list is the
//! store's, a run is the read model `runbook show -o json` prints, an answer goes through the same
//! `approval::answer` as `runbook approve`.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody};
use super::wire::{AnswerResult, EventRecord, Events, Started};
use crate::run::event::{OperatorAction, RunStatus};
use crate::run::launch::{self, Queued};
use crate::run::options::{Answer, Hooks, RunOptions};
use crate::run::view::Loaded;
use crate::runbook::params::{Given, bind};
use crate::store::{RunRow, StoreError};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runbook",
        description = "Runs of operations runbooks: start, follow, approve, cancel, audit. Every call but health, metrics and this document needs `Authorization: Bearer TOKEN`; a token's roles (viewer, operator, approver) say what it may do."
    ),
    modifiers(&Bearer),
    tags(
        (name = "runs", description = "Runs and their journals"),
        (name = "alerts", description = "Alertmanager's webhook"),
    )
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes, and the OpenAPI document that describes them.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(super::hooks::alertmanager))
        .routes(routes!(list_runbooks))
        .routes(routes!(list_runs, start_run))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(approve))
        .routes(routes!(deny))
        .routes(routes!(resume))
        .routes(routes!(cancel_run))
        .routes(routes!(plan))
        .split_for_parts()
}

/// The server's OpenAPI document (what `/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = routes();
    let doc = Arc::new(doc);
    api.route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_request,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(super::hooks::MAX_BODY))
        .with_state(state)
}

/// One log event per request (debug when it succeeded, info for a client's mistake, warn for a
/// server error, which `/metrics` also counts by route).
async fn log_request(
    State(s): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        s.metrics
            .http_errors
            .get_or_create(&vec![("route", route.clone())])
            .inc();
        tracing::warn!(%method, %route, status, ms, "request failed");
    } else if status >= 400 {
        tracing::info!(%method, %route, status, ms, "request refused");
    } else {
        tracing::debug!(%method, %route, status, ms, "request");
    }
    resp
}

/// Ready when the database answers: a load balancer sends nothing to a server that cannot journal.
async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.count_by_status().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    match s.metrics.render(s.store.as_ref()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The caller, from the request's bearer token; 401 without a valid one.
pub struct Authed(pub Caller);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        s.auth.check(header).map(Authed).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required (Authorization: Bearer TOKEN)",
            )
        })
    }
}

/// 403 unless the caller has `role`.
pub fn require(c: &Caller, role: Role) -> Result<(), ApiError> {
    if c.may(role) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` may not do this: it needs the {} role",
                c.subject,
                role.as_str()
            ),
        ))
    }
}

/// A JSON body whose problems are answered as API errors (JSON), not axum's plain text.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::new(e.status(), e.body_text())),
        }
    }
}

/// An optional JSON body: none at all (no bytes) is `None`; anything else must parse.
impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::OptionalFromRequest<S>
    for Body<T>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(|v| Some(Body(v)))
            .map_err(|e| {
                let status = if e.is_data() {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError::new(status, format!("the body is not what this call takes: {e}"))
            })
    }
}

/// A query string whose problems are answered as API errors.
pub struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct RunbookInfo {
    name: String,
    title: Option<String>,
    /// Alert names that start it.
    alerts: Vec<String>,
    file: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Runbooks {
    runbooks: Vec<RunbookInfo>,
    /// Files found that do not validate, with their errors: no alert starts them.
    refused: Vec<crate::runbook::catalog::Refused>,
}

/// The runbooks this server serves.
#[utoipa::path(get, path = "/api/v1/runbooks", tag = "runs",
    responses((status = 200, body = Runbooks), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_runbooks(
    State(s): State<AppState>,
    Authed(_): Authed,
) -> Result<Json<Runbooks>, ApiError> {
    Ok(Json(Runbooks {
        runbooks: s
            .catalog
            .entries
            .iter()
            .map(|e| RunbookInfo {
                name: e.name().to_string(),
                title: e.plan.runbook.title.clone(),
                alerts: e.plan.runbook.alerts.clone(),
                file: e.path.display().to_string(),
            })
            .collect(),
        refused: s.catalog.refused.clone(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// At most this many runs, newest first (1–1000, default 50).
    limit: Option<i64>,
    /// Only runs in this status.
    status: Option<RunStatus>,
    /// Only runs of this runbook.
    runbook: Option<String>,
    /// Only runs started before this instant (epoch milliseconds). To page, give the `started_at`
    /// and `id` of the last run of the previous page here and in `before_id`.
    before: Option<i64>,
    /// With `before`: the `id` of the last run of the previous page. Runs started in that same
    /// millisecond with a smaller id come next, so no run is skipped at a page's edge.
    before_id: Option<String>,
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = Vec<RunRow>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_runs(
    State(s): State<AppState>,
    Authed(_): Authed,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<RunRow>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let before = match (q.before, q.before_id.as_deref()) {
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "before_id needs before: the started_at of the run it names",
            ));
        }
        (b, id) => b.map(|at| (at, id)),
    };
    let rows = s
        .store
        .runs_where(q.status, q.runbook.as_deref(), before, limit)
        .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartRun {
    /// The runbook's name (see /api/v1/runbooks).
    runbook: String,
    /// Parameters by name; the runbook's defaults fill the rest.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
}

/// The longest Idempotency-Key kept.
const MAX_KEY: usize = 200;

/// Queues a run for the workers. With an `Idempotency-Key` header, a retried request returns the
/// run the first one created instead of starting another.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = StartRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request start no second run")),
    responses((status = 201, body = Started), (status = 200, description = "Created earlier with this Idempotency-Key", body = Started),
        (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn start_run(
    State(s): State<AppState>,
    Authed(caller): Authed,
    headers: HeaderMap,
    Body(req): Body<StartRun>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    require(&caller, Role::Operator)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?
                .trim();
            if k.is_empty() || k.len() > MAX_KEY {
                return Err(ApiError::invalid(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY} characters"
                )));
            }
            Some(format!("{}/{k}", caller.subject))
        }
    };
    if let Some(k) = &key
        && let Some(run) = s.store.run_by_request_key(k).await?
    {
        return Ok((StatusCode::OK, Json(existing(&s, run).await?)));
    }
    let (entry, params) = served(&s, &req.runbook, req.params)?;
    let mut opts = RunOptions::new(&caller.subject);
    opts.profile = s.profile.clone();
    let queued = Queued {
        request_key: key.clone(),
        ..Queued::default()
    };
    let made = launch::enqueue(
        Arc::clone(&entry.plan),
        s.store.as_ref(),
        &s.engine,
        entry.source(),
        params,
        &opts,
        queued,
    )
    .await;
    match (made, key) {
        (Ok(run), _) => {
            s.made_due();
            Ok((
                StatusCode::CREATED,
                Json(Started {
                    run,
                    status: RunStatus::Parked,
                    created: true,
                }),
            ))
        }
        // The same key, sent twice at once: the other request created it.
        (Err(crate::run::driver::DriverError::Store(StoreError::Duplicate(_))), Some(k)) => {
            match s.store.run_by_request_key(&k).await? {
                Some(run) => Ok((StatusCode::OK, Json(existing(&s, run).await?))),
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "the run could not be created; retry",
                )),
            }
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// The served runbook `name`, with `params` checked against it.
fn served<'a>(
    s: &'a AppState,
    name: &str,
    params: Map<String, Value>,
) -> Result<(&'a crate::runbook::catalog::Entry, Map<String, Value>), ApiError> {
    let entry = s.catalog.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this server serves no runbook `{name}` (GET /api/v1/runbooks lists them)"),
        )
    })?;
    let params = bind(&entry.plan.runbook, params, Given::Json)
        .map_err(|e| ApiError::invalid(e.join("; ")))?;
    Ok((entry, params))
}

async fn existing(s: &AppState, run: String) -> Result<Started, ApiError> {
    let row = s.store.run(&run).await?;
    Ok(Started {
        run,
        status: row.status,
        created: false,
    })
}

/// A run as `runbook show -o json` prints it: its header, every step with its attempts, decisions
/// and the values they read, approvals, interventions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
struct RunDetail(Value);

/// Reads one run (an id or a unique prefix of one).
#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs",
    params(("run" = String, Path, description = "Run id or unique prefix")),
    responses((status = 200, body = RunDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_run(
    State(s): State<AppState>,
    Authed(_): Authed,
    Path(run): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let loaded = Loaded::load(s.store.as_ref(), &run).await?;
    Ok(Json(RunDetail(
        serde_json::to_value(&loaded.view).unwrap_or_default(),
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events after this sequence number (default: from the first).
    after: Option<i64>,
    /// At most this many (1–1000, default 200).
    limit: Option<i64>,
}

/// A run's journal, a page at a time, with the hashes that chain it.
#[utoipa::path(get, path = "/api/v1/runs/{run}/events", tag = "runs",
    params(("run" = String, Path, description = "Run id or unique prefix"), EventsQuery),
    responses((status = 200, body = Events), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn run_events(
    State(s): State<AppState>,
    Authed(_): Authed,
    Path(run): Path<String>,
    Q(q): Q<EventsQuery>,
) -> Result<Json<Events>, ApiError> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let row = s.store.run(&run).await?;
    // One more than asked tells whether another page follows.
    let mut page = s
        .store
        .events_page(&row.id, q.after.unwrap_or(-1), limit + 1)
        .await?;
    let more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_after = if more {
        page.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(Events {
        run: row.id,
        events: page.into_iter().map(EventRecord::from).collect(),
        next_after,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// A note kept with the approval.
    comment: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    /// Why: journaled, and shown in the step's failure.
    reason: String,
}

/// The most a comment or reason may hold.
const MAX_NOTE: usize = 4096;

async fn give_answer(
    s: &AppState,
    caller: &Caller,
    run: &str,
    step: String,
    approve: bool,
    note: Option<String>,
) -> Result<Json<AnswerResult>, ApiError> {
    require(caller, Role::Approver)?;
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(ApiError::invalid(format!(
            "a comment or reason holds at most {MAX_NOTE} bytes"
        )));
    }
    let answered = crate::run::approval::answer(
        s.store.as_ref(),
        &s.engine,
        run,
        Answer {
            step,
            attempt: None,
            approve,
            by: caller.subject.clone(),
            how: "api".to_string(),
            comment: note,
        },
    )
    .await?;
    if answered.recorded && !answered.driven {
        s.made_due();
    }
    Ok(Json(AnswerResult {
        run: answered.run_id,
        recorded: answered.recorded,
        status: answered.status,
        driven: answered.driven,
    }))
}

/// Approves a step that waits for approval. The answer is journaled with the token's subject.
#[utoipa::path(post, path = "/api/v1/runs/{run}/steps/{step}/approve", tag = "runs",
    params(("run" = String, Path), ("step" = String, Path)),
    request_body(content = ApproveBody, description = "Optional comment", content_type = "application/json"),
    responses((status = 200, body = AnswerResult), (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not waiting for approval, or this caller may not answer", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn approve(
    State(s): State<AppState>,
    Authed(caller): Authed,
    Path((run, step)): Path<(String, String)>,
    body: Option<Body<ApproveBody>>,
) -> Result<Json<AnswerResult>, ApiError> {
    let comment = body.and_then(|Body(b)| b.comment);
    give_answer(&s, &caller, &run, step, true, comment).await
}

/// Denies a step that waits for approval: it fails (kind `approval`) with the reason.
#[utoipa::path(post, path = "/api/v1/runs/{run}/steps/{step}/deny", tag = "runs",
    params(("run" = String, Path), ("step" = String, Path)),
    request_body = DenyBody,
    responses((status = 200, body = AnswerResult), (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn deny(
    State(s): State<AppState>,
    Authed(caller): Authed,
    Path((run, step)): Path<(String, String)>,
    Body(body): Body<DenyBody>,
) -> Result<Json<AnswerResult>, ApiError> {
    if body.reason.trim().is_empty() {
        return Err(ApiError::invalid("a denial needs a reason"));
    }
    give_answer(&s, &caller, &run, step, false, Some(body.reason)).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    /// Steps whose outcome is unknown that did act.
    #[serde(default)]
    mark_done: Vec<String>,
    /// Steps whose outcome is unknown to run again.
    #[serde(default)]
    retry: Vec<String>,
    /// Steps whose outcome is unknown to treat as failed.
    #[serde(default)]
    mark_failed: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Resumed {
    run: String,
    /// `parked` (due now: a worker continues it), or `waiting` if steps still wait for an
    /// operator, or how it ended.
    status: RunStatus,
}

/// Continues a stopped run: journals the operator's decisions on steps whose outcome is unknown
/// and hands the run to the workers. Refused while a process drives it.
#[utoipa::path(post, path = "/api/v1/runs/{run}/resume", tag = "runs",
    params(("run" = String, Path)),
    request_body(content = ResumeBody, content_type = "application/json"),
    responses((status = 200, body = Resumed), (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn resume(
    State(s): State<AppState>,
    Authed(caller): Authed,
    Path(run): Path<String>,
    body: Option<Body<ResumeBody>>,
) -> Result<Json<Resumed>, ApiError> {
    require(&caller, Role::Operator)?;
    let b = body.map(|Body(b)| b).unwrap_or_default();
    let mut decisions = Vec::new();
    for (steps, action) in [
        (b.mark_done, OperatorAction::MarkDone),
        (b.retry, OperatorAction::Retry),
        (b.mark_failed, OperatorAction::MarkFailed),
    ] {
        decisions.extend(steps.into_iter().map(|st| (st, action)));
    }
    let mut opts = RunOptions::new(&caller.subject);
    opts.profile = s.profile.clone();
    opts.detach = true;
    // Drained from the start: the driver journals the resume and the decisions, then hands the
    // run on (due now) instead of driving it inside this request.
    opts.drain.cancel();
    let outcome = launch::resume(
        Arc::clone(&s.store),
        &s.engine,
        &run,
        decisions,
        None,
        opts,
        Hooks::quiet(),
    )
    .await?;
    s.made_due();
    Ok(Json(Resumed {
        run: outcome.run_id,
        status: outcome.status,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why: journaled, and shown as the run's error.
    reason: String,
    /// Cancel only if nothing but `read` steps has started; otherwise the run journals the
    /// refusal and goes on.
    #[serde(default)]
    only_before_changes: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct Cancelled {
    run: String,
    /// What the run's journal says of the request so far.
    outcome: crate::run::cancel::Outcome,
}

/// How long a cancel request waits for the process driving the run to take it.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Cancels a run: steps in flight are stopped and fail (kind `cancelled`), the run ends `failed`
/// with the reason. A run no process drives is cancelled here; one a process drives is cancelled
/// by it within a second (the answer says `pending` if that takes longer than 5 s).
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs",
    params(("run" = String, Path)),
    request_body = CancelBody,
    responses((status = 200, body = Cancelled), (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The run has ended, or is a plan", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_run(
    State(s): State<AppState>,
    Authed(caller): Authed,
    Path(run): Path<String>,
    Body(body): Body<CancelBody>,
) -> Result<Json<Cancelled>, ApiError> {
    require(&caller, Role::Operator)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::invalid("a cancel needs a reason"));
    }
    if body.reason.len() > MAX_NOTE {
        return Err(ApiError::invalid(format!(
            "a reason holds at most {MAX_NOTE} bytes"
        )));
    }
    let c = crate::run::cancel::Cancel {
        by: caller.subject.clone(),
        how: "api".to_string(),
        reason: body.reason,
        only_before_changes: body.only_before_changes,
    };
    let requested = crate::run::cancel::request(s.store.as_ref(), &run, &c).await?;
    let outcome = crate::run::cancel::settle(
        s.store.as_ref(),
        &s.engine,
        &requested,
        &caller.subject,
        CANCEL_WAIT,
    )
    .await?;
    Ok(Json(Cancelled {
        run: requested.run_id,
        outcome,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    runbook: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
}

/// Plans a run: read steps run for real, every step that would act says what it would do instead.
/// Nothing is changed; the plan is journaled as a run of kind `plan`. Answers when the plan is done.
#[utoipa::path(post, path = "/api/v1/plans", tag = "runs", request_body = PlanRequest,
    responses((status = 200, description = "The plan, as GET /api/v1/runs/{run} shows runs", body = RunDetail),
        (status = 400, description = "The body is not JSON", body = ErrorBody), (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn plan(
    State(s): State<AppState>,
    Authed(caller): Authed,
    Body(req): Body<PlanRequest>,
) -> Result<Json<RunDetail>, ApiError> {
    require(&caller, Role::Operator)?;
    let (entry, params) = served(&s, &req.runbook, req.params)?;
    let mut opts = RunOptions::new(&caller.subject);
    opts.profile = s.profile.clone();
    opts.plan = true;
    let outcome = launch::start(
        Arc::clone(&entry.plan),
        Arc::clone(&s.store),
        &s.engine,
        entry.source(),
        params,
        opts,
        Hooks::quiet(),
    )
    .await?;
    let loaded = Loaded::load(s.store.as_ref(), &outcome.run_id).await?;
    Ok(Json(RunDetail(
        serde_json::to_value(&loaded.view).unwrap_or_default(),
    )))
}
