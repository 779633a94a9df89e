//! Failures in the shape of the Kubernetes `Status` object, which kubectl and the `kube` crate parse.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed API call: its HTTP code, `reason` and message, and the object it was about.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details.name`, `details.group`, `details.kind` (the resource's plural, as the API server says).
    pub details: Option<(String, String, String)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, name: &str, group: &str, plural: &str) -> ApiError {
        self.details = Some((name.into(), group.into(), plural.into()));
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .about(name, group, plural)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .about(name, group, plural)
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .about(name, group, plural)
    }

    pub fn forbidden(verb: &str, group: &str, plural: &str, name: &str, ns: &str) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: User \"system:anonymous\" cannot {verb} resource \
                 \"{plural}\" in API group \"{group}\" in the namespace \"{ns}\"",
                qualified(group, plural)
            ),
        )
        .about(name, group, plural)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, group, kind)) = &self.details {
            let mut d = json!({ "name": name, "kind": kind });
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            v["details"] = d;
        }
        v
    }
}

/// `deployments.apps`, or `pods` for the core group: how the API server names a resource in messages.
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_json())).into_response()
    }
}
