//! ggml block types in GGUF (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; also the F32 / F16 tensors of GGUF
//! files): one tensor of whole rows of raw blocks, byte for byte as ggml's `quantize_row_*_ref`
//! writes them. Everything type-specific (block size, bytes per block, codecs) comes from
//! [`GgmlType`], so a new block type needs no code here.

use crate::formats::gguf::{
    LLAMA_FTYPE_ALL_F32, LLAMA_FTYPE_MOSTLY_F16, LLAMA_FTYPE_MOSTLY_Q4_0, LLAMA_FTYPE_MOSTLY_Q4_1,
    LLAMA_FTYPE_MOSTLY_Q4_K_S, LLAMA_FTYPE_MOSTLY_Q5_0, LLAMA_FTYPE_MOSTLY_Q5_1,
    LLAMA_FTYPE_MOSTLY_Q6_K, LLAMA_FTYPE_MOSTLY_Q8_0,
};
use crate::formats::safetensors::TensorInfo;
use crate::quant::ggml::{self, GgmlType};
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;

use super::source::{stored_as_name, Recognized};
use super::{
    dequantized_output, grow, push_f16_le, push_f32_le, rows_and_cols, rows_per_piece, DecodeError,
    Emitter, EncodeContext, EncodeError, Held, OutputFormat, OutputTensor, SchemeLayout, StoredAs,
    TensorSource,
};

pub(super) struct GgmlLayout(pub GgmlType);

impl SchemeLayout for GgmlLayout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let ty = self.0;
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let row_bytes = ty
            .row_bytes(cols)
            .expect("plan_tensor checked the block fit");
        vec![OutputTensor::new(
            tensor.name.clone(),
            StoredAs::Ggml(ty.id()),
            tensor.shape.clone(),
            rows * row_bytes,
        )]
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        let ty = self.0;
        // Block quantizers take whatever they are given; NaN and Inf are refused here.
        cx.check_finite(values)?;
        let (_, cols) = rows_and_cols(&tensor.shape);
        let row_bytes = ty
            .row_bytes(cols)
            .expect("plan_tensor checked the block fit");
        let mut stats = ErrorStats::default();
        for piece in values.chunks(rows_per_piece(cols) * cols) {
            cx.check_continue()?;
            let rows = piece.len() / cols;
            let blocks = grow(&mut cx.byte_buffer, rows * row_bytes);
            ggml::quantize(cx.ggml_kernels, ty, piece, blocks);
            let dequantized = grow(&mut cx.f32_buffer, piece.len());
            ggml::dequantize(ty, &cx.byte_buffer[..rows * row_bytes], dequantized);
            match format {
                OutputFormat::Dequantized { f16 } => {
                    let mut bytes = Vec::with_capacity(piece.len() * if f16 { 2 } else { 4 });
                    if f16 {
                        push_f16_le(dequantized, &mut bytes);
                    } else {
                        push_f32_le(dequantized, &mut bytes);
                    }
                    out.emit(&tensor.name, &bytes)?;
                    stats.merge(&compare(piece, dequantized));
                }
                OutputFormat::Gguf | OutputFormat::Safetensors => {
                    out.emit(&tensor.name, &cx.byte_buffer[..rows * row_bytes])?;
                    stats.merge(&compare(piece, &cx.f32_buffer[..piece.len()]));
                }
            }
        }
        Ok(stats)
    }

    fn gguf_file_type(&self) -> Option<u32> {
        Some(match self.0 {
            GgmlType::F32 => LLAMA_FTYPE_ALL_F32,
            GgmlType::F16 => LLAMA_FTYPE_MOSTLY_F16,
            GgmlType::Q4_0 => LLAMA_FTYPE_MOSTLY_Q4_0,
            GgmlType::Q4_1 => LLAMA_FTYPE_MOSTLY_Q4_1,
            GgmlType::Q5_0 => LLAMA_FTYPE_MOSTLY_Q5_0,
            GgmlType::Q5_1 => LLAMA_FTYPE_MOSTLY_Q5_1,
            GgmlType::Q8_0 => LLAMA_FTYPE_MOSTLY_Q8_0,
            GgmlType::Q4K => LLAMA_FTYPE_MOSTLY_Q4_K_S,
            GgmlType::Q6K => LLAMA_FTYPE_MOSTLY_Q6_K,
        })
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let ty = self.0;
        let stored = source
            .tensor(name)
            .ok_or_else(|| DecodeError::Invalid(format!("missing tensor '{name}'")))?;
        let n_elements: usize = shape.iter().product();
        let (_, cols) = rows_and_cols(shape);
        let fits = stored.stored_as == StoredAs::Ggml(ty.id())
            && ty.row_bytes(cols).is_some()
            && ty.row_bytes(n_elements) == Some(stored.bytes.len());
        if !fits {
            return Err(DecodeError::Invalid(format!(
                "GGUF tensor '{name}' ({}) does not hold {shape:?} {ty} values",
                stored_as_name(stored.stored_as)
            )));
        }
        let held = Held::Ggml {
            ty,
            blocks: stored.bytes,
        };
        Ok(if ty.is_block_quantized() {
            held
        } else {
            Held::Float(held.into_f32(shape))
        })
    }
}

/// A tensor stored with a ggml type id (GGUF).
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let stored = source.tensor(name)?;
    let StoredAs::Ggml(id) = stored.stored_as else {
        return None;
    };
    Some(match GgmlType::from_id(id) {
        Some(ty) => Ok(Recognized {
            layout: Box::new(GgmlLayout(ty)),
            shape: stored.shape,
        }),
        None => Err(DecodeError::Invalid(format!(
            "GGUF tensor '{name}' has ggml type {id}, which serving cannot read"
        ))),
    })
}
