//! The int4 scheme: hand-computed values, the compressed-tensors layout rebuilt independently,
//! error bounds, errors, and every ISA against the scalar kernel.

use proptest::prelude::*;

use super::*;
use crate::quant::kernels::{available, scalar as scalar_kernels, select};

fn all_kernels() -> Vec<&'static Kernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

const SYMMETRIC_32: Int4Options = Int4Options {
    group_size: 32,
    symmetric: true,
    restricted_range: false,
};
const ASYMMETRIC_32: Int4Options = Int4Options {
    group_size: 32,
    symmetric: false,
    restricted_range: false,
};

fn all_options() -> Vec<Int4Options> {
    let mut options = Vec::new();
    for group_size in SUPPORTED_GROUP_SIZES {
        for symmetric in [true, false] {
            options.push(Int4Options {
                group_size,
                symmetric,
                restricted_range: false,
            });
            options.push(Int4Options {
                group_size,
                symmetric,
                restricted_range: true,
            });
        }
    }
    options
}

/// Deterministic pseudo-random values in [-1, 1) (64-bit LCG, top bits).
fn lcg_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Quantizes with every table, checks they agree exactly, and returns the scalar result.
fn quantize_everywhere(src: &[f32], rows: usize, cols: usize, options: Int4Options) -> Int4Output {
    let reference = quantize_int4(scalar_kernels(), src, rows, cols, options).expect("quantizes");
    for kernels in all_kernels() {
        let output = quantize_int4(kernels, src, rows, cols, options).expect("quantizes");
        assert_eq!(output, reference, "{} vs scalar, {options:?}", kernels.isa);
    }
    reference
}

/// An independent rendering of compressed-tensors: `calculate_qparams`, `_quantize` and the
/// numpy `pack_to_int32` loop (`packed |= value[:, i::8] << 4 * i`), element by element.
fn naive_reference(src: &[f32], rows: usize, cols: usize, options: Int4Options) -> Int4Output {
    let n_groups = cols / options.group_size;
    let mut q = vec![0i32; rows * cols];
    let mut scales = Vec::new();
    let mut zero_points = Vec::new();
    for row in 0..rows {
        for group in 0..n_groups {
            let values = &src[row * cols + group * options.group_size..][..options.group_size];
            let min = values.iter().copied().fold(0.0f32, f32::min);
            let max = values.iter().copied().fold(0.0f32, f32::max);
            let (mut scale, zero_point) = if options.symmetric {
                let divisor = if options.restricted_range { 7.0 } else { 7.5 };
                (min.abs().max(max.abs()) / divisor, 0.0f32)
            } else {
                let scale = (max - min) / 15.0;
                let scale = if scale == 0.0 { f32::EPSILON } else { scale };
                (
                    scale,
                    (-8.0 - min / scale).clamp(-8.0, 7.0).round_ties_even(),
                )
            };
            if scale == 0.0 {
                scale = f32::EPSILON;
            }
            for (offset, &x) in values.iter().enumerate() {
                let v = (x / scale + zero_point).round_ties_even().clamp(-8.0, 7.0);
                q[row * cols + group * options.group_size + offset] = v as i32;
            }
            scales.push(scale);
            zero_points.push(zero_point as i8);
        }
    }
    let mut packed = vec![0u32; rows * cols / 8];
    for row in 0..rows {
        for i in 0..8 {
            for (word, col) in (i..cols).step_by(8).enumerate() {
                packed[row * cols / 8 + word] |= ((q[row * cols + col] + 8) as u32) << (4 * i);
            }
        }
    }
    let mut packed_zero_points = vec![0u32; rows.div_ceil(8) * n_groups];
    if !options.symmetric {
        for i in 0..8 {
            for (packed_row, row) in (i..rows).step_by(8).enumerate() {
                for group in 0..n_groups {
                    let value = (i32::from(zero_points[row * n_groups + group]) + 8) as u32;
                    packed_zero_points[packed_row * n_groups + group] |= value << (4 * i);
                }
            }
        }
    }
    Int4Output {
        weight_packed: packed.into_iter().map(|w| w as i32).collect(),
        weight_scale: scales,
        weight_zero_point: if options.symmetric {
            Vec::new()
        } else {
            packed_zero_points.into_iter().map(|w| w as i32).collect()
        },
        zero_points: if options.symmetric {
            Vec::new()
        } else {
            zero_points
        },
        weight_shape: [rows as i64, cols as i64],
        stats: ErrorStats::default(),
    }
}

