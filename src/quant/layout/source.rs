//! The read side: stored tensors of a mapped safetensors or GGUF file ([`TensorSource`]), which
//! layout stored a tensor ([`recognize`]), and the form serving holds it in ([`Held`]).

use crate::formats::gguf::{GgufFile, GgufValue};
use crate::formats::safetensors::Header;
use crate::quant::convert::float_values;
use crate::quant::ggml::{self, GgmlType};
use crate::quant::int4::{dequantize_int4, pack_zero_points, Int4Options, Int4Output};
use crate::quant::int8::{dequantize_int8, Granularity, Int8Options, Int8Tensor};

use super::{DecodeError, SchemeLayout, StoredAs};

/// One stored tensor: its type, its logical shape (torch order, also for GGUF) and its bytes.
#[derive(Debug, Clone)]
pub struct StoredTensor<'a> {
    pub stored_as: StoredAs,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

/// The tensors and string metadata of a stored file.
pub trait TensorSource<'a> {
    fn tensor(&self, name: &str) -> Option<StoredTensor<'a>>;
    /// A string metadata value (`__metadata__` in safetensors, string keys in GGUF).
    fn metadata(&self, key: &str) -> Option<&str>;
    /// Every tensor name, in file order (for error messages).
    fn names(&self) -> Vec<&str>;
}

/// A mapped safetensors file and its parsed header.
#[derive(Clone, Copy)]
pub struct SafetensorsSource<'a> {
    pub file: &'a [u8],
    pub header: &'a Header,
}

impl<'a> SafetensorsSource<'a> {
    /// `__metadata__[key]`, borrowed from the header (not from this view).
    pub fn metadata_value(self, key: &str) -> Option<&'a str> {
        self.header.metadata.get(key).map(String::as_str)
    }

    /// Tensor names in header order, borrowed from the header.
    pub fn tensor_names(self) -> Vec<&'a str> {
        self.header
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .collect()
    }
}

impl<'a> TensorSource<'a> for SafetensorsSource<'a> {
    fn tensor(&self, name: &str) -> Option<StoredTensor<'a>> {
        let info = self.header.get(name)?;
        let start = usize::try_from(self.header.data_start + info.data_offsets.0).ok()?;
        let end = usize::try_from(self.header.data_start + info.data_offsets.1).ok()?;
        Some(StoredTensor {
            stored_as: StoredAs::Safetensors(info.dtype),
            shape: info.shape.clone(),
            bytes: self.file.get(start..end)?,
        })
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata_value(key)
    }

    fn names(&self) -> Vec<&str> {
        self.tensor_names()
    }
}

/// A mapped GGUF file and its parsed header.
#[derive(Clone, Copy)]
pub struct GgufSource<'a> {
    pub file: &'a [u8],
    pub gguf: &'a GgufFile,
}

impl<'a> TensorSource<'a> for GgufSource<'a> {
    fn tensor(&self, name: &str) -> Option<StoredTensor<'a>> {
        let info = self.gguf.tensor(name)?;
        Some(StoredTensor {
            stored_as: StoredAs::Ggml(info.ggml_type),
            // GGUF lists dimensions innermost first.
            shape: info
                .dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()?,
            bytes: self.gguf.tensor_bytes(self.file, info)?,
        })
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata_value(key)
    }

    fn names(&self) -> Vec<&str> {
        self.tensor_names()
    }
}

impl<'a> GgufSource<'a> {
    /// A string metadata value, borrowed from the parsed file (not from this view).
    pub fn metadata_value(self, key: &str) -> Option<&'a str> {
        match self.gguf.get(key)? {
            GgufValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// Tensor names in file order, borrowed from the parsed file.
    pub fn tensor_names(self) -> Vec<&'a str> {
        self.gguf.tensors.iter().map(|t| t.name.as_str()).collect()
    }
}

/// A stored tensor's layout and logical shape.
pub struct Recognized {
    pub layout: Box<dyn SchemeLayout>,
    /// Torch order (`[out, in]` for a Linear weight).
    pub shape: Vec<usize>,
}

