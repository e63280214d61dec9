//! Loading a `bert` model for serving: Linear weights as stored (f32, or kept quantized: int8,
//! int4, q8_0, q4_0, q4_1; see `serving::weights`), the other tensors as f32, and the tokenizer
//! from `tokenizer.json`.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::dispatch::Dispatch;
use crate::infer::bert::{BertConfig, BertError, BertModel, LinearBackend};
use crate::infer::kernels::blocks::BlockActs;
use crate::infer::kernels::{linear_f32, linear_i8, GemmKernels};
use crate::infer::mlp::DenseWeights;
use crate::infer::tokenize::BertTokenizer;

use super::weights::{Int8Mode, LoadReport, WeightFile};
use super::ServingError;

struct Entry {
    weights: DenseWeights,
    bias: Option<Vec<f32>>,
    out: usize,
    inp: usize,
}

/// The Linear layers of a served BERT, each f32, per-row int8 or block-quantized.
pub struct ServedLinear {
    layers: HashMap<String, Entry>,
    kernels: &'static GemmKernels,
}

impl ServedLinear {
    /// Output columns `j0..j1` of `x[m×k]·Wᵀ + b` into `y[m × (j1 - j0)]`, on the calling thread.
    #[allow(clippy::too_many_arguments)]
    fn linear_cols(
        &self,
        entry: &Entry,
        x: &[f32],
        m: usize,
        k: usize,
        j0: usize,
        j1: usize,
        y: &mut [f32],
    ) {
        let n = j1 - j0;
        let bias = entry.bias.as_deref().map(|b| &b[j0..j1]);
        match &entry.weights {
            DenseWeights::F32(w) => {
                linear_f32(self.kernels, x, m, k, &w[j0 * k..j1 * k], n, bias, y)
            }
            // int8 / q8_0 / int4 / q4_0 / q4_1 blocks × activations quantized per 32-element
            // block: exact integer block sums, one scale multiply per block.
            DenseWeights::Blocks(matrix) => {
                // The quantized-activation buffers are reused per thread across calls.
                thread_local! {
                    static ACTS: std::cell::RefCell<BlockActs> = std::cell::RefCell::new(BlockActs::new());
                }
                ACTS.with_borrow_mut(|acts| {
                    matrix.linear_range(self.kernels, x, m, j0, j1, bias, acts, y)
                });
            }
            // Symmetric per-channel int8 loaded for per-row activation scales
            // (`QUANTD_INT8_ACTIVATIONS`): exact i32 accumulation, one dequantizing multiply per
            // output.
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } if zero_points.is_empty() && scales.len() == entry.out => {
                let (mut aq, mut ascales, mut acc) = (Vec::new(), Vec::new(), Vec::new());
                linear_i8(
                    self.kernels,
                    x,
                    m,
                    k,
                    &q[j0 * k..j1 * k],
                    &scales[j0..j1],
                    n,
                    bias,
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
                // Asymmetric or per-tensor int8 whose width is not a multiple of 32: the weights
                // stay int8 in memory and are decoded per call into an f32 scratch matrix (O(n·k),
                // small next to the O(m·n·k) GEMM that follows).
                let mut decoded = vec![0f32; n * k];
                for (row, j) in decoded.chunks_exact_mut(k).zip(j0..j1) {
                    let index = if scales.len() == 1 { 0 } else { j };
                    let zero = zero_points.get(index).map_or(0.0, |&z| f32::from(z));
                    let scale = scales[index];
                    for (value, &qv) in row.iter_mut().zip(&q[j * k..(j + 1) * k]) {
                        *value = (f32::from(qv) - zero) * scale;
                    }
                }
                linear_f32(self.kernels, x, m, k, &decoded, n, bias, y);
            }
        }
    }
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
        // Spread the work over the current rayon pool (the serving compute pool). Many rows:
        // contiguous blocks of rows of x and y (at least 16 rows each, so that the kernels'
        // register tiles stay full; every part streams all the weights). Few rows (short
        // requests, memory-bound): blocks of output columns, so that each thread streams only
        // its share of the weights; the parts are then interleaved into y.
        let threads = rayon::current_num_threads();
        let row_parts = threads.min(m / 16).max(1);
        if row_parts > 1 {
            let rows = m.div_ceil(row_parts);
            y.par_chunks_mut(rows * n)
                .zip(x.par_chunks(rows * k))
                .for_each(|(y_part, x_part)| {
                    self.linear_cols(entry, x_part, x_part.len() / k, k, 0, n, y_part)
                });
        } else if threads > 1 && m > 0 && n >= 64 * threads {
            // Column ranges in multiples of 32 rows of W.
            let cols = n.div_ceil(threads).div_ceil(32) * 32;
            let parts: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(cols))
                .into_par_iter()
                .map(|part| {
                    let (j0, j1) = (part * cols, ((part + 1) * cols).min(n));
                    let mut out = vec![0f32; m * (j1 - j0)];
                    self.linear_cols(entry, x, m, k, j0, j1, &mut out);
                    (j0, out)
                })
                .collect();
            for (j0, out) in parts {
                let width = out.len() / m;
                for (y_row, out_row) in y.chunks_exact_mut(n).zip(out.chunks_exact(width)) {
                    y_row[j0..j0 + width].copy_from_slice(out_row);
                }
            }
        } else {
            self.linear_cols(entry, x, m, k, 0, n, y);
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
    pub memory_bytes: usize,
    /// The kernel tables the encoder runs (GEMMs, GELU, softmax, LayerNorm).
    dispatch: &'static Dispatch,
}

