//! Rejections made by the HTTP layer itself, in the envelope of the protocol a path belongs to:
//! problem+json under `/api/v1` and the ops routes, `{"error": "..."}` under `/v2` (Open Inference
//! Protocol), `{"error": {"message", "type", "param", "code"}}` under `/v1` (OpenAI).
//!
//! axum answers its own rejections (body over the limit, undecodable path parameters, …) in plain
//! text, and our fallbacks answer problem+json whatever the path. [`enveloped_errors`] is the
//! outer middleware that rewrites every error response not already in the path's envelope, and
//! that enforces the request-head limits below: hyper's own limits sit above them (see
//! `http::serve`), so an over-long target or header section reaches this layer and is refused
//! here, in the envelope, rather than by hyper with an empty body.

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use super::Problem;

/// Longest request target (path and query, or the absolute URI) accepted; longer gets 414.
pub const MAX_REQUEST_TARGET_BYTES: usize = 8 << 10;
/// Largest header section accepted (each field counted as `name: value\r\n`); larger gets 431.
pub const MAX_HEADER_SECTION_BYTES: usize = 64 << 10;
/// Most header fields accepted; more gets 431.
pub const MAX_HEADER_FIELDS: usize = 100;

/// Error bodies longer than this are not echoed back (axum's rejection texts are far shorter).
const MAX_REWRITTEN_BODY_BYTES: usize = 16 << 10;

/// Which error envelope a path's clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 9457 problem+json: `/api/v1`, the ops routes, the docs, unknown paths.
    Problem,
    /// Open Inference Protocol v2: `{"error": "..."}`.
    InferenceV2,
    /// OpenAI: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
}

impl Protocol {
    pub fn for_path(path: &str) -> Protocol {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v2") {
            Protocol::InferenceV2
        } else if under("/v1") {
            Protocol::OpenAi
        } else {
            Protocol::Problem
        }
    }
}

/// An error before it is put in an envelope.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    /// The problem `type` (a `/problems/...` slug URI).
    type_uri: String,
    detail: String,
    field: Option<String>,
}

impl HttpError {
    /// An error the HTTP layer made, with the slug its status stands for.
    fn from_status(status: StatusCode, detail: String) -> HttpError {
        HttpError {
            status,
            type_uri: format!("/problems/{}", slug_for(status)),
            detail,
            field: None,
        }
    }

    fn into_response(self, protocol: Protocol) -> Response {
        let problem = Problem {
            type_uri: self.type_uri,
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        protocol.render(problem, None)
    }
}

impl Protocol {
    /// An error in this protocol's envelope: the problem itself (problem+json), its detail as
    /// `{"error": "..."}` (OIP), or OpenAI's `{"error": {"message", "type", "param", "code"}}`
    /// with `param` the offending field. The status is the problem's; `Retry-After` is set when
    /// given. Every error body the service sends is made here.
    pub fn render(self, problem: Problem, retry_after_secs: Option<u64>) -> Response {
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (content_type, body) = match self {
            Protocol::Problem => ("application/problem+json", json!(problem)),
            Protocol::InferenceV2 => ("application/json", json!({"error": problem.detail})),
            Protocol::OpenAi => {
                let kind = match status {
                    StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                    status if status.is_server_error() => "server_error",
                    _ => "invalid_request_error",
                };
                let body = json!({"error": {
                    "message": problem.detail,
                    "type": kind,
                    "param": problem.field,
                    "code": null,
                }});
                ("application/json", body)
            }
        };
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(seconds) = retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The `type` slug of an error the HTTP layer made, by status.
fn slug_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "route-not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "request-timeout",
        StatusCode::LENGTH_REQUIRED => "length-required",
        StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        StatusCode::URI_TOO_LONG => "uri-too-long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "too-many-requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers-too-large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal-error",
        _ => "http-error",
    }
}

/// Length of the request target as the client sent it (origin form, or absolute form).
fn target_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path_and_query = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path_and_query
}

