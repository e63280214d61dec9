//! One owner per scheme: the tensors a quantized weight becomes in a file, their bytes, and the
//! way back.
//!
//! Every scheme family has one module here implementing [`SchemeLayout`]:
//! - [`SchemeLayout::declare`]: the output tensors (name, dtype or ggml type, shape, byte count)
//!   of one input tensor in an [`OutputFormat`], declared before any data because safetensors and
//!   GGUF both write their header first;
//! - [`SchemeLayout::encode`]: quantizes and emits exactly those tensors, in that order, through
//!   an [`Emitter`] that checks every piece against the declaration (so the order holds by
//!   construction: a mismatch is a [`LayoutMismatch`], never a corrupt file);
//! - [`SchemeLayout::decode`]: reads them back from a stored file ([`TensorSource`]) into the
//!   form serving holds ([`Held`]: codes a kernel runs, or f32), and [`Held::into_f32`] gives the
//!   scheme's own dequantization;
//! - [`SchemeLayout::quantd_metadata`] and [`SchemeLayout::description`]: what the file's
//!   `__metadata__`, `config.json` and GGUF header say about it.
//!
//! Which layout stored a tensor is recognised from the file alone ([`recognize`]): each module
//! contributes a recogniser to `RECOGNIZERS`, listed next to [`Scheme::layout`].
//!
//! Adding a scheme: a variant of [`Scheme`], one module here (declare, encode, decode,
//! recognise), its arm in [`Scheme::layout`] and its line in `RECOGNIZERS`, and its spec parsing
//! in `jobs/spec.rs`. A new ggml block type needs only its [`GgmlType`] variant: the `ggml`
//! layout takes block size, bytes and codecs from the type.

mod binary;
mod emit;
mod float;
mod fp8;
mod ggml;
mod int4;
mod int8;
mod kmeans;
mod nf4;
mod source;
mod ternary;

use serde_json::Value;

use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::fp8::Fp8Format;
use crate::quant::ggml::{GgmlKernels, GgmlType};
use crate::quant::int4::Int4Options;
use crate::quant::int8::{Int8Options, QuantError};
use crate::quant::kernels::{ErrorStats, Kernels};
use crate::quant::kmeans::KmeansOptions;
use crate::quant::metrics::compare;
use crate::quant::nf4::Nf4Options;

pub use emit::{Emitter, LayoutMismatch, TensorSink};
use source::Recognizer;
pub use source::{
    recognize, GgufSource, Held, Recognized, SafetensorsSource, StoredTensor, TensorSource,
};

/// The suffixes of side tensors, each named here once: declaration, encoding and decoding all
/// build the name with [`side_name`] (compressed-tensors' `_scale`, `_zero_point`, `_packed`,
/// `_shape`; quantd's `_codebook`; bitsandbytes' `.absmax`, `.quant_map`, `.nested_*`).
pub const SCALE: &str = "_scale";
pub const ZERO_POINT: &str = "_zero_point";
pub const PACKED: &str = "_packed";
pub const SHAPE: &str = "_shape";
pub const CODEBOOK: &str = "_codebook";
pub const ABSMAX: &str = ".absmax";
pub const QUANT_MAP: &str = ".quant_map";
pub const NESTED_ABSMAX: &str = ".nested_absmax";
pub const NESTED_QUANT_MAP: &str = ".nested_quant_map";

/// The name of `tensor`'s side tensor with `suffix` (one of the constants above).
pub fn side_name(tensor: &str, suffix: &str) -> String {
    format!("{tensor}{suffix}")
}

/// One scheme with its validated options (parsed from a request in `jobs::spec`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// sign × per-row mean |w| (XNOR-Net), 8 signs per byte (quantd layout).
    Binary,
    /// {-1, 0, +1} × per-row scale with threshold 0.7·mean|w| (TWN), 4 codes per byte.
    Ternary,
    /// 2–8-bit indices into a per-tensor k-means codebook (Deep Compression).
    Kmeans(KmeansOptions),
    Int8(Int8Options),
    /// Group-wise int4 (compressed-tensors `pack-quantized`).
    Int4(Int4Options),
    /// bitsandbytes NormalFloat-4, absmax blocks of 64.
    Nf4(Nf4Options),
    /// FP8 with a per-channel or per-tensor scale (compressed-tensors `float-quantized`).
    Fp8 {
        format: Fp8Format,
        per_channel: bool,
    },
    /// One of ggml's block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
    Ggml(GgmlType),
    /// Half precision: a plain conversion (also the documented fallback for tensors whose rows
    /// do not fit a block type in GGUF output).
    F16,
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Binary => "binary",
            Scheme::Ternary => "ternary",
            Scheme::Kmeans(_) => "kmeans",
            Scheme::Int8(_) => "int8",
            Scheme::Int4(_) => "int4",
            Scheme::Nf4(_) => "nf4",
            Scheme::Fp8 { .. } => "fp8",
            Scheme::Ggml(ty) => ty.name(),
            Scheme::F16 => "f16",
        }
    }

    /// The owner of this scheme's layout.
    pub fn layout(&self) -> Box<dyn SchemeLayout> {
        match *self {
            Scheme::Binary => Box::new(binary::BinaryLayout),
            Scheme::Ternary => Box::new(ternary::TernaryLayout),
            Scheme::Kmeans(options) => Box::new(kmeans::KmeansLayout(options)),
            Scheme::Int8(options) => Box::new(int8::Int8Layout(options)),
            Scheme::Int4(options) => Box::new(int4::Int4Layout(options)),
            Scheme::Nf4(options) => Box::new(nf4::Nf4Layout(options)),
            Scheme::Fp8 {
                format,
                per_channel,
            } => Box::new(fp8::Fp8Layout {
                format,
                per_channel,
            }),
            Scheme::Ggml(ty) => Box::new(ggml::GgmlLayout(ty)),
            Scheme::F16 => Box::new(float::FloatLayout),
        }
    }
}

