//! Block-quantized kernels: every table against the scalar twin (bit-identical quantization,
//! exact block integer sums, general results within a tight bound of the float rounding), plus
//! extreme codes, zero blocks, column ranges and a hand-computed case. Weight kind 4 is int8
//! with one scale per row (`gemm_blocks_i8_rows`), covered by the same tests and by its own
//! random shapes up to the prepared (chunked) VNNI path.

use proptest::prelude::*;

use super::tests::{lcg, quantize_input};
use super::*;

/// Activation rows of moderate magnitudes (a per-row factor of 1, 100 or 1e-3, random signs),
/// with one all-zero block in every third row.
fn acts_input(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut next = lcg(seed);
    let mut a = Vec::with_capacity(m * k);
    for row in 0..m {
        let factor = [1.0, 100.0, 1e-3][row % 3];
        for col in 0..k {
            let unit = ((next() >> 29) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            let zero = row % 3 == 2 && col / QK == row % (k / QK);
            a.push(if zero { 0.0 } else { unit * factor });
        }
    }
    a
}

/// Owned block weights of any format.
enum Weights {
    I8 {
        q: Vec<i8>,
        d: Vec<f32>,
        mn: Option<Vec<f32>>,
    },
    U4 {
        q: Vec<u8>,
        d: Vec<f32>,
        mn: Vec<f32>,
    },
    I8Rows {
        q: Vec<i8>,
        d_row: Vec<f32>,
    },
}

impl Weights {
    fn as_ref(&self) -> BlockWeightsRef<'_> {
        match self {
            Weights::I8 { q, d, mn } => BlockWeightsRef::I8 {
                q,
                d,
                mn: mn.as_deref(),
            },
            Weights::U4 { q, d, mn } => BlockWeightsRef::U4 { q, d, mn },
            Weights::I8Rows { q, d_row } => BlockWeightsRef::I8Rows { q, d_row },
        }
    }

    /// Weight code `t` of row `j` as an integer.
    fn code(&self, k: usize, j: usize, t: usize) -> i64 {
        match self {
            Weights::I8 { q, .. } | Weights::I8Rows { q, .. } => i64::from(q[j * k + t]),
            Weights::U4 { q, .. } => {
                let (block, within) = (t / QK, t % QK);
                let byte = q[j * k / 2 + block * 16 + within % 16];
                i64::from(if within < 16 { byte & 0x0f } else { byte >> 4 })
            }
        }
    }

    /// `(d, mn)` of block `b` of row `j` (`nb` blocks per row).
    fn block_params(&self, nb: usize, j: usize, b: usize) -> (f32, f32) {
        let idx = j * nb + b;
        match self {
            Weights::I8 { d, mn, .. } => (d[idx], mn.as_ref().map_or(0.0, |mn| mn[idx])),
            Weights::U4 { d, mn, .. } => (d[idx], mn[idx]),
            Weights::I8Rows { d_row, .. } => (d_row[j], 0.0),
        }
    }
}

/// Random weights; a quarter of the codes at the extremes (-128, 127 / 0, 15). `kind` 0: int8
/// without `mn`, 1: int8 with `mn`, 2: Q4 (`mn = -8·d`), 3: Q4 with its own `mn`, 4: int8 with
/// one scale per row (the codes of kind 0, `d_row` = the first block scale of each row).
fn weights(n: usize, k: usize, kind: u64, seed: u64) -> Weights {
    let mut next = lcg(seed);
    let blocks = n * k / QK;
    let d: Vec<f32> = (0..blocks)
        .map(|_| (next() % 1000) as f32 * 1e-4 + 1e-5)
        .collect();
    let mut own_mn = || -> Vec<f32> {
        (0..blocks)
            .map(|_| ((next() % 2001) as f32 - 1000.0) * 1e-4)
            .collect()
    };
    match kind {
        0 | 1 | 4 => {
            let mn = (kind == 1).then(&mut own_mn);
            let mut next = lcg(seed ^ 0x77);
            let q = (0..n * k)
                .map(|_| match next() % 8 {
                    0 => -128,
                    1 => 127,
                    bits => (next() >> 7) as u8 as i8 ^ bits as i8,
                })
                .collect();
            if kind == 4 {
                let nb = k / QK;
                let d_row = (0..n).map(|j| d[j * nb]).collect();
                return Weights::I8Rows { q, d_row };
            }
            Weights::I8 { q, d, mn }
        }
        _ => {
            let mn = if kind == 2 {
                d.iter().map(|&d| -8.0 * d).collect()
            } else {
                own_mn()
            };
            let mut next = lcg(seed ^ 0x99);
            let nibble = |bits: u64| match bits % 8 {
                0 => 0u8,
                1 => 15,
                _ => (bits >> 5) as u8 & 0x0f,
            };
            let q = (0..n * k / 2)
                .map(|_| nibble(next()) | nibble(next()) << 4)
                .collect();
            Weights::U4 { q, d, mn }
        }
    }
}

