//! Single-thread throughput of the inference GEMM kernels: `y = x · Wᵀ` with `W` 4096 × 4096
//! (N = K = 4096) for M = 1 (GEMV, memory bound) and M = 32 (compute bound), per ISA table.
//!
//! Run with `cargo bench --bench gemm`. Criterion's throughput is `2·M·N·K` elements per
//! iteration, so its "elem/s" figures read as FLOP/s (e.g. `Gelem/s` = GFLOP/s). Cases:
//! - `f32`: `gemm_f32` on f32 weights;
//! - `i8-row`: per-row int8 (`quantize_rows_i8` of the activations + `gemm_i8_i32`);
//! - `q8-block`: q8_0-like int8 blocks of 32 (`quantize_blocks` + `gemm_blocks_i8`, no `mn`);
//! - `i8rows-block`: int8 per-channel weights (one scale per row) × per-32 activations
//!   (`quantize_blocks` + `gemm_blocks_i8_rows`, what int8 artifacts are served with);
//! - `q4-block`: q4_0-like 4-bit blocks (`quantize_blocks` + `gemm_blocks_u4`, `mn = -8·d`).
//!
//! The scalar table is skipped (minutes per case); every other available table is measured on one
//! thread, and the best table also on two threads (`gemm-2t/...`: the N weight rows split in
//! halves over a two-thread rayon pool), the setting of the candle-core figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantd::infer::kernels::{self, gemm_blocks, BlockActs, BlockWeightsRef, GemmKernels, QK};

const N: usize = 4096;
const K: usize = 4096;

