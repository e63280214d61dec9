//! Portable reference quantizers and dequantizers. These define every byte the SIMD kernels
//! must reproduce.
//!
//! Each quantizer follows gguf-py's `gguf/quants.py` (`Q8_0.quantize_blocks`,
//! `Q4_0.quantize_blocks`, ...; PyPI package `gguf` 0.19.0), which reproduces ggml's
//! `quantize_row_*_ref` in `ggml/src/ggml-quants.c`, step by step and in the same precision:
//!
//! - All arithmetic is f32, one IEEE rounding per operation, never fused (Rust does not
//!   contract `a * b + c` into an FMA). In particular Q4_0 and Q5_0 compute
//!   `trunc(f32(f32(x * id) + 8.5))`, ggml's result when built without FMA contraction.
//! - The scale used to quantize is the f32 `d` (and `id = 1 / d`), not its f16-rounded copy
//!   stored in the block.
//! - `id` is `0` when `d == 0` (numpy's `np.where(d == 0, 0, 1 / d)`, C's `d ? 1/d : 0`).
//! - Float-to-integer conversions truncate and keep the low byte of a 32-bit result, like
//!   numpy's `astype(np.uint8)` / `astype(np.int8)` and ggml's `(int8_t)` casts on x86_64
//!   (see `truncated_low_byte`). For finite input this only matters for blocks whose scale
//!   is so small (maximum magnitude below about 3e-38) that `1 / d` overflows to infinity.
//!
//! Non-finite input is outside the contract (the caller rejects such tensors first); the
//! functions still return normally, with unspecified bytes.

use super::blocks::{
    D_OFFSET, Q4_0_QS, Q4_1_M, Q4_1_QS, Q5_0_QH, Q5_0_QS, Q5_1_M, Q5_1_QH, Q5_1_QS, Q8_0_QS, QK,
};
use super::GgmlType;

/// The low byte of x86's truncating f32 → i32 conversion (`cvttss2si`), which yields
/// `i32::MIN` ("integer indefinite", low byte 0) for NaN and for values outside the i32 range.
///
/// This is what numpy's `astype(np.uint8)` / `astype(np.int8)` and C's `(int8_t)(float)` casts
/// do on x86_64, so it defines gguf-py's bytes also in the corner cases (an infinite product
/// `x * id` gives 0). Rust's own `as` casts saturate instead, hence this helper.
#[inline]
pub(crate) fn truncated_low_byte(value: f32) -> u8 {
    // 2^31 is exactly representable; every f32 in [-2^31, 2^31) truncates into i32.
    const LIMIT: f32 = 2_147_483_648.0;
    let integer = if (-LIMIT..LIMIT).contains(&value) {
        value as i32
    } else {
        i32::MIN
    };
    integer as u8
}

/// f32 → IEEE binary16 bits, rounding to nearest even (numpy's `astype(np.float16)`,
/// ggml's `GGML_FP32_TO_FP16`): overflow gives ±Inf, tiny values become subnormal or ±0.
#[inline]
pub(crate) fn f16_bits(value: f32) -> u16 {
    half::f16::from_f32(value).to_bits()
}

