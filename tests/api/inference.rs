//! Open Inference Protocol v2 on the digits MLP: FP32 gives the fixture's accuracy exactly,
//! int8 artifacts stay within half a point, errors are `{"error": ...}`.

use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, TestApp};

const MLP_CONFIG: &str = r#"{"model_type": "mlp", "layers": [{"name": "fc1", "activation": "relu"}, {"name": "fc2", "activation": "relu"}, {"name": "fc3", "activation": "identity"}]}"#;

pub(crate) fn test_split() -> (Vec<Vec<f32>>, Vec<i64>) {
    let bytes = std::fs::read(fixture("digits/digits_test_split.safetensors")).unwrap();
    let split = SafeTensors::deserialize(&bytes).unwrap();
    let x: Vec<f32> = split
        .tensor("x")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let y = split
        .tensor("y")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (x.chunks(64).map(<[f32]>::to_vec).collect(), y)
}

pub(crate) async fn upload_digits_with_config(app: &TestApp) -> String {
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap().to_owned();
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body(MLP_CONFIG)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    id
}

async fn accuracy(app: &TestApp, name: &str) -> f64 {
    let (rows, labels) = test_split();
    // Nested data form, all 360 rows in one request.
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{name}/infer")))
        .json(&json!({"id": "acc", "inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("server-timing").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "acc");
    let output = &body["outputs"][0];
    assert_eq!(output["shape"], json!([360, 10]));
    let logits: Vec<f64> = output["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let correct = logits
        .chunks(10)
        .zip(&labels)
        .filter(|(row, &label)| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as i64
                == label
        })
        .count();
    correct as f64 / labels.len() as f64
}

#[tokio::test]
async fn digits_fp32_and_int8_through_the_v2_protocol() {
    let app = spawn_app().await;
    let id = upload_digits_with_config(&app).await;
    assert_eq!(accuracy(&app, &id).await, 0.9694444444444444, "FP32 by id");
    assert_eq!(
        accuracy(&app, "digits").await,
        0.9694444444444444,
        "FP32 by unique name"
    );

    let metadata = app.get_json("/v2/models/digits").await;
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(metadata["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(metadata["parameters"]["weights"], "f32");

    for options in [
        json!({"granularity": "channel"}),
        json!({"granularity": "tensor", "symmetric": false}),
    ] {
        let job = app.create_job_ok(&id, options.clone()).await;
        let job = app.wait_for_job(&job).await;
        let artifact_id = job["artifact_id"].as_str().unwrap();
        let int8 = accuracy(&app, artifact_id).await;
        assert!(
            (int8 - 0.9694444444444444).abs() <= 0.005,
            "int8 {options}: {int8}"
        );
        let metadata = app.get_json(&format!("/v2/models/{artifact_id}")).await;
        assert_eq!(
            metadata["parameters"]["weights"], "int8",
            "weights stay int8 in memory"
        );
    }

    // A single row, flat data.
    let (rows, labels) = test_split();
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [64], "datatype": "FP32", "data": rows[0]}]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let logits: Vec<f64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as i64,
        labels[0]
    );

    // The binary tensor data extension: JSON header, then raw little-endian FP32 rows.
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": 2 * 64 * 4}}]})).unwrap();
    let mut body = header.clone();
    for value in rows[0].iter().chain(&rows[1]) {
        body.extend_from_slice(&value.to_le_bytes());
    }
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .header("inference-header-content-length", header.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let binary: Value = response.json().await.unwrap();
    let json_form: Value = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [rows[0], rows[1]]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        binary["outputs"][0]["data"], json_form["outputs"][0]["data"],
        "binary and JSON inputs agree"
    );
    // Binary output on request: a JSON header, then the raw little-endian FP32 logits.
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [rows[0], rows[1]]}], "outputs": [{"name": "output", "parameters": {"binary_data": true}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let header_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&bytes[..header_len]).unwrap();
    assert_eq!(header["outputs"][0]["shape"], json!([2, 10]));
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 80);
    let raw: Vec<f32> = bytes[header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // JSON carries each f32 as its shortest decimal, which reads back to the same f32.
    let from_json: Vec<f32> = json_form["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(raw, from_json, "binary and JSON outputs agree");
    // A lying header length or size is a 400 with the v2 error body.
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .header(
            "inference-header-content-length",
            (body.len() + 1).to_string(),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());

    // Explicit unload and load.
    let unloaded: Value = app
        .client
        .post(app.url("/api/v1/serving/digits/unload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unloaded["unloaded"], true);
    let loaded: Value = app
        .client
        .post(app.url("/api/v1/serving/digits/load"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(loaded["loaded"], true);
    app.stop().await;
}

#[tokio::test]
async fn v2_errors_are_json_with_4xx_statuses() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/v2").await["name"], "quantd");
    assert_eq!(app.get("/v2/health/live").await.status(), 200);
    assert_eq!(app.get("/v2/health/ready").await.status(), 200);
    let expect_error = |status: u16| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status().as_u16(), status);
            let body: Value = response.json().await.unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
    };
    expect_error(404)(app.get("/v2/models/nope").await).await;
    // No config.json: can be quantized, but not served.
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap().to_owned();
    expect_error(422)(app.get(&format!("/v2/models/{id}")).await).await;
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body(r#"{"model_type": "llama"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    expect_error(422)(app.get(&format!("/v2/models/{id}")).await).await;
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body(MLP_CONFIG)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let infer = |body: Value| {
        let request = app.client.post(app.url(&format!("/v2/models/{id}/infer")));
        async move { request.json(&body).send().await.unwrap() }
    };
    expect_error(400)(infer(json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0.0; 63]}]})).await).await;
    expect_error(400)(infer(json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": vec![0.0; 64]}]})).await).await;
    expect_error(400)(infer(json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "BYTES", "data": ["a"]}]})).await).await;
    expect_error(400)(infer(json!({"nothing": []})).await).await;
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{id}/infer")))
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(400)(response).await;
    // Two models with the same name: the name is ambiguous, ids still work.
    app.upload_digits().await;
    expect_error(400)(app.get("/v2/models/digits").await).await;
    app.stop().await;
}

