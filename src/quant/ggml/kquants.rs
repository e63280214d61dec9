//! Two k-quant types, Q4_K and Q6_K (256-element super-blocks): decoding, for reading GGUF
//! files made by llama.cpp, and quantizing byte for byte as llama.cpp's reference quantizers.
//!
//! Layouts: `block_q4_K` and `block_q6_K` of ggml's `ggml-common.h`. Decoding: gguf-py's
//! `Q4_K.dequantize_blocks` / `Q6_K.dequantize_blocks` (`gguf/quants.py`), which match ggml's
//! `dequantize_row_q4_K` / `dequantize_row_q6_K` in `ggml-quants.c`: the sub-block scale is
//! formed first (`d * sc`, `dmin * m` in f32), then applied to the quant, unfused.
//!
//! Quantizing: [`quantize_q6_k`] and [`quantize_q4_k`] are written from the C of
//! `quantize_row_q6_K_ref` / `quantize_row_q4_K_ref` and their helpers `nearest_int`,
//! `make_qx_quants` and `make_qkx2_quants` (`ggml/src/ggml-quants.c` as vendored in the PyPI
//! sdist of llama-cpp-python 0.3.36), what `ggml_quantize_chunk` runs without an importance
//! matrix. Byte equality rests on three things:
//!
//! - Every f32 operation is ggml's, in its order, one rounding each. ggml's CMake build
//!   (`-O3 -std=gnu11`, and with `GGML_NATIVE=OFF` no `-march`) leaves GCC's default
//!   `-ffp-contract=fast` on, but baseline x86_64 has no FMA instruction, so nothing is fused
//!   (the `ggml-quants.c` object of that build has no `vfmadd`): the x86_64 reference is
//!   unfused, like Rust. A build with FMA available (`-march=native` on a recent x86_64, and
//!   every aarch64 build, where GCC contracts by default) fuses some of the sums and may differ
//!   from these bytes in rare elements; the oracle test builds the unfused reference.
//! - `nearest_int` is ggml's bit trick (add `1.5 · 2^23`, read the mantissa), which rounds
//!   half to even, not `roundf`'s half away from zero.
//! - The super-block scales are rounded to f16 (round to nearest even, as ggml's
//!   `GGML_FP32_TO_FP16`) before the elements are re-quantized against them.
//!
//! `tests/api/ggml_oracle.rs` compares both quantizers with ggml itself, built from that sdist
//! by `scripts/llama-cpp-oracle.sh`, on random and real tensors.
//!
//! Speed (scalar, baseline x86_64 build): Q6_K's 19 candidate scales are independent, so
//! `make_qx_quants` evaluates them side by side, and Q6_K quantized about 4× faster than
//! ggml's reference in an ad-hoc run while it was written (a shared 2-vCPU Xeon: ~250 MB/s of
//! f32 against ~57 MB/s; not yet a recorded benchmark, see BENCHMARKS.md). Q4_K's candidates depend on each other (a winner
//! moves the minimum the next ones quantize against), so they run in ggml's sequence, at
//! ggml's speed (~15-22 MB/s); evaluating them speculatively side by side was measured slower,
//! as winners are frequent.

use std::mem::{offset_of, size_of};

use super::scalar::{f16_bits, f16_value};

/// Elements per k-quant super-block (`QK_K`).
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in a Q4_K block (`K_SCALE_SIZE`).
const K_SCALE_SIZE: usize = 12;

/// `block_q4_K`: 8 sub-blocks of 32 elements, `x ≈ d * sc[s] * q - dmin * m[s]`, with 6-bit
/// `sc` and `m` packed into `scales` and 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4K {
    /// Super-block scale for the quantized scales (f16 bits).
    pub d: u16,
    /// Super-block scale for the quantized mins (f16 bits).
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// `block_q6_K`: 16 sub-blocks of 16 elements, `x ≈ d * scales[s] * (q - 32)` with 6-bit `q`
/// split into low nibbles `ql` and high 2-bit pairs `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    /// Super-block scale (f16 bits).
    pub d: u16,
}

