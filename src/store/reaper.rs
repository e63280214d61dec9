//! The reaper: removes what interrupted writes leave behind, so that a crash, a killed upload or
//! a failed commit costs disk space only until the next pass.
//!
//! Two kinds of garbage exist, both unreachable by any client:
//! - staging files under `tmp/` (uploads cut off, outputs of jobs whose worker died);
//! - committed blobs that no model, companion file or artifact refers to (the process died, or
//!   the database refused the write, between a blob's commit and the row that records it).
//!
//! At start-up the process holds the data dir's lock, so no writer can exist and everything is
//! reaped at once. While serving, staging files that a live upload or job owns are never
//! touched, and a blob is only unlinked in a garbage-collection turn, which no commit window
//! overlaps (see `BlobStore`'s gate); `idle` only spares recent files the work of a check.
//!
//! Every other remover of blobs (deletes, replaced companion files, failed commits) goes through
//! [`collect_unreferenced`] as well, so there is one place where bytes are unlinked.

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

/// Removes those of `candidates` that no record refers to, in one garbage-collection turn (so
/// no commit can claim them between the check and the unlink). Returns how many went. Callers
/// must not hold a [`super::blobs::CommitWindow`].
pub async fn collect_unreferenced(
    store: &dyn MetadataStore,
    blobs: &BlobStore,
    candidates: impl IntoIterator<Item = String>,
) -> Result<u64, ReapError> {
    let _turn = blobs.gc_turn().await;
    let mut removed = 0;
    let mut seen = std::collections::HashSet::new();
    for sha256 in candidates {
        if seen.insert(sha256.clone()) && !store.blob_is_referenced(&sha256).await? {
            blobs.delete(&sha256).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`collect_unreferenced`] after a write that already succeeded or failed on its own: a
/// failure here only leaves garbage for the reaper, so it is logged, not returned.
pub async fn collect_after_write(
    store: &dyn MetadataStore,
    blobs: &BlobStore,
    candidates: impl IntoIterator<Item = String>,
) {
    if let Err(e) = collect_unreferenced(store, blobs, candidates).await {
        warn!(error = %e, "removing unreferenced blobs failed; the reaper will retry");
    }
}

/// One pass: staging files no live writer owns and unreferenced blobs, idle for at least `idle`.
pub async fn reap(
    store: &dyn MetadataStore,
    blobs: &BlobStore,
    idle: Duration,
) -> Result<Reaped, ReapError> {
    let (staging_files, staging_bytes) = blobs.reap_staging(idle).await?;
    let now = SystemTime::now();
    let committed = blobs.list_committed().await?;
    // A database without a single blob reference beside a data dir full of blobs is more
    // likely the wrong database (a mistyped QUANTD_DATABASE_URL) than garbage: keep the bytes.
    if !committed.is_empty() && !store.has_blob_references().await? {
        warn!(
            blobs = committed.len(),
            "the database refers to no blob, yet the data dir holds some: not collecting them \
             (is QUANTD_DATABASE_URL the database of this data dir?)"
        );
        return Ok(Reaped {
            staging_files,
            staging_bytes,
            orphaned_blobs: 0,
        });
    }
    let mut orphaned_blobs = 0;
    for (sha256, modified) in committed {
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age >= idle {
            // One turn per blob, so that commits are held up only briefly.
            orphaned_blobs += collect_unreferenced(store, blobs, [sha256]).await?;
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
