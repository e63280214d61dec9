//! Operations endpoints: liveness, readiness (database and storage reachable and with room for
//! writes), service info.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorKind, Problem};
use crate::dispatch::Dispatch;
use crate::jobs::spec::{KNOWN_FORMATS, KNOWN_SCHEMES};

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

/// Liveness: the process serves HTTP
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the metadata database and the blob store answer, and have room for writes
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, body = Status),
        (status = 503, description = "A dependency is down, or storage is below the free-space reserve", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "not-ready",
            "Not ready",
            "the metadata database is unreachable",
        )
        .with_retry_after(5));
    }
    if let Err(e) = state.blobs.ping().await {
        tracing::warn!(error = %e, "readiness: blob store unreachable");
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "not-ready",
            "Not ready",
            "the blob store is unreachable",
        )
        .with_retry_after(5));
    }
    if let Err(low) = state.reserve.check(0).await {
        tracing::warn!(error = %low, "readiness: below the free-space reserve");
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "not-ready",
            "Not ready",
            format!("storage cannot take writes: {low} (the reserve is QUANTD_MIN_FREE_BYTES)"),
        )
        .with_retry_after(30));
    }
    Ok(Json(Status { status: "ready" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub max_upload_bytes: u64,
    pub max_header_bytes: u64,
    pub max_metadata_bytes: u64,
    pub max_queued_jobs: u64,
    pub job_max_attempts: u32,
    /// Free space kept in reserve; below it uploads and job creation answer 507.
    pub min_free_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    /// Instruction set of the kernels in use (chosen at start-up).
    pub kernel_isa: String,
    /// Instruction sets this CPU supports.
    pub available_isas: Vec<String>,
    /// Instruction set of the inference GEMM kernels in use (e.g. `avx512vnni`).
    pub inference_isa: String,
    /// Inference GEMM instruction sets this CPU supports.
    pub available_inference_isas: Vec<String>,
    /// Blocking worker threads.
    pub workers: usize,
    pub uptime_seconds: u64,
    pub schemes: Vec<&'static str>,
    pub formats: Vec<&'static str>,
    pub limits: Limits,
}

/// Service information: version, kernel instruction set, workers, limits
#[utoipa::path(get, path = "/api/v1/info", tag = "ops", responses((status = 200, body = Info)))]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        name: "quantd",
        version: env!("CARGO_PKG_VERSION"),
        kernel_isa: state.dispatch.quant.isa.to_string(),
        available_isas: Dispatch::available_isas()
            .iter()
            .map(|isa| isa.to_string())
            .collect(),
        inference_isa: state.dispatch.gemm.isa.to_string(),
        available_inference_isas: Dispatch::available_inference_isas()
            .iter()
            .map(|isa| isa.to_string())
            .collect(),
        workers: state.pool.size(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        schemes: KNOWN_SCHEMES.to_vec(),
        formats: KNOWN_FORMATS.to_vec(),
        limits: Limits {
            max_upload_bytes: state.settings.max_upload_bytes,
            max_header_bytes: state.settings.max_header_bytes,
            max_metadata_bytes: state.settings.max_metadata_bytes,
            max_queued_jobs: state.settings.max_queued_jobs,
            job_max_attempts: state.settings.job_max_attempts,
            min_free_bytes: state.settings.min_free_bytes,
        },
    })
}
