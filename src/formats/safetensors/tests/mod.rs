//! Tests of the safetensors layer: crafted bad files (one per error kind), interoperability with
//! the reference `safetensors` crate and the digits fixture, chunk-invariance of the stream
//! validator, and the writer's contract.

mod crafted_files;
mod interop;
mod stream;
mod writer;

use std::path::PathBuf;

use super::Limits;

/// Limits far above anything the tests build, so only the rule under test can fail.
pub(super) fn generous_limits() -> Limits {
    Limits {
        max_header_bytes: 1 << 20,
        max_file_bytes: 1 << 30,
    }
}

/// A file made of the length prefix, `header_json` as is (no padding), and `data`.
pub(super) fn file_with_header(header_json: &str, data: &[u8]) -> Vec<u8> {
    file_with_header_bytes(header_json.as_bytes(), data)
}

/// Like [`file_with_header`] for header bytes that need not be UTF-8.
pub(super) fn file_with_header_bytes(header_bytes: &[u8], data: &[u8]) -> Vec<u8> {
    let mut file = (header_bytes.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header_bytes);
    file.extend_from_slice(data);
    file
}

/// Finds a file of the shared fixtures: beside the repository in CI (`../shared`), or at the
/// workplace's `/work/shared` when the crate is built elsewhere. Panics when neither exists, so
/// a missing fixture fails loudly instead of skipping.
pub(super) fn fixture_path(relative_path: &str) -> PathBuf {
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
        PathBuf::from("/work/shared/fixtures"),
    ];
    candidates
        .iter()
        .map(|fixtures_dir| fixtures_dir.join(relative_path))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("fixture {relative_path} not found in {candidates:?}"))
}
