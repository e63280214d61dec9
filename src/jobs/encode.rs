//! Per-tensor decisions and encodings: which tensors a job quantizes (and why the others are
//! kept), which output tensors each one becomes in the chosen format, and the bytes of those
//! output tensors.
//!
//! Output tensors are declared before any data is produced ([`output_tensors`]), because both
//! safetensors and GGUF write their header first; [`Encoder::encode`] then emits the bytes in
//! exactly the declared order.

use crate::formats::gguf::{
    GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_F64, GGML_TYPE_I16, GGML_TYPE_I32,
    GGML_TYPE_I64, GGML_TYPE_I8,
};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::binary::{self, dequantize_binary, quantize_binary};
use crate::quant::fp8::{dequantize_fp8, quantize_fp8, Fp8Format};
use crate::quant::ggml::{self, GgmlKernels, GgmlType};
use crate::quant::int4::{dequantize_int4, quantize_int4, Int4Error, Int4Options};
use crate::quant::int8::{quantize_int8_into, Granularity, QuantError};
use crate::quant::kernels::{ErrorStats, Kernels};
use crate::quant::kmeans::{self, dequantize_kmeans, quantize_kmeans, KmeansError};
use crate::quant::metrics::compare;
use crate::quant::nf4::{self, dequantize_nf4, quantize_nf4, Nf4Absmax, Nf4Output};
use crate::quant::ternary::{self, dequantize_ternary, quantize_ternary};

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

/// How an output tensor is typed in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAs {
    Safetensors(Dtype),
    /// A ggml type id (GGUF).
    Ggml(u32),
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub name: String,
    pub stored_as: StoredAs,
    pub shape: Vec<usize>,
    pub n_bytes: u64,
}

/// Whether a name looks like an embedding table (a lookup, not a Linear layer).
fn is_embedding(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("embed") || lower.ends_with("wte.weight") || lower.ends_with("wpe.weight")
}