/// Deterministic values in [-1, 1) from a 64-bit LCG.
fn values(len: usize, seed: u64) -> Vec<f32> {
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

/// The weights in every format the cases need.
struct Weights {
    f32: Vec<f32>,
    i8_rows: Vec<i8>,
    row_scales: Vec<f32>,
    q8: Vec<i8>,
    q8_d: Vec<f32>,
    q4: Vec<u8>,
    q4_d: Vec<f32>,
    q4_mn: Vec<f32>,
}

fn weights() -> Weights {
    let f32 = values(N * K, 1);
    let table = kernels::best();
    let mut i8_rows = vec![0; N * K];
    let mut row_scales = vec![0.0; N];
    (table.quantize_rows_i8)(&f32, N, K, &mut i8_rows, &mut row_scales);
    let mut q8_acts = BlockActs::new();
    q8_acts.quantize(table, &f32, N, K);
    let q8 = q8_acts.view().codes.to_vec();
    let q8_d = q8_acts.view().scales.to_vec();
    // Q4_0-like: d = max|x| / 8, q = clamp(round(x / d) + 8, 0, 15), low/high nibble order.
    let mut q4 = Vec::with_capacity(N * K / 2);
    let mut q4_d = Vec::with_capacity(N * K / QK);
    for block in f32.chunks_exact(QK) {
        let d = block.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 8.0;
        let code = |x: f32| ((x / d).round() + 8.0).clamp(0.0, 15.0) as u8;
        q4.extend((0..QK / 2).map(|t| code(block[t]) | code(block[t + QK / 2]) << 4));
        q4_d.push(d);
    }
    let q4_mn = q4_d.iter().map(|&d| -8.0 * d).collect();
    Weights {
        f32,
        i8_rows,
        row_scales,
        q8,
        q8_d,
        q4,
        q4_d,
        q4_mn,
    }
}

fn bench_table(c: &mut Criterion, table: &'static GemmKernels, w: &Weights) {
    for m in [1usize, 32] {
        let x = values(m * K, 2 + m as u64);
        let mut group = c.benchmark_group(format!("gemm/{}/m{m}", table.isa));
        group.throughput(Throughput::Elements((2 * m * N * K) as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_millis(1500));
        let mut y = vec![0.0f32; m * N];

        group.bench_function(BenchmarkId::from_parameter("f32"), |b| {
            b.iter(|| (table.gemm_f32)(black_box(&x), &w.f32, m, N, K, &mut y))
        });

        let (mut q, mut scales, mut acc) = (vec![0i8; m * K], vec![0.0f32; m], vec![0i32; m * N]);
        group.bench_function(BenchmarkId::from_parameter("i8-row"), |b| {
            b.iter(|| {
                (table.quantize_rows_i8)(black_box(&x), m, K, &mut q, &mut scales);
                (table.gemm_i8_i32)(&q, &w.i8_rows, m, N, K, &mut acc);
            })
        });

        let mut acts = BlockActs::new();
        let q8 = BlockWeightsRef::I8 {
            q: &w.q8,
            d: &w.q8_d,
            mn: None,
        };
        group.bench_function(BenchmarkId::from_parameter("q8-block"), |b| {
            b.iter(|| {
                acts.quantize(table, black_box(&x), m, K);
                gemm_blocks(table, &acts, q8, N, &mut y, N);
            })
        });

        let rows = BlockWeightsRef::I8Rows {
            q: &w.i8_rows,
            d_row: &w.row_scales,
        };
        group.bench_function(BenchmarkId::from_parameter("i8rows-block"), |b| {
            b.iter(|| {
                acts.quantize(table, black_box(&x), m, K);
                gemm_blocks(table, &acts, rows, N, &mut y, N);
            })
        });

        let q4 = BlockWeightsRef::U4 {
            q: &w.q4,
            d: &w.q4_d,
            mn: &w.q4_mn,
        };
        group.bench_function(BenchmarkId::from_parameter("q4-block"), |b| {
            b.iter(|| {
                acts.quantize(table, black_box(&x), m, K);
                gemm_blocks(table, &acts, q4, N, &mut y, N);
            })
        });
        group.finish();
    }
}

/// The best table on two threads: each computes half of the output columns (weight rows).
fn bench_two_threads(c: &mut Criterion, table: &'static GemmKernels, w: &Weights) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let half = N / 2;
    for m in [1usize, 32] {
        let x = values(m * K, 2 + m as u64);
        let mut group = c.benchmark_group(format!("gemm-2t/{}/m{m}", table.isa));
        group.throughput(Throughput::Elements((2 * m * N * K) as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_millis(1500));
        let (mut y0, mut y1) = (vec![0.0f32; m * half], vec![0.0f32; m * half]);
        group.bench_function(BenchmarkId::from_parameter("f32"), |b| {
            b.iter(|| {
                pool.join(
                    || (table.gemm_f32)(black_box(&x), &w.f32[..half * K], m, half, K, &mut y0),
                    || (table.gemm_f32)(black_box(&x), &w.f32[half * K..], m, half, K, &mut y1),
                )
            })
        });
        let (mut acc0, mut acc1) = (vec![0i32; m * half], vec![0i32; m * half]);
        let (mut q, mut scales) = (vec![0i8; m * K], vec![0.0f32; m]);
        group.bench_function(BenchmarkId::from_parameter("i8-row"), |b| {
            b.iter(|| {
                (table.quantize_rows_i8)(black_box(&x), m, K, &mut q, &mut scales);
                pool.join(
                    || (table.gemm_i8_i32)(&q, &w.i8_rows[..half * K], m, half, K, &mut acc0),
                    || (table.gemm_i8_i32)(&q, &w.i8_rows[half * K..], m, half, K, &mut acc1),
                )
            })
        });
        let mut acts = BlockActs::new();
        let q8 = BlockWeightsRef::I8 {
            q: &w.q8,
            d: &w.q8_d,
            mn: None,
        };
        let q4 = BlockWeightsRef::U4 {
            q: &w.q4,
            d: &w.q4_d,
            mn: &w.q4_mn,
        };
        let rows = BlockWeightsRef::I8Rows {
            q: &w.i8_rows,
            d_row: &w.row_scales,
        };
        for (label, weights) in [("q8-block", q8), ("i8rows-block", rows), ("q4-block", q4)] {
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    acts.quantize(table, black_box(&x), m, K);
                    let acts = &acts;
                    pool.join(
                        || gemm_blocks(table, acts, weights.rows(K, 0, half), half, &mut y0, half),
                        || gemm_blocks(table, acts, weights.rows(K, half, N), half, &mut y1, half),
                    )
                })
            });
        }
        group.finish();
    }
}

fn gemm(c: &mut Criterion) {
    let w = weights();
    for table in kernels::available() {
        if table.isa != kernels::GemmIsa::Scalar {
            bench_table(c, table, &w);
        }
    }
    bench_two_threads(c, kernels::best(), &w);
}

criterion_group!(benches, gemm);
criterion_main!(benches);
