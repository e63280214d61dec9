//! aarch64 quantizer table: Advanced SIMD (NEON).
//!
//! NEON is part of the aarch64 baseline, but it is still detected at run time so the dispatch
//! rules are the same as on x86_64: the private safe wrappers below are reachable only through
//! [`NEON`], which `ggml::select` hands out only after [`neon_supported`] returned true. Each
//! wrapper checks the slice lengths before entering SIMD code.

mod neon;

use crate::quant::ggml::{check_row_lengths, GgmlKernels, GgmlType};
use crate::quant::kernels::Isa;

/// Whether the CPU runs the NEON table.
pub(super) fn neon_supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub(super) static NEON: GgmlKernels = GgmlKernels {
    isa: Isa::Neon,
    quantize_q8_0: neon_q8_0,
    quantize_q4_0: neon_q4_0,
    quantize_q4_1: neon_q4_1,
    quantize_q5_0: neon_q5_0,
    quantize_q5_1: neon_q5_1,
};

/// One safe wrapper per type: check the lengths, then enter the SIMD code.
macro_rules! safe_wrappers {
    ($($name:ident => $ty:expr),+ $(,)?) => {$(
        fn $name(src: &[f32], dst: &mut [u8]) {
            check_row_lengths($ty, src, dst);
            debug_assert!(neon_supported());
            // SAFETY: only reachable through `NEON`, handed out after `neon_supported()`
            // (module docs); the lengths were checked just above.
            unsafe { neon::quantize($ty, src, dst) }
        }
    )+};
}

safe_wrappers!(
    neon_q8_0 => GgmlType::Q8_0,
    neon_q4_0 => GgmlType::Q4_0,
    neon_q4_1 => GgmlType::Q4_1,
    neon_q5_0 => GgmlType::Q5_0,
    neon_q5_1 => GgmlType::Q5_1,
);
