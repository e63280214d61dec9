//! Artifact downloads: ETag, 304, Range → 206 / 416, If-Range, Content-Disposition.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn downloads_honour_etag_and_ranges() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let job = app
        .create_job_ok(model["id"].as_str().unwrap(), json!({}))
        .await;
    let job = app.wait_for_job(&job).await;
    let artifact_id = job["artifact_id"].as_str().unwrap();
    let artifact: Value = app
        .get_json(&format!("/api/v1/artifacts/{artifact_id}"))
        .await;
    let path = format!("/api/v1/artifacts/{artifact_id}/download");

    let response = app.get(&path).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", artifact["sha256"].as_str().unwrap())
    );
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename="));
    let full = response.bytes().await.unwrap();
    assert_eq!(full.len() as u64, artifact["size_bytes"].as_u64().unwrap());
    assert_eq!(
        quantd::store::blobs::sha256_hex(&full),
        artifact["sha256"].as_str().unwrap()
    );
    assert_eq!(artifact["files"][0]["filename"], "model.safetensors");

    let response = app
        .client
        .get(app.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert!(response.bytes().await.unwrap().is_empty());

    let response = app
        .client
        .get(app.url(&path))
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 8-15/{}", full.len())
    );
    assert_eq!(response.bytes().await.unwrap(), full.slice(8..16));

    let response = app
        .client
        .get(app.url(&path))
        .header("range", "bytes=-4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.bytes().await.unwrap(),
        full.slice(full.len() - 4..)
    );

    let response = app
        .client
        .get(app.url(&path))
        .header("range", format!("bytes={}-", full.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{}", full.len())
    );
    assert_problem(response, 416, "range-not-satisfiable").await;

    // If-Range with a stale validator: the whole file.
    let response = app
        .client
        .get(app.url(&path))
        .header("range", "bytes=0-3")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), full.len());
    let response = app
        .client
        .get(app.url(&path))
        .header("range", "bytes=0-3")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);

    assert_problem(
        app.get(&format!(
            "/api/v1/artifacts/{artifact_id}/files/missing.bin"
        ))
        .await,
        404,
        "file-not-found",
    )
    .await;
    app.stop().await;
}
