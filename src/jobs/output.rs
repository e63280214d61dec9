//! The output file of a job: one writer over safetensors or GGUF, fed the declared tensors, with
//! the file-level metadata each format wants.

use std::collections::BTreeMap;
use std::io::Write;

use crate::formats::gguf::{
    GgufTensorSpec, GgufValue, GgufWriteError, GgufWriter, DEFAULT_ALIGNMENT,
    GGML_QUANTIZATION_VERSION, KEY_GENERAL_ARCHITECTURE, KEY_GENERAL_FILE_TYPE, KEY_GENERAL_NAME,
    KEY_GENERAL_QUANTIZATION_VERSION, LLAMA_FTYPE_ALL_F32,
};
use crate::formats::safetensors::{SafetensorsWriteError, SafetensorsWriter};

use crate::quant::layout::{OutputTensor, StoredAs, TensorSink};

use super::error::PipelineError;
use super::spec::{JobSpec, OutputFormat};

/// What the pipeline knows about the model besides its weights.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    /// The model's human name (GGUF `general.name`).
    pub name: Option<String>,
    /// The model's `config.json`, when one was attached.
    pub config: Option<serde_json::Value>,
}

pub enum OutputWriter<W: Write> {
    Safetensors(SafetensorsWriter<W>),
    Gguf(GgufWriter<W>),
}

impl From<SafetensorsWriteError> for PipelineError {
    fn from(error: SafetensorsWriteError) -> Self {
        match error {
            SafetensorsWriteError::Io(io) => PipelineError::Io(io),
            // Anything else means the declared layout and the data disagree: a bug, reported
            // as an internal error rather than blamed on the model.
            other => PipelineError::Internal(Box::new(other)),
        }
    }
}

impl From<GgufWriteError> for PipelineError {
    fn from(error: GgufWriteError) -> Self {
        match error {
            GgufWriteError::Io(io) => PipelineError::Io(io),
            // Raised when the header is built: the model's names or shapes do not fit GGUF
            // (names over 63 bytes, more than 4 dimensions).
            GgufWriteError::InvalidTensor { .. } | GgufWriteError::DuplicateTensor { .. } => {
                PipelineError::InvalidInput {
                    slug: "not-representable-in-gguf",
                    detail: error.to_string(),
                }
            }
            other => PipelineError::Internal(Box::new(other)),
        }
    }
}

impl<W: Write> OutputWriter<W> {
    /// Writes the file header (all tensor declarations and metadata) to `sink`.
    pub fn new(
        sink: W,
        spec: &JobSpec,
        declared: Vec<OutputTensor>,
        source_metadata: &BTreeMap<String, String>,
        layout_metadata: Vec<(String, String)>,
        model: &ModelInfo,
    ) -> Result<Self, PipelineError> {
        let version = format!("quantd {}", env!("CARGO_PKG_VERSION"));
        match spec.format {
            OutputFormat::Gguf => {
                let architecture = model
                    .config
                    .as_ref()
                    .and_then(|c| c.get("model_type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("quantd")
                    .to_owned();
                let mut metadata = vec![
                    (
                        KEY_GENERAL_ARCHITECTURE.to_owned(),
                        GgufValue::String(architecture),
                    ),
                    (
                        KEY_GENERAL_QUANTIZATION_VERSION.to_owned(),
                        GgufValue::U32(GGML_QUANTIZATION_VERSION),
                    ),
                    (
                        KEY_GENERAL_FILE_TYPE.to_owned(),
                        GgufValue::U32(
                            spec.scheme
                                .layout()
                                .gguf_file_type()
                                .unwrap_or(LLAMA_FTYPE_ALL_F32),
                        ),
                    ),
                ];
                if let Some(name) = &model.name {
                    metadata.push((KEY_GENERAL_NAME.to_owned(), GgufValue::String(name.clone())));
                }
                metadata.push(("quantd.version".into(), GgufValue::String(version)));
                metadata.push((
                    "quantd.scheme".into(),
                    GgufValue::String(spec.scheme.name().into()),
                ));
                metadata.push((
                    "quantd.options".into(),
                    GgufValue::String(spec.canonical_options().to_string()),
                ));
                let tensors = declared
                    .into_iter()
                    .map(|t| GgufTensorSpec {
                        ggml_type: match t.stored_as {
                            StoredAs::Ggml(id) => id,
                            StoredAs::Safetensors(_) => {
                                unreachable!("GGUF output declares ggml types")
                            }
                        },
                        name: t.name,
                        shape: t.shape.iter().map(|&d| d as u64).collect(),
                        n_bytes: t.n_bytes,
                    })
                    .collect();
                Ok(OutputWriter::Gguf(GgufWriter::new(
                    sink,
                    metadata,
                    tensors,
                    DEFAULT_ALIGNMENT,
                )?))
            }
            OutputFormat::Safetensors | OutputFormat::Dequantized { .. } => {
                let mut metadata = source_metadata.clone();
                // transformers refuses safetensors whose metadata names another framework.
                metadata.insert("format".into(), "pt".into());
                metadata.insert("quantized_by".into(), version);
                metadata.insert("quantization_scheme".into(), spec.scheme.name().into());
                metadata.extend(layout_metadata);
                let tensors = declared
                    .into_iter()
                    .map(|t| match t.stored_as {
                        StoredAs::Safetensors(dtype) => (t.name, dtype, t.shape),
                        StoredAs::Ggml(_) => unreachable!("safetensors output declares dtypes"),
                    })
                    .collect();
                Ok(OutputWriter::Safetensors(SafetensorsWriter::new(
                    sink, tensors, metadata,
                )?))
            }
        }
    }

    /// Writes what the emitter checked; failures are I/O (or a writer's own layout check, which
    /// the emitter makes unreachable).
    fn write_checked(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            OutputWriter::Safetensors(writer) => {
                writer.write_tensor_data(name, bytes).map_err(|e| match e {
                    SafetensorsWriteError::Io(io) => io,
                    other => std::io::Error::other(other),
                })
            }
            OutputWriter::Gguf(writer) => {
                writer.write_tensor_data(name, bytes).map_err(|e| match e {
                    GgufWriteError::Io(io) => io,
                    other => std::io::Error::other(other),
                })
            }
        }
    }

    pub fn finish(self) -> Result<W, PipelineError> {
        Ok(match self {
            OutputWriter::Safetensors(writer) => writer.finish()?,
            OutputWriter::Gguf(writer) => writer.finish()?,
        })
    }
}

impl<W: Write> TensorSink for OutputWriter<W> {
    fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.write_checked(name, bytes)
    }
}
