//! x86_64 kernel tables: AVX2 (+FMA) and AVX-512 (F + BW + DQ).
//!
//! The `unsafe fn`s in `avx2.rs` and `avx512.rs` are compiled with `#[target_feature]`, so the
//! crate still builds for the baseline x86_64 CPU. The safe wrappers below are private and only
//! reachable through [`AVX2`] and [`AVX512`], which `kernels::select` hands out only after
//! [`avx2_supported`] / [`avx512_supported`] returned true. That is the invariant every
//! `SAFETY:` comment in this file relies on; debug builds re-check it on every call.

mod avx2;
mod avx512;

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

use super::{ErrorStats, I8Params, Isa, Kernels, STATS_BLOCK};

/// Whether the CPU runs the AVX2 table (AVX2 for the integer and float lanes, FMA for the
/// accumulations).
pub(super) fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether the CPU runs the AVX-512 table (F for the arithmetic and masked tails, BW for the
/// 16-bit and 8-bit packs, DQ for the one-instruction absolute maximum). Every AVX-512 server
/// CPU since Skylake-SP has all three.
pub(super) fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
}

pub(super) static AVX2: Kernels = Kernels {
    isa: Isa::Avx2,
    absmax: avx2_absmax,
    min_max: avx2_min_max,
    quantize_i8: avx2_quantize_i8,
    quantize_i8_streaming: avx2_quantize_i8_streaming,
};

pub(super) static AVX512: Kernels = Kernels {
    isa: Isa::Avx512,
    absmax: avx512_absmax,
    min_max: avx512_min_max,
    quantize_i8: avx512_quantize_i8,
    quantize_i8_streaming: avx512_quantize_i8_streaming,
};

fn avx2_absmax(src: &[f32]) -> f32 {
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module docs).
    unsafe { avx2::absmax(src) }
}

fn avx2_min_max(src: &[f32]) -> (f32, f32) {
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module docs).
    unsafe { avx2::min_max(src) }
}

fn avx2_quantize_i8(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()`
    // (module docs); the lengths were checked just above.
    unsafe { avx2::quantize_i8::<false>(src, params, dst, &[]) }
}

fn avx2_quantize_i8_streaming(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    prefetch: &[f32],
) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, handed out after `avx2_supported()` (module docs);
    // the lengths were checked just above.
    unsafe { avx2::quantize_i8::<true>(src, params, dst, prefetch) }
}

fn avx512_absmax(src: &[f32]) -> f32 {
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`.
    unsafe { avx512::absmax(src) }
}

fn avx512_min_max(src: &[f32]) -> (f32, f32) {
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`.
    unsafe { avx512::min_max(src) }
}

fn avx512_quantize_i8(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`
    // (module docs); the lengths were checked just above.
    unsafe { avx512::quantize_i8::<false>(src, params, dst, &[]) }
}

fn avx512_quantize_i8_streaming(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    prefetch: &[f32],
) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, handed out after `avx512_supported()`; the
    // lengths were checked just above.
    unsafe { avx512::quantize_i8::<true>(src, params, dst, prefetch) }
}

/// The part of `prefetch` that lines up with stats block `block_idx` of the source.
fn prefetch_block(prefetch: &[f32], block_idx: usize) -> &[f32] {
    let start = (block_idx * STATS_BLOCK).min(prefetch.len());
    let end = (start + STATS_BLOCK).min(prefetch.len());
    &prefetch[start..end]
}

/// Hints every cache line of `values` into L1. Prefetches never fault and change no result.
/// (SSE is part of every x86_64 CPU and implied by AVX2 and AVX-512, the only callers.)
#[target_feature(enable = "sse")]
#[inline]
fn prefetch_lines(values: &[f32]) {
    // 16 floats per 64-byte line; an unaligned slice may miss a partial line, which is fine
    // for a hint.
    for line in values.chunks(16) {
        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
    }
}