/// Σ_b |da| · (|d| · Σ|a·q| + |mn · s|) for output (i, j): the scale of the rounding error.
fn magnitude(acts: &BlockActsView<'_>, w: &Weights, i: usize, j: usize) -> f64 {
    let (k, nb) = (acts.k, acts.k / QK);
    (0..nb)
        .map(|b| {
            let abs_sum: i64 = (b * QK..(b + 1) * QK)
                .map(|t| (i64::from(acts.codes[i * k + t]) * w.code(k, j, t)).abs())
                .sum();
            let (d, mn) = w.block_params(nb, j, b);
            let da = f64::from(acts.scales[i * nb + b]).abs();
            da * (f64::from(d).abs() * abs_sum as f64
                + (f64::from(mn) * f64::from(acts.sums[i * nb + b])).abs())
        })
        .sum()
}

fn run(table: &GemmKernels, acts: BlockActsView<'_>, w: BlockWeightsRef<'_>, n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; acts.m * n];
    match w {
        BlockWeightsRef::I8 { q, d, mn } => (table.gemm_blocks_i8)(acts, q, d, mn, n, &mut y, n),
        BlockWeightsRef::U4 { q, d, mn } => (table.gemm_blocks_u4)(acts, q, d, mn, n, &mut y, n),
        BlockWeightsRef::I8Rows { q, d_row } => {
            (table.gemm_blocks_i8_rows)(acts, q, d_row, n, &mut y, n)
        }
    }
    y
}

/// Every table against the scalar twin within 1e-5 of the rounding scale.
fn check_against_scalar(acts: &BlockActs, w: &Weights, n: usize, what: &str) {
    let view = acts.view();
    let expected = run(scalar(), view, w.as_ref(), n);
    for table in available() {
        let got = run(table, view, w.as_ref(), n);
        for i in 0..view.m {
            for j in 0..n {
                let (g, e) = (got[i * n + j], expected[i * n + j]);
                let bound = 1e-5 * magnitude(&view, w, i, j) + 1e-30;
                assert!(
                    (f64::from(g) - f64::from(e)).abs() <= bound,
                    "{} {what} ({i},{j}) m={} n={n} k={}: {g} vs {e} (bound {bound})",
                    table.isa,
                    view.m,
                    view.k
                );
            }
        }
    }
}

/// Quantizes with every table; scales, codes and sums must be bit-identical to scalar's.
fn quantize_all(a: &[f32], m: usize, k: usize) -> BlockActs {
    let mut reference = BlockActs::new();
    reference.quantize(scalar(), a, m, k);
    let view = reference.view();
    for (b, ((&scale, &sum), codes)) in view
        .scales
        .iter()
        .zip(view.sums)
        .zip(view.codes.chunks_exact(QK))
        .enumerate()
    {
        let amax = a[b * QK..(b + 1) * QK]
            .iter()
            .fold(0.0f32, |max, &x| max.max(x.abs()));
        assert_eq!(scale.to_bits(), (amax / 127.0).to_bits());
        assert_eq!(sum, codes.iter().map(|&c| i32::from(c)).sum::<i32>());
        assert!(codes.iter().all(|&c| c != -128));
        if scale == 0.0 {
            assert!(codes.iter().all(|&c| c == 0));
        }
    }
    for table in available() {
        let mut acts = BlockActs::new();
        acts.quantize(table, a, m, k);
        let got = acts.view();
        let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got.scales), bits(view.scales), "{} scales", table.isa);
        assert_eq!(got.codes, view.codes, "{} codes", table.isa);
        assert_eq!(got.sums, view.sums, "{} sums", table.isa);
    }
    reference
}

