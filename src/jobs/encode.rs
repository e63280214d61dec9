//! Per-tensor decisions and the dispatch to each scheme's layout: which tensors a job quantizes
//! (and why the others are kept), and, through [`crate::quant::layout`], which output tensors
//! each one becomes in the chosen format and their bytes.
//!
//! Output tensors are declared before any data is produced ([`output_tensors`]), because both
//! safetensors and GGUF write their header first; [`Encoder::encode`] then emits the bytes
//! through an [`Emitter`] over exactly that declaration, which refuses anything else.

use crate::formats::gguf::{
    GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_F64, GGML_TYPE_I16, GGML_TYPE_I32,
    GGML_TYPE_I64, GGML_TYPE_I8,
};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::ggml::GgmlKernels;
use crate::quant::int8::Granularity;
use crate::quant::kernels::{ErrorStats, Kernels};
use crate::quant::layout::{rows_and_cols, Emitter, EncodeContext, EncodeError};
pub use crate::quant::layout::{OutputTensor, StoredAs};

use super::error::PipelineError;
use super::spec::{JobSpec, OutputFormat, Scheme, TensorChoice};

/// What happens to one input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorPlan {
    /// Stored exactly as uploaded.
    Keep { reason: String },
    /// Quantized with this scheme; `note` says why it is not the scheme asked for (fallback).
    Quantize {
        scheme: Scheme,
        note: Option<String>,
    },
}

/// Whether a name looks like an embedding table (a lookup, not a Linear layer).
fn is_embedding(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("embed") || lower.ends_with("wte.weight") || lower.ends_with("wpe.weight")
}

/// Decides what the job does with `tensor`. Rules, in order: non-float, skip patterns, 1-D and
/// empty tensors are kept; an override that matches quantizes (even an embedding table); the
/// default scheme quantizes everything else except embedding tables, which compressed-tensors
/// loaders expect in float. A tensor whose last dimension is not a whole number of 32-element
/// blocks cannot take a ggml block type: it becomes F16 in GGUF output and is kept as uploaded
/// in other formats; the report names the fallback.
pub fn plan_tensor(tensor: &TensorInfo, spec: &JobSpec) -> TensorPlan {
    let keep = |reason: String| TensorPlan::Keep { reason };
    if !tensor.dtype.is_float() {
        return keep("not a floating-point tensor".into());
    }
    let scheme = match spec.choice_for(&tensor.name) {
        TensorChoice::Skip => return keep("matches a skip pattern".into()),
        TensorChoice::Quantize(scheme) => *scheme,
    };
    if tensor.shape.len() < 2 {
        return keep("1-D tensor (bias or norm) kept in source precision".into());
    }
    if tensor.shape.contains(&0) {
        return keep("empty tensor".into());
    }
    let overridden = spec
        .overrides
        .iter()
        .any(|(pattern, _)| pattern.matches(&tensor.name));
    if !overridden && is_embedding(&tensor.name) {
        return keep(
            "embedding table kept in source precision (quantize it with an override)".into(),
        );
    }
    if let Scheme::Int4(options) = scheme {
        let (_, cols) = rows_and_cols(&tensor.shape);
        if !cols.is_multiple_of(options.group_size) {
            return TensorPlan::Quantize {
                scheme: Scheme::Int8(crate::quant::int8::Int8Options {
                    granularity: Granularity::Channel,
                    symmetric: true,
                }),
                note: Some(format!(
                    "row length {cols} is not a multiple of the int4 group size {}: int8 per-channel symmetric instead",
                    options.group_size
                )),
            };
        }
    }
    if let Scheme::Ggml(ty) = scheme {
        let last = *tensor.shape.last().expect("rank >= 2");
        if !last.is_multiple_of(ty.block_size()) {
            let why = format!(
                "last dimension {last} is not a multiple of the {}-element {} block",
                ty.block_size(),
                ty.name()
            );
            return match spec.format {
                OutputFormat::Gguf => TensorPlan::Quantize {
                    scheme: Scheme::F16,
                    note: Some(format!("{why}: stored as F16")),
                },
                _ => keep(format!("{why}: kept in source precision")),
            };
        }
    }
    TensorPlan::Quantize { scheme, note: None }
}

