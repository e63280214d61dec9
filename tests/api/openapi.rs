//! The committed OpenAPI document must equal the one generated from the code.
//! Run with `UPDATE_OPENAPI=1` to rewrite it after an intended API change.

use crate::helpers::spawn_app;

#[test]
fn committed_openapi_matches_the_code() {
    let generated = quantd::http::openapi().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api openapi` and commit it"
    );
}

#[tokio::test]
async fn the_served_spec_docs_and_ops_endpoints_work() {
    let app = spawn_app().await;
    let spec = app.get_json("/openapi.json").await;
    assert_eq!(spec["info"]["title"], "quantd");
    for path in [
        "/api/v1/models",
        "/api/v1/jobs",
        "/api/v1/artifacts/{id}/download",
        "/api/v1/models/{id}/files/{filename}",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    assert_eq!(app.get_json("/readyz").await["status"], "ready");
    let info = app.get_json("/api/v1/info").await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["workers"], 2);
    assert!(info["available_isas"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "scalar"));
    assert_eq!(
        info["kernel_isa"],
        quantd::quant::kernels::detect_best().to_string()
    );
    assert_eq!(info["limits"]["max_header_bytes"], 100 << 20);
    app.stop().await;
}

#[tokio::test]
async fn kernels_can_be_forced_to_scalar() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.kernels = quantd::quant::kernels::KernelChoice::Scalar
    })
    .await;
    let info = app.get_json("/api/v1/info").await;
    assert_eq!(info["kernel_isa"], "scalar");
    assert_eq!(
        info["inference_isa"], "scalar",
        "inference kernels are forced too"
    );
    let model = app.upload_digits().await;
    let job = app
        .create_job_ok(model["id"].as_str().unwrap(), serde_json::json!({}))
        .await;
    let job = app.wait_for_job(&job).await;
    let artifact = app
        .get_json(&format!(
            "/api/v1/artifacts/{}",
            job["artifact_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(artifact["report"]["kernel_isa"], "scalar");
    app.stop().await;
}
