//! Resource limits over raw TCP: a client that stalls its request head or its body is cut off
//! within the configured timeout and leaves no staging file; concurrent uploads share one
//! budget for buffered safetensors headers (503 + Retry-After beyond it).

use std::path::Path;
use std::time::{Duration, Instant};

use quantd::config::Settings;
use quantd::startup::Application;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_problem, digits_model_bytes, spawn_app, spawn_app_with, TestApp};

/// Time allowed beyond a timeout for the server to notice it and answer (a loaded test box).
const SLACK: Duration = Duration::from_secs(3);

/// A response as read off the socket until the server closed it.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// The head, lower-cased, for header lookups.
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }

    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        serde_json::from_slice(&self.body).expect("a JSON problem")
    }
}

/// Opens a connection and sends a request head and the first bytes of its body.
async fn send_partial(app: &TestApp, head: &str, body_part: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("head sent");
    stream.write_all(body_part).await.expect("body part sent");
    stream
}

/// The head of an upload of `content_length` bytes as model `name`.
fn upload_head(name: &str, content_length: usize) -> String {
    format!(
        "PUT /api/v1/models?name={name} HTTP/1.1\r\nHost: quantd\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

/// Reads until the server closes the connection: `None` when it closed (or reset) it without
/// a response.
async fn read_until_closed(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        head,
        body: bytes[head_end + 4..].to_vec(),
    })
}

/// Like [`read_until_closed`], failing the test unless the server closes within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<RawResponse> {
    tokio::time::timeout(deadline, read_until_closed(stream))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {deadline:?}"))
}

fn staging_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data_dir.join("blobs/tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect()
}

/// A valid safetensors file of exactly `total_len` bytes: one U8 tensor after a small header.
fn file_of_len(total_len: usize) -> Vec<u8> {
    let header_for = |n_data: usize| {
        let mut header =
            format!(r#"{{"w":{{"dtype":"U8","shape":[{n_data}],"data_offsets":[0,{n_data}]}}}}"#);
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        header
    };
    // The header's length depends on the digits of the data length: settle it.
    let mut n_data = total_len - 80;
    loop {
        let header = header_for(n_data);
        let settled = total_len - 8 - header.len();
        if settled == n_data {
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(header.as_bytes());
            file.resize(total_len, 7);
            return file;
        }
        n_data = settled;
    }
}

/// A valid safetensors file whose JSON header is about `header_len` bytes (padded metadata),
/// its padding made of `fill` so that two such files differ.
fn file_with_header_of(header_len: usize, fill: char) -> Vec<u8> {
    let tensor = r#""w":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}"#;
    let frame_len = r#"{"__metadata__":{"pad":""},}"#.len() + tensor.len();
    let pad: String = std::iter::repeat_n(fill, header_len - frame_len).collect();
    let mut header = format!(r#"{{"__metadata__":{{"pad":"{pad}"}},{tensor}}}"#);
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[1; 16]);
    file
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let app = spawn_app_with(|settings| settings.header_read_timeout_seconds = 1).await;
    let started = Instant::now();
    let mut partial = send_partial(
        &app,
        "POST /api/v1/models?name=slow HTTP/1.1\r\nHost: quantd\r\nContent-Le",
        b"",
    )
    .await;
    let mut silent = send_partial(&app, "", b"").await;
    closed_within(&mut partial, Duration::from_secs(1) + SLACK).await;
    closed_within(&mut silent, Duration::from_secs(1) + SLACK).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the timeout, not at once: {:?}",
        started.elapsed()
    );
    // A client that sends its head in time is served as usual.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_leaves_no_staging_file() {
    let app = spawn_app_with(|settings| settings.body_idle_timeout_seconds = 1).await;
    let file = file_of_len(1 << 20);
    let started = Instant::now();
    let mut stream = send_partial(&app, &upload_head("stalled", file.len()), &file[..60_000]).await;
    let response = closed_within(&mut stream, Duration::from_secs(1) + SLACK)
        .await
        .expect("a response while the client is still there");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(response.status, 408, "{response:?}");
    let problem = response.problem();
    assert_eq!(problem["type"], "/problems/body-timeout", "{problem}");
    assert_eq!(problem["status"], 408);
    assert_eq!(
        staging_files(app.data_dir.path()),
        Vec::<std::path::PathBuf>::new()
    );
    // The same bytes sent without pause are stored.
    let response = app.upload_model("stalled", file).await;
    assert_eq!(response.status(), 201);
    assert!(staging_files(app.data_dir.path()).is_empty());
}

