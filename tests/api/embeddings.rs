//! all-MiniLM-L6-v2 through OpenAI-style `/v1/embeddings`: token ids and embeddings agree with
//! sentence-transformers (../shared/fixtures/minilm/minilm_embeddings.json), in FP32 and with
//! int8 per-channel weights.

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, TestApp};
use crate::minilm::upload_minilm;

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("minilm/minilm_embeddings.json")).unwrap())
        .unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

async fn embed(app: &TestApp, model: &str, input: Value) -> (Value, Vec<Vec<f64>>) {
    let response = app
        .client
        .post(app.url("/v1/embeddings"))
        .json(&json!({"model": model, "input": input}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    let vectors = body["data"]
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
        .collect();
    (body, vectors)
}

/// Worst cosine to the reference over the five sentences, from text and from token ids.
async fn worst_cosine(app: &TestApp, model: &str) -> f64 {
    let fixture = reference();
    let sentences = fixture["sentences"].clone();
    let expected: Vec<Vec<f64>> = fixture["embeddings_sentence_transformers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let (body, from_text) = embed(app, model, sentences).await;
    let total_ids: usize = fixture["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| ids.as_array().unwrap().len())
        .sum();
    assert_eq!(
        body["usage"]["prompt_tokens"], total_ids,
        "same number of tokens as the reference tokenizer"
    );
    let (_, from_ids) = embed(app, model, fixture["token_ids"].clone()).await;
    let mut worst = 1.0f64;
    for ((text, ids), reference) in from_text.iter().zip(&from_ids).zip(&expected) {
        // Identical embeddings from text and from the reference's ids: identical token ids.
        assert!(
            cosine(text, ids) > 0.999_999_9,
            "text and token-id inputs disagree"
        );
        worst = worst.min(cosine(text, reference));
    }
    worst
}

/// Runs a quantization job and returns its artifact id.
async fn quantize(app: &TestApp, model_id: &str, job: Value) -> String {
    let mut body = job;
    body["model_id"] = json!(model_id);
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    let done = app.wait_for_job(created["id"].as_str().unwrap()).await;
    done["artifact_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn minilm_embeddings_match_sentence_transformers() {
    let app = spawn_app().await;
    let model_id = upload_minilm(&app).await;
    let fp32 = worst_cosine(&app, &model_id).await;
    eprintln!("worst cosine to sentence-transformers: FP32 {fp32}");
    assert!(fp32 >= 0.99999, "FP32 worst cosine {fp32}");
    let job = app
        .create_job_ok(&model_id, json!({"granularity": "channel"}))
        .await;
    let job = app.wait_for_job(&job).await;
    let artifact_id = job["artifact_id"].as_str().unwrap();
    let int8 = worst_cosine(&app, artifact_id).await;
    eprintln!("worst cosine to sentence-transformers: int8 per-channel {int8}");
    assert!(int8 >= 0.998, "int8 per-channel worst cosine {int8}");
    let metadata = app.get_json(&format!("/v2/models/{artifact_id}")).await;
    assert_eq!(metadata["parameters"]["weights"], "int8");

    // Block formats served straight from their stored bytes (GGUF or compressed-tensors), each
    // beside the same quantization written out dequantized (f32 weights, f32 activations): the
    // gap between the two is what the block kernels' int8 activations cost. The floors to
    // sentence-transformers are the schemes' own quality (4 bits per weight, embeddings included).
    let sentences = reference()["sentences"].clone();
    for (job, held_as, floor) in [
        (json!({"scheme": "q8_0", "format": "gguf"}), "q8_0", 0.998),
        (
            json!({"scheme": "int4", "options": {"group_size": 32}}),
            "int4",
            0.93,
        ),
        (json!({"scheme": "q4_0", "format": "gguf"}), "q4_0", 0.95),
    ] {
        let stored = quantize(&app, &model_id, job.clone()).await;
        let worst = worst_cosine(&app, &stored).await;
        let metadata = app.get_json(&format!("/v2/models/{stored}")).await;
        assert_eq!(metadata["parameters"]["weights"], held_as, "{job}");
        let mut dequantized_job = job.clone();
        dequantized_job["format"] = json!("dequantized");
        let dequantized = quantize(&app, &model_id, dequantized_job).await;
        let (_, served) = embed(&app, &stored, sentences.clone()).await;
        let (_, plain) = embed(&app, &dequantized, sentences.clone()).await;
        let agreement = served
            .iter()
            .zip(&plain)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0f64, f64::min);
        eprintln!("{job}: worst cosine to sentence-transformers {worst}, to its dequantized twin {agreement}");
        assert!(worst >= floor, "{job}: worst cosine {worst}");
        assert!(
            agreement >= 0.999,
            "{job}: served vs dequantized {agreement}"
        );
    }

    // base64 and dimensions.
    let response = app.client.post(app.url("/v1/embeddings")).json(&json!({"model": model_id, "input": "hello world", "encoding_format": "base64", "dimensions": 64})).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), 64);
    assert!(
        (values.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4,
        "shortened embeddings are renormalised"
    );
    // The same model over the Open Inference Protocol with a BYTES input.
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{model_id}/infer")))
        .json(&json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello world", "another sentence"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outputs"][0]["shape"], json!([2, 384]));
    let (_, direct) = embed(&app, &model_id, json!(["hello world"])).await;
    let via_v2: Vec<f64> = body["outputs"][0]["data"].as_array().unwrap()[..384]
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(cosine(&via_v2, &direct[0]) > 0.999_999);
    let models = app.get_json("/v1/models").await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == model_id.as_str()));

    // OpenAI's nested error envelope.
    for (body, status) in [
        (json!({"model": model_id, "input": []}), 400),
        (
            json!({"model": model_id, "input": "x", "dimensions": 1000}),
            400,
        ),
        (
            json!({"model": model_id, "input": "x", "encoding_format": "hex"}),
            400,
        ),
        (json!({"model": "no-such-model", "input": "x"}), 404),
        (json!({"input": "x"}), 400),
    ] {
        let response = app
            .client
            .post(app.url("/v1/embeddings"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].is_string() && error["error"]["type"].is_string(),
            "{error}"
        );
    }
    app.stop().await;
}

/// Posts to `/v1/embeddings`; returns (status, body).
async fn post_embeddings(app: &TestApp, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn embedding_inputs_are_capped_and_checked_before_any_model_work() {
    // No model is needed: inputs are parsed and capped before the model is even looked up.
    let app = spawn_app().await;
    let cases = [
        (
            json!({"model": "any", "input": vec!["x"; 2049]}),
            400,
            "at most 2048",
        ),
        (
            json!({"model": "any", "input": vec![vec![101, 102]; 2049]}),
            400,
            "at most 2048",
        ),
        (
            json!({"model": "any", "input": [[101, 102], [101, 4_294_967_296u64]]}),
            400,
            "token id 1 of sequence 1",
        ),
        (
            json!({"model": "any", "input": [101, -1]}),
            400,
            "token id 1 of sequence 0",
        ),
        (
            json!({"model": "any", "input": [[101], "x"]}),
            400,
            "not a mix",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, error) = post_embeddings(&app, serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(got, status, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "'{needle}' not in {message}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], "input");
    }
    // Bodies beyond 2 MiB: 413 in OpenAI's envelope.
    let (status, error) = post_embeddings(&app, vec![b' '; 2 * 1024 * 1024 + 1]).await;
    assert_eq!(status, 413, "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
    app.stop().await;
}
