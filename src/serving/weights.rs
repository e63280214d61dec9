//! Reading served weights from a memory-mapped safetensors or GGUF file, in whatever form quantd
//! wrote them: Linear weights stay quantized where a kernel runs them (int8, int4, q8_0, q4_0,
//! q4_1 as blocks; see `infer::matrix`), other schemes are dequantized to f32 at load (fp8,
//! binary, ternary, kmeans, q5_0, q5_1) and the model metadata says so; everything else (NF4) is
//! refused with a reason.

use std::collections::BTreeSet;

use crate::formats::gguf::{GgufFile, GgufTensorInfo};
use crate::formats::safetensors::{Dtype, Header, TensorInfo};
use crate::infer::matrix::BlockMatrix;
use crate::infer::mlp::DenseWeights;
use crate::quant::binary::try_dequantize_binary;
use crate::quant::convert::float_values;
use crate::quant::fp8::{dequantize_fp8, Fp8Format};
use crate::quant::ggml::{self, GgmlType};
use crate::quant::int8::{dequantize_int8, Granularity, Int8Options, Int8Tensor};
use crate::quant::kmeans::try_dequantize_kmeans;
use crate::quant::ternary::try_dequantize_ternary;

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
const SERVED: &str = "served: f32/f16/bf16, int8, int4, fp8, binary, ternary, kmeans; GGUF f32/f16/q8_0/q4_0/q4_1/q5_0/q5_1";

fn unsupported(message: String) -> ServingError {
    ServingError::Unsupported(message)
}

impl<'a> WeightFile<'a> {
    fn st(header: &Header, file: &'a [u8], name: &str) -> Option<(TensorInfo, &'a [u8])> {
        let info = header.get(name)?;
        let start = usize::try_from(header.data_start + info.data_offsets.0).ok()?;
        let end = usize::try_from(header.data_start + info.data_offsets.1).ok()?;
        Some((info.clone(), file.get(start..end)?))
    }

    fn gguf_tensor(&self, name: &str) -> Option<(&'a GgufTensorInfo, &'a [u8])> {
        let WeightFile::Gguf { file, gguf } = self else {
            return None;
        };
        let info = gguf.tensor(name)?;
        Some((info, gguf.tensor_bytes(file, info)?))
    }