#[tokio::test]
async fn a_hundred_stalled_uploads_are_all_released() {
    let idle = Duration::from_secs(3);
    let app = spawn_app_with(|settings| settings.body_idle_timeout_seconds = idle.as_secs()).await;
    let file = file_of_len(1 << 20);
    let started = Instant::now();
    let mut streams = Vec::new();
    for upload_idx in 0..100 {
        let head = upload_head(&format!("stalled-{upload_idx}"), file.len());
        streams.push(send_partial(&app, &head, &file[..60_000]).await);
    }
    // All hundred are staged at once before the timeout frees them.
    let mut n_staged_max = 0;
    while started.elapsed() < idle && n_staged_max < 100 {
        n_staged_max = n_staged_max.max(staging_files(app.data_dir.path()).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(n_staged_max, 100, "uploads staged at once");
    let answers = futures::future::join_all(
        streams
            .iter_mut()
            .map(|stream| closed_within(stream, idle + 2 * SLACK)),
    )
    .await;
    let statuses: Vec<Option<u16>> = answers
        .iter()
        .map(|answer| answer.as_ref().map(|r| r.status))
        .collect();
    assert!(
        statuses.iter().all(|status| *status == Some(408)),
        "{statuses:?} after {:?}",
        started.elapsed()
    );
    assert!(staging_files(app.data_dir.path()).is_empty());
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_stalled_json_body_is_answered_408() {
    let app = spawn_app_with(|settings| settings.body_idle_timeout_seconds = 1).await;
    let head = "POST /api/v1/jobs HTTP/1.1\r\nHost: quantd\r\n\
                Content-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    let mut stream = send_partial(&app, head, br#"{"model_id": "#).await;
    let response = closed_within(&mut stream, Duration::from_secs(1) + SLACK)
        .await
        .expect("a response");
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.problem()["type"], "/problems/body-timeout");
}

/// Settings whose header budget holds one 1.2 MiB header but not two.
fn small_header_budget(settings: &mut Settings) {
    settings.max_header_bytes = 1536 << 10;
    settings.header_buffer_budget_bytes = 2 << 20;
    // The big headers are padded with metadata, which has its own (smaller) bound.
    settings.max_metadata_bytes = settings.max_header_bytes;
}

#[tokio::test]
async fn uploads_over_the_header_budget_are_refused_503_until_it_frees() {
    let app = spawn_app_with(small_header_budget).await;
    let files = [
        file_with_header_of(1200 << 10, 'a'),
        file_with_header_of(1200 << 10, 'b'),
    ];
    // Both send part of their header and pause: the first to reserve holds its 1.2 MiB.
    let mut first = send_partial(
        &app,
        &upload_head("first", files[0].len()),
        &files[0][..65_536],
    )
    .await;
    let mut second = send_partial(
        &app,
        &upload_head("second", files[1].len()),
        &files[1][..65_536],
    )
    .await;
    let (refused, mut admitted, admitted_file, refused_file) = tokio::select! {
        response = read_until_closed(&mut first) => (response, second, &files[1], &files[0]),
        response = read_until_closed(&mut second) => (response, first, &files[0], &files[1]),
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("neither upload was refused"),
    };
    let refused = refused.expect("a response");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(
        refused.problem()["type"],
        "/problems/header-budget-exhausted"
    );
    // Only the admitted upload's staging file remains.
    assert_eq!(staging_files(app.data_dir.path()).len(), 1);

    admitted
        .write_all(&admitted_file[65_536..])
        .await
        .expect("rest sent");
    let response = closed_or_answered(&mut admitted).await;
    assert_eq!(response.status, 201, "{response:?}");

    // The header was parsed, so the budget is free again: the refused upload now succeeds.
    let response = app.upload_model("retried", refused_file.clone()).await;
    assert_eq!(response.status(), 201);
    assert!(staging_files(app.data_dir.path()).is_empty());
}

/// Reads one response on a kept-alive connection (it is not closed after a success).
async fn closed_or_answered(stream: &mut TcpStream) -> RawResponse {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    let read_response = async {
        loop {
            let n = stream.read(&mut buffer).await.expect("readable");
            assert!(n > 0, "closed without a response");
            bytes.extend_from_slice(&buffer[..n]);
            let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
            let content_length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            if bytes.len() >= head_end + 4 + content_length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return RawResponse {
                    status,
                    head,
                    body: bytes[head_end + 4..].to_vec(),
                };
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_response)
        .await
        .expect("answered")
}

#[tokio::test]
async fn an_upload_under_the_header_budget_is_stored_and_gives_it_back() {
    let app = spawn_app_with(|settings| {
        small_header_budget(settings);
        settings.body_idle_timeout_seconds = 1;
    })
    .await;
    let file = file_with_header_of(1200 << 10, 'c');
    // An upload that stalls inside its header holds the budget until it times out...
    let mut stalled =
        send_partial(&app, &upload_head("stalled", file.len()), &file[..65_536]).await;
    let response = closed_within(&mut stalled, Duration::from_secs(1) + SLACK)
        .await
        .expect("a response");
    assert_eq!(response.status, 408);
    // ...then gives it back: one upload after another fits, as before the budget existed.
    for name in ["one", "two"] {
        let response = app.upload_model(name, file.clone()).await;
        assert_eq!(response.status(), 201, "{name}");
        let model: Value = response.json().await.unwrap();
        assert_eq!(model["n_tensors"], 1);
    }
    assert!(staging_files(app.data_dir.path()).is_empty());
    // A header over the per-upload limit is still 413, not a budget matter.
    let too_big = file_with_header_of(1600 << 10, 'd');
    let response = app.upload_model("too-big", too_big).await;
    assert_problem(response, 413, "safetensors-header-too-large").await;
}

#[tokio::test]
async fn a_header_budget_below_the_header_limit_refuses_to_start() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.max_header_bytes = 4 << 20;
    settings.header_buffer_budget_bytes = 1 << 20;
    let error = Application::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("QUANTD_HEADER_BUFFER_BUDGET_BYTES"),
        "{error}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_an_upload_in_flight_finish() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let file = digits_model_bytes();
    let mut in_flight =
        send_partial(&app, &upload_head("in-flight", file.len()), &file[..1000]).await;
    // Let the server accept it and start the handler before shutting down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(app.stop());
    let refused_by = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&address).await.is_ok() {
        assert!(
            Instant::now() < refused_by,
            "still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    in_flight.write_all(&file[1000..]).await.expect("rest sent");
    let response = closed_or_answered(&mut in_flight).await;
    assert_eq!(response.status, 201, "{response:?}");
    // The connection, idle now, is closed and the server stops.
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stopped")
        .expect("joined");
}

#[tokio::test]
async fn a_stalled_multipart_upload_is_answered_408() {
    let app = spawn_app_with(|settings| settings.body_idle_timeout_seconds = 1).await;
    let file = file_of_len(1 << 20);
    let boundary = "quantd-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.safetensors\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file[..60_000]);
    let head = format!(
        "POST /api/v1/models?name=stalled HTTP/1.1\r\nHost: quantd\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len() + file.len()
    );
    let mut stream = send_partial(&app, &head, &body).await;
    let response = closed_within(&mut stream, Duration::from_secs(1) + SLACK)
        .await
        .expect("a response");
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.problem()["type"], "/problems/body-timeout");
    assert!(staging_files(app.data_dir.path()).is_empty());
}

#[tokio::test]
async fn stalled_inference_bodies_are_408_in_their_protocols_envelopes() {
    let app = spawn_app_with(|settings| settings.body_idle_timeout_seconds = 1).await;
    for (path, check) in [
        ("/v2/models/digits/infer", "v2"),
        ("/v1/embeddings", "openai"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: quantd\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        );
        let mut stream = send_partial(&app, &head, br#"{"inputs": "#).await;
        let response = closed_within(&mut stream, Duration::from_secs(1) + SLACK)
            .await
            .expect("a response");
        assert_eq!(response.status, 408, "{path}: {response:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&response.body).expect("a JSON error");
        match check {
            "v2" => assert!(body["error"].as_str().unwrap().contains("idle"), "{body}"),
            _ => assert!(
                body["error"]["message"].as_str().unwrap().contains("idle"),
                "{body}"
            ),
        }
    }
}
