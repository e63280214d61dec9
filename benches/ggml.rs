//! Throughput of the ggml block quantizers against the machine's memory-read bandwidth.
//!
//! Run with `cargo bench --bench ggml`. It allocates a 16384 x 4096 f32 matrix (256 MiB, far
//! larger than any cache), measures a plain vectorised sum over it as the read-bandwidth
//! baseline, then quantizes the whole matrix to Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 with every
//! available quantizer table (scalar included), on one thread and on all cores (rows split
//! into contiguous ranges with `std::thread::scope`). Every figure is the best of `RUNS` runs,
//! reported as GB/s of f32 read and as a ratio to the baseline with the same thread count. The
//! baseline is measured before and after the quantizers and the higher figure is used, so a
//! noisy neighbour cannot flatter the ratios. Output buffers are allocated and written once
//! before timing, as the job pipeline reuses its buffers.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use quantd::quant::ggml::{self, GgmlKernels, GgmlType, QK};
use quantd::quant::kernels::KernelChoice;

const ROWS: usize = 16_384;
const COLS: usize = 4_096;
const RUNS: usize = 5;
/// The scalar reference is 10-30x slower; fewer runs keep the bench short.
const SCALAR_RUNS: usize = 1;
const TYPES: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

/// Deterministic weights of a realistic magnitude (|x| < 0.05), from a 64-bit LCG.
fn make_weights(len: usize) -> Vec<f32> {
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * 0.05
        })
        .collect()
}

/// Sum with 16 independent accumulators so the compiler vectorises it and the loop is bound
/// by memory, not by add latency.
fn read_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for chunk in values.chunks_exact(16) {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum()
}

/// Best of `runs` timings, after one warm-up run.
fn best_of<F: FnMut() -> Duration>(runs: usize, mut run: F) -> Duration {
    run();
    (0..runs).map(|_| run()).min().expect("runs > 0")
}

fn gigabytes_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// Read bandwidth with `threads` threads.
fn baseline(data: &[f32], threads: usize) -> f64 {
    let elapsed = best_of(RUNS, || {
        let elements_per_thread = ROWS.div_ceil(threads) * COLS;
        let start = Instant::now();
        thread::scope(|scope| {
            for part in data.chunks(elements_per_thread) {
                scope.spawn(move || black_box(read_sum(black_box(part))));
            }
        });
        start.elapsed()
    });
    gigabytes_per_second(std::mem::size_of_val(data), elapsed)
}

/// Best wall time of quantizing the whole matrix to `ty` with `threads` threads, each taking a
/// contiguous range of rows.
fn time_quantize(
    kernels: &GgmlKernels,
    ty: GgmlType,
    data: &[f32],
    output: &mut [u8],
    threads: usize,
) -> Duration {
    let rows_per_thread = ROWS.div_ceil(threads);
    let src_chunk = rows_per_thread * COLS;
    let dst_chunk = ty.row_bytes(src_chunk).expect("COLS is a multiple of 32");
    let runs = if kernels.isa == ggml::Isa::Scalar {
        SCALAR_RUNS
    } else {
        RUNS
    };
    best_of(runs, || {
        let start = Instant::now();
        thread::scope(|scope| {
            for (src, dst) in data.chunks(src_chunk).zip(output.chunks_mut(dst_chunk)) {
                scope.spawn(move || ggml::quantize(kernels, ty, src, dst));
            }
        });
        start.elapsed()
    })
}

fn main() {
    assert_eq!(COLS % QK, 0);
    let max_threads = thread::available_parallelism().map_or(1, |count| count.get());
    let thread_counts: Vec<usize> = if max_threads > 1 {
        vec![1, max_threads]
    } else {
        vec![1]
    };
    let bytes = ROWS * COLS * std::mem::size_of::<f32>();
    println!(
        "ggml bench: {ROWS} x {COLS} f32 ({} MiB), best of {RUNS} (scalar: {SCALAR_RUNS})",
        bytes >> 20
    );

    let data = make_weights(ROWS * COLS);
    let auto = ggml::select(KernelChoice::Auto).expect("auto always resolves");
    let mut tables = vec![auto];
    for isa in ggml::available().into_iter().rev() {
        let table = ggml::select(isa.into()).expect("available ISAs are selectable");
        if table.isa != auto.isa {
            tables.push(table);
        }
    }
    let names: Vec<String> = ggml::available().iter().map(ToString::to_string).collect();
    println!("available: {}; auto = {}", names.join(", "), auto.isa);

    let baselines_before: Vec<f64> = thread_counts
        .iter()
        .map(|&threads| baseline(&data, threads))
        .collect();

    let mut rows = Vec::new();
    for ty in TYPES {
        // Written once here so its pages are resident before timing.
        let mut output = vec![1u8; ty.row_bytes(data.len()).expect("whole blocks")];
        for &kernels in &tables {
            for &threads in &thread_counts {
                let elapsed = time_quantize(kernels, ty, &data, &mut output, threads);
                rows.push((
                    ty,
                    kernels.isa,
                    threads,
                    gigabytes_per_second(bytes, elapsed),
                ));
            }
        }
        black_box(&output);
    }

    println!();
    let mut best_baselines = Vec::new();
    for (&threads, &before) in thread_counts.iter().zip(&baselines_before) {
        let after = baseline(&data, threads);
        best_baselines.push((threads, before.max(after)));
        println!(
            "baseline read sum, {threads} thread(s): {before:.2} GB/s before, {after:.2} after"
        );
    }

    println!(
        "\n{:<6} {:<8} {:>7} {:>8} {:>10}",
        "type", "kernels", "threads", "GB/s", "/baseline"
    );
    for (ty, isa, threads, rate) in rows {
        let baseline = best_baselines
            .iter()
            .find(|(count, _)| *count == threads)
            .map_or(f64::NAN, |(_, rate)| *rate);
        let isa = isa.to_string();
        println!(
            "{:<6} {isa:<8} {threads:>7} {rate:>8.2} {:>9.0}%",
            ty.name(),
            100.0 * rate / baseline
        );
    }
}
