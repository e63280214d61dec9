//! The `mlp` architecture: a sequential stack of dense layers described by a quantd config.
//!
//! ```json
//! {"model_type": "mlp",
//!  "layers": [{"name": "fc1", "activation": "relu"},
//!             {"name": "fc2", "activation": "relu"},
//!             {"name": "fc3", "activation": "identity"}],
//!  "softmax": false}
//! ```
//! Layer `name` reads the weight `<name>.weight` (`[out, in]`, as `torch.nn.Linear` saves it) and
//! the optional bias `<name>.bias` (`[out]`); each layer's `in` must equal the previous `out`.
//! Activations: `relu`, `gelu` (erf), `gelu_tanh`, `tanh`, `sigmoid`, `silu`, `identity`.
//! `softmax: true` turns the last layer's output into probabilities.
//!
//! Weights stay in the form the file stores them: f32, or int8 with per-row (or per-tensor)
//! scales and optional zero points (compressed-tensors `int-quantized`), dequantized on the fly
//! inside the dot product. Pure code: the caller runs it on a worker thread.

use serde::Deserialize;

/// Errors building or running an MLP; all are the client's (bad config or input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlpError {
    #[error("config.json is not a valid mlp config: {0}")]
    Config(String),
    #[error("layer '{layer}': {reason}")]
    Layer { layer: String, reason: String },
    #[error("input has {got} features per row, the model expects {expected}")]
    InputWidth { expected: usize, got: usize },
    #[error("input value {index} is not finite (NaN or infinite)")]
    NonFiniteInput { index: usize },
    /// A layer's output (before or after its activation) left f32's range: the input's
    /// magnitudes are too large for this model, and any number we returned would be meaningless.
    #[error("layer '{layer}' overflowed f32 on input row {row}: the input values are too large for this model")]
    Overflow { layer: String, row: usize },
}

/// Elementwise activations of the `mlp` architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    GeluTanh,
    Tanh,
    Sigmoid,
    Silu,
    Identity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerConfig {
    name: String,
    #[serde(default = "identity")]
    activation: Activation,
}

fn identity() -> Activation {
    Activation::Identity
}

/// The parsed `config.json` of an `mlp` model.
#[derive(Debug, Clone, Deserialize)]
pub struct MlpConfig {
    layers: Vec<LayerConfig>,
    #[serde(default)]
    softmax: bool,
}

impl MlpConfig {
    /// Parses the `mlp` fields of a config.json value (other keys such as `model_type` or
    /// `quantization_config` are ignored).
    pub fn from_value(config: &serde_json::Value) -> Result<Self, MlpError> {
        let layers = config
            .get("layers")
            .ok_or_else(|| MlpError::Config("missing 'layers'".into()))?;
        let layers: Vec<LayerConfig> =
            serde_json::from_value(layers.clone()).map_err(|e| MlpError::Config(e.to_string()))?;
        if layers.is_empty() {
            return Err(MlpError::Config("'layers' is empty".into()));
        }
        let softmax = match config.get("softmax") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(MlpError::Config("'softmax' must be true or false".into())),
        };
        Ok(MlpConfig { layers, softmax })
    }

    /// Whether the output is turned into probabilities.
    pub fn softmax(&self) -> bool {
        self.softmax
    }

    /// `(layer name, activation)` in order.
    pub fn layers(&self) -> impl Iterator<Item = (&str, Activation)> {
        self.layers.iter().map(|l| (l.name.as_str(), l.activation))
    }
}

/// A dense layer's weights as stored.
#[derive(Debug, Clone)]
pub enum DenseWeights {
    F32(Vec<f32>),
    /// int8 `[out, in]` with one scale per row (or one for all) and optional zero points.
    Int8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        zero_points: Vec<i8>,
    },
    /// Block-quantized (int8 / q8_0 / int4 / q4_0 / q4_1), run with int8 activations quantized
    /// per 32-element block (see [`crate::infer::matrix`]).
    Blocks(crate::infer::matrix::BlockMatrix),
}

