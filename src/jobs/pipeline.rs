//! The blocking quantization pipeline: one safetensors file in, one quantized safetensors file
//! out, a tensor at a time.
//!
//! The input is memory-mapped (the page cache, not the heap, holds it), each tensor is turned into
//! f32 only if it is not already aligned f32, quantized, and written to the output at once, so the
//! heap holds about one tensor whatever the model size. Cancellation is checked between tensors.
//! Runs on a worker-pool thread, never on the async executor.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::encode::{layout_metadata, output_tensors, plan_tensor, Encoder, TensorPlan};
use super::output::{ModelInfo, OutputWriter};
use super::spec::{JobSpec, OutputFormat, Scheme};
use crate::dispatch::Dispatch;
use crate::formats::compressed_tensors::{
    bitsandbytes_nf4_config, quantization_config, ConfigGroup,
};
use crate::formats::safetensors::{Dtype, Header, Limits, TensorInfo};
use crate::quant::convert::float_values;
use crate::quant::kernels::Kernels;
use crate::quant::layout::{Description, Emitter, OutputTensor};
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
    /// The kernel tables (int8 and ggml quantizers), chosen once at start-up.
    pub dispatch: &'static Dispatch,
    pub limits: Limits,
    /// Set by the job runner when the user cancels, the lease is lost or the service stops.
    pub cancel: &'a AtomicBool,
    pub progress: &'a ProgressCounters,
    /// Testing aid (see `Settings::debug_tensor_delay_ms`).
    pub tensor_delay: Duration,
}

pub use super::error::PipelineError;

/// What the pipeline did with a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TensorAction {
    Quantized,
    Kept,
}

impl std::fmt::Display for TensorAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `{:<9}` in the offline table pads this.
        f.pad(match self {
            TensorAction::Quantized => "quantized",
            TensorAction::Kept => "kept",
        })
    }
}

/// Error figures of one tensor; `null` where a figure is undefined (e.g. SQNR of an exact copy).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TensorReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Quantized, or kept (stored as uploaded; `reason` says why).
    pub action: TensorAction,
    /// The scheme that quantized it (differs from the job's when an override matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Why a tensor was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mse: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub max_abs_error: Option<f32>,
    pub cosine: Option<f64>,
    /// RMSE of the error divided by the RMS of the weights.
    pub rel_rmse: Option<f64>,
    /// Stored bits per weight, scales and zero points included.
    pub bits_per_weight: Option<f64>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The whole artifact's report, stored with it and shown by `GET /api/v1/artifacts/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuantReport {
    pub scheme: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    pub format: String,
    /// Kernel instruction set that ran.
    pub kernel_isa: String,
    pub n_tensors: usize,
    pub n_quantized: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Stored bits per weight over the quantized tensors, scales and zero points included.
    pub bits_per_weight: Option<f64>,
    pub min_sqnr_db: Option<f64>,
    pub mean_sqnr_db: Option<f64>,
    pub duration_ms: u64,
    pub tensors: Vec<TensorReport>,
}

