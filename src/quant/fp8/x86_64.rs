//! AVX2 and AVX-512 versions of the scaled FP8 encoder.
//!
//! Each lane computes `codec::encode_with(x / scale)` with the same operations: an IEEE
//! division, integer round-half-even on the rebiased bit pattern for normal results, an exact
//! multiply and a ties-to-even conversion for subnormal ones, an unsigned minimum for
//! saturation and a select for NaN. Fewer than one step of values at the end go through the
//! scalar encoder.
//!
//! Safety model, as in `kernels::x86_64`: the `unsafe fn`s are compiled with
//! `#[target_feature]`, their safe wrappers sit only in the private tables below, and
//! [`table`] hands a table out only after run-time detection confirmed its features.

use std::arch::x86_64::*;

use super::codec::{encode_with, FormatSpec};
use super::{Fp8Format, Fp8Kernels};
use crate::quant::kernels::Isa;

/// To nearest, ties to even, independent of MXCSR, without exceptions.
const ROUND_NEAREST_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

static AVX2: Fp8Kernels = Fp8Kernels {
    isa: Isa::Avx2,
    encode_scaled: avx2_encode_scaled,
};

static AVX512: Fp8Kernels = Fp8Kernels {
    isa: Isa::Avx512,
    encode_scaled: avx512_encode_scaled,
};

/// The table for `isa` if this module has one and the CPU runs it.
pub(super) fn table(isa: Isa) -> Option<&'static Fp8Kernels> {
    match isa {
        Isa::Avx512 if avx512_supported() => Some(&AVX512),
        Isa::Avx2 if avx2_supported() => Some(&AVX2),
        _ => None,
    }
}

fn avx2_encode_scaled(src: &[f32], scale: f32, format: Fp8Format, dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "encode_scaled: lengths");
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, which `table` returns after `avx2_supported()`;
    // the lengths were checked just above.
    unsafe { avx2_encode(src, scale, format.spec(), dst) }
}

fn avx512_encode_scaled(src: &[f32], scale: f32, format: Fp8Format, dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "encode_scaled: lengths");
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, which `table` returns after
    // `avx512_supported()`; the lengths were checked just above.
    unsafe { avx512_encode(src, scale, format.spec(), dst) }
}

/// Values per AVX2 iteration: four vectors narrowed into one 32-byte store.
const AVX2_STEP: usize = 32;

/// `encode_with` on 8 lanes of already scaled values; codes as i32 lanes.
#[target_feature(enable = "avx2")]
fn avx2_codes(x: __m256, spec: FormatSpec) -> __m256i {
    let shift = _mm_cvtsi32_si128(spec.shift() as i32);
    let bits = _mm256_castps_si256(x);
    let sign = _mm256_and_si256(_mm256_srli_epi32::<24>(bits), _mm256_set1_epi32(0x80));
    let magnitude_bits = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFF_FFFF));
    // Signed compare is fine: magnitude bit patterns are non-negative as i32.
    let is_nan = _mm256_cmpgt_epi32(magnitude_bits, _mm256_set1_epi32(0x7F80_0000));
    let magnitude = _mm256_castsi256_ps(magnitude_bits);
    let min_normal = _mm256_set1_ps(spec.min_normal());
    let is_subnormal = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(magnitude, min_normal));
    let units = _mm256_mul_ps(magnitude, _mm256_set1_ps(spec.subnormal_scale()));
    // Only used where `is_subnormal` (units <= 2^mantissa_bits): the conversion is exact.
    let subnormal = _mm256_cvttps_epi32(_mm256_round_ps::<ROUND_NEAREST_EVEN>(units));
    let rebiased = _mm256_sub_epi32(magnitude_bits, _mm256_set1_epi32(spec.rebias() as i32));
    let odd = _mm256_and_si256(_mm256_srl_epi32(rebiased, shift), _mm256_set1_epi32(1));
    let half_minus_one = _mm256_set1_epi32((1 << (spec.shift() - 1)) - 1);
    let rounded = _mm256_add_epi32(_mm256_add_epi32(rebiased, half_minus_one), odd);
    let normal = _mm256_srl_epi32(rounded, shift);
    let code = _mm256_blendv_epi8(normal, subnormal, is_subnormal);
    let code = _mm256_min_epu32(code, _mm256_set1_epi32(spec.max_code as i32));
    let code = _mm256_blendv_epi8(code, _mm256_set1_epi32(spec.nan_code as i32), is_nan);
    _mm256_or_si256(sign, code)
}