const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(size_of::<BlockQ6K>() == 210);
const Q4K_DMIN: usize = offset_of!(BlockQ4K, dmin);
const Q4K_SCALES: usize = offset_of!(BlockQ4K, scales);
const Q4K_QS: usize = offset_of!(BlockQ4K, qs);
const Q6K_QH: usize = offset_of!(BlockQ6K, qh);
const Q6K_SCALES: usize = offset_of!(BlockQ6K, scales);
const Q6K_D: usize = offset_of!(BlockQ6K, d);
const _: () = assert!(Q4K_DMIN == 2 && Q4K_SCALES == 4 && Q4K_QS == 16);
const _: () = assert!(Q6K_QH == 128 && Q6K_SCALES == 192 && Q6K_D == 208);

fn read_f16(block: &[u8], offset: usize) -> f32 {
    f16_value(u16::from_le_bytes([block[offset], block[offset + 1]]))
}

/// Scale and min of sub-block `sub_block` (0..8) from Q4_K's 12 packed bytes (ggml's
/// `get_scale_min_k4`): sub-blocks 0..4 keep 6 bits in bytes 0..8; 4..8 combine a nibble of
/// bytes 8..12 with the top two bits of bytes 0..8.
fn scale_min_k4(sub_block: usize, scales: &[u8]) -> (u8, u8) {
    if sub_block < 4 {
        (scales[sub_block] & 63, scales[sub_block + 4] & 63)
    } else {
        let packed = scales[sub_block + 4];
        let scale = (packed & 0x0f) | ((scales[sub_block - 4] >> 6) << 4);
        let min = (packed >> 4) | ((scales[sub_block] >> 6) << 4);
        (scale, min)
    }
}

fn check_lengths(name: &str, block_bytes: usize, src: &[u8], dst: &[f32]) {
    assert!(
        dst.len().is_multiple_of(QK_K) && src.len() == dst.len() / QK_K * block_bytes,
        "{name}: {} bytes are not the blocks of {} elements",
        src.len(),
        dst.len()
    );
}

/// Decodes Q4_K blocks.
///
/// # Panics
/// Unless `dst.len()` is a multiple of 256 and `src.len()` is 144 bytes per 256 elements.
pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    check_lengths("q4_K", size_of::<BlockQ4K>(), src, dst);
    for (block, out) in src
        .chunks_exact(size_of::<BlockQ4K>())
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_f16(block, 0);
        let dmin = read_f16(block, Q4K_DMIN);
        let scales = &block[Q4K_SCALES..Q4K_QS];
        // Each 32 bytes of `qs` hold two sub-blocks: low nibbles, then high nibbles.
        for (chunk_idx, (qs, values)) in block[Q4K_QS..]
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(64))
            .enumerate()
        {
            for (nibble, half) in values.chunks_exact_mut(32).enumerate() {
                let (scale, min) = scale_min_k4(2 * chunk_idx + nibble, scales);
                let step = d * f32::from(scale);
                let offset = dmin * f32::from(min);
                for (value, &byte) in half.iter_mut().zip(qs) {
                    let quant = (byte >> (4 * nibble)) & 0x0f;
                    *value = step * f32::from(quant) - offset;
                }
            }
        }
    }
}