impl std::fmt::Debug for BertServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertServing")
            .field("hidden_size", &self.config.hidden_size)
            .field("memory_bytes", &self.memory_bytes)
            .finish_non_exhaustive()
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
            .map_err(|e| ServingError::internal("assembling the loaded bert model", e))?
            .with_kernels(self.dispatch.gemm, self.dispatch.math);
        model.embed(batch, normalize).map_err(|e| match e {
            BertError::Input(message) => ServingError::BadInput(message),
            other => ServingError::internal("embedding a batch", other),
        })
    }
}

/// Builds a served BERT from a mapped weights file (blocking; worker pool).
pub fn load_bert(
    file: &WeightFile<'_>,
    config_bytes: &[u8],
    tokenizer_json: Option<&[u8]>,
    dispatch: &'static Dispatch,
    int8: Int8Mode,
    report: &mut LoadReport,
) -> Result<BertServing, ServingError> {
    let unsupported = |message: String| ServingError::Unsupported(message);
    let config = BertConfig::from_json(config_bytes).map_err(|e| unsupported(e.to_string()))?;
    let tokenizer_json = tokenizer_json
        .ok_or_else(|| unsupported("a bert model needs tokenizer.json attached".into()))?;
    let tokenizer = BertTokenizer::from_json_bytes(tokenizer_json, config.max_position_embeddings)
        .map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
    let prefix = if file.has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let mut layers = HashMap::new();
    let mut memory_bytes = 0usize;
    for spec in config.linear_layers(prefix) {
        let weights = file.linear(&spec.name, spec.out, spec.inp, int8, report)?;
        memory_bytes += weights.memory_bytes();
        let bias = file.float(&format!("{}.bias", spec.name))?;
        memory_bytes += bias.as_ref().map_or(0, |b| b.len() * 4);
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
        let values = file
            .float(&name)?
            .ok_or_else(|| unsupported(format!("missing tensor '{name}'")))?;
        memory_bytes += values.len() * 4;
        tensors.insert(name, values);
    }
    let serving = BertServing {
        config,
        linear: ServedLinear {
            layers,
            kernels: dispatch.gemm,
        },
        tensors,
        tokenizer,
        memory_bytes,
        dispatch,
    };
    // Fail at load, not at the first request, when something is missing or misshapen.
    BertModel::new(serving.config.clone(), &serving.linear, &serving.tensors)
        .map_err(|e| unsupported(e.to_string()))?;
    Ok(serving)
}
