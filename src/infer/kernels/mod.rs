//! Run-time dispatched matrix kernels for inference: f32 GEMM, dynamic int8 quantization of
//! activations, exact int8 × int8 → i32 GEMM, and GEMMs of block-quantized activations with
//! block-quantized (q8_0 / q4_0-style) weights (see [`blocks`]).
//!
//! Every matrix is row-major. Weights are stored `[out, in]` as torch saves `Linear` weights, so
//! every GEMM here computes `c = a · bᵀ`: both operands are read along contiguous rows of `k`.
//!
//! A [`GemmKernels`] value is a table of plain function pointers for one instruction set. The
//! service picks it once with [`select`] (as part of `crate::dispatch::Dispatch`, with every
//! other kernel table) and passes the `&'static GemmKernels` to every job; the
//! kernels never detect features, spawn threads or do I/O (the caller splits work across its
//! worker pool, e.g. by ranges of output rows or of weight rows). Scratch memory: the
//! dot-product GEMMs copy an activation block per call (at most `m × k` elements); the AVX-512
//! f32 GEMM's packed path (m ≥ 48) packs weight panels into a per-thread buffer reused across
//! calls.
//!
//! The scalar versions in [`scalar`](mod@scalar) define every result:
//! - `gemm_i8_i32` is an exact integer sum, so every ISA returns identical values;
//! - `quantize_rows_i8` is bit-identical across ISAs (exact absolute maximum, IEEE division,
//!   round-half-even);
//! - `gemm_f32` differs across ISAs by summation order and FMA contraction only (about 1e-6
//!   relative to `Σ |a·b|` for the sizes in use);
//! - `quantize_blocks` is bit-identical across ISAs (the per-row conventions, per block);
//! - `gemm_blocks_i8` / `gemm_blocks_u4` / `gemm_blocks_i8_rows` use exact integer block sums
//!   on every ISA and differ only in float rounding and summation order (see [`blocks`]).
//!
//! Safety model (as in `crate::quant::kernels`): the SIMD functions are `unsafe fn`s compiled
//! with `#[target_feature]`. Safe wrappers live only inside private static tables, and [`select`]
//! hands a SIMD table out only after run-time detection confirmed the features. Holding a
//! `&GemmKernels` is the proof that its functions may run on this CPU.

pub mod blocks;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod blocks_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::quant::kernels::{Isa, KernelChoice};

pub use blocks::{
    gemm_blocks, BlockActs, BlockActsView, BlockWeightsRef, GemmBlocksI8Fn, GemmBlocksI8RowsFn,
    GemmBlocksU4Fn, QuantizeBlocksFn, QK,
};

/// Largest value of a symmetric int8 code; codes are in `-127..=127`.
pub const I8_MAX_CODE: f32 = 127.0;

/// `gemm_f32(a, b, m, n, k, c)`: see [`GemmKernels::gemm_f32`].
pub type GemmF32Fn = fn(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]);
/// `quantize_rows_i8(a, m, k, q, scales)`: see [`GemmKernels::quantize_rows_i8`].
pub type QuantizeRowsI8Fn = fn(a: &[f32], m: usize, k: usize, q: &mut [i8], scales: &mut [f32]);
/// `gemm_i8_i32(a_q, w_q, m, n, k, acc)`: see [`GemmKernels::gemm_i8_i32`].
pub type GemmI8I32Fn = fn(a_q: &[i8], w_q: &[i8], m: usize, n: usize, k: usize, acc: &mut [i32]);

/// The instruction set a [`GemmKernels`] table is written for: the quantization ISAs plus
/// AVX-512 VNNI, which only the integer GEMMs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmIsa {
    /// Portable Rust, always available; the reference.
    Scalar,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512 F + BW.
    Avx512,
    /// x86_64 AVX-512 F + BW + VL + VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl GemmIsa {
    /// The lower-case name shown in logs and on `/api/v1/info`.
    pub fn name(self) -> &'static str {
        match self {
            GemmIsa::Scalar => "scalar",
            GemmIsa::Avx2 => "avx2",
            GemmIsa::Avx512 => "avx512",
            GemmIsa::Avx512Vnni => "avx512vnni",
        }
    }

    /// The `QUANTD_KERNELS` instruction set this table belongs to (VNNI is an AVX-512 table).
    pub fn family(self) -> Isa {
        match self {
            GemmIsa::Scalar => Isa::Scalar,
            GemmIsa::Avx2 => Isa::Avx2,
            GemmIsa::Avx512 | GemmIsa::Avx512Vnni => Isa::Avx512,
        }
    }
}

