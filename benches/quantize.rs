//! Throughput of int8 quantization against the machine's memory-read bandwidth.
//!
//! Run with `./bench` (or `cargo bench --bench quantize`). It allocates a 16384 x 4096 f32
//! matrix (256 MiB, far larger than any cache), measures a plain vectorised sum over it as the
//! read-bandwidth baseline, then times `quantize_int8` and `quantize_int8_into` with the
//! auto-selected kernels and every other available table (scalar included), on one thread and
//! on all cores (rows split into contiguous ranges with `std::thread::scope`). Every figure is
//! the best of `RUNS` runs, reported as GB/s of f32 read and as a ratio to the baseline with the
//! same thread count. The baseline is measured before and after the variants and the higher
//! figure is used, so a noisy neighbour cannot flatter the ratios.
//!
//! Reading the table:
//! - `into` variants write into an output buffer allocated (and faulted in) before timing;
//!   `new-vec` is `quantize_int8` returning a fresh `Vec<i8>`, whose pages the kernel faults in
//!   as it writes. The gap between the two is the page-fault cost of this machine.
//! - `tensor-sym` needs the tensor's absmax before it can quantize, so it reads the data twice
//!   and tops out near half the baseline. With several threads each thread quantizes its own
//!   row range with its own scale: the same work per byte as one shared scale.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use quantd::quant::int8::{quantize_int8, quantize_int8_into, Granularity, Int8Options};
use quantd::quant::kernels::{self, KernelChoice, Kernels};

const ROWS: usize = 16_384;
const COLS: usize = 4_096;
const RUNS: usize = 5;
/// What one core of the reference machine reads; much less hints at a busy machine.
const EXPECTED_BASELINE_GBPS: f64 = 12.0;

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

/// Best of `RUNS` timings, after one warm-up run.
fn best_of<F: FnMut() -> Duration>(mut run: F) -> Duration {
    run();
    (0..RUNS).map(|_| run()).min().expect("RUNS > 0")
}

/// Runs `work(src_rows, dst_rows, n_rows)` on `threads` contiguous row ranges in parallel and
/// returns the wall time.
fn time_split<F>(data: &[f32], output: &mut [i8], threads: usize, work: F) -> Duration
where
    F: Fn(&[f32], &mut [i8], usize) + Sync,
{
    let elements_per_thread = ROWS.div_ceil(threads) * COLS;
    let start = Instant::now();
    thread::scope(|scope| {
        let parts = data.chunks(elements_per_thread);
        for (src, dst) in parts.zip(output.chunks_mut(elements_per_thread)) {
            let work = &work;
            scope.spawn(move || work(src, dst, src.len() / COLS));
        }
    });
    start.elapsed()
}

fn gigabytes_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// Read bandwidth with `threads` threads.
fn baseline(data: &[f32], threads: usize) -> f64 {
    let elapsed = best_of(|| {
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

/// One benchmarked way of quantizing a range of rows.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    options: Int8Options,
    /// `quantize_int8` (fresh output vector) instead of `quantize_int8_into`.
    new_vec: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "channel-sym new-vec",
        options: Int8Options {
            granularity: Granularity::Channel,
            symmetric: true,
        },
        new_vec: true,
    },
    Variant {
        name: "channel-sym into",
        options: Int8Options {
            granularity: Granularity::Channel,
            symmetric: true,
        },
        new_vec: false,
    },
    Variant {
        name: "channel-asym into",
        options: Int8Options {
            granularity: Granularity::Channel,
            symmetric: false,
        },
        new_vec: false,
    },
    Variant {
        name: "tensor-sym into",
        options: Int8Options {
            granularity: Granularity::Tensor,
            symmetric: true,
        },
        new_vec: false,
    },
];

/// Best wall time of `variant` over the whole matrix with `threads` threads.
fn time_variant(kernels: &Kernels, variant: Variant, data: &[f32], threads: usize) -> Duration {
    // Written once here so its pages are resident before timing.
    let mut output = vec![1i8; data.len()];
    best_of(|| {
        time_split(data, &mut output, threads, |src, dst, rows| {
            let shape = [rows, COLS];
            if variant.new_vec {
                let tensor = quantize_int8(kernels, src, &shape, variant.options);
                black_box(tensor.expect("benchmark data quantizes"));
            } else {
                let scales =
                    quantize_int8_into(kernels, src, &shape, variant.options, dst, &|| true);
                black_box(scales.expect("benchmark data quantizes"));
            }
        })
    })
}

fn main() {
    let max_threads = thread::available_parallelism().map_or(1, |count| count.get());
    let thread_counts: Vec<usize> = if max_threads > 1 {
        vec![1, max_threads]
    } else {
        vec![1]
    };
    let bytes = ROWS * COLS * std::mem::size_of::<f32>();
    println!(
        "quantize bench: {ROWS} x {COLS} f32 ({} MiB), best of {RUNS}",
        bytes >> 20
    );

    let data = make_weights(ROWS * COLS);
    let auto = kernels::select(KernelChoice::Auto).expect("auto always resolves");
    let mut tables = vec![auto];
    for isa in kernels::available().into_iter().rev() {
        let table = kernels::select(isa.into()).expect("available ISAs are selectable");
        if table.isa != auto.isa {
            tables.push(table);
        }
    }
    let names: Vec<String> = kernels::available()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "available kernels: {}; auto = {}",
        names.join(", "),
        auto.isa
    );

    let baselines_before: Vec<f64> = thread_counts
        .iter()
        .map(|&threads| baseline(&data, threads))
        .collect();

    let mut rows = Vec::new();
    for variant in VARIANTS {
        for &kernels in &tables {
            for &threads in &thread_counts {
                let elapsed = time_variant(kernels, variant, &data, threads);
                rows.push((
                    variant.name,
                    kernels.isa,
                    threads,
                    gigabytes_per_second(bytes, elapsed),
                ));
            }
        }
    }

    println!();
    let mut best_baselines = Vec::new();
    for (&threads, &before) in thread_counts.iter().zip(&baselines_before) {
        let after = baseline(&data, threads);
        let best = before.max(after);
        best_baselines.push((threads, best));
        println!(
            "baseline read sum, {threads} thread(s): {before:.2} GB/s before, {after:.2} after"
        );
        if threads == 1 && best < EXPECTED_BASELINE_GBPS {
            println!("  (below the ~12-14 GB/s expected of one core: a busy machine?)");
        }
    }

    println!(
        "\n{:<20} {:<8} {:>7} {:>8} {:>10}",
        "variant", "kernels", "threads", "GB/s", "/baseline"
    );
    for (name, isa, threads, rate) in rows {
        let baseline = best_baselines
            .iter()
            .find(|(count, _)| *count == threads)
            .map_or(f64::NAN, |(_, rate)| *rate);
        let isa = isa.to_string();
        println!(
            "{name:<20} {isa:<8} {threads:>7} {rate:>8.2} {:>9.0}%",
            100.0 * rate / baseline
        );
    }
}
