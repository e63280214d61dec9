//! Vectorizable f32 row-wise math for inference: GELU (erf), softmax and LayerNorm.
//!
//! The bodies are plain branch-free loops over fixed-width lane arrays (no `mul_add`, no calls to
//! libm), written once as `#[inline(always)]` functions. Each is compiled three times: for the
//! baseline CPU (the scalar twin, which defines the result) and inside `#[target_feature]`
//! wrappers for AVX2 and AVX-512, where LLVM turns the lane loops into 8- or 16-wide vector code.
//! Since Rust never contracts `a * b + c` into an FMA and the lane structure fixes the summation
//! order, every version returns bit-identical results (tested below).
//!
//! Accuracy (tested against f64 libm): `exp` within 2 ulp on the softmax range, `erf` within
//! 3.5e-7 absolute (the rational fit itself is good to 2.1e-7), so GELU is within 6e-7 · max(1, |x|) absolute of the exact f64 formula (the
//! error is largest for negative `x`, where `1 + erf` cancels; the outputs there are tiny).

use crate::quant::kernels::{Isa, KernelChoice};

/// Lanes of the accumulator arrays; 16 = one AVX-512 register.
const LANES: usize = 16;

/// `e^x` for `x ≤ 0` (and moderate positive `x`): Cody–Waite range reduction to
/// `r ∈ [-ln2/2, ln2/2]`, a degree-6 polynomial (Cephes `expf` coefficients) and an exponent
/// built from bits. Inputs below -87 give ~0 (no denormals); NaN is not expected.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // `t`'s low mantissa bits hold `n` (|n| ≤ 126 ≪ 2^22): `(bits(t) + 127) << 23` is the
    // exponent field of 2^n, without a (saturating, slower) float-to-int conversion.
    let bits = t.to_bits().wrapping_add(127) << 23;
    y * f32::from_bits(bits)
}

/// `erf(x)` (within 3.5e-7) as a rational function of `x` on `[-4, 4]` (odd numerator of degree 13, even
/// denominator of degree 8), saturating to ±1 outside, where `1 - erf(4) < 2e-8`.
#[inline(always)]
fn erf(input: f32) -> f32 {
    let x = input.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let p = p * x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    // Exactly ±1 beyond the fit, so that GELU of a large negative input is 0, not x · 1e-8.
    if input.abs() >= 4.0 {
        1f32.copysign(input)
    } else {
        p / q
    }
}

