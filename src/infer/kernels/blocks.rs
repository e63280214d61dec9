//! Block-quantized GEMM: int8 activations quantized per 32-element block × weights kept in
//! their block-quantized form (llama.cpp style), for serving q8_0 / q4_0 / int8 / int4
//! artifacts without dequantizing them.
//!
//! Every block covers [`QK`] consecutive elements along `k` (so `k` must be a multiple of `QK`).
//! - Activations ([`GemmKernels::quantize_blocks`]): per row and block, scale
//!   `da = max |x| / 127` and codes `clamp(round_half_even(x / da), -127, 127)`, exactly as
//!   `quantize_rows_i8` does per row, plus the block sum of the codes `s = Σ codes`.
//! - Weights, `value = d · q + mn` per block (`d`, `mn`: one f32 each per block, row-major,
//!   `n` rows of `k / 32` blocks):
//!   - int8 blocks ([`GemmKernels::gemm_blocks_i8`]): `q` are i8 (`n × k`), `mn` optional
//!     (`None` means zero, the q8_0 / symmetric int8 case and the fast path);
//!   - 4-bit blocks ([`GemmKernels::gemm_blocks_u4`]): `q` in `0..=15`, two per byte, 16 bytes
//!     per block in ggml Q4_0 order (byte `t` holds element `t` in its low nibble and element
//!     `t + 16` in its high nibble); `mn` is always given (`-8·d` for Q4_0 and symmetric int4).
//! - Symmetric int8 weights with one scale per row ([`GemmKernels::gemm_blocks_i8_rows`],
//!   [`BlockWeightsRef::I8Rows`], the per-channel / per-tensor int8 case): `value = d_row[j] · q`
//!   with `d_row` of length `n` and no `mn`. Mathematically the int8 case above with
//!   `d[j,b] = d_row[j]` and `mn = None`, but computed as
//!   `y[i, j] = d_row[j] · Σ_b da[i,b] · isum(i,j,b)`: the per-block work loses a multiply.
//!
//! The GEMM computes, for every activation row `i` and weight row `j`,
//! `y[i, j] = Σ_b da[i,b] · (d[j,b] · isum(i,j,b) + mn[j,b] · s[i,b])` with
//! `isum = Σ_block a_code · q` an exact integer. The scalar twin
//! ([`scalar::gemm_blocks_i8`](super::scalar::gemm_blocks_i8)) defines the result: one f32
//! running sum over `b` in order, each term rounded as written. The SIMD versions compute the
//! same exact block integer sums but differ in float rounding and summation order (lane sums
//! scaled before they are added, the `mn` term summed separately): the difference is a small
//! multiple of `2^-24 · Σ_b |da| · (|d| · Σ_block |a_code · q| + |mn · s|)`.
//!
//! For per-row scales the scalar twin
//! ([`scalar::gemm_blocks_i8_rows`](super::scalar::gemm_blocks_i8_rows)) defines the result:
//! one f32 running sum over `b` in order of `da[i,b] · (isum as f32)` (one rounding per term,
//! one per addition), then one multiply by `d_row[j]`. The SIMD versions (FMA of the converted
//! lane sums with `da`, lanes reduced at the end) differ only in summation order and rounding:
//! by a small multiple of `2^-24 · |d_row[j]| · Σ_b |da| · Σ_block |a_code · q|`. It can differ
//! from `gemm_blocks_i8` with replicated scales by the same order of magnitude (there `d` is
//! applied per block).
//!
//! `y` has a row stride `ldy ≥ n`, so a caller can compute a range of output columns `j0..j1`
//! by passing the weight rows `j0..j1` ([`BlockWeightsRef::rows`]) and `&mut y[j0..]` with
//! `ldy` = the full width. Only `y[i * ldy + j]` for `i < m`, `j < n` is written (overwritten).

use super::{GemmF32Fn, GemmKernels};

/// Elements per quantization block along `k`.
pub const QK: usize = 32;

/// Block-quantized activations, borrowed: `m` rows of `k` codes, and per row `k / QK` block
/// scales and block code sums. What the `gemm_blocks_*` kernels read; usually obtained from
/// [`BlockActs::view`].
#[derive(Clone, Copy, Debug)]
pub struct BlockActsView<'a> {
    /// `m × k` codes, row-major.
    pub codes: &'a [i8],
    /// `m × (k / QK)` block scales `da`.
    pub scales: &'a [f32],
    /// `m × (k / QK)` block sums of the codes.
    pub sums: &'a [i32],
    /// Rows.
    pub m: usize,
    /// Elements per row, a multiple of [`QK`].
    pub k: usize,
}

