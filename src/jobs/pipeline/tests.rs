//! `quantize_file` on real files in a temp dir: what it writes and reports on the happy path,
//! and how each kind of failure comes back (never a half-written success).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{quantize_file, PipelineContext, PipelineError, PipelineOutput, ProgressCounters};
use crate::dispatch::Dispatch;
use crate::formats::safetensors::{Header, Limits};
use crate::jobs::output::ModelInfo;
use crate::jobs::pipeline::TensorAction;
use crate::jobs::spec::JobSpec;
use crate::quant::kernels::KernelChoice;

/// A safetensors file from `(name, dtype, shape, bytes)` in order.
fn safetensors(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    for (_, _, _, bytes) in tensors {
        file.extend_from_slice(bytes);
    }
    file
}

const LIMITS: Limits = Limits {
    max_header_bytes: 1 << 20,
    max_file_bytes: 1 << 30,
};

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A Linear weight, its bias, an embedding table and an integer tensor: one tensor for each
/// planning rule.
fn small_model() -> Vec<u8> {
    let weight = (0..16 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0);
    let embedding = (0..10 * 64).map(|i| (i % 13) as f32 / 13.0);
    safetensors(&[
        ("fc.weight", "F32", vec![16, 64], f32_bytes(weight)),
        (
            "fc.bias",
            "F32",
            vec![16],
            f32_bytes((0..16).map(|i| i as f32)),
        ),
        (
            "embed_tokens.weight",
            "F32",
            vec![10, 64],
            f32_bytes(embedding),
        ),
        (
            "position_ids",
            "I64",
            vec![4],
            (0..4i64).flat_map(i64::to_le_bytes).collect(),
        ),
    ])
}

struct Run {
    dir: tempfile::TempDir,
    cancel: AtomicBool,
    progress: ProgressCounters,
}

