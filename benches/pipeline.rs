//! End-to-end file → file benchmark of the int8 pipeline (what a job runs), with the peak
//! resident memory it needed, next to baselines measured in the same run: copying the same file
//! (`std::fs::copy`, i.e. `cp`) and reading it.
//!
//! `cargo bench --bench pipeline` (env `QUANTD_BENCH_MODEL_MIB`, default 1024, sets the size).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use quantd::dispatch::Dispatch;
use quantd::formats::safetensors::{Dtype, Limits, SafetensorsWriter};
use quantd::jobs::output::ModelInfo;
use quantd::jobs::pipeline::{quantize_file, PipelineContext, ProgressCounters};
use quantd::jobs::spec::JobSpec;
use quantd::quant::kernels::KernelChoice;

const ROWS: usize = 4096;
const COLS: usize = 4096;

/// Peak resident set size of this process so far, in bytes (Linux).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak RSS counter (Linux ≥ 4.0), so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Writes a model of `n_tensors` [4096, 4096] F32 weights plus a bias each, a row at a time.
fn write_model(path: &std::path::Path, n_tensors: usize) {
    let mut declared = Vec::new();
    for index in 0..n_tensors {
        declared.push((
            format!("layers.{index}.weight"),
            Dtype::F32,
            vec![ROWS, COLS],
        ));
        declared.push((format!("layers.{index}.bias"), Dtype::F32, vec![ROWS]));
    }
    let sink = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut writer = SafetensorsWriter::new(sink, declared, BTreeMap::new()).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut row = vec![0f32; COLS];
    for index in 0..n_tensors {
        let name = format!("layers.{index}.weight");
        for r in 0..ROWS {
            let row_scale = 0.01 + (r % 97) as f32 * 0.001;
            for value in row.iter_mut() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *value = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * row_scale;
            }
            writer.write_tensor_values(&name, &row).unwrap();
        }
        writer
            .write_tensor_values(&format!("layers.{index}.bias"), &vec![0.5f32; ROWS])
            .unwrap();
    }
    writer.finish().unwrap().flush().unwrap();
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        last = Some(value);
    }
    (best, last.unwrap())
}

fn main() {
    let mib: usize = std::env::var("QUANTD_BENCH_MODEL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let n_tensors = (mib / 64).max(1);
    let dir =
        tempfile::tempdir_in(std::env::var("QUANTD_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let input = dir.path().join("model.safetensors");
    write_model(&input, n_tensors);
    let size = std::fs::metadata(&input).unwrap().len();
    let gb = size as f64 / 1e9;
    println!(
        "model: {n_tensors} x [{ROWS}, {COLS}] F32 + biases = {:.0} MiB (hot in the page cache)",
        size as f64 / (1 << 20) as f64
    );

    // Baselines, same file, same run.
    let copy_target = dir.path().join("copy.safetensors");
    let (copy_time, _) = best_of(3, || std::fs::copy(&input, &copy_target).unwrap());
    std::fs::remove_file(&copy_target).unwrap();
    let (read_time, _) = best_of(3, || {
        let mut file = File::open(&input).unwrap();
        let mut buffer = vec![0u8; 1 << 20];
        let mut checksum = 0u64;
        loop {
            let n = file.read(&mut buffer).unwrap();
            if n == 0 {
                break checksum;
            }
            checksum = checksum.wrapping_add(buffer[n - 1] as u64);
        }
    });

    println!(
        "{:<44} {:>9} {:>9} {:>12} {:>12}",
        "variant", "seconds", "GB/s", "vs cp", "peak RSS"
    );
    println!(
        "{:<44} {:>9.3} {:>9.2} {:>12} {:>12}",
        "baseline: std::fs::copy (cp)",
        copy_time.as_secs_f64(),
        gb / copy_time.as_secs_f64(),
        "1.00x",
        "-"
    );
    println!(
        "{:<44} {:>9.3} {:>9.2} {:>12} {:>12}",
        "baseline: read(2) the file",
        read_time.as_secs_f64(),
        gb / read_time.as_secs_f64(),
        format!("{:.2}x", copy_time.as_secs_f64() / read_time.as_secs_f64()),
        "-"
    );

    let limits = Limits {
        max_header_bytes: 100 << 20,
        max_file_bytes: u64::MAX,
    };
    let output = dir.path().join("out.safetensors");
    for (label, choice, scheme, options, format) in [
        (
            "int8 per-channel sym (auto ISA)",
            KernelChoice::Auto,
            "int8",
            r#"{"granularity":"channel","symmetric":true}"#,
            "safetensors",
        ),
        (
            "int8 per-channel asym (auto ISA)",
            KernelChoice::Auto,
            "int8",
            r#"{"granularity":"channel","symmetric":false}"#,
            "safetensors",
        ),
        (
            "int8 per-tensor sym (auto ISA)",
            KernelChoice::Auto,
            "int8",
            r#"{"granularity":"tensor","symmetric":true}"#,
            "safetensors",
        ),
        (
            "int8 per-channel sym (scalar)",
            KernelChoice::Scalar,
            "int8",
            r#"{"granularity":"channel","symmetric":true}"#,
            "safetensors",
        ),
        (
            "q8_0 -> GGUF (auto ISA)",
            KernelChoice::Auto,
            "q8_0",
            "{}",
            "gguf",
        ),
        (
            "q4_0 -> GGUF (auto ISA)",
            KernelChoice::Auto,
            "q4_0",
            "{}",
            "gguf",
        ),
        (
            "q4_1 -> GGUF (auto ISA)",
            KernelChoice::Auto,
            "q4_1",
            "{}",
            "gguf",
        ),
        (
            "q5_0 -> GGUF (auto ISA)",
            KernelChoice::Auto,
            "q5_0",
            "{}",
            "gguf",
        ),
    ] {
        let dispatch = Dispatch::select(choice).unwrap();
        let options: serde_json::Value = serde_json::from_str(options).unwrap();
        let spec = JobSpec::parse(scheme, Some(&options), Some(format)).unwrap();
        let model = ModelInfo::default();
        let cancel = AtomicBool::new(false);
        reset_peak_rss();
        let rss_before = peak_rss_bytes();
        let (time, result) = best_of(3, || {
            let progress = ProgressCounters::default();
            let ctx = PipelineContext {
                dispatch,
                limits,
                cancel: &cancel,
                progress: &progress,
                tensor_delay: Duration::ZERO,
            };
            quantize_file(&input, &output, &spec, &model, &ctx).unwrap()
        });
        let peak = peak_rss_bytes();
        println!(
            "{:<44} {:>9.3} {:>9.2} {:>12} {:>9} MiB   (isa {}, out {:.0} MiB, RSS before {} MiB)",
            format!("quantd pipeline: {label}"),
            time.as_secs_f64(),
            gb / time.as_secs_f64(),
            format!("{:.2}x", copy_time.as_secs_f64() / time.as_secs_f64()),
            peak >> 20,
            dispatch.quant.isa,
            result.size_bytes as f64 / (1 << 20) as f64,
            rss_before >> 20,
        );
    }
    println!(
        "largest tensor: {} MiB; 'vs cp' > 1 means faster than copying the file",
        (ROWS * COLS * 4) >> 20
    );
}
