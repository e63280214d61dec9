//! The dot-product GEMMs (`gemm_f32` for few rows, `gemm_i8_i32`), written once for AVX2 and
//! AVX-512 over the small vector trait [`DotLanes`], the way `fastmath.rs` writes its bodies
//! once: every function here is `#[inline(always)]` and generic, and each ISA instantiates it
//! inside its own `#[target_feature]` function (`avx2.rs`, `avx512.rs`), where LLVM inlines the
//! trait's intrinsics. The ISAs differ only in their vector operations, register tile
//! (`ROWS × COLS`) and horizontal sums, so each produces the same bits as before it shared
//! this body.
//!
//! Structure: a register tile of `ROWS` activation rows × `COLS` weight rows keeps one vector
//! accumulator per output and reduces it horizontally once per `k` block. Weight rows are the
//! outer loop, so a tile of weights stays in L1 while every activation row tile passes by it,
//! and the weights (the large operand) are read from memory once per `k` block. When there is
//! more than one row tile, `k` is blocked by `K_BLOCK` and the activation block is first copied
//! contiguously: rows at a large power-of-two stride (k = 4096) map to the same L1 sets and
//! evict each other. With a single row tile (`m <= ROWS`, e.g. GEMV) `k` is not blocked, so each
//! weight row is one prefetcher-friendly stream. The int8 GEMM always copies, widening the
//! activations to i16 once per block; it multiplies with `vpmaddwd` (each i32 lane gets
//! `p0·q0 + p1·q1` with `|p·q| ≤ 128²`), exact for any i8 input.

use std::slice;

/// Elements of `k` per block when `m > ROWS`: a tile's activation and weight rows of this many
/// f32 (28–32 KiB) stay in L1 or L2; the whole packed activation block sits in L2. A multiple
/// of every ISA's steps, so only the last block has a scalar tail.
pub(super) const K_BLOCK: usize = 1024;

/// The vector operations of the dot-product tiles, for one ISA.
///
/// Implemented by zero-sized proof tokens (`avx2::Avx2`, `avx512::Avx512`) that can only be
/// made where the CPU has the ISA's features, which is what lets the operations be safe `fn`s.
/// Every method is meant to be inlined into a `#[target_feature]` caller.
pub(super) trait DotLanes: Copy {
    /// A vector of f32 lanes.
    type F32: Copy;
    /// A vector of i16 lanes (operands) or i32 lanes (accumulators).
    type Int: Copy;
    /// f32 lanes per vector.
    const F32_LANES: usize;
    /// i8 elements per integer step (one vector of i16 once widened).
    const I8_STEP: usize;

    fn zero_f32(self) -> Self::F32;
    /// # Safety
    /// `src` must be valid for reading `F32_LANES` f32.
    unsafe fn load_f32(self, src: *const f32) -> Self::F32;
    /// `a · b + acc`, fused.
    fn fmadd(self, a: Self::F32, b: Self::F32, acc: Self::F32) -> Self::F32;
    /// The sum of the lanes, in this ISA's fixed order.
    fn hsum_f32(self, v: Self::F32) -> f32;

    fn zero_int(self) -> Self::Int;
    /// # Safety
    /// `src` must be valid for reading `I8_STEP` i16.
    unsafe fn load_i16(self, src: *const i16) -> Self::Int;
    /// `I8_STEP` bytes sign-extended to i16 lanes.
    ///
    /// # Safety
    /// `src` must be valid for reading `I8_STEP` bytes.
    unsafe fn load_i8_as_i16(self, src: *const i8) -> Self::Int;
    /// `acc + (pairwise i16 products summed into i32 lanes)` (`vpmaddwd` then `vpaddd`).
    fn madd_i16(self, a: Self::Int, b: Self::Int, acc: Self::Int) -> Self::Int;
    /// The sum of the i32 lanes.
    fn hsum_i32(self, v: Self::Int) -> i32;
}