#[test]
fn hand_computed() {
    // One block: codes 0..31 scaled by 1/127·31, weights constant.
    let a: Vec<f32> = (0..32).map(|x| x as f32).collect();
    let k = 32;
    for table in available() {
        let mut acts = BlockActs::new();
        acts.quantize(table, &a, 1, k);
        let view = acts.view();
        assert_eq!(view.scales, [31.0 / 127.0]);
        let codes: Vec<i32> = view.codes.iter().map(|&c| i32::from(c)).collect();
        let want: Vec<i32> = (0..32)
            .map(|x| (x as f32 * 127.0 / 31.0).round_ties_even() as i32)
            .collect();
        assert_eq!(codes, want);
        let s: i32 = want.iter().sum();
        assert_eq!(view.sums, [s]);
        // I8 row 0: all 2 (d = 0.5, no mn) → 0.5·2·s·da = s·da; row 1: all -1 with mn = 1.
        let q: Vec<i8> = [vec![2i8; 32], vec![-1i8; 32]].concat();
        let d = [0.5, 1.0];
        let mut y = [0.0; 2];
        gemm_blocks(
            table,
            &acts,
            BlockWeightsRef::I8 {
                q: &q,
                d: &d,
                mn: None,
            },
            2,
            &mut y,
            2,
        );
        let da = 31.0f32 / 127.0;
        assert_eq!(y[0], da * (0.5 * (2 * s) as f32), "{}", table.isa);
        assert_eq!(y[1], da * (-s as f32), "{}", table.isa);
        // U4: element t has nibble t % 16 (low nibbles 0..15 for t < 16, high for t >= 16);
        // value = 2·q - 16 (d = 2, mn = -16).
        let q4: Vec<u8> = (0..16u8).map(|t| t | t << 4).collect();
        let isum: i32 = (0..32).map(|t| want[t] * (t % 16) as i32).sum();
        let mut y = [0.0; 1];
        gemm_blocks(
            table,
            &acts,
            BlockWeightsRef::U4 {
                q: &q4,
                d: &[2.0],
                mn: &[-16.0],
            },
            1,
            &mut y,
            1,
        );
        let exact = f64::from(da) * f64::from(2 * isum - 16 * s);
        assert!(
            (f64::from(y[0]) - exact).abs() <= 1e-6 * exact.abs(),
            "{}: {} vs {exact}",
            table.isa,
            y[0]
        );
    }
}

#[test]
fn exact_integer_sums() {
    // da = d = 1 and mn ∈ {0, -8, none}: every result is an integer below 2^24, so every table
    // must return the exact integer block sums.
    for (m, n, k, seed) in [
        (1, 1, 32, 1),
        (5, 7, 96, 2),
        (9, 13, 384, 3),
        (4, 4, 64, 4),
        (21, 9, 96, 5),
        (133, 7, 2016, 6),
        (64, 8, 2048, 7),
        (18, 6, 4096, 8),
        (37, 10, 1536, 9),
    ] {
        let mut next = lcg(seed);
        let codes: Vec<i8> = (0..m * k)
            .map(|_| match next() % 6 {
                0 => 127,
                1 => -127,
                _ => ((next() % 255) as i32 - 127) as i8,
            })
            .collect();
        let nb = k / QK;
        let sums: Vec<i32> = codes
            .chunks_exact(QK)
            .map(|c| c.iter().map(|&x| i32::from(x)).sum())
            .collect();
        let ones_a = vec![1.0f32; m * nb];
        let view = BlockActsView {
            codes: &codes,
            scales: &ones_a,
            sums: &sums,
            m,
            k,
        };
        for kind in 0..5 {
            let mut w = weights(n, k, kind, seed);
            let mn_value = match &mut w {
                Weights::I8Rows { d_row, .. } => {
                    d_row.fill(1.0);
                    0
                }
                Weights::I8 { d, mn, .. } => {
                    d.fill(1.0);
                    if let Some(mn) = mn {
                        mn.fill(0.0);
                    }
                    0
                }
                Weights::U4 { d, mn, .. } => {
                    d.fill(1.0);
                    mn.fill(-8.0);
                    -8
                }
            };
            let expected: Vec<f32> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let dot: i64 = (0..k)
                        .map(|t| i64::from(codes[i * k + t]) * w.code(k, j, t))
                        .sum();
                    let offset: i64 = (0..nb).map(|b| i64::from(sums[i * nb + b])).sum();
                    (dot + mn_value * offset) as f32
                })
                .collect();
            for table in available() {
                let got = run(table, view, w.as_ref(), n);
                assert_eq!(got, expected, "{} kind={kind} m={m} n={n} k={k}", table.isa);
            }
        }
    }
}

