//! The wire: one router per resource merged at the root, problem+json errors, the OpenAPI
//! document generated from the route registrations (so routes and spec cannot disagree).

pub mod artifacts;
mod catalog_error;
pub mod download;
pub mod envelope;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod models;
pub mod openai;
pub mod ops;
pub mod serve;
pub mod v2;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use tokio::sync::Notify;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

pub use error::{ApiError, ErrorKind, Problem};

use crate::config::Settings;
use crate::formats::safetensors::Limits;
use crate::pool::WorkerPool;
use crate::store::reserve::StorageReserve;
use crate::store::{BlobStore, SharedMetadataStore};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<AppInner>,
}

pub struct AppInner {
    pub settings: Settings,
    pub store: SharedMetadataStore,
    pub blobs: BlobStore,
    /// Free space kept for the writes that must not fail (see `store::reserve`).
    pub reserve: StorageReserve,
    /// Every kernel table, chosen once at start-up (shown on `/api/v1/info`).
    pub dispatch: &'static crate::dispatch::Dispatch,
    pub pool: Arc<WorkerPool>,
    /// Wakes the job runner after a job was queued.
    pub job_wake: Arc<Notify>,
    /// Loaded models and inference admission.
    pub serving: Arc<crate::serving::ServingRegistry>,
    /// The use cases over models, jobs and artifacts: what handlers call to read and write.
    pub catalog: Arc<crate::catalog::Catalog>,
    pub started_at: Instant,
}

impl AppInner {
    pub fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.settings.max_header_bytes,
            max_file_bytes: self.settings.max_upload_bytes,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

/// JSON body extractor whose rejections are problem+json.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query-string extractor whose rejections are problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Parses an id from the path; anything that is not a UUID cannot exist, hence 404.
pub fn parse_id(what: &'static str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::not_found(what, text))
}

/// A page of results with the cursor for the next one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageResponse<T: utoipa::ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Page sizes list endpoints accept: the server's check and the OpenAPI schema of `limit`
/// ([`page_limit_schema`]) both read these.
pub const PAGE_LIMIT_MIN: u32 = 1;
pub const PAGE_LIMIT_MAX: u32 = 200;
pub const PAGE_LIMIT_DEFAULT: u32 = 50;

/// The schema of the `limit` query parameter of list endpoints.
pub fn page_limit_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(PAGE_LIMIT_MIN))
        .maximum(Some(PAGE_LIMIT_MAX))
        .default(Some(PAGE_LIMIT_DEFAULT.into()))
        .description(Some(format!(
            "Page size, {PAGE_LIMIT_MIN}–{PAGE_LIMIT_MAX} (default {PAGE_LIMIT_DEFAULT})."
        )))
        .build()
}

/// `limit` and `cursor` query parameters shared by list endpoints.
pub fn page_request(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<crate::store::PageRequest, ApiError> {
    let limit = limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if !(PAGE_LIMIT_MIN..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("limit must be between {PAGE_LIMIT_MIN} and {PAGE_LIMIT_MAX}, got {limit}"),
        )
        .with_field("limit"));
    }
    let before = cursor
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| {
                ApiError::bad_request(
                    "invalid-query",
                    format!("cursor '{c}' is not one this API returned"),
                )
                .with_field("cursor")
            })
        })
        .transpose()?;
    Ok(crate::store::PageRequest { limit, before })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "quantd",
        description = "Upload FP32 safetensors models, quantize them on a worker pool, download the artifacts with a per-tensor error report.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "models", description = "Uploaded models and their companion files"),
        (name = "jobs", description = "Quantization jobs (asynchronous)"),
        (name = "artifacts", description = "Quantized outputs and their reports"),
        (name = "ops", description = "Health, readiness and service information")
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// Every documented route, with the spec generated from them.
fn api_router() -> OpenApiRouter<AppState> {
    // Uploads stream their body and enforce their own limit, so axum's 2 MB default for
    // buffered extractors must not apply to them; every other route keeps it.
    let uploads = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(
            models::upload_model,
            models::upload_model_put,
            models::list_models
        ))
        .routes(utoipa_axum::routes!(
            models::put_model_file,
            models::get_model_file
        ))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(uploads)
        .routes(utoipa_axum::routes!(
            models::get_model,
            models::delete_model
        ))
        .routes(utoipa_axum::routes!(jobs::create_job, jobs::list_jobs))
        .routes(utoipa_axum::routes!(jobs::get_job))
        .routes(utoipa_axum::routes!(jobs::cancel_job))
        .routes(utoipa_axum::routes!(artifacts::get_artifact))
        .routes(utoipa_axum::routes!(artifacts::download_artifact))
        .routes(utoipa_axum::routes!(artifacts::download_artifact_file))
        .routes(utoipa_axum::routes!(ops::healthz))
        .routes(utoipa_axum::routes!(ops::readyz))
        .routes(utoipa_axum::routes!(ops::info))
}

/// The documented routes and their OpenAPI document, with the responses the HTTP layer adds to
/// every operation.
fn api_router_and_spec() -> (Router<AppState>, OpenApiDoc) {
    let (api, mut spec) = api_router().split_for_parts();
    envelope::document_http_layer(&mut spec);
    (api, spec)
}

/// The OpenAPI document, as `quantd openapi` prints it and `/openapi.json` serves it.
pub fn openapi() -> OpenApiDoc {
    api_router_and_spec().1
}

/// The complete HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, spec) = api_router_and_spec();
    api.merge(v2::router())
        .merge(openai::router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
        .fallback(fallback_not_found)
        .method_not_allowed_fallback(fallback_method_not_allowed)
        // Innermost: a panicking handler becomes a problem+json 500 ...
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::new(
                ErrorKind::Internal,
                "internal-error",
                "Internal server error",
                "the server hit an internal error; it has been logged",
            )
            .into_response()
        }))
        // ... every error then gets its path's envelope (and over-long heads are refused) ...
        .layer(axum::middleware::from_fn(envelope::enveloped_errors))
        // ... and the trace sees the final status of every request.
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn fallback_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "route-not-found",
        "Not found",
        format!("no route for {}", uri.path()),
    )
}

async fn fallback_method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut response = ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
