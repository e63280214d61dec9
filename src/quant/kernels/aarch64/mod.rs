//! aarch64 kernel table: Advanced SIMD (NEON).
//!
//! NEON is part of the aarch64 baseline on every Linux target we build for, but it is still
//! detected at run time so the dispatch rules are the same as on x86_64: the private safe
//! wrappers below are reachable only through [`NEON`], which `kernels::select` hands out only
//! after [`neon_supported`] returned true.
//!
//! This file and `neon.rs` cannot be compiled on the x86_64 development machines; they are kept
//! deliberately small and mirror `x86_64/avx2.rs` step for step.

mod neon;

use super::{ErrorStats, I8Params, Isa, Kernels};

/// Whether the CPU runs the NEON table.
pub(super) fn neon_supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub(super) static NEON: Kernels = Kernels {
    isa: Isa::Neon,
    absmax: neon_absmax,
    min_max: neon_min_max,
    quantize_i8: neon_quantize_i8,
    quantize_i8_streaming: neon_quantize_i8_streaming,
};

fn neon_absmax(src: &[f32]) -> f32 {
    debug_assert!(neon_supported());
    // SAFETY: only reachable through `NEON`, handed out after `neon_supported()` (module docs).
    unsafe { neon::absmax(src) }
}

fn neon_min_max(src: &[f32]) -> (f32, f32) {
    debug_assert!(neon_supported());
    // SAFETY: only reachable through `NEON`, handed out after `neon_supported()` (module docs).
    unsafe { neon::min_max(src) }
}

/// The streaming hints are ignored: kept minimal, see the module docs.
fn neon_quantize_i8_streaming(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    _prefetch: &[f32],
) -> ErrorStats {
    neon_quantize_i8(src, params, dst)
}

fn neon_quantize_i8(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    debug_assert!(neon_supported());
    // SAFETY: only reachable through `NEON`, handed out after `neon_supported()`; the lengths
    // were checked just above.
    unsafe { neon::quantize_i8(src, params, dst) }
}
