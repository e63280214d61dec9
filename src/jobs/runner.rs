//! The job runner: claims jobs from the durable queue whenever a worker thread is free, runs
//! them on the [`WorkerPool`], heartbeats their lease, and records success (through the
//! catalog), failure, retry or cancellation.
//!
//! A job is only ever finished by the holder of its current lease (job id, owner, attempt), so a
//! worker that lost its lease (e.g. it stalled and another replica took over) cannot overwrite the
//! newer attempt's outcome.

mod failure;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};
use uuid::Uuid;

pub use failure::JobFailure;

use super::output::ModelInfo;
use super::pipeline::{
    quantize_file, PipelineContext, PipelineError, PipelineOutput, ProgressCounters,
};
use super::spec::JobSpec;
use crate::catalog::{ArtifactError, ArtifactOutcome, Catalog, NewArtifact};
use crate::dispatch::Dispatch;
use crate::formats::safetensors::Limits;
use crate::pool::{PoolError, WorkerPool, WorkerSlot};
use crate::store::{
    BlobStore, HeartbeatOutcome, JobRecord, Lease, Progress, SharedMetadataStore, StoredFile,
};

/// Settings of the runner, taken from [`crate::config::Settings`].
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub lease: Duration,
    pub limits: Limits,
    pub shutdown_grace: Duration,
    pub tensor_delay: Duration,
    /// How often an idle runner looks for jobs queued by other processes.
    pub poll_interval: Duration,
}

/// Why a running job was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum StopReason {
    NotStopped = 0,
    /// A user cancelled the job.
    User = 1,
    /// Another worker holds the job now.
    LeaseLost = 2,
    /// The service is shutting down and the grace period is over.
    Shutdown = 3,
}

/// Shared by a job's heartbeat and its pipeline run: the flag the pipeline checks between
/// tensors, and why it was raised.
#[derive(Debug, Default)]
struct StopSignal {
    cancel: AtomicBool,
    reason: AtomicU8,
}

impl StopSignal {
    fn stop(&self, reason: StopReason) {
        self.reason.store(reason as u8, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            1 => StopReason::User,
            2 => StopReason::LeaseLost,
            3 => StopReason::Shutdown,
            _ => StopReason::NotStopped,
        }
    }
}

/// What a job needs besides a CPU, loaded before it takes one.
struct PreparedJob {
    spec: JobSpec,
    /// The model's blob (the pipeline's input).
    model_sha256: String,
    /// The model's companion files, carried over into the artifact.
    model_files: Vec<StoredFile>,
    model_info: ModelInfo,
}

pub struct JobRunner {
    store: SharedMetadataStore,
    blobs: BlobStore,
    /// Records artifacts (blob, then row, inside a commit window).
    catalog: Arc<Catalog>,
    pool: Arc<WorkerPool>,
    dispatch: &'static Dispatch,
    settings: RunnerSettings,
    /// Identifies this process's leases in the jobs table.
    owner: String,
    /// Poked by the API after queueing a job so an idle runner starts it at once.
    wake: Arc<Notify>,
}

/// The runner's collaborators (see [`JobRunner::new`]).
pub struct RunnerParts {
    pub store: SharedMetadataStore,
    pub blobs: BlobStore,
    pub catalog: Arc<Catalog>,
    pub pool: Arc<WorkerPool>,
    pub dispatch: &'static Dispatch,
    pub wake: Arc<Notify>,
}

impl JobRunner {
    pub fn new(parts: RunnerParts, settings: RunnerSettings) -> Arc<Self> {
        let RunnerParts {
            store,
            blobs,
            catalog,
            pool,
            dispatch,
            wake,
        } = parts;
        Arc::new(JobRunner {
            store,
            blobs,
            catalog,
            pool,
            dispatch,
            settings,
            owner: format!("quantd-{}-{}", std::process::id(), Uuid::new_v4().simple()),
            wake,
        })
    }

