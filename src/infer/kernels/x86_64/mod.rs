//! x86_64 kernel tables: AVX2 (+FMA), AVX-512 (F + BW) and AVX-512 VNNI (F + BW + VL + VNNI).
//!
//! The dot-product GEMMs and the activation quantizers are written once (`dot.rs`, `rows.rs`)
//! over small vector traits that `avx2.rs` and `avx512.rs` implement; the packed AVX-512 f32
//! path, the block GEMMs (`avx2_blocks.rs`, shared by the AVX2 and AVX-512 tables) and the VNNI
//! kernels (`vnni.rs`) are per ISA.
//!
//! The `unsafe fn`s in `avx2.rs`, `avx2_blocks.rs`, `avx512.rs` and `vnni.rs` are compiled with
//! `#[target_feature]`, so the crate still builds for the baseline x86_64 CPU. The safe wrappers
//! below are private and only reachable through [`AVX2`], [`AVX512`] and [`AVX512_VNNI`], which
//! `kernels::available` / `kernels::select` hand out only after [`avx2_supported`] /
//! [`avx512_supported`] / [`avx512_vnni_supported`] returned true (each of which implies the
//! previous one, so a table may reuse the kernels of a lower one). That is the
//! invariant every `SAFETY:` comment in this file relies on; debug builds re-check it on every
//! call. Each wrapper checks the shapes before calling in, which the SIMD code's pointer
//! arithmetic relies on.

mod avx2;
mod avx2_blocks;
mod avx512;
mod dot;
mod rows;
mod vnni;

use super::blocks::{
    begin_block_gemm, begin_block_gemm_rows, check_quantize_blocks_shapes, BlockActsView, QK,
};
use super::{check_gemm_shapes, check_quantize_shapes, GemmIsa, GemmKernels};

/// Whether the CPU runs the AVX2 table (AVX2 for the integer lanes, FMA for the f32 GEMM).
pub(super) fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether the CPU runs the AVX-512 table (F for the f32 lanes, BW for the 16-bit integer
/// multiply-adds and the byte packs; AVX2 + FMA, present on every AVX-512 CPU, for the block
/// kernels it shares with the AVX2 table).
pub(super) fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && avx2_supported()
}

/// Whether the CPU runs the AVX-512 VNNI table (`vpdpbusd`, in 256-bit form (VL) for the block
/// kernels), on top of everything the AVX-512 table needs.
pub(super) fn avx512_vnni_supported() -> bool {
    avx512_supported()
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

pub(super) static AVX2: GemmKernels = GemmKernels {
    isa: GemmIsa::Avx2,
    gemm_f32: avx2_gemm_f32,
    quantize_rows_i8: avx2_quantize_rows_i8,
    gemm_i8_i32: avx2_gemm_i8_i32,
    quantize_blocks: avx2_quantize_blocks,
    gemm_blocks_i8: avx2_gemm_blocks_i8,
    gemm_blocks_u4: avx2_gemm_blocks_u4,
    gemm_blocks_i8_rows: avx2_gemm_blocks_i8_rows,
};

pub(super) static AVX512: GemmKernels = GemmKernels {
    isa: GemmIsa::Avx512,
    gemm_f32: avx512_gemm_f32,
    quantize_rows_i8: avx512_quantize_rows_i8,
    gemm_i8_i32: avx512_gemm_i8_i32,
    quantize_blocks: avx512_quantize_blocks,
    gemm_blocks_i8: avx512_gemm_blocks_i8,
    gemm_blocks_u4: avx512_gemm_blocks_u4,
    gemm_blocks_i8_rows: avx512_gemm_blocks_i8_rows,
};

/// AVX-512 with `vpdpbusd`: its own int8 GEMMs, the AVX-512 f32 GEMM and quantizers.
pub(super) static AVX512_VNNI: GemmKernels = GemmKernels {
    isa: GemmIsa::Avx512Vnni,
    gemm_f32: avx512_gemm_f32,
    quantize_rows_i8: avx512_quantize_rows_i8,
    gemm_i8_i32: vnni_gemm_i8_i32,
    quantize_blocks: avx512_quantize_blocks,
    gemm_blocks_i8: vnni_gemm_blocks_i8,
    gemm_blocks_u4: vnni_gemm_blocks_u4,
    gemm_blocks_i8_rows: vnni_gemm_blocks_i8_rows,
};

fn avx2_gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    check_gemm_shapes(a.len(), b.len(), c.len(), m, n, k);
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx2::gemm_f32(a, b, m, n, k, c) }
}

fn avx2_quantize_rows_i8(a: &[f32], m: usize, k: usize, q: &mut [i8], scales: &mut [f32]) {
    check_quantize_shapes(a.len(), q.len(), scales.len(), m, k);
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx2::quantize_rows_i8(a, m, k, q, scales) }
}

fn avx2_gemm_i8_i32(a_q: &[i8], w_q: &[i8], m: usize, n: usize, k: usize, acc: &mut [i32]) {
    check_gemm_shapes(a_q.len(), w_q.len(), acc.len(), m, n, k);
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx2::gemm_i8_i32(a_q, w_q, m, n, k, acc) }
}

fn avx512_gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    check_gemm_shapes(a.len(), b.len(), c.len(), m, n, k);
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx512::gemm_f32(a, b, m, n, k, c) }
}

fn avx512_quantize_rows_i8(a: &[f32], m: usize, k: usize, q: &mut [i8], scales: &mut [f32]) {
    check_quantize_shapes(a.len(), q.len(), scales.len(), m, k);
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx512::quantize_rows_i8(a, m, k, q, scales) }
}

