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

use super::download::serve_blob;
use super::{
    page_request, parse_id, ApiError, ApiQuery, AppState, ErrorKind, PageResponse, Problem,
};
use crate::catalog::{BodyError, CatalogError, FileName, ModelName};
use crate::store::{ModelRecord, ModelSummary, StoredFile};

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

/// The declared body length, when the client sent one.
fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// A request body (or multipart field) as the catalog reads it: failures classified as a
/// stalled client (the idle timeout fired) or a broken body.
fn body_stream<S, E>(body: S) -> impl Stream<Item = Result<Bytes, BodyError>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    body.map(|chunk| {
        chunk.map_err(|e| {
            if super::limits::is_body_idle_timeout(&e) {
                BodyError::Stalled(Box::new(e))
            } else {
                BodyError::Interrupted(Box::new(e))
            }
        })
    })
}

/// A catalog failure, with "no such model" naming the id as the client wrote it.
fn model_error(id: &str) -> impl FnOnce(CatalogError) -> ApiError + '_ {
    move |error| match error {
        CatalogError::ModelNotFound(_) => ApiError::not_found("model", id),
        other => other.into(),
    }
}

/// A missing model name: 422 like an invalid one, saying where to give it.
fn missing_name(hint: &'static str) -> ApiError {
    ApiError::new(
        ErrorKind::Unprocessable,
        "invalid-name",
        "Missing name",
        hint,
    )
    .with_field("name")
}

/// Answers 201 with the new resource's location.
fn created<T: serde::Serialize>(location: &str, body: T) -> Response {
    let location = HeaderValue::from_str(location).expect("ids and validated names are ascii");
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
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
    state
        .catalog
        .admit_upload(declared_length(request.headers()))
        .await?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let model = if is_multipart {
        upload_multipart(&state, query.name, request).await?
    } else {
        let name = query
            .name
            .as_deref()
            .ok_or_else(|| missing_name("give the model a name: ?name=..."))?;
        let name = ModelName::try_from(name)?;
        let declared = declared_sha256(request.headers())?;
        let body = body_stream(request.into_body().into_data_stream());
        state
            .catalog
            .ingest_model(name, declared.as_deref(), body)
            .await?
    };
    Ok(created(&format!("/api/v1/models/{}", model.id), model))
}

/// A multipart upload: the model is the `file` field, its name the `name` field before it, the
/// query's `name`, or the file's name.
async fn upload_multipart(
    state: &AppState,
    query_name: Option<String>,
    request: Request,
) -> Result<ModelRecord, ApiError> {
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("malformed-multipart", e.body_text()))?;
    let mut name = query_name;
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
                        missing_name(
                            "give the model a name: ?name=... or a 'name' field before 'file'",
                        )
                    })?;
                let name = ModelName::try_from(name.as_str())?;
                let model = state
                    .catalog
                    .ingest_model(name, None, body_stream(field))
                    .await?;
                return Ok(model);
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
        .catalog
        .models(page_request(query.limit, query.cursor.as_deref())?)
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
        .catalog
        .model(model_id)
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
    state
        .catalog
        .delete_model(model_id)
        .await
        .map_err(model_error(&id))?;
    Ok(StatusCode::NO_CONTENT)
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
    let filename = FileName::try_from(filename.as_str())?;
    state
        .catalog
        .admit_upload(declared_length(request.headers()))
        .await?;
    let attachment = state
        .catalog
        .attach_file(model_id, filename)
        .await
        .map_err(model_error(&id))?;
    let declared = declared_sha256(request.headers())?;
    let body = body_stream(request.into_body().into_data_stream());
    let file = attachment
        .upload(declared.as_deref(), body)
        .await
        .map_err(model_error(&id))?;
    let location = format!("/api/v1/models/{model_id}/files/{}", file.filename);
    Ok(created(&location, file))
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
        .catalog
        .model(model_id)
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
