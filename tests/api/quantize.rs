//! The full path on a real trained model: upload → int8 job → download → decode every weight and
//! check it against the original, and check test accuracy of the quantized MLP.

use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::helpers::{digits_model_bytes, fixture, spawn_app};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Dequantized weights of `name` from a compressed-tensors int8 file, with the per-element
/// bound (half a quantization step) of the scale that applies.
fn dequantize(file: &SafeTensors, name: &str) -> (Vec<f32>, Vec<f32>) {
    let weight = file.tensor(name).unwrap();
    assert_eq!(weight.dtype(), safetensors::Dtype::I8);
    let rows = weight.shape()[0];
    let cols: usize = weight.shape()[1..].iter().product();
    let q: Vec<i8> = weight.data().iter().map(|&b| b as i8).collect();
    let scales = f32s(file.tensor(&format!("{name}_scale")).unwrap().data());
    let zero_points: Option<Vec<i8>> = file
        .tensor(&format!("{name}_zero_point"))
        .ok()
        .map(|t| t.data().iter().map(|&b| b as i8).collect());
    let mut values = Vec::with_capacity(q.len());
    let mut bounds = Vec::with_capacity(q.len());
    for row in 0..rows {
        let index = if scales.len() == 1 { 0 } else { row };
        let scale = scales[index];
        let zero = zero_points.as_ref().map_or(0, |z| z[index]) as f32;
        for col in 0..cols {
            values.push((q[row * cols + col] as f32 - zero) * scale);
            bounds.push(scale * 0.5 * (1.0 + 1e-5) + 1e-7);
        }
    }
    (values, bounds)
}

/// Test accuracy of the digits MLP with the given weights.
fn digits_accuracy(weights: &dyn Fn(&str) -> Vec<f32>) -> f64 {
    let split_bytes = std::fs::read(fixture("digits/digits_test_split.safetensors")).unwrap();
    let split = SafeTensors::deserialize(&split_bytes).unwrap();
    let x = f32s(split.tensor("x").unwrap().data());
    let y: Vec<i64> = split
        .tensor("y")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let layers = [("fc1", 64, 128), ("fc2", 128, 64), ("fc3", 64, 10)];
    let params: Vec<(Vec<f32>, Vec<f32>)> = layers
        .iter()
        .map(|(name, _, _)| {
            (
                weights(&format!("{name}.weight")),
                weights(&format!("{name}.bias")),
            )
        })
        .collect();
    let mut correct = 0;
    for (sample, &label) in y.iter().enumerate() {
        let mut activation = x[sample * 64..(sample + 1) * 64].to_vec();
        for (layer, &(_, inputs, outputs)) in layers.iter().enumerate() {
            let (w, b) = &params[layer];
            let mut next = vec![0f32; outputs];
            for (o, value) in next.iter_mut().enumerate() {
                let row = &w[o * inputs..(o + 1) * inputs];
                *value = b[o] + row.iter().zip(&activation).map(|(a, b)| a * b).sum::<f32>();
                if layer < 2 {
                    *value = value.max(0.0);
                }
            }
            activation = next;
        }
        let predicted = activation
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        if predicted as i64 == label {
            correct += 1;
        }
    }
    correct as f64 / y.len() as f64
}

async fn quantize_digits(options: Value) -> (Vec<u8>, Value, Value) {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let job_id = app
        .create_job_ok(model["id"].as_str().unwrap(), options)
        .await;
    let job = app.wait_for_job(&job_id).await;
    assert_eq!(job["state"], "succeeded", "job: {job}");
    assert_eq!(job["progress"]["tensors_done"], 6);
    let artifact_id = job["artifact_id"].as_str().unwrap().to_owned();
    let artifact = app
        .get_json(&format!("/api/v1/artifacts/{artifact_id}"))
        .await;
    let bytes = app
        .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
        .await;
    let config: Value = serde_json::from_slice(
        &app.download(&format!(
            "/api/v1/artifacts/{artifact_id}/files/config.json"
        ))
        .await,
    )
    .unwrap();
    app.stop().await;
    (bytes, artifact, config)
}

const FP32_ACCURACY: f64 = 0.9694444444444444;

