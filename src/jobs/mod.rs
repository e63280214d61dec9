//! Quantization jobs: request validation ([`spec`]), the blocking file-to-file pipeline
//! ([`pipeline`]) and the runner that claims queued jobs, runs them on the worker pool and records
//! the outcome ([`runner`]).

pub mod encode;
pub mod error;
pub mod output;
pub mod pipeline;
pub mod runner;
pub mod spec;
