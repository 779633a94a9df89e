//! `http.request`: one HTTP request with an expected status and a parsed JSON body.

use crate::schema::{Field, FieldType};
use crate::{Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

static INFO: PluginInfo = PluginInfo {
    name: "http.request",
    summary: "Send one HTTP request. The side-effect class follows the method: GET and HEAD are \
              `read`, PUT and DELETE `idempotent`, POST and PATCH `unsafe`.",
    class: SideEffect::Read,
    fields: &[
        Field::req("url", FieldType::String, "Absolute http:// or https:// URL."),
        Field::opt(
            "method",
            FieldType::Enum(&METHODS),
            "HTTP method (default GET).",
        ),
        Field::opt(
            "headers",
            FieldType::Map(&FieldType::String),
            "Request headers.",
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
};

#[derive(Default)]
pub struct HttpRequest {}

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

    fn run<'a>(&'a self, _input: serde_json::Value, _ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move { Err(StepError::new(crate::ErrorKind::Other, "not yet implemented")) })
    }
}
