//! BERT encoder forward pass for sentence embeddings (e.g. all-MiniLM-L6-v2).
//!
//! Post-LayerNorm BERT: embeddings (word + absolute position + token type 0) → LayerNorm →
//! N × [self-attention → dense → residual + LayerNorm → FFN (GELU) → residual + LayerNorm] →
//! mean pooling over the real tokens → optional L2 normalisation.
//!
//! The Linear layers go through a [`LinearBackend`], so the weights may be stored in any format
//! (f32 via [`F32Linear`], or quantized by the caller). Everything else (embeddings, LayerNorm
//! parameters) comes from a [`TensorSource`] as f32.
//!
//! Batches are *packed*, not padded: all real tokens of all sequences are stacked into one
//! `[tokens × hidden]` matrix for the Linear layers, LayerNorms and GELU (which act per token), and
//! attention only looks at the tokens of the same sequence. That is exactly what a padded batch
//! with an attention mask and masked mean pooling computes, without spending work on padding. A
//! batch gives each sequence the embedding it gets on its own, up to float rounding (the GEMM
//! kernels block and split their work by the number of rows, which changes summation order).
//!
//! Pure computation, no I/O. Attention runs its (sequence, head) pairs in parallel on the current
//! rayon pool (the caller's `install`, or rayon's global pool).

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

/// Errors from configuring or running the model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// `config.json` is not valid or lacks a field.
    #[error("invalid BERT config.json: {0}")]
    Config(String),
    /// The config describes a model this forward pass does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A required non-Linear tensor is missing from the [`TensorSource`].
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// A tensor has the wrong number of elements.
    #[error("tensor `{name}` has {got} elements, expected {expected}")]
    TensorSize {
        name: String,
        expected: usize,
        got: usize,
    },
    /// A Linear layer is missing from the [`LinearBackend`].
    #[error("missing linear layer `{0}`")]
    MissingLinear(String),
    /// A Linear layer has the wrong shape.
    #[error(
        "linear layer `{name}` is [{got_out}x{got_in}] (or has a bad bias), expected [{out}x{inp}]"
    )]
    LinearShape {
        name: String,
        out: usize,
        inp: usize,
        got_out: usize,
        got_in: usize,
    },
    /// The token ids cannot be embedded (empty sequence, too long, id out of range).
    #[error("invalid input: {0}")]
    Input(String),
    /// The Linear backend failed.
    #[error("linear backend failed on `{name}`: {message}")]
    Backend { name: String, message: String },
}

/// The feed-forward activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact GELU, `x · Φ(x)` with erf.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parses a Hugging Face `hidden_act` string.
    pub fn from_hf(name: &str) -> Result<Self, BertError> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(BertError::Unsupported(format!(
                "hidden_act `{other}` is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))),
        }
    }

    /// Applies the activation in place (GELU through `math`).
    pub fn apply(self, xs: &mut [f32], math: &crate::infer::fastmath::MathKernels) {
        match self {
            // f32 erf within 2e-7 of f64 (see `fastmath`), vectorized for the CPU.
            Self::Gelu => (math.gelu)(xs),
            Self::GeluTanh => {
                const C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
                for x in xs {
                    let v = f64::from(*x);
                    *x = (0.5 * v * (1.0 + (C * (v + 0.044715 * v * v * v)).tanh())) as f32;
                }
            }
            Self::Relu => {
                for x in xs {
                    *x = x.max(0.0);
                }
            }
        }
    }
}

/// Shape hyper-parameters of a BERT encoder, read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    pub hidden_act: Activation,
}

/// One Linear layer the forward pass calls: `y = x·Wᵀ + b` with `W` of shape `[out × inp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSpec {
    /// Weight tensor name without `.weight`, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    pub out: usize,
    pub inp: usize,
}

