//! Content-addressed blobs through the `object_store` crate.
//!
//! Every blob lives at `sha256/<first two hex digits>/<hex digest>`. Writers stream into a
//! temporary object (`tmp/<uuid>`) while hashing and counting, and only once the caller has
//! verified size and digest is the temporary object renamed to its final key. A crash leaves at
//! most a stray `tmp/` object, never a blob whose name lies about its content.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("blob {0} not found")]
    NotFound(String),
}

impl BlobError {
    /// The write failed because the disk (or the user's quota) is full.
    pub fn is_storage_full(&self) -> bool {
        is_storage_full(self)
    }
}

/// Whether an error, or any error in its source chain, is `ENOSPC` / `EDQUOT`. Errors of
/// `object_store` and `sqlx` wrap the `std::io::Error` a few levels down; their messages are
/// checked too, since not every wrapper keeps the source.
pub fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
            return true;
        }
        current = e.source();
    }
    false
}

/// Streams of blob bytes as the HTTP layer consumes them.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Root folder of the local store; workers mmap blobs from here and stage outputs in it.
    root: PathBuf,
    /// Orders commits against garbage collection. A commit holds it shared from the blob's
    /// rename until the row that records the blob is written (a [`CommitWindow`]); a collector
    /// holds it exclusively around "is it referenced? then unlink" ([`GcTurn`]). So a collector
    /// never unlinks bytes that a record is about to claim, even when the same bytes are being
    /// deleted elsewhere at the same moment.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Staging names a live upload or job is writing: the reaper leaves them alone whatever
    /// their age (an upload's file is only written once per part).
    live_staging: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Held from a blob's commit until the row recording it is written or has failed. Drop it
