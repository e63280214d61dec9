//! Loading a `bert` model for serving: Linear weights as stored (f32, or int8 with per-row scales
//! kept quantized), the other tensors as f32, and the tokenizer from `tokenizer.json`.

use std::collections::HashMap;

use crate::formats::safetensors::{Dtype, Header};
use crate::infer::bert::{BertConfig, BertError, BertModel, LinearBackend};
use crate::infer::kernels::{linear_f32, linear_i8, GemmKernels};
use crate::infer::mlp::DenseWeights;
use crate::infer::tokenize::BertTokenizer;
use crate::quant::convert::float_values;

use super::ServingError;

struct Entry {
    weights: DenseWeights,
    bias: Option<Vec<f32>>,
    out: usize,
    inp: usize,
}

/// The Linear layers of a served BERT, each f32 or int8.
pub struct ServedLinear {
    layers: HashMap<String, Entry>,
    kernels: &'static GemmKernels,
    /// Quantize activations too (int8 × int8 with dynamic per-row scales). Off by default: on
    /// all-MiniLM-L6-v2 it drops the worst embedding cosine to sentence-transformers from
    /// ≥ 0.998 (int8 weights, f32 activations) to 0.992.
    int8_activations: bool,
}

impl LinearBackend for ServedLinear {
    fn linear(
        &self,
        name: &str,
        x: &[f32],
        m: usize,
        k: usize,
        n: usize,
        y: &mut [f32],
    ) -> Result<(), BertError> {
        let entry = self
            .layers
            .get(name)
            .ok_or_else(|| BertError::MissingLinear(name.to_owned()))?;
        if entry.out != n || entry.inp != k {
            return Err(BertError::LinearShape {
                name: name.to_owned(),
                out: n,
                inp: k,
                got_out: entry.out,
                got_in: entry.inp,
            });
        }
        match &entry.weights {
            DenseWeights::F32(w) => {
                linear_f32(self.kernels, x, m, k, w, n, entry.bias.as_deref(), y)
            }
            // Symmetric per-channel int8: int8 weights × int8 activations (dynamic per-row
            // activation scales), exact i32 accumulation, one dequantizing multiply per output.
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } if self.int8_activations && zero_points.is_empty() && scales.len() == n => {
                let (mut aq, mut ascales, mut acc) = (Vec::new(), Vec::new(), Vec::new());
                linear_i8(
                    self.kernels,
                    x,
                    m,
                    k,
                    q,
                    scales,
                    n,
                    entry.bias.as_deref(),
                    &mut aq,
                    &mut ascales,
                    &mut acc,
                    y,
                );
            }
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } => {
                // Weight-only int8: the weights stay int8 in memory and are decoded once per
                // call into an f32 scratch matrix (O(n·k), small next to the O(m·n·k) GEMM that
                // follows), so the activations keep full precision.
                let mut decoded = vec![0f32; n * k];
                for (j, row) in decoded.chunks_exact_mut(k).enumerate() {
                    let index = if scales.len() == 1 { 0 } else { j };
                    let zero = zero_points.get(index).map_or(0.0, |&z| f32::from(z));
                    let scale = scales[index];
                    for (value, &qv) in row.iter_mut().zip(&q[j * k..(j + 1) * k]) {
                        *value = (f32::from(qv) - zero) * scale;
                    }
                }
                linear_f32(self.kernels, x, m, k, &decoded, n, entry.bias.as_deref(), y);
            }
        }
        Ok(())
    }

    fn check_linear(&self, name: &str, out: usize, inp: usize) -> Result<(), BertError> {
        match self.layers.get(name) {
            Some(e) if e.out == out && e.inp == inp => Ok(()),
            Some(e) => Err(BertError::LinearShape {
                name: name.to_owned(),
                out,
                inp,
                got_out: e.out,
                got_in: e.inp,
            }),
            None => Err(BertError::MissingLinear(name.to_owned())),
        }
    }
}

/// A BERT encoder ready to embed text.
pub struct BertServing {
    pub config: BertConfig,
    linear: ServedLinear,
    tensors: HashMap<String, Vec<f32>>,
    pub tokenizer: BertTokenizer,
    pub int8: bool,
    pub memory_bytes: usize,
}

impl std::fmt::Debug for BertServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertServing")
            .field("hidden_size", &self.config.hidden_size)
            .field("int8", &self.int8)
            .finish()
    }
}

