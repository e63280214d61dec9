//! quantd's k-quant quantizers against llama.cpp itself: ggml's `ggml_quantize_chunk` (no
//! importance matrix) and its dequantizers, built from the pinned llama-cpp-python sdist by
//! scripts/llama-cpp-oracle.sh and driven through its file harness `ggml-oracle`. The bytes
//! must be equal on random rows of many distributions and edge cases and on every 2-D tensor
//! of the real fixture models; ggml's decoding of them must equal ours bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use quantd::quant::ggml::{
    dequantize_q4_k, dequantize_q6_k, quantize_q4_k, quantize_q6_k, BlockQ4K, BlockQ6K, QK_K,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{f32_bytes as le_bytes, fixture, safetensors_file, spawn_app};
use crate::minilm::minilm_dir;
use crate::readers::{repo_path, run_interop_script};

/// One k-quant type under test: ggml's `enum ggml_type` value and our codec.
struct KQuant {
    name: &'static str,
    ggml_type: u32,
    block_bytes: usize,
    quantize: fn(&[f32], &mut [u8]),
    dequantize: fn(&[u8], &mut [f32]),
}

const Q6_K: KQuant = KQuant {
    name: "Q6_K",
    ggml_type: 14,
    block_bytes: size_of::<BlockQ6K>(),
    quantize: quantize_q6_k,
    dequantize: dequantize_q6_k,
};

const Q4_K: KQuant = KQuant {
    name: "Q4_K",
    ggml_type: 12,
    block_bytes: size_of::<BlockQ4K>(),
    quantize: quantize_q4_k,
    dequantize: dequantize_q4_k,
};

/// The harness binary, built (or found in the cache) once per test process; the script's
/// lock serialises test processes.
fn oracle() -> &'static Path {
    static ORACLE: OnceLock<PathBuf> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_path("scripts/llama-cpp-oracle.sh"))
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "building the llama.cpp oracle failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let cache = stdout
            .lines()
            .last()
            .expect("the script prints its cache dir");
        Path::new(cache.trim()).join("bin/ggml-oracle")
    })
}