/// Dot products of `R` activation rows with `C` weight rows over `kc` elements.
///
/// # Safety
/// For every `r < R`, `a.add(r * lda)` must be valid for reading `kc` f32, and for every
/// `c < C`, `b.add(c * ldb)` likewise.
#[inline(always)]
unsafe fn tile_f32<S: DotLanes, const R: usize, const C: usize>(
    isa: S,
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    kc: usize,
) -> [[f32; C]; R] {
    let mut sums = [[isa.zero_f32(); C]; R];
    let simd_len = kc - kc % S::F32_LANES;
    let tail_len = kc - simd_len;
    let mut kk = 0;
    while kk < simd_len {
        let mut b_vecs = [isa.zero_f32(); C];
        for (c, b_vec) in b_vecs.iter_mut().enumerate() {
            // SAFETY: kk + F32_LANES <= kc and row c < C is readable for kc f32 (contract
            // above).
            *b_vec = unsafe { isa.load_f32(b.add(c * ldb + kk)) };
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: kk + F32_LANES <= kc and row r < R is readable for kc f32 (contract
            // above).
            let a_vec = unsafe { isa.load_f32(a.add(r * lda + kk)) };
            for (sum, &b_vec) in row_sums.iter_mut().zip(&b_vecs) {
                *sum = isa.fmadd(a_vec, b_vec, *sum);
            }
        }
        kk += S::F32_LANES;
    }
    let mut out = [[0.0f32; C]; R];
    for (r, (out_row, row_sums)) in out.iter_mut().zip(&sums).enumerate() {
        // SAFETY: row r is readable for kc f32 (contract above).
        let a_tail = unsafe { slice::from_raw_parts(a.add(r * lda + simd_len), tail_len) };
        for (c, (out, &sum)) in out_row.iter_mut().zip(row_sums).enumerate() {
            // SAFETY: row c is readable for kc f32 (contract above).
            let b_tail = unsafe { slice::from_raw_parts(b.add(c * ldb + simd_len), tail_len) };
            let tail: f32 = a_tail.iter().zip(b_tail).map(|(&x, &y)| x * y).sum();
            *out = isa.hsum_f32(sum) + tail;
        }
    }
    out
}

/// Exact integer dot products of `R` activation rows (already widened to i16) with `C` weight
/// rows over `kc` elements.
///
/// # Safety
/// For every `r < R`, `a.add(r * lda)` must be valid for reading `kc` i16, and for every
/// `c < C`, `w.add(c * ldw)` must be valid for reading `kc` bytes.
#[inline(always)]
unsafe fn tile_i8<S: DotLanes, const R: usize, const C: usize>(
    isa: S,
    (a, lda): (*const i16, usize),
    (w, ldw): (*const i8, usize),
    kc: usize,
) -> [[i32; C]; R] {
    let mut sums = [[isa.zero_int(); C]; R];
    let simd_len = kc - kc % S::I8_STEP;
    let tail_len = kc - simd_len;
    let mut kk = 0;
    while kk < simd_len {
        let mut w_vecs = [isa.zero_int(); C];
        for (c, w_vec) in w_vecs.iter_mut().enumerate() {
            // SAFETY: kk + I8_STEP <= kc and row c < C is readable for kc bytes (contract
            // above).
            *w_vec = unsafe { isa.load_i8_as_i16(w.add(c * ldw + kk)) };
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: kk + I8_STEP <= kc and row r < R is readable for kc i16 (contract
            // above).
            let a_vec = unsafe { isa.load_i16(a.add(r * lda + kk)) };
            for (sum, &w_vec) in row_sums.iter_mut().zip(&w_vecs) {
                *sum = isa.madd_i16(a_vec, w_vec, *sum);
            }
        }
        kk += S::I8_STEP;
    }
    let mut out = [[0i32; C]; R];
    for (r, (out_row, row_sums)) in out.iter_mut().zip(&sums).enumerate() {
        // SAFETY: row r is readable for kc i16 (contract above).
        let a_tail = unsafe { slice::from_raw_parts(a.add(r * lda + simd_len), tail_len) };
        for (c, (out, &sum)) in out_row.iter_mut().zip(row_sums).enumerate() {
            // SAFETY: row c is readable for kc bytes (contract above).
            let w_tail = unsafe { slice::from_raw_parts(w.add(c * ldw + simd_len), tail_len) };
            *out = isa.hsum_i32(sum)
                + a_tail
                    .iter()
                    .zip(w_tail)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum::<i32>();
        }
    }
    out
}

/// One `k` block of a dot-product GEMM: the activation block (`a`, rows of stride `lda`
/// starting at column `a_k0`: the caller's rows in place or a packed copy), the weights
/// (`n × k`, block starting at column `k0`, `kc` long) and the output (`m × n`).
struct KBlock<'a, A, B, O> {
    a: &'a [A],
    lda: usize,
    a_k0: usize,
    b: &'a [B],
    k: usize,
    k0: usize,
    kc: usize,
    out: &'a mut [O],
    n: usize,
}

/// An `R × C` tile of dot products of one element type; [`add_tiles`] calls it for every
/// tile shape.
trait Tile {
    /// Adds the `R × C` tile at output `(i, j)`.
    ///
    /// # Safety
    /// The block's shapes hold (`a` has the rows, `a_k0 + kc <= lda`, `b` is `n × k`, `out` is
    /// `m × n`, `k0 + kc <= k`), `i + R <= m`, `j + C <= n`, and the CPU has the ISA's features.
    unsafe fn add<const R: usize, const C: usize>(&mut self, i: usize, j: usize);
}

impl<S: DotLanes> Tile for (S, KBlock<'_, f32, f32, f32>) {
    #[inline(always)]
    unsafe fn add<const R: usize, const C: usize>(&mut self, i: usize, j: usize) {
        let (isa, block) = self;
        // SAFETY: rows i..i+R of `a` (stride lda, a_k0 + kc <= lda) and j..j+C of `b` exist
        // and k0 + kc <= k, so every row pointer is readable for kc elements (contract above).
        let sums = unsafe {
            tile_f32::<S, R, C>(
                *isa,
                (block.a.as_ptr().add(i * block.lda + block.a_k0), block.lda),
                (block.b.as_ptr().add(j * block.k + block.k0), block.k),
                block.kc,
            )
        };
        add_sums(block.out, block.n, (i, j), &sums);
    }
}

impl<S: DotLanes> Tile for (S, KBlock<'_, i16, i8, i32>) {
    #[inline(always)]
    unsafe fn add<const R: usize, const C: usize>(&mut self, i: usize, j: usize) {
        let (isa, block) = self;
        // SAFETY: rows i..i+R of `a` (stride lda, a_k0 + kc <= lda) and j..j+C of `w` exist
        // and k0 + kc <= k, so every row pointer is readable for kc elements (contract above).
        let sums = unsafe {
            tile_i8::<S, R, C>(
                *isa,
                (block.a.as_ptr().add(i * block.lda + block.a_k0), block.lda),
                (block.b.as_ptr().add(j * block.k + block.k0), block.k),
                block.kc,
            )
        };
        add_sums(block.out, block.n, (i, j), &sums);
    }
}

/// `out[(i + r)·n + j + c] += sums[r][c]`.
#[inline(always)]
fn add_sums<T: Copy + std::ops::AddAssign, const R: usize, const C: usize>(
    out: &mut [T],
    n: usize,
    (i, j): (usize, usize),
    sums: &[[T; C]; R],
) {
    for (r, row) in sums.iter().enumerate() {
        let out_row = &mut out[(i + r) * n + j..][..C];
        for (out, &sum) in out_row.iter_mut().zip(row) {
            *out += sum;
        }
    }
}

/// Walks the `m × n` output in `ROWS × COLS` tiles, weight rows outer, with `1`-row and
/// `1`-column tiles at the edges.
///
/// # Safety
/// As [`Tile::add`] for every tile inside `m × n`.
#[inline(always)]
unsafe fn add_tiles<T: Tile, const ROWS: usize, const COLS: usize>(
    tile: &mut T,
    m: usize,
    n: usize,
) {
    let mut j = 0;
    while j < n {
        let full_cols = j + COLS <= n;
        let mut i = 0;
        while i < m {
            let full_rows = i + ROWS <= m;
            // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the conditions);
            // the rest is the caller's contract.
            unsafe {
                match (full_rows, full_cols) {
                    (true, true) => tile.add::<ROWS, COLS>(i, j),
                    (false, true) => tile.add::<1, COLS>(i, j),
                    (true, false) => tile.add::<ROWS, 1>(i, j),
                    (false, false) => tile.add::<1, 1>(i, j),
                }
            }
            i += if full_rows { ROWS } else { 1 };
        }
        j += if full_cols { COLS } else { 1 };
    }
}

/// `c = a · bᵀ` with dot-product tiles of `ROWS × COLS` (see the module docs).
///
/// # Safety
/// The caller is a `#[target_feature]` function of `isa`'s features, and the shapes were
/// checked with `check_gemm_shapes`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_f32<S: DotLanes, const ROWS: usize, const COLS: usize>(
    isa: S,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
) {
    c.fill(0.0);
    let mut packed: Vec<f32> = Vec::new();
    // With a single row tile there is no reuse of weights to protect: one pass over each
    // weight row keeps the hardware prefetcher streaming.
    let k_block = if m <= ROWS { k.max(1) } else { K_BLOCK };
    for k0 in (0..k).step_by(k_block) {
        let kc = k_block.min(k - k0);
        // Rows of `a` at a large power-of-two stride share L1 sets and evict each other; a
        // contiguous copy of the block stays cached while every weight tile passes by.
        let (a_block, lda, a_k0) = if m > ROWS {
            packed.clear();
            packed.extend(a.chunks_exact(k).flat_map(|row| &row[k0..k0 + kc]));
            (&packed[..], kc, 0)
        } else {
            (a, k, k0)
        };
        let block = KBlock {
            a: a_block,
            lda,
            a_k0,
            b,
            k,
            k0,
            kc,
            out: &mut *c,
            n,
        };
        // SAFETY: the block's shapes hold (checked shapes, k0 + kc <= k, the packed copy has
        // m rows of kc), and the CPU has the features (contract above).
        unsafe { add_tiles::<_, ROWS, COLS>(&mut (isa, block), m, n) };
    }
}

