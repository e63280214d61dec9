//! GGUF output: ggml block types byte-for-byte what gguf-py's reference quantizers make, a file
//! gguf-py's GGUFReader opens, and error figures that agree with an independent numpy table.

use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, digits_model_bytes, fixture, spawn_app, TestApp};
use crate::readers::run_interop_script;

async fn gguf_artifact(
    app: &TestApp,
    model_id: &Value,
    scheme: &str,
    format: &str,
) -> (Value, Vec<u8>) {
    let artifact = app
        .run_job(json!({"model_id": model_id, "scheme": scheme, "format": format}))
        .await;
    let artifact_id = artifact["id"].as_str().unwrap();
    let bytes = app
        .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
        .await;
    (artifact, bytes)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// rel_rmse of each weight as computed independently in numpy (../shared/fixtures/digits).
fn fixture_rel_rmse(scheme: &str) -> Value {
    let table: Value =
        serde_json::from_slice(&std::fs::read(fixture("digits/digits_quant_table.json")).unwrap())
            .unwrap();
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scheme"] == scheme)
        .unwrap()["rel_rmse_weights"]
        .clone()
}

fn assert_report_matches_fixture(artifact: &Value, fixture_scheme: &str) {
    let expected = fixture_rel_rmse(fixture_scheme);
    for tensor in artifact["report"]["tensors"].as_array().unwrap() {
        let name = tensor["name"].as_str().unwrap();
        if let Some(reference) = expected.get(name).and_then(Value::as_f64) {
            let ours = tensor["rel_rmse"].as_f64().unwrap();
            assert!(
                (ours - reference).abs() <= 0.02 * reference,
                "{fixture_scheme} {name}: rel_rmse {ours} vs numpy {reference}"
            );
        }
    }
}

#[tokio::test]
async fn gguf_block_types_match_gguf_py_byte_for_byte() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let original_path = fixture("digits/digits_mlp_fp32.safetensors");
    for scheme in ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"] {
        let (artifact, bytes) = gguf_artifact(&app, &model["id"], scheme, "gguf").await;
        assert_eq!(artifact["format"], "gguf");
        let path = app.data_dir.path().join(format!("{scheme}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let checked = run_interop_script("check_gguf.py", &[&path, &original_path]);
        let expected_file_type = match scheme {
            "q8_0" => 7,
            "q4_0" => 2,
            "q4_1" => 3,
            "q5_0" => 8,
            _ => 9,
        };
        assert_eq!(
            checked["metadata"]["general.file_type"], expected_file_type,
            "{}",
            checked["metadata"]
        );
        assert_eq!(checked["metadata"]["general.architecture"], "quantd");
        assert_eq!(checked["metadata"]["general.quantization_version"], 2);
        assert_eq!(checked["metadata"]["general.name"], "digits");
        let tensors = checked["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), 6);
        // Our own dequantization (the dequantized format) equals gguf-py's.
        let (_, dequantized_bytes) = gguf_artifact(&app, &model["id"], scheme, "dequantized").await;
        let dequantized = SafeTensors::deserialize(&dequantized_bytes).unwrap();
        for (name, entry) in tensors {
            if name.ends_with(".bias") {
                assert_eq!(entry["type"], "F32", "{name}");
                continue;
            }
            assert_eq!(entry["type"], scheme.to_uppercase(), "{name}");
            assert_eq!(
                entry["bytes_equal"], true,
                "{scheme} {name}: bytes differ from gguf.quants.quantize"
            );
            let theirs: Vec<f32> = entry["dequantized"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                theirs,
                f32s(dequantized.tensor(name).unwrap().data()),
                "{scheme} {name}: dequantization differs"
            );
        }
        if let Some(fixture_scheme) = match scheme {
            "q8_0" => Some("gguf_Q8_0"),
            "q4_0" => Some("gguf_Q4_0"),
            "q4_1" => Some("gguf_Q4_1"),
            _ => None,
        } {
            assert_report_matches_fixture(&artifact, fixture_scheme);
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn int8_error_figures_agree_with_an_independent_numpy_computation() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    for (granularity, fixture_scheme) in [
        ("channel", "int8_per_channel"),
        ("tensor", "int8_per_tensor"),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"model_id": model["id"], "scheme": "int8", "options": {"granularity": granularity}}))
            .send()
            .await
            .unwrap();
        let job: Value = response.json().await.unwrap();
        let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
        let artifact = app
            .get_json(&format!(
                "/api/v1/artifacts/{}",
                job["artifact_id"].as_str().unwrap()
            ))
            .await;
        assert_report_matches_fixture(&artifact, fixture_scheme);
    }
    app.stop().await;
}

#[tokio::test]
async fn gguf_rows_that_do_not_fit_a_block_fall_back_to_f16_and_say_so() {
    use crate::helpers::{f32_bytes, safetensors_file};
    let app = spawn_app().await;
    let values: Vec<f32> = (0..40).map(|i| i as f32 / 40.0 - 0.5).collect();
    let block_fit: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let file = safetensors_file(&[
        ("odd.weight", "F32", vec![4, 10], f32_bytes(&values)),
        ("even.weight", "F32", vec![2, 32], f32_bytes(&block_fit)),
        (
            "position_ids",
            "I64",
            vec![1, 4],
            (0i64..4).flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ]);
    let response = app.upload_model("odd", file).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let (artifact, bytes) = gguf_artifact(&app, &model["id"], "q8_0", "gguf").await;
    let report = artifact["report"]["tensors"].as_array().unwrap();
    let odd = report.iter().find(|t| t["name"] == "odd.weight").unwrap();
    assert_eq!(odd["scheme"], "f16");
    assert!(
        odd["reason"].as_str().unwrap().contains("stored as F16"),
        "{odd}"
    );
    let parsed =
        quantd::formats::gguf::read_gguf(&bytes, &quantd::formats::gguf::GgufLimits::REFERENCE)
            .unwrap();
    let types: Vec<(String, u32)> = parsed
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ggml_type))
        .collect();
    assert!(types.contains(&("odd.weight".into(), 1)), "{types:?}");
    assert!(types.contains(&("even.weight".into(), 8)), "{types:?}");
    assert!(types.contains(&("position_ids".into(), 27)), "{types:?}");
    app.stop().await;
}