/// Rows and row length of a tensor quantized per row: the first dimension and the product of
/// the others (GGUF rows are the last dimension; for the 2-D weights a job quantizes these agree,
/// and for N-D tensors the row length is still the product of all but the first dimension, a
/// multiple of the last).
fn rows_and_cols(shape: &[usize]) -> (usize, usize) {
    (shape[0], shape[1..].iter().product())
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
    let n_elements: usize = tensor.shape.iter().product();
    let named =
        |name: String, stored_as: StoredAs, shape: Vec<usize>, n_bytes: usize| OutputTensor {
            name,
            stored_as,
            shape,
            n_bytes: n_bytes as u64,
        };
    let same = |stored_as: StoredAs, element_bytes: usize| {
        named(
            tensor.name.clone(),
            stored_as,
            tensor.shape.clone(),
            n_elements * element_bytes,
        )
    };
    let scheme = match plan {
        TensorPlan::Keep { .. } => {
            let stored_as = match format {
                OutputFormat::Gguf => {
                    StoredAs::Ggml(ggml_type_of(tensor.dtype).ok_or_else(|| {
                        PipelineError::InvalidInput {
                            slug: "unsupported-dtype",
                            detail: format!(
                                "tensor '{}' has dtype {}, which GGUF cannot store",
                                tensor.name,
                                tensor.dtype.as_str()
                            ),
                        }
                    })?)
                }
                _ => StoredAs::Safetensors(tensor.dtype),
            };
            return Ok(vec![same(stored_as, tensor.dtype.size_bytes())]);
        }
        TensorPlan::Quantize { scheme, .. } => scheme,
    };
    Ok(match (format, scheme) {
        (OutputFormat::Dequantized { f16 }, _) => {
            vec![if f16 {
                same(StoredAs::Safetensors(Dtype::F16), 2)
            } else {
                same(StoredAs::Safetensors(Dtype::F32), 4)
            }]
        }
        (_, Scheme::F16) => vec![same(
            match format {
                OutputFormat::Gguf => StoredAs::Ggml(GGML_TYPE_F16),
                _ => StoredAs::Safetensors(Dtype::F16),
            },
            2,
        )],
        (OutputFormat::Gguf, Scheme::Ggml(ty)) => {
            let (rows, cols) = rows_and_cols(&tensor.shape);
            let row_bytes = ty
                .row_bytes(cols)
                .expect("plan_tensor checked the block fit");
            vec![named(
                tensor.name.clone(),
                StoredAs::Ggml(ty.id()),
                tensor.shape.clone(),
                rows * row_bytes,
            )]
        }
        (OutputFormat::Safetensors, Scheme::Int8(options)) => {
            let scale_shape = match options.granularity {
                Granularity::Channel => vec![tensor.shape[0], 1],
                Granularity::Tensor => vec![1],
            };
            let n_scales: usize = scale_shape.iter().product();
            let mut outputs = vec![
                same(StoredAs::Safetensors(Dtype::I8), 1),
                named(
                    format!("{}_scale", tensor.name),
                    StoredAs::Safetensors(Dtype::F32),
                    scale_shape.clone(),
                    n_scales * 4,
                ),
            ];
            if !options.symmetric {
                outputs.push(named(
                    format!("{}_zero_point", tensor.name),
                    StoredAs::Safetensors(Dtype::I8),
                    scale_shape,
                    n_scales,
                ));
            }
            outputs
        }
        (OutputFormat::Safetensors, Scheme::Int4(options)) => {
            let (rows, cols) = rows_and_cols(&tensor.shape);
            let groups = cols / options.group_size;
            let st = StoredAs::Safetensors;
            let mut outputs = vec![
                named(
                    format!("{}_packed", tensor.name),
                    st(Dtype::I32),
                    vec![rows, cols / 8],
                    rows * cols / 8 * 4,
                ),
                named(
                    format!("{}_scale", tensor.name),
                    st(Dtype::F32),
                    vec![rows, groups],
                    rows * groups * 4,
                ),
            ];
            if !options.symmetric {
                let packed_rows = rows.div_ceil(8);
                outputs.push(named(
                    format!("{}_zero_point", tensor.name),
                    st(Dtype::I32),
                    vec![packed_rows, groups],
                    packed_rows * groups * 4,
                ));
            }
            outputs.push(named(
                format!("{}_shape", tensor.name),
                st(Dtype::I64),
                vec![2],
                16,
            ));
            outputs
        }
        (
            OutputFormat::Safetensors,
            Scheme::Fp8 {
                format: fp8_format,
                per_channel,
            },
        ) => {
            let scale_shape = if *per_channel {
                vec![tensor.shape[0], 1]
            } else {
                vec![1]
            };
            let n_scales: usize = scale_shape.iter().product();
            let dtype = match fp8_format {
                Fp8Format::E4M3 => Dtype::F8_E4M3,
                Fp8Format::E5M2 => Dtype::F8_E5M2,
            };
            vec![
                same(StoredAs::Safetensors(dtype), 1),
                named(
                    format!("{}_scale", tensor.name),
                    StoredAs::Safetensors(Dtype::F32),
                    scale_shape,
                    n_scales * 4,
                ),
            ]
        }
        (OutputFormat::Safetensors, Scheme::Nf4(options)) => {
            let st = StoredAs::Safetensors;
            let n_blocks = n_elements.div_ceil(nf4::BLOCK_SIZE);
            let mut outputs = vec![named(
                tensor.name.clone(),
                st(Dtype::U8),
                vec![n_elements.div_ceil(2), 1],
                n_elements.div_ceil(2),
            )];
            if options.double_quant {
                let n_nested = n_blocks.div_ceil(nf4::NESTED_BLOCK_SIZE);
                outputs.push(named(
                    format!("{}.absmax", tensor.name),
                    st(Dtype::U8),
                    vec![n_blocks],
                    n_blocks,
                ));
                outputs.push(named(
                    format!("{}.quant_map", tensor.name),
                    st(Dtype::F32),
                    vec![16],
                    64,
                ));
                outputs.push(named(
                    format!("{}.nested_absmax", tensor.name),
                    st(Dtype::F32),
                    vec![n_nested],
                    n_nested * 4,
                ));
                outputs.push(named(
                    format!("{}.nested_quant_map", tensor.name),
                    st(Dtype::F32),
                    vec![256],
                    1024,
                ));
            } else {
                outputs.push(named(
                    format!("{}.absmax", tensor.name),
                    st(Dtype::F32),
                    vec![n_blocks],
                    n_blocks * 4,
                ));
                outputs.push(named(
                    format!("{}.quant_map", tensor.name),
                    st(Dtype::F32),
                    vec![16],
                    64,
                ));
            }
            let json_len = nf4_state_len(tensor, options.double_quant);
            outputs.push(named(
                format!("{}.quant_state.bitsandbytes__nf4", tensor.name),
                st(Dtype::U8),
                vec![json_len],
                json_len,
            ));
            outputs
        }
        (OutputFormat::Safetensors, Scheme::Binary | Scheme::Ternary) => {
            let (rows, cols) = rows_and_cols(&tensor.shape);
            let row_bytes = if matches!(scheme, Scheme::Binary) {
                binary::packed_row_bytes(cols)
            } else {
                ternary::packed_row_bytes(cols)
            };
            vec![
                named(
                    tensor.name.clone(),
                    StoredAs::Safetensors(Dtype::U8),
                    vec![rows, row_bytes],
                    rows * row_bytes,
                ),
                named(
                    format!("{}_scale", tensor.name),
                    StoredAs::Safetensors(Dtype::F32),
                    vec![rows],
                    rows * 4,
                ),
            ]
        }
        (OutputFormat::Safetensors, Scheme::Kmeans(options)) => {
            let packed = kmeans::packed_bytes(n_elements, options.bits);
            let centroids = 1usize << options.bits;
            vec![
                named(
                    tensor.name.clone(),
                    StoredAs::Safetensors(Dtype::U8),
                    vec![packed],
                    packed,
                ),
                named(
                    format!("{}_codebook", tensor.name),
                    StoredAs::Safetensors(Dtype::F32),
                    vec![centroids],
                    centroids * 4,
                ),
            ]
        }
        (
            OutputFormat::Gguf,
            Scheme::Int8(_)
            | Scheme::Int4(_)
            | Scheme::Nf4(_)
            | Scheme::Fp8 { .. }
            | Scheme::Binary
            | Scheme::Ternary
            | Scheme::Kmeans(_),
        )
        | (OutputFormat::Safetensors, Scheme::Ggml(_)) => {
            unreachable!("JobSpec::parse refuses scheme/format pairs that cannot be expressed")
        }
    })
}

