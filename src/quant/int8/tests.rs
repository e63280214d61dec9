//! The int8 scheme: round-trip error bounds, parameter edge cases, shapes, errors and
//! cancellation, on every kernel table this CPU can run.

use std::cell::Cell;

use super::*;
use crate::quant::kernels::{available, scalar, select};

fn all_kernels() -> Vec<&'static Kernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

const ALL_OPTIONS: [Int8Options; 4] = [
    Int8Options {
        granularity: Granularity::Channel,
        symmetric: true,
    },
    Int8Options {
        granularity: Granularity::Channel,
        symmetric: false,
    },
    Int8Options {
        granularity: Granularity::Tensor,
        symmetric: true,
    },
    Int8Options {
        granularity: Granularity::Tensor,
        symmetric: false,
    },
];

/// Deterministic pseudo-random values in [-1, 1) (64-bit LCG, top bits).
fn lcg_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x2545_f491_4f6c_dd1d);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Quantizes with every table, checks they agree on bytes, scales and zero points, and returns
/// the scalar result.
fn quantize_everywhere(src: &[f32], shape: &[usize], options: Int8Options) -> Int8Tensor {
    let reference = quantize_int8(scalar(), src, shape, options).expect("quantizes");
    for kernels in all_kernels() {
        let tensor = quantize_int8(kernels, src, shape, options).expect("quantizes");
        assert_eq!(tensor.q, reference.q, "{}: bytes", kernels.isa);
        assert_eq!(tensor.scales, reference.scales, "{}: scales", kernels.isa);
        assert_eq!(
            tensor.zero_points, reference.zero_points,
            "{}: zero points",
            kernels.isa
        );
        assert_eq!(
            tensor.stats.max_abs_err, reference.stats.max_abs_err,
            "{}",
            kernels.isa
        );
    }
    reference
}

/// Checks `|deq - x| <= scale / 2` (plus f32 rounding slack) for every element, and that the
/// fused statistics describe the same dequantized tensor.
fn check_round_trip(src: &[f32], shape: &[usize], options: Int8Options) -> Int8Tensor {
    let tensor = quantize_everywhere(src, shape, options);
    let dequantized = dequantize_int8(&tensor, shape, options);
    assert_eq!(dequantized.len(), src.len());
    let row_len = src.len() / tensor.scales.len().max(1);
    let mut max_abs_err = 0.0f32;
    for (idx, (&x, &deq)) in src.iter().zip(&dequantized).enumerate() {
        let scale = tensor.scales[idx / row_len];
        assert!(scale > 0.0 && scale.is_finite() && (1.0 / scale).is_finite());
        let bound = f64::from(scale) * 0.5001;
        let err = (f64::from(deq) - f64::from(x)).abs();
        assert!(
            err <= bound,
            "element {idx}: x = {x:e}, deq = {deq:e}, scale = {scale:e}, {options:?}"
        );
        max_abs_err = max_abs_err.max((deq - x).abs());
    }
    assert_eq!(tensor.stats.n, src.len() as u64);
    assert_eq!(tensor.stats.max_abs_err, max_abs_err, "fused max_abs_err");
    let sum_sq_err: f64 = src
        .iter()
        .zip(&dequantized)
        .map(|(&x, &deq)| f64::from(deq - x) * f64::from(deq - x))
        .sum();
    let tolerance = 1e-5 * sum_sq_err + 1e-35;
    assert!(
        (tensor.stats.sum_sq_err - sum_sq_err).abs() <= tolerance,
        "fused sum_sq_err"
    );
    tensor
}

#[test]
fn random_tensors_round_trip_within_half_a_step() {
    for (seed, shape) in [
        vec![16, 64],
        vec![7, 3, 5],
        vec![1, 1000],
        vec![300],
        vec![33, 129],
    ]
    .into_iter()
    .enumerate()
    {
        let len: usize = shape.iter().product();
        let magnitude = [1.0, 1e-3, 250.0, 1e-20, 3e15][seed];
        let src: Vec<f32> = lcg_values(len, seed as u64)
            .iter()
            .map(|v| v * magnitude)
            .collect();
        for options in ALL_OPTIONS {
            let tensor = check_round_trip(&src, &shape, options);
            let n_channels = match options.granularity {
                Granularity::Channel => shape[0],
                Granularity::Tensor => 1,
            };
            assert_eq!(tensor.scales.len(), n_channels);
            let n_zero_points = if options.symmetric { 0 } else { n_channels };
            assert_eq!(tensor.zero_points.len(), n_zero_points);
        }
    }
}

#[test]
fn one_sided_and_offset_data_round_trip() {
    let positive: Vec<f32> = lcg_values(512, 9).iter().map(|v| v + 3.0).collect();
    let negative: Vec<f32> = positive.iter().map(|v| -v).collect();
    for src in [positive, negative] {
        for options in ALL_OPTIONS {
            check_round_trip(&src, &[4, 128], options);
        }
    }
}