/// Decodes Q6_K blocks.
///
/// # Panics
/// Unless `dst.len()` is a multiple of 256 and `src.len()` is 210 bytes per 256 elements.
pub fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    check_lengths("q6_K", size_of::<BlockQ6K>(), src, dst);
    for (block, out) in src
        .chunks_exact(size_of::<BlockQ6K>())
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_f16(block, Q6K_D);
        // Two halves of 128 elements: 64 bytes of `ql`, 32 of `qh`, 8 scales each.
        for (half_idx, values) in out.chunks_exact_mut(128).enumerate() {
            let ql = &block[64 * half_idx..64 * half_idx + 64];
            let qh = &block[Q6K_QH + 32 * half_idx..Q6K_QH + 32 * half_idx + 32];
            let scales = &block[Q6K_SCALES + 8 * half_idx..Q6K_SCALES + 8 * half_idx + 8];
            // Quarter `quarter` (32 elements) takes nibbles of ql[0..32] or ql[32..64] and
            // bits 2*quarter..2*quarter+2 of qh.
            for (quarter, quarter_values) in values.chunks_exact_mut(32).enumerate() {
                let low_bytes = &ql[32 * (quarter % 2)..32 * (quarter % 2) + 32];
                let nibble_shift = 4 * (quarter / 2);
                for (idx, value) in quarter_values.iter_mut().enumerate() {
                    let low = (low_bytes[idx] >> nibble_shift) & 0x0f;
                    let high = (qh[idx] >> (2 * quarter)) & 0x03;
                    let quant = ((low | high << 4) as i8) - 32;
                    let scale = scales[2 * quarter + idx / 16] as i8;
                    *value = d * f32::from(scale) * f32::from(quant);
                }
            }
        }
    }
}

/// ggml's `GROUP_MAX_EPS`: a sub-block (or super-block scale) below this magnitude is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;
/// Elements per Q6_K sub-block, each with its own 8-bit scale.
const Q6K_SUB_BLOCK: usize = 16;
/// Elements per Q4_K sub-block, each with a 6-bit scale and a 6-bit min.
const Q4K_SUB_BLOCK: usize = 32;

/// `1.5 · 2^23`: adding it leaves an f32 whose mantissa holds the rounded integer.
const ROUNDING_BIAS: f32 = 12_582_912.0;

