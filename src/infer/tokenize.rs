//! WordPiece tokenization for BERT-style sentence-embedding models.
//!
//! Wraps a Hugging Face `tokenizer.json` (via the `tokenizers` crate). The shipped files of
//! sentence-transformers models often pad every input to a fixed length; mean pooling over such
//! padding would be wrong, so padding is always switched off here and truncation is set to the
//! model's maximum length (special tokens included).

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Errors from building or running the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The tokenizer JSON could not be parsed or configured.
    #[error("cannot load tokenizer.json: {0}")]
    Load(String),
    /// The arguments are unusable (e.g. `max_length` 0).
    #[error("invalid tokenizer settings: {0}")]
    Config(String),
    /// Encoding a text failed.
    #[error("cannot tokenize text: {0}")]
    Encode(String),
}

/// A BERT tokenizer with padding off and truncation at `max_length` tokens.
pub struct BertTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

impl BertTokenizer {
    /// Builds the tokenizer from the bytes of a `tokenizer.json`.
    ///
    /// Padding is switched off; truncation keeps at most `max_length` ids including `[CLS]`
    /// and `[SEP]`.
    pub fn from_json_bytes(bytes: &[u8], max_length: usize) -> Result<Self, TokenizeError> {
        if max_length < 2 {
            return Err(TokenizeError::Config(format!(
                "max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}"
            )));
        }
        let mut inner =
            Tokenizer::from_bytes(bytes).map_err(|e| TokenizeError::Load(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| TokenizeError::Load(e.to_string()))?;
        Ok(Self { inner, max_length })
    }

    /// Token ids of `text`, including `[CLS]` … `[SEP]`, at most `max_length` of them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The truncation length this tokenizer was built with.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}
