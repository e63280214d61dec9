//! A push-based validator for uploads that arrive in chunks of any size.

use super::parse::{parse_header_bytes, read_header_len};
use super::validate::check_file_size;
use super::{Header, Limits, SafetensorsError};

/// Validates a safetensors upload while it streams, failing as soon as the bytes seen so far
/// prove the file bad:
///
/// - the header length is checked against the limits as soon as its 8 bytes arrive;
/// - the header is parsed and validated as soon as its last byte arrives, before any tensor
///   data, and its declared file size is checked against `max_file_bytes`;
/// - every later chunk is only counted, and the first byte past the declared size fails with
///   [`SafetensorsError::TrailingBytes`], so a lying body is never read to its end.
///
/// Only the header is buffered (at most `max_header_bytes`, grown as it arrives). The error
/// reported depends only on the bytes, never on how they were split into chunks, except for
/// `TrailingBytes::actual`, which counts the bytes seen when the excess was noticed. After an
/// error every call returns that same error.
#[derive(Debug)]
pub struct StreamValidator {
    limits: Limits,
    bytes_seen: u64,
    state: StreamState,
}

#[derive(Debug)]
enum StreamState {
    /// Collecting the 8-byte length prefix.
    LengthPrefix {
        bytes: [u8; 8],
        n_filled: usize,
    },
    /// Collecting the JSON header of `header_len` bytes.
    Header {
        header_len: u64,
        bytes: Vec<u8>,
    },
    /// Header validated; counting tensor bytes.
    Data {
        header: Header,
    },
    Failed(SafetensorsError),
}

impl StreamValidator {
    pub fn new(limits: Limits) -> Self {
        StreamValidator {
            limits,
            bytes_seen: 0,
            state: StreamState::LengthPrefix {
                bytes: [0; 8],
                n_filled: 0,
            },
        }
    }

    /// Accepts the next chunk of the upload.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SafetensorsError> {
        if let StreamState::Failed(error) = &self.state {
            return Err(error.clone());
        }
        self.advance(chunk).inspect_err(|error| {
            self.state = StreamState::Failed(error.clone());
        })
    }

    /// Total bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.bytes_seen
    }

    /// The declared length of the JSON header while it is being collected: known (and within
    /// the limits) once the 8-byte prefix has arrived, `None` before and after. A caller that
    /// feeds the prefix on its own learns how much the header will buffer before any of it is.
    pub fn pending_header_len(&self) -> Option<u64> {
        match &self.state {
            StreamState::Header { header_len, .. } => Some(*header_len),
            _ => None,
        }
    }

    /// The validated header, once it has fully arrived.
    pub fn header(&self) -> Option<&Header> {
        match &self.state {
            StreamState::Data { header } => Some(header),
            _ => None,
        }
    }

    /// The exact size the upload must have, once the header has arrived.
    pub fn expected_file_size(&self) -> Option<u64> {
        self.header().map(Header::total_file_size)
    }

    /// Ends the stream: succeeds only if exactly the declared number of bytes arrived.
    pub fn finish(self) -> Result<Header, SafetensorsError> {
        match self.state {
            StreamState::Failed(error) => Err(error),
            StreamState::LengthPrefix { .. } => Err(SafetensorsError::TooShort {
                len: self.bytes_seen,
            }),
            StreamState::Header { header_len, .. } => Err(SafetensorsError::HeaderExceedsFile {
                header_len,
                file_len: self.bytes_seen,
            }),
            StreamState::Data { header } => {
                check_file_size(&header, self.bytes_seen)?;
                Ok(header)
            }
        }
    }

    /// Consumes `chunk` through as many states as it reaches.
    fn advance(&mut self, chunk: &[u8]) -> Result<(), SafetensorsError> {
        self.bytes_seen = self.bytes_seen.saturating_add(chunk.len() as u64);
        let mut rest = chunk;
        loop {
            match &mut self.state {
                StreamState::LengthPrefix { bytes, n_filled } => {
                    let n_taken = (bytes.len() - *n_filled).min(rest.len());
                    bytes[*n_filled..*n_filled + n_taken].copy_from_slice(&rest[..n_taken]);
                    *n_filled += n_taken;
                    rest = &rest[n_taken..];
                    if *n_filled < bytes.len() {
                        return Ok(());
                    }
                    let header_len = read_header_len(*bytes, &self.limits, None)?;
                    self.state = StreamState::Header {
                        header_len,
                        bytes: Vec::new(),
                    };
                }
                StreamState::Header { header_len, bytes } => {
                    // `header_len - bytes.len()` fits in usize once compared with `rest.len()`.
                    let n_missing = *header_len - bytes.len() as u64;
                    let n_taken = rest
                        .len()
                        .min(usize::try_from(n_missing).unwrap_or(usize::MAX));
                    bytes.extend_from_slice(&rest[..n_taken]);
                    rest = &rest[n_taken..];
                    if (bytes.len() as u64) < *header_len {
                        return Ok(());
                    }
                    let header = parse_header_bytes(bytes, *header_len, &self.limits)?;
                    self.state = StreamState::Data { header };
                }
                StreamState::Data { header } => {
                    let expected = header.total_file_size();
                    if self.bytes_seen > expected {
                        return Err(SafetensorsError::TrailingBytes {
                            expected,
                            actual: self.bytes_seen,
                        });
                    }
                    // Unreachable while the declared size is within the limit, but it is
                    // the promise this type makes to the upload handler, so check it anyway.
                    if self.bytes_seen > self.limits.max_file_bytes {
                        return Err(SafetensorsError::FileTooLarge {
                            size: self.bytes_seen,
                            limit: self.limits.max_file_bytes,
                        });
                    }
                    return Ok(());
                }
                StreamState::Failed(_) => unreachable!("feed returns early once failed"),
            }
        }
    }
}
