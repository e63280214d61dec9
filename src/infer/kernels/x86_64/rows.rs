//! Activation quantizers (`quantize_rows_i8`, `quantize_blocks`) written once for AVX2 and
//! AVX-512 over [`RowLanes`], as `dot.rs` does for the GEMMs: the per-row bookkeeping is here,
//! the vector code (an exact absolute maximum and one row's codes) stays in each ISA's file.
//! Scales and codes are bit-identical to the scalar twins on every ISA.

use crate::infer::kernels::blocks::QK;
use crate::infer::kernels::I8_MAX_CODE;

/// The vector parts of symmetric int8 quantization, for one ISA (implemented by the proof
/// tokens `avx2::Avx2` and `avx512::Avx512`).
pub(super) trait RowLanes: Copy {
    /// `max |x|` of a row; exact, so equal to the scalar one for finite input.
    fn absmax(self, row: &[f32]) -> f32;
    /// Quantizes one row with a non-zero scale; bit-identical to `scalar::quantize_row_with`.
    fn quantize_row(self, row: &[f32], scale: f32, q_row: &mut [i8]);
}

/// See `GemmKernels::quantize_rows_i8`; shapes checked with `check_quantize_shapes`.
#[inline(always)]
pub(super) fn quantize_rows_i8<S: RowLanes>(
    isa: S,
    a: &[f32],
    m: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) {
    if k == 0 {
        scales.fill(0.0);
        return;
    }
    debug_assert_eq!(a.len(), m * k);
    for ((row, q_row), scale_out) in a
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scales.iter_mut())
    {
        let scale = isa.absmax(row) / I8_MAX_CODE;
        *scale_out = scale;
        if scale == 0.0 {
            q_row.fill(0);
        } else {
            isa.quantize_row(row, scale, q_row);
        }
    }
}

/// See `GemmKernels::quantize_blocks`: the per-row code of `quantize_rows_i8` applied to every
/// 32-element block, so scales and codes are bit-identical to `scalar::quantize_blocks`.
/// Shapes checked with `check_quantize_blocks_shapes`.
#[inline(always)]
pub(super) fn quantize_blocks<S: RowLanes>(
    isa: S,
    a: &[f32],
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    for (((block, q_block), scale_out), sum_out) in a
        .chunks_exact(QK)
        .zip(codes.chunks_exact_mut(QK))
        .zip(scales.iter_mut())
        .zip(sums.iter_mut())
    {
        let scale = isa.absmax(block) / I8_MAX_CODE;
        *scale_out = scale;
        if scale == 0.0 {
            q_block.fill(0);
            *sum_out = 0;
        } else {
            isa.quantize_row(block, scale, q_block);
            *sum_out = q_block.iter().map(|&x| i32::from(x)).sum();
        }
    }
}