impl BertConfig {
    /// Parses the bytes of a Hugging Face `config.json`.
    ///
    /// Requires `model_type: "bert"`, absolute position embeddings and a supported `hidden_act`;
    /// optional fields take the Hugging Face defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BertError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| BertError::Config(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| BertError::Config("top level is not a JSON object".into()))?;
        match obj.get("model_type").and_then(|m| m.as_str()) {
            Some("bert") => {}
            Some(other) => {
                return Err(BertError::Unsupported(format!(
                    "model_type `{other}` is not supported (only `bert`)"
                )))
            }
            None => {
                return Err(BertError::Config(
                    "missing string field `model_type` (expected \"bert\")".into(),
                ))
            }
        }
        if let Some(p) = obj.get("position_embedding_type") {
            if p.as_str() != Some("absolute") {
                return Err(BertError::Unsupported(format!(
                    "position_embedding_type {p} is not supported (only \"absolute\")"
                )));
            }
        }
        if obj.get("is_decoder").and_then(|d| d.as_bool()) == Some(true) {
            return Err(BertError::Unsupported(
                "decoder BERT is not supported".into(),
            ));
        }
        let req = |key: &str| -> Result<usize, BertError> {
            let val = obj
                .get(key)
                .ok_or_else(|| BertError::Config(format!("missing field `{key}`")))?;
            let n = val.as_u64().ok_or_else(|| {
                BertError::Config(format!("field `{key}` is not a non-negative integer"))
            })?;
            if n == 0 {
                return Err(BertError::Config(format!("field `{key}` must be positive")));
            }
            usize::try_from(n).map_err(|_| BertError::Config(format!("field `{key}` is too large")))
        };
        let opt = |key: &str, default: usize| -> Result<usize, BertError> {
            if obj.contains_key(key) {
                req(key)
            } else {
                Ok(default)
            }
        };
        let layer_norm_eps = match obj.get("layer_norm_eps") {
            None => 1e-12,
            Some(e) => {
                let e = e.as_f64().ok_or_else(|| {
                    BertError::Config("field `layer_norm_eps` is not a number".into())
                })?;
                if !(e > 0.0 && e.is_finite()) {
                    return Err(BertError::Config(format!(
                        "layer_norm_eps must be positive, got {e}"
                    )));
                }
                e as f32
            }
        };
        let hidden_act =
            match obj.get("hidden_act") {
                None => Activation::Gelu,
                Some(a) => Activation::from_hf(a.as_str().ok_or_else(|| {
                    BertError::Config("field `hidden_act` is not a string".into())
                })?)?,
            };
        let cfg = Self {
            hidden_size: req("hidden_size")?,
            num_layers: req("num_hidden_layers")?,
            num_heads: req("num_attention_heads")?,
            intermediate_size: req("intermediate_size")?,
            layer_norm_eps,
            max_position_embeddings: opt("max_position_embeddings", 512)?,
            type_vocab_size: opt("type_vocab_size", 2)?,
            vocab_size: req("vocab_size")?,
            hidden_act,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_heads) {
            return Err(BertError::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size, cfg.num_heads
            )));
        }
        Ok(cfg)
    }

    /// Size of one attention head.
    /// Checks that sequence `i` can be embedded: 1..=`max_position_embeddings` ids, each inside
    /// the vocabulary.
    pub fn check_sequence(&self, i: usize, seq: &[u32]) -> Result<(), BertError> {
        if seq.is_empty() {
            return Err(BertError::Input(format!("sequence {i} is empty")));
        }
        if seq.len() > self.max_position_embeddings {
            return Err(BertError::Input(format!(
                "sequence {i} has {} tokens, more than max_position_embeddings {}",
                seq.len(),
                self.max_position_embeddings
            )));
        }
        if let Some(&bad) = seq.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(BertError::Input(format!(
                "sequence {i} has token id {bad}, outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Every Linear layer of the encoder, in forward order, with `prefix` (`""` or `"bert."`)
    /// prepended. These are the tensors a quantizer should replace (weights `NAME.weight`,
    /// biases `NAME.bias`).
    pub fn linear_layers(&self, prefix: &str) -> Vec<LinearSpec> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let mut v = Vec::with_capacity(self.num_layers * 6);
        for i in 0..self.num_layers {
            let l = format!("{prefix}encoder.layer.{i}.");
            for (suffix, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", f, h),
                ("output.dense", h, f),
            ] {
                v.push(LinearSpec {
                    name: format!("{l}{suffix}"),
                    out,
                    inp,
                });
            }
        }
        v
    }

    /// Every non-Linear tensor the forward pass reads, with its element count.
    pub fn other_tensors(&self, prefix: &str) -> Vec<(String, usize)> {
        let h = self.hidden_size;
        let mut v = vec![
            (
                format!("{prefix}embeddings.word_embeddings.weight"),
                self.vocab_size * h,
            ),
            (
                format!("{prefix}embeddings.position_embeddings.weight"),
                self.max_position_embeddings * h,
            ),
            (
                format!("{prefix}embeddings.token_type_embeddings.weight"),
                self.type_vocab_size * h,
            ),
            (format!("{prefix}embeddings.LayerNorm.weight"), h),
            (format!("{prefix}embeddings.LayerNorm.bias"), h),
        ];
        for i in 0..self.num_layers {
            for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
                for p in ["weight", "bias"] {
                    v.push((format!("{prefix}encoder.layer.{i}.{ln}.{p}"), h));
                }
            }
        }
        v
    }
}

/// How the forward pass multiplies: `y[m×n] = x[m×k]·Wᵀ + b` for the named Linear.
///
/// `x` is row-major `m×k`, `y` is row-major `m×n` and is overwritten. The backend owns the
/// weight (`[n×k]`) and the bias.
pub trait LinearBackend {
    fn linear(
        &self,
        name: &str,
        x: &[f32],
        m: usize,
        k: usize,
        n: usize,
        y: &mut [f32],
    ) -> Result<(), BertError>;

    /// Checks that the named Linear exists with weight shape `[out × inp]`. Called once by
    /// [`BertModel::new`]; the default accepts everything (errors then surface in `linear`).
    fn check_linear(&self, name: &str, out: usize, inp: usize) -> Result<(), BertError> {
        let _ = (name, out, inp);
        Ok(())
    }
}

/// Everything that is not a Linear (embeddings, LayerNorms) as f32, looked up by tensor name.
pub trait TensorSource {
    fn tensor(&self, name: &str) -> Option<&[f32]>;
}

impl TensorSource for HashMap<String, Vec<f32>> {
    fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(Vec::as_slice)
    }
}