pub struct PipelineOutput {
    pub sha256: String,
    pub size_bytes: u64,
    pub report: QuantReport,
    /// The `quantization_config` block for config.json (compressed-tensors output only).
    pub quantization_config: Option<serde_json::Value>,
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
    let values = float_values(dtype, bytes)
        .unwrap_or_else(|| unreachable!("plan_tensor keeps non-float dtype {dtype:?}"));
    Cow::Owned(values)
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
    spec: &JobSpec,
    model: &ModelInfo,
    ctx: &PipelineContext<'_>,
) -> Result<PipelineOutput, PipelineError> {
    let started = Instant::now();
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
    start_progress(ctx.progress, &header, mapping.len() as u64);

    // Every output tensor is declared up front so the header can be written first and the data
    // streamed after it.
    let plans: Vec<TensorPlan> = header
        .tensors
        .iter()
        .map(|t| plan_tensor(t, spec))
        .collect();
    let declared = declare_outputs(&header.tensors, &plans, spec.format)?;

    let out_file = File::create(output)?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out_file),
        hasher: Sha256::new(),
        written: 0,
    };
    let layout_metadata = header
        .tensors
        .iter()
        .zip(&plans)
        .flat_map(|(tensor, plan)| layout_metadata(tensor, plan, spec.format))
        .collect();
    let mut writer = OutputWriter::new(
        sink,
        spec,
        declared.iter().flatten().cloned().collect(),
        &header.metadata,
        layout_metadata,
        model,
    )?;
    let should_continue = || !ctx.cancel.load(Ordering::Relaxed);
    let mut encoder = Encoder::new(ctx.dispatch.quant, ctx.dispatch.ggml, &should_continue);

    let mut reports = Vec::with_capacity(header.tensors.len());
    for ((tensor, plan), outputs) in header.tensors.iter().zip(&plans).zip(&declared) {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        if !ctx.tensor_delay.is_zero() {
            std::thread::sleep(ctx.tensor_delay);
        }
        let start = (header.data_start + tensor.data_offsets.0) as usize;
        let end = (header.data_start + tensor.data_offsets.1) as usize;
        let bytes = &mapping[start..end];
        let mut emitter = Emitter::new(outputs, &mut writer);
        let report = encode_tensor(&mut encoder, tensor, plan, bytes, spec.format, &mut emitter)?;
        reports.push(report);
        release_mapped_range(&mapping, start, end);
        ctx.progress.tensors_done.fetch_add(1, Ordering::Relaxed);
        ctx.progress
            .bytes_done
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
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

    let report = summarize(reports, spec, ctx.dispatch.quant, started);
    let quantization_config = match spec.format {
        OutputFormat::Safetensors => safetensors_quantization_config(&header.tensors, &plans),
        OutputFormat::Gguf | OutputFormat::Dequantized { .. } => None,
    };
    Ok(PipelineOutput {
        sha256: hex::encode(hasher.finalize()),
        size_bytes: written,
        report,
        quantization_config,
    })
}

/// Totals known once the header is parsed: tensors, and bytes counting the whole input file (as
/// the job's totals did from its creation: they come from the model's size), the header done.
fn start_progress(progress: &ProgressCounters, header: &Header, file_len: u64) {
    progress
        .tensors_total
        .store(header.tensors.len() as u64, Ordering::Relaxed);
    progress.bytes_total.store(file_len, Ordering::Relaxed);
    progress
        .bytes_done
        .store(file_len.saturating_sub(header.data_len), Ordering::Relaxed);
}

/// The output tensors of every input tensor, in file order; refuses an output that would hold a
/// name twice.
fn declare_outputs(
    tensors: &[TensorInfo],
    plans: &[TensorPlan],
    format: OutputFormat,
) -> Result<Vec<Vec<OutputTensor>>, PipelineError> {
    let declared = tensors
        .iter()
        .zip(plans)
        .map(|(tensor, plan)| output_tensors(tensor, plan, format))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for out in declared.iter().flatten() {
        if !seen.insert(out.name.as_str()) {
            return Err(invalid(
                "tensor-name-collision",
                format!("the output would contain '{}' twice: the model already has a tensor with a name quantd adds", out.name),
            ));
        }
    }
    Ok(declared)
}

/// Keeps or quantizes one tensor through `emitter` (over its declared outputs) and reports it.
fn encode_tensor(
    encoder: &mut Encoder<'_>,
    tensor: &TensorInfo,
    plan: &TensorPlan,
    bytes: &[u8],
    format: OutputFormat,
    emitter: &mut Emitter<'_>,
) -> Result<TensorReport, PipelineError> {
    let bytes_before = bytes.len() as u64;
    let report = match plan {
        TensorPlan::Keep { reason } => {
            encoder.keep(tensor, bytes, emitter)?;
            TensorReport {
                name: tensor.name.clone(),
                dtype: tensor.dtype.as_str().to_owned(),
                shape: tensor.shape.clone(),
                action: TensorAction::Kept,
                scheme: None,
                reason: Some(reason.clone()),
                mse: Some(0.0),
                sqnr_db: None,
                max_abs_error: Some(0.0),
                cosine: Some(1.0),
                rel_rmse: Some(0.0),
                bits_per_weight: Some(tensor.dtype.size_bytes() as f64 * 8.0),
                bytes_before,
                bytes_after: bytes_before,
            }
        }
        TensorPlan::Quantize { scheme, note } => {
            let values = tensor_as_f32(bytes, tensor.dtype);
            let stats = encoder.encode(tensor, &values, scheme, format, emitter)?;
            let n_values = values.len();
            drop(values);
            let metrics = TensorMetrics::from(&stats);
            let bytes_after = emitter.bytes_written();
            TensorReport {
                name: tensor.name.clone(),
                dtype: tensor.dtype.as_str().to_owned(),
                shape: tensor.shape.clone(),
                action: TensorAction::Quantized,
                scheme: Some(scheme.name().to_owned()),
                reason: note.clone(),
                mse: finite(metrics.mse),
                sqnr_db: finite(metrics.sqnr_db),
                max_abs_error: Some(metrics.max_abs_err),
                cosine: finite(metrics.cosine),
                rel_rmse: finite(metrics.rel_rmse),
                bits_per_weight: Some(bytes_after as f64 * 8.0 / n_values.max(1) as f64),
                bytes_before,
                bytes_after,
            }
        }
    };
    Ok(report)
}

