//! The one error type of the HTTP edge. Every failure (a domain error's [`Failure`], or a
//! rejection of axum's) becomes an [`ApiError`]: kind, slug, title, the message a client may see,
//! field and `Retry-After`. One table ([`ErrorKind::status`]) maps kinds to status codes; the
//! protocol envelopes (problem+json here, OIP's and OpenAI's in `envelope`) only render an
//! `ApiError`. 5xx bodies are opaque and the cause is logged with its `source` chain instead.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::Protocol;
use crate::error::Failure;
use crate::formats::safetensors::SafetensorsError;
use crate::jobs::spec::SpecError;
use crate::serving::request::InvalidRequest;
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

impl ErrorKind {
    /// The kind's status code, from the one table ([`ErrorKind::status_code`]).
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_code()).expect("the table holds valid status codes")
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

    /// What `failure` tells a client, in any protocol; a server-side failure is logged here,
    /// once, with its `source` chain (its client sees only the kind's opaque sentence).
    pub fn from_failure(failure: &(dyn Failure + 'static)) -> Self {
        crate::error::log_failure(failure);
        ApiError {
            kind: failure.kind(),
            slug: failure.slug(),
            title: failure.title(),
            detail: failure.public_message(),
            field: failure.field().map(str::to_owned),
            retry_after_secs: failure.retry_after(),
        }
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

impl ApiError {
    /// The response in `protocol`'s envelope (problem+json, OIP's `{"error"}`, OpenAI's error
    /// object), with `Retry-After` when the failure gives one.
    pub fn into_envelope(self, protocol: Protocol) -> Response {
        protocol.render(self.problem(), self.retry_after_secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_envelope(Protocol::Problem)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from_failure(&error)
    }
}

impl From<LowSpace> for ApiError {
    fn from(error: LowSpace) -> Self {
        ApiError::from_failure(&error)
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        ApiError::from_failure(&error)
    }
}

impl From<SafetensorsError> for ApiError {
    fn from(error: SafetensorsError) -> Self {
        ApiError::from_failure(&error)
    }
}

impl From<SpecError> for ApiError {
    fn from(error: SpecError) -> Self {
        ApiError::from_failure(&error)
    }
}

impl From<crate::serving::ServingError> for ApiError {
    fn from(error: crate::serving::ServingError) -> Self {
        ApiError::from_failure(&error)
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

/// Largest body `/v2/models/{name}/infer` and `/v1/embeddings` read (buffered, then parsed);
/// larger gets 413 in the protocol's envelope. Every limit inside the body (inputs per request,
/// shapes, values) is checked by `serving::request` and the conversions into it.
pub const MAX_INFERENCE_BODY_BYTES: usize = 2 << 20;

/// A buffered request body that could not be read: over the body limit (413), stalled past the
/// idle timeout (408), or broken off (400). The inference endpoints answer it in their own
/// envelope.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UnreadableBody {
    kind: ErrorKind,
    message: String,
}

impl From<axum::extract::rejection::BytesRejection> for UnreadableBody {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if super::limits::is_body_idle_timeout(&rejection) {
            return UnreadableBody {
                kind: ErrorKind::RequestTimeout,
                message: "the request body stopped arriving (body idle timeout)".to_owned(),
            };
        }
        use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
        let kind = match &rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ErrorKind::PayloadTooLarge
            }
            _ => ErrorKind::BadRequest,
        };
        UnreadableBody {
            kind,
            message: rejection.body_text(),
        }
    }
}

impl Failure for UnreadableBody {
    fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn slug(&self) -> &'static str {
        match self.kind {
            ErrorKind::RequestTimeout => "body-timeout",
            ErrorKind::PayloadTooLarge => "body-too-large",
            _ => "bad-request",
        }
    }
}

/// Reads a JSON request body into its wire type. serde's refusals become 400s naming the
/// request member at fault (its first path segment, e.g. `dimensions` or `inputs`): a body that
/// is not JSON at all, a missing member, a value of the wrong type.
pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, InvalidRequest> {
    let not_json = |error: &serde_json::Error| {
        InvalidRequest::new(format!("the body is not valid JSON: {error}"))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        if !error.inner().is_data() {
            return not_json(error.inner());
        }
        let member = error.path().iter().find_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let message = error.to_string();
        match member {
            Some(member) => InvalidRequest::at(member, message),
            None => InvalidRequest::new(message),
        }
    })?;
    deserializer.end().map_err(|error| not_json(&error))?;
    Ok(value)
}