/// ggml's `nearest_int`: adds `1.5 · 2^23` in f32 so that the FPU rounds `value` to an integer
/// (to nearest, ties to even) in the low mantissa bits, then reads those bits back.
///
/// Exact for `|value| <= 4194303` (ggml `assert`s that, but the assert is compiled out in its
/// release build). Outside that range, for ±Inf and NaN the same bit arithmetic still runs and
/// gives ggml's (meaningless but deterministic) integers: NaN, for one, gives 0.
#[inline]
fn nearest_int(value: f32) -> i32 {
    let biased = (value + ROUNDING_BIAS).to_bits();
    (biased & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `clamp(nearest_int(value), -nmax, nmax - 1) as f32`, computed in f32 so that the
/// compiler can run many at once in vector lanes (SSE2 has no 32-bit integer min/max).
///
/// Equal to the integer form wherever `nearest_int` is exact (`|value| <= 4194303`): there the
/// biased sum lies in `[2^23, 2^24)`, where the spacing of f32s is 1, so it is
/// `ROUNDING_BIAS + round_half_even(value)` exactly, and clamping it and subtracting the bias
/// are exact too. [`make_qx_quants`] only calls it inside that range (see there).
#[inline]
fn clamped_nearest(value: f32, nmax: f32) -> f32 {
    let biased = value + ROUNDING_BIAS;
    biased
        .max(ROUNDING_BIAS - nmax)
        .min(ROUNDING_BIAS + nmax - 1.0)
        - ROUNDING_BIAS
}

/// The candidate maps of [`make_qx_quants`]: the first guess, then 18 refinements.
const QX_CANDIDATES: usize = 19;

/// ggml's `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`: the signed scale of one
/// sub-block and its quants `L` in `0..2·nmax`, chosen to minimise the error weighted by `x²`.
///
/// The first guess maps the element of largest magnitude to `-nmax`; the scale is then the
/// weighted least-squares fit `Σ w·x·l / Σ w·l²`, and 18 more candidate maps
/// `-(nmax + 0.1·is) / max` (`is` in -9..=-1, 1..=9, in that order) replace it when they fit
/// better (`sumlx² > best · suml2`). Only `rmse_type = 1` (weights `x²`, no early return) is
/// written out: it is the one ggml's reference quantizers use; the others serve importance
/// matrices.
///
/// Every f32 operation is ggml's, in its order, for each candidate. ggml runs the candidates
/// one after another; their sums do not depend on which one won before, so this computes all
/// of them in one sweep over the elements (independent accumulators, which the compiler can
/// keep in vector lanes) and then picks the winner in ggml's order with ggml's comparisons.
/// The candidates' products `iscale · x` stay within ±33 (`|iscale| <= 32.9 / |max|`,
/// `|x| <= |max|`, and `|max| >= GROUP_MAX_EPS` keeps `iscale` finite), well inside the range
/// where [`clamped_nearest`] equals ggml's integer rounding and clamping.
fn make_qx_quants<const N: usize>(x: &[f32; N], nmax: i32, quants: &mut [u8; N]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &value in x {
        let magnitude = value.abs();
        if magnitude > amax {
            amax = magnitude;
            max = value;
        }
    }
    if amax < GROUP_MAX_EPS {
        *quants = [0; N];
        return 0.0;
    }
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let nmax_f32 = nmax as f32;

    let mut iscales = [0.0f32; QX_CANDIDATES];
    iscales[0] = -nmax_f32 / max;
    for (iscale, step) in iscales[1..]
        .iter_mut()
        .zip((-9..=9).filter(|&step| step != 0))
    {
        *iscale = -(nmax_f32 + 0.1 * step as f32) / max;
    }
    let mut sumlx = [0.0f32; QX_CANDIDATES];
    let mut suml2 = [0.0f32; QX_CANDIDATES];
    for &value in x {
        // C's `w*x[i]*l` and `w*l*l`: `(w·x)·l` and `(w·l)·l`.
        let weight = value * value;
        let weighted_value = weight * value;
        for candidate in 0..QX_CANDIDATES {
            let l = clamped_nearest(iscales[candidate] * value, nmax_f32);
            sumlx[candidate] += weighted_value * l;
            suml2[candidate] += weight * l * l;
        }
    }

    // C's `suml2 ? ... : 0`: NaN counts as true.
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    let mut chosen = 0;
    for candidate in 1..QX_CANDIDATES {
        let (sumlx, suml2) = (sumlx[candidate], suml2[candidate]);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            chosen = candidate;
        }
    }
    for (quant, &value) in quants.iter_mut().zip(x) {
        // `l + nmax` is in 0..2·nmax, which fits a byte for every nmax ggml uses (≤ 32).
        *quant = (clamp(nearest_int(iscales[chosen] * value)) + nmax) as u8;
    }
    scale
}

fn check_quantize_lengths(name: &str, block_bytes: usize, src: &[f32], dst: &[u8]) {
    assert!(
        src.len().is_multiple_of(QK_K) && dst.len() == src.len() / QK_K * block_bytes,
        "{name}: {} bytes are not the blocks of {} elements",
        dst.len(),
        src.len()
    );
}

/// Quantizes whole super-blocks to Q6_K, byte for byte as ggml's `quantize_row_q6_K_ref`
/// (`ggml-quants.c`; what `ggml_quantize_chunk(GGML_TYPE_Q6_K, ..., imatrix = NULL)` and
/// llama.cpp's quantizer without an importance matrix write). Rows are independent runs of
/// super-blocks, so a tensor of whole rows of 256 is one call.
///
/// Finite input of any magnitude gives ggml's bytes; for NaN or ±Inf the bytes are
/// unspecified (the caller rejects such tensors), but nothing panics.
///
/// # Panics
/// Unless `src.len()` is a multiple of 256 and `dst.len()` is 210 bytes per 256 elements.
pub fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    check_quantize_lengths("q6_K", size_of::<BlockQ6K>(), src, dst);
    for (values, block) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ6K>()))
    {
        let values: &[f32; QK_K] = values.try_into().expect("chunks_exact(QK_K)");
        quantize_block_q6_k(values, block);
    }
}

