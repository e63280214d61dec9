//! Reading served weights from a memory-mapped safetensors or GGUF file, in whatever form quantd
//! wrote them. Which scheme stored a tensor and how to read it back is each scheme's layout's
//! business ([`crate::quant::layout`]: `recognize`, then `decode` into a [`Held`] form); this
//! module only decides how serving holds that form: Linear weights stay quantized where a kernel
//! runs them (int8, int4, q8_0, q4_0, q4_1 as blocks; see `infer::matrix`), other schemes are
//! dequantized to f32 at load (fp8, binary, ternary, kmeans, q5_0, q5_1, q4_k, q6_k) and the model metadata
//! says so; layouts that belong to another runtime (NF4) are refused with a reason.

use std::collections::BTreeSet;

use crate::formats::gguf::GgufFile;
use crate::formats::safetensors::Header;
use crate::infer::matrix::{BlockMatrix, MatrixError};
use crate::infer::mlp::DenseWeights;
use crate::quant::layout::{
    recognize, GgufSource, Held, Recognized, SafetensorsSource, StoredTensor, TensorSource,
};

use super::ServingError;

/// How int8 Linear weights are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Mode {
    /// int8 × int8 with activations quantized per 32-element block (the default: accurate).
    Blocks,
    /// int8 × int8 with one activation scale per row (`QUANTD_INT8_ACTIVATIONS`: fastest).
    PerRow,
}

/// A weights file, memory-mapped.
pub enum WeightFile<'a> {
    Safetensors { file: &'a [u8], header: &'a Header },
    Gguf { file: &'a [u8], gguf: &'a GgufFile },
}

/// What the Linear layers of a model were loaded as (for the model metadata).
#[derive(Debug, Default)]
pub struct LoadReport {
    /// How the Linear weights are held: `f32`, `int8`, `q8_0`, `int4`, `q4_0`, `q4_1`.
    pub held_as: BTreeSet<&'static str>,
    /// Stored schemes that were dequantized to f32 at load (`fp8`, `q5_0`, ...).
    pub dequantized: BTreeSet<&'static str>,
}

impl LoadReport {
    /// `"q4_0"`, `"int8+f32"`, ... as shown in the model metadata.
    pub fn weights(&self) -> String {
        let held: Vec<&str> = self.held_as.iter().copied().collect();
        if held.is_empty() {
            "f32".into()
        } else {
            held.join("+")
        }
    }
}

/// What serving reads, for error messages.
const SERVED: &str = "served: f32/f16/bf16, int8, int4, fp8, binary, ternary, kmeans; GGUF f32/f16/q8_0/q4_0/q4_1/q5_0/q5_1/q4_k/q6_k";

fn unsupported(message: String) -> ServingError {
    ServingError::Unsupported(message)
}

/// The file's tensors as the layouts read them (a view over the mapped bytes and the parsed
/// header).
impl<'a> TensorSource<'a> for WeightFile<'a> {
    fn tensor(&self, name: &str) -> Option<StoredTensor<'a>> {
        match *self {
            WeightFile::Safetensors { file, header } => {
                SafetensorsSource { file, header }.tensor(name)
            }
            WeightFile::Gguf { file, gguf } => GgufSource { file, gguf }.tensor(name),
        }
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        match *self {
            WeightFile::Safetensors { file, header } => {
                SafetensorsSource { file, header }.metadata_value(key)
            }
            WeightFile::Gguf { file, gguf } => GgufSource { file, gguf }.metadata_value(key),
        }
    }

    fn names(&self) -> Vec<&str> {
        match *self {
            WeightFile::Safetensors { file, header } => {
                SafetensorsSource { file, header }.tensor_names()
            }
            WeightFile::Gguf { file, gguf } => GgufSource { file, gguf }.tensor_names(),
        }
    }
}

impl<'a> WeightFile<'a> {
    /// Whether a tensor of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }

    /// Which layout stored `name` and its logical shape; `Ok(None)` if there is no such tensor.
    /// Layouts serving leaves to their own runtime are refused here.
    fn recognize(&self, name: &str) -> Result<Option<Recognized>, ServingError> {
        let recognized =
            recognize(self, name).map_err(|e| unsupported(format!("{e} ({SERVED})")))?;
        if let Some(layout) = recognized.as_ref().and_then(|r| r.layout.not_served()) {
            return Err(unsupported(format!(
                "'{name}' is stored as {layout}, a scheme serving does not run ({SERVED})"
            )));
        }
        Ok(recognized)
    }

    /// A tensor as f32 values, decoded by the layout that stored it (int8 with `<name>_scale`
    /// and zero points, GGUF block types, ...); `Ok(None)` if there is no such tensor.
    pub fn float(&self, name: &str) -> Result<Option<Vec<f32>>, ServingError> {
        let Some(Recognized { layout, shape }) = self.recognize(name)? else {
            return Ok(None);
        };
        let held = layout
            .decode(self, name, &shape)
            .map_err(|e| unsupported(e.to_string()))?;
        Ok(Some(held.into_f32(&shape)))
    }

    /// The logical `[out, in]` shape of the Linear weight `<layer>.weight`, however it is stored
    /// (plain, int4 `weight_packed`, a quantd layout's `.shape` metadata, GGUF innermost-first
    /// dimensions); `None` if there is no such 2-D weight.
    pub fn linear_shape(&self, layer: &str) -> Option<(usize, usize)> {
        let recognized = recognize(self, &format!("{layer}.weight")).ok()??;
        match recognized.shape.as_slice() {
            [out, inp] => Some((*out, *inp)),
            _ => None,
        }
    }

