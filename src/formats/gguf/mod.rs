//! The GGUF format (GGUF v3, little-endian): writing the files llama.cpp and gguf-py load, and
//! reading untrusted ones under size limits.
//!
//! A file is the magic `GGUF`, a `u32` version, a `u64` tensor count and a `u64` key-value
//! count; then the key-value pairs (a string key, a `u32` value type, the value); then one info
//! per tensor (a name, a `u32` rank, the dimensions as `u64` in ggml order — `ne[0]`, the
//! fastest-varying, first, i.e. a row-major shape reversed — a `u32` ggml type and a `u64`
//! offset from the start of the data section); then zero padding to `general.alignment`
//! (default 32) and the data section, each tensor padded to the alignment. The references are
//! ggml's `docs/gguf.md` and `src/gguf.cpp` (`gguf_init_from_reader`, `gguf_write_to_buf`) and
//! gguf-py's `gguf/gguf_writer.py`, `gguf/gguf_reader.py` and `gguf/constants.py` (in
//! llama.cpp's `gguf-py/`). The reader accepts what ggml accepts and refuses, besides, zero
//! dimensions, empty keys and names, bools other than 0/1, and files over the caller's limits,
//! all with checked arithmetic before any tensor byte is touched.
//!
//! Code map:
//! - `error`: [`GgufError`] (one variant per rejection, each with a stable slug) and
//!   [`GgufWriteError`] (caller mistakes and I/O).
//! - `keys`: standard metadata keys, `LLAMA_FTYPE_*` file types, defaults.
//! - `ggml_type`: ggml type ids and their block geometry ([`type_size_info`]).
//! - `rules`: the structural rules reader and writer share (names, ranks, alignment).
//! - `value`: [`GgufValue`], [`GgufArray`], [`GgufValueType`] and their encoding.
//! - `cursor`, `value_decode`: the bounds-checked decoding of untrusted bytes.
//! - `reader`: [`read_gguf`], [`GgufFile`], [`GgufTensorInfo`], [`GgufLimits`].
//! - `writer`: [`GgufWriter`], [`GgufTensorSpec`].

mod cursor;
mod error;
mod ggml_type;
mod keys;
mod reader;
mod rules;
mod value;
mod value_decode;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{GgufError, GgufWriteError};
pub use ggml_type::{
    ggml_type_name, type_size_info, GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_F64,
    GGML_TYPE_I16, GGML_TYPE_I32, GGML_TYPE_I64, GGML_TYPE_I8, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K,
    GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_Q8_1, GGML_TYPE_Q8_K,
};
pub use keys::{
    DEFAULT_ALIGNMENT, GGML_QUANTIZATION_VERSION, KEY_GENERAL_ALIGNMENT, KEY_GENERAL_ARCHITECTURE,
    KEY_GENERAL_FILE_TYPE, KEY_GENERAL_NAME, KEY_GENERAL_QUANTIZATION_VERSION, LLAMA_FTYPE_ALL_F32,
    LLAMA_FTYPE_MOSTLY_BF16, LLAMA_FTYPE_MOSTLY_F16, LLAMA_FTYPE_MOSTLY_Q4_0,
    LLAMA_FTYPE_MOSTLY_Q4_1, LLAMA_FTYPE_MOSTLY_Q4_K_S, LLAMA_FTYPE_MOSTLY_Q5_0,
    LLAMA_FTYPE_MOSTLY_Q5_1, LLAMA_FTYPE_MOSTLY_Q6_K, LLAMA_FTYPE_MOSTLY_Q8_0,
};
pub use reader::{read_gguf, GgufFile, GgufLimits, GgufTensorInfo};
pub use rules::{
    GGML_MAX_ARRAY_ELEMENTS, GGML_MAX_DIMS, GGML_MAX_STRING_BYTES, MAX_ALIGNMENT, MAX_KEY_BYTES,
    MAX_TENSOR_NAME_BYTES,
};
pub use value::{GgufArray, GgufValue, GgufValueType};
pub use writer::{GgufTensorSpec, GgufWriter};

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The version the writer writes.
pub const GGUF_VERSION: u32 = 3;