/// `quantize_blocks(a, m, k, codes, scales, sums)`: see [`GemmKernels::quantize_blocks`].
pub type QuantizeBlocksFn =
    fn(a: &[f32], m: usize, k: usize, codes: &mut [i8], scales: &mut [f32], sums: &mut [i32]);
/// `gemm_blocks_i8(a, q, d, mn, n, y, ldy)`: see [`GemmKernels::gemm_blocks_i8`].
pub type GemmBlocksI8Fn = fn(
    a: BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
);
/// `gemm_blocks_u4(a, q, d, mn, n, y, ldy)`: see [`GemmKernels::gemm_blocks_u4`].
pub type GemmBlocksU4Fn =
    fn(a: BlockActsView<'_>, q: &[u8], d: &[f32], mn: &[f32], n: usize, y: &mut [f32], ldy: usize);
/// `gemm_blocks_i8_rows(a, q, d_row, n, y, ldy)`: see [`GemmKernels::gemm_blocks_i8_rows`].
pub type GemmBlocksI8RowsFn =
    fn(a: BlockActsView<'_>, q: &[i8], d_row: &[f32], n: usize, y: &mut [f32], ldy: usize);

/// Panics unless `k` is a multiple of [`QK`] and the buffers fit an `m × k` block
/// quantization; returns the number of blocks per row.
pub(crate) fn check_quantize_blocks_shapes(
    a_len: usize,
    codes_len: usize,
    scales_len: usize,
    sums_len: usize,
    m: usize,
    k: usize,
) -> usize {
    assert_eq!(k % QK, 0, "quantize_blocks: k is not a multiple of 32");
    let want = m.checked_mul(k).expect("quantize_blocks: m * k overflows");
    assert_eq!(a_len, want, "quantize_blocks: a.len() != m * k");
    assert_eq!(codes_len, want, "quantize_blocks: codes.len() != m * k");
    assert_eq!(
        scales_len,
        want / QK,
        "quantize_blocks: scales.len() != m * k / 32"
    );
    assert_eq!(
        sums_len,
        want / QK,
        "quantize_blocks: sums.len() != m * k / 32"
    );
    k / QK
}

/// Panics unless the operands fit a block GEMM of `a.m` activation rows × `n` weight rows
/// with `bytes_per_block` bytes of weight codes per block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_block_gemm_shapes(
    a: &BlockActsView<'_>,
    q_len: usize,
    bytes_per_block: usize,
    d_len: usize,
    mn_len: Option<usize>,
    n: usize,
    y_len: usize,
    ldy: usize,
) {
    let blocks = check_block_operands(a, q_len, bytes_per_block, n, y_len, ldy);
    assert_eq!(d_len, blocks, "gemm_blocks: d.len() != n * k / 32");
    if let Some(mn_len) = mn_len {
        assert_eq!(mn_len, blocks, "gemm_blocks: mn.len() != n * k / 32");
    }
}

/// Panics unless the operands fit a block GEMM of `a.m` activation rows × `n` int8 weight rows
/// with one scale per weight row (`d_row_len == n`).
pub(crate) fn check_block_gemm_rows_shapes(
    a: &BlockActsView<'_>,
    q_len: usize,
    d_row_len: usize,
    n: usize,
    y_len: usize,
    ldy: usize,
) {
    check_block_operands(a, q_len, QK, n, y_len, ldy);
    assert_eq!(d_row_len, n, "gemm_blocks_i8_rows: d_row.len() != n");
}

/// The checks shared by the block GEMMs (activations, codes, `y`); returns `n · k / 32`.
fn check_block_operands(
    a: &BlockActsView<'_>,
    q_len: usize,
    bytes_per_block: usize,
    n: usize,
    y_len: usize,
    ldy: usize,
) -> usize {
    check_quantize_blocks_shapes(
        a.codes.len(),
        a.codes.len(),
        a.scales.len(),
        a.sums.len(),
        a.m,
        a.k,
    );
    let blocks = n
        .checked_mul(a.k / QK)
        .expect("gemm_blocks: n * k overflows");
    let q_want = blocks
        .checked_mul(bytes_per_block)
        .expect("gemm_blocks: n * k overflows");
    assert_eq!(q_len, q_want, "gemm_blocks: q.len() does not match n × k");
    if a.m > 0 && n > 0 {
        assert!(ldy >= n, "gemm_blocks: ldy < n");
        let y_want = (a.m - 1)
            .checked_mul(ldy)
            .and_then(|x| x.checked_add(n))
            .expect("gemm_blocks: y extent overflows");
        assert!(
            y_len >= y_want,
            "gemm_blocks: y is shorter than (m - 1) * ldy + n"
        );
    }
    blocks
}

/// The prologue of every SIMD `gemm_blocks_i8` / `gemm_blocks_u4` wrapper: panics unless the
/// operands fit ([`check_block_gemm_shapes`]), then writes the `mn` term into `y`
/// ([`init_min_term`]), to which the kernel adds the `d · isum` term.
#[allow(clippy::too_many_arguments)]
pub(crate) fn begin_block_gemm(
    gemm_f32: GemmF32Fn,
    a: &BlockActsView<'_>,
    (q_len, bytes_per_block): (usize, usize),
    d_len: usize,
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    check_block_gemm_shapes(
        a,
        q_len,
        bytes_per_block,
        d_len,
        mn.map(<[f32]>::len),
        n,
        y.len(),
        ldy,
    );
    init_min_term(gemm_f32, a, mn, n, y, ldy);
}

/// The prologue of every SIMD `gemm_blocks_i8_rows` wrapper: panics unless the operands fit
/// ([`check_block_gemm_rows_shapes`]), then zeroes the outputs the kernel adds into.
pub(crate) fn begin_block_gemm_rows(
    a: &BlockActsView<'_>,
    q_len: usize,
    d_row_len: usize,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    check_block_gemm_rows_shapes(a, q_len, d_row_len, n, y.len(), ldy);
    zero_outputs(a.m, n, y, ldy);
}

/// Zeroes `y[i * ldy + j]` for `i < m`, `j < n`.
fn zero_outputs(m: usize, n: usize, y: &mut [f32], ldy: usize) {
    if m > 0 && n > 0 {
        y.chunks_mut(ldy).take(m).for_each(|row| row[..n].fill(0.0));
    }
}

/// Sets `y[i, j] = Σ_b mn[j,b] · (da[i,b] · s[i,b])` (zero if `mn` is `None`) with the given
/// f32 GEMM: the `mn` term of the SIMD block GEMMs, which then add the `d · isum` term. The
/// shapes must have been checked with [`check_block_gemm_shapes`].
pub(crate) fn init_min_term(
    gemm_f32: GemmF32Fn,
    a: &BlockActsView<'_>,
    mn: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let (m, nb) = (a.m, a.k / QK);
    if m == 0 || n == 0 {
        return;
    }
    match mn {
        None => zero_outputs(m, n, y, ldy),
        Some(mn) => {
            let y_rows = y.chunks_mut(ldy).take(m);
            let scaled_sums: Vec<f32> = a
                .scales
                .iter()
                .zip(a.sums)
                .map(|(&scale, &sum)| scale * sum as f32)
                .collect();
            let mut terms = vec![0.0; m * n];
            gemm_f32(&scaled_sums, mn, m, n, nb, &mut terms);
            for (row, terms_row) in y_rows.zip(terms.chunks_exact(n)) {
                row[..n].copy_from_slice(terms_row);
            }
        }
    }
}

/// Block-quantized activations with owned buffers, reused across [`BlockActs::quantize`]
/// calls (they only grow).
#[derive(Clone, Debug, Default)]
pub struct BlockActs {
    codes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    m: usize,
    k: usize,
}

impl BlockActs {
    /// Empty activations (`m = k = 0`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `a` (`m × k`, `k` a multiple of [`QK`]) with `kernels.quantize_blocks`,
    /// replacing the previous contents. Panics if `a.len() != m * k` or `k % 32 != 0`.
    pub fn quantize(&mut self, kernels: &GemmKernels, a: &[f32], m: usize, k: usize) {
        assert_eq!(k % QK, 0, "BlockActs::quantize: k is not a multiple of 32");
        let len = m
            .checked_mul(k)
            .expect("BlockActs::quantize: m * k overflows");
        self.codes.resize(len, 0);
        self.scales.resize(len / QK, 0.0);
        self.sums.resize(len / QK, 0);
        (self.m, self.k) = (m, k);
        (kernels.quantize_blocks)(a, m, k, &mut self.codes, &mut self.scales, &mut self.sums);
    }

    /// The quantized rows, as the `gemm_blocks_*` kernels take them.
    pub fn view(&self) -> BlockActsView<'_> {
        BlockActsView {
            codes: &self.codes,
            scales: &self.scales,
            sums: &self.sums,
            m: self.m,
            k: self.k,
        }
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Elements per row.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Borrowed block-quantized weights, `n` rows of `k / QK` blocks (see the module docs).
#[derive(Clone, Copy, Debug)]
pub enum BlockWeightsRef<'a> {
    /// int8 codes (`n × k`), scales `d` and optional offsets `mn` (`n × k / 32` each).
    I8 {
        /// Codes, any i8.
        q: &'a [i8],
        /// Block scales.
        d: &'a [f32],
        /// Block offsets; `None` means zero.
        mn: Option<&'a [f32]>,
    },
    /// 4-bit codes in ggml Q4_0 order (`n × k / 2` bytes), scales `d` and offsets `mn`.
    U4 {
        /// Packed nibbles, 16 bytes per block.
        q: &'a [u8],
        /// Block scales.
        d: &'a [f32],
        /// Block offsets (`-8·d` for Q4_0).
        mn: &'a [f32],
    },
    /// Symmetric int8 codes (`n × k`) with one scale per weight row (`d_row`, `n` entries):
    /// `value = d_row[j] · q`, int8 per-channel (or per-tensor, replicated) weights. Runs with
    /// [`GemmKernels::gemm_blocks_i8_rows`].
    I8Rows {
        /// Codes, any i8.
        q: &'a [i8],
        /// Row scales.
        d_row: &'a [f32],
    },
}

impl<'a> BlockWeightsRef<'a> {
    /// The weight rows `j0..j1` of rows with `k` elements. Panics if the range or `k` does not
    /// fit the slices.
    pub fn rows(&self, k: usize, j0: usize, j1: usize) -> Self {
        assert_eq!(
            k % QK,
            0,
            "BlockWeightsRef::rows: k is not a multiple of 32"
        );
        assert!(j0 <= j1, "BlockWeightsRef::rows: j0 > j1");
        let nb = k / QK;
        let blocks = j0 * nb..j1 * nb;
        match *self {
            Self::I8 { q, d, mn } => Self::I8 {
                q: &q[j0 * k..j1 * k],
                d: &d[blocks.clone()],
                mn: mn.map(|mn| &mn[blocks]),
            },
            Self::U4 { q, d, mn } => Self::U4 {
                q: &q[j0 * k / 2..j1 * k / 2],
                d: &d[blocks.clone()],
                mn: &mn[blocks],
            },
            Self::I8Rows { q, d_row } => Self::I8Rows {
                q: &q[j0 * k..j1 * k],
                d_row: &d_row[j0..j1],
            },
        }
    }
}

/// `y[i, j] = Σ_b da[i,b] · (d[j,b] · isum + mn[j,b] · s[i,b])` for the `n_rows` weight rows
/// of `w` and every row of `acts`, with `kernels.gemm_blocks_i8` or `gemm_blocks_u4`
/// (`y[i, j] = d_row[j] · Σ_b da[i,b] · isum` with `gemm_blocks_i8_rows` for
/// [`BlockWeightsRef::I8Rows`]). `y` has row stride `ldy` and is overwritten (see the module
/// docs). Panics if the shapes do not match.
pub fn gemm_blocks(
    kernels: &GemmKernels,
    acts: &BlockActs,
    w: BlockWeightsRef<'_>,
    n_rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    match w {
        BlockWeightsRef::I8 { q, d, mn } => {
            (kernels.gemm_blocks_i8)(acts.view(), q, d, mn, n_rows, y, ldy)
        }
        BlockWeightsRef::U4 { q, d, mn } => {
            (kernels.gemm_blocks_u4)(acts.view(), q, d, mn, n_rows, y, ldy)
        }
        BlockWeightsRef::I8Rows { q, d_row } => {
            (kernels.gemm_blocks_i8_rows)(acts.view(), q, d_row, n_rows, y, ldy)
        }
    }
}
