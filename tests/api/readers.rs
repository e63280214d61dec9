//! What the independent-reader tests share: venvs of pinned PyPI readers (created on first use
//! under `~/.cache/quantd-ci/venvs`, outside the clone, so that CI's fresh clones reuse them and
//! refreshed when their requirements change), running the reader scripts of tests/interop, and
//! making artifacts to hand them.
//!
//! The light venv (`tests/interop/requirements.txt` and `requirements-nodeps.txt`, no torch)
//! serves `cargo test`; `tests/interop_torch` adds a torch venv for its own command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::helpers::TestApp;

static VENV_LOCK: Mutex<()> = Mutex::new(());

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Where a test venv lives between runs: outside the clone, so that CI (a fresh clone each
/// time) reuses it; it is refreshed when its requirements change.
pub fn cached_venv_dir(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| repo_path("target"), PathBuf::from);
    home.join(".cache/quantd-ci/venvs").join(name)
}

/// The light readers' python (gguf-py, safetensors, ml_dtypes, numpy, the MiniLM weights: tens
/// of MB), creating the venv when it is missing or its requirements changed.
pub fn interop_python() -> PathBuf {
    let venv = std::env::var_os("QUANTD_INTEROP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached_venv_dir("interop"));
    venv_python(
        &venv,
        &[
            ("requirements.txt", None),
            ("requirements-nodeps.txt", Some("--no-deps")),
        ],
    )
}

/// The python of the venv at `venv`, created (or refreshed when the requirements changed) with
/// the given requirement files of tests/interop, each with an optional extra pip argument.
pub fn venv_python(venv: &Path, requirement_files: &[(&str, Option<&str>)]) -> PathBuf {
    let _guard = VENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let python = venv.join("bin/python");
    let requirements = requirement_files
        .iter()
        .map(|(file, _)| std::fs::read_to_string(repo_path("tests/interop").join(file)).unwrap())
        .collect::<String>();
    let marker = venv.join("quantd-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str())
        && python.exists()
    {
        return python;
    }
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&system_python)
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "creating the venv {} failed",
        venv.display()
    );
    for (file, extra) in requirement_files {
        let output = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(extra)
            .arg("-r")
            .arg(repo_path("tests/interop").join(file))
            .output()
            .expect("pip runs");
        assert!(
            output.status.success(),
            "installing {file} into {} failed:\n{}",
            venv.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(&marker, requirements).unwrap();
    python
}

/// Runs a script from tests/interop with the light readers; returns its stdout parsed as JSON.
pub fn run_interop_script(script: &str, args: &[&Path]) -> Value {
    run_script(&interop_python(), script, args)
}

pub fn run_script(python: &Path, script: &str, args: &[&Path]) -> Value {
    let output = Command::new(python)
        .arg(repo_path("tests/interop").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Runs a job on the digits model and saves the artifact's primary file under the test's data dir.
pub async fn artifact_file(
    app: &TestApp,
    model_id: &str,
    scheme: &str,
    options: Value,
    format: &str,
) -> (PathBuf, Vec<u8>) {
    let (path, bytes, _) = artifact_files(app, model_id, scheme, options, format).await;
    (path, bytes)
}

/// Like [`artifact_file`], also saving `config.json` when the artifact has one.
pub async fn artifact_files(
    app: &TestApp,
    model_id: &str,
    scheme: &str,
    options: Value,
    format: &str,
) -> (PathBuf, Vec<u8>, Option<PathBuf>) {
    let artifact = app
        .run_job(
            json!({"model_id": model_id, "scheme": scheme, "options": options, "format": format}),
        )
        .await;
    let job_id = artifact["job_id"].as_str().unwrap();
    let artifact_id = artifact["id"].as_str().unwrap();
    let bytes = app
        .download(&format!("/api/v1/artifacts/{artifact_id}/download"))
        .await;
    let path = app.data_dir.path().join(format!("{job_id}.safetensors"));
    std::fs::write(&path, &bytes).unwrap();
    let has_config = artifact["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["filename"] == "config.json");
    let config = if has_config {
        let config_path = app.data_dir.path().join(format!("{job_id}.config.json"));
        let config_bytes = app
            .download(&format!(
                "/api/v1/artifacts/{artifact_id}/files/config.json"
            ))
            .await;
        std::fs::write(&config_path, config_bytes).unwrap();
        Some(config_path)
    } else {
        None
    };
    (path, bytes, config)
}

pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