impl TensorSource for BTreeMap<String, Vec<f32>> {
    fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(Vec::as_slice)
    }
}

struct LayerNames {
    q: String,
    k: String,
    v: String,
    attn_out: String,
    attn_ln_w: String,
    attn_ln_b: String,
    inter: String,
    out: String,
    out_ln_w: String,
    out_ln_b: String,
}

/// A BERT encoder producing mean-pooled sentence embeddings.
pub struct BertModel<'a, L: LinearBackend, T: TensorSource> {
    config: BertConfig,
    linear: &'a L,
    tensors: &'a T,
    prefix: String,
    layers: Vec<LayerNames>,
    gemm: &'static crate::infer::kernels::GemmKernels,
    math: &'static crate::infer::fastmath::MathKernels,
}

impl<'a, L: LinearBackend, T: TensorSource> BertModel<'a, L, T> {
    /// Builds the model, detecting an optional `bert.` name prefix and checking that every
    /// tensor and Linear the forward pass needs exists with the right size.
    pub fn new(config: BertConfig, linear: &'a L, tensors: &'a T) -> Result<Self, BertError> {
        let prefix = detect_prefix(tensors)?;
        for (name, expected) in config.other_tensors(&prefix) {
            let t = tensors
                .tensor(&name)
                .ok_or_else(|| BertError::MissingTensor(name.clone()))?;
            if t.len() != expected {
                return Err(BertError::TensorSize {
                    name,
                    expected,
                    got: t.len(),
                });
            }
        }
        for spec in config.linear_layers(&prefix) {
            linear.check_linear(&spec.name, spec.out, spec.inp)?;
        }
        let layers = (0..config.num_layers)
            .map(|i| {
                let l = format!("{prefix}encoder.layer.{i}.");
                LayerNames {
                    q: format!("{l}attention.self.query"),
                    k: format!("{l}attention.self.key"),
                    v: format!("{l}attention.self.value"),
                    attn_out: format!("{l}attention.output.dense"),
                    attn_ln_w: format!("{l}attention.output.LayerNorm.weight"),
                    attn_ln_b: format!("{l}attention.output.LayerNorm.bias"),
                    inter: format!("{l}intermediate.dense"),
                    out: format!("{l}output.dense"),
                    out_ln_w: format!("{l}output.LayerNorm.weight"),
                    out_ln_b: format!("{l}output.LayerNorm.bias"),
                }
            })
            .collect();
        Ok(Self {
            config,
            linear,
            tensors,
            prefix,
            layers,
            gemm: crate::infer::kernels::best(),
            math: crate::infer::fastmath::best(),
        })
    }

