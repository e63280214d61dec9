//! Why an untrusted safetensors file was rejected: one variant per kind, each with a stable slug.

/// Why a safetensors file (or upload stream) was rejected.
///
/// Each variant names the offending tensor and values in its message, and maps to a stable
/// [`slug`](SafetensorsError::slug) that the HTTP layer can use as a problem+json `type`. The
/// enum is plain data (`Clone`, `Eq`) so that a failed [`StreamValidator`] can repeat its error
/// and tests can compare errors whole; I/O failures keep only their kind and message for that
/// reason.
///
/// [`StreamValidator`]: crate::formats::safetensors::StreamValidator
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    /// Fewer than the 8 bytes of the header-length prefix.
    #[error("file is {len} bytes long; a safetensors file starts with an 8-byte header length")]
    TooShort { len: u64 },

    /// The header-length prefix exceeds [`Limits::max_header_bytes`](super::Limits).
    #[error("header length {header_len} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge { header_len: u64, limit: u64 },

    /// The header-length prefix claims more bytes than the file holds.
    #[error("header length {header_len} bytes does not fit in a file of {file_len} bytes")]
    HeaderExceedsFile { header_len: u64, file_len: u64 },

    /// The file (as declared by its header, or as seen so far) exceeds
    /// [`Limits::max_file_bytes`](super::Limits). `size` saturates at `u64::MAX`.
    #[error("file of at least {size} bytes exceeds the upload limit of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },

    /// The header bytes are not UTF-8.
    #[error("header is not valid UTF-8 (first invalid byte at header offset {valid_up_to})")]
    HeaderNotUtf8 { valid_up_to: usize },

    /// The header is not well-formed JSON (the message is serde_json's, with line and column).
    #[error("header is not valid JSON: {0}")]
    HeaderNotJson(String),

    /// The header is valid JSON but not an object.
    #[error("header is JSON but not an object: {0}")]
    HeaderNotObject(String),

    /// A tensor entry is not `{"dtype": string, "shape": [int], "data_offsets": [int, int]}`,
    /// or its name or rank is out of bounds.
    #[error("tensor {name:?}: invalid entry: {reason}")]
    InvalidTensorEntry { name: String, reason: String },

    /// `__metadata__` is not an object of unique string keys to string values.
    #[error("__metadata__ is invalid: {reason}")]
    InvalidMetadata { reason: String },

    /// More tensors than [`MAX_TENSORS`](super::MAX_TENSORS).
    #[error("header lists more than {limit} tensors")]
    TooManyTensors { limit: usize },

    /// A dtype this crate does not know.
    #[error("tensor {name:?}: unknown dtype {dtype:?}")]
    UnknownDtype { name: String, dtype: String },

    /// `product(shape) × dtype size` differs from `end − begin`; `expected_bytes` is `None`
    /// when that product overflows `u64`.
    #[error(
        "tensor {name:?}: shape {shape:?} of {dtype} needs {} but data_offsets span {actual_bytes} bytes",
        describe_expected_bytes(*expected_bytes)
    )]
    ShapeMismatch {
        name: String,
        dtype: super::Dtype,
        shape: Vec<usize>,
        expected_bytes: Option<u64>,
        actual_bytes: u64,
    },

    /// `data_offsets` with `begin > end`.
    #[error("tensor {name:?}: data_offsets [{begin}, {end}] end before they begin")]
    BadOffsets { name: String, begin: u64, end: u64 },

    /// Two tensors share bytes (or one starts inside the other).
    #[error("tensor {second:?} starts at data byte {second_begin}, inside tensor {first:?} which ends at {first_end}")]
    Overlap {
        first: String,
        first_end: u64,
        second: String,
        second_begin: u64,
    },

    /// Unclaimed bytes in the data section; `after` is `None` when the data section does not
    /// start with a tensor at offset 0.
    #[error(
        "data bytes {gap_begin}..{gap_end} belong to no tensor ({} {before:?})",
        describe_gap_start(after.as_deref())
    )]
    Gap {
        after: Option<String>,
        before: String,
        gap_begin: u64,
        gap_end: u64,
    },

    /// The file ends before the data section the header declares.
    #[error("file is {actual} bytes long but its header declares {expected} bytes")]
    Truncated { expected: u64, actual: u64 },

    /// The file goes on after the data section the header declares. From a stream, `actual`
    /// counts the bytes seen when the excess was noticed (a lower bound on the real length).
    #[error("file is at least {actual} bytes long but its header declares only {expected} bytes")]
    TrailingBytes { expected: u64, actual: u64 },

    /// The same tensor name appears twice in the header JSON (serde would keep the last).
    #[error("tensor {name:?} appears more than once in the header")]
    DuplicateTensor { name: String },

    /// Reading the file failed (not the file's fault).
    #[error("reading the file failed: {message}")]
    Io {
        kind: std::io::ErrorKind,
        message: String,
    },
}

