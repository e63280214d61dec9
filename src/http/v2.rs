//! Open Inference Protocol v2 (KServe / Triton "v2" REST, JSON tensors) under `/v2`, errors as
//! `{"error": "..."}`; plus explicit load/unload under `/api/v1/serving` (problem+json).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState, ErrorKind};
use crate::serving::{LoadedModel, ServingError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/api/v1/serving/{name}/load", post(load))
        .route("/api/v1/serving/{name}/unload", post(unload))
}

/// A `/v2` error: `{"error": "..."}` with a 4xx/5xx status.
struct V2Error(StatusCode, String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ServingError> for V2Error {
    fn from(error: ServingError) -> Self {
        let status = match &error {
            ServingError::NotFound(_) => StatusCode::NOT_FOUND,
            ServingError::Ambiguous(_) | ServingError::BadInput(_) => StatusCode::BAD_REQUEST,
            ServingError::Unsupported(_) | ServingError::Overflow(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ServingError::Busy => StatusCode::TOO_MANY_REQUESTS,
            ServingError::Internal(cause) => {
                tracing::error!(error = %cause, "inference failed");
                return V2Error(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into());
            }
        };
        V2Error(status, error.to_string())
    }
}

impl From<ServingError> for ApiError {
    fn from(error: ServingError) -> Self {
        let (kind, slug) = match &error {
            ServingError::NotFound(_) => (ErrorKind::NotFound, "model-not-found"),
            ServingError::Ambiguous(_) | ServingError::BadInput(_) => {
                (ErrorKind::BadRequest, "bad-inference-request")
            }
            ServingError::Unsupported(_) => (ErrorKind::Unprocessable, "model-not-servable"),
            ServingError::Overflow(_) => (ErrorKind::Unprocessable, "inference-overflow"),
            ServingError::Busy => {
                return ApiError::new(
                    ErrorKind::Unavailable,
                    "inference-busy",
                    "Busy",
                    error.to_string(),
                )
                .with_retry_after(1)
            }
            ServingError::Internal(_) => return ApiError::internal(&error),
        };
        ApiError::new(kind, slug, "Cannot serve model", error.to_string())
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "quantd", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, V2Error> {
    state.store.ping().await.map_err(|_| {
        V2Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metadata database unreachable".into(),
        )
    })?;
    Ok(Json(json!({"ready": true})))
}

fn metadata(model: &LoadedModel, requested: &str) -> Value {
    json!({
        "name": requested,
        "versions": ["1"],
        "platform": format!("quantd-{}", model.architecture),
        "inputs": [match model.widths().0 {
            Some(width) => json!({"name": "input", "datatype": "FP32", "shape": [-1, width]}),
            None => json!({"name": "text", "datatype": "BYTES", "shape": [-1]}),
        }],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, model.widths().1]}],
        "parameters": {
            "source": model.source.kind,
            "id": model.source.id,
            "weights": model.weights,
            "dequantized_at_load": model.dequantized,
            "memory_bytes": model.memory_bytes,
        },
    })
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = state.serving.get_or_load(&name).await?;
    Ok(Json(metadata(&model, &name)))
}

async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = state.serving.get_or_load(&name).await?;
    Ok(Json(
        json!({"name": name, "ready": true, "id": model.source.id}),
    ))
}

/// Appends the numbers of a flat or nested JSON array to `out`.
fn flatten(value: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("not a number")? as f32);
            Ok(())
        }
        other => Err(format!("tensor data must be numbers, found {other}")),
    }
}

fn bad(message: impl Into<String>) -> V2Error {
    V2Error(StatusCode::BAD_REQUEST, message.into())
}

/// Splits a request body into its JSON part and the binary tensor data that follows it
/// (the binary tensor data extension: `Inference-Header-Content-Length` = JSON bytes).
fn split_body<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), V2Error> {
    match headers.get("inference-header-content-length") {
        None => Ok((body, &[])),
        Some(value) => {
            let length: usize = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad("Inference-Header-Content-Length is not a number"))?;
            if length > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length {length} exceeds the body's {} bytes",
                    body.len()
                )));
            }
            Ok(body.split_at(length))
        }
    }
}