fn run_oracle(args: &[&std::ffi::OsStr]) {
    let output = Command::new(oracle())
        .args(args)
        .output()
        .expect("ggml-oracle runs");
    assert!(
        output.status.success(),
        "ggml-oracle {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
        .collect()
}

/// ggml's bytes for `values`, quantized as rows of `n_per_row`.
fn ggml_quantize(kquant: &KQuant, values: &[f32], n_per_row: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.f32"), dir.path().join("out.bin"));
    std::fs::write(&input, f32_bytes(values)).unwrap();
    let (ty, n) = (kquant.ggml_type.to_string(), n_per_row.to_string());
    run_oracle(&[
        "quantize".as_ref(),
        ty.as_ref(),
        n.as_ref(),
        input.as_os_str(),
        output.as_os_str(),
    ]);
    std::fs::read(output).unwrap()
}

/// ggml's decoding (its type traits' `to_float`) of `blocks`.
fn ggml_dequantize(kquant: &KQuant, blocks: &[u8]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.bin"), dir.path().join("out.f32"));
    std::fs::write(&input, blocks).unwrap();
    let ty = kquant.ggml_type.to_string();
    run_oracle(&[
        "dequantize".as_ref(),
        ty.as_ref(),
        input.as_os_str(),
        output.as_os_str(),
    ]);
    f32_values(&std::fs::read(output).unwrap())
}

fn quantize_ours(kquant: &KQuant, values: &[f32]) -> Vec<u8> {
    let mut blocks = vec![0u8; values.len() / QK_K * kquant.block_bytes];
    (kquant.quantize)(values, &mut blocks);
    blocks
}

/// Quantizes `values` (rows of `n_per_row`) with quantd and with ggml and requires equal
/// bytes, then equal decodings of them by both sides. On a mismatch, names the first
/// differing block, its byte and the first element that decodes differently.
fn assert_matches_ggml(kquant: &KQuant, what: &str, values: &[f32], n_per_row: usize) {
    assert!(!values.is_empty() && values.len().is_multiple_of(n_per_row));
    let ours = quantize_ours(kquant, values);
    let theirs = ggml_quantize(kquant, values, n_per_row);
    assert_eq!(ours.len(), theirs.len(), "{} {what}: lengths", kquant.name);
    if let Some(block_idx) = ours
        .chunks_exact(kquant.block_bytes)
        .zip(theirs.chunks_exact(kquant.block_bytes))
        .position(|(a, b)| a != b)
    {
        panic!(
            "{}",
            describe_mismatch(kquant, what, values, &ours, &theirs, block_idx)
        );
    }

    let mut decoded = vec![0.0f32; values.len()];
    (kquant.dequantize)(&ours, &mut decoded);
    let ggml_decoded = ggml_dequantize(kquant, &ours);
    if let Some(idx) =
        (0..values.len()).find(|&i| decoded[i].to_bits() != ggml_decoded[i].to_bits())
    {
        panic!(
            "{} {what}: element {idx} decodes to {:e} here but {:e} in ggml",
            kquant.name, decoded[idx], ggml_decoded[idx]
        );
    }
}

fn describe_mismatch(
    kquant: &KQuant,
    what: &str,
    values: &[f32],
    ours: &[u8],
    theirs: &[u8],
    block_idx: usize,
) -> String {
    let range = block_idx * kquant.block_bytes..(block_idx + 1) * kquant.block_bytes;
    let (our_block, their_block) = (&ours[range.clone()], &theirs[range]);
    let byte = (0..kquant.block_bytes)
        .find(|&i| our_block[i] != their_block[i])
        .unwrap();
    let mut our_values = vec![0.0f32; QK_K];
    let mut their_values = vec![0.0f32; QK_K];
    (kquant.dequantize)(our_block, &mut our_values);
    (kquant.dequantize)(their_block, &mut their_values);
    let input = &values[block_idx * QK_K..(block_idx + 1) * QK_K];
    let element = (0..QK_K).find(|&i| our_values[i].to_bits() != their_values[i].to_bits());
    let element = element.map_or("every element decodes the same".to_owned(), |i| {
        format!(
            "element {i} (input {:e}) decodes to {:e} here, {:e} in ggml",
            input[i], our_values[i], their_values[i]
        )
    });
    format!(
        "{} {what}: block {block_idx} differs first at byte {byte} ({:#04x} here, {:#04x} in ggml); \
         {element}\nblock input: {input:?}",
        kquant.name, our_block[byte], their_block[byte]
    )
}

/// A standard normal sample (Box-Muller; `u1` in (0, 1] keeps the logarithm finite).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Rows of 1,024 elements (four super-blocks) from each distribution and edge case.
fn random_cases(seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    const ROWS: usize = 16;
    const N: usize = ROWS * 1024;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gen = |f: &mut dyn FnMut(&mut StdRng, usize) -> f32| -> Vec<f32> {
        (0..N).map(|i| f(&mut rng, i)).collect()
    };
    vec![
        ("normal", gen(&mut |rng, _| normal(rng))),
        (
            "normal weights (σ = 0.02)",
            gen(&mut |rng, _| 0.02 * normal(rng)),
        ),
        ("uniform", gen(&mut |rng, _| rng.gen_range(-1.0f32..1.0))),
        (
            "positive uniform",
            gen(&mut |rng, _| rng.gen_range(0.0f32..3.0)),
        ),
        (
            "cauchy",
            gen(&mut |rng, _| (std::f32::consts::PI * (rng.gen::<f32>() - 0.5)).tan()),
        ),
        (
            "normal with rare outliers",
            gen(&mut |rng, _| {
                let outlier = if rng.gen_bool(0.005) { 300.0 } else { 1.0 };
                outlier * normal(rng)
            }),
        ),
        (
            "sparse",
            gen(&mut |rng, _| if rng.gen_bool(0.05) { normal(rng) } else { 0.0 }),
        ),
        ("zeros", vec![0.0; N]),
        ("negative zeros", vec![-0.0; N]),
        ("constant", vec![0.37; N]),
        ("negative constant", vec![-1.5; N]),
        (
            "one zero sub-block per super-block",
            gen(&mut |rng, i| {
                if (i % QK_K) / 16 == 5 {
                    0.0
                } else {
                    normal(rng)
                }
            }),
        ),
        (
            "tiny sub-blocks among normal ones",
            gen(&mut |rng, i| {
                let tiny = if (i / 32) % 3 == 0 { 1e-6 } else { 1.0 };
                tiny * normal(rng)
            }),
        ),
        (
            "halves and integers (rounding ties)",
            gen(&mut |rng, _| 0.5 * rng.gen_range(-64i32..=64) as f32),
        ),
        (
            "halves around a max of 32",
            gen(&mut |rng, i| {
                if i % 16 == 0 {
                    32.0
                } else {
                    rng.gen_range(-32i32..32) as f32 + 0.5
                }
            }),
        ),
        (
            // Weights stored in bf16 or f16 have short mantissas, so the scaled values and
            // quotients land on exact ties far more often than random f32s do.
            "bf16 weights (σ = 0.02)",
            gen(&mut |rng, _| f32::from_bits((0.02 * normal(rng)).to_bits() & 0xffff_0000)),
        ),
        (
            "f16 weights (σ = 0.05)",
            gen(&mut |rng, _| f32::from(half::f16::from_f32(0.05 * normal(rng)))),
        ),
        (
            "alternating equal magnitudes",
            gen(&mut |_, i| if i % 2 == 0 { 2.0 } else { -2.0 }),
        ),
        (
            "subnormal",
            gen(&mut |rng, _| f32::MIN_POSITIVE * rng.gen_range(-1.0f32..1.0)),
        ),
        (
            "around GROUP_MAX_EPS",
            gen(&mut |rng, _| 1e-15 * rng.gen_range(-4.0f32..4.0)),
        ),
        (
            "small normal (1e-20)",
            gen(&mut |rng, _| 1e-20 * normal(rng)),
        ),
        ("large (1e6)", gen(&mut |rng, _| 1e6 * normal(rng))),
        (
            "huge (1e15, squares overflow in f32 sums)",
            gen(&mut |rng, _| 1e15 * normal(rng)),
        ),
        (
            "near f32::MAX",
            gen(&mut |rng, _| f32::MAX * rng.gen_range(-1.0f32..1.0)),
        ),
        (
            "mixed magnitudes",
            gen(&mut |rng, _| {
                let exponent = rng.gen_range(-40i32..38);
                normal(rng) * 10f32.powi(exponent)
            }),
        ),
    ]
}

fn assert_random_rows_match(kquant: &KQuant) {
    for seed in [1, 2] {
        for (what, values) in random_cases(seed) {
            assert_matches_ggml(kquant, &format!("{what} (seed {seed})"), &values, 1024);
        }
    }
}

#[test]
fn q6_k_matches_ggml_on_random_rows_and_edge_cases() {
    assert_random_rows_match(&Q6_K);
}

#[test]
fn q4_k_matches_ggml_on_random_rows_and_edge_cases() {
    assert_random_rows_match(&Q4_K);
}

/// Elements compared per tensor: rows spread evenly over a larger tensor (a debug build
/// quantizes MiniLM's 22.7 M weights in about a minute; this keeps both types at seconds).
const MAX_ELEMENTS_PER_TENSOR: usize = 128 * 1024;

/// Every 2-D F32 tensor of a safetensors file as `(name, values, n_per_row)`: rows whose
/// length is a multiple of 256 stay rows; other tensors become rows of 256 of their leading
/// whole super-blocks. Of a tensor above [`MAX_ELEMENTS_PER_TENSOR`], every k-th row.
fn matrices(path: &Path) -> Vec<(String, Vec<f32>, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut matrices: Vec<_> = tensors
        .tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == Dtype::F32 && view.shape().len() == 2)
        .filter_map(|(name, view)| {
            let mut values = f32_values(view.data());
            let row = view.shape()[1];
            let n_per_row = if row.is_multiple_of(QK_K) { row } else { QK_K };
            values.truncate(values.len() / n_per_row * n_per_row);
            let rows = values.len() / n_per_row;
            let stride = rows.div_ceil((MAX_ELEMENTS_PER_TENSOR / n_per_row).max(1));
            if stride > 1 {
                values = values
                    .chunks_exact(n_per_row)
                    .step_by(stride)
                    .flatten()
                    .copied()
                    .collect();
            }
            (!values.is_empty()).then_some((name, values, n_per_row))
        })
        .collect();
    matrices.sort_by(|a, b| a.0.cmp(&b.0));
    matrices
}

