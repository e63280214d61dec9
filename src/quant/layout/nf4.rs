//! bitsandbytes NF4 (`Params4bit` state dict, `transformers`' `bnb_4bit` checkpoints): `<name>`
//! U8 `[ceil(n / 2), 1]`, `<name>.absmax`, `<name>.quant_map`, with double quantization
//! `<name>.nested_absmax` / `.nested_quant_map`, and `<name>.quant_state.bitsandbytes__nf4`, the
//! JSON of the remaining fields. bitsandbytes reads it; quantd's serving does not run it.

use super::{side_name, ABSMAX, NESTED_ABSMAX, NESTED_QUANT_MAP, QUANT_MAP};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::kernels::ErrorStats;
use crate::quant::nf4::{
    self, dequantize_nf4, quant_state_json, quantize_nf4, NestedAbsmax, Nf4Absmax, Nf4Options,
    Nf4Output,
};

use super::source::{float_side, Recognized};
use super::{
    dequantized_output, push_f32_le, DecodeError, Description, Emitter, EncodeContext, EncodeError,
    Held, OutputFormat, OutputTensor, SchemeLayout, StoredAs, TensorSource,
};

pub(super) struct Nf4Layout(pub Nf4Options);

/// The dtype name bitsandbytes records for a weight's original dtype.
fn torch_dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::F64 => "float64",
        _ => "float32",
    }
}

/// Room reserved for `nested_offset` in the quant-state JSON: the longest Python float repr of an
/// f32 (e.g. `-1.1754943508222875e-38`). The JSON is padded with spaces to the declared length,
/// which `json.loads` ignores.
const NESTED_OFFSET_RESERVE: usize = 24;

/// Declared byte length of a tensor's `quant_state.bitsandbytes__nf4` JSON.
fn state_len(tensor: &TensorInfo, double_quant: bool) -> usize {
    let placeholder = Nf4Output {
        packed: Vec::new(),
        n_elements: 0,
        absmax: if double_quant {
            Nf4Absmax::DoubleQuantized(NestedAbsmax {
                quantized: Vec::new(),
                nested_absmax: Vec::new(),
                nested_quant_map: Box::new([0.0; 256]),
                offset: 0.0,
            })
        } else {
            Nf4Absmax::Plain(Vec::new())
        },
        quant_map: nf4::NF4_CODE,
        stats: ErrorStats::default(),
    };
    let json = quant_state_json(&placeholder, &tensor.shape, torch_dtype_name(tensor.dtype));
    // The placeholder's offset prints as "0.0".
    if double_quant {
        json.len() - 3 + NESTED_OFFSET_RESERVE
    } else {
        json.len()
    }
}

const STATE: &str = ".quant_state.bitsandbytes__nf4";