    /// Claims and runs jobs until `shutdown` fires, then gives running jobs the grace period to
    /// finish (they are handed back to the queue after it) and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(owner = %self.owner, workers = self.pool.size(), "job runner started");
        let mut running = JoinSet::new();
        let mut last_reap = tokio::time::Instant::now();
        loop {
            while running.try_join_next().is_some() {}
            if last_reap.elapsed() >= self.settings.lease {
                last_reap = tokio::time::Instant::now();
                self.close_exhausted_jobs().await;
            }
            let slot = tokio::select! {
                slot = self.pool.acquire() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            match self.store.claim_job(&self.owner, self.settings.lease).await {
                Ok(Some(job)) => {
                    let span = info_span!("job", job_id = %job.id, attempt = job.attempt);
                    let runner = self.clone();
                    let shutdown = shutdown.clone();
                    running.spawn(
                        async move { runner.run_job(job, slot, shutdown).await }.instrument(span),
                    );
                }
                Ok(None) => {
                    drop(slot);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(slot);
                    error!(error = %e, "claiming a job failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        if !running.is_empty() {
            info!(
                jobs = running.len(),
                "waiting for running jobs before shutting down"
            );
        }
        while running.join_next().await.is_some() {}
        info!("job runner stopped");
    }

    /// Fails the jobs whose worker vanished on their last attempt (and closes cancelled ones
    /// whose worker vanished).
    async fn close_exhausted_jobs(&self) {
        let problem = JobFailure::AttemptsExhausted.problem();
        match self.store.fail_exhausted_jobs(&problem).await {
            Ok(0) => {}
            Ok(n) => warn!(
                jobs = n,
                "jobs whose worker vanished on their last attempt were closed"
            ),
            Err(e) => error!(error = %e, "reaping expired jobs failed"),
        }
    }

    /// Runs one claimed job to its end: prepared, quantized on `slot` while a heartbeat keeps
    /// the lease, then recorded as succeeded, failed, cancelled or handed back.
    async fn run_job(
        self: Arc<Self>,
        job: JobRecord,
        slot: WorkerSlot,
        shutdown: CancellationToken,
    ) {
        let lease = Lease {
            job_id: job.id,
            owner: self.owner.clone(),
            attempt: job.attempt,
        };
        info!(scheme = %job.scheme, model_id = %job.model_id, "job started");
        let prepared = match self.prepare(&job).await {
            Ok(prepared) => prepared,
            Err(failure) => {
                drop(slot);
                self.record_failure(&lease, failure).await;
                return;
            }
        };
        let stop = Arc::new(StopSignal::default());
        let progress = Arc::new(ProgressCounters::default());
        let heartbeat = tokio::spawn(
            self.clone()
                .heartbeat_loop(lease.clone(), stop.clone(), progress.clone(), shutdown)
                .in_current_span(),
        );
        // Registered as live until this function returns, so that the reaper leaves it alone.
        let staging = self.blobs.staging_file();
        let outcome = self
            .quantize(slot, &prepared, staging.path(), &stop, &progress)
            .await;
        heartbeat.abort();
        let staged = staging.path();
        match outcome {
            Ok(Ok(output)) => {
                let progress = progress.snapshot();
                self.record_artifact(&job, &lease, prepared, output, staged, progress)
                    .await
            }
            Ok(Err(error)) => {
                let _ = tokio::fs::remove_file(staged).await;
                match JobFailure::from_pipeline(error) {
                    Some(failure) => self.record_failure(&lease, failure).await,
                    None => self.record_stop(&lease, stop.reason()).await,
                }
            }
            Err(PoolError::Panicked(message)) => {
                let _ = tokio::fs::remove_file(staged).await;
                error!(panic = %message, "quantization panicked");
                self.record_failure(&lease, JobFailure::Panicked { message })
                    .await;
            }
            Err(PoolError::ShutDown) => {
                let _ = tokio::fs::remove_file(staged).await;
                let _ = self.store.release_job(&lease).await;
            }
        }
    }

    /// Runs the pipeline on the worker pool: the model's blob in, the staging file out.
    async fn quantize(
        &self,
        slot: WorkerSlot,
        prepared: &PreparedJob,
        staged: &Path,
        stop: &Arc<StopSignal>,
        progress: &Arc<ProgressCounters>,
    ) -> Result<Result<PipelineOutput, PipelineError>, PoolError> {
        let input = self.blobs.local_path(&prepared.model_sha256);
        let staged = staged.to_path_buf();
        let (stop, progress) = (stop.clone(), progress.clone());
        let spec = prepared.spec.clone();
        let model_info = prepared.model_info.clone();
        let dispatch = self.dispatch;
        let limits = self.settings.limits;
        let tensor_delay = self.settings.tensor_delay;
        self.pool
            .run(slot, move || {
                let ctx = PipelineContext {
                    dispatch,
                    limits,
                    cancel: &stop.cancel,
                    progress: &progress,
                    tensor_delay,
                };
                quantize_file(&input, &staged, &spec, &model_info, &ctx)
            })
            .await
    }

    /// Loads what the job needs before it takes a CPU: its spec, the model's blob and files.
    async fn prepare(&self, job: &JobRecord) -> Result<PreparedJob, JobFailure> {
        let spec = JobSpec::parse(&job.scheme, Some(&job.options), Some(&job.format))
            .map_err(JobFailure::InvalidOptions)?;
        let model = self
            .store
            .get_model(job.model_id)
            .await
            .map_err(JobFailure::Store)?
            .ok_or(JobFailure::ModelDeleted)?;
        // The model's config.json (validated as a JSON object on upload) names the architecture
        // for GGUF output.
        let config = match model.files.iter().find(|f| f.filename == "config.json") {
            Some(file) => {
                let bytes = self
                    .blobs
                    .read_small(&file.sha256)
                    .await
                    .map_err(JobFailure::ReadConfig)?;
                serde_json::from_slice(&bytes).ok()
            }
            None => None,
        };
        Ok(PreparedJob {
            spec,
            model_info: ModelInfo {
                name: Some(model.name.clone()),
                config,
            },
            model_sha256: model.sha256,
            model_files: model.files,
        })
    }

    /// Renews the lease every third of its time, passing on progress and learning of
    /// cancellation; stops the run when the lease is lost or the shutdown grace is over.
    async fn heartbeat_loop(
        self: Arc<Self>,
        lease: Lease,
        stop: Arc<StopSignal>,
        progress: Arc<ProgressCounters>,
        shutdown: CancellationToken,
    ) {
        let interval = (self.settings.lease / 3).max(Duration::from_millis(200));
        let grace_end = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.settings.shutdown_grace).await;
        };
        tokio::pin!(grace_end);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut grace_end => {
                    stop.stop(StopReason::Shutdown);
                    return;
                }
            }
            match self
                .store
                .heartbeat(&lease, self.settings.lease, progress.snapshot())
                .await
            {
                Ok(HeartbeatOutcome::Held {
                    cancel_requested: true,
                }) => {
                    stop.stop(StopReason::User);
                }
                Ok(HeartbeatOutcome::Held {
                    cancel_requested: false,
                }) => {}
                Ok(HeartbeatOutcome::Lost) => {
                    warn!("job lease lost; stopping this attempt");
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
                Err(e) => warn!(error = %e, "heartbeat failed; will retry"),
            }
        }
    }

