//! bitsandbytes NF4: 4-bit NormalFloat codes in blocks of 64 over the flattened tensor, with
//! optional double quantization of the per-block absmax ("compress_statistics").
//!
//! # Reference (bitsandbytes 0.50.2 on CPU: bit for bit for f32 input, double quant given the same offset)
//!
//! - codebook: `bitsandbytes/functional.py::get_4bit_type("nf4")`, the 16 values of
//!   [`NF4_CODE`] (`data /= data.abs().max()` leaves them unchanged).
//! - quantization: on CPU `quantize_4bit` runs `backends/default/ops.py` (no native CPU
//!   kernel): the `absmax` of each block of 64, `x = value · (1.0 / absmax.clamp(min=1e-38))`
//!   (a reciprocal, then a multiply; a last partial block is **divided** by its clamped absmax
//!   instead), then `torch.bucketize` against the f32 midpoints of neighbouring codes, which
//!   are exactly [`NF4_THRESHOLDS`] (the literals of `dQuantizeNF4` in `csrc/kernels.cu`).
//!   `bucketize` counts the midpoints strictly below `x`, as does the CUDA kernel's tree of
//!   strict `x > threshold` tests, which is how [`nf4_index`] computes it (tests check it
//!   against the tree). A value exactly on a midpoint takes the lower code. The stored absmax
//!   is the unclamped one, so an **all-zero block** stores absmax 0 and normalizes to `x = 0`:
//!   code 7 (0.0) in every nibble. (The CUDA kernel differs only there: `0 · (1 / 0)` is NaN,
//!   code 0, which also decodes to 0 in a plain checkpoint but not with double quantization,
//!   where the block's absmax comes back non-zero.)
//! - packing: `packed[j] = code(v[2j]) << 4 | code(v[2j + 1])`: the **first** element of each
//!   pair in the **high** nibble. An odd element count pads the normalized values with 0.0,
//!   i.e. code 7 in the last low nibble.
//! - double quantization: `functional.py::quantize_4bit(compress_statistics=True)`:
//!   `offset = absmax.mean()`, `absmax -= offset`, then `quantize_blockwise(absmax,
//!   blocksize=256)` with the signed 8-bit dynamic map (`create_dynamic_map()`), which on CPU
//!   runs the native `quantize_cpu`: per block of 256 an f32 `nested_absmax`, `x = v ·
//!   (1 / nested_absmax)`, rounded to a grid of 65536 points over [-1, 1] and looked up in a
//!   table of the map entries nearest to those points. See `nf4/double_quant.rs`, which also
//!   derives how far our values can be from bnb's: only the offset (a mean, which we round
//!   once from f64 and torch sums in f32) can differ. (CUDA's `dQuantize<0>` instead picks
//!   the entry nearest to `x` itself; the file carries its map and indices, so either decodes
//!   exactly.)
//! - dequantization (`dequantize_4bit`): `absmax = code8[q] · nested_absmax + offset` (two
//!   f32 operations) when nested, then `NF4_CODE[nibble] · absmax`. An all-zero block is all
//!   code 7 (0.0), so it decodes to exactly 0 whatever its reconstructed absmax.
//!
//! The offset and the dynamic map are stored (`nested_offset`, `nested_quant_map`) and
//! readers use the stored values, so our own reconstruction is exact.
//!
//! # What a writer stores (`Linear4bit._save_to_state_dict`: `weight.` + `QuantState.as_dict(packed=True)`)
//!
//! | key | dtype | shape | source |
//! |---|---|---|---|
//! | `<layer>.weight` | U8 | `[(n + 1) / 2, 1]` | [`Nf4Output::packed`] |
//! | `<layer>.weight.absmax` | F32, or U8 when nested | `[ceil(n / 64)]` | [`Nf4Absmax`] |
//! | `<layer>.weight.quant_map` | F32 | `[16]` | [`Nf4Output::quant_map`] |
//! | `<layer>.weight.nested_absmax` | F32 | `[ceil(ceil(n / 64) / 256)]` | nested only |
//! | `<layer>.weight.nested_quant_map` | F32 | `[256]` | nested only |
//! | `<layer>.weight.quant_state.bitsandbytes__nf4` | U8 | `[len]` | UTF-8 bytes of [`quant_state_json`] |
//!
//! The JSON holds the non-tensor fields in `as_dict` order: `quant_type` ("nf4"), `blocksize`
//! (64), `dtype` (the original weight dtype without `torch.`, e.g. "bfloat16"), `shape` (the
//! original weight shape), and when nested `nested_blocksize` (256), `nested_dtype`
//! ("float32") and `nested_offset` (a float). transformers additionally expects
//! `quantization_config = { quant_method: "bitsandbytes", load_in_4bit: true,
//! bnb_4bit_quant_type: "nf4", bnb_4bit_use_double_quant, bnb_4bit_compute_dtype,
//! bnb_4bit_quant_storage: "uint8" }`.
//!
//! # Kernels
//!
//! The per-block work on whole blocks of 64 (absmax, scale, threshold tests, packing) runs
//! through a small table of function pointers chosen from the caller's [`Kernels`] ISA
//! (scalar, AVX2, AVX-512; `nf4/x86_64.rs`); every variant produces the same bytes and absmax
//! values as the scalar `encode_block`, which defines them. A last partial block always goes
//! through the scalar code.

