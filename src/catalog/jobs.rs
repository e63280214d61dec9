//! Jobs as the catalog sees them: queued in one statement (the model must exist and the queue
//! have room), cancelled on request.

use uuid::Uuid;

use super::error::CatalogError;
use super::Catalog;
use crate::jobs::spec::JobSpec;
use crate::store::{CancelOutcome, EnqueueOutcome, JobRecord, JobState, NewJob};

/// A validated request for a job.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub model_id: Uuid,
    pub spec: JobSpec,
}

/// What a cancellation did.
#[derive(Debug)]
pub enum Cancellation {
    /// The job is cancelled (it was queued, or had been cancelled before).
    Cancelled(JobRecord),
    /// The job is running; its worker stops at the next tensor.
    Requested(JobRecord),
}

impl Catalog {
    /// Queues a job if the model exists and the queue has room (one statement), and wakes the
    /// runner. Refused below the free-space reserve: a job will write an artifact, so it is
    /// refused up front rather than failed for lack of room.
    pub async fn create_job(&self, request: &JobRequest) -> Result<JobRecord, CatalogError> {
        self.reserve.check(0).await?;
        let new_job = NewJob {
            id: Uuid::now_v7(),
            model_id: request.model_id,
            scheme: request.spec.scheme.name().to_owned(),
            options: request.spec.canonical_options(),
            format: request.spec.format.name().to_owned(),
            max_attempts: self.settings.job_max_attempts.max(1),
        };
        let limit = self.settings.max_queued_jobs;
        match self.store.enqueue_job(&new_job, limit).await? {
            EnqueueOutcome::Enqueued(job) => {
                self.job_wake.notify_one();
                Ok(*job)
            }
            EnqueueOutcome::ModelNotFound => Err(CatalogError::ModelNotFound(request.model_id)),
            EnqueueOutcome::QueueFull { queued } => Err(CatalogError::QueueFull { queued, limit }),
        }
    }

    /// Cancels a queued job at once, or asks a running one to stop. A job that already
    /// succeeded or failed cannot be cancelled; cancelling a cancelled job changes nothing.
    pub async fn cancel_job(&self, id: Uuid) -> Result<Cancellation, CatalogError> {
        match self.store.cancel_job(id).await? {
            CancelOutcome::NotFound => Err(CatalogError::JobNotFound(id)),
            CancelOutcome::Accepted(job) if job.state == JobState::Cancelled => {
                Ok(Cancellation::Cancelled(job))
            }
            CancelOutcome::Accepted(job) => Ok(Cancellation::Requested(job)),
            CancelOutcome::AlreadyFinished(job) if job.state == JobState::Cancelled => {
                Ok(Cancellation::Cancelled(job))
            }
            CancelOutcome::AlreadyFinished(job) => Err(CatalogError::JobAlreadyFinished {
                id: job.id,
                state: job.state,
            }),
        }
    }
}