/// A recogniser: `None` when `name` is not stored in this module's layout.
pub(super) type Recognizer =
    fn(&dyn TensorSource<'_>, &str) -> Option<Result<Recognized, DecodeError>>;

/// Which layout stored `name`, from the file alone; `Ok(None)` if there is no such tensor (in
/// any layout), an error if it is stored in a way nothing here reads.
pub fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Result<Option<Recognized>, DecodeError> {
    for recognizer in super::RECOGNIZERS {
        if let Some(recognized) = recognizer(source, name) {
            return recognized.map(Some);
        }
    }
    match source.tensor(name) {
        None => Ok(None),
        Some(tensor) => Err(DecodeError::Invalid(format!(
            "tensor '{name}' is stored as {}, which nothing here reads",
            stored_as_name(tensor.stored_as)
        ))),
    }
}

/// `F32`, `I8`, `ggml type 14`, ... for messages.
pub(super) fn stored_as_name(stored_as: StoredAs) -> String {
    match stored_as {
        StoredAs::Safetensors(dtype) => dtype.as_str().to_owned(),
        StoredAs::Ggml(id) => format!("ggml type {id}"),
    }
}

/// The values of the float side tensor `name` (`_scale`, `_codebook`), if it is one.
pub(super) fn float_side(source: &dyn TensorSource<'_>, name: &str) -> Option<Vec<f32>> {
    match source.tensor(name)? {
        StoredTensor {
            stored_as: StoredAs::Safetensors(dtype),
            bytes,
            ..
        } => float_values(dtype, bytes),
        _ => None,
    }
}

/// The logical shape a quantd layout records in `quantd.<name>.shape`.
pub(super) fn quantd_shape(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Result<Vec<usize>, DecodeError> {
    source
        .metadata(&format!("quantd.{name}.shape"))
        .and_then(|shape| serde_json::from_str(shape).ok())
        .ok_or_else(|| DecodeError::Invalid(format!("'{name}' has no quantd.{name}.shape")))
}

/// Whether `__metadata__` names `scheme` as the quantd layout of `name`.
pub(super) fn is_quantd_layout(source: &dyn TensorSource<'_>, name: &str, scheme: &str) -> bool {
    source.metadata(&format!("quantd.{name}.scheme")) == Some(scheme)
}

/// A weight as serving holds it: codes a kernel runs, or f32.
#[derive(Debug, Clone, PartialEq)]
pub enum Held<'a> {
    /// Plain floats (a float tensor, GGUF F32 / F16).
    Float(Vec<f32>),
    /// Dequantized at load from `scheme`, which no kernel runs quantized.
    Dequantized {
        scheme: &'static str,
        values: Vec<f32>,
    },
    /// int8 rows with one scale per row (or one for all) and optional zero points (one per
    /// scale): `value = (q - z) · s`.
    Int8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        zero_points: Vec<i8>,
    },
    /// compressed-tensors pack-quantized int4: `packed` `[rows, cols / 2]` bytes (low nibble
    /// first), `scales` `[rows, cols / group]`, `zero_points` unpacked in `-8..=7` (empty when
    /// symmetric).
    Int4 {
        packed: &'a [u8],
        scales: Vec<f32>,
        zero_points: Vec<i8>,
        group: usize,
    },
    /// Raw ggml blocks of `ty`.
    Ggml { ty: GgmlType, blocks: &'a [u8] },
}

impl Held<'_> {
    /// The scheme's own dequantization of the held weight, logical shape `shape`.
    pub fn into_f32(self, shape: &[usize]) -> Vec<f32> {
        let n_elements: usize = shape.iter().product();
        match self {
            Held::Float(values) | Held::Dequantized { values, .. } => values,
            Held::Int8 {
                q,
                scales,
                zero_points,
            } => {
                let options = Int8Options {
                    granularity: if scales.len() == 1 {
                        Granularity::Tensor
                    } else {
                        Granularity::Channel
                    },
                    symmetric: zero_points.is_empty(),
                };
                let tensor = Int8Tensor {
                    q,
                    scales,
                    zero_points,
                    stats: Default::default(),
                };
                dequantize_int8(&tensor, shape, options)
            }
            Held::Int4 {
                packed,
                scales,
                zero_points,
                group,
            } => {
                let (rows, cols) = super::rows_and_cols(shape);
                let n_groups = cols / group;
                let output = Int4Output {
                    weight_packed: packed
                        .chunks_exact(4)
                        .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                        .collect(),
                    weight_scale: scales,
                    weight_zero_point: if zero_points.is_empty() {
                        Vec::new()
                    } else {
                        pack_zero_points(&zero_points, rows, n_groups)
                    },
                    zero_points: Vec::new(),
                    weight_shape: [rows as i64, cols as i64],
                    stats: Default::default(),
                };
                let options = Int4Options {
                    group_size: group,
                    symmetric: output.weight_zero_point.is_empty(),
                    restricted_range: false,
                };
                dequantize_int4(&output, options)
            }
            Held::Ggml { ty, blocks } => {
                let mut values = vec![0f32; n_elements];
                ggml::dequantize(ty, blocks, &mut values);
                values
            }
        }
    }
}