#[test]
fn extreme_codes() {
    // ±127 activations (rows of ±1 with one larger element make every code extreme) against
    // -128 / 127 int8 weights and 0 / 15 nibbles.
    let (m, n, k) = (6, 9, 128);
    let a: Vec<f32> = (0..m * k)
        .map(|x| if (x / 3 + x / k) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let acts = quantize_all(&a, m, k);
    assert!(acts.view().codes.iter().all(|&c| c.abs() == 127));
    for (extreme_i8, extreme_u4) in [(-128i8, 15u8), (127, 0), (-128, 0xf0)] {
        let q: Vec<i8> = (0..n * k)
            .map(|x| if x % 5 == 0 { 127 } else { extreme_i8 })
            .collect();
        let d: Vec<f32> = (0..n * k / QK).map(|x| 0.01 + x as f32 * 1e-3).collect();
        for mn in [None, Some(vec![0.25; n * k / QK])] {
            let w = Weights::I8 {
                q: q.clone(),
                d: d.clone(),
                mn,
            };
            check_against_scalar(&acts, &w, n, "i8 extremes");
        }
        let d_row: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-3).collect();
        let w = Weights::I8Rows {
            q: q.clone(),
            d_row,
        };
        check_against_scalar(&acts, &w, n, "i8 rows extremes");
        let q4 = vec![extreme_u4 | 0x0f; n * k / 2];
        let w = Weights::U4 {
            q: q4,
            d: d.clone(),
            mn: d.iter().map(|&d| -8.0 * d).collect(),
        };
        check_against_scalar(&acts, &w, n, "u4 extremes");
    }
}

#[test]
fn zero_blocks() {
    // Whole zero rows and single zero blocks: scale 0, codes 0, sums 0, finite results.
    let (m, n, k) = (5, 6, 128);
    let mut a = acts_input(m, k, 11);
    a[..k].fill(0.0);
    a[2 * k + 32..2 * k + 64].fill(0.0);
    let acts = quantize_all(&a, m, k);
    let view = acts.view();
    assert_eq!(view.scales[0..4], [0.0; 4]);
    assert_eq!(view.scales[2 * 4 + 1], 0.0);
    for kind in 0..5 {
        let w = weights(n, k, kind, 5);
        check_against_scalar(&acts, &w, n, "zero blocks");
        for table in available() {
            let y = run(table, view, w.as_ref(), n);
            assert!(y.iter().all(|x| x.is_finite()));
            assert_eq!(y[..n], vec![0.0; n][..], "{}", table.isa);
        }
    }
}

