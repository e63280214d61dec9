//! Rejections made by the HTTP layer (body limits, request-head limits, undecodable paths,
//! unknown query parameters, unknown routes) come in the envelope of the path's protocol:
//! problem+json under `/api/v1`, `{"error": "..."}` under `/v2`, OpenAI's nested error under
//! `/v1`. Sent over raw TCP, so that nothing on the client side tidies the request up.

use std::time::Duration;

use quantd::http::envelope::{
    MAX_HEADER_FIELDS, MAX_HEADER_SECTION_BYTES, MAX_REQUEST_TARGET_BYTES,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, TestApp};

/// A response read off the wire.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts problem+json with this status and type.
    fn assert_problem(&self, status: u16, type_uri: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["type"], type_uri, "{problem}");
        assert!(problem["title"].is_string() && problem["detail"].is_string());
        problem
    }

    /// Asserts the Open Inference Protocol's `{"error": "..."}`.
    fn assert_v2_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        body["error"].as_str().expect("a message").to_owned()
    }

    /// Asserts OpenAI's `{"error": {"message", "type", "param", "code"}}`.
    fn assert_openai_error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        let error = &body["error"];
        assert!(error["message"].is_string(), "{body}");
        assert_eq!(error["type"], kind, "{body}");
        for key in ["param", "code"] {
            assert!(error.get(key).is_some(), "{key} missing: {body}");
        }
        error.clone()
    }
}

