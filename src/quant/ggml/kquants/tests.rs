//! Properties of the k-quant codecs that need no oracle: ggml's rounding, hand-computed blocks,
//! zero blocks, round-trip error bounds, and no panic on any input. Byte equality with ggml is
//! `tests/api/ggml_oracle.rs`'s job.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn q6_k_bytes(values: &[f32]) -> Vec<u8> {
    let mut blocks = vec![0u8; values.len() / QK_K * size_of::<BlockQ6K>()];
    quantize_q6_k(values, &mut blocks);
    blocks
}

fn q4_k_bytes(values: &[f32]) -> Vec<u8> {
    let mut blocks = vec![0u8; values.len() / QK_K * size_of::<BlockQ4K>()];
    quantize_q4_k(values, &mut blocks);
    blocks
}

fn decoded(decode: fn(&[u8], &mut [f32]), blocks: &[u8], len: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; len];
    decode(blocks, &mut values);
    values
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normal_values(seed: u64, len: usize, sigma: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| sigma * normal(&mut rng)).collect()
}

fn relative_rmse(original: &[f32], decoded: &[f32]) -> f64 {
    let error: f64 = original
        .iter()
        .zip(decoded)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let energy: f64 = original.iter().map(|&a| f64::from(a).powi(2)).sum();
    (error / energy).sqrt()
}

#[test]
fn nearest_int_rounds_half_to_even_like_the_fpu() {
    let cases = [
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (-0.5, 0),
        (-1.5, -2),
        (-2.5, -2),
        (0.49999997, 0),
        (31.4, 31),
        (-32.6, -33),
        (4_194_303.0, 4_194_303),
        (-4_194_303.0, -4_194_303),
    ];
    for (value, expected) in cases {
        assert_eq!(nearest_int(value), expected, "nearest_int({value})");
    }
    // Outside the documented range the bit trick still answers without panicking; NaN is 0.
    assert_eq!(nearest_int(f32::NAN), 0);
    let _ = nearest_int(f32::MAX);
    let _ = nearest_int(f32::NEG_INFINITY);
}

#[test]
fn clamped_nearest_is_nearest_int_clamped_in_its_range() {
    let integer_form = |value: f32| nearest_int(value).clamp(-32, 31) as f32;
    // Steps of 1/1024 over ±64 cover every tie (k + 0.5) and many values between; the f32s
    // next to each tie are where a rounding difference would show.
    for step in -65_536i32..=65_536 {
        let value = step as f32 / 1024.0;
        for value in [value, value.next_up(), value.next_down()] {
            assert_eq!(clamped_nearest(value, 32.0), integer_form(value), "{value}");
        }
    }
    for value in [0.0, -0.0, 4_194_303.0, -4_194_303.0, 1e-30, -1e-30] {
        assert_eq!(clamped_nearest(value, 32.0), integer_form(value), "{value}");
    }
}

#[test]
fn q6_k_of_a_constant_block_is_exact_and_computed_by_hand() {
    // Every sub-block: max = 1, all quants -32 against scale -1/32 (no candidate fits better);
    // max_scale = -1/32, iscale = -128 / max_scale = 4096, d = 2^-12 (f16 0x0C00), every
    // 8-bit scale nearest_int(4096 · -1/32) = -128, and 1 / (2^-12 · -128) = -32 again.
    let values = [1.0f32; QK_K];
    let block = q6_k_bytes(&values);
    assert!(
        block[..Q6K_SCALES].iter().all(|&byte| byte == 0),
        "ql and qh"
    );
    assert!(
        block[Q6K_SCALES..Q6K_D].iter().all(|&byte| byte == 0x80),
        "scales"
    );
    assert_eq!(block[Q6K_D..], 0x0C00u16.to_le_bytes());
    assert_eq!(decoded(dequantize_q6_k, &block, QK_K), values);
}

#[test]
fn zero_blocks_are_zero_bytes_and_decode_to_zero() {
    for zero in [0.0f32, -0.0] {
        let values = vec![zero; 2 * QK_K];
        let q6 = q6_k_bytes(&values);
        let q4 = q4_k_bytes(&values);
        assert!(q6.iter().all(|&byte| byte == 0), "Q6_K of {zero:?}");
        assert!(q4.iter().all(|&byte| byte == 0), "Q4_K of {zero:?}");
        assert!(decoded(dequantize_q6_k, &q6, values.len())
            .iter()
            .all(|&v| v == 0.0));
        assert!(decoded(dequantize_q4_k, &q4, values.len())
            .iter()
            .all(|&v| v == 0.0));
    }
    // Below GROUP_MAX_EPS a Q6_K super-block counts as zero, too.
    let tiny = vec![1e-16f32; QK_K];
    assert!(q6_k_bytes(&tiny).iter().all(|&byte| byte == 0));
}

#[test]
fn a_zero_sub_block_among_others_decodes_to_zero() {
    let mut values = normal_values(7, QK_K, 1.0);
    values[32..48].fill(0.0);
    let q6 = decoded(dequantize_q6_k, &q6_k_bytes(&values), QK_K);
    assert!(
        q6[32..48].iter().all(|&v| v == 0.0),
        "Q6_K: {:?}",
        &q6[32..48]
    );
    values[32..64].fill(0.0);
    let q4 = decoded(dequantize_q4_k, &q4_k_bytes(&values), QK_K);
    assert!(
        q4[32..64].iter().all(|&v| v == 0.0),
        "Q4_K: {:?}",
        &q4[32..64]
    );
}

