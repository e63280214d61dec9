//! Block-quantized Linear weights kept quantized in memory, built from the layouts quantd
//! writes (compressed-tensors int8 and pack-quantized int4, GGUF Q8_0 / Q4_0 / Q4_1) and run
//! with the block kernels of [`crate::infer::kernels::blocks`].
//!
//! Every format becomes `value = d · q + mn` per 32-element block of a row:
//! - int8 per-channel / per-tensor, symmetric: `q` i8 with one scale per row
//!   ([`BlockCodes::I8Rows`], `d` = the `n` row scales, a per-tensor scale replicated), run by
//!   the per-row kernel (`gemm_blocks_i8_rows`: the row scale multiplies each output once);
//! - int8 per-channel / per-tensor, asymmetric (`q` i8, `d` = the row's scale in every block,
//!   `mn` = `-d · zero_point`),
//! - GGUF Q8_0 (`q` i8, `d` = the block's f16 scale),
//! - int4 group-wise (group 32, 64 or 128: every group covers whole blocks; `q` = the stored
//!   offset-binary nibble `q4 + 8`, `d` = the group scale, `mn = -(8 + zero_point) · d`),
//! - GGUF Q4_0 (`mn = -8 · d`) and Q4_1 (`d`, `mn` = the block's f16 scale and minimum).
//!
//! Nibbles are repacked into ggml's in-block order (byte `t` holds elements `t` and `t + 16`),
//! which the 4-bit kernels read. The codes are kept exactly; `d · q + mn` equals the format's own
//! dequantization (`(q - z) · s`, `(q - 8) · d`) up to one f32 rounding (tested below).

use std::mem::{offset_of, size_of};

use half::f16;

use crate::quant::ggml::{BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType};

use super::kernels::blocks::{gemm_blocks, BlockActs, BlockWeightsRef, QK};
use super::kernels::GemmKernels;

/// The codes of a block-quantized matrix.
#[derive(Debug, Clone)]
pub enum BlockCodes {
    /// One i8 per element, `n × k`.
    I8(Vec<i8>),
    /// One i8 per element, `n × k`, with one scale per row (`BlockMatrix::d` has `n` entries,
    /// `mn` is `None`): symmetric int8 per-channel weights.
    I8Rows(Vec<i8>),
    /// One nibble per element in `0..=15`, 16 bytes per block in ggml order.
    U4(Vec<u8>),
}

/// A Linear weight `[n, k]` (torch's `[out, in]`) in block form.
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    pub n: usize,
    pub k: usize,
    pub codes: BlockCodes,
    /// Per block, `n × k / 32`; per row (`n`) for [`BlockCodes::I8Rows`].
    pub d: Vec<f32>,
    /// Per block, `n × k / 32`; `None` = all zero (only for i8 codes).
    pub mn: Option<Vec<f32>>,
    /// What the weights were stored as (`int8`, `q8_0`, `int4`, `q4_0`, `q4_1`).
    pub stored_as: &'static str,
}

/// Why weights could not be put in block form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("the input width {k} is not a multiple of 32")]
    Width { k: usize },
    #[error("{what} has {got} values, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("int4 group size {group} is not a multiple of 32 dividing {k}")]
    Group { group: usize, k: usize },
}

fn expect_len(what: &'static str, got: usize, expected: usize) -> Result<(), MatrixError> {
    if got == expected {
        Ok(())
    } else {
        Err(MatrixError::Length {
            what,
            expected,
            got,
        })
    }
}

/// The little-endian f16 at `offset` of a block, as f32.
fn f16_at(block: &[u8], offset: usize) -> f32 {
    f16::from_le_bytes([block[offset], block[offset + 1]]).to_f32()
}

fn blocks_of(n: usize, k: usize) -> Result<usize, MatrixError> {
    if !k.is_multiple_of(QK) || k == 0 {
        return Err(MatrixError::Width { k });
    }
    Ok(n * (k / QK))
}