impl DenseWeights {
    /// How the weights are held in memory: `f32`, `int8` (per-row codes), or the block format's
    /// source name (`int8`, `q8_0`, `int4`, `q4_0`, `q4_1`).
    pub fn held_as(&self) -> &'static str {
        match self {
            DenseWeights::F32(_) => "f32",
            DenseWeights::Int8 { .. } => "int8",
            DenseWeights::Blocks(matrix) => matrix.stored_as,
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        match self {
            DenseWeights::F32(w) => w.len() * 4,
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } => q.len() + scales.len() * 4 + zero_points.len(),
            DenseWeights::Blocks(matrix) => matrix.memory_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DenseLayer {
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    pub weights: DenseWeights,
    pub bias: Option<Vec<f32>>,
    pub activation: Activation,
}

impl DenseLayer {
    fn check(&self) -> Result<(), MlpError> {
        let fail = |reason: String| MlpError::Layer {
            layer: self.name.clone(),
            reason,
        };
        let n = self.inputs * self.outputs;
        match &self.weights {
            DenseWeights::F32(w) if w.len() != n => {
                return Err(fail(format!("weight has {} values, expected {n}", w.len())))
            }
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } => {
                if q.len() != n {
                    return Err(fail(format!("weight has {} values, expected {n}", q.len())));
                }
                if scales.len() != 1 && scales.len() != self.outputs {
                    return Err(fail(format!(
                        "{} scales for {} rows",
                        scales.len(),
                        self.outputs
                    )));
                }
                if !zero_points.is_empty() && zero_points.len() != scales.len() {
                    return Err(fail("zero points do not match the scales".into()));
                }
            }
            DenseWeights::Blocks(matrix) if matrix.n != self.outputs || matrix.k != self.inputs => {
                return Err(fail(format!(
                    "weight is [{}x{}], expected [{}x{}]",
                    matrix.n, matrix.k, self.outputs, self.inputs
                )))
            }
            _ => {}
        }
        if let Some(bias) = &self.bias {
            if bias.len() != self.outputs {
                return Err(fail(format!(
                    "bias has {} values, expected {}",
                    bias.len(),
                    self.outputs
                )));
            }
        }
        Ok(())
    }

    /// Bytes the weights occupy in memory.
    pub fn weight_bytes(&self) -> usize {
        self.weights.memory_bytes() + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }

    /// `y = x · Wᵀ + b` for `rows` input rows, then the activation. Block-quantized weights run
    /// through the block kernels on the whole batch; f32 and per-row int8 weights row by row in
    /// plain f32 (the reference arithmetic).
    ///
    /// The result is checked at the layer boundary, before the activation (`tanh`, `sigmoid` or
    /// ReLU would turn an infinity or NaN into a plausible 1 or 0) and after it: a non-finite
    /// value is [`MlpError::Overflow`]. `bound` is [`overflow_bound`] of block weights.
    fn forward_batch(
        &self,
        kernels: &crate::infer::kernels::GemmKernels,
        x: &[f32],
        rows: usize,
        bound: OverflowBound,
        y: &mut [f32],
    ) -> Result<(), MlpError> {
        if let DenseWeights::Blocks(matrix) = &self.weights {
            self.check_block_overflow(matrix, x, bound)?;
            let mut acts = crate::infer::kernels::blocks::BlockActs::new();
            matrix.linear(kernels, x, rows, self.bias.as_deref(), &mut acts, y);
        } else {
            for (x_row, y_row) in x
                .chunks_exact(self.inputs)
                .zip(y.chunks_exact_mut(self.outputs))
            {
                self.linear_row(x_row, y_row);
            }
        }
        self.check_finite(y)?;
        for value in y.iter_mut() {
            *value = activate(self.activation, *value);
        }
        self.check_finite(y)
    }

    /// [`MlpError::Overflow`] naming the first row of `y` holding a non-finite value.
    fn check_finite(&self, y: &[f32]) -> Result<(), MlpError> {
        match y.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(MlpError::Overflow {
                layer: self.name.clone(),
                row: index / self.outputs.max(1),
            }),
            None => Ok(()),
        }
    }

