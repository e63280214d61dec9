//! Fault injection: a full disk (a real tmpfs, filled with a real file) and database errors
//! (real SQLite triggers that make one write fail) at every write path. What a 2xx acknowledged
//! must survive a restart; what failed must be reported as such and leave nothing behind.
//!
//! These tests mount file systems, so they need root, as CI has; without it they fail rather
//! than pretend to pass.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use quantd::config::Settings;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{digits_model_bytes, spawn_app_in, TestApp};

/// A tmpfs of a fixed size, unmounted on drop.
pub struct Tmpfs {
    mount_point: TempDir,
}

impl Tmpfs {
    pub fn mount(size_mib: u64) -> Tmpfs {
        let mount_point = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(mount_point.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): the fault-injection tests need root"
        );
        Tmpfs { mount_point }
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A fresh data dir on this file system.
    pub fn data_dir(&self) -> TempDir {
        tempfile::tempdir_in(self.path()).expect("data dir on the tmpfs")
    }

    pub fn available_bytes(&self) -> u64 {
        quantd::store::blobs::available_bytes(self.path()).expect("statvfs")
    }

    /// Writes a filler file until the file system is full (or only `leave_bytes` remain).
    pub fn fill(&self, leave_bytes: u64) -> PathBuf {
        let path = self.path().join("fill");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let chunk = vec![0u8; 4096];
        loop {
            if leave_bytes > 0 && self.available_bytes() <= leave_bytes + chunk.len() as u64 {
                break;
            }
            if file.write_all(&chunk).is_err() {
                break; // ENOSPC: the disk is full
            }
        }
        let _ = file.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount_point.path())
            .status();
    }
}

/// A server on a data dir on `tmpfs`, restartable.
async fn spawn_on(data_dir: TempDir, min_free_bytes: u64) -> TestApp {
    spawn_app_in(data_dir, move |s: &mut Settings| {
        s.min_free_bytes = min_free_bytes;
        s.job_max_attempts = 1;
    })
    .await
}

