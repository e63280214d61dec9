//! Decoding of two k-quant types, Q4_K and Q6_K (256-element super-blocks), for reading GGUF
//! files made by llama.cpp. quantd does not write these types.
//!
//! Layouts: `block_q4_K` and `block_q6_K` of ggml's `ggml-common.h`. Arithmetic: gguf-py's
//! `Q4_K.dequantize_blocks` / `Q6_K.dequantize_blocks` (`gguf/quants.py`), which match ggml's
//! `dequantize_row_q4_K` / `dequantize_row_q6_K` in `ggml-quants.c`: the sub-block scale is
//! formed first (`d * sc`, `dmin * m` in f32), then applied to the quant, unfused.

use std::mem::{offset_of, size_of};

use super::scalar::f16_value;

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
