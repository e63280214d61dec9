//! The k-means scheme: options, the bit-stream layout on hand-checked bytes, exact nearest
//! assignment against brute force, the Lloyd invariants (non-increasing error, fixed points,
//! determinism), exact reconstruction of few-valued tensors, errors, cancellation and random
//! inputs.

use std::cell::Cell;

use proptest::prelude::*;

use super::nearest::upper_threshold;
use super::*;
use crate::quant::metrics::compare;

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

fn options(bits: u8) -> KmeansOptions {
    KmeansOptions::with_bits(bits).expect("valid bits")
}

fn quantize(src: &[f32], options: KmeansOptions) -> KmeansTensor {
    quantize_kmeans(src, options, &|| true).expect("quantizes")
}

/// The indices of a packed stream, read one bit at a time.
fn unpacked_indices(packed: &[u8], bits: u8, n: usize) -> Vec<usize> {
    let bits = usize::from(bits);
    (0..n)
        .map(|value_idx| {
            (0..bits)
                .map(|bit| {
                    let stream_bit = value_idx * bits + bit;
                    usize::from((packed[stream_bit / 8] >> (stream_bit % 8)) & 1) << bit
                })
                .sum()
        })
        .collect()
}

/// The nearest codebook index by exact distance, ties to the lower index (exact for values
/// whose f64 differences are exact, as in every test here).
fn brute_force_nearest(codebook: &[f32], value: f32) -> usize {
    let distance = |centroid: f32| (f64::from(value) - f64::from(centroid)).abs();
    let mut best = 0;
    for (index, &centroid) in codebook.iter().enumerate() {
        if distance(centroid) < distance(codebook[best]) {
            best = index;
        }
    }
    best
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
fn options_are_validated() {
    let defaults = options(4);
    assert_eq!(defaults.max_iterations, 30);
    assert_eq!(defaults.tolerance, 1e-4);
    assert_eq!(defaults.codebook_len(), 16);
    for bits in [0, 1, 9, 255] {
        assert_eq!(
            KmeansOptions::with_bits(bits),
            Err(KmeansError::UnsupportedBits { bits })
        );
    }
    for tolerance in [-1e-9, f64::INFINITY] {
        let invalid = KmeansOptions {
            tolerance,
            ..defaults
        };
        assert_eq!(
            quantize_kmeans(&[1.0], invalid, &|| true),
            Err(KmeansError::InvalidTolerance { tolerance })
        );
    }
    let nan = KmeansOptions {
        tolerance: f64::NAN,
        ..defaults
    };
    assert!(matches!(
        nan.validate(),
        Err(KmeansError::InvalidTolerance { .. })
    ));
    let no_iterations = KmeansOptions {
        max_iterations: 0,
        tolerance: 0.0,
        ..defaults
    };
    assert_eq!(no_iterations.validate(), Ok(()));
}

#[test]
fn packed_bytes_rounds_the_stream_up_to_whole_bytes() {
    assert_eq!(packed_bytes(0, 4), 0);
    assert_eq!(packed_bytes(1, 2), 1);
    assert_eq!(packed_bytes(4, 2), 1);
    assert_eq!(packed_bytes(5, 2), 2);
    assert_eq!(packed_bytes(8, 3), 3);
    assert_eq!(packed_bytes(9, 3), 4);
    assert_eq!(packed_bytes(3, 8), 3);
    assert_eq!(packed_bytes(7, 7), 7);
    // No overflow where `n · bits` would overflow.
    assert_eq!(packed_bytes(usize::MAX, 8), usize::MAX);
    assert_eq!(packed_bytes(usize::MAX, 2), usize::MAX / 4 + 1);
}

/// The worked example of `docs/quantd-layouts.md`, byte for byte.
#[test]
fn hand_checked_layout_three_bits() {
    // Eight distinct values: they are the codebook, and the indices are 1 2 3 4 5 6 7 0 5.
    let src = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 0.0, 50.0];
    let tensor = quantize(&src, options(3));
    assert_eq!(
        tensor.codebook,
        [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    );
    assert_eq!(tensor.iterations, 0);
    // Stream bits 0..3 = 001, 3..6 = 010, 6..9 = 011, 9..12 = 100, 12..15 = 101, 15..18 = 110,
    // 18..21 = 111, 21..24 = 000, 24..27 = 101. Byte 0 = bits 0..8 = 0b11_010_001 = 0xD1;
    // byte 1 = 0b0_101_100_0 = 0x58; byte 2 = 0b000_111_11 = 0x1F; byte 3 = 0b00000_101 = 0x05.
    assert_eq!(tensor.packed, [0xD1, 0x58, 0x1F, 0x05]);
    assert_eq!(
        dequantize_kmeans(&tensor.packed, &tensor.codebook, 3, 9),
        src
    );
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
    println!(
        "INTEROP kmeans example bits=3 n=9 packed={} codebook={} expected={}",
        hex(&tensor.packed),
        hex_f32(&tensor.codebook),
        hex_f32(&src)
    );
}

#[test]
fn hand_checked_layout_two_bits_with_a_padded_codebook() {
    // Three distinct values: the codebook repeats the largest, indices 0 2 2 0 1.
    let src = [-1.0, 2.0, 2.0, -1.0, 0.5];
    let tensor = quantize(&src, options(2));
    assert_eq!(tensor.codebook, [-1.0, 0.5, 2.0, 2.0]);
    // Byte 0 = 00 10 10 00 from the least significant bits = 0b00_10_10_00; byte 1 = 0b01.
    assert_eq!(tensor.packed, [0x28, 0x01]);
    assert_eq!(
        dequantize_kmeans(&tensor.packed, &tensor.codebook, 2, 5),
        src
    );
}

#[test]
fn eight_bits_store_one_index_per_byte() {
    let src: Vec<f32> = (0..300).map(|i| (i % 256) as f32).rev().collect();
    let tensor = quantize(&src, options(8));
    let expected: Vec<u8> = src.iter().map(|&value| value as u8).collect();
    assert_eq!(tensor.packed, expected);
}

#[test]
fn thresholds_are_exact_at_and_around_midpoints() {
    // A tie goes to the lower centroid, so the first value of the upper one is just above 1.5.
    assert_eq!(upper_threshold(1.0, 2.0), 1.5f32.next_up());
    // Neighbouring f32: the midpoint is not an f32, and `upper` itself is the first.
    assert_eq!(upper_threshold(1.0, 1.0f32.next_up()), 1.0f32.next_up());
    assert_eq!(upper_threshold(-3.0, -1.0), (-2.0f32).next_up());
    // The exact midpoint 2^29 - 2^-41 is not representable in f64: the f64 sum rounds up to
    // 2^30, and halving it would put 2^29 on the midpoint (a tie, so the lower centroid).
    // 2^29 is in fact above the midpoint and nearer to 2^30.
    let lower = -(2f32.powi(-40));
    let upper = 2f32.powi(30);
    assert_eq!(upper_threshold(lower, upper), 2f32.powi(29));
    // Mirrored, the f64 sum rounds down and -2^29 is below the midpoint: lower centroid.
    assert_eq!(
        upper_threshold(-(2f32.powi(30)), 2f32.powi(-40)),
        (-(2f32.powi(29))).next_up()
    );
    // Subnormals and opposite extremes.
    let tiny = f32::from_bits(1);
    assert_eq!(upper_threshold(0.0, tiny), tiny);
    assert_eq!(upper_threshold(-f32::MAX, f32::MAX), 0.0f32.next_up());
}

#[test]
fn equal_centroids_resolve_to_the_lowest_index() {
    let codebook = [-1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 3.0, 3.0];
    let table = NearestCentroid::new(&codebook);
    assert_eq!(table.n_distinct(), 4);
    let index = |value: f32| usize::from(table.codebook_index(table.rank::<3>(value)));
    assert_eq!(index(-5.0), 0);
    assert_eq!(index(-0.5), 0);
    assert_eq!(index(-0.25), 1);
    assert_eq!(index(1.0), 1);
    assert_eq!(index(1.5), 4);
    assert_eq!(index(2.5), 4);
    assert_eq!(index(2.75), 6);
    assert_eq!(index(100.0), 6);
}

#[test]
fn tensors_with_few_distinct_values_are_reconstructed_exactly() {
    for bits in MIN_BITS..=MAX_BITS {
        let k = 1usize << bits;
        for n_distinct in [1, k / 2 + 1, k] {
            // Spread out, not evenly spaced, repeated and interleaved.
            let values: Vec<f32> = (0..n_distinct)
                .map(|i| (i as f32).powi(2) * 0.37 - 5.0)
                .collect();
            let src: Vec<f32> = (0..3 * k + 7)
                .map(|i| values[(i * 7) % n_distinct])
                .collect();
            let tensor = quantize(&src, options(bits));
            assert_eq!(tensor.iterations, 0);
            assert_eq!(tensor.codebook.len(), k);
            assert_eq!(
                dequantize_kmeans(&tensor.packed, &tensor.codebook, bits, src.len()),
                src,
                "bits {bits}, {n_distinct} distinct"
            );
            assert_eq!(tensor.stats.sum_sq_err, 0.0);
        }
    }
}

#[test]
fn negative_zero_shares_the_entry_of_zero() {
    let tensor = quantize(&[-0.0, 0.0, 1.0, -0.0], options(2));
    assert_eq!(tensor.codebook, [0.0, 1.0, 1.0, 1.0]);
    assert!(tensor.codebook[0].is_sign_positive());
    assert_eq!(tensor.packed, [0b00_01_00_00]);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
}

#[test]
fn empty_and_single_element_tensors() {
    let tensor = quantize(&[], options(5));
    assert!(tensor.packed.is_empty());
    assert_eq!(tensor.codebook, vec![0.0; 32]);
    assert_eq!(tensor.iterations, 0);
    assert_eq!(tensor.stats, ErrorStats::default());
    assert!(dequantize_kmeans(&[], &tensor.codebook, 5, 0).is_empty());

    let tensor = quantize(&[-2.5], options(4));
    assert_eq!(tensor.codebook, vec![-2.5; 16]);
    assert_eq!(tensor.packed, [0]);
    assert_eq!(tensor.stats.n, 1);
    assert_eq!(tensor.stats.sum_sq_err, 0.0);
}

#[test]
fn zero_iterations_keep_the_linear_initialisation() {
    let src: Vec<f32> = (0..=100).map(|i| i as f32).collect();
    let no_iterations = KmeansOptions {
        max_iterations: 0,
        ..options(2)
    };
    let tensor = quantize(&src, no_iterations);
    assert_eq!(tensor.iterations, 0);
    assert_eq!(
        tensor.codebook,
        [0.0, (100.0f64 / 3.0) as f32, (200.0f64 / 3.0) as f32, 100.0]
    );
}

/// Lloyd never raises the total squared error: checked on the fit's own f64 totals, on the
/// statistics after 0, 1, 2, ... iterations, and against a direct recomputation.
#[test]
fn error_does_not_increase_across_iterations() {
    let src = test_values(5000, 77);
    for bits in [2, 3, 5] {
        let fit_options = KmeansOptions {
            max_iterations: 40,
            tolerance: 0.0,
            ..options(bits)
        };
        let fit = fit_codebook(&src, fit_options, &|| true).expect("fits");
        assert!(
            fit.iterations >= 3,
            "bits {bits}: {} iterations",
            fit.iterations
        );
        for pair in fit.squared_errors.windows(2) {
            assert!(pair[1] <= pair[0], "bits {bits}: {pair:?}");
        }
        // Linear initialisation is clearly improved on for bell-shaped data.
        let (first, last) = (fit.squared_errors[0], *fit.squared_errors.last().unwrap());
        assert!(last < 0.9 * first, "bits {bits}: {first} -> {last}");

        let mut previous = f64::INFINITY;
        for max_iterations in 0..=8 {
            let limited = KmeansOptions {
                max_iterations,
                ..fit_options
            };
            let tensor = quantize(&src, limited);
            let direct: f64 = src
                .iter()
                .zip(dequantize_kmeans(
                    &tensor.packed,
                    &tensor.codebook,
                    bits,
                    src.len(),
                ))
                .map(|(&x, y)| (f64::from(y) - f64::from(x)).powi(2))
                .sum();
            assert!((tensor.stats.sum_sq_err - direct).abs() <= direct * 1e-5);
            assert!(
                direct <= previous * (1.0 + 1e-12),
                "bits {bits}, {max_iterations}"
            );
            previous = direct;
        }
    }
}

/// At convergence every centroid with values is their mean (to f32 rounding), and every value
/// sits at its nearest centroid.
#[test]
fn converged_codebook_is_a_lloyd_fixed_point() {
    let src = test_values(3000, 5);
    let converged = KmeansOptions {
        max_iterations: 500,
        tolerance: 0.0,
        ..options(3)
    };
    let tensor = quantize(&src, converged);
    assert!(tensor.iterations < 500, "did not converge");
    let indices = unpacked_indices(&tensor.packed, 3, src.len());
    let mut sums = [0.0f64; 8];
    let mut counts = [0usize; 8];
    for (&value, &index) in src.iter().zip(&indices) {
        assert_eq!(index, brute_force_nearest(&tensor.codebook, value));
        sums[index] += f64::from(value);
        counts[index] += 1;
    }
    for index in 0..8 {
        if counts[index] > 0 {
            let mean = sums[index] / counts[index] as f64;
            let centroid = f64::from(tensor.codebook[index]);
            assert!(
                (centroid - mean).abs() <= mean.abs() * 2e-7 + 1e-9,
                "centroid {index}: {centroid} vs mean {mean}"
            );
        }
    }
}

#[test]
fn output_is_deterministic_sorted_and_uses_at_most_the_codebook() {
    let src = test_values(20_000, 3);
    let first = quantize(&src, options(4));
    let second = quantize(&src, options(4));
    assert_eq!(first, second);
    assert!(first.codebook.windows(2).all(|pair| pair[0] <= pair[1]));
    let dequantized = dequantize_kmeans(&first.packed, &first.codebook, 4, src.len());
    let mut distinct: Vec<u32> = dequantized.iter().map(|value| value.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() <= 16);
    assert!(first.iterations >= 1 && first.iterations <= DEFAULT_MAX_ITERATIONS);
}

/// Several chunks, a tail that is not a whole group of eight: assignments are nearest and the
/// chunked statistics match one comparison over the whole tensor.
#[test]
fn multi_chunk_tensor_is_encoded_consistently() {
    let n = 3 * CHUNK_ELEMENTS + 5;
    let src = test_values(n, 99);
    for bits in [3, 4, 7] {
        let tensor = quantize(&src, options(bits));
        assert_eq!(tensor.packed.len(), packed_bytes(n, bits));
        let indices = unpacked_indices(&tensor.packed, bits, n);
        for (idx, (&value, &index)) in src.iter().zip(&indices).enumerate().step_by(97) {
            assert_eq!(
                index,
                brute_force_nearest(&tensor.codebook, value),
                "bits {bits} idx {idx}"
            );
        }
        let whole = compare(
            &src,
            &dequantize_kmeans(&tensor.packed, &tensor.codebook, bits, n),
        );
        assert_eq!(tensor.stats.n, whole.n);
        assert_eq!(tensor.stats.max_abs_err, whole.max_abs_err);
        assert!((tensor.stats.sum_sq_err - whole.sum_sq_err).abs() <= whole.sum_sq_err * 1e-12);
        assert!((tensor.stats.dot - whole.dot).abs() <= whole.dot.abs() * 1e-12);
    }
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for index in [0, 17, CHUNK_ELEMENTS + 3] {
            let mut src = test_values(CHUNK_ELEMENTS + 10, 5);
            src[index] = bad;
            src[CHUNK_ELEMENTS + 9] = bad;
            assert_eq!(
                quantize_kmeans(&src, options(4), &|| true),
                Err(KmeansError::Quant(QuantError::NonFinite {
                    index_hint: index
                }))
            );
        }
    }
}