// Explicit paths: rustc resolves the children of a file included through `#[path]` beside that
// file rather than in `nf4/`, and these keep both ways of including this module working.
#[path = "nf4/double_quant.rs"]
mod double_quant;
#[cfg(test)]
#[path = "nf4/tests.rs"]
mod tests;
#[cfg(target_arch = "x86_64")]
#[path = "nf4/x86_64.rs"]
mod x86_64;

pub use double_quant::dynamic_map;

use crate::quant::int8::QuantError;
use crate::quant::kernels::{ErrorStats, Isa, Kernels};
use crate::quant::metrics::compare;

/// Elements per absmax block (`quantize_4bit`'s default and what transformers uses).
pub const BLOCK_SIZE: usize = 64;
/// Absmax values per nested block in double quantization.
pub const NESTED_BLOCK_SIZE: usize = 256;

/// `get_4bit_type("nf4")`, index = stored 4-bit code (the literals of `functional.py`, each an
/// exact f32).
#[allow(clippy::excessive_precision)]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// The decision thresholds of `dQuantizeNF4`, ascending, as the f32 literals in
/// `csrc/kernels.cu` (midpoints of neighbouring codes): code `k` covers
/// `(NF4_THRESHOLDS[k - 1], NF4_THRESHOLDS[k]]`.
#[allow(clippy::excessive_precision)]
pub const NF4_THRESHOLDS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// The NF4 code of a normalized value: the number of thresholds it strictly exceeds, which is
/// `dQuantizeNF4`'s answer (NaN exceeds none: code 0).
#[inline]
pub fn nf4_index(x: f32) -> u8 {
    NF4_THRESHOLDS.iter().map(|&t| u8::from(x > t)).sum()
}

/// Whether to double-quantize the absmax values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nf4Options {
    /// bitsandbytes' `compress_statistics` / transformers' `bnb_4bit_use_double_quant`.
    pub double_quant: bool,
}

/// The absmax statistics, as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Nf4Absmax {
    /// `weight.absmax`: one f32 per block of 64.
    Plain(Vec<f32>),
    /// Double quantization: `weight.absmax` becomes one u8 per block.
    DoubleQuantized(NestedAbsmax),
}

/// Double-quantized absmax values: `absmax[i] ≈ nested_quant_map[quantized[i]] ·
/// nested_absmax[i / 256] + offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct NestedAbsmax {
    /// `weight.absmax` (U8), one per block of 64.
    pub quantized: Vec<u8>,
    /// `weight.nested_absmax` (F32), one per 256 absmax values.
    pub nested_absmax: Vec<f32>,
    /// `weight.nested_quant_map` (F32, 256 values): the signed dynamic map (boxed: 1 KiB).
    pub nested_quant_map: Box<[f32; 256]>,
    /// `nested_offset` in the quant-state JSON: the mean absmax subtracted before quantizing.
    pub offset: f32,
}

/// A tensor quantized to NF4.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Output {
    /// `weight`: two codes per byte, first element in the high nibble; `(n + 1) / 2` bytes.
    pub packed: Vec<u8>,
    /// Number of elements quantized (`n`).
    pub n_elements: usize,
    /// The per-block statistics.
    pub absmax: Nf4Absmax,
    /// `weight.quant_map`: [`NF4_CODE`].
    pub quant_map: [f32; 16],
    /// Statistics of [`dequantize_nf4`]'s output against the input.
    pub stats: ErrorStats,
}

impl Nf4Output {
    /// The absmax each block is dequantized with (the stored one, or its double-quantized
    /// reconstruction).
    pub fn effective_absmax(&self) -> Vec<f32> {
        match &self.absmax {
            Nf4Absmax::Plain(absmax) => absmax.clone(),
            Nf4Absmax::DoubleQuantized(nested) => double_quant::reconstruct(nested),
        }
    }
}

/// Largest magnitude of a block (exact: max over magnitude bit patterns). NaN if any NaN, +Inf
/// if any ±Inf.
fn block_absmax(block: &[f32]) -> f32 {
    let bits = block
        .iter()
        .map(|v| v.to_bits() & 0x7FFF_FFFF)
        .max()
        .unwrap_or(0);
    f32::from_bits(bits)
}