/// The raw bytes of an input sent with `parameters.binary_data_size`, if it was.
fn binary_part<'a>(input: &Value, binary: &'a [u8]) -> Result<Option<&'a [u8]>, V2Error> {
    let Some(size) = input
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"))
    else {
        return Ok(None);
    };
    let size = size
        .as_u64()
        .ok_or_else(|| bad("binary_data_size must be a non-negative integer"))?
        as usize;
    if size != binary.len() {
        return Err(bad(format!(
            "binary_data_size {size} does not match the {} bytes after the JSON header",
            binary.len()
        )));
    }
    Ok(Some(binary))
}

/// Little-endian tensor bytes of a numeric datatype as f32 values.
fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<f32>, V2Error> {
    let width = match datatype {
        "FP32" | "INT32" => 4,
        "FP64" | "INT64" => 8,
        "FP16" => 2,
        _ => {
            return Err(bad(format!(
                "binary data of datatype '{datatype}' is not supported"
            )))
        }
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(bad(format!(
            "{} bytes are not a whole number of {datatype} values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(width)
        .map(|c| match datatype {
            "FP32" => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            "INT32" => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
            "FP64" => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            "INT64" => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            _ => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        })
        .collect())
}

/// BYTES elements in the binary format: each a 4-byte little-endian length and its bytes.
fn decode_binary_strings(mut bytes: &[u8]) -> Result<Vec<String>, V2Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(bad("truncated BYTES element length"));
        }
        let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let rest = &bytes[4..];
        if rest.len() < length {
            return Err(bad("truncated BYTES element"));
        }
        out.push(
            String::from_utf8(rest[..length].to_vec())
                .map_err(|_| bad("BYTES element is not UTF-8 text"))?,
        );
        bytes = &rest[length..];
    }
    Ok(out)
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, V2Error> {
    let started = std::time::Instant::now();
    let (json_part, binary) = split_body(&headers, &body)?;
    let request: Value =
        serde_json::from_slice(json_part).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the request needs an 'inputs' array"))?;
    let [input] = inputs.as_slice() else {
        return Err(bad(format!(
            "this model takes one input tensor, got {}",
            inputs.len()
        )));
    };
    let datatype = input.get("datatype").and_then(Value::as_str).unwrap_or("");
    if datatype == "BYTES" {
        return infer_text(&state, &name, &request, input, binary, started).await;
    }
    if !matches!(datatype, "FP32" | "FP64" | "FP16" | "INT64" | "INT32") {
        return Err(bad(format!(
            "input datatype '{datatype}' is not supported here (FP32, FP64, FP16, INT32, INT64)"
        )));
    }
    let shape: Vec<usize> = input
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the input needs a 'shape'"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| bad("shape dimensions must be non-negative integers"))
        })
        .collect::<Result<_, _>>()?;
    let data = match binary_part(input, binary)? {
        Some(bytes) => decode_binary(datatype, bytes)?,
        None => {
            let mut data = Vec::new();
            flatten(
                input
                    .get("data")
                    .ok_or_else(|| bad("the input needs 'data'"))?,
                &mut data,
            )
            .map_err(bad)?;
            data
        }
    };
    let elements: usize = shape.iter().product();
    if elements != data.len() {
        return Err(bad(format!(
            "shape {shape:?} holds {elements} values but data has {}",
            data.len()
        )));
    }
    let model = state.serving.get_or_load(&name).await?;
    let Some(width) = model.widths().0 else {
        return Err(V2Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "'{name}' is a {} text model: use POST /v1/embeddings",
                model.architecture
            ),
        ));
    };
    let rows = match shape.as_slice() {
        [w] if *w == width => 1,
        [rows, w] if *w == width => *rows,
        _ => {
            return Err(bad(format!(
                "input shape {shape:?} does not fit the model's [-1, {width}]"
            )))
        }
    };
    let parsed = started.elapsed();
    let (output, timing) = state.serving.infer(model.clone(), data, rows).await?;
    Ok(respond(
        &name,
        &request,
        [rows, model.widths().1],
        output,
        &timing.server_timing(parsed),
    ))
}

