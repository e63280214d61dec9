//! Every `QUANTD_KERNELS` choice this CPU runs (scalar first, then each SIMD ISA) quantizes and
//! serves the same results: one server per forced ISA quantizes the digits MLP (int8, q4_0 GGUF)
//! and MiniLM (int8), serves them and their f32 originals, and every output is compared with the
//! scalar server's and with the fixture's known quality.
//!
//! What is exact and what is not (see `src/infer/kernels/mod.rs`): artifacts are byte-identical
//! on every ISA; the GEMMs differ only in float summation order and FMA contraction (their
//! integer block sums are exact), so logits and embeddings are compared with a tolerance, and
//! the digits predictions (argmax) exactly.

use serde_json::{json, Value};

use quantd::dispatch::Dispatch;
use quantd::quant::kernels::KernelChoice;

use crate::helpers::{spawn_app_with, TestApp};
use crate::inference::{test_split, upload_digits_with_config};
use crate::minilm::upload_minilm;

/// The digits test split's accuracy with the FP32 model (`tests/api/inference.rs`).
const DIGITS_FP32_ACCURACY: f64 = 0.9694444444444444;

/// Scalar first (it defines the results), then every SIMD ISA this CPU runs.
fn forced_choices() -> Vec<KernelChoice> {
    let mut choices = vec![KernelChoice::Scalar];
    choices.extend(
        Dispatch::available_isas()
            .into_iter()
            .map(KernelChoice::from),
    );
    choices.dedup();
    choices
}

