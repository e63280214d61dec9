//! Inference requests as serving takes them: validated values that every protocol (`/v2`,
//! `/v1/embeddings`) converts its wire request into, so that limits are checked here, once.

use crate::error::{ErrorKind, Failure};

/// A request refused before any model work: not of the protocol's schema, or over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    /// The request member at fault (OpenAI's `param`), when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(message: impl Into<String>) -> Self {
        InvalidRequest {
            field: None,
            message: message.into(),
        }
    }

    /// Refused because of the request member `field`.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl Failure for InvalidRequest {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }

    fn slug(&self) -> &'static str {
        "bad-inference-request"
    }

    fn title(&self) -> &'static str {
        "Invalid inference request"
    }

    fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}