/// `__metadata__` entries the quantd layouts need (docs/quantd-layouts.md): scheme, original
/// shape and, for k-means, the index width of every tensor stored that way.
pub fn layout_metadata(
    tensor: &TensorInfo,
    plan: &TensorPlan,
    format: OutputFormat,
) -> Vec<(String, String)> {
    let TensorPlan::Quantize { scheme, .. } = plan else {
        return Vec::new();
    };
    if format != OutputFormat::Safetensors {
        return Vec::new();
    }
    let shape = serde_json::to_string(&tensor.shape).expect("shapes serialize");
    let key = |suffix: &str| format!("quantd.{}.{suffix}", tensor.name);
    match scheme {
        Scheme::Binary | Scheme::Ternary => vec![
            (key("scheme"), scheme.name().to_owned()),
            (key("shape"), shape),
        ],
        Scheme::Kmeans(options) => vec![
            (key("scheme"), "kmeans".to_owned()),
            (key("shape"), shape),
            (key("bits"), options.bits.to_string()),
        ],
        _ => Vec::new(),
    }
}

/// The dtype name bitsandbytes records for a weight's original dtype.
fn torch_dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::F64 => "float64",
        _ => "float32",
    }
}

/// Room reserved for `nested_offset` in the quant-state JSON: the longest Python float repr of an
/// f32 (e.g. `-1.1754943508222875e-38`). The JSON is padded with spaces to the declared length,
/// which `json.loads` ignores.
const NESTED_OFFSET_RESERVE: usize = 24;