#[test]
fn column_ranges_and_stride() {
    // Computing columns j0..j1 with sub-ranged weights and ldy = n matches the full GEMM and
    // leaves the other columns alone.
    let (m, n, k) = (7, 13, 96);
    let a = acts_input(m, k, 21);
    for table in available() {
        let mut acts = BlockActs::new();
        acts.quantize(table, &a, m, k);
        for kind in 0..5 {
            let w = weights(n, k, kind, 8 + kind);
            let mut full = vec![0.0; m * n];
            gemm_blocks(table, &acts, w.as_ref(), n, &mut full, n);
            for (j0, j1) in [(0, 13), (0, 5), (5, 13), (3, 4), (6, 6), (2, 11)] {
                let mut y = vec![f32::NAN; m * n];
                let part = w.as_ref().rows(k, j0, j1);
                gemm_blocks(table, &acts, part, j1 - j0, &mut y[j0..], n);
                for i in 0..m {
                    for j in 0..n {
                        let (got, want) = (y[i * n + j], full[i * n + j]);
                        if (j0..j1).contains(&j) {
                            let bound = 1e-5 * magnitude(&acts.view(), &w, i, j) + 1e-30;
                            assert!(
                                (f64::from(got) - f64::from(want)).abs() <= bound,
                                "{} kind={kind} {j0}..{j1} ({i},{j}): {got} vs {want}",
                                table.isa
                            );
                        } else {
                            assert!(got.is_nan(), "{} wrote outside {j0}..{j1}", table.isa);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn empty_and_reuse() {
    for table in available() {
        let mut acts = BlockActs::new();
        acts.quantize(table, &[], 3, 0);
        let mut y = [f32::NAN; 6];
        let w = BlockWeightsRef::I8 {
            q: &[],
            d: &[],
            mn: None,
        };
        gemm_blocks(table, &acts, w, 2, &mut y, 2);
        assert_eq!(y, [0.0; 6], "{}", table.isa);
        // A smaller quantization after a larger one must not see stale data.
        acts.quantize(table, &[1.0; 64 * 4], 4, 64);
        acts.quantize(table, &[2.0; 32], 1, 32);
        assert_eq!((acts.m(), acts.k(), acts.view().codes.len()), (1, 32, 32));
        assert_eq!(acts.view().scales, [2.0 / 127.0]);
    }
}

#[test]
#[should_panic(expected = "not a multiple of 32")]
fn k_not_multiple_of_block_panics() {
    let mut acts = BlockActs::new();
    acts.quantize(best(), &[0.0; 40], 1, 40);
}

#[test]
#[should_panic(expected = "y is shorter")]
fn short_y_panics() {
    let mut acts = BlockActs::new();
    acts.quantize(best(), &[1.0; 64], 2, 32);
    let w = BlockWeightsRef::I8 {
        q: &[1; 64],
        d: &[1.0; 2],
        mn: None,
    };
    gemm_blocks(best(), &acts, w, 2, &mut [0.0; 4], 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn quantize_blocks_identical_across_isas(m in 1usize..=6, k_idx in 0usize..5, seed: u64) {
        let k = [0, 32, 64, 96, 384][k_idx];
        quantize_all(&quantize_input(m, k, seed), m, k);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn blocks_match_scalar(m in 1usize..=9, n in 1usize..=13, k_idx in 0usize..4, kind in 0u64..5,
                           seed: u64) {
        let k = [32, 64, 96, 384][k_idx];
        let a = acts_input(m, k, seed);
        let acts = quantize_all(&a, m, k);
        let w = weights(n, k, kind, seed ^ 0x1234);
        check_against_scalar(&acts, &w, n, "random");
    }
}

#[test]
fn large_shapes_use_the_prepared_tiles_and_match_scalar() {
    for (m, n, k) in [(21, 9, 96), (133, 7, 2016), (37, 10, 1536), (18, 5, 4096)] {
        let a = acts_input(m, k, 31);
        let acts = quantize_all(&a, m, k);
        for kind in 0..5 {
            let w = weights(n, k, kind, 40 + kind);
            check_against_scalar(&acts, &w, n, "large shapes");
        }
    }
}

#[test]
fn i8_rows_exact_extremes() {
    // Activation codes ±127 against weight codes -128 / 127 with d_row = da = 1: every block
    // sum and every result is an exact integer (below 2^24), so every table must agree exactly.
    for (m, n, k) in [
        (1, 1, 32),
        (3, 5, 96),
        (9, 6, 384),
        (21, 7, 384),
        (40, 9, 2016),
    ] {
        let nb = k / QK;
        let codes: Vec<i8> = (0..m * k)
            .map(|x| if (x / 7 + x / k) % 3 == 0 { -127 } else { 127 })
            .collect();
        let sums: Vec<i32> = codes
            .chunks_exact(QK)
            .map(|c| c.iter().map(|&x| i32::from(x)).sum())
            .collect();
        let ones = vec![1.0f32; m * nb];
        let view = BlockActsView {
            codes: &codes,
            scales: &ones,
            sums: &sums,
            m,
            k,
        };
        for pattern in 0..3 {
            let q: Vec<i8> = (0..n * k)
                .map(|x| match pattern {
                    0 => -128,
                    1 => 127,
                    _ if (x / 5 + x / k) % 2 == 0 => -128,
                    _ => 127,
                })
                .collect();
            let d_row = vec![1.0f32; n];
            let expected: Vec<f32> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let dot: i64 = (0..k)
                        .map(|t| i64::from(codes[i * k + t]) * i64::from(q[j * k + t]))
                        .sum();
                    assert!(dot.abs() < 1 << 24);
                    dot as f32
                })
                .collect();
            for table in available() {
                let mut y = vec![f32::NAN; m * n];
                (table.gemm_blocks_i8_rows)(view, &q, &d_row, n, &mut y, n);
                assert_eq!(
                    y, expected,
                    "{} pattern={pattern} m={m} n={n} k={k}",
                    table.isa
                );
            }
        }
    }
}

#[test]
fn i8_rows_match_replicated_block_scales() {
    // The per-row kernel computes the per-block kernel's value with d[j, b] = d_row[j].
    for (m, n, k) in [(3, 5, 96), (21, 6, 384), (33, 9, 2016)] {
        let a = acts_input(m, k, 77);
        let acts = quantize_all(&a, m, k);
        let Weights::I8Rows { q, d_row } = weights(n, k, 4, 78) else {
            unreachable!()
        };
        let d: Vec<f32> = d_row
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, k / QK))
            .collect();
        let rows_w = Weights::I8Rows {
            q: q.clone(),
            d_row: d_row.clone(),
        };
        for table in available() {
            let rows = run(table, acts.view(), rows_w.as_ref(), n);
            let blocks = run(
                table,
                acts.view(),
                BlockWeightsRef::I8 {
                    q: &q,
                    d: &d,
                    mn: None,
                },
                n,
            );
            for (idx, (&r, &b)) in rows.iter().zip(&blocks).enumerate() {
                let bound = 1e-5 * magnitude(&acts.view(), &rows_w, idx / n, idx % n) + 1e-30;
                assert!(
                    (f64::from(r) - f64::from(b)).abs() <= bound,
                    "{} ({}, {}): {r} vs {b}",
                    table.isa,
                    idx / n,
                    idx % n
                );
            }
        }
    }
}

#[test]
fn i8_rows_column_ranges_with_stride() {
    // Sub-ranged rows (d_row sliced with them) into a wider y: only j0..j1 is written, with the
    // full GEMM's values up to rounding; m = 40 reaches the prepared VNNI tiles.
    for (m, n, k) in [(7, 13, 96), (40, 11, 384)] {
        let a = acts_input(m, k, 23);
        let acts = quantize_all(&a, m, k);
        let w = weights(n, k, 4, 24);
        let ldy = n + 3;
        for table in available() {
            let mut full = vec![0.0; m * n];
            gemm_blocks(table, &acts, w.as_ref(), n, &mut full, n);
            for (j0, j1) in [(0, n), (0, 5), (5, n), (3, 4), (6, 6), (2, n - 2), (1, 10)] {
                let mut y = vec![f32::NAN; m * ldy];
                let part = w.as_ref().rows(k, j0, j1);
                assert!(
                    matches!(part, BlockWeightsRef::I8Rows { d_row, .. } if d_row.len() == j1 - j0)
                );
                gemm_blocks(table, &acts, part, j1 - j0, &mut y[j0..], ldy);
                for i in 0..m {
                    for j in 0..ldy {
                        let got = y[i * ldy + j];
                        if (j0..j1).contains(&j) {
                            let want = full[i * n + j];
                            let bound = 1e-5 * magnitude(&acts.view(), &w, i, j) + 1e-30;
                            assert!(
                                (f64::from(got) - f64::from(want)).abs() <= bound,
                                "{} m={m} {j0}..{j1} ({i},{j}): {got} vs {want}",
                                table.isa
                            );
                        } else {
                            assert!(got.is_nan(), "{} wrote outside {j0}..{j1}", table.isa);
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "d_row.len() != n")]
fn i8_rows_wrong_scale_count_panics() {
    let mut acts = BlockActs::new();
    acts.quantize(best(), &[1.0; 64], 2, 32);
    let w = BlockWeightsRef::I8Rows {
        q: &[1; 64],
        d_row: &[1.0; 3],
    };
    gemm_blocks(best(), &acts, w, 2, &mut [0.0; 4], 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn i8_rows_match_scalar(m_idx in 0usize..14, n in 1usize..=13, k_idx in 0usize..4,
                            seed: u64) {
        // m in 1..=9 (single tiles and row tails) and larger m that reach the prepared path.
        let m = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 24, 37, 70][m_idx];
        let k = [32, 96, 384, 2016][k_idx];
        let a = acts_input(m, k, seed);
        let acts = quantize_all(&a, m, k);
        let w = weights(n, k, 4, seed ^ 0x4321);
        check_against_scalar(&acts, &w, n, "i8 rows random");
    }
}

/// Deterministic values in [-1, 1).
fn quad_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Every leftover of the 4-block steps of the prepared per-row path (block counts 1..=13, i.e.
/// quads plus a pair and/or an odd block), on prepared and unprepared shapes: against the
/// scalar twin, and exactly with unit scales, including -128 and 127 weights.
#[test]
fn quad_tails_match_scalar() {
    let scalar = scalar();
    for table in available() {
        for nb in 1..=13usize {
            for (m, n) in [(16usize, 4usize), (40, 9), (23, 5), (700, 6)] {
                let k = nb * 32;
                let wf = quad_values(n * k, nb as u64);
                let mut q = vec![0i8; n * k];
                let mut s = vec![0f32; n];
                (scalar.quantize_rows_i8)(&wf, n, k, &mut q, &mut s);
                // extreme weight codes in a few spots
                for (idx, v) in q.iter_mut().enumerate() {
                    if idx % 11 == 0 {
                        *v = -128;
                    }
                    if idx % 13 == 0 {
                        *v = 127;
                    }
                }
                let x = quad_values(m * k, 99 + nb as u64);
                let mut acts = BlockActs::new();
                acts.quantize(scalar, &x, m, k);
                let w = BlockWeightsRef::I8Rows { q: &q, d_row: &s };
                let mut y0 = vec![0f32; m * n];
                let mut y1 = vec![0f32; m * n];
                gemm_blocks(scalar, &acts, w, n, &mut y0, n);
                gemm_blocks(table, &acts, w, n, &mut y1, n);
                // exact-integer check: unit row scales, acts scales 1 via codes
                for (i, (a, b)) in y0.iter().zip(&y1).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + a.abs()) * (nb as f32),
                        "{} nb={nb} m={m} n={n} i={i}: {a} vs {b}",
                        table.isa
                    );
                }
                let ones = vec![1.0f32; n];
                let w1 = BlockWeightsRef::I8Rows {
                    q: &q,
                    d_row: &ones,
                };
                // activations with da = 1: codes ±127 style via x in {-127,127}
                let xi: Vec<f32> = (0..m * k)
                    .map(|t| {
                        if (t * 7 / 3 + t / k) % 3 == 0 {
                            -127.0
                        } else {
                            127.0
                        }
                    })
                    .collect();
                let mut acts1 = BlockActs::new();
                acts1.quantize(scalar, &xi, m, k);
                gemm_blocks(scalar, &acts1, w1, n, &mut y0, n);
                gemm_blocks(table, &acts1, w1, n, &mut y1, n);
                assert_eq!(y0, y1, "{} exact nb={nb} m={m} n={n}", table.isa);
            }
        }
    }
}