/// One `block_q6_K`: a scale per 16 elements from [`make_qx_quants`] with 32 levels each
/// side, those 16 scales quantized to i8 against the super-block scale `d` (f16), then every
/// element re-quantized against its rounded scale `d · scales[s]`.
fn quantize_block_q6_k(values: &[f32; QK_K], block: &mut [u8]) {
    let mut quants = [0u8; QK_K];
    let mut sub_scales = [0.0f32; QK_K / Q6K_SUB_BLOCK];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ((sub_values, sub_quants), sub_scale) in values
        .chunks_exact(Q6K_SUB_BLOCK)
        .zip(quants.chunks_exact_mut(Q6K_SUB_BLOCK))
        .zip(&mut sub_scales)
    {
        let sub_values = sub_values.try_into().expect("chunks_exact(16)");
        let sub_quants = sub_quants.try_into().expect("chunks_exact_mut(16)");
        let scale = make_qx_quants::<Q6K_SUB_BLOCK>(sub_values, 32, sub_quants);
        *sub_scale = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        // All quants, scales and `d` (f16 +0.0) are zero bytes.
        block.fill(0);
        return;
    }

    let iscale = -128.0 / max_scale;
    let d_bits = f16_bits(1.0 / iscale);
    let d = f16_value(d_bits);
    let scales = &mut block[Q6K_SCALES..Q6K_D];
    for (scale_byte, &sub_scale) in scales.iter_mut().zip(&sub_scales) {
        // C stores `MIN(127, nearest_int(..))` into an `int8_t`: the low byte.
        *scale_byte = nearest_int(iscale * sub_scale).min(127) as u8;
    }
    for (sub_block, (sub_values, sub_quants)) in values
        .chunks_exact(Q6K_SUB_BLOCK)
        .zip(quants.chunks_exact_mut(Q6K_SUB_BLOCK))
        .enumerate()
    {
        let sub_d = d * f32::from(block[Q6K_SCALES + sub_block] as i8);
        // A sub-block whose scale rounds to zero keeps the quants of `make_qx_quants`.
        if sub_d == 0.0 {
            continue;
        }
        for (quant, &value) in sub_quants.iter_mut().zip(sub_values) {
            *quant = (nearest_int(value / sub_d).clamp(-32, 31) + 32) as u8;
        }
    }
    pack_q6_k_quants(&quants, block);
    block[Q6K_D..].copy_from_slice(&d_bits.to_le_bytes());
}

/// Splits 6-bit quants into `ql` (low nibbles) and `qh` (high bit pairs), the inverse of the
/// layout [`dequantize_q6_k`] reads: per half of 128 elements, quarter `k` (32 elements) goes
/// to nibble `k / 2` of `ql[32·(k % 2)..]` and bits `2k..2k+2` of `qh`.
fn pack_q6_k_quants(quants: &[u8; QK_K], block: &mut [u8]) {
    let (ql, rest) = block.split_at_mut(Q6K_QH);
    let qh = &mut rest[..Q6K_SCALES - Q6K_QH];
    for ((half, ql), qh) in quants
        .chunks_exact(128)
        .zip(ql.chunks_exact_mut(64))
        .zip(qh.chunks_exact_mut(32))
    {
        for idx in 0..32 {
            let [q1, q2, q3, q4] = [0, 32, 64, 96].map(|offset| half[idx + offset]);
            ql[idx] = (q1 & 0x0f) | (q3 & 0x0f) << 4;
            ql[idx + 32] = (q2 & 0x0f) | (q4 & 0x0f) << 4;
            qh[idx] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
        }
    }
}

/// The search `make_qkx2_quants` runs: quants in `0..=nmax`, and `nstep + 1` candidate maps
/// `(rmin + rdelta·is + nmax) / (max - min)` besides the plain one; errors are absolute
/// (`use_mad`) or squared.
struct Qkx2Search {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

/// Q4_K's search (`quantize_row_q4_K_ref`): 15 levels, 21 candidates, squared error.
const Q4K_SEARCH: Qkx2Search = Qkx2Search {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};

impl Qkx2Search {
    fn error(&self, diff: f32) -> f32 {
        if self.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    }

