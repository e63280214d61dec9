//! Models and their companion files: ingest (stream, validate, commit, record), attach, delete
//! with blob collection.

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use super::error::{BodyError, CatalogError};
use super::ingest::verify_declared_digest;
use super::Catalog;
use crate::formats::safetensors::Header;
use crate::store::blobs::StagedBlob;
use crate::store::sqlite::count_map;
use crate::store::{now, DeleteModelOutcome, ModelRecord, StoredFile};

/// Whether `name` is 1–128 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` (so it is
/// one safe path segment and never a hidden file).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A validated model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName(String);

impl TryFrom<&str> for ModelName {
    type Error = CatalogError;

    fn try_from(name: &str) -> Result<Self, CatalogError> {
        if is_plain_name(name) {
            Ok(ModelName(name.to_owned()))
        } else {
            Err(CatalogError::InvalidName {
                name: name.to_owned(),
            })
        }
    }
}

/// A validated companion file name: one path segment, no tricks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for FileName {
    type Error = CatalogError;

    fn try_from(name: &str) -> Result<Self, CatalogError> {
        if is_plain_name(name) {
            Ok(FileName(name.to_owned()))
        } else {
            Err(CatalogError::InvalidFilename {
                name: name.to_owned(),
            })
        }
    }
}

impl Catalog {
    /// Ingests a safetensors model: streams `body` into a staging blob through the validator,
    /// checks the declared digest (hex sha256) if any, commits the blob and records the model.
    /// Nothing is kept unless all of it succeeds.
    pub async fn ingest_model<S>(
        &self,
        name: ModelName,
        declared_sha256: Option<&str>,
        body: S,
    ) -> Result<ModelRecord, CatalogError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let (staged, header) = self.ingest_safetensors(body).await?;
        let staged = verify_declared_digest(staged, declared_sha256).await?;
        let model = self.commit_model(name, staged, header).await?;
        tracing::info!(model_id = %model.id, sha256 = %model.sha256, size_bytes = model.size_bytes, "model uploaded");
        Ok(model)
    }

    /// Commits the staged blob and records the model: blob, then row.
    async fn commit_model(
        &self,
        name: ModelName,
        staged: StagedBlob,
        header: Header,
    ) -> Result<ModelRecord, CatalogError> {
        let size_bytes = staged.size_bytes;
        // From the commit until the row is written, no garbage collector may unlink these bytes
        // (another model with the same bytes may be being deleted right now).
        let window = self.blobs.open_commit_window().await;
        let sha256 = staged.commit(&window).await?;
        let model = ModelRecord {
            id: Uuid::now_v7(),
            name: name.0,
            sha256,
            size_bytes,
            n_tensors: header.tensors.len() as u64,
            n_parameters: header.n_parameters(),
            dtypes: count_map(header.tensors.iter().map(|t| t.dtype.as_str().to_owned())),
            metadata: header.metadata,
            files: Vec::new(),
            created_at: now(),
        };
        let inserted = self.store.insert_model(&model).await;
        drop(window);
        if let Err(e) = inserted {
            self.forget_blobs([model.sha256.clone()]).await;
            return Err(e.into());
        }
        Ok(model)
    }

    /// Starts attaching (or replacing) a companion file of a model: refused at once, before any
    /// byte is read, when the model does not exist. [`Attachment::upload`] does the rest.
    pub async fn attach_file(
        &self,
        model_id: Uuid,
        filename: FileName,
    ) -> Result<Attachment<'_>, CatalogError> {
        if self.store.get_model(model_id).await?.is_none() {
            return Err(CatalogError::ModelNotFound(model_id));
        }
        Ok(Attachment {
            catalog: self,
            model_id,
            filename,
        })
    }

    /// Commits a companion file's blob and records it: blob, then row. Returns the file and the
    /// blob of the file it replaced, if that differs.
    async fn commit_file(
        &self,
        model_id: Uuid,
        filename: FileName,
        staged: StagedBlob,
    ) -> Result<(StoredFile, Option<String>), CatalogError> {
        let size_bytes = staged.size_bytes;
        let window = self.blobs.open_commit_window().await;
        let sha256 = staged.commit(&window).await?;
        let file = StoredFile {
            filename: filename.0,
            sha256,
            size_bytes,
        };
        let recorded = self.store.put_model_file(model_id, &file).await;
        drop(window);
        match recorded {
            Ok(Some(replaced)) => Ok((file, replaced)),
            Ok(None) => {
                // The model was deleted while the file streamed in.
                self.forget_blobs([file.sha256]).await;
                Err(CatalogError::ModelNotFound(model_id))
            }
            Err(e) => {
                self.forget_blobs([file.sha256]).await;
                Err(e.into())
            }
        }
    }

    /// Deletes a model unless a queued or running job uses it, then removes the blobs nothing
    /// refers to any more. Artifacts made from it stay.
    pub async fn delete_model(&self, id: Uuid) -> Result<(), CatalogError> {
        match self.store.delete_model(id).await? {
            DeleteModelOutcome::Deleted { released_blobs } => {
                self.forget_blobs(released_blobs).await;
                Ok(())
            }
            DeleteModelOutcome::NotFound => Err(CatalogError::ModelNotFound(id)),
            DeleteModelOutcome::Busy { job_id } => Err(CatalogError::ModelInUse { job_id }),
        }
    }
}

/// A companion file about to be uploaded to a model that existed when it was started.
pub struct Attachment<'a> {
    catalog: &'a Catalog,
    model_id: Uuid,
    filename: FileName,
}

impl Attachment<'_> {
    /// Streams the file into a staging blob (a `.json` file must parse; `config.json` must be
    /// an object), checks the declared digest (hex sha256) if any, commits the blob and records
    /// the file. The replaced file's blob goes if nothing else refers to it, and a served model
    /// reloads with the new file. Nothing is kept unless all of it succeeds.
    pub async fn upload<S>(
        self,
        declared_sha256: Option<&str>,
        body: S,
    ) -> Result<StoredFile, CatalogError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let Attachment {
            catalog,
            model_id,
            filename,
        } = self;
        let staged = catalog.ingest_companion(filename.as_str(), body).await?;
        let staged = verify_declared_digest(staged, declared_sha256).await?;
        let (file, replaced) = catalog.commit_file(model_id, filename, staged).await?;
        if let Some(serving) = &catalog.serving {
            if serving.forget(model_id) {
                tracing::info!(model_id = %model_id, file = %file.filename, "served model reloads with a new companion file");
            }
        }
        catalog.forget_blobs(replaced).await;
        Ok(file)
    }
}