    /// Uses these kernel tables (attention GEMMs, GELU, softmax) instead of the best detected.
    pub fn with_kernels(
        mut self,
        gemm: &'static crate::infer::kernels::GemmKernels,
        math: &'static crate::infer::fastmath::MathKernels,
    ) -> Self {
        self.gemm = gemm;
        self.math = math;
        self
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The tensor-name prefix in use (`""` or `"bert."`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn t(&self, name: &str) -> Result<&'a [f32], BertError> {
        self.tensors
            .tensor(name)
            .ok_or_else(|| BertError::MissingTensor(name.to_string()))
    }

    fn lin(
        &self,
        name: &str,
        x: &[f32],
        m: usize,
        k: usize,
        n: usize,
        y: &mut [f32],
    ) -> Result<(), BertError> {
        debug_assert_eq!(x.len(), m * k);
        debug_assert_eq!(y.len(), m * n);
        self.linear.linear(name, x, m, k, n, y)
    }

    /// Embeds a batch of token-id sequences (each 1..=`max_position_embeddings` ids, as produced
    /// by the tokenizer including `[CLS]`/`[SEP]`); returns one `hidden_size` embedding per
    /// sequence: the mean of the last hidden states over the sequence's tokens, L2-normalised
    /// if `normalize`.
    pub fn embed(&self, batch: &[Vec<u32>], normalize: bool) -> Result<Vec<Vec<f32>>, BertError> {
        for (i, seq) in batch.iter().enumerate() {
            self.config.check_sequence(i, seq)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let offsets = packed_offsets(batch);
        let mut x = self.embeddings(batch, &offsets)?;
        let mut buffers = LayerBuffers::new(
            offsets[batch.len()],
            self.config.hidden_size,
            self.config.intermediate_size,
        );
        for names in &self.layers {
            self.encoder_layer(names, batch, &offsets, &mut x, &mut buffers)?;
        }
        Ok(mean_pool(&x, &offsets, self.config.hidden_size, normalize))
    }

    /// Word + position + token-type (0) embeddings of every token, packed, then LayerNorm.
    fn embeddings(&self, batch: &[Vec<u32>], offsets: &[usize]) -> Result<Vec<f32>, BertError> {
        let h = self.config.hidden_size;
        let p = &self.prefix;
        let word = self.t(&format!("{p}embeddings.word_embeddings.weight"))?;
        let pos = self.t(&format!("{p}embeddings.position_embeddings.weight"))?;
        let typ = self.t(&format!("{p}embeddings.token_type_embeddings.weight"))?;
        let typ0 = &typ[..h];
        let mut x = vec![0f32; offsets[batch.len()] * h];
        for (s, seq) in batch.iter().enumerate() {
            for (t, &id) in seq.iter().enumerate() {
                let row = &mut x[(offsets[s] + t) * h..(offsets[s] + t + 1) * h];
                let w = &word[id as usize * h..(id as usize + 1) * h];
                let pe = &pos[t * h..(t + 1) * h];
                for j in 0..h {
                    row[j] = w[j] + pe[j] + typ0[j];
                }
            }
        }
        layer_norm(
            &mut x,
            h,
            self.t(&format!("{p}embeddings.LayerNorm.weight"))?,
            self.t(&format!("{p}embeddings.LayerNorm.bias"))?,
            self.config.layer_norm_eps,
            self.math,
        );
        Ok(x)
    }

    /// One encoder layer over the packed hidden states `x`: self-attention (+ residual,
    /// LayerNorm), then the feed-forward block (+ residual, LayerNorm).
    fn encoder_layer(
        &self,
        names: &LayerNames,
        batch: &[Vec<u32>],
        offsets: &[usize],
        x: &mut [f32],
        buffers: &mut LayerBuffers,
    ) -> Result<(), BertError> {
        let cfg = &self.config;
        let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
        let m = offsets[batch.len()];
        let LayerBuffers {
            q,
            k,
            v,
            ctx,
            tmp,
            inter,
        } = buffers;
        self.lin(&names.q, x, m, h, h, q)?;
        self.lin(&names.k, x, m, h, h, k)?;
        self.lin(&names.v, x, m, h, h, v)?;
        self.attention(batch, offsets, q, k, v, ctx);
        self.lin(&names.attn_out, ctx, m, h, h, tmp)?;
        add_assign(x, tmp);
        layer_norm(
            x,
            h,
            self.t(&names.attn_ln_w)?,
            self.t(&names.attn_ln_b)?,
            cfg.layer_norm_eps,
            self.math,
        );
        self.lin(&names.inter, x, m, h, f, inter)?;
        // Element-wise, so split over the rayon pool in whole rows.
        inter
            .par_chunks_mut(f * PAR_ROWS)
            .for_each(|chunk| cfg.hidden_act.apply(chunk, self.math));
        self.lin(&names.out, inter, m, f, h, tmp)?;
        add_assign(x, tmp);
        layer_norm(
            x,
            h,
            self.t(&names.out_ln_w)?,
            self.t(&names.out_ln_b)?,
            cfg.layer_norm_eps,
            self.math,
        );
        Ok(())
    }

    /// Attention within each sequence, one head at a time, the (sequence, head) pairs in
    /// parallel on the current rayon pool: scores = Q_h·K_hᵀ / sqrt(d), P = softmax(scores),
    /// ctx_h = P·V_h, written into `ctx` at the head's columns.
    fn attention(
        &self,
        batch: &[Vec<u32>],
        offsets: &[usize],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ctx: &mut [f32],
    ) {
        let h = self.config.hidden_size;
        let max_len = batch.iter().map(Vec::len).max().unwrap_or(0);
        let nh = self.config.num_heads;
        let d = self.config.head_dim();
        let scale = 1.0 / (d as f32).sqrt();
        let kernels = (self.gemm, self.math);
        let heads: Vec<Vec<f32>> = (0..batch.len() * nh)
            .into_par_iter()
            .map_init(
                || AttentionScratch::new(max_len, d),
                |scratch, pair| {
                    let (s, head) = (pair / nh, pair % nh);
                    let (o, len) = (offsets[s], offsets[s + 1] - offsets[s]);
                    scratch.head(q, k, v, o, len, head * d, h, d, scale, kernels)
                },
            )
            .collect();
        for (pair, ch) in heads.iter().enumerate() {
            let (s, head) = (pair / nh, pair % nh);
            let (o, len) = (offsets[s], offsets[s + 1] - offsets[s]);
            for i in 0..len {
                let dst = (o + i) * h + head * d;
                ctx[dst..dst + d].copy_from_slice(&ch[i * d..(i + 1) * d]);
            }
        }
    }
}

/// Packed layout of a batch: sequence `s` occupies rows `offsets[s]..offsets[s + 1]`.
fn packed_offsets(batch: &[Vec<u32>]) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(batch.len() + 1);
    offsets.push(0usize);
    for seq in batch {
        offsets.push(offsets.last().copied().unwrap_or(0) + seq.len());
    }
    offsets
}

/// Mean pooling of each sequence's rows of `x` (+ optional L2 normalisation), accumulated in
/// f64.
fn mean_pool(x: &[f32], offsets: &[usize], h: usize, normalize: bool) -> Vec<Vec<f32>> {
    let n = offsets.len() - 1;
    let mut out = Vec::with_capacity(n);
    let mut acc = vec![0f64; h];
    for s in 0..n {
        acc.fill(0.0);
        let (o, len) = (offsets[s], offsets[s + 1] - offsets[s]);
        for row in x[o * h..(o + len) * h].chunks_exact(h) {
            for (a, &b) in acc.iter_mut().zip(row) {
                *a += f64::from(b);
            }
        }
        let inv_len = 1.0 / len as f64;
        for a in acc.iter_mut() {
            *a *= inv_len;
        }
        if normalize {
            let norm = acc.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            for a in acc.iter_mut() {
                *a /= norm;
            }
        }
        out.push(acc.iter().map(|&a| a as f32).collect());
    }
    out
}

/// The activations of one encoder layer, allocated once per batch and reused by every layer.
struct LayerBuffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
}

