//! Reading the metadata and tensor infos of a whole GGUF file held in memory (an mmap), under
//! size limits and with checked arithmetic, before any tensor byte is touched.
//!
//! The order of checks follows ggml's `gguf_init_from_reader` (`src/gguf.cpp`): magic, version,
//! counts, key-value pairs (duplicate keys refused), `general.alignment`, tensor infos (name
//! length, duplicates, rank, dimensions, type, whole blocks per row, offsets back to back), then
//! the data section, which must hold every tensor.

use std::collections::HashSet;
use std::ops::Range;

use super::cursor::Cursor;
use super::rules::{
    align_up, alignment_problem, key_problem, tensor_byte_len, tensor_name_problem,
    GGML_MAX_ARRAY_ELEMENTS, GGML_MAX_DIMS, GGML_MAX_STRING_BYTES,
};
use super::value_decode::read_value;
use super::{
    type_size_info, GgufError, GgufTensorSpec, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    KEY_GENERAL_ALIGNMENT, KEY_GENERAL_ARCHITECTURE,
};

/// Size limits applied while reading an untrusted file. There is deliberately no `Default`: the
/// service decides them from its settings; [`GgufLimits::REFERENCE`] is a starting point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgufLimits {
    /// Largest metadata region: every byte from the magic to the end of the tensor infos. Real
    /// models need a few MiB here, mostly the tokenizer's vocabulary and merges. Parsed
    /// metadata takes at most about three times this in memory (an array of empty strings
    /// costs 8 bytes each on disk and 24 as `String`s).
    pub max_metadata_bytes: u64,
    /// Most key-value pairs.
    pub max_metadata_entries: u64,
    /// Longest string in bytes: keys, string values, array elements and tensor names.
    pub max_string_bytes: u64,
    /// Most elements in one metadata array.
    pub max_array_len: u64,
    /// Most tensors.
    pub max_tensors: u64,
}

impl GgufLimits {
    /// ggml's own per-string and per-array ceilings (`GGUF_MAX_STRING_LENGTH`,
    /// `GGUF_MAX_ARRAY_ELEMENTS`, both 64 Mi) with generous totals: whatever llama.cpp loads,
    /// this admits.
    pub const REFERENCE: GgufLimits = GgufLimits {
        max_metadata_bytes: 256 * 1024 * 1024,
        max_metadata_entries: 65_536,
        max_string_bytes: GGML_MAX_STRING_BYTES,
        max_array_len: GGML_MAX_ARRAY_ELEMENTS,
        max_tensors: 1_000_000,
    };
}

/// One tensor info of a validated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// Non-empty, at most 63 bytes, unique within the file.
    pub name: String,
    /// Dimensions as stored, in ggml order: `dims[0]` (`ne[0]`) is the fastest-varying, i.e.
    /// the last dimension of a row-major (PyTorch) shape. At most 4, none zero.
    pub dims: Vec<u64>,
    /// The ggml type id (see [`type_size_info`]).
    pub ggml_type: u32,
    /// Byte offset of the data from [`GgufFile::data_start`], a multiple of the alignment.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The row-major (PyTorch) shape: `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of elements (1 for a rank-0 scalar); saturates for a hand-built info.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |product, &dim| product.checked_mul(dim))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of data, or `None` when the type is unknown or the dimensions break ggml's rules
    /// (never for an info that [`read_gguf`] returned).
    pub fn n_bytes(&self) -> Option<u64> {
        let (block_elements, block_bytes) = type_size_info(self.ggml_type)?;
        tensor_byte_len(&self.dims, block_elements, block_bytes).ok()
    }

    /// The declaration that makes [`GgufWriter`](super::GgufWriter) write this tensor again
    /// (for passing tensors of a file read into a file written); `None` when
    /// [`n_bytes`](Self::n_bytes) is.
    pub fn to_spec(&self) -> Option<GgufTensorSpec> {
        Some(GgufTensorSpec {
            name: self.name.clone(),
            shape: self.shape(),
            ggml_type: self.ggml_type,
            n_bytes: self.n_bytes()?,
        })
    }
}

/// The metadata and tensor infos of a GGUF file that passed every check of [`read_gguf`].
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// 2 or 3 (the layouts are identical for little-endian files).
    pub version: u32,
    /// Key-value pairs in file order; keys are unique and non-empty.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order, which is data order.
    pub tensors: Vec<GgufTensorInfo>,
    /// `general.alignment`, or 32 when absent: a power of two of at most 1 MiB.
    pub alignment: u32,
    /// Absolute offset of the data section: the end of the tensor infos rounded up to the
    /// alignment. Every tensor's data lies within the file after it.
    pub data_start: u64,
}

