//! The scalar reference against hand-computed bytes: the rounding conventions one at a time.

use super::super::scalar::{round_half_away, truncated_low_byte};
use super::super::*;
use super::{make_block, scalar_bytes, BLOCK_TYPES};

/// A block of `fill` with a few values placed at given positions.
fn block_with(fill: f32, placed: &[(usize, f32)]) -> Vec<f32> {
    let mut block = vec![fill; QK];
    for &(idx, value) in placed {
        block[idx] = value;
    }
    block
}

/// Element `idx` of a 4-bit block's packed `qs`.
fn nibble(qs: &[u8], idx: usize) -> u8 {
    if idx < QK / 2 {
        qs[idx] & 0x0f
    } else {
        qs[idx - QK / 2] >> 4
    }
}

#[test]
fn casts_keep_the_low_byte_of_a_truncation_like_numpy_on_x86() {
    assert_eq!(truncated_low_byte(7.99), 7);
    assert_eq!(truncated_low_byte(-3.7), (-3i8) as u8);
    assert_eq!(truncated_low_byte(300.5), 44);
    // NaN and anything outside i32 become i32::MIN, whose low byte is 0.
    for value in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        2.0f32.powi(31),
        -3e9,
        1e30,
    ] {
        assert_eq!(truncated_low_byte(value), 0, "{value}");
    }
}

#[test]
fn round_half_away_from_zero() {
    let below_half = f32::from_bits(0.5f32.to_bits() - 1);
    for (value, expected) in [
        (0.5, 1.0),
        (-0.5, -1.0),
        (1.5, 2.0),
        (2.5, 3.0),
        (-2.5, -3.0),
        (126.5, 127.0),
        (below_half, 0.0),
        (1.499_999_9, 1.0),
        (-1.499_999_9, -1.0),
    ] {
        assert_eq!(round_half_away(value), expected, "{value}");
    }
    assert!(round_half_away(f32::INFINITY).is_nan());
}