    fn quant(&self, iscale: f32, value: f32, min: f32) -> u8 {
        // In 0..=nmax, and every nmax ggml uses fits a byte.
        nearest_int(iscale * (value - min)).clamp(0, self.nmax) as u8
    }
}

/// A sub-block's affine fit from `make_qkx2_quants`: `x ≈ scale · L - min_offset`.
struct AffineFit {
    scale: f32,
    /// ggml's `the_min`: the negated (so usually non-negative) offset.
    min_offset: f32,
}

/// ggml's `make_qkx2_quants`: an unsigned affine quantization of one sub-block with
/// per-element `weights`, refined by weighted least squares over the candidate maps of
/// `search` while that lowers the weighted error. The minimum is never above zero. Every f32
/// operation is ggml's, in its order.
fn make_qkx2_quants<const N: usize>(
    x: &[f32; N],
    weights: &[f32; N],
    search: &Qkx2Search,
    quants: &mut [u8; N],
) -> AffineFit {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&value, &weight) in x.iter().zip(weights).skip(1) {
        if value < min {
            min = value;
        }
        if value > max {
            max = value;
        }
        sum_w += weight;
        sum_x += weight * value;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        *quants = [0; N];
        return AffineFit {
            scale: 0.0,
            min_offset: -min,
        };
    }
    let nmax = search.nmax as f32;
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((quant, &value), &weight) in quants.iter_mut().zip(x).zip(weights) {
        *quant = search.quant(iscale, value, min);
        let diff = scale * f32::from(*quant) + min - value;
        best_error += weight * search.error(diff);
    }
    let mut candidate = [0u8; N];
    for step in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * step as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((quant, &value), &weight) in candidate.iter_mut().zip(x).zip(weights) {
            *quant = search.quant(iscale, value, min);
            let l = f32::from(*quant);
            sum_l += weight * l;
            sum_l2 += weight * l * l;
            sum_xl += weight * l * value;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for ((&quant, &value), &weight) in candidate.iter().zip(x).zip(weights) {
                let diff = this_scale * f32::from(quant) + this_min - value;
                error += weight * search.error(diff);
            }
            if error < best_error {
                *quants = candidate;
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    AffineFit {
        scale,
        min_offset: -min,
    }
}

/// Quantizes whole super-blocks to Q4_K, byte for byte as ggml's `quantize_row_q4_K_ref`
/// (`ggml_quantize_chunk(GGML_TYPE_Q4_K, ..., imatrix = NULL)`). Input policy as
/// [`quantize_q6_k`].
///
/// # Panics
/// Unless `src.len()` is a multiple of 256 and `dst.len()` is 144 bytes per 256 elements.
pub fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    check_quantize_lengths("q4_K", size_of::<BlockQ4K>(), src, dst);
    for (values, block) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ4K>()))
    {
        let values: &[f32; QK_K] = values.try_into().expect("chunks_exact(QK_K)");
        quantize_block_q4_k(values, block);
    }
}

