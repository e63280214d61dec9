//! The binary scheme: the bit layout on hand-checked bytes, the closed-form error of the
//! L2-optimal scale, errors, cancellation, edge shapes and random shapes.

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

fn quantize(src: &[f32], rows: usize, cols: usize) -> BinaryTensor {
    quantize_binary(src, rows, cols, &|| true).expect("quantizes")
}

/// Statistics summed directly in f64, to check the fused ones against.
fn squared_error(src: &[f32], approx: &[f32]) -> f64 {
    src.iter()
        .zip(approx)
        .map(|(&x, &y)| (f64::from(y) - f64::from(x)).powi(2))
        .sum()
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
    assert_eq!(packed_row_bytes(8), 1);
    assert_eq!(packed_row_bytes(9), 2);
    assert_eq!(packed_row_bytes(4096), 512);
}

/// The worked example of `docs/quantd-layouts.md`, byte for byte.
#[test]
fn hand_checked_layout() {
    let src = [
        // Row 0: sum of magnitudes 20 over 10 columns, alpha = 2.
        1.0, -1.0, 0.0, -0.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0, //
        // Row 1: alpha = 0.5.
        -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, 0.5, -0.5,
    ];
    let tensor = quantize(&src, 2, 10);
    // Row 0, columns 0..8: signs + - + + + - + -, least significant bit first: 0b0101_1101.
    // Columns 8..10: + -, then six zero padding bits.
    // Row 1: columns 0..8 all negative, then column 8 positive.
    assert_eq!(tensor.packed, [0x5D, 0x01, 0x00, 0x01]);
    assert_eq!(tensor.scales, [2.0, 0.5]);
    let expected = [
        2.0, -2.0, 2.0, 2.0, 2.0, -2.0, 2.0, -2.0, 2.0, -2.0, //
        -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, 0.5, -0.5,
    ];
    assert_eq!(
        dequantize_binary(&tensor.packed, &tensor.scales, 2, 10),
        expected
    );
    // Row 0: Σw² = 2·(1 + 4 + 9 + 16) = 60 and the closed form gives 60 - 10·4 = 20; row 1 is
    // exact.
    assert_eq!(tensor.stats.n, 20);
    assert_eq!(tensor.stats.sum_sq_err, 20.0);
    assert_eq!(tensor.stats.max_abs_err, 2.0);
    println!(
        "INTEROP binary example shape=[2,10] packed={} scales={} expected={}",
        hex(&tensor.packed),
        hex_f32(&tensor.scales),
        hex_f32(&expected)
    );
}

#[test]
fn zero_and_negative_zero_are_positive() {
    let tensor = quantize(&[0.0, -0.0, -1.0], 1, 3);
    assert_eq!(tensor.packed, [0b011]);
    assert_eq!(tensor.scales, [1.0 / 3.0]);
}

/// The statistics equal `Σ w² - cols · alpha²` per row, the error of the optimal scale, and
/// moving `alpha` either way only makes it worse.
#[test]
fn error_is_the_closed_form_of_the_optimal_scale() {
    let (rows, cols) = (7, 301);
    let src = test_values(rows * cols, 11);
    let tensor = quantize(&src, rows, cols);
    let mut closed_form = 0.0f64;
    for (row, &scale) in src.chunks_exact(cols).zip(&tensor.scales) {
        let mean_abs = row.iter().map(|&w| f64::from(w.abs())).sum::<f64>() / cols as f64;
        assert!((f64::from(scale) - mean_abs).abs() <= mean_abs * 1e-7);
        let sum_sq: f64 = row.iter().map(|&w| f64::from(w).powi(2)).sum();
        closed_form += sum_sq - cols as f64 * mean_abs * mean_abs;
    }
    let direct = squared_error(
        &src,
        &dequantize_binary(&tensor.packed, &tensor.scales, rows, cols),
    );
    assert!((tensor.stats.sum_sq_err - closed_form).abs() <= closed_form * 1e-5);
    assert!((direct - closed_form).abs() <= closed_form * 1e-6);
    for factor in [0.99f32, 1.01] {
        let scaled: Vec<f32> = tensor.scales.iter().map(|s| s * factor).collect();
        let worse = squared_error(
            &src,
            &dequantize_binary(&tensor.packed, &scaled, rows, cols),
        );
        assert!(worse > direct, "factor {factor}: {worse} <= {direct}");
    }
}

#[test]
fn stats_match_compare_on_the_dequantized_tensor() {
    let (rows, cols) = (5, 1030);
    let src = test_values(rows * cols, 3);
    let tensor = quantize(&src, rows, cols);
    let dequantized = dequantize_binary(&tensor.packed, &tensor.scales, rows, cols);
    let whole = compare(&src, &dequantized);
    assert_eq!(tensor.stats.n, whole.n);
    assert_eq!(tensor.stats.max_abs_err, whole.max_abs_err);
    // Row by row, `compare` starts its f32 blocks at each row (1030 columns: a block and a
    // tail), so the sums agree to about f32 epsilon rather than exactly.
    for (fused, reference) in [
        (tensor.stats.sum_sq_err, whole.sum_sq_err),
        (tensor.stats.sum_sq_ref, whole.sum_sq_ref),
        (tensor.stats.sum_sq_deq, whole.sum_sq_deq),
        (tensor.stats.dot, whole.dot),
    ] {
        assert!((fused - reference).abs() <= reference.abs() * 1e-6);
    }
}

