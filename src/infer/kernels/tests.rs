//! Every table usable on this CPU against the scalar reference (exact for the integer kernels,
//! bit-identical for quantization, an f64 reference for the f32 GEMM), plus hand-computed
//! values and the dispatch API.

use proptest::prelude::*;

use super::*;

/// A deterministic pseudo-random sequence of u64 (64-bit LCG).
pub(super) fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 11
    }
}

/// Values in [-1, 1).
fn f32_values(len: usize, seed: u64) -> Vec<f32> {
    let mut next = lcg(seed);
    (0..len)
        .map(|_| ((next() >> 29) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

/// i8 values, a quarter of them at the extremes -128, -127 and 127.
fn i8_values(len: usize, seed: u64) -> Vec<i8> {
    let mut next = lcg(seed);
    (0..len)
        .map(|_| {
            let bits = next();
            match bits % 12 {
                0 => -128,
                1 => -127,
                2 => 127,
                _ => (bits >> 8) as u8 as i8,
            }
        })
        .collect()
}

fn f64_reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut exact = vec![0.0; m * n];
    let mut magnitude = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for kk in 0..k {
                let product = f64::from(a[i * k + kk]) * f64::from(b[j * k + kk]);
                exact[i * n + j] += product;
                magnitude[i * n + j] += product.abs();
            }
        }
    }
    (exact, magnitude)
}

fn check_gemm_i8(m: usize, n: usize, k: usize, seed: u64) {
    let a = i8_values(m * k, seed);
    let w = i8_values(n * k, seed ^ 0x5555);
    let mut expected = vec![7; m * n];
    for i in 0..m {
        for j in 0..n {
            expected[i * n + j] = (0..k)
                .map(|kk| i32::from(a[i * k + kk]) * i32::from(w[j * k + kk]))
                .sum();
        }
    }
    for table in available() {
        let mut acc = vec![-1; m * n];
        (table.gemm_i8_i32)(&a, &w, m, n, k, &mut acc);
        assert_eq!(acc, expected, "{} m={m} n={n} k={k} seed={seed}", table.isa);
    }
}

fn check_gemm_f32(m: usize, n: usize, k: usize, seed: u64) {
    let a = f32_values(m * k, seed);
    let b = f32_values(n * k, seed ^ 0xaaaa);
    let (exact, magnitude) = f64_reference(&a, &b, m, n, k);
    for table in available() {
        let mut c = vec![f32::NAN; m * n];
        (table.gemm_f32)(&a, &b, m, n, k, &mut c);
        for (idx, ((&got, &want), &mag)) in c.iter().zip(&exact).zip(&magnitude).enumerate() {
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= 1e-5 * mag + 1e-30,
                "{} m={m} n={n} k={k} seed={seed} at {idx}: {got} vs {want} (Σ|ab| {mag})",
                table.isa
            );
        }
    }
}

/// Every table must produce the scalar table's scales and codes bit for bit.
fn check_quantize(a: &[f32], m: usize, k: usize) {
    let mut q_ref = vec![0; m * k];
    let mut s_ref = vec![0.0; m];
    scalar::quantize_rows_i8(a, m, k, &mut q_ref, &mut s_ref);
    for (row, (&scale, q_row)) in s_ref.iter().zip(q_ref.chunks(k.max(1))).enumerate() {
        let amax = a[row * k..(row + 1) * k]
            .iter()
            .fold(0.0f32, |max, &x| max.max(x.abs()));
        assert_eq!(scale.to_bits(), (amax / 127.0).to_bits());
        if scale == 0.0 {
            assert!(q_row.iter().all(|&code| code == 0));
        }
        assert!(q_row.iter().all(|&code| code != -128));
    }
    for table in available() {
        let mut q = vec![1; m * k];
        let mut s = vec![1.0; m];
        (table.quantize_rows_i8)(a, m, k, &mut q, &mut s);
        let s_bits: Vec<u32> = s.iter().map(|x| x.to_bits()).collect();
        let s_ref_bits: Vec<u32> = s_ref.iter().map(|x| x.to_bits()).collect();
        assert_eq!(s_bits, s_ref_bits, "{} scales m={m} k={k}", table.isa);
        assert_eq!(q, q_ref, "{} codes m={m} k={k}", table.isa);
    }
}

