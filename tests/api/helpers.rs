//! Test harness: the real application on port 0 with a temporary data dir and its own SQLite
//! database, plus typed helpers over HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quantd::config::Settings;
use quantd::startup::Application;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(relative)
}

pub fn digits_model_bytes() -> Vec<u8> {
    std::fs::read(fixture("digits/digits_mlp_fp32.safetensors")).expect("digits fixture present")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(tempfile::tempdir().expect("temp dir"), configure).await
}

/// The application on an existing data dir (a restart, or a dir on a special file system).
pub async fn spawn_app_in(data_dir: TempDir, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.workers = Some(2);
    settings.lease_seconds = 2;
    configure(&mut settings);
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    TestApp {
        address,
        client: reqwest::Client::new(),
        data_dir,
        shutdown,
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON body")
    }

    pub async fn upload_model(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/models?name={name}")))
            .body(bytes)
            .send()
            .await
            .expect("request sent")
    }

    /// Uploads the digits MLP and returns the model JSON.
    pub async fn upload_digits(&self) -> Value {
        let response = self.upload_model("digits", digits_model_bytes()).await;
        assert_eq!(response.status(), 201, "upload failed");
        response.json().await.unwrap()
    }

    pub async fn create_job(
        &self,
        model_id: &str,
        scheme: &str,
        options: Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/jobs"))
            .json(&json!({"model_id": model_id, "scheme": scheme, "options": options}))
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a job that must be accepted and returns its id.
    pub async fn create_job_ok(&self, model_id: &str, options: Value) -> String {
        let response = self.create_job(model_id, "int8", options).await;
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// Polls the job until `done(job)` holds, panicking after `timeout`.
    pub async fn wait_for_job_until(
        &self,
        job_id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let job = self.get_json(&format!("/api/v1/jobs/{job_id}")).await;
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < timeout,
                "job {job_id} did not reach the expected state: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queues a job with this request body (which must be accepted), waits for it to succeed
    /// and returns its artifact.
    pub async fn run_job(&self, body: Value) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/jobs"))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 202, "{body}");
        let job: Value = response.json().await.unwrap();
        let job = self.wait_for_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        self.get_json(&format!(
            "/api/v1/artifacts/{}",
            job["artifact_id"].as_str().unwrap()
        ))
        .await
    }

    /// Waits until the job is finished (succeeded, failed or cancelled).
    pub async fn wait_for_job(&self, job_id: &str) -> Value {
        self.wait_for_job_until(job_id, Duration::from_secs(60), |job| {
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }

    pub async fn download(&self, path: &str) -> Vec<u8> {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.bytes().await.unwrap().to_vec()
    }

    /// Files in the blob store's staging and content folders.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![self.data_dir.path().join("blobs")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }

    /// Shuts the application down gracefully and hands back its data dir (for a restart).
    pub async fn stop(mut self) -> TempDir {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
        self.data_dir
    }
}

/// Asserts a problem+json response with the given status and type slug; returns the body.
pub async fn assert_problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "body: {body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// Builds a safetensors file from (name, dtype, shape, bytes) in order, like the reference writer.
pub fn safetensors_file(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            (*name).to_owned(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut header_bytes = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut file = (header_bytes.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header_bytes);
    for (_, _, _, bytes) in tensors {
        file.extend_from_slice(bytes);
    }
    file
}

/// A raw file from a header string and a data section.
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(data);
    file
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
