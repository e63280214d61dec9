//! Quality figures of one quantized tensor, derived from the fused [`ErrorStats`].
//!
//! The kernels only accumulate sums; this module owns the formulas and their edge cases (empty
//! tensors, all-zero tensors, exact reconstructions), so every report computes them alike.

use crate::quant::kernels::ErrorStats;

/// How close the dequantized tensor is to the original.
///
/// Definitions, with `x` the original, `deq` the dequantized values and `err = deq - x`:
/// - `mse = Σ err² / n`;
/// - `sqnr_db = 10 · log10(Σ x² / Σ err²)`: `f64::INFINITY` when the reconstruction is exact
///   (including all-zero and empty tensors); the caller decides how to serialize it;
/// - `max_abs_err = max |err|`;
/// - `cosine = Σ x·deq / sqrt(Σ x² · Σ deq²)`, clamped to [-1, 1]: 1.0 when both tensors are
///   all zero, 0.0 when exactly one is;
/// - `rel_rmse = sqrt(Σ err² / Σ x²)`: 0.0 for an exact reconstruction, `f64::INFINITY` when the
///   original is all zero but the reconstruction is not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorMetrics {
    pub mse: f64,
    pub sqnr_db: f64,
    pub max_abs_err: f32,
    pub cosine: f64,
    pub rel_rmse: f64,
}