/// The ggml type a kept tensor has in GGUF, if GGUF can hold its dtype.
pub fn ggml_type_of(dtype: Dtype) -> Option<u32> {
    Some(match dtype {
        Dtype::F32 => GGML_TYPE_F32,
        Dtype::F16 => GGML_TYPE_F16,
        Dtype::BF16 => GGML_TYPE_BF16,
        Dtype::F64 => GGML_TYPE_F64,
        Dtype::I8 => GGML_TYPE_I8,
        Dtype::I16 => GGML_TYPE_I16,
        Dtype::I32 => GGML_TYPE_I32,
        Dtype::I64 => GGML_TYPE_I64,
        _ => return None,
    })
}

/// The output tensors `tensor` becomes under `plan` in `format`, in the order they are emitted.
/// Fails for a kept tensor whose dtype the format cannot hold (GGUF has no unsigned types).
pub fn output_tensors(
    tensor: &TensorInfo,
    plan: &TensorPlan,
    format: OutputFormat,
) -> Result<Vec<OutputTensor>, PipelineError> {
    match plan {
        TensorPlan::Keep { .. } => Ok(vec![kept_tensor(tensor, format)?]),
        TensorPlan::Quantize { scheme, .. } => Ok(scheme.layout().declare(tensor, format)),
    }
}

/// A kept tensor: its own bytes under its own name, typed as the format can hold it.
fn kept_tensor(tensor: &TensorInfo, format: OutputFormat) -> Result<OutputTensor, PipelineError> {
    let stored_as = match format {
        OutputFormat::Gguf => StoredAs::Ggml(ggml_type_of(tensor.dtype).ok_or_else(|| {
            PipelineError::InvalidInput {
                slug: "unsupported-dtype",
                detail: format!(
                    "tensor '{}' has dtype {}, which GGUF cannot store",
                    tensor.name,
                    tensor.dtype.as_str()
                ),
            }
        })?),
        _ => StoredAs::Safetensors(tensor.dtype),
    };
    let n_elements: usize = tensor.shape.iter().product();
    Ok(OutputTensor {
        name: tensor.name.clone(),
        stored_as,
        shape: tensor.shape.clone(),
        n_bytes: (n_elements * tensor.dtype.size_bytes()) as u64,
    })
}

/// `__metadata__` entries the quantd layouts need (docs/quantd-layouts.md): scheme, original
/// shape and, for k-means, the index width of every tensor stored that way.
pub fn layout_metadata(
    tensor: &TensorInfo,
    plan: &TensorPlan,
    format: OutputFormat,
) -> Vec<(String, String)> {
    match plan {
        TensorPlan::Keep { .. } => Vec::new(),
        TensorPlan::Quantize { scheme, .. } => scheme.layout().quantd_metadata(tensor, format),
    }
}

/// The pipeline's error for a tensor that could not be encoded.
fn pipeline_error(tensor: &TensorInfo, error: EncodeError) -> PipelineError {
    match error {
        EncodeError::Cancelled => PipelineError::Cancelled,
        EncodeError::NonFinite => PipelineError::InvalidInput {
            slug: "non-finite-weights",
            detail: format!("tensor '{}' contains NaN or infinite values", tensor.name),
        },
        EncodeError::Unquantizable(why) => PipelineError::InvalidInput {
            slug: "unquantizable-tensor",
            detail: format!("tensor '{}': {why}", tensor.name),
        },
        EncodeError::Sink(io) => PipelineError::Io(io),
        // A layout that emits what it did not declare is a bug: an internal error, and the
        // file (never completed) is discarded.
        EncodeError::Layout(mismatch) => PipelineError::Internal(Box::new(mismatch)),
    }
}

/// Encodes tensors, reusing its scratch buffers across the tensors of a job.
pub struct Encoder<'a> {
    context: EncodeContext<'a>,
}