async fn check_scheme(options: Value) {
    let original_bytes = digits_model_bytes();
    let original = SafeTensors::deserialize(&original_bytes).unwrap();
    let (bytes, artifact, config) = quantize_digits(options.clone()).await;
    let quantized = SafeTensors::deserialize(&bytes).unwrap();

    // Every weight within half a quantization step of the original; biases untouched.
    for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
        let reference = f32s(original.tensor(name).unwrap().data());
        let (values, bounds) = dequantize(&quantized, name);
        assert_eq!(values.len(), reference.len());
        for (i, ((value, bound), expected)) in
            values.iter().zip(&bounds).zip(&reference).enumerate()
        {
            assert!(
                (value - expected).abs() <= *bound,
                "{name}[{i}]: {value} vs {expected} (bound {bound})"
            );
        }
    }
    for name in ["fc1.bias", "fc2.bias", "fc3.bias"] {
        assert_eq!(
            quantized.tensor(name).unwrap().data(),
            original.tensor(name).unwrap().data()
        );
    }

    // The report covers every tensor, with plausible figures.
    let tensors = artifact["report"]["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 6);
    for tensor in tensors {
        if tensor["name"].as_str().unwrap().ends_with(".weight") {
            assert_eq!(tensor["action"], "quantized");
            assert!(tensor["sqnr_db"].as_f64().unwrap() > 30.0, "{tensor}");
            assert!(tensor["cosine"].as_f64().unwrap() > 0.999);
            assert!(
                tensor["bytes_after"].as_u64().unwrap() * 3
                    < tensor["bytes_before"].as_u64().unwrap()
            );
        } else {
            assert_eq!(tensor["action"], "kept");
        }
    }
    assert_eq!(artifact["options"], options);
    assert_eq!(
        config["quantization_config"]["quant_method"],
        "compressed-tensors"
    );
    assert_eq!(config["quantization_config"]["format"], "int-quantized");
    assert_eq!(
        config["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"],
        options["symmetric"]
    );

    let accuracy = digits_accuracy(&|name| {
        if name.ends_with(".weight") {
            dequantize(&quantized, name).0
        } else {
            f32s(quantized.tensor(name).unwrap().data())
        }
    });
    assert!(
        (accuracy - FP32_ACCURACY).abs() <= 0.005,
        "accuracy {accuracy} after {options}"
    );
}

#[test]
fn the_reference_forward_pass_reproduces_the_fixture_accuracy() {
    let bytes = digits_model_bytes();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let accuracy = digits_accuracy(&|name| f32s(file.tensor(name).unwrap().data()));
    assert_eq!(accuracy, FP32_ACCURACY);
}

#[tokio::test]
async fn int8_per_channel_symmetric_keeps_accuracy() {
    check_scheme(json!({"granularity": "channel", "symmetric": true})).await;
}

#[tokio::test]
async fn int8_per_channel_asymmetric_keeps_accuracy() {
    check_scheme(json!({"granularity": "channel", "symmetric": false})).await;
}

#[tokio::test]
async fn int8_per_tensor_symmetric_keeps_accuracy() {
    check_scheme(json!({"granularity": "tensor", "symmetric": true})).await;
}

#[tokio::test]
async fn int8_per_tensor_asymmetric_keeps_accuracy() {
    check_scheme(json!({"granularity": "tensor", "symmetric": false})).await;
}

#[tokio::test]
async fn non_float_and_half_precision_tensors_are_handled() {
    use crate::helpers::safetensors_file;
    let app = spawn_app().await;
    let positions: Vec<u8> = (0i64..8).flat_map(|v| v.to_le_bytes()).collect();
    let weights_f16: Vec<u8> = (0..32)
        .flat_map(|i| half::f16::from_f32((i as f32 - 16.0) / 8.0).to_le_bytes())
        .collect();
    let weights_bf16: Vec<u8> = (0..32)
        .flat_map(|i| half::bf16::from_f32((i as f32 - 10.0) / 4.0).to_le_bytes())
        .collect();
    let file = safetensors_file(&[
        ("position_ids", "I64", vec![1, 8], positions.clone()),
        ("a.weight", "F16", vec![4, 8], weights_f16),
        ("b.weight", "BF16", vec![8, 4], weights_bf16),
    ]);
    let response = app.upload_model("mixed", file).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["dtypes"], json!({"BF16": 1, "F16": 1, "I64": 1}));
    let job_id = app
        .create_job_ok(model["id"].as_str().unwrap(), json!({}))
        .await;
    let job = app.wait_for_job(&job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let bytes = app
        .download(&format!(
            "/api/v1/artifacts/{}/download",
            job["artifact_id"].as_str().unwrap()
        ))
        .await;
    let output = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        output.tensor("position_ids").unwrap().data(),
        &positions[..]
    );
    assert_eq!(
        output.tensor("a.weight").unwrap().dtype(),
        safetensors::Dtype::I8
    );
    let (values, _) = dequantize(&output, "a.weight");
    for (i, value) in values.iter().enumerate() {
        let expected = (i as f32 - 16.0) / 8.0;
        assert!(
            (value - expected).abs() <= 2.0 / 127.0 / 2.0 + 1e-6,
            "{i}: {value}"
        );
    }
    app.stop().await;
}

