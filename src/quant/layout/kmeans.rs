//! k-means codebooks in quantd's layout (docs/quantd-layouts.md): `<name>` U8 packed indices,
//! `<name>_codebook` F32 `[2^bits]`, and `__metadata__` `quantd.<name>.scheme` / `.shape` /
//! `.bits`. Serving dequantizes at load.

use super::{side_name, CODEBOOK};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::kernels::ErrorStats;
use crate::quant::kmeans::{
    self, dequantize_kmeans, quantize_kmeans, try_dequantize_kmeans, KmeansError, KmeansOptions,
};

use super::source::{float_side, is_quantd_layout, quantd_shape, Recognized};
use super::{
    dequantized_output, push_f32_le, DecodeError, Emitter, EncodeContext, EncodeError, Held,
    OutputFormat, OutputTensor, SchemeLayout, TensorSource,
};

pub(super) struct KmeansLayout(pub KmeansOptions);

impl SchemeLayout for KmeansLayout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let n_elements: usize = tensor.shape.iter().product();
        let packed = kmeans::packed_bytes(n_elements, self.0.bits);
        let centroids = 1usize << self.0.bits;
        vec![
            OutputTensor::side(&tensor.name, "", Dtype::U8, vec![packed]),
            OutputTensor::side(&tensor.name, CODEBOOK, Dtype::F32, vec![centroids]),
        ]
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        let options = self.0;
        let t = quantize_kmeans(values, options, cx.should_continue).map_err(|e| match e {
            KmeansError::Quant(q) => EncodeError::from(q),
            other => EncodeError::Unquantizable(other.to_string()),
        })?;
        if let OutputFormat::Dequantized { f16 } = format {
            let mut dequantized =
                dequantize_kmeans(&t.packed, &t.codebook, options.bits, values.len());
            return cx.emit_dequantized(tensor, values, &mut dequantized, f16, t.stats, out);
        }
        out.emit(&tensor.name, &t.packed)?;
        cx.byte_buffer.clear();
        push_f32_le(&t.codebook, &mut cx.byte_buffer);
        out.emit(&side_name(&tensor.name, CODEBOOK), &cx.byte_buffer)?;
        Ok(t.stats)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let bad = |why: String| DecodeError::Invalid(format!("'{name}' (kmeans): {why}"));
        let packed = source.tensor(name).ok_or_else(|| bad("missing".into()))?;
        let codebook = float_side(source, &side_name(name, CODEBOOK))
            .ok_or_else(|| bad(format!("no float '{name}_codebook'")))?;
        let n_elements = shape.iter().product();
        let values = try_dequantize_kmeans(packed.bytes, &codebook, self.0.bits, n_elements)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Held::Dequantized {
            scheme: "kmeans",
            values,
        })
    }

    fn quantd_metadata(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<(String, String)> {
        if format != OutputFormat::Safetensors {
            return Vec::new();
        }
        let shape = serde_json::to_string(&tensor.shape).expect("shapes serialize");
        let key = |suffix: &str| format!("quantd.{}.{suffix}", tensor.name);
        vec![
            (key("scheme"), "kmeans".to_owned()),
            (key("shape"), shape),
            (key("bits"), self.0.bits.to_string()),
        ]
    }
}

pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    if !is_quantd_layout(source, name, "kmeans") {
        return None;
    }
    let recognized = (|| {
        let bits: u8 = source
            .metadata(&format!("quantd.{name}.bits"))
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| DecodeError::Invalid(format!("'{name}' (kmeans): no bits")))?;
        Ok(Recognized {
            // Decoding reads only the index width; the training options do not matter.
            layout: Box::new(KmeansLayout(KmeansOptions {
                bits,
                max_iterations: 0,
                tolerance: 0.0,
            })),
            shape: quantd_shape(source, name)?,
        })
    })();
    Some(recognized)
}
