//! Open Inference Protocol v2 (KServe / Triton "v2" REST, JSON tensors) under `/v2`, errors as
//! `{"error": "..."}`; plus explicit load/unload under `/api/v1/serving` (problem+json).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::envelope::Protocol;
use super::error::UnreadableBody;
use super::{ApiError, AppState, ErrorKind};
use crate::error::Failure;
use crate::serving::request::InvalidRequest;
use crate::serving::{LoadedModel, ServingError, MAX_INPUTS_PER_REQUEST};

mod tensor;

use tensor::{Datatype, Shape};

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

/// A `/v2` error: any failure, rendered as `{"error": "..."}` with its kind's status.
struct V2Error(ApiError);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        self.0.into_envelope(Protocol::InferenceV2)
    }
}

impl<F: Failure + 'static> From<F> for V2Error {
    fn from(failure: F) -> Self {
        V2Error(ApiError::from_failure(&failure))
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "quantd", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, V2Error> {
    if let Err(error) = state.store.ping().await {
        tracing::warn!(error = %error, "v2 readiness: database unreachable");
        return Err(V2Error(ApiError::new(
            ErrorKind::Unavailable,
            "not-ready",
            "Not ready",
            "metadata database unreachable",
        )));
    }
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

fn bad(message: impl Into<String>) -> V2Error {
    InvalidRequest::new(message).into()
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
                .ok_or_else(|| {
                    bad("Inference-Header-Content-Length is not a non-negative integer")
                })?;
            // `split_at` needs length ≤ len; a larger value is the client's mistake, not a panic.
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

/// The raw bytes of an input sent with `parameters.binary_data_size`, if it was; binary bytes
/// that no input claims are refused rather than ignored.
fn binary_part<'a>(input: &Value, binary: &'a [u8]) -> Result<Option<&'a [u8]>, V2Error> {
    let Some(size) = input
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"))
    else {
        if !binary.is_empty() {
            return Err(bad(format!(
                "{} bytes follow the JSON header but no input has parameters.binary_data_size",
                binary.len()
            )));
        }
        return Ok(None);
    };
    let size = size
        .as_u64()
        .and_then(|size| usize::try_from(size).ok())
        .ok_or_else(|| bad("binary_data_size must be a non-negative integer"))?;
    if size != binary.len() {
        return Err(bad(format!(
            "binary_data_size {size} does not match the {} bytes after the JSON header",
            binary.len()
        )));
    }
    Ok(Some(binary))
}

/// The name of an input, for error messages.
fn input_name(input: &Value) -> &str {
    input.get("name").and_then(Value::as_str).unwrap_or("input")
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, V2Error> {
    let started = std::time::Instant::now();
    let body = body.map_err(UnreadableBody::from)?;
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
    let input_name = input_name(input);
    let datatype = input.get("datatype").and_then(Value::as_str).unwrap_or("");
    if datatype == "BYTES" {
        return infer_text(&state, &name, &request, input, binary, started).await;
    }
    let Some(datatype) = Datatype::parse(datatype) else {
        return Err(bad(format!(
            "input datatype '{datatype}' is not supported here (FP32, FP64, FP16, INT32, INT64)"
        )));
    };
    let shape = Shape::parse(input_name, input.get("shape")).map_err(bad)?;
    // Values are checked while they are converted (an O(n) scan over at most the 2 MiB body):
    // each must fit its datatype and be finite in f32, so no NaN reaches a model.
    let data = match binary_part(input, binary)? {
        Some(bytes) => tensor::numbers_from_binary(input_name, datatype, bytes, &shape),
        None => {
            let data = input
                .get("data")
                .ok_or_else(|| bad(format!("input '{input_name}' needs 'data'")))?;
            tensor::numbers_from_json(input_name, datatype, data, &shape)
        }
    }
    .map_err(bad)?;
    let shape = shape.dims;
    let model = state.serving.get_or_load(&name).await?;
    let Some(width) = model.widths().0 else {
        return Err(ServingError::Unsupported(format!(
            "'{name}' is a {} text model: use POST /v1/embeddings",
            model.architecture
        ))
        .into());
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
    let input_name = input_name(input);
    let shape = Shape::parse(input_name, input.get("shape")).map_err(bad)?;
    // The same cap as /v1/embeddings' inputs: each string is a sequence for the encoder, so
    // the count bounds the request's compute.
    let texts = match binary_part(input, binary)? {
        Some(bytes) => {
            tensor::check_string_count(input_name, shape.elements, MAX_INPUTS_PER_REQUEST)
                .and_then(|()| {
                    tensor::strings_from_binary(input_name, bytes, MAX_INPUTS_PER_REQUEST)
                })
                .and_then(|texts| {
                    if texts.len() == shape.elements {
                        Ok(texts)
                    } else {
                        Err(format!(
                    "input '{input_name}' has shape {:?} ({} strings) but its binary data holds {}",
                    shape.dims,
                    shape.elements,
                    texts.len()
                ))
                    }
                })
        }
        None => {
            let data = input
                .get("data")
                .ok_or_else(|| bad(format!("input '{input_name}' needs 'data'")))?;
            tensor::strings_from_json(input_name, data, &shape, MAX_INPUTS_PER_REQUEST)
        }
    }
    .map_err(bad)?;
    let model = state.serving.get_or_load(name).await?;
    let crate::serving::ModelKind::Bert(bert) = &*model.kind else {
        return Err(
            ServingError::BadInput(format!("'{name}' takes numeric tensors, not BYTES")).into(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};

    fn header_length(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "inference-header-content-length",
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn inference_header_content_length_is_checked_not_trusted() {
        let body = b"{\"inputs\": []}\x01\x02";
        let (json_part, binary) = split_body(&header_length("14"), body).ok().unwrap();
        assert_eq!((json_part.len(), binary), (14, &[1u8, 2][..]));
        assert_eq!(split_body(&HeaderMap::new(), body).ok().unwrap().1.len(), 0);
        for bad in [
            "17",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1e3",
            "",
        ] {
            let Err(V2Error(error)) = split_body(&header_length(bad), body) else {
                panic!("{bad} accepted")
            };
            assert_eq!(error.kind, ErrorKind::BadRequest, "{bad}: {}", error.detail);
        }
    }

    #[test]
    fn binary_data_size_must_match_the_bytes_after_the_header() {
        let with_size =
            |size: Value| json!({"name": "input", "parameters": {"binary_data_size": size}});
        assert_eq!(
            binary_part(&with_size(json!(3)), &[1, 2, 3]).ok().unwrap(),
            Some(&[1u8, 2, 3][..])
        );
        for size in [
            json!(4),
            json!(2),
            json!(u64::MAX),
            json!(-3),
            json!(3.5),
            json!("3"),
        ] {
            assert!(
                binary_part(&with_size(size.clone()), &[1, 2, 3]).is_err(),
                "{size}"
            );
        }
        // No binary_data_size: JSON data, and bytes that no input claims are refused.
        assert_eq!(
            binary_part(&json!({"name": "input"}), &[]).ok().unwrap(),
            None
        );
        assert!(binary_part(&json!({"name": "input"}), &[1]).is_err());
    }

    #[test]
    fn overflow_is_a_422_in_both_envelopes() {
        let V2Error(error) =
            V2Error::from(ServingError::Overflow("layer 'fc1' overflowed f32".into()));
        assert!(error.detail.contains("overflowed f32"));
        let response = error.into_envelope(Protocol::InferenceV2);
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem = ApiError::from(ServingError::Overflow("x".into())).into_response();
        assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