/// Checks the output against the naive reference, the error bound per element and the
/// statistics against a dequantization from the stored tensors.
fn check(src: &[f32], rows: usize, cols: usize, options: Int4Options) -> Int4Output {
    let output = quantize_everywhere(src, rows, cols, options);
    let naive = naive_reference(src, rows, cols, options);
    assert_eq!(output.weight_packed, naive.weight_packed, "{options:?}");
    assert_eq!(output.weight_scale, naive.weight_scale, "{options:?}");
    assert_eq!(output.weight_zero_point, naive.weight_zero_point);
    assert_eq!(output.zero_points, naive.zero_points);
    let dequantized = dequantize_int4(&output, options);
    let n_groups = cols / options.group_size;
    for (idx, (&x, &deq)) in src.iter().zip(&dequantized).enumerate() {
        let scale =
            output.weight_scale[(idx / cols) * n_groups + (idx % cols) / options.group_size];
        // Symmetric: half a step. Asymmetric: the rounded zero point can add another half.
        let steps = if options.symmetric { 0.5 } else { 1.0 };
        let bound = steps * scale * (1.0 + 1e-5) + f32::MIN_POSITIVE;
        assert!(
            (deq - x).abs() <= bound,
            "{idx}: {x} -> {deq}, scale {scale}"
        );
    }
    let stats = compare(src, &dequantized);
    assert_eq!(output.stats.n, src.len() as u64);
    assert_eq!(output.stats.max_abs_err, stats.max_abs_err);
    assert!((output.stats.sum_sq_err - stats.sum_sq_err).abs() <= 1e-5 * stats.sum_sq_err);
    output
}

#[test]
fn symmetric_values_by_hand() {
    // absmax 7.5 gives scale 1: q = round(x) with ties to even, +7.5 clamped to 7.
    let mut row = vec![0.0f32; 32];
    row[..8].copy_from_slice(&[7.5, -7.5, 0.5, 1.5, -2.5, 3.2, -0.49, 6.51]);
    let output = check(&row, 1, 32, SYMMETRIC_32);
    assert_eq!(output.weight_scale, vec![1.0]);
    // q = 7, -8, 0, 2, -2, 3, 0, 7 -> nibbles 15, 0, 8, 10, 6, 11, 8, 15, first lowest.
    let expected = 0xF8B6_A80Fu32 as i32;
    assert_eq!(output.weight_packed[0], expected);
    // The other three words hold zeros: nibble 8 everywhere.
    assert_eq!(&output.weight_packed[1..], &[0x8888_8888u32 as i32; 3]);
}

#[test]
fn asymmetric_values_by_hand() {
    // Range [0, 1.5]: scale 0.1, zero point round(-8 - 0 / 0.1) = -8, so q = round(x / 0.1 - 8).
    let mut row = vec![0.0f32; 32];
    row[0] = 1.5;
    row[1] = 0.25;
    let output = check(&row, 1, 32, ASYMMETRIC_32);
    let scale = 1.5f32 / 15.0;
    assert_eq!(output.weight_scale, vec![scale]);
    assert_eq!(output.zero_points, vec![-8]);
    // Zero point -8 is nibble 0 in row 0 of the single packed word.
    assert_eq!(output.weight_zero_point, vec![0]);
    let q1 = ((0.25f32 / scale) + -8.0).round_ties_even() as i32;
    let word = output.weight_packed[0] as u32;
    assert_eq!(word & 0xF, 15, "1.5 / 0.1 - 8 = 7");
    assert_eq!(((word >> 4) & 0xF) as i32, q1 + 8);
    assert_eq!((word >> 8) & 0xF, 0, "zeros map to q = -8");
}

