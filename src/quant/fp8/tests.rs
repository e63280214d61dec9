//! FP8: the codec against an independent brute-force reference written from the bit
//! definitions (all codes, every rounding boundary, a sweep over the f32 bit patterns), the
//! SIMD encoders against the scalar one, and the scheme's scales, errors and statistics.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::quant::kernels::{available, scalar as scalar_kernels, select};

const FORMATS: [Fp8Format; 2] = [Fp8Format::E4M3, Fp8Format::E5M2];

fn all_kernels() -> Vec<&'static Kernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

/// The value of a code from the spec's definition, in f64; `None` for NaN and Inf codes.
fn reference_value(code: u8, format: Fp8Format) -> Option<f64> {
    let (mantissa_bits, bias) = match format {
        Fp8Format::E4M3 => (3u32, 7i32),
        Fp8Format::E5M2 => (2, 15),
    };
    let exponent_max = (1u8 << (7 - mantissa_bits)) - 1;
    let exponent = (code & 0x7F) >> mantissa_bits;
    let mantissa = f64::from(code & ((1 << mantissa_bits) - 1));
    let fraction = mantissa / f64::from(1u32 << mantissa_bits);
    let special = match format {
        Fp8Format::E4M3 => code & 0x7F == 0x7F,
        Fp8Format::E5M2 => exponent == exponent_max,
    };
    if special {
        return None;
    }
    let magnitude = if exponent == 0 {
        fraction * 2f64.powi(1 - bias)
    } else {
        (1.0 + fraction) * 2f64.powi(i32::from(exponent) - bias)
    };
    Some(if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

/// The non-negative finite codes and their values, computed once per format.
fn reference_table(format: Fp8Format) -> &'static [(u8, f64)] {
    static TABLES: [OnceLock<Vec<(u8, f64)>>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match format {
        Fp8Format::E4M3 => &TABLES[0],
        Fp8Format::E5M2 => &TABLES[1],
    };
    slot.get_or_init(|| {
        (0..0x80u8)
            .filter_map(|code| reference_value(code, format).map(|value| (code, value)))
            .collect()
    })
}

/// Nearest finite code by brute force over every non-negative code, ties to the even code,
/// with the sign applied afterwards; NaN maps to the format's NaN. Magnitudes at or beyond the
/// largest finite value saturate to it (checked first: f64 distances to values near f32::MAX
/// no longer tell the codes apart).
fn reference_encode(x: f32, format: Fp8Format) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign
            | match format {
                Fp8Format::E4M3 => 0x7F,
                Fp8Format::E5M2 => 0x7E,
            };
    }
    let target = f64::from(x.abs());
    let table = reference_table(format);
    let &(largest, largest_value) = table.last().expect("finite codes");
    if target >= largest_value {
        return sign | largest;
    }
    let mut best = (0u8, f64::INFINITY);
    for &(code, value) in table {
        let distance = (value - target).abs();
        if distance < best.1 || (distance == best.1 && code % 2 == 0) {
            best = (code, distance);
        }
    }
    sign | best.0
}

/// The non-negative finite codes in increasing order of value.
fn finite_codes(format: Fp8Format) -> Vec<u8> {
    reference_table(format)
        .iter()
        .map(|&(code, _)| code)
        .collect()
}

#[test]
fn decode_matches_the_definition_for_all_codes() {
    for format in FORMATS {
        for code in 0..=255u8 {
            let decoded = decode(code, format);
            match reference_value(code, format) {
                Some(value) => assert_eq!(f64::from(decoded), value, "{format:?} {code:#04x}"),
                None => assert!(!decoded.is_finite(), "{format:?} {code:#04x}"),
            }
            assert_eq!(decoded.is_sign_negative(), code & 0x80 != 0, "{code:#04x}");
        }
        assert_eq!(decode(0x7E, Fp8Format::E4M3), 448.0);
        assert_eq!(decode(0x7B, Fp8Format::E5M2), 57344.0);
        assert_eq!(decode(0x7C, Fp8Format::E5M2), f32::INFINITY);
        assert_eq!(decode(0xFC, Fp8Format::E5M2), f32::NEG_INFINITY);
        assert!(decode(0x7F, Fp8Format::E4M3).is_nan() && decode(0xFF, Fp8Format::E4M3).is_nan());
        assert_eq!(
            format.max_finite(),
            decode(format.spec().max_code as u8, format)
        );
    }
}

#[test]
fn every_code_round_trips_except_nan_and_saturated_infinity() {
    for format in FORMATS {
        for code in 0..=255u8 {
            let value = decode(code, format);
            if value.is_nan() {
                assert!(decode(encode(value, format), format).is_nan());
            } else if value.is_infinite() {
                assert_eq!(encode(value, format), (code & 0x80) | 0x7B, "Inf saturates");
            } else {
                assert_eq!(
                    encode(value, format),
                    code,
                    "{format:?} {code:#04x} = {value}"
                );
            }
        }
    }
}

