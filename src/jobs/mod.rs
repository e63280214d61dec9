//! Quantization jobs: request validation ([`spec`]), the blocking file-to-file pipeline
//! ([`pipeline`]) and the runner that claims queued jobs, runs them on the worker pool and records
//! the outcome ([`runner`]).

pub mod encode;
pub mod error;
pub mod output;
pub mod pipeline;
pub mod runner;
pub mod spec;

/// A job-failure problem object (RFC 9457) as stored on the job and shown by the API.
pub fn job_problem(slug: &str, title: &str, status: u16, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": format!("/problems/{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
}
