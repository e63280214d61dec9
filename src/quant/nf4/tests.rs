//! NF4: the code choice against a literal transcription of `dQuantizeNF4`, packing order,
//! padding and all-zero blocks, error bounds, double quantization (dynamic map, bitsandbytes'
//! CPU grid lookup, reconstruction) and the quant-state JSON.

use proptest::prelude::*;

use super::double_quant::{dynamic_index, quantize as double_quantize, reconstruct};
use super::*;
use crate::quant::kernels::{available, scalar as scalar_kernels, select};

fn all_kernels() -> Vec<&'static Kernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

/// Quantizes with every available ISA, checks each output equals the scalar one exactly, and
/// returns it (or the common error).
fn quantize_everywhere(src: &[f32], options: Nf4Options) -> Result<Nf4Output, QuantError> {
    let reference = quantize_nf4(scalar_kernels(), src, options);
    for kernels in all_kernels() {
        let output = quantize_nf4(kernels, src, options);
        let what = format!("{} vs scalar, len {}", kernels.isa, src.len());
        match (&output, &reference) {
            // Bit patterns for the statistics: huge inputs overflow them to ±Inf and NaN.
            (Ok(simd), Ok(scalar)) => {
                let without_stats = |output: &Nf4Output| Nf4Output {
                    stats: ErrorStats::default(),
                    ..output.clone()
                };
                assert_eq!(without_stats(simd), without_stats(scalar), "{what}");
                let stats_bits = |s: &ErrorStats| {
                    (
                        s.n,
                        [s.sum_sq_err, s.sum_sq_ref, s.sum_sq_deq, s.dot].map(f64::to_bits),
                        s.max_abs_err.to_bits(),
                    )
                };
                assert_eq!(stats_bits(&simd.stats), stats_bits(&scalar.stats), "{what}");
            }
            _ => assert_eq!(output, reference, "{what}"),
        }
    }
    reference
}

/// `dQuantizeNF4` from `csrc/kernels.cu`, branch for branch.
#[allow(clippy::excessive_precision)]
fn tree_index(x: f32) -> u8 {
    if x > 0.03979014977812767 {
        if x > 0.3893125355243683 {
            if x > 0.6427869200706482 {
                if x > 0.8614784181118011 {
                    0b1111
                } else {
                    0b1110
                }
            } else if x > 0.5016634166240692 {
                0b1101
            } else {
                0b1100
            }
        } else if x > 0.2035212516784668 {
            if x > 0.2920137718319893 {
                0b1011
            } else {
                0b1010
            }
        } else if x > 0.1202552504837513 {
            0b1001
        } else {
            0b1000
        }
    } else if x > -0.33967943489551544 {
        if x > -0.13791173323988914 {
            if x > -0.045525018125772476 {
                0b0111
            } else {
                0b0110
            }
        } else if x > -0.23460740596055984 {
            0b0101
        } else {
            0b0100
        }
    } else if x > -0.6106329262256622 {
        if x > -0.4599952697753906 {
            0b0011
        } else {
            0b0010
        }
    } else if x > -0.8480964004993439 {
        0b0001
    } else {
        0b0000
    }
}

#[test]
fn counting_thresholds_matches_the_decision_tree() {
    let mut values = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        2.0,
        -2.0,
    ];
    for &t in NF4_THRESHOLDS.iter().chain(NF4_CODE.iter()) {
        values.extend([t, t.next_up(), t.next_down(), -t]);
    }
    values.extend((0..=u32::MAX).step_by(9973).map(f32::from_bits));
    for x in values {
        assert_eq!(nf4_index(x), tree_index(x), "{x:e}");
    }
}

#[test]
fn thresholds_are_midpoints_and_codes_decode_to_themselves() {
    for (k, &t) in NF4_THRESHOLDS.iter().enumerate() {
        let midpoint = (f64::from(NF4_CODE[k]) + f64::from(NF4_CODE[k + 1])) / 2.0;
        assert!((f64::from(t) - midpoint).abs() < 1e-7, "threshold {k}");
    }
    for (code, &value) in NF4_CODE.iter().enumerate() {
        assert_eq!(usize::from(nf4_index(value)), code);
    }
}

