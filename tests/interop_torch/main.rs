//! Interop with the torch-based readers: compressed-tensors' own decompressor and bitsandbytes'
//! NF4 quantizer and loader. They need torch (~5.6 GB of wheels), so they are not part of the
//! README's `cargo test`; CI runs them as their own command: `cargo test --locked --test
//! interop_torch` (the venv is cached under `~/.cache/quantd-ci/venvs/interop-torch`).

#[allow(dead_code)] // the shared harness; this binary uses part of it
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/readers.rs"]
mod readers;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::{json, Value};

use helpers::spawn_app;
use readers::{
    artifact_file, artifact_files, cached_venv_dir, f32_values, run_script, venv_python,
};

/// The python of the torch-based readers (compressed-tensors, bitsandbytes: torch with its
/// CUDA wheels, ~5.6 GB), for `cargo test --test interop_torch` only.
fn torch_python() -> PathBuf {
    let venv = std::env::var_os("QUANTD_TORCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached_venv_dir("interop-torch"));
    venv_python(
        &venv,
        &[("requirements.txt", None), ("requirements-torch.txt", None)],
    )
}

/// Runs a script from tests/interop with the torch-based readers.
fn run_torch_script(script: &str, args: &[&Path]) -> Value {
    run_script(&torch_python(), script, args)
}

/// Deterministic standard normal values (64-bit LCG, Box–Muller).
fn normal_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

#[tokio::test]
async fn compressed_tensors_decompresses_int8_artifacts_to_our_values() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    for options in [
        json!({"granularity": "channel", "symmetric": true}),
        json!({"granularity": "channel", "symmetric": false}),
        json!({"granularity": "tensor", "symmetric": true}),
        json!({"granularity": "tensor", "symmetric": false, "overrides": {"^fc2": {"scheme": "int8", "options": {"granularity": "channel"}}}}),
    ] {
        let (model_path, _, config) =
            artifact_files(&app, id, "int8", options.clone(), "safetensors").await;
        let (_, dequantized_bytes) =
            artifact_file(&app, id, "int8", options.clone(), "dequantized").await;
        let decompressed = run_torch_script("ct_decompress.py", &[&model_path, &config.unwrap()]);
        assert_eq!(decompressed["format"], "int-quantized");
        let dequantized = SafeTensors::deserialize(&dequantized_bytes).unwrap();
        let weights = decompressed["weights"].as_object().unwrap();
        assert_eq!(
            weights.len(),
            3,
            "every quantized module is in a config group: {options}"
        );
        for module in ["fc1", "fc2", "fc3"] {
            let theirs: Vec<f32> = weights[module]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = f32_values(
                dequantized
                    .tensor(&format!("{module}.weight"))
                    .unwrap()
                    .data(),
            );
            assert_eq!(theirs, ours, "{module} with {options}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn compressed_tensors_decompresses_int4_and_fp8_artifacts_to_our_values() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    // int4 with the default group of 128 fits only fc2 (rows of 128): fc1 and fc3 (rows of 64)
    // fall back to int8 per channel, which makes a mixed-precision checkpoint.
    for (scheme, options, top_format, n_modules) in [
        (
            "int4",
            json!({"group_size": 32, "symmetric": true}),
            "pack-quantized",
            3,
        ),
        (
            "int4",
            json!({"group_size": 64, "symmetric": false}),
            "pack-quantized",
            3,
        ),
        ("int4", json!({}), "mixed-precision", 3),
        (
            "fp8",
            json!({"granularity": "channel"}),
            "float-quantized",
            3,
        ),
        (
            "fp8",
            json!({"granularity": "tensor"}),
            "float-quantized",
            3,
        ),
    ] {
        let (model_path, _, config) =
            artifact_files(&app, id, scheme, options.clone(), "safetensors").await;
        let (_, dequantized_bytes) =
            artifact_file(&app, id, scheme, options.clone(), "dequantized").await;
        let decompressed = run_torch_script("ct_decompress.py", &[&model_path, &config.unwrap()]);
        assert_eq!(decompressed["format"], top_format, "{scheme} {options}");
        let dequantized = SafeTensors::deserialize(&dequantized_bytes).unwrap();
        let weights = decompressed["weights"].as_object().unwrap();
        assert_eq!(weights.len(), n_modules, "{scheme} {options}");
        for module in ["fc1", "fc2", "fc3"] {
            let theirs: Vec<f32> = weights[module]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = f32_values(
                dequantized
                    .tensor(&format!("{module}.weight"))
                    .unwrap()
                    .data(),
            );
            assert_eq!(theirs.len(), ours.len());
            // compressed-tensors divides where we multiply by a stored reciprocal in places; both
            // decode the same stored values, so allow only float rounding of the product.
            for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
                assert!(
                    (t - o).abs() <= 1e-6 * o.abs().max(1e-3),
                    "{scheme} {options} {module}[{i}]: {t} vs {o}"
                );
            }
        }
        if scheme == "fp8" {
            let original = helpers::fixture("digits/digits_mlp_fp32.safetensors");
            let checked = run_torch_script(
                "check_fp8.py",
                &[
                    &model_path,
                    &original,
                    Path::new("fc1.weight"),
                    Path::new("fc2.weight"),
                    Path::new("fc3.weight"),
                ],
            );
            for module in ["fc1.weight", "fc2.weight", "fc3.weight"] {
                assert_eq!(
                    checked[module]["mismatches"], 0,
                    "ml_dtypes disagrees on fp8 bytes of {module}: {checked}"
                );
                assert!(checked[module]["n"].as_u64().unwrap() > 0);
            }
        }
    }
    app.stop().await;
}

/// NF4 and NF4 with double quantization against bitsandbytes 0.50.2 (CPU): packed bytes and
/// absmax byte-identical to `quantize_4bit`; double-quantized indices and nested absmax
/// byte-identical given our offset, and values within the bound derived in
/// `src/quant/nf4/double_quant.rs` against bnb's own offset (torch's f32 mean can be an ulp or
/// two from ours); bnb's `QuantState.from_dict` + `dequantize_4bit` decode our state dicts to
/// our values bit for bit; all-zero rows and blocks decode to exactly 0.
#[tokio::test]
async fn bitsandbytes_quantizes_and_decodes_nf4_artifacts_as_we_do() {
    let random: Vec<f32> = normal_values(160 * 128, 1)
        .iter()
        .map(|v| v * 0.02)
        .collect();
    // Heavy tails: a Student-t-like ratio of normals, with a few large outliers.
    let mut heavy: Vec<f32> = normal_values(96 * 96, 2)
        .iter()
        .zip(normal_values(96 * 96, 3))
        .map(|(a, b)| a * 0.01 / (b.abs() + 0.05))
        .collect();
    for idx in (0..heavy.len()).step_by(997) {
        heavy[idx] *= 40.0;
    }
    // Rows of 128 (two NF4 blocks): row 5 all zero, row 9's second block all zero. And a
    // tensor of 231 elements (a partial, odd last block) whose block 1 is all zero.
    let mut zeros: Vec<f32> = normal_values(40 * 128, 4)
        .iter()
        .map(|v| v * 0.05)
        .collect();
    zeros[5 * 128..6 * 128].fill(0.0);
    zeros[9 * 128 + 64..10 * 128].fill(0.0);
    let odd: Vec<f32> = normal_values(7 * 33, 5)
        .iter()
        .enumerate()
        .map(|(idx, v)| {
            if (2 * 33..4 * 33).contains(&idx) {
                0.0
            } else {
                *v
            }
        })
        .collect();
    let names = [
        "layers.random.weight",
        "layers.heavy.weight",
        "layers.zeros.weight",
        "layers.odd.weight",
    ];
    let model = helpers::safetensors_file(&[
        (names[0], "F32", vec![160, 128], helpers::f32_bytes(&random)),
        (names[1], "F32", vec![96, 96], helpers::f32_bytes(&heavy)),
        (names[2], "F32", vec![40, 128], helpers::f32_bytes(&zeros)),
        (names[3], "F32", vec![7, 33], helpers::f32_bytes(&odd)),
        (
            "layers.odd.bias",
            "F32",
            vec![7],
            helpers::f32_bytes(&[0.5; 7]),
        ),
    ]);
    let app = spawn_app().await;
    let original = app.data_dir.path().join("nf4-original.safetensors");
    std::fs::write(&original, &model).unwrap();
    let response = app.upload_model("nf4-oracle", model).await;
    assert_eq!(response.status(), 201);
    let uploaded: Value = response.json().await.unwrap();
    let id = uploaded["id"].as_str().unwrap();
    let plain = json!({"double_quant": false});
    let nested = json!({"double_quant": true});
    let (plain_path, _) = artifact_file(&app, id, "nf4", plain.clone(), "safetensors").await;
    let (plain_deq, _) = artifact_file(&app, id, "nf4", plain, "dequantized").await;
    let (nested_path, _, config) =
        artifact_files(&app, id, "nf4", nested.clone(), "safetensors").await;
    let (nested_deq, _) = artifact_file(&app, id, "nf4", nested, "dequantized").await;
    let config = config.expect("NF4 artifacts carry config.json");
    let mut args: Vec<&Path> = vec![
        &original,
        &plain_path,
        &plain_deq,
        &nested_path,
        &nested_deq,
        &config,
    ];
    args.extend(names.iter().map(Path::new));
    let checked = run_torch_script("check_bnb_nf4.py", &args);
    let quantization_config = &checked["config"];
    assert_eq!(quantization_config["quant_method"], "bitsandbytes");
    assert_eq!(quantization_config["bnb_4bit_quant_type"], "nf4");
    assert_eq!(quantization_config["bnb_4bit_use_double_quant"], true);
    for name in names {
        let report = &checked["tensors"][name];
        for check in [
            "packed_identical",
            "packed_shape_identical",
            "absmax_identical",
            "quant_map_identical",
            "state_keys_identical",
            "state_values_identical",
            "bnb_decodes_ours_identically",
            // bnb's CPU kernel on the 2-D shape is wrong for rows that are not whole blocks
            // (see the script), but exactly as wrong for its own checkpoint as for ours.
            "native_2d_decode_same_as_for_bnb_file",
        ] {
            assert_eq!(report[check], true, "plain {name}: {check}: {report}");
        }
        let nested = &report["nested"];
        for check in [
            "packed_identical",
            "nested_quant_map_identical",
            "indices_identical_given_our_offset",
            "nested_absmax_identical_given_our_offset",
            "bnb_decodes_ours_identically",
            "state_keys_identical",
            "state_json_keys_in_order",
            "state_json_equal_but_offset",
            "indices_only_neighbours",
            "blocks_within_bound",
            "values_within_bound",
            "zeros_exact_ours",
            "zeros_exact_bnb",
        ] {
            assert_eq!(
                nested[check], true,
                "double quant {name}: {check}: {nested}"
            );
        }
        // torch's f32 mean and our once-rounded f64 mean are at most a couple of ulps apart.
        assert!(
            nested["offset_ulps"].as_u64().unwrap() <= 2,
            "{name}: {nested}"
        );
        if nested["offset_ulps"] == 0 {
            assert_eq!(nested["values_identical_to_bnb"], true, "{name}: {nested}");
        }
    }
    for name in ["layers.zeros.weight", "layers.odd.weight"] {
        assert!(
            checked["tensors"][name]["nested"]["zeros"]
                .as_u64()
                .unwrap()
                >= 64
        );
    }
    eprintln!("bitsandbytes NF4 oracle: {checked:#}");
    app.stop().await;
}
