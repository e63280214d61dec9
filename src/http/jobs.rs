//! `/api/v1/jobs`: create (202 + Location + Retry-After), inspect, list, cancel.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{page_request, parse_id, ApiError, ApiJson, ApiQuery, AppState, PageResponse, Problem};
use crate::catalog::{Cancellation, CatalogError, JobRequest};
use crate::jobs::spec::JobSpec;
use crate::store::{JobFilter, JobRecord, JobState};

/// Body of `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    pub model_id: Uuid,
    /// Quantization scheme: `int8`.
    #[schema(example = "int8")]
    pub scheme: String,
    /// Scheme options. int8: `{"granularity": "channel" | "tensor", "symmetric": true | false}`
    /// (defaults: channel, true).
    #[schema(value_type = Option<Object>, example = json!({"granularity": "channel", "symmetric": true}))]
    pub options: Option<serde_json::Value>,
    /// Output format: `safetensors` (compressed-tensors layout, the default).
    pub format: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: JobRecord,
    /// For queued jobs: how many queued jobs are ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
}

async fn view(state: &AppState, job: JobRecord) -> Result<JobView, ApiError> {
    let queue_position = if job.state == JobState::Queued {
        state.catalog.queue_position(job.id).await?
    } else {
        None
    };
    Ok(JobView {
        job,
        queue_position,
    })
}

/// Seconds a client should wait before polling a job again.
const POLL_AFTER_SECS: u64 = 1;

/// Queue a quantization job
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = CreateJobRequest,
    responses(
        (status = 202, description = "Queued", body = JobView, headers(("Location" = String), ("Retry-After" = u64))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the 2 MiB limit for JSON bodies", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON (Content-Type: application/json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown scheme or format, an invalid option, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queue is full or the database is unavailable; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "No room left for the artifact (below the free-space reserve), or the database could not record the job; nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_job(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::parse(
        &request.scheme,
        request.options.as_ref(),
        request.format.as_deref(),
    )?;
    let request = JobRequest {
        model_id: request.model_id,
        spec,
    };
    let job = state
        .catalog
        .create_job(&request)
        .await
        .map_err(|error| match error {
            CatalogError::ModelNotFound(id) => {
                ApiError::not_found("model", &id.to_string()).with_field("model_id")
            }
            other => other.into(),
        })?;
    // The job is committed: from here on the client must hear 202 with its id, so a failed
    // position lookup only leaves the position out.
    let queue_position = match state.catalog.queue_position(job.id).await {
        Ok(position) => position,
        Err(e) => {
            tracing::warn!(error = %e, job_id = %job.id, "queue position unavailable");
            None
        }
    };
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)).expect("ascii");
    let body = JobView {
        job,
        queue_position,
    };
    Ok((
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, location),
            (header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECS)),
        ],
        Json(body),
    )
        .into_response())
}

/// Query of `GET /api/v1/jobs`. Fields are parsed by the handler (for its own error messages);
/// the spec declares what they must hold.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobListQuery {
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[param(value_type = Option<JobState>)]
    pub state: Option<String>,
    /// Only jobs of this model.
    #[param(value_type = Option<String>, format = Uuid)]
    pub model_id: Option<String>,
    #[param(schema_with = super::page_limit_schema)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

/// List jobs, newest first
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(JobListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = PageResponse<JobView>),
        (status = 400, description = "Bad filter, limit or cursor, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<PageResponse<JobView>>, ApiError> {
    let filter = JobFilter {
        state: query
            .state
            .as_deref()
            .map(|s| {
                JobState::parse(s).ok_or_else(|| {
                    ApiError::bad_request("invalid-query", format!("state '{s}' is not one of queued, running, succeeded, failed, cancelled")).with_field("state")
                })
            })
            .transpose()?,
        model_id: query
            .model_id
            .as_deref()
            .map(|m| Uuid::parse_str(m).map_err(|_| ApiError::bad_request("invalid-query", format!("model_id '{m}' is not an id")).with_field("model_id")))
            .transpose()?,
    };
    let page = state
        .catalog
        .jobs(&filter, page_request(query.limit, query.cursor.as_deref())?)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for job in page.items {
        items.push(view(&state, job).await?);
    }
    Ok(Json(PageResponse {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Get a job
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job; while not finished, Retry-After says when to poll again", body = JobView),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = parse_id("job", &id)?;
    let job = state
        .catalog
        .job(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    let finished = job.state.is_terminal();
    let body = Json(view(&state, job).await?);
    if finished {
        Ok(body.into_response())
    } else {
        Ok((
            [(header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECS))],
            body,
        )
            .into_response())
    }
}

/// Cancel a job
///
/// A queued job is cancelled at once (200). A running job stops at the next tensor boundary
/// (202; poll the job). Cancelling a cancelled job is a no-op (200); a job that already
/// succeeded or failed cannot be cancelled (409).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = JobView),
        (status = 202, description = "Cancellation requested; the worker stops at the next tensor", body = JobView),
        (status = 400, description = "Malformed path (undecodable percent-encoding)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = parse_id("job", &id)?;
    let cancellation = state
        .catalog
        .cancel_job(job_id)
        .await
        .map_err(|error| match error {
            CatalogError::JobNotFound(_) => ApiError::not_found("job", &id),
            other => other.into(),
        })?;
    match cancellation {
        Cancellation::Cancelled(job) => Ok(Json(view(&state, job).await?).into_response()),
        Cancellation::Requested(job) => {
            Ok((StatusCode::ACCEPTED, Json(view(&state, job).await?)).into_response())
        }
    }
}