#[test]
fn first_element_goes_to_the_high_nibble_and_odd_lengths_pad_with_zero() {
    let output = quantize_everywhere(
        &[1.0, -1.0, 0.5],
        Nf4Options {
            double_quant: false,
        },
    )
    .unwrap();
    // 1.0 -> 15, -1.0 -> 0; 0.5 -> 12 (0.4407 is nearer than 0.5626) with the padding 0.0
    // -> 7 in the low nibble.
    assert_eq!(output.packed, vec![0xF0, 0xC7]);
    assert_eq!(output.absmax, Nf4Absmax::Plain(vec![1.0]));
    assert_eq!(output.quant_map, NF4_CODE);
    assert_eq!(dequantize_nf4(&output), vec![1.0, -1.0, NF4_CODE[12]]);
}

#[test]
fn all_zero_blocks_take_the_code_of_zero_as_bitsandbytes_does() {
    let mut src = vec![0.0f32; 64 * 3 + 3];
    src[64..128].fill(-0.0);
    src[128] = -2.0;
    let output = quantize_everywhere(
        &src,
        Nf4Options {
            double_quant: false,
        },
    )
    .unwrap();
    // bitsandbytes (`quantize_4bit` on CPU) divides by `absmax.clamp(min=1e-38)`, so a zero
    // block normalizes to 0 and takes code 7 (0.0) in both nibbles; its stored absmax is the
    // real one, 0.
    assert!(
        output.packed[..64].iter().all(|&b| b == 0x77),
        "{:x?}",
        &output.packed[..64]
    );
    // Block 2 is -2.0 then zeros; block 3 (three zeros, partial, odd) pads with 7 as well.
    assert_eq!(output.packed[64], 0x07);
    assert!(output.packed[65..96].iter().all(|&b| b == 0x77));
    assert_eq!(output.packed[96..], [0x77, 0x77]);
    assert_eq!(output.absmax, Nf4Absmax::Plain(vec![0.0, 0.0, 2.0, 0.0]));
    let dequantized = dequantize_nf4(&output);
    assert_eq!(dequantized, src);
    assert_eq!(output.stats.sum_sq_err, 0.0);
}

#[test]
fn all_zero_rows_dequantize_to_exactly_zero_with_double_quant() {
    // Rows of 128 (two NF4 blocks): heavy-tailed values, then an all-zero row, so the zero
    // blocks' absmax (0) sits far below the mean that double quantization subtracts and comes
    // back from the 8-bit map as a small non-zero value.
    let mut src: Vec<f32> = lcg_values(128 * 40, 11)
        .iter()
        .map(|v| v * v * v * 0.5)
        .collect();
    src[128 * 7..128 * 8].fill(0.0);
    src[128 * 20..128 * 20 + 64].fill(0.0);
    let output = quantize_everywhere(&src, Nf4Options { double_quant: true }).unwrap();
    let effective = output.effective_absmax();
    assert_ne!(effective[14], 0.0, "the reconstruction is not exact here");
    for zero_block in [14, 15, 40] {
        let bytes = &output.packed[zero_block * 32..(zero_block + 1) * 32];
        assert!(
            bytes.iter().all(|&b| b == 0x77),
            "block {zero_block}: {bytes:x?}"
        );
    }
    let dequantized = dequantize_nf4(&output);
    for (idx, (&value, &original)) in dequantized.iter().zip(&src).enumerate() {
        if original == 0.0 {
            assert_eq!(value, 0.0, "{idx}");
        }
    }
    assert!(dequantized[128 * 7..128 * 8].iter().all(|&v| v == 0.0));
}