#[inline(always)]
fn gelu_body(xs: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for x in xs.iter_mut() {
        let v = *x;
        *x = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

/// Softmax of each `len`-long row of `xs` after multiplying by `scale`, in place.
#[inline(always)]
fn softmax_body(xs: &mut [f32], len: usize, scale: f32) {
    if len == 0 {
        return;
    }
    for row in xs.chunks_exact_mut(len) {
        let mut max = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (m, x) in max.iter_mut().zip(chunk.iter_mut()) {
                *x *= scale;
                *m = m.max(*x);
            }
        }
        for (m, x) in max.iter_mut().zip(chunks.into_remainder()) {
            *x *= scale;
            *m = m.max(*x);
        }
        let max = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (s, x) in sum.iter_mut().zip(chunk.iter_mut()) {
                *x = exp(*x - max);
                *s += *x;
            }
        }
        for (s, x) in sum.iter_mut().zip(chunks.into_remainder()) {
            *x = exp(*x - max);
            *s += *x;
        }
        let inv = 1.0 / sum.iter().sum::<f32>();
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// Sum of `xs` over [`LANES`] lane accumulators, reduced in a fixed order.
#[inline(always)]
fn lane_sum(xs: &[f32], mut f: impl FnMut(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(x);
    }
    acc.iter().sum()
}

/// LayerNorm of each `h`-long row in place: `(x - mean) / sqrt(var + eps) · gamma + beta` with
/// the biased variance (PyTorch's), mean and variance from two passes in f32 lane sums.
#[inline(always)]
fn layer_norm_body(xs: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    if h == 0 {
        return;
    }
    let (gamma, beta) = (&gamma[..h], &beta[..h]);
    for row in xs.chunks_exact_mut(h) {
        let mean = lane_sum(row, |x| x) / h as f32;
        let var = lane_sum(row, |x| (x - mean) * (x - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// Element-wise kernels for one ISA.
#[derive(Debug)]
pub struct MathKernels {
    /// The instruction set the bodies were compiled for (scalar, AVX2 or AVX-512).
    pub isa: Isa,
    /// Exact-erf GELU in place: `x · (1 + erf(x / √2)) / 2`.
    pub gelu: fn(&mut [f32]),
    /// `softmax(scale · row)` for every `len`-long row, in place (`xs.len()` a multiple of
    /// `len`).
    pub softmax_rows: fn(&mut [f32], usize, f32),
    /// LayerNorm of every `h`-long row in place: `layer_norm_rows(xs, h, gamma, beta, eps)`.
    pub layer_norm_rows: fn(&mut [f32], usize, &[f32], &[f32], f32),
}

static SCALAR: MathKernels = MathKernels {
    isa: Isa::Scalar,
    gelu: gelu_body,
    softmax_rows: softmax_body,
    layer_norm_rows: layer_norm_body,
};

/// The baseline (definition) table.
pub fn scalar() -> &'static MathKernels {
    &SCALAR
}

/// Every table this CPU can run, scalar first.
pub fn available() -> Vec<&'static MathKernels> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut tables = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            tables.push(&x86::AVX2);
        }
        if is_x86_feature_detected!("avx512f") {
            tables.push(&x86::AVX512);
        }
    }
    tables
}

/// The widest table this CPU runs (detected once).
pub fn best() -> &'static MathKernels {
    static BEST: std::sync::OnceLock<&'static MathKernels> = std::sync::OnceLock::new();
    BEST.get_or_init(|| available().last().copied().unwrap_or(&SCALAR))
}

/// The table for a `QUANTD_KERNELS` choice: `Auto` the widest this CPU runs, an ISA its own
/// table, and the widest for an ISA without one here (NEON: LLVM's baseline vectorization).
/// Every table gives the same bits, so the choice only changes speed.
pub fn select(choice: KernelChoice) -> &'static MathKernels {
    let isa = match choice {
        KernelChoice::Auto => return best(),
        KernelChoice::Scalar => Isa::Scalar,
        KernelChoice::Avx2 => Isa::Avx2,
        KernelChoice::Avx512 => Isa::Avx512,
        KernelChoice::Neon => Isa::Neon,
    };
    available()
        .into_iter()
        .find(|table| table.isa == isa)
        .unwrap_or_else(best)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The same bodies compiled with AVX2 / AVX-512 enabled. The safe wrappers are private and
    //! only reachable through `AVX2` / `AVX512`, which `available` hands out after run-time
    //! detection confirmed the features: every `SAFETY:` comment below relies on that.

    use super::{gelu_body, layer_norm_body, softmax_body, Isa, MathKernels};

    #[target_feature(enable = "avx2")]
    unsafe fn gelu_avx2(xs: &mut [f32]) {
        gelu_body(xs);
    }

    #[target_feature(enable = "avx2")]
    unsafe fn softmax_avx2(xs: &mut [f32], len: usize, scale: f32) {
        softmax_body(xs, len, scale);
    }

    #[target_feature(enable = "avx2")]
    unsafe fn layer_norm_avx2(xs: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        layer_norm_body(xs, h, gamma, beta, eps);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn layer_norm_avx512(xs: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        layer_norm_body(xs, h, gamma, beta, eps);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn gelu_avx512(xs: &mut [f32]) {
        gelu_body(xs);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn softmax_avx512(xs: &mut [f32], len: usize, scale: f32) {
        softmax_body(xs, len, scale);
    }

    pub(super) static AVX2: MathKernels = MathKernels {
        isa: Isa::Avx2,
        gelu: |xs| {
            debug_assert!(is_x86_feature_detected!("avx2"));
            // SAFETY: reachable only through `AVX2`, handed out after AVX2 was detected.
            unsafe { gelu_avx2(xs) }
        },
        softmax_rows: |xs, len, scale| {
            debug_assert!(is_x86_feature_detected!("avx2"));
            // SAFETY: reachable only through `AVX2`, handed out after AVX2 was detected.
            unsafe { softmax_avx2(xs, len, scale) }
        },
        layer_norm_rows: |xs, h, gamma, beta, eps| {
            debug_assert!(is_x86_feature_detected!("avx2"));
            // SAFETY: reachable only through `AVX2`, handed out after AVX2 was detected.
            unsafe { layer_norm_avx2(xs, h, gamma, beta, eps) }
        },
    };

    pub(super) static AVX512: MathKernels = MathKernels {
        isa: Isa::Avx512,
        gelu: |xs| {
            debug_assert!(is_x86_feature_detected!("avx512f"));
            // SAFETY: reachable only through `AVX512`, handed out after AVX-512F was detected.
            unsafe { gelu_avx512(xs) }
        },
        softmax_rows: |xs, len, scale| {
            debug_assert!(is_x86_feature_detected!("avx512f"));
            // SAFETY: reachable only through `AVX512`, handed out after AVX-512F was detected.
            unsafe { softmax_avx512(xs, len, scale) }
        },
        layer_norm_rows: |xs, h, gamma, beta, eps| {
            debug_assert!(is_x86_feature_detected!("avx512f"));
            // SAFETY: reachable only through `AVX512`, handed out after AVX-512F was detected.
            unsafe { layer_norm_avx512(xs, h, gamma, beta, eps) }
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<f32> {
        let mut values: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        values.extend([0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 30.0, -30.0, 1e6, -1e6]);
        values
    }

    #[test]
    fn exp_is_within_two_ulp_on_the_softmax_range() {
        for i in 0..=87_000 {
            let x = -(i as f32) * 0.001;
            let got = exp(x);
            let want = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * want;
            if want > 1e-37 {
                assert!(
                    (f64::from(got) - want).abs() <= 2.0 * ulp,
                    "exp({x}) = {got}, want {want}"
                );
            }
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        for &x in &samples() {
            let want = crate::infer::mlp::erf(f64::from(x));
            assert!(
                (f64::from(erf(x)) - want).abs() < 3.5e-7,
                "erf({x}) = {}, want {want}",
                erf(x)
            );
            let mut g = [x];
            gelu_body(&mut g);
            let want =
                0.5 * f64::from(x) * (1.0 + crate::infer::mlp::erf(f64::from(x) / 2f64.sqrt()));
            assert!(
                (f64::from(g[0]) - want).abs() <= 6e-7 * f64::from(x).abs().max(1.0),
                "gelu({x}) = {}, want {want}",
                g[0]
            );
        }
    }

    #[test]
    fn softmax_matches_f64_and_sums_to_one() {
        for len in [1usize, 7, 16, 17, 128] {
            let xs: Vec<f32> = (0..len * 3)
                .map(|i| ((i * 37) % 23) as f32 - 11.0)
                .collect();
            let mut got = xs.clone();
            softmax_body(&mut got, len, 0.125);
            for (row_in, row_out) in xs.chunks(len).zip(got.chunks(len)) {
                let max = row_in
                    .iter()
                    .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b) * 0.125));
                let sum: f64 = row_in
                    .iter()
                    .map(|&v| (f64::from(v) * 0.125 - max).exp())
                    .sum();
                for (&x, &y) in row_in.iter().zip(row_out) {
                    let want = (f64::from(x) * 0.125 - max).exp() / sum;
                    assert!(
                        (f64::from(y) - want).abs() < 1e-6 * want.max(1e-3),
                        "{y} vs {want}"
                    );
                }
                let total: f32 = row_out.iter().sum();
                assert!((total - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn layer_norm_matches_f64() {
        let h = 384;
        let xs: Vec<f32> = (0..h * 5)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0 + if i % 97 == 0 { 40.0 } else { 0.0 })
            .collect();
        let gamma: Vec<f32> = (0..h).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..h).map(|i| (i % 5) as f32 * 0.01 - 0.02).collect();
        let mut got = xs.clone();
        layer_norm_body(&mut got, h, &gamma, &beta, 1e-12);
        for (row_in, row_out) in xs.chunks(h).zip(got.chunks(h)) {
            let mean = row_in.iter().map(|&v| f64::from(v)).sum::<f64>() / h as f64;
            let var = row_in
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / h as f64;
            for (t, (&x, &y)) in row_in.iter().zip(row_out).enumerate() {
                let want = (f64::from(x) - mean) / (var + 1e-12).sqrt() * f64::from(gamma[t])
                    + f64::from(beta[t]);
                assert!(
                    (f64::from(y) - want).abs() < 2e-6 * want.abs().max(1.0),
                    "{y} vs {want}"
                );
            }
        }
    }

    #[test]
    fn every_table_is_bit_identical_to_scalar() {
        let xs = samples();
        for table in available() {
            let mut want = xs.clone();
            (SCALAR.gelu)(&mut want);
            let mut got = xs.clone();
            (table.gelu)(&mut got);
            assert_eq!(
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "gelu on {}",
                table.isa
            );
            let gamma: Vec<f32> = (0..100).map(|i| 1.0 + i as f32 * 0.01).collect();
            let beta: Vec<f32> = (0..100).map(|i| i as f32 * -0.001).collect();
            for h in [1usize, 17, 100] {
                let rows = xs[..h * 30].to_vec();
                let mut want = rows.clone();
                (SCALAR.layer_norm_rows)(&mut want, h, &gamma, &beta, 1e-5);
                let mut got = rows.clone();
                (table.layer_norm_rows)(&mut got, h, &gamma, &beta, 1e-5);
                assert_eq!(
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "layer norm h {h} on {}",
                    table.isa
                );
            }
            for len in [1usize, 5, 16, 33, 128] {
                let rows: Vec<f32> = xs[..len * 20].to_vec();
                let mut want = rows.clone();
                (SCALAR.softmax_rows)(&mut want, len, 0.3);
                let mut got = rows.clone();
                (table.softmax_rows)(&mut got, len, 0.3);
                assert_eq!(
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "softmax len {len} on {}",
                    table.isa
                );
            }
        }
    }
}