impl BlockMatrix {
    /// int8 `[n, k]` with one scale per row (or one for all) and optional zero points (one per
    /// scale): `value = (q - z) · s`. Without zero points the matrix keeps one scale per row
    /// ([`BlockCodes::I8Rows`]); with them, per-block scales and offsets ([`BlockCodes::I8`]).
    pub fn from_int8(
        q: &[i8],
        scales: &[f32],
        zero_points: &[i8],
        n: usize,
        k: usize,
    ) -> Result<Self, MatrixError> {
        let blocks = blocks_of(n, k)?;
        expect_len("the int8 weight", q.len(), n * k)?;
        if scales.len() != 1 {
            expect_len("weight_scale", scales.len(), n)?;
        }
        if !zero_points.is_empty() {
            expect_len("weight_zero_point", zero_points.len(), scales.len())?;
        }
        let row_scale = |row: usize| scales[if scales.len() == 1 { 0 } else { row }];
        if zero_points.is_empty() {
            return Ok(BlockMatrix {
                n,
                k,
                codes: BlockCodes::I8Rows(q.to_vec()),
                d: (0..n).map(row_scale).collect(),
                mn: None,
                stored_as: "int8",
            });
        }
        let per_row = k / QK;
        let mut d = Vec::with_capacity(blocks);
        let mut mn = Vec::with_capacity(if zero_points.is_empty() { 0 } else { blocks });
        for row in 0..n {
            let index = if scales.len() == 1 { 0 } else { row };
            d.extend(std::iter::repeat_n(scales[index], per_row));
            if let Some(&z) = zero_points.get(index) {
                mn.extend(std::iter::repeat_n(-scales[index] * f32::from(z), per_row));
            }
        }
        Ok(BlockMatrix {
            n,
            k,
            codes: BlockCodes::I8(q.to_vec()),
            d,
            mn: (!zero_points.is_empty()).then_some(mn),
            stored_as: "int8",
        })
    }

    /// compressed-tensors pack-quantized int4: `packed` is `weight_packed` as little-endian
    /// bytes (`[n, k / 8]` i32: column `c` at bits `4·(c % 8)` of word `c / 8`, i.e. byte `c / 2`,
    /// low nibble for even `c`), `scales` `[n, k / group]`, `zero_points` the unpacked zero
    /// points `[n, k / group]` in `-8..=7` (empty when symmetric).
    pub fn from_int4_packed(
        packed: &[u8],
        scales: &[f32],
        zero_points: &[i8],
        n: usize,
        k: usize,
        group: usize,
    ) -> Result<Self, MatrixError> {
        let blocks = blocks_of(n, k)?;
        if group == 0 || !group.is_multiple_of(QK) || !k.is_multiple_of(group) {
            return Err(MatrixError::Group { group, k });
        }
        expect_len("weight_packed (bytes)", packed.len(), n * k / 2)?;
        let groups = k / group;
        expect_len("weight_scale", scales.len(), n * groups)?;
        if !zero_points.is_empty() {
            expect_len("weight_zero_point", zero_points.len(), n * groups)?;
        }
        let mut codes = vec![0u8; n * k / 2];
        let mut d = Vec::with_capacity(blocks);
        let mut mn = Vec::with_capacity(blocks);
        for row in 0..n {
            let src = &packed[row * k / 2..(row + 1) * k / 2];
            let dst = &mut codes[row * k / 2..(row + 1) * k / 2];
            let nibble = |c: usize| (src[c / 2] >> (4 * (c % 2))) & 0xF;
            for b in 0..k / QK {
                for t in 0..QK / 2 {
                    let (lo, hi) = (nibble(b * QK + t), nibble(b * QK + t + QK / 2));
                    dst[b * QK / 2 + t] = lo | (hi << 4);
                }
                let g = row * groups + b * QK / group;
                let z = zero_points.get(g).map_or(0.0, |&z| f32::from(z));
                d.push(scales[g]);
                mn.push(-(8.0 + z) * scales[g]);
            }
        }
        Ok(BlockMatrix {
            n,
            k,
            codes: BlockCodes::U4(codes),
            d,
            mn: Some(mn),
            stored_as: "int4",
        })
    }

    /// GGUF blocks of `ty` in block form, or `None` for a type no block kernel runs (serving
    /// dequantizes those at load). Block sizes and field offsets come from the `#[repr(C)]`
    /// block structs of [`crate::quant::ggml`].
    pub fn from_ggml(
        ty: GgmlType,
        bytes: &[u8],
        n: usize,
        k: usize,
    ) -> Option<Result<Self, MatrixError>> {
        Some(match ty {
            GgmlType::Q8_0 => Self::from_q8_0(bytes, n, k),
            GgmlType::Q4_0 => Self::from_q4(bytes, n, k, false),
            GgmlType::Q4_1 => Self::from_q4(bytes, n, k, true),
            _ => return None,
        })
    }

