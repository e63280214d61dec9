//! `/api/v1/models`: streamed uploads validated before any tensor byte is trusted, listing,
//! deletion, and companion files.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::download::serve_blob;
use super::{
    page_request, parse_id, ApiError, ApiQuery, AppState, ErrorKind, PageResponse, Problem,
};
use crate::formats::safetensors::{Header, StreamValidator, LENGTH_PREFIX_BYTES};
use crate::store::blobs::{BlobUpload, StagedBlob};
use crate::store::reaper;
use crate::store::sqlite::count_map;
use crate::store::{now, DeleteModelOutcome, ModelRecord, ModelSummary, StoredFile};

/// Largest companion file that is JSON-validated in memory (config.json, tokenizer.json).
const MAX_JSON_COMPANION_BYTES: usize = 64 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Human-readable model name: 1–128 characters of `A-Z a-z 0-9 . _ -`, not starting with
    /// `.`. Required for a raw body; for multipart uploads a `name` field or the file's name
    /// may give it instead.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub name: Option<String>,
}

/// A validated model name.
fn validate_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            ErrorKind::Unprocessable,
            "invalid-name",
            "Invalid name",
            format!("'{name}' is not a valid name: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'"),
        )
        .with_field("name"))
    }
}

/// A validated companion file name: one path segment, no tricks.
fn validate_filename(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            ErrorKind::Unprocessable,
            "invalid-filename",
            "Invalid file name",
            format!("'{name}' is not a valid file name: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'"),
        )
        .with_field("filename"))
    }
}

fn check_content_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    match declared_length(headers) {
        length if length > limit => Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            "upload-too-large",
            "Upload too large",
            format!("the body has {length} bytes; the limit is {limit}"),
        )),
        _ => Ok(()),
    }
}

/// The sha256 the client says the body has, from `Content-Digest` / `Repr-Digest`
/// (RFC 9530: `sha-256=:<base64>:`). `Ok(None)` when neither header names sha-256.
fn declared_sha256(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    for name in ["content-digest", "repr-digest"] {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        for member in value.split(',') {
            let Some((algorithm, digest)) = member.trim().split_once('=') else {
                continue;
            };
            if !algorithm.trim().eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let encoded = digest.trim().trim_matches(':');
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-digest",
                        format!("{name} does not hold a base64 sha-256 digest"),
                    )
                })?;
            return Ok(Some(hex::encode(bytes)));
        }
    }
    Ok(None)
}

/// Refuses a staged blob whose digest differs from the one the client declared.
async fn verify_declared_digest(
    staged: StagedBlob,
    declared: Option<String>,
) -> Result<StagedBlob, ApiError> {
    match declared {
        Some(expected) if expected != staged.sha256 => {
            let actual = staged.sha256.clone();
            staged.discard().await;
            Err(ApiError::new(
                ErrorKind::Unprocessable,
                "digest-mismatch",
                "Digest mismatch",
                format!("the body's sha-256 is {actual}, the request declared {expected}"),
            ))
        }
        _ => Ok(staged),
    }
}

/// Streams a safetensors body into a temporary blob while hashing and validating it. On any
/// failure the temporary blob is removed.
///
/// The header is the only part buffered in memory, so its declared length is reserved from the
/// shared [`HeaderBudget`](super::limits::HeaderBudget) before any byte of it is (503 when it
/// does not fit) and given back once it is parsed, or when this future ends or is dropped.
async fn ingest_safetensors<S, E>(
    state: &AppState,
    mut body: S,
) -> Result<(StagedBlob, Header), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let mut validator = StreamValidator::new(state.limits());
    let mut upload = state.blobs.begin_upload().await?;
    let mut header_reservation = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                upload.abort().await;
                return Err(ApiError::body_read_failed(&e));
            }
        };
        let header_was_parsed = validator.header().is_some();
        let fed =
            feed_validator(state, &mut validator, &mut header_reservation, &chunk).and_then(|()| {
                match validator.header() {
                    // Checked as soon as the header is parsed, not after the rest has streamed in.
                    Some(header) if !header_was_parsed => check_metadata(state, header),
                    _ => Ok(()),
                }
            });
        if let Err(e) = fed {
            upload.abort().await;
            return Err(e);
        }
        if let Err(e) = write_within_reserve(state, &mut upload, chunk).await {
            upload.abort().await;
            return Err(e);
        }
    }
    if validator.bytes_seen() == 0 {
        upload.abort().await;
        return Err(ApiError::bad_request("empty-body", "the body is empty; send the safetensors file as the body (curl -T) or as the multipart field 'file'"));
    }
    let header = match validator.finish() {
        Ok(header) => header,
        Err(e) => {
            upload.abort().await;
            return Err(e.into());
        }
    };
    let staged = upload.finish().await?;
    Ok((staged, header))
}

