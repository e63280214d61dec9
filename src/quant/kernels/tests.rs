//! Every kernel table usable on this CPU against the scalar reference, on edge-case seeds and
//! random inputs; plus the scalar reference against hand-computed values and the dispatch API.

use proptest::prelude::*;

use super::*;

mod dispatch;

/// Every table this CPU can run, scalar included (it must agree with itself too).
fn all_kernels() -> Vec<&'static Kernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

/// Sums may differ by summation order only: 1e-5 relative, plus a tiny absolute slack for sums
/// of subnormal-sized terms. Non-finite sums must match exactly in kind.
fn sums_agree(actual: f64, expected: f64) -> bool {
    if actual == expected || (actual.is_nan() && expected.is_nan()) {
        return true;
    }
    let tolerance = 1e-5 * actual.abs().max(expected.abs()) + 1e-35;
    actual.is_finite() && expected.is_finite() && (actual - expected).abs() <= tolerance
}

/// A deterministic pseudo-random sequence in [-1, 1) (64-bit LCG, top bits).
fn lcg_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `max_abs_err` and `sum_sq_deq` (an exact integer sum) must match bit for bit; the other
/// sums only within [`sums_agree`].
fn assert_stats_agree(actual: &ErrorStats, expected: &ErrorStats, context: &str) {
    assert_eq!(actual.n, expected.n, "{context}: n");
    assert_eq!(
        actual.max_abs_err.to_bits(),
        expected.max_abs_err.to_bits(),
        "{context}: max_abs_err {} vs {}",
        actual.max_abs_err,
        expected.max_abs_err
    );
    assert_eq!(
        actual.sum_sq_deq.to_bits(),
        expected.sum_sq_deq.to_bits(),
        "{context}: sum_sq_deq {:e} vs {:e}",
        actual.sum_sq_deq,
        expected.sum_sq_deq
    );
    for (name, got, want) in [
        ("sum_sq_err", actual.sum_sq_err, expected.sum_sq_err),
        ("sum_sq_ref", actual.sum_sq_ref, expected.sum_sq_ref),
        ("dot", actual.dot, expected.dot),
    ] {
        assert!(
            sums_agree(got, want),
            "{context}: {name} {got:e} vs {want:e}"
        );
    }
}

fn params_for_scale(scale: f32, zero_point: i32) -> I8Params {
    I8Params {
        scale,
        inv_scale: 1.0 / scale,
        zero_point,
    }
}

/// Runs `quantize_i8` of every table on `src` and compares with the scalar reference. The
/// destination sits inside a guarded buffer, at a different offset from a 64-byte boundary on
/// each call (the kernels align their streaming stores with a head), and the source is
/// deliberately misaligned, so an out-of-bounds load or store shows up.
fn check_quantize(src: &[f32], params: I8Params) {
    const GUARD: usize = 64;
    let mut expected = vec![0i8; src.len()];
    let reference = scalar::quantize_i8(src, params, &mut expected);
    assert_eq!(reference.n, src.len() as u64);
    let mut shifted_src = vec![0.0f32; src.len() + 1];
    shifted_src[1..].copy_from_slice(src);
    let dst_misalignment = [0, 1, 16, 37][src.len() % 4];
    for kernels in all_kernels() {
        let mut buffer = vec![0x5a_i8; src.len() + 3 * GUARD];
        let start = buffer.as_ptr().align_offset(64) + GUARD + dst_misalignment;
        let end = start + src.len();
        let stats = (kernels.quantize_i8)(&shifted_src[1..], params, &mut buffer[start..end]);
        let isa = kernels.isa;
        let actual = &buffer[start..end];
        if let Some(idx) = (0..src.len()).find(|&idx| actual[idx] != expected[idx]) {
            panic!(
                "{isa}: q[{idx}] = {} but scalar gives {} (x = {:e}, len {}, {params:?})",
                actual[idx],
                expected[idx],
                src[idx],
                src.len()
            );
        }
        assert!(
            buffer[..start].iter().all(|&byte| byte == 0x5a),
            "{isa}: wrote before dst"
        );
        assert!(
            buffer[end..].iter().all(|&byte| byte == 0x5a),
            "{isa}: wrote past dst"
        );
        assert_stats_agree(&stats, &reference, &format!("{isa}, len {}", src.len()));
        // The streaming entry point gives the same result whatever prefetch hint it is given;
        // its aligned head changes only the order of the sums.
        let hint_len = [0, 1, src.len() / 2, src.len(), src.len() + 100][src.len() % 5];
        let hint = vec![1.0f32; hint_len];
        let mut buffer = vec![0x5a_i8; src.len() + 3 * GUARD];
        let start = buffer.as_ptr().align_offset(64) + GUARD + (dst_misalignment + 29) % 64;
        let end = start + src.len();
        let streamed_stats =
            (kernels.quantize_i8_streaming)(src, params, &mut buffer[start..end], &hint);
        assert_eq!(
            &buffer[start..end],
            &expected[..],
            "{isa}: streaming variant bytes"
        );
        assert!(
            buffer[..start]
                .iter()
                .chain(&buffer[end..])
                .all(|&byte| byte == 0x5a),
            "{isa}: streaming variant wrote outside dst"
        );
        assert_stats_agree(&streamed_stats, &reference, &format!("{isa} streaming"));
    }
}