/// Sends `head` and `body` (written concurrently with reading, since the server may answer
/// before it has read everything) and reads the response until the server closes.
async fn raw(app: &TestApp, head: &str, body: Vec<u8>) -> RawResponse {
    let address = app.address.trim_start_matches("http://");
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = [head.as_bytes(), &body].concat();
    let writing = tokio::spawn(async move {
        // A server that answered early may close before it read everything: not an error here.
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = vec![0; 64 << 10];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                // A reset after the response was read (unread request bytes): keep what we have.
                Err(_) if !bytes.is_empty() => break,
                Err(e) => panic!("reading the response: {e}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    drop(writing.await);
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    if let Some(length) = length {
        body.truncate(length);
    }
    RawResponse {
        status: status.parse().unwrap(),
        headers,
        body,
    }
}

/// A request head (`Connection: close`, so the response ends with the connection).
fn head(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

#[tokio::test]
async fn an_over_long_request_target_gets_414_in_each_envelope() {
    let app = spawn_app().await;
    let long = "a".repeat(MAX_REQUEST_TARGET_BYTES);
    let response = raw(
        &app,
        &head("GET", &format!("/api/v1/models?cursor={long}"), ""),
        vec![],
    )
    .await;
    let problem = response.assert_problem(414, "/problems/uri-too-long");
    assert!(
        problem["detail"].as_str().unwrap().contains("8192"),
        "{problem}"
    );

    let response = raw(
        &app,
        &head("GET", &format!("/v2/models/{long}"), ""),
        vec![],
    )
    .await;
    response.assert_v2_error(414);
    let response = raw(
        &app,
        &head("GET", &format!("/v1/models?x={long}"), ""),
        vec![],
    )
    .await;
    response.assert_openai_error(414, "invalid_request_error");

    // Just under the limit is served.
    let fits = "a".repeat(MAX_REQUEST_TARGET_BYTES - "/healthz?x=".len());
    let response = raw(
        &app,
        &head("GET", &format!("/healthz?x={fits}"), ""),
        vec![],
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_huge_header_or_too_many_headers_get_431_in_each_envelope() {
    let app = spawn_app().await;
    let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_SECTION_BYTES));
    let response = raw(&app, &head("GET", "/api/v1/models", &big), vec![]).await;
    response.assert_problem(431, "/problems/headers-too-large");
    let response = raw(&app, &head("GET", "/v2/health/live", &big), vec![]).await;
    response.assert_v2_error(431);
    let response = raw(&app, &head("POST", "/v1/embeddings", &big), vec![]).await;
    response.assert_openai_error(431, "invalid_request_error");

    // More fields than ours, fewer than hyper's own limit: still ours, in the envelope.
    let many: String = (0..MAX_HEADER_FIELDS + 10)
        .map(|i| format!("X-Field-{i}: {i}\r\n"))
        .collect();
    let response = raw(&app, &head("GET", "/readyz", &many), vec![]).await;
    response.assert_problem(431, "/problems/headers-too-large");
    app.stop().await;
}

#[tokio::test]
async fn heads_beyond_hypers_own_limits_get_its_bare_answer() {
    // Documented exceptions (README, "Errors"): hyper parses the head before our service runs,
    // and answers these itself with an empty body, then closes the connection.
    let app = spawn_app().await;
    // A head larger than hyper's read buffer (≈400 KiB).
    let huge = format!("X-Huge: {}\r\n", "a".repeat(512 << 10));
    let response = raw(&app, &head("GET", "/api/v1/models", &huge), vec![]).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert!(response.body.is_empty());
    // A Content-Length that is not a number.
    let response = raw(
        &app,
        &head("POST", "/api/v1/jobs", "Content-Length: abc\r\n"),
        vec![],
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.is_empty());
    // The server is still fine.
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn undecodable_paths_and_unknown_query_parameters_get_the_envelope() {
    let app = spawn_app().await;
    // `%ZZ` is not an escape, so it stays literal text: not an id, hence 404.
    let response = raw(&app, &head("GET", "/api/v1/models/%ZZ", ""), vec![]).await;
    response.assert_problem(404, "/problems/model-not-found");
    // `%FF` decodes to a byte that is not UTF-8: axum refuses the path parameter.
    let response = raw(&app, &head("GET", "/api/v1/models/%FF", ""), vec![]).await;
    response.assert_problem(400, "/problems/bad-request");
    let response = raw(&app, &head("POST", "/api/v1/jobs/%FF/cancel", ""), vec![]).await;
    response.assert_problem(400, "/problems/bad-request");
    let response = raw(&app, &head("GET", "/v2/models/%FF/ready", ""), vec![]).await;
    response.assert_v2_error(400);

    let response = raw(&app, &head("GET", "/api/v1/models?limt=5", ""), vec![]).await;
    let problem = response.assert_problem(400, "/problems/invalid-query");
    assert!(
        problem["detail"].as_str().unwrap().contains("limt"),
        "{problem}"
    );
    let response = raw(&app, &head("GET", "/api/v1/jobs?sate=queued", ""), vec![]).await;
    response.assert_problem(400, "/problems/invalid-query");
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_in_each_envelope() {
    let app = spawn_app().await;
    let body = vec![b' '; 3 << 20];
    let length = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    let response = raw(
        &app,
        &head("POST", "/v2/models/anything/infer", &length),
        body.clone(),
    )
    .await;
    response.assert_v2_error(413);
    let response = raw(&app, &head("POST", "/v1/embeddings", &length), body.clone()).await;
    response.assert_openai_error(413, "invalid_request_error");
    let response = raw(&app, &head("POST", "/api/v1/jobs", &length), body.clone()).await;
    response.assert_problem(413, "/problems/body-too-large");

    // The same bodies sent chunked (no length known up front) are cut off at the limit too.
    let chunked = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    let chunks = [
        format!("{:x}\r\n", body.len()).into_bytes(),
        body,
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let response = raw(
        &app,
        &head("POST", "/v2/models/anything/infer", chunked),
        chunks.clone(),
    )
    .await;
    response.assert_v2_error(413);
    let response = raw(&app, &head("POST", "/v1/embeddings", chunked), chunks).await;
    response.assert_openai_error(413, "invalid_request_error");
    app.stop().await;
}

#[tokio::test]
async fn a_job_body_without_a_json_content_type_gets_415() {
    let app = spawn_app().await;
    let body = br#"{"model_id": "00000000-0000-0000-0000-000000000000", "scheme": "int8"}"#;
    let response = raw(
        &app,
        &head(
            "POST",
            "/api/v1/jobs",
            &format!("Content-Length: {}\r\n", body.len()),
        ),
        body.to_vec(),
    )
    .await;
    response.assert_problem(415, "/problems/unsupported-media-type");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_follow_the_path_protocol() {
    let app = spawn_app().await;
    let response = raw(&app, &head("GET", "/api/v1/nothing", ""), vec![]).await;
    response.assert_problem(404, "/problems/route-not-found");
    let response = raw(&app, &head("GET", "/v2/nothing/here", ""), vec![]).await;
    response.assert_v2_error(404);
    let response = raw(&app, &head("DELETE", "/v2/health/live", ""), vec![]).await;
    response.assert_v2_error(405);
    let response = raw(&app, &head("GET", "/v1/embeddings", ""), vec![]).await;
    let error = response.assert_openai_error(405, "invalid_request_error");
    assert!(
        error["message"].as_str().unwrap().contains("GET"),
        "{error}"
    );
    assert!(response.header("allow").is_some(), "{response:?}");
    app.stop().await;
}
