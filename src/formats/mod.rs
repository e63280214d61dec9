//! File formats quantd reads and writes, as pure byte layouts: every reader takes explicit size
//! limits and uses checked arithmetic before it trusts a length, and every writer streams through
//! a synchronous `std::io::Write`.
//!
//! This is layer 0 (see DESIGN.md): it may use std, serde/serde_json and thiserror only, never
//! tokio, axum or sqlx, so the HTTP, job and storage layers can call it from blocking workers.
//!
//! - `safetensors`: reading untrusted safetensors headers (whole files and upload streams) and
//!   writing safetensors files tensor by tensor.
//! - `gguf`: writing GGUF v3 files for llama.cpp / gguf-py, and reading untrusted ones under
//!   limits.
//! - `compressed_tensors`: the `quantization_config` JSON that accompanies a compressed-tensors
//!   safetensors file.

pub mod compressed_tensors;
pub mod gguf;
pub mod safetensors;