    /// The block kernels quantize each 32-element block of activations with the scale
    /// `absmax / 127`, which stays finite for any finite input, and then multiply small
    /// integers: they can return finite numbers where the layer's real value `x · Wᵀ + b` is
    /// beyond f32 (and the f32 arithmetic would give infinity). So a row whose outputs could
    /// come near f32's limit (by [`OverflowBound`]: never for sane inputs) is computed exactly in
    /// f64 from the dequantized weights, and refused if any output is beyond f32.
    fn check_block_overflow(
        &self,
        matrix: &crate::infer::matrix::BlockMatrix,
        x: &[f32],
        bound: OverflowBound,
    ) -> Result<(), MlpError> {
        let limit = f64::from(f32::MAX) / 2.0;
        let mut dequantized: Option<Vec<f32>> = None;
        for (row, x_row) in x.chunks_exact(self.inputs).enumerate() {
            let absmax = x_row.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            if absmax * bound.weights + bound.bias <= limit {
                continue;
            }
            let weights = dequantized.get_or_insert_with(|| matrix.dequantize());
            for (output, w_row) in weights.chunks_exact(self.inputs).enumerate() {
                let bias = self.bias.as_ref().map_or(0.0, |b| f64::from(b[output]));
                let exact = w_row
                    .iter()
                    .zip(x_row)
                    .map(|(&w, &v)| f64::from(w) * f64::from(v))
                    .sum::<f64>()
                    + bias;
                // `exact` is finite (finite inputs and weights): only its size matters.
                if exact.abs() > f64::from(f32::MAX) {
                    return Err(MlpError::Overflow {
                        layer: self.name.clone(),
                        row,
                    });
                }
            }
        }
        Ok(())
    }

    /// `y = x · Wᵀ + b` for one input row (f32 and per-row int8 weights).
    fn linear_row(&self, x: &[f32], y: &mut [f32]) {
        match &self.weights {
            DenseWeights::Blocks(_) => unreachable!("forward_batch runs block weights"),
            DenseWeights::F32(w) => {
                for (o, out) in y.iter_mut().enumerate() {
                    let row = &w[o * self.inputs..(o + 1) * self.inputs];
                    *out = row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
                }
            }
            DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            } => {
                for (o, out) in y.iter_mut().enumerate() {
                    let index = if scales.len() == 1 { 0 } else { o };
                    let zero = zero_points.get(index).map_or(0.0, |&z| f32::from(z));
                    let row = &q[o * self.inputs..(o + 1) * self.inputs];
                    // Σ (q - z)·x·s = s·(Σ q·x − z·Σ x): the scale is applied once per row.
                    let dot: f32 = row.iter().zip(x).map(|(&a, &b)| f32::from(a) * b).sum();
                    let correction = if zero == 0.0 {
                        0.0
                    } else {
                        zero * x.iter().sum::<f32>()
                    };
                    *out = (dot - correction) * scales[index];
                }
            }
        }
        if let Some(bias) = &self.bias {
            for (out, b) in y.iter_mut().zip(bias) {
                *out += b;
            }
        }
    }
}

/// How large a block-quantized layer's outputs can get: every output is at most
/// `max |x| · weights + bias` in magnitude.
#[derive(Debug, Clone, Copy, Default)]
struct OverflowBound {
    /// `max_j Σ_i |w_ji|` (the largest L1 norm of a dequantized weight row), in f64.
    weights: f64,
    /// `max_j |b_j|`.
    bias: f64,
}