impl fmt::Display for GemmIsa {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A table of matrix kernels for one ISA, chosen once with [`select`].
///
/// Shapes are checked with `assert!` (a mismatch panics): `a.len() == m * k`,
/// `b.len() == n * k`, `c.len() == m * n` and so on for every function.
pub struct GemmKernels {
    /// The instruction set the table runs.
    pub isa: GemmIsa,
    /// `c[m×n] = a[m×k] · bᵀ` where `b` is `[n×k]`; f32 accumulation (SIMD versions use FMA and
    /// a different summation order). `c` is overwritten; `k == 0` gives zeros.
    pub gemm_f32: GemmF32Fn,
    /// Dynamic per-row symmetric int8 quantization: `scales[i] = max |a_i| / 127` and
    /// `q = clamp(round_half_even(a / scales[i]), -127, 127)`. A row whose scale is 0 (all
    /// zeros, or a maximum so tiny that the division underflows) gets scale 0 and all-zero
    /// codes. Requires finite input; for NaN or ±Inf the codes are unspecified (in range).
    pub quantize_rows_i8: QuantizeRowsI8Fn,
    /// `acc[m×n] = Σ_k a_q[i,k] · w_q[j,k]` in i32: exact and identical across ISAs for any
    /// i8 values (including -128) as long as `k < 2^17` (no i32 overflow possible below that).
    pub gemm_i8_i32: GemmI8I32Fn,
    /// Per-block symmetric int8 quantization of activations ([`blocks`]): for every row and
    /// 32-element block, `scales[b] = max |x| / 127`, codes as `quantize_rows_i8` (all zero for
    /// a zero scale) and `sums[b] = Σ codes`. `k` must be a multiple of 32; `codes` is `m × k`,
    /// `scales` and `sums` are `m × k / 32`. Bit-identical across ISAs.
    pub quantize_blocks: QuantizeBlocksFn,
    /// `y[i·ldy + j] = Σ_b da[i,b] · (d[j,b] · Σ a_code·q + mn[j,b] · s[i,b])` for `n` weight
    /// rows of int8 block codes `q` (`n × k`, any i8), block scales `d` and optional block
    /// offsets `mn` (`n × k / 32`; `None` = 0). Activation codes must be in `-127..=127` (as
    /// `quantize_blocks` makes them); the block integer sums are then exact on every ISA. `y`
    /// is overwritten at `i < m`, `j < n` only; `ldy >= n`. See [`blocks`] for the rounding.
    pub gemm_blocks_i8: GemmBlocksI8Fn,
    /// As `gemm_blocks_i8` for 4-bit block codes `q` in `0..=15`, packed in ggml Q4_0 order
    /// (`n × k / 2` bytes), with block offsets `mn` always given (`-8·d` for Q4_0).
    pub gemm_blocks_u4: GemmBlocksU4Fn,
    /// `y[i·ldy + j] = d_row[j] · Σ_b da[i,b] · Σ a_code·q` for `n` weight rows of symmetric
    /// int8 codes `q` (`n × k`, any i8) with one scale per row (`d_row`, `n` entries; no `mn`):
    /// int8 per-channel weights, `gemm_blocks_i8` with `d[j,b] = d_row[j]` and `mn = None` but
    /// with the scale applied once per output instead of once per block. The scalar twin
    /// defines the result: one f32 running sum over the blocks in order of
    /// `da[i,b] · (isum as f32)`, then `× d_row[j]`; SIMD versions differ in summation order
    /// and rounding only (see [`blocks`]). Activation codes must be in `-127..=127`; `y` is
    /// overwritten at `i < m`, `j < n` only; `ldy >= n`.
    pub gemm_blocks_i8_rows: GemmBlocksI8RowsFn,
}

impl fmt::Debug for GemmKernels {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GemmKernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

static SCALAR: GemmKernels = GemmKernels {
    isa: GemmIsa::Scalar,
    gemm_f32: scalar::gemm_f32,
    quantize_rows_i8: scalar::quantize_rows_i8,
    gemm_i8_i32: scalar::gemm_i8_i32,
    quantize_blocks: scalar::quantize_blocks,
    gemm_blocks_i8: scalar::gemm_blocks_i8,
    gemm_blocks_u4: scalar::gemm_blocks_u4,
    gemm_blocks_i8_rows: scalar::gemm_blocks_i8_rows,
};

/// The portable reference table; always available.
pub fn scalar() -> &'static GemmKernels {
    &SCALAR
}

/// Every table this CPU can run, scalar first and the best last.
pub fn available() -> Vec<&'static GemmKernels> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut tables = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if x86_64::avx2_supported() {
            tables.push(&x86_64::AVX2);
        }
        if x86_64::avx512_supported() {
            tables.push(&x86_64::AVX512);
        }
        if x86_64::avx512_vnni_supported() {
            tables.push(&x86_64::AVX512_VNNI);
        }
    }
    tables
}

/// The fastest table for this CPU (detected at run time).
pub fn best() -> &'static GemmKernels {
    available().last().copied().unwrap_or(&SCALAR)
}

