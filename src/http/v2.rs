//! Open Inference Protocol v2 (KServe / Triton "v2" REST, JSON tensors) under `/v2`, errors as
//! `{"error": "..."}`; plus explicit load/unload under `/api/v1/serving` (problem+json).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::envelope::Protocol;
use super::error::{json_body, UnreadableBody, MAX_INFERENCE_BODY_BYTES};
use super::{ApiError, AppState, ErrorKind};
use crate::error::Failure;
use crate::serving::request::{InferenceInput, InferenceRequest, InvalidRequest};
use crate::serving::LoadedModel;

mod body;
mod tensor;

use body::{InferBody, SentInputs};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/infer",
            post(infer).layer(DefaultBodyLimit::max(MAX_INFERENCE_BODY_BYTES)),
        )
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

fn bad(message: impl Into<String>) -> InvalidRequest {
    InvalidRequest::new(message)
}

/// Splits a request body into its JSON part and the binary tensor data that follows it
/// (the binary tensor data extension: `Inference-Header-Content-Length` = JSON bytes).
fn split_body<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), InvalidRequest> {
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

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, V2Error> {
    let received = std::time::Instant::now();
    // Beyond the 2 MiB body limit: 413; a body that stops arriving: 408; both in the
    // protocol's envelope.
    let body = body.map_err(UnreadableBody::from)?;
    let (json_part, binary) = split_body(&headers, &body)?;
    let body: InferBody = json_body(json_part)?;
    let binary_output = body.wants_binary_output();
    let input = InferenceInput::try_from(SentInputs {
        inputs: body.inputs,
        binary,
    })?;
    let request = InferenceRequest {
        model: name.clone(),
        input,
    };
    let inference = state.serving.run_inference(request, received).await?;
    let server_timing = inference.timing.server_timing(inference.prepared);
    let mut response = if binary_output {
        binary_response(&name, body.id, inference.shape, &inference.values)
    } else {
        Json(InferResponse::new(
            &name,
            body.id,
            OutputTensor {
                shape: inference.shape,
                parameters: None,
                data: Some(inference.values),
                ..OutputTensor::FP32
            },
        ))
        .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&server_timing) {
        response.headers_mut().insert("server-timing", value);
    }
    Ok(response)
}

/// The answer of an inference: the one output tensor.
#[derive(Debug, Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    /// The request's `id`, echoed (`null` when it had none).
    id: Option<String>,
    outputs: [OutputTensor; 1],
}

impl<'a> InferResponse<'a> {
    fn new(model_name: &'a str, id: Option<String>, output: OutputTensor) -> Self {
        InferResponse {
            model_name,
            model_version: "1",
            id,
            outputs: [output],
        }
    }
}

/// An FP32 output tensor, with its values in `data` or (binary tensor data extension) after
/// the JSON header, `parameters.binary_data_size` bytes of them.
#[derive(Debug, Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryDataSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Vec<f32>>,
}

impl OutputTensor {
    const FP32: OutputTensor = OutputTensor {
        name: "output",
        datatype: "FP32",
        shape: [0, 0],
        parameters: None,
        data: None,
    };
}

#[derive(Debug, Serialize)]
struct BinaryDataSize {
    binary_data_size: usize,
}

/// The response of the binary tensor data extension: a JSON header
/// (`Inference-Header-Content-Length` bytes) followed by the FP32 output, little-endian.
fn binary_response(name: &str, id: Option<String>, shape: [usize; 2], data: &[f32]) -> Response {
    let output = OutputTensor {
        shape,
        parameters: Some(BinaryDataSize {
            binary_data_size: std::mem::size_of_val(data),
        }),
        ..OutputTensor::FP32
    };
    let header = serde_json::to_string(&InferResponse::new(name, id, output))
        .expect("inference headers serialize");
    let mut body = Vec::with_capacity(header.len() + std::mem::size_of_val(data));
    body.extend_from_slice(header.as_bytes());
    for value in data {
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
    use crate::serving::ServingError;
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
            let Err(error) = split_body(&header_length(bad), body) else {
                panic!("{bad} accepted")
            };
            assert_eq!(error.kind(), ErrorKind::BadRequest, "{bad}: {error}");
        }
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