#[test]
fn q6_k_round_trip_error_is_within_a_step_of_each_sub_block() {
    for (seed, sigma) in [(1, 1.0f32), (2, 0.02), (3, 1e4)] {
        let values = normal_values(seed, 8 * QK_K, sigma);
        let blocks = q6_k_bytes(&values);
        let decoded = decoded(dequantize_q6_k, &blocks, values.len());
        for (block_idx, block) in blocks.chunks_exact(size_of::<BlockQ6K>()).enumerate() {
            let d = read_f16(block, Q6K_D);
            for element in 0..QK_K {
                let idx = block_idx * QK_K + element;
                let scale = block[Q6K_SCALES + element / 16] as i8;
                // Half a step from rounding, up to one more where the top quant (31) clamps,
                // and the f16 rounding of d and the 8-bit scale are absorbed by that margin.
                let step = (d * f32::from(scale)).abs();
                let error = (values[idx] - decoded[idx]).abs();
                assert!(
                    error <= step * 1.01,
                    "σ {sigma}: element {idx}: {} → {} (step {step})",
                    values[idx],
                    decoded[idx]
                );
            }
        }
        let rmse = relative_rmse(&values, &decoded);
        assert!(rmse < 0.025, "σ {sigma}: Q6_K relative RMSE {rmse}");
    }
}

#[test]
fn q4_k_round_trip_error_is_that_of_4_bits() {
    for (seed, sigma) in [(1, 1.0f32), (2, 0.02), (3, 1e4)] {
        let values = normal_values(seed, 8 * QK_K, sigma);
        let decoded = decoded(dequantize_q4_k, &q4_k_bytes(&values), values.len());
        let rmse = relative_rmse(&values, &decoded);
        assert!(rmse < 0.12, "σ {sigma}: Q4_K relative RMSE {rmse}");
        // Positive data keeps its quants up to the max: still 4-bit accuracy.
        let shifted: Vec<f32> = values.iter().map(|v| v.abs() + sigma).collect();
        let decoded = decoded_q4(&shifted);
        let rmse = relative_rmse(&shifted, &decoded);
        assert!(
            rmse < 0.06,
            "σ {sigma}: Q4_K relative RMSE of positive data {rmse}"
        );
    }
}

fn decoded_q4(values: &[f32]) -> Vec<f32> {
    decoded(dequantize_q4_k, &q4_k_bytes(values), values.len())
}

#[test]
#[should_panic(expected = "q6_K")]
fn q6_k_refuses_a_partial_super_block() {
    quantize_q6_k(&[0.0; QK_K + 1], &mut [0u8; 2 * 210]);
}

#[test]
#[should_panic(expected = "q4_K")]
fn q4_k_refuses_a_destination_of_the_wrong_size() {
    quantize_q4_k(&[0.0; QK_K], &mut [0u8; 143]);
}

/// Any f32 at all: both signs, normal, subnormal, zero, infinite and NaN.
fn any_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::ANY
}

/// Finite values spread over every magnitude, mixed with zeros and repeated values.
fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
        4 => -2.0f32..2.0,
        1 => Just(f32::MAX),
        1 => Just(-f32::MIN_POSITIVE),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantizing_finite_input_never_panics_and_decodes(
        values in (1usize..=2).prop_flat_map(|n| prop::collection::vec(finite_f32(), n * QK_K))
    ) {
        let q6 = q6_k_bytes(&values);
        let q4 = q4_k_bytes(&values);
        // Decoding works on whatever came out (f16 scales may overflow to ±Inf for ±f32::MAX).
        decoded(dequantize_q6_k, &q6, values.len());
        decoded(dequantize_q4_k, &q4, values.len());
    }

    #[test]
    fn quantizing_non_finite_input_never_panics(
        values in prop::collection::vec(any_f32(), QK_K)
    ) {
        q6_k_bytes(&values);
        q4_k_bytes(&values);
    }

    #[test]
    fn clamped_nearest_matches_the_integer_form(value in -4_194_303.0f32..4_194_303.0) {
        let integer_form = nearest_int(value).clamp(-32, 31) as f32;
        prop_assert_eq!(clamped_nearest(value, 32.0), integer_form);
        let scaled = value / 65_536.0; // mostly within the clamp range
        prop_assert_eq!(clamped_nearest(scaled, 32.0), nearest_int(scaled).clamp(-32, 31) as f32);
    }

    #[test]
    fn small_finite_input_decodes_to_finite_values(
        values in prop::collection::vec(-1e4f32..1e4, QK_K)
    ) {
        let q6 = decoded(dequantize_q6_k, &q6_k_bytes(&values), QK_K);
        let q4 = decoded(dequantize_q4_k, &q4_k_bytes(&values), QK_K);
        prop_assert!(q6.iter().chain(&q4).all(|v| v.is_finite()));
    }
}