fn assert_model_matches(kquant: &KQuant, path: &Path, expected_matrices: usize) {
    let matrices = matrices(path);
    assert_eq!(
        matrices.len(),
        expected_matrices,
        "2-D tensors of {}",
        path.display()
    );
    for (name, values, n_per_row) in matrices {
        assert_matches_ggml(kquant, &name, &values, n_per_row);
    }
}

fn digits() -> PathBuf {
    fixture("digits/digits_mlp_fp32.safetensors")
}

fn minilm() -> PathBuf {
    minilm_dir().join("model.safetensors")
}

#[test]
fn q6_k_matches_ggml_on_the_digits_mlp() {
    assert_model_matches(&Q6_K, &digits(), 3);
}

#[test]
fn q4_k_matches_ggml_on_the_digits_mlp() {
    assert_model_matches(&Q4_K, &digits(), 3);
}

/// MiniLM's 2-D tensors: 36 encoder Linear weights, three embedding tables and the pooler.
const MINILM_MATRICES: usize = 40;

#[test]
fn q6_k_matches_ggml_on_minilm() {
    assert_model_matches(&Q6_K, &minilm(), MINILM_MATRICES);
}

#[test]
fn q4_k_matches_ggml_on_minilm() {
    assert_model_matches(&Q4_K, &minilm(), MINILM_MATRICES);
}