/// Declared byte length of a tensor's `quant_state.bitsandbytes__nf4` JSON.
fn nf4_state_len(tensor: &TensorInfo, double_quant: bool) -> usize {
    let placeholder = Nf4Output {
        packed: Vec::new(),
        n_elements: 0,
        absmax: if double_quant {
            Nf4Absmax::DoubleQuantized(nf4::NestedAbsmax {
                quantized: Vec::new(),
                nested_absmax: Vec::new(),
                nested_quant_map: Box::new([0.0; 256]),
                offset: 0.0,
            })
        } else {
            Nf4Absmax::Plain(Vec::new())
        },
        quant_map: nf4::NF4_CODE,
        stats: ErrorStats::default(),
    };
    let json = nf4::quant_state_json(&placeholder, &tensor.shape, torch_dtype_name(tensor.dtype));
    // The placeholder's offset prints as "0.0".
    if double_quant {
        json.len() - 3 + NESTED_OFFSET_RESERVE
    } else {
        json.len()
    }
}

/// Where encoded bytes go: called with each declared output tensor's bytes, in declared order,
/// possibly in several consecutive pieces per tensor.
pub type Emit<'a> = dyn FnMut(&str, &[u8]) -> Result<(), PipelineError> + 'a;

/// Encodes tensors, reusing its scratch buffers across the tensors of a job (fresh pages cost a
/// fault each on first write, which would otherwise rival the quantization itself).
pub struct Encoder<'a> {
    kernels: &'static Kernels,
    ggml_kernels: &'static GgmlKernels,
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
        QuantError::NonFinite { .. } => non_finite(tensor),
        other => PipelineError::InvalidInput {
            slug: "unquantizable-tensor",
            detail: format!("tensor '{}': {other}", tensor.name),
        },
    }
}

fn non_finite(tensor: &TensorInfo) -> PipelineError {
    PipelineError::InvalidInput {
        slug: "non-finite-weights",
        detail: format!("tensor '{}' contains NaN or infinite values", tensor.name),
    }
}

/// Little-endian bytes of f32 values appended to `out`.
fn push_f32_le(values: &[f32], out: &mut Vec<u8>) {
    out.reserve(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// f16 bytes of `values` appended to `out`, and `values` replaced by what those f16 hold (so a
/// report compares against what the file stores).
fn push_f16_le(values: &mut [f32], out: &mut Vec<u8>) {
    out.reserve(values.len() * 2);
    for value in values.iter_mut() {
        let half = half::f16::from_f32(*value);
        out.extend_from_slice(&half.to_le_bytes());
        *value = half.to_f32();
    }
}

fn i8_as_bytes(values: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len()) }
}

/// Rows processed per piece by the block and conversion paths: about 1 Mi elements, so scratch
/// buffers stay small and cancellation is checked often.
fn rows_per_piece(cols: usize) -> usize {
    ((1 << 20) / cols.max(1)).max(1)
}

impl<'a> Encoder<'a> {
    pub fn new(
        kernels: &'static Kernels,
        ggml_kernels: &'static GgmlKernels,
        should_continue: &'a dyn Fn() -> bool,
    ) -> Self {
        Encoder {
            kernels,
            ggml_kernels,
            should_continue,
            q_buffer: Vec::new(),
            f32_buffer: Vec::new(),
            byte_buffer: Vec::new(),
        }
    }