#[tokio::test]
async fn scheme_and_format_pairs_that_cannot_be_expressed_are_refused_up_front() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    for (scheme, format) in [("int8", "gguf"), ("q4_0", "safetensors")] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"model_id": model["id"], "scheme": scheme, "format": format}))
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "unsupported-combination").await;
    }
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&json!({"model_id": model["id"], "scheme": "q8_0", "options": {"block": 64}, "format": "gguf"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "invalid-option").await;
    assert_eq!(problem["field"], "block");
    let _ = digits_model_bytes();
    app.stop().await;
}

#[tokio::test]
async fn four_bit_error_figures_agree_with_an_independent_numpy_computation() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    for (scheme, options, fixture_scheme) in [
        (
            "int4",
            json!({"group_size": 32, "symmetric": true, "scale": "absmax/7"}),
            "int4_g32_sym",
        ),
        (
            "int4",
            json!({"group_size": 32, "symmetric": false}),
            "int4_g32_asym",
        ),
        ("nf4", json!({}), "nf4_b64"),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"model_id": model["id"], "scheme": scheme, "options": options}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let artifact = app
            .get_json(&format!(
                "/api/v1/artifacts/{}",
                job["artifact_id"].as_str().unwrap()
            ))
            .await;
        assert_report_matches_fixture(&artifact, fixture_scheme);
    }
    app.stop().await;
}

#[tokio::test]
async fn nf4_artifacts_use_the_bitsandbytes_layout() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    for double_quant in [false, true] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"model_id": model["id"], "scheme": "nf4", "options": {"double_quant": double_quant}}))
            .send()
            .await
            .unwrap();
        let job: Value = response.json().await.unwrap();
        let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let artifact_id = job["artifact_id"].as_str().unwrap();
        let bytes = app
            .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
            .await;
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let weight = file.tensor("fc1.weight").unwrap();
        assert_eq!(weight.dtype(), safetensors::Dtype::U8);
        assert_eq!(weight.shape(), &[128 * 64 / 2, 1]);
        let state = file
            .tensor("fc1.weight.quant_state.bitsandbytes__nf4")
            .unwrap();
        let state: Value = serde_json::from_slice(state.data()).unwrap();
        assert_eq!(state["quant_type"], "nf4");
        assert_eq!(state["blocksize"], 64);
        assert_eq!(state["shape"], json!([128, 64]));
        assert_eq!(state["dtype"], "float32");
        assert_eq!(file.tensor("fc1.weight.quant_map").unwrap().shape(), &[16]);
        assert_eq!(
            file.tensor("fc1.weight.nested_absmax").is_ok(),
            double_quant
        );
        if double_quant {
            assert!(state["nested_offset"].is_number());
            assert_eq!(
                file.tensor("fc1.weight.absmax").unwrap().dtype(),
                safetensors::Dtype::U8
            );
        }
        let config: Value = serde_json::from_slice(
            &app.download(&format!(
                "/api/v1/artifacts/{artifact_id}/files/config.json"
            ))
            .await,
        )
        .unwrap();
        assert_eq!(
            config["quantization_config"]["quant_method"],
            "bitsandbytes"
        );
        assert_eq!(
            config["quantization_config"]["bnb_4bit_use_double_quant"],
            double_quant
        );
    }
    // NF4 cannot share a checkpoint with compressed-tensors schemes.
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&json!({"model_id": model["id"], "scheme": "nf4", "options": {"overrides": {"fc1": {"scheme": "int8"}}}}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "unsupported-combination").await;
    app.stop().await;
}