impl GgufFile {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata
            .iter()
            .find(|(entry_key, _)| entry_key == key)
            .map(|(_, value)| value)
    }

    /// `general.architecture`, when it is present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get(KEY_GENERAL_ARCHITECTURE)
            .and_then(GgufValue::as_str)
    }

    /// The tensor called `name` (a linear scan).
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// Absolute byte range of `tensor`'s data in the file.
    pub fn file_range(&self, tensor: &GgufTensorInfo) -> Option<Range<u64>> {
        let begin = self.data_start.checked_add(tensor.offset)?;
        let end = begin.checked_add(tensor.n_bytes()?)?;
        Some(begin..end)
    }

    /// The bytes of `tensor` within the whole file (e.g. the mmap it was read from), or `None`
    /// when `file` is too short for them.
    pub fn tensor_bytes<'file>(
        &self,
        file: &'file [u8],
        tensor: &GgufTensorInfo,
    ) -> Option<&'file [u8]> {
        let range = self.file_range(tensor)?;
        let begin = usize::try_from(range.start).ok()?;
        let end = usize::try_from(range.end).ok()?;
        file.get(begin..end)
    }
}

/// Parses and checks the header, metadata and tensor infos of a whole GGUF file, and checks
/// that the file holds every tensor's data. Tensor data is not read. The padding after the last
/// tensor is not required (llama.cpp does not need it either).
pub fn read_gguf(file: &[u8], limits: &GgufLimits) -> Result<GgufFile, GgufError> {
    let mut cursor = Cursor::new(file, limits.max_metadata_bytes);
    let magic = cursor.read_array::<4>(&|| "the magic".to_owned())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cursor.read_u32(&|| "the version".to_owned())?;
    check_version(version)?;
    let tensor_count = cursor.read_u64(&|| "the tensor count".to_owned())?;
    check_limit("tensor count", tensor_count, limits.max_tensors)?;
    let metadata_count = cursor.read_u64(&|| "the metadata count".to_owned())?;
    check_limit(
        "metadata key-value count",
        metadata_count,
        limits.max_metadata_entries,
    )?;

    let metadata = read_metadata(&mut cursor, metadata_count, limits)?;
    let alignment = alignment_of(&metadata)?;
    let (tensors, n_bytes) = read_tensor_infos(&mut cursor, tensor_count, alignment, limits)?;
    // The position is inside a slice in memory and the alignment at most 1 MiB, so this cannot
    // overflow; if it did, the saturated start would fail the bounds check below.
    let data_start = align_up(cursor.position(), alignment).unwrap_or(u64::MAX);
    check_tensor_data_in_file(&tensors, &n_bytes, data_start, file.len() as u64)?;
    Ok(GgufFile {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// ggml reads versions 2 and 3 (1 had 32-bit lengths and is refused). A version whose low 16
/// bits are zero is how ggml spots a file of the other byte order.
fn check_version(version: u32) -> Result<(), GgufError> {
    if version != 0 && version & 0xFFFF == 0 {
        return Err(GgufError::BigEndian { version });
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    Ok(())
}

fn check_limit(what: &'static str, value: u64, limit: u64) -> Result<(), GgufError> {
    if value > limit {
        return Err(GgufError::LimitExceeded { what, value, limit });
    }
    Ok(())
}

fn read_metadata(
    cursor: &mut Cursor<'_>,
    metadata_count: u64,
    limits: &GgufLimits,
) -> Result<Vec<(String, GgufValue)>, GgufError> {
    let mut metadata = Vec::new();
    let mut seen_keys = HashSet::new();
    for entry_index in 0..metadata_count {
        let key_bytes = cursor.read_string_bytes(limits.max_string_bytes, &|| {
            format!("the key of metadata entry {entry_index}")
        })?;
        let key = std::str::from_utf8(key_bytes).map_err(|_| GgufError::InvalidMetadata {
            key: String::from_utf8_lossy(key_bytes).into_owned(),
            reason: "the key is not UTF-8".to_owned(),
        })?;
        if let Some(reason) = key_problem(key) {
            return Err(GgufError::InvalidMetadata {
                key: key.to_owned(),
                reason,
            });
        }
        if !seen_keys.insert(key) {
            return Err(GgufError::DuplicateKey {
                key: key.to_owned(),
            });
        }
        let type_id = cursor.read_u32(&|| format!("the value type of {key:?}"))?;
        let value = read_value(cursor, key, type_id, limits)?;
        metadata.push((key.to_owned(), value));
    }
    Ok(metadata)
}

/// `general.alignment`, which ggml reads with `gguf_get_val_u32` (asserting the type) and
/// gguf-py refuses unless it is a `u32`.
fn alignment_of(metadata: &[(String, GgufValue)]) -> Result<u32, GgufError> {
    let Some((key, value)) = metadata
        .iter()
        .find(|(key, _)| key == KEY_GENERAL_ALIGNMENT)
    else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let problem = match value {
        GgufValue::U32(alignment) => match alignment_problem(*alignment) {
            None => return Ok(*alignment),
            Some(reason) => format!("alignment {alignment}: {reason}"),
        },
        other => format!("must be a u32, but is a {}", other.value_type().name()),
    };
    Err(GgufError::InvalidMetadata {
        key: key.clone(),
        reason: problem,
    })
}

/// Reads the tensor infos; returns them with each tensor's byte length.
fn read_tensor_infos(
    cursor: &mut Cursor<'_>,
    tensor_count: u64,
    alignment: u32,
    limits: &GgufLimits,
) -> Result<(Vec<GgufTensorInfo>, Vec<u64>), GgufError> {
    let mut tensors = Vec::new();
    let mut byte_lengths = Vec::new();
    let mut seen_names = HashSet::new();
    // ggml requires each tensor to start where the previous one, padded, ends.
    let mut expected_offset = 0u64;
    for tensor_index in 0..tensor_count {
        let name_bytes = cursor.read_string_bytes(limits.max_string_bytes, &|| {
            format!("the name of tensor info {tensor_index}")
        })?;
        let name = std::str::from_utf8(name_bytes).map_err(|_| GgufError::BadTensor {
            name: String::from_utf8_lossy(name_bytes).into_owned(),
            reason: "the name is not UTF-8".to_owned(),
        })?;
        let bad_tensor = |reason: String| GgufError::BadTensor {
            name: name.to_owned(),
            reason,
        };
        if let Some(reason) = tensor_name_problem(name) {
            return Err(bad_tensor(reason));
        }
        if !seen_names.insert(name) {
            return Err(GgufError::DuplicateTensor {
                name: name.to_owned(),
            });
        }

        let context = || format!("the info of tensor {name:?}");
        let n_dims = cursor.read_u32(&context)?;
        // Refused before the dimensions are read, so a huge rank allocates nothing.
        if n_dims as usize > GGML_MAX_DIMS {
            return Err(bad_tensor(format!(
                "{n_dims} dimensions; ggml allows at most {GGML_MAX_DIMS}"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| cursor.read_u64(&context))
            .collect::<Result<Vec<u64>, GgufError>>()?;
        let ggml_type = cursor.read_u32(&context)?;
        let offset = cursor.read_u64(&context)?;

        let Some((block_elements, block_bytes)) = type_size_info(ggml_type) else {
            return Err(GgufError::UnknownTensorType {
                name: name.to_owned(),
                ggml_type,
            });
        };
        let n_bytes = tensor_byte_len(&dims, block_elements, block_bytes).map_err(bad_tensor)?;
        if offset != expected_offset {
            return Err(bad_tensor(format!(
                "data offset {offset}, but ggml requires {expected_offset}: tensors follow one \
                 another in info order, each padded to the {alignment}-byte alignment"
            )));
        }
        expected_offset = offset
            .checked_add(n_bytes)
            .and_then(|end| align_up(end, alignment))
            .ok_or_else(|| bad_tensor("the data section overflows u64".to_owned()))?;
        tensors.push(GgufTensorInfo {
            name: name.to_owned(),
            dims,
            ggml_type,
            offset,
        });
        byte_lengths.push(n_bytes);
    }
    Ok((tensors, byte_lengths))
}

fn check_tensor_data_in_file(
    tensors: &[GgufTensorInfo],
    byte_lengths: &[u64],
    data_start: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    for (tensor, &n_bytes) in tensors.iter().zip(byte_lengths) {
        let end = data_start
            .checked_add(tensor.offset)
            .and_then(|begin| begin.checked_add(n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorDataOutOfBounds {
                    name: tensor.name.clone(),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    Ok(())
}
