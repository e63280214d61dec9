//! The blocking quantization pipeline: one safetensors file in, one quantized safetensors file
//! out, a tensor at a time.
//!
//! The input is memory-mapped (the page cache, not the heap, holds it), each tensor is turned into
//! f32 only if it is not already aligned f32, quantized, and written to the output at once, so the
//! heap holds about one tensor whatever the model size. Cancellation is checked between tensors.
//! Runs on a worker-pool thread, never on the async executor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::spec::QuantSpec;
use crate::formats::compressed_tensors::{int_quantization_config, IntWeightArgs};
use crate::formats::safetensors::{
    Dtype, Header, Limits, SafetensorsWriteError, SafetensorsWriter, TensorInfo,
};
use crate::quant::int8::{quantize_int8_into, Granularity, QuantError};
use crate::quant::kernels::Kernels;
use crate::quant::metrics::TensorMetrics;
use crate::store::Progress;

/// Live progress shared between the worker thread (writer) and the heartbeat task (reader).
#[derive(Debug, Default)]
pub struct ProgressCounters {
    pub tensors_done: AtomicU64,
    pub tensors_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

impl ProgressCounters {
    pub fn snapshot(&self) -> Progress {
        Progress {
            tensors_done: self.tensors_done.load(Ordering::Relaxed),
            tensors_total: self.tensors_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }
}

/// What the pipeline needs besides the files.
pub struct PipelineContext<'a> {
    pub kernels: &'static Kernels,
    pub limits: Limits,
    /// Set by the job runner when the user cancels, the lease is lost or the service stops.
    pub cancel: &'a AtomicBool,
    pub progress: &'a ProgressCounters,
    /// Testing aid (see `Settings::debug_tensor_delay_ms`).
    pub tensor_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cancelled")]
    Cancelled,
    /// The model itself cannot be quantized as asked; retrying will not help.
    #[error("{detail}")]
    InvalidInput { slug: &'static str, detail: String },
    /// Disk or similar trouble; worth another attempt.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Error figures of one tensor; `null` where a figure is undefined (e.g. SQNR of an exact copy).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TensorReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `quantized` or `kept` (stored as uploaded).
    pub action: String,
    /// Why a tensor was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mse: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub max_abs_error: Option<f32>,
    pub cosine: Option<f64>,
    /// RMSE of the error divided by the RMS of the weights.
    pub rel_rmse: Option<f64>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The whole artifact's report, stored with it and shown by `GET /api/v1/artifacts/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuantReport {
    pub scheme: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Kernel instruction set that ran.
    pub kernel_isa: String,
    pub n_tensors: usize,
    pub n_quantized: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub min_sqnr_db: Option<f64>,
    pub mean_sqnr_db: Option<f64>,
    pub duration_ms: u64,
    pub tensors: Vec<TensorReport>,
}

pub struct PipelineOutput {
    pub sha256: String,
    pub size_bytes: u64,
    pub report: QuantReport,
    /// The `quantization_config` block for config.json.
    pub quantization_config: serde_json::Value,
}

/// Why a tensor is stored unchanged, or `None` when it is quantized.
fn keep_reason(tensor: &TensorInfo) -> Option<&'static str> {
    if !tensor.dtype.is_float() {
        return Some("not a floating-point tensor");
    }
    if tensor.shape.len() < 2 {
        return Some("1-D tensor (bias or norm) kept in source precision");
    }
    if tensor.shape.contains(&0) {
        return Some("empty tensor");
    }
    let lower = tensor.name.to_ascii_lowercase();
    if lower.contains("embed") || lower.ends_with("wte.weight") || lower.ends_with("wpe.weight") {
        // Embedding tables are lookups, not Linear layers: compressed-tensors loaders expect
        // them in float, so they stay so by default.
        return Some("embedding table kept in source precision");
    }
    None
}

/// A tensor's values as f32: borrowed from the mapping when it already is aligned
/// little-endian f32, converted into a fresh buffer otherwise.
fn tensor_as_f32<'a>(bytes: &'a [u8], dtype: Dtype) -> Cow<'a, [f32]> {
    if dtype == Dtype::F32 && cfg!(target_endian = "little") {
        // SAFETY: every 4-byte pattern is a valid f32 and `align_to` only yields the properly
        // aligned middle part; we use it only when nothing is left over on either side.
        let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(body);
        }
    }
    let values: Vec<f32> = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        other => unreachable!("keep_reason keeps non-float dtype {other:?}"),
    };
    Cow::Owned(values)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i8_bytes(values: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len()) }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl From<SafetensorsWriteError> for PipelineError {
    fn from(error: SafetensorsWriteError) -> Self {
        match error {
            SafetensorsWriteError::Io(io) => PipelineError::Io(io),
            // Anything else means the declared layout and the data disagree: a bug, reported
            // as an internal error rather than blamed on the model.
            other => PipelineError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

fn invalid(slug: &'static str, detail: impl Into<String>) -> PipelineError {
    PipelineError::InvalidInput {
        slug,
        detail: detail.into(),
    }
}

/// Quantizes `input` into `output` (created or truncated) as `spec` says.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    spec: &QuantSpec,
    ctx: &PipelineContext<'_>,
) -> Result<PipelineOutput, PipelineError> {
    let started = Instant::now();
    let QuantSpec::Int8(int8_options) = *spec;
    let file = File::open(input)?;
    // SAFETY: blobs are content-addressed and never modified in place: a commit only renames a
    // complete file over an identical one, and a delete unlinks the name while our mapping keeps
    // the inode alive. So the mapped bytes cannot change under us.
    let mapping = unsafe { memmap2::Mmap::map(&file)? };
    #[cfg(unix)]
    let _ = mapping.advise(memmap2::Advice::Sequential);
    let header = Header::parse_file(&mapping, &ctx.limits).map_err(|e| {
        invalid(
            "stored-model-invalid",
            format!("stored model does not parse: {e}"),
        )
    })?;

    ctx.progress
        .tensors_total
        .store(header.tensors.len() as u64, Ordering::Relaxed);
    ctx.progress
        .bytes_total
        .store(header.data_len, Ordering::Relaxed);

    // Every output tensor is declared up front so the header can be written first and the data
    // streamed after it.
    let scale_shape = |shape: &[usize]| match int8_options.granularity {
        Granularity::Channel => vec![shape[0], 1],
        Granularity::Tensor => vec![1],
    };
    let mut declared: Vec<(String, Dtype, Vec<usize>)> = Vec::new();
    for tensor in &header.tensors {
        if keep_reason(tensor).is_some() {
            declared.push((tensor.name.clone(), tensor.dtype, tensor.shape.clone()));
        } else {
            declared.push((tensor.name.clone(), Dtype::I8, tensor.shape.clone()));
            declared.push((
                format!("{}_scale", tensor.name),
                Dtype::F32,
                scale_shape(&tensor.shape),
            ));
            if !int8_options.symmetric {
                declared.push((
                    format!("{}_zero_point", tensor.name),
                    Dtype::I8,
                    scale_shape(&tensor.shape),
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _, _) in &declared {
        if !seen.insert(name.as_str()) {
            return Err(invalid(
                "tensor-name-collision",
                format!("the output would contain '{name}' twice: the model already has a tensor with a name quantd adds"),
            ));
        }
    }

    let mut metadata: BTreeMap<String, String> = header.metadata.clone();
    // transformers refuses safetensors whose metadata names another framework.
    metadata.insert("format".into(), "pt".into());
    metadata.insert(
        "quantized_by".into(),
        format!("quantd {}", env!("CARGO_PKG_VERSION")),
    );
    metadata.insert("quantization_scheme".into(), spec.scheme().into());

    let out_file = File::create(output)?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out_file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut writer = SafetensorsWriter::new(sink, declared, metadata)?;

    let mut reports = Vec::with_capacity(header.tensors.len());
    let mut q_buffer: Vec<i8> = Vec::new();
    for tensor in &header.tensors {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        if !ctx.tensor_delay.is_zero() {
            std::thread::sleep(ctx.tensor_delay);
        }
        let start = (header.data_start + tensor.data_offsets.0) as usize;
        let end = (header.data_start + tensor.data_offsets.1) as usize;
        let bytes = &mapping[start..end];
        let bytes_before = bytes.len() as u64;

        let report = if let Some(reason) = keep_reason(tensor) {
            writer.write_tensor_data(&tensor.name, bytes)?;
            TensorReport {
                name: tensor.name.clone(),
                dtype: tensor.dtype.as_str().to_owned(),
                shape: tensor.shape.clone(),
                action: "kept".into(),
                reason: Some(reason.into()),
                mse: Some(0.0),
                sqnr_db: None,
                max_abs_error: Some(0.0),
                cosine: Some(1.0),
                rel_rmse: Some(0.0),
                bytes_before,
                bytes_after: bytes_before,
            }
        } else {
            let values = tensor_as_f32(bytes, tensor.dtype);
            // One output buffer per job, grown to the largest tensor: fresh pages cost a fault
            // each on first write, which would otherwise dominate the quantization itself.
            if q_buffer.len() < values.len() {
                q_buffer.resize(values.len(), 0);
            }
            let q = &mut q_buffer[..values.len()];
            let should_continue = || !ctx.cancel.load(Ordering::Relaxed);
            let quantized = match quantize_int8_into(
                ctx.kernels,
                &values,
                &tensor.shape,
                int8_options,
                q,
                &should_continue,
            ) {
                Ok(quantized) => quantized,
                Err(QuantError::Cancelled) => return Err(PipelineError::Cancelled),
                Err(QuantError::NonFinite { .. }) => {
                    return Err(invalid(
                        "non-finite-weights",
                        format!("tensor '{}' contains NaN or infinite values", tensor.name),
                    ))
                }
                Err(other) => {
                    return Err(invalid(
                        "unquantizable-tensor",
                        format!("tensor '{}': {other}", tensor.name),
                    ))
                }
            };
            let n_values = values.len();
            drop(values);
            let q = &q_buffer[..n_values];
            let scale_bytes = f32_bytes(&quantized.scales);
            writer.write_tensor_data(&tensor.name, i8_bytes(q))?;
            writer.write_tensor_data(&format!("{}_scale", tensor.name), &scale_bytes)?;
            let mut bytes_after = q.len() as u64 + scale_bytes.len() as u64;
            if !int8_options.symmetric {
                writer.write_tensor_data(
                    &format!("{}_zero_point", tensor.name),
                    i8_bytes(&quantized.zero_points),
                )?;
                bytes_after += quantized.zero_points.len() as u64;
            }
            let metrics = TensorMetrics::from(&quantized.stats);
            TensorReport {
                name: tensor.name.clone(),
                dtype: tensor.dtype.as_str().to_owned(),
                shape: tensor.shape.clone(),
                action: "quantized".into(),
                reason: None,
                mse: finite(metrics.mse),
                sqnr_db: finite(metrics.sqnr_db),
                max_abs_error: Some(metrics.max_abs_err),
                cosine: finite(metrics.cosine),
                rel_rmse: finite(metrics.rel_rmse),
                bytes_before,
                bytes_after,
            }
        };
        reports.push(report);
        release_mapped_range(&mapping, start, end);
        ctx.progress.tensors_done.fetch_add(1, Ordering::Relaxed);
        ctx.progress
            .bytes_done
            .fetch_add(bytes_before, Ordering::Relaxed);
    }

    let sink = writer.finish()?;
    let HashingWriter {
        inner,
        hasher,
        written,
    } = sink;
    let out_file = inner.into_inner().map_err(|e| e.into_error())?;
    // Durable before the blob is committed and the job marked succeeded.
    out_file.sync_all()?;

    let sqnrs: Vec<f64> = reports
        .iter()
        .filter(|r| r.action == "quantized")
        .filter_map(|r| r.sqnr_db)
        .collect();
    let report = QuantReport {
        scheme: spec.scheme().into(),
        options: spec.canonical_options(),
        kernel_isa: ctx.kernels.isa.to_string(),
        n_tensors: reports.len(),
        n_quantized: reports.iter().filter(|r| r.action == "quantized").count(),
        bytes_before: reports.iter().map(|r| r.bytes_before).sum(),
        bytes_after: reports.iter().map(|r| r.bytes_after).sum(),
        min_sqnr_db: sqnrs.iter().copied().reduce(f64::min),
        mean_sqnr_db: (!sqnrs.is_empty()).then(|| sqnrs.iter().sum::<f64>() / sqnrs.len() as f64),
        duration_ms: started.elapsed().as_millis() as u64,
        tensors: reports,
    };
    let quantization_config = int_quantization_config(
        IntWeightArgs {
            num_bits: 8,
            symmetric: int8_options.symmetric,
            strategy: match int8_options.granularity {
                Granularity::Channel => "channel",
                Granularity::Tensor => "tensor",
            },
        },
        &[],
    );
    Ok(PipelineOutput {
        sha256: hex::encode(hasher.finalize()),
        size_bytes: written,
        report,
        quantization_config,
    })
}

/// Drops the finished tensor's pages from this process's resident set, so that RSS stays near one
/// tensor even for models larger than RAM (the page cache keeps them if memory allows).
fn release_mapped_range(mapping: &memmap2::Mmap, start: usize, end: usize) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let aligned_start = start - start % PAGE;
        if end > aligned_start {
            // SAFETY: the mapping is read-only and private and never written, so MADV_DONTNEED
            // only makes later reads of these pages fault them in again from the file with the
            // same content; no reference into the mapping can observe a change.
            let _ = unsafe {
                mapping.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    aligned_start,
                    end - aligned_start,
                )
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (mapping, start, end);
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}
