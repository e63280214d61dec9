//! The job runner: claims jobs from the durable queue whenever a worker thread is free, runs
//! them on the [`WorkerPool`], heartbeats their lease, and records success, failure, retry or
//! cancellation.
//!
//! A job is only ever finished by the holder of its current lease (job id, owner, attempt), so a
//! worker that lost its lease (e.g. it stalled and another replica took over) cannot overwrite the
//! newer attempt's outcome.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};
use uuid::Uuid;

use super::job_problem;
use super::output::ModelInfo;
use super::pipeline::{
    quantize_file, PipelineContext, PipelineError, PipelineOutput, ProgressCounters, QuantReport,
};
use super::spec::JobSpec;
use crate::dispatch::Dispatch;
use crate::formats::compressed_tensors::merge_into_config;
use crate::formats::safetensors::Limits;
use crate::pool::{PoolError, WorkerPool, WorkerSlot};
use crate::store::blobs::CommitWindow;
use crate::store::reaper;
use crate::store::{
    now, ArtifactRecord, BlobStore, HeartbeatOutcome, JobRecord, Lease, SharedMetadataStore,
    StoredFile,
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
const STOP_NONE: u8 = 0;
const STOP_USER: u8 = 1;
const STOP_LEASE_LOST: u8 = 2;
const STOP_SHUTDOWN: u8 = 3;

pub struct JobRunner {
    store: SharedMetadataStore,
    blobs: BlobStore,
    pool: Arc<WorkerPool>,
    dispatch: &'static Dispatch,
    settings: RunnerSettings,
    /// Identifies this process's leases in the jobs table.
    owner: String,
    /// Poked by the API after queueing a job so an idle runner starts it at once.
    wake: Arc<Notify>,
}

impl JobRunner {
    pub fn new(
        store: SharedMetadataStore,
        blobs: BlobStore,
        pool: Arc<WorkerPool>,
        dispatch: &'static Dispatch,
        settings: RunnerSettings,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(JobRunner {
            store,
            blobs,
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
                match self.store.fail_exhausted_jobs().await {
                    Ok(0) => {}
                    Ok(n) => warn!(
                        jobs = n,
                        "jobs whose worker vanished on their last attempt were closed"
                    ),
                    Err(e) => error!(error = %e, "reaping expired jobs failed"),
                }
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
        let prepared = self.prepare(&job).await;
        let (spec, model_sha, model_files, model_info) = match prepared {
            Ok(prepared) => prepared,
            Err(problem) => {
                drop(slot);
                self.record_failure(&lease, problem, false).await;
                return;
            }
        };

        let cancel = Arc::new(AtomicBool::new(false));
        let stop_reason = Arc::new(AtomicU8::new(STOP_NONE));
        let progress = Arc::new(ProgressCounters::default());
        let heartbeat = tokio::spawn(
            self.clone()
                .heartbeat_loop(
                    lease.clone(),
                    cancel.clone(),
                    stop_reason.clone(),
                    progress.clone(),
                    shutdown,
                )
                .in_current_span(),
        );

        let input = self.blobs.local_path(&model_sha);
        // Registered as live until this function returns, so that the reaper leaves it alone.
        let staging = self.blobs.staging_file();
        let staged = staging.path().to_path_buf();
        let outcome = {
            let (cancel, progress, staged) = (cancel.clone(), progress.clone(), staged.clone());
            let spec = spec.clone();
            let dispatch = self.dispatch;
            let limits = self.settings.limits;
            let tensor_delay = self.settings.tensor_delay;
            self.pool
                .run(slot, move || {
                    let ctx = PipelineContext {
                        dispatch,
                        limits,
                        cancel: &cancel,
                        progress: &progress,
                        tensor_delay,
                    };
                    quantize_file(&input, &staged, &spec, &model_info, &ctx)
                })
                .await
        };
        heartbeat.abort();

        match outcome {
            Ok(Ok(output)) => {
                let output_sha = output.sha256.clone();
                // From the output's commit until the artifact row is written, no garbage
                // collector may unlink what the artifact refers to.
                let window = self.blobs.open_commit_window().await;
                let artifact = self
                    .store_artifact(&job, &spec, output, &staged, model_files, &window)
                    .await;
                match artifact {
                    Ok(artifact) => {
                        let completed = self
                            .store
                            .complete_job(&lease, progress.snapshot(), &artifact)
                            .await;
                        drop(window);
                        let unrecorded: Vec<String> =
                            artifact.files.iter().map(|f| f.sha256.clone()).collect();
                        match completed {
                            Ok(true) => info!(artifact_id = %artifact.id, "job succeeded"),
                            Ok(false) => {
                                warn!(
                                    "lease lost before completion; the newer attempt owns the job"
                                );
                                self.collect(unrecorded.into_iter()).await;
                            }
                            Err(e) => {
                                // The lease is left to expire, so the job is retried or failed
                                // by the reaper; the output nobody recorded goes now if it can.
                                error!(error = %e, "recording the artifact failed");
                                self.collect(unrecorded.into_iter()).await;
                            }
                        }
                    }
                    Err(problem) => {
                        drop(window);
                        // Nothing half-stored stays: the staging file if the commit failed, the
                        // committed output if a later step did.
                        let _ = tokio::fs::remove_file(&staged).await;
                        self.collect(std::iter::once(output_sha)).await;
                        self.record_failure(&lease, problem, true).await
                    }
                }
            }
            Ok(Err(PipelineError::Cancelled)) => {
                let _ = tokio::fs::remove_file(&staged).await;
                let result = match stop_reason.load(Ordering::SeqCst) {
                    STOP_SHUTDOWN => {
                        info!("job handed back to the queue for shutdown");
                        self.store.release_job(&lease).await
                    }
                    STOP_LEASE_LOST => Ok(false),
                    _ => {
                        info!("job cancelled");
                        self.store.mark_cancelled(&lease).await
                    }
                };
                if let Err(e) = result {
                    error!(error = %e, "recording the cancellation failed");
                }
            }
            Ok(Err(PipelineError::InvalidInput { slug, detail })) => {
                let _ = tokio::fs::remove_file(&staged).await;
                let problem = job_problem(
                    slug,
                    "The model cannot be quantized as requested",
                    422,
                    &detail,
                );
                self.record_failure(&lease, problem, false).await;
            }
            Ok(Err(PipelineError::Io(e))) => {
                let _ = tokio::fs::remove_file(&staged).await;
                let problem = storage_problem(&e, "Storage error while quantizing");
                self.record_failure(&lease, problem, true).await;
            }
            Err(PoolError::Panicked(message)) => {
                let _ = tokio::fs::remove_file(&staged).await;
                error!(panic = %message, "quantization panicked");
                let problem = job_problem(
                    "job-internal-error",
                    "Internal error while quantizing",
                    500,
                    "the worker hit an internal error",
                );
                self.record_failure(&lease, problem, true).await;
            }
            Err(PoolError::ShutDown) => {
                let _ = tokio::fs::remove_file(&staged).await;
                let _ = self.store.release_job(&lease).await;
            }
        }
    }

    /// Loads what the job needs before it takes a CPU: its spec, the model's blob and files.
    async fn prepare(
        &self,
        job: &JobRecord,
    ) -> Result<(JobSpec, String, Vec<StoredFile>, ModelInfo), serde_json::Value> {
        let spec =
            JobSpec::parse(&job.scheme, Some(&job.options), Some(&job.format)).map_err(|e| {
                job_problem(
                    "invalid-options",
                    "Invalid job options",
                    422,
                    &e.to_string(),
                )
            })?;
        let model = match self.store.get_model(job.model_id).await {
            Ok(Some(model)) => model,
            Ok(None) => {
                return Err(job_problem(
                    "model-not-found",
                    "Model not found",
                    404,
                    "the model was deleted before the job ran",
                ))
            }
            Err(e) => {
                return Err(job_problem(
                    "job-store-error",
                    "Metadata store error",
                    500,
                    &e.to_string(),
                ))
            }
        };
        // The model's config.json (validated as a JSON object on upload) names the architecture
        // for GGUF output.
        let config = match model.files.iter().find(|f| f.filename == "config.json") {
            Some(file) => match self.blobs.read_small(&file.sha256).await {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(e) => {
                    return Err(job_problem(
                        "job-io-error",
                        "Storage error while reading the model's config.json",
                        500,
                        &e.to_string(),
                    ))
                }
            },
            None => None,
        };
        let info = ModelInfo {
            name: Some(model.name.clone()),
            config,
        };
        Ok((spec, model.sha256, model.files, info))
    }

    async fn heartbeat_loop(
        self: Arc<Self>,
        lease: Lease,
        cancel: Arc<AtomicBool>,
        stop_reason: Arc<AtomicU8>,
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
                    stop_reason.store(STOP_SHUTDOWN, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
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
                    stop_reason.store(STOP_USER, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
                }
                Ok(HeartbeatOutcome::Held {
                    cancel_requested: false,
                }) => {}
                Ok(HeartbeatOutcome::Lost) => {
                    warn!("job lease lost; stopping this attempt");
                    stop_reason.store(STOP_LEASE_LOST, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => warn!(error = %e, "heartbeat failed; will retry"),
            }
        }
    }

    /// Commits the output blob and config.json and builds the artifact row.
    async fn store_artifact(
        &self,
        job: &JobRecord,
        spec: &JobSpec,
        output: PipelineOutput,
        staged: &std::path::Path,
        model_files: Vec<StoredFile>,
        window: &CommitWindow,
    ) -> Result<ArtifactRecord, serde_json::Value> {
        // The artifact carries the model's companion files by reference. One may have been
        // replaced (and its old blob removed) while the job ran; inside the window, what exists
        // now stays until the artifact row is written.
        for file in &model_files {
            match self.blobs.exists(&file.sha256).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(job_problem(
                        "job-input-changed",
                        "The model's files changed while the job ran",
                        503,
                        &format!("{} was replaced; the job runs again", file.filename),
                    ))
                }
                Err(e) => {
                    return Err(storage_problem(
                        &e,
                        "Storage error while saving the artifact",
                    ))
                }
            }
        }
        let storage_problem = |e: &crate::store::blobs::BlobError| {
            storage_problem(e, "Storage error while saving the artifact")
        };
        self.blobs
            .commit_staged_file(staged, &output.sha256, window)
            .await
            .map_err(|e| storage_problem(&e))?;

        let mut files = vec![StoredFile {
            filename: "model.safetensors".into(),
            sha256: output.sha256.clone(),
            size_bytes: output.size_bytes,
        }];
        let Some(quantization_config) = output.quantization_config else {
            // Nothing to add to config.json: every companion file is carried over by reference.
            files.extend(model_files);
            return Ok(self.artifact_record(
                job,
                spec,
                &output.sha256,
                output.size_bytes,
                files,
                &output.report,
            ));
        };
        let model_config = match model_files.iter().find(|f| f.filename == "config.json") {
            Some(file) => Some(
                self.blobs
                    .read_small(&file.sha256)
                    .await
                    .map_err(|e| storage_problem(&e))?,
            ),
            None => None,
        };
        let config_bytes = merge_into_config(model_config.as_deref(), quantization_config)
            .map_err(|detail| {
                job_problem(
                    "invalid-model-config",
                    "The model's config.json is unusable",
                    422,
                    &detail,
                )
            })?;
        let mut upload = self
            .blobs
            .begin_upload()
            .await
            .map_err(|e| storage_problem(&e))?;
        upload
            .write(bytes::Bytes::from(config_bytes))
            .await
            .map_err(|e| storage_problem(&e))?;
        let staged_config = upload.finish().await.map_err(|e| storage_problem(&e))?;
        let config_size = staged_config.size_bytes;
        let config_sha = staged_config
            .commit(window)
            .await
            .map_err(|e| storage_problem(&e))?;
        files.push(StoredFile {
            filename: "config.json".into(),
            sha256: config_sha,
            size_bytes: config_size,
        });
        // Companion files (tokenizer etc.) are carried over by reference: same blobs, no copy.
        files.extend(
            model_files
                .into_iter()
                .filter(|f| f.filename != "config.json"),
        );
        Ok(self.artifact_record(
            job,
            spec,
            &output.sha256,
            output.size_bytes,
            files,
            &output.report,
        ))
    }

    fn artifact_record(
        &self,
        job: &JobRecord,
        spec: &JobSpec,
        sha256: &str,
        size_bytes: u64,
        files: Vec<StoredFile>,
        report: &QuantReport,
    ) -> ArtifactRecord {
        ArtifactRecord {
            id: Uuid::now_v7(),
            job_id: job.id,
            model_id: job.model_id,
            scheme: spec.scheme.name().to_owned(),
            options: spec.canonical_options(),
            format: spec.format.name().to_owned(),
            sha256: sha256.to_owned(),
            size_bytes,
            files,
            report: serde_json::to_value(report).expect("reports serialize"),
            created_at: now(),
        }
    }

    async fn record_failure(&self, lease: &Lease, problem: serde_json::Value, retry: bool) {
        warn!(problem = %problem, retry, "job attempt failed");
        if let Err(e) = self.store.fail_job(lease, &problem, retry).await {
            error!(error = %e, "recording the job failure failed");
        }
    }

    /// Removes blobs no record refers to (an output nobody recorded); failures are left to the
    /// reaper. Never call it inside a commit window.
    async fn collect(&self, shas: impl Iterator<Item = String>) {
        reaper::collect_after_write(self.store.as_ref(), &self.blobs, shas).await;
    }
}

/// A job's storage failure: 507 `job-storage-full` when the disk is full (the job may succeed
/// once space is freed), else 500 `job-io-error` with `title`.
fn storage_problem(error: &(dyn std::error::Error + 'static), title: &str) -> serde_json::Value {
    if crate::store::blobs::is_storage_full(error) {
        job_problem(
            "job-storage-full",
            "No room left for the artifact",
            507,
            &error.to_string(),
        )
    } else {
        job_problem("job-io-error", title, 500, &error.to_string())
    }
}
