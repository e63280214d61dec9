//! The ternary scheme: the code layout on hand-checked bytes, codes against the threshold rule
//! computed independently, the closed-form error, errors, cancellation, edge shapes and random
//! shapes.

use std::cell::Cell;

use proptest::prelude::*;

use super::*;

/// Deterministic values with a roughly normal spread (sum of four uniforms minus two), from a
/// SplitMix64 stream; enough variety for tests, no dependency.
fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next_uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        (mixed >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (0..4).map(|_| next_uniform()).sum::<f32>() - 2.0)
        .collect()
}

fn quantize(src: &[f32], rows: usize, cols: usize) -> TernaryTensor {
    quantize_ternary(src, rows, cols, &|| true).expect("quantizes")
}

/// The codes of a packed tensor as -1, 0, +1, read with plain shifts.
fn unpacked_codes(packed: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let row_bytes = packed_row_bytes(cols);
    let mut codes = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        for col in 0..cols {
            let byte = packed[row * row_bytes + col / 4];
            codes.push(match (byte >> (2 * (col % 4))) & 3 {
                0 => 0,
                1 => 1,
                2 => -1,
                _ => panic!("invalid code"),
            });
        }
    }
    codes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_f32(values: &[f32]) -> String {
    hex(&values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect::<Vec<_>>())
}

#[test]
fn packed_row_bytes_rounds_up_to_whole_bytes() {
    assert_eq!(packed_row_bytes(0), 0);
    assert_eq!(packed_row_bytes(1), 1);
    assert_eq!(packed_row_bytes(4), 1);
    assert_eq!(packed_row_bytes(5), 2);
    assert_eq!(packed_row_bytes(4096), 1024);
}

/// The worked example of `docs/quantd-layouts.md`, byte for byte.
#[test]
fn hand_checked_layout() {
    let src = [
        // Row 0: Σ|w| = 6.5, delta = 0.7 · 6.5 / 6 ≈ 0.758; codes + - 0 0 0 +, and
        // alpha = (1.5 + 1.5 + 3) / 3 = 2.
        1.5, -1.5, 0.25, -0.25, 0.0, 3.0, //
        // Row 1: Σ|w| = 4.5, delta = 0.525; codes 0 0 - + - 0, alpha = (1 + 1 + 1.5) / 3.
        0.5, -0.5, -1.0, 1.0, -1.5, 0.0,
    ];
    let tensor = quantize(&src, 2, 6);
    // Row 0 byte 0: codes 01, 10, 00, 00 from the least significant bits: 0b0000_1001.
    // Byte 1: codes 00, 01, then two zero padding codes: 0b0000_0100.
    // Row 1 byte 0: 00, 00, 10, 01 → 0b0110_0000; byte 1: 10, 00 → 0b0000_0010.
    assert_eq!(tensor.packed, [0x09, 0x04, 0x60, 0x02]);
    let alpha_1 = (3.5f64 / 3.0) as f32;
    assert_eq!(tensor.scales, [2.0, alpha_1]);
    let expected = [
        2.0, -2.0, 0.0, 0.0, 0.0, 2.0, //
        0.0, 0.0, -alpha_1, alpha_1, -alpha_1, 0.0,
    ];
    assert_eq!(
        dequantize_ternary(&tensor.packed, &tensor.scales, 2, 6),
        expected
    );
    println!(
        "INTEROP ternary example shape=[2,6] packed={} scales={} expected={}",
        hex(&tensor.packed),
        hex_f32(&tensor.scales),
        hex_f32(&expected)
    );
}