impl LayerBuffers {
    fn new(m: usize, h: usize, f: usize) -> Self {
        LayerBuffers {
            q: vec![0f32; m * h],
            k: vec![0f32; m * h],
            v: vec![0f32; m * h],
            ctx: vec![0f32; m * h],
            tmp: vec![0f32; m * h],
            inter: vec![0f32; m * f],
        }
    }
}

/// Per-thread buffers for one attention head of one sequence.
struct AttentionScratch {
    qh: Vec<f32>,
    kh: Vec<f32>,
    vt: Vec<f32>,
    scores: Vec<f32>,
}

impl AttentionScratch {
    fn new(max_len: usize, d: usize) -> Self {
        AttentionScratch {
            qh: vec![0f32; max_len * d],
            kh: vec![0f32; max_len * d],
            vt: vec![0f32; max_len * d],
            scores: vec![0f32; max_len * max_len],
        }
    }

    /// `softmax(Q_h·K_hᵀ · scale) · V_h` for the `len` rows from `o`, head columns `c0..c0 + d`
    /// of the `[tokens × h]` matrices; returns `[len × d]`.
    #[allow(clippy::too_many_arguments)]
    fn head(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: usize,
        len: usize,
        c0: usize,
        h: usize,
        d: usize,
        scale: f32,
        (gemm, math): (
            &crate::infer::kernels::GemmKernels,
            &crate::infer::fastmath::MathKernels,
        ),
    ) -> Vec<f32> {
        for i in 0..len {
            let src = (o + i) * h + c0;
            self.qh[i * d..(i + 1) * d].copy_from_slice(&q[src..src + d]);
            self.kh[i * d..(i + 1) * d].copy_from_slice(&k[src..src + d]);
            for c in 0..d {
                self.vt[c * len + i] = v[src + c];
            }
        }
        let sc = &mut self.scores[..len * len];
        (gemm.gemm_f32)(&self.qh[..len * d], &self.kh[..len * d], len, len, d, sc);
        (math.softmax_rows)(sc, len, scale);
        let mut ch = vec![0f32; len * d];
        (gemm.gemm_f32)(sc, &self.vt[..d * len], len, d, len, &mut ch);
        ch
    }
}

