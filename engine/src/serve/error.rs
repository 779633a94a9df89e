//! How the API says no: a status code and a JSON body `{"error": CODE, "message": TEXT}` that a
//! script can branch on and a person can read.

use crate::run::driver::DriverError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable word: `unauthorized`, `forbidden`, `not_found`, `invalid`, `conflict`,
    /// `unavailable`, `internal`.
    pub error: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "invalid",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code().to_string(),
            message: self.message,
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"runbook\""),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NoSuchRun(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Ambiguous { .. } => ApiError::invalid(e.to_string()),
            StoreError::Duplicate(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            // The database's own words go to the server's log, not to every caller.
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database failed; the server's log has the cause",
                )
            }
        }
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> ApiError {
        match e {
            DriverError::Store(s) => s.into(),
            DriverError::Refused(m) => ApiError::new(StatusCode::CONFLICT, m),
            DriverError::Setup(m) => ApiError::invalid(m),
        }
    }
}
