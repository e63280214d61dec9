//! Streaming an upload into a staging blob: hashed and counted as it goes, checked against the
//! free-space reserve every few MiB, and (for models) fed through the safetensors validator so
//! that nothing unvalidated is ever committed. Every failure aborts the staging blob.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::error::{BodyError, CatalogError};
use super::header_budget::HeaderReservation;
use super::Catalog;
use crate::formats::safetensors::{Header, StreamValidator, LENGTH_PREFIX_BYTES};
use crate::store::blobs::{BlobUpload, StagedBlob};

/// Bytes between two checks of the free-space reserve while a body streams in.
const RESERVE_CHECK_BYTES: u64 = 8 << 20;

/// Largest companion file that is JSON-validated in memory (config.json, tokenizer.json).
pub(super) const MAX_JSON_COMPANION_BYTES: usize = 64 << 20;

/// A safetensors upload while it streams in: the validator and the header's share of the
/// budget, held between the length prefix and the parsed header.
struct SafetensorsIntake<'a> {
    catalog: &'a Catalog,
    validator: StreamValidator,
    header_reservation: Option<HeaderReservation>,
}

impl<'a> SafetensorsIntake<'a> {
    fn new(catalog: &'a Catalog) -> Self {
        SafetensorsIntake {
            catalog,
            validator: StreamValidator::new(catalog.settings.limits()),
            header_reservation: None,
        }
    }

    /// Feeds one chunk, checking `__metadata__` as soon as the header is parsed (not after the
    /// rest has streamed in).
    fn feed(&mut self, chunk: &[u8]) -> Result<(), CatalogError> {
        let header_was_parsed = self.validator.header().is_some();
        self.feed_within_budget(chunk)?;
        match self.validator.header() {
            Some(header) if !header_was_parsed => self.catalog.check_metadata(header),
            _ => Ok(()),
        }
    }

    /// Feeds one chunk to the validator, reserving the header's bytes from the shared budget
    /// between its length prefix and its first byte, and releasing them once it is parsed.
    fn feed_within_budget(&mut self, chunk: &[u8]) -> Result<(), CatalogError> {
        // The length prefix goes in on its own, so that the header's length is known before the
        // validator buffers any of it.
        let n_prefix_missing = LENGTH_PREFIX_BYTES.saturating_sub(self.validator.bytes_seen());
        let n_prefix = chunk
            .len()
            .min(usize::try_from(n_prefix_missing).unwrap_or(usize::MAX));
        let (prefix, rest) = chunk.split_at(n_prefix);
        self.validator.feed(prefix)?;
        if self.header_reservation.is_none() {
            if let Some(header_len) = self.validator.pending_header_len() {
                self.header_reservation = Some(self.catalog.header_budget.try_reserve(header_len)?);
            }
        }
        self.validator.feed(rest)?;
        if self.validator.pending_header_len().is_none() {
            self.header_reservation = None;
        }
        Ok(())
    }

    fn finish(self) -> Result<Header, CatalogError> {
        if self.validator.bytes_seen() == 0 {
            return Err(CatalogError::EmptyBody);
        }
        Ok(self.validator.finish()?)
    }
}

/// A companion file while it streams in: its size against the limit, and a JSON file's bytes
/// kept for parsing.
struct CompanionIntake<'a> {
    filename: &'a str,
    max_upload_bytes: u64,
    json: Option<Vec<u8>>,
}

