//! Why a catalog use case was refused or failed. Each variant says what it is (an
//! [`ErrorKind`], a slug, a title); the status code is chosen at the edge.

use uuid::Uuid;

use super::header_budget::BudgetExhausted;
use crate::error::{ErrorKind, Failure};
use crate::formats::safetensors::SafetensorsError;
use crate::store::blobs::BlobError;
use crate::store::reserve::LowSpace;
use crate::store::{JobState, StoreError};

/// An error from a request body's stream, boxed so that any delivery can hand its own.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a body could not be read, as the delivery layer classified it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client stopped sending (the delivery's idle timeout fired).
    #[error("{0}")]
    Stalled(#[source] BoxError),
    /// The body broke off or was malformed.
    #[error("{0}")]
    Interrupted(#[source] BoxError),
}

/// The failures of the catalog's use cases.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("'{name}' is not a valid name: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'")]
    InvalidName { name: String },
    #[error("'{name}' is not a valid file name: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'")]
    InvalidFilename { name: String },
    /// The declared length is over the upload limit (refused before any byte is read).
    #[error("the body has {length} bytes; the limit is {limit}")]
    DeclaredTooLarge { length: u64, limit: u64 },
    /// The bytes read so far are over the upload limit.
    #[error("the limit is {limit} bytes")]
    TooLarge { limit: u64 },
    /// A JSON companion file is over what is parsed in memory.
    #[error("JSON companion files are limited to {limit} bytes")]
    JsonTooLarge { limit: usize },
    #[error("the body is empty; send the safetensors file as the body (curl -T) or as the multipart field 'file'")]
    EmptyBody,
    #[error("{source}; nothing of the request was kept")]
    BodyStalled {
        #[source]
        source: BoxError,
    },
    #[error("reading the body failed: {source}")]
    BodyInterrupted {
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error("the __metadata__ map holds {bytes} bytes of keys and values; the limit is {limit}")]
    MetadataTooLarge { bytes: u64, limit: u64 },
    #[error(
        "the headers of the uploads in progress fill the server's header buffer ({0}); nothing \
         of this upload was kept, retry later"
    )]
    HeaderBudget(#[source] BudgetExhausted),
    #[error("the body's sha-256 is {actual}, the request declared {expected}")]
    DigestMismatch { actual: String, expected: String },
    #[error("{filename} is not valid JSON: {source}")]
    InvalidJson {
        filename: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("config.json must be a JSON object")]
    ConfigNotObject,
    #[error("no model '{0}'")]
    ModelNotFound(Uuid),
    #[error("job {job_id} is queued or running on this model; cancel it or wait")]
    ModelInUse { job_id: Uuid },
    #[error("{queued} jobs are waiting, the limit is {limit}; retry later")]
    QueueFull { queued: u64, limit: u64 },
    #[error("no job '{0}'")]
    JobNotFound(Uuid),
    #[error("job {id} is {}; only queued or running jobs can be cancelled", .state.as_str())]
    JobAlreadyFinished { id: Uuid, state: JobState },
    #[error(transparent)]
    LowSpace(#[from] LowSpace),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl From<BodyError> for CatalogError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Stalled(source) => CatalogError::BodyStalled { source },
            BodyError::Interrupted(source) => CatalogError::BodyInterrupted { source },
        }
    }
}

impl From<BudgetExhausted> for CatalogError {
    fn from(error: BudgetExhausted) -> Self {
        tracing::warn!(%error, "header buffer budget exhausted: upload refused");
        CatalogError::HeaderBudget(error)
    }
}

impl CatalogError {
    /// The problem's human-readable title (the same for every instance of a slug).
    pub fn title(&self) -> &'static str {
        use CatalogError::*;
        match self {
            InvalidName { .. } => "Invalid name",
            InvalidFilename { .. } => "Invalid file name",
            DeclaredTooLarge { .. } | TooLarge { .. } | JsonTooLarge { .. } => "Upload too large",
            EmptyBody | BodyInterrupted { .. } => "Bad request",
            BodyStalled { .. } => "Request body timed out",
            Safetensors(_) | MetadataTooLarge { .. } => "Invalid safetensors upload",
            HeaderBudget(_) => "Too many uploads in progress",
            DigestMismatch { .. } => "Digest mismatch",
            InvalidJson { .. } | ConfigNotObject => "Invalid JSON file",
            ModelNotFound(_) | JobNotFound(_) => "Not found",
            ModelInUse { .. } => "Model in use",
            QueueFull { .. } => "Job queue full",
            JobAlreadyFinished { .. } => "Job already finished",
            LowSpace(_) => "Insufficient storage",
            Store(_) | Blob(_) => "Storage error",
        }
    }
}

