//! Per-tensor decisions and encodings: which tensors a job quantizes (and why the others are
//! kept), which output tensors each one becomes in the chosen format, and the bytes of those
//! output tensors.
//!
//! Output tensors are declared before any data is produced ([`output_tensors`]), because both
//! safetensors and GGUF write their header first; [`Encoder::encode`] then emits the bytes in
//! exactly the declared order.

use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::int8::{quantize_int8_into, Granularity, QuantError};
use crate::quant::kernels::{ErrorStats, Kernels};
use crate::quant::metrics::compare;

use super::pipeline::PipelineError;
use super::spec::{JobSpec, OutputFormat, Scheme, TensorChoice};

/// What happens to one input tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorPlan {
    /// Stored exactly as uploaded.
    Keep { reason: String },
    /// Quantized with this scheme.
    Quantize { scheme: Scheme },
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Whether a name looks like an embedding table (a lookup, not a Linear layer).
fn is_embedding(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("embed") || lower.ends_with("wte.weight") || lower.ends_with("wpe.weight")
}

/// Decides what the job does with `tensor`. Rules, in order: non-float, skip patterns, 1-D and
/// empty tensors are kept; an override that matches quantizes (even an embedding table); the
/// default scheme quantizes everything else except embedding tables, which compressed-tensors
/// loaders expect in float.
pub fn plan_tensor(tensor: &TensorInfo, spec: &JobSpec) -> TensorPlan {
    let keep = |reason: &str| TensorPlan::Keep {
        reason: reason.to_owned(),
    };
    if !tensor.dtype.is_float() {
        return keep("not a floating-point tensor");
    }
    let scheme = match spec.choice_for(&tensor.name) {
        TensorChoice::Skip => return keep("matches a skip pattern"),
        TensorChoice::Quantize(scheme) => scheme,
    };
    if tensor.shape.len() < 2 {
        return keep("1-D tensor (bias or norm) kept in source precision");
    }
    if tensor.shape.contains(&0) {
        return keep("empty tensor");
    }
    let overridden = spec
        .overrides
        .iter()
        .any(|(pattern, _)| pattern.matches(&tensor.name));
    if !overridden && is_embedding(&tensor.name) {
        return keep("embedding table kept in source precision (quantize it with an override)");
    }
    TensorPlan::Quantize { scheme: *scheme }
}

/// Rows and row length of a tensor quantized per channel: the first dimension, and the product
/// of the others.
fn rows_and_cols(shape: &[usize]) -> (usize, usize) {
    (shape[0], shape[1..].iter().product())
}

/// The output tensors `tensor` becomes under `plan` in `format`, in the order they are emitted.
pub fn output_tensors(
    tensor: &TensorInfo,
    plan: &TensorPlan,
    format: OutputFormat,
) -> Vec<OutputTensor> {
    let same = |dtype: Dtype| OutputTensor {
        name: tensor.name.clone(),
        dtype,
        shape: tensor.shape.clone(),
    };
    let scheme = match plan {
        TensorPlan::Keep { .. } => return vec![same(tensor.dtype)],
        TensorPlan::Quantize { scheme } => scheme,
    };
    match format {
        OutputFormat::Dequantized { f16 } => vec![same(if f16 { Dtype::F16 } else { Dtype::F32 })],
        OutputFormat::Safetensors => match scheme {
            Scheme::Int8(options) => {
                let scale_shape = match options.granularity {
                    Granularity::Channel => vec![tensor.shape[0], 1],
                    Granularity::Tensor => vec![1],
                };
                let mut outputs = vec![
                    same(Dtype::I8),
                    OutputTensor {
                        name: format!("{}_scale", tensor.name),
                        dtype: Dtype::F32,
                        shape: scale_shape.clone(),
                    },
                ];
                if !options.symmetric {
                    outputs.push(OutputTensor {
                        name: format!("{}_zero_point", tensor.name),
                        dtype: Dtype::I8,
                        shape: scale_shape,
                    });
                }
                outputs
            }
        },
    }
}