/// Deterministic pseudo-random values in [-1, 1) (64-bit LCG, top bits).
fn lcg_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(3);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Checks every code is the nearest NF4 value (up to the f32 rounding of the thresholds),
/// the statistics, and returns the output.
fn check(src: &[f32], options: Nf4Options) -> Nf4Output {
    let output = quantize_everywhere(src, options).expect("quantizes");
    assert_eq!(output.packed.len(), src.len().div_ceil(2));
    assert_eq!(output.n_elements, src.len());
    let dequantized = dequantize_nf4(&output);
    let effective = output.effective_absmax();
    for (idx, &x) in src.iter().enumerate() {
        let byte = output.packed[idx / 2];
        let code = if idx % 2 == 0 { byte >> 4 } else { byte & 0xF };
        let block_max = src[idx / BLOCK_SIZE * BLOCK_SIZE..]
            .iter()
            .take(BLOCK_SIZE)
            .fold(0.0f32, |m, v| m.max(v.abs()));
        if block_max > 0.0 {
            // bitsandbytes' CPU `quantize_4bit`: whole blocks times `1 / absmax`, a partial
            // last block divided by it (an ulp apart at most).
            let whole = (idx / BLOCK_SIZE + 1) * BLOCK_SIZE <= src.len();
            let normalized = if whole {
                x * (1.0 / block_max)
            } else {
                x / block_max
            };
            assert_eq!(code, tree_index(normalized), "{idx}");
            let chosen = (NF4_CODE[usize::from(code)] - normalized).abs();
            let best = NF4_CODE
                .iter()
                .map(|c| (c - normalized).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(chosen <= best + 1e-6, "{idx}: {normalized} -> code {code}");
        }
        let expected = NF4_CODE[usize::from(code)] * effective[idx / BLOCK_SIZE];
        assert_eq!(dequantized[idx].to_bits(), expected.to_bits());
    }
    let stats = compare(src, &dequantized);
    assert_eq!(output.stats, stats);
    output
}

#[test]
fn random_tensors_quantize_to_the_nearest_code() {
    for (len, seed) in [
        (0, 0),
        (1, 1),
        (63, 2),
        (64, 3),
        (65, 4),
        (1000, 5),
        (40_000, 6),
    ] {
        for double_quant in [false, true] {
            let src: Vec<f32> = lcg_values(len, seed).iter().map(|v| v * 0.02).collect();
            let output = check(&src, Nf4Options { double_quant });
            if len >= 1000 {
                let sqnr = crate::quant::metrics::TensorMetrics::from(&output.stats).sqnr_db;
                assert!(sqnr > 15.0, "{len} {double_quant}: {sqnr}");
            }
        }
    }
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut src = vec![0.1f32; 200];
        src[131] = bad;
        assert_eq!(
            quantize_everywhere(&src, Nf4Options { double_quant: true }),
            Err(QuantError::NonFinite { index_hint: 131 })
        );
    }
}

#[test]
fn dynamic_map_has_bitsandbytes_shape() {
    let map = dynamic_map();
    assert!(map.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert_eq!(map[127], 0.0);
    assert_eq!(map[255], 1.0);
    for k in 0..127 {
        assert_eq!(map[k], -map[254 - k], "signed halves mirror each other");
    }
    // The largest fraction is the midpoint of linspace(0.1, 1, 65)'s last two points.
    assert!((map[254] - 0.992_968_75).abs() < 1e-6);
    assert!((map[0] + 0.992_968_75).abs() < 1e-6);
    // The smallest magnitude: 1e-6 times the midpoint of (0.1, 1).
    assert!((map[128] - 0.55e-6).abs() < 1e-12);
}

#[test]
fn dynamic_map_is_the_one_torch_builds_with_fused_linspace() {
    let map = dynamic_map();
    // Bit patterns of `create_dynamic_map()` under torch 2.15 (AVX2 and AVX-512 kernels) where
    // a twice-rounded linspace would be one ulp off.
    for (index, bits) in [
        (18, 0xbf3d_6666u32),
        (102, 0xbbcf_df3b),
        (116, 0xba01_6f01),
        (137, 0x39c7_e283),
        (236, 0x3f3d_6666),
    ] {
        assert_eq!(map[index].to_bits(), bits, "entry {index}");
    }
}

/// bitsandbytes' `build_quantize_lut`, literally: a scan over 65536 grid points advancing
/// through the midpoints.
fn literal_lookup_table(code: &[f32; 256]) -> Vec<u8> {
    let mids = super::double_quant::midpoints(code);
    let mut table = Vec::with_capacity(65536);
    let mut code_idx = 0usize;
    for i in 0..65536u32 {
        let value = -1.0f32 + (2.0 * i as f32) / 65535.0;
        while code_idx < 255 && mids[code_idx] < value {
            code_idx += 1;
        }
        table.push(code_idx as u8);
    }
    table
}

#[test]
fn dynamic_index_is_the_lookup_of_the_nearest_grid_point() {
    let map = dynamic_map();
    let mids = super::double_quant::midpoints(&map);
    let table = literal_lookup_table(&map);
    let mut values: Vec<f32> = lcg_values(20_000, 9);
    for i in 0..65536u32 {
        // Every grid point, and the values half-way between neighbouring ones (ties round up).
        let point = -1.0f32 + (2.0 * i as f32) / 65535.0;
        values.extend([
            point,
            point + 1.0 / 65535.0,
            (point + 1.0 / 65535.0).next_down(),
        ]);
    }
    values.extend([-1.0, 1.0, 0.0, -0.0, 1e-9, -1e-9, 2.0, -2.0]);
    for x in values {
        let grid = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5 * 65535.0 + 0.5) as usize;
        assert_eq!(dynamic_index(&mids, x), table[grid], "{x:e}");
        // The entry is the map value nearest to the grid point (up to f32 midpoint rounding).
        let point = -1.0f32 + (2.0 * grid as f32) / 65535.0;
        let chosen = (map[usize::from(dynamic_index(&mids, x))] - point).abs();
        let best = map
            .iter()
            .map(|c| (c - point).abs())
            .fold(f32::INFINITY, f32::min);
        assert!(chosen <= best + f32::EPSILON, "{x:e}");
    }
    // Zero lands on grid point 32768 (1.53e-5), nearest to 2.125e-5, not on 0.
    assert_eq!(dynamic_index(&mids, 0.0), 131);
    assert_eq!(dynamic_index(&mids, 1.0), 255);
    assert_eq!(dynamic_index(&mids, -1.0), 0);
}

