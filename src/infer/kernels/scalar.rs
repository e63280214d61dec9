//! Portable reference kernels: they define every result of the SIMD tables.

use super::blocks::{
    check_block_gemm_rows_shapes, check_block_gemm_shapes, check_quantize_blocks_shapes,
    BlockActsView, QK,
};
use super::{check_gemm_shapes, check_quantize_shapes, I8_MAX_CODE};

/// Independent f32 partial sums per dot product: shorter dependency chains and a smaller
/// rounding error than one running sum.
const F32_PARTIALS: usize = 8;

/// See `GemmKernels::gemm_f32`.
pub fn gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    check_gemm_shapes(a.len(), b.len(), c.len(), m, n, k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    for (a_row, c_row) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        for (b_row, out) in b.chunks_exact(k).zip(c_row.iter_mut()) {
            *out = dot_f32(a_row, b_row);
        }
    }
}

fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let mut partials = [0.0f32; F32_PARTIALS];
    let x_chunks = x.chunks_exact(F32_PARTIALS);
    let y_chunks = y.chunks_exact(F32_PARTIALS);
    let tail: f32 = x_chunks
        .remainder()
        .iter()
        .zip(y_chunks.remainder())
        .map(|(&p, &q)| p * q)
        .sum();
    for (xs, ys) in x_chunks.zip(y_chunks) {
        for ((partial, &p), &q) in partials.iter_mut().zip(xs).zip(ys) {
            *partial += p * q;
        }
    }
    partials.iter().sum::<f32>() + tail
}

/// The scale of one row: `max |x| / 127` (0 for an all-zero row). The maximum is exact, so
/// every ISA gets the same value.
pub(crate) fn row_scale(row: &[f32]) -> f32 {
    row.iter().fold(0.0f32, |max, &x| max.max(x.abs())) / I8_MAX_CODE
}

/// The int8 code of one element for a non-zero `scale`.
#[inline]
pub(crate) fn quantize_one(x: f32, scale: f32) -> i8 {
    (x / scale)
        .round_ties_even()
        .clamp(-I8_MAX_CODE, I8_MAX_CODE) as i8
}

/// See `GemmKernels::quantize_rows_i8`.
pub fn quantize_rows_i8(a: &[f32], m: usize, k: usize, q: &mut [i8], scales: &mut [f32]) {
    check_quantize_shapes(a.len(), q.len(), scales.len(), m, k);
    if k == 0 {
        scales.fill(0.0);
        return;
    }
    for ((row, q_row), scale_out) in a
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scales.iter_mut())
    {
        let scale = row_scale(row);
        *scale_out = scale;
        quantize_row_with(row, scale, q_row);
    }
}

/// Quantizes one row with a known scale (all zeros if the scale is 0). Also used for the
/// sub-vector tails of the SIMD versions, which therefore cannot disagree with this one.
pub(crate) fn quantize_row_with(row: &[f32], scale: f32, q_row: &mut [i8]) {
    if scale == 0.0 {
        q_row.fill(0);
        return;
    }
    for (out, &x) in q_row.iter_mut().zip(row) {
        *out = quantize_one(x, scale);
    }
}

/// See `GemmKernels::gemm_i8_i32`.
pub fn gemm_i8_i32(a_q: &[i8], w_q: &[i8], m: usize, n: usize, k: usize, acc: &mut [i32]) {
    check_gemm_shapes(a_q.len(), w_q.len(), acc.len(), m, n, k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        acc.fill(0);
        return;
    }
    for (a_row, acc_row) in a_q.chunks_exact(k).zip(acc.chunks_exact_mut(n)) {
        for (w_row, out) in w_q.chunks_exact(k).zip(acc_row.iter_mut()) {
            *out = dot_i8(a_row, w_row);
        }
    }
}

/// Exact integer dot product (used for the SIMD tails too).
#[inline]
pub(crate) fn dot_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter()
        .zip(y)
        .map(|(&p, &q)| i32::from(p) * i32::from(q))
        .sum()
}

/// See `GemmKernels::quantize_blocks`: `quantize_rows_i8`'s code applied to every block.
pub fn quantize_blocks(
    a: &[f32],
    m: usize,
    k: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    check_quantize_blocks_shapes(a.len(), codes.len(), scales.len(), sums.len(), m, k);
    for (((block, q_block), scale_out), sum_out) in a
        .chunks_exact(QK)
        .zip(codes.chunks_exact_mut(QK))
        .zip(scales.iter_mut())
        .zip(sums.iter_mut())
    {
        let scale = row_scale(block);
        *scale_out = scale;
        quantize_row_with(block, scale, q_block);
        *sum_out = q_block.iter().map(|&x| i32::from(x)).sum();
    }
}

