//! Why a job attempt failed: one variant per reason, each with its kind, slug and title, and
//! whether another attempt may help. The job's stored `error` is the RFC 9457 problem object
//! rendered from it ([`JobFailure::problem`]); its `source` chain goes to the logs.

use crate::catalog::ArtifactError;
use crate::error::{ErrorKind, Failure};
use crate::jobs::error::PipelineError;
use crate::jobs::spec::SpecError;
use crate::store::blobs::{is_storage_full, BlobError};
use crate::store::StoreError;

/// A failed job attempt.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// The stored options no longer parse (they were valid when the job was queued).
    #[error("{0}")]
    InvalidOptions(#[source] SpecError),
    #[error("the model was deleted before the job ran")]
    ModelDeleted,
    /// Loading the job's model failed.
    #[error("{0}")]
    Store(#[source] StoreError),
    /// Reading the model's config.json failed.
    #[error("{0}")]
    ReadConfig(#[source] BlobError),
    /// The model cannot be quantized as asked (the pipeline's slug says why).
    #[error("{detail}")]
    InvalidInput { slug: &'static str, detail: String },
    /// Reading the model or writing the output failed.
    #[error("{0}")]
    Quantizing(#[source] std::io::Error),
    /// A bug of ours found while quantizing (logged with its source; not retried).
    #[error("the job hit an internal error; it has been logged and is not retried")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The worker panicked (the panic message is logged, not shown).
    #[error("the worker hit an internal error")]
    Panicked { message: String },
    /// A companion file of the model was replaced while the job ran.
    #[error("{filename} was replaced; the job runs again")]
    InputChanged { filename: String },
    /// Committing the output or its config.json failed.
    #[error("{0}")]
    SavingArtifact(#[source] BlobError),
    /// The model's config.json cannot take the `quantization_config`.
    #[error("{0}")]
    InvalidModelConfig(String),
    /// The worker vanished on the job's last allowed attempt.
    #[error("the worker running this job stopped responding on its last allowed attempt")]
    AttemptsExhausted,
}

impl JobFailure {
    /// Whether another attempt may succeed (a transient fault rather than the job's input).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            JobFailure::Quantizing(_)
                | JobFailure::Panicked { .. }
                | JobFailure::InputChanged { .. }
                | JobFailure::SavingArtifact(_)
                | JobFailure::InvalidModelConfig(_)
        )
    }

    /// The failure of a pipeline run that was not cancelled.
    pub fn from_pipeline(error: PipelineError) -> Option<Self> {
        match error {
            PipelineError::Cancelled => None,
            PipelineError::InvalidInput { slug, detail } => {
                Some(JobFailure::InvalidInput { slug, detail })
            }
            PipelineError::Io(e) => Some(JobFailure::Quantizing(e)),
            PipelineError::Internal(e) => Some(JobFailure::Internal(e)),
        }
    }

    /// A storage failure's own cause: the disk (or quota) is full.
    fn storage_is_full(&self) -> bool {
        match self {
            JobFailure::Quantizing(e) => is_storage_full(e),
            JobFailure::SavingArtifact(e) => is_storage_full(e),
            _ => false,
        }
    }

    pub fn title(&self) -> &'static str {
        if self.storage_is_full() {
            return "No room left for the artifact";
        }
        match self {
            JobFailure::InvalidOptions(_) => "Invalid job options",
            JobFailure::ModelDeleted => "Model not found",
            JobFailure::Store(_) => "Metadata store error",
            JobFailure::ReadConfig(_) => "Storage error while reading the model's config.json",
            JobFailure::InvalidInput { .. } => "The model cannot be quantized as requested",
            JobFailure::Quantizing(_) => "Storage error while quantizing",
            JobFailure::Panicked { .. } | JobFailure::Internal(_) => {
                "Internal error while quantizing"
            }
            JobFailure::InputChanged { .. } => "The model's files changed while the job ran",
            JobFailure::SavingArtifact(_) => "Storage error while saving the artifact",
            JobFailure::InvalidModelConfig(_) => "The model's config.json is unusable",
            JobFailure::AttemptsExhausted => "Job attempts exhausted",
        }
    }

    /// The RFC 9457 problem object stored on the job and shown by the API. Its status comes
    /// from the one table of kinds to statuses (`ErrorKind::status_code`).
    pub fn problem(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("/problems/{}", self.slug()),
            "title": self.title(),
            "status": self.kind().status_code(),
            "detail": self.to_string(),
        })
    }
}

impl From<ArtifactError> for JobFailure {
    fn from(error: ArtifactError) -> Self {
        match error {
            ArtifactError::InputChanged { filename } => JobFailure::InputChanged { filename },
            ArtifactError::Storage(e) => JobFailure::SavingArtifact(e),
            ArtifactError::InvalidModelConfig(detail) => JobFailure::InvalidModelConfig(detail),
            // Not a failure of the job: the lease is left to expire and the job runs again.
            ArtifactError::Record(e) => JobFailure::Store(e),
        }
    }
}

impl Failure for JobFailure {
    fn kind(&self) -> ErrorKind {
        if self.storage_is_full() {
            return ErrorKind::InsufficientStorage;
        }
        match self {
            JobFailure::InvalidOptions(_)
            | JobFailure::InvalidInput { .. }
            | JobFailure::InvalidModelConfig(_) => ErrorKind::Unprocessable,
            JobFailure::ModelDeleted => ErrorKind::NotFound,
            JobFailure::InputChanged { .. } => ErrorKind::Unavailable,
            JobFailure::Store(_)
            | JobFailure::ReadConfig(_)
            | JobFailure::Quantizing(_)
            | JobFailure::Panicked { .. }
            | JobFailure::Internal(_)
            | JobFailure::SavingArtifact(_)
            | JobFailure::AttemptsExhausted => ErrorKind::Internal,
        }
    }

    fn slug(&self) -> &'static str {
        if self.storage_is_full() {
            return "job-storage-full";
        }
        match self {
            JobFailure::InvalidOptions(_) => "invalid-options",
            JobFailure::ModelDeleted => "model-not-found",
            JobFailure::Store(_) => "job-store-error",
            JobFailure::ReadConfig(_)
            | JobFailure::Quantizing(_)
            | JobFailure::SavingArtifact(_) => "job-io-error",
            JobFailure::InvalidInput { slug, .. } => slug,
            JobFailure::Panicked { .. } | JobFailure::Internal(_) => "job-internal-error",
            JobFailure::InputChanged { .. } => "job-input-changed",
            JobFailure::InvalidModelConfig(_) => "invalid-model-config",
            JobFailure::AttemptsExhausted => "job-attempts-exhausted",
        }
    }
}
