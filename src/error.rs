//! What every failure in quantd is, independent of any protocol: an [`ErrorKind`] (mapped to a
//! status code in exactly one table, [`ErrorKind::status_code`]), a stable slug, and a
//! human-readable message with its `source` chain kept for the logs.
//!
//! Domain errors (store, jobs, serving, formats) implement [`Failure`]; the protocol envelopes
//! (problem+json, the Open Inference Protocol's `{"error"}`, OpenAI's error object) only render
//! what a `Failure` says.

/// Kinds of failure. The status code of each is chosen in [`ErrorKind::status_code`], nowhere
/// else.
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
    /// The one table from kinds to HTTP status codes. It lives here rather than in `http`
    /// because a failed job stores an RFC 9457 problem object, which carries the status too;
    /// `http/error.rs` only turns the number into its `StatusCode`.
    pub fn status_code(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Unprocessable => 422,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
            ErrorKind::InsufficientStorage => 507,
        }
    }

    /// Whether the failure is the client's to fix (4xx) rather than the server's.
    pub fn is_client_error(self) -> bool {
        !matches!(
            self,
            ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::InsufficientStorage
        )
    }

    /// A short summary of the kind (problem+json's `title`), for failures that give none.
    pub fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::NotFound => "Not found",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::RequestTimeout => "Request timed out",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PayloadTooLarge => "Payload too large",
            ErrorKind::UnsupportedMediaType => "Unsupported media type",
            ErrorKind::Unprocessable => "Unprocessable request",
            ErrorKind::TooManyRequests => "Too many requests",
            ErrorKind::Internal => "Internal server error",
            ErrorKind::Unavailable => "Service unavailable",
            ErrorKind::InsufficientStorage => "Insufficient storage",
        }
    }

    /// What a client is told of a server-side failure of this kind: a fixed sentence, since the
    /// failure's own text may name paths, SQL or other internals (it goes to the log instead).
    pub fn opaque_message(self) -> &'static str {
        match self {
            ErrorKind::InsufficientStorage => {
                "the server has no room to store this; nothing of the request was kept"
            }
            ErrorKind::Unavailable => {
                "the service is temporarily unavailable; nothing of the request was kept"
            }
            _ => "the server hit an internal error; it has been logged",
        }
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
    /// A short summary of the failure's type (problem+json's `title`).
    fn title(&self) -> &'static str {
        self.kind().title()
    }
    /// The sentence a client is shown: the `Display` text for client errors, the kind's opaque
    /// sentence for server errors (whose text and causes go to the log, see [`log_failure`]).
    /// A server error whose text is safe and useful to show (a full queue) overrides this.
    fn public_message(&self) -> String {
        if self.kind().is_client_error() {
            self.to_string()
        } else {
            self.kind().opaque_message().to_owned()
        }
    }
}

/// An error and its `source` chain on one line: `outer: cause: root cause`.
pub struct SourceChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for SourceChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Logs a server-side failure once, with its slug and its whole `source` chain; the client got
/// only [`Failure::public_message`]. Client errors are not logged here (the access log has them).
pub fn log_failure(failure: &(dyn Failure + 'static)) {
    if failure.kind().is_client_error() {
        return;
    }
    let error: &(dyn std::error::Error + 'static) = failure;
    tracing::error!(
        slug = failure.slug(),
        kind = ?failure.kind(),
        error = %SourceChain(error),
        "request failed on the server's side"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the blob")]
    struct Outer(#[source] std::io::Error);

    impl Failure for Outer {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Internal
        }
        fn slug(&self) -> &'static str {
            "internal-error"
        }
    }

    #[test]
    fn the_source_chain_is_logged_and_server_errors_stay_opaque() {
        let error = Outer(std::io::Error::other("disk /secret on fire"));
        assert_eq!(
            SourceChain(&error).to_string(),
            "reading the blob: disk /secret on fire"
        );
        assert!(!error.public_message().contains("secret"));
        assert_eq!(error.title(), "Internal server error");
    }
}