    /// Quantizes `values` (the tensor as f32) with `scheme` and emits its output tensors in the
    /// order [`output_tensors`] declares. Returns the error statistics of what the file stores
    /// (dequantized) against `values`.
    pub fn encode(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        scheme: &Scheme,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        match scheme {
            Scheme::Int8(options) => self.encode_int8(tensor, values, *options, format, emit),
            Scheme::Ggml(ty) => self.encode_ggml(tensor, values, *ty, format, emit),
            Scheme::F16 => self.encode_f16(tensor, values, format, emit),
            Scheme::Int4(options) => self.encode_int4(tensor, values, *options, format, emit),
            Scheme::Binary | Scheme::Ternary => {
                let (rows, cols) = rows_and_cols(&tensor.shape);
                let (packed, scales, stats, dequantized) = if matches!(scheme, Scheme::Binary) {
                    let t = quantize_binary(values, rows, cols, self.should_continue)
                        .map_err(|e| quant_error(tensor, e))?;
                    let dequantized = matches!(format, OutputFormat::Dequantized { .. })
                        .then(|| dequantize_binary(&t.packed, &t.scales, rows, cols));
                    (t.packed, t.scales, t.stats, dequantized)
                } else {
                    let t = quantize_ternary(values, rows, cols, self.should_continue)
                        .map_err(|e| quant_error(tensor, e))?;
                    let dequantized = matches!(format, OutputFormat::Dequantized { .. })
                        .then(|| dequantize_ternary(&t.packed, &t.scales, rows, cols));
                    (t.packed, t.scales, t.stats, dequantized)
                };
                match (format, dequantized) {
                    (OutputFormat::Dequantized { f16 }, Some(dequantized)) => {
                        self.emit_dequantized(tensor, values, dequantized, f16, stats, emit)
                    }
                    _ => {
                        emit(&tensor.name, &packed)?;
                        self.byte_buffer.clear();
                        push_f32_le(&scales, &mut self.byte_buffer);
                        emit(&format!("{}_scale", tensor.name), &self.byte_buffer)?;
                        Ok(stats)
                    }
                }
            }
            Scheme::Kmeans(options) => {
                let t = quantize_kmeans(values, *options, self.should_continue).map_err(
                    |e| match e {
                        KmeansError::Quant(q) => quant_error(tensor, q),
                        other => PipelineError::InvalidInput {
                            slug: "unquantizable-tensor",
                            detail: format!("tensor '{}': {other}", tensor.name),
                        },
                    },
                )?;
                if let OutputFormat::Dequantized { f16 } = format {
                    let dequantized =
                        dequantize_kmeans(&t.packed, &t.codebook, options.bits, values.len());
                    return self.emit_dequantized(tensor, values, dequantized, f16, t.stats, emit);
                }
                emit(&tensor.name, &t.packed)?;
                self.byte_buffer.clear();
                push_f32_le(&t.codebook, &mut self.byte_buffer);
                emit(&format!("{}_codebook", tensor.name), &self.byte_buffer)?;
                Ok(t.stats)
            }
            Scheme::Fp8 {
                format: fp8_format,
                per_channel,
            } => self.encode_fp8(tensor, values, *fp8_format, *per_channel, format, emit),
            Scheme::Nf4(options) => {
                let quantized = quantize_nf4(self.kernels, values, *options)
                    .map_err(|e| quant_error(tensor, e))?;
                match format {
                    OutputFormat::Dequantized { f16 } => self.emit_dequantized(
                        tensor,
                        values,
                        dequantize_nf4(&quantized),
                        f16,
                        quantized.stats,
                        emit,
                    ),
                    _ => {
                        emit(&tensor.name, &quantized.packed)?;
                        self.byte_buffer.clear();
                        match &quantized.absmax {
                            Nf4Absmax::Plain(absmax) => {
                                push_f32_le(absmax, &mut self.byte_buffer);
                                emit(&format!("{}.absmax", tensor.name), &self.byte_buffer)?;
                                self.byte_buffer.clear();
                                push_f32_le(&quantized.quant_map, &mut self.byte_buffer);
                                emit(&format!("{}.quant_map", tensor.name), &self.byte_buffer)?;
                            }
                            Nf4Absmax::DoubleQuantized(nested) => {
                                emit(&format!("{}.absmax", tensor.name), &nested.quantized)?;
                                push_f32_le(&quantized.quant_map, &mut self.byte_buffer);
                                emit(&format!("{}.quant_map", tensor.name), &self.byte_buffer)?;
                                self.byte_buffer.clear();
                                push_f32_le(&nested.nested_absmax, &mut self.byte_buffer);
                                emit(&format!("{}.nested_absmax", tensor.name), &self.byte_buffer)?;
                                self.byte_buffer.clear();
                                push_f32_le(&nested.nested_quant_map[..], &mut self.byte_buffer);
                                emit(
                                    &format!("{}.nested_quant_map", tensor.name),
                                    &self.byte_buffer,
                                )?;
                            }
                        }
                        let mut json = nf4::quant_state_json(
                            &quantized,
                            &tensor.shape,
                            torch_dtype_name(tensor.dtype),
                        )
                        .into_bytes();
                        let declared = nf4_state_len(
                            tensor,
                            matches!(quantized.absmax, Nf4Absmax::DoubleQuantized(_)),
                        );
                        json.resize(declared, b' ');
                        emit(
                            &format!("{}.quant_state.bitsandbytes__nf4", tensor.name),
                            &json,
                        )?;
                        Ok(quantized.stats)
                    }
                }
            }
        }
    }

