//! The real binary as a child process: a job survives `kill -9` of the server, SIGTERM hands
//! a running job back to the queue and exits cleanly, and twenty kills at random points lose,
//! duplicate and orphan nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

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
    start_server_with(data_dir, tensor_delay_ms, &[]).await
}

async fn start_server_with(
    data_dir: &Path,
    tensor_delay_ms: u64,
    extra_env: &[(&str, &str)],
) -> Server {
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
        // Last, so that a test's settings override the defaults above.
        .envs(extra_env.iter().copied())
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

/// What the chaos clients heard acknowledged (a 2xx answer received before the kill).
#[derive(Default)]
struct Acknowledged {
    models: Vec<String>,
    /// Deletes answered 204.
    deleted: Vec<String>,
    /// Deletes sent, answered or not: a delete cut off by the kill may or may not have happened.
    delete_sent: Vec<String>,
    jobs: Vec<String>,
    /// Models that were answered 201 for the shared `config.json`.
    configured: Vec<String>,
}

/// The same `config.json` for every model: one blob that many records share, while models that
/// hold it are deleted concurrently.
const CHAOS_CONFIG: &str = r#"{"model_type": "mlp"}"#;

/// Uploads models, attaches companion files, deletes models and queues jobs as fast as it can
/// until the server dies under it.
async fn chaos_client(base: String, acknowledged: Arc<Mutex<Acknowledged>>, seed: u64) {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pick = |rng: &mut rand::rngs::StdRng| {
        let acknowledged = acknowledged.lock().unwrap();
        let live: Vec<&String> = acknowledged
            .models
            .iter()
            .filter(|m| !acknowledged.deleted.contains(m))
            .collect();
        (!live.is_empty()).then(|| live[rng.gen_range(0..live.len())].clone())
    };
    loop {
        let mut bytes = digits_model_bytes();
        let last = bytes.len() - 1;
        bytes[last] = rng.gen_range(0..8); // few variants: the same bytes are often shared
        let Ok(response) = client
            .post(format!("{base}/api/v1/models?name=chaos"))
            .body(bytes)
            .send()
            .await
        else {
            return;
        };
        if response.status() == 201 {
            let Ok(model) = response.json::<Value>().await else {
                return;
            };
            let id = model["id"].as_str().unwrap().to_owned();
            acknowledged.lock().unwrap().models.push(id);
        }
        let Some(model_id) = pick(&mut rng) else {
            continue;
        };
        let Ok(response) = client
            .put(format!("{base}/api/v1/models/{model_id}/files/config.json"))
            .body(CHAOS_CONFIG)
            .send()
            .await
        else {
            return;
        };
        if response.status() == 201 {
            acknowledged.lock().unwrap().configured.push(model_id);
        }
        if rng.gen_bool(0.3) {
            let Some(model_id) = pick(&mut rng) else {
                continue;
            };
            acknowledged
                .lock()
                .unwrap()
                .delete_sent
                .push(model_id.clone());
            let Ok(response) = client
                .delete(format!("{base}/api/v1/models/{model_id}"))
                .send()
                .await
            else {
                return;
            };
            if response.status() == 204 {
                acknowledged.lock().unwrap().deleted.push(model_id);
            }
        }
        let Some(model_id) = pick(&mut rng) else {
            continue;
        };
        let scheme = ["int8", "int4", "fp8"][rng.gen_range(0..3)];
        let Ok(response) = client
            .post(format!("{base}/api/v1/jobs"))
            .json(&json!({"model_id": model_id, "scheme": scheme}))
            .send()
            .await
        else {
            return;
        };
        if response.status() == 202 {
            let Ok(job) = response.json::<Value>().await else {
                return;
            };
            let id = job["id"].as_str().unwrap().to_owned();
            acknowledged.lock().unwrap().jobs.push(id);
        }
    }
}

async fn get_status(server: &Server, path: &str) -> u16 {
    server
        .client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn twenty_sigkills_at_random_points_lose_nothing_run_nothing_twice_and_leave_no_orphans() {
    let seed: u64 = std::env::var("QUANTD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed {seed} (QUANTD_CHAOS_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("QUANTD_JOB_MAX_ATTEMPTS", "1000"), ("QUANTD_WORKERS", "2")];
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..20 {
        let mut server = start_server_with(data_dir.path(), 5, &env).await;
        let client = tokio::spawn(chaos_client(
            server.base.clone(),
            acknowledged.clone(),
            seed ^ round,
        ));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..600))).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        client
            .await
            .expect("the chaos client ends without panicking");
    }

    let mut server = start_server_with(data_dir.path(), 0, &env).await;
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(
        acknowledged.models.len() > 20 && acknowledged.jobs.len() > 20,
        "the chaos was too gentle: {} models, {} jobs",
        acknowledged.models.len(),
        acknowledged.jobs.len()
    );
    let mut lost = Vec::new();
    let mut gone = Vec::new();
    for model in &acknowledged.models {
        let status = get_status(&server, &format!("/api/v1/models/{model}")).await;
        if status == 404 {
            gone.push(model.clone());
        }
        let ok = if acknowledged.deleted.contains(model) {
            status == 404
        } else if acknowledged.delete_sent.contains(model) {
            status == 200 || status == 404 // the kill may have cut off the answer, not the delete
        } else {
            status == 200
        };
        if !ok {
            lost.push(format!("model {model} ({status})"));
        }
    }
    for model in &acknowledged.configured {
        if gone.contains(model) {
            continue;
        }
        let path = format!("/api/v1/models/{model}/files/config.json");
        if get_status(&server, &path).await != 200 {
            lost.push(format!("config.json of {model}"));
        }
    }
    for job in &acknowledged.jobs {
        if get_status(&server, &format!("/api/v1/jobs/{job}")).await != 200 {
            lost.push(format!("job {job}"));
        }
    }
    assert_eq!(lost, Vec::<String>::new(), "acknowledged writes lost");
    for job in &acknowledged.jobs {
        let job = server.wait(job, |j| j["state"] == "succeeded").await;
        assert!(job["artifact_id"].is_string(), "{job}");
    }

    // Stop cleanly (SIGTERM, wait for the exit) and look at what is on disk.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(server);
    let url = format!(
        "sqlite://{}?mode=ro",
        data_dir.path().join("quantd.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let duplicated: Vec<String> =
        sqlx::query_scalar("SELECT job_id FROM artifacts GROUP BY job_id HAVING COUNT(*) > 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        duplicated,
        Vec::<String>::new(),
        "jobs that produced two artifacts"
    );
    let referenced: BTreeSet<String> = sqlx::query_scalar(
        "SELECT sha256 FROM models UNION SELECT sha256 FROM model_files \
         UNION SELECT sha256 FROM artifact_files",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    pool.close().await;
    let staging: Vec<_> = std::fs::read_dir(data_dir.path().join("blobs/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        staging,
        Vec::<std::path::PathBuf>::new(),
        "orphaned staging files"
    );
    let mut committed = BTreeSet::new();
    for shard in std::fs::read_dir(data_dir.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            // Every blob's name is its content's digest.
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                quantd::store::blobs::sha256_hex(&bytes),
                name,
                "a blob whose name lies"
            );
            committed.insert(name);
        }
    }
    let orphaned: Vec<_> = committed.difference(&referenced).collect();
    assert_eq!(orphaned, Vec::<&String>::new(), "orphaned blobs");
    let missing: Vec<_> = referenced.difference(&committed).collect();
    assert_eq!(
        missing,
        Vec::<&String>::new(),
        "recorded blobs that are gone"
    );
    println!(
        "chaos: 20 kills; acknowledged {} models ({} deleted), {} config.json, {} jobs; \
         0 lost, 0 duplicated, 0 orphaned, 0 missing",
        acknowledged.models.len(),
        acknowledged.deleted.len(),
        acknowledged.configured.len(),
        acknowledged.jobs.len()
    );
}

#[tokio::test]
async fn offline_quantize_writes_the_same_bytes_as_a_job() {
    let app = crate::helpers::spawn_app().await;
    let model: Value = app
        .upload_model("digits", digits_model_bytes())
        .await
        .json()
        .await
        .unwrap();
    let model_id = model["id"].as_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (scheme, format, file) in [
        ("q8_0", "gguf", "out.gguf"),
        ("int8", "safetensors", "out.st"),
    ] {
        let recorded = app
            .run_job(json!({"model_id": model_id, "scheme": scheme, "format": format}))
            .await;
        let artifact = app
            .download(&format!(
                "/api/v1/artifacts/{}/download",
                recorded["id"].as_str().unwrap()
            ))
            .await;
        let output = out.path().join(file);
        let status = Command::new(env!("CARGO_BIN_EXE_quantd"))
            .args([
                "quantize", "--scheme", scheme, "--format", format, "--name", "digits",
            ])
            .arg(crate::helpers::fixture(
                "digits/digits_mlp_fp32.safetensors",
            ))
            .arg("-o")
            .arg(&output)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let offline = std::fs::read(&output).unwrap();
        assert!(
            offline == artifact,
            "{scheme}/{format}: quantd quantize and the job's artifact differ"
        );
    }
    app.stop().await;
}