/// The whole artifact's report from its tensors'.
fn summarize(
    reports: Vec<TensorReport>,
    spec: &JobSpec,
    kernels: &Kernels,
    started: Instant,
) -> QuantReport {
    let quantized: Vec<&TensorReport> = reports
        .iter()
        .filter(|r| r.action == TensorAction::Quantized)
        .collect();
    let sqnrs: Vec<f64> = quantized.iter().filter_map(|r| r.sqnr_db).collect();
    let quantized_elements: u64 = quantized
        .iter()
        .map(|r| r.shape.iter().product::<usize>() as u64)
        .sum();
    let quantized_bytes: u64 = quantized.iter().map(|r| r.bytes_after).sum();
    QuantReport {
        scheme: spec.scheme.name().into(),
        options: spec.canonical_options(),
        format: spec.format.name().into(),
        kernel_isa: kernels.isa.to_string(),
        n_tensors: reports.len(),
        n_quantized: quantized.len(),
        bytes_before: reports.iter().map(|r| r.bytes_before).sum(),
        bytes_after: reports.iter().map(|r| r.bytes_after).sum(),
        bits_per_weight: (quantized_elements > 0)
            .then(|| quantized_bytes as f64 * 8.0 / quantized_elements as f64),
        min_sqnr_db: sqnrs.iter().copied().reduce(f64::min),
        mean_sqnr_db: (!sqnrs.is_empty()).then(|| sqnrs.iter().sum::<f64>() / sqnrs.len() as f64),
        duration_ms: started.elapsed().as_millis() as u64,
        tensors: reports,
    }
}

/// The `quantization_config` for config.json: bitsandbytes' for NF4 checkpoints, else
/// compressed-tensors' with one config group per distinct scheme, targeting the quantized modules
/// by name (tensor name without `.weight`). `None` when nothing needs describing (plain floats,
/// GGUF types, and the quantd layouts, which the file's `__metadata__` describes).
fn safetensors_quantization_config(
    tensors: &[TensorInfo],
    plans: &[TensorPlan],
) -> Option<serde_json::Value> {
    let module_of = |tensor: &TensorInfo| {
        tensor
            .name
            .strip_suffix(".weight")
            .unwrap_or(&tensor.name)
            .to_owned()
    };
    let mut groups: Vec<(Scheme, Description, Vec<String>)> = Vec::new();
    for (tensor, plan) in tensors.iter().zip(plans) {
        let TensorPlan::Quantize { scheme, .. } = plan else {
            continue;
        };
        let description = scheme.layout().description();
        if description == Description::None {
            continue;
        }
        match groups.iter_mut().find(|(s, _, _)| s == scheme) {
            Some((_, _, modules)) => modules.push(module_of(tensor)),
            None => groups.push((*scheme, description, vec![module_of(tensor)])),
        }
    }
    if let Some((_, Description::Bitsandbytes { double_quant }, _)) = groups.first() {
        // JobSpec::parse keeps NF4 from sharing a checkpoint with compressed-tensors schemes.
        let skipped: Vec<String> = tensors
            .iter()
            .zip(plans)
            .filter(|(t, p)| {
                matches!(p, TensorPlan::Keep { .. }) && t.shape.len() == 2 && t.dtype.is_float()
            })
            .map(|(t, _)| module_of(t))
            .collect();
        return Some(bitsandbytes_nf4_config(*double_quant, &skipped));
    }
    if groups.is_empty() {
        return None;
    }
    let groups: Vec<ConfigGroup> = groups
        .into_iter()
        .map(|(_, description, targets)| match description {
            Description::CompressedTensors { format, weights } => ConfigGroup {
                format,
                weights,
                targets,
            },
            Description::None | Description::Bitsandbytes { .. } => {
                unreachable!("JobSpec::parse keeps NF4 alone; plain schemes are filtered above")
            }
        })
        .collect();
    Some(quantization_config(&groups))
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

#[cfg(test)]
mod tests;
