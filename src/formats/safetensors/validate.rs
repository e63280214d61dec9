//! Semantic checks that turn raw header entries into a [`Header`].
//!
//! The rules are those of the reference reader (huggingface/safetensors,
//! `safetensors/src/tensor.rs`, `Metadata::validate` and `SafeTensors::read_metadata`): sorted by
//! `data_offsets`, the tensors must tile the data section from 0 without gap or overlap, and each
//! must span exactly `product(shape) × dtype size` bytes. We add what the reference leaves
//! open: duplicate names, bounded names and ranks, and checked arithmetic everywhere.

use std::collections::HashSet;

use super::json::{RawEntry, RawHeader};
use super::{
    Dtype, Header, Limits, SafetensorsError, TensorInfo, LENGTH_PREFIX_BYTES, MAX_NAME_BYTES,
    METADATA_KEY,
};

/// Checks every rule and builds the header; errors come in a fixed order (entries in
/// declaration order, then duplicates, then tiling, then total size) so that every way of
/// reading the same bytes reports the same error.
pub(super) fn validate_header(
    raw_header: RawHeader,
    header_len: u64,
    limits: &Limits,
) -> Result<Header, SafetensorsError> {
    let mut tensors = Vec::with_capacity(raw_header.entries.len());
    for entry in raw_header.entries {
        tensors.push(validate_entry(entry)?);
    }
    reject_duplicate_names(&tensors)?;

    // A stable sort on (begin, end): zero-sized tensors sharing an offset keep their order.
    tensors.sort_by_key(|tensor| tensor.data_offsets);
    let data_len = check_tiling(&tensors)?;

    let declared_size = LENGTH_PREFIX_BYTES
        .checked_add(header_len)
        .and_then(|data_start| data_start.checked_add(data_len));
    match declared_size {
        Some(size) if size <= limits.max_file_bytes => {}
        _ => {
            return Err(SafetensorsError::FileTooLarge {
                size: declared_size.unwrap_or(u64::MAX),
                limit: limits.max_file_bytes,
            })
        }
    }

    Ok(Header {
        tensors,
        metadata: raw_header.metadata,
        header_len,
        data_start: LENGTH_PREFIX_BYTES + header_len,
        data_len,
    })
}

/// Why `name` cannot be a tensor name, if it cannot. Shared with the writer so that we never
/// write a file we would refuse to read.
pub(super) fn tensor_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("tensor name is empty".to_owned())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "tensor name is {} bytes long, more than {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name == METADATA_KEY {
        Some(format!("{METADATA_KEY:?} is reserved for metadata"))
    } else {
        None
    }
}

/// `product(shape) × dtype size` in bytes, or `None` on overflow.
pub(super) fn tensor_byte_len(dtype: Dtype, shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(dtype.size_bytes() as u64, |bytes, &dim| {
            bytes.checked_mul(u64::try_from(dim).ok()?)
        })
}

/// Compares the declared size of a file with its real size.
pub(super) fn check_file_size(header: &Header, actual: u64) -> Result<(), SafetensorsError> {
    let expected = header.total_file_size();
    if actual < expected {
        Err(SafetensorsError::Truncated { expected, actual })
    } else if actual > expected {
        Err(SafetensorsError::TrailingBytes { expected, actual })
    } else {
        Ok(())
    }
}

/// Shortens attacker-controlled text before it goes into an error message.
pub(super) fn shorten_for_message(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn validate_entry(entry: RawEntry) -> Result<TensorInfo, SafetensorsError> {
    let RawEntry { name, fields } = entry;
    if let Some(reason) = tensor_name_problem(&name) {
        return Err(SafetensorsError::InvalidTensorEntry {
            name: shorten_for_message(&name),
            reason,
        });
    }
    let Some(dtype) = Dtype::from_name(&fields.dtype) else {
        return Err(SafetensorsError::UnknownDtype {
            name,
            dtype: shorten_for_message(&fields.dtype),
        });
    };
    // The JSON parser already bounded the rank; dimensions must also fit the platform's usize.
    let mut shape = Vec::with_capacity(fields.shape.len());
    for dim in fields.shape {
        match usize::try_from(dim) {
            Ok(dim) => shape.push(dim),
            Err(_) => {
                return Err(SafetensorsError::InvalidTensorEntry {
                    name,
                    reason: format!("dimension {dim} does not fit in usize"),
                })
            }
        }
    }
    let (begin, end) = fields.data_offsets;
    if begin > end {
        return Err(SafetensorsError::BadOffsets { name, begin, end });
    }
    let actual_bytes = end - begin;
    let expected_bytes = tensor_byte_len(dtype, &shape);
    if expected_bytes != Some(actual_bytes) {
        return Err(SafetensorsError::ShapeMismatch {
            name,
            dtype,
            shape,
            expected_bytes,
            actual_bytes,
        });
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

/// Reports the first name (in declaration order) that was already used.
fn reject_duplicate_names(tensors: &[TensorInfo]) -> Result<(), SafetensorsError> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for tensor in tensors {
        if !seen.insert(tensor.name.as_str()) {
            return Err(SafetensorsError::DuplicateTensor {
                name: tensor.name.clone(),
            });
        }
    }
    Ok(())
}

/// Checks that tensors sorted by offsets cover `[0, data_len)` exactly; returns `data_len`.
fn check_tiling(sorted_tensors: &[TensorInfo]) -> Result<u64, SafetensorsError> {
    let mut cursor = 0u64;
    let mut previous: Option<&str> = None;
    for tensor in sorted_tensors {
        let (begin, end) = tensor.data_offsets;
        if begin < cursor {
            return Err(SafetensorsError::Overlap {
                // `cursor > 0` implies a previous tensor.
                first: previous.unwrap_or_default().to_owned(),
                first_end: cursor,
                second: tensor.name.clone(),
                second_begin: begin,
            });
        }
        if begin > cursor {
            return Err(SafetensorsError::Gap {
                after: previous.map(str::to_owned),
                before: tensor.name.clone(),
                gap_begin: cursor,
                gap_end: begin,
            });
        }
        cursor = end;
        previous = Some(&tensor.name);
    }
    Ok(cursor)
}
