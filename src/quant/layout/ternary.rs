//! Ternary weights ({-1, 0, +1} × per-row scale, 4 codes per byte) in quantd's packed-row
//! layout, which `binary` owns; this module supplies the ternary codec.

use crate::formats::safetensors::TensorInfo;
use crate::quant::kernels::ErrorStats;
use crate::quant::ternary::{self, dequantize_ternary, quantize_ternary, try_dequantize_ternary};

use super::binary::{self, PackedRows, RowCodec};
use super::source::Recognized;
use super::{
    DecodeError, Emitter, EncodeContext, EncodeError, Held, OutputFormat, OutputTensor,
    SchemeLayout, TensorSource,
};

const TERNARY: RowCodec = RowCodec {
    scheme: "ternary",
    row_bytes: ternary::packed_row_bytes,
    quantize: |values, rows, cols, should_continue| {
        let t = quantize_ternary(values, rows, cols, should_continue)?;
        Ok(PackedRows {
            packed: t.packed,
            scales: t.scales,
            stats: t.stats,
        })
    },
    dequantize: dequantize_ternary,
    try_dequantize: |packed, scales, rows, cols| {
        try_dequantize_ternary(packed, scales, rows, cols).map_err(|e| e.to_string())
    },
};

pub(super) struct TernaryLayout;

impl SchemeLayout for TernaryLayout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        binary::declare(&TERNARY, tensor, format)
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        binary::encode(&TERNARY, cx, tensor, values, format, out)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        binary::decode(&TERNARY, source, name, shape)
    }

    fn quantd_metadata(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<(String, String)> {
        binary::quantd_metadata(&TERNARY, tensor, format)
    }
}

pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    binary::recognize_rows(&TERNARY, Box::new(TernaryLayout), source, name)
}