/// The smallest absmax bitsandbytes divides by: `quantize_4bit` normalizes with
/// `absmax.clamp(min=1e-38)` (the stored absmax stays unclamped). An all-zero block therefore
/// normalizes to 0 and takes code 7 (0.0), and a block whose absmax is below 1e-38 (subnormal)
/// is scaled by 1e38 rather than by an overflowing reciprocal.
const MIN_DIVISOR: f32 = 1e-38;

/// How a block's values are normalized by its absmax. bitsandbytes' CPU `quantize_4bit`
/// multiplies whole blocks by `1.0 / absmax` and divides the values of a last partial block by
/// the absmax; the two can differ by an ulp, which can move a value across a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Normalize {
    /// `value · (1 / max(absmax, 1e-38))`: whole blocks of 64.
    Reciprocal,
    /// `value / max(absmax, 1e-38)`: the last block when it is partial.
    Divide,
}

/// The f32 factor whole blocks are multiplied by.
#[inline]
fn block_reciprocal(block_max: f32) -> f32 {
    1.0 / block_max.max(MIN_DIVISOR)
}

/// Encodes one block of at most 64 values into `packed` (`block.len().div_ceil(2)` bytes) and
/// returns its absmax; when that is not finite (a NaN or ±Inf in the block) `packed` is left
/// as it was. The definition every kernel matches.
fn encode_block(block: &[f32], packed: &mut [u8], normalize: Normalize) -> f32 {
    debug_assert!(block.len() <= BLOCK_SIZE && packed.len() == block.len().div_ceil(2));
    let block_max = block_absmax(block);
    if !block_max.is_finite() {
        return block_max;
    }
    // Past the end of a partial block bitsandbytes pads the normalized values with 0.0; one of
    // them pads an odd length (code 7). (`clamp(-1, 1)` is left out: it cannot change a code.)
    let mut normalized = [0.0f32; BLOCK_SIZE];
    match normalize {
        Normalize::Reciprocal => {
            let reciprocal = block_reciprocal(block_max);
            for (slot, &value) in normalized.iter_mut().zip(block) {
                *slot = value * reciprocal;
            }
        }
        Normalize::Divide => {
            let divisor = block_max.max(MIN_DIVISOR);
            for (slot, &value) in normalized.iter_mut().zip(block) {
                *slot = value / divisor;
            }
        }
    }
    // `nf4_index` for the whole block, threshold by threshold so the loop vectorizes.
    let mut codes = [0u8; BLOCK_SIZE];
    for &threshold in &NF4_THRESHOLDS {
        for (code, &x) in codes.iter_mut().zip(&normalized) {
            *code += u8::from(x > threshold);
        }
    }
    for (byte, pair) in packed.iter_mut().zip(codes.chunks_exact(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    block_max
}

/// Encodes whole blocks: `src.len() == 64 · k`, `packed.len() == 32 · k`, `absmax.len() == k`.
/// Writes each block's absmax and, when it is finite, the block's 32 bytes as
/// [`encode_block`] does (the bytes of a block with a non-finite absmax are unspecified).
type EncodeBlocksFn = fn(src: &[f32], packed: &mut [u8], absmax: &mut [f32]);

/// The NF4 kernels of one ISA.
struct Nf4Kernels {
    isa: Isa,
    encode_blocks: EncodeBlocksFn,
}

static SCALAR: Nf4Kernels = Nf4Kernels {
    isa: Isa::Scalar,
    encode_blocks: scalar_encode_blocks,
};

/// Panics unless the slices match the [`EncodeBlocksFn`] contract (the SIMD kernels rely on it).
fn check_block_lengths(src: &[f32], packed: &[u8], absmax: &[f32]) {
    assert!(
        src.len() == absmax.len() * BLOCK_SIZE && packed.len() * 2 == src.len(),
        "encode_blocks: lengths"
    );
}

fn scalar_encode_blocks(src: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    check_block_lengths(src, packed, absmax);
    let blocks = src
        .chunks_exact(BLOCK_SIZE)
        .zip(packed.chunks_exact_mut(BLOCK_SIZE / 2));
    for ((block, bytes), block_max) in blocks.zip(absmax) {
        *block_max = encode_block(block, bytes, Normalize::Reciprocal);
    }
}

/// The NF4 table matching the ISA of `kernels`, scalar where this module has no version for it
/// (NEON for now).
fn nf4_kernels(kernels: &Kernels) -> &'static Nf4Kernels {
    match kernels.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86_64::table(kernels.isa).unwrap_or(&SCALAR),
        _ => &SCALAR,
    }
}