/// IEEE binary16 bits → f32 (exact).
#[inline]
pub(crate) fn f16_value(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// `1 / d`, or `0` for a zero `d` (either sign).
#[inline]
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// numpy-style round half away from zero (gguf-py's `np_roundf`, C's `roundf`):
/// `floor(|v|) + floor(2 * frac(|v|))` with the sign of `v`; NaN for ±Inf and NaN.
///
/// Written without `f32::floor`, a libm call on baseline x86_64: below 2^23 the truncating
/// cast is the floor of the magnitude and the fraction is exact; from 2^23 on every float is
/// an integer already.
#[inline]
pub(crate) fn round_half_away(value: f32) -> f32 {
    const NO_FRACTION: f32 = 8_388_608.0; // 2^23
    let magnitude = value.abs();
    if magnitude < NO_FRACTION {
        let floored = magnitude as u32 as f32;
        let rounded = if magnitude - floored >= 0.5 {
            floored + 1.0
        } else {
            floored
        };
        rounded.copysign(value)
    } else if magnitude.is_infinite() {
        f32::NAN
    } else {
        value
    }
}

/// The element of largest magnitude with its sign, the first one on ties (numpy's
/// `argmax(abs(block))`); `block[0]` if the block is all zeros. Q4_0 and Q5_0 derive their
/// scale from it.
pub(crate) fn signed_absmax(block: &[f32]) -> f32 {
    let mut max = block[0];
    let mut magnitude = max.abs();
    for &value in &block[1..] {
        if value.abs() > magnitude {
            magnitude = value.abs();
            max = value;
        }
    }
    max
}

/// `(min, max)` of a block, keeping the first occurrence among equal values (ggml's loop).
/// That only shows for `-0.0` vs `0.0`, whose choice numpy leaves to its SIMD reduction order.
pub(crate) fn block_min_max(block: &[f32]) -> (f32, f32) {
    let mut min = block[0];
    let mut max = block[0];
    for &value in &block[1..] {
        if value < min {
            min = value;
        }
        if value > max {
            max = value;
        }
    }
    (min, max)
}

/// Magnitude maximum of a block (`abs(block).max()`).
pub(crate) fn block_absmax(block: &[f32]) -> f32 {
    block.iter().fold(0.0f32, |max, value| max.max(value.abs()))
}

fn write_u16(out: &mut [u8], offset: usize, value: u16) {
    out[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn read_u16(block: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([block[offset], block[offset + 1]])
}

/// Packs 4-bit quants: element `j` low nibble, element `j + 16` high nibble of byte `j`.
fn pack_nibbles(quants: &[u8; QK], qs: &mut [u8]) {
    for (byte_idx, byte) in qs[..QK / 2].iter_mut().enumerate() {
        *byte = (quants[byte_idx] & 0x0f) | ((quants[byte_idx + QK / 2] & 0x0f) << 4);
    }
}

/// The fifth bits of 5-bit quants as ggml's `qh` (bit `j` for element `j`).
fn high_bits(quants: &[u8; QK]) -> u32 {
    quants.iter().enumerate().fold(0u32, |qh, (idx, &quant)| {
        qh | (u32::from(quant >> 4 & 1) << idx)
    })
}

/// One block of Q8_0: `d = absmax / 127`, `q = round_half_away(x * id)`.
pub(crate) fn quantize_block_q8_0(block: &[f32], out: &mut [u8]) {
    let d = block_absmax(block) / 127.0;
    let id = inverse_or_zero(d);
    write_u16(out, D_OFFSET, f16_bits(d));
    for (quant, &value) in out[Q8_0_QS..Q8_0_QS + QK].iter_mut().zip(block) {
        *quant = truncated_low_byte(round_half_away(value * id));
    }
}

/// One block of Q4_0: `d = max / -8`, `q = min(15, trunc(x * id + 8.5))`.
pub(crate) fn quantize_block_q4_0(block: &[f32], out: &mut [u8]) {
    let d = signed_absmax(block) / -8.0;
    let id = inverse_or_zero(d);
    let mut quants = [0u8; QK];
    for (quant, &value) in quants.iter_mut().zip(block) {
        *quant = truncated_low_byte(value * id + 8.5).min(15);
    }
    write_u16(out, D_OFFSET, f16_bits(d));
    pack_nibbles(&quants, &mut out[Q4_0_QS..]);
}

/// One block of Q4_1: `d = (max - min) / 15`, `m = min`,
/// `q = min(15, trunc((x - min) * id + 0.5))`.
pub(crate) fn quantize_block_q4_1(block: &[f32], out: &mut [u8]) {
    let (min, max) = block_min_max(block);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let mut quants = [0u8; QK];
    for (quant, &value) in quants.iter_mut().zip(block) {
        *quant = truncated_low_byte((value - min) * id + 0.5).min(15);
    }
    write_u16(out, D_OFFSET, f16_bits(d));
    write_u16(out, Q4_1_M, f16_bits(min));
    pack_nibbles(&quants, &mut out[Q4_1_QS..]);
}

/// One block of Q5_0: `d = max / -16`, `q = min(31, trunc(x * id + 16.5))`.
pub(crate) fn quantize_block_q5_0(block: &[f32], out: &mut [u8]) {
    let d = signed_absmax(block) / -16.0;
    let id = inverse_or_zero(d);
    let mut quants = [0u8; QK];
    for (quant, &value) in quants.iter_mut().zip(block) {
        *quant = truncated_low_byte(value * id + 16.5).min(31);
    }
    write_u16(out, D_OFFSET, f16_bits(d));
    out[Q5_0_QH..Q5_0_QH + 4].copy_from_slice(&high_bits(&quants).to_le_bytes());
    pack_nibbles(&quants, &mut out[Q5_0_QS..]);
}

/// One block of Q5_1: `d = (max - min) / 31`, `m = min`,
/// `q = min(31, trunc((x - min) * id + 0.5))`.
pub(crate) fn quantize_block_q5_1(block: &[f32], out: &mut [u8]) {
    let (min, max) = block_min_max(block);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    let mut quants = [0u8; QK];
    for (quant, &value) in quants.iter_mut().zip(block) {
        *quant = truncated_low_byte((value - min) * id + 0.5).min(31);
    }
    write_u16(out, D_OFFSET, f16_bits(d));
    write_u16(out, Q5_1_M, f16_bits(min));
    out[Q5_1_QH..Q5_1_QH + 4].copy_from_slice(&high_bits(&quants).to_le_bytes());
    pack_nibbles(&quants, &mut out[Q5_1_QS..]);
}

/// Applies a one-block quantizer to every block of `src`. Lengths are checked by the caller
/// (`super::check_row_lengths`); here they are only asserted in debug builds.
fn quantize_blocks(ty: GgmlType, src: &[f32], dst: &mut [u8], block_fn: fn(&[f32], &mut [u8])) {
    debug_assert_eq!(ty.row_bytes(src.len()), Some(dst.len()));
    for (block, out) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(ty.type_size()))
    {
        block_fn(block, out);
    }
}

/// Q8_0 for whole rows; see [`super::GgmlKernels`] for the length contract.
pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    super::check_row_lengths(GgmlType::Q8_0, src, dst);
    quantize_blocks(GgmlType::Q8_0, src, dst, quantize_block_q8_0);
}

/// Q4_0 for whole rows; see [`super::GgmlKernels`] for the length contract.
pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    super::check_row_lengths(GgmlType::Q4_0, src, dst);
    quantize_blocks(GgmlType::Q4_0, src, dst, quantize_block_q4_0);
}