/// # Safety
/// The CPU must support AVX2, and `src.len() == dst.len()`.
#[target_feature(enable = "avx2")]
unsafe fn avx2_encode(src: &[f32], scale: f32, spec: FormatSpec, dst: &mut [u8]) {
    let scale_vector = _mm256_set1_ps(scale);
    // After the 32-to-8-bit packs the dwords of the four vectors are interleaved by lane.
    let dword_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut src_steps = src.chunks_exact(AVX2_STEP);
    let mut dst_steps = dst.chunks_exact_mut(AVX2_STEP);
    for (values, bytes) in (&mut src_steps).zip(&mut dst_steps) {
        let mut codes = [_mm256_setzero_si256(); 4];
        for (vector_idx, lane) in codes.iter_mut().enumerate() {
            // SAFETY: `values` holds 32 floats, so the 8 at vector_idx * 8 are in bounds;
            // loadu has no alignment requirement.
            let x = unsafe { _mm256_loadu_ps(values.as_ptr().add(vector_idx * 8)) };
            *lane = avx2_codes(_mm256_div_ps(x, scale_vector), spec);
        }
        // Codes are 0..=255, so the unsigned saturating packs are exact.
        let low = _mm256_packus_epi32(codes[0], codes[1]);
        let high = _mm256_packus_epi32(codes[2], codes[3]);
        let ordered = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(low, high), dword_order);
        // SAFETY: `bytes` holds 32 bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), ordered) };
    }
    for (byte, &x) in dst_steps
        .into_remainder()
        .iter_mut()
        .zip(src_steps.remainder())
    {
        *byte = encode_with(x / scale, spec);
    }
}

/// Values per AVX-512 iteration: one vector, one 16-byte store.
const AVX512_STEP: usize = 16;

/// `encode_with` on 16 lanes of already scaled values; codes as i32 lanes.
#[target_feature(enable = "avx512f")]
fn avx512_codes(x: __m512, spec: FormatSpec) -> __m512i {
    let shift = _mm_cvtsi32_si128(spec.shift() as i32);
    let bits = _mm512_castps_si512(x);
    let sign = _mm512_and_si512(_mm512_srli_epi32::<24>(bits), _mm512_set1_epi32(0x80));
    let magnitude_bits = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFF_FFFF));
    let is_nan = _mm512_cmpgt_epu32_mask(magnitude_bits, _mm512_set1_epi32(0x7F80_0000));
    let magnitude = _mm512_castsi512_ps(magnitude_bits);
    let min_normal = _mm512_set1_ps(spec.min_normal());
    let is_subnormal = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(magnitude, min_normal);
    let units = _mm512_mul_ps(magnitude, _mm512_set1_ps(spec.subnormal_scale()));
    let subnormal = _mm512_cvt_roundps_epi32::<ROUND_NEAREST_EVEN>(units);
    let rebiased = _mm512_sub_epi32(magnitude_bits, _mm512_set1_epi32(spec.rebias() as i32));
    let odd = _mm512_and_si512(_mm512_srl_epi32(rebiased, shift), _mm512_set1_epi32(1));
    let half_minus_one = _mm512_set1_epi32((1 << (spec.shift() - 1)) - 1);
    let rounded = _mm512_add_epi32(_mm512_add_epi32(rebiased, half_minus_one), odd);
    let normal = _mm512_srl_epi32(rounded, shift);
    let code = _mm512_mask_blend_epi32(is_subnormal, normal, subnormal);
    let code = _mm512_min_epu32(code, _mm512_set1_epi32(spec.max_code as i32));
    let code = _mm512_mask_blend_epi32(is_nan, code, _mm512_set1_epi32(spec.nan_code as i32));
    _mm512_or_si512(sign, code)
}

/// # Safety
/// The CPU must support AVX-512F, and `src.len() == dst.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_encode(src: &[f32], scale: f32, spec: FormatSpec, dst: &mut [u8]) {
    let scale_vector = _mm512_set1_ps(scale);
    let mut src_steps = src.chunks_exact(AVX512_STEP);
    let mut dst_steps = dst.chunks_exact_mut(AVX512_STEP);
    for (values, bytes) in (&mut src_steps).zip(&mut dst_steps) {
        // SAFETY: `values` holds 16 floats; loadu has no alignment requirement.
        let x = unsafe { _mm512_loadu_ps(values.as_ptr()) };
        let codes = avx512_codes(_mm512_div_ps(x, scale_vector), spec);
        // SAFETY: `bytes` holds 16 bytes, exactly one 128-bit store; no alignment requirement.
        unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(codes)) };
    }
    for (byte, &x) in dst_steps
        .into_remainder()
        .iter_mut()
        .zip(src_steps.remainder())
    {
        *byte = encode_with(x / scale, spec);
    }
}