#[test]
fn round_half_away_equals_gguf_py_np_roundf() {
    // gguf-py's definition, literally: floor(|n|) + floor(2 * (|n| - floor(|n|))), signed.
    fn np_roundf(value: f32) -> f32 {
        let magnitude = value.abs();
        let floored = magnitude.floor();
        (floored + (2.0 * (magnitude - floored)).floor()).copysign(value)
    }
    let mut rng = super::SplitMix(3);
    let ties = (0..300).flat_map(|k| {
        let tie = k as f32 + 0.5;
        (-3i32..=3).map(move |step| f32::from_bits((tie.to_bits() as i32 + step) as u32))
    });
    let random_bits = (0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32));
    let specials = [
        0.0,
        -0.0,
        8_388_607.5,
        8_388_608.0,
        1e30,
        f32::MAX,
        f32::MIN_POSITIVE,
    ];
    for value in ties.chain(random_bits).chain(specials) {
        for value in [value, -value] {
            let (ours, theirs) = (round_half_away(value), np_roundf(value));
            assert!(
                ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                "{value:e}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn q8_0_bytes_by_hand() {
    // absmax 127 gives d = 1 (f16 0x3c00) and id = 1: each value is its own scaled value.
    let block = block_with(
        0.0,
        &[
            (0, 127.0),
            (1, 2.5),
            (2, -2.5),
            (3, 0.5),
            (4, -0.5),
            (5, 1.499_999_9),
            (31, -127.0),
        ],
    );
    let bytes = scalar_bytes(GgmlType::Q8_0, &block);
    assert_eq!(&bytes[..2], &0x3c00u16.to_le_bytes());
    let quants: Vec<i8> = bytes[2..].iter().map(|&byte| byte as i8).collect();
    assert_eq!(&quants[..6], &[127, 3, -3, 1, -1, 1]);
    assert_eq!(quants[31], -127);
    // An all-zero block: d = 0, id = 0, all quants 0.
    assert_eq!(scalar_bytes(GgmlType::Q8_0, &[0.0; QK]), vec![0u8; 34]);
}

#[test]
fn q4_0_bytes_by_hand() {
    // The signed max is -8, so d = -8 / -8 = 1 and q = trunc(x + 8.5) clamped to 15.
    let block = block_with(
        0.0,
        &[
            (0, -8.0),
            (1, 0.5),
            (2, -0.5),
            (3, 7.0),
            (16, 6.5),
            (17, -7.5),
            (31, 8.0),
        ],
    );
    let bytes = scalar_bytes(GgmlType::Q4_0, &block);
    assert_eq!(&bytes[..2], &0x3c00u16.to_le_bytes());
    let qs = &bytes[2..];
    let expected = [
        (0, 0),
        (1, 9),
        (2, 8),
        (3, 15),
        (4, 8),
        (16, 15),
        (17, 1),
        (31, 15),
    ];
    for (idx, quant) in expected {
        assert_eq!(nibble(qs, idx), quant, "element {idx}");
    }
    // Element 0 is the low nibble of byte 0, element 16 its high nibble.
    assert_eq!(qs[0], 0xf0);
}

#[test]
fn q4_0_and_q5_0_take_the_first_of_two_opposite_maxima() {
    let negative_first = block_with(0.1, &[(4, -2.0), (20, 2.0)]);
    let positive_first = block_with(0.1, &[(4, 2.0), (20, -2.0)]);
    // d = max / -8: 0.25 (f16 0x3400) when -2 comes first, -0.25 (0xb400) otherwise.
    assert_eq!(
        &scalar_bytes(GgmlType::Q4_0, &negative_first)[..2],
        &[0x00, 0x34]
    );
    assert_eq!(
        &scalar_bytes(GgmlType::Q4_0, &positive_first)[..2],
        &[0x00, 0xb4]
    );
    // d = max / -16: 0.125 (0x3000) and -0.125 (0xb000).
    assert_eq!(
        &scalar_bytes(GgmlType::Q5_0, &negative_first)[..2],
        &[0x00, 0x30]
    );
    assert_eq!(
        &scalar_bytes(GgmlType::Q5_0, &positive_first)[..2],
        &[0x00, 0xb0]
    );
}

#[test]
fn q4_1_bytes_by_hand() {
    // min -1, max 14: d = 1, m = -1 (f16 0xbc00), q = trunc((x + 1) + 0.5) clamped to 15.
    // Element 3 shows the per-operation rounding: 1.4999999 + 1 rounds to 2.5 in f32, so it
    // lands on 3, not 2.
    let block = block_with(
        0.0,
        &[(0, -1.0), (1, 14.0), (2, 1.5), (3, 1.499_999_9), (20, 13.6)],
    );
    let bytes = scalar_bytes(GgmlType::Q4_1, &block);
    assert_eq!(&bytes[..4], &[0x00, 0x3c, 0x00, 0xbc]);
    let qs = &bytes[4..];
    for (idx, quant) in [(0, 0), (1, 15), (2, 3), (3, 3), (4, 1), (20, 15)] {
        assert_eq!(nibble(qs, idx), quant, "element {idx}");
    }
}

#[test]
fn q5_blocks_put_the_fifth_bit_in_qh() {
    // Q5_0 with signed max -16: d = 1, q = trunc(x + 16.5); x = 0 gives 16 (bit 4 set).
    let block = block_with(-10.0, &[(0, 0.0), (5, -16.0), (31, 0.0)]);
    let bytes = scalar_bytes(GgmlType::Q5_0, &block);
    let qh = u32::from_le_bytes(bytes[2..6].try_into().unwrap());
    assert_eq!(qh, 1 | 1 << 31);
    assert_eq!(bytes[6] & 0x0f, 0, "q = 16 keeps 0 in its nibble");
    // Q5_1 with min 0, max 31: d = 1, q = trunc(x + 0.5).
    let block = block_with(3.0, &[(0, 0.0), (1, 31.0), (2, 16.0), (17, 17.4)]);
    let bytes = scalar_bytes(GgmlType::Q5_1, &block);
    let qh = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    assert_eq!(qh, 1 << 1 | 1 << 2 | 1 << 17);
    assert_eq!(
        bytes[8 + 1],
        0x1f,
        "element 1 (31: nibble 15) and element 17 (17: nibble 1)"
    );
}

#[test]
fn the_f32_scale_quantizes_not_its_f16_copy() {
    // absmax 1.0: d = 1/127 rounds to a different f16; quantizing with the f32 d maps 1.0 to
    // exactly 127 and 0.5 to round(63.5) = 64, which the f16 d would not (it gives 63).
    let block = block_with(0.0, &[(0, 1.0), (1, 0.5)]);
    let bytes = scalar_bytes(GgmlType::Q8_0, &block);
    assert_eq!((bytes[2] as i8, bytes[3] as i8), (127, 64));
    let d16 = scalar::f16_value(u16::from_le_bytes([bytes[0], bytes[1]]));
    assert_ne!(d16, 1.0 / 127.0);
}

#[test]
fn dequantize_round_trips_within_half_a_step() {
    for ty in BLOCK_TYPES {
        let src: Vec<f32> = (0..64)
            .flat_map(|block_idx| make_block(0, block_idx, (block_idx % 9) as i32 - 4))
            .collect();
        let bytes = scalar_bytes(ty, &src);
        let mut decoded = vec![0.0f32; src.len()];
        dequantize(ty, &bytes, &mut decoded);
        for (block_idx, (block, decoded_block)) in
            src.chunks(QK).zip(decoded.chunks(QK)).enumerate()
        {
            let block_bytes = &bytes[block_idx * ty.type_size()..];
            let d = scalar::f16_value(u16::from_le_bytes([block_bytes[0], block_bytes[1]])).abs();
            let magnitude = block.iter().fold(0.0f32, |max, value| max.max(value.abs()));
            // Half a step, plus the f16 rounding of d and m (2^-11 relative) over the range. The
            // symmetric types clamp the side opposite their signed max at 7/8 (15/16) of it:
            // up to one whole step there.
            let steps = if matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0) {
                1.0
            } else {
                0.5
            };
            let tolerance = steps * d + magnitude * 2.0f32.powi(-9);
            for (&original, &value) in block.iter().zip(decoded_block) {
                assert!(
                    (original - value).abs() <= tolerance,
                    "{ty}: {original} decoded as {value} (d {d})"
                );
            }
        }
    }
}

#[test]
fn float_types_encode_and_decode() {
    let src = [1.0f32, -2.5, 65504.0, 1e-8, 0.1, f32::MAX, -0.0, 3.0e-5];
    let mut bytes = vec![0u8; 32];
    quantize(scalar(), GgmlType::F32, &src, &mut bytes);
    let mut decoded = [0.0f32; 8];
    dequantize(GgmlType::F32, &bytes, &mut decoded);
    assert_eq!(decoded.map(f32::to_bits), src.map(f32::to_bits));

    let mut halves = vec![0u8; 16];
    quantize(scalar(), GgmlType::F16, &src, &mut halves);
    assert_eq!(&halves[..2], &0x3c00u16.to_le_bytes());
    assert_eq!(
        &halves[10..12],
        &0x7c00u16.to_le_bytes(),
        "f32::MAX overflows to +Inf"
    );
    dequantize(GgmlType::F16, &halves, &mut decoded);
    assert_eq!(&decoded[..3], &[1.0, -2.5, 65504.0]);
    assert_eq!(decoded[4], half::f16::from_f32(0.1).to_f32());
}