#[test]
fn zero_rows_get_unit_scale_and_exact_zeros() {
    let mut src = lcg_values(4 * 40, 2);
    src[40..80].fill(0.0);
    src[120..160].fill(-0.0);
    for options in ALL_OPTIONS {
        let tensor = check_round_trip(&src, &[4, 40], options);
        if options.granularity == Granularity::Channel {
            assert_eq!(tensor.scales[1], 1.0);
            assert_eq!(tensor.scales[3], 1.0);
            assert!(tensor.q[40..80].iter().all(|&q| q == 0));
            if !options.symmetric {
                assert_eq!(tensor.zero_points[1], 0);
            }
        }
    }
    let zeros = vec![0.0; 64];
    for options in ALL_OPTIONS {
        let tensor = check_round_trip(&zeros, &[2, 32], options);
        assert!(tensor.q.iter().all(|&q| q == 0));
        assert_eq!(tensor.stats.sum_sq_err, 0.0);
    }
}

#[test]
fn single_row_and_scalar_tensors() {
    let src = lcg_values(77, 4);
    for options in ALL_OPTIONS {
        let tensor = check_round_trip(&src, &[1, 77], options);
        assert_eq!(tensor.scales.len(), 1);
        let scalar_tensor = check_round_trip(&[-2.5], &[], options);
        assert_eq!(scalar_tensor.scales.len(), 1);
        let one = check_round_trip(&[0.75], &[1], options);
        assert_eq!(one.scales.len(), 1);
    }
}

#[test]
fn subnormal_and_tiny_channels_stay_finite() {
    let subnormals: Vec<f32> = lcg_values(96, 6).iter().map(|v| v * 1e-40).collect();
    let mut tiny = vec![0.0f32; 96];
    tiny[5] = f32::from_bits(1); // the smallest subnormal, 1.4e-45
    tiny[50] = -f32::from_bits(3);
    for src in [subnormals, tiny] {
        for options in ALL_OPTIONS {
            let tensor = check_round_trip(&src, &[3, 32], options);
            assert!(tensor
                .scales
                .iter()
                .all(|&scale| scale >= f32::MIN_POSITIVE));
            assert!(tensor.stats.sum_sq_err.is_finite() && tensor.stats.dot.is_finite());
        }
    }
    let params = symmetric_params(f32::from_bits(1));
    assert_eq!(params.scale, f32::MIN_POSITIVE);
    assert!(params.inv_scale.is_finite());
}

#[test]
fn asymmetric_zero_point_reproduces_zero_exactly() {
    let mut src: Vec<f32> = lcg_values(256, 8).iter().map(|v| v * 0.7 + 0.4).collect();
    for idx in (0..256).step_by(9) {
        src[idx] = 0.0;
    }
    for granularity in [Granularity::Channel, Granularity::Tensor] {
        let options = Int8Options {
            granularity,
            symmetric: false,
        };
        let tensor = check_round_trip(&src, &[8, 32], options);
        let dequantized = dequantize_int8(&tensor, &[8, 32], options);
        for idx in (0..256).step_by(9) {
            assert_eq!(dequantized[idx], 0.0, "element {idx}");
        }
    }
}

#[test]
fn parameter_formulas() {
    let params = asymmetric_params(-1.0, 3.0);
    assert_eq!(params.scale, (4.0f64 / 255.0) as f32);
    // -128 + 1 / (4 / 255) = -64.25 → -64.
    assert_eq!(params.zero_point, -64);
    // A positive-only range still includes 0, which maps to -128.
    let positive = asymmetric_params(2.0, 5.0);
    assert_eq!(positive.zero_point, -128);
    assert_eq!(positive.scale, (5.0f64 / 255.0) as f32);
    let negative = asymmetric_params(-5.0, -2.0);
    assert_eq!(negative.zero_point, 127);
    let zero = asymmetric_params(0.0, 0.0);
    assert_eq!((zero.scale, zero.zero_point), (1.0, 0));
    let symmetric = symmetric_params(12.7);
    assert_eq!(symmetric.scale, 12.7f32 / 127.0);
    assert_eq!(symmetric.zero_point, 0);
    // The full f32 range: hi - lo overflows f32 but not the f64 computation.
    let full = asymmetric_params(-f32::MAX, f32::MAX);
    assert!(full.scale.is_finite() && full.inv_scale > 0.0);
}

#[test]
fn extreme_values_quantize_without_nan() {
    let src = [f32::MAX, -f32::MAX, 0.0, 1.0, -f32::MAX / 3.0, 1e38];
    for options in ALL_OPTIONS {
        let tensor = quantize_everywhere(&src, &[2, 3], options);
        assert!(tensor
            .scales
            .iter()
            .all(|scale| scale.is_finite() && *scale > 0.0));
        assert_eq!(tensor.q[0], 127);
        assert_eq!(tensor.q[1], -128 + i8::from(options.symmetric));
    }
}

#[test]
fn zero_sized_shapes_give_empty_output() {
    for shape in [vec![0, 4], vec![4, 0], vec![0], vec![3, 0, 2]] {
        for options in ALL_OPTIONS {
            let tensor = quantize_int8(scalar(), &[], &shape, options).unwrap();
            assert!(
                tensor.q.is_empty() && tensor.scales.is_empty() && tensor.zero_points.is_empty()
            );
            assert_eq!(tensor.stats, ErrorStats::default());
            assert!(dequantize_int8(&tensor, &shape, options).is_empty());
        }
    }
}

