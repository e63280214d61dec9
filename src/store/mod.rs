//! Storage: metadata (models, jobs, artifacts) behind [`MetadataStore`] and content-addressed
//! blobs behind [`blobs::BlobStore`].
//!
//! Handlers and the job runner only see the trait, so the PostgreSQL implementation of a later
//! issue slots in beside [`sqlite::SqliteStore`] without touching them.

pub mod blobs;
pub mod reaper;
pub mod reserve;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

pub use blobs::BlobStore;

/// Errors of the metadata store. None of them is the client's fault: they surface as 500/503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The database could not write because its disk is full: SQLite's `SQLITE_FULL` (13, which
    /// it reports for `ENOSPC`), or an `ENOSPC` / `EDQUOT` reaching us as an I/O error.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => {
                sqlite_primary_code(e.code().as_deref()) == Some(SQLITE_FULL)
            }
            other => crate::store::blobs::is_storage_full(other),
        }
    }

    /// A transient failure of the database itself (connection lost or refused, pool exhausted,
    /// I/O error, busy): the same request may succeed later, so the client hears 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => matches!(
                sqlite_primary_code(e.code().as_deref()),
                Some(
                    SQLITE_IOERR | SQLITE_BUSY | SQLITE_LOCKED | SQLITE_CANTOPEN | SQLITE_READONLY
                )
            ),
            StoreError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

// SQLite primary result codes (https://sqlite.org/rescode.html); extended codes carry the
// primary one in their low byte.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;

fn sqlite_primary_code(code: Option<&str>) -> Option<i64> {
    code.and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff)
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A shared handle on the metadata store.
pub type SharedMetadataStore = Arc<dyn MetadataStore>;

/// An uploaded model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelRecord {
    pub id: Uuid,
    pub name: String,
    /// Hex sha256 of the safetensors file.
    pub sha256: String,
    pub size_bytes: u64,
    pub n_tensors: u64,
    pub n_parameters: u64,
    /// Tensor count per safetensors dtype.
    pub dtypes: BTreeMap<String, u64>,
    /// The safetensors `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
    /// Companion files attached with `PUT /api/v1/models/{id}/files/{filename}`.
    pub files: Vec<StoredFile>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A model as listed: everything but its `__metadata__`, which may be large and is shown by
/// `GET /api/v1/models/{id}` only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelSummary {
    pub id: Uuid,
    pub name: String,
    /// Hex sha256 of the safetensors file.
    pub sha256: String,
    pub size_bytes: u64,
    pub n_tensors: u64,
    pub n_parameters: u64,
    /// Tensor count per safetensors dtype.
    pub dtypes: BTreeMap<String, u64>,
    /// Companion files attached with `PUT /api/v1/models/{id}/files/{filename}`.
    pub files: Vec<StoredFile>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A file stored as a content-addressed blob (model companions, artifact files).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