    /// The Linear weight `<layer>.weight` of shape `[out, inp]`, held as compactly as a kernel
    /// can run it; records what it became in `report`.
    pub fn linear(
        &self,
        layer: &str,
        out: usize,
        inp: usize,
        int8: Int8Mode,
        report: &mut LoadReport,
    ) -> Result<DenseWeights, ServingError> {
        let name = format!("{layer}.weight");
        let Some(Recognized { layout, shape }) = self.recognize(&name)? else {
            return Err(self.missing_layer(layer, &name));
        };
        if shape.iter().product::<usize>() != out * inp || shape.first() != Some(&out) {
            return Err(unsupported(format!(
                "'{name}' has shape {shape:?}, expected [{out}, {inp}] ([out, in])"
            )));
        }
        let held = layout
            .decode(self, &name, &[out, inp])
            .map_err(|e| unsupported(e.to_string()))?;
        let weights = hold(held, out, inp, int8, report)
            .map_err(|e| unsupported(format!("'{name}' cannot be served as stored: {e}")))?;
        report.held_as.insert(weights.held_as());
        Ok(weights)
    }

    /// Why `<layer>.weight` is not there: missing, or stored as tensors no layout reads.
    fn missing_layer(&self, layer: &str, name: &str) -> ServingError {
        let prefix = format!("{layer}.");
        let stored: Vec<&str> = self
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        unsupported(if stored.is_empty() {
            format!("missing tensor '{name}'")
        } else {
            format!(
                "layer '{layer}' is stored as {stored:?}, a scheme serving does not run ({SERVED})"
            )
        })
    }
}

/// How serving holds a decoded `[out, inp]` Linear weight: in block form where a block kernel
/// runs it, as int8 rows, or as f32 (recording the schemes dequantized at load).
fn hold(
    held: Held<'_>,
    out: usize,
    inp: usize,
    int8: Int8Mode,
    report: &mut LoadReport,
) -> Result<DenseWeights, MatrixError> {
    Ok(match held {
        Held::Float(values) => DenseWeights::F32(values),
        Held::Dequantized { scheme, values } => {
            report.dequantized.insert(scheme);
            DenseWeights::F32(values)
        }
        Held::Int8 {
            q,
            scales,
            zero_points,
        } => match int8 {
            Int8Mode::Blocks if inp.is_multiple_of(32) => {
                DenseWeights::Blocks(BlockMatrix::from_int8(&q, &scales, &zero_points, out, inp)?)
            }
            _ => DenseWeights::Int8 {
                q,
                scales,
                zero_points,
            },
        },
        Held::Int4 {
            packed,
            scales,
            zero_points,
            group,
        } => DenseWeights::Blocks(BlockMatrix::from_int4_packed(
            packed,
            &scales,
            &zero_points,
            out,
            inp,
            group,
        )?),
        Held::Ggml { ty, blocks } => match BlockMatrix::from_ggml(ty, blocks, out, inp) {
            Some(matrix) => DenseWeights::Blocks(matrix?),
            None => {
                if ty.is_block_quantized() {
                    report.dequantized.insert(ty.name());
                }
                DenseWeights::F32(Held::Ggml { ty, blocks }.into_f32(&[out, inp]))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::safetensors::Limits;

    /// A safetensors file from a header JSON and its data section.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn int8_side_tensors_dequantize_with_their_zero_points() {
        // e = [[1, -2], [3, 4]] int8, one scale and zero point per row.
        let header = r#"{"e":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]},"e_scale":{"dtype":"F32","shape":[2,1],"data_offsets":[4,12]},"e_zero_point":{"dtype":"I8","shape":[2,1],"data_offsets":[12,14]}}"#;
        let mut data = vec![1u8, (-2i8) as u8, 3, 4];
        data.extend_from_slice(&0.5f32.to_le_bytes());
        data.extend_from_slice(&2.0f32.to_le_bytes());
        data.extend_from_slice(&[1u8, (-1i8) as u8]);
        let bytes = file(header, &data);
        let limits = Limits {
            max_header_bytes: 1 << 20,
            max_file_bytes: 1 << 20,
        };
        let header = Header::parse_file(&bytes, &limits).unwrap();
        let weights = WeightFile::Safetensors {
            file: &bytes,
            header: &header,
        };
        // (q - z) · s per row.
        assert_eq!(
            weights.float("e").unwrap().unwrap(),
            vec![0.0, -1.5, 8.0, 10.0]
        );
        assert!(weights.float("missing").unwrap().is_none());
    }

    #[test]
    fn malformed_side_tensors_are_errors_never_panics() {
        // int4 `w` [2, 8]: packed [2, 1] I32, but one scale for 16 values (a "group" longer
        // than a row); int8 `v.weight` [2, 2] with 3 scales for 2 rows.
        let header = r#"{"w_packed":{"dtype":"I32","shape":[2,1],"data_offsets":[0,8]},"w_scale":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"v.weight":{"dtype":"I8","shape":[2,2],"data_offsets":[12,16]},"v.weight_scale":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}}"#;
        let bytes = file(header, &[0u8; 28]);
        let limits = Limits {
            max_header_bytes: 1 << 20,
            max_file_bytes: 1 << 20,
        };
        let header = Header::parse_file(&bytes, &limits).unwrap();
        let weights = WeightFile::Safetensors {
            file: &bytes,
            header: &header,
        };
        let error = weights.float("w").unwrap_err().to_string();
        assert!(error.contains("whole number of groups"), "{error}");
        let mut report = LoadReport::default();
        let error = weights
            .linear("v", 2, 2, Int8Mode::PerRow, &mut report)
            .unwrap_err()
            .to_string();
        assert!(error.contains("3 values for 2 rows"), "{error}");
    }
}

#[cfg(test)]
mod layout_tests;
