//! Whole-file entry points: read and check a header from bytes or a reader of known length.
//!
//! Every entry point checks in the same order as [`StreamValidator`] meets the bytes (length
//! prefix, header, then total size), so one file gets one error however it is read.
//!
//! [`StreamValidator`]: super::StreamValidator

use std::io::Read;

use super::json::parse_header_json;
use super::validate::{check_file_size, validate_header};
use super::{Header, Limits, SafetensorsError, LENGTH_PREFIX_BYTES};

/// Decodes the 8-byte little-endian header length and checks it against `limits` and, when
/// known, the file length. Returns `N`, the JSON header length.
pub fn read_header_len(
    first8: [u8; 8],
    limits: &Limits,
    file_len: Option<u64>,
) -> Result<u64, SafetensorsError> {
    let header_len = u64::from_le_bytes(first8);
    check_header_len(header_len, limits)?;
    if let Some(file_len) = file_len {
        if LENGTH_PREFIX_BYTES.saturating_add(header_len) > file_len {
            return Err(SafetensorsError::HeaderExceedsFile {
                header_len,
                file_len,
            });
        }
    }
    Ok(header_len)
}

/// Parses and validates the JSON header.
///
/// `prefix` holds the file's bytes from offset 8 (just after the length prefix); it must hold at
/// least `header_len` bytes, and anything after them (tensor data) is ignored. A shorter
/// `prefix` is reported as [`SafetensorsError::HeaderExceedsFile`] with `file_len = 8 +
/// prefix.len()`. `header_len` is checked against `limits` again, so this is safe to call
/// without [`read_header_len`]. The total file size is *not* checked here (the caller may not
/// know it yet); the declared size is checked against `limits.max_file_bytes`.
pub fn parse_header_bytes(
    prefix: &[u8],
    header_len: u64,
    limits: &Limits,
) -> Result<Header, SafetensorsError> {
    check_header_len(header_len, limits)?;
    let header_bytes = usize::try_from(header_len)
        .ok()
        .and_then(|header_len| prefix.get(..header_len))
        .ok_or(SafetensorsError::HeaderExceedsFile {
            header_len,
            file_len: LENGTH_PREFIX_BYTES.saturating_add(prefix.len() as u64),
        })?;
    let header_text = std::str::from_utf8(header_bytes).map_err(|utf8_error| {
        SafetensorsError::HeaderNotUtf8 {
            valid_up_to: utf8_error.valid_up_to(),
        }
    })?;
    let raw_header = parse_header_json(header_text)?;
    validate_header(raw_header, header_len, limits)
}

/// Reads the header from the start of a file of `file_len` bytes and checks that the file is
/// exactly as long as the header declares. Reads only `8 + N` bytes, never tensor data; the
/// header buffer grows as bytes arrive, so a lying `file_len` cannot make it allocate `N` up
/// front.
pub fn read_header<R: Read>(
    mut reader: R,
    file_len: u64,
    limits: &Limits,
) -> Result<Header, SafetensorsError> {
    if file_len < LENGTH_PREFIX_BYTES {
        return Err(SafetensorsError::TooShort { len: file_len });
    }
    let mut first8 = [0u8; 8];
    reader.read_exact(&mut first8)?;
    let header_len = read_header_len(first8, limits, Some(file_len))?;
    let mut header_bytes = Vec::new();
    reader
        .by_ref()
        .take(header_len)
        .read_to_end(&mut header_bytes)?;
    if (header_bytes.len() as u64) < header_len {
        // The reader ended before the length its caller promised: an I/O problem, not the file's.
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "reader ended after {} bytes, but the file was said to be {file_len} bytes",
                LENGTH_PREFIX_BYTES + header_bytes.len() as u64
            ),
        )
        .into());
    }
    let header = parse_header_bytes(&header_bytes, header_len, limits)?;
    check_file_size(&header, file_len)?;
    Ok(header)
}

impl Header {
    /// Parses the header of a whole file held in memory (for example an mmap of a stored
    /// upload) and checks that the file is exactly as long as the header declares.
    pub fn parse_file(file: &[u8], limits: &Limits) -> Result<Header, SafetensorsError> {
        let file_len = file.len() as u64;
        let Some((first8, after_prefix)) = file.split_first_chunk::<8>() else {
            return Err(SafetensorsError::TooShort { len: file_len });
        };
        let header_len = read_header_len(*first8, limits, Some(file_len))?;
        let header = parse_header_bytes(after_prefix, header_len, limits)?;
        check_file_size(&header, file_len)?;
        Ok(header)
    }
}

/// The checks that need only `N`: the header limit, and the file limit that `8 + N` alone may
/// already exceed.
pub(super) fn check_header_len(header_len: u64, limits: &Limits) -> Result<(), SafetensorsError> {
    if header_len > limits.max_header_bytes {
        return Err(SafetensorsError::HeaderTooLarge {
            header_len,
            limit: limits.max_header_bytes,
        });
    }
    let minimum_file_size = LENGTH_PREFIX_BYTES.saturating_add(header_len);
    if minimum_file_size > limits.max_file_bytes {
        return Err(SafetensorsError::FileTooLarge {
            size: minimum_file_size,
            limit: limits.max_file_bytes,
        });
    }
    Ok(())
}