pub struct StoredFile {
    pub filename: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Job lifecycle: `queued → running → succeeded | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// How far a job has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    pub tensors_done: u64,
    pub tensors_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A quantization job as stored and shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRecord {
    pub id: Uuid,
    pub model_id: Uuid,
    pub scheme: String,
    /// Canonical options: every default filled in.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Output format of the artifact.
    pub format: String,
    pub state: JobState,
    pub progress: Progress,
    /// Attempts started so far (a crash or transient error leads to another, up to `max_attempts`).
    pub attempt: u32,
    pub max_attempts: u32,
    /// True once cancellation was asked for a running job; the worker stops at the next tensor.
    pub cancel_requested: bool,
    pub artifact_id: Option<Uuid>,
    /// An RFC 9457 problem object once the job failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// A succeeded job's output.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArtifactRecord {
    pub id: Uuid,
    pub job_id: Uuid,
    pub model_id: Uuid,
    pub scheme: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Output format, e.g. `safetensors` (compressed-tensors layout).
    pub format: String,
    /// sha256 of the primary file (`model.safetensors`); the download's strong ETag.
    pub sha256: String,
    pub size_bytes: u64,
    /// Every file of the artifact, the primary one first.
    pub files: Vec<StoredFile>,
    /// Per-tensor error report and totals.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// Keyset pagination over UUIDv7 ids, newest first.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    /// Return items strictly older than this id.
    pub before: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more items may follow: pass it as `cursor` to get them.
    pub next_cursor: Option<Uuid>,
}

/// Filters of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub model_id: Option<Uuid>,
}

/// A job about to be queued.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub model_id: Uuid,
    pub scheme: String,
    pub options: serde_json::Value,
    pub format: String,
    pub max_attempts: u32,
}

#[derive(Debug)]
pub enum EnqueueOutcome {
    Enqueued(Box<JobRecord>),
    ModelNotFound,
    QueueFull { queued: u64 },
}

#[derive(Debug)]
pub enum DeleteModelOutcome {
    Deleted {
        /// Blobs the model referred to: the caller removes those nothing else refers to.
        released_blobs: Vec<String>,
    },
    NotFound,
    /// A queued or running job uses the model.
    Busy {
        job_id: Uuid,
    },
}

#[derive(Debug)]
pub enum CancelOutcome {
    NotFound,
    /// The job was queued and is now cancelled, or was running and will stop at the next tensor.
    Accepted(JobRecord),
    /// The job already finished; nothing changed.
    AlreadyFinished(JobRecord),
}

/// A worker's claim on a job: only the holder of the current (id, owner, attempt) may finish it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_id: Uuid,
    pub owner: String,
    pub attempt: u32,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Still ours; `cancel_requested` tells whether a user asked to stop.
    Held { cancel_requested: bool },
    /// Another worker took the job or it was finished elsewhere: stop working on it.
    Lost,
}

/// Everything the API and the job runner need from the metadata database.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// The folder the database writes its files in, when it is local (SQLite), so that its free
    /// space can be watched; `None` for a database server.
    fn local_dir(&self) -> Option<std::path::PathBuf>;

    async fn insert_model(&self, model: &ModelRecord) -> StoreResult<()>;
    async fn get_model(&self, id: Uuid) -> StoreResult<Option<ModelRecord>>;
    /// One page of models, newest first, in one round trip.
    async fn list_models(&self, page: PageRequest) -> StoreResult<Page<ModelSummary>>;
    /// Deletes the model unless a queued or running job uses it (checked atomically).
    async fn delete_model(&self, id: Uuid) -> StoreResult<DeleteModelOutcome>;
    /// Attaches or replaces a companion file. `Ok(None)` when the model does not exist; else the
    /// replaced file's blob (when it differs), which may now be unreferenced.
    async fn put_model_file(
        &self,
        model_id: Uuid,
        file: &StoredFile,
    ) -> StoreResult<Option<Option<String>>>;

    /// Queues a job if the model exists and fewer than `max_queued` jobs wait (atomically).
    async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome>;
    async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobRecord>>;
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> StoreResult<Page<JobRecord>>;
    async fn cancel_job(&self, id: Uuid) -> StoreResult<CancelOutcome>;
    /// Position in the queue (0 = next), for queued jobs.
    async fn queue_position(&self, id: Uuid) -> StoreResult<Option<u64>>;

    /// Claims the oldest runnable job: queued, or running with an expired lease and attempts
    /// left. Increments `attempt`. Never hands one job to two live leases.
    async fn claim_job(&self, owner: &str, lease: Duration) -> StoreResult<Option<JobRecord>>;
    async fn heartbeat(
        &self,
        lease: &Lease,
        ttl: Duration,
        progress: Progress,
    ) -> StoreResult<HeartbeatOutcome>;
    /// Records the artifact and the final progress and marks the job succeeded, if the lease is
    /// still held.
    async fn complete_job(
        &self,
        lease: &Lease,
        progress: Progress,
        artifact: &ArtifactRecord,
    ) -> StoreResult<bool>;
    /// Marks the job failed (or queued again when `retry` and attempts remain).
    async fn fail_job(
        &self,
        lease: &Lease,
        problem: &serde_json::Value,
        retry: bool,
    ) -> StoreResult<bool>;
    async fn mark_cancelled(&self, lease: &Lease) -> StoreResult<bool>;
    /// Hands a job back to the queue without counting the attempt (graceful shutdown).
    async fn release_job(&self, lease: &Lease) -> StoreResult<bool>;
    /// Fails running jobs whose lease expired with no attempts left, storing `problem` as their
    /// error, and closes cancelled running jobs whose lease expired. Returns how many.
    async fn fail_exhausted_jobs(&self, problem: &serde_json::Value) -> StoreResult<u64>;

    async fn get_artifact(&self, id: Uuid) -> StoreResult<Option<ArtifactRecord>>;
    /// Whether any model, companion file or artifact file still refers to the blob.
    async fn blob_is_referenced(&self, sha256: &str) -> StoreResult<bool>;
    /// Whether any record refers to any blob at all.
    async fn has_blob_references(&self) -> StoreResult<bool>;
    /// Ids of the models with this exact name (newest first, at most `limit`).
    async fn model_ids_by_name(&self, name: &str, limit: u32) -> StoreResult<Vec<Uuid>>;
}

/// Current time truncated to milliseconds (what the database keeps).
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

impl crate::error::Failure for StoreError {
    fn kind(&self) -> crate::error::ErrorKind {
        if self.is_storage_full() {
            crate::error::ErrorKind::InsufficientStorage
        } else if self.is_unavailable() {
            crate::error::ErrorKind::Unavailable
        } else {
            crate::error::ErrorKind::Internal
        }
    }

    fn slug(&self) -> &'static str {
        match self.kind() {
            crate::error::ErrorKind::InsufficientStorage => "insufficient-storage",
            crate::error::ErrorKind::Unavailable => "database-unavailable",
            _ => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self.kind() {
            crate::error::ErrorKind::Unavailable => "Database unavailable",
            kind => kind.title(),
        }
    }

    fn public_message(&self) -> String {
        match self.kind() {
            crate::error::ErrorKind::Unavailable => {
                "the metadata database is unavailable; nothing of the request was kept".to_owned()
            }
            kind => kind.opaque_message().to_owned(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self.kind() {
            crate::error::ErrorKind::InsufficientStorage => Some(60),
            crate::error::ErrorKind::Unavailable => Some(5),
            _ => None,
        }
    }
}