/// The stored `__metadata__` is bounded: it is kept and shown with the model.
fn check_metadata(state: &AppState, header: &Header) -> Result<(), ApiError> {
    let metadata_bytes: u64 = header
        .metadata
        .iter()
        .map(|(key, value)| (key.len() + value.len()) as u64)
        .sum();
    if metadata_bytes > state.settings.max_metadata_bytes {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "safetensors-metadata-too-large",
            "Invalid safetensors upload",
            format!(
                "the __metadata__ map holds {metadata_bytes} bytes of keys and values; the limit is {}",
                state.settings.max_metadata_bytes
            ),
        ));
    }
    Ok(())
}

/// Feeds one chunk to the validator, reserving the header's bytes from the shared budget
/// between its length prefix and its first byte, and releasing them once it is parsed.
fn feed_validator(
    state: &AppState,
    validator: &mut StreamValidator,
    header_reservation: &mut Option<super::limits::HeaderReservation>,
    chunk: &[u8],
) -> Result<(), ApiError> {
    // The length prefix goes in on its own, so that the header's length is known before the
    // validator buffers any of it.
    let n_prefix_missing = LENGTH_PREFIX_BYTES.saturating_sub(validator.bytes_seen());
    let n_prefix = chunk
        .len()
        .min(usize::try_from(n_prefix_missing).unwrap_or(usize::MAX));
    let (prefix, rest) = chunk.split_at(n_prefix);
    validator.feed(prefix)?;
    if header_reservation.is_none() {
        if let Some(header_len) = validator.pending_header_len() {
            *header_reservation = Some(state.header_budget.try_reserve(header_len)?);
        }
    }
    validator.feed(rest)?;
    if validator.pending_header_len().is_none() {
        *header_reservation = None;
    }
    Ok(())
}

/// Commits the staged blob and records the model.
async fn record_model(
    state: &AppState,
    name: String,
    staged: StagedBlob,
    header: Header,
) -> Result<Response, ApiError> {
    let size_bytes = staged.size_bytes;
    // From the commit until the row is written, no garbage collector may unlink these bytes
    // (another model with the same bytes may be being deleted right now).
    let window = state.blobs.open_commit_window().await;
    let sha256 = staged.commit(&window).await?;
    let model = ModelRecord {
        id: Uuid::now_v7(),
        name,
        sha256,
        size_bytes,
        n_tensors: header.tensors.len() as u64,
        n_parameters: header.n_parameters(),
        dtypes: count_map(header.tensors.iter().map(|t| t.dtype.as_str().to_owned())),
        metadata: header.metadata.clone(),
        files: Vec::new(),
        created_at: now(),
    };
    let inserted = state.store.insert_model(&model).await;
    drop(window);
    if let Err(e) = inserted {
        forget_blobs(state, [model.sha256.clone()]).await;
        return Err(e.into());
    }
    tracing::info!(model_id = %model.id, sha256 = %model.sha256, size_bytes, "model uploaded");
    let location = HeaderValue::from_str(&format!("/api/v1/models/{}", model.id)).expect("ascii");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(model),
    )
        .into_response())
}

/// Bytes between two checks of the free-space reserve while a body streams in.
const RESERVE_CHECK_BYTES: u64 = 8 << 20;

/// Writes a chunk of an upload, checking the free-space reserve whenever another
/// [`RESERVE_CHECK_BYTES`] went in: a body without a declared length, or many uploads at once,
/// must not eat the room kept for the database.
async fn write_within_reserve(
    state: &AppState,
    upload: &mut BlobUpload,
    chunk: Bytes,
) -> Result<(), ApiError> {
    let before = upload.size_bytes();
    let after = before + chunk.len() as u64;
    if after / RESERVE_CHECK_BYTES != before / RESERVE_CHECK_BYTES {
        state.reserve.check(0)?;
    }
    upload.write(chunk).await?;
    Ok(())
}

/// Removes blobs no record refers to any more (a record that could not be written, a deleted
/// model, a replaced file). The request's outcome is already settled, so a failure here is only
/// logged: the blobs are unreferenced, and the reaper removes them later.
async fn forget_blobs(state: &AppState, shas: impl IntoIterator<Item = String>) {
    reaper::collect_after_write(state.store.as_ref(), &state.blobs, shas).await;
}

