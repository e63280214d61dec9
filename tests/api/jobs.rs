//! Job API: validation, queue limits, cancellation, and deletes racing jobs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn job_creation_answers_202_with_location_and_retry_after() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let response = app
        .create_job(model["id"].as_str().unwrap(), "int8", json!(null))
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().contains_key("retry-after"));
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(
        job["options"],
        json!({"granularity": "channel", "symmetric": true})
    );
    assert_eq!(job["scheme"], "int8");
    let done = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempt"], 1);
    assert!(done["finished_at"].is_string() && done["started_at"].is_string());
    assert!(done["error"].is_null());

    // Filters.
    let listed = app
        .get_json(&format!(
            "/api/v1/jobs?state=succeeded&model_id={}",
            model["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let listed = app.get_json("/api/v1/jobs?state=queued").await;
    assert_eq!(listed["items"], json!([]));
    assert_problem(
        app.get("/api/v1/jobs?state=sleeping").await,
        400,
        "invalid-query",
    )
    .await;
    assert_problem(app.get("/api/v1/jobs?limit=0").await, 400, "invalid-query").await;
    app.stop().await;
}

#[tokio::test]
async fn bad_job_requests_are_refused_up_front() {
    let app = spawn_app().await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();

    let body = assert_problem(
        app.create_job(id, "int3", json!({})).await,
        422,
        "unknown-scheme",
    )
    .await;
    assert_eq!(body["field"], "scheme");
    let body = assert_problem(
        app.create_job(id, "int8", json!({"granularity": "row"}))
            .await,
        422,
        "invalid-option",
    )
    .await;
    assert_eq!(body["field"], "granularity");
    let body = assert_problem(
        app.create_job(id, "int8", json!({"symetric": false})).await,
        422,
        "invalid-option",
    )
    .await;
    assert_eq!(body["field"], "symetric");
    assert_problem(
        app.create_job(id, "int8", json!({"symmetric": "yes"}))
            .await,
        422,
        "invalid-option",
    )
    .await;
    assert_problem(
        app.create_job(id, "int8", json!([1, 2])).await,
        422,
        "invalid-option",
    )
    .await;
    assert_problem(
        app.create_job("0191e3a0-0000-7000-8000-000000000000", "int8", json!({}))
            .await,
        404,
        "model-not-found",
    )
    .await;

    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .body("{\"model_id\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed-json").await;
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&json!({"model_id": "nope", "scheme": "int8"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-body").await;
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&json!({"model_id": id, "scheme": "int8", "format": "onnx"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "unknown-format").await;

    // None of it queued anything, and the service still works.
    assert_eq!(app.get_json("/api/v1/jobs").await["items"], json!([]));
    let job_id = app.create_job_ok(id, json!({})).await;
    assert_eq!(app.wait_for_job(&job_id).await["state"], "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn running_and_queued_jobs_can_be_cancelled() {
    let app = spawn_app_with(|s| {
        s.workers = Some(1);
        s.debug_tensor_delay_ms = 200;
    })
    .await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    let running = app.create_job_ok(id, json!({})).await;
    let queued = app.create_job_ok(id, json!({})).await;
    app.wait_for_job_until(&running, Duration::from_secs(10), |j| {
        j["state"] == "running"
    })
    .await;

    // Queued: cancelled on the spot.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{queued}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["state"],
        "cancelled"
    );

    // Running: stops at the next tensor boundary.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job = app.wait_for_job(&running).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["progress"]["tensors_done"].as_u64().unwrap() < 6);
    assert!(job["artifact_id"].is_null());

    // Idempotent for cancelled jobs; 409 for finished ones.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let fast = spawn_app().await;
    let model = fast.upload_digits().await;
    let done = fast
        .create_job_ok(model["id"].as_str().unwrap(), json!({}))
        .await;
    fast.wait_for_job(&done).await;
    let response = fast
        .client
        .post(fast.url(&format!("/api/v1/jobs/{done}/cancel")))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "job-already-finished").await;
    assert_problem(
        app.client
            .post(app.url("/api/v1/jobs/0191e3a0-0000-7000-8000-000000000000/cancel"))
            .send()
            .await
            .unwrap(),
        404,
        "job-not-found",
    )
    .await;
    // No staging files left by the cancelled job.
    assert!(app
        .blob_files()
        .iter()
        .all(|p| p.to_string_lossy().contains("/sha256/")));
    fast.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.workers = Some(1);
        s.max_queued_jobs = 1;
        s.debug_tensor_delay_ms = 200;
    })
    .await;
    let model = app.upload_digits().await;
    let id = model["id"].as_str().unwrap();
    let first = app.create_job_ok(id, json!({})).await;
    app.wait_for_job_until(&first, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    let second = app.create_job_ok(id, json!({})).await;
    let queued = app.get_json(&format!("/api/v1/jobs/{second}")).await;
    assert_eq!(queued["queue_position"], 0);
    let response = app.create_job(id, "int8", json!({})).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "queue-full").await;

    // A model with queued or running jobs cannot be deleted.
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/models/{id}")))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "model-in-use").await;
    for job in [&first, &second] {
        app.client
            .post(app.url(&format!("/api/v1/jobs/{job}/cancel")))
            .send()
            .await
            .unwrap();
        app.wait_for_job(job).await;
    }
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/models/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.get(&format!("/api/v1/models/{id}")).await.status(), 404);
    // The blob went with the last model that used it.
    assert!(app.blob_files().is_empty(), "{:?}", app.blob_files());
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_model_keeps_shared_blobs_and_artifacts() {
    let app = spawn_app().await;
    let first = app.upload_digits().await;
    let second = app.upload_digits().await;
    assert_eq!(first["sha256"], second["sha256"]);
    let job = app
        .create_job_ok(first["id"].as_str().unwrap(), json!({}))
        .await;
    let job = app.wait_for_job(&job).await;
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/models/{}", first["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // The twin still has its bytes: a new job on it succeeds.
    let again = app
        .create_job_ok(second["id"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(app.wait_for_job(&again).await["state"], "succeeded");
    // The artifact of the deleted model is still downloadable.
    let artifact_id = job["artifact_id"].as_str().unwrap();
    assert!(!app
        .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
        .await
        .is_empty());
    app.stop().await;
}

#[tokio::test]
async fn non_finite_weights_fail_the_job_with_a_clear_problem() {
    use crate::helpers::{f32_bytes, safetensors_file};
    let app = spawn_app().await;
    let mut values = vec![0.25f32; 16];
    values[5] = f32::NAN;
    let file = safetensors_file(&[("w", "F32", vec![4, 4], f32_bytes(&values))]);
    let response = app.upload_model("nan", file).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let job = app
        .create_job_ok(model["id"].as_str().unwrap(), json!({}))
        .await;
    let job = app.wait_for_job(&job).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempt"], 1, "a bad model is not retried");
    assert_eq!(job["error"]["type"], "/problems/non-finite-weights");
    assert!(job["error"]["detail"].as_str().unwrap().contains("'w'"));
    app.stop().await;
}

#[tokio::test]
async fn progress_totals_are_known_from_the_moment_a_job_is_queued() {
    let app = spawn_app_with(|s| s.debug_tensor_delay_ms = 100).await;
    let model = app.upload_digits().await;
    let response = app
        .create_job(model["id"].as_str().unwrap(), "int8", json!(null))
        .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    // Totals come from the model, not from the first heartbeat of a running job.
    assert_eq!(
        job["progress"]["tensors_total"], model["n_tensors"],
        "{job}"
    );
    assert_eq!(job["progress"]["bytes_total"], model["size_bytes"], "{job}");
    let id = job["id"].as_str().unwrap();
    let done = app.wait_for_job(id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["progress"]["tensors_done"], model["n_tensors"]);
    assert_eq!(
        done["progress"]["bytes_done"], model["size_bytes"],
        "{done}"
    );
    assert_eq!(done["progress"]["bytes_total"], model["size_bytes"]);
}
