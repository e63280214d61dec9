//! FP8 weights (OCP `float8_e4m3fn` and `float8_e5m2`) with a per-tensor or per-channel scale,
//! in compressed-tensors' `float-quantized` layout.
//!
//! # Formats (OCP 8-bit floating point spec; ml_dtypes `float8_e4m3fn` / `float8_e5m2`)
//!
//! | | E4M3 (`e4m3fn`) | E5M2 |
//! |---|---|---|
//! | layout | S.EEEE.MMM, bias 7 | S.EEEEE.MM, bias 15 |
//! | largest finite | 448 (`0x7E`) | 57344 (`0x7B`) |
//! | smallest subnormal | 2^-9 | 2^-16 |
//! | infinities | none | `0x7C` / `0xFC` |
//! | NaN | `0x7F` / `0xFF` only | exponent 11111, mantissa ≠ 0 |
//!
//! # Conversion policy ([`encode`])
//!
//! Round to nearest, ties to even (on the fp8 significand, so across the subnormal/normal and
//! binade boundaries too), subnormals produced and decoded exactly. Finite values beyond the
//! largest finite value, and ±Inf, **saturate** to ±max (`0x7E`/`0xFE`, `0x7B`/`0xFB`): this
//! is what compressed-tensors gets by clamping `x / scale` to `[-448, 448]` before its cast, and
//! for E5M2 it means we never emit Inf. NaN encodes as NaN with its sign: `0x7F`/`0xFF` (E4M3),
//! `0x7E`/`0xFE` (E5M2, the quiet NaN). -0.0 keeps its sign (`0x80`). [`quantize_fp8`] itself
//! rejects NaN and ±Inf input, so only [`encode`]'s direct callers see that part of the policy.
//!
//! # Reference (compressed-tensors, `float-quantized`)
//!
//! - scale, `quantization/utils/helpers.py::calculate_qparams` with
//!   `calculate_range(type = float, num_bits = 8) = (-448, 448)`: symmetric
//!   `scale = absmax / (896 / 2) = absmax / 448` in f32, per output channel or per tensor; a zero
//!   scale becomes `f32::EPSILON`. E5M2 uses `absmax / 57344` by the same rule (compressed-tensors
//!   itself only defines E4M3 weights).
//! - values, `quantization/lifecycle/forward.py::_quantize`: `cast(clamp(x / scale, -448, 448))`
//!   with torch's round-to-nearest-even cast; saturating RNE equals clamp-then-RNE.
//!   `_dequantize`: `x ≈ decode(q) · scale` in f32.
//!
//! # What a writer stores (Linear weight `[out, in]`)
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `weight` | `F8_E4M3` ([`Fp8Format::safetensors_dtype`]) | `[out, in]`, [`Fp8Output::bytes`] |
//! | `weight_scale` | F32 | `[out, 1]` per channel, `[1]` per tensor, [`Fp8Output::scales`] |
//!
//! with `format: "float-quantized"` and `weights = { num_bits: 8, type: "float", symmetric:
//! true, strategy: "channel" | "tensor" }`.

#[path = "fp8/codec.rs"]
mod codec;
#[cfg(test)]
#[path = "fp8/tests.rs"]
mod tests;
#[cfg(target_arch = "x86_64")]
#[path = "fp8/x86_64.rs"]
mod x86_64;

use crate::quant::int8::QuantError;
use crate::quant::kernels::{ErrorStats, Isa, Kernels};
use crate::quant::metrics::compare;

/// An OCP FP8 format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Format {
    /// `float8_e4m3fn`: more precision, range ±448, no infinities. What vLLM and
    /// compressed-tensors use for weights.
    E4M3,
    /// `float8_e5m2`: IEEE-like, range ±57344, with infinities.
    E5M2,
}

impl Fp8Format {
    /// The largest finite value.
    pub fn max_finite(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }

    /// The safetensors dtype name.
    pub fn safetensors_dtype(self) -> &'static str {
        match self {
            Fp8Format::E4M3 => "F8_E4M3",
            Fp8Format::E5M2 => "F8_E5M2",
        }
    }
}

/// Encodes one value (round to nearest even, saturating; see the module docs for the policy).
pub fn encode(x: f32, format: Fp8Format) -> u8 {
    codec::encode_with(x, format.spec())
}

/// Decodes one code exactly: every fp8 value is an f32. E4M3 `0x7F`/`0xFF` and E5M2 codes with
/// an all-ones exponent and non-zero mantissa are NaN; E5M2 `0x7C`/`0xFC` are ±Inf.
pub fn decode(code: u8, format: Fp8Format) -> f32 {
    codec::decode_with(code, format)
}

/// A weight quantized to FP8.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8Output {
    /// One code per input value, same order.
    pub bytes: Vec<u8>,
    /// One scale per row (per channel) or exactly one (per tensor); empty for an empty tensor.
    pub scales: Vec<f32>,
    /// Statistics of `decode(code) · scale` against the input.
    pub stats: ErrorStats,
}

/// Encodes `x / scale` for every value (`dst.len() == src.len()`, panics otherwise).
type EncodeScaledFn = fn(src: &[f32], scale: f32, format: Fp8Format, dst: &mut [u8]);

