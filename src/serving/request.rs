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

/// A tensor of f32 values as a model takes it: at least one dimension, every dimension
/// positive, exactly as many values as the dimensions multiply to, and every value finite.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    dims: Vec<usize>,
    values: Vec<f32>,
}

impl FloatTensor {
    pub fn new(dims: Vec<usize>, values: Vec<f32>) -> Result<Self, InvalidRequest> {
        let elements = dims
            .iter()
            .try_fold(1usize, |product, &d| product.checked_mul(d));
        if dims.is_empty() || dims.contains(&0) || elements != Some(values.len()) {
            return Err(InvalidRequest::at(
                "inputs",
                format!("{} values do not fill shape {dims:?}", values.len()),
            ));
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(InvalidRequest::at(
                "inputs",
                format!("element {index} is not finite"),
            ));
        }
        Ok(FloatTensor { dims, values })
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
}

/// What a `/v2` inference runs on: a numeric tensor (`mlp` models) or texts (`bert` models,
/// one embedding row per text).
#[derive(Debug, Clone, PartialEq)]
pub enum InferenceInput {
    Tensor(FloatTensor),
    Texts(TextBatch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferenceRequest {
    pub model: String,
    pub input: InferenceInput,
}

/// The output rows of an inference, with what they cost.
#[derive(Debug)]
pub struct Inference {
    /// `[rows, values per row]`.
    pub shape: [usize; 2],
    pub values: Vec<f32>,
    /// From the request's arrival until its batch was submitted (model lookup, tokenizing).
    pub prepared: Duration,
    pub timing: Timing,
}

impl ServingRegistry {
    /// Runs a tensor through an `mlp` model, or embeds texts with a `bert` model.
    pub async fn run_inference(
        &self,
        request: InferenceRequest,
        received: Instant,
    ) -> Result<Inference, ServingError> {
        let name = request.model;
        let model = self.get_or_load(&name).await?;
        match request.input {
            InferenceInput::Tensor(tensor) => {
                let Some(width) = model.widths().0 else {
                    return Err(ServingError::Unsupported(format!(
                        "'{name}' is a {} text model: use POST /v1/embeddings",
                        model.architecture
                    )));
                };
                let rows = match tensor.dims() {
                    [w] if *w == width => 1,
                    [rows, w] if *w == width => *rows,
                    dims => {
                        return Err(ServingError::BadInput(format!(
                            "input shape {dims:?} does not fit the model's [-1, {width}]"
                        )))
                    }
                };
                let out_width = model.widths().1;
                let prepared = received.elapsed();
                let (values, timing) = self.infer(model, tensor.values, rows).await?;
                Ok(Inference {
                    shape: [rows, out_width],
                    values,
                    prepared,
                    timing,
                })
            }
            InferenceInput::Texts(texts) => {
                let ModelKind::Bert(bert) = &*model.kind else {
                    return Err(ServingError::BadInput(format!(
                        "'{name}' takes numeric tensors, not BYTES"
                    )));
                };
                let shape = [texts.len(), bert.hidden_size()];
                let batch = self.tokenize(model.clone(), texts.into_inner()).await?;
                let prepared = received.elapsed();
                let (embeddings, timing) = self.embed(model, batch).await?;
                Ok(Inference {
                    shape,
                    values: embeddings.into_iter().flatten().collect(),
                    prepared,
                    timing,
                })
            }
        }
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
    fn float_tensors_fill_their_shape_with_finite_values() {
        assert!(FloatTensor::new(vec![2, 2], vec![0.0; 4]).is_ok());
        assert!(FloatTensor::new(vec![2, 2], vec![0.0; 3]).is_err());
        assert!(FloatTensor::new(vec![0], Vec::new()).is_err());
        assert!(FloatTensor::new(Vec::new(), vec![1.0]).is_err());
        assert!(FloatTensor::new(vec![usize::MAX, 2], Vec::new()).is_err());
        let error = FloatTensor::new(vec![3], vec![0.0, f32::NAN, 1.0]).unwrap_err();
        assert!(error.message.contains("element 1"), "{error}");
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