impl SafetensorsError {
    /// A stable, machine-readable name for the kind of failure, suitable for a problem+json
    /// `type`. Several variants share a slug when a client could not act differently on them.
    pub fn slug(&self) -> &'static str {
        match self {
            SafetensorsError::TooShort { .. } => "safetensors-too-short",
            SafetensorsError::HeaderTooLarge { .. } => "safetensors-header-too-large",
            SafetensorsError::HeaderExceedsFile { .. } | SafetensorsError::Truncated { .. } => {
                "safetensors-truncated"
            }
            SafetensorsError::FileTooLarge { .. } => "upload-too-large",
            SafetensorsError::HeaderNotUtf8 { .. }
            | SafetensorsError::HeaderNotJson(_)
            | SafetensorsError::HeaderNotObject(_)
            | SafetensorsError::InvalidTensorEntry { .. }
            | SafetensorsError::InvalidMetadata { .. }
            | SafetensorsError::TooManyTensors { .. } => "safetensors-invalid-header",
            SafetensorsError::UnknownDtype { .. } => "safetensors-unknown-dtype",
            SafetensorsError::ShapeMismatch { .. } => "safetensors-shape-mismatch",
            SafetensorsError::BadOffsets { .. }
            | SafetensorsError::Overlap { .. }
            | SafetensorsError::Gap { .. } => "safetensors-bad-offsets",
            SafetensorsError::TrailingBytes { .. } => "safetensors-trailing-bytes",
            SafetensorsError::DuplicateTensor { .. } => "safetensors-duplicate-tensor",
            SafetensorsError::Io { .. } => "io-error",
        }
    }

    /// Whether the file itself is at fault (so the client gets a 4xx), as opposed to an I/O
    /// failure on our side.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, SafetensorsError::Io { .. })
    }
}

impl From<std::io::Error> for SafetensorsError {
    fn from(error: std::io::Error) -> Self {
        SafetensorsError::Io {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

fn describe_expected_bytes(expected_bytes: Option<u64>) -> String {
    match expected_bytes {
        Some(bytes) => format!("{bytes} bytes"),
        None => "more than u64::MAX bytes".to_owned(),
    }
}

fn describe_gap_start(after: Option<&str>) -> String {
    match after {
        Some(name) => format!("between tensor {name:?} and"),
        None => "at the start of the data section, before".to_owned(),
    }
}

/// What an HTTP client is told: 413 for what is over a limit, 422 for a malformed file, and a
/// logged 500 for an I/O failure on our side.
impl crate::error::Failure for SafetensorsError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            SafetensorsError::Io { .. } => ErrorKind::Internal,
            SafetensorsError::FileTooLarge { .. } | SafetensorsError::HeaderTooLarge { .. } => {
                ErrorKind::PayloadTooLarge
            }
            _ => ErrorKind::Unprocessable,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            SafetensorsError::Io { .. } => "internal-error",
            other => SafetensorsError::slug(other),
        }
    }

    fn title(&self) -> &'static str {
        match self {
            SafetensorsError::Io { .. } => "Internal server error",
            _ => "Invalid safetensors upload",
        }
    }
}