/// Whether the client asked for the output as raw bytes (binary tensor data extension):
/// `parameters.binary_data_output: true` on the request, or `parameters.binary_data: true` on
/// the requested output.
fn wants_binary_output(request: &Value) -> bool {
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    flag(request.pointer("/parameters/binary_data_output"))
        || request
            .get("outputs")
            .and_then(Value::as_array)
            .is_some_and(|outputs| {
                outputs
                    .iter()
                    .any(|o| flag(o.pointer("/parameters/binary_data")))
            })
}

/// The inference response: JSON, or with the binary tensor data extension a JSON header
/// (`Inference-Header-Content-Length` bytes) followed by the FP32 output, little-endian.
fn respond(
    name: &str,
    request: &Value,
    shape: [usize; 2],
    data: Vec<f32>,
    server_timing: &str,
) -> Response {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let mut response = if wants_binary_output(request) {
        let header = json!({
            "model_name": name,
            "model_version": "1",
            "id": id,
            "outputs": [{"name": "output", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": data.len() * 4}}],
        })
        .to_string();
        let mut body = Vec::with_capacity(header.len() + data.len() * 4);
        body.extend_from_slice(header.as_bytes());
        for value in &data {
            body.extend_from_slice(&value.to_le_bytes());
        }
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            "inference-header-content-length",
            HeaderValue::from(header.len()),
        );
        response
    } else {
        Json(json!({
            "model_name": name,
            "model_version": "1",
            "id": id,
            "outputs": [{"name": "output", "datatype": "FP32", "shape": shape, "data": data}],
        }))
        .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(server_timing) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// BYTES (text) input for `bert` models: one embedding row per string.
async fn infer_text(
    state: &AppState,
    name: &str,
    request: &Value,
    input: &Value,
    binary: &[u8],
    started: std::time::Instant,
) -> Result<Response, V2Error> {
    fn strings(value: &Value, out: &mut Vec<String>) -> Result<(), String> {
        match value {
            Value::Array(items) => items.iter().try_for_each(|item| strings(item, out)),
            Value::String(text) => {
                out.push(text.clone());
                Ok(())
            }
            other => Err(format!("BYTES data must be strings, found {other}")),
        }
    }
    let texts = match binary_part(input, binary)? {
        Some(bytes) => decode_binary_strings(bytes)?,
        None => {
            let mut texts = Vec::new();
            strings(
                input
                    .get("data")
                    .ok_or_else(|| bad("the input needs 'data'"))?,
                &mut texts,
            )
            .map_err(bad)?;
            texts
        }
    };
    if texts.is_empty() {
        return Err(bad("the input holds no strings"));
    }
    let model = state.serving.get_or_load(name).await?;
    let crate::serving::ModelKind::Bert(bert) = &*model.kind else {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            format!("'{name}' takes numeric tensors, not BYTES"),
        ));
    };
    let width = bert.hidden_size();
    let n_texts = texts.len();
    let batch = state.serving.tokenize(model.clone(), texts).await?;
    let parsed = started.elapsed();
    let (embeddings, timing) = state.serving.embed(model.clone(), batch).await?;
    let data: Vec<f32> = embeddings.into_iter().flatten().collect();
    Ok(respond(
        name,
        request,
        [n_texts, width],
        data,
        &timing.server_timing(parsed),
    ))
}

async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = state.serving.get_or_load(&name).await?;
    Ok(Json(
        json!({"loaded": true, "model": metadata(&model, &name)}),
    ))
}

async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let was_loaded = state.serving.unload(&name).await?;
    Ok(Json(json!({"unloaded": was_loaded})))
}
