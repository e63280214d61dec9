//! The structural rules that both sides apply: the writer refuses to write what breaks them and
//! the reader refuses to accept it, so whatever [`GgufWriter`](super::GgufWriter) writes,
//! [`read_gguf`](super::read_gguf) accepts (under limits that admit its size).
//!
//! They follow what ggml's reader (`gguf_init_from_reader` in ggml's `src/gguf.cpp`) checks,
//! since a file it rejects is useless to llama.cpp, plus a few it assumes without checking
//! (non-empty keys, non-zero dimensions).

/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const GGML_MAX_DIMS: usize = 4;

/// Longest tensor name in bytes: ggml stores names in `char name[GGML_MAX_NAME]` with
/// `GGML_MAX_NAME = 64`, NUL included, and rejects `length >= 64`.
pub const MAX_TENSOR_NAME_BYTES: usize = 63;

/// Longest metadata key in bytes (`docs/gguf.md`: "at most 2^16-1").
pub const MAX_KEY_BYTES: usize = 65_535;

/// Largest `general.alignment` ggml accepts (`GGUF_MAX_ALIGNMENT`, 1 MiB).
pub const MAX_ALIGNMENT: u32 = 1 << 20;

/// ggml's ceiling on one metadata string (`GGUF_MAX_STRING_LENGTH`): the writer refuses longer
/// strings, since llama.cpp would refuse the file.
pub const GGML_MAX_STRING_BYTES: u64 = 64 * 1024 * 1024;

/// ggml's ceiling on the elements of one metadata array (`GGUF_MAX_ARRAY_ELEMENTS`).
pub const GGML_MAX_ARRAY_ELEMENTS: u64 = 64 * 1024 * 1024;

/// Why `name` cannot be a tensor name, if it cannot.
pub(super) fn tensor_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".to_owned());
    }
    if name.len() > MAX_TENSOR_NAME_BYTES {
        return Some(format!(
            "the name is {} bytes long; ggml allows at most {MAX_TENSOR_NAME_BYTES}",
            name.len()
        ));
    }
    None
}

/// Why `key` cannot be read as a metadata key, if it cannot. ggml asserts on an empty key
/// (`GGML_ASSERT(!key.empty())` in `gguf_kv`), so an empty key would crash llama.cpp.
pub(super) fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("the key is empty".to_owned());
    }
    if key.len() > MAX_KEY_BYTES {
        return Some(format!(
            "the key is {} bytes long; GGUF allows at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    None
}

/// Why `alignment` cannot be a data alignment, if it cannot: ggml requires a power of two no
/// larger than [`MAX_ALIGNMENT`].
pub(super) fn alignment_problem(alignment: u32) -> Option<String> {
    if !alignment.is_power_of_two() {
        return Some("ggml requires a power of two".to_owned());
    }
    if alignment > MAX_ALIGNMENT {
        return Some(format!("ggml allows at most {MAX_ALIGNMENT}"));
    }
    None
}

/// `offset` rounded up to a multiple of `alignment` (a power of two), or `None` on overflow.
pub(super) fn align_up(offset: u64, alignment: u32) -> Option<u64> {
    let mask = u64::from(alignment).checked_sub(1)?;
    offset.checked_add(mask).map(|padded| padded & !mask)
}

/// Bytes of a tensor with `dims` in ggml order (`ne[0]` first, the fastest-varying) of a type
/// with the given block geometry, after ggml's checks: at most [`GGML_MAX_DIMS`] dimensions,
/// none zero (ggml divides by them), an element count below `i64::MAX`, and rows (`ne[0]`) made
/// of whole blocks. A rank of 0 is a scalar, as in ggml.
pub(super) fn tensor_byte_len(
    dims: &[u64],
    block_elements: usize,
    block_bytes: usize,
) -> Result<u64, String> {
    if dims.len() > GGML_MAX_DIMS {
        return Err(format!(
            "{} dimensions; ggml allows at most {GGML_MAX_DIMS}",
            dims.len()
        ));
    }
    if dims.contains(&0) {
        return Err(format!(
            "dimensions {dims:?} contain 0, which ggml cannot load"
        ));
    }
    // ggml holds dimensions and the element count in int64_t.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |product, &dim| product.checked_mul(dim))
        .filter(|&n_elements| n_elements < i64::MAX as u64);
    let Some(n_elements) = n_elements else {
        return Err(format!(
            "dimensions {dims:?} hold more elements than ggml can count"
        ));
    };
    let row_elements = dims.first().copied().unwrap_or(1);
    let block_elements = block_elements as u64;
    if block_elements == 0 || row_elements % block_elements != 0 {
        return Err(format!(
            "rows of {row_elements} elements are not a whole number of {block_elements}-element blocks"
        ));
    }
    (n_elements / block_elements)
        .checked_mul(block_bytes as u64)
        .ok_or_else(|| format!("dimensions {dims:?} need more than u64::MAX bytes"))
}
