//! The committed OpenAPI document must equal the one generated from the code, be a valid
//! OpenAPI document, and describe requests the server answers.
//! Run with `UPDATE_OPENAPI=1` to rewrite it after an intended API change.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::{digits_model_bytes, spawn_app};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = quantd::http::openapi().to_pretty_json().unwrap() + "\n";
    let path = repo_path("openapi/openapi.json");
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

/// Python with openapi-spec-validator, in its own small venv (`~/.cache/quantd-ci/venvs/openapi`, override
/// with `QUANTD_OPENAPI_VENV`), created on first use like the interop venv.
fn openapi_python() -> PathBuf {
    let venv = std::env::var_os("QUANTD_OPENAPI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::readers::cached_venv_dir("openapi"));
    crate::readers::venv_python(&venv, &[("requirements-openapi.txt", None)])
}

#[tokio::test]
async fn the_committed_spec_validates_and_a_client_built_from_it_lists_everything() {
    let app = spawn_app().await;
    // Two models and a job on each: enough for a second page and for every filter to match.
    let first = app.upload_digits().await;
    let response = app.upload_model("digits-again", digits_model_bytes()).await;
    assert_eq!(response.status(), 201);
    let second: Value = response.json().await.unwrap();
    for model in [&first, &second] {
        app.create_job_ok(model["id"].as_str().unwrap(), json!({}))
            .await;
    }
    let python = tokio::task::spawn_blocking(openapi_python).await.unwrap();
    // The server answers on this runtime: the client runs as a child process awaited here.
    let output = tokio::process::Command::new(python)
        .arg(repo_path("tests/interop/openapi_client.py"))
        .arg(repo_path("openapi/openapi.json"))
        .arg(&app.address)
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "openapi_client.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    let operations = summary["operations"].as_array().unwrap();
    for (path, query) in [
        (
            "/api/v1/jobs",
            json!(["cursor", "limit", "model_id", "state"]),
        ),
        ("/api/v1/models", json!(["cursor", "limit"])),
    ] {
        assert!(
            operations
                .iter()
                .any(|o| o["path"] == path && o["query"] == query),
            "{path} not exercised with {query}: {summary}"
        );
    }
    app.stop().await;
}