#[test]
fn known_conversions() {
    use Fp8Format::{E4M3, E5M2};
    let cases: &[(f32, Fp8Format, u8)] = &[
        (1.0, E4M3, 0x38),
        (-1.0, E4M3, 0xB8),
        (448.0, E4M3, 0x7E),
        (464.0, E4M3, 0x7E), // tie between 448 and the NaN slot: even wins, and saturation
        (470.0, E4M3, 0x7E),
        (-1e30, E4M3, 0xFE),
        (f32::INFINITY, E4M3, 0x7E),
        (f32::NEG_INFINITY, E4M3, 0xFE),
        (f32::NAN, E4M3, 0x7F),
        (-f32::NAN, E4M3, 0xFF),
        (-0.0, E4M3, 0x80),
        (2f32.powi(-9), E4M3, 0x01),         // smallest subnormal
        (2f32.powi(-10), E4M3, 0x00),        // tie between 0 and 2^-9: even (0)
        (3.0 * 2f32.powi(-10), E4M3, 0x02),  // tie between 1 and 2 units: even (2)
        (15.0 * 2f32.powi(-10), E4M3, 0x08), // tie between 7 units and 2^-6: even (0x08)
        (1.0625, E4M3, 0x38),                // tie between 1 and 1.125: even mantissa
        (1.1875, E4M3, 0x3A),                // tie between 1.125 and 1.25: even mantissa
        (1.0, E5M2, 0x3C),
        (57344.0, E5M2, 0x7B),
        (61440.0, E5M2, 0x7B), // tie with the Inf slot: saturates
        (1e9, E5M2, 0x7B),
        (f32::INFINITY, E5M2, 0x7B),
        (f32::NEG_INFINITY, E5M2, 0xFB),
        (f32::NAN, E5M2, 0x7E),
        (2f32.powi(-16), E5M2, 0x01),
        (2f32.powi(-17), E5M2, 0x00),
    ];
    for &(x, format, code) in cases {
        assert_eq!(encode(x, format), code, "{x} {format:?}");
        assert_eq!(
            reference_encode(x, format),
            code,
            "reference: {x} {format:?}"
        );
    }
}

/// Every code value, every midpoint between neighbours and the floats around them: all the
/// places where a rounding decision changes.
fn critical_values(format: Fp8Format) -> Vec<f32> {
    let codes = finite_codes(format);
    let mut values = Vec::new();
    for pair in codes.windows(2) {
        let low = decode(pair[0], format);
        let high = decode(pair[1], format);
        // Two neighbouring fp8 values differ in few bits: their midpoint is an exact f32.
        let middle = (low + high) / 2.0;
        for value in [low, middle, high] {
            values.extend([value, value.next_up(), value.next_down()]);
        }
    }
    // Around the saturation threshold (the midpoint to the first value past the largest).
    let max = format.max_finite();
    let gap = max - decode(format.spec().max_code as u8 - 1, format);
    for value in [
        max + gap / 2.0,
        max + gap,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
    ] {
        values.extend([value, value.next_up(), value.next_down()]);
    }
    let negatives: Vec<f32> = values.iter().map(|v| -v).collect();
    values.extend(negatives);
    values
}