/// Rows mixing random values, exact ties, zeros, huge and tiny magnitudes.
pub(super) fn quantize_input(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut next = lcg(seed);
    let mut a = Vec::with_capacity(m * k);
    for row in 0..m {
        let kind = (seed as usize + row) % 6;
        for col in 0..k {
            let bits = next();
            let unit = ((bits >> 29) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            let value = match kind {
                // Scale exactly 1.0 (max 127), values on and near the .5 ties.
                0 if col == 0 => 127.0,
                0 => {
                    ((bits % 255) as f32 - 127.0) + [0.5, -0.5, 0.0, 0.25][(bits >> 8) as usize % 4]
                }
                1 => 0.0,
                2 => unit * 3.0e38,
                3 => unit * 1.0e-40,
                4 => {
                    if bits % 3 == 1 {
                        -0.0
                    } else {
                        unit * 1.0e3
                    }
                }
                _ => unit,
            };
            a.push(value);
        }
    }
    a
}

#[test]
fn select_and_available() {
    assert_eq!(select(KernelChoice::Scalar).isa, GemmIsa::Scalar);
    let tables = available();
    assert_eq!(tables[0].isa, GemmIsa::Scalar);
    assert_eq!(best().isa, tables.last().unwrap().isa);
    assert_eq!(select(KernelChoice::Auto).isa, best().isa);
    assert_eq!(scalar().isa, GemmIsa::Scalar);
    assert_eq!(GemmIsa::Avx512Vnni.to_string(), "avx512vnni");
    assert_eq!(GemmIsa::Avx512Vnni.family(), Isa::Avx512);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(tables.iter().any(|t| t.isa == GemmIsa::Avx2));
        assert_eq!(select(KernelChoice::Avx2).isa, GemmIsa::Avx2);
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        assert!(tables.iter().any(|t| t.isa == GemmIsa::Avx512));
        assert_eq!(select(KernelChoice::Avx512).isa.family(), Isa::Avx512);
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
    {
        assert_eq!(tables.last().unwrap().isa, GemmIsa::Avx512Vnni);
        assert_eq!(select(KernelChoice::Avx512).isa, GemmIsa::Avx512Vnni);
    }
    assert!(format!("{:?}", best()).contains("GemmKernels"));
}

#[test]
fn scalar_hand_computed() {
    let a = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
    let b = [1.0, 0.0, 1.0, 2.0, 2.0, 2.0];
    for table in available() {
        let mut c = [0.0; 4];
        (table.gemm_f32)(&a, &b, 2, 2, 3, &mut c);
        assert_eq!(c, [4.0, 12.0, -1.0, -1.0], "{}", table.isa);
        let mut acc = [0; 1];
        (table.gemm_i8_i32)(&[-128, 127, 3], &[-128, -127, 2], 1, 1, 3, &mut acc);
        assert_eq!(acc, [16384 - 16129 + 6], "{}", table.isa);
        // Scale 1.0: ties round to even, and the sign of -0.5 is irrelevant for an i8.
        let row = [127.0, 2.5, -3.5, 0.5, -0.5, 1.5, -127.0, 126.5];
        let mut q = [0; 8];
        let mut s = [0.0; 1];
        (table.quantize_rows_i8)(&row, 1, 8, &mut q, &mut s);
        assert_eq!(s, [1.0]);
        assert_eq!(q, [127, 2, -4, 0, 0, 2, -127, 126], "{}", table.isa);
    }
}

#[test]
fn empty_dimensions() {
    for table in available() {
        let mut c = [f32::NAN; 6];
        (table.gemm_f32)(&[], &[], 2, 3, 0, &mut c);
        assert_eq!(c, [0.0; 6]);
        let mut acc = [9; 6];
        (table.gemm_i8_i32)(&[], &[], 2, 3, 0, &mut acc);
        assert_eq!(acc, [0; 6]);
        (table.gemm_i8_i32)(&[], &[1, 2], 0, 1, 2, &mut []);
        (table.gemm_f32)(&[1.0, 2.0], &[], 1, 0, 2, &mut []);
        let mut s = [5.0; 2];
        (table.quantize_rows_i8)(&[], 2, 0, &mut [], &mut s);
        assert_eq!(s, [0.0; 2]);
    }
}

#[test]
#[should_panic(expected = "b.len() != n * k")]
fn shape_mismatch_panics() {
    let mut c = [0.0; 2];
    (best().gemm_f32)(&[0.0; 4], &[0.0; 3], 2, 1, 2, &mut c);
}

#[test]
fn i8_gemm_worst_case_no_saturation() {
    // -128 · -128 everywhere: the largest pair sums vpmaddwd can see, across k blocks.
    for k in [1, 15, 16, 17, 63, 64, 1023, 1024, 1025, 2100, 4111] {
        let (m, n) = (5, 5);
        let a = vec![-128i8; m * k];
        let w = vec![-128i8; n * k];
        for table in available() {
            let mut acc = vec![0; m * n];
            (table.gemm_i8_i32)(&a, &w, m, n, k, &mut acc);
            assert!(
                acc.iter().all(|&x| x == 16384 * k as i32),
                "{} k={k}",
                table.isa
            );
        }
    }
}

#[test]
fn i8_gemm_extreme_combinations() {
    // Every pairing of -128, -127, -1, 0, 1, 127 (the VNNI table offsets activations by 128,
    // so -128 and 127 map to the unsigned extremes 0 and 255), for tails and k blocks.
    let extremes = [-128i8, -127, -1, 0, 1, 127];
    for k in [1, 6, 36, 64, 65, 127, 2048, 2049, 4160] {
        let (m, n) = (6, 6);
        let a: Vec<i8> = (0..m * k).map(|x| extremes[(x / k + x) % 6]).collect();
        let w: Vec<i8> = (0..n * k).map(|x| extremes[(x / k) % 6]).collect();
        let expected: Vec<i32> = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..k)
                    .map(|kk| i32::from(a[i * k + kk]) * i32::from(w[j * k + kk]))
                    .sum()
            })
            .collect();
        for table in available() {
            let mut acc = vec![0; m * n];
            (table.gemm_i8_i32)(&a, &w, m, n, k, &mut acc);
            assert_eq!(acc, expected, "{} k={k}", table.isa);
        }
    }
    // The largest magnitudes the i32 result allows: 127 · -128 and -128 · -128 over long rows.
    let k = 100_000;
    for (x, y) in [(127i8, -128i8), (-128, -128), (-128, 127)] {
        let expected = i32::from(x) * i32::from(y) * k as i32;
        for table in available() {
            let mut acc = vec![0; 4];
            (table.gemm_i8_i32)(&vec![x; 2 * k], &vec![y; 2 * k], 2, 2, k, &mut acc);
            assert_eq!(acc, [expected; 4], "{} {x}·{y}", table.isa);
        }
    }
}