#[test]
fn cancellation_before_start_and_mid_fit() {
    let src = test_values(4 * CHUNK_ELEMENTS, 12);
    assert_eq!(
        quantize_kmeans(&src, options(4), &|| false),
        Err(KmeansError::Quant(QuantError::Cancelled))
    );
    // 4 checks per pass: stop in the middle of the third pass (the first Lloyd iteration).
    let calls = Cell::new(0);
    let result = quantize_kmeans(&src, options(4), &|| {
        calls.set(calls.get() + 1);
        calls.get() < 10
    });
    assert_eq!(result, Err(KmeansError::Quant(QuantError::Cancelled)));
    assert_eq!(calls.get(), 10);
    // Checks in the final encoding pass count too.
    let full_run_calls = Cell::new(0);
    let tensor = quantize_kmeans(&src, options(4), &|| {
        full_run_calls.set(full_run_calls.get() + 1);
        true
    })
    .expect("quantizes");
    let passes = tensor.iterations + 3;
    assert_eq!(full_run_calls.get(), 4 * passes);
    let last_call = Cell::new(0);
    let result = quantize_kmeans(&src, options(4), &|| {
        last_call.set(last_call.get() + 1);
        last_call.get() < 4 * passes
    });
    assert_eq!(result, Err(KmeansError::Quant(QuantError::Cancelled)));
}