#[test]
fn encode_matches_the_reference_at_every_rounding_boundary() {
    for format in FORMATS {
        for x in critical_values(format) {
            assert_eq!(
                encode(x, format),
                reference_encode(x, format),
                "{format:?} {x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }
}

#[test]
fn encode_matches_the_reference_on_a_sweep_of_all_bit_patterns() {
    // About 2^18 patterns spread evenly over all 2^32 (both signs, NaN and Inf included).
    const STRIDE: usize = 16_381;
    for format in FORMATS {
        for bits in (0..=u32::MAX).step_by(STRIDE) {
            let x = f32::from_bits(bits);
            assert_eq!(
                encode(x, format),
                reference_encode(x, format),
                "{bits:#010x}"
            );
        }
    }
}

/// The encoder of every table, on `src` with `scale`, must match the scalar one byte for byte.
fn assert_tables_agree(src: &[f32], scale: f32, format: Fp8Format) {
    let mut expected = vec![0u8; src.len()];
    scalar_encode_scaled(src, scale, format, &mut expected);
    for kernels in all_kernels() {
        let mut bytes = vec![0u8; src.len()];
        (fp8_kernels(kernels).encode_scaled)(src, scale, format, &mut bytes);
        assert_eq!(bytes, expected, "{} {format:?} scale {scale}", kernels.isa);
    }
}

#[test]
fn simd_encoders_match_scalar_on_critical_and_special_values() {
    for format in FORMATS {
        let mut values = critical_values(format);
        values.extend([
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
        ]);
        // Lengths that leave every possible tail after the SIMD steps.
        for len in [0, 1, 15, 16, 17, 31, 33, 63] {
            assert_tables_agree(&values[..len.min(values.len())], 1.0, format);
        }
        assert_tables_agree(&values, 1.0, format);
        assert_tables_agree(&values, 0.37, format);
        let sweep: Vec<f32> = (0..=u32::MAX).step_by(65_521).map(f32::from_bits).collect();
        assert_tables_agree(&sweep, 1.0, format);
        assert_tables_agree(&sweep, 3.0e-3, format);
    }
    assert_eq!(fp8_isa(scalar_kernels()), Isa::Scalar);
}

fn lcg_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(11);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Quantizes on every table, checks they agree, checks scales, codes, the error bound and the
/// statistics, and returns the scalar result.
fn check(src: &[f32], rows: usize, cols: usize, format: Fp8Format, per_channel: bool) -> Fp8Output {
    let output =
        quantize_fp8(scalar_kernels(), src, rows, cols, format, per_channel).expect("quantizes");
    for kernels in all_kernels() {
        let other = quantize_fp8(kernels, src, rows, cols, format, per_channel).expect("quantizes");
        assert_eq!(other.bytes, output.bytes, "{}", kernels.isa);
        assert_eq!(other.scales, output.scales);
        assert_eq!(other.stats.max_abs_err, output.stats.max_abs_err);
    }
    let channel_len = if per_channel { cols } else { src.len() };
    assert_eq!(output.scales.len(), src.len() / channel_len.max(1));
    for (channel_idx, channel) in src.chunks(channel_len.max(1)).enumerate() {
        let absmax = channel.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = output.scales[channel_idx];
        assert_eq!(scale, fp8_scale(absmax, format));
        for (offset, &x) in channel.iter().enumerate() {
            let code = output.bytes[channel_idx * channel_len + offset];
            assert_eq!(code, reference_encode(x / scale, format), "{x} / {scale}");
        }
    }
    let dequantized = dequantize_fp8(&output.bytes, &output.scales, rows, cols, format);
    // Half an fp8 step: 2^-4 (E4M3) or 2^-3 (E5M2) relative, or half the smallest subnormal.
    let (relative, subnormal_step) = match format {
        Fp8Format::E4M3 => (2f32.powi(-4), 2f32.powi(-9)),
        Fp8Format::E5M2 => (2f32.powi(-3), 2f32.powi(-16)),
    };
    for (idx, (&x, &deq)) in src.iter().zip(&dequantized).enumerate() {
        let scale = output.scales[idx / channel_len];
        let bound = (relative * x.abs()).max(subnormal_step * scale / 2.0) * (1.0 + 1e-6);
        assert!((deq - x).abs() <= bound + f32::MIN_POSITIVE, "{x} -> {deq}");
    }
    let stats = compare(src, &dequantized);
    assert_eq!(output.stats.max_abs_err, stats.max_abs_err);
    assert_eq!(output.stats.n, stats.n);
    assert!((output.stats.sum_sq_err - stats.sum_sq_err).abs() <= 1e-5 * stats.sum_sq_err);
    output
}

#[test]
fn per_channel_and_per_tensor_scales() {
    for format in FORMATS {
        let mut src = lcg_values(4 * 100, 5);
        src[7] = -3.0; // row 0 absmax
        let output = check(&src, 4, 100, format, true);
        assert_eq!(output.scales[0], 3.0 / format.max_finite());
        // The largest magnitude lands exactly on ±max.
        assert_eq!(output.bytes[7], 0x80 | format.spec().max_code as u8);
        let output = check(&src, 4, 100, format, false);
        assert_eq!(output.scales, vec![3.0 / format.max_finite()]);
    }
}

#[test]
fn zero_channels_use_epsilon_and_empty_tensors_have_no_scales() {
    for format in FORMATS {
        let output = check(&[0.0; 64], 2, 32, format, true);
        assert_eq!(output.scales, vec![f32::EPSILON; 2]);
        assert!(output.bytes.iter().all(|&b| b == 0));
        let empty = quantize_fp8(scalar_kernels(), &[], 0, 7, format, true).expect("empty");
        assert!(empty.bytes.is_empty() && empty.scales.is_empty());
    }
}

#[test]
fn errors_name_the_first_non_finite_value_and_bad_shapes() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut src = vec![0.5f32; 60];
        src[45] = bad;
        for kernels in all_kernels() {
            for per_channel in [true, false] {
                assert_eq!(
                    quantize_fp8(kernels, &src, 3, 20, Fp8Format::E4M3, per_channel),
                    Err(QuantError::NonFinite { index_hint: 45 })
                );
            }
        }
    }
    assert!(matches!(
        quantize_fp8(scalar_kernels(), &[0.0; 6], 2, 4, Fp8Format::E4M3, true),
        Err(QuantError::ShapeMismatch {
            expected: 8,
            actual: 6,
            ..
        })
    ));
}

proptest! {
    #[test]
    fn encode_matches_the_reference_on_random_bits(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        for format in FORMATS {
            prop_assert_eq!(encode(x, format), reference_encode(x, format));
        }
    }

    #[test]
    fn random_tensors_quantize_alike_on_every_isa(
        rows in 1usize..5,
        cols in 1usize..80,
        magnitude in -40i32..40,
        seed in any::<u64>(),
        per_channel in any::<bool>(),
        e5m2 in any::<bool>(),
    ) {
        let format = if e5m2 { Fp8Format::E5M2 } else { Fp8Format::E4M3 };
        let scale = 2f32.powi(magnitude);
        let src: Vec<f32> = lcg_values(rows * cols, seed).into_iter().map(|v| v * scale).collect();
        check(&src, rows, cols, format, per_channel);
    }
}
