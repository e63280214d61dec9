//! x86_64 kernel tables: AVX2 (+FMA) and AVX-512 (F + BW).
//!
//! The `unsafe fn`s in `avx2.rs` and `avx512.rs` are compiled with `#[target_feature]`, so the
//! crate still builds for the baseline x86_64 CPU. The safe wrappers below are private and only
//! reachable through [`AVX2`] and [`AVX512`], which `kernels::available` / `kernels::select`
//! hand out only after [`avx2_supported`] / [`avx512_supported`] returned true. That is the
//! invariant every `SAFETY:` comment in this file relies on; debug builds re-check it on every
//! call. Each wrapper checks the shapes before calling in, which the SIMD code's pointer
//! arithmetic relies on.

mod avx2;
mod avx512;

use super::{check_gemm_shapes, check_quantize_shapes, GemmKernels};

/// Whether the CPU runs the AVX2 table (AVX2 for the integer lanes, FMA for the f32 GEMM).
pub(super) fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether the CPU runs the AVX-512 table (F for the f32 lanes, BW for the 16-bit integer
/// multiply-adds and the byte packs).
pub(super) fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

pub(super) static AVX2: GemmKernels = GemmKernels {
    isa: "avx2",
    gemm_f32: avx2_gemm_f32,
    quantize_rows_i8: avx2_quantize_rows_i8,
    gemm_i8_i32: avx2_gemm_i8_i32,
};

pub(super) static AVX512: GemmKernels = GemmKernels {
    isa: "avx512",
    gemm_f32: avx512_gemm_f32,
    quantize_rows_i8: avx512_quantize_rows_i8,
    gemm_i8_i32: avx512_gemm_i8_i32,
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
