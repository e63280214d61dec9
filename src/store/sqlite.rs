//! [`MetadataStore`] over SQLite (the laptop default): WAL journal, one writer at a time, every
//! state change of a job a single conditional statement so that concurrent workers and API calls
//! cannot interleave badly.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    now, ArtifactRecord, CancelOutcome, DeleteModelOutcome, EnqueueOutcome, HeartbeatOutcome,
    JobFilter, JobRecord, JobState, Lease, MetadataStore, ModelRecord, ModelSummary, NewJob, Page,
    PageRequest, Progress, StoreError, StoreResult, StoredFile,
};

/// Column list shared by every query that returns a job.
const JOB_COLUMNS: &str = "id, model_id, scheme, options, format, state, attempt, max_attempts, \
    cancel_requested, tensors_done, tensors_total, bytes_done, bytes_total, artifact_id, error, \
    created_at, started_at, finished_at, updated_at";

// WRITES_RUN_TO_COMPLETION: a write with `RETURNING` is read with `fetch_all`, never
// `fetch_optional`. SQLite hands out the returned row before the statement's last step, and in
// autocommit mode that last step is the commit. `fetch_optional` stops after the first row and
// drops the statement, so a commit that fails there (SQLITE_FULL on a full disk, an I/O error)
// was lost: the client heard "created" or "deleted" for a change that was rolled back.
// `fetch_all` steps the statement to SQLITE_DONE and returns the commit's error.

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file (its folder also holds the WAL and shared-memory files).
    path: std::path::PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit returns only once the WAL is on disk: what we acknowledge survives a
            // power cut, not only a crash of this process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Writers queue behind each other instead of failing with SQLITE_BUSY.
            .busy_timeout(Duration::from_secs(10));
        let path = options.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(SqliteStore { pool, path })
    }

    async fn files_of_model(&self, model_id: Uuid) -> StoreResult<Vec<StoredFile>> {
        let rows = sqlx::query(
            "SELECT filename, sha256, size_bytes FROM model_files WHERE model_id = ?1 ORDER BY filename",
        )
        .bind(model_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_file_from_row).collect()
    }

    async fn files_of_artifact(&self, artifact_id: Uuid) -> StoreResult<Vec<StoredFile>> {
        // The primary file (the one whose digest is the artifact's) first, then by name.
        let rows = sqlx::query(
            "SELECT f.filename, f.sha256, f.size_bytes FROM artifact_files f \
             JOIN artifacts a ON a.id = f.artifact_id WHERE f.artifact_id = ?1 \
             ORDER BY (f.sha256 != a.sha256), f.filename",
        )
        .bind(artifact_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_file_from_row).collect()
    }

    async fn model_from_row(&self, row: &SqliteRow) -> StoreResult<ModelRecord> {
        let id = uuid_col(row, "id")?;
        Ok(ModelRecord {
            id,
            name: row.try_get("name")?,
            sha256: row.try_get("sha256")?,
            size_bytes: u64_col(row, "size_bytes")?,
            n_tensors: u64_col(row, "n_tensors")?,
            n_parameters: u64_col(row, "n_parameters")?,
            dtypes: json_col(row, "dtypes")?,
            metadata: json_col(row, "metadata")?,
            files: self.files_of_model(id).await?,
            created_at: time_col(row, "created_at")?,
        })
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn uuid_col(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn opt_uuid_col(row: &SqliteRow, column: &str) -> StoreResult<Option<Uuid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn u64_col(row: &SqliteRow, column: &str) -> StoreResult<u64> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative")))
}

fn time_col(row: &SqliteRow, column: &str) -> StoreResult<OffsetDateTime> {
    let text: String = row.try_get(column)?;
    OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn opt_time_col(row: &SqliteRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| OffsetDateTime::parse(&t, &Rfc3339).map_err(|e| corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn json_col<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .expect("UTC times always format as RFC 3339")
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unix_ms(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

fn stored_file_from_row(row: &SqliteRow) -> StoreResult<StoredFile> {
    Ok(StoredFile {
        filename: row.try_get("filename")?,
        sha256: row.try_get("sha256")?,
        size_bytes: u64_col(row, "size_bytes")?,
    })
}

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    let state_text: String = row.try_get("state")?;
    let state =
        JobState::parse(&state_text).ok_or_else(|| corrupt(format!("state {state_text}")))?;
    let error: Option<String> = row.try_get("error")?;
    let error = error
        .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(format!("error: {e}"))))
        .transpose()?;
    let attempt: i64 = row.try_get("attempt")?;
    let max_attempts: i64 = row.try_get("max_attempts")?;
    let cancel_requested: i64 = row.try_get("cancel_requested")?;
    Ok(JobRecord {
        id: uuid_col(row, "id")?,
        model_id: uuid_col(row, "model_id")?,
        scheme: row.try_get("scheme")?,
        options: json_col(row, "options")?,
        format: row.try_get("format")?,
        state,
        progress: Progress {
            tensors_done: u64_col(row, "tensors_done")?,
            tensors_total: u64_col(row, "tensors_total")?,
            bytes_done: u64_col(row, "bytes_done")?,
            bytes_total: u64_col(row, "bytes_total")?,
        },
        attempt: u32::try_from(attempt).map_err(|_| corrupt("attempt"))?,
        max_attempts: u32::try_from(max_attempts).map_err(|_| corrupt("max_attempts"))?,
        cancel_requested: cancel_requested != 0,
        artifact_id: opt_uuid_col(row, "artifact_id")?,
        error,
        created_at: time_col(row, "created_at")?,
        started_at: opt_time_col(row, "started_at")?,
        finished_at: opt_time_col(row, "finished_at")?,
        updated_at: time_col(row, "updated_at")?,
    })
}

fn page_of<T>(mut items: Vec<T>, limit: u32, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
    // One extra row was fetched to learn whether another page exists.
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(id_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn local_dir(&self) -> Option<std::path::PathBuf> {
        let parent = self.path.parent()?;
        Some(if parent.as_os_str().is_empty() {
            std::path::PathBuf::from(".")
        } else {
            parent.to_path_buf()
        })
    }

    async fn insert_model(&self, model: &ModelRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO models (id, name, sha256, size_bytes, n_tensors, n_parameters, dtypes, metadata, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(model.id.to_string())
        .bind(&model.name)
        .bind(&model.sha256)
        .bind(to_i64(model.size_bytes))
        .bind(to_i64(model.n_tensors))
        .bind(to_i64(model.n_parameters))
        .bind(serde_json::to_string(&model.dtypes).expect("map serializes"))
        .bind(serde_json::to_string(&model.metadata).expect("map serializes"))
        .bind(rfc3339(model.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_model(&self, id: Uuid) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query("SELECT * FROM models WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.model_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    async fn list_models(&self, page: PageRequest) -> StoreResult<Page<ModelSummary>> {
        // One statement per page: each model's files come along as a JSON array.
        let rows = sqlx::query(
            "SELECT m.id, m.name, m.sha256, m.size_bytes, m.n_tensors, m.n_parameters, m.dtypes, \
               m.created_at, \
               (SELECT json_group_array(json_object('filename', f.filename, 'sha256', f.sha256, \
                  'size_bytes', f.size_bytes)) \
                FROM (SELECT * FROM model_files WHERE model_id = m.id ORDER BY filename) f) AS files \
             FROM models m WHERE (?1 IS NULL OR m.id < ?1) ORDER BY m.id DESC LIMIT ?2",
        )
        .bind(page.before.map(|id| id.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(ModelSummary {
                    id: uuid_col(row, "id")?,
                    name: row.try_get("name")?,
                    sha256: row.try_get("sha256")?,
                    size_bytes: u64_col(row, "size_bytes")?,
                    n_tensors: u64_col(row, "n_tensors")?,
                    n_parameters: u64_col(row, "n_parameters")?,
                    dtypes: json_col(row, "dtypes")?,
                    files: json_col(row, "files")?,
                    created_at: time_col(row, "created_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(items, page.limit, |m| m.id))
    }

    async fn delete_model(&self, id: Uuid) -> StoreResult<DeleteModelOutcome> {
        let file_shas: Vec<String> =
            sqlx::query_scalar("SELECT sha256 FROM model_files WHERE model_id = ?1")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
        // One statement: the check for active jobs and the delete cannot be split by a job
        // creation, which itself is a single statement that requires the model row.
        let deleted: Option<String> = sqlx::query_scalar(
            "DELETE FROM models WHERE id = ?1 AND NOT EXISTS \
             (SELECT 1 FROM jobs WHERE model_id = ?1 AND state IN ('queued', 'running')) \
             RETURNING sha256",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next(); // see WRITES_RUN_TO_COMPLETION
        let Some(model_sha) = deleted else {
            let busy: Option<String> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE model_id = ?1 AND state IN ('queued', 'running') LIMIT 1",
            )
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
            return Ok(match busy {
                Some(job_id) => DeleteModelOutcome::Busy {
                    job_id: Uuid::parse_str(&job_id).map_err(corrupt)?,
                },
                None => DeleteModelOutcome::NotFound,
            });
        };
        // The delete is committed: nothing after it may turn it into an error.
        Ok(DeleteModelOutcome::Deleted {
            released_blobs: std::iter::once(model_sha).chain(file_shas).collect(),
        })
    }

    async fn put_model_file(
        &self,
        model_id: Uuid,
        file: &StoredFile,
    ) -> StoreResult<Option<Option<String>>> {
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT sha256 FROM model_files WHERE model_id = ?1 AND filename = ?2",
        )
        .bind(model_id.to_string())
        .bind(&file.filename)
        .fetch_optional(&self.pool)
        .await?;
        let result = sqlx::query(
            "INSERT INTO model_files (model_id, filename, sha256, size_bytes, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM models WHERE id = ?1) \
             ON CONFLICT (model_id, filename) DO UPDATE SET sha256 = excluded.sha256, \
             size_bytes = excluded.size_bytes, created_at = excluded.created_at",
        )
        .bind(model_id.to_string())
        .bind(&file.filename)
        .bind(&file.sha256)
        .bind(to_i64(file.size_bytes))
        .bind(rfc3339(now()))
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        // Committed: the caller decides whether the replaced blob can go.
        Ok(Some(previous.filter(|sha| *sha != file.sha256)))
    }

    async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome> {
        let now = rfc3339(now());
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, model_id, scheme, options, format, state, max_attempts, \
               tensors_total, bytes_total, created_at, updated_at) \
             SELECT ?1, ?2, ?3, ?4, ?8, 'queued', ?5, m.n_tensors, m.size_bytes, ?6, ?6 \
             FROM models m WHERE m.id = ?2 \
             AND (SELECT COUNT(*) FROM jobs WHERE state = 'queued') < ?7 \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(job.id.to_string())
        .bind(job.model_id.to_string())
        .bind(&job.scheme)
        .bind(job.options.to_string())
        .bind(i64::from(job.max_attempts))
        .bind(&now)
        .bind(to_i64(max_queued))
        .bind(&job.format)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next(); // see WRITES_RUN_TO_COMPLETION
        if let Some(row) = row {
            return Ok(EnqueueOutcome::Enqueued(Box::new(job_from_row(&row)?)));
        }
        let model_exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM models WHERE id = ?1")
            .bind(job.model_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        if model_exists.is_none() {
            return Ok(EnqueueOutcome::ModelNotFound);
        }
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        Ok(EnqueueOutcome::QueueFull {
            queued: queued.max(0) as u64,
        })
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> StoreResult<Page<JobRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR id < ?1) \
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR model_id = ?3) \
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(page.before.map(|id| id.to_string()))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.model_id.map(|id| id.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(items, page.limit, |j| j.id))
    }

    async fn cancel_job(&self, id: Uuid) -> StoreResult<CancelOutcome> {
        let now = rfc3339(now());
        // A queued job is cancelled on the spot; a running one is flagged and its worker stops
        // at the next tensor boundary.
        let row = sqlx::query(&format!(
            "UPDATE jobs SET \
               state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
               finished_at = CASE WHEN state = 'queued' THEN ?2 ELSE finished_at END, \
               cancel_requested = 1, updated_at = ?2 \
             WHERE id = ?1 AND state IN ('queued', 'running') RETURNING {JOB_COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(&now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next(); // see WRITES_RUN_TO_COMPLETION
        if let Some(row) = row {
            return Ok(CancelOutcome::Accepted(job_from_row(&row)?));
        }
        Ok(match self.get_job(id).await? {
            Some(job) => CancelOutcome::AlreadyFinished(job),
            None => CancelOutcome::NotFound,
        })
    }

    async fn queue_position(&self, id: Uuid) -> StoreResult<Option<u64>> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM jobs o WHERE o.state = 'queued' AND o.id < j.id) \
             FROM jobs j WHERE j.id = ?1 AND j.state = 'queued'",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(position.map(|p| p.max(0) as u64))
    }

    async fn claim_job(&self, owner: &str, lease: Duration) -> StoreResult<Option<JobRecord>> {
        let now = now();
        let expires = unix_ms(now) + lease.as_millis() as i64;
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?1, \
               lease_expires_at_ms = ?2, started_at = ?3, updated_at = ?3 \
             WHERE id = (SELECT id FROM jobs WHERE cancel_requested = 0 AND attempt < max_attempts \
                 AND (state = 'queued' OR (state = 'running' AND lease_expires_at_ms < ?4)) \
                 ORDER BY id LIMIT 1) \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(owner)
        .bind(expires)
        .bind(rfc3339(now))
        .bind(unix_ms(now))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next(); // see WRITES_RUN_TO_COMPLETION
        row.as_ref().map(job_from_row).transpose()
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        ttl: Duration,
        progress: Progress,
    ) -> StoreResult<HeartbeatOutcome> {
        let now = now();
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at_ms = ?4, tensors_done = ?5, tensors_total = ?6, \
               bytes_done = ?7, bytes_total = ?8, updated_at = ?9 \
             WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running' \
             RETURNING cancel_requested",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(unix_ms(now) + ttl.as_millis() as i64)
        .bind(to_i64(progress.tensors_done))
        .bind(to_i64(progress.tensors_total))
        .bind(to_i64(progress.bytes_done))
        .bind(to_i64(progress.bytes_total))
        .bind(rfc3339(now))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next(); // see WRITES_RUN_TO_COMPLETION
        Ok(match cancel {
            Some(flag) => HeartbeatOutcome::Held {
                cancel_requested: flag != 0,
            },
            None => HeartbeatOutcome::Lost,
        })
    }

    async fn complete_job(
        &self,
        lease: &Lease,
        progress: Progress,
        artifact: &ArtifactRecord,
    ) -> StoreResult<bool> {
        let now = rfc3339(now());
        let mut tx = self.pool.begin().await?;
        // The write comes first so that SQLite takes the write lock at once.
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', artifact_id = ?4, finished_at = ?5, updated_at = ?5, \
               lease_owner = NULL, lease_expires_at_ms = NULL, \
               tensors_done = ?6, tensors_total = ?7, bytes_done = ?8, bytes_total = ?9 \
             WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(artifact.id.to_string())
        .bind(&now)
        .bind(to_i64(progress.tensors_done))
        .bind(to_i64(progress.tensors_total))
        .bind(to_i64(progress.bytes_done))
        .bind(to_i64(progress.bytes_total))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO artifacts (id, job_id, model_id, scheme, options, format, sha256, size_bytes, report, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(artifact.id.to_string())
        .bind(artifact.job_id.to_string())
        .bind(artifact.model_id.to_string())
        .bind(&artifact.scheme)
        .bind(artifact.options.to_string())
        .bind(&artifact.format)
        .bind(&artifact.sha256)
        .bind(to_i64(artifact.size_bytes))
        .bind(artifact.report.to_string())
        .bind(rfc3339(artifact.created_at))
        .execute(&mut *tx)
        .await?;
        for file in &artifact.files {
            sqlx::query(
                "INSERT INTO artifact_files (artifact_id, filename, sha256, size_bytes) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(artifact.id.to_string())
            .bind(&file.filename)
            .bind(&file.sha256)
            .bind(to_i64(file.size_bytes))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_job(
        &self,
        lease: &Lease,
        problem: &serde_json::Value,
        retry: bool,
    ) -> StoreResult<bool> {
        let now = rfc3339(now());
        let result = sqlx::query(
            "UPDATE jobs SET \
               state = CASE WHEN ?4 AND attempt < max_attempts AND cancel_requested = 0 THEN 'queued' ELSE 'failed' END, \
               finished_at = CASE WHEN ?4 AND attempt < max_attempts AND cancel_requested = 0 THEN NULL ELSE ?6 END, \
               error = ?5, lease_owner = NULL, lease_expires_at_ms = NULL, updated_at = ?6 \
             WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(retry)
        .bind(problem.to_string())
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn mark_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        let now = rfc3339(now());
        let result = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?4, updated_at = ?4, \
               lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_job(&self, lease: &Lease) -> StoreResult<bool> {
        let now = rfc3339(now());
        let result = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = attempt - 1, updated_at = ?4, \
               lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn fail_exhausted_jobs(&self, problem: &serde_json::Value) -> StoreResult<u64> {
        let now = now();
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2, lease_owner = NULL, \
               lease_expires_at_ms = NULL \
             WHERE state = 'running' AND cancel_requested = 1 AND lease_expires_at_ms < ?1",
        )
        .bind(unix_ms(now))
        .bind(rfc3339(now))
        .execute(&self.pool)
        .await?;
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', error = ?3, finished_at = ?2, updated_at = ?2, \
               lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE state = 'running' AND attempt >= max_attempts AND lease_expires_at_ms < ?1",
        )
        .bind(unix_ms(now))
        .bind(rfc3339(now))
        .bind(problem.to_string())
        .execute(&self.pool)
        .await?;
        Ok(cancelled.rows_affected() + failed.rows_affected())
    }

    async fn get_artifact(&self, id: Uuid) -> StoreResult<Option<ArtifactRecord>> {
        let Some(row) = sqlx::query("SELECT * FROM artifacts WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(ArtifactRecord {
            id,
            job_id: uuid_col(&row, "job_id")?,
            model_id: uuid_col(&row, "model_id")?,
            scheme: row.try_get("scheme")?,
            options: json_col(&row, "options")?,
            format: row.try_get("format")?,
            sha256: row.try_get("sha256")?,
            size_bytes: u64_col(&row, "size_bytes")?,
            files: self.files_of_artifact(id).await?,
            report: json_col(&row, "report")?,
            created_at: time_col(&row, "created_at")?,
        }))
    }

    async fn model_ids_by_name(&self, name: &str, limit: u32) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM models WHERE name = ?1 ORDER BY id DESC LIMIT ?2")
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(corrupt))
            .collect()
    }

    async fn has_blob_references(&self) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM models) OR EXISTS (SELECT 1 FROM artifact_files)",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn blob_is_referenced(&self, sha256: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM models WHERE sha256 = ?1) \
             OR EXISTS (SELECT 1 FROM model_files WHERE sha256 = ?1) \
             OR EXISTS (SELECT 1 FROM artifact_files WHERE sha256 = ?1)",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}

/// Tensor-count map helper used when building a [`ModelRecord`].
pub fn count_map<I: IntoIterator<Item = String>>(names: I) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}