/// 414 or 431 when the request head is over our limits.
fn oversized_head(uri: &Uri, headers: &HeaderMap) -> Option<HttpError> {
    let target = target_len(uri);
    if target > MAX_REQUEST_TARGET_BYTES {
        return Some(HttpError::from_status(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target has {target} bytes; the limit is {MAX_REQUEST_TARGET_BYTES}"
            ),
        ));
    }
    if headers.len() > MAX_HEADER_FIELDS {
        return Some(HttpError::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} header fields; the limit is {MAX_HEADER_FIELDS}",
                headers.len()
            ),
        ));
    }
    let section: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + "\r\n".len())
        .sum();
    if section > MAX_HEADER_SECTION_BYTES {
        return Some(HttpError::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the header section has {section} bytes; the limit is {MAX_HEADER_SECTION_BYTES}"
            ),
        ));
    }
    None
}

/// What an error response's body already is.
enum ErrorBody {
    /// Our problem+json (the API's own errors and the fallbacks).
    Problem,
    /// Some other JSON: the protocol handlers' own envelopes.
    OtherJson,
    /// Plain text or nothing: a rejection axum (or a layer) made.
    Plain,
}

fn error_body(headers: &HeaderMap) -> ErrorBody {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/problem+json" {
        ErrorBody::Problem
    } else if essence == "application/json" || essence.ends_with("+json") {
        ErrorBody::OtherJson
    } else {
        ErrorBody::Plain
    }
}

/// Middleware: refuses over-long request heads, and puts every error response that is not yet
/// in the envelope of its path's protocol into it (keeping status and headers such as
/// `Retry-After` or `Allow`).
pub async fn enveloped_errors(request: Request, next: Next) -> Response {
    let protocol = Protocol::for_path(request.uri().path());
    if let Some(error) = oversized_head(request.uri(), request.headers()) {
        tracing::info!(status = %error.status, detail = %error.detail, "request head refused");
        return error.into_response(protocol);
    }
    let response = next.run(request).await;
    if !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let error_body = error_body(response.headers());
    match (&error_body, protocol) {
        (ErrorBody::OtherJson, _) | (ErrorBody::Problem, Protocol::Problem) => return response,
        _ => {}
    }
    let (mut parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_REWRITTEN_BODY_BYTES)
        .await
        .unwrap_or_default();
    let error = match error_body {
        ErrorBody::Problem => from_problem(parts.status, &bytes),
        _ => from_plain(parts.status, &bytes),
    };
    let (enveloped, body) = error.into_response(protocol).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(enveloped.headers);
    Response::from_parts(parts, body)
}

/// A problem+json body, for the other envelopes.
fn from_problem(status: StatusCode, bytes: &[u8]) -> HttpError {
    let problem: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let text = |key: &str| problem.get(key).and_then(Value::as_str).map(str::to_owned);
    HttpError {
        status,
        type_uri: text("type").unwrap_or_else(|| format!("/problems/{}", slug_for(status))),
        detail: text("detail")
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default(),
        field: text("field"),
    }
}

/// A plain-text rejection: its text is the detail for a 4xx; a 5xx stays opaque (and logged).
fn from_plain(status: StatusCode, bytes: &[u8]) -> HttpError {
    let text = String::from_utf8_lossy(bytes).trim().to_owned();
    if status.is_server_error() {
        tracing::error!(%status, body = %text, "plain-text server error from the HTTP layer");
        return HttpError::from_status(
            status,
            "the server hit an internal error; it has been logged".to_owned(),
        );
    }
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    HttpError::from_status(status, detail)
}