/// The declared body length, when the client sent one.
fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Upload a model
///
/// The raw safetensors file as the body (`curl -T model.safetensors`), or `multipart/form-data`
/// with a `file` field (and optionally `name`). The body is streamed to storage while being
/// hashed and validated; nothing is kept if validation fails.
#[utoipa::path(
    post,
    path = "/api/v1/models",
    tag = "models",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A safetensors file"),
    responses(
        (status = 201, description = "Stored", body = ModelRecord, headers(("Location" = String, description = "URL of the new model"))),
        (status = 400, description = "Empty, interrupted or malformed multipart body, a malformed Content-Digest, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same bytes were deleted while this upload committed; upload again", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stopped arriving for the idle timeout; nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or header over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid safetensors file, or a bad name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The metadata database is unavailable, or concurrent uploads fill the header buffer budget (Retry-After); nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "No room left (below the free-space reserve); nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_model(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    check_content_length(request.headers(), state.settings.max_upload_bytes)?;
    state.reserve.check(declared_length(request.headers()))?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        let name = validate_name(query.name.as_deref().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unprocessable,
                "invalid-name",
                "Missing name",
                "give the model a name: ?name=...",
            )
            .with_field("name")
        })?)?;
        let declared = declared_sha256(request.headers())?;
        let (staged, header) =
            ingest_safetensors(&state, request.into_body().into_data_stream()).await?;
        let staged = verify_declared_digest(staged, declared).await?;
        return record_model(&state, name, staged, header).await;
    }

    let mut multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::bad_request("malformed-multipart", e.body_text()))?;
    let mut name = query.name.clone();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("name") => {
                let text = field.text().await.map_err(multipart_error)?;
                name = Some(text);
            }
            Some("file") => {
                let name = name
                    .clone()
                    .or_else(|| {
                        field
                            .file_name()
                            .map(|f| f.trim_end_matches(".safetensors").to_owned())
                    })
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorKind::Unprocessable,
                            "invalid-name",
                            "Missing name",
                            "give the model a name: ?name=... or a 'name' field before 'file'",
                        )
                        .with_field("name")
                    })?;
                let name = validate_name(&name)?;
                let (staged, header) = ingest_safetensors(&state, field).await?;
                return record_model(&state, name, staged, header).await;
            }
            _ => {} // other fields are ignored
        }
    }
    Err(ApiError::bad_request(
        "empty-body",
        "the multipart body has no 'file' field",
    ))
}

/// A multipart body that could not be read: 408 when it stalled, else malformed (400).
fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if super::limits::is_body_idle_timeout(&error) {
        ApiError::body_timeout(&error)
    } else {
        ApiError::bad_request("malformed-multipart", error.body_text())
    }
}