impl<'a> Encoder<'a> {
    pub fn new(
        kernels: &'static Kernels,
        ggml_kernels: &'static GgmlKernels,
        should_continue: &'a dyn Fn() -> bool,
    ) -> Self {
        Encoder {
            context: EncodeContext::new(kernels, ggml_kernels, should_continue),
        }
    }

    /// Quantizes `values` (the tensor as f32) with `scheme` and emits its output tensors through
    /// `out`, an emitter over the tensors [`output_tensors`] declared. Returns the error
    /// statistics of what the file stores (dequantized) against `values`.
    pub fn encode(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        scheme: &Scheme,
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        let layout = scheme.layout();
        let encoded = layout
            .encode(&mut self.context, tensor, values, format, out)
            .and_then(|stats| out.check_complete().map(|_| stats));
        encoded.map_err(|error| pipeline_error(tensor, error))
    }

    /// Emits a kept tensor's bytes as they are.
    pub fn keep(
        &mut self,
        tensor: &TensorInfo,
        bytes: &[u8],
        out: &mut Emitter<'_>,
    ) -> Result<(), PipelineError> {
        out.emit(&tensor.name, bytes)
            .and_then(|()| out.check_complete().map(drop))
            .map_err(|error| pipeline_error(tensor, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int8::Int8Options;
    use crate::quant::layout::TensorSink;

    #[derive(Default)]
    struct Recorder(Vec<(String, usize)>);

    impl TensorSink for Recorder {
        fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.0.push((name.to_owned(), bytes.len()));
            Ok(())
        }
    }

    fn weight() -> TensorInfo {
        TensorInfo {
            name: "w".into(),
            dtype: Dtype::F32,
            shape: vec![2, 32],
            data_offsets: (0, 256),
        }
    }

    fn int8(symmetric: bool) -> Scheme {
        Scheme::Int8(Int8Options {
            granularity: Granularity::Channel,
            symmetric,
        })
    }

    #[test]
    fn an_encoding_that_disagrees_with_its_declaration_fails_as_internal() {
        let tensor = weight();
        let values: Vec<f32> = (0..64).map(|i| i as f32 / 7.0 - 4.0).collect();
        // Declared symmetric (no zero point), encoded asymmetric: one tensor too many.
        let plan = TensorPlan::Quantize {
            scheme: int8(true),
            note: None,
        };
        let declared = output_tensors(&tensor, &plan, OutputFormat::Safetensors).unwrap();
        let mut sink = Recorder::default();
        let mut emitter = Emitter::new(&declared, &mut sink);
        let should_continue = || true;
        let mut encoder = Encoder::new(
            crate::quant::kernels::scalar(),
            crate::quant::ggml::scalar(),
            &should_continue,
        );
        let error = encoder
            .encode(
                &tensor,
                &values,
                &int8(false),
                OutputFormat::Safetensors,
                &mut emitter,
            )
            .unwrap_err();
        assert!(
            matches!(&error, PipelineError::Internal(e) if e.to_string().contains("layout mismatch")),
            "{error:?}"
        );
        // The declared tensors went through; the undeclared zero point never reached the file.
        let names: Vec<&str> = sink.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "w_scale"]);
    }

    #[test]
    fn an_encoding_that_stops_short_of_its_declaration_fails() {
        let tensor = weight();
        let values = vec![0.5f32; 64];
        let plan = TensorPlan::Quantize {
            scheme: int8(false),
            note: None,
        };
        let declared = output_tensors(&tensor, &plan, OutputFormat::Safetensors).unwrap();
        let mut sink = Recorder::default();
        let mut emitter = Emitter::new(&declared, &mut sink);
        let should_continue = || true;
        let mut encoder = Encoder::new(
            crate::quant::kernels::scalar(),
            crate::quant::ggml::scalar(),
            &should_continue,
        );
        // Declared asymmetric (with a zero point), encoded symmetric: the zero point is missing.
        let error = encoder
            .encode(
                &tensor,
                &values,
                &int8(true),
                OutputFormat::Safetensors,
                &mut emitter,
            )
            .unwrap_err();
        assert!(matches!(error, PipelineError::Internal(_)), "{error:?}");
    }
}