#[tokio::test]
async fn loaded_models_beyond_the_memory_budget_are_evicted_least_recently_used_first() {
    // A budget smaller than one model: loading a second evicts the first, never the new one.
    let app = crate::helpers::spawn_app_with(|s| s.serving_memory_bytes = 1).await;
    let first = upload_digits_with_config(&app).await;
    let second = upload_digits_with_config(&app).await;
    for id in [&first, &second] {
        let loaded: Value = app
            .client
            .post(app.url(&format!("/api/v1/serving/{id}/load")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(loaded["loaded"], true);
    }
    let unload = |id: String| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/serving/{id}/unload")));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["unloaded"].clone() }
    };
    assert_eq!(
        unload(first.clone()).await,
        false,
        "the older model was evicted"
    );
    assert_eq!(
        unload(second.clone()).await,
        true,
        "the newest model stays resident"
    );
    // Evicted models load again on demand.
    assert_eq!(accuracy(&app, &first).await, 0.9694444444444444);
    app.stop().await;
}

/// Creates a job with any scheme/format and returns the artifact id once it succeeded.
async fn artifact(app: &TestApp, model_id: &str, body: Value) -> String {
    let mut body = body;
    body["model_id"] = json!(model_id);
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{body}");
    let job: Value = response.json().await.unwrap();
    let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job["artifact_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn quantized_artifacts_are_served_from_their_stored_form_or_dequantized_at_load() {
    let app = spawn_app().await;
    let id = upload_digits_with_config(&app).await;
    // (job, weights held in memory, dequantized at load, accuracy tolerance in points)
    let cases = [
        (
            json!({"scheme": "q8_0", "format": "gguf"}),
            "q8_0",
            json!([]),
            0.5,
        ),
        (
            json!({"scheme": "int4", "options": {"group_size": 32}}),
            "int4",
            json!([]),
            1.5,
        ),
        (
            json!({"scheme": "int4", "options": {"group_size": 64, "symmetric": false}}),
            "int4",
            json!([]),
            1.5,
        ),
        (
            json!({"scheme": "q4_0", "format": "gguf"}),
            "q4_0",
            json!([]),
            1.5,
        ),
        (
            json!({"scheme": "q4_1", "format": "gguf"}),
            "q4_1",
            json!([]),
            1.5,
        ),
        (
            json!({"scheme": "q5_0", "format": "gguf"}),
            "f32",
            json!(["q5_0"]),
            0.5,
        ),
        (json!({"scheme": "fp8"}), "f32", json!(["fp8"]), 0.5),
        (
            json!({"scheme": "kmeans", "options": {"bits": 6}}),
            "f32",
            json!(["kmeans"]),
            1.5,
        ),
        // Served (dequantized at load), however poor one bit per weight is.
        (json!({"scheme": "binary"}), "f32", json!(["binary"]), 100.0),
    ];
    for (job, held_as, dequantized, points) in cases {
        let artifact_id = artifact(&app, &id, job.clone()).await;
        let got = accuracy(&app, &artifact_id).await;
        eprintln!("digits {job}: accuracy {got}");
        assert!(
            (got - 0.9694444444444444).abs() * 100.0 <= points,
            "{job}: accuracy {got}"
        );
        let metadata = app.get_json(&format!("/v2/models/{artifact_id}")).await;
        assert_eq!(metadata["parameters"]["weights"], held_as, "{job}");
        assert_eq!(
            metadata["parameters"]["dequantized_at_load"], dequantized,
            "{job}"
        );
    }
    // A layout serving neither runs nor dequantizes (bitsandbytes NF4): 422 saying why.
    let nf4 = artifact(&app, &id, json!({"scheme": "nf4"})).await;
    let response = app.get(&format!("/v2/models/{nf4}")).await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("scheme serving does not run"),
        "{error}"
    );
    app.stop().await;
}

/// Posts one digits row and returns (logits, Server-Timing).
async fn infer_row(app: &TestApp, row: &[f32]) -> (Vec<f64>, String) {
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let logits = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (logits, timing)
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    // A long batching window so that all concurrent requests land in one batch.
    let app = crate::helpers::spawn_app_with(|s| {
        s.batch_max_delay_ms = 300;
        s.batch_max_size = 64;
    })
    .await;
    upload_digits_with_config(&app).await;
    let (rows, _) = test_split();
    // Alone (sequentially): the reference answers.
    let mut alone = Vec::new();
    for row in &rows[..8] {
        alone.push(infer_row(&app, row).await.0);
    }
    let together =
        futures::future::join_all(rows[..8].iter().map(|row| infer_row(&app, row))).await;
    let mut largest_batch = 0;
    for ((logits, timing), want) in together.iter().zip(&alone) {
        assert_eq!(
            logits, want,
            "a request's answer does not depend on its batch"
        );
        assert!(
            timing.contains("queue;dur=") && timing.contains("compute;dur="),
            "{timing}"
        );
        let items: usize = timing
            .split("batch;desc=\"")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no batch size in {timing}"));
        largest_batch = largest_batch.max(items);
    }
    assert!(
        largest_batch >= 2,
        "concurrent requests were merged (largest batch {largest_batch})"
    );
    app.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_inflight_budget_get_429_with_retry_after() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.max_inflight_inferences = 1;
        s.debug_inference_delay_ms = 1500;
    })
    .await;
    upload_digits_with_config(&app).await;
    let (rows, _) = test_split();
    // Load first, so the slow request below is slow only inside the batch.
    let loaded = app
        .client
        .post(app.url("/api/v1/serving/digits/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(loaded.status(), 200);
    let slow = {
        let client = app.client.clone();
        let url = app.url("/v2/models/digits/infer");
        let row = rows[0].clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"inputs": [{"name": "input", "shape": [64], "datatype": "FP32", "data": row}]}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [64], "datatype": "FP32", "data": rows[1]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].is_string(), "{error}");
    // The same budget covers /v1/embeddings-style OpenAI errors, tested in embeddings.rs; the
    // admitted request still completes.
    assert_eq!(slow.await.unwrap(), 200);
    app.stop().await;
}