/// Upload a model with PUT (what `curl -T` sends)
///
/// Same as `POST /api/v1/models`: `curl -T model.safetensors '.../api/v1/models?name=NAME'`.
#[utoipa::path(
    put,
    path = "/api/v1/models",
    tag = "models",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A safetensors file"),
    responses(
        (status = 201, description = "Stored", body = ModelRecord, headers(("Location" = String, description = "URL of the new model"))),
        (status = 400, description = "Empty, interrupted or malformed multipart body, a malformed Content-Digest, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same bytes were deleted while this upload committed; upload again", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stopped arriving for the idle timeout; nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or header over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid safetensors file, or a bad name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The metadata database is unavailable, or concurrent uploads fill the header buffer budget (Retry-After); nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "No room left (below the free-space reserve); nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_model_put(
    state: State<AppState>,
    query: ApiQuery<UploadQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    upload_model(state, query, request).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(schema_with = super::page_limit_schema)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

/// List models, newest first
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "models",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of models (summaries: `__metadata__` is shown by `GET /api/v1/models/{id}`)", body = PageResponse<ModelSummary>),
        (status = 400, description = "Bad limit or cursor, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_models(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<PageResponse<ModelSummary>>, ApiError> {
    let page = state
        .store
        .list_models(page_request(query.limit, query.cursor.as_deref())?)
        .await?;
    Ok(Json(PageResponse {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Get a model
#[utoipa::path(
    get,
    path = "/api/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelRecord),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelRecord>, ApiError> {
    let model_id = parse_id("model", &id)?;
    let model = state
        .store
        .get_model(model_id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id))?;
    Ok(Json(model))
}

/// Delete a model
///
/// Refused with 409 while a queued or running job uses it. Artifacts made from it stay.
#[utoipa::path(
    delete,
    path = "/api/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A job uses the model", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The metadata database is unavailable; nothing was deleted", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The database has no room to record the delete; nothing was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let model_id = parse_id("model", &id)?;
    match state.store.delete_model(model_id).await? {
        DeleteModelOutcome::Deleted { released_blobs } => {
            forget_blobs(&state, released_blobs).await;
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteModelOutcome::NotFound => Err(ApiError::not_found("model", &id)),
        DeleteModelOutcome::Busy { job_id } => Err(ApiError::new(
            ErrorKind::Conflict,
            "model-in-use",
            "Model in use",
            format!("job {job_id} is queued or running on this model; cancel it or wait"),
        )),
    }
}

/// Attach a companion file
///
/// `config.json`, `tokenizer.json`, … stored beside the model (replacing a file of the same
/// name). JSON files must parse. Artifacts carry them over; `config.json` gets the
/// `quantization_config` merged in.
#[utoipa::path(
    put,
    path = "/api/v1/models/{id}/files/{filename}",
    tag = "models",
    params(("id" = String, Path, description = "Model id"), ("filename" = String, Path, description = "File name, e.g. config.json")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 400, description = "Malformed path, an interrupted body, or a malformed Content-Digest", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stopped arriving for the idle timeout; nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad file name or invalid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The metadata database is unavailable; nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "No room left (below the free-space reserve); nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_model_file(
    State(state): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let model_id = parse_id("model", &id)?;
    let filename = validate_filename(&filename)?;
    check_content_length(request.headers(), state.settings.max_upload_bytes)?;
    state.reserve.check(declared_length(request.headers()))?;
    if state.store.get_model(model_id).await?.is_none() {
        return Err(ApiError::not_found("model", &id));
    }
    let declared = declared_sha256(request.headers())?;
    let is_json = filename.ends_with(".json");
    let mut json_buffer = Vec::new();
    let mut upload = state.blobs.begin_upload().await?;
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let failure = match chunk {
            Err(e) => Some(ApiError::body_read_failed(&e)),
            Ok(_) if upload.size_bytes() > state.settings.max_upload_bytes => Some(ApiError::new(
                ErrorKind::PayloadTooLarge,
                "upload-too-large",
                "Upload too large",
                format!("the limit is {} bytes", state.settings.max_upload_bytes),
            )),
            Ok(chunk) => {
                if is_json && json_buffer.len() + chunk.len() > MAX_JSON_COMPANION_BYTES {
                    Some(ApiError::new(
                        ErrorKind::PayloadTooLarge,
                        "upload-too-large",
                        "Upload too large",
                        format!(
                            "JSON companion files are limited to {MAX_JSON_COMPANION_BYTES} bytes"
                        ),
                    ))
                } else {
                    if is_json {
                        json_buffer.extend_from_slice(&chunk);
                    }
                    write_within_reserve(&state, &mut upload, chunk).await.err()
                }
            }
        };
        if let Some(error) = failure {
            upload.abort().await;
            return Err(error);
        }
    }
    if is_json {
        let parsed = serde_json::from_slice::<serde_json::Value>(&json_buffer);
        let problem = match parsed {
            Err(e) => Some(format!("{filename} is not valid JSON: {e}")),
            Ok(value) if filename == "config.json" && !value.is_object() => {
                Some("config.json must be a JSON object".to_owned())
            }
            Ok(_) => None,
        };
        if let Some(detail) = problem {
            upload.abort().await;
            return Err(ApiError::new(
                ErrorKind::Unprocessable,
                "invalid-json",
                "Invalid JSON file",
                detail,
            ));
        }
    }
    let staged = verify_declared_digest(upload.finish().await?, declared).await?;
    let size_bytes = staged.size_bytes;
    let window = state.blobs.open_commit_window().await;
    let sha256 = staged.commit(&window).await?;
    let file = StoredFile {
        filename,
        sha256,
        size_bytes,
    };
    let recorded = state.store.put_model_file(model_id, &file).await;
    drop(window);
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(e) => {
            forget_blobs(&state, [file.sha256.clone()]).await;
            return Err(e.into());
        }
    };
    match recorded {
        None => {
            forget_blobs(&state, [file.sha256.clone()]).await;
            Err(ApiError::not_found("model", &id))
        }
        Some(replaced) => {
            // A served model reads its companions at load: reload it with the new file.
            if state.serving.forget(model_id) {
                tracing::info!(model_id = %model_id, file = %file.filename, "served model reloads with a new companion file");
            }
            forget_blobs(&state, replaced).await;
            let location = HeaderValue::from_str(&format!(
                "/api/v1/models/{model_id}/files/{}",
                file.filename
            ))
            .expect("validated ascii");
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(file),
            )
                .into_response())
        }
    }
}

/// Download a companion file
#[utoipa::path(
    get,
    path = "/api/v1/models/{id}/files/{filename}",
    tag = "models",
    params(("id" = String, Path, description = "Model id"), ("filename" = String, Path, description = "File name")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A byte range of the file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model or file", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range outside the file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_model_file(
    State(state): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let model_id = parse_id("model", &id)?;
    let model = state
        .store
        .get_model(model_id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id))?;
    let file = model
        .files
        .iter()
        .find(|f| f.filename == filename)
        .ok_or_else(|| ApiError::not_found("file", &filename))?;
    serve_blob(
        &state,
        &headers,
        &file.sha256,
        file.size_bytes,
        &file.filename,
    )
    .await
}
