//! Content-addressed blobs through the `object_store` crate.
//!
//! Every blob lives at `sha256/<first two hex digits>/<hex digest>`. Writers stream into a
//! temporary object (`tmp/<uuid>`) while hashing and counting, and only once the caller has
//! verified size and digest is the temporary object renamed to its final key. A crash leaves at
//! most a stray `tmp/` object, never a blob whose name lies about its content.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

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

/// Streams of blob bytes as the HTTP layer consumes them.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Root folder of the local store; workers mmap blobs from here and stage outputs in it.
    root: PathBuf,
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
        })
    }

    fn key(sha256: &str) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}/{}", &sha256[..2], sha256))
    }

    /// Where a committed blob is on disk (for memory-mapping by workers).
    pub fn local_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    /// A fresh path in the staging folder for a worker to write an output file into.
    pub fn staging_path(&self) -> PathBuf {
        self.root.join("tmp").join(Uuid::new_v4().to_string())
    }

    /// Starts a streamed upload into a temporary object.
    pub async fn begin_upload(&self) -> Result<BlobUpload, BlobError> {
        let temp_key = ObjectPath::from(format!("tmp/{}", Uuid::new_v4()));
        let upload = self.store.put_multipart(&temp_key).await?;
        Ok(BlobUpload {
            store: self.store.clone(),
            temp_key,
            writer: Some(WriteMultipart::new_with_chunk_size(upload, 8 << 20)),
            hasher: Sha256::new(),
            size_bytes: 0,
        })
    }

    /// Moves a fully written staging file (see [`Self::staging_path`]) to its blob key.
    pub async fn commit_staged_file(&self, staged: &FsPath, sha256: &str) -> Result<(), BlobError> {
        let final_path = self.local_path(sha256);
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(staged, &final_path).await?;
        Ok(())
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
    temp_key: ObjectPath,
    pub sha256: String,
    pub size_bytes: u64,
}

impl StagedBlob {
    /// Renames the temporary object to its content address (replacing identical bytes if the
    /// same content was uploaded before).
    pub async fn commit(self) -> Result<String, BlobError> {
        self.store
            .rename(&self.temp_key, &BlobStore::key(&self.sha256))
            .await?;
        Ok(self.sha256)
    }

    pub async fn discard(self) {
        let _ = self.store.delete(&self.temp_key).await;
    }
}