fn avx512_gemm_i8_i32(a_q: &[i8], w_q: &[i8], m: usize, n: usize, k: usize, acc: &mut [i32]) {
    check_gemm_shapes(a_q.len(), w_q.len(), acc.len(), m, n, k);
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx512::gemm_i8_i32(a_q, w_q, m, n, k, acc) }
}

fn avx2_quantize_blocks(
    a: &[f32],
    m: usize,
    k: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    check_quantize_blocks_shapes(a.len(), codes.len(), scales.len(), sums.len(), m, k);
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx2::quantize_blocks(a, codes, scales, sums) }
}

fn avx2_gemm_blocks_i8(
    a: BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx2_supported());
    begin_block_gemm(avx2_gemm_f32, &a, (q.len(), QK), d.len(), mn, n, y, ldy);
    // SAFETY: only reachable through `AVX2` and `AVX512`, handed out after `avx2_supported()`
    // (implied by `avx512_supported()`, module docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_i8(&a, q, d, n, y, ldy) }
}

fn avx2_gemm_blocks_u4(
    a: BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    mn: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx2_supported());
    begin_block_gemm(
        avx2_gemm_f32,
        &a,
        (q.len(), QK / 2),
        d.len(),
        Some(mn),
        n,
        y,
        ldy,
    );
    // SAFETY: only reachable through `AVX2` and `AVX512`, handed out after `avx2_supported()`
    // (implied by `avx512_supported()`, module docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_u4(&a, q, d, n, y, ldy) }
}

fn avx512_quantize_blocks(
    a: &[f32],
    m: usize,
    k: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    check_quantize_blocks_shapes(a.len(), codes.len(), scales.len(), sums.len(), m, k);
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512` and `AVX512_VNNI`, handed out after
    // `avx512_supported()` (module docs); the shapes were checked just above.
    unsafe { avx512::quantize_blocks(a, codes, scales, sums) }
}

fn avx512_gemm_blocks_i8(
    a: BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_supported());
    begin_block_gemm(avx512_gemm_f32, &a, (q.len(), QK), d.len(), mn, n, y, ldy);
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`, which
    // implies `avx2_supported()` (module docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_i8(&a, q, d, n, y, ldy) }
}

fn avx512_gemm_blocks_u4(
    a: BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    mn: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_supported());
    begin_block_gemm(
        avx512_gemm_f32,
        &a,
        (q.len(), QK / 2),
        d.len(),
        Some(mn),
        n,
        y,
        ldy,
    );
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`, which
    // implies `avx2_supported()` (module docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_u4(&a, q, d, n, y, ldy) }
}

fn vnni_gemm_i8_i32(a_q: &[i8], w_q: &[i8], m: usize, n: usize, k: usize, acc: &mut [i32]) {
    check_gemm_shapes(a_q.len(), w_q.len(), acc.len(), m, n, k);
    debug_assert!(avx512_vnni_supported());
    // SAFETY: only reachable through `AVX512_VNNI`, handed out after
    // `avx512_vnni_supported()` (module docs); the shapes were checked just above.
    unsafe { vnni::gemm_i8_i32(a_q, w_q, m, n, k, acc) }
}

fn vnni_gemm_blocks_i8(
    a: BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_vnni_supported());
    begin_block_gemm(avx512_gemm_f32, &a, (q.len(), QK), d.len(), mn, n, y, ldy);
    // SAFETY: only reachable through `AVX512_VNNI`, handed out after
    // `avx512_vnni_supported()` (module docs); the shapes were checked just above.
    unsafe { vnni::gemm_blocks_i8(&a, q, d, n, y, ldy) }
}

fn vnni_gemm_blocks_u4(
    a: BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    mn: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_vnni_supported());
    begin_block_gemm(
        avx512_gemm_f32,
        &a,
        (q.len(), QK / 2),
        d.len(),
        Some(mn),
        n,
        y,
        ldy,
    );
    // SAFETY: only reachable through `AVX512_VNNI`, handed out after
    // `avx512_vnni_supported()` (module docs); the shapes were checked just above.
    unsafe { vnni::gemm_blocks_u4(&a, q, d, n, y, ldy) }
}

fn avx2_gemm_blocks_i8_rows(
    a: BlockActsView<'_>,
    q: &[i8],
    d_row: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx2_supported());
    begin_block_gemm_rows(&a, q.len(), d_row.len(), n, y, ldy);
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module
    // docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_i8_rows(&a, q, d_row, n, y, ldy) }
}

fn avx512_gemm_blocks_i8_rows(
    a: BlockActsView<'_>,
    q: &[i8],
    d_row: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_supported());
    begin_block_gemm_rows(&a, q.len(), d_row.len(), n, y, ldy);
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`, which
    // implies `avx2_supported()` (module docs); the shapes were checked just above.
    unsafe { avx2_blocks::gemm_blocks_i8_rows(&a, q, d_row, n, y, ldy) }
}

fn vnni_gemm_blocks_i8_rows(
    a: BlockActsView<'_>,
    q: &[i8],
    d_row: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    debug_assert!(avx512_vnni_supported());
    begin_block_gemm_rows(&a, q.len(), d_row.len(), n, y, ldy);
    // SAFETY: only reachable through `AVX512_VNNI`, handed out after
    // `avx512_vnni_supported()` (module docs); the shapes were checked just above.
    unsafe { vnni::gemm_blocks_i8_rows(&a, q, d_row, n, y, ldy) }
}