/// The ISA the NF4 block loop runs on when given `kernels` (for logs and reports): the same as
/// `kernels.isa` where this module has a version for it, scalar otherwise.
pub fn nf4_isa(kernels: &Kernels) -> Isa {
    nf4_kernels(kernels).isa
}

/// Quantizes the flattened tensor `src` to NF4 in blocks of 64 (see the module docs).
///
/// `kernels` picks the ISA of the per-block loop; the result is the same for every ISA. Errors
/// on any NaN or infinity. An empty tensor gives empty outputs (and, nested, an offset of 0
/// with no nested blocks).
pub fn quantize_nf4(
    kernels: &Kernels,
    src: &[f32],
    options: Nf4Options,
) -> Result<Nf4Output, QuantError> {
    let n_blocks = src.len().div_ceil(BLOCK_SIZE);
    let n_whole = src.len() / BLOCK_SIZE;
    let mut packed = vec![0u8; src.len().div_ceil(2)];
    let mut absmax = vec![0.0f32; n_blocks];
    let (whole_src, tail_src) = src.split_at(n_whole * BLOCK_SIZE);
    let (whole_packed, tail_packed) = packed.split_at_mut(n_whole * BLOCK_SIZE / 2);
    let (whole_absmax, tail_absmax) = absmax.split_at_mut(n_whole);
    (nf4_kernels(kernels).encode_blocks)(whole_src, whole_packed, whole_absmax);
    if let Some(tail_max) = tail_absmax.first_mut() {
        *tail_max = encode_block(tail_src, tail_packed, Normalize::Divide);
    }
    if let Some(block_idx) = absmax.iter().position(|m| !m.is_finite()) {
        let block = &src[block_idx * BLOCK_SIZE..];
        let offset = block.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(QuantError::NonFinite {
            index_hint: block_idx * BLOCK_SIZE + offset,
        });
    }
    let absmax = if options.double_quant {
        Nf4Absmax::DoubleQuantized(double_quant::quantize(&absmax))
    } else {
        Nf4Absmax::Plain(absmax)
    };
    let mut output = Nf4Output {
        packed,
        n_elements: src.len(),
        absmax,
        quant_map: NF4_CODE,
        stats: ErrorStats::default(),
    };
    output.stats = compare(src, &dequantize_nf4(&output));
    Ok(output)
}

/// Reference dequantization (`dequantize_4bit`): `NF4_CODE[code] · absmax` per element, in
/// f32, with the absmax reconstructed from the nested statistics when double-quantized.
///
/// # Panics
/// If the packed bytes or absmax values do not match `n_elements`.
pub fn dequantize_nf4(output: &Nf4Output) -> Vec<f32> {
    let n = output.n_elements;
    assert_eq!(
        output.packed.len(),
        n.div_ceil(2),
        "dequantize_nf4: packed length"
    );
    let absmax = output.effective_absmax();
    assert_eq!(
        absmax.len(),
        n.div_ceil(BLOCK_SIZE),
        "dequantize_nf4: absmax length"
    );
    let mut out = Vec::with_capacity(n + 1);
    for (bytes, &block_max) in output.packed.chunks(BLOCK_SIZE / 2).zip(&absmax) {
        for &byte in bytes {
            out.push(output.quant_map[usize::from(byte >> 4)] * block_max);
            out.push(output.quant_map[usize::from(byte & 0x0F)] * block_max);
        }
    }
    // An odd length leaves the padding code in the last low nibble.
    out.truncate(n);
    out
}

/// The JSON string bitsandbytes packs into `weight.quant_state.bitsandbytes__nf4`
/// (`QuantState.as_dict(packed=True)`: `json.dumps` of the non-tensor fields, default
/// separators), for a weight of the given original `shape` and `dtype` name ("float32",
/// "float16", "bfloat16"). Store its UTF-8 bytes as a U8 tensor.
pub fn quant_state_json(output: &Nf4Output, shape: &[usize], dtype: &str) -> String {
    let shape_list = shape
        .iter()
        .map(|dim| dim.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut json = format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {BLOCK_SIZE}, \"dtype\": \"{dtype}\", \
         \"shape\": [{shape_list}]"
    );
    if let Nf4Absmax::DoubleQuantized(nested) = &output.absmax {
        json.push_str(&format!(
            ", \"nested_blocksize\": {NESTED_BLOCK_SIZE}, \"nested_dtype\": \"float32\", \
             \"nested_offset\": {}",
            python_float_repr(f64::from(nested.offset))
        ));
    }
    json.push('}');
    json
}

/// Python's `repr(float)`: the shortest round-trip digits (as Rust prints them), positional
/// for `1e-4 <= |x| < 1e16` with at least one fractional digit, otherwise `d.ddde±XX`.
fn python_float_repr(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let text = format!("{value}");
        return if text.contains('.') {
            text
        } else {
            text + ".0"
        };
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` output has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}