/// See `GemmKernels::gemm_blocks_i8`. Defines the result: per output one f32 sum over the
/// blocks in order of `da · (d · isum + mn · s)` (`da · (d · isum)` without `mn`).
pub fn gemm_blocks_i8(
    a: BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    check_block_gemm_shapes(
        &a,
        q.len(),
        QK,
        d.len(),
        mn.map(<[f32]>::len),
        n,
        y.len(),
        ldy,
    );
    gemm_blocks_with(
        a,
        n,
        y,
        ldy,
        |j, b, a_block| {
            let w_block = &q[(j * (a.k / QK) + b) * QK..][..QK];
            let offset = mn.map(|mn| mn[j * (a.k / QK) + b]);
            (dot_i8(a_block, w_block), offset)
        },
        d,
    );
}

/// See `GemmKernels::gemm_blocks_i8_rows`. Defines the result: per output one f32 sum over the
/// blocks in order of `da · (isum as f32)`, then one multiply by `d_row[j]`.
pub fn gemm_blocks_i8_rows(
    a: BlockActsView<'_>,
    q: &[i8],
    d_row: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    check_block_gemm_rows_shapes(&a, q.len(), d_row.len(), n, y.len(), ldy);
    let nb = a.k / QK;
    for i in 0..a.m {
        let a_row = &a.codes[i * a.k..][..a.k];
        let da_row = &a.scales[i * nb..][..nb];
        for (j, &d) in d_row.iter().enumerate() {
            let w_row = &q[j * a.k..][..a.k];
            let mut sum = 0.0f32;
            for ((a_block, w_block), &da) in a_row
                .chunks_exact(QK)
                .zip(w_row.chunks_exact(QK))
                .zip(da_row)
            {
                sum += da * dot_i8(a_block, w_block) as f32;
            }
            y[i * ldy + j] = d * sum;
        }
    }
}

/// See `GemmKernels::gemm_blocks_u4`. Defines the result as [`gemm_blocks_i8`] does.
pub fn gemm_blocks_u4(
    a: BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    mn: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    check_block_gemm_shapes(
        &a,
        q.len(),
        QK / 2,
        d.len(),
        Some(mn.len()),
        n,
        y.len(),
        ldy,
    );
    gemm_blocks_with(
        a,
        n,
        y,
        ldy,
        |j, b, a_block| {
            let idx = j * (a.k / QK) + b;
            let w_block = &q[idx * (QK / 2)..][..QK / 2];
            (dot_q4(a_block, w_block), Some(mn[idx]))
        },
        d,
    );
}

/// Exact integer dot product of 32 activation codes with one Q4 block (16 bytes, element `t`
/// in the low nibble of byte `t`, element `t + 16` in the high nibble).
pub(crate) fn dot_q4(a_block: &[i8], w_block: &[u8]) -> i32 {
    let (a_lo, a_hi) = a_block.split_at(QK / 2);
    w_block
        .iter()
        .zip(a_lo.iter().zip(a_hi))
        .map(|(&byte, (&lo, &hi))| {
            i32::from(byte & 0x0f) * i32::from(lo) + i32::from(byte >> 4) * i32::from(hi)
        })
        .sum()
}

/// The shared loop of the scalar block GEMMs; `block(j, b, a_block)` returns the exact
/// integer sum of weight row `j`'s block `b` with `a_block`, and that block's `mn` if any.
fn gemm_blocks_with(
    a: BlockActsView<'_>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
    block: impl Fn(usize, usize, &[i8]) -> (i32, Option<f32>),
    d: &[f32],
) {
    let nb = a.k / QK;
    for i in 0..a.m {
        let a_row = &a.codes[i * a.k..][..a.k];
        for j in 0..n {
            let mut sum = 0.0f32;
            for (b, a_block) in a_row.chunks_exact(QK).enumerate() {
                let (isum, offset) = block(j, b, a_block);
                let da = a.scales[i * nb + b];
                let weighted = d[j * nb + b] * isum as f32;
                let inner = match offset {
                    Some(mn) => weighted + mn * a.sums[i * nb + b] as f32,
                    None => weighted,
                };
                sum += da * inner;
            }
            y[i * ldy + j] = sum;
        }
    }
}
