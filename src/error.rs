//! What every failure in quantd is, independent of any protocol: an [`ErrorKind`] (which the HTTP
//! edge maps to a status code in exactly one table, `http/error.rs`), a stable slug, and a
//! human-readable message with its `source` chain kept for the logs.
//!
//! Domain errors (store, jobs, serving, formats) implement [`Failure`]; the protocol envelopes
//! (problem+json, the Open Inference Protocol's `{"error"}`, OpenAI's error object) only render
//! what a `Failure` says.

/// Kinds of failure. The status code of each is chosen at the edge (`impl ErrorKind` in
/// `http/error.rs`), nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is malformed (bad JSON, query, empty body).
    BadRequest,
    /// No such resource.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The client stopped sending the request body (see `http::limits`).
    RequestTimeout,
    /// The resource is in a state that forbids the request.
    Conflict,
    /// The body exceeds a configured limit.
    PayloadTooLarge,
    /// The body's media type is not accepted.
    UnsupportedMediaType,
    /// Well-formed but semantically invalid (bad safetensors, unknown scheme, bad option,
    /// an input that leaves f32's range).
    Unprocessable,
    /// Too many requests in flight; retry shortly.
    TooManyRequests,
    /// Our fault; the client is told nothing more and the cause is logged.
    Internal,
    /// Temporarily unable (queue full, dependency down); `Retry-After` tells when to retry.
    Unavailable,
    /// The data dir or the database has no room left; nothing of the request was kept.
    InsufficientStorage,
}

impl ErrorKind {
    /// Whether the failure is the client's to fix (4xx) rather than the server's.
    pub fn is_client_error(self) -> bool {
        !matches!(
            self,
            ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::InsufficientStorage
        )
    }
}

/// A failure that can be reported: its kind, a stable slug (`/problems/<slug>`, the OIP and
/// OpenAI error codes), and its `Display` text as the detail shown to a client when
/// [`ErrorKind::is_client_error`] (5xx details are logged with the `source` chain, not shown).
pub trait Failure: std::error::Error {
    fn kind(&self) -> ErrorKind;
    fn slug(&self) -> &'static str;
    /// For validation failures: the offending request field.
    fn field(&self) -> Option<&str> {
        None
    }
    /// Seconds after which a retry may succeed (503, 507, 429).
    fn retry_after(&self) -> Option<u64> {
        None
    }
}