/// Posts a v2 inference request with a JSON body; returns (status, body).
async fn infer_json(app: &TestApp, name: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{name}/infer")))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Posts a v2 request with the binary tensor data extension: the JSON header, then `data`.
async fn infer_binary(app: &TestApp, name: &str, header: &Value, data: &[u8]) -> (u16, Value) {
    let header = serde_json::to_vec(header).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(data);
    let response = app
        .client
        .post(app.url(&format!("/v2/models/{name}/infer")))
        .header("inference-header-content-length", header.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})
}

/// `{"error": "<message>"}` with `status`, the message containing `needle`.
fn assert_v2_error((status, body): (u16, Value), want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(message.contains(needle), "'{needle}' not in {message}");
}

#[tokio::test]
async fn malformed_shapes_and_data_are_400s_never_panics() {
    let app = spawn_app().await;
    upload_digits_with_config(&app).await;
    let infer = |body: Value| {
        let app = &app;
        async move { infer_json(app, "digits", &body).await }
    };
    // Issue 8: 2^58 · 64 wrapped to 0 and matched the empty data; serving then panicked on a
    // zero-width chunk (500).
    assert_v2_error(
        infer(input(
            json!([288_230_376_151_711_744u64, 64]),
            "FP32",
            json!([]),
        ))
        .await,
        400,
        "more elements than can be addressed",
    );
    assert_v2_error(
        infer(input(json!([0, 64]), "FP32", json!([]))).await,
        400,
        "zero dimension",
    );
    assert_v2_error(
        infer(input(json!([2, 64]), "FP32", json!(vec![0.5; 64]))).await,
        400,
        "128 values",
    );
    // Ragged nested data: 63 values and 1 for shape [1, 64] (64 in total) is refused.
    assert_v2_error(
        infer(input(
            json!([1, 64]),
            "FP32",
            json!([vec![0.1; 63], vec![0.1]]),
        ))
        .await,
        400,
        "ragged",
    );
    assert_v2_error(
        infer(input(
            json!([2, 64]),
            "FP32",
            json!([vec![0.1; 63], vec![0.1; 65]]),
        ))
        .await,
        400,
        "ragged",
    );
    // Values that do not fit their datatype (or f32).
    let mut row = vec![json!(0.5); 64];
    row[5] = json!(1e39);
    assert_v2_error(
        infer(input(json!([1, 64]), "FP32", json!(row))).await,
        400,
        "element 5",
    );
    row[5] = json!("NaN");
    assert_v2_error(
        infer(input(json!([1, 64]), "FP32", json!(row))).await,
        400,
        "element 5",
    );
    row[5] = json!(70000);
    assert_v2_error(
        infer(input(json!([1, 64]), "FP16", json!(row))).await,
        400,
        "element 5",
    );
    let mut integers = vec![json!(1); 64];
    integers[5] = json!(1e10);
    assert_v2_error(
        infer(input(json!([1, 64]), "INT32", json!(integers))).await,
        400,
        "element 5",
    );
    integers[5] = json!(2_147_483_648u64);
    assert_v2_error(
        infer(input(json!([1, 64]), "INT32", json!(integers))).await,
        400,
        "element 5",
    );
    integers[5] = json!(0.5);
    assert_v2_error(
        infer(input(json!([1, 64]), "INT64", json!(integers))).await,
        400,
        "element 5",
    );
    row[5] = json!(1e300);
    assert_v2_error(
        infer(input(json!([1, 64]), "FP64", json!(row))).await,
        400,
        "element 5",
    );
    // 1e999 is not even JSON that serde_json reads (no f64 holds it).
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"inputs": [{{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1e999{}]}}]}}"#,
            ", 0".repeat(63)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    // In range for their datatypes, the same rows are answered.
    row[5] = json!(65504);
    assert_eq!(
        infer(input(json!([1, 64]), "FP16", json!(row))).await.0,
        200
    );
    for (datatype, value) in [("INT32", json!(2147483647)), ("INT64", json!(-5))] {
        integers[5] = value;
        let (status, body) = infer(input(json!([1, 64]), datatype, json!(integers))).await;
        assert_eq!(status, 200, "{datatype}: {body}");
    }

    // The binary extension: NaN and infinities refused with the first bad index.
    let header = |datatype: &str, size: usize| json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": datatype, "parameters": {"binary_data_size": size}}]});
    let mut values = vec![0.25f32; 128];
    values[70] = f32::NAN;
    values[90] = f32::INFINITY;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_v2_error(
        infer_binary(&app, "digits", &header("FP32", bytes.len()), &bytes).await,
        400,
        "element 70",
    );
    let mut halves = vec![half::f16::from_f32(0.25); 128];
    halves[3] = half::f16::NEG_INFINITY;
    let bytes: Vec<u8> = halves.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_v2_error(
        infer_binary(&app, "digits", &header("FP16", bytes.len()), &bytes).await,
        400,
        "element 3",
    );
    let doubles: Vec<u8> = (0..128)
        .flat_map(|i| if i == 127 { f64::NAN } else { 0.25f64 }.to_le_bytes())
        .collect();
    assert_v2_error(
        infer_binary(&app, "digits", &header("FP64", doubles.len()), &doubles).await,
        400,
        "element 127",
    );
    // A shape whose byte count overflows, and a binary_data_size beyond any body.
    let huge = json!({"inputs": [{"name": "input", "shape": [288_230_376_151_711_744u64, 64], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]});
    assert_v2_error(
        infer_binary(&app, "digits", &huge, &[]).await,
        400,
        "more elements",
    );
    assert_v2_error(
        infer_binary(&app, "digits", &header("FP32", usize::MAX), &[0; 512]).await,
        400,
        "binary_data_size",
    );
    app.stop().await;
}