impl BertServing {
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Embeds token-id sequences (one batch, padded inside).
    pub fn embed(
        &self,
        batch: &[Vec<u32>],
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ServingError> {
        let model = BertModel::new(self.config.clone(), &self.linear, &self.tensors)
            .map_err(|e| ServingError::Internal(e.to_string()))?;
        model.embed(batch, normalize).map_err(|e| match e {
            BertError::Input(message) => ServingError::BadInput(message),
            other => ServingError::Internal(other.to_string()),
        })
    }
}

/// Builds a served BERT from a mapped safetensors file (blocking; worker pool).
pub fn load_bert(
    file: &[u8],
    header: &Header,
    config_bytes: &[u8],
    tokenizer_json: Option<&[u8]>,
    kernels: &'static GemmKernels,
    int8_activations: bool,
) -> Result<BertServing, ServingError> {
    let unsupported = |message: String| ServingError::Unsupported(message);
    let config = BertConfig::from_json(config_bytes).map_err(|e| unsupported(e.to_string()))?;
    let tokenizer_json = tokenizer_json
        .ok_or_else(|| unsupported("a bert model needs tokenizer.json attached".into()))?;
    let tokenizer = BertTokenizer::from_json_bytes(tokenizer_json, config.max_position_embeddings)
        .map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
    let prefix = if header
        .get("bert.embeddings.word_embeddings.weight")
        .is_some()
    {
        "bert."
    } else {
        ""
    };
    let bytes_of = |name: &str| {
        header.get(name).map(|t| {
            (
                t,
                &file[(header.data_start + t.data_offsets.0) as usize
                    ..(header.data_start + t.data_offsets.1) as usize],
            )
        })
    };
    // A float tensor, or an int8 one with `<name>_scale` (dequantized at load).
    let float_tensor = |name: &str| -> Result<Vec<f32>, ServingError> {
        let (info, bytes) =
            bytes_of(name).ok_or_else(|| unsupported(format!("missing tensor '{name}'")))?;
        if let Some(values) = float_values(info.dtype, bytes) {
            return Ok(values);
        }
        if info.dtype == Dtype::I8 {
            if let Some((scale_info, scale_bytes)) = bytes_of(&format!("{name}_scale")) {
                let scales = float_values(scale_info.dtype, scale_bytes).unwrap_or_default();
                let rows = info.shape.first().copied().unwrap_or(1).max(1);
                let cols = bytes.len() / rows;
                return Ok(bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        f32::from(q as i8) * scales[if scales.len() == 1 { 0 } else { i / cols }]
                    })
                    .collect());
            }
        }
        Err(unsupported(format!(
            "tensor '{name}' is stored as {}, which serving cannot read",
            info.dtype.as_str()
        )))
    };
    let mut layers = HashMap::new();
    let mut int8 = false;
    let mut memory_bytes = 0usize;
    for spec in config.linear_layers(prefix) {
        let weight_name = format!("{}.weight", spec.name);
        let (info, bytes) = bytes_of(&weight_name)
            .ok_or_else(|| unsupported(format!("missing tensor '{weight_name}'")))?;
        let weights = if info.dtype == Dtype::I8 {
            let (scale_info, scale_bytes) = bytes_of(&format!("{weight_name}_scale"))
                .ok_or_else(|| unsupported(format!("'{weight_name}' is int8 without a scale")))?;
            int8 = true;
            DenseWeights::Int8 {
                q: bytes.iter().map(|&v| v as i8).collect(),
                scales: float_values(scale_info.dtype, scale_bytes)
                    .ok_or_else(|| unsupported("scale is not a float tensor".into()))?,
                zero_points: bytes_of(&format!("{weight_name}_zero_point"))
                    .map(|(_, b)| b.iter().map(|&v| v as i8).collect())
                    .unwrap_or_default(),
            }
        } else {
            DenseWeights::F32(float_values(info.dtype, bytes).ok_or_else(|| {
                unsupported(format!(
                    "'{weight_name}' is stored as {}, which serving cannot read",
                    info.dtype.as_str()
                ))
            })?)
        };
        memory_bytes += match &weights {
            DenseWeights::F32(w) => w.len() * 4,
            DenseWeights::Int8 { q, scales, .. } => q.len() + scales.len() * 4,
        };
        let bias = match bytes_of(&format!("{}.bias", spec.name)) {
            Some((t, b)) => Some(
                float_values(t.dtype, b)
                    .ok_or_else(|| unsupported("bias is not a float tensor".into()))?,
            ),
            None => None,
        };
        layers.insert(
            spec.name.clone(),
            Entry {
                weights,
                bias,
                out: spec.out,
                inp: spec.inp,
            },
        );
    }
    let mut tensors = HashMap::new();
    for (name, _) in config.other_tensors(prefix) {
        let values = float_tensor(&name)?;
        memory_bytes += values.len() * 4;
        tensors.insert(name, values);
    }
    let serving = BertServing {
        config,
        linear: ServedLinear {
            layers,
            kernels,
            int8_activations,
        },
        tensors,
        tokenizer,
        int8,
        memory_bytes,
    };
    // Fail at load, not at the first request, when something is missing or misshapen.
    BertModel::new(serving.config.clone(), &serving.linear, &serving.tensors)
        .map_err(|e| unsupported(e.to_string()))?;
    Ok(serving)
}