/// One `block_q4_K`: an affine fit per 32 elements ([`make_qkx2_quants`], weighted by
/// `rms(sub-block) + |x|`), the 8 scales and 8 mins quantized to 6 bits against `d` and `dmin`
/// (f16), then every element re-quantized against its rounded scale and min.
fn quantize_block_q4_k(values: &[f32; QK_K], block: &mut [u8]) {
    const N_SUB: usize = QK_K / Q4K_SUB_BLOCK;
    let mut quants = [0u8; QK_K];
    let mut fits = [(0.0f32, 0.0f32); N_SUB];
    // Scales are non-negative once the min is taken out, so 0 starts both maxima.
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for ((sub_values, sub_quants), fit) in values
        .chunks_exact(Q4K_SUB_BLOCK)
        .zip(quants.chunks_exact_mut(Q4K_SUB_BLOCK))
        .zip(&mut fits)
    {
        let sub_values: &[f32; Q4K_SUB_BLOCK] = sub_values.try_into().expect("chunks_exact(32)");
        let sub_quants = sub_quants.try_into().expect("chunks_exact_mut(32)");
        let weights = q4_k_weights(sub_values);
        let AffineFit { scale, min_offset } =
            make_qkx2_quants(sub_values, &weights, &Q4K_SEARCH, sub_quants);
        *fit = (scale, min_offset);
        if scale > max_scale {
            max_scale = scale;
        }
        if min_offset > max_min {
            max_min = min_offset;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sub_scales = [0u8; N_SUB];
    let mut sub_mins = [0u8; N_SUB];
    for ((&(scale, min_offset), sub_scale), sub_min) in
        fits.iter().zip(&mut sub_scales).zip(&mut sub_mins)
    {
        // C assigns `nearest_int(..)` to a `uint8_t` (the low byte) before `MIN(63, ..)`.
        *sub_scale = (nearest_int(inv_scale * scale) as u8).min(63);
        *sub_min = (nearest_int(inv_min * min_offset) as u8).min(63);
    }
    pack_scale_min_k4(&sub_scales, &sub_mins, &mut block[Q4K_SCALES..Q4K_QS]);
    let d_bits = f16_bits(max_scale / 63.0);
    let dmin_bits = f16_bits(max_min / 63.0);
    let (d, dmin) = (f16_value(d_bits), f16_value(dmin_bits));

    for (sub_block, (sub_values, sub_quants)) in values
        .chunks_exact(Q4K_SUB_BLOCK)
        .zip(quants.chunks_exact_mut(Q4K_SUB_BLOCK))
        .enumerate()
    {
        let (scale, min) = scale_min_k4(sub_block, &block[Q4K_SCALES..Q4K_QS]);
        let sub_d = d * f32::from(scale);
        // A sub-block whose scale rounds to zero keeps the quants of `make_qkx2_quants`.
        if sub_d == 0.0 {
            continue;
        }
        let sub_dm = dmin * f32::from(min);
        for (quant, &value) in sub_quants.iter_mut().zip(sub_values) {
            *quant = nearest_int((value + sub_dm) / sub_d).clamp(0, 15) as u8;
        }
    }
    block[..Q4K_DMIN].copy_from_slice(&d_bits.to_le_bytes());
    block[Q4K_DMIN..Q4K_SCALES].copy_from_slice(&dmin_bits.to_le_bytes());
    // Each 32 bytes of `qs` hold two sub-blocks: the first in low nibbles, the second in high.
    for (pair, qs) in quants
        .chunks_exact(2 * Q4K_SUB_BLOCK)
        .zip(block[Q4K_QS..].chunks_exact_mut(Q4K_SUB_BLOCK))
    {
        let (low, high) = pair.split_at(Q4K_SUB_BLOCK);
        for ((byte, &low), &high) in qs.iter_mut().zip(low).zip(high) {
            *byte = low | high << 4;
        }
    }
}

/// Q4_K's per-element weights for the fit: `sqrt(Σx² / 32) + |x|`, summed in element order.
fn q4_k_weights(sub_values: &[f32; Q4K_SUB_BLOCK]) -> [f32; Q4K_SUB_BLOCK] {
    let mut sum_x2 = 0.0f32;
    for &value in sub_values {
        sum_x2 += value * value;
    }
    let rms = (sum_x2 / Q4K_SUB_BLOCK as f32).sqrt();
    sub_values.map(|value| rms + value.abs())
}

/// Packs eight 6-bit scales and mins into Q4_K's 12 bytes, the inverse of [`scale_min_k4`]:
/// sub-blocks 0..4 whole into bytes 0..8, sub-blocks 4..8 as nibbles in bytes 8..12 with their
/// top two bits in the top bits of bytes 0..8.
fn pack_scale_min_k4(scales: &[u8; 8], mins: &[u8; 8], packed: &mut [u8]) {
    packed[..4].copy_from_slice(&scales[..4]);
    packed[4..8].copy_from_slice(&mins[..4]);
    for sub_block in 4..8 {
        let (scale, min) = (scales[sub_block], mins[sub_block]);
        packed[sub_block + 4] = (scale & 0x0f) | (min & 0x0f) << 4;
        packed[sub_block - 4] |= (scale >> 4) << 6;
        packed[sub_block] |= (min >> 4) << 6;
    }
}

#[cfg(test)]
mod tests;