#[test]
fn all_zero_row_has_zero_scale_and_is_exact() {
    let src = [0.0, 0.0, 0.0, 1.0, -1.0, 1.0];
    let tensor = quantize(&src, 2, 3);
    assert_eq!(tensor.scales, [0.0, 1.0]);
    assert_eq!(tensor.packed, [0b111, 0b101]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
}

#[test]
fn empty_and_single_element_tensors() {
    for (rows, cols) in [(0, 0), (0, 5), (3, 0)] {
        let tensor = quantize(&[], rows, cols);
        assert!(tensor.packed.is_empty());
        assert_eq!(tensor.scales, vec![0.0; rows]);
        assert_eq!(tensor.stats, ErrorStats::default());
        assert!(dequantize_binary(&tensor.packed, &tensor.scales, rows, cols).is_empty());
    }
    let tensor = quantize(&[-3.5], 1, 1);
    assert_eq!(tensor.packed, [0]);
    assert_eq!(tensor.scales, [3.5]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
    assert_eq!(
        dequantize_binary(&tensor.packed, &tensor.scales, 1, 1),
        [-3.5]
    );
}

#[test]
fn extreme_magnitudes_keep_a_finite_scale() {
    let src = [f32::MAX, -f32::MAX, f32::MAX, f32::MAX];
    let tensor = quantize(&src, 1, 4);
    assert_eq!(tensor.scales, [f32::MAX]);
    let tiny = [f32::from_bits(1), -f32::from_bits(1)];
    assert_eq!(quantize(&tiny, 1, 2).scales, [f32::from_bits(1)]);
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut src = test_values(40, 5);
        src[27] = bad;
        src[33] = bad;
        assert_eq!(
            quantize_binary(&src, 4, 10, &|| true),
            Err(QuantError::NonFinite { index_hint: 27 })
        );
    }
}

#[test]
fn shape_errors() {
    assert_eq!(
        quantize_binary(&[1.0; 6], 2, 4, &|| true),
        Err(QuantError::ShapeMismatch {
            shape: vec![2, 4],
            expected: 8,
            actual: 6
        })
    );
    assert_eq!(
        quantize_binary(&[], usize::MAX, 2, &|| true),
        Err(QuantError::ShapeOverflow {
            shape: vec![usize::MAX, 2]
        })
    );
}

#[test]
fn cancellation_before_start_and_between_rows() {
    let src = test_values(4 * 10, 9);
    assert_eq!(
        quantize_binary(&src, 4, 10, &|| false),
        Err(QuantError::Cancelled)
    );
    // Rows of 2^19 elements: a check before row 0 and before row 2.
    let cols = 1 << 19;
    let src = vec![0.25f32; 3 * cols];
    let calls = Cell::new(0);
    let result = quantize_binary(&src, 3, cols, &|| {
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
        try_dequantize_binary(&packed[1..], scales, 3, 10),
        Err(BinaryLayoutError::PackedLength {
            expected: 6,
            actual: 5
        })
    );
    assert_eq!(
        try_dequantize_binary(packed, &scales[1..], 3, 10),
        Err(BinaryLayoutError::ScaleCount {
            expected: 3,
            actual: 2
        })
    );
    let mut bad_scales = scales.clone();
    bad_scales[1] = f32::NAN;
    assert_eq!(
        try_dequantize_binary(packed, &bad_scales, 3, 10),
        Err(BinaryLayoutError::NonFiniteScale { row: 1 })
    );
    let mut bad_padding = packed.clone();
    bad_padding[3] |= 0b100;
    assert_eq!(
        try_dequantize_binary(&bad_padding, scales, 3, 10),
        Err(BinaryLayoutError::NonZeroPadding { row: 1 })
    );
    assert_eq!(
        try_dequantize_binary(&[], &[], usize::MAX, 3),
        Err(BinaryLayoutError::ShapeOverflow {
            rows: usize::MAX,
            cols: 3
        })
    );
    assert_eq!(
        try_dequantize_binary(packed, scales, 3, 10).as_deref(),
        Ok(&dequantize_binary(packed, scales, 3, 10)[..])
    );
}

#[test]
#[should_panic(expected = "dequantize_binary")]
fn dequantize_panics_on_a_wrong_length() {
    dequantize_binary(&[0], &[1.0], 1, 9);
}

/// Bytes and values the numpy decoder of `docs/quantd-layouts.md` is checked against: run
/// `cargo test binary::tests::prints_interop_vectors -- --nocapture`.
#[test]
fn prints_interop_vectors() {
    for (case, (rows, cols)) in [(1, 1), (3, 7), (2, 8), (4, 19), (2, 64)]
        .into_iter()
        .enumerate()
    {
        let src = test_values(rows * cols, 100 + case as u64);
        let tensor = quantize(&src, rows, cols);
        let dequantized = dequantize_binary(&tensor.packed, &tensor.scales, rows, cols);
        println!(
            "INTEROP binary case{case} shape=[{rows},{cols}] packed={} scales={} expected={}",
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
        let dequantized = dequantize_binary(&tensor.packed, &tensor.scales, rows, cols);
        for (idx, (&x, &y)) in src.iter().zip(&dequantized).enumerate() {
            let scale = tensor.scales[idx / cols];
            prop_assert_eq!(y, if x >= 0.0 { scale } else { -scale });
        }
        let reference = compare(&src, &dequantized);
        prop_assert_eq!(tensor.stats.n, reference.n);
        prop_assert_eq!(tensor.stats.max_abs_err, reference.max_abs_err);
        // Row by row, `compare` starts its f32 blocks at each row: sums agree to ~f32 epsilon.
        prop_assert!((tensor.stats.sum_sq_err - reference.sum_sq_err).abs()
            <= reference.sum_sq_err * 1e-6);
    }
}