    /// Whether a tensor of this name exists.
    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightFile::Safetensors { header, .. } => header.get(name).is_some(),
            WeightFile::Gguf { gguf, .. } => gguf.tensor(name).is_some(),
        }
    }

    /// A tensor as f32 values, dequantizing what needs it (int8 with `<name>_scale`, GGUF
    /// block types); `Ok(None)` if there is no such tensor.
    pub fn float(&self, name: &str) -> Result<Option<Vec<f32>>, ServingError> {
        match self {
            WeightFile::Safetensors { file, header } => {
                let Some((info, bytes)) = Self::st(header, file, name) else {
                    return Ok(None);
                };
                if let Some(values) = float_values(info.dtype, bytes) {
                    return Ok(Some(values));
                }
                if info.dtype == Dtype::I8 {
                    // compressed-tensors int8 (`<name>_scale`, optional `<name>_zero_point`),
                    // decoded by the quantizer's own reference.
                    if let Some(scales) = self.float(&format!("{name}_scale"))? {
                        let zero_points: Vec<i8> =
                            Self::st(header, file, &format!("{name}_zero_point"))
                                .map(|(_, b)| b.iter().map(|&v| v as i8).collect())
                                .unwrap_or_default();
                        let rows = info.shape.first().copied().unwrap_or(1);
                        let granularity = if scales.len() == 1 {
                            Granularity::Tensor
                        } else {
                            Granularity::Channel
                        };
                        let fits = (scales.len() == 1 || scales.len() == rows)
                            && (zero_points.is_empty() || zero_points.len() == scales.len());
                        if fits {
                            let options = Int8Options {
                                granularity,
                                symmetric: zero_points.is_empty(),
                            };
                            let tensor = Int8Tensor {
                                q: bytes.iter().map(|&v| v as i8).collect(),
                                scales,
                                zero_points,
                                stats: Default::default(),
                            };
                            return Ok(Some(dequantize_int8(&tensor, &info.shape, options)));
                        }
                    }
                }
                Err(unsupported(format!(
                    "tensor '{name}' is stored as {}, which serving cannot read",
                    info.dtype.as_str()
                )))
            }
            WeightFile::Gguf { .. } => {
                let Some((info, bytes)) = self.gguf_tensor(name) else {
                    return Ok(None);
                };
                let Some(ty) = GgmlType::from_id(info.ggml_type) else {
                    return Err(unsupported(format!(
                        "GGUF tensor '{name}' has ggml type {}, which serving cannot read",
                        info.ggml_type
                    )));
                };
                let count = usize::try_from(info.n_elements())
                    .map_err(|_| unsupported(format!("GGUF tensor '{name}' is too large")))?;
                let mut values = vec![0f32; count];
                ggml::dequantize(ty, bytes, &mut values);
                Ok(Some(values))
            }
        }
    }

    /// The logical `[out, in]` shape of the Linear weight `<layer>.weight`, however it is stored
    /// (plain, int4 `weight_packed`, a quantd layout's `.shape` metadata, GGUF innermost-first
    /// dimensions); `None` if there is no such 2-D weight.
    pub fn linear_shape(&self, layer: &str) -> Option<(usize, usize)> {
        let name = format!("{layer}.weight");
        let shape: Vec<usize> = match self {
            WeightFile::Safetensors { header, .. } => {
                if let Some(shape) = header.metadata.get(&format!("quantd.{name}.shape")) {
                    serde_json::from_str(shape).ok()?
                } else if let Some(t) = header.get(&format!("{name}_packed")) {
                    vec![*t.shape.first()?, t.shape.get(1)? * 8]
                } else {
                    header.get(&name)?.shape.clone()
                }
            }
            WeightFile::Gguf { gguf, .. } => gguf
                .tensor(&name)?
                .dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()?,
        };
        match shape.as_slice() {
            [out, inp] => Some((*out, *inp)),
            _ => None,
        }
    }

    /// A quantd sub-byte layout (binary, ternary, kmeans; `docs/quantd-layouts.md`), dequantized.
    fn quantd_layout(
        header: &Header,
        file: &'a [u8],
        name: &str,
        out: usize,
        inp: usize,
    ) -> Option<Result<(&'static str, Vec<f32>), ServingError>> {
        let scheme = header.metadata.get(&format!("quantd.{name}.scheme"))?;
        let bad = |why: String| unsupported(format!("'{name}' ({scheme}): {why}"));
        let result = (|| {
            let (_, packed) = Self::st(header, file, name).ok_or_else(|| bad("missing".into()))?;
            let float = |suffix: &str| {
                Self::st(header, file, &format!("{name}{suffix}"))
                    .and_then(|(info, bytes)| float_values(info.dtype, bytes))
                    .ok_or_else(|| bad(format!("no float '{name}{suffix}'")))
            };
            match scheme.as_str() {
                "binary" => Ok((
                    "binary",
                    try_dequantize_binary(packed, &float("_scale")?, out, inp)
                        .map_err(|e| bad(e.to_string()))?,
                )),
                "ternary" => Ok((
                    "ternary",
                    try_dequantize_ternary(packed, &float("_scale")?, out, inp)
                        .map_err(|e| bad(e.to_string()))?,
                )),
                "kmeans" => {
                    let bits: u8 = header
                        .metadata
                        .get(&format!("quantd.{name}.bits"))
                        .and_then(|b| b.parse().ok())
                        .ok_or_else(|| bad("no bits".into()))?;
                    Ok((
                        "kmeans",
                        try_dequantize_kmeans(packed, &float("_codebook")?, bits, out * inp)
                            .map_err(|e| bad(e.to_string()))?,
                    ))
                }
                other => Err(bad(format!("unknown quantd scheme '{other}'"))),
            }
        })();
        Some(result)
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
        let shape_error = |got: String| {
            unsupported(format!(
                "'{name}' has shape {got}, expected [{out}, {inp}] ([out, in])"
            ))
        };
        let block_error = |e: crate::infer::matrix::MatrixError| {
            unsupported(format!("'{name}' cannot be served as stored: {e}"))
        };
        let weights = match self {
            WeightFile::Safetensors { file, header } => {
                if let Some(decoded) = Self::quantd_layout(header, file, &name, out, inp) {
                    let (scheme, values) = decoded?;
                    report.dequantized.insert(scheme);
                    DenseWeights::F32(values)
                } else if let Some((info, bytes)) = Self::st(header, file, &name) {
                    if info.shape.iter().product::<usize>() != out * inp
                        || info.shape.first() != Some(&out)
                    {
                        return Err(shape_error(format!("{:?}", info.shape)));
                    }
                    match info.dtype {
                        Dtype::I8 => {
                            let scales = self.float(&format!("{name}_scale"))?.ok_or_else(|| {
                                unsupported(format!("'{name}' is int8 without '{name}_scale'"))
                            })?;
                            let zero_points: Vec<i8> =
                                Self::st(header, file, &format!("{name}_zero_point"))
                                    .map(|(_, b)| b.iter().map(|&v| v as i8).collect())
                                    .unwrap_or_default();
                            let q: Vec<i8> = bytes.iter().map(|&v| v as i8).collect();
                            let per_row_ok = scales.len() == 1 || scales.len() == out;
                            if !per_row_ok {
                                return Err(unsupported(format!(
                                    "'{name}_scale' has {} values for {out} rows",
                                    scales.len()
                                )));
                            }
                            match int8 {
                                Int8Mode::Blocks if inp.is_multiple_of(32) => DenseWeights::Blocks(
                                    BlockMatrix::from_int8(&q, &scales, &zero_points, out, inp)
                                        .map_err(block_error)?,
                                ),
                                _ => {
                                    report.held_as.insert("int8");
                                    return Ok(DenseWeights::Int8 {
                                        q,
                                        scales,
                                        zero_points,
                                    });
                                }
                            }
                        }
                        Dtype::F8_E4M3 | Dtype::F8_E5M2 => {
                            let scales = self.float(&format!("{name}_scale"))?.ok_or_else(|| {
                                unsupported(format!("'{name}' is fp8 without '{name}_scale'"))
                            })?;
                            if scales.len() != 1 && scales.len() != out {
                                return Err(unsupported(format!(
                                    "'{name}_scale' has {} values for {out} rows",
                                    scales.len()
                                )));
                            }
                            let format = if info.dtype == Dtype::F8_E4M3 {
                                Fp8Format::E4M3
                            } else {
                                Fp8Format::E5M2
                            };
                            report.dequantized.insert("fp8");
                            DenseWeights::F32(dequantize_fp8(bytes, &scales, out, inp, format))
                        }
                        dtype => DenseWeights::F32(float_values(dtype, bytes).ok_or_else(|| {
                            let layout = if header.get(&format!("{name}.absmax")).is_some() {
                                "bitsandbytes NF4".to_owned()
                            } else {
                                dtype.as_str().to_owned()
                            };
                            unsupported(format!(
                                "'{name}' is stored as {layout}, a scheme serving does not run ({SERVED})"
                            ))
                        })?),
                    }
                } else if let Some((info, packed)) =
                    Self::st(header, file, &format!("{name}_packed"))
                {
                    // compressed-tensors pack-quantized int4.
                    if info.dtype != Dtype::I32
                        || info.shape != [out, inp / 8]
                        || !inp.is_multiple_of(8)
                    {
                        return Err(shape_error(format!(
                            "{:?} ({} packed)",
                            info.shape,
                            info.dtype.as_str()
                        )));
                    }
                    let scales = self.float(&format!("{name}_scale"))?.ok_or_else(|| {
                        unsupported(format!("'{name}_packed' has no '{name}_scale'"))
                    })?;
                    if scales.is_empty() || !(out * inp).is_multiple_of(scales.len()) {
                        return Err(unsupported(format!(
                            "'{name}_scale' does not fit {out}x{inp}"
                        )));
                    }
                    let group = out * inp / scales.len();
                    let groups = inp / group.max(1);
                    let zero_points = match Self::st(header, file, &format!("{name}_zero_point")) {
                        Some((zinfo, zbytes)) => {
                            if zinfo.dtype != Dtype::I32
                                || zbytes.len() != out.div_ceil(8) * groups * 4
                            {
                                return Err(unsupported(format!(
                                    "'{name}_zero_point' does not fit {out}x{inp} with groups of {group}"
                                )));
                            }
                            let words: Vec<u32> = zbytes
                                .chunks_exact(4)
                                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                                .collect();
                            let mut zps = Vec::with_capacity(out * groups);
                            for row in 0..out {
                                for g in 0..groups {
                                    let word = words[(row / 8) * groups + g];
                                    zps.push(((word >> (4 * (row % 8))) & 0xF) as i8 - 8);
                                }
                            }
                            zps
                        }
                        None => Vec::new(),
                    };
                    DenseWeights::Blocks(
                        BlockMatrix::from_int4_packed(
                            packed,
                            &scales,
                            &zero_points,
                            out,
                            inp,
                            group,
                        )
                        .map_err(block_error)?,
                    )
                } else {
                    let stored: Vec<&str> = header
                        .tensors
                        .iter()
                        .filter(|t| t.name.starts_with(&format!("{layer}.")))
                        .map(|t| t.name.as_str())
                        .collect();
                    return Err(unsupported(if stored.is_empty() {
                        format!("missing tensor '{name}'")
                    } else {
                        format!(
                            "layer '{layer}' is stored as {stored:?}, a scheme serving does not run ({SERVED})"
                        )
                    }));
                }
            }
            WeightFile::Gguf { .. } => {
                let (info, bytes) = self
                    .gguf_tensor(&name)
                    .ok_or_else(|| unsupported(format!("missing tensor '{name}'")))?;
                // GGUF lists dimensions innermost first: [in, out].
                if info.dims != [inp as u64, out as u64] {
                    return Err(shape_error(format!(
                        "{:?} (GGUF, innermost first)",
                        info.dims
                    )));
                }
                match GgmlType::from_id(info.ggml_type) {
                    Some(GgmlType::Q8_0) => DenseWeights::Blocks(
                        BlockMatrix::from_q8_0(bytes, out, inp).map_err(block_error)?,
                    ),
                    Some(GgmlType::Q4_0) => DenseWeights::Blocks(
                        BlockMatrix::from_q4(bytes, out, inp, false).map_err(block_error)?,
                    ),
                    Some(GgmlType::Q4_1) => DenseWeights::Blocks(
                        BlockMatrix::from_q4(bytes, out, inp, true).map_err(block_error)?,
                    ),
                    Some(ty) => {
                        if ty.is_block_quantized() {
                            report.dequantized.insert(ty.name());
                        }
                        let mut values = vec![0f32; out * inp];
                        ggml::dequantize(ty, bytes, &mut values);
                        DenseWeights::F32(values)
                    }
                    None => {
                        return Err(unsupported(format!(
                            "GGUF tensor '{name}' has ggml type {}, which serving cannot run",
                            info.ggml_type
                        )))
                    }
                }
            }
        };
        report.held_as.insert(weights.held_as());
        Ok(weights)
    }
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
}
