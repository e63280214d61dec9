//! OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`, with OpenAI's
//! nested error envelope `{"error": {"message", "type", "param", "code"}}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::envelope::Protocol;
use super::error::{json_body, UnreadableBody, MAX_INFERENCE_BODY_BYTES};
use super::{ApiError, AppState};
use crate::error::Failure;
use crate::serving::request::{
    check_input_count, Dimensions, EmbeddingInput, EmbeddingRequest, InvalidRequest, TextBatch,
    TokenBatch,
};
use crate::store::PageRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/embeddings",
            post(embeddings).layer(DefaultBodyLimit::max(MAX_INFERENCE_BODY_BYTES)),
        )
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

/// The body of `POST /v1/embeddings`, as sent. Unknown members (`user`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    model: String,
    input: InputBody,
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    #[serde(default)]
    dimensions: Option<u64>,
}

/// `input`: a string, a list of strings, a list of token ids, or a list of such lists. Token ids
/// are read as JSON numbers so that a bad one is named by position; anything else lands in
/// `Other` and is refused with the list of accepted forms.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputBody {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<serde_json::Number>),
    Sequences(Vec<Vec<serde_json::Number>>),
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    Float,
    Base64,
}

impl TryFrom<InputBody> for EmbeddingInput {
    type Error = InvalidRequest;

    fn try_from(input: InputBody) -> Result<Self, InvalidRequest> {
        Ok(match input {
            InputBody::Text(text) => EmbeddingInput::Texts(TextBatch::try_from(vec![text])?),
            InputBody::Texts(texts) => EmbeddingInput::Texts(TextBatch::try_from(texts)?),
            // One sequence of token ids: its length is checked against the model's positions.
            InputBody::Tokens(ids) => {
                EmbeddingInput::Tokens(TokenBatch::try_from(vec![token_ids(0, &ids)?])?)
            }
            InputBody::Sequences(sequences) => {
                // The count is checked before any id is converted.
                check_input_count(sequences.len())?;
                let sequences = sequences
                    .iter()
                    .enumerate()
                    .map(|(index, ids)| token_ids(index, ids))
                    .collect::<Result<Vec<_>, _>>()?;
                EmbeddingInput::Tokens(TokenBatch::try_from(sequences)?)
            }
            InputBody::Other(_) => {
                return Err(InvalidRequest::at(
                    "input",
                    "'input' must be a string, an array of strings, an array of token ids, or an array of such arrays (not a mix)",
                ))
            }
        })
    }
}

/// Token ids: integers in `0..2^32` (the vocabulary check comes with the model).
fn token_ids(sequence: usize, ids: &[serde_json::Number]) -> Result<Vec<u32>, InvalidRequest> {
    ids.iter()
        .enumerate()
        .map(|(index, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    InvalidRequest::at(
                        "input",
                        format!("token id {index} of sequence {sequence} is {id}; token ids must be integers in 0..4294967296"),
                    )
                })
        })
        .collect()
}

impl TryFrom<EmbeddingsBody> for EmbeddingRequest {
    type Error = InvalidRequest;

    fn try_from(body: EmbeddingsBody) -> Result<Self, InvalidRequest> {
        Ok(EmbeddingRequest {
            model: body.model,
            input: EmbeddingInput::try_from(body.input)?,
            dimensions: body.dimensions.map(Dimensions::try_from).transpose()?,
        })
    }
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: EncodedEmbedding,
}

/// An embedding as `encoding_format` asks: a list of floats, or its little-endian f32 bytes in
/// base64.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum EncodedEmbedding {
    Float(Vec<f32>),
    Base64(String),
}

