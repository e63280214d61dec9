//! Why an untrusted GGUF file was rejected (one variant per kind, each with a stable slug), and
//! why the writer refused a call.

/// Why a GGUF file was rejected by [`read_gguf`](super::read_gguf).
///
/// Each variant names the offending key or tensor and the values involved in its message, and
/// maps to a stable [`slug`](GgufError::slug) that the HTTP layer can use as a problem+json
/// `type`. Reading works on bytes already in memory, so there is no I/O variant and the enum is
/// plain data that tests can compare whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with the bytes `GGUF`.
    #[error("file starts with {found:02x?}, not the GGUF magic \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    /// A version this reader does not parse (it reads 2 and 3, like ggml).
    #[error("GGUF version {version} is not supported (this reader understands versions 2 and 3)")]
    UnsupportedVersion { version: u32 },

    /// The version reads as `N << 16`: a big-endian file, which this reader does not parse.
    #[error(
        "GGUF version field reads {version:#010x}: the file is big-endian, which is not supported"
    )]
    BigEndian { version: u32 },

    /// The file ends inside the header, the metadata or the tensor infos.
    #[error("file ends at byte {file_len}, but {context} needs bytes {offset}..{end}")]
    Truncated {
        context: String,
        offset: u64,
        end: u64,
        file_len: u64,
    },

    /// A tensor's data (at its aligned offset after the tensor infos) runs past the end of the
    /// file.
    #[error(
        "tensor {name:?}: data ends at file byte {end}, but the file is {file_len} bytes long"
    )]
    TensorDataOutOfBounds {
        name: String,
        end: u64,
        file_len: u64,
    },

    /// A count or size exceeds the caller's [`GgufLimits`](super::GgufLimits).
    #[error("{what} is {value}, above the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        limit: u64,
    },

    /// A key-value pair is malformed: a key or string that is not UTF-8, an unknown value type,
    /// a nested array, a bool that is neither 0 nor 1, or a `general.alignment` that is not a
    /// `u32` power of two. `key` is empty when the key itself could not be read.
    #[error("metadata key {key:?}: {reason}")]
    InvalidMetadata { key: String, reason: String },

    /// The same key appears twice (ggml and gguf-py refuse such files).
    #[error("metadata key {key:?} appears more than once")]
    DuplicateKey { key: String },

    /// A tensor info is malformed: its name, rank, dimensions or offset break ggml's rules.
    #[error("tensor {name:?}: {reason}")]
    BadTensor { name: String, reason: String },

    /// The same tensor name appears twice.
    #[error("tensor {name:?} appears more than once")]
    DuplicateTensor { name: String },

    /// A ggml type id this crate has no block size for (removed, or newer than this table).
    #[error("tensor {name:?} has ggml type {ggml_type}, which this reader does not know")]
    UnknownTensorType { name: String, ggml_type: u32 },
}

impl GgufError {
    /// A stable, machine-readable name for the kind of failure, suitable for a problem+json
    /// `type`. Several variants share a slug when a client could not act differently on them.
    pub fn slug(&self) -> &'static str {
        match self {
            GgufError::BadMagic { .. } => "gguf-bad-magic",
            GgufError::UnsupportedVersion { .. } | GgufError::BigEndian { .. } => {
                "gguf-unsupported-version"
            }
            GgufError::Truncated { .. } | GgufError::TensorDataOutOfBounds { .. } => {
                "gguf-truncated"
            }
            GgufError::LimitExceeded { .. } => "gguf-limit-exceeded",
            GgufError::InvalidMetadata { .. } | GgufError::DuplicateKey { .. } => {
                "gguf-invalid-metadata"
            }
            GgufError::BadTensor { .. } | GgufError::DuplicateTensor { .. } => "gguf-bad-tensor",
            GgufError::UnknownTensorType { .. } => "gguf-unsupported-tensor-type",
        }
    }
}

/// Why [`GgufWriter`](super::GgufWriter) refused a call. These are programming errors of the
/// caller (or I/O failures), never properties of an upload, so they have no slugs.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("alignment {alignment} is invalid: {reason}")]
    InvalidAlignment { alignment: u32, reason: String },
    #[error("metadata key {key:?} cannot be written: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("metadata key {key:?} is given more than once")]
    DuplicateKey { key: String },
    #[error("metadata value of {key:?} cannot be written: {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("tensor {name:?} cannot be written: {reason}")]
    InvalidTensor { name: String, reason: String },
    #[error("tensor {name:?} is declared more than once")]
    DuplicateTensor { name: String },
    #[error("tensor {name:?} was not declared")]
    UnknownTensor { name: String },
    #[error("tensor {name:?} was already written completely")]
    AlreadyWritten { name: String },
    #[error("data for tensor {name:?} arrived while tensor {pending:?} still misses {missing_bytes} bytes")]
    OutOfOrder {
        name: String,
        pending: String,
        missing_bytes: u64,
    },
    #[error("tensor {name:?} is declared as {declared} bytes but would receive {received}")]
    TooManyBytes {
        name: String,
        declared: u64,
        received: u64,
    },
    #[error("tensor {name:?} is declared as {declared} bytes but received only {received}")]
    Incomplete {
        name: String,
        declared: u64,
        received: u64,
    },
    #[error("an earlier write failed, so the output is incomplete")]
    Poisoned,
    #[error("writing the output failed")]
    Io(#[from] std::io::Error),
}