/// Q4_1 for whole rows; see [`super::GgmlKernels`] for the length contract.
pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    super::check_row_lengths(GgmlType::Q4_1, src, dst);
    quantize_blocks(GgmlType::Q4_1, src, dst, quantize_block_q4_1);
}

/// Q5_0 for whole rows; see [`super::GgmlKernels`] for the length contract.
pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    super::check_row_lengths(GgmlType::Q5_0, src, dst);
    quantize_blocks(GgmlType::Q5_0, src, dst, quantize_block_q5_0);
}

/// Q5_1 for whole rows; see [`super::GgmlKernels`] for the length contract.
pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    super::check_row_lengths(GgmlType::Q5_1, src, dst);
    quantize_blocks(GgmlType::Q5_1, src, dst, quantize_block_q5_1);
}

/// F32 rows as little-endian bytes.
pub(crate) fn encode_f32(src: &[f32], dst: &mut [u8]) {
    for (bytes, value) in dst.chunks_exact_mut(4).zip(src) {
        bytes.copy_from_slice(&value.to_le_bytes());
    }
}

/// F16 rows (round to nearest even) as little-endian bytes.
pub(crate) fn encode_f16(src: &[f32], dst: &mut [u8]) {
    for (bytes, &value) in dst.chunks_exact_mut(2).zip(src) {
        bytes.copy_from_slice(&f16_bits(value).to_le_bytes());
    }
}

/// The quants of one 4-bit block, element order (nibble unpacking of [`pack_nibbles`]).
fn unpack_nibbles(qs: &[u8]) -> [u8; QK] {
    let mut quants = [0u8; QK];
    for (byte_idx, &byte) in qs[..QK / 2].iter().enumerate() {
        quants[byte_idx] = byte & 0x0f;
        quants[byte_idx + QK / 2] = byte >> 4;
    }
    quants
}

/// The quants of one 5-bit block: nibbles plus the `qh` bits.
fn unpack_five_bits(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut quants = unpack_nibbles(qs);
    for (idx, quant) in quants.iter_mut().enumerate() {
        *quant |= ((high >> idx & 1) as u8) << 4;
    }
    quants
}

/// Decodes one block into 32 floats, with gguf-py's f32 arithmetic (`d * (q - 8)`,
/// `d * q + m` unfused, ...), which equals ggml's `dequantize_row_*` without FMA contraction.
pub(crate) fn dequantize_block(ty: GgmlType, block: &[u8], out: &mut [f32]) {
    let d = f16_value(read_u16(block, D_OFFSET));
    match ty {
        GgmlType::Q8_0 => {
            for (value, &quant) in out.iter_mut().zip(&block[Q8_0_QS..Q8_0_QS + QK]) {
                *value = f32::from(quant as i8) * d;
            }
        }
        GgmlType::Q4_0 => {
            let quants = unpack_nibbles(&block[Q4_0_QS..]);
            for (value, &quant) in out.iter_mut().zip(&quants) {
                *value = d * f32::from(quant as i8 - 8);
            }
        }
        GgmlType::Q4_1 => {
            let m = f16_value(read_u16(block, Q4_1_M));
            let quants = unpack_nibbles(&block[Q4_1_QS..]);
            for (value, &quant) in out.iter_mut().zip(&quants) {
                *value = d * f32::from(quant) + m;
            }
        }
        GgmlType::Q5_0 => {
            let quants = unpack_five_bits(&block[Q5_0_QH..], &block[Q5_0_QS..]);
            for (value, &quant) in out.iter_mut().zip(&quants) {
                *value = d * f32::from(quant as i8 - 16);
            }
        }
        GgmlType::Q5_1 => {
            let m = f16_value(read_u16(block, Q5_1_M));
            let quants = unpack_five_bits(&block[Q5_1_QH..], &block[Q5_1_QS..]);
            for (value, &quant) in out.iter_mut().zip(&quants) {
                *value = d * f32::from(quant) + m;
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q4K | GgmlType::Q6K => {
            unreachable!("{ty} has no 32-element blocks")
        }
    }
}
