//! `/api/v1/artifacts`: metadata with the per-tensor report, and streamed downloads.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response};
use axum::Json;

use super::download::serve_blob;
use super::{parse_id, ApiError, AppState, Problem};
use crate::store::ArtifactRecord;

async fn load(state: &AppState, id: &str) -> Result<ArtifactRecord, ApiError> {
    let artifact_id = parse_id("artifact", id)?;
    state
        .catalog
        .artifact(artifact_id)
        .await?
        .ok_or_else(|| ApiError::not_found("artifact", id))
}

/// Get an artifact and its per-tensor error report
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{id}",
    tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")),
    responses(
        (status = 200, description = "The artifact", body = ArtifactRecord),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such artifact", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_artifact(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ArtifactRecord>, ApiError> {
    Ok(Json(load(&state, &id).await?))
}

/// Download the quantized model
///
/// Streams `model.safetensors`. Strong `ETag` (its sha256); `If-None-Match` → 304; one `Range`
/// → 206 (`If-Range` honoured); a range outside the file → 416.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{id}/download",
    tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A byte range of the file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such artifact", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range outside the file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download_artifact(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let artifact = load(&state, &id).await?;
    let filename = format!("{}-{}.safetensors", artifact.id, artifact.scheme);
    serve_blob(
        &state,
        &headers,
        &artifact.sha256,
        artifact.size_bytes,
        &filename,
    )
    .await
}

/// Download one file of an artifact
///
/// `model.safetensors`, `config.json` (with `quantization_config`), and companion files carried
/// over from the model (e.g. `tokenizer.json`). Same caching and range rules as `download`.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{id}/files/{filename}",
    tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id"), ("filename" = String, Path, description = "File name")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A byte range of the file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such artifact or file", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range outside the file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download_artifact_file(
    State(state): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let artifact = load(&state, &id).await?;
    let file = artifact
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