impl Run {
    fn new() -> Self {
        Run {
            dir: tempfile::tempdir().unwrap(),
            cancel: AtomicBool::new(false),
            progress: ProgressCounters::default(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `model`, runs the pipeline on it with `scheme` / `format`, and returns the result
    /// with the output's path.
    fn quantize(
        &self,
        model: &[u8],
        scheme: &str,
        format: &str,
    ) -> (Result<PipelineOutput, PipelineError>, PathBuf) {
        let input = self.path("model.safetensors");
        std::fs::write(&input, model).unwrap();
        let output = self.path("out");
        let spec = JobSpec::parse(scheme, None, Some(format)).unwrap();
        let ctx = PipelineContext {
            dispatch: Dispatch::select(KernelChoice::Auto).unwrap(),
            limits: LIMITS,
            cancel: &self.cancel,
            progress: &self.progress,
            tensor_delay: Duration::ZERO,
        };
        let model_info = ModelInfo {
            name: Some("small".into()),
            config: None,
        };
        (
            quantize_file(&input, &output, &spec, &model_info, &ctx),
            output,
        )
    }
}

fn invalid_slug(result: Result<PipelineOutput, PipelineError>) -> &'static str {
    match result {
        Err(PipelineError::InvalidInput { slug, .. }) => slug,
        Err(other) => panic!("expected an invalid-input error, got {other:?}"),
        Ok(_) => panic!("expected an invalid-input error, got an artifact"),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn int8_output_is_the_file_it_reports_with_one_entry_per_tensor() {
    let run = Run::new();
    let (result, output) = run.quantize(&small_model(), "int8", "safetensors");
    let result = result.unwrap();
    let bytes = read(&output);

    assert_eq!(result.size_bytes, bytes.len() as u64);
    assert_eq!(result.sha256, hex::encode(Sha256::digest(&bytes)));
    let header = Header::parse_file(&bytes, &LIMITS).unwrap();
    let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fc.weight",
            "fc.weight_scale",
            "fc.bias",
            "embed_tokens.weight",
            "position_ids"
        ]
    );

    let report = &result.report;
    assert_eq!((report.n_tensors, report.n_quantized), (4, 1));
    assert_eq!(report.scheme, "int8");
    let actions: Vec<TensorAction> = report.tensors.iter().map(|t| t.action).collect();
    assert_eq!(
        actions,
        [
            TensorAction::Quantized,
            TensorAction::Kept,
            TensorAction::Kept,
            TensorAction::Kept
        ]
    );
    let weight = &report.tensors[0];
    assert!(weight.sqnr_db.unwrap() > 35.0, "{weight:?}");
    assert!((weight.bits_per_weight.unwrap() - (8.0 + 32.0 / 64.0)).abs() < 1e-9);
    assert!(report.tensors[2]
        .reason
        .as_deref()
        .unwrap()
        .contains("embedding"));
    assert!(result.quantization_config.is_some());

    let progress = run.progress.snapshot();
    assert_eq!((progress.tensors_done, progress.tensors_total), (4, 4));
    assert_eq!(progress.bytes_done, progress.bytes_total);
    assert_eq!(progress.bytes_total, small_model().len() as u64);
}

#[test]
fn gguf_output_has_no_compressed_tensors_config_and_refuses_what_gguf_cannot_hold() {
    let run = Run::new();
    let model = safetensors(&[(
        "fc.weight",
        "F32",
        vec![4, 64],
        f32_bytes((0..256).map(|i| i as f32 / 256.0)),
    )]);
    let (result, output) = run.quantize(&model, "q8_0", "gguf");
    let result = result.unwrap();
    assert!(result.quantization_config.is_none());
    assert_eq!(&read(&output)[..4], b"GGUF");
    assert_eq!(result.report.tensors[0].action, TensorAction::Quantized);

    let unsigned = safetensors(&[("mask", "U8", vec![4], vec![1, 0, 1, 0])]);
    let (result, _) = Run::new().quantize(&unsigned, "q8_0", "gguf");
    assert_eq!(invalid_slug(result), "unsupported-dtype");
}

#[test]
fn non_finite_weights_are_the_models_fault_not_a_retryable_error() {
    for scheme in ["int8", "int4", "q4_0", "nf4", "binary", "q6_k"] {
        let mut values: Vec<f32> = (0..8 * 256).map(|i| (i % 7) as f32 - 3.0).collect();
        values[300] = f32::NAN;
        let model = safetensors(&[("fc.weight", "F32", vec![8, 256], f32_bytes(values))]);
        let format = if matches!(scheme, "q4_0" | "q6_k") {
            "gguf"
        } else {
            "safetensors"
        };
        let (result, _) = Run::new().quantize(&model, scheme, format);
        assert_eq!(invalid_slug(result), "non-finite-weights", "{scheme}");
    }
}

#[test]
fn a_stored_model_that_does_not_parse_is_invalid_input() {
    let mut model = small_model();
    model.truncate(model.len() - 3);
    let (result, _) = Run::new().quantize(&model, "int8", "safetensors");
    assert_eq!(invalid_slug(result), "stored-model-invalid");
}

#[test]
fn a_name_the_layout_adds_cannot_collide_with_an_uploaded_tensor() {
    let model = safetensors(&[
        (
            "fc.weight",
            "F32",
            vec![2, 32],
            f32_bytes((0..64).map(|i| i as f32)),
        ),
        ("fc.weight_scale", "F32", vec![2], f32_bytes([1.0, 2.0])),
    ]);
    let (result, _) = Run::new().quantize(&model, "int8", "safetensors");
    assert_eq!(invalid_slug(result), "tensor-name-collision");
}

#[test]
fn cancellation_stops_the_run_before_the_next_tensor() {
    let run = Run::new();
    run.cancel.store(true, Ordering::Relaxed);
    let (result, _) = run.quantize(&small_model(), "int8", "safetensors");
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{:?}",
        result.as_ref().err()
    );
    assert_eq!(run.progress.snapshot().tensors_done, 0);
}

#[test]
fn an_output_path_that_cannot_be_created_is_an_io_error() {
    let run = Run::new();
    let input = run.path("model.safetensors");
    std::fs::write(&input, small_model()).unwrap();
    let spec = JobSpec::parse("int8", None, None).unwrap();
    let ctx = PipelineContext {
        dispatch: Dispatch::select(KernelChoice::Scalar).unwrap(),
        limits: LIMITS,
        cancel: &run.cancel,
        progress: &run.progress,
        tensor_delay: Duration::ZERO,
    };
    let missing_dir = run.path("no/such/dir/out");
    let result = quantize_file(
        &input,
        &missing_dir,
        &spec,
        &ModelInfo {
            name: None,
            config: None,
        },
        &ctx,
    );
    assert!(
        matches!(result, Err(PipelineError::Io(_))),
        "{:?}",
        result.as_ref().err()
    );
}