impl EncodedEmbedding {
    fn new(embedding: Vec<f32>, encoding: EncodingFormat) -> Self {
        match encoding {
            EncodingFormat::Float => EncodedEmbedding::Float(embedding),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                EncodedEmbedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let received = std::time::Instant::now();
    // Beyond the 2 MiB body limit: 413; a body that stops arriving: 408; both in OpenAI's
    // envelope.
    let body = body.map_err(UnreadableBody::from)?;
    let body: EmbeddingsBody = json_body(&body)?;
    let encoding = body.encoding_format.unwrap_or(EncodingFormat::Float);
    let request = EmbeddingRequest::try_from(body)?;
    let model = request.model.clone();
    let embeddings = state.serving.embeddings(request, received).await?;
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| EmbeddingData {
            object: "embedding",
            index,
            embedding: EncodedEmbedding::new(embedding, encoding),
        })
        .collect();
    let tokens = embeddings.prompt_tokens;
    let mut response = Json(EmbeddingsResponse {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&embeddings.timing.server_timing(embeddings.prepared))
    {
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
    use crate::serving::{ServingError, MAX_INPUTS_PER_REQUEST};
    use axum::http::StatusCode;

    fn parse(body: Value) -> Result<EmbeddingRequest, InvalidRequest> {
        let bytes = serde_json::to_vec(&body).unwrap();
        EmbeddingRequest::try_from(json_body::<EmbeddingsBody>(&bytes)?)
    }

    fn input(input: Value) -> Result<EmbeddingInput, InvalidRequest> {
        parse(json!({"model": "m", "input": input})).map(|request| request.input)
    }

    #[test]
    fn inputs_are_capped_and_token_ids_checked() {
        let texts = |texts: &[&str]| {
            EmbeddingInput::Texts(
                TextBatch::try_from(texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
                    .unwrap(),
            )
        };
        let tokens =
            |ids: Vec<Vec<u32>>| EmbeddingInput::Tokens(TokenBatch::try_from(ids).unwrap());
        assert_eq!(input(json!("hi")), Ok(texts(&["hi"])));
        assert_eq!(input(json!(["a", "b"])), Ok(texts(&["a", "b"])));
        assert_eq!(
            input(json!([101, 7592, 102])),
            Ok(tokens(vec![vec![101, 7592, 102]]))
        );
        assert_eq!(
            input(json!([[101], [102, 103]])),
            Ok(tokens(vec![vec![101], vec![102, 103]]))
        );
        // The shared cap, for texts and for token-id sequences.
        assert!(input(json!(vec!["x"; MAX_INPUTS_PER_REQUEST])).is_ok());
        let error = input(json!(vec!["x"; MAX_INPUTS_PER_REQUEST + 1])).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("input"));
        assert!(error.message.contains("at most 2048"), "{error}");
        let sequences = json!(vec![vec![101]; MAX_INPUTS_PER_REQUEST + 1]);
        assert!(input(sequences).unwrap_err().message.contains("at most"));
        // Token ids: integers in u32's range, named by position.
        for bad in [
            json!(-1),
            json!(1.5),
            json!(4_294_967_296u64),
            json!(1e300),
            json!("7"),
        ] {
            let error = input(json!([[101], [102, bad]])).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("input"));
            assert!(
                error.message.contains("token id 1 of sequence 1")
                    || error.message.contains("not a mix"),
                "{error}"
            );
        }
        assert!(input(json!([101, -1]))
            .unwrap_err()
            .message
            .contains("token id 1 of sequence 0"));
        assert!(input(json!([[101], "text"]))
            .unwrap_err()
            .message
            .contains("not a mix"));
        for bad in [json!([]), json!({"text": "x"}), json!(null), json!(7)] {
            let error = input(bad.clone()).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("input"), "{bad}");
        }
    }

    #[test]
    fn wrong_types_are_400s_naming_the_member() {
        for (body, field) in [
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": -1}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 64.5}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 1e300}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": "64"}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "encoding_format": "hex"}),
                "encoding_format",
            ),
            (json!({"model": 5, "input": "x"}), "model"),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(error.field.as_deref(), Some(field), "{body}: {error}");
            let response = OpenAiError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        }
        let request = parse(json!({"model": "m", "input": "x", "dimensions": null, "encoding_format": null, "user": "u"})).unwrap();
        assert_eq!(request.dimensions, None);
        assert!(parse(json!({"input": "x"})).is_err());
        assert!(json_body::<EmbeddingsBody>(b"{not json").is_err());
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