fn check_absmax(src: &[f32]) {
    let expected = scalar::absmax(src);
    for kernels in all_kernels() {
        let actual = (kernels.absmax)(src);
        assert_eq!(
            actual.to_bits(),
            expected.to_bits(),
            "{}: absmax {actual} vs {expected} (len {})",
            kernels.isa,
            src.len()
        );
    }
}

fn check_min_max(src: &[f32]) {
    let (expected_low, expected_high) = scalar::min_max(src);
    for kernels in all_kernels() {
        let (low, high) = (kernels.min_max)(src);
        assert_eq!(
            (low.to_bits(), high.to_bits()),
            (expected_low.to_bits(), expected_high.to_bits()),
            "{}: min_max ({low}, {high}) vs ({expected_low}, {expected_high}), len {}",
            kernels.isa,
            src.len()
        );
    }
}

/// Lengths that exercise: empty, every tail length up to and past one main-loop step of every
/// ISA, one stats block and its neighbours, several blocks plus a tail.
fn edge_lengths() -> Vec<usize> {
    let mut lengths: Vec<usize> = (0..=70).collect();
    lengths.extend([127, 128, 129, 1023, 1024, 1025, 2047, 2048, 2049, 4096 + 7]);
    lengths
}

/// All three kernels on one input; quantization with symmetric and a few asymmetric params.
fn check_all(src: &[f32]) {
    check_absmax(src);
    check_min_max(src);
    // The int8 scheme's rule: never a scale whose inverse overflows.
    let absmax = scalar::absmax(src);
    let scale = if absmax > 0.0 {
        (absmax / 127.0).max(f32::MIN_POSITIVE)
    } else {
        1.0
    };
    for zero_point in [0, -128, 127, 37] {
        check_quantize(src, params_for_scale(scale, zero_point));
    }
}

#[test]
fn random_data_all_edge_lengths() {
    for len in edge_lengths() {
        check_all(&lcg_values(len, len as u64));
        let shifted: Vec<f32> = lcg_values(len, 7)
            .iter()
            .map(|value| value * 0.5 + 0.6)
            .collect();
        check_all(&shifted);
    }
}

#[test]
fn all_zeros_and_negative_zeros() {
    for len in edge_lengths() {
        check_all(&vec![0.0; len]);
        check_all(&vec![-0.0; len]);
        let mixed: Vec<f32> = (0..len)
            .map(|idx| if idx % 3 == 0 { -0.0 } else { 0.0 })
            .collect();
        check_all(&mixed);
        check_quantize(&mixed, params_for_scale(0.5, 11));
    }
}

#[test]
fn extreme_magnitudes_saturate_identically() {
    for len in edge_lengths() {
        let extremes: Vec<f32> = (0..len)
            .map(|idx| if idx % 2 == 0 { f32::MAX } else { -f32::MAX })
            .collect();
        check_all(&extremes);
        // Scales far too small for the data: every element saturates, ±Inf appear in between.
        let data = lcg_values(len, 3);
        for scale in [1e-30, f32::MIN_POSITIVE, 1e-3] {
            check_quantize(&data, params_for_scale(scale, 5));
        }
        check_quantize(&extremes, params_for_scale(f32::MIN_POSITIVE, -3));
    }
}

#[test]
fn subnormals() {
    for len in edge_lengths() {
        let subnormals: Vec<f32> = lcg_values(len, 11)
            .iter()
            .map(|value| value * f32::MIN_POSITIVE)
            .collect();
        check_all(&subnormals);
        check_quantize(&subnormals, params_for_scale(f32::MIN_POSITIVE, 0));
        check_quantize(&subnormals, params_for_scale(f32::MIN_POSITIVE * 3.0, -20));
    }
}

#[test]
fn exact_ties_round_half_to_even() {
    // With scale 0.25 every x = (k + 0.5) / 4 scales exactly to the tie k + 0.5.
    let ties: Vec<f32> = (-300..300).map(|k| (k as f32 + 0.5) * 0.25).collect();
    for zero_point in [0, 1, -1, 100] {
        check_quantize(&ties, params_for_scale(0.25, zero_point));
    }
    let mut q = vec![0i8; 6];
    let src = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5];
    scalar::quantize_i8(&src, params_for_scale(1.0, 0), &mut q);
    assert_eq!(q, [0, 2, 2, 0, -2, -2]);
}

#[test]
fn scalar_reference_matches_the_definition() {
    let src = [0.0, 1.0, -1.0, 3.7, -3.7, 1e15, -1e15, 126.6, -127.6];
    let params = params_for_scale(1.0, 10);
    let mut q = vec![0i8; src.len()];
    let stats = scalar::quantize_i8(&src, params, &mut q);
    // round(x) + 10, clamped to [-128, 127].
    assert_eq!(q, [10, 11, 9, 14, 6, 127, -128, 127, -118]);
    let deq: Vec<f32> = q.iter().map(|&value| f32::from(value) - 10.0).collect();
    let expected_sq_err: f64 = src
        .iter()
        .zip(&deq)
        .map(|(&x, &d)| f64::from(d - x) * f64::from(d - x))
        .sum();
    assert!(sums_agree(stats.sum_sq_err, expected_sq_err));
    let saturated_err = (117.0f32 - 1e15).abs().max((-138.0f32 + 1e15).abs());
    assert_eq!(stats.max_abs_err, saturated_err);
}