    /// Records a finished run's output as the job's artifact through the catalog (which
    /// completes the job if the lease is still held, and leaves nothing half-stored otherwise).
    async fn record_artifact(
        &self,
        job: &JobRecord,
        lease: &Lease,
        prepared: PreparedJob,
        output: PipelineOutput,
        staged: &Path,
        progress: Progress,
    ) {
        let new = NewArtifact {
            job,
            spec: &prepared.spec,
            staged,
            sha256: output.sha256,
            size_bytes: output.size_bytes,
            report: serde_json::to_value(&output.report).expect("reports serialize"),
            quantization_config: output.quantization_config,
            model_files: prepared.model_files,
        };
        match self.catalog.record_artifact(lease, progress, new).await {
            Ok(ArtifactOutcome::Recorded(artifact)) => {
                info!(artifact_id = %artifact.id, "job succeeded")
            }
            Ok(ArtifactOutcome::LeaseLost) => {
                warn!("lease lost before completion; the newer attempt owns the job")
            }
            // The lease is left to expire, so the job is retried or failed by the reaper.
            Err(ArtifactError::Record(e)) => error!(error = %e, "recording the artifact failed"),
            Err(e) => self.record_failure(lease, JobFailure::from(e)).await,
        }
    }

    /// Records how a stopped run ended: handed back for shutdown, cancelled by a user, or
    /// nothing at all when another worker holds the job now.
    async fn record_stop(&self, lease: &Lease, reason: StopReason) {
        let result = match reason {
            StopReason::Shutdown => {
                info!("job handed back to the queue for shutdown");
                self.store.release_job(lease).await
            }
            StopReason::LeaseLost => Ok(false),
            StopReason::User | StopReason::NotStopped => {
                info!("job cancelled");
                self.store.mark_cancelled(lease).await
            }
        };
        if let Err(e) = result {
            error!(error = %e, "recording the cancellation failed");
        }
    }

    /// Fails the attempt (or queues the job again when the failure is retryable and attempts
    /// remain), storing the failure's problem object.
    async fn record_failure(&self, lease: &Lease, failure: JobFailure) {
        let retry = failure.is_retryable();
        let problem = failure.problem();
        warn!(problem = %problem, retry, error = %error_chain(&failure), "job attempt failed");
        if let Err(e) = self.store.fail_job(lease, &problem, retry).await {
            error!(error = %e, "recording the job failure failed");
        }
    }
}

/// An error and its `source` chain on one line, for the logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