/// What one server computed with one forced ISA.
struct Served {
    choice: KernelChoice,
    /// (variant, sha256 of the artifact or "" for the upload, logits of the 360 test rows).
    digits: Vec<(&'static str, String, Vec<f64>)>,
    /// (variant, embeddings of the fixture sentences).
    minilm: Vec<(&'static str, Vec<Vec<f64>>)>,
}

/// The logits of the whole digits test split (360 × 10, row-major) from one v2 request.
async fn digits_logits(app: &TestApp, model: &str) -> Vec<f64> {
    let (rows, _) = test_split();
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{model}/infer")))
        .json(&json!({"inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn accuracy(logits: &[f64]) -> f64 {
    let (_, labels) = test_split();
    let correct = logits
        .chunks(10)
        .zip(&labels)
        .filter(|(row, &label)| argmax(row) as i64 == label)
        .count();
    correct as f64 / labels.len() as f64
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Embeddings of the fixture's sentences through `/v1/embeddings`.
async fn minilm_embeddings(app: &TestApp, model: &str) -> Vec<Vec<f64>> {
    let sentences = reference()["sentences"].clone();
    let response = app
        .client
        .post(app.url("/v1/embeddings"))
        .json(&json!({"model": model, "input": sentences}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn reference() -> Value {
    let path = crate::helpers::fixture("minilm/minilm_embeddings.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Quantizes with the server's forced ISA (checking the report says so); returns the artifact.
async fn quantize(app: &TestApp, isa: &str, job: Value) -> Value {
    let artifact = app.run_job(job.clone()).await;
    assert_eq!(artifact["report"]["kernel_isa"], isa, "{job}");
    artifact
}

/// Starts a server with `choice` forced and runs every model variant on it.
async fn serve_with(choice: KernelChoice) -> Served {
    let app = spawn_app_with(|settings| settings.kernels = choice).await;
    let dispatch = Dispatch::select(choice).unwrap();
    let info = app.get_json("/api/v1/info").await;
    let isa = dispatch.quant.isa.to_string();
    assert_eq!(info["kernel_isa"], isa, "{choice:?}");
    assert_eq!(info["inference_isa"], dispatch.gemm.isa.to_string());
    assert_eq!(
        dispatch.gemm.isa.family(),
        dispatch.quant.isa,
        "the inference kernels follow the forced ISA"
    );

    let digits_id = upload_digits_with_config(&app).await;
    let mut digits = vec![("f32", String::new(), digits_logits(&app, &digits_id).await)];
    for (variant, job) in [
        ("int8", json!({"scheme": "int8"})),
        ("q4_0", json!({"scheme": "q4_0", "format": "gguf"})),
    ] {
        let mut job = job;
        job["model_id"] = json!(digits_id);
        let artifact = quantize(&app, &isa, job).await;
        let id = artifact["id"].as_str().unwrap();
        let metadata = app.get_json(&format!("/v2/models/{id}")).await;
        assert_eq!(metadata["parameters"]["weights"], variant, "held quantized");
        let sha256 = artifact["sha256"].as_str().unwrap().to_owned();
        digits.push((variant, sha256, digits_logits(&app, id).await));
    }

    let minilm_id = upload_minilm(&app).await;
    let mut minilm = vec![("f32", minilm_embeddings(&app, &minilm_id).await)];
    let artifact = quantize(&app, &isa, json!({"model_id": minilm_id, "scheme": "int8"})).await;
    let int8_id = artifact["id"].as_str().unwrap();
    minilm.push(("int8", minilm_embeddings(&app, int8_id).await));
    app.stop().await;
    Served {
        choice,
        digits,
        minilm,
    }
}

/// The fixture's quality, on every ISA: the FP32 digits accuracy exactly, the quantized ones
/// within a point, MiniLM's cosine to sentence-transformers as `tests/api/embeddings.rs` holds.
fn check_quality(served: &Served) {
    let choice = served.choice;
    for (variant, _, logits) in &served.digits {
        let accuracy = accuracy(logits);
        match *variant {
            "f32" => assert_eq!(accuracy, DIGITS_FP32_ACCURACY, "{choice:?} f32"),
            _ => assert!(
                (accuracy - DIGITS_FP32_ACCURACY).abs() <= 0.01,
                "{choice:?} {variant}: accuracy {accuracy}"
            ),
        }
    }
    let expected: Vec<Vec<f64>> =
        serde_json::from_value(reference()["embeddings_sentence_transformers"].clone()).unwrap();
    for (variant, embeddings) in &served.minilm {
        let floor = if *variant == "f32" { 0.99999 } else { 0.998 };
        for (got, want) in embeddings.iter().zip(&expected) {
            let similarity = cosine(got, want);
            assert!(
                similarity >= floor,
                "{choice:?} MiniLM {variant}: cosine {similarity} to sentence-transformers"
            );
        }
    }
}

/// The same answers as the scalar server: identical artifacts and predictions, logits within
/// float rounding of the GEMMs' summation order, embeddings within a cosine tolerance.
///
/// The tolerances: f32 weights run the f32 GEMM, whose sums differ in order only (measured
/// 0 on this model); quantized weights run the block GEMMs, whose exact integer sums are
/// rescaled in another order, and the next layer quantizes its activations again per
/// 32-element block, so a value that rounding moves across a code boundary changes one code
/// by one step (measured: int8 3e-7, q4_0 1.4e-3 of the row's largest logit on AVX2).
fn check_against_scalar(scalar: &Served, served: &Served) {
    let choice = served.choice;
    for ((variant, sha_ref, reference), (_, sha, logits)) in
        scalar.digits.iter().zip(&served.digits)
    {
        let tolerance = if *variant == "f32" { 1e-5 } else { 1e-2 };
        assert_eq!(sha, sha_ref, "{choice:?} {variant}: artifact bytes");
        let mut worst = 0.0f64;
        for (row_ref, row) in reference.chunks(10).zip(logits.chunks(10)) {
            assert_eq!(
                argmax(row),
                argmax(row_ref),
                "{choice:?} {variant}: prediction"
            );
            let scale = row_ref.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for (x, y) in row.iter().zip(row_ref) {
                worst = worst.max((x - y).abs() / scale);
            }
        }
        eprintln!("{choice:?} {variant}: worst logit difference to scalar {worst:e} (relative to the row's largest)");
        assert!(
            worst <= tolerance,
            "{choice:?} {variant}: logits differ by {worst}"
        );
    }
    // Six layers of re-quantized activations compound the code flips above (measured: cosine
    // 0.99988 for int8 on AVX2); f32 differs by summation order only.
    for ((variant, reference), (_, embeddings)) in scalar.minilm.iter().zip(&served.minilm) {
        let floor = if *variant == "f32" { 0.99999 } else { 0.999 };
        let worst = embeddings
            .iter()
            .zip(reference)
            .map(|(got, want)| cosine(got, want))
            .fold(1.0f64, f64::min);
        eprintln!("{choice:?} MiniLM {variant}: worst cosine to scalar {worst}");
        assert!(
            worst >= floor,
            "{choice:?} MiniLM {variant}: cosine {worst} to the scalar server"
        );
    }
}

#[tokio::test]
async fn every_forced_isa_serves_what_the_scalar_kernels_serve() {
    let mut runs = Vec::new();
    for choice in forced_choices() {
        let served = serve_with(choice).await;
        check_quality(&served);
        runs.push(served);
    }
    let (scalar, simd) = runs.split_first().unwrap();
    assert_eq!(scalar.choice, KernelChoice::Scalar);
    for served in simd {
        check_against_scalar(scalar, served);
    }
}