/// Responses any operation can give because of the HTTP layer, added to every operation of the
/// generated document (the route annotations describe only what their handlers decide), and the
/// request-head limits added to the document's description.
pub fn document_http_layer(spec: &mut OpenApi) {
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    let shared = [
        (
            "414",
            "UriTooLong",
            format!("The request target is longer than {MAX_REQUEST_TARGET_BYTES} bytes"),
        ),
        (
            "431",
            "HeadersTooLarge",
            format!(
                "More than {MAX_HEADER_FIELDS} header fields, or a header section over {MAX_HEADER_SECTION_BYTES} bytes"
            ),
        ),
        (
            "500",
            "InternalError",
            "Internal error; the body is opaque and the cause is logged".to_owned(),
        ),
    ];
    let components = spec.components.get_or_insert_with(Default::default);
    for (_, name, description) in &shared {
        components.responses.insert(
            (*name).to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(description.as_str())
                    .content("application/problem+json", problem())
                    .build(),
            ),
        );
    }
    let add = |operation: &mut Option<Operation>| {
        if let Some(operation) = operation {
            for (status, name, _) in &shared {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
            }
        }
    };
    for item in spec.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ] {
            add(operation);
        }
    }
    let description = spec.info.description.get_or_insert_with(String::new);
    description.push_str(&format!(
        "\n\nErrors are RFC 9457 problem+json. Request heads are limited: a request target over \
         {MAX_REQUEST_TARGET_BYTES} bytes gets 414; more than {MAX_HEADER_FIELDS} header fields \
         or a header section over {MAX_HEADER_SECTION_BYTES} bytes gets 431."
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_follow_the_path_prefix() {
        assert_eq!(Protocol::for_path("/v2"), Protocol::InferenceV2);
        assert_eq!(
            Protocol::for_path("/v2/models/m/infer"),
            Protocol::InferenceV2
        );
        assert_eq!(Protocol::for_path("/v1/embeddings"), Protocol::OpenAi);
        assert_eq!(Protocol::for_path("/v1"), Protocol::OpenAi);
        assert_eq!(Protocol::for_path("/api/v1/jobs"), Protocol::Problem);
        assert_eq!(Protocol::for_path("/v2x"), Protocol::Problem);
        assert_eq!(Protocol::for_path("/v10/models"), Protocol::Problem);
        assert_eq!(Protocol::for_path("/healthz"), Protocol::Problem);
    }

    #[test]
    fn head_limits_count_the_target_and_the_header_section() {
        let short: Uri = "/api/v1/models?limit=5".parse().unwrap();
        assert!(oversized_head(&short, &HeaderMap::new()).is_none());
        let long: Uri = format!(
            "/api/v1/models?cursor={}",
            "a".repeat(MAX_REQUEST_TARGET_BYTES)
        )
        .parse()
        .unwrap();
        let error = oversized_head(&long, &HeaderMap::new()).unwrap();
        assert_eq!(error.status, StatusCode::URI_TOO_LONG);

        let mut headers = HeaderMap::new();
        headers.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_SECTION_BYTES)).unwrap(),
        );
        let error = oversized_head(&short, &headers).unwrap();
        assert_eq!(error.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let mut headers = HeaderMap::new();
        for i in 0..=MAX_HEADER_FIELDS {
            headers.append("x-many", HeaderValue::from(i));
        }
        let error = oversized_head(&short, &headers).unwrap();
        assert_eq!(error.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn each_protocol_gets_its_envelope() {
        let error = || HttpError::from_status(StatusCode::PAYLOAD_TOO_LARGE, "too big".into());
        let problem = error().into_response(Protocol::Problem);
        assert_eq!(
            problem.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let v2 = error().into_response(Protocol::InferenceV2);
        assert_eq!(v2.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(v2.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn render_is_the_one_place_error_bodies_are_made() {
        let problem = |status: u16| Problem {
            type_uri: "/problems/inference-busy".into(),
            title: "Busy".into(),
            status,
            detail: "retry shortly".into(),
            field: Some("input".into()),
        };
        let busy = Protocol::OpenAi.render(problem(429), Some(1));
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let body = |response: Response| async move {
            let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        assert_eq!(
            body(busy).await,
            json!({"error": {"message": "retry shortly", "type": "rate_limit_error", "param": "input", "code": null}})
        );
        let v2 = Protocol::InferenceV2.render(problem(400), None);
        assert!(v2.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(body(v2).await, json!({"error": "retry shortly"}));
        let server = Protocol::OpenAi.render(problem(500), None);
        assert_eq!(body(server).await["error"]["type"], "server_error");
        let problem_json = Protocol::Problem.render(problem(429), Some(1));
        assert_eq!(
            problem_json.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(body(problem_json).await["type"], "/problems/inference-busy");
    }

    #[test]
    fn plain_server_errors_stay_opaque() {
        let error = from_plain(StatusCode::INTERNAL_SERVER_ERROR, b"secret cause");
        assert!(!error.detail.contains("secret"));
        let error = from_plain(StatusCode::BAD_REQUEST, b"Invalid URL: bad");
        assert_eq!(error.detail, "Invalid URL: bad");
        assert_eq!(error.type_uri, "/problems/bad-request");
    }
}