#[test]
fn zero_points_pack_along_rows_with_padding() {
    // 9 rows, 2 groups: word [0][g] holds rows 0..8, word [1][g] row 8 and zero padding.
    let zero_points: Vec<i8> = (0..18).map(|i| (i % 16 - 8) as i8).collect();
    let packed = pack_zero_points(&zero_points, 9, 2);
    assert_eq!(packed.len(), 4);
    for group in 0..2 {
        let mut expected = 0u32;
        for row in 0..8 {
            expected |= ((i32::from(zero_points[row * 2 + group]) + 8) as u32) << (4 * row);
        }
        assert_eq!(packed[group] as u32, expected);
        assert_eq!(packed[2 + group], i32::from(zero_points[16 + group]) + 8);
    }
}

#[test]
fn all_zero_groups_use_epsilon_and_reconstruct_exactly() {
    for options in all_options() {
        let src = vec![0.0f32; 3 * 256];
        let output = check(&src, 3, 256, options);
        assert!(output.weight_scale.iter().all(|&s| s == f32::EPSILON));
        assert_eq!(output.stats.sum_sq_err, 0.0);
    }
}

#[test]
fn random_weights_match_the_reference_for_every_option_and_isa() {
    for options in all_options() {
        for (rows, cols, seed) in [(1, 128, 1), (9, 256, 2), (17, 384, 3), (4, 1024, 4)] {
            let src: Vec<f32> = lcg_values(rows * cols, seed)
                .into_iter()
                .map(|v| v * 0.05)
                .collect();
            let output = check(&src, rows, cols, options);
            assert!(
                TensorMetrics::from(&output.stats).sqnr_db > 15.0,
                "{options:?}"
            );
        }
    }
}

#[test]
fn edge_values_agree_across_isas() {
    // Up to 1e37: near f32::MAX, `-8 · scale` itself overflows (see `huge_values_...`).
    let specials = [
        0.0,
        -0.0,
        1e37,
        -1e37,
        f32::MIN_POSITIVE,
        1e-45,
        -3e-42,
        1e30,
        -1e-30,
        0.5,
        -0.5,
        1.5,
        2.5,
    ];
    for options in all_options() {
        let cols = 2 * options.group_size;
        let src: Vec<f32> = (0..4 * cols)
            .map(|i| specials[(i * 7 + i / cols) % specials.len()])
            .collect();
        let output = quantize_everywhere(&src, 4, cols, options);
        assert!(output
            .weight_scale
            .iter()
            .all(|s| s.is_finite() && *s > 0.0));
        assert!(dequantize_int4(&output, options)
            .iter()
            .all(|v| v.is_finite()));
    }
}

#[test]
fn rounding_ties_go_to_even() {
    // absmax 7.5 -> scale 1; x.5 values are exact ties.
    let mut row: Vec<f32> = (0..32).map(|i| (i % 15) as f32 - 7.0 + 0.5).collect();
    row[31] = 7.5;
    let output = check(&row, 1, 32, SYMMETRIC_32);
    let dequantized = dequantize_int4(&output, SYMMETRIC_32);
    for (&x, &deq) in row.iter().zip(&dequantized) {
        let expected = x.round_ties_even().clamp(-8.0, 7.0);
        assert_eq!(deq, expected, "{x}");
    }
}

#[test]
fn huge_values_keep_finite_scales() {
    // A range beyond f32::MAX still gets a finite scale (computed in f64). Reconstructions of
    // values this close to f32::MAX can overflow, as in compressed-tensors: symmetric maps
    // -absmax to -8 steps of absmax / 7.5.
    let mut row = vec![0.0f32; 32];
    row[0] = f32::MAX;
    row[1] = -f32::MAX;
    for options in [SYMMETRIC_32, ASYMMETRIC_32] {
        let output = quantize_everywhere(&row, 1, 32, options);
        assert!(output.weight_scale[0].is_finite() && output.weight_scale[0] > 0.0);
        assert!(output.stats.n == 32);
    }
}

