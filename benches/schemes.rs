//! Single-thread throughput of the int4, fp8, nf4, binary and ternary quantizers (scalar and the
//! run-time selected ISA) over 256 MiB of FP32 weights, beside a memory-read baseline measured in
//! the same run. `cargo bench --bench schemes`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use quantd::quant::fp8::{quantize_fp8, Fp8Format};
use quantd::quant::int4::{quantize_int4, Int4Options};
use quantd::quant::kernels::{self, KernelChoice, Kernels};
use quantd::quant::nf4::Nf4Options;

const ROWS: usize = 16384;
const COLS: usize = 4096;
const RUNS: usize = 3;

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

fn read_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for chunk in values.chunks_exact(16) {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum()
}

fn best_of(mut run: impl FnMut()) -> Duration {
    run();
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .expect("RUNS > 0")
}

fn nf4(kernels: &Kernels, values: &[f32]) {
    black_box(quantd_nf4(kernels, values));
}

fn quantd_nf4(kernels: &Kernels, values: &[f32]) -> usize {
    quantd::quant::nf4::quantize_nf4(
        kernels,
        values,
        Nf4Options {
            double_quant: false,
        },
    )
    .expect("finite")
    .packed
    .len()
}

fn main() {
    let weights = make_weights(ROWS * COLS);
    let gb = (weights.len() * 4) as f64 / 1e9;
    let baseline = best_of(|| {
        black_box(read_sum(black_box(&weights)));
    });
    let baseline_gbps = gb / baseline.as_secs_f64();
    println!("schemes bench: {ROWS} x {COLS} f32 (256 MiB), one thread, best of {RUNS}");
    println!("baseline read sum: {baseline_gbps:.2} GB/s\n");
    println!(
        "{:<22} {:>8} {:>9} {:>10}",
        "scheme", "kernels", "GB/s", "/baseline"
    );
    let auto = kernels::select(KernelChoice::Auto).expect("auto is always available");
    let scalar = kernels::scalar();
    type Run = fn(&Kernels, &[f32]);
    let runs: [(&str, Run); 6] = [
        ("int4 g128 sym", |k, w| {
            black_box(
                quantize_int4(
                    k,
                    w,
                    ROWS,
                    COLS,
                    Int4Options {
                        group_size: 128,
                        symmetric: true,
                        restricted_range: false,
                    },
                )
                .expect("finite"),
            );
        }),
        ("int4 g32 asym", |k, w| {
            black_box(
                quantize_int4(
                    k,
                    w,
                    ROWS,
                    COLS,
                    Int4Options {
                        group_size: 32,
                        symmetric: false,
                        restricted_range: false,
                    },
                )
                .expect("finite"),
            );
        }),
        ("fp8 e4m3 channel", |k, w| {
            black_box(quantize_fp8(k, w, ROWS, COLS, Fp8Format::E4M3, true).expect("finite"));
        }),
        ("nf4", nf4),
        ("binary", |_, w| {
            black_box(
                quantd::quant::binary::quantize_binary(w, ROWS, COLS, &|| true).expect("finite"),
            );
        }),
        ("ternary", |_, w| {
            black_box(
                quantd::quant::ternary::quantize_ternary(w, ROWS, COLS, &|| true).expect("finite"),
            );
        }),
    ];
    for (name, run) in runs {
        for table in [auto, scalar] {
            let time = best_of(|| run(table, &weights));
            let gbps = gb / time.as_secs_f64();
            println!(
                "{name:<22} {:>8} {gbps:>9.2} {:>9.0}%",
                table.isa.to_string(),
                gbps / baseline_gbps * 100.0
            );
        }
    }
}