/// Blob files, split into staging leftovers and committed digests.
fn blob_state(data_dir: &Path) -> (Vec<PathBuf>, BTreeSet<String>) {
    let staging = std::fs::read_dir(data_dir.join("blobs/tmp"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let mut committed = BTreeSet::new();
    for shard in std::fs::read_dir(data_dir.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            committed.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    (staging, committed)
}

/// Every digest any record refers to, read from the database itself.
async fn referenced_digests(data_dir: &Path) -> BTreeSet<String> {
    let url = format!("sqlite://{}?mode=ro", data_dir.join("quantd.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("database opens");
    let digests: Vec<String> = sqlx::query_scalar(
        "SELECT sha256 FROM models UNION SELECT sha256 FROM model_files \
         UNION SELECT sha256 FROM artifact_files",
    )
    .fetch_all(&pool)
    .await
    .expect("digests");
    pool.close().await;
    digests.into_iter().collect()
}

/// Nothing half-stored: no staging file, and exactly the referenced blobs on disk.
async fn assert_nothing_half_stored(data_dir: &Path) {
    let (staging, committed) = blob_state(data_dir);
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
    let referenced = referenced_digests(data_dir).await;
    assert_eq!(committed, referenced, "blobs on disk vs blobs recorded");
}

/// A write under a fault either succeeded (2xx) or was refused with a problem+json 5xx.
async fn outcome(response: reqwest::Response, what: &str) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = if status == 204 {
        Value::Null
    } else {
        response.json().await.unwrap_or(Value::Null)
    };
    if status >= 300 {
        assert!(
            [500, 503, 507].contains(&status),
            "{what}: a fault must be reported as 500/503/507, got {status}: {body}"
        );
        assert_eq!(content_type, "application/problem+json", "{what}: {body}");
    }
    (status, body)
}

async fn put_config(app: &TestApp, model_id: &str) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/api/v1/models/{model_id}/files/config.json")))
        .body(r#"{"model_type": "mlp"}"#)
        .send()
        .await
        .unwrap()
}

async fn delete_model(app: &TestApp, model_id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/api/v1/models/{model_id}")))
        .send()
        .await
        .unwrap()
}

/// The digits model with one byte of its data changed, so that it is a different blob.
fn variant_of_digits(seed: u8) -> Vec<u8> {
    let mut bytes = digits_model_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= seed | 1;
    bytes
}

#[tokio::test]
async fn on_a_full_disk_every_acknowledged_write_survives_and_every_refused_one_leaves_nothing() {
    let tmpfs = Tmpfs::mount(48);
    // No reserve: every write goes all the way to SQLite and the file system and meets ENOSPC
    // there, which is the path that used to acknowledge lost writes.
    let app = spawn_on(tmpfs.data_dir(), 0).await;
    let keep: Value = app
        .upload_model("keep", digits_model_bytes())
        .await
        .json()
        .await
        .unwrap();
    let keep_id = keep["id"].as_str().unwrap().to_owned();
    let mut victims = Vec::new();
    for i in 0..4u8 {
        let model: Value = app
            .upload_model(&format!("victim{i}"), variant_of_digits(i + 1))
            .await
            .json()
            .await
            .unwrap();
        victims.push(model["id"].as_str().unwrap().to_owned());
    }

    let filler = tmpfs.fill(0);
    assert!(tmpfs.available_bytes() < 64 << 10, "the disk is full");

    let mut acknowledged_jobs = Vec::new();
    let mut refused = 0;
    for scheme in ["int8", "nf4", "int4", "fp8"] {
        let (status, body) =
            outcome(app.create_job(&keep_id, scheme, Value::Null).await, "job").await;
        match status {
            202 => acknowledged_jobs.push(body["id"].as_str().unwrap().to_owned()),
            _ => refused += 1,
        }
    }
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    for victim in &victims {
        let (status, _) = outcome(delete_model(&app, victim).await, "delete").await;
        if status == 204 {
            deleted.push(victim.clone());
        } else {
            refused += 1;
            kept.push(victim.clone());
        }
    }
    let (config_status, _) = outcome(put_config(&app, &keep_id).await, "companion").await;
    let (upload_status, uploaded) = outcome(
        app.upload_model("late", variant_of_digits(99)).await,
        "upload",
    )
    .await;
    refused += usize::from(config_status != 201) + usize::from(upload_status != 201);
    eprintln!(
        "under a full disk: jobs acknowledged {}, deletes acknowledged {}/{}, companion {config_status}, upload {upload_status}",
        acknowledged_jobs.len(),
        deleted.len(),
        victims.len()
    );
    assert!(
        refused > 0,
        "on a full disk at least one write must have been refused"
    );

    // Free the space and restart: the acknowledged writes are all there, the refused ones not.
    let data_dir = app.stop().await;
    std::fs::remove_file(filler).unwrap();
    let app = spawn_on(data_dir, 0).await;
    for job in &acknowledged_jobs {
        let response = app.get(&format!("/api/v1/jobs/{job}")).await;
        assert_eq!(response.status(), 200, "acknowledged job {job} was lost");
    }
    let listed = app.get_json("/api/v1/jobs?limit=200").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        acknowledged_jobs.len(),
        "refused jobs must not exist"
    );
    for victim in &deleted {
        let response = app.get(&format!("/api/v1/models/{victim}")).await;
        assert_eq!(
            response.status(),
            404,
            "model {victim} was acknowledged deleted"
        );
    }
    for victim in &kept {
        let response = app.get(&format!("/api/v1/models/{victim}")).await;
        assert_eq!(
            response.status(),
            200,
            "refused delete of {victim} lost the model"
        );
        let model: Value = response.json().await.unwrap();
        let sha = model["sha256"].as_str().unwrap();
        let blob = app
            .data_dir
            .path()
            .join(format!("blobs/sha256/{}/{sha}", &sha[..2]));
        assert!(
            blob.is_file(),
            "refused delete of {victim} lost its weights"
        );
    }
    let model = app.get_json(&format!("/api/v1/models/{keep_id}")).await;
    let has_config = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["filename"] == "config.json");
    assert_eq!(has_config, config_status == 201, "companion file: {model}");
    let models = app.get_json("/api/v1/models?limit=200").await;
    let late = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "late");
    assert_eq!(late, upload_status == 201, "late upload: {uploaded}");

    let data_dir = app.stop().await;
    assert_nothing_half_stored(data_dir.path()).await;
}

/// One f32 tensor of `n_floats` values: a model whose size is easy to control.
fn model_of_floats(n_floats: usize, seed: u32) -> Vec<u8> {
    let values: Vec<f32> = (0..n_floats)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect();
    crate::helpers::safetensors_file(&[(
        "layer.weight",
        "F32",
        vec![n_floats / 256, 256],
        crate::helpers::f32_bytes(&values),
    )])
}

#[tokio::test]
async fn below_the_reserve_growth_is_refused_up_front_deletes_still_work_and_readyz_says_so() {
    let tmpfs = Tmpfs::mount(48);
    let reserve = 8 << 20;
    let app = spawn_on(tmpfs.data_dir(), reserve).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let keep: Value = app
        .upload_model("keep", digits_model_bytes())
        .await
        .json()
        .await
        .unwrap();
    let keep_id = keep["id"].as_str().unwrap().to_owned();
    let victim: Value = app
        .upload_model("victim", variant_of_digits(7))
        .await
        .json()
        .await
        .unwrap();
    let victim_id = victim["id"].as_str().unwrap().to_owned();

    // Leave half the reserve: the database still has room, new bytes do not.
    let filler = tmpfs.fill(reserve / 2);
    let not_ready = app.get("/readyz").await;
    crate::helpers::assert_problem(not_ready, 503, "not-ready").await;
    let refused = app.upload_model("late", variant_of_digits(9)).await;
    let body = crate::helpers::assert_problem(refused, 507, "insufficient-storage").await;
    assert!(body["detail"].as_str().unwrap().contains("nothing"));
    crate::helpers::assert_problem(
        app.create_job(&keep_id, "int8", Value::Null).await,
        507,
        "insufficient-storage",
    )
    .await;
    crate::helpers::assert_problem(
        put_config(&app, &keep_id).await,
        507,
        "insufficient-storage",
    )
    .await;
    // Deletes free space and need only the database: the reserve is there for them.
    assert_eq!(delete_model(&app, &victim_id).await.status(), 204);

    let data_dir = app.stop().await;
    let app = spawn_on(data_dir, reserve).await;
    assert_eq!(
        app.get(&format!("/api/v1/models/{victim_id}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/models/{keep_id}")).await.status(),
        200
    );
    std::fs::remove_file(filler).unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(
        app.upload_model("late", variant_of_digits(9))
            .await
            .status(),
        201
    );
    let data_dir = app.stop().await;
    assert_nothing_half_stored(data_dir.path()).await;
}

#[tokio::test]
async fn a_disk_that_fills_during_an_upload_or_a_job_output_leaves_nothing_behind() {
    let tmpfs = Tmpfs::mount(48);
    let app = spawn_on(tmpfs.data_dir(), 0).await;
    // 6 MiB of f32 weights: its int8 output needs about 1.5 MiB.
    let model: Value = app
        .upload_model("big", model_of_floats(6 << 18, 1))
        .await
        .json()
        .await
        .unwrap();
    let model_id = model["id"].as_str().unwrap().to_owned();

    let filler = tmpfs.fill(1 << 20);
    // An upload without Content-Length (chunked) cannot be refused up front: the disk fills
    // while its body streams in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = model_of_floats(4 << 18, 2)
        .chunks(64 << 10)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = app
        .client
        .post(app.url("/api/v1/models?name=streamed"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(response, 507, "insufficient-storage").await;
    // A declared length that cannot fit is refused before a byte is written.
    let response = app
        .upload_model("declared", model_of_floats(4 << 18, 3))
        .await;
    crate::helpers::assert_problem(response, 507, "insufficient-storage").await;

    // The job's output cannot be written: the job fails, saying why, and leaves no file.
    let job: Value = app
        .create_job(&model_id, "int8", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["type"], "/problems/job-storage-full", "{job}");
    assert_eq!(job["error"]["status"], 507);
    let (staging, _) = blob_state(app.data_dir.path());
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");

    std::fs::remove_file(filler).unwrap();
    let job: Value = app
        .create_job(&model_id, "int8", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let data_dir = app.stop().await;
    assert_nothing_half_stored(data_dir.path()).await;
}

/// Makes every `operation` on `table` fail inside the database, as a broken disk or a lost
/// connection would, with a real SQLite trigger.
async fn inject_database_error(data_dir: &Path, table: &str, operation: &str) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", data_dir.join("quantd.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("database opens");
    sqlx::query(&format!(
        "CREATE TRIGGER injected_fault BEFORE {operation} ON {table} \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    ))
    .execute(&pool)
    .await
    .expect("trigger created");
    pool
}

async fn clear_database_error(pool: sqlx::SqlitePool) {
    sqlx::query("DROP TRIGGER injected_fault")
        .execute(&pool)
        .await
        .expect("trigger dropped");
    pool.close().await;
}

#[tokio::test]
async fn a_database_error_at_each_write_path_is_reported_and_leaves_nothing_behind() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.job_max_attempts = 1;
        s.staging_idle_seconds = 1;
    })
    .await;
    let dir = app.data_dir.path().to_path_buf();
    let keep: Value = app
        .upload_model("keep", digits_model_bytes())
        .await
        .json()
        .await
        .unwrap();
    let keep_id = keep["id"].as_str().unwrap().to_owned();

    // Upload: the blob was committed before the insert failed; it must not stay.
    let fault = inject_database_error(&dir, "models", "INSERT").await;
    let (status, _) = outcome(
        app.upload_model("late", variant_of_digits(3)).await,
        "upload",
    )
    .await;
    assert!(status >= 500);
    clear_database_error(fault).await;
    assert_nothing_half_stored(&dir).await;

    // Companion file.
    let fault = inject_database_error(&dir, "model_files", "INSERT").await;
    let (status, _) = outcome(put_config(&app, &keep_id).await, "companion").await;
    assert!(status >= 500);
    clear_database_error(fault).await;
    assert_nothing_half_stored(&dir).await;

    // Job creation.
    let fault = inject_database_error(&dir, "jobs", "INSERT").await;
    let (status, _) = outcome(app.create_job(&keep_id, "int8", Value::Null).await, "job").await;
    assert!(status >= 500);
    clear_database_error(fault).await;
    let jobs = app.get_json("/api/v1/jobs").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0, "{jobs}");

    // Delete: the model and its weights stay.
    let fault = inject_database_error(&dir, "models", "DELETE").await;
    let (status, _) = outcome(delete_model(&app, &keep_id).await, "delete").await;
    assert!(status >= 500);
    clear_database_error(fault).await;
    assert_eq!(
        app.get(&format!("/api/v1/models/{keep_id}")).await.status(),
        200
    );
    assert_nothing_half_stored(&dir).await;

    // Cancellation of a queued job: the job is not reported cancelled.
    let fault = inject_database_error(&dir, "jobs", "UPDATE").await;
    let response = app.create_job(&keep_id, "int8", Value::Null).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{job_id}/cancel")))
        .send()
        .await
        .unwrap();
    let (status, _) = outcome(response, "cancel").await;
    assert!(status >= 500);
    clear_database_error(fault).await;
    let job = app.wait_for_job(&job_id).await;
    assert_eq!(job["state"], "succeeded", "the cancel was refused: {job}");

    // Job completion: recording the artifact fails, so the job cannot succeed, and the output
    // blob it committed is reaped.
    let fault = inject_database_error(&dir, "artifacts", "INSERT").await;
    let job: Value = app
        .create_job(&keep_id, "int4", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    let job = app.wait_for_job(&job_id).await;
    assert_eq!(job["state"], "failed", "{job}");
    clear_database_error(fault).await;
    let start = std::time::Instant::now();
    loop {
        let (staging, committed) = blob_state(&dir);
        if staging.is_empty() && committed == referenced_digests(&dir).await {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the unrecorded artifact was not reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let app = crate::helpers::spawn_app().await;
    let mut settings = Settings::for_data_dir(app.data_dir.path());
    settings.workers = Some(1);
    let error = match quantd::startup::Application::build(settings).await {
        Ok(_) => panic!("two servers on one data dir"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("another quantd process uses the data dir"),
        "{error}"
    );
    // The first one is unaffected, and once it stops the dir is free again.
    assert_eq!(app.get("/readyz").await.status(), 200);
    let data_dir = app.stop().await;
    let app = spawn_on(data_dir, 16 << 20).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}
