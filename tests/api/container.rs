//! The Dockerfile and docker-compose.yml checked against the code, since no container engine
//! runs here: the dependency-caching build step is executed as written, every path the build
//! copies exists, and every `QUANTD_*` variable they set (or show commented out) is a real setting.

use std::path::Path;
use std::process::Command;

fn repo_file(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The Dockerfile's logical lines (continuations joined), without comments.
fn dockerfile_instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in repo_file("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn the_dockerfile_dependency_step_accepts_the_manifest() {
    // The first RUN after `COPY Cargo.toml Cargo.lock` makes placeholder sources; run it (up to
    // its cargo build) in a scratch copy and let cargo load the manifest as the build would.
    let instructions = dockerfile_instructions();
    let copy_manifest = instructions
        .iter()
        .position(|i| i.starts_with("COPY Cargo.toml Cargo.lock"))
        .expect("the Dockerfile copies the manifest first");
    let run = instructions[copy_manifest + 1]
        .strip_prefix("RUN ")
        .expect("a RUN step follows");
    let placeholders = run
        .split("&& cargo build")
        .next()
        .expect("the step makes placeholders, then builds");
    let scratch = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), scratch.path().join(file)).unwrap();
    }
    let status = Command::new("sh")
        .args(["-ec", placeholders])
        .current_dir(scratch.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the placeholder step failed: {placeholders}"
    );
    let output = Command::new(env!("CARGO"))
        // Only this platform's crates are in the local cache (no network in tests).
        .args(["fetch", "--locked", "--offline", "--target"])
        .arg(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo refuses the manifest with the Dockerfile's placeholders: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_path_the_dockerfile_copies_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for instruction in dockerfile_instructions() {
        let Some(arguments) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        if arguments.starts_with("--from") {
            continue;
        }
        let mut paths: Vec<&str> = arguments.split_whitespace().collect();
        paths.pop(); // the destination
        for path in paths {
            assert!(
                root.join(path).exists(),
                "the Dockerfile copies {path}, which is missing"
            );
        }
    }
}

#[test]
fn every_quantd_variable_in_the_container_files_is_a_setting() {
    let help = Command::new(env!("CARGO_BIN_EXE_quantd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let variable = regex::Regex::new(r"QUANTD_[A-Z0-9_]+").unwrap();
    for file in ["Dockerfile", "docker-compose.yml"] {
        let text = repo_file(file);
        let names: Vec<&str> = variable.find_iter(&text).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "{file} sets no QUANTD_ variable");
        for name in names {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{file} uses {name}, which `quantd serve` does not read"
            );
        }
    }
}

#[test]
fn the_healthcheck_probes_readiness() {
    let instructions = dockerfile_instructions();
    let healthcheck = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains("http://127.0.0.1:8080/readyz"),
        "{healthcheck}"
    );
    assert!(repo_file("Dockerfile").contains("QUANTD_BIND=0.0.0.0:8080"));
}
