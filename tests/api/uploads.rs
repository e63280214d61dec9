//! Uploads: happy paths (raw and multipart, companion files) and every kind of bad input, each
//! answered with its own problem type, nothing left behind, the server still serving.

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, digits_model_bytes, f32_bytes, raw_safetensors, safetensors_file, spawn_app,
    spawn_app_with, TestApp,
};

async fn assert_clean_and_alive(app: &TestApp) {
    let leftovers: Vec<_> = app
        .blob_files()
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/sha256/"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn raw_upload_is_stored_hashed_and_described() {
    let app = spawn_app().await;
    let bytes = digits_model_bytes();
    let response = app.upload_model("digits-mlp", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let model: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/models/{}", model["id"].as_str().unwrap())
    );
    assert_eq!(model["name"], "digits-mlp");
    assert_eq!(model["size_bytes"], bytes.len());
    assert_eq!(model["n_tensors"], 6);
    assert_eq!(
        model["n_parameters"],
        128 * 64 + 128 + 64 * 128 + 64 + 10 * 64 + 10
    );
    assert_eq!(model["dtypes"], json!({"F32": 6}));
    assert_eq!(model["sha256"], quantd::store::blobs::sha256_hex(&bytes));
    assert!(model["created_at"].is_string());
    assert_eq!(app.get_json(&location).await["id"], model["id"]);

    // Listing, with pagination.
    let second = app.upload_model("second", bytes.clone()).await;
    assert_eq!(second.status(), 201);
    let page = app.get_json("/api/v1/models?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], "second");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2 = app
        .get_json(&format!("/api/v1/models?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"][0]["name"], "digits-mlp");
    assert!(page2["next_cursor"].is_null());
    assert_clean_and_alive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn multipart_upload_works_like_a_browser_form() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new()
        .text("name", "from-form")
        .part(
            "file",
            reqwest::multipart::Part::bytes(digits_model_bytes()).file_name("digits.safetensors"),
        );
    let response = app
        .client
        .post(app.url("/api/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["name"], "from-form");
    assert_eq!(model["n_tensors"], 6);

    // Without a name field, the file name gives it.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(digits_model_bytes()).file_name("mlp.safetensors"),
    );
    let response = app
        .client
        .post(app.url("/api/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "mlp");
    app.stop().await;
}

#[tokio::test]
async fn companion_files_attach_validate_and_download() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    let config = br#"{"model_type": "mlp", "layers": 3}"#.to_vec();
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model = app.get_json(&format!("/api/v1/models/{id}")).await;
    assert_eq!(model["files"][0]["filename"], "config.json");
    assert_eq!(
        app.download(&format!("/api/v1/models/{id}/files/config.json"))
            .await,
        config
    );

    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/tokenizer.json")))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-json").await;
    let response = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-json").await;
    for bad in ["..", ".hidden", "a%2Fb", "x%00y"] {
        let response = app
            .client
            .put(app.url(&format!("/api/v1/models/{id}/files/{bad}")))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 422 || status == 404, "{bad}: {status}");
    }
    let response = app
        .client
        .put(app.url("/api/v1/models/00000000-0000-0000-0000-000000000000/files/config.json"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "model-not-found").await;
    assert_clean_and_alive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_uploads_get_their_own_problem_types() {
    let app = spawn_app_with(|s| s.max_header_bytes = 4096).await;
    let good = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "shorter than the length prefix",
            vec![1, 2, 3],
            422,
            "safetensors-too-short",
        ),
        (
            "header larger than the file",
            {
                let mut v = 200u64.to_le_bytes().to_vec();
                v.extend(b"{\"a\"");
                v
            },
            422,
            "safetensors-truncated",
        ),
        (
            "header over the limit",
            {
                let mut v = 5000u64.to_le_bytes().to_vec();
                v.extend(vec![b' '; 6000]);
                v
            },
            413,
            "safetensors-header-too-large",
        ),
        (
            "header not JSON",
            raw_safetensors("{oops   ", &good),
            422,
            "safetensors-invalid-header",
        ),
        (
            "header not UTF-8",
            {
                let mut v = 8u64.to_le_bytes().to_vec();
                v.extend([0xff, 0xfe, b'{', b'}', b' ', b' ', b' ', b' ']);
                v
            },
            422,
            "safetensors-invalid-header",
        ),
        (
            "unknown dtype",
            raw_safetensors(
                r#"{"w":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}}"#,
                &good,
            ),
            422,
            "safetensors-unknown-dtype",
        ),
        (
            "shape does not match bytes",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#,
                &good,
            ),
            422,
            "safetensors-shape-mismatch",
        ),
        (
            "shape overflows",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                &good,
            ),
            422,
            "safetensors-shape-mismatch",
        ),
        (
            "overlapping tensors",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &good,
            ),
            422,
            "safetensors-bad-offsets",
        ),
        (
            "gap between tensors",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &good,
            ),
            422,
            "safetensors-bad-offsets",
        ),
        (
            "data truncated",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &good[..10],
            ),
            422,
            "safetensors-truncated",
        ),
        (
            "trailing bytes",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &[good.clone(), vec![0; 7]].concat(),
            ),
            422,
            "safetensors-trailing-bytes",
        ),
        (
            "duplicate tensor names",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &good,
            ),
            422,
            "safetensors-duplicate-tensor",
        ),
    ];
    for (what, body, status, slug) in cases {
        let response = app.upload_model("bad", body).await;
        let got = response.status().as_u16();
        assert_eq!(got, status, "{what}");
        assert_problem(response, status, slug).await;
        assert_clean_and_alive(&app).await;
    }
    // Random bytes: the first eight read as a huge header length.
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let response = app.upload_model("random", random).await;
    assert!(response.status().is_client_error());
    let problem: Value = response.json().await.unwrap();
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .starts_with("/problems/safetensors-"));

    let response = app.upload_model("empty", Vec::new()).await;
    assert_problem(response, 400, "empty-body").await;
    let response = app.upload_model("bad%20name", digits_model_bytes()).await;
    assert_problem(response, 422, "invalid-name").await;
    let response = app
        .client
        .post(app.url("/api/v1/models"))
        .body(digits_model_bytes())
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-name").await;
    assert_clean_and_alive(&app).await;
    // Nothing was stored.
    assert_eq!(app.get_json("/api/v1/models").await["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn oversized_uploads_are_cut_off_while_streaming() {
    let app = spawn_app_with(|s| s.max_upload_bytes = 32 * 1024).await;
    let big = safetensors_file(&[("w", "F32", vec![64, 256], f32_bytes(&vec![0.5; 64 * 256]))]);
    // With a Content-Length: refused before reading.
    let response = app.upload_model("big", big.clone()).await;
    assert_problem(response, 413, "upload-too-large").await;
    // Chunked, without a Content-Length: refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = app
        .client
        .post(app.url("/api/v1/models?name=big"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "upload-too-large").await;
    assert_clean_and_alive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/models/0191e3a0-0000-7000-8000-000000000000",
        "/api/v1/models/not-a-uuid",
        "/api/v1/jobs/0191e3a0-0000-7000-8000-000000000000",
        "/api/v1/artifacts/0191e3a0-0000-7000-8000-000000000000",
        "/api/v1/artifacts/0191e3a0-0000-7000-8000-000000000000/download",
        "/api/v1/nothing-here",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let response = app
        .client
        .delete(app.url("/api/v1/models/0191e3a0-0000-7000-8000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "model-not-found").await;
    let response = app
        .client
        .patch(app.url("/api/v1/models"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method-not-allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn declared_digests_are_verified_before_commit() {
    use base64::Engine;
    let app = spawn_app().await;
    let bytes = digits_model_bytes();
    let digest = |data: &[u8]| {
        use sha2::Digest;
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
        )
    };
    // Right digest: stored (PUT, as `curl -T` sends it).
    let response = app
        .client
        .put(app.url("/api/v1/models?name=ok"))
        .header("content-digest", digest(&bytes))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Wrong digest: refused, nothing kept.
    let response = app
        .client
        .put(app.url("/api/v1/models?name=bad"))
        .header("content-digest", digest(b"other bytes"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "digest-mismatch").await;
    let response = app
        .client
        .put(app.url("/api/v1/models?name=bad"))
        .header("content-digest", "sha-256=:nope:")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid-digest").await;
    assert_eq!(
        app.get_json("/api/v1/models").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_clean_and_alive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn listing_shows_summaries_and_large_metadata_is_refused() {
    let app = spawn_app_with(|s| s.max_metadata_bytes = 4096).await;
    let tensor = ("w", "F32", vec![2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    // Metadata within the bound is kept and shown with the model, but not in the list.
    let small = format!(
        r#"{{"__metadata__":{{"format":"pt","note":"{}"}},"w":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}}}"#,
        "x".repeat(1000)
    );
    let response = app
        .upload_model("small", raw_safetensors(&small, &tensor.3))
        .await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let id = model["id"].as_str().unwrap();
    let config = app
        .client
        .put(app.url(&format!("/api/v1/models/{id}/files/config.json")))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 201);
    let full = app.get_json(&format!("/api/v1/models/{id}")).await;
    assert_eq!(full["metadata"]["format"], "pt");
    let listed = app.get_json("/api/v1/models").await;
    let item = &listed["items"][0];
    assert_eq!(item["id"], id);
    assert!(
        item.get("metadata").is_none(),
        "lists carry summaries: {item}"
    );
    assert_eq!(item["files"][0]["filename"], "config.json", "{item}");
    assert_eq!(item["files"][0]["sha256"], full["files"][0]["sha256"]);
    assert_eq!(item["n_parameters"], 4);

    // Over the bound: refused, nothing stored.
    let big = format!(
        r#"{{"__metadata__":{{"note":"{}"}},"w":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}}}"#,
        "x".repeat(5000)
    );
    let response = app
        .upload_model("big", raw_safetensors(&big, &tensor.3))
        .await;
    assert_problem(response, 422, "safetensors-metadata-too-large").await;
    assert_clean_and_alive(&app).await;
    let listed = app.get_json("/api/v1/models").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}