impl Failure for CatalogError {
    fn kind(&self) -> ErrorKind {
        use CatalogError::*;
        match self {
            InvalidName { .. }
            | InvalidFilename { .. }
            | MetadataTooLarge { .. }
            | DigestMismatch { .. }
            | InvalidJson { .. }
            | ConfigNotObject => ErrorKind::Unprocessable,
            DeclaredTooLarge { .. } | TooLarge { .. } | JsonTooLarge { .. } => {
                ErrorKind::PayloadTooLarge
            }
            EmptyBody | BodyInterrupted { .. } => ErrorKind::BadRequest,
            BodyStalled { .. } => ErrorKind::RequestTimeout,
            Safetensors(e) => e.kind(),
            HeaderBudget(_) | QueueFull { .. } => ErrorKind::Unavailable,
            ModelNotFound(_) | JobNotFound(_) => ErrorKind::NotFound,
            ModelInUse { .. } | JobAlreadyFinished { .. } => ErrorKind::Conflict,
            LowSpace(e) => e.kind(),
            Store(e) => e.kind(),
            Blob(e) => e.kind(),
        }
    }

    fn slug(&self) -> &'static str {
        use CatalogError::*;
        match self {
            InvalidName { .. } => "invalid-name",
            InvalidFilename { .. } => "invalid-filename",
            DeclaredTooLarge { .. } | TooLarge { .. } | JsonTooLarge { .. } => "upload-too-large",
            EmptyBody => "empty-body",
            BodyStalled { .. } => "body-timeout",
            BodyInterrupted { .. } => "upload-interrupted",
            Safetensors(e) => Failure::slug(e),
            MetadataTooLarge { .. } => "safetensors-metadata-too-large",
            HeaderBudget(_) => "header-budget-exhausted",
            DigestMismatch { .. } => "digest-mismatch",
            InvalidJson { .. } | ConfigNotObject => "invalid-json",
            ModelNotFound(_) => "model-not-found",
            JobNotFound(_) => "job-not-found",
            ModelInUse { .. } => "model-in-use",
            QueueFull { .. } => "queue-full",
            JobAlreadyFinished { .. } => "job-already-finished",
            LowSpace(e) => e.slug(),
            Store(e) => e.slug(),
            Blob(e) => e.slug(),
        }
    }

    fn title(&self) -> &'static str {
        match self {
            CatalogError::Safetensors(e) => Failure::title(e),
            CatalogError::LowSpace(e) => e.title(),
            CatalogError::Store(e) => e.title(),
            CatalogError::Blob(e) => e.title(),
            other => CatalogError::title(other),
        }
    }

    /// Refusals show their own text; so do the two 503s whose text tells the client what to
    /// wait for. Storage failures say what their own type says (opaque, the cause logged).
    fn public_message(&self) -> String {
        match self {
            CatalogError::Safetensors(e) => e.public_message(),
            CatalogError::LowSpace(e) => e.public_message(),
            CatalogError::Store(e) => e.public_message(),
            CatalogError::Blob(e) => e.public_message(),
            CatalogError::HeaderBudget(_) | CatalogError::QueueFull { .. } => self.to_string(),
            other if other.kind().is_client_error() => other.to_string(),
            other => other.kind().opaque_message().to_owned(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            CatalogError::InvalidName { .. } => Some("name"),
            CatalogError::InvalidFilename { .. } => Some("filename"),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            CatalogError::HeaderBudget(_) => Some(2),
            CatalogError::QueueFull { .. } => Some(10),
            CatalogError::LowSpace(e) => e.retry_after(),
            CatalogError::Store(e) => e.retry_after(),
            CatalogError::Blob(e) => e.retry_after(),
            _ => None,
        }
    }
}
