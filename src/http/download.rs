//! Streaming downloads of blobs with HTTP caching semantics: strong `ETag` (the sha256),
//! `If-None-Match` → 304, single `Range` → 206 (`If-Range` honoured), unsatisfiable → 416.

use std::ops::Range;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::{ApiError, AppState, ErrorKind};

/// What a `Range` header asks of a body of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: send everything.
    Full,
    /// One satisfiable byte range (end exclusive).
    Partial(Range<u64>),
    /// A syntactically valid range that lies outside the body.
    Unsatisfiable,
}

/// Parses a `Range` header value for one byte range. Multiple ranges and other units are served
/// as the full body, which RFC 9110 allows.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(suffix) = end.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if suffix == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial(size.saturating_sub(suffix)..size);
    }
    let Ok(start) = start.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let end_inclusive = if end.is_empty() {
        size.saturating_sub(1)
    } else {
        match end.parse::<u64>() {
            Ok(end) if end >= start => end.min(size.saturating_sub(1)),
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(start..end_inclusive + 1)
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value.trim() == "*"
        || header_value
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// The range a request asks for: its `Range` header, honoured only when `If-Range` (if any)
/// names this exact representation.
fn requested_range(request_headers: &HeaderMap, etag: &str, size: u64) -> RangeRequest {
    let header_text = |name| request_headers.get(name).and_then(|v| v.to_str().ok());
    let range = match header_text(header::RANGE) {
        Some(value) => parse_range(value, size),
        None => RangeRequest::Full,
    };
    match header_text(header::IF_RANGE) {
        Some(value) if value.trim() != etag => RangeRequest::Full,
        _ => range,
    }
}

/// Streams blob `sha256` of `size` bytes as an attachment named `filename`.
pub async fn serve_blob(
    state: &AppState,
    request_headers: &HeaderMap,
    sha256: &str,
    size: u64,
    filename: &str,
) -> Result<Response<Body>, ApiError> {
    let etag = format!("\"{sha256}\"");
    let disposition = format!(
        "attachment; filename=\"{}\"",
        filename.replace(['"', '\\'], "_")
    );
    let content_type = if filename.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let base = |status: StatusCode| {
        let mut builder = Response::builder()
            .status(status)
            .header(header::ETAG, &etag)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            );
        if status != StatusCode::NOT_MODIFIED {
            builder = builder
                .header(header::CONTENT_DISPOSITION, &disposition)
                .header(header::CONTENT_TYPE, content_type);
        }
        builder
    };

    if let Some(value) = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if etag_matches(value, &etag) {
            return Ok(base(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("valid response"));
        }
    }

    match requested_range(request_headers, &etag, size) {
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                ErrorKind::BadRequest,
                "range-not-satisfiable",
                "Range not satisfiable",
                format!("the requested range lies outside the {size} bytes of this file"),
            )
            .into_response_with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            Ok(response)
        }
        RangeRequest::Partial(range) => {
            let stream = state.blobs.get(sha256, Some(range.clone())).await?;
            Ok(base(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, range.end - range.start)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{size}", range.start, range.end - 1),
                )
                .body(Body::from_stream(
                    stream.map(|r| r.map_err(std::io::Error::other)),
                ))
                .expect("valid response"))
        }
        RangeRequest::Full => {
            let stream = state.blobs.get(sha256, None).await?;
            Ok(base(StatusCode::OK)
                .header(header::CONTENT_LENGTH, size)
                .body(Body::from_stream(
                    stream.map(|r| r.map_err(std::io::Error::other)),
                ))
                .expect("valid response"))
        }
    }
}

impl ApiError {
    /// The problem response with a status outside the kind table (416 only).
    fn into_response_with_status(self, status: StatusCode) -> Response<Body> {
        use axum::response::IntoResponse;
        let mut problem = self.problem();
        problem.status = status.as_u16();
        let mut response = (
            status,
            serde_json::to_vec(&problem).expect("problems serialize"),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeRequest::Partial(0..10));
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeRequest::Partial(90..100)
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            RangeRequest::Partial(0..100)
        );
        assert_eq!(
            parse_range("bytes=50-5000", 100),
            RangeRequest::Partial(50..100)
        );
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeRequest::Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeRequest::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeRequest::Full);
    }

    #[test]
    fn etags_match_lists_and_wildcards() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