/// Where encoded bytes go: called once per declared output tensor, in order.
pub type Emit<'a> = dyn FnMut(&str, &[u8]) -> Result<(), PipelineError> + 'a;

/// Encodes tensors, reusing its scratch buffers across the tensors of a job (fresh pages cost a
/// fault each on first write, which would otherwise rival the quantization itself).
pub struct Encoder<'a> {
    kernels: &'static Kernels,
    should_continue: &'a dyn Fn() -> bool,
    q_buffer: Vec<i8>,
    f32_buffer: Vec<f32>,
    byte_buffer: Vec<u8>,
}

fn grow<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

fn quant_error(tensor: &TensorInfo, error: QuantError) -> PipelineError {
    match error {
        QuantError::Cancelled => PipelineError::Cancelled,
        QuantError::NonFinite { .. } => PipelineError::InvalidInput {
            slug: "non-finite-weights",
            detail: format!("tensor '{}' contains NaN or infinite values", tensor.name),
        },
        other => PipelineError::InvalidInput {
            slug: "unquantizable-tensor",
            detail: format!("tensor '{}': {other}", tensor.name),
        },
    }
}

/// Little-endian bytes of f32 values into `out` (cleared first).
fn f32_le_bytes(values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn f16_le_bytes(values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(values.len() * 2);
    for value in values {
        out.extend_from_slice(&half::f16::from_f32(*value).to_le_bytes());
    }
}

fn i8_as_bytes(values: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len()) }
}

impl<'a> Encoder<'a> {
    pub fn new(kernels: &'static Kernels, should_continue: &'a dyn Fn() -> bool) -> Self {
        Encoder {
            kernels,
            should_continue,
            q_buffer: Vec::new(),
            f32_buffer: Vec::new(),
            byte_buffer: Vec::new(),
        }
    }

    /// Quantizes `values` (the tensor as f32) with `scheme` and emits its output tensors in the
    /// order [`output_tensors`] declares. Returns the error statistics of the dequantized values.
    pub fn encode(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        scheme: &Scheme,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        match scheme {
            Scheme::Int8(options) => {
                let q = grow(&mut self.q_buffer, values.len());
                let quantized = quantize_int8_into(
                    self.kernels,
                    values,
                    &tensor.shape,
                    *options,
                    q,
                    self.should_continue,
                )
                .map_err(|e| quant_error(tensor, e))?;
                let q = &self.q_buffer[..values.len()];
                match format {
                    OutputFormat::Safetensors => {
                        emit(&tensor.name, i8_as_bytes(q))?;
                        f32_le_bytes(&quantized.scales, &mut self.byte_buffer);
                        emit(&format!("{}_scale", tensor.name), &self.byte_buffer)?;
                        if !options.symmetric {
                            emit(
                                &format!("{}_zero_point", tensor.name),
                                i8_as_bytes(&quantized.zero_points),
                            )?;
                        }
                    }
                    OutputFormat::Dequantized { f16 } => {
                        let (rows, cols) = rows_and_cols(&tensor.shape);
                        let dequantized = grow(&mut self.f32_buffer, values.len());
                        for row in 0..rows {
                            let index = if quantized.scales.len() == 1 { 0 } else { row };
                            let scale = quantized.scales[index];
                            let zero = quantized
                                .zero_points
                                .get(index)
                                .map_or(0.0, |&z| f32::from(z));
                            for col in 0..cols {
                                let at = row * cols + col;
                                dequantized[at] = (f32::from(q[at]) - zero) * scale;
                            }
                        }
                        let dequantized = &mut self.f32_buffer[..values.len()];
                        if f16 {
                            // The file holds f16: the report must include that rounding too.
                            for value in dequantized.iter_mut() {
                                *value = half::f16::from_f32(*value).to_f32();
                            }
                            f16_le_bytes(dequantized, &mut self.byte_buffer);
                            emit(&tensor.name, &self.byte_buffer)?;
                            return Ok(compare(values, dequantized));
                        }
                        f32_le_bytes(dequantized, &mut self.byte_buffer);
                        emit(&tensor.name, &self.byte_buffer)?;
                    }
                }
                Ok(quantized.stats)
            }
        }
    }
}