impl CompanionIntake<'_> {
    fn check(&mut self, written_so_far: u64, chunk: &[u8]) -> Result<(), CatalogError> {
        // The limit is checked against what was written before this chunk (as it always was).
        if written_so_far > self.max_upload_bytes {
            return Err(CatalogError::TooLarge {
                limit: self.max_upload_bytes,
            });
        }
        if let Some(buffer) = &mut self.json {
            if buffer.len() + chunk.len() > MAX_JSON_COMPANION_BYTES {
                return Err(CatalogError::JsonTooLarge {
                    limit: MAX_JSON_COMPANION_BYTES,
                });
            }
            buffer.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// A JSON file must parse, and `config.json` must be an object.
    fn finish(self) -> Result<(), CatalogError> {
        let Some(buffer) = self.json else {
            return Ok(());
        };
        match serde_json::from_slice::<serde_json::Value>(&buffer) {
            Err(source) => Err(CatalogError::InvalidJson {
                filename: self.filename.to_owned(),
                source,
            }),
            Ok(value) if self.filename == "config.json" && !value.is_object() => {
                Err(CatalogError::ConfigNotObject)
            }
            Ok(_) => Ok(()),
        }
    }
}

impl Catalog {
    /// Streams a safetensors body into a staging blob while hashing and validating it. On any
    /// failure the staging blob is removed.
    ///
    /// The header is the only part buffered in memory, so its declared length is reserved from
    /// the shared [`HeaderBudget`](super::HeaderBudget) before any byte of it is, and given back
    /// once it is parsed, or when this future ends or is dropped.
    pub(super) async fn ingest_safetensors<S>(
        &self,
        body: S,
    ) -> Result<(StagedBlob, Header), CatalogError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let mut upload = self.blobs.begin_upload().await?;
        let mut intake = SafetensorsIntake::new(self);
        let streamed = self
            .stream_into(&mut upload, body, |_, chunk| intake.feed(chunk))
            .await
            .and_then(|()| intake.finish());
        match streamed {
            Ok(header) => Ok((upload.finish().await?, header)),
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Streams a companion file into a staging blob; a `.json` file must parse. On any failure
    /// the staging blob is removed.
    pub(super) async fn ingest_companion<S>(
        &self,
        filename: &str,
        body: S,
    ) -> Result<StagedBlob, CatalogError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let mut upload = self.blobs.begin_upload().await?;
        let mut intake = CompanionIntake {
            filename,
            max_upload_bytes: self.settings.max_upload_bytes,
            json: filename.ends_with(".json").then(Vec::new),
        };
        let streamed = self
            .stream_into(&mut upload, body, |written, chunk| {
                intake.check(written, chunk)
            })
            .await
            .and_then(|()| intake.finish());
        match streamed {
            Ok(()) => Ok(upload.finish().await?),
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Writes every chunk of `body` to `upload`, after `inspect` (given the bytes written so far
    /// and the chunk) accepted it. The caller aborts the upload on failure.
    async fn stream_into<S>(
        &self,
        upload: &mut BlobUpload,
        mut body: S,
        mut inspect: impl FnMut(u64, &[u8]) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            inspect(upload.size_bytes(), &chunk)?;
            self.write_within_reserve(upload, chunk).await?;
        }
        Ok(())
    }

    /// Writes a chunk of an upload, checking the free-space reserve whenever another
    /// [`RESERVE_CHECK_BYTES`] went in: a body without a declared length, or many uploads at
    /// once, must not eat the room kept for the database.
    async fn write_within_reserve(
        &self,
        upload: &mut BlobUpload,
        chunk: Bytes,
    ) -> Result<(), CatalogError> {
        let before = upload.size_bytes();
        let after = before + chunk.len() as u64;
        if after / RESERVE_CHECK_BYTES != before / RESERVE_CHECK_BYTES {
            self.reserve.check(0).await?;
        }
        upload.write(chunk).await?;
        Ok(())
    }

    /// The stored `__metadata__` is bounded: it is kept and shown with the model.
    fn check_metadata(&self, header: &Header) -> Result<(), CatalogError> {
        let bytes: u64 = header
            .metadata
            .iter()
            .map(|(key, value)| (key.len() + value.len()) as u64)
            .sum();
        let limit = self.settings.max_metadata_bytes;
        if bytes > limit {
            return Err(CatalogError::MetadataTooLarge { bytes, limit });
        }
        Ok(())
    }
}

/// Refuses a staged blob whose digest differs from the one the client declared.
pub(super) async fn verify_declared_digest(
    staged: StagedBlob,
    declared: Option<&str>,
) -> Result<StagedBlob, CatalogError> {
    match declared {
        Some(expected) if expected != staged.sha256 => {
            let actual = staged.sha256.clone();
            staged.discard().await;
            Err(CatalogError::DigestMismatch {
                actual,
                expected: expected.to_owned(),
            })
        }
        _ => Ok(staged),
    }
}