/// before collecting garbage: collection waits for every open window.
pub struct CommitWindow {
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// Exclusive turn of a garbage collector (see [`BlobStore::gc_turn`]).
pub struct GcTurn {
    _guard: tokio::sync::OwnedRwLockWriteGuard<()>,
}

/// A staging name registered as live for as long as this lives.
struct LiveStaging {
    name: String,
    registry: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Drop for LiveStaging {
    fn drop(&mut self) {
        self.registry
            .lock()
            .expect("not poisoned")
            .remove(&self.name);
    }
}

/// A staging file a worker writes a job's output into; live (safe from the reaper) until
/// dropped.
pub struct StagingFile {
    path: PathBuf,
    _live: LiveStaging,
}

impl StagingFile {
    pub fn path(&self) -> &FsPath {
        &self.path
    }
}

/// The hex sha256 of some bytes, as used for blob keys.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True for a 64-character lowercase hex string.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// A blob store on the local filesystem under `root` (created if missing).
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self, BlobError> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("sha256"))?;
        let root = root.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(BlobStore {
            store: Arc::new(store),
            root,
            gate: Arc::new(tokio::sync::RwLock::new(())),
            live_staging: Arc::default(),
        })
    }

    fn key(sha256: &str) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}/{}", &sha256[..2], sha256))
    }

    /// Where a committed blob is on disk (for memory-mapping by workers).
    pub fn local_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    /// A fresh file in the staging folder for a worker to write an output into.
    pub fn staging_file(&self) -> StagingFile {
        let name = Uuid::new_v4().to_string();
        StagingFile {
            path: self.root.join("tmp").join(&name),
            _live: self.register_live(name),
        }
    }

    fn register_live(&self, name: String) -> LiveStaging {
        self.live_staging
            .lock()
            .expect("not poisoned")
            .insert(name.clone());
        LiveStaging {
            name,
            registry: self.live_staging.clone(),
        }
    }

    /// Opens a commit window: commits need one (see [`CommitWindow`]).
    pub async fn open_commit_window(&self) -> CommitWindow {
        CommitWindow {
            _guard: self.gate.clone().read_owned().await,
        }
    }

    /// Waits until no commit window is open and keeps new ones from opening while the turn
    /// lasts. Never call it while holding a [`CommitWindow`].
    pub async fn gc_turn(&self) -> GcTurn {
        GcTurn {
            _guard: self.gate.clone().write_owned().await,
        }
    }

    /// Starts a streamed upload into a temporary object.
    pub async fn begin_upload(&self) -> Result<BlobUpload, BlobError> {
        let name = Uuid::new_v4().to_string();
        let live = self.register_live(name.clone());
        let temp_key = ObjectPath::from(format!("tmp/{name}"));
        let upload = self.store.put_multipart(&temp_key).await?;
        Ok(BlobUpload {
            store: self.store.clone(),
            root: self.root.clone(),
            _live: live,
            temp_key,
            writer: Some(WriteMultipart::new_with_chunk_size(upload, 8 << 20)),
            hasher: Sha256::new(),
            size_bytes: 0,
        })
    }

    /// Moves a fully written (and synced) staging file (see [`Self::staging_file`]) to its blob
    /// key, inside a commit window.
    pub async fn commit_staged_file(
        &self,
        staged: &FsPath,
        sha256: &str,
        _window: &CommitWindow,
    ) -> Result<(), BlobError> {
        let final_path = self.local_path(sha256);
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(staged, &final_path).await?;
        sync_committed(final_path).await
    }

    /// Bytes that unprivileged writers may still use on the file system holding the blobs.
    pub fn available_bytes(&self) -> std::io::Result<u64> {
        available_bytes(&self.root)
    }

    /// Removes staging files (interrupted uploads, outputs of killed jobs) that nobody has
    /// written to for `idle`; `Duration::ZERO` removes them all (start-up, when this process
    /// holds the data dir's lock and so no writer can exist). Returns (files, bytes) removed.
    pub async fn reap_staging(&self, idle: Duration) -> Result<(u64, u64), BlobError> {
        let tmp = self.root.join("tmp");
        let live = self.live_staging.clone();
        let reaped = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64)> {
            let now = SystemTime::now();
            let (mut files, mut bytes) = (0, 0);
            for entry in std::fs::read_dir(&tmp)? {
                let entry = entry?;
                let metadata = match entry.metadata() {
                    Ok(metadata) if metadata.is_file() => metadata,
                    _ => continue,
                };
                // object_store writes an upload to `<name>#<n>` before naming it `<name>`.
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let name = file_name.split('#').next().unwrap_or_default();
                if live.lock().expect("not poisoned").contains(name) {
                    continue;
                }
                let age = now
                    .duration_since(metadata.modified()?)
                    .unwrap_or(Duration::ZERO);
                if age >= idle && std::fs::remove_file(entry.path()).is_ok() {
                    files += 1;
                    bytes += metadata.len();
                }
            }
            Ok((files, bytes))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(reaped)
    }

    /// Every committed blob with its last modification time (a commit refreshes it), for the
    /// garbage collector.
    pub async fn list_committed(&self) -> Result<Vec<(String, SystemTime)>, BlobError> {
        let root = self.root.join("sha256");
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut blobs = Vec::new();
            for shard in std::fs::read_dir(&root)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(shard.path())? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !is_sha256_hex(&name) {
                        continue; // e.g. object_store's in-flight `name#n` files
                    }
                    blobs.push((name, entry.metadata()?.modified()?));
                }
            }
            Ok(blobs)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(listed)
    }

    /// Streams a blob, or a byte range of it.
    pub async fn get(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.store.get_opts(&Self::key(sha256), options).await {
            Ok(result) => Ok(result
                .into_stream()
                .map(|r| r.map_err(BlobError::from))
                .boxed()),
            Err(object_store::Error::NotFound { .. }) => {
                Err(BlobError::NotFound(sha256.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole (small) blob, e.g. a model's config.json.
    pub async fn read_small(&self, sha256: &str) -> Result<Bytes, BlobError> {
        match self.store.get(&Self::key(sha256)).await {
            Ok(result) => Ok(result.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(BlobError::NotFound(sha256.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        match self.store.head(&Self::key(sha256)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        match self.store.delete(&Self::key(sha256)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Storage round trip for `/readyz`: the root is listable.
    pub async fn ping(&self) -> Result<(), BlobError> {
        let prefix = ObjectPath::from("sha256");
        self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(())
    }
}

/// An upload in progress: bytes go to a temporary object while being hashed and counted.
pub struct BlobUpload {
    store: Arc<dyn ObjectStore>,
    root: PathBuf,
    /// Keeps the reaper away until the upload is committed, discarded or dropped.
    _live: LiveStaging,
    temp_key: ObjectPath,
    writer: Option<WriteMultipart>,
    hasher: Sha256,
    size_bytes: u64,
}

impl BlobUpload {
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.hasher.update(&chunk);
        self.size_bytes += chunk.len() as u64;
        let writer = self
            .writer
            .as_mut()
            .expect("writer present until finish/abort");
        // Bounded memory: at most a few parts in flight before we stop reading the body.
        writer.wait_for_capacity(2).await?;
        writer.put(chunk);
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Completes the temporary object and returns its digest and size, without committing it.
    pub async fn finish(mut self) -> Result<StagedBlob, BlobError> {
        let writer = self
            .writer
            .take()
            .expect("writer present until finish/abort");
        if let Err(e) = writer.finish().await {
            let _ = self.store.delete(&self.temp_key).await;
            return Err(e.into());
        }
        Ok(StagedBlob {
            store: self.store.clone(),
            root: self.root.clone(),
            _live: self._live,
            temp_key: self.temp_key.clone(),
            sha256: hex::encode(self.hasher.clone().finalize()),
            size_bytes: self.size_bytes,
        })
    }

    /// Drops everything written so far.
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.abort().await;
        }
        let _ = self.store.delete(&self.temp_key).await;
    }
}

/// A completely written temporary object whose digest is known; `commit` or `discard` it.
pub struct StagedBlob {
    store: Arc<dyn ObjectStore>,
    root: PathBuf,
    /// Keeps the reaper away until the upload is committed, discarded or dropped.
    _live: LiveStaging,
    temp_key: ObjectPath,
    pub sha256: String,
    pub size_bytes: u64,
}

impl StagedBlob {
    /// Renames the temporary object to its content address (replacing identical bytes if the
    /// same content was uploaded before).
    /// The bytes reach the disk before the rename, so that a rename over an existing blob (the
    /// same content uploaded again) can never leave that blob's name on unwritten data.
    pub async fn commit(self, _window: &CommitWindow) -> Result<String, BlobError> {
        let key = BlobStore::key(&self.sha256);
        let temp_path = self.root.join(self.temp_key.as_ref());
        if let Err(e) = sync_file(temp_path).await {
            let _ = self.store.delete(&self.temp_key).await;
            return Err(e);
        }
        if let Err(e) = self.store.rename(&self.temp_key, &key).await {
            let _ = self.store.delete(&self.temp_key).await;
            return Err(e.into());
        }
        sync_committed(self.root.join(key.as_ref())).await?;
        Ok(self.sha256)
    }

    pub async fn discard(self) {
        let _ = self.store.delete(&self.temp_key).await;
    }
}

/// Makes a committed blob durable before anyone records it: its bytes, then the directory entry
/// the rename created. It also refreshes the modification time, which the garbage collector
/// reads as "committed at" (a rename keeps the time of the upload's start).
async fn sync_committed(path: PathBuf) -> Result<(), BlobError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_modified(SystemTime::now())?;
        file.sync_all()?;
        // The entry in the shard folder, and the shard folder's entry in `sha256/` (it may be
        // new).
        for dir in path.ancestors().skip(1).take(2) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(())
}

/// `statvfs(2)`'s `f_bavail × f_frsize`: what an unprivileged writer may still use.
#[cfg(unix)]
pub fn available_bytes(path: &FsPath) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the struct's size, which statvfs fills completely when it returns 0.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn available_bytes(_path: &FsPath) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// `fsync` of one file's bytes.
async fn sync_file(path: PathBuf) -> Result<(), BlobError> {
    tokio::task::spawn_blocking(move || std::fs::File::open(&path)?.sync_all())
        .await
        .map_err(std::io::Error::other)??;
    Ok(())
}

impl crate::error::Failure for BlobError {
    fn kind(&self) -> crate::error::ErrorKind {
        if self.is_storage_full() {
            crate::error::ErrorKind::InsufficientStorage
        } else {
            crate::error::ErrorKind::Internal
        }
    }

    fn slug(&self) -> &'static str {
        if self.is_storage_full() {
            "insufficient-storage"
        } else {
            "internal-error"
        }
    }

    fn retry_after(&self) -> Option<u64> {
        self.is_storage_full().then_some(60)
    }
}
