//! The safetensors format: reading untrusted headers under size limits (whole files, readers
//! and chunked upload streams) and writing files tensor by tensor.
//!
//! A file is an 8-byte little-endian `u64` `N`, then `N` bytes of UTF-8 JSON, then the data
//! section. The JSON is an object mapping each tensor name to
//! `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`, offsets relative to the
//! data section, plus an optional `"__metadata__": {string: string}`. The reference is
//! huggingface/safetensors, `safetensors/src/tensor.rs` (`SafeTensors::read_metadata`,
//! `Metadata::validate`, `prepare`); this module accepts what it accepts, and also refuses
//! duplicate names, unbounded names and ranks, a non-object `__metadata__`, and files over the
//! caller's limits, all with checked arithmetic before any tensor byte is read.
//!
//! Code map:
//! - `dtype`: [`Dtype`], element types with their JSON spelling and size.
//! - `error`: [`SafetensorsError`], one variant per rejection kind, each with a stable slug.
//! - `header`: [`Header`], [`TensorInfo`], [`Limits`], the validated result.
//! - `json`: the key-by-key JSON visitor (sees duplicate keys, bounds ranks while parsing).
//! - `validate`: the semantic rules from raw entries to a [`Header`].
//! - `parse`: whole-file entry points ([`read_header_len`], [`parse_header_bytes`],
//!   [`read_header`], [`Header::parse_file`]).
//! - `stream`: [`StreamValidator`], the same checks over chunks as they arrive.
//! - `elements`, `writer`: [`SafetensorsWriter`] and little-endian encoding of element slices.

mod dtype;
mod elements;
mod error;
mod header;
mod json;
mod parse;
mod stream;
mod validate;
mod writer;

#[cfg(test)]
mod tests;

pub use dtype::Dtype;
pub use elements::{encode_le_into, to_le_bytes, LittleEndianElement};
pub use error::SafetensorsError;
pub use header::{Header, Limits, TensorInfo};
pub use parse::{parse_header_bytes, read_header, read_header_len};
pub use stream::StreamValidator;
pub use writer::{SafetensorsWriteError, SafetensorsWriter};

/// Size of the little-endian header-length prefix.
pub const LENGTH_PREFIX_BYTES: u64 = 8;

/// The key of the optional string-to-string metadata object.
pub const METADATA_KEY: &str = "__metadata__";

/// The largest header the reference reader accepts (its `MAX_HEADER_SIZE`); a sensible
/// `Limits::max_header_bytes`.
pub const REFERENCE_MAX_HEADER_BYTES: u64 = 100_000_000;

/// Most tensors one header may list.
pub const MAX_TENSORS: usize = 1_000_000;

/// Longest tensor name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Most dimensions one tensor may have.
pub const MAX_RANK: usize = 8;