#[test]
fn values_at_the_threshold_become_zero() {
    // A computed delta is rarely an f32, so check the boundary on `ternary_code` directly.
    assert_eq!(ternary_code(0.5, 0.5), CODE_ZERO);
    assert_eq!(ternary_code(-0.5, 0.5), CODE_ZERO);
    assert_eq!(ternary_code(0.500_000_06, 0.5), CODE_PLUS);
    assert_eq!(ternary_code(-0.500_000_06, 0.5), CODE_MINUS);
    assert_eq!(ternary_code(-0.0, 0.0), CODE_ZERO);
    // Equal magnitudes all exceed delta = 0.7 · |w|: codes + + - +, alpha exact.
    let tensor = quantize(&[1.0, 1.0, -1.0, 1.0], 1, 4);
    assert_eq!(tensor.packed, [0b01_10_01_01]);
    assert_eq!(tensor.scales, [1.0]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
}

/// Codes follow `t = +1 if w > delta, -1 if w < -delta, else 0` with `delta` recomputed here from
/// a plain sequential sum, and `alpha` is the mean magnitude of the non-zero codes.
#[test]
fn codes_match_the_threshold_rule() {
    let (rows, cols) = (9, 257);
    let src = test_values(rows * cols, 21);
    let tensor = quantize(&src, rows, cols);
    let codes = unpacked_codes(&tensor.packed, rows, cols);
    for (row_idx, row) in src.chunks_exact(cols).enumerate() {
        let mean_abs = row.iter().map(|&w| f64::from(w.abs())).sum::<f64>() / cols as f64;
        let delta = 0.7 * mean_abs;
        let (mut kept_sum, mut kept_count) = (0.0f64, 0usize);
        for (col, &w) in row.iter().enumerate() {
            let w64 = f64::from(w);
            // A different summation order moves delta by ~1e-16 relative: skip the values
            // that close to it.
            if (w64.abs() - delta).abs() <= delta * 1e-12 {
                continue;
            }
            let expected = if w64 > delta {
                1
            } else if w64 < -delta {
                -1
            } else {
                0
            };
            assert_eq!(
                codes[row_idx * cols + col],
                expected,
                "row {row_idx} col {col}"
            );
            if expected != 0 {
                kept_sum += w64.abs();
                kept_count += 1;
            }
        }
        let alpha = kept_sum / kept_count as f64;
        let scale = f64::from(tensor.scales[row_idx]);
        assert!((scale - alpha).abs() <= alpha * 1e-7, "row {row_idx}");
    }
}

/// The statistics equal `Σ w² - count · alpha²` per row, and moving `alpha` either way only
/// makes the error worse.
#[test]
fn error_is_the_closed_form_of_the_optimal_scale() {
    let (rows, cols) = (6, 513);
    let src = test_values(rows * cols, 8);
    let tensor = quantize(&src, rows, cols);
    let codes = unpacked_codes(&tensor.packed, rows, cols);
    let mut closed_form = 0.0f64;
    for (row_idx, row) in src.chunks_exact(cols).enumerate() {
        let row_codes = &codes[row_idx * cols..][..cols];
        let count = row_codes.iter().filter(|&&code| code != 0).count();
        let alpha = f64::from(tensor.scales[row_idx]);
        let sum_sq: f64 = row.iter().map(|&w| f64::from(w).powi(2)).sum();
        closed_form += sum_sq - count as f64 * alpha * alpha;
    }
    let squared_error = |scales: &[f32]| -> f64 {
        src.iter()
            .zip(dequantize_ternary(&tensor.packed, scales, rows, cols))
            .map(|(&x, y)| (f64::from(y) - f64::from(x)).powi(2))
            .sum()
    };
    let direct = squared_error(&tensor.scales);
    assert!((tensor.stats.sum_sq_err - closed_form).abs() <= closed_form * 1e-5);
    assert!((direct - closed_form).abs() <= closed_form * 1e-6);
    for factor in [0.99f32, 1.01] {
        let scaled: Vec<f32> = tensor.scales.iter().map(|s| s * factor).collect();
        assert!(squared_error(&scaled) > direct, "factor {factor}");
    }
}

#[test]
fn all_zero_row_has_zero_scale_and_is_exact() {
    let src = [0.0, -0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0, 0.0];
    let tensor = quantize(&src, 3, 3);
    assert_eq!(tensor.scales, [0.0, 2.0, 0.0]);
    assert_eq!(tensor.packed, [0x00, 0b10_01_00, 0x00]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
    assert_eq!(
        dequantize_ternary(&tensor.packed, &tensor.scales, 3, 3),
        [0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn empty_and_single_element_tensors() {
    for (rows, cols) in [(0, 0), (0, 5), (3, 0)] {
        let tensor = quantize(&[], rows, cols);
        assert!(tensor.packed.is_empty());
        assert_eq!(tensor.scales, vec![0.0; rows]);
        assert_eq!(tensor.stats, ErrorStats::default());
        assert!(dequantize_ternary(&tensor.packed, &tensor.scales, rows, cols).is_empty());
    }
    // One element: delta = 0.7·|w| < |w|, so the code is its sign and the scale its magnitude.
    let tensor = quantize(&[-3.5], 1, 1);
    assert_eq!(tensor.packed, [CODE_MINUS]);
    assert_eq!(tensor.scales, [3.5]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
    assert_eq!(
        dequantize_ternary(&tensor.packed, &tensor.scales, 1, 1),
        [-3.5]
    );
}

#[test]
fn extreme_magnitudes_keep_a_finite_scale() {
    let tensor = quantize(&[f32::MAX, -f32::MAX, 0.0, f32::MAX], 1, 4);
    assert_eq!(tensor.scales, [f32::MAX]);
    let tiny = f32::from_bits(1);
    assert_eq!(quantize(&[tiny, -tiny, 0.0], 1, 3).scales, [tiny]);
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut src = test_values(40, 5);
        src[27] = bad;
        src[33] = bad;
        assert_eq!(
            quantize_ternary(&src, 4, 10, &|| true),
            Err(QuantError::NonFinite { index_hint: 27 })
        );
    }
}

#[test]
fn shape_errors() {
    assert_eq!(
        quantize_ternary(&[1.0; 6], 2, 4, &|| true),
        Err(QuantError::ShapeMismatch {
            shape: vec![2, 4],
            expected: 8,
            actual: 6
        })
    );
    assert_eq!(
        quantize_ternary(&[], 2, usize::MAX, &|| true),
        Err(QuantError::ShapeOverflow {
            shape: vec![2, usize::MAX]
        })
    );
}

#[test]
fn cancellation_before_start_and_between_rows() {
    let src = test_values(4 * 10, 9);
    assert_eq!(
        quantize_ternary(&src, 4, 10, &|| false),
        Err(QuantError::Cancelled)
    );
    // Rows of 2^19 elements: a check before row 0 and before row 2.
    let cols = 1 << 19;
    let src = vec![0.25f32; 3 * cols];
    let calls = Cell::new(0);
    let result = quantize_ternary(&src, 3, cols, &|| {
        calls.set(calls.get() + 1);
        calls.get() < 2
    });
    assert_eq!(result, Err(QuantError::Cancelled));
    assert_eq!(calls.get(), 2);
}

#[test]
fn reader_rejects_malformed_layouts() {
    let tensor = quantize(&test_values(30, 1), 3, 10);
    let (packed, scales) = (&tensor.packed, &tensor.scales);
    assert_eq!(
        try_dequantize_ternary(&packed[1..], scales, 3, 10),
        Err(TernaryLayoutError::PackedLength {
            expected: 9,
            actual: 8
        })
    );
    assert_eq!(
        try_dequantize_ternary(packed, &scales[1..], 3, 10),
        Err(TernaryLayoutError::ScaleCount {
            expected: 3,
            actual: 2
        })
    );
    let mut bad_scales = scales.clone();
    bad_scales[2] = f32::INFINITY;
    assert_eq!(
        try_dequantize_ternary(packed, &bad_scales, 3, 10),
        Err(TernaryLayoutError::NonFiniteScale { row: 2 })
    );
    // Column 6 of row 1 is bits 4..6 of byte 3 + 1 = 4.
    let mut bad_code = packed.clone();
    bad_code[4] |= CODE_INVALID << 4;
    assert_eq!(
        try_dequantize_ternary(&bad_code, scales, 3, 10),
        Err(TernaryLayoutError::InvalidCode { index: 16 })
    );
    // Row 2's last byte holds columns 8 and 9 in bits 0..4; bits 4..8 are padding.
    let mut bad_padding = packed.clone();
    bad_padding[8] |= 0b0100_0000;
    assert_eq!(
        try_dequantize_ternary(&bad_padding, scales, 3, 10),
        Err(TernaryLayoutError::NonZeroPadding { row: 2 })
    );
    assert_eq!(
        try_dequantize_ternary(&[], &[], usize::MAX, 3),
        Err(TernaryLayoutError::ShapeOverflow {
            rows: usize::MAX,
            cols: 3
        })
    );
    assert_eq!(
        try_dequantize_ternary(packed, scales, 3, 10).as_deref(),
        Ok(&dequantize_ternary(packed, scales, 3, 10)[..])
    );
}

#[test]
#[should_panic(expected = "invalid ternary code")]
fn dequantize_panics_on_the_invalid_code() {
    dequantize_ternary(&[0b11], &[1.0], 1, 1);
}

/// Bytes and values the numpy decoder of `docs/quantd-layouts.md` is checked against: run
/// `cargo test ternary::tests::prints_interop_vectors -- --nocapture`.
#[test]
fn prints_interop_vectors() {
    for (case, (rows, cols)) in [(1, 1), (3, 7), (2, 8), (4, 19), (2, 64)]
        .into_iter()
        .enumerate()
    {
        let src = test_values(rows * cols, 200 + case as u64);
        let tensor = quantize(&src, rows, cols);
        let dequantized = dequantize_ternary(&tensor.packed, &tensor.scales, rows, cols);
        println!(
            "INTEROP ternary case{case} shape=[{rows},{cols}] packed={} scales={} expected={}",
            hex(&tensor.packed),
            hex_f32(&tensor.scales),
            hex_f32(&dequantized)
        );
    }
}

proptest! {
    #[test]
    fn random_shapes_round_trip(
        rows in 0usize..6,
        cols in 0usize..70,
        magnitude in -20i32..20,
        seed in any::<u64>(),
    ) {
        let scale = 2f32.powi(magnitude);
        let src: Vec<f32> = test_values(rows * cols, seed).into_iter().map(|v| v * scale).collect();
        let tensor = quantize(&src, rows, cols);
        prop_assert_eq!(tensor.packed.len(), rows * packed_row_bytes(cols));
        prop_assert_eq!(tensor.scales.len(), rows);
        let codes = unpacked_codes(&tensor.packed, rows, cols);
        let dequantized = dequantize_ternary(&tensor.packed, &tensor.scales, rows, cols);
        for (idx, (&x, &y)) in src.iter().zip(&dequantized).enumerate() {
            let scale = tensor.scales[idx / cols];
            prop_assert_eq!(y, f32::from(codes[idx]) * scale);
            // A non-zero code keeps the sign of its value.
            prop_assert!(codes[idx] == 0 || (x > 0.0) == (codes[idx] > 0));
        }
        let reference = compare(&src, &dequantized);
        prop_assert_eq!(tensor.stats.n, reference.n);
        prop_assert_eq!(tensor.stats.max_abs_err, reference.max_abs_err);
        // Row by row, `compare` starts its f32 blocks at each row: sums agree to ~f32 epsilon.
        prop_assert!((tensor.stats.sum_sq_err - reference.sum_sq_err).abs()
            <= reference.sum_sq_err * 1e-6);
    }
}