/// The [`OverflowBound`] of block-quantized weights; zero for other weights (their f32
/// arithmetic overflows by itself and is caught by the finite check).
fn overflow_bound(layer: &DenseLayer) -> OverflowBound {
    let DenseWeights::Blocks(matrix) = &layer.weights else {
        return OverflowBound::default();
    };
    let weights = matrix
        .dequantize()
        .chunks_exact(layer.inputs.max(1))
        .map(|row| row.iter().map(|w| f64::from(w.abs())).sum::<f64>())
        .fold(0.0, f64::max);
    let bias = layer
        .bias
        .iter()
        .flatten()
        .map(|b| f64::from(b.abs()))
        .fold(0.0, f64::max);
    OverflowBound { weights, bias }
}

/// erf with ~1e-7 relative accuracy (Abramowitz–Stegun 7.1.28-style would not do; this is the
/// classic Numerical Recipes `erfc` Chebyshev fit, fractional error < 1.2e-7), in f64.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

pub fn activate(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => {
            (0.5 * f64::from(x) * (1.0 + erf(f64::from(x) / std::f64::consts::SQRT_2))) as f32
        }
        Activation::GeluTanh => {
            let x64 = f64::from(x);
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044_715 * x64.powi(3));
            (0.5 * x64 * (1.0 + inner.tanh())) as f32
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Identity => x,
    }
}

/// A loaded MLP.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub layers: Vec<DenseLayer>,
    pub softmax: bool,
    /// Kernels for block-quantized layers (the best detected unless set).
    pub kernels: &'static crate::infer::kernels::GemmKernels,
    /// Per layer, [`overflow_bound`] of its weights (computed once, at load).
    overflow_bounds: Vec<OverflowBound>,
}

impl Mlp {
    /// Checks the layer chain (shapes, widths) and builds the model.
    pub fn new(layers: Vec<DenseLayer>, softmax: bool) -> Result<Self, MlpError> {
        for layer in &layers {
            layer.check()?;
        }
        for pair in layers.windows(2) {
            if pair[1].inputs != pair[0].outputs {
                return Err(MlpError::Layer {
                    layer: pair[1].name.clone(),
                    reason: format!(
                        "takes {} inputs but '{}' gives {}",
                        pair[1].inputs, pair[0].name, pair[0].outputs
                    ),
                });
            }
        }
        if layers.is_empty() {
            return Err(MlpError::Config("no layers".into()));
        }
        let overflow_bounds = layers.iter().map(overflow_bound).collect();
        Ok(Mlp {
            layers,
            softmax,
            kernels: crate::infer::kernels::best(),
            overflow_bounds,
        })
    }

    pub fn input_width(&self) -> usize {
        self.layers[0].inputs
    }

    pub fn output_width(&self) -> usize {
        self.layers.last().expect("at least one layer").outputs
    }

    pub fn weight_bytes(&self) -> usize {
        self.layers.iter().map(DenseLayer::weight_bytes).sum()
    }