/// Finds the tensor-name prefix: `""` if `embeddings.word_embeddings.weight` exists, `"bert."`
/// if `bert.embeddings.word_embeddings.weight` does.
pub fn detect_prefix<T: TensorSource + ?Sized>(tensors: &T) -> Result<String, BertError> {
    for p in ["", "bert."] {
        if tensors
            .tensor(&format!("{p}embeddings.word_embeddings.weight"))
            .is_some()
        {
            return Ok(p.to_string());
        }
    }
    Err(BertError::MissingTensor(
        "embeddings.word_embeddings.weight (also tried with a `bert.` prefix)".into(),
    ))
}

/// Rows per parallel task of the element-wise steps (residual adds, LayerNorm, GELU).
const PAR_ROWS: usize = 64;

fn add_assign(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| {
            for (a, &b) in x.iter_mut().zip(y) {
                *a += b;
            }
        });
}

/// Row-wise LayerNorm in place (`fastmath`'s f32 kernel), rows split over the rayon pool.
fn layer_norm(
    x: &mut [f32],
    h: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    math: &crate::infer::fastmath::MathKernels,
) {
    x.par_chunks_mut(h * PAR_ROWS)
        .for_each(|rows| (math.layer_norm_rows)(rows, h, gamma, beta, eps));
}