#[test]
fn double_quantization_reconstructs_absmax_closely() {
    let absmax: Vec<f32> = lcg_values(700, 4).iter().map(|v| 0.03 + 0.02 * v).collect();
    let nested = double_quantize(&absmax);
    assert_eq!(nested.quantized.len(), 700);
    assert_eq!(nested.nested_absmax.len(), 3);
    let mean = absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / 700.0;
    assert_eq!(nested.offset, mean as f32);
    let rebuilt = reconstruct(&nested);
    for (idx, (&a, &r)) in absmax.iter().zip(&rebuilt).enumerate() {
        let block_max = nested.nested_absmax[idx / NESTED_BLOCK_SIZE];
        // The map's coarsest steps near the block maximum are about 1.4 % of it.
        assert!(
            (a - r).abs() <= 0.008 * block_max + 1e-9,
            "{idx}: {a} vs {r}"
        );
    }
    // One block, or equal values: nested absmax 0, index 0, exact reconstruction.
    let single = double_quantize(&[0.25]);
    assert_eq!(single.quantized, vec![0]);
    assert_eq!(single.nested_absmax, vec![0.0]);
    assert_eq!(reconstruct(&single), vec![0.25]);
    let empty = double_quantize(&[]);
    assert!(empty.quantized.is_empty() && empty.nested_absmax.is_empty());
}

#[test]
fn quant_state_json_matches_what_bitsandbytes_writes() {
    let src = lcg_values(256, 1);
    let plain = quantize_nf4(
        scalar_kernels(),
        &src,
        Nf4Options {
            double_quant: false,
        },
    )
    .unwrap();
    assert_eq!(
        quant_state_json(&plain, &[16, 16], "bfloat16"),
        r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [16, 16]}"#
    );
    let mut nested =
        quantize_nf4(scalar_kernels(), &src, Nf4Options { double_quant: true }).unwrap();
    if let Nf4Absmax::DoubleQuantized(state) = &mut nested.absmax {
        state.offset = 0.1;
    }
    assert_eq!(
        quant_state_json(&nested, &[256], "float32"),
        concat!(
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [256], "#,
            r#""nested_blocksize": 256, "nested_dtype": "float32", "#,
            r#""nested_offset": 0.10000000149011612}"#
        )
    );
}

