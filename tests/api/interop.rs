//! Interop: files quantd writes, read back by independent light readers from PyPI (see
//! tests/interop/requirements.txt; the venv is made by `readers`). The torch-based readers
//! (compressed-tensors, bitsandbytes) are in `tests/interop_torch`, run as their own command.

use safetensors::SafeTensors;
use serde_json::json;

use crate::helpers::spawn_app;
use crate::readers::{artifact_file, artifact_files, f32_values, run_interop_script};

#[tokio::test]
async fn the_safetensors_package_reads_int8_artifacts_and_agrees_on_values() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    for options in [
        json!({"granularity": "channel", "symmetric": true}),
        json!({"granularity": "channel", "symmetric": false}),
        json!({"granularity": "tensor", "symmetric": true}),
        json!({"granularity": "tensor", "symmetric": false}),
    ] {
        let (quantized_path, quantized_bytes) =
            artifact_file(&app, id, "int8", options.clone(), "safetensors").await;
        let (dequantized_path, dequantized_bytes) =
            artifact_file(&app, id, "int8", options.clone(), "dequantized").await;
        let described =
            run_interop_script("read_safetensors.py", &[&quantized_path, &dequantized_path]);
        let quantized = &described[quantized_path.to_str().unwrap()];
        let ours = SafeTensors::deserialize(&quantized_bytes).unwrap();
        // Same tensors, dtypes and shapes as we wrote.
        assert_eq!(
            quantized["tensors"].as_object().unwrap().len(),
            ours.names().len()
        );
        for (name, view) in ours.tensors() {
            let theirs = &quantized["tensors"][&name];
            assert_eq!(theirs["shape"], json!(view.shape()), "{name}");
            let dtype = match view.dtype() {
                safetensors::Dtype::I8 => "int8",
                safetensors::Dtype::F32 => "float32",
                other => panic!("unexpected dtype {other:?}"),
            };
            assert_eq!(theirs["dtype"], dtype, "{name}");
        }
        // numpy's (q - zero_point) * scale equals the values of our dequantized artifact.
        let dequantized = SafeTensors::deserialize(&dequantized_bytes).unwrap();
        for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
            let theirs: Vec<f32> = quantized["dequantized"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours: Vec<f32> = dequantized
                .tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(theirs, ours, "{name} with {options}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_documented_decoders_read_binary_ternary_and_kmeans_artifacts() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    for (scheme, options) in [
        ("binary", json!({})),
        ("ternary", json!({})),
        ("kmeans", json!({"bits": 3})),
        ("kmeans", json!({"bits": 8, "max_iterations": 5})),
    ] {
        let (model_path, _, config) =
            artifact_files(&app, id, scheme, options.clone(), "safetensors").await;
        assert!(
            config.is_none(),
            "quantd layouts are described by __metadata__, not config.json"
        );
        let (_, dequantized_bytes) =
            artifact_file(&app, id, scheme, options.clone(), "dequantized").await;
        let decoded = run_interop_script("quantd_layouts.py", &[&model_path]);
        let dequantized = SafeTensors::deserialize(&dequantized_bytes).unwrap();
        let decoded = decoded.as_object().unwrap();
        assert_eq!(decoded.len(), 3, "{scheme}: {decoded:?}");
        for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
            let theirs: Vec<f32> = decoded[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                theirs,
                f32_values(dequantized.tensor(name).unwrap().data()),
                "{scheme} {options} {name}"
            );
        }
    }
    app.stop().await;
}