/// The digits MLP's answer to one row of 3e38 (every pixel far beyond f32 once multiplied).
async fn infer_huge_row(app: &TestApp, name: &str, value: f32) -> (u16, Value) {
    infer_json(
        app,
        name,
        &input(json!([1, 64]), "FP32", json!(vec![value; 64])),
    )
    .await
}

#[tokio::test]
async fn inputs_that_overflow_f32_get_422_from_fp32_and_int8_models_not_plausible_logits() {
    let app = spawn_app().await;
    let id = upload_digits_with_config(&app).await;
    let int8 = artifact(
        &app,
        &id,
        json!({"scheme": "int8", "options": {"granularity": "channel"}}),
    )
    .await;
    let q8_0 = artifact(&app, &id, json!({"scheme": "q8_0", "format": "gguf"})).await;
    let (rows, _) = test_split();
    for name in [id.as_str(), int8.as_str(), q8_0.as_str()] {
        for value in [3e38f32, -3e38] {
            let (status, body) = infer_huge_row(&app, name, value).await;
            assert_v2_error((status, body.clone()), 422, "overflowed f32");
            assert!(body.get("outputs").is_none(), "{body}");
        }
        // The binary extension takes the same path.
        let bytes: Vec<u8> = (0..64).flat_map(|_| 3e38f32.to_le_bytes()).collect();
        let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]});
        assert_v2_error(
            infer_binary(&app, name, &header, &bytes).await,
            422,
            "overflowed f32",
        );
        // A row whose real results fit in f32 (1e37 gives logits near 1e38) is answered in f32;
        // the block kernels scale integer block sums by 1e37 / 127 and may overflow on the way,
        // which is a 422 too, never a wrong number.
        let (status, body) = infer_huge_row(&app, name, 1e37).await;
        if name == id {
            assert_eq!(status, 200, "{body}");
        } else if status != 200 {
            assert_v2_error((status, body), 422, "overflowed f32");
        }
        // Sane rows still get finite logits.
        let (status, body) =
            infer_json(&app, name, &input(json!([1, 64]), "FP32", json!(rows[0]))).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64().is_some_and(f64::is_finite)));
    }
    // Concurrent with good rows: only the overflowing request fails (the merged batch is re-run
    // request by request).
    let good_row = input(json!([1, 64]), "FP32", json!(rows[1]));
    let (good, bad) = futures::join!(
        infer_json(&app, &int8, &good_row),
        infer_huge_row(&app, &int8, 3e38),
    );
    assert_eq!(good.0, 200, "{}", good.1);
    assert_eq!(bad.0, 422, "{}", bad.1);
    app.stop().await;
}