/// Every layout's recogniser, most specific first: the quantd layouts named by `__metadata__`,
/// then side-tensor layouts, then plain floats.
const RECOGNIZERS: &[Recognizer] = &[
    binary::recognize,
    ternary::recognize,
    kmeans::recognize,
    int8::recognize,
    fp8::recognize,
    nf4::recognize,
    int4::recognize,
    ggml::recognize,
    float::recognize,
];

/// The file an artifact is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// safetensors in the compressed-tensors layout plus `config.json` `quantization_config`.
    Safetensors,
    /// GGUF v3 for llama.cpp and gguf-py.
    Gguf,
    /// safetensors with every quantized tensor dequantized back to f32 (or f16): the error is
    /// baked in and any framework loads it, for evaluation.
    Dequantized { f16: bool },
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::Gguf => "gguf",
            OutputFormat::Dequantized { f16: false } => "dequantized",
            OutputFormat::Dequantized { f16: true } => "dequantized-f16",
        }
    }
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

impl OutputTensor {
    fn new(name: String, stored_as: StoredAs, shape: Vec<usize>, n_bytes: usize) -> Self {
        OutputTensor {
            name,
            stored_as,
            shape,
            n_bytes: n_bytes as u64,
        }
    }

    /// A safetensors side tensor `<tensor><suffix>` (`_scale`, `.absmax`, ...).
    fn side(tensor: &str, suffix: &str, dtype: Dtype, shape: Vec<usize>) -> Self {
        let n_bytes = shape.iter().product::<usize>() * dtype.size_bytes();
        Self::new(
            side_name(tensor, suffix),
            StoredAs::Safetensors(dtype),
            shape,
            n_bytes,
        )
    }

    /// `tensor` under its own name and shape with elements of `element_bytes`.
    fn same(tensor: &TensorInfo, stored_as: StoredAs, element_bytes: usize) -> Self {
        let n_elements: usize = tensor.shape.iter().product();
        Self::new(
            tensor.name.clone(),
            stored_as,
            tensor.shape.clone(),
            n_elements * element_bytes,
        )
    }
}

/// The one tensor of the dequantized formats (f32 or f16, the input's name and shape), or
/// `None` for the other formats.
pub fn dequantized_output(tensor: &TensorInfo, format: OutputFormat) -> Option<Vec<OutputTensor>> {
    let OutputFormat::Dequantized { f16 } = format else {
        return None;
    };
    Some(vec![if f16 {
        OutputTensor::same(tensor, StoredAs::Safetensors(Dtype::F16), 2)
    } else {
        OutputTensor::same(tensor, StoredAs::Safetensors(Dtype::F32), 4)
    }])
}

/// Why a tensor could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cancelled")]
    Cancelled,
    #[error("the tensor contains NaN or infinite values")]
    NonFinite,
    /// The tensor cannot take this scheme (the message says why).
    #[error("{0}")]
    Unquantizable(String),
    /// The encoder emitted something other than what was declared: a bug in this module.
    #[error(transparent)]
    Layout(#[from] LayoutMismatch),
    /// The file being written failed.
    #[error("writing the output: {0}")]
    Sink(#[source] std::io::Error),
}

impl From<QuantError> for EncodeError {
    fn from(error: QuantError) -> Self {
        match error {
            QuantError::Cancelled => EncodeError::Cancelled,
            QuantError::NonFinite { .. } => EncodeError::NonFinite,
            other => EncodeError::Unquantizable(other.to_string()),
        }
    }
}

/// Why a stored tensor could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The stored tensors do not form the layout (missing side tensor, wrong length, ...).
    #[error("{0}")]
    Invalid(String),
}

