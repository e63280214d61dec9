//! A catalog over a real SQLite database and a real blob store in a temporary directory, and
//! small safetensors files to feed it. Shared with the runner's tests.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::Notify;

use crate::catalog::{BodyError, Catalog, CatalogSettings, HeaderBudget, ModelName};
use crate::store::reserve::StorageReserve;
use crate::store::sqlite::SqliteStore;
use crate::store::{BlobStore, ModelRecord, SharedMetadataStore};

pub(crate) struct Fixture {
    /// Holds the database and the blobs; removed on drop.
    pub dir: tempfile::TempDir,
    pub url: String,
    pub store: SharedMetadataStore,
    pub blobs: BlobStore,
    pub catalog: Arc<Catalog>,
    pub job_wake: Arc<Notify>,
}

/// Settings generous enough for every test file, small enough to hit on purpose.
pub(crate) fn settings() -> CatalogSettings {
    CatalogSettings {
        max_upload_bytes: 1 << 20,
        max_header_bytes: 64 << 10,
        max_metadata_bytes: 1024,
        max_queued_jobs: 10,
        job_max_attempts: 3,
    }
}

impl Fixture {
    pub async fn new() -> Self {
        Fixture::with(settings(), 0, 1 << 20).await
    }

    /// A fixture with these settings, free-space reserve and header budget.
    pub async fn with(settings: CatalogSettings, min_free_bytes: u64, header_budget: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("quantd.db").display()
        );
        let store: SharedMetadataStore =
            Arc::new(SqliteStore::connect(&url).await.expect("database opens"));
        let blobs = BlobStore::local(dir.path().join("blobs")).expect("blob store");
        let reserve = StorageReserve::new([dir.path().join("blobs")], min_free_bytes);
        let job_wake = Arc::new(Notify::new());
        let catalog = Arc::new(Catalog::new(
            store.clone(),
            blobs.clone(),
            reserve,
            HeaderBudget::new(header_budget),
            settings,
            job_wake.clone(),
        ));
        Fixture {
            dir,
            url,
            store,
            blobs,
            catalog,
            job_wake,
        }
    }

    /// A second connection to the same database, for what the store does not expose (faults).
    pub async fn raw_database(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.url)
            .await
            .expect("connects")
    }

    /// From now on, every insert into `table` fails as a full or broken database would.
    pub async fn refuse_inserts_into(&self, table: &str) {
        let db = self.raw_database().await;
        sqlx::query(&format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ))
        .execute(&db)
        .await
        .expect("trigger created");
    }

    /// Every committed blob (its digest).
    pub fn committed_blobs(&self) -> Vec<String> {
        let mut blobs = Vec::new();
        let root = self.dir.path().join("blobs/sha256");
        for shard in std::fs::read_dir(root).expect("listable") {
            for entry in std::fs::read_dir(shard.unwrap().path()).expect("listable") {
                blobs.push(entry.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        blobs.sort();
        blobs
    }

    /// Every file in the staging folder.
    pub fn staging_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("blobs/tmp"))
            .expect("listable")
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Uploads a model that must be accepted.
    pub async fn ingest(&self, name: &str, bytes: Vec<u8>) -> ModelRecord {
        self.catalog
            .ingest_model(ModelName::try_from(name).unwrap(), None, body(bytes, 7))
            .await
            .expect("ingested")
    }
}

/// `bytes` as a request body of `chunk`-byte chunks.
pub(crate) fn body(
    bytes: Vec<u8>,
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Unpin {
    let chunks: Vec<Result<Bytes, BodyError>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

/// A body that yields `prefix` and then fails with `error`.
pub(crate) fn failing_body(
    prefix: Vec<u8>,
    error: BodyError,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Unpin {
    futures::stream::iter(vec![Ok(Bytes::from(prefix)), Err(error)])
}

/// A safetensors file of F32 tensors (name, shape, values) in order, with `__metadata__`.
pub(crate) fn safetensors(
    tensors: &[(&str, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".to_owned(), map.into());
    }
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let n_bytes = values.len() * 4;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n_bytes]}),
        );
        offset += n_bytes;
    }
    let mut header_bytes = serde_json::to_vec(&header).unwrap();
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut file = (header_bytes.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header_bytes);
    for (_, _, values) in tensors {
        file.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    file
}

/// A small two-layer model: two 8 × 16 weight matrices and a bias.
pub(crate) fn small_model() -> Vec<u8> {
    let weights = |seed: f32| (0..128).map(|i| ((i as f32) * 0.37 + seed).sin()).collect();
    safetensors(
        &[
            ("layer0.weight", vec![8, 16], weights(0.0)),
            ("layer0.bias", vec![8], vec![0.5; 8]),
            ("layer1.weight", vec![8, 16], weights(1.0)),
        ],
        &[("format", "pt")],
    )
}