#[tokio::test]
async fn bytes_inputs_share_the_embeddings_cap_and_bodies_are_limited_to_2_mib() {
    let app = spawn_app().await;
    upload_digits_with_config(&app).await;
    // The cap is checked on the shape and data before any model work (here the model is not
    // even a text model).
    let strings = vec!["x"; 2049];
    assert_v2_error(
        infer_json(&app, "digits", &json!({"inputs": [{"name": "text", "shape": [2049], "datatype": "BYTES", "data": strings}]})).await,
        400,
        "at most 2048",
    );
    let mut bytes = Vec::new();
    for _ in 0..2049 {
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(b'x');
    }
    let header = json!({"inputs": [{"name": "text", "shape": [2049], "datatype": "BYTES", "parameters": {"binary_data_size": bytes.len()}}]});
    assert_v2_error(
        infer_binary(&app, "digits", &header, &bytes).await,
        400,
        "at most 2048",
    );
    // BYTES shapes are checked too.
    assert_v2_error(
        infer_json(&app, "digits", &json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]})).await,
        400,
        "shape",
    );
    // Bodies beyond 2 MiB: 413 in the protocol's envelope.
    let response = app
        .client
        .post(app.url("/v2/models/digits/infer"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_new_config_json_takes_effect_without_an_explicit_unload() {
    let app = spawn_app().await;
    let id = upload_digits_with_config(&app).await;
    let row = vec![0.5f32; 64];
    let (logits, _) = infer_row(&app, &row).await;
    assert!(
        logits.iter().any(|v| *v < 0.0),
        "identity logits: {logits:?}"
    );
    // Replace config.json on the loaded model: the last layer now ends in a softmax.
    let with_softmax = MLP_CONFIG.replace(
        r#""model_type": "mlp""#,
        r#""model_type": "mlp", "softmax": true"#,
    );
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body(with_softmax)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (probabilities, _) = infer_row(&app, &row).await;
    let sum: f64 = probabilities.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "softmax output sums to 1: {probabilities:?}"
    );
    assert!(probabilities.iter().all(|p| *p >= 0.0));
    app.stop().await;
}