struct F32Entry {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    out: usize,
    inp: usize,
}

/// A plain f32 [`LinearBackend`]: `[out × inp]` weights (PyTorch layout) and biases by name.
#[derive(Default)]
pub struct F32Linear {
    layers: HashMap<String, F32Entry>,
}

impl std::fmt::Debug for F32Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("F32Linear")
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl F32Linear {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a Linear: `weight` is row-major `[out × inp]`, `bias` has `out`
    /// elements. Sizes are validated by [`LinearBackend::check_linear`] / `linear`.
    pub fn insert(
        &mut self,
        name: String,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        out: usize,
        inp: usize,
    ) {
        self.layers.insert(
            name,
            F32Entry {
                weight,
                bias,
                out,
                inp,
            },
        );
    }

    /// Number of Linear layers held.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no Linear layer is held.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    fn entry(&self, name: &str, out: usize, inp: usize) -> Result<&F32Entry, BertError> {
        let e = self
            .layers
            .get(name)
            .ok_or_else(|| BertError::MissingLinear(name.to_string()))?;
        let ok = e.out == out
            && e.inp == inp
            && e.weight.len() == out * inp
            && e.bias.as_ref().is_none_or(|b| b.len() == out);
        if !ok {
            return Err(BertError::LinearShape {
                name: name.to_string(),
                out,
                inp,
                got_out: e.out,
                got_in: e.inp,
            });
        }
        Ok(e)
    }
}

impl LinearBackend for F32Linear {
    fn linear(
        &self,
        name: &str,
        x: &[f32],
        m: usize,
        k: usize,
        n: usize,
        y: &mut [f32],
    ) -> Result<(), BertError> {
        let e = self.entry(name, n, k)?;
        if x.len() != m * k || y.len() != m * n {
            return Err(BertError::Backend {
                name: name.to_string(),
                message: format!(
                    "buffer sizes x={} y={} do not match m={m} k={k} n={n}",
                    x.len(),
                    y.len()
                ),
            });
        }
        crate::infer::kernels::linear_f32(
            crate::infer::kernels::best(),
            x,
            m,
            k,
            &e.weight,
            n,
            e.bias.as_deref(),
            y,
        );
        Ok(())
    }