impl SchemeLayout for Nf4Layout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let n_elements: usize = tensor.shape.iter().product();
        let n_blocks = n_elements.div_ceil(nf4::BLOCK_SIZE);
        let name = &tensor.name;
        let side = OutputTensor::side;
        let mut outputs = vec![side(name, "", Dtype::U8, vec![n_elements.div_ceil(2), 1])];
        if self.0.double_quant {
            let n_nested = n_blocks.div_ceil(nf4::NESTED_BLOCK_SIZE);
            outputs.push(side(name, ABSMAX, Dtype::U8, vec![n_blocks]));
            outputs.push(side(name, QUANT_MAP, Dtype::F32, vec![16]));
            outputs.push(side(name, NESTED_ABSMAX, Dtype::F32, vec![n_nested]));
            outputs.push(side(name, NESTED_QUANT_MAP, Dtype::F32, vec![256]));
        } else {
            outputs.push(side(name, ABSMAX, Dtype::F32, vec![n_blocks]));
            outputs.push(side(name, QUANT_MAP, Dtype::F32, vec![16]));
        }
        let json_len = state_len(tensor, self.0.double_quant);
        outputs.push(side(name, STATE, Dtype::U8, vec![json_len]));
        outputs
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        let quantized = quantize_nf4(cx.kernels, values, self.0)?;
        if let OutputFormat::Dequantized { f16 } = format {
            let mut dequantized = dequantize_nf4(&quantized);
            return cx.emit_dequantized(
                tensor,
                values,
                &mut dequantized,
                f16,
                quantized.stats,
                out,
            );
        }
        let name = &tensor.name;
        let bytes = &mut cx.byte_buffer;
        out.emit(name, &quantized.packed)?;
        bytes.clear();
        match &quantized.absmax {
            Nf4Absmax::Plain(absmax) => {
                push_f32_le(absmax, bytes);
                out.emit(&side_name(name, ABSMAX), bytes)?;
                bytes.clear();
                push_f32_le(&quantized.quant_map, bytes);
                out.emit(&side_name(name, QUANT_MAP), bytes)?;
            }
            Nf4Absmax::DoubleQuantized(nested) => {
                out.emit(&side_name(name, ABSMAX), &nested.quantized)?;
                push_f32_le(&quantized.quant_map, bytes);
                out.emit(&side_name(name, QUANT_MAP), bytes)?;
                bytes.clear();
                push_f32_le(&nested.nested_absmax, bytes);
                out.emit(&side_name(name, NESTED_ABSMAX), bytes)?;
                bytes.clear();
                push_f32_le(&nested.nested_quant_map[..], bytes);
                out.emit(&side_name(name, NESTED_QUANT_MAP), bytes)?;
            }
        }
        let mut json = quant_state_json(&quantized, &tensor.shape, torch_dtype_name(tensor.dtype))
            .into_bytes();
        let double_quant = matches!(quantized.absmax, Nf4Absmax::DoubleQuantized(_));
        json.resize(state_len(tensor, double_quant), b' ');
        out.emit(&format!("{name}{STATE}"), &json)?;
        Ok(quantized.stats)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let bad = |why: &str| DecodeError::Invalid(format!("'{name}' (bitsandbytes NF4): {why}"));
        let n_elements: usize = shape.iter().product();
        let n_blocks = n_elements.div_ceil(nf4::BLOCK_SIZE);
        let packed = source.tensor(name).ok_or_else(|| bad("missing"))?;
        let quant_map: [f32; 16] = float_side(source, &side_name(name, QUANT_MAP))
            .and_then(|map| map.try_into().ok())
            .ok_or_else(|| bad("no 16-value quant_map"))?;
        let absmax_tensor = source
            .tensor(&side_name(name, ABSMAX))
            .ok_or_else(|| bad("no absmax"))?;
        let absmax = if absmax_tensor.stored_as == StoredAs::Safetensors(Dtype::U8) {
            Nf4Absmax::DoubleQuantized(nested_absmax(source, name, absmax_tensor.bytes)?)
        } else {
            Nf4Absmax::Plain(float_side(source, &side_name(name, ABSMAX)).unwrap_or_default())
        };
        let output = Nf4Output {
            packed: packed.bytes.to_vec(),
            n_elements,
            absmax,
            quant_map,
            stats: ErrorStats::default(),
        };
        if output.packed.len() != n_elements.div_ceil(2)
            || output.effective_absmax().len() != n_blocks
        {
            return Err(bad("the stored lengths do not fit the shape"));
        }
        Ok(Held::Dequantized {
            scheme: "nf4",
            values: dequantize_nf4(&output),
        })
    }

    fn description(&self) -> Description {
        Description::Bitsandbytes {
            double_quant: self.0.double_quant,
        }
    }

    fn not_served(&self) -> Option<&'static str> {
        Some("bitsandbytes NF4")
    }
}

/// The double-quantized absmax of `name`: the U8 codes, the nested statistics and the offset
/// from the quant-state JSON.
fn nested_absmax(
    source: &dyn TensorSource<'_>,
    name: &str,
    quantized: &[u8],
) -> Result<NestedAbsmax, DecodeError> {
    let bad = |why: &str| DecodeError::Invalid(format!("'{name}' (bitsandbytes NF4): {why}"));
    let nested_absmax = float_side(source, &side_name(name, NESTED_ABSMAX))
        .ok_or_else(|| bad("no nested_absmax"))?;
    let nested_quant_map: [f32; 256] = float_side(source, &side_name(name, NESTED_QUANT_MAP))
        .and_then(|map| map.try_into().ok())
        .ok_or_else(|| bad("no 256-value nested_quant_map"))?;
    let state = source
        .tensor(&format!("{name}{STATE}"))
        .ok_or_else(|| bad("no quant state"))?;
    let offset = serde_json::from_slice::<serde_json::Value>(state.bytes)
        .ok()
        .and_then(|json| json.get("nested_offset")?.as_f64())
        .ok_or_else(|| bad("no nested_offset in the quant state"))?;
    if nested_absmax.len() != quantized.len().div_ceil(nf4::NESTED_BLOCK_SIZE) {
        return Err(bad("nested_absmax does not fit absmax"));
    }
    Ok(NestedAbsmax {
        quantized: quantized.to_vec(),
        nested_absmax,
        nested_quant_map: Box::new(nested_quant_map),
        offset: offset as f32,
    })
}

/// A U8 tensor with a `.absmax` beside it.
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let stored = source.tensor(name)?;
    if stored.stored_as != StoredAs::Safetensors(Dtype::U8) {
        return None;
    }
    source.tensor(&side_name(name, ABSMAX))?;
    let state = source.tensor(&format!("{name}{STATE}"));
    // The original shape is in the quant state; the packed tensor's own shape otherwise.
    let shape = state
        .and_then(|state| serde_json::from_slice::<serde_json::Value>(state.bytes).ok())
        .and_then(|json| serde_json::from_value(json.get("shape")?.clone()).ok())
        .unwrap_or(stored.shape);
    let double_quant = source.tensor(&side_name(name, NESTED_ABSMAX)).is_some();
    Some(Ok(Recognized {
        layout: Box::new(Nf4Layout(Nf4Options { double_quant })),
        shape,
    }))
}
