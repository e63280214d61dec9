//! How a pipeline run fails. Its own module, so that the pipeline's parts (`encode`, `output`)
//! and the pipeline itself depend on it rather than on each other.

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cancelled")]
    Cancelled,
    /// The model itself cannot be quantized as asked; retrying will not help.
    #[error("{detail}")]
    InvalidInput { slug: &'static str, detail: String },
    /// Disk or similar trouble; worth another attempt.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A bug of ours (a layout writing what it did not declare, a writer refusing the data it
    /// was promised): not the model's fault, and another attempt would fail the same way.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}