/// The FP8 kernels of one ISA.
struct Fp8Kernels {
    isa: Isa,
    encode_scaled: EncodeScaledFn,
}

fn scalar_encode_scaled(src: &[f32], scale: f32, format: Fp8Format, dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "encode_scaled: lengths");
    let spec = format.spec();
    for (byte, &x) in dst.iter_mut().zip(src) {
        *byte = codec::encode_with(x / scale, spec);
    }
}

static SCALAR: Fp8Kernels = Fp8Kernels {
    isa: Isa::Scalar,
    encode_scaled: scalar_encode_scaled,
};

/// The FP8 table matching the ISA of `kernels`, scalar where this module has no version for it.
fn fp8_kernels(kernels: &Kernels) -> &'static Fp8Kernels {
    match kernels.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86_64::table(kernels.isa).unwrap_or(&SCALAR),
        _ => &SCALAR,
    }
}

/// The ISA the FP8 encoder runs on when given `kernels` (for logs and reports).
pub fn fp8_isa(kernels: &Kernels) -> Isa {
    fp8_kernels(kernels).isa
}

/// `absmax / max_finite`, with compressed-tensors' epsilon for an all-zero channel.
pub fn fp8_scale(absmax: f32, format: Fp8Format) -> f32 {
    let scale = absmax / format.max_finite();
    if scale == 0.0 {
        f32::EPSILON
    } else {
        scale
    }
}

/// Quantizes `src` (row-major `[rows, cols]`) to FP8 with one scale per row (`per_channel`) or
/// one for the whole tensor.
///
/// `kernels` picks the ISA of the encoder; the bytes are the same for every ISA. Errors on a
/// shape that does not match `src.len()` and on any NaN or infinity.
pub fn quantize_fp8(
    kernels: &Kernels,
    src: &[f32],
    rows: usize,
    cols: usize,
    format: Fp8Format,
    per_channel: bool,
) -> Result<Fp8Output, QuantError> {
    let expected = rows
        .checked_mul(cols)
        .ok_or_else(|| QuantError::ShapeOverflow {
            shape: vec![rows, cols],
        })?;
    if expected != src.len() {
        return Err(QuantError::ShapeMismatch {
            shape: vec![rows, cols],
            expected,
            actual: src.len(),
        });
    }
    let mut output = Fp8Output {
        bytes: vec![0; src.len()],
        scales: Vec::new(),
        stats: ErrorStats::default(),
    };
    if src.is_empty() {
        return Ok(output);
    }
    let channel_len = if per_channel { cols } else { src.len() };
    let table = fp8_kernels(kernels);
    let decoded = decode_table(format);
    // Dequantized values of one chunk, for the statistics; chunks bound the scratch memory.
    const CHUNK: usize = 1 << 16;
    let mut dequantized = vec![0.0f32; channel_len.min(CHUNK)];
    let channels = src
        .chunks_exact(channel_len)
        .zip(output.bytes.chunks_exact_mut(channel_len));
    for (channel_idx, (src_channel, dst_channel)) in channels.enumerate() {
        let absmax = (kernels.absmax)(src_channel);
        if !absmax.is_finite() {
            let offset = src_channel.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(QuantError::NonFinite {
                index_hint: channel_idx * channel_len + offset,
            });
        }
        let scale = fp8_scale(absmax, format);
        for (src_chunk, dst_chunk) in src_channel.chunks(CHUNK).zip(dst_channel.chunks_mut(CHUNK)) {
            (table.encode_scaled)(src_chunk, scale, format, dst_chunk);
            let scratch = &mut dequantized[..src_chunk.len()];
            for (value, &code) in scratch.iter_mut().zip(dst_chunk.iter()) {
                *value = decoded[usize::from(code)] * scale;
            }
            output.stats.merge(&compare(src_chunk, scratch));
        }
        output.scales.push(scale);
    }
    Ok(output)
}

/// Every code's value, for table-driven decoding.
fn decode_table(format: Fp8Format) -> [f32; 256] {
    std::array::from_fn(|code| decode(code as u8, format))
}

/// Reference dequantization, `decode(code) · scale` in f32 (compressed-tensors `_dequantize`);
/// reproduces `stats.max_abs_err` exactly.
///
/// # Panics
/// If `bytes.len() != rows * cols` or `scales` is not one per row (`per_channel`) or one.
pub fn dequantize_fp8(
    bytes: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    format: Fp8Format,
) -> Vec<f32> {
    assert_eq!(bytes.len(), rows * cols, "dequantize_fp8: shape");
    if bytes.is_empty() {
        return Vec::new();
    }
    let channel_len = match scales.len() {
        1 => bytes.len(),
        n if n == rows => cols,
        n => panic!("dequantize_fp8: {n} scales for {rows} rows"),
    };
    let decoded = decode_table(format);
    bytes
        .chunks_exact(channel_len)
        .zip(scales)
        .flat_map(|(channel, &scale)| {
            channel
                .iter()
                .map(move |&code| decoded[usize::from(code)] * scale)
        })
        .collect()
}