#[test]
fn reader_rejects_malformed_layouts() {
    let src = test_values(13, 4);
    let tensor = quantize(&src, options(3));
    let (packed, codebook) = (&tensor.packed, &tensor.codebook);
    assert_eq!(packed.len(), 5);
    assert_eq!(
        try_dequantize_kmeans(packed, codebook, 1, 13),
        Err(KmeansLayoutError::UnsupportedBits { bits: 1 })
    );
    assert_eq!(
        try_dequantize_kmeans(packed, &codebook[1..], 3, 13),
        Err(KmeansLayoutError::CodebookLength {
            bits: 3,
            expected: 8,
            actual: 7
        })
    );
    let mut bad_codebook = codebook.clone();
    bad_codebook[5] = f32::NAN;
    assert_eq!(
        try_dequantize_kmeans(packed, &bad_codebook, 3, 13),
        Err(KmeansLayoutError::NonFiniteCentroid { index: 5 })
    );
    assert_eq!(
        try_dequantize_kmeans(packed, codebook, 3, 14),
        Err(KmeansLayoutError::PackedLength {
            expected: 6,
            actual: 5
        })
    );
    // 13 · 3 = 39 stream bits: the last byte uses bits 0..7 and bit 7 is padding.
    let mut bad_padding = packed.clone();
    bad_padding[4] |= 0x80;
    assert_eq!(
        try_dequantize_kmeans(&bad_padding, codebook, 3, 13),
        Err(KmeansLayoutError::NonZeroPadding)
    );
    // A huge `n` is refused before any allocation.
    assert!(matches!(
        try_dequantize_kmeans(packed, codebook, 3, usize::MAX),
        Err(KmeansLayoutError::PackedLength { .. })
    ));
    assert_eq!(
        try_dequantize_kmeans(packed, codebook, 3, 13).as_deref(),
        Ok(&dequantize_kmeans(packed, codebook, 3, 13)[..])
    );
}

