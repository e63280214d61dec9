//! quantd's packed-row layouts (docs/quantd-layouts.md), shared by binary and ternary:
//! `<name>` U8 `[rows, packed_row_bytes]`, `<name>_scale` F32 `[rows]`, and `__metadata__`
//! `quantd.<name>.scheme` / `.shape`. Serving dequantizes at load. This module owns the binary
//! codec and the layout both use; `ternary` supplies its own codec.

use super::{side_name, SCALE};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::binary::{self, dequantize_binary, quantize_binary, try_dequantize_binary};
use crate::quant::int8::QuantError;
use crate::quant::kernels::ErrorStats;

use super::source::{float_side, is_quantd_layout, quantd_shape, Recognized};
use super::{
    dequantized_output, push_f32_le, rows_and_cols, DecodeError, Emitter, EncodeContext,
    EncodeError, Held, OutputFormat, OutputTensor, SchemeLayout, TensorSource,
};

/// What a packed-row scheme stores for one tensor.
pub(super) struct PackedRows {
    pub packed: Vec<u8>,
    pub scales: Vec<f32>,
    pub stats: ErrorStats,
}

/// Quantizes `[rows, cols]` values, checking `should_continue` between rows.
type QuantizeRows = fn(&[f32], usize, usize, &dyn Fn() -> bool) -> Result<PackedRows, QuantError>;
/// Decodes `(packed, scales, rows, cols)` of untrusted stored data.
type TryDequantizeRows = fn(&[u8], &[f32], usize, usize) -> Result<Vec<f32>, String>;

/// The scheme-specific half of a packed-row layout.
pub(super) struct RowCodec {
    /// The scheme name in `quantd.<name>.scheme`.
    pub scheme: &'static str,
    pub row_bytes: fn(cols: usize) -> usize,
    pub quantize: QuantizeRows,
    /// The reference dequantization of what `quantize` stored.
    pub dequantize: fn(&[u8], &[f32], usize, usize) -> Vec<f32>,
    /// Dequantization of untrusted stored data.
    pub try_dequantize: TryDequantizeRows,
}

pub(super) const BINARY: RowCodec = RowCodec {
    scheme: "binary",
    row_bytes: binary::packed_row_bytes,
    quantize: |values, rows, cols, should_continue| {
        let t = quantize_binary(values, rows, cols, should_continue)?;
        Ok(PackedRows {
            packed: t.packed,
            scales: t.scales,
            stats: t.stats,
        })
    },
    dequantize: dequantize_binary,
    try_dequantize: |packed, scales, rows, cols| {
        try_dequantize_binary(packed, scales, rows, cols).map_err(|e| e.to_string())
    },
};

pub(super) struct BinaryLayout;

impl SchemeLayout for BinaryLayout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        declare(&BINARY, tensor, format)
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        encode(&BINARY, cx, tensor, values, format, out)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        decode(&BINARY, source, name, shape)
    }

    fn quantd_metadata(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<(String, String)> {
        quantd_metadata(&BINARY, tensor, format)
    }
}

pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    recognize_rows(&BINARY, Box::new(BinaryLayout), source, name)
}

pub(super) fn declare(
    codec: &RowCodec,
    tensor: &TensorInfo,
    format: OutputFormat,
) -> Vec<OutputTensor> {
    if let Some(dequantized) = dequantized_output(tensor, format) {
        return dequantized;
    }
    let (rows, cols) = rows_and_cols(&tensor.shape);
    let name = &tensor.name;
    vec![
        OutputTensor::side(name, "", Dtype::U8, vec![rows, (codec.row_bytes)(cols)]),
        OutputTensor::side(name, SCALE, Dtype::F32, vec![rows]),
    ]
}

pub(super) fn encode(
    codec: &RowCodec,
    cx: &mut EncodeContext<'_>,
    tensor: &TensorInfo,
    values: &[f32],
    format: OutputFormat,
    out: &mut Emitter<'_>,
) -> Result<ErrorStats, EncodeError> {
    let (rows, cols) = rows_and_cols(&tensor.shape);
    let stored = (codec.quantize)(values, rows, cols, cx.should_continue)?;
    if let OutputFormat::Dequantized { f16 } = format {
        let mut dequantized = (codec.dequantize)(&stored.packed, &stored.scales, rows, cols);
        return cx.emit_dequantized(tensor, values, &mut dequantized, f16, stored.stats, out);
    }
    out.emit(&tensor.name, &stored.packed)?;
    cx.byte_buffer.clear();
    push_f32_le(&stored.scales, &mut cx.byte_buffer);
    out.emit(&side_name(&tensor.name, SCALE), &cx.byte_buffer)?;
    Ok(stored.stats)
}

pub(super) fn decode<'a>(
    codec: &RowCodec,
    source: &dyn TensorSource<'a>,
    name: &str,
    shape: &[usize],
) -> Result<Held<'a>, DecodeError> {
    let bad = |why: String| DecodeError::Invalid(format!("'{name}' ({}): {why}", codec.scheme));
    let (rows, cols) = rows_and_cols(shape);
    let packed = source.tensor(name).ok_or_else(|| bad("missing".into()))?;
    let scales = float_side(source, &side_name(name, SCALE))
        .ok_or_else(|| bad(format!("no float '{name}_scale'")))?;
    let values = (codec.try_dequantize)(packed.bytes, &scales, rows, cols).map_err(bad)?;
    Ok(Held::Dequantized {
        scheme: codec.scheme,
        values,
    })
}

pub(super) fn quantd_metadata(
    codec: &RowCodec,
    tensor: &TensorInfo,
    format: OutputFormat,
) -> Vec<(String, String)> {
    if format != OutputFormat::Safetensors {
        return Vec::new();
    }
    let shape = serde_json::to_string(&tensor.shape).expect("shapes serialize");
    vec![
        (
            format!("quantd.{}.scheme", tensor.name),
            codec.scheme.to_owned(),
        ),
        (format!("quantd.{}.shape", tensor.name), shape),
    ]
}

pub(super) fn recognize_rows(
    codec: &RowCodec,
    layout: Box<dyn SchemeLayout>,
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    if !is_quantd_layout(source, name, codec.scheme) {
        return None;
    }
    Some(quantd_shape(source, name).map(|shape| Recognized { layout, shape }))
}