/// What the files around the weights say about a scheme: a `config.json` group, bitsandbytes'
/// config, or nothing (plain floats, GGUF types, quantd layouts described by `__metadata__`).
#[derive(Debug, Clone, PartialEq)]
pub enum Description {
    None,
    /// A compressed-tensors config group: `format` and weight `QuantizationArgs`.
    CompressedTensors {
        format: &'static str,
        weights: Value,
    },
    /// bitsandbytes' `quantization_config` (NF4; a checkpoint holds no other scheme).
    Bitsandbytes {
        double_quant: bool,
    },
}

/// Reusable scratch space and the kernels an encode runs with (fresh pages cost a fault each
/// on first write, which would otherwise rival the quantization itself).
pub struct EncodeContext<'a> {
    pub kernels: &'static Kernels,
    pub ggml_kernels: &'static GgmlKernels,
    pub should_continue: &'a dyn Fn() -> bool,
    q_buffer: Vec<i8>,
    f32_buffer: Vec<f32>,
    byte_buffer: Vec<u8>,
}

impl<'a> EncodeContext<'a> {
    pub fn new(
        kernels: &'static Kernels,
        ggml_kernels: &'static GgmlKernels,
        should_continue: &'a dyn Fn() -> bool,
    ) -> Self {
        EncodeContext {
            kernels,
            ggml_kernels,
            should_continue,
            q_buffer: Vec::new(),
            f32_buffer: Vec::new(),
            byte_buffer: Vec::new(),
        }
    }

    fn check_continue(&self) -> Result<(), EncodeError> {
        if (self.should_continue)() {
            Ok(())
        } else {
            Err(EncodeError::Cancelled)
        }
    }

    /// Refuses NaN and Inf (for quantizers that take whatever they are given).
    fn check_finite(&self, values: &[f32]) -> Result<(), EncodeError> {
        if (self.kernels.absmax)(values).is_finite() {
            Ok(())
        } else {
            Err(EncodeError::NonFinite)
        }
    }

    /// Emits `dequantized` (what a scheme stores, decoded) as the dequantized format's f32 or
    /// f16 tensor; the statistics are `stats`, or recomputed when f16 rounding changes values.
    fn emit_dequantized(
        &mut self,
        tensor: &TensorInfo,
        values: &[f32],
        dequantized: &mut [f32],
        f16: bool,
        stats: ErrorStats,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        emit_dequantized(
            &mut self.byte_buffer,
            tensor,
            values,
            dequantized,
            f16,
            stats,
            out,
        )
    }
}

/// [`EncodeContext::emit_dequantized`] over an explicit byte buffer (for callers that borrow
/// the context's other buffers at the same time).
fn emit_dequantized(
    bytes: &mut Vec<u8>,
    tensor: &TensorInfo,
    values: &[f32],
    dequantized: &mut [f32],
    f16: bool,
    stats: ErrorStats,
    out: &mut Emitter<'_>,
) -> Result<ErrorStats, EncodeError> {
    bytes.clear();
    if f16 {
        push_f16_le(dequantized, bytes);
        out.emit(&tensor.name, bytes)?;
        return Ok(compare(values, dequantized));
    }
    push_f32_le(dequantized, bytes);
    out.emit(&tensor.name, bytes)?;
    Ok(stats)
}

/// One scheme family's layout: declaration, encoding, decoding and description.
pub trait SchemeLayout {
    /// The output tensors `tensor` becomes in `format`, in the order [`Self::encode`] emits
    /// them. `format` is one `jobs::spec` allows for this scheme.
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor>;

    /// Quantizes `values` (the tensor as f32) and emits the declared tensors through `out`.
    /// Returns the error statistics of what the file stores (dequantized) against `values`.
    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError>;

    /// Reads `name` (logical shape `shape`, torch order) back from `source` in the form serving
    /// holds it.
    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError>;

    /// `__metadata__` entries the layout needs in `format` (docs/quantd-layouts.md).
    fn quantd_metadata(
        &self,
        _tensor: &TensorInfo,
        _format: OutputFormat,
    ) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What `config.json` says about tensors stored this way in safetensors.
    fn description(&self) -> Description {
        Description::None
    }

    /// GGUF `general.file_type` (llama.cpp's `llama_ftype`) of a file whose main scheme this
    /// is; `None` for schemes GGUF cannot hold.
    fn gguf_file_type(&self) -> Option<u32> {
        None
    }

    /// The layout's name when serving does not run it (it belongs to another runtime).
    fn not_served(&self) -> Option<&'static str> {
        None
    }
}

/// Rows and row length of a tensor quantized per row: the first dimension and the product of
/// the others (GGUF rows are the last dimension; for the 2-D weights a job quantizes these agree,
/// and for N-D tensors the row length is still the product of all but the first dimension, a
/// multiple of the last).
pub fn rows_and_cols(shape: &[usize]) -> (usize, usize) {
    (
        shape.first().copied().unwrap_or(1),
        shape.iter().skip(1).product(),
    )
}

fn grow<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
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