    /// Runs `rows` inputs of `input_width()` values each; returns `rows × output_width()`, every
    /// value finite. Non-finite inputs are refused ([`MlpError::NonFiniteInput`]); an input
    /// that drives any layer beyond f32 is [`MlpError::Overflow`], never a plausible number.
    pub fn forward(&self, input: &[f32], rows: usize) -> Result<Vec<f32>, MlpError> {
        let width = self.input_width();
        if rows == 0 || rows.checked_mul(width) != Some(input.len()) {
            return Err(MlpError::InputWidth {
                expected: width,
                got: input.len().checked_div(rows).unwrap_or(0),
            });
        }
        if let Some(index) = input.iter().position(|v| !v.is_finite()) {
            return Err(MlpError::NonFiniteInput { index });
        }
        let kernels = self.kernels;
        let mut current = input.to_vec();
        for (layer, &bound) in self.layers.iter().zip(&self.overflow_bounds) {
            let mut next = vec![0f32; rows * layer.outputs];
            layer.forward_batch(kernels, &current, rows, bound, &mut next)?;
            current = next;
        }
        let mut output = current;
        if self.softmax {
            for out in output.chunks_exact_mut(self.output_width()) {
                let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = out
                    .iter_mut()
                    .map(|v| {
                        *v = (*v - max).exp();
                        *v
                    })
                    .sum();
                out.iter_mut().for_each(|v| *v /= sum);
            }
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(
        name: &str,
        inputs: usize,
        outputs: usize,
        weights: DenseWeights,
        activation: Activation,
    ) -> DenseLayer {
        DenseLayer {
            name: name.into(),
            inputs,
            outputs,
            weights,
            bias: Some(vec![0.5; outputs]),
            activation,
        }
    }

    #[test]
    fn int8_rows_equal_their_dequantized_f32_twin() {
        let q: Vec<i8> = (0..12).map(|i| (i * 23 % 255 - 127) as i8).collect();
        let scales = vec![0.01, 0.02, 0.03];
        let zero_points = vec![1, -2, 0];
        let dequantized: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| (f32::from(v) - f32::from(zero_points[i / 4])) * scales[i / 4])
            .collect();
        let int8 = Mlp::new(
            vec![layer(
                "l",
                4,
                3,
                DenseWeights::Int8 {
                    q,
                    scales,
                    zero_points,
                },
                Activation::Identity,
            )],
            false,
        )
        .unwrap();
        let f32m = Mlp::new(
            vec![layer(
                "l",
                4,
                3,
                DenseWeights::F32(dequantized),
                Activation::Identity,
            )],
            false,
        )
        .unwrap();
        let x = [0.3, -1.2, 2.5, 0.7, 1.0, 1.0, -1.0, 0.0];
        let (a, b) = (int8.forward(&x, 2).unwrap(), f32m.forward(&x, 2).unwrap());
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5, "{u} vs {v}");
        }
    }

    #[test]
    fn shapes_and_configs_are_checked() {
        let bad = Mlp::new(
            vec![
                layer("a", 2, 3, DenseWeights::F32(vec![0.0; 6]), Activation::Relu),
                layer("b", 4, 1, DenseWeights::F32(vec![0.0; 4]), Activation::Relu),
            ],
            false,
        );
        assert!(matches!(bad, Err(MlpError::Layer { .. })));
        let model = Mlp::new(
            vec![layer(
                "a",
                2,
                3,
                DenseWeights::F32(vec![0.1; 6]),
                Activation::Relu,
            )],
            true,
        )
        .unwrap();
        assert!(matches!(
            model.forward(&[1.0; 3], 1),
            Err(MlpError::InputWidth { .. })
        ));
        let probabilities = model.forward(&[1.0, 2.0], 1).unwrap();
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(MlpConfig::from_value(
            &serde_json::json!({"layers": [{"name": "x", "activation": "swish"}]})
        )
        .is_err());
        assert!(MlpConfig::from_value(&serde_json::json!({"model_type": "mlp"})).is_err());
        let config = MlpConfig::from_value(&serde_json::json!({"layers": [{"name": "x", "activation": "gelu_tanh"}], "softmax": true})).unwrap();
        assert_eq!(config.layers().next(), Some(("x", Activation::GeluTanh)));
    }

    #[test]
    fn non_finite_inputs_are_refused_with_their_index() {
        let model = Mlp::new(
            vec![layer(
                "a",
                2,
                3,
                DenseWeights::F32(vec![0.1; 6]),
                Activation::Relu,
            )],
            false,
        )
        .unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(
                model.forward(&[1.0, 2.0, 3.0, bad], 2),
                Err(MlpError::NonFiniteInput { index: 3 })
            );
        }
        // Rows × width must match the input exactly, with no overflow in the product.
        assert!(matches!(
            model.forward(&[], usize::MAX / 2 + 1),
            Err(MlpError::InputWidth { .. })
        ));
    }

    #[test]
    fn f32_overflow_is_an_error_not_a_plausible_number() {
        // 3e38 · 0.1 summed over 64 inputs is beyond f32: fc1 gives infinities, and before
        // the check ReLU(NaN) = 0 in fc2 turned them into ordinary-looking logits.
        for activation in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            let model = Mlp::new(
                vec![
                    layer("fc1", 64, 4, DenseWeights::F32(vec![0.1; 256]), activation),
                    layer(
                        "fc2",
                        4,
                        2,
                        DenseWeights::F32(vec![0.5, -0.5, 0.25, 1.0, -1.0, 0.5, 0.5, 0.5]),
                        Activation::Relu,
                    ),
                ],
                true,
            )
            .unwrap();
            let mut input = vec![0.5f32; 128];
            input[64..].fill(3e38);
            assert_eq!(
                model.forward(&input, 2),
                Err(MlpError::Overflow {
                    layer: "fc1".into(),
                    row: 1
                }),
                "{activation:?}"
            );
            // The first row alone is fine.
            let probabilities = model.forward(&input[..64], 1).unwrap();
            assert!(probabilities.iter().all(|p| p.is_finite()));
        }
    }

    /// One output over 32 inputs, every weight 10 (int8 code 1, scale 10), bias 0.5, as a
    /// block-quantized layer.
    fn block_layer() -> DenseLayer {
        let matrix =
            crate::infer::matrix::BlockMatrix::from_int8(&[1; 32], &[10.0], &[], 1, 32).unwrap();
        layer(
            "blocks",
            32,
            1,
            DenseWeights::Blocks(matrix),
            Activation::Identity,
        )
    }

    #[test]
    fn block_quantized_activations_cannot_hide_an_overflow() {
        // The activation scale is 3.3e37 / 127 and 1.27e35 is 0.49 of it: those 31 values
        // quantize to 0, so the block kernel returns 10 · 3.3e37, finite, while the real value
        // 10 · (3.3e37 + 31 · 1.27e35) ≈ 3.69e38 is beyond f32 (f32 arithmetic gives infinity).
        let mut x = vec![1.27e35f32; 32];
        x[0] = 3.3e37;
        let layer = block_layer();
        let DenseWeights::Blocks(matrix) = &layer.weights else {
            unreachable!()
        };
        let kernels = crate::infer::kernels::scalar();
        let mut y = [0f32];
        let mut acts = crate::infer::kernels::blocks::BlockActs::new();
        matrix.linear(kernels, &x, 1, None, &mut acts, &mut y);
        assert!(
            y[0].is_finite(),
            "the premise: the kernel alone says {}",
            y[0]
        );
        let f32_sum: f32 = x.iter().map(|v| v * 10.0).sum();
        assert!(f32_sum.is_infinite(), "the premise: f32 overflows");

        let mut model = Mlp::new(vec![layer], false).unwrap();
        model.kernels = kernels;
        assert_eq!(
            model.forward(&x, 1),
            Err(MlpError::Overflow {
                layer: "blocks".into(),
                row: 0
            })
        );
        // Large inputs whose real outputs fit are still answered: 10 · 1e37 (near the limit,
        // so checked exactly), and 10 · 32 · 1e30 (far from it).
        let mut large = vec![0f32; 32];
        large[0] = 1e37;
        let y = model.forward(&large, 1).unwrap();
        assert!((y[0] / 1e38 - 1.0).abs() < 1e-2, "{y:?}");
        let y = model.forward(&[1e30; 32], 1).unwrap();
        assert!((y[0] / 3.2e32 - 1.0).abs() < 1e-2, "{y:?}");
    }

    #[test]
    fn activations_match_their_definitions() {
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 2e-7);
        assert!((erf(-1.5) + 0.966_105_146_475_310_7).abs() < 2e-7);
        assert!((activate(Activation::Gelu, 1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((activate(Activation::GeluTanh, 1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(activate(Activation::Relu, -2.0), 0.0);
        assert!((activate(Activation::Silu, 1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((activate(Activation::Sigmoid, 0.0) - 0.5).abs() < 1e-7);
    }
}
