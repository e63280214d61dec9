//! OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`, with OpenAI's
//! nested error envelope `{"error": {"message", "type", "param", "code"}}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use super::envelope::Protocol;
use super::error::UnreadableBody;
use super::{ApiError, AppState};
use crate::error::Failure;
use crate::serving::request::InvalidRequest;
use crate::serving::{ModelKind, ServingError, MAX_INPUTS_PER_REQUEST};
use crate::store::PageRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
}

/// A `/v1` error: any failure, rendered as OpenAI's `{"error": {"message", "type", "param",
/// "code"}}` with its kind's status.
struct OpenAiError(ApiError);

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.into_envelope(Protocol::OpenAi)
    }
}

impl<F: Failure + 'static> From<F> for OpenAiError {
    fn from(failure: F) -> Self {
        OpenAiError(ApiError::from_failure(&failure))
    }
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> OpenAiError {
    match param {
        Some(param) => InvalidRequest::at(param, message).into(),
        None => InvalidRequest::new(message).into(),
    }
}

/// The `input` field: a string, a list of strings, a list of token ids, or a list of such lists.
enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

/// Parses `input`, refusing more than [`MAX_INPUTS_PER_REQUEST`] items before converting any.
/// Token ids must be integers in `0..2^32` (the vocabulary check comes with the model).
fn parse_inputs(input: &Value) -> Result<Inputs, OpenAiError> {
    let ids = |sequence: usize, items: &[Value]| -> Result<Vec<u32>, OpenAiError> {
        items
            .iter()
            .enumerate()
            .map(|(index, v)| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            format!("token id {index} of sequence {sequence} is {v}; token ids must be integers in 0..4294967296"),
                            Some("input"),
                        )
                    })
            })
            .collect()
    };
    let items = match input {
        Value::String(text) => return Ok(Inputs::Texts(vec![text.clone()])),
        Value::Array(items) => items,
        _ => return Err(invalid("'input' must be a string, an array of strings, an array of token ids, or an array of such arrays", Some("input"))),
    };
    if items.is_empty() {
        return Err(invalid("'input' must not be empty", Some("input")));
    }
    if items.iter().all(Value::is_number) {
        // One sequence of token ids: its length is checked against the model's positions.
        return Ok(Inputs::Tokens(vec![ids(0, items)?]));
    }
    check_input_count(items.len())?;
    if items.iter().all(Value::is_string) {
        return Ok(Inputs::Texts(
            items
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect(),
        ));
    }
    if items.iter().all(Value::is_array) {
        return Ok(Inputs::Tokens(
            items
                .iter()
                .enumerate()
                .map(|(sequence, v)| {
                    ids(
                        sequence,
                        v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    )
                })
                .collect::<Result<_, _>>()?,
        ));
    }
    Err(invalid("'input' must be a string, an array of strings, an array of token ids, or an array of such arrays (not a mix)", Some("input")))
}

/// `dimensions`: absent or null means all `hidden` values, otherwise an integer in 1..=hidden.
fn parse_dimensions(value: Option<&Value>, hidden: usize) -> Result<usize, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(hidden),
        Some(value) => value
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=hidden).contains(d))
            .ok_or_else(|| {
                invalid(
                    format!("dimensions must be an integer between 1 and {hidden}"),
                    Some("dimensions"),
                )
            }),
    }
}

/// Refuses more than [`MAX_INPUTS_PER_REQUEST`] inputs (texts or token-id sequences).
fn check_input_count(count: usize) -> Result<(), OpenAiError> {
    if count > MAX_INPUTS_PER_REQUEST {
        return Err(invalid(
            format!("{count} inputs; at most {MAX_INPUTS_PER_REQUEST} per request"),
            Some("input"),
        ));
    }
    Ok(())
}

