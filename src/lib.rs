//! quantd: upload FP32 safetensors models, quantize them on a bounded worker pool of run-time
//! dispatched SIMD kernels, and serve the artifacts with a per-tensor error report.
//!
//! Modules in reading order, from the pure core outwards (see ARCHITECTURE.md). A layer uses only
//! the layers before it.

// Layer 0 — pure: math and bytes, no async, no I/O framework; what a failure is.
pub mod error;
pub mod formats;
pub mod infer;
pub mod quant;
// Every kernel table, chosen once from `QUANTD_KERNELS` (uses `quant` and `infer`).
pub mod dispatch;

// Layer 1 — effects: configuration, logging, storage, the worker pool.
pub mod config;
pub mod pool;
pub mod store;
pub mod telemetry;

// Layer 2 — use cases.
pub mod catalog;
pub mod jobs;
pub mod serving;

// Layer 3 — delivery.
pub mod http;
pub mod offline;
pub mod startup;