#[test]
fn absmax_nan_and_infinity_policy() {
    let nan_patterns = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xff80_0001),
    ];
    for len in [1, 5, 16, 17, 63, 64, 65, 100, 1025] {
        let base = lcg_values(len, 5);
        for position in [0, len / 2, len - 1] {
            for infinity in [f32::INFINITY, f32::NEG_INFINITY] {
                let mut data = base.clone();
                data[position] = infinity;
                assert_eq!(scalar::absmax(&data), f32::INFINITY);
                check_absmax(&data);
            }
            for nan in nan_patterns {
                // A NaN wins even against an infinity elsewhere.
                let mut data = base.clone();
                data[len - 1 - position] = f32::INFINITY;
                data[position] = nan;
                assert!(scalar::absmax(&data).is_nan());
                check_absmax(&data);
            }
        }
    }
    assert_eq!(scalar::absmax(&[]), 0.0);
    assert_eq!(scalar::absmax(&[-3.0, 2.0]), 3.0);
}

#[test]
fn min_max_reference() {
    assert_eq!(scalar::min_max(&[]), (0.0, 0.0));
    assert_eq!(scalar::min_max(&[2.0]), (2.0, 2.0));
    assert_eq!(scalar::min_max(&[1.0, -4.0, 3.5, 0.0]), (-4.0, 3.5));
    assert_eq!(scalar::min_max(&[-1e-45, 1e-45]), (-1e-45, 1e-45));
    assert_eq!(
        scalar::min_max(&[-f32::MAX, f32::MAX]),
        (-f32::MAX, f32::MAX)
    );
    // Total order puts -0.0 below +0.0; either compares equal to 0.0.
    let (low, high) = scalar::min_max(&[0.0, -0.0]);
    assert_eq!(
        (low.to_bits(), high.to_bits()),
        ((-0.0f32).to_bits(), 0.0f32.to_bits())
    );
    // Keys round-trip for every kind of value.
    for value in [
        0.0,
        -0.0,
        1.5,
        -1.5,
        f32::MAX,
        -f32::INFINITY,
        f32::NAN,
        -f32::NAN,
    ] {
        let key = scalar::total_order_key(f32::to_bits(value));
        assert_eq!(scalar::from_total_order_key(key).to_bits(), value.to_bits());
    }
}

#[test]
fn min_max_nan_and_infinity_policy() {
    for len in [1, 5, 16, 17, 33, 63, 64, 65, 100, 1025] {
        let base = lcg_values(len, 21);
        for position in [0, len / 2, len - 1] {
            let cases = [
                (f32::INFINITY, "+inf"),
                (f32::NEG_INFINITY, "-inf"),
                (f32::NAN, "+nan"),
                (-f32::NAN, "-nan"),
                (f32::from_bits(0x7f80_0001), "signalling nan"),
            ];
            for (special, name) in cases {
                let mut data = base.clone();
                data[position] = special;
                let (low, high) = scalar::min_max(&data);
                assert!(
                    !(low.is_finite() && high.is_finite()),
                    "{name} not reported"
                );
                if special.is_nan() {
                    assert!(low.is_nan() || high.is_nan(), "{name} not reported as NaN");
                }
                check_min_max(&data);
            }
        }
    }
}

#[test]
fn mismatched_lengths_panic_in_every_table() {
    for kernels in all_kernels() {
        let result = std::panic::catch_unwind(|| {
            let mut dst = vec![0i8; 3];
            (kernels.quantize_i8)(&[1.0; 4], params_for_scale(1.0, 0), &mut dst)
        });
        assert!(
            result.is_err(),
            "{}: accepted dst shorter than src",
            kernels.isa
        );
    }
}

/// Random data of one magnitude: mantissas in [-1, 1) times 2^exponent.
fn scaled_values() -> impl Strategy<Value = Vec<f32>> {
    (prop::collection::vec(-1.0f32..1.0, 0..5000), -140i32..60).prop_map(|(values, exponent)| {
        let factor = 2f32.powi(exponent);
        values.into_iter().map(|value| value * factor).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_inputs_match_scalar(
        values in scaled_values(),
        zero_point in -128i32..=127,
        scale_factor in 0.25f32..4.0,
    ) {
        check_absmax(&values);
        check_min_max(&values);
        let absmax = scalar::absmax(&values);
        let scale = (absmax / 127.0 * scale_factor).max(f32::MIN_POSITIVE);
        check_quantize(&values, params_for_scale(scale, zero_point));
    }

    #[test]
    fn random_bit_patterns_absmax_and_min_max(bits in prop::collection::vec(any::<u32>(), 0..300)) {
        let values: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        check_absmax(&values);
        check_min_max(&values);
    }
}
