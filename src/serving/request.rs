//! Inference requests as serving takes them: validated values that every protocol (`/v2`,
//! `/v1/embeddings`) converts its wire request into, so that limits are checked here, once.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use super::{ModelKind, ServingError, ServingRegistry, Timing, MAX_INPUTS_PER_REQUEST};
use crate::error::{ErrorKind, Failure};

/// A request refused before any model work: not of the protocol's schema, or over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    /// The request member at fault (OpenAI's `param`), when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(message: impl Into<String>) -> Self {
        InvalidRequest {
            field: None,
            message: message.into(),
        }
    }

    /// Refused because of the request member `field`.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl Failure for InvalidRequest {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }

    fn slug(&self) -> &'static str {
        "bad-inference-request"
    }

    fn title(&self) -> &'static str {
        "Invalid inference request"
    }

    fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// Texts for the encoder: at least one, at most [`MAX_INPUTS_PER_REQUEST`] (each is a sequence
/// to encode, so the count bounds a request's work). `/v1/embeddings` strings and `/v2` BYTES
/// elements alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatch(Vec<String>);

impl TryFrom<Vec<String>> for TextBatch {
    type Error = InvalidRequest;

    fn try_from(texts: Vec<String>) -> Result<Self, InvalidRequest> {
        check_input_count(texts.len())?;
        Ok(TextBatch(texts))
    }
}

impl TextBatch {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_inner(self) -> Vec<String> {
        self.0
    }
}

/// Token-id sequences: at least one, at most [`MAX_INPUTS_PER_REQUEST`]. Each sequence's length
/// and ids are checked against the model that embeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch(Vec<Vec<u32>>);

impl TryFrom<Vec<Vec<u32>>> for TokenBatch {
    type Error = InvalidRequest;

    fn try_from(sequences: Vec<Vec<u32>>) -> Result<Self, InvalidRequest> {
        check_input_count(sequences.len())?;
        Ok(TokenBatch(sequences))
    }
}

impl TokenBatch {
    pub fn into_inner(self) -> Vec<Vec<u32>> {
        self.0
    }
}

/// The one check of the input-count limit: between 1 and [`MAX_INPUTS_PER_REQUEST`].
pub fn check_input_count(count: usize) -> Result<(), InvalidRequest> {
    if count == 0 {
        return Err(InvalidRequest::at("input", "'input' must not be empty"));
    }
    if count > MAX_INPUTS_PER_REQUEST {
        return Err(InvalidRequest::at(
            "input",
            format!("{count} inputs; at most {MAX_INPUTS_PER_REQUEST} per request"),
        ));
    }
    Ok(())
}

/// What to embed: texts (tokenized by the model's tokenizer) or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    Texts(TextBatch),
    Tokens(TokenBatch),
}

/// How many leading values of each embedding to keep (OpenAI's `dimensions`), at least one;
/// that it is at most the model's width is checked against the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions(NonZeroUsize);

impl TryFrom<u64> for Dimensions {
    type Error = InvalidRequest;

    fn try_from(dimensions: u64) -> Result<Self, InvalidRequest> {
        usize::try_from(dimensions)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(Dimensions)
            .ok_or_else(|| {
                InvalidRequest::at(
                    "dimensions",
                    format!("dimensions must be a positive integer, got {dimensions}"),
                )
            })
    }
}

impl Dimensions {
    /// The width to keep of a `hidden`-wide embedding, if it is one.
    fn within(self, hidden: usize) -> Result<usize, InvalidRequest> {
        let width = self.0.get();
        if width > hidden {
            return Err(InvalidRequest::at(
                "dimensions",
                format!("dimensions must be an integer between 1 and {hidden}"),
            ));
        }
        Ok(width)
    }
}

/// An embeddings request: the model (id, artifact id or unique name), what to embed, and the
/// width to shorten the embeddings to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    pub dimensions: Option<Dimensions>,
}

/// Unit-length embeddings, one per input, with what they cost.
#[derive(Debug)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens embedded, over every input.
    pub prompt_tokens: usize,
    /// From the request's arrival until its batch was submitted (model lookup, tokenizing).
    pub prepared: Duration,
    pub timing: Timing,
}

/// Keeps the first `width` values of a unit-length embedding and scales them back to unit
/// length, as OpenAI's `dimensions` does.
fn shorten(embedding: &mut Vec<f32>, width: usize) {
    if width >= embedding.len() {
        return;
    }
    embedding.truncate(width);
    let norm = embedding
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > 0.0 {
        embedding.iter_mut().for_each(|v| *v /= norm);
    }
}

impl ServingRegistry {
    /// Embeds texts or token ids with a `bert` model, shortened and renormalised to
    /// `dimensions` when asked. `received` is when the request arrived (for `Server-Timing`).
    pub async fn embeddings(
        &self,
        request: EmbeddingRequest,
        received: Instant,
    ) -> Result<Embeddings, ServingError> {
        let model = self.get_or_load(&request.model).await?;
        let ModelKind::Bert(bert) = &*model.kind else {
            return Err(ServingError::Unsupported(format!(
                "'{}' is a {} model; embeddings need a bert model",
                request.model, model.architecture
            )));
        };
        let hidden = bert.hidden_size();
        let width = match request.dimensions {
            Some(dimensions) => dimensions.within(hidden)?,
            None => hidden,
        };
        let batch = match request.input {
            EmbeddingInput::Tokens(batch) => batch.into_inner(),
            EmbeddingInput::Texts(texts) => {
                self.tokenize(model.clone(), texts.into_inner()).await?
            }
        };
        let prompt_tokens = batch.iter().map(Vec::len).sum();
        let prepared = received.elapsed();
        let (mut vectors, timing) = self.embed(model, batch).await?;
        for vector in &mut vectors {
            shorten(vector, width);
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens,
            prepared,
            timing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_counts_are_checked_once_for_texts_and_token_ids() {
        assert!(TextBatch::try_from(vec!["x".to_owned(); MAX_INPUTS_PER_REQUEST]).is_ok());
        let error =
            TextBatch::try_from(vec!["x".to_owned(); MAX_INPUTS_PER_REQUEST + 1]).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("input"));
        assert!(error.message.contains("at most 2048"), "{error}");
        assert!(TextBatch::try_from(Vec::new()).is_err());
        assert!(TokenBatch::try_from(vec![vec![101]; MAX_INPUTS_PER_REQUEST + 1]).is_err());
        assert!(TokenBatch::try_from(Vec::new()).is_err());
        assert!(TokenBatch::try_from(vec![vec![101, 102]]).is_ok());
    }

    #[test]
    fn dimensions_are_positive_and_within_the_model() {
        assert_eq!(Dimensions::try_from(64).unwrap().within(384), Ok(64));
        assert_eq!(Dimensions::try_from(384).unwrap().within(384), Ok(384));
        let error = Dimensions::try_from(385).unwrap().within(384).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("dimensions"));
        assert!(Dimensions::try_from(0).is_err());
        assert!(Dimensions::try_from(u64::MAX).map_or(true, |d| d.within(384).is_err()));
    }

    #[test]
    fn shortened_embeddings_are_renormalised() {
        let mut embedding = vec![0.6, 0.0, 0.8];
        shorten(&mut embedding, 3);
        assert_eq!(embedding, [0.6, 0.0, 0.8]);
        shorten(&mut embedding, 1);
        assert_eq!(embedding, [1.0]);
        let mut zeros = vec![0.0; 4];
        shorten(&mut zeros, 2);
        assert_eq!(zeros, [0.0, 0.0]);
    }
}