async fn run_job(app: &crate::helpers::TestApp, body: Value) -> (Value, Vec<u8>, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let job: Value = response.json().await.unwrap();
    let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let artifact_id = job["artifact_id"].as_str().unwrap();
    let artifact = app
        .get_json(&format!("/api/v1/artifacts/{artifact_id}"))
        .await;
    let bytes = app
        .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
        .await;
    (job, bytes, artifact)
}

#[tokio::test]
async fn skip_patterns_and_overrides_mix_schemes_in_one_job() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let options = json!({
        "granularity": "channel",
        "symmetric": true,
        "skip": ["^fc3\\."],
        "overrides": {"^fc2\\.": {"scheme": "int8", "options": {"granularity": "tensor", "symmetric": false}}}
    });
    let (job, bytes, artifact) = run_job(
        &app,
        json!({"model_id": model["id"], "scheme": "int8", "options": options}),
    )
    .await;
    assert_eq!(
        job["options"], options,
        "canonical options keep skip and overrides"
    );
    let file = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("fc1.weight_scale").unwrap().shape(), &[128, 1]);
    assert!(file.tensor("fc1.weight_zero_point").is_err());
    assert_eq!(file.tensor("fc2.weight_scale").unwrap().shape(), &[1]);
    assert_eq!(file.tensor("fc2.weight_zero_point").unwrap().shape(), &[1]);
    assert_eq!(
        file.tensor("fc3.weight").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    let original_bytes = digits_model_bytes();
    let original = SafeTensors::deserialize(&original_bytes).unwrap();
    assert_eq!(
        file.tensor("fc3.weight").unwrap().data(),
        original.tensor("fc3.weight").unwrap().data()
    );
    let report = artifact["report"]["tensors"].as_array().unwrap();
    let by_name = |name: &str| report.iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(by_name("fc3.weight")["action"], "kept");
    assert_eq!(by_name("fc3.weight")["reason"], "matches a skip pattern");
    assert_eq!(by_name("fc2.weight")["scheme"], "int8");

    // config.json: one compressed-tensors group per distinct scheme, targeting modules by name.
    let config: Value = serde_json::from_slice(
        &app.download(&format!(
            "/api/v1/artifacts/{}/files/config.json",
            artifact["id"].as_str().unwrap()
        ))
        .await,
    )
    .unwrap();
    let groups = &config["quantization_config"]["config_groups"];
    assert_eq!(groups["group_0"]["targets"], json!(["fc1"]));
    assert_eq!(groups["group_0"]["weights"]["strategy"], "channel");
    assert_eq!(groups["group_1"]["targets"], json!(["fc2"]));
    assert_eq!(groups["group_1"]["weights"]["strategy"], "tensor");
    assert_eq!(groups["group_1"]["weights"]["symmetric"], false);
    app.stop().await;
}

#[tokio::test]
async fn dequantized_output_is_plain_float_with_the_error_baked_in() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let original_bytes = digits_model_bytes();
    let original = SafeTensors::deserialize(&original_bytes).unwrap();
    for (format, dtype) in [
        ("dequantized", safetensors::Dtype::F32),
        ("dequantized-f16", safetensors::Dtype::F16),
    ] {
        let (_, bytes, artifact) = run_job(
            &app,
            json!({"model_id": model["id"], "scheme": "int8", "format": format}),
        )
        .await;
        assert_eq!(artifact["format"], format);
        // No quantization_config: the model had no config.json and the output needs none.
        assert_eq!(artifact["files"].as_array().unwrap().len(), 1);
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let decode = |name: &str| -> Vec<f32> {
            let tensor = file.tensor(name).unwrap();
            match tensor.dtype() {
                safetensors::Dtype::F32 => f32s(tensor.data()),
                _ => tensor
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            }
        };
        for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
            assert_eq!(file.tensor(name).unwrap().dtype(), dtype);
            let values = decode(name);
            let reference = f32s(original.tensor(name).unwrap().data());
            let max_abs = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
            // Half an int8 step of the largest row scale, plus f16 rounding where it applies.
            let bound = max_abs / 127.0 * 0.5 + max_abs * 1e-3;
            for (value, expected) in values.iter().zip(&reference) {
                assert!(
                    (value - expected).abs() <= bound,
                    "{name}: {value} vs {expected}"
                );
            }
        }
        let accuracy = digits_accuracy(&|name| {
            if name.ends_with(".weight") {
                decode(name)
            } else {
                f32s(file.tensor(name).unwrap().data())
            }
        });
        assert!(
            (accuracy - FP32_ACCURACY).abs() <= 0.005,
            "{format}: accuracy {accuracy}"
        );
    }
    app.stop().await;
}
