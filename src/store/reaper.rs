//! The reaper: removes what interrupted writes leave behind, so that a crash, a killed upload or
//! a failed commit costs disk space only until the next pass.
//!
//! Two kinds of garbage exist, both unreachable by any client:
//! - staging files under `tmp/` (uploads cut off, outputs of jobs whose worker died);
//! - committed blobs that no model, companion file or artifact refers to (the process died, or
//!   the database refused the write, between a blob's commit and the row that records it).
//!
//! At start-up the process holds the data dir's lock, so no writer can exist and everything is
//! reaped at once. While serving, only garbage idle for `idle` is removed: a live upload or job
//! writes its staging file continuously, and a commit refreshes a blob's modification time just
//! before its row is inserted.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::blobs::BlobError;
use super::{BlobStore, MetadataStore, StoreError};

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    pub staging_files: u64,
    pub staging_bytes: u64,
    pub orphaned_blobs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One pass: staging files and unreferenced blobs idle for at least `idle`.
pub async fn reap(
    store: &dyn MetadataStore,
    blobs: &BlobStore,
    idle: Duration,
) -> Result<Reaped, ReapError> {
    let (staging_files, staging_bytes) = blobs.reap_staging(idle).await?;
    let now = SystemTime::now();
    let mut orphaned_blobs = 0;
    for (sha256, modified) in blobs.list_committed().await? {
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age >= idle && !store.blob_is_referenced(&sha256).await? {
            blobs.delete(&sha256).await?;
            orphaned_blobs += 1;
        }
    }
    Ok(Reaped {
        staging_files,
        staging_bytes,
        orphaned_blobs,
    })
}

/// Logs a pass's outcome (nothing when there was nothing to do).
pub fn log_pass(when: &'static str, result: &Result<Reaped, ReapError>) {
    match result {
        Ok(reaped) if *reaped == Reaped::default() => {}
        Ok(reaped) => info!(
            when,
            staging_files = reaped.staging_files,
            staging_bytes = reaped.staging_bytes,
            orphaned_blobs = reaped.orphaned_blobs,
            "reaped leftovers of interrupted writes"
        ),
        Err(e) => warn!(when, error = %e, "reaping leftovers failed; will retry"),
    }
}

/// Runs a pass every `interval` until `shutdown`.
pub async fn run_periodically(
    store: std::sync::Arc<dyn MetadataStore>,
    blobs: BlobStore,
    idle: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        log_pass("periodic", &reap(store.as_ref(), &blobs, idle).await);
    }
}