impl From<&ErrorStats> for TensorMetrics {
    fn from(stats: &ErrorStats) -> Self {
        let exact = stats.sum_sq_err == 0.0;
        let mse = if stats.n == 0 {
            0.0
        } else {
            stats.sum_sq_err / stats.n as f64
        };
        // An exact reconstruction has infinite SQNR whatever the signal, even a zero one.
        let sqnr_db = if exact {
            f64::INFINITY
        } else {
            10.0 * (stats.sum_sq_ref / stats.sum_sq_err).log10()
        };
        let cosine = match (stats.sum_sq_ref == 0.0, stats.sum_sq_deq == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            // Rounding can push the ratio a hair past ±1 for near-identical tensors.
            (false, false) => {
                (stats.dot / (stats.sum_sq_ref * stats.sum_sq_deq).sqrt()).clamp(-1.0, 1.0)
            }
        };
        let rel_rmse = if exact {
            0.0
        } else if stats.sum_sq_ref == 0.0 {
            f64::INFINITY
        } else {
            (stats.sum_sq_err / stats.sum_sq_ref).sqrt()
        };
        TensorMetrics {
            mse,
            sqnr_db,
            max_abs_err: stats.max_abs_err,
            cosine,
            rel_rmse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics of `original` against `dequantized`, summed directly in f64.
    fn stats_of(original: &[f32], dequantized: &[f32]) -> ErrorStats {
        let mut stats = ErrorStats {
            n: original.len() as u64,
            ..ErrorStats::default()
        };
        for (&x, &deq) in original.iter().zip(dequantized) {
            let err = deq - x;
            stats.sum_sq_err += f64::from(err * err);
            stats.sum_sq_ref += f64::from(x * x);
            stats.sum_sq_deq += f64::from(deq * deq);
            stats.dot += f64::from(x * deq);
            stats.max_abs_err = stats.max_abs_err.max(err.abs());
        }
        stats
    }

    #[test]
    fn empty_tensor_is_a_perfect_reconstruction() {
        let metrics = TensorMetrics::from(&ErrorStats::default());
        assert_eq!(metrics.mse, 0.0);
        assert_eq!(metrics.sqnr_db, f64::INFINITY);
        assert_eq!(metrics.cosine, 1.0);
        assert_eq!(metrics.rel_rmse, 0.0);
        assert_eq!(metrics.max_abs_err, 0.0);
    }

    #[test]
    fn all_zero_tensor_reconstructed_exactly() {
        let zeros = [0.0f32; 8];
        let metrics = TensorMetrics::from(&stats_of(&zeros, &zeros));
        assert_eq!(metrics.sqnr_db, f64::INFINITY);
        assert_eq!(metrics.cosine, 1.0);
        assert_eq!(metrics.rel_rmse, 0.0);
    }

    #[test]
    fn zero_original_with_nonzero_reconstruction() {
        let metrics = TensorMetrics::from(&stats_of(&[0.0, 0.0], &[1.0, 0.0]));
        assert_eq!(metrics.mse, 0.5);
        assert_eq!(metrics.sqnr_db, f64::NEG_INFINITY);
        assert_eq!(metrics.cosine, 0.0);
        assert_eq!(metrics.rel_rmse, f64::INFINITY);
    }

    #[test]
    fn nonzero_original_with_zero_reconstruction() {
        let metrics = TensorMetrics::from(&stats_of(&[3.0, 4.0], &[0.0, 0.0]));
        assert_eq!(metrics.mse, 12.5);
        assert_eq!(metrics.sqnr_db, 0.0);
        assert_eq!(metrics.cosine, 0.0);
        assert_eq!(metrics.rel_rmse, 1.0);
        assert_eq!(metrics.max_abs_err, 4.0);
    }

    #[test]
    fn known_values() {
        // err = (0.1, -0.1): Σ err² = 0.02 (in f32 steps), Σ x² = 2.
        let original = [1.0f32, -1.0];
        let dequantized = [1.1f32, -1.1];
        let metrics = TensorMetrics::from(&stats_of(&original, &dequantized));
        let err = f64::from(1.1f32 - 1.0);
        assert!((metrics.mse - err * err).abs() < 1e-6 * err * err);
        let expected_sqnr = 10.0 * (2.0 / (2.0 * err * err)).log10();
        assert!((metrics.sqnr_db - expected_sqnr).abs() < 1e-5);
        assert!((metrics.sqnr_db - 20.0).abs() < 1e-3);
        // Scaled copies point the same way.
        assert_eq!(metrics.cosine, 1.0);
        assert!((metrics.rel_rmse - 0.1).abs() < 1e-6);
    }

    #[test]
    fn opposite_tensors_have_cosine_minus_one() {
        let metrics = TensorMetrics::from(&stats_of(&[1.0, 2.0], &[-1.0, -2.0]));
        assert_eq!(metrics.cosine, -1.0);
        assert!((metrics.rel_rmse - 2.0).abs() < 1e-12);
    }

    #[test]
    fn exact_reconstruction_of_nonzero_tensor() {
        let values = [0.5f32, -2.0, 8.0];
        let metrics = TensorMetrics::from(&stats_of(&values, &values));
        assert_eq!(metrics.mse, 0.0);
        assert_eq!(metrics.sqnr_db, f64::INFINITY);
        assert_eq!(metrics.cosine, 1.0);
        assert_eq!(metrics.rel_rmse, 0.0);
    }
}

/// Error statistics of `approx` against `reference` (same length), for schemes whose kernels do
/// not fuse them (block formats: quantize, dequantize a chunk, compare).
///
/// Sums run in 16 independent f32 lanes over blocks of at most 1024 elements (so the compiler
/// vectorizes them) and are folded into f64 per block, which keeps the relative error of each
/// sum near f32 epsilon whatever the tensor size.
pub fn compare(reference: &[f32], approx: &[f32]) -> ErrorStats {
    assert_eq!(reference.len(), approx.len(), "compare: lengths differ");
    const LANES: usize = 16;
    const BLOCK: usize = 1024;
    let mut stats = ErrorStats {
        n: reference.len() as u64,
        ..ErrorStats::default()
    };
    for (ref_block, approx_block) in reference.chunks(BLOCK).zip(approx.chunks(BLOCK)) {
        let mut sq_err = [0f32; LANES];
        let mut sq_ref = [0f32; LANES];
        let mut sq_deq = [0f32; LANES];
        let mut dot = [0f32; LANES];
        let mut max_err = [0f32; LANES];
        let mut ref_chunks = ref_block.chunks_exact(LANES);
        let mut approx_chunks = approx_block.chunks_exact(LANES);
        for (r, a) in (&mut ref_chunks).zip(&mut approx_chunks) {
            for lane in 0..LANES {
                let err = a[lane] - r[lane];
                sq_err[lane] += err * err;
                sq_ref[lane] += r[lane] * r[lane];
                sq_deq[lane] += a[lane] * a[lane];
                dot[lane] += r[lane] * a[lane];
                max_err[lane] = max_err[lane].max(err.abs());
            }
        }
        for (lane, (&r, &a)) in ref_chunks
            .remainder()
            .iter()
            .zip(approx_chunks.remainder())
            .enumerate()
        {
            let err = a - r;
            sq_err[lane] += err * err;
            sq_ref[lane] += r * r;
            sq_deq[lane] += a * a;
            dot[lane] += r * a;
            max_err[lane] = max_err[lane].max(err.abs());
        }
        let fold = |lanes: &[f32; LANES]| lanes.iter().map(|&v| f64::from(v)).sum::<f64>();
        stats.sum_sq_err += fold(&sq_err);
        stats.sum_sq_ref += fold(&sq_ref);
        stats.sum_sq_deq += fold(&sq_deq);
        stats.dot += fold(&dot);
        stats.max_abs_err = max_err.iter().fold(stats.max_abs_err, |m, &v| m.max(v));
    }
    stats
}

#[cfg(test)]
mod compare_tests {
    use super::*;

    #[test]
    fn compare_matches_a_plain_f64_computation() {
        let reference: Vec<f32> = (0..5000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let approx: Vec<f32> = reference
            .iter()
            .enumerate()
            .map(|(i, v)| v + ((i % 7) as f32 - 3.0) * 1e-3)
            .collect();
        let stats = compare(&reference, &approx);
        let exact_err: f64 = reference
            .iter()
            .zip(&approx)
            .map(|(r, a)| (f64::from(*a) - f64::from(*r)).powi(2))
            .sum();
        let exact_dot: f64 = reference
            .iter()
            .zip(&approx)
            .map(|(r, a)| f64::from(*a) * f64::from(*r))
            .sum();
        assert_eq!(stats.n, 5000);
        assert!((stats.sum_sq_err - exact_err).abs() / exact_err < 1e-3);
        assert!((stats.dot - exact_dot).abs() / exact_dot < 1e-5);
        assert!((stats.max_abs_err - 3e-3).abs() < 1e-5);
        let metrics = TensorMetrics::from(&stats);
        assert!(metrics.cosine > 0.9999 && metrics.sqnr_db > 40.0);
        assert_eq!(compare(&[], &[]).n, 0);
    }
}
