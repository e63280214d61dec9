//! The free-space reserve: writes that grow storage (uploads, companion files, new jobs) are
//! refused while the file systems under the blobs and the database have less than a reserve
//! free. The reserve keeps room for the writes that must never fail for lack of space: the
//! database recording a delete, a job's outcome, a lease.

use std::path::PathBuf;

/// The file systems to watch and the room to keep free on each.
#[derive(Debug, Clone)]
pub struct StorageReserve {
    dirs: Vec<PathBuf>,
    min_free_bytes: u64,
}

/// A watched file system has too little room left.
#[derive(Debug, thiserror::Error)]
#[error("{} has {available_bytes} bytes free; {needed_bytes} are needed", path.display())]
pub struct LowSpace {
    pub path: PathBuf,
    pub available_bytes: u64,
    pub needed_bytes: u64,
}

impl StorageReserve {
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>, min_free_bytes: u64) -> Self {
        StorageReserve {
            dirs: dirs.into_iter().collect(),
            min_free_bytes,
        }
    }

    /// Ok when every watched file system has the reserve plus `extra_bytes` available. A file
    /// system that cannot be queried counts as full: better a 507 than a lost write. The
    /// `statvfs` calls run on tokio's blocking pool, never on the executor (a stalled file
    /// system must not stall it).
    pub async fn check(&self, extra_bytes: u64) -> Result<(), LowSpace> {
        if self.min_free_bytes == 0 && extra_bytes == 0 {
            return Ok(());
        }
        let reserve = self.clone();
        tokio::task::spawn_blocking(move || reserve.check_blocking(extra_bytes))
            .await
            .unwrap_or_else(|join_error| {
                // The closure does not panic; should the blocking pool be gone, refuse.
                tracing::error!(error = %join_error, "free-space check did not run");
                Err(LowSpace {
                    path: PathBuf::new(),
                    available_bytes: 0,
                    needed_bytes: self.min_free_bytes.saturating_add(extra_bytes),
                })
            })
    }

    /// [`StorageReserve::check`] on the calling thread (for blocking contexts).
    pub fn check_blocking(&self, extra_bytes: u64) -> Result<(), LowSpace> {
        if self.min_free_bytes == 0 && extra_bytes == 0 {
            return Ok(());
        }
        let needed_bytes = self.min_free_bytes.saturating_add(extra_bytes);
        for dir in &self.dirs {
            let available_bytes = super::blobs::available_bytes(dir).unwrap_or(0);
            if available_bytes < needed_bytes {
                return Err(LowSpace {
                    path: dir.clone(),
                    available_bytes,
                    needed_bytes,
                });
            }
        }
        Ok(())
    }
}

impl crate::error::Failure for LowSpace {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InsufficientStorage
    }

    fn slug(&self) -> &'static str {
        "insufficient-storage"
    }

    fn retry_after(&self) -> Option<u64> {
        Some(60)
    }
}