    /// GGUF Q8_0 rows: `block_q8_0` (f16 `d`, 32 i8 `qs`).
    fn from_q8_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, MatrixError> {
        const SIZE: usize = size_of::<BlockQ8_0>();
        const QS: usize = offset_of!(BlockQ8_0, qs);
        let blocks = blocks_of(n, k)?;
        expect_len("the Q8_0 tensor (bytes)", bytes.len(), blocks * SIZE)?;
        let mut codes = Vec::with_capacity(n * k);
        let mut d = Vec::with_capacity(blocks);
        for block in bytes.chunks_exact(SIZE) {
            d.push(f16_at(block, offset_of!(BlockQ8_0, d)));
            codes.extend(block[QS..].iter().map(|&v| v as i8));
        }
        Ok(BlockMatrix {
            n,
            k,
            codes: BlockCodes::I8(codes),
            d,
            mn: None,
            stored_as: "q8_0",
        })
    }

    /// GGUF Q4_0 (`block_q4_0`: f16 `d`, 16 nibble bytes; `value = (q - 8) · d`) or Q4_1
    /// (`block_q4_1`: f16 `d`, f16 `m`, 16 nibble bytes; `value = q · d + m`).
    fn from_q4(bytes: &[u8], n: usize, k: usize, with_min: bool) -> Result<Self, MatrixError> {
        let blocks = blocks_of(n, k)?;
        let (size, qs) = if with_min {
            (size_of::<BlockQ4_1>(), offset_of!(BlockQ4_1, qs))
        } else {
            (size_of::<BlockQ4_0>(), offset_of!(BlockQ4_0, qs))
        };
        expect_len("the Q4 tensor (bytes)", bytes.len(), blocks * size)?;
        let mut codes = Vec::with_capacity(n * k / 2);
        let mut d = Vec::with_capacity(blocks);
        let mut mn = Vec::with_capacity(blocks);
        for block in bytes.chunks_exact(size) {
            // `d` leads both block types.
            let scale = f16_at(block, offset_of!(BlockQ4_0, d));
            d.push(scale);
            if with_min {
                mn.push(f16_at(block, offset_of!(BlockQ4_1, m)));
            } else {
                mn.push(-8.0 * scale);
            }
            codes.extend_from_slice(&block[qs..]);
        }
        Ok(BlockMatrix {
            n,
            k,
            codes: BlockCodes::U4(codes),
            d,
            mn: Some(mn),
            stored_as: if with_min { "q4_1" } else { "q4_0" },
        })
    }

    /// The kernels' view of the weights.
    pub fn weights(&self) -> BlockWeightsRef<'_> {
        match &self.codes {
            BlockCodes::I8(q) => BlockWeightsRef::I8 {
                q,
                d: &self.d,
                mn: self.mn.as_deref(),
            },
            BlockCodes::U4(q) => BlockWeightsRef::U4 {
                q,
                d: &self.d,
                mn: self.mn.as_deref().unwrap_or(&[]),
            },
            BlockCodes::I8Rows(q) => BlockWeightsRef::I8Rows { q, d_row: &self.d },
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        let codes = match &self.codes {
            BlockCodes::I8(q) | BlockCodes::I8Rows(q) => q.len(),
            BlockCodes::U4(q) => q.len(),
        };
        codes + 4 * self.d.len() + 4 * self.mn.as_ref().map_or(0, Vec::len)
    }

