//! Architecture invariants checked on the source tree.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The pure layer (math, kernels, file formats) must not depend on the async runtime, the web
/// framework, the database or the object store.
#[test]
fn pure_modules_stay_free_of_io_frameworks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        "tokio",
        "axum",
        "sqlx",
        "object_store",
        "hyper",
        "tower",
        "reqwest",
        "utoipa",
    ];
    let mut files = Vec::new();
    for pure in ["quant", "formats", "infer"] {
        rust_files(&root.join(pure), &mut files);
    }
    assert!(
        files.len() >= 4,
        "expected the pure modules at src/quant, src/formats and src/infer"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for name in forbidden {
                assert!(
                    !code.contains(&format!("{name}::")) && !code.contains(&format!("use {name}")),
                    "{}:{}: the pure layer must not use {name}: {line}",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

/// Every `unsafe` block carries a `// SAFETY:` comment right above it.
#[test]
fn every_unsafe_block_is_justified() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap();
            if code.contains("unsafe {") {
                let justified = lines[..index]
                    .iter()
                    .rev()
                    .take(6)
                    .any(|l| l.contains("SAFETY:"));
                assert!(
                    justified,
                    "{}:{}: unsafe block without a SAFETY comment",
                    file.display(),
                    index + 1
                );
            }
        }
    }
}
