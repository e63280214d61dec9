//! Tests of the GGUF layer: the exact bytes of hand-checked files, writer → reader round trips,
//! the gguf-py fixture (read and rewritten byte for byte), one crafted file per rejection kind,
//! the writer's contract, and fuzzing of the reader with truncations and bit flips.

mod crafted_files;
mod fixture;
mod fuzz;
mod layout;
mod round_trip;
mod writer_contract;

use std::path::PathBuf;

use super::{GgufTensorSpec, GgufValue, GgufWriter};

/// Writes a whole file: declares `tensors`, then writes each one's bytes from `data` (same
/// order) in one call.
pub(super) fn write_file(
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorSpec>,
    data: &[Vec<u8>],
    alignment: u32,
) -> Vec<u8> {
    let names: Vec<String> = tensors.iter().map(|tensor| tensor.name.clone()).collect();
    let mut writer = GgufWriter::new(Vec::new(), metadata, tensors, alignment).unwrap();
    for (name, bytes) in names.iter().zip(data) {
        writer.write_tensor_data(name, bytes).unwrap();
    }
    writer.finish().unwrap()
}

/// A tensor spec from a row-major shape.
pub(super) fn spec(name: &str, shape: &[u64], ggml_type: u32, n_bytes: u64) -> GgufTensorSpec {
    GgufTensorSpec {
        name: name.to_owned(),
        shape: shape.to_vec(),
        ggml_type,
        n_bytes,
    }
}

/// `(key, value)` with an owned key.
pub(super) fn entry(key: &str, value: GgufValue) -> (String, GgufValue) {
    (key.to_owned(), value)
}

/// Deterministic, tensor-specific bytes so a misplaced tensor cannot go unnoticed.
pub(super) fn pattern_bytes(seed: u64, n_bytes: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n_bytes)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Finds a file of the shared fixtures: beside the repository in CI (`../shared`), or at the
/// workplace's `/work/shared` when the crate is built elsewhere. Panics when neither exists, so
/// a missing fixture fails loudly instead of skipping.
pub(super) fn fixture_path(relative_path: &str) -> PathBuf {
    let candidates = [
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")),
        PathBuf::from("/work/shared/fixtures"),
    ];
    candidates
        .iter()
        .map(|fixtures_dir| fixtures_dir.join(relative_path))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("fixture {relative_path} not found in {candidates:?}"))
}

/// The gguf-py fixture's bytes.
pub(super) fn tiny_gguf() -> Vec<u8> {
    std::fs::read(fixture_path("gguf/tiny.gguf")).unwrap()
}
