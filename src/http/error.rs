//! The one error type of the HTTP edge: every failure becomes an RFC 9457 problem+json body with
//! a stable `type` slug. One table ([`ErrorKind::status`]) maps kinds to status codes; 5xx bodies
//! are opaque and the cause is logged instead.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::formats::safetensors::SafetensorsError;
use crate::jobs::spec::SpecError;
use crate::store::blobs::BlobError;
use crate::store::reserve::LowSpace;
use crate::store::StoreError;

/// An RFC 9457 problem details object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the error kind, e.g. `/problems/unknown-scheme`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation errors: the offending option or field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub use crate::error::ErrorKind;

/// The one table from kinds to status codes.
impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(
        kind: ErrorKind,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            kind,
            slug,
            title,
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn not_found(what: &'static str, id: &str) -> Self {
        let slug = match what {
            "model" => "model-not-found",
            "job" => "job-not-found",
            "artifact" => "artifact-not-found",
            "file" => "file-not-found",
            _ => "not-found",
        };
        ApiError::new(
            ErrorKind::NotFound,
            slug,
            "Not found",
            format!("no {what} '{id}'"),
        )
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadRequest, slug, "Bad request", detail)
    }

    /// A 5xx whose cause is logged here and not shown to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            ErrorKind::Internal,
            "internal-error",
            "Internal server error",
            "the server hit an internal error; it has been logged",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("/problems/{}", self.slug),
            title: self.title.to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = serde_json::to_vec(&self.problem()).expect("problems serialize");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl ApiError {
    /// 507: a write found no room. The client may retry once space is freed.
    pub fn storage_full(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "storage full: write refused");
        ApiError::new(
            ErrorKind::InsufficientStorage,
            "insufficient-storage",
            "Insufficient storage",
            "the server has no room to store this; nothing of the request was kept",
        )
        .with_retry_after(60)
    }

    /// 503: the metadata database did not answer or refused the write for a transient reason.
    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "metadata database unavailable");
        ApiError::new(
            ErrorKind::Unavailable,
            "database-unavailable",
            "Database unavailable",
            "the metadata database is unavailable; nothing of the request was kept",
        )
        .with_retry_after(5)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_storage_full() {
            ApiError::storage_full(&error)
        } else if error.is_unavailable() {
            ApiError::database_unavailable(&error)
        } else {
            ApiError::internal(&error)
        }
    }
}

impl From<LowSpace> for ApiError {
    fn from(error: LowSpace) -> Self {
        ApiError::storage_full(&error)
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        if error.is_storage_full() {
            ApiError::storage_full(&error)
        } else {
            ApiError::internal(&error)
        }
    }
}

impl From<SafetensorsError> for ApiError {
    fn from(error: SafetensorsError) -> Self {
        if !error.is_client_error() {
            return ApiError::internal(&error);
        }
        let slug = error.slug();
        let kind = match slug {
            "upload-too-large" | "safetensors-header-too-large" => ErrorKind::PayloadTooLarge,
            _ => ErrorKind::Unprocessable,
        };
        ApiError::new(kind, slug, "Invalid safetensors upload", error.to_string())
    }
}

impl From<SpecError> for ApiError {
    fn from(error: SpecError) -> Self {
        match &error {
            SpecError::UnknownScheme { .. } => ApiError::new(
                ErrorKind::Unprocessable,
                "unknown-scheme",
                "Unknown scheme",
                error.to_string(),
            )
            .with_field("scheme"),
            SpecError::UnknownFormat { .. } => ApiError::new(
                ErrorKind::Unprocessable,
                "unknown-format",
                "Unknown format",
                error.to_string(),
            )
            .with_field("format"),
            SpecError::Unsupported { .. } => ApiError::new(
                ErrorKind::Unprocessable,
                "unsupported-combination",
                "Scheme and format do not combine",
                error.to_string(),
            )
            .with_field("format"),
            SpecError::InvalidOption { field, .. } => {
                let field = field.clone();
                ApiError::new(
                    ErrorKind::Unprocessable,
                    "invalid-option",
                    "Invalid option",
                    error.to_string(),
                )
                .with_field(field)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if super::limits::is_body_idle_timeout(&rejection) {
            return ApiError::body_timeout(&rejection.body_text());
        }
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "unsupported-media-type",
                "Unsupported media type",
                "expected a body with Content-Type: application/json",
            ),
            JsonRejection::JsonDataError(e) => ApiError::new(
                ErrorKind::Unprocessable,
                "invalid-body",
                "Invalid request body",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    "body-too-large",
                    "Body too large",
                    e.body_text(),
                )
            }
            other => ApiError::bad_request("malformed-json", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid-query", rejection.body_text())
    }
}
