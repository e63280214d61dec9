//! The catalog: what the service keeps (models, their companion files, jobs, artifacts) and the
//! use cases that change it. HTTP handlers and the job runner both come here; neither talks to
//! the store or the blob store to write.
//!
//! Every write keeps the store's invariants (ARCHITECTURE.md):
//! - blob first (fsynced, renamed), row second, answer last; a row that could not be written
//!   leaves an unreferenced blob that is collected at once through [`reaper`] (or later by the
//!   reaper itself);
//! - from a blob's commit until its row is written the commit holds a [`CommitWindow`], and
//!   collection happens only after the window is dropped;
//! - writes that grow storage are refused below the free-space reserve.
//!
//! [`reaper`]: crate::store::reaper
//! [`CommitWindow`]: crate::store::blobs::CommitWindow

mod artifacts;
mod error;
pub mod header_budget;
mod ingest;
mod jobs;
mod models;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

pub use artifacts::{ArtifactError, ArtifactOutcome, NewArtifact};
pub use error::{BodyError, BoxError, CatalogError};
pub use header_budget::{BudgetExhausted, HeaderBudget, HeaderReservation};
pub use jobs::{Cancellation, JobRequest};
pub use models::{Attachment, FileName, ModelName};

use crate::formats::safetensors::Limits;
use crate::serving::ServingRegistry;
use crate::store::reaper;
use crate::store::reserve::StorageReserve;
use crate::store::{
    ArtifactRecord, BlobStore, JobFilter, JobRecord, ModelRecord, ModelSummary, Page, PageRequest,
    SharedMetadataStore,
};

/// The limits the use cases enforce, taken from [`crate::config::Settings`].
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Largest upload (model or companion file).
    pub max_upload_bytes: u64,
    /// Largest safetensors header one upload may buffer.
    pub max_header_bytes: u64,
    /// Largest `__metadata__` map kept with a model (keys and values).
    pub max_metadata_bytes: u64,
    /// Queued jobs beyond which new ones are refused.
    pub max_queued_jobs: u64,
    /// Attempts a job gets (at least one).
    pub job_max_attempts: u32,
}

impl CatalogSettings {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        CatalogSettings {
            max_upload_bytes: settings.max_upload_bytes,
            max_header_bytes: settings.max_header_bytes,
            max_metadata_bytes: settings.max_metadata_bytes,
            max_queued_jobs: settings.max_queued_jobs,
            job_max_attempts: settings.job_max_attempts,
        }
    }

    /// What the safetensors validator accepts of an upload.
    pub fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.max_header_bytes,
            max_file_bytes: self.max_upload_bytes,
        }
    }
}

/// The use cases over the metadata store and the blob store. Cheap to share (`Arc`).
pub struct Catalog {
    store: SharedMetadataStore,
    blobs: BlobStore,
    /// Free space kept for the writes that must not fail (see `store::reserve`).
    reserve: StorageReserve,
    /// Header bytes concurrent uploads may buffer together.
    header_budget: HeaderBudget,
    settings: CatalogSettings,
    /// Poked after a job was queued so an idle runner starts it at once.
    job_wake: Arc<Notify>,
    /// Loaded models read their companion files at load: a replaced file makes it reload.
    serving: Option<Arc<ServingRegistry>>,
}

impl Catalog {
    pub fn new(
        store: SharedMetadataStore,
        blobs: BlobStore,
        reserve: StorageReserve,
        header_budget: HeaderBudget,
        settings: CatalogSettings,
        job_wake: Arc<Notify>,
    ) -> Self {
        Catalog {
            store,
            blobs,
            reserve,
            header_budget,
            settings,
            job_wake,
            serving: None,
        }
    }

    /// Served models are forgotten when a companion file of theirs is replaced.
    pub fn with_serving(mut self, serving: Arc<ServingRegistry>) -> Self {
        self.serving = Some(serving);
        self
    }

    pub fn settings(&self) -> &CatalogSettings {
        &self.settings
    }

    /// Refuses an upload of `declared_length` bytes (0 when unknown) up front: over the upload
    /// limit, or more than the free-space reserve can spare.
    pub async fn admit_upload(&self, declared_length: u64) -> Result<(), CatalogError> {
        let limit = self.settings.max_upload_bytes;
        if declared_length > limit {
            return Err(CatalogError::DeclaredTooLarge {
                length: declared_length,
                limit,
            });
        }
        self.reserve.check(declared_length).await?;
        Ok(())
    }

    pub async fn model(&self, id: Uuid) -> Result<Option<ModelRecord>, CatalogError> {
        Ok(self.store.get_model(id).await?)
    }

    pub async fn models(&self, page: PageRequest) -> Result<Page<ModelSummary>, CatalogError> {
        Ok(self.store.list_models(page).await?)
    }

    pub async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, CatalogError> {
        Ok(self.store.get_job(id).await?)
    }

    pub async fn jobs(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<Page<JobRecord>, CatalogError> {
        Ok(self.store.list_jobs(filter, page).await?)
    }

    /// Position in the queue (0 = next) of a queued job.
    pub async fn queue_position(&self, id: Uuid) -> Result<Option<u64>, CatalogError> {
        Ok(self.store.queue_position(id).await?)
    }

    pub async fn artifact(&self, id: Uuid) -> Result<Option<ArtifactRecord>, CatalogError> {
        Ok(self.store.get_artifact(id).await?)
    }

    /// Removes blobs no record refers to any more (a record that could not be written, a
    /// deleted model, a replaced file). The outcome is already settled, so a failure here is
    /// only logged: the blobs are unreferenced, and the reaper removes them later. Never call
    /// it while holding a commit window.
    async fn forget_blobs(&self, shas: impl IntoIterator<Item = String>) {
        reaper::collect_after_write(self.store.as_ref(), &self.blobs, shas).await;
    }
}