    /// The dequantized weights `[n, k]` (`d · q + mn`), for tests and fallbacks.
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.n * (self.k / QK);
        let per_row = (self.k / QK).max(1);
        let mut out = Vec::with_capacity(self.n * self.k);
        for block in 0..blocks {
            let d = match &self.codes {
                BlockCodes::I8Rows(_) => self.d[block / per_row],
                _ => self.d[block],
            };
            let mn = self.mn.as_ref().map_or(0.0, |mn| mn[block]);
            for t in 0..QK {
                let q = match &self.codes {
                    BlockCodes::I8(q) | BlockCodes::I8Rows(q) => f32::from(q[block * QK + t]),
                    BlockCodes::U4(q) => {
                        let byte = q[block * QK / 2 + t % (QK / 2)];
                        f32::from(if t < QK / 2 { byte & 0xF } else { byte >> 4 })
                    }
                };
                out.push(d * q + mn);
            }
        }
        out
    }

    /// `y[m × n] = x[m × k] · Wᵀ (+ bias)`, quantizing `x` per 32-element block (`acts` is
    /// scratch space, reusable across calls).
    pub fn linear(
        &self,
        kernels: &GemmKernels,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        acts: &mut BlockActs,
        y: &mut [f32],
    ) {
        self.linear_range(kernels, x, m, 0, self.n, bias, acts, y);
    }

    /// Output columns `j0..j1` only: `y[m × (j1 - j0)] = x · W[j0..j1]ᵀ (+ bias[j0..j1], given
    /// already sliced)`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_range(
        &self,
        kernels: &GemmKernels,
        x: &[f32],
        m: usize,
        j0: usize,
        j1: usize,
        bias: Option<&[f32]>,
        acts: &mut BlockActs,
        y: &mut [f32],
    ) {
        assert!(
            j0 <= j1 && j1 <= self.n,
            "BlockMatrix::linear_range: columns"
        );
        let n = j1 - j0;
        assert_eq!(x.len(), m * self.k, "BlockMatrix::linear: x");
        assert_eq!(y.len(), m * n, "BlockMatrix::linear: y");
        if m == 0 || n == 0 {
            return;
        }
        acts.quantize(kernels, x, m, self.k);
        gemm_blocks(kernels, acts, self.weights().rows(self.k, j0, j1), n, y, n);
        if let Some(bias) = bias {
            for row in y.chunks_exact_mut(n) {
                for (out, &b) in row.iter_mut().zip(bias) {
                    *out += b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::kernels;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every format's block form runs to within block-activation rounding of `x · Wᵀ` with the
    /// dequantized weights, on every kernel table.
    fn check_linear(matrix: &BlockMatrix, dequantized: &[f32]) {
        assert_eq!(matrix.dequantize(), dequantized, "exact conversion");
        let (n, k, m) = (matrix.n, matrix.k, 5);
        let x = values(m * k, 9);
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25).collect();
        for table in kernels::available() {
            let mut y = vec![0f32; m * n];
            let mut acts = BlockActs::new();
            matrix.linear(table, &x, m, Some(&bias), &mut acts, &mut y);
            // A column range gives the same columns.
            let (j0, j1) = (1.min(n), n);
            let mut part = vec![0f32; m * (j1 - j0)];
            matrix.linear_range(
                table,
                &x,
                m,
                j0,
                j1,
                Some(&bias[j0..j1]),
                &mut acts,
                &mut part,
            );
            for i in 0..m {
                for j in j0..j1 {
                    let (a, b) = (part[i * (j1 - j0) + j - j0], y[i * n + j]);
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "range {a} vs {b}");
                }
            }
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| f64::from(x[i * k + t]) * f64::from(dequantized[j * k + t]))
                        .sum::<f64>()
                        + f64::from(bias[j]);
                    let scale: f64 = (0..k)
                        .map(|t| {
                            (f64::from(x[i * k + t]) * f64::from(dequantized[j * k + t])).abs()
                        })
                        .sum();
                    // Activations are rounded to 1/254 of their block maximum.
                    assert!(
                        (f64::from(y[i * n + j]) - exact).abs() <= 0.01 * scale + 1e-6,
                        "{}: y[{i},{j}] = {} vs {exact}",
                        table.isa,
                        y[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn int8_per_channel_and_asymmetric() {
        let (n, k) = (3, 64);
        let q: Vec<i8> = (0..n * k).map(|i| ((i * 37) % 255) as i32 as i8).collect();
        let scales = [0.01f32, 0.02, 0.005];
        let matrix = BlockMatrix::from_int8(&q, &scales, &[], n, k).unwrap();
        let want: Vec<f32> = (0..n * k)
            .map(|i| scales[i / k] * f32::from(q[i]))
            .collect();
        check_linear(&matrix, &want);
        let zero_points = [3i8, -2, 0];
        let matrix = BlockMatrix::from_int8(&q, &scales, &zero_points, n, k).unwrap();
        let want: Vec<f32> = (0..n * k)
            .map(|i| {
                scales[i / k] * f32::from(q[i]) - scales[i / k] * f32::from(zero_points[i / k])
            })
            .collect();
        check_linear(&matrix, &want);
        assert!(matches!(
            BlockMatrix::from_int8(&q[..n * 48], &scales, &[], n, 48),
            Err(MatrixError::Width { k: 48 })
        ));
    }

    #[test]
    fn symmetric_int8_keeps_one_scale_per_row() {
        let (n, k) = (5, 96);
        let q: Vec<i8> = (0..n * k)
            .map(|i| match i % 7 {
                0 => -128,
                1 => 127,
                _ => ((i * 53) % 255) as i32 as i8,
            })
            .collect();
        let scales = [0.01f32, 0.02, 0.005, 0.5, 1e-4];
        let matrix = BlockMatrix::from_int8(&q, &scales, &[], n, k).unwrap();
        assert!(matches!(matrix.codes, BlockCodes::I8Rows(_)));
        assert_eq!(matrix.d, scales);
        assert!(matrix.mn.is_none());
        assert_eq!(matrix.memory_bytes(), n * k + 4 * n);
        match matrix.weights().rows(k, 1, 4) {
            BlockWeightsRef::I8Rows { q: rows, d_row } => {
                assert_eq!(rows, &q[k..4 * k]);
                assert_eq!(d_row, &scales[1..4]);
            }
            other => panic!("unexpected weights {other:?}"),
        }
        let want: Vec<f32> = (0..n * k)
            .map(|i| scales[i / k] * f32::from(q[i]))
            .collect();
        check_linear(&matrix, &want);
        // A per-tensor scale is replicated to every row.
        let matrix = BlockMatrix::from_int8(&q, &[0.03], &[], n, k).unwrap();
        assert_eq!(matrix.d, vec![0.03; n]);
        let want: Vec<f32> = q.iter().map(|&v| 0.03 * f32::from(v)).collect();
        check_linear(&matrix, &want);
        // Asymmetric weights keep the per-block form with offsets.
        let matrix = BlockMatrix::from_int8(&q, &[0.03], &[4], n, k).unwrap();
        assert!(matches!(matrix.codes, BlockCodes::I8(_)));
        assert_eq!(
            (matrix.d.len(), matrix.mn.as_ref().map(Vec::len)),
            (n * 3, Some(n * 3))
        );
        assert_eq!(matrix.memory_bytes(), n * k + 8 * n * 3);
        let want: Vec<f32> = q
            .iter()
            .map(|&v| 0.03 * f32::from(v) + (-0.03 * 4.0))
            .collect();
        check_linear(&matrix, &want);
    }

    #[test]
    fn int4_packed_matches_compressed_tensors_dequantization() {
        let (n, k, group) = (4, 128, 64);
        let nibbles: Vec<u8> = (0..n * k).map(|i| ((i * 7 + i / 5) % 16) as u8).collect();
        let packed: Vec<u8> = nibbles.chunks(2).map(|p| p[0] | (p[1] << 4)).collect();
        let scales: Vec<f32> = (0..n * k / group)
            .map(|g| 0.01 + g as f32 * 0.003)
            .collect();
        let zero_points: Vec<i8> = (0..n * k / group).map(|g| (g % 16) as i8 - 8).collect();
        for zps in [&[][..], &zero_points[..]] {
            let matrix = BlockMatrix::from_int4_packed(&packed, &scales, zps, n, k, group).unwrap();
            // compressed-tensors' own formula: x = (q - z) · s with q = nibble - 8; the block
            // form computes d · nibble + mn, equal up to one rounding.
            let got = matrix.dequantize();
            for (i, &value) in got.iter().enumerate() {
                let g = (i / k) * (k / group) + (i % k) / group;
                let z = zps.get(g).map_or(0.0, |&z| f32::from(z));
                let q = f32::from(nibbles[i]) - 8.0;
                let want = (q - z) * scales[g];
                assert!(
                    (value - want).abs() <= 2.0 * f32::EPSILON * (16.0 * scales[g]),
                    "{i}: {value} vs {want}"
                );
            }
            check_linear(&matrix, &got);
        }
    }

    #[test]
    fn ggml_blocks_decode_like_ggml() {
        use crate::quant::ggml;
        let (n, k) = (3, 96);
        let w = values(n * k, 4);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let quantizer = ggml::scalar().quantizer(ty).unwrap();
            let mut bytes = vec![0u8; ty.row_bytes(n * k).unwrap()];
            quantizer(&w, &mut bytes);
            let mut want = vec![0f32; n * k];
            ggml::dequantize(ty, &bytes, &mut want);
            let matrix = BlockMatrix::from_ggml(ty, &bytes, n, k).unwrap().unwrap();
            // ggml computes (q - 8) · d for Q4_0; the block form d · q + (-8 · d) can differ by
            // one rounding, so compare with a tolerance there and exactly elsewhere.
            let got = matrix.dequantize();
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{ty:?}: {a} vs {b}"
                );
            }
            check_linear(&matrix, &got);
        }
    }
}