/// A job with a K-quant scheme writes a GGUF file that gguf-py opens, whose blocks are
/// llama.cpp's bytes for the uploaded weights, and whose decoding by gguf-py equals quantd's
/// own (the `dequantized` format). A row that is not a multiple of 256 falls back to F16.
#[tokio::test]
async fn k_quant_jobs_write_gguf_with_llama_cpp_bytes_that_gguf_py_decodes_as_we_do() {
    let mut rng = StdRng::seed_from_u64(9);
    let weight: Vec<f32> = (0..8 * 512).map(|_| normal(&mut rng) * 0.05).collect();
    let narrow: Vec<f32> = (0..4 * 96).map(|_| normal(&mut rng)).collect();
    let bias: Vec<f32> = (0..8).map(|_| normal(&mut rng)).collect();
    let model_bytes = safetensors_file(&[
        ("fc.weight", "F32", vec![8, 512], le_bytes(&weight)),
        ("fc.bias", "F32", vec![8], le_bytes(&bias)),
        ("narrow.weight", "F32", vec![4, 96], le_bytes(&narrow)),
    ]);
    let app = spawn_app().await;
    let original = app.data_dir.path().join("original.safetensors");
    std::fs::write(&original, &model_bytes).unwrap();
    let response = app.upload_model("kq", model_bytes).await;
    assert_eq!(response.status(), 201);
    let model: serde_json::Value = response.json().await.unwrap();

    for (scheme, kquant, file_type) in [("q6_k", &Q6_K, 18), ("q4_k", &Q4_K, 14)] {
        let artifact = app
            .run_job(json!({"model_id": model["id"], "scheme": scheme, "format": "gguf"}))
            .await;
        let id = artifact["id"].as_str().unwrap();
        let gguf = app
            .download(&format!("/api/v1/artifacts/{id}/download"))
            .await;
        let path = app.data_dir.path().join(format!("{scheme}.gguf"));
        std::fs::write(&path, &gguf).unwrap();
        let checked = run_interop_script("check_gguf.py", &[&path, &original]);
        assert_eq!(checked["metadata"]["general.file_type"], file_type);
        let tensors = &checked["tensors"];
        assert_eq!(tensors["fc.weight"]["type"], kquant.name, "{checked}");
        assert_eq!(tensors["fc.bias"]["type"], "F32");
        assert_eq!(
            tensors["narrow.weight"]["type"], "F16",
            "96 is no multiple of 256"
        );
        let note = artifact["report"]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "narrow.weight")
            .map(|t| t.to_string())
            .unwrap();
        assert!(note.contains("256"), "the report says why: {note}");

        let llama_cpp = ggml_quantize(kquant, &weight, 512);
        assert_eq!(
            tensors["fc.weight"]["sha256"],
            format!("{:x}", Sha256::digest(&llama_cpp)),
            "{scheme}: the GGUF's blocks are not llama.cpp's bytes"
        );

        let decoded_artifact = app
            .run_job(json!({"model_id": model["id"], "scheme": scheme, "format": "dequantized"}))
            .await;
        let id = decoded_artifact["id"].as_str().unwrap();
        let decoded = app
            .download(&format!("/api/v1/artifacts/{id}/download"))
            .await;
        let decoded = SafeTensors::deserialize(&decoded).unwrap();
        let ours = f32_values(decoded.tensor("fc.weight").unwrap().data());
        let theirs: Vec<f32> = tensors["fc.weight"]["dequantized"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            ours, theirs,
            "{scheme}: gguf-py decodes the blocks differently"
        );
        assert_eq!(ours, ggml_dequantize(kquant, &llama_cpp));
    }
    app.stop().await;
}
