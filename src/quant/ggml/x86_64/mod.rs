//! x86_64 quantizer tables: AVX2 (+F16C) and AVX-512 (F + BW).
//!
//! The `unsafe fn`s in `avx2.rs` and `avx512.rs` are compiled with `#[target_feature]`, so the
//! crate still builds for the baseline x86_64 CPU. The safe wrappers below are private and only
//! reachable through [`AVX2`] and [`AVX512`], which `ggml::select` hands out only after
//! [`avx2_supported`] / [`avx512_supported`] returned true. That is the invariant every
//! `SAFETY:` comment in this file relies on; debug builds re-check it on every call. Each
//! wrapper checks the slice lengths before entering SIMD code.

mod avx2;
mod avx512;

use crate::quant::ggml::{check_row_lengths, GgmlKernels, GgmlType};
use crate::quant::kernels::Isa;

/// Whether the CPU runs the AVX2 table: AVX2 for the arithmetic, F16C for converting 8 scales
/// to f16 at once.
pub(super) fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

/// Whether the CPU runs the AVX-512 table: F for the arithmetic, masks, `vpmovdb` and the f16
/// conversion; BW is required so that the table means the same CPUs as the int8 one.
pub(super) fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

pub(super) static AVX2: GgmlKernels = GgmlKernels {
    isa: Isa::Avx2,
    quantize_q8_0: avx2_q8_0,
    quantize_q4_0: avx2_q4_0,
    quantize_q4_1: avx2_q4_1,
    quantize_q5_0: avx2_q5_0,
    quantize_q5_1: avx2_q5_1,
};

pub(super) static AVX512: GgmlKernels = GgmlKernels {
    isa: Isa::Avx512,
    quantize_q8_0: avx512_q8_0,
    quantize_q4_0: avx512_q4_0,
    quantize_q4_1: avx512_q4_1,
    quantize_q5_0: avx512_q5_0,
    quantize_q5_1: avx512_q5_1,
};

/// One safe wrapper per type and ISA: check the lengths, then enter the SIMD code.
macro_rules! safe_wrappers {
    ($isa:ident, $supported:ident: $($name:ident => $ty:expr),+ $(,)?) => {$(
        fn $name(src: &[f32], dst: &mut [u8]) {
            check_row_lengths($ty, src, dst);
            debug_assert!($supported());
            // SAFETY: only reachable through this ISA's table, handed out after the detection
            // function returned true (module docs); the lengths were checked just above.
            unsafe { $isa::quantize($ty, src, dst) }
        }
    )+};
}

safe_wrappers!(avx2, avx2_supported:
    avx2_q8_0 => GgmlType::Q8_0,
    avx2_q4_0 => GgmlType::Q4_0,
    avx2_q4_1 => GgmlType::Q4_1,
    avx2_q5_0 => GgmlType::Q5_0,
    avx2_q5_1 => GgmlType::Q5_1,
);

safe_wrappers!(avx512, avx512_supported:
    avx512_q8_0 => GgmlType::Q8_0,
    avx512_q4_0 => GgmlType::Q4_0,
    avx512_q4_1 => GgmlType::Q4_1,
    avx512_q5_0 => GgmlType::Q5_0,
    avx512_q5_1 => GgmlType::Q5_1,
);