#[test]
#[should_panic(expected = "dequantize_kmeans")]
fn dequantize_panics_on_a_wrong_length() {
    dequantize_kmeans(&[0], &[0.0; 4], 2, 5);
}

/// Bytes and values the numpy decoder of `docs/quantd-layouts.md` is checked against: run
/// `cargo test kmeans::tests::prints_interop_vectors -- --nocapture`.
#[test]
fn prints_interop_vectors() {
    for bits in MIN_BITS..=MAX_BITS {
        for n in [1, 13, 300] {
            let src = test_values(n, u64::from(bits) * 1000 + n as u64);
            let tensor = quantize(&src, options(bits));
            let dequantized = dequantize_kmeans(&tensor.packed, &tensor.codebook, bits, n);
            println!(
                "INTEROP kmeans bits={bits} n={n} packed={} codebook={} expected={}",
                hex(&tensor.packed),
                hex_f32(&tensor.codebook),
                hex_f32(&dequantized)
            );
        }
    }
}

proptest! {
    /// The lookup table finds the brute-force nearest index (ties to the lower) on grids where
    /// exact ties and duplicate centroids are common.
    #[test]
    fn nearest_centroid_matches_brute_force(
        bits in 2u32..=5,
        centroid_steps in proptest::collection::vec(-64i32..64, 32),
        value_steps in proptest::collection::vec(-600i32..600, 64),
    ) {
        // Centroids on a grid of 1/8 and values on a grid of 1/16: every midpoint is a value.
        let mut codebook: Vec<f32> = centroid_steps[..1 << bits]
            .iter()
            .map(|&step| step as f32 / 8.0)
            .collect();
        codebook.sort_by(f32::total_cmp);
        let table = NearestCentroid::new(&codebook);
        for &step in &value_steps {
            let value = step as f32 / 16.0;
            let rank = match bits {
                2 => table.rank::<2>(value),
                3 => table.rank::<3>(value),
                4 => table.rank::<4>(value),
                _ => table.rank::<5>(value),
            };
            prop_assert_eq!(
                usize::from(table.codebook_index(rank)),
                brute_force_nearest(&codebook, value)
            );
        }
    }

    #[test]
    fn random_tensors_round_trip(
        n in 0usize..400,
        bits in MIN_BITS..=MAX_BITS,
        magnitude in -20i32..20,
        seed in any::<u64>(),
    ) {
        let scale = 2f32.powi(magnitude);
        let src: Vec<f32> = test_values(n, seed).into_iter().map(|v| v * scale).collect();
        let tensor = quantize(&src, options(bits));
        prop_assert_eq!(tensor.packed.len(), packed_bytes(n, bits));
        prop_assert_eq!(tensor.codebook.len(), 1usize << bits);
        prop_assert!(tensor.codebook.windows(2).all(|pair| pair[0] <= pair[1]));
        let indices = unpacked_indices(&tensor.packed, bits, n);
        let dequantized = dequantize_kmeans(&tensor.packed, &tensor.codebook, bits, n);
        for ((&value, &index), &decoded) in src.iter().zip(&indices).zip(&dequantized) {
            prop_assert_eq!(index, brute_force_nearest(&tensor.codebook, value));
            prop_assert_eq!(decoded, tensor.codebook[index]);
        }
        let reference = compare(&src, &dequantized);
        prop_assert_eq!(tensor.stats.n, reference.n);
        prop_assert_eq!(tensor.stats.max_abs_err, reference.max_abs_err);
        prop_assert!((tensor.stats.sum_sq_err - reference.sum_sq_err).abs()
            <= reference.sum_sq_err * 1e-12);
        // Every value lies within [min, max], and so does every centroid a value uses.
        if n > 0 {
            let min = src.iter().copied().fold(f32::INFINITY, f32::min);
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for &decoded in &dequantized {
                prop_assert!(decoded >= min && decoded <= max);
            }
        }
    }
}