/// The table for a `QUANTD_KERNELS` choice: `Auto` the best this CPU runs, `Scalar` the
/// reference, an ISA the best table of that family (AVX-512 VNNI for `avx512` where the CPU
/// has it). A family this CPU (or this module: NEON) has no table for gives the best table;
/// `crate::dispatch` refuses ISAs the CPU lacks before it asks.
pub fn select(choice: KernelChoice) -> &'static GemmKernels {
    let family = match choice {
        KernelChoice::Auto => return best(),
        KernelChoice::Scalar => Isa::Scalar,
        KernelChoice::Avx2 => Isa::Avx2,
        KernelChoice::Avx512 => Isa::Avx512,
        KernelChoice::Neon => Isa::Neon,
    };
    available()
        .into_iter()
        .rfind(|table| table.isa.family() == family)
        .unwrap_or_else(best)
}

/// Panics unless the operands of a `c[m×n] = a[m×k] · bᵀ` GEMM have exactly these lengths.
/// Every kernel calls it first; the SIMD kernels rely on it for their pointer arithmetic.
pub(crate) fn check_gemm_shapes(
    a_len: usize,
    b_len: usize,
    c_len: usize,
    m: usize,
    n: usize,
    k: usize,
) {
    let a_want = m.checked_mul(k).expect("gemm: m * k overflows");
    let b_want = n.checked_mul(k).expect("gemm: n * k overflows");
    let c_want = m.checked_mul(n).expect("gemm: m * n overflows");
    assert_eq!(a_len, a_want, "gemm: a.len() != m * k");
    assert_eq!(b_len, b_want, "gemm: b.len() != n * k");
    assert_eq!(c_len, c_want, "gemm: c.len() != m * n");
}

/// Panics unless `a`, `q` and `scales` fit an `m × k` per-row quantization.
pub(crate) fn check_quantize_shapes(
    a_len: usize,
    q_len: usize,
    scales_len: usize,
    m: usize,
    k: usize,
) {
    let want = m.checked_mul(k).expect("quantize_rows_i8: m * k overflows");
    assert_eq!(a_len, want, "quantize_rows_i8: a.len() != m * k");
    assert_eq!(q_len, want, "quantize_rows_i8: q.len() != m * k");
    assert_eq!(scales_len, m, "quantize_rows_i8: scales.len() != m");
}

/// `y[m×n] = a[m×kdim] · wᵀ (+ bias)` with int8 weights `w_q[n×kdim]` (per-row scales
/// `w_scales[n]`) and activations quantized on the fly per row.
///
/// `y[i,j] = acc[i,j] as f32 · (a_scale[i] · w_scale[j]) + bias[j]`, with `acc` the exact
/// integer GEMM. The scratch vectors are resized as needed and can be reused across calls to
/// avoid allocations. Panics if the lengths do not match the shapes.
#[allow(clippy::too_many_arguments)]
pub fn linear_i8(
    k: &GemmKernels,
    a: &[f32],
    m: usize,
    kdim: usize,
    w_q: &[i8],
    w_scales: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    scratch_q: &mut Vec<i8>,
    scratch_scales: &mut Vec<f32>,
    scratch_acc: &mut Vec<i32>,
    y: &mut [f32],
) {
    check_gemm_shapes(a.len(), w_q.len(), y.len(), m, n, kdim);
    assert_eq!(w_scales.len(), n, "linear_i8: w_scales.len() != n");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "linear_i8: bias.len() != n");
    }
    scratch_q.resize(m * kdim, 0);
    scratch_scales.resize(m, 0.0);
    scratch_acc.resize(m * n, 0);
    (k.quantize_rows_i8)(a, m, kdim, scratch_q, scratch_scales);
    (k.gemm_i8_i32)(scratch_q, w_q, m, n, kdim, scratch_acc);
    if n == 0 {
        return;
    }
    for ((y_row, acc_row), &a_scale) in y
        .chunks_exact_mut(n)
        .zip(scratch_acc.chunks_exact(n))
        .zip(scratch_scales.iter())
    {
        for (j, (out, &acc)) in y_row.iter_mut().zip(acc_row).enumerate() {
            let value = acc as f32 * (a_scale * w_scales[j]);
            *out = match bias {
                Some(bias) => value + bias[j],
                None => value,
            };
        }
    }
}

/// `y[m×n] = a[m×kdim] · wᵀ (+ bias)` with f32 weights `w[n×kdim]`. Panics if the lengths do
/// not match the shapes.
#[allow(clippy::too_many_arguments)]
pub fn linear_f32(
    k: &GemmKernels,
    a: &[f32],
    m: usize,
    kdim: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    (k.gemm_f32)(a, w, m, n, kdim, y);
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "linear_f32: bias.len() != n");
        if n == 0 {
            return;
        }
        for y_row in y.chunks_exact_mut(n) {
            for (out, &b) in y_row.iter_mut().zip(bias) {
                *out += b;
            }
        }
    }
}