#[test]
fn empty_and_shape_errors() {
    let output = quantize_int4(scalar_kernels(), &[], 0, 128, SYMMETRIC_32).expect("empty");
    assert!(output.weight_packed.is_empty() && output.weight_scale.is_empty());
    assert_eq!(output.weight_shape, [0, 128]);
    let src = vec![0.0f32; 64];
    let kernels = scalar_kernels();
    let bad_group = Int4Options {
        group_size: 16,
        symmetric: true,
        restricted_range: false,
    };
    assert_eq!(
        quantize_int4(kernels, &src, 1, 64, bad_group),
        Err(Int4Error::UnsupportedGroupSize { group_size: 16 })
    );
    assert_eq!(
        quantize_int4(kernels, &src[..48], 1, 48, SYMMETRIC_32),
        Err(Int4Error::ColumnsNotDivisible {
            cols: 48,
            group_size: 32
        })
    );
    assert!(matches!(
        quantize_int4(kernels, &src, 2, 64, SYMMETRIC_32),
        Err(Int4Error::Quant(QuantError::ShapeMismatch { .. }))
    ));
    assert!(matches!(
        quantize_int4(kernels, &src, usize::MAX, 64, SYMMETRIC_32),
        Err(Int4Error::Quant(QuantError::ShapeOverflow { .. }))
    ));
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for options in [SYMMETRIC_32, ASYMMETRIC_32] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut src = vec![0.25f32; 2 * 64];
            src[64 + 37] = bad;
            for kernels in all_kernels() {
                assert_eq!(
                    quantize_int4(kernels, &src, 2, 64, options),
                    Err(Int4Error::Quant(QuantError::NonFinite { index_hint: 101 }))
                );
            }
        }
    }
}

#[test]
fn int4_isa_follows_the_kernel_table() {
    assert_eq!(int4_isa(scalar_kernels()), Isa::Scalar);
    for kernels in all_kernels() {
        let expected = match kernels.isa {
            Isa::Avx2 | Isa::Avx512 => kernels.isa,
            _ => Isa::Scalar,
        };
        assert_eq!(int4_isa(kernels), expected);
    }
}

use crate::quant::metrics::TensorMetrics;

proptest! {
    #[test]
    fn random_tensors_agree_with_the_reference(
        rows in 1usize..6,
        groups in 1usize..4,
        options_idx in 0usize..6,
        magnitude in -30i32..30,
        seed in any::<u64>(),
    ) {
        let options = all_options()[options_idx];
        let cols = groups * options.group_size;
        let scale = 2f32.powi(magnitude);
        let src: Vec<f32> = lcg_values(rows * cols, seed).into_iter().map(|v| v * scale).collect();
        check(&src, rows, cols, options);
    }

    #[test]
    fn arbitrary_finite_bits_agree_across_isas(
        bits in proptest::collection::vec(any::<u32>(), 64),
        symmetric in any::<bool>(),
    ) {
        let src: Vec<f32> = bits
            .into_iter()
            .map(f32::from_bits)
            .map(|v| if v.is_finite() { v } else { 1.0 })
            .collect();
        let options = Int4Options {
            group_size: 32,
            symmetric,
            restricted_range: false,
        };
        quantize_everywhere(&src, 1, 64, options);
    }
}

#[test]
fn kernels_handle_groups_that_are_not_whole_steps() {
    // Validation only admits 32/64/128, but the kernels accept any multiple of 8; groups of
    // 8, 24 and 40 values exercise the scalar words after the SIMD steps.
    for group_size in [8usize, 24, 40] {
        let src: Vec<f32> = lcg_values(3 * group_size, group_size as u64);
        let params: Vec<GroupParams> = (0..3)
            .map(|i| asymmetric_params(-0.9 + 0.1 * i as f32, 0.7))
            .collect();
        let mut expected = vec![0i32; src.len() / 8];
        scalar::pack_row(&src, &params, &mut expected);
        for kernels in all_kernels() {
            let mut packed = vec![0i32; src.len() / 8];
            (int4_kernels(kernels).pack_row)(&src, &params, &mut packed);
            assert_eq!(packed, expected, "{} group {group_size}", kernels.isa);
        }
    }
}