/// `acc = a_q · w_qᵀ` in exact i32, with dot-product tiles of `ROWS × COLS` over activations
/// widened to i16 once per `k` block (see the module docs).
///
/// # Safety
/// The caller is a `#[target_feature]` function of `isa`'s features, and the shapes were
/// checked with `check_gemm_shapes`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_i8_i32<S: DotLanes, const ROWS: usize, const COLS: usize>(
    isa: S,
    a_q: &[i8],
    w_q: &[i8],
    m: usize,
    n: usize,
    k: usize,
    acc: &mut [i32],
) {
    acc.fill(0);
    let mut packed: Vec<i16> = Vec::new();
    // With a single row tile there is no reuse of weights to protect: one pass over each
    // weight row keeps the hardware prefetcher streaming.
    let k_block = if m <= ROWS { k.max(1) } else { K_BLOCK };
    for k0 in (0..k).step_by(k_block) {
        let kc = k_block.min(k - k0);
        // The activations are widened to i16 once per block instead of once per weight tile,
        // and the contiguous copy avoids the L1 set conflicts of rows at a power-of-two stride.
        packed.clear();
        packed.extend(
            a_q.chunks_exact(k)
                .flat_map(|row| row[k0..k0 + kc].iter().map(|&x| i16::from(x))),
        );
        let block = KBlock {
            a: &packed[..],
            lda: kc,
            a_k0: 0,
            b: w_q,
            k,
            k0,
            kc,
            out: &mut *acc,
            n,
        };
        // SAFETY: the block's shapes hold (checked shapes, k0 + kc <= k, the packed copy has
        // m rows of kc), and the CPU has the features (contract above).
        unsafe { add_tiles::<_, ROWS, COLS>(&mut (isa, block), m, n) };
    }
}