#[test]
fn block_boundaries() {
    for (m, n, k) in [
        (9, 13, 1024),
        (5, 7, 1025),
        (4, 8, 2049),
        (1, 70, 3000),
        (32, 9, 1100),
        (300, 600, 1100),
        (64, 33, 513),
        (40, 257, 31),
        (8, 100, 20),
        (33, 31, 600),
        (128, 128, 32),
        (31, 65, 127),
    ] {
        check_gemm_i8(m, n, k, (m * n * k) as u64);
        check_gemm_f32(m, n, k, (m + n + k) as u64);
    }
}

#[test]
fn linear_bias_and_scratch_reuse() {
    let (m, k, n) = (3, 40, 5);
    let a = f32_values(m * k, 1);
    let w = f32_values(n * k, 2);
    let bias = f32_values(n, 3);
    let table = best();
    let mut plain = vec![0.0; m * n];
    linear_f32(table, &a, m, k, &w, n, None, &mut plain);
    let mut biased = vec![0.0; m * n];
    linear_f32(table, &a, m, k, &w, n, Some(&bias), &mut biased);
    for (idx, (&p, &b)) in plain.iter().zip(&biased).enumerate() {
        assert_eq!(p + bias[idx % n], b);
    }
    let (mut sq, mut ss, mut sa) = (Vec::new(), Vec::new(), Vec::new());
    let w_q = vec![1i8; n * k];
    let w_scales = vec![0.5; n];
    let mut y1 = vec![0.0; m * n];
    linear_i8(
        table,
        &a,
        m,
        k,
        &w_q,
        &w_scales,
        n,
        Some(&bias),
        &mut sq,
        &mut ss,
        &mut sa,
        &mut y1,
    );
    // Reuse of larger scratch from a previous, bigger call must not change results.
    sq.resize(10_000, 3);
    sa.resize(10_000, 3);
    let mut y2 = vec![0.0; m * n];
    linear_i8(
        table,
        &a,
        m,
        k,
        &w_q,
        &w_scales,
        n,
        Some(&bias),
        &mut sq,
        &mut ss,
        &mut sa,
        &mut y2,
    );
    assert_eq!(y1, y2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gemm_i8_i32_exact_across_isas(m in 1usize..9, n in 1usize..70, k in 0usize..300, seed: u64) {
        check_gemm_i8(m, n, k, seed);
    }

    #[test]
    fn gemm_f32_matches_f64_reference(m in 1usize..9, n in 1usize..70, k in 0usize..300, seed: u64) {
        check_gemm_f32(m, n, k, seed);
    }

    #[test]
    fn quantize_rows_identical_across_isas(m in 1usize..9, k in 0usize..300, seed: u64) {
        let a = quantize_input(m, k, seed);
        check_quantize(&a, m, k);
    }

    #[test]
    fn quantize_arbitrary_finite_floats(values in prop::collection::vec(
        prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO, 0..200),
        m in 1usize..4) {
        let k = values.len() / m;
        check_quantize(&values[..m * k], m, k);
    }

    #[test]
    fn linear_i8_close_to_linear_f32(m in 1usize..9, n in 1usize..40, k in 1usize..300,
                                     seed: u64, with_bias: bool) {
        let a = f32_values(m * k, seed);
        let w: Vec<f32> = f32_values(n * k, seed ^ 7).iter().map(|x| x * 0.1).collect();
        let bias = f32_values(n, seed ^ 9);
        let bias = with_bias.then_some(&bias[..]);
        for table in available() {
            let mut w_q = vec![0; n * k];
            let mut w_scales = vec![0.0; n];
            (table.quantize_rows_i8)(&w, n, k, &mut w_q, &mut w_scales);
            let mut a_scales = vec![0.0; m];
            let mut a_q = vec![0; m * k];
            (table.quantize_rows_i8)(&a, m, k, &mut a_q, &mut a_scales);
            let mut y_f = vec![0.0; m * n];
            linear_f32(table, &a, m, k, &w, n, bias, &mut y_f);
            let (mut sq, mut ss, mut sa) = (Vec::new(), Vec::new(), Vec::new());
            let mut y_q = vec![0.0; m * n];
            linear_i8(table, &a, m, k, &w_q, &w_scales, n, bias, &mut sq, &mut ss, &mut sa, &mut y_q);
            for i in 0..m {
                for j in 0..n {
                    // |x - x̂| ≤ s/2 per element, so |Σ a·w - Σ â·ŵ| ≤ Σ (sa/2·|ŵ| + sw/2·|a|),
                    // plus f32 rounding slack.
                    let (sa_i, sw_j) = (a_scales[i], w_scales[j]);
                    let bound: f32 = (0..k)
                        .map(|kk| {
                            let w_hat = f32::from(w_q[j * k + kk]) * sw_j;
                            0.5 * sa_i * w_hat.abs() + 0.5 * sw_j * a[i * k + kk].abs()
                        })
                        .sum::<f32>() * 1.001 + 1e-5;
                    let err = (y_q[i * n + j] - y_f[i * n + j]).abs();
                    prop_assert!(err <= bound, "{} ({i},{j}): {} vs {} bound {bound}",
                                 table.isa, y_q[i * n + j], y_f[i * n + j]);
                }
            }
        }
    }
}
