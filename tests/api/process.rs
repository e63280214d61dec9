//! The real binary as a child process: a job survives `kill -9` of the server, and SIGTERM hands
//! a running job back to the queue and exits cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::digits_model_bytes;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(data_dir: &Path, tensor_delay_ms: u64) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_quantd"))
        .arg("serve")
        .env("QUANTD_BIND", format!("127.0.0.1:{port}"))
        .env("QUANTD_DATA_DIR", data_dir)
        .env("QUANTD_WORKERS", "1")
        .env("QUANTD_LEASE_SECONDS", "1")
        .env("QUANTD_MIN_FREE_BYTES", "16MiB")
        .env("QUANTD_SHUTDOWN_GRACE_SECONDS", "0")
        .env("QUANTD_DEBUG_TENSOR_DELAY_MS", tensor_delay_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the quantd binary starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let start = Instant::now();
    loop {
        if let Ok(response) = server
            .client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
        {
            if response.status() == 200 {
                return server;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    async fn job(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/api/v1/jobs/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "job stuck: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn upload_and_queue(&self) -> String {
        let model: Value = self
            .client
            .post(format!("{}/api/v1/models?name=digits", self.base))
            .body(digits_model_bytes())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job: Value = self
            .client
            .post(format!("{}/api/v1/jobs", self.base))
            .json(&json!({"model_id": model["id"], "scheme": "int8"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_job_survives_a_killed_server() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start_server(data_dir.path(), 300).await;
    let job_id = server.upload_and_queue().await;
    server
        .wait(&job_id, |j| {
            j["state"] == "running" && j["progress"]["tensors_done"].as_u64() >= Some(1)
        })
        .await;
    // SIGKILL: no chance to clean up.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = start_server(data_dir.path(), 0).await;
    let job = server
        .wait(&job_id, |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempt"], 2,
        "the crashed attempt counts, the job ran again"
    );
    let artifact_id = job["artifact_id"].as_str().unwrap();
    let response = server
        .client
        .get(format!(
            "{}/api/v1/artifacts/{artifact_id}/download",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        file.tensor("fc1.weight").unwrap().dtype(),
        safetensors::Dtype::I8
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_hands_running_jobs_back_and_exits_cleanly() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start_server(data_dir.path(), 400).await;
    let job_id = server.upload_and_queue().await;
    server.wait(&job_id, |j| j["state"] == "running").await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    drop(server);

    let server = start_server(data_dir.path(), 0).await;
    let job = server
        .wait(&job_id, |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempt"], 1,
        "a job handed back at shutdown does not use up an attempt"
    );
}

/// `quantd quantize` runs the same pipeline offline: byte-identical output to a server job.
#[tokio::test]
async fn offline_quantize_matches_the_service_byte_for_byte() {
    let app = crate::helpers::spawn_app().await;
    let model = app.upload_digits().await;
    let options = json!({"granularity": "channel", "symmetric": false, "skip": ["^fc3\\."]});
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .json(&json!({"model_id": model["id"], "scheme": "int8", "options": options}))
        .send()
        .await
        .unwrap();
    let job: Value = response.json().await.unwrap();
    let job = app.wait_for_job(job["id"].as_str().unwrap()).await;
    let artifact = app
        .get_json(&format!(
            "/api/v1/artifacts/{}",
            job["artifact_id"].as_str().unwrap()
        ))
        .await;

    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("digits-int8.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_quantd"))
        .args([
            "quantize",
            crate::helpers::fixture("digits/digits_mlp_fp32.safetensors")
                .to_str()
                .unwrap(),
        ])
        .args([
            "--scheme",
            "int8",
            "--options",
            &options.to_string(),
            "-o",
            output.to_str().unwrap(),
        ])
        .arg("--report")
        .arg(out_dir.path().join("report.json"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&output).unwrap();
    assert_eq!(
        quantd::store::blobs::sha256_hex(&bytes),
        artifact["sha256"].as_str().unwrap()
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["quantization_config"]["format"], "int-quantized");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["n_quantized"], 2);

    // A bad option is refused before any work, with a non-zero exit.
    let status = Command::new(env!("CARGO_BIN_EXE_quantd"))
        .args([
            "quantize",
            "/nonexistent.safetensors",
            "--scheme",
            "int3",
            "-o",
            "/tmp/never-written",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    app.stop().await;
}