    /// Emits `dequantized` (what a scheme stores, decoded) as the dequantized format's f32 or f16
    /// tensor; the statistics are `stats`, or recomputed when f16 rounding changes the values.
    fn emit_dequantized(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        mut dequantized: Vec<f32>,
        f16: bool,
        stats: ErrorStats,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        self.byte_buffer.clear();
        if f16 {
            push_f16_le(&mut dequantized, &mut self.byte_buffer);
            emit(&tensor.name, &self.byte_buffer)?;
            return Ok(compare(values, &dequantized));
        }
        push_f32_le(&dequantized, &mut self.byte_buffer);
        emit(&tensor.name, &self.byte_buffer)?;
        Ok(stats)
    }

    fn encode_int4(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        options: Int4Options,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let quantized =
            quantize_int4(self.kernels, values, rows, cols, options).map_err(|e| match e {
                Int4Error::Quant(q) => quant_error(tensor, q),
                other => PipelineError::InvalidInput {
                    slug: "unquantizable-tensor",
                    detail: format!("tensor '{}': {other}", tensor.name),
                },
            })?;
        if let OutputFormat::Dequantized { f16 } = format {
            let dequantized = dequantize_int4(&quantized, options);
            return self.emit_dequantized(tensor, values, dequantized, f16, quantized.stats, emit);
        }
        let mut bytes = Vec::with_capacity(quantized.weight_packed.len() * 4);
        for word in &quantized.weight_packed {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        emit(&format!("{}_packed", tensor.name), &bytes)?;
        bytes.clear();
        push_f32_le(&quantized.weight_scale, &mut bytes);
        emit(&format!("{}_scale", tensor.name), &bytes)?;
        if !options.symmetric {
            bytes.clear();
            for word in &quantized.weight_zero_point {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            emit(&format!("{}_zero_point", tensor.name), &bytes)?;
        }
        bytes.clear();
        for dim in quantized.weight_shape {
            bytes.extend_from_slice(&dim.to_le_bytes());
        }
        emit(&format!("{}_shape", tensor.name), &bytes)?;
        Ok(quantized.stats)
    }

    fn encode_fp8(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        fp8_format: Fp8Format,
        per_channel: bool,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let quantized = quantize_fp8(self.kernels, values, rows, cols, fp8_format, per_channel)
            .map_err(|e| quant_error(tensor, e))?;
        if let OutputFormat::Dequantized { f16 } = format {
            let dequantized =
                dequantize_fp8(&quantized.bytes, &quantized.scales, rows, cols, fp8_format);
            return self.emit_dequantized(tensor, values, dequantized, f16, quantized.stats, emit);
        }
        emit(&tensor.name, &quantized.bytes)?;
        self.byte_buffer.clear();
        push_f32_le(&quantized.scales, &mut self.byte_buffer);
        emit(&format!("{}_scale", tensor.name), &self.byte_buffer)?;
        Ok(quantized.stats)
    }

    fn encode_int8(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        options: crate::quant::int8::Int8Options,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        let q = grow(&mut self.q_buffer, values.len());
        let quantized = quantize_int8_into(
            self.kernels,
            values,
            &tensor.shape,
            options,
            q,
            self.should_continue,
        )
        .map_err(|e| quant_error(tensor, e))?;
        let q = &self.q_buffer[..values.len()];
        let OutputFormat::Dequantized { f16 } = format else {
            emit(&tensor.name, i8_as_bytes(q))?;
            self.byte_buffer.clear();
            push_f32_le(&quantized.scales, &mut self.byte_buffer);
            emit(&format!("{}_scale", tensor.name), &self.byte_buffer)?;
            if !options.symmetric {
                emit(
                    &format!("{}_zero_point", tensor.name),
                    i8_as_bytes(&quantized.zero_points),
                )?;
            }
            return Ok(quantized.stats);
        };
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
        self.byte_buffer.clear();
        if f16 {
            push_f16_le(dequantized, &mut self.byte_buffer);
            emit(&tensor.name, &self.byte_buffer)?;
            return Ok(compare(values, dequantized));
        }
        push_f32_le(dequantized, &mut self.byte_buffer);
        emit(&tensor.name, &self.byte_buffer)?;
        Ok(quantized.stats)
    }

    fn encode_ggml(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        ty: GgmlType,
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        // Block quantizers take whatever they are given; NaN and Inf are refused here.
        if !(self.kernels.absmax)(values).is_finite() {
            return Err(non_finite(tensor));
        }
        let (_, cols) = rows_and_cols(&tensor.shape);
        let row_bytes = ty
            .row_bytes(cols)
            .expect("plan_tensor checked the block fit");
        let mut stats = ErrorStats::default();
        for piece in values.chunks(rows_per_piece(cols) * cols) {
            if !(self.should_continue)() {
                return Err(PipelineError::Cancelled);
            }
            let rows = piece.len() / cols;
            let blocks = grow(&mut self.byte_buffer, rows * row_bytes);
            ggml::quantize(self.ggml_kernels, ty, piece, blocks);
            let dequantized = grow(&mut self.f32_buffer, piece.len());
            ggml::dequantize(ty, &self.byte_buffer[..rows * row_bytes], dequantized);
            match format {
                OutputFormat::Gguf => {
                    emit(&tensor.name, &self.byte_buffer[..rows * row_bytes])?;
                    stats.merge(&compare(piece, &self.f32_buffer[..piece.len()]));
                }
                OutputFormat::Dequantized { f16 } => {
                    let dequantized = &mut self.f32_buffer[..piece.len()];
                    let mut bytes = Vec::with_capacity(piece.len() * if f16 { 2 } else { 4 });
                    if f16 {
                        push_f16_le(dequantized, &mut bytes);
                    } else {
                        push_f32_le(dequantized, &mut bytes);
                    }
                    emit(&tensor.name, &bytes)?;
                    stats.merge(&compare(piece, dequantized));
                }
                OutputFormat::Safetensors => {
                    unreachable!("JobSpec::parse refuses ggml types in safetensors")
                }
            }
        }
        Ok(stats)
    }

    fn encode_f16(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        emit: &mut Emit<'_>,
    ) -> Result<ErrorStats, PipelineError> {
        if !(self.kernels.absmax)(values).is_finite() {
            return Err(non_finite(tensor));
        }
        let (_, cols) = rows_and_cols(&tensor.shape);
        let mut stats = ErrorStats::default();
        for piece in values.chunks(rows_per_piece(cols) * cols) {
            if !(self.should_continue)() {
                return Err(PipelineError::Cancelled);
            }
            let rounded = grow(&mut self.f32_buffer, piece.len());
            rounded.copy_from_slice(piece);
            self.byte_buffer.clear();
            push_f16_le(rounded, &mut self.byte_buffer);
            if format == (OutputFormat::Dequantized { f16: false }) {
                self.byte_buffer.clear();
                push_f32_le(&self.f32_buffer[..piece.len()], &mut self.byte_buffer);
            }
            emit(&tensor.name, &self.byte_buffer)?;
            stats.merge(&compare(piece, &self.f32_buffer[..piece.len()]));
        }
        Ok(stats)
    }
}