async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let started = std::time::Instant::now();
    // Beyond axum's 2 MiB default body limit: 413, in OpenAI's envelope.
    // A body that stops arriving: 408, also in OpenAI's envelope.
    let body = body.map_err(UnreadableBody::from)?;
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
    let dimensions = parse_dimensions(request.get("dimensions"), bert.hidden_size())?;
    let batch: Vec<Vec<u32>> = match inputs {
        Inputs::Tokens(batch) => batch,
        Inputs::Texts(texts) => state.serving.tokenize(model.clone(), texts).await?,
    };
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
        .await?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": m.created_at.unix_timestamp(), "owned_by": "quantd", "name": m.name}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use axum::http::StatusCode;

    fn refused(result: Result<impl Sized, OpenAiError>) -> OpenAiError {
        match result {
            Ok(_) => panic!("accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn inputs_are_capped_and_token_ids_checked() {
        assert!(matches!(parse_inputs(&json!("hi")), Ok(Inputs::Texts(t)) if t == ["hi"]));
        assert!(
            matches!(parse_inputs(&json!([101, 7592, 102])), Ok(Inputs::Tokens(t)) if t == [vec![101, 7592, 102]])
        );
        assert!(
            matches!(parse_inputs(&json!([[101], [102, 103]])), Ok(Inputs::Tokens(t)) if t.len() == 2)
        );
        // The shared cap, for texts and for token-id sequences.
        let texts = json!(vec!["x"; MAX_INPUTS_PER_REQUEST]);
        assert!(parse_inputs(&texts).is_ok());
        let texts = json!(vec!["x"; MAX_INPUTS_PER_REQUEST + 1]);
        let OpenAiError(error) = refused(parse_inputs(&texts));
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert_eq!(error.field.as_deref(), Some("input"));
        assert!(error.detail.contains("at most 2048"), "{}", error.detail);
        let sequences = json!(vec![vec![101]; MAX_INPUTS_PER_REQUEST + 1]);
        assert!(refused(parse_inputs(&sequences))
            .0
            .detail
            .contains("at most"));
        // Token ids: integers in u32's range, named by position.
        for bad in [
            json!(-1),
            json!(1.5),
            json!(4_294_967_296u64),
            json!(1e300),
            json!("7"),
        ] {
            let OpenAiError(error) = refused(parse_inputs(&json!([[101], [102, bad]])));
            assert_eq!(error.kind, ErrorKind::BadRequest);
            assert!(
                error.detail.contains("token id 1 of sequence 1")
                    || error.detail.contains("not a mix"),
                "{}",
                error.detail
            );
        }
        assert!(parse_inputs(&json!([[101], "text"])).is_err());
        assert!(parse_inputs(&json!([])).is_err());
        assert!(parse_inputs(&json!({"text": "x"})).is_err());
        assert!(parse_inputs(&json!(null)).is_err());
    }

    #[test]
    fn dimensions_are_checked_without_casts() {
        assert_eq!(parse_dimensions(None, 384).ok(), Some(384));
        assert_eq!(parse_dimensions(Some(&json!(null)), 384).ok(), Some(384));
        assert_eq!(parse_dimensions(Some(&json!(64)), 384).ok(), Some(64));
        assert_eq!(parse_dimensions(Some(&json!(384)), 384).ok(), Some(384));
        for bad in [
            json!(0),
            json!(385),
            json!(-1),
            json!(64.5),
            json!(u64::MAX),
            json!(1e300),
            json!("64"),
        ] {
            let OpenAiError(error) = refused(parse_dimensions(Some(&bad), 384));
            assert_eq!(error.kind, ErrorKind::BadRequest, "{bad}");
            assert_eq!(error.field.as_deref(), Some("dimensions"));
        }
    }

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn serving_errors_use_openai_envelope() {
        // The model's vocabulary check reports BadInput: 400 with param "input".
        let response = OpenAiError::from(ServingError::BadInput(
            "sequence 0 has token id 99999, outside the vocabulary of 30522".into(),
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "input");
        assert!(body["error"]["code"].is_null());
        let response =
            OpenAiError::from(ServingError::Overflow("overflowed f32".into())).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Busy: 429 with Retry-After, OpenAI's rate-limit type.
        let response = OpenAiError::from(ServingError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(
            body_json(response).await["error"]["type"],
            "rate_limit_error"
        );
        // Internal: opaque, the cause only in the log.
        let response = OpenAiError::from(ServingError::internal(
            "reading a stored file",
            "/data/blobs/ab/cd: permission denied",
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "server_error");
        assert!(!body.to_string().contains("/data"), "{body}");
    }
}
