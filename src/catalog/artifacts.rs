//! Recording a finished job's output as an artifact: the output blob (and a `config.json` with
//! its `quantization_config`) committed, then the artifact row written together with the job's
//! success, if the worker still holds the job's lease.

use std::path::Path;

use uuid::Uuid;

use super::Catalog;
use crate::formats::compressed_tensors::merge_into_config;
use crate::jobs::spec::JobSpec;
use crate::store::blobs::{BlobError, CommitWindow};
use crate::store::{now, ArtifactRecord, JobRecord, Lease, Progress, StoreError, StoredFile};

/// A job's output, written and synced to a staging file, about to become an artifact.
#[derive(Debug)]
pub struct NewArtifact<'a> {
    pub job: &'a JobRecord,
    /// The job's validated spec: the artifact records its scheme, options and format.
    pub spec: &'a JobSpec,
    /// The staging file holding the output (see `BlobStore::staging_file`).
    pub staged: &'a Path,
    /// The output's digest and size, computed while it was written.
    pub sha256: String,
    pub size_bytes: u64,
    /// The per-tensor report.
    pub report: serde_json::Value,
    /// The `quantization_config` block for config.json (compressed-tensors output only).
    pub quantization_config: Option<serde_json::Value>,
    /// The model's companion files when the job started: carried over by reference.
    pub model_files: Vec<StoredFile>,
}

/// What recording an artifact came to.
#[derive(Debug)]
pub enum ArtifactOutcome {
    /// The artifact is recorded and the job succeeded.
    Recorded(Box<ArtifactRecord>),
    /// Another worker holds the job now; nothing was recorded and the output is gone.
    LeaseLost,
}

/// Why an artifact could not be recorded. Nothing half-stored stays behind any of them.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A companion file of the model was replaced (its old blob removed) while the job ran.
    #[error("{filename} was replaced; the job runs again")]
    InputChanged { filename: String },
    /// Committing or reading a blob failed.
    #[error("{0}")]
    Storage(#[source] BlobError),
    /// The model's config.json cannot take the `quantization_config`.
    #[error("{0}")]
    InvalidModelConfig(String),
    /// The artifact row could not be written (the job's lease is left to expire).
    #[error("recording the artifact failed: {0}")]
    Record(#[source] StoreError),
}

impl From<BlobError> for ArtifactError {
    fn from(error: BlobError) -> Self {
        ArtifactError::Storage(error)
    }
}

impl Catalog {
    /// Commits a job's output and records it as the job's artifact, completing the job if
    /// `lease` is still held. Blobs first, the row (artifact + job state, one transaction)
    /// second, inside one commit window; on any failure or a lost lease the staging file and
    /// every blob no record claims are removed.
    pub async fn record_artifact(
        &self,
        lease: &Lease,
        progress: Progress,
        new: NewArtifact<'_>,
    ) -> Result<ArtifactOutcome, ArtifactError> {
        let staged = new.staged.to_path_buf();
        let output_sha = new.sha256.clone();
        // From the output's commit until the artifact row is written, no garbage collector may
        // unlink what the artifact refers to.
        let window = self.blobs.open_commit_window().await;
        let artifact = match self.commit_artifact_files(new, &window).await {
            Ok(artifact) => artifact,
            Err(e) => {
                drop(window);
                // Nothing half-stored stays: the staging file if the commit failed, the
                // committed output if a later step did.
                let _ = tokio::fs::remove_file(&staged).await;
                self.forget_blobs([output_sha]).await;
                return Err(e);
            }
        };
        let completed = self.store.complete_job(lease, progress, &artifact).await;
        drop(window);
        let unrecorded: Vec<String> = artifact.files.iter().map(|f| f.sha256.clone()).collect();
        match completed {
            Ok(true) => Ok(ArtifactOutcome::Recorded(Box::new(artifact))),
            Ok(false) => {
                self.forget_blobs(unrecorded).await;
                Ok(ArtifactOutcome::LeaseLost)
            }
            Err(e) => {
                self.forget_blobs(unrecorded).await;
                Err(ArtifactError::Record(e))
            }
        }
    }

    /// Commits the output blob and config.json and builds the artifact row.
    async fn commit_artifact_files(
        &self,
        new: NewArtifact<'_>,
        window: &CommitWindow,
    ) -> Result<ArtifactRecord, ArtifactError> {
        // The artifact carries the model's companion files by reference. One may have been
        // replaced (and its old blob removed) while the job ran; inside the window, what exists
        // now stays until the artifact row is written.
        for file in &new.model_files {
            if !self.blobs.exists(&file.sha256).await? {
                return Err(ArtifactError::InputChanged {
                    filename: file.filename.clone(),
                });
            }
        }
        self.blobs
            .commit_staged_file(new.staged, &new.sha256, window)
            .await?;
        let mut files = vec![StoredFile {
            filename: "model.safetensors".into(),
            sha256: new.sha256.clone(),
            size_bytes: new.size_bytes,
        }];
        match new.quantization_config {
            // Nothing to add to config.json: every companion file is carried over by reference.
            None => files.extend(new.model_files),
            Some(quantization_config) => {
                let model_config = new.model_files.iter().find(|f| f.filename == "config.json");
                files.push(
                    self.commit_merged_config(model_config, quantization_config, window)
                        .await?,
                );
                // Companion files (tokenizer etc.) are carried over by reference: same blobs,
                // no copy.
                files.extend(
                    new.model_files
                        .into_iter()
                        .filter(|f| f.filename != "config.json"),
                );
            }
        }
        Ok(ArtifactRecord {
            id: Uuid::now_v7(),
            job_id: new.job.id,
            model_id: new.job.model_id,
            scheme: new.spec.scheme.name().to_owned(),
            options: new.spec.canonical_options(),
            format: new.spec.format.name().to_owned(),
            sha256: new.sha256,
            size_bytes: new.size_bytes,
            files,
            report: new.report,
            created_at: now(),
        })
    }

    /// Writes the model's config.json (if any) with `quantization_config` merged in as a new
    /// blob, committed inside `window`.
    async fn commit_merged_config(
        &self,
        model_config: Option<&StoredFile>,
        quantization_config: serde_json::Value,
        window: &CommitWindow,
    ) -> Result<StoredFile, ArtifactError> {
        let model_config = match model_config {
            Some(file) => Some(self.blobs.read_small(&file.sha256).await?),
            None => None,
        };
        let config_bytes = merge_into_config(model_config.as_deref(), quantization_config)
            .map_err(ArtifactError::InvalidModelConfig)?;
        let mut upload = self.blobs.begin_upload().await?;
        upload.write(bytes::Bytes::from(config_bytes)).await?;
        let staged_config = upload.finish().await?;
        let size_bytes = staged_config.size_bytes;
        let sha256 = staged_config.commit(window).await?;
        Ok(StoredFile {
            filename: "config.json".into(),
            sha256,
            size_bytes,
        })
    }
}