    fn check_linear(&self, name: &str, out: usize, inp: usize) -> Result<(), BertError> {
        self.entry(name, out, inp).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// erf (f64), ported from FreeBSD msun s_erf.c (via the `libm` crate).
//
// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
// Developed at SunPro, a Sun Microsystems, Inc. business.
// Permission to use, copy, modify, and distribute this software is freely granted, provided
// that this notice is preserved.
// ---------------------------------------------------------------------------------------------

#[allow(clippy::excessive_precision)]
mod msun {
    pub(super) const ERX: f64 = 8.45062911510467529297e-01;
    pub(super) const EFX8: f64 = 1.02703333676410069053e+00;
    pub(super) const PP0: f64 = 1.28379167095512558561e-01;
    pub(super) const PP1: f64 = -3.25042107247001499370e-01;
    pub(super) const PP2: f64 = -2.84817495755985104766e-02;
    pub(super) const PP3: f64 = -5.77027029648944159157e-03;
    pub(super) const PP4: f64 = -2.37630166566501626084e-05;
    pub(super) const QQ1: f64 = 3.97917223959155352819e-01;
    pub(super) const QQ2: f64 = 6.50222499887672944485e-02;
    pub(super) const QQ3: f64 = 5.08130628187576562776e-03;
    pub(super) const QQ4: f64 = 1.32494738004321644526e-04;
    pub(super) const QQ5: f64 = -3.96022827877536812320e-06;
    pub(super) const PA0: f64 = -2.36211856075265944077e-03;
    pub(super) const PA1: f64 = 4.14856118683748331666e-01;
    pub(super) const PA2: f64 = -3.72207876035701323847e-01;
    pub(super) const PA3: f64 = 3.18346619901161753674e-01;
    pub(super) const PA4: f64 = -1.10894694282396677476e-01;
    pub(super) const PA5: f64 = 3.54783043256182359371e-02;
    pub(super) const PA6: f64 = -2.16637559486879084300e-03;
    pub(super) const QA1: f64 = 1.06420880400844228286e-01;
    pub(super) const QA2: f64 = 5.40397917702171048937e-01;
    pub(super) const QA3: f64 = 7.18286544141962662868e-02;
    pub(super) const QA4: f64 = 1.26171219808761642112e-01;
    pub(super) const QA5: f64 = 1.36370839120290507362e-02;
    pub(super) const QA6: f64 = 1.19844998467991074170e-02;
    pub(super) const RA0: f64 = -9.86494403484714822705e-03;
    pub(super) const RA1: f64 = -6.93858572707181764372e-01;
    pub(super) const RA2: f64 = -1.05586262253232909814e+01;
    pub(super) const RA3: f64 = -6.23753324503260060396e+01;
    pub(super) const RA4: f64 = -1.62396669462573470355e+02;
    pub(super) const RA5: f64 = -1.84605092906711035994e+02;
    pub(super) const RA6: f64 = -8.12874355063065934246e+01;
    pub(super) const RA7: f64 = -9.81432934416914548592e+00;
    pub(super) const SA1: f64 = 1.96512716674392571292e+01;
    pub(super) const SA2: f64 = 1.37657754143519042600e+02;
    pub(super) const SA3: f64 = 4.34565877475229228821e+02;
    pub(super) const SA4: f64 = 6.45387271733267880336e+02;
    pub(super) const SA5: f64 = 4.29008140027567833386e+02;
    pub(super) const SA6: f64 = 1.08635005541779435134e+02;
    pub(super) const SA7: f64 = 6.57024977031928170135e+00;
    pub(super) const SA8: f64 = -6.04244152148580987438e-02;
    pub(super) const RB0: f64 = -9.86494292470009928597e-03;
    pub(super) const RB1: f64 = -7.99283237680523006574e-01;
    pub(super) const RB2: f64 = -1.77579549177547519889e+01;
    pub(super) const RB3: f64 = -1.60636384855821916062e+02;
    pub(super) const RB4: f64 = -6.37566443368389627722e+02;
    pub(super) const RB5: f64 = -1.02509513161107724954e+03;
    pub(super) const RB6: f64 = -4.83519191608651397019e+02;
    pub(super) const SB1: f64 = 3.03380607434824582924e+01;
    pub(super) const SB2: f64 = 3.25792512996573918826e+02;
    pub(super) const SB3: f64 = 1.53672958608443695994e+03;
    pub(super) const SB4: f64 = 3.19985821950859553908e+03;
    pub(super) const SB5: f64 = 2.55305040643316442583e+03;
    pub(super) const SB6: f64 = 4.74528541206955367215e+02;
    pub(super) const SB7: f64 = -2.24409524465858183362e+01;
}
use msun::*;

/// erfc(|x|) for 0.84375 <= |x| < 28.
fn erfc_mid(ax: f64) -> f64 {
    if ax < 1.25 {
        let s = ax - 1.0;
        let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
        let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
        return 1.0 - ERX - p / q;
    }
    let s = 1.0 / (ax * ax);
    let (r, big_s) = if ax < 1.0 / 0.35 {
        (
            RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
            1.0 + s
                * (SA1
                    + s * (SA2
                        + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
        )
    } else {
        (
            RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
            1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
        )
    };
    // z = ax with the low 32 bits cleared, so that z*z is exact.
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / big_s).exp() / ax
}

/// The error function, accurate to about 1 ulp in f64 (FreeBSD msun algorithm).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax < 0.84375 {
        if ax < 3.725_290_298_461_914e-9 {
            // |x| < 2^-28
            return 0.125 * (8.0 * x + EFX8 * x);
        }
        let z = x * x;
        let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        return x + x * (r / s);
    }
    let y = if ax < 6.0 { 1.0 - erfc_mid(ax) } else { 1.0 };
    if x < 0.0 {
        -y
    } else {
        y
    }
}
