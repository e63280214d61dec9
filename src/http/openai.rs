//! OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`, with OpenAI's
//! nested error envelope `{"error": {"message", "type", "param", "code"}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use super::AppState;
use crate::serving::{ModelKind, ServingError};
use crate::store::PageRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
}

struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": null}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> OpenAiError {
    OpenAiError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        kind: "invalid_request_error",
        param,
    }
}

impl From<ServingError> for OpenAiError {
    fn from(error: ServingError) -> Self {
        let (status, kind, param) = match &error {
            ServingError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
            ),
            ServingError::Ambiguous(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("model"),
            ),
            ServingError::Unsupported(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                Some("model"),
            ),
            ServingError::Overflow(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                Some("input"),
            ),
            ServingError::BadInput(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("input"),
            ),
            ServingError::Busy => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", None),
            ServingError::Internal(cause) => {
                tracing::error!(error = %cause, "embedding failed");
                return OpenAiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error".into(),
                    kind: "server_error",
                    param: None,
                };
            }
        };
        OpenAiError {
            status,
            message: error.to_string(),
            kind,
            param,
        }
    }
}

/// The `input` field: a string, a list of strings, a list of token ids, or a list of such lists.
enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

fn parse_inputs(input: &Value) -> Result<Inputs, OpenAiError> {
    let ids = |items: &[Value]| -> Result<Vec<u32>, OpenAiError> {
        items
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid("token ids must be non-negative integers", Some("input"))
                    })
            })
            .collect()
    };
    match input {
        Value::String(text) => Ok(Inputs::Texts(vec![text.clone()])),
        Value::Array(items) if items.is_empty() => Err(invalid("'input' must not be empty", Some("input"))),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(Inputs::Texts(items.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect())),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(Inputs::Tokens(vec![ids(items)?])),
        Value::Array(items) if items.iter().all(Value::is_array) => Ok(Inputs::Tokens(items.iter().map(|v| ids(v.as_array().map(Vec::as_slice).unwrap_or_default())).collect::<Result<_, _>>()?)),
        _ => Err(invalid("'input' must be a string, an array of strings, an array of token ids, or an array of such arrays", Some("input"))),
    }
}

/// Most inputs per request.
const MAX_INPUTS: usize = 2048;

async fn embeddings(State(state): State<AppState>, body: Bytes) -> Result<Response, OpenAiError> {
    let started = std::time::Instant::now();
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}"), None))?;
    let name = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("'model' is required", Some("model")))?;
    let inputs = parse_inputs(
        request
            .get("input")
            .ok_or_else(|| invalid("'input' is required", Some("input")))?,
    )?;
    let base64_output = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                format!("encoding_format '{other}' is not one of: float, base64"),
                Some("encoding_format"),
            ))
        }
    };
    let model = state.serving.get_or_load(name).await?;
    let ModelKind::Bert(bert) = &*model.kind else {
        return Err(OpenAiError::from(ServingError::Unsupported(format!(
            "'{name}' is a {} model; embeddings need a bert model",
            model.architecture
        ))));
    };
    let hidden = bert.hidden_size();
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => hidden,
        Some(value) => match value.as_u64() {
            Some(d) if (1..=hidden as u64).contains(&d) => d as usize,
            _ => {
                return Err(invalid(
                    format!("dimensions must be between 1 and {hidden}"),
                    Some("dimensions"),
                ))
            }
        },
    };
    let count = match &inputs {
        Inputs::Texts(texts) => texts.len(),
        Inputs::Tokens(batch) => batch.len(),
    };
    if count > MAX_INPUTS {
        return Err(invalid(
            format!("at most {MAX_INPUTS} inputs per request"),
            Some("input"),
        ));
    }
    let batch: Vec<Vec<u32>> = match inputs {
        Inputs::Tokens(batch) => batch,
        Inputs::Texts(texts) => state.serving.tokenize(model.clone(), texts).await?,
    };
    if batch.len() > MAX_INPUTS {
        return Err(invalid(
            format!("at most {MAX_INPUTS} inputs per request"),
            Some("input"),
        ));
    }
    let prompt_tokens: usize = batch.iter().map(Vec::len).sum();
    let parsed = started.elapsed();
    let (embeddings, timing) = state.serving.embed(model.clone(), batch).await?;
    let data: Vec<Value> = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, mut embedding)| {
            if dimensions < embedding.len() {
                // Shortened embeddings are renormalised, as OpenAI's `dimensions` does.
                embedding.truncate(dimensions);
                let norm = embedding
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt() as f32;
                if norm > 0.0 {
                    embedding.iter_mut().for_each(|v| *v /= norm);
                }
            }
            let embedding = if base64_output {
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(embedding)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut response = Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&timing.server_timing(parsed)) {
        response.headers_mut().insert("server-timing", value);
    }
    Ok(response)
}

async fn models(State(state): State<AppState>) -> Result<Json<Value>, OpenAiError> {
    let page = state
        .store
        .list_models(PageRequest {
            limit: 200,
            before: None,
        })
        .await
        .map_err(|e| OpenAiError::from(ServingError::Internal(e.to_string())))?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": m.created_at.unix_timestamp(), "owned_by": "quantd", "name": m.name}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