#[test]
fn shape_errors() {
    let options = ALL_OPTIONS[0];
    assert_eq!(
        quantize_int8(scalar(), &[1.0; 5], &[2, 3], options),
        Err(QuantError::ShapeMismatch {
            shape: vec![2, 3],
            expected: 6,
            actual: 5
        })
    );
    assert_eq!(
        quantize_int8(scalar(), &[1.0; 5], &[usize::MAX, 2], options),
        Err(QuantError::ShapeOverflow {
            shape: vec![usize::MAX, 2]
        })
    );
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut src = lcg_values(60, 1);
        src[37] = bad;
        for options in ALL_OPTIONS {
            for kernels in all_kernels() {
                let result = quantize_int8(kernels, &src, &[6, 10], options);
                assert_eq!(
                    result,
                    Err(QuantError::NonFinite { index_hint: 37 }),
                    "{options:?}"
                );
            }
        }
    }
    let message = QuantError::NonFinite { index_hint: 3 }.to_string();
    assert!(message.contains("index 3"), "{message}");
}

#[test]
fn cancellation_is_checked_between_chunks() {
    let len = 2 * CHUNK_ELEMENTS + 5;
    let src = lcg_values(len, 12);
    let options = Int8Options {
        granularity: Granularity::Tensor,
        symmetric: true,
    };
    let calls = Cell::new(0);
    let stop_at_second = || {
        calls.set(calls.get() + 1);
        calls.get() < 2
    };
    let result = quantize_int8_cancellable(scalar(), &src, &[len], options, &stop_at_second);
    assert_eq!(result, Err(QuantError::Cancelled));
    assert_eq!(calls.get(), 2);
    assert_eq!(
        quantize_int8_cancellable(scalar(), &src, &[len], options, &|| false),
        Err(QuantError::Cancelled)
    );
}

#[test]
fn chunked_long_rows_match_one_kernel_call() {
    let len = CHUNK_ELEMENTS + 3 * STATS_BLOCK + 17;
    let src = lcg_values(len, 13);
    let options = Int8Options {
        granularity: Granularity::Tensor,
        symmetric: false,
    };
    for kernels in all_kernels() {
        let tensor = quantize_int8(kernels, &src, &[len], options).unwrap();
        let params = I8Params {
            scale: tensor.scales[0],
            inv_scale: 1.0 / tensor.scales[0],
            zero_point: i32::from(tensor.zero_points[0]),
        };
        let mut q = vec![0i8; len];
        let stats = (kernels.quantize_i8)(&src, params, &mut q);
        assert_eq!(q, tensor.q);
        assert_eq!(stats.n, tensor.stats.n);
        assert_eq!(stats.max_abs_err, tensor.stats.max_abs_err);
        for (chunked, whole) in [
            (tensor.stats.sum_sq_err, stats.sum_sq_err),
            (tensor.stats.sum_sq_ref, stats.sum_sq_ref),
            (tensor.stats.dot, stats.dot),
            (tensor.stats.sum_sq_deq, stats.sum_sq_deq),
        ] {
            // Same blocks; the f64 additions are grouped differently, and the destinations'
            // alignment may change the order inside a block.
            assert!(
                (chunked - whole).abs() <= 1e-6 * whole.abs(),
                "{}",
                kernels.isa
            );
        }
    }
}

#[test]
fn quantize_into_a_reused_buffer_matches_a_fresh_tensor() {
    let src = lcg_values(3 * 100, 14);
    let mut buffer = vec![0x33_i8; src.len()];
    for options in ALL_OPTIONS {
        for kernels in all_kernels() {
            let fresh = quantize_int8(kernels, &src, &[3, 100], options).unwrap();
            let scales =
                quantize_int8_into(kernels, &src, &[3, 100], options, &mut buffer, &|| true)
                    .unwrap();
            assert_eq!(buffer, fresh.q);
            assert_eq!(scales.scales, fresh.scales);
            assert_eq!(scales.zero_points, fresh.zero_points);
            // A differently aligned buffer changes only the order of the f32 sums.
            assert_eq!(scales.stats.max_abs_err, fresh.stats.max_abs_err);
            assert_eq!(scales.stats.sum_sq_deq, fresh.stats.sum_sq_deq);
            let relative =
                (scales.stats.sum_sq_err - fresh.stats.sum_sq_err).abs() / fresh.stats.sum_sq_err;
            assert!(
                relative < 1e-5,
                "{}: sum_sq_err differs by {relative:e}",
                kernels.isa
            );
        }
    }
    let result = std::panic::catch_unwind(|| {
        let mut short = vec![0i8; 10];
        quantize_int8_into(
            scalar(),
            &src,
            &[3, 100],
            ALL_OPTIONS[0],
            &mut short,
            &|| true,
        )
    });
    assert!(
        result.is_err(),
        "accepted an output buffer of the wrong length"
    );
}