#[test]
fn floats_print_like_python_repr() {
    for (value, expected) in [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (-2.5, "-2.5"),
        (123.0, "123.0"),
        (0.00025, "0.00025"),
        (1e-4, "0.0001"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (-3.25e-12, "-3.25e-12"),
        (1e16, "1e+16"),
        (1.2345e20, "1.2345e+20"),
        (f64::from(0.1f32), "0.10000000149011612"),
    ] {
        assert_eq!(python_float_repr(value), expected);
    }
}

#[test]
fn nf4_isa_follows_the_kernel_table() {
    assert_eq!(nf4_isa(scalar_kernels()), Isa::Scalar);
    for kernels in all_kernels() {
        let expected = match kernels.isa {
            Isa::Avx2 | Isa::Avx512 => kernels.isa,
            _ => Isa::Scalar,
        };
        assert_eq!(nf4_isa(kernels), expected);
        assert!(std::ptr::eq(
            nf4_kernels(kernels),
            nf4_kernels(select(kernels.isa.into()).unwrap())
        ));
    }
    #[cfg(target_arch = "x86_64")]
    {
        // The SIMD tables are the ones handed out whenever the CPU runs them.
        if is_x86_feature_detected!("avx512f") {
            let kernels = select(Isa::Avx512.into()).unwrap();
            assert_eq!(nf4_isa(kernels), Isa::Avx512);
            assert!(!std::ptr::fn_addr_eq(
                nf4_kernels(kernels).encode_blocks,
                scalar_encode_blocks as EncodeBlocksFn
            ));
        }
        if is_x86_feature_detected!("avx2") {
            let kernels = select(Isa::Avx2.into()).unwrap();
            assert_eq!(nf4_isa(kernels), Isa::Avx2);
            assert!(!std::ptr::fn_addr_eq(
                nf4_kernels(kernels).encode_blocks,
                scalar_encode_blocks as EncodeBlocksFn
            ));
        }
    }
}

/// Blocks of 64 built around one absmax `m`: ±m, the values exactly on every threshold and
/// code (times m, which is exact for a power of two) and their neighbours, zeros.
fn edge_block(m: f32, seed: usize) -> Vec<f32> {
    let mut candidates = vec![m, -m, 0.0, -0.0];
    for &t in NF4_THRESHOLDS.iter().chain(NF4_CODE.iter()) {
        for v in [t, t.next_up(), t.next_down(), -t] {
            candidates.push(v * m);
        }
    }
    (0..BLOCK_SIZE)
        .map(|idx| candidates[(idx * 7 + seed) % candidates.len()].clamp(-m, m))
        .collect()
}

#[test]
fn edge_cases_agree_across_isas() {
    let options = [
        Nf4Options {
            double_quant: false,
        },
        Nf4Options { double_quant: true },
    ];
    let mut tensors: Vec<Vec<f32>> = Vec::new();
    // Exact threshold ties and ±absmax, with power-of-two absmax values (x = v / m exactly)
    // and others, normal and subnormal (1 / m may overflow to +Inf: x = ±Inf or NaN).
    let mut absmaxes = vec![1.0f32, 0.5, 3.0, 0.1, 1e30, f32::MAX, f32::MIN_POSITIVE];
    absmaxes.extend([1u32, 2, 3, 0x1000, 0x7F_FFFF].map(f32::from_bits));
    absmaxes.push(f32::MIN_POSITIVE.next_down());
    absmaxes.push(2.9e-39);
    for (seed, &m) in absmaxes.iter().enumerate() {
        let mut src = Vec::new();
        for block in 0..4 {
            src.extend(edge_block(m, seed + block));
        }
        tensors.push(src);
    }
    // Threshold values themselves with absmax exactly 1.
    let mut ties: Vec<f32> = NF4_THRESHOLDS
        .iter()
        .flat_map(|&t| [t, -t, t.next_up(), t.next_down()])
        .collect();
    ties.extend([1.0, -1.0]);
    ties.resize(128, 1.0);
    tensors.push(ties);
    // All-zero blocks (both signs of zero), whole and partial, among non-zero ones.
    let mut zeros = vec![0.0f32; 64 * 3 + 17];
    zeros[64..128].fill(-0.0);
    zeros[130] = 0.25;
    tensors.push(zeros);
    tensors.push(vec![-0.0; 64]);
    // A single value equal to the absmax, and -absmax, per block.
    tensors.push(
        (0..256)
            .map(|i| if i % 64 == 5 { -3.5 } else { 0.0 })
            .collect(),
    );
    for src in tensors {
        for len in [src.len(), src.len() - 1, src.len() - 63, 64, 65, 127] {
            let src = &src[..len.min(src.len())];
            for options in options {
                quantize_everywhere(src, options).expect("finite");
            }
        }
    }
}

#[test]
fn non_finite_values_are_rejected_by_every_isa() {
    for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for len in [1usize, 63, 64, 65, 200, 257] {
            for position in [0, len / 2, len - 1] {
                let mut src = lcg_values(len, position as u64);
                src[position] = bad;
                // A second one later: the first is reported.
                if position + 70 < len {
                    src[position + 70] = bad;
                }
                assert_eq!(
                    quantize_everywhere(
                        &src,
                        Nf4Options {
                            double_quant: false
                        }
                    ),
                    Err(QuantError::NonFinite {
                        index_hint: position
                    })
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn random_lengths_agree_across_isas(
        len in 0usize..5000,
        magnitude in -140i32..120,
        seed in any::<u64>(),
        zero_every in 0usize..8,
        double_quant in any::<bool>(),
    ) {
        let scale = 2f32.powi(magnitude);
        let mut src: Vec<f32> = lcg_values(len, seed).iter().map(|v| v * scale).collect();
        // Now and then whole blocks of zeros.
        if zero_every > 0 {
            for block in src.chunks_mut(BLOCK_SIZE).step_by(zero_every) {
                block.fill(0.0);
            }
        }
        quantize_everywhere(&src, Nf4Options { double_quant }).expect("finite");
    }

    #[test]
    fn arbitrary_finite_bits_agree_across_isas(
        bits in proptest::collection::vec(any::<u32>(), 0..300),
        double_quant in any::<bool>(),
    ) {
        let src: Vec<f32> = bits
            .into_iter()
            .map(f32::from_bits)
            .map(|v| if v.is_finite() { v } else { 1.0 })
            .collect();
        quantize_everywhere(&src, Nf4Options { double_quant }).expect("finite");
    }

    #[test]
    fn arbitrary_tensors_round_trip_within_bounds(
        len in 0usize..400,
        magnitude in -30i32..30,
        seed in any::<u64>(),
        double_quant in any::<bool>(),
    ) {
        let scale = 2f32.powi(magnitude);
        let src: Vec<f32> = lcg_values(len, seed).iter().map(|v| v * scale).collect();
        check(&src, Nf4Options { double_quant });
    }
}

/// A value `v` and absmax `m` for which `v · (1 / m)` and `v / m` fall on different sides of an
/// NF4 threshold.
fn reciprocal_and_division_disagree() -> (f32, f32, u8, u8) {
    for step in 0..10_000u32 {
        let m = 1.0f32 + step as f32 * 0.000_37;
        for &t in &NF4_THRESHOLDS {
            let around = t * m;
            for v in [around.next_down(), around, around.next_up()] {
                let by_reciprocal = nf4_index(v * (1.0 / m));
                let by_division = nf4_index(v / m);
                if by_reciprocal != by_division && v.abs() < m {
                    return (v, m, by_reciprocal, by_division);
                }
            }
        }
    }
    panic!("no disagreement found");
}

#[test]
fn a_partial_last_block_divides_by_its_absmax_as_bitsandbytes_does() {
    let (v, m, by_reciprocal, by_division) = reciprocal_and_division_disagree();
    // Block 0 (whole) and block 1 (two values, partial): [m, v, ...zeros], [m, v].
    let mut src = vec![0.0f32; BLOCK_SIZE + 2];
    src[..2].copy_from_slice(&[m, v]);
    src[BLOCK_SIZE..].copy_from_slice(&[m, v]);
    let output = quantize_everywhere(
        &src,
        Nf4Options {
            double_quant: false,
        },
    )
    .unwrap();
    assert_eq!(output.packed[0], 0xF0 | by_reciprocal, "{v:e} / {m:e}");
    assert_eq!(
        output.packed[BLOCK_SIZE / 2],
        0xF0 | by_division,
        "{v:e} / {m:e}"
    );
}
